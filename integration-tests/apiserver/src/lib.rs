//! A Kubernetes API server for tests, standing in for kube-apiserver and
//! the kube-controller-manager CSR controllers where no real cluster can
//! run. It serves what node-cert-agent uses, and enforces the real rules:
//!
//! - **Transport:** HTTPS on `127.0.0.1:<free port>`, its own cluster CA, a
//!   serving cert for IP:127.0.0.1 and DNS:localhost; a client certificate
//!   is requested, never required.
//! - **Authentication:** client certificates signed by the cluster CA (user
//!   = CN, groups = O), bootstrap tokens (`system:bootstrap:<id>` in
//!   `system:bootstrappers`), service-account tokens; anything else is a 401
//!   (anonymous auth is off, as on hardened clusters; see
//!   [`ApiServer::set_anonymous_auth`]).
//! - **Authorization:** `Node,RBAC` from two sources only: upstream's
//!   default policy as a [`Profile`] (the Node authorizer with
//!   `AuthorizeNodeWithSelectors`, the default ClusterRoles and bindings,
//!   kubeadm's TLS-bootstrap bindings) and the RBAC objects given as YAML
//!   ([`Rbac::from_yaml`]); 403 with kube-apiserver's message and reasons.
//! - **Admission:** NamespaceLifecycle, NodeRestriction,
//!   CertificateSubjectRestriction.
//! - **APIs:** discovery (legacy and aggregated), `/openapi/v3` for the
//!   custom resource, CSRs (`certificates.k8s.io/v1`), Nodes (and
//!   `nodes/status`), Namespaces, Events (core/v1 and `events.k8s.io/v1`,
//!   one storage), Secrets, Pods (read only; tests put them with
//!   [`ApiServer::set_pod`]), and the `RenewRevocation` custom resource of the shipped
//!   CRD (`manifests/base/crd-renewrevocation.yaml`); get/list/watch with
//!   kube-apiserver's resourceVersion, selector, pagination, bookmark and
//!   410 semantics; create and PATCH with `dryRun` and `fieldValidation`.
//! - **Controllers:** CSR auto-approval (`csrapproving`) and the built-in
//!   signers (`csrsigning`) with their validation.
//! - **Faults:** delays, 5xx, 429, dropped connections, denials, wrong
//!   certificates, and going down and up, all switchable at run time.
//!
//! Every request is recorded ([`ApiServer::requests`]).
//!
//! README.md lists the upstream rules it enforces, each with the upstream
//! source file, and where it deviates from them.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test server: a broken invariant or a failed test step must panic loudly"
)]

mod auth;
mod authz;
mod body;
mod ca;
mod cel;
mod controller;
mod crd;
mod csr;
mod custom;
mod events;
mod handler;
mod net;
mod nodes;
mod openapi;
mod patch;
mod rbac;
mod resources;
mod secrets;
mod selectors;
mod status;
mod store;

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub use auth::UserInfo;
use base64::Engine as _;
use ca::ClusterCa;
pub use crd::RENEW_REVOCATION_CRD;
use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use k8s_openapi::api::core::v1::{Node, NodeCondition, NodeSpec, NodeStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use net::Control;
pub use rbac::{PolicyRule, Profile, Rbac, Subject, KUBEADM_NODE_TOKEN_GROUP};
use serde_json::{json, Value};
use store::{Kind, Store};
use tokio::sync::{mpsc, Notify};

/// One request as the server saw it (after request-info parsing).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestRecord {
    /// HTTP method.
    pub method: String,
    /// URL path.
    pub path: String,
    /// Raw query string.
    pub query: String,
    /// Authorization verb: get, list, watch, create, update, patch, delete,
    /// deletecollection; for non-resource paths the lowercase method.
    pub verb: String,
    /// Whether this was a resource request (else a non-resource path).
    pub resource_request: bool,
    /// API group (`""` = core).
    pub group: String,
    /// API version.
    pub version: String,
    /// Resource (plural).
    pub resource: String,
    /// Subresource.
    pub subresource: String,
    /// Namespace.
    pub namespace: String,
    /// Object name (for list/watch: from a `metadata.name` field selector).
    pub name: String,
    /// Authenticated user name (empty when unauthenticated or dropped early).
    pub user: String,
    /// Authenticated groups.
    pub groups: Vec<String>,
    /// HTTP status code; 0 when the connection was dropped unanswered.
    pub code: u16,
}

