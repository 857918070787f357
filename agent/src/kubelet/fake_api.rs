//! Test support for the kubelet job: a fake API server and a node around it.
//!
//! [`FakeApi`] answers HTTPS on 127.0.0.1 with just what a kubelet pass
//! asks for: CertificateSigningRequests, signed at once as an auto-approving
//! kube-controller-manager would (backdated by its 5 minutes, for a lifetime
//! the test chooses), and the RenewRevocations of kube-system, listed and
//! watched (a watch stays open and silent). It records every certificate it
//! issues. For the CSR wait, [`FakeApi::set_csr_answer`] makes it leave a
//! CSR pending instead, and lists (and silently watches) CSRs: pending,
//! deleted, or deleted and filed again under the same name with a new uid
//! ([`CsrAnswer`]). Blocking threads, one per connection; every answer
//! closes its connection.
//!
//! [`TestNode`] is a host root in a tempdir with kubelet's kubeconfig
//! pointing at the fake, a client certificate of the fake's signer, and a
//! [`KubeletManager`] over a [`RecordingSystemd`].
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test fixture")]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::certificates::v1::{
    CertificateSigningRequest, CertificateSigningRequestCondition, CertificateSigningRequestStatus,
};
use k8s_openapi::ByteString;
use openssl::ssl::{SslAcceptor, SslMethod, SslStream};
use openssl::x509::extension::{ExtendedKeyUsage, KeyUsage};
use openssl::x509::X509Req;
use serde_json::json;

use crate::config::{KubeletConfig, KubeletMode, KubeletSettings};
use crate::k8s::kubeconfig::{self, Auth, ResolvedKubeconfig};
use crate::kubelet::manager::{KubeletJob, KubeletManager};
use crate::kubelet::store::{CertKind, KubeletStore};
use crate::node::hostroot::HostRoot;
use crate::node::systemd::fake::RecordingSystemd;
use crate::time::now_unix;
use crate::x509::testpki::{self, TestCa};

/// kube-controller-manager's signer issues every certificate with
/// `notBefore = now - 5 min`.
pub const BACKDATE: i64 = 300;

/// The node the tests renew for.
pub const NODE: &str = "node-1";

/// The RenewRevocation of the AKS hybrid documentation
/// (<https://learn.microsoft.com/en-us/azure/aks/hybrid/certificates-overview>), verbatim: its
/// `kind: Group, group: system:nodes` entry has no notBefore and revokes
/// every present and future node certificate.
pub fn documentation_example() -> serde_json::Value {
    json!({
        "apiVersion": "certificates.microsoft.com/v1",
        "kind": "RenewRevocation",
        "metadata": {"name": "my-renew-revocation", "namespace": "kube-system", "uid": "0b8a7c6e-1", "resourceVersion": "7"},
        "spec": {
            "description": "My list of renew revocations",
            "revocations": [
                {"description": "Revoked certificates by serial number", "kind": "serialnumber",
                 "notBefore": "2020-04-17T17:22:05Z", "serialNumber": "77fdf4b1033b387aaace6ce1c18710c2"},
                {"description": "Revoked certificates by group", "group": "system:nodes", "kind": "Group"},
                {"description": "Revoked certificates by DNS", "dns": "kubernetes.default.svc.", "kind": "DNS"},
                {"description": "Revoked certificates by DNS Suffix", "dns": ".cluster.local", "kind": "DNS"},
                {"description": "Revoked certificates by IP", "ip": "170.63.128.124", "kind": "IP"},
            ],
        },
    })
}

/// The label the agent gives the example's Group entry.
pub const EXAMPLE_GROUP_LABEL: &str =
    "RenewRevocation my-renew-revocation (Revoked certificates by group): Group system:nodes";

/// One certificate the fake issued.
#[derive(Clone, Debug)]
pub struct Issued {
    /// Unix time it was issued at.
    pub at: i64,
    pub not_before: i64,
    pub not_after: i64,
}

pub struct FakeApi {
    addr: SocketAddr,
    shared: Arc<Shared>,
}

