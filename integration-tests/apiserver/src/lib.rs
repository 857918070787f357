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
//!
//! ## Layout
//!
//! This file owns the public types and the state every part shares;
//! [`ApiServer`]'s methods are in `server/`, one module per role. A request
//! goes through the filter chain (`handler.rs`), then to discovery
//! (`discovery.rs`), the reads (`reads.rs`) or the write pipeline
//! (`resources.rs`), which runs the hooks each kind gives (`writes.rs`'s
//! traits, implemented in `csr.rs`, `nodes.rs`, `secrets.rs`, `events.rs`
//! and `custom.rs`). Below them: the request and its responses
//! (`request.rs`), the resource definitions (`defs.rs`), shared validation
//! (`validation.rs`), authorization (`authz.rs` over `rbac.rs`, both
//! reading `attributes.rs`), and leaves (`status.rs`, `store.rs`,
//! `patch.rs`, `ca.rs`, ...). No module uses one that uses it back
//! (`tests/layout.rs` checks it, and the 900-line limit per file).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test server: a broken invariant or a failed test step must panic loudly"
)]

mod attributes;
mod auth;
mod authz;
mod body;
mod ca;
mod cel;
mod controller;
mod crd;
mod csr;
mod custom;
mod defs;
mod discovery;
mod events;
mod handler;
mod net;
mod nodes;
mod openapi;
mod patch;
mod rbac;
mod reads;
mod request;
mod resources;
mod secrets;
mod selectors;
mod server;
mod status;
mod store;
mod validation;
mod writes;

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

pub use auth::UserInfo;
use ca::ClusterCa;
pub use crd::RENEW_REVOCATION_CRD;
use net::Control;
pub use rbac::{PolicyRule, Profile, Rbac, Subject, KUBEADM_NODE_TOKEN_GROUP};
use serde_json::Value;
use store::Store;
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
///
/// Its methods are grouped by role, one module each under `server/`:
/// starting and describing it (`lifecycle`), credentials (`identities`),
/// run-time grants (`access`), seeding objects (`fixtures`), reading them
/// back (`inspect`), the CSR controllers (`controllers`) and injected
/// failures (`faults`).
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

impl Drop for ApiServer {
    fn drop(&mut self) {
        let _ = self.control.send(Control::Shutdown);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