/// How an injected 429 looks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Throttle {
    /// API Priority and Fairness / max-in-flight: `text/plain` body
    /// "Too many requests, please try again later.", `Retry-After` header.
    Apf,
    /// A `Status` with reason `TooManyRequests`,
    /// `details.retryAfterSeconds` and `Retry-After`.
    Status,
}

/// An Event as stored (core/v1 form), with the API it was written through.
#[derive(Debug, Clone)]
pub struct StoredEvent {
    /// The event in core/v1 form (events.k8s.io's `regarding`/`note`/
    /// `reportingController` appear as `involvedObject`/`message`/
    /// `reportingComponent`).
    pub event: k8s_openapi::api::core::v1::Event,
    /// The raw stored JSON.
    pub raw: Value,
}

pub(crate) struct BootstrapToken {
    secret: String,
    extra_groups: Vec<String>,
    expires_unix: Option<i64>,
}

pub(crate) struct Faults {
    delay: Duration,
    fail_remaining: u32,
    fail_code: u16,
    throttle_remaining: u32,
    throttle_retry_after: u32,
    throttle_style: Throttle,
    drop_remaining: u32,
}

pub(crate) struct CsrSettings {
    auto_approve: bool,
    max_lifetime: Duration,
    backdate: Duration,
    controller_delay: Duration,
    deny_next: VecDeque<(String, String)>,
    deny_all: Option<(String, String)>,
    wrong_key: u32,
    wrong_subject: u32,
}

pub(crate) enum Verdict {
    Deny(String, String),
}

pub(crate) struct State {
    store: Store,
    /// The default policy of the profile with the given RBAC over it.
    rbac: Rbac,
    bootstrap_tokens: BTreeMap<String, BootstrapToken>,
    sa_tokens: BTreeMap<String, UserInfo>,
    anonymous: bool,
    faults: Faults,
    csr: CsrSettings,
    verdicts: BTreeMap<String, Verdict>,
    requests: Vec<RequestRecord>,
    bookmark_interval: Duration,
    up: bool,
}

pub(crate) struct Shared {
    state: Mutex<State>,
    ca: ClusterCa,
    controller: Notify,
    port: u16,
}

/// The test API server. Runs on its own thread and tokio runtime; every
/// method is blocking and callable from the test thread; dropped = stopped.
pub struct ApiServer {
    shared: Arc<Shared>,
    control: mpsc::UnboundedSender<Control>,
    thread: Option<JoinHandle<()>>,
    addr: SocketAddr,
}

impl std::fmt::Debug for ApiServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiServer")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

fn obj_meta(name: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.into()),
        uid: Some(resources::new_uid()),
        creation_timestamp: Some(resources::now_time()),
        ..Default::default()
    }
}