/// What the fake does with a CSR it is given.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CsrAnswer {
    /// Approves and signs it at once, as an auto-approving
    /// kube-controller-manager would.
    #[default]
    SignAtOnce,
    /// Leaves it pending (uid [`FILED_UID`]); lists show it pending.
    Pending,
    /// Leaves it pending, and it is deleted before the agent's watch lists
    /// it: lists show none.
    DeletedWhilePending,
    /// Leaves it pending, and it is deleted and filed again under its name
    /// (uid [`REFILED_UID`]), and that one is approved and signed: lists show
    /// the new one.
    RecreatedAndSigned,
}

/// The uid of the CSR as the agent filed it, when it is left pending.
pub const FILED_UID: &str = "uid-filed";
/// The uid of a CSR filed again under the same name.
pub const REFILED_UID: &str = "uid-refiled";

struct Shared {
    signer: TestCa,
    /// Seconds from issue to notAfter.
    lifetime: Mutex<i64>,
    /// RenewRevocation objects in kube-system.
    revocations: Mutex<Vec<serde_json::Value>>,
    issued: Mutex<Vec<Issued>>,
    csr_answer: Mutex<CsrAnswer>,
    /// The CSRs a list shows (with [`CsrAnswer`] other than `SignAtOnce`).
    csrs: Mutex<Vec<serde_json::Value>>,
    stop: AtomicBool,
}

impl FakeApi {
    /// Serves until dropped; issues certificates living `lifetime` seconds
    /// from the moment they are issued.
    pub fn start(lifetime: i64) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared {
            signer: testpki::good_ca("fake kubelet signer"),
            lifetime: Mutex::new(lifetime),
            revocations: Mutex::new(Vec::new()),
            issued: Mutex::new(Vec::new()),
            csr_answer: Mutex::new(CsrAnswer::default()),
            csrs: Mutex::new(Vec::new()),
            stop: AtomicBool::new(false),
        });
        let acceptor = {
            let (cert, key) = testpki::leaf_with_key(&shared.signer, "127.0.0.1");
            let mut b = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls_server()).unwrap();
            b.set_certificate(&cert).unwrap();
            b.set_private_key(&key).unwrap();
            Arc::new(b.build())
        };
        let s = shared.clone();
        std::thread::spawn(move || {
            for tcp in listener.incoming() {
                if s.stop.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(tcp) = tcp else { continue };
                let (s, acceptor) = (s.clone(), acceptor.clone());
                std::thread::spawn(move || {
                    if let Ok(tls) = acceptor.accept(tcp) {
                        serve(&s, tls);
                    }
                });
            }
        });
        Self { addr, shared }
    }

    pub fn server(&self) -> String {
        format!("https://{}", self.addr)
    }

    pub fn signer(&self) -> &TestCa {
        &self.shared.signer
    }

    pub fn set_revocations(&self, objects: Vec<serde_json::Value>) {
        *self.shared.revocations.lock().unwrap() = objects;
    }

    /// How CSRs filed from now on are answered.
    pub fn set_csr_answer(&self, answer: CsrAnswer) {
        *self.shared.csr_answer.lock().unwrap() = answer;
    }

    /// Every certificate issued so far, oldest first.
    pub fn issued(&self) -> Vec<Issued> {
        self.shared.issued.lock().unwrap().clone()
    }
}

impl Drop for FakeApi {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        // Unblocks the accept loop, which then sees the flag.
        let _ = TcpStream::connect(self.addr);
    }
}

