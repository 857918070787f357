//! The schema of `status --output json`: the typed report every output of
//! `status` is rendered from. A field renamed here changes the documented
//! JSON (docs/json.md); `schema/tests.rs` pins it.
//!
//! Owns: the report's types and their serialised names. Boundary: no
//! judgement (that is [`crate::status::report`]'s) and no I/O.

use serde::Serialize;

use crate::ops::daemon_status::{PublishReport, SourceReport};

/// What `status --output json` prints. Stable: documented in docs/json.md ("status").
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusReport {
    pub schema_version: u32,
    pub generated_at: String,
    pub healthy: bool,
    pub exit_code: u8,
    pub problems: Vec<Problem>,
    pub agent: AgentReport,
    pub custom_cas: Vec<CaRow>,
    pub trust_store: TrustStoreReport,
    pub kubelet: KubeletReport,
    pub node_certificates: Vec<NodeCertRow>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum ProblemKind {
    Expired,
    /// In the last [`EXPIRING_FRACTION`] of its lifetime, and nothing renews it.
    Expiring,
    /// An input finding of error severity, or a certificate that cannot be read.
    Invalid,
    /// The daemon's last pass failed.
    Failing,
    /// An expected certificate is missing, and nothing will create it.
    Missing,
    /// kubelet's kubeconfig uses another credential than the certificate
    /// node-cert-agent renews.
    Mismatch,
}

impl ProblemKind {
    pub fn name(self) -> &'static str {
        match self {
            Self::Expired => "expired",
            Self::Expiring => "expiring",
            Self::Invalid => "invalid",
            Self::Failing => "failing",
            Self::Missing => "missing",
            Self::Mismatch => "mismatch",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Problem {
    pub kind: ProblemKind,
    /// What it concerns: a CA key, a certificate path, or `agent`.
    pub subject: String,
    pub message: String,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentReport {
    pub version: String,
    pub running: bool,
    /// How `running` was decided: `pid`, `lock`, `stopped` or `none`.
    pub running_check: String,
    pub running_detail: String,
    pub pid: Option<u32>,
    /// `host` or `pod`, as the daemon reported; `null` if it never ran.
    pub mode: Option<String>,
    pub started_at: Option<String>,
    pub last_reconcile: Option<String>,
    pub last_error: Option<String>,
    pub last_kubelet_pass: Option<String>,
    pub last_kubelet_error: Option<String>,
    pub next_renewal: Option<String>,
    pub metrics_address: Option<String>,
    /// Revocations that matched a kubelet certificate in the daemon's last
    /// kubelet pass.
    pub revocation_matches: Vec<String>,
    /// How the running daemon could read the RenewRevocations in its last
    /// kubelet pass: `state` (`synced`, `syncing`, `noIdentity`, `failing`),
    /// `error`, `forbidden`; `null` without a running kubelet job.
    pub revocation_source: Option<SourceReport>,
    /// How the running daemon's watch of the CA Secret (`ca-secret`) stood
    /// at its last CA pass: `state` (`synced`, `syncing`, `failing`),
    /// `error`, `forbidden`; `null` without `ca-secret` or a daemon.
    pub ca_secret_source: Option<SourceReport>,
    /// How the running daemon's publishing on its Node stands: `state`
    /// (`published`, `pending`, `failing`), `lastWrite` (Unix seconds),
    /// `writes`, `error`; `null` when it does not publish.
    pub fleet_publish: Option<PublishReport>,
    /// How image pulls get the custom CAs, as the running daemon's last CA
    /// pass left it: `mode` (`live`: containerd reads them at the next
    /// pull through `dir`, no restart for an added CA; `restart`: a change
    /// takes effect when containerd restarts), `dir`, `reason`, `path`
    /// (the file that forced restarts) and `hint` (what would avoid them);
    /// `null` without a running daemon that has made a CA pass.
    pub pull_trust: Option<crate::trust::pull_trust::PullTrust>,
    /// The pods on this node that waited in image-pull back-off after
    /// `x509: certificate signed by unknown authority` when the running
    /// daemon's last CA pass made a CA effective for pulls (one list right
    /// after that pass), one entry per container: `namespace`, `name`,
    /// `container`, `image`. Shown only while kubelet's back-off (at most 5
    /// minutes) may still hold them; empty otherwise.
    pub waiting_pods: Vec<crate::trust::waiting_pods::WaitingPod>,
    /// What the user can do about them, one line; `null` without pods.
    pub waiting_pods_advice: Option<String>,
    pub state_dir: String,
    /// Why the state or daemon status file could not be read, if so.
    pub state_error: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FindingReport {
    /// `error` or `warning`.
    pub severity: String,
    pub problem: String,
    pub fix: String,
}

/// One certificate of one CA key (or a key without a usable certificate).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CaRow {
    pub source: String,
    pub key: String,
    pub subject: Option<String>,
    pub issuer: Option<String>,
    pub serial: Option<String>,
    /// Full SHA-256 fingerprint of the DER (the table shows 16 hex digits).
    pub sha256: Option<String>,
    pub not_before: Option<String>,
    pub not_after: Option<String>,
    pub residual_seconds: Option<i64>,
    /// The agent's anchor file for it exists.
    pub anchor_present: bool,
    /// The node's trust bundle holds it.
    pub in_bundle: bool,
    /// Both: the node trusts it.
    pub installed: bool,
    pub findings: Vec<FindingReport>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TrustStoreReport {
    pub family: Option<String>,
    pub anchors_dir: Option<String>,
    pub bundle_path: Option<String>,
    /// The agent's CAs (anchors present), and how many of them the bundle holds.
    pub agent_cas: usize,
    pub agent_cas_in_bundle: usize,
    /// Unit restarts the trust job still has to do.
    pub pending_restarts: Vec<PendingRestartReport>,
    /// Units on the restart allowlist that take their root CAs from
    /// elsewhere (`SSL_CERT_FILE`, `SSL_CERT_DIR` in their environment).
    pub runtime_roots: Vec<RuntimeRootsReport>,
    pub error: Option<String>,
}

/// A unit whose environment points its root CAs away from the OS bundle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RuntimeRootsReport {
    pub unit: String,
    pub variable: String,
    pub value: String,
}

/// A unit restart the trust job still has to do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PendingRestartReport {
    pub unit: String,
    /// `pending` (the next pass does it), `deferred` (waits for the unit's
    /// start limit), `recovering` (stopped at its start limit after the
    /// agent's restart; the agent starts it again).
    pub state: String,
    /// When the agent restarts (or starts) it, if it waits.
    pub not_before: Option<String>,
    /// The unit's start limit as the agent last read it.
    pub start_limit: Option<String>,
}

/// Who renews a certificate before it expires.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RenewedBy {
    NodeCertAgent,
    Kubelet,
    None,
}

impl RenewedBy {
    pub fn name(self) -> &'static str {
        match self {
            Self::NodeCertAgent => "node-cert-agent",
            Self::Kubelet => "kubelet",
            Self::None => "-",
        }
    }
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct KubeletCertReport {
    /// `client` or `serving`.
    pub kind: String,
    /// Node path of `<prefix>-current.pem`.
    pub path: String,
    pub present: bool,
    /// The file the link points at.
    pub file: Option<String>,
    pub subject: Option<String>,
    pub issuer: Option<String>,
    pub serial: Option<String>,
    pub not_before: Option<String>,
    pub not_after: Option<String>,
    pub residual_seconds: Option<i64>,
    /// When node-cert-agent renews it (its deadline for this node name).
    pub next_renewal: Option<String>,
    pub renewed_by: RenewedBy,
    pub key_matches: Option<bool>,
    pub error: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct KubeletReport {
    pub node_name: Option<String>,
    /// A bootstrap kubeconfig is present.
    pub tls_bootstrapping: bool,
    pub bootstrap_kubeconfig: Option<String>,
    pub kubeconfig: Option<String>,
    pub kubelet_config: String,
    /// kubelet's config says `rotateCertificates: true`.
    pub rotate_certificates: bool,
    /// kubelet's config says `serverTLSBootstrap: true`.
    pub server_tls_bootstrap: bool,
    /// The serving certificate file kubelet serves (`tlsCertFile` or
    /// `--tls-cert-file`); `null` when it serves its own.
    pub tls_cert_file: Option<String>,
    /// kubelet's unit command line was read over D-Bus (its flags,
    /// `--config` and `--config-dir` counted); `false`: the config file
    /// alone.
    pub command_line_read: bool,
    /// node-cert-agent's kubelet job is on.
    pub agent_job: bool,
    /// What kubelet's kubeconfig presents as its client credential
    /// (`file <path>`, `embedded`, `token`, `other`), if there is a
    /// kubeconfig; `null` if none or unreadable (then `kubeconfigError`).
    pub kubeconfig_credential: Option<String>,
    pub kubeconfig_error: Option<String>,
    pub client: KubeletCertReport,
    pub serving: KubeletCertReport,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum CertStatus {
    Ok,
    Expiring,
    Expired,
    NotYetValid,
    Missing,
    Unreadable,
}

impl CertStatus {
    pub fn name(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Expiring => "EXPIRING",
            Self::Expired => "EXPIRED",
            Self::NotYetValid => "NOT YET VALID",
            Self::Missing => "!MISSING!",
            Self::Unreadable => "UNREADABLE",
        }
    }
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeCertRow {
    /// The CERTIFICATE column.
    pub name: String,
    /// Node path of the file (of the kubeconfig, for an embedded one).
    pub path: String,
    /// `user:<name>` for a kubeconfig's embedded client certificate.
    pub embedded: Option<String>,
    pub subject: Option<String>,
    pub issuer: Option<String>,
    /// The issuer's CN (kubeadm's CERTIFICATE AUTHORITY column).
    pub certificate_authority: Option<String>,
    /// Decimal, as x509-certificate-exporter's `serial_number` label.
    pub serial_number: Option<String>,
    pub sha256: Option<String>,
    pub not_before: Option<String>,
    pub not_after: Option<String>,
    pub residual_seconds: Option<i64>,
    pub status: CertStatus,
    pub renewed_by: RenewedBy,
    pub error: Option<String>,
}

impl StatusReport {
    pub fn exit_code(&self) -> u8 {
        self.exit_code
    }
}