fn unix(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap(),
        Err(e) => -i64::try_from(e.duration().as_secs()).unwrap(),
    }
}

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

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
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

    // ------------------------------------------------------------ identities

    /// Registers a bootstrap token `<id>.<secret>` as `kubeadm token
    /// create` makes it: a `bootstrap-token-<id>` Secret with
    /// `usage-bootstrap-authentication` and `auth-extra-groups:
    /// system:bootstrappers:kubeadm:default-node-token`
    /// ([`KUBEADM_NODE_TOKEN_GROUP`], the group kubeadm's bindings name).
    pub fn add_bootstrap_token(&self, id: &str, secret: &str) {
        self.add_bootstrap_token_with(id, secret, &[KUBEADM_NODE_TOKEN_GROUP], None);
    }

    /// Like [`ApiServer::add_bootstrap_token`], with exactly these
    /// `auth-extra-groups` (none: the token is only in
    /// `system:bootstrappers`, which kubeadm's bindings do not name) and an
    /// optional expiration. As upstream, a token with a group that is not
    /// `system:bootstrappers:<[a-z0-9:-]>` does not authenticate.
    pub fn add_bootstrap_token_with(
        &self,
        id: &str,
        secret: &str,
        extra_groups: &[&str],
        expires: Option<SystemTime>,
    ) {
        assert!(
            auth::parse_bootstrap_token(&format!("{id}.{secret}")).is_some(),
            "bootstrap token must match [a-z0-9]{{6}}.[a-z0-9]{{16}}"
        );
        self.state().bootstrap_tokens.insert(
            id.to_string(),
            BootstrapToken {
                secret: secret.to_string(),
                extra_groups: extra_groups.iter().map(|s| s.to_string()).collect(),
                expires_unix: expires.map(unix),
            },
        );
    }

    /// Creates a service-account bearer token for
    /// `system:serviceaccount:<ns>:<name>` (groups `system:serviceaccounts`,
    /// `system:serviceaccounts:<ns>`, `system:authenticated`).
    pub fn add_service_account_token(&self, namespace: &str, name: &str) -> String {
        let mut b = [0u8; 24];
        openssl::rand::rand_bytes(&mut b).unwrap();
        let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
        self.state().sa_tokens.insert(
            token.clone(),
            UserInfo {
                name: format!("system:serviceaccount:{namespace}:{name}"),
                uid: resources::new_uid(),
                groups: vec![
                    "system:serviceaccounts".into(),
                    format!("system:serviceaccounts:{namespace}"),
                    "system:authenticated".into(),
                ],
            },
        );
        token
    }

    /// Test-only knob: the service-account token `token` has expired (a
    /// bound token past its `expirationSeconds`, after kubelet rotated the
    /// projected file): from now on requests presenting it are 401
    /// Unauthorized, as the real server's token authenticator answers them.
    /// Panics when no such token was issued, so a typo fails the test.
    pub fn expire_service_account_token(&self, token: &str) {
        assert!(
            self.state().sa_tokens.remove(token).is_some(),
            "ApiServer::expire_service_account_token: no such token"
        );
    }

    /// Issues a client certificate `CN=<cn>, O=<orgs>` from the cluster CA,
    /// valid from `not_before` to `not_after`. Returns `(cert_pem, key_pem)`.
    pub fn issue_client_cert(
        &self,
        cn: &str,
        orgs: &[&str],
        not_before: SystemTime,
        not_after: SystemTime,
    ) -> (String, String) {
        let (c, k) = self
            .shared
            .ca
            .client_cert(cn, orgs, unix(not_before), unix(not_after));
        (
            String::from_utf8(c.to_pem().unwrap()).unwrap(),
            String::from_utf8(k.private_key_to_pem_pkcs8().unwrap()).unwrap(),
        )
    }

    /// Test-only knob: adds a ClusterRole and a ClusterRoleBinding named
    /// `binding` that give `rules` to `subject`. Use it only to mirror an
    /// object a real cluster has (for example one a manifest outside
    /// `manifests/` creates), never to grant what no shipped object grants;
    /// prefer [`ApiServer::start_with`] with the YAML of the real object.
    pub fn grant(&self, binding: &str, subject: Subject, rules: Vec<PolicyRule>) {
        self.state().rbac.insert_grant(binding, subject, rules);
    }

    /// Test-only knob: removes the ClusterRoleBindings and RoleBindings
    /// named `binding` (a default, a YAML one or a granted one), as
    /// `kubectl delete` of a real binding would. Panics when there is none,
    /// so a renamed binding fails the test instead of passing it.
    pub fn revoke(&self, binding: &str) {
        assert!(
            self.state().rbac.remove_bindings(binding),
            "ApiServer::revoke: there is no binding named {binding:?}"
        );
    }

    /// Anonymous authentication (off by default): requests without
    /// credentials become `system:anonymous` instead of a 401.
    pub fn set_anonymous_auth(&self, on: bool) {
        self.state().anonymous = on;
    }

    // ------------------------------------------------------------ kubeconfigs

    fn kubeconfig(&self, user_name: &str, user_yaml: &str) -> String {
        let ca = base64::engine::general_purpose::STANDARD.encode(self.cluster_ca_pem());
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: kubernetes\n  cluster:\n    certificate-authority-data: {ca}\n    server: {url}\ncontexts:\n- name: {user_name}@kubernetes\n  context:\n    cluster: kubernetes\n    user: {user_name}\ncurrent-context: {user_name}@kubernetes\npreferences: {{}}\nusers:\n- name: {user_name}\n  user:\n{user_yaml}",
            url = self.url()
        )
    }

    /// A bootstrap kubeconfig (as `/var/lib/kubelet/bootstrap-kubeconfig`):
    /// cluster CA data, server URL, user `kubelet-bootstrap` with `token`.
    pub fn bootstrap_kubeconfig(&self, token_id: &str, token_secret: &str) -> String {
        self.kubeconfig(
            "kubelet-bootstrap",
            &format!("    token: {token_id}.{token_secret}\n"),
        )
    }

    /// A kubelet kubeconfig (as `/etc/kubernetes/kubelet.conf`): user
    /// `default-auth` with `client-certificate` and `client-key` files (the
    /// kubelet layout points both at `kubelet-client-current.pem`).
    pub fn client_kubeconfig(&self, cert_path: &Path, key_path: &Path) -> String {
        self.kubeconfig(
            "default-auth",
            &format!(
                "    client-certificate: {}\n    client-key: {}\n",
                cert_path.display(),
                key_path.display()
            ),
        )
    }

    /// A kubeconfig with a bearer token (e.g. a service-account token).
    pub fn token_kubeconfig(&self, token: &str) -> String {
        self.kubeconfig("token-user", &format!("    token: {token}\n"))
    }

    /// A cluster-admin kubeconfig (`CN=kubernetes-admin, O=system:masters`,
    /// embedded certificate data).
    pub fn admin_kubeconfig(&self) -> String {
        let now = SystemTime::now();
        let (cert, key) = self.issue_client_cert(
            "kubernetes-admin",
            &["system:masters"],
            now - Duration::from_secs(3600),
            now + Duration::from_secs(24 * 3600),
        );
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        self.kubeconfig(
            "kubernetes-admin",
            &format!(
                "    client-certificate-data: {}\n    client-key-data: {}\n",
                b64(&cert),
                b64(&key)
            ),
        )
    }

    // ------------------------------------------------------------ objects

    /// Adds a Node `name` (with a uid, hostname label, Ready condition).
    pub fn add_node(&self, name: &str) -> Node {
        let mut meta = obj_meta(name);
        meta.labels = Some(BTreeMap::from([
            ("kubernetes.io/hostname".to_string(), name.to_string()),
            ("kubernetes.io/os".to_string(), "linux".to_string()),
        ]));
        let node = Node {
            metadata: meta,
            spec: Some(NodeSpec::default()),
            status: Some(NodeStatus {
                conditions: Some(vec![k8s_openapi::api::core::v1::NodeCondition {
                    type_: "Ready".into(),
                    status: "True".into(),
                    reason: Some("KubeletReady".into()),
                    message: Some("kubelet is posting ready status".into()),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
        };
        let v = self
            .state()
            .store
            .create(Kind::Node, serde_json::to_value(&node).unwrap());
        serde_json::from_value(v).unwrap()
    }

    /// Test-only: stores every Node of `nodes` under one lock, as that many
    /// creates would (each its own resourceVersion and ADDED event; a uid and
    /// creationTimestamp when missing): 5,000 Nodes in milliseconds, where
    /// 5,000 POSTs would take seconds. Returns how many were stored. Panics
    /// on a Node without a name or one that exists.
    pub fn seed_nodes(&self, nodes: impl IntoIterator<Item = Node>) -> usize {
        let mut st = self.state();
        let mut n = 0;
        for mut node in nodes {
            let name = node
                .metadata
                .name
                .clone()
                .expect("a seeded Node has a name");
            assert!(
                st.store.get(Kind::Node, "", &name).is_none(),
                "seed_nodes: Node {name} exists"
            );
            let meta = obj_meta(&name);
            node.metadata.uid.get_or_insert(meta.uid.unwrap());
            node.metadata
                .creation_timestamp
                .get_or_insert(meta.creation_timestamp.unwrap());
            node.metadata.resource_version = None;
            st.store
                .create(Kind::Node, serde_json::to_value(&node).unwrap());
            n += 1;
        }
        n
    }

    /// Test-only: changes the stored Node `name` with `change`, as a write
    /// through the API would be stored (a new resourceVersion, MODIFIED to
    /// watchers). Panics when there is no such Node.
    pub fn update_node(&self, name: &str, change: impl FnOnce(&mut Node)) {
        let mut st = self.state();
        let stored = st
            .store
            .get(Kind::Node, "", name)
            .cloned()
            .unwrap_or_else(|| panic!("update_node: no Node {name}"));
        let mut node: Node = serde_json::from_value(stored).unwrap();
        change(&mut node);
        node.metadata.name = Some(name.to_string());
        st.store
            .update(Kind::Node, serde_json::to_value(&node).unwrap());
    }

    /// The stored Node `name`, if any.
    pub fn node(&self, name: &str) -> Option<Node> {
        self.state()
            .store
            .get(Kind::Node, "", name)
            .map(|v| serde_json::from_value(v.clone()).unwrap())
    }

    /// Creates or replaces the Opaque Secret `namespace/name` with `data`
    /// (as `kubectl apply` would store it). The namespace must exist.
    pub fn set_secret(&self, namespace: &str, name: &str, data: &BTreeMap<String, Vec<u8>>) {
        let mut st = self.state();
        assert!(
            st.store.get(Kind::Namespace, "", namespace).is_some(),
            "set_secret: no namespace {namespace}"
        );
        let existing = st.store.get(Kind::Secret, namespace, name).cloned();
        let mut meta = obj_meta(name);
        meta.namespace = Some(namespace.to_string());
        let secret = k8s_openapi::api::core::v1::Secret {
            metadata: meta,
            type_: Some("Opaque".into()),
            data: Some(
                data.iter()
                    .map(|(k, v)| (k.clone(), k8s_openapi::ByteString(v.clone())))
                    .collect(),
            ),
            ..Default::default()
        };
        let mut v = serde_json::to_value(&secret).unwrap();
        match existing {
            Some(old) => {
                v["metadata"]["uid"] = old["metadata"]["uid"].clone();
                v["metadata"]["creationTimestamp"] = old["metadata"]["creationTimestamp"].clone();
                st.store.update(Kind::Secret, v);
            }
            None => {
                st.store.create(Kind::Secret, v);
            }
        }
    }

    /// Test-only: creates or replaces Pod `pod` (by its namespace and name;
    /// the namespace must exist) in storage, spec and status as given, as
    /// the scheduler's binding and kubelet's status updates would have left
    /// it: for example a container waiting in `ImagePullBackOff`. A new
    /// resourceVersion and an ADDED or MODIFIED event to watchers; a uid
    /// and creationTimestamp are added when missing (kept on a
    /// replacement). Returns the stored Pod.
    pub fn set_pod(&self, pod: k8s_openapi::api::core::v1::Pod) -> k8s_openapi::api::core::v1::Pod {
        let namespace = pod.metadata.namespace.clone().unwrap_or_default();
        let name = pod.metadata.name.clone().unwrap_or_default();
        assert!(!name.is_empty(), "set_pod: the pod has no name");
        let mut st = self.state();
        assert!(
            st.store.get(Kind::Namespace, "", &namespace).is_some(),
            "set_pod: no namespace {namespace:?}"
        );
        let existing = st.store.get(Kind::Pod, &namespace, &name).cloned();
        let mut v = serde_json::to_value(&pod).unwrap();
        if let Some(m) = v["metadata"].as_object_mut() {
            m.remove("resourceVersion");
        }
        let stored = match existing {
            Some(old) => {
                v["metadata"]["uid"] = old["metadata"]["uid"].clone();
                v["metadata"]["creationTimestamp"] = old["metadata"]["creationTimestamp"].clone();
                st.store.update(Kind::Pod, v)
            }
            None => {
                let fresh = obj_meta(&name);
                if v["metadata"].get("uid").is_none() {
                    v["metadata"]["uid"] = serde_json::to_value(fresh.uid).unwrap();
                }
                if v["metadata"].get("creationTimestamp").is_none() {
                    v["metadata"]["creationTimestamp"] =
                        serde_json::to_value(fresh.creation_timestamp).unwrap();
                }
                st.store.create(Kind::Pod, v)
            }
        };
        serde_json::from_value(stored).unwrap()
    }

    /// Sets `condition` on Node `name` directly in storage (replacing the
    /// condition of its type, or appending it), as another owner such as
    /// node-problem-detector would have written it. Panics when there is no
    /// such Node.
    pub fn set_node_condition(&self, name: &str, condition: NodeCondition) {
        let mut st = self.state();
        let mut v = st
            .store
            .get(Kind::Node, "", name)
            .cloned()
            .unwrap_or_else(|| panic!("ApiServer::set_node_condition: no Node {name:?}"));
        let c = serde_json::to_value(&condition).unwrap();
        let list = v["status"]["conditions"].as_array_mut();
        match list {
            Some(list) => match list.iter_mut().find(|x| x["type"] == c["type"]) {
                Some(x) => *x = c,
                None => list.push(c),
            },
            None => v["status"]["conditions"] = json!([c]),
        }
        st.store.update(Kind::Node, v);
    }

    /// The write requests (update, patch, delete) made so far on
    /// `nodes/<name>` or `nodes/<name>/status`, whatever their answer: what
    /// an idle agent must never make. Counted from the recorded requests
    /// (see [`ApiServer::clear_requests`]); a create names no Node in its
    /// URL and is not counted.
    pub fn node_writes(&self, name: &str) -> usize {
        self.state()
            .requests
            .iter()
            .filter(|r| {
                r.resource == "nodes"
                    && r.name == name
                    && matches!(r.verb.as_str(), "update" | "patch" | "delete")
            })
            .count()
    }

    /// Adds a Namespace.
    pub fn add_namespace(&self, name: &str) {
        self.state()
            .store
            .create(Kind::Namespace, namespace_json(name));
    }

    /// Creates a RenewRevocation in `namespace` from JSON (`metadata.name`
    /// and `spec`; apiVersion/kind optional), through the same pruning,
    /// NamespaceLifecycle and schema validation as a POST. Returns the stored
    /// object, or the error message (422 `...is invalid: ...`, 404 for a
    /// missing namespace, 409 for a taken name).
    pub fn add_revocation(&self, namespace: &str, mut obj: Value) -> Result<Value, String> {
        if !obj.get("metadata").is_some_and(Value::is_object) {
            obj["metadata"] = json!({});
        }
        obj["metadata"]["namespace"] = json!(namespace);
        obj["metadata"]["uid"] = json!(resources::new_uid());
        obj["metadata"]["creationTimestamp"] = serde_json::to_value(resources::now_time()).unwrap();
        crd::prune_metadata(&mut obj);
        crd::CRD.prune(&mut obj);
        let mut st = self.state();
        custom::create_object(&mut st, obj, false).map_err(|e| message(&e))
    }

    /// Replaces the spec of RenewRevocation `namespace/name` (validated;
    /// MODIFIED event, generation bumped when it changed).
    pub fn update_revocation_spec(
        &self,
        namespace: &str,
        name: &str,
        spec: Value,
    ) -> Result<Value, String> {
        custom::replace_spec(&mut self.state(), namespace, name, spec).map_err(|e| message(&e))
    }

    /// Deletes RenewRevocation `namespace/name` (DELETED event). Returns
    /// whether it existed.
    pub fn delete_revocation(&self, namespace: &str, name: &str) -> bool {
        self.state()
            .store
            .delete(Kind::Revocation, namespace, name)
            .is_some()
    }

    /// The stored RenewRevocations of every namespace.
    pub fn revocations(&self) -> Vec<Value> {
        self.state().store.list(Kind::Revocation).cloned().collect()
    }

    /// From now on, kubelet client certificates are signed by another CA
    /// than the cluster CA (given as PEM), which the server also trusts for
    /// client auth: a cluster with its own kubelet client signer.
    pub fn sign_client_certificates_with(&self, cert_pem: &str, key_pem: &str) {
        let ca = node_cert_agent::x509::testpki::TestCa {
            cert: openssl::x509::X509::from_pem(cert_pem.as_bytes()).unwrap(),
            key: openssl::pkey::PKey::private_key_from_pem(key_pem.as_bytes()).unwrap(),
        };
        self.shared.ca.set_client_signer(ca);
    }

    /// CSR `name`.
    pub fn csr(&self, name: &str) -> Option<CertificateSigningRequest> {
        controller::load(&self.state(), name)
    }

    /// Every CSR, by name.
    pub fn csrs(&self) -> Vec<CertificateSigningRequest> {
        self.state()
            .store
            .list(Kind::Csr)
            .map(|v| serde_json::from_value(v.clone()).unwrap())
            .collect()
    }

    /// Approves CSR `name` as `kubectl certificate approve` does (reason
    /// `KubectlApprove`); the signer then signs or fails it. Returns false
    /// when it does not exist or is already approved/denied.
    pub fn approve(&self, name: &str) -> bool {
        let ok = controller::set_decision(
            &mut self.state(),
            name,
            true,
            "KubectlApprove",
            "This CSR was approved by kubectl certificate approve.",
        );
        self.shared.controller.notify_one();
        ok
    }

    /// Denies CSR `name` with `reason` and `message`.
    pub fn deny(&self, name: &str, reason: &str, message: &str) -> bool {
        controller::set_decision(&mut self.state(), name, false, reason, message)
    }

    /// Deletes CSR `name` (as the CSR cleaner or an admin would).
    pub fn delete_csr(&self, name: &str) -> bool {
        self.state().store.delete(Kind::Csr, "", name).is_some()
    }

    /// Every stored Event.
    pub fn events(&self) -> Vec<StoredEvent> {
        self.state()
            .store
            .list(Kind::Event)
            .map(|v| StoredEvent {
                event: serde_json::from_value(v.clone()).unwrap(),
                raw: v.clone(),
            })
            .collect()
    }

    /// Every request so far, in order.
    pub fn requests(&self) -> Vec<RequestRecord> {
        self.state().requests.clone()
    }

    /// Forgets the recorded requests.
    pub fn clear_requests(&self) {
        self.state().requests.clear();
    }

    /// The current global resourceVersion (etcd revision).
    pub fn resource_version(&self) -> u64 {
        self.state().store.rv
    }

    /// Compacts the watch history: a watch or continue token from an older
    /// resourceVersion now gets 410 Gone (reason `Expired`).
    pub fn compact(&self) {
        self.state().store.compact();
    }

    /// How often watches with `allowWatchBookmarks=true` get a BOOKMARK
    /// (default 1 s; kube-apiserver sends them about once a minute).
    pub fn set_bookmark_interval(&self, every: Duration) {
        self.state().bookmark_interval = every;
    }

    // ------------------------------------------------------------ CSR knobs

    /// Test-only knob: runs or stops the `csrapproving` controller (running
    /// by default; what it approves depends on the [`Profile`]'s bindings).
    /// Stopped: CSRs stay pending until [`ApiServer::approve`]. To model a
    /// cluster with its own approver, prefer [`Profile::OwnApprover`].
    pub fn set_auto_approve(&self, on: bool) {
        self.state().csr.auto_approve = on;
    }

    /// The next CSR created is denied with `reason` and `message`.
    pub fn deny_next_csr(&self, reason: &str, message: &str) {
        self.state()
            .csr
            .deny_next
            .push_back((reason.to_string(), message.to_string()));
    }

    /// Every CSR created from now on is denied (`None` to stop).
    pub fn deny_all_csrs(&self, reason_message: Option<(&str, &str)>) {
        self.state().csr.deny_all = reason_message.map(|(r, m)| (r.to_string(), m.to_string()));
    }

    /// The signer's maximum lifetime (`--cluster-signing-duration`, default
    /// one year). Issued: min(expirationSeconds, this), at least 10 min when
    /// expirationSeconds is set and this is longer. Tests may go below 10
    /// min.
    pub fn set_cert_lifetime(&self, d: Duration) {
        self.state().csr.max_lifetime = d;
    }

    /// The signer's NotBefore backdating (5 min in kube-controller-manager).
    pub fn set_backdate(&self, d: Duration) {
        self.state().csr.backdate = d;
    }

    /// A pause before each controller step (approval, signing).
    pub fn set_controller_delay(&self, d: Duration) {
        self.state().csr.controller_delay = d;
    }

    /// The next `n` certificates are issued for a fresh key instead of the
    /// CSR's (`u32::MAX`: all).
    pub fn issue_wrong_key(&self, n: u32) {
        self.state().csr.wrong_key = n;
    }

    /// The next `n` certificates get subject
    /// `CN=system:node:wrong-subject, O=system:nodes` (`u32::MAX`: all).
    pub fn issue_wrong_subject(&self, n: u32) {
        self.state().csr.wrong_subject = n;
    }

    // ------------------------------------------------------------ faults

    /// Delays every response by `d`.
    pub fn set_delay(&self, d: Duration) {
        self.state().faults.delay = d;
    }

    /// The next `n` authenticated requests fail with `code` (500
    /// InternalError, 503 ServiceUnavailable, 504 Timeout `Status`).
    pub fn fail_next(&self, n: u32, code: u16) {
        let mut st = self.state();
        st.faults.fail_remaining = n;
        st.faults.fail_code = code;
    }

    /// The next `n` authenticated requests get 429 with `Retry-After:
    /// retry_after_secs`.
    pub fn throttle_next(&self, n: u32, retry_after_secs: u32, style: Throttle) {
        let mut st = self.state();
        st.faults.throttle_remaining = n;
        st.faults.throttle_retry_after = retry_after_secs;
        st.faults.throttle_style = style;
    }

    /// The next `n` requests: the connection is closed without an answer.
    pub fn drop_next(&self, n: u32) {
        self.state().faults.drop_remaining = n;
    }

    /// Stops listening and closes every open connection (watches included):
    /// connections are refused until [`ApiServer::up`].
    pub fn down(&self) {
        let (tx, rx) = std::sync::mpsc::channel();
        self.control.send(Control::Down(tx)).unwrap();
        rx.recv().unwrap();
    }

    /// Listens again on the same port.
    pub fn up(&self) {
        let (tx, rx) = std::sync::mpsc::channel();
        self.control.send(Control::Up(tx)).unwrap();
        rx.recv().unwrap();
    }

    /// Whether the server is listening.
    pub fn is_up(&self) -> bool {
        self.state().up
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        let _ = self.control.send(Control::Shutdown);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The message of an error response.
fn message(e: &status::ApiError) -> String {
    e.status_value()["message"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

fn namespace_json(name: &str) -> Value {
    let ns = k8s_openapi::api::core::v1::Namespace {
        metadata: {
            let mut m = obj_meta(name);
            m.labels = Some(BTreeMap::from([(
                "kubernetes.io/metadata.name".to_string(),
                name.to_string(),
            )]));
            m
        },
        spec: Some(k8s_openapi::api::core::v1::NamespaceSpec {
            finalizers: Some(vec!["kubernetes".into()]),
        }),
        status: Some(k8s_openapi::api::core::v1::NamespaceStatus {
            phase: Some("Active".into()),
            ..Default::default()
        }),
    };
    serde_json::to_value(ns).unwrap()
}