/// Reads one request and answers it (a watch: holds it open until the fake
/// stops).
fn serve(shared: &Shared, tls: SslStream<TcpStream>) {
    let mut reader = BufReader::new(tls);
    let mut line = String::new();
    if reader.read_line(&mut line).is_err() {
        return;
    }
    let mut parts = line.split_whitespace();
    let (method, target) = (
        parts.next().unwrap_or("").to_string(),
        parts.next().unwrap_or("").to_string(),
    );
    let mut length = 0usize;
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header).is_err() {
            return;
        }
        let header = header.trim_end();
        if header.is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse().unwrap_or(0);
            }
        }
    }
    let mut body = vec![0u8; length];
    if reader.read_exact(&mut body).is_err() {
        return;
    }
    let (path, query) = target.split_once('?').unwrap_or((&target, ""));
    let watch = query
        .split('&')
        .any(|p| p == "watch=true" || p == "watch=1");
    let (status, answer) = match (method.as_str(), path) {
        ("POST", "/apis/certificates.k8s.io/v1/certificatesigningrequests") => {
            ("201 Created", file_csr(shared, &body))
        }
        ("GET", "/apis/certificates.k8s.io/v1/certificatesigningrequests") => {
            if watch {
                while !shared.stop.load(Ordering::SeqCst) {
                    std::thread::sleep(Duration::from_millis(20));
                }
                return;
            }
            let items = shared.csrs.lock().unwrap().clone();
            (
                "200 OK",
                json!({
                    "apiVersion": "certificates.k8s.io/v1",
                    "kind": "CertificateSigningRequestList",
                    "metadata": {"resourceVersion": "9"},
                    "items": items,
                }),
            )
        }
        ("GET", "/apis/certificates.microsoft.com/v1/namespaces/kube-system/renewrevocations") => {
            if watch {
                while !shared.stop.load(Ordering::SeqCst) {
                    std::thread::sleep(Duration::from_millis(20));
                }
                return;
            }
            let items = shared.revocations.lock().unwrap().clone();
            (
                "200 OK",
                json!({
                    "apiVersion": "certificates.microsoft.com/v1",
                    "kind": "RenewRevocationList",
                    "metadata": {"resourceVersion": "7"},
                    "items": items,
                }),
            )
        }
        _ => (
            "404 Not Found",
            json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 404,
                   "reason": "NotFound", "message": format!("{method} {path}: not served by the fake")}),
        ),
    };
    let body = serde_json::to_vec(&answer).unwrap();
    let tls = reader.get_mut();
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let _ = tls.write_all(head.as_bytes());
    let _ = tls.write_all(&body);
    let _ = tls.flush();
    let _ = tls.shutdown();
}

/// The CSR in `body` as [`CsrAnswer`] says: signed, or left pending (and
/// what lists show then).
fn file_csr(shared: &Shared, body: &[u8]) -> serde_json::Value {
    let answer = *shared.csr_answer.lock().unwrap();
    if answer == CsrAnswer::SignAtOnce {
        return sign(shared, body);
    }
    let mut pending: serde_json::Value = serde_json::from_slice(body).unwrap();
    pending["metadata"]["uid"] = json!(FILED_UID);
    pending["metadata"]["resourceVersion"] = json!("8");
    let listed = match answer {
        CsrAnswer::Pending => vec![pending.clone()],
        CsrAnswer::DeletedWhilePending => vec![],
        CsrAnswer::RecreatedAndSigned => {
            let mut refiled = sign(shared, body);
            refiled["metadata"]["uid"] = json!(REFILED_UID);
            refiled["metadata"]["resourceVersion"] = json!("9");
            vec![refiled]
        }
        CsrAnswer::SignAtOnce => unreachable!("answered above"),
    };
    *shared.csrs.lock().unwrap() = listed;
    pending
}

/// The CSR in `body`, approved and signed.
fn sign(shared: &Shared, body: &[u8]) -> serde_json::Value {
    let mut csr: CertificateSigningRequest = serde_json::from_slice(body).unwrap();
    let req = X509Req::from_pem(&csr.spec.request.0).unwrap();
    let now = now_unix();
    let not_after = now + *shared.lifetime.lock().unwrap();
    let b = testpki::builder(
        req.subject_name(),
        shared.signer.cert.subject_name(),
        &req.public_key().unwrap(),
        127,
        now - BACKDATE,
        not_after,
    );
    let cert = client_leaf(b, &shared.signer);
    shared.issued.lock().unwrap().push(Issued {
        at: now,
        not_before: now - BACKDATE,
        not_after,
    });
    csr.metadata.uid = Some(format!("uid-{now}"));
    csr.metadata.resource_version = Some("8".into());
    csr.status = Some(CertificateSigningRequestStatus {
        certificate: Some(ByteString(cert.to_pem().unwrap())),
        conditions: Some(vec![CertificateSigningRequestCondition {
            type_: "Approved".into(),
            status: "True".into(),
            reason: Some("AutoApproved".into()),
            message: Some("approved by the fake".into()),
            ..CertificateSigningRequestCondition::default()
        }]),
    });
    serde_json::to_value(&csr).unwrap()
}

