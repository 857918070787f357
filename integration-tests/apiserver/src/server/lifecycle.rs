//! Starting the server and what describes it: [`ApiServer::start`],
//! [`ApiServer::start_with`] (the profile's default policy with the given
//! RBAC, the four namespaces, the listener thread), its URL, port and
//! cluster CA, and the server-wide watch setting (the bookmark interval).
//! The crate's internal access to the state ([`ApiServer::state`]) is
//! here too. Stopping is `Drop` (`lib.rs`); going down and up is
//! `faults.rs`'s.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, Notify};

use super::namespace_json;
use crate::ca::ClusterCa;
use crate::store::{Kind, Store};
use crate::{crd, net};
use crate::{ApiServer, CsrSettings, Faults, Profile, Rbac, Shared, State, Throttle};

impl ApiServer {
    /// [`ApiServer::start_with`] a kubeadm cluster ([`Profile::Kubeadm`])
    /// and no RBAC objects of the project's.
    pub fn start() -> ApiServer {
        ApiServer::start_with(Profile::Kubeadm, &Rbac::default())
    }

    /// Starts a server on `127.0.0.1:<free port>` with namespaces `default`,
    /// `kube-system`, `kube-public` and `kube-node-lease`, authorizing with
    /// `profile`'s default policy and the objects of `rbac` (typically
    /// `kubectl kustomize manifests/base`), and nothing else.
    pub fn start_with(profile: Profile, rbac: &Rbac) -> ApiServer {
        // Parse the shipped CRD now: one the server cannot enforce fails
        // here, naming the reason.
        let _ = &*crd::CRD;
        let mut policy = Rbac::defaults(profile);
        policy.overlay(rbac);
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        std_listener.set_nonblocking(true).unwrap();
        let addr = std_listener.local_addr().unwrap();
        let mut store = Store::new();
        for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
            store.create(Kind::Namespace, namespace_json(ns));
        }
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                store,
                rbac: policy,
                bootstrap_tokens: BTreeMap::new(),
                sa_tokens: BTreeMap::new(),
                anonymous: false,
                faults: Faults {
                    delay: Duration::ZERO,
                    fail_remaining: 0,
                    fail_code: 500,
                    throttle_remaining: 0,
                    throttle_retry_after: 1,
                    throttle_style: Throttle::Apf,
                    drop_remaining: 0,
                },
                csr: CsrSettings {
                    auto_approve: true,
                    max_lifetime: Duration::from_secs(365 * 24 * 3600),
                    backdate: Duration::from_secs(300),
                    controller_delay: Duration::ZERO,
                    deny_next: VecDeque::new(),
                    deny_all: None,
                    wrong_key: 0,
                    wrong_subject: 0,
                },
                verdicts: BTreeMap::new(),
                requests: vec![],
                bookmark_interval: Duration::from_secs(1),
                up: true,
            }),
            ca: ClusterCa::new(),
            controller: Notify::new(),
            port: addr.port(),
        });
        let acceptor = net::acceptor(&shared);
        let (control, control_rx) = mpsc::unbounded_channel();
        let s2 = shared.clone();
        let thread = std::thread::Builder::new()
            .name("test-apiserver".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(async move {
                    let listener = tokio::net::TcpListener::from_std(std_listener).unwrap();
                    net::run(s2, acceptor, listener, control_rx).await;
                });
            })
            .unwrap();
        ApiServer {
            shared,
            control,
            thread: Some(thread),
            addr,
        }
    }

    /// The server's state, locked.
    pub(crate) fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.shared.state.lock().unwrap()
    }

    /// `https://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// The listening port.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// The cluster CA certificate (PEM): trust anchor for the serving cert,
    /// issuer of client certificates and of signed CSRs.
    pub fn cluster_ca_pem(&self) -> String {
        self.shared.ca.cert_pem()
    }

    /// How often watches with `allowWatchBookmarks=true` get a BOOKMARK
    /// (default 1 s; kube-apiserver sends them about once a minute).
    pub fn set_bookmark_interval(&self, every: Duration) {
        self.state().bookmark_interval = every;
    }
}