/// A kubelet client certificate as the client signer makes it, from `b`.
fn client_leaf(mut b: openssl::x509::X509Builder, signer: &TestCa) -> openssl::x509::X509 {
    let mut usage = KeyUsage::new();
    usage.critical().digital_signature();
    let mut eku = ExtendedKeyUsage::new();
    eku.client_auth();
    testpki::append_leaf_extensions(&mut b, &usage, Some(&eku));
    b.sign(&signer.key, openssl::hash::MessageDigest::sha256())
        .unwrap();
    b.build()
}

/// A node (a host root in a tempdir) whose kubelet talks to a [`FakeApi`].
pub struct TestNode {
    pub root: tempfile::TempDir,
    pub systemd: Arc<RecordingSystemd>,
    /// The agent's state directory (a process path).
    pub state_dir: PathBuf,
}

impl TestNode {
    /// kubelet's kubeconfig pointing at `api`, and a client certificate of
    /// its signer valid from `not_before` to `not_after`.
    pub fn new(api: &FakeApi, not_before: i64, not_after: i64) -> Self {
        let root = tempfile::tempdir().unwrap();
        let state_dir = root.path().join("var/lib/node-cert-agent");
        std::fs::create_dir_all(&state_dir).unwrap();
        let node = Self {
            root,
            systemd: Arc::new(RecordingSystemd::default()),
            state_dir,
        };
        let settings = node.settings();
        let kubeconfig_host = node.host_path(&settings.kubeconfig);
        std::fs::create_dir_all(kubeconfig_host.parent().unwrap()).unwrap();
        let base = ResolvedKubeconfig {
            path: settings.kubeconfig.clone(),
            server: api.server(),
            ca_pem: None,
            insecure_skip_tls_verify: true,
            auth: Auth::Token(String::new()),
        };
        let cert_link = node.store().current_link(CertKind::Client);
        std::fs::write(
            &kubeconfig_host,
            kubeconfig::kubelet_kubeconfig(&base, &cert_link).unwrap(),
        )
        .unwrap();
        node.install_client(api, not_before, not_after);
        node
    }

    pub fn host(&self) -> HostRoot {
        HostRoot::new(self.root.path()).unwrap()
    }

    /// Where the node path `p` lies in the tempdir.
    pub fn host_path(&self, p: &Path) -> PathBuf {
        self.root.path().join(p.strip_prefix("/").unwrap())
    }

    pub fn settings(&self) -> KubeletSettings {
        KubeletSettings::from_file(KubeletConfig::default(), KubeletMode::On, Some(NODE.into()))
    }

    pub fn store(&self) -> KubeletStore {
        KubeletStore::new(self.host(), self.settings().pki_dir)
    }

    /// Installs a client certificate for [`NODE`] of `api`'s signer.
    pub fn install_client(&self, api: &FakeApi, not_before: i64, not_after: i64) {
        let key = testpki::key();
        let b = testpki::builder(
            &testpki::name(&["system:nodes"], &format!("system:node:{NODE}")),
            api.signer().cert.subject_name(),
            &key,
            127,
            not_before,
            not_after,
        );
        let cert = client_leaf(b, api.signer());
        self.store()
            .install(
                CertKind::Client,
                &cert.to_pem().unwrap(),
                &key.private_key_to_pem_pkcs8().unwrap(),
                not_before,
            )
            .unwrap();
    }

    /// The kubelet state file (a process path).
    pub fn state_file(&self) -> PathBuf {
        self.state_dir
            .join(crate::kubelet::state::KUBELET_STATE_FILE)
    }

    pub fn manager(&self) -> KubeletManager<Arc<RecordingSystemd>> {
        KubeletManager::new(
            self.host(),
            self.systemd.clone(),
            KubeletJob {
                settings: self.settings(),
                node_name: NODE.into(),
                serving: None,
                lock_path: crate::kubelet::manager::lock_path(&self.state_dir),
                write_kubeconfig: false,
            },
        )
    }
}
