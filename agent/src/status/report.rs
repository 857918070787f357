//! Step 2 of `status`: judge the [`Facts`] into a [`StatusReport`], with the
//! health verdict ([`StatusReport::problems`]). Pure.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde::Serialize;

use crate::k8s::kubeconfig::Credential;
use crate::kubelet::renewal;
use crate::kubelet::store::CertKind;
use crate::ops::daemon_status::{DaemonStatus, SCHEMA_VERSION};
use crate::ops::daemon_status::{PublishReport, SourceReport};
use crate::ops::inventory::NodeCertRead;
use crate::status::gather::{Facts, KubeletCertFact};
use crate::status::liveness::Liveness;
use crate::status::{EXIT_HEALTHY, EXIT_UNHEALTHY};
use crate::trust::plan::{self};
use crate::trust::state::{CaState, Pending};
use crate::trust::validate::{Finding, FindingKind, Severity};
use crate::x509::cert::{CertInfo, Fingerprint};
use crate::x509::time::{rfc3339, rfc3339_us};

/// A certificate in the last tenth of its lifetime, with nothing that renews
/// it, makes the node unhealthy.
pub const EXPIRING_FRACTION: f64 = 0.10;

// ---------------------------------------------------------------------------
// The report (pure)
// ---------------------------------------------------------------------------

/// What `status --output json` prints. Stable: see README "Operating it".
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

/// Whether a certificate valid over `[nb, na]` is in the last
/// [`EXPIRING_FRACTION`] of its lifetime at `now` (and not expired yet).
pub fn is_expiring(nb: i64, na: i64, now: i64) -> bool {
    let lifetime = (na - nb).max(0) as f64;
    now < na && ((na - now) as f64) < lifetime * EXPIRING_FRACTION
}

fn cert_status(nb: i64, na: i64, now: i64) -> CertStatus {
    if na <= now {
        CertStatus::Expired
    } else if nb > now {
        CertStatus::NotYetValid
    } else if is_expiring(nb, na, now) {
        CertStatus::Expiring
    } else {
        CertStatus::Ok
    }
}

/// The restarts the state file has pending, with what the restart history
/// says of each.
fn pending_restarts(facts: &Facts) -> Vec<PendingRestartReport> {
    let Some(Pending::Restart(units)) = facts.ca_state.as_ref().ok().map(|s| &s.pending) else {
        return Vec::new();
    };
    let now_us = u64::try_from(facts.now)
        .unwrap_or(0)
        .saturating_mul(1_000_000);
    units
        .iter()
        .map(|unit| {
            let h = facts.restart_history.units.get(unit);
            let waits = h.and_then(|h| h.not_before_us).filter(|&t| t > now_us);
            let state = match h {
                Some(h) if h.responsible && h.limit_hit_us.is_some() => "recovering",
                _ if waits.is_some() => "deferred",
                _ => "pending",
            };
            PendingRestartReport {
                unit: unit.clone(),
                state: state.to_string(),
                not_before: waits.map(rfc3339_us),
                start_limit: h.map(|h| h.start_limit().to_string()),
            }
        })
        .collect()
}

fn finding_report(f: &Finding) -> FindingReport {
    FindingReport {
        severity: match f.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        }
        .to_string(),
        problem: match f.position {
            Some(p) => format!("certificate {p}: {}", f.problem),
            None => f.problem.clone(),
        },
        fix: f.fix.clone(),
    }
}

/// The current findings per (source, key), as the daemon's pass would log
/// them: a source that never existed and never provided CAs is a warning.
fn findings_by_key(facts: &Facts, state: &CaState) -> BTreeMap<(String, String), Vec<Finding>> {
    let mut out: BTreeMap<(String, String), Vec<Finding>> = BTreeMap::new();
    for input in &facts.inputs {
        match &input.keys {
            Err(f) => {
                let mut f = f.clone();
                if f.kind == FindingKind::SourceMissing && !state.keys.contains_key(&input.source) {
                    f.severity = Severity::Warning;
                    f.problem = format!(
                        "{}; nothing was installed from it",
                        f.problem.split(';').next().unwrap_or_default()
                    );
                }
                out.entry((input.source.clone(), f.key.clone()))
                    .or_default()
                    .push(f);
            }
            Ok(verdicts) => {
                for v in verdicts {
                    out.entry((input.source.clone(), v.key.clone()))
                        .or_default()
                        .extend(v.findings.iter().cloned());
                }
            }
        }
    }
    out
}

fn ca_rows(facts: &Facts, problems: &mut Vec<Problem>) -> Vec<CaRow> {
    let state = facts.ca_state.clone().unwrap_or_default();
    let anchors = facts.inventory.anchors.as_ref().ok();
    let bundle = facts.bundle.as_ref().ok();
    let mut findings = findings_by_key(facts, &state);
    // The plan's own findings: too many certificates (over all inputs), or a
    // key whose last good version is gone from the trust store.
    if !facts.inputs.is_empty() {
        let installed: BTreeMap<Fingerprint, CertInfo> = anchors
            .map(|a| a.iter().map(|(fp, a)| (*fp, a.info.clone())).collect())
            .unwrap_or_default();
        let p = plan::plan(
            &facts.inputs,
            &state.key_state(),
            &installed,
            facts.max_certificates,
        );
        for f in p.findings {
            let source = state
                .keys
                .iter()
                .find(|(_, keys)| keys.contains_key(&f.key))
                .map(|(s, _)| s.clone())
                .unwrap_or_else(|| String::from("(all inputs)"));
            findings.entry((source, f.key.clone())).or_default().push(f);
        }
    }
    // The current inputs' certificates by (source, key), for keys the daemon
    // has not installed (yet).
    let mut input_certs: BTreeMap<(String, String), Vec<CertInfo>> = BTreeMap::new();
    for input in &facts.inputs {
        if let Ok(verdicts) = &input.keys {
            for v in verdicts {
                input_certs
                    .entry((input.source.clone(), v.key.clone()))
                    .or_default()
                    .extend(v.certs.iter().cloned());
            }
        }
    }
    let mut rows = Vec::new();
    let mut seen: BTreeSet<(String, String, Option<Fingerprint>)> = BTreeSet::new();
    let mut push = |source: &str,
                    key: &str,
                    fp: Option<Fingerprint>,
                    from_input: Option<&CertInfo>,
                    rows: &mut Vec<CaRow>| {
        if !seen.insert((source.to_string(), key.to_string(), fp)) {
            return;
        }
        let anchor = fp.and_then(|fp| anchors.and_then(|a| a.get(&fp)));
        let (subject, issuer, serial, nb, na) = match (anchor, from_input) {
            (Some(a), _) => (
                Some(a.cert.subject.clone()),
                Some(a.cert.issuer.clone()),
                Some(a.cert.serial_hex.clone()),
                Some(a.cert.not_before),
                Some(a.cert.not_after),
            ),
            (None, Some(c)) => (
                Some(c.subject.clone()),
                Some(c.issuer.clone()),
                Some(c.serial.clone()),
                Some(c.not_before),
                Some(c.not_after),
            ),
            (None, None) => (None, None, None, None, None),
        };
        let in_bundle = fp.is_some_and(|fp| bundle.is_some_and(|b| b.contains(&fp)));
        rows.push(CaRow {
            source: source.to_string(),
            key: key.to_string(),
            subject,
            issuer,
            serial,
            sha256: fp.map(|f| f.hex()),
            not_before: nb.map(rfc3339),
            not_after: na.map(rfc3339),
            residual_seconds: na.map(|na| na - facts.now),
            anchor_present: anchor.is_some(),
            in_bundle,
            installed: anchor.is_some() && in_bundle,
            findings: Vec::new(),
        });
    };
    // What the daemon installed (last good versions), then what the inputs
    // hold now, then keys that only have findings.
    for (source, keys) in &state.keys {
        for (key, fps) in keys {
            for fp in fps.iter().filter_map(|h| Fingerprint::from_hex(h)) {
                push(source, key, Some(fp), None, &mut rows);
            }
        }
    }
    for ((source, key), certs) in &input_certs {
        for c in certs {
            push(source, key, Some(c.fingerprint), Some(c), &mut rows);
        }
    }
    for (source, key) in findings.keys() {
        if !rows.iter().any(|r| &r.source == source && &r.key == key) {
            push(source, key, None, None, &mut rows);
        }
    }
    for row in &mut rows {
        if let Some(fs) = findings.get(&(row.source.clone(), row.key.clone())) {
            row.findings = fs.iter().map(finding_report).collect();
            for f in fs.iter().filter(|f| f.is_error()) {
                let problem = Problem {
                    kind: ProblemKind::Invalid,
                    subject: format!("custom CA key {}", row.key),
                    message: f.to_string(),
                };
                if !problems.contains(&problem) {
                    problems.push(problem);
                }
            }
        }
        if let (Some(na), true) = (row.residual_seconds, row.anchor_present) {
            let nb = row
                .not_before
                .as_deref()
                .and_then(crate::x509::time::parse_rfc3339)
                .unwrap_or(facts.now);
            let na = facts.now + na;
            let subject = format!("custom CA key {}", row.key);
            let what = row.subject.clone().unwrap_or_default();
            if na <= facts.now {
                problems.push(Problem {
                    kind: ProblemKind::Expired,
                    subject,
                    message: format!(
                        "the installed CA \"{what}\" expired at {}; publish its successor in the Secret",
                        rfc3339(na)
                    ),
                });
            } else if is_expiring(nb, na, facts.now) {
                problems.push(Problem {
                    kind: ProblemKind::Expiring,
                    subject,
                    message: format!(
                        "the installed CA \"{what}\" expires at {} (under {:.0} % of its lifetime left) and nothing renews it; publish its successor in the Secret",
                        rfc3339(na),
                        EXPIRING_FRACTION * 100.0
                    ),
                });
            }
        }
    }
    rows
}

fn kubelet_report(
    facts: &Facts,
    daemon_running: Option<&DaemonStatus>,
) -> (KubeletReport, RenewedBy, RenewedBy) {
    let k = &facts.kubelet;
    let agent_job = daemon_running.map_or(k.agent_job, |d| d.kubelet_job);
    let client_by = if agent_job && !(k.defer_to_kubelet_rotation && k.rotate_certificates) {
        RenewedBy::NodeCertAgent
    } else if k.rotate_certificates {
        RenewedBy::Kubelet
    } else {
        RenewedBy::None
    };
    let serving_by = if agent_job && k.serving_job {
        RenewedBy::NodeCertAgent
    } else if k.server_tls_bootstrap {
        RenewedBy::Kubelet
    } else {
        RenewedBy::None
    };
    let fraction = k.node_name.as_deref().map(renewal::renewal_fraction);
    let cert = |kind: CertKind, fact: &KubeletCertFact, by: RenewedBy| {
        let mut r = KubeletCertReport {
            kind: kind.name().to_string(),
            path: fact.link.display().to_string(),
            present: false,
            file: None,
            subject: None,
            issuer: None,
            serial: None,
            not_before: None,
            not_after: None,
            residual_seconds: None,
            next_renewal: None,
            renewed_by: by,
            key_matches: None,
            error: None,
        };
        match &fact.current {
            Ok(Some((file, s, key_matches))) => {
                r.present = true;
                r.file = Some(file.display().to_string());
                r.subject = Some(s.subject.clone());
                r.issuer = Some(s.issuer.clone());
                r.serial = Some(s.serial_hex.clone());
                r.not_before = Some(rfc3339(s.not_before));
                r.not_after = Some(rfc3339(s.not_after));
                r.residual_seconds = Some(s.not_after - facts.now);
                r.key_matches = Some(*key_matches);
                if by == RenewedBy::NodeCertAgent {
                    r.next_renewal =
                        fraction.map(|f| rfc3339(renewal::deadline(s.not_before, s.not_after, f)));
                }
            }
            Ok(None) => {}
            Err(e) => r.error = Some(e.clone()),
        }
        r
    };
    (
        KubeletReport {
            node_name: k.node_name.clone(),
            tls_bootstrapping: k.bootstrap_kubeconfig.is_some(),
            bootstrap_kubeconfig: k
                .bootstrap_kubeconfig
                .as_ref()
                .map(|p| p.display().to_string()),
            kubeconfig: k.kubeconfig.as_ref().map(|p| p.display().to_string()),
            kubelet_config: k.kubelet_config.display().to_string(),
            rotate_certificates: k.rotate_certificates,
            server_tls_bootstrap: k.server_tls_bootstrap,
            tls_cert_file: k.tls_cert_file.as_ref().map(|p| p.display().to_string()),
            command_line_read: k.command_line_known,
            agent_job,
            kubeconfig_credential: match &k.kubeconfig_credential {
                Some(Ok(Credential::CertificateFile(p))) => Some(format!("file {}", p.display())),
                Some(Ok(Credential::EmbeddedCertificate)) => Some("embedded".into()),
                Some(Ok(Credential::Token)) => Some("token".into()),
                Some(Ok(Credential::Other)) => Some("other".into()),
                _ => None,
            },
            kubeconfig_error: k
                .kubeconfig_credential
                .as_ref()
                .and_then(|c| c.as_ref().err().cloned()),
            client: cert(CertKind::Client, &k.client, client_by),
            serving: cert(CertKind::Serving, &k.serving, serving_by),
        },
        client_by,
        serving_by,
    )
}

/// kubelet's kubeconfig presents another credential than the certificate
/// node-cert-agent renews: kubelet never reads the renewed certificate.
fn kubeconfig_mismatch(facts: &Facts, client_by: RenewedBy) -> Option<Problem> {
    if client_by != RenewedBy::NodeCertAgent {
        return None;
    }
    let k = &facts.kubelet;
    let kubeconfig = k.kubeconfig.as_ref()?;
    let renewed = Path::new(&k.client.link);
    let uses = match k.kubeconfig_credential.as_ref()? {
        Ok(Credential::CertificateFile(p)) if p == renewed => return None,
        Ok(c) => c.to_string(),
        Err(e) => {
            return Some(Problem {
                kind: ProblemKind::Mismatch,
                subject: kubeconfig.display().to_string(),
                message: format!(
                "kubelet's kubeconfig cannot be read to check which certificate kubelet uses: {e}"
            ),
            })
        }
    };
    Some(Problem {
        kind: ProblemKind::Mismatch,
        subject: kubeconfig.display().to_string(),
        message: format!(
            "kubelet's kubeconfig {} uses {uses}, not {}, which node-cert-agent renews: kubelet never reads the renewed certificate. Fix: set client-certificate and client-key of its user to {}",
            kubeconfig.display(),
            renewed.display(),
            renewed.display()
        ),
    })
}

/// The serving certificate node-cert-agent renews is not the file kubelet
/// serves: renewing it changes nothing kubelet presents.
fn serving_unused(facts: &Facts, serving_by: RenewedBy) -> Option<Problem> {
    if serving_by != RenewedBy::NodeCertAgent {
        return None;
    }
    let k = &facts.kubelet;
    let renewed = &k.serving.link;
    if k.tls_cert_file.as_ref() == Some(renewed) {
        return None;
    }
    let serves = match &k.tls_cert_file {
        Some(p) => format!("serves {}", p.display()),
        None => "sets no tlsCertFile, so it serves a certificate of its own".to_string(),
    };
    Some(Problem {
        kind: ProblemKind::Mismatch,
        subject: renewed.display().to_string(),
        message: format!(
            "kubelet {serves} (config {}{}), not {}, which node-cert-agent renews: the renewed serving certificate is never served. Fix: set kubelet's tlsCertFile and tlsPrivateKeyFile to {}, or turn kubelet.serving off",
            k.kubelet_config.display(),
            if k.command_line_known { " and its command line" } else { "; its command line could not be read" },
            renewed.display(),
            renewed.display()
        ),
    })
}

/// Units on the restart allowlist whose environment sets `SSL_CERT_FILE`
/// or `SSL_CERT_DIR`: their TLS takes its roots from there, not from the
/// OS bundle the agent writes, so a restart does not make a CA effective.
fn runtime_roots(facts: &Facts, problems: &mut Vec<Problem>) -> Vec<RuntimeRootsReport> {
    let bundle = facts.layout.as_ref().ok().map(|l| l.bundle_path.clone());
    let mut out = Vec::new();
    for (unit, variable, value) in &facts.runtime_roots {
        let path = Path::new(value);
        let reads_the_bundle = bundle
            .as_ref()
            .is_some_and(|b| b == path || b.parent() == Some(path));
        if !reads_the_bundle {
            problems.push(Problem {
                kind: ProblemKind::Mismatch,
                subject: unit.clone(),
                message: format!(
                    "{unit} sets {variable}={value}: its TLS takes root CAs from there, not from the OS bundle {}, so the CAs node-cert-agent installs reach it only through containerd's certs.d (image pulls), and restarting it does not help. Fix: remove {variable} from the unit's environment, or point it at the OS bundle",
                    bundle.as_ref().map_or_else(|| "(unknown)".to_string(), |b| b.display().to_string())
                ),
            });
        }
        out.push(RuntimeRootsReport {
            unit: unit.clone(),
            variable: variable.clone(),
            value: value.clone(),
        });
    }
    out
}

fn node_cert_rows(
    facts: &Facts,
    kubelet: &KubeletReport,
    problems: &mut Vec<Problem>,
) -> Vec<NodeCertRow> {
    let renewed_by = |path: &Path| {
        for c in [&kubelet.client, &kubelet.serving] {
            if Path::new(&c.path) == path || c.file.as_deref().map(Path::new) == Some(path) {
                return c.renewed_by;
            }
        }
        RenewedBy::None
    };
    let mut rows = Vec::new();
    for fact in &facts.inventory.node_certs {
        let by = if fact.embedded.is_some() {
            RenewedBy::None
        } else {
            renewed_by(&fact.path)
        };
        let mut row = NodeCertRow {
            name: fact.name(),
            path: fact.path.display().to_string(),
            embedded: fact
                .embedded
                .as_ref()
                .map(|e| format!("{}:{}", e.kind, e.name)),
            subject: None,
            issuer: None,
            certificate_authority: None,
            serial_number: None,
            sha256: None,
            not_before: None,
            not_after: None,
            residual_seconds: None,
            status: CertStatus::Ok,
            renewed_by: by,
            error: None,
        };
        match &fact.read {
            NodeCertRead::Ok(s) => {
                row.subject = Some(s.subject.clone());
                row.issuer = Some(s.issuer.clone());
                row.certificate_authority = s.issuer_field("CN").map(str::to_string);
                row.serial_number = Some(s.serial_decimal.clone());
                row.sha256 = Some(s.fingerprint.hex());
                row.not_before = Some(rfc3339(s.not_before));
                row.not_after = Some(rfc3339(s.not_after));
                row.residual_seconds = Some(s.not_after - facts.now);
                row.status = cert_status(s.not_before, s.not_after, facts.now);
                match row.status {
                    CertStatus::Expired => problems.push(Problem {
                        kind: ProblemKind::Expired,
                        subject: row.name.clone(),
                        message: format!(
                            "\"{}\" expired at {}{}",
                            s.subject,
                            rfc3339(s.not_after),
                            match by {
                                RenewedBy::None => String::new(),
                                other => format!("; {} should have renewed it", other.name()),
                            }
                        ),
                    }),
                    CertStatus::Expiring if by == RenewedBy::None => problems.push(Problem {
                        kind: ProblemKind::Expiring,
                        subject: row.name.clone(),
                        message: format!(
                            "\"{}\" expires at {} (under {:.0} % of its lifetime left) and nothing on this node renews it",
                            s.subject,
                            rfc3339(s.not_after),
                            EXPIRING_FRACTION * 100.0
                        ),
                    }),
                    _ => {}
                }
            }
            NodeCertRead::Missing { referenced_by } => {
                row.status = CertStatus::Missing;
                row.error = Some(if referenced_by == &fact.path {
                    "the link points at a file that does not exist".to_string()
                } else {
                    format!("{} refers to it", referenced_by.display())
                });
                if by == RenewedBy::None {
                    problems.push(Problem {
                        kind: ProblemKind::Missing,
                        subject: row.name.clone(),
                        message: format!(
                            "missing ({}), and nothing on this node creates it",
                            row.error.as_deref().unwrap_or_default()
                        ),
                    });
                }
            }
            NodeCertRead::Unreadable(e) => {
                row.status = CertStatus::Unreadable;
                row.error = Some(e.clone());
                problems.push(Problem {
                    kind: ProblemKind::Invalid,
                    subject: row.name.clone(),
                    message: format!("cannot be read: {e}"),
                });
            }
        }
        rows.push(row);
    }
    rows
}

/// Judges the facts. Pure.
pub fn build_report(facts: &Facts) -> StatusReport {
    let mut problems = Vec::new();
    let daemon = facts.daemon.as_ref().ok().and_then(Option::as_ref);
    let live = facts.liveness.clone().unwrap_or(Liveness {
        running: false,
        check: "none",
        detail: "no daemon status file: the daemon has not run on this node".to_string(),
    });
    let running_daemon = daemon.filter(|_| live.running);

    if let Some(d) = daemon {
        for (what, err) in [
            ("CA trust", &d.last_ca_error),
            ("kubelet certificate", &d.last_kubelet_error),
        ] {
            if let Some(e) = err {
                problems.push(Problem {
                    kind: ProblemKind::Failing,
                    subject: "agent".to_string(),
                    message: format!("the daemon's last {what} pass failed: {e}"),
                });
            }
        }
    }
    if let Some(r) = running_daemon
        .and_then(|d| d.ca_secret_source.as_ref())
        .filter(|r| r.state != "synced")
    {
        problems.push(Problem {
            kind: ProblemKind::Failing,
            subject: "agent".to_string(),
            message: format!(
                "the CA Secret is not synced ({}): {}; the CAs last installed from it stay",
                r.state,
                r.error
                    .as_deref()
                    .unwrap_or("its first list has not completed")
            ),
        });
    }
    if let Some(r) = running_daemon
        .and_then(|d| d.revocation_source.as_ref())
        .filter(|r| r.is_failing())
    {
        problems.push(Problem {
            kind: ProblemKind::Failing,
            subject: "agent".to_string(),
            message: r
                .error
                .clone()
                .unwrap_or_else(|| "the RenewRevocations cannot be read".into()),
        });
    }
    let custom_cas = ca_rows(facts, &mut problems);
    let (kubelet, client_by, serving_by) = kubelet_report(facts, running_daemon);
    if let Some(p) = kubeconfig_mismatch(facts, client_by) {
        problems.push(p);
    }
    if let Some(p) = serving_unused(facts, serving_by) {
        problems.push(p);
    }
    let runtime_roots = runtime_roots(facts, &mut problems);
    let node_certificates = node_cert_rows(facts, &kubelet, &mut problems);

    let state = facts.ca_state.as_ref().ok();
    let last_reconcile = daemon
        .and_then(|d| d.last_ca_pass)
        .or_else(|| state.and_then(|s| s.last_success));
    let next_renewal = running_daemon
        .and_then(|d| d.next_renewal)
        .map(rfc3339)
        .or_else(|| {
            [&kubelet.client, &kubelet.serving]
                .iter()
                .filter_map(|c| c.next_renewal.clone())
                .min()
        });
    let state_error = [facts.ca_state.as_ref().err(), facts.daemon.as_ref().err()]
        .into_iter()
        .flatten()
        .next()
        .cloned();
    let waiting = running_daemon
        .and_then(|d| d.waiting_pods.as_ref())
        .filter(|w| w.is_current(facts.now));
    let agent = AgentReport {
        version: facts.version.clone(),
        running: live.running,
        running_check: live.check.to_string(),
        running_detail: live.detail.clone(),
        pid: daemon.map(|d| d.process.pid),
        mode: daemon.map(|d| d.mode.name().to_string()),
        started_at: daemon.map(|d| rfc3339(d.started_at)),
        last_reconcile: last_reconcile.map(rfc3339),
        last_error: daemon.and_then(|d| d.last_ca_error.clone()),
        last_kubelet_pass: daemon.and_then(|d| d.last_kubelet_pass).map(rfc3339),
        last_kubelet_error: daemon.and_then(|d| d.last_kubelet_error.clone()),
        next_renewal,
        metrics_address: daemon.and_then(|d| d.metrics_address.clone()),
        revocation_matches: daemon
            .map(|d| d.revocation_matches.clone())
            .unwrap_or_default(),
        revocation_source: running_daemon.and_then(|d| d.revocation_source.clone()),
        ca_secret_source: running_daemon.and_then(|d| d.ca_secret_source.clone()),
        fleet_publish: running_daemon.and_then(|d| d.fleet_publish.clone()),
        pull_trust: running_daemon.and_then(|d| d.pull_trust.clone()),
        waiting_pods: waiting.map(|w| w.pods.clone()).unwrap_or_default(),
        waiting_pods_advice: waiting.and_then(|w| w.advice()),
        state_dir: facts.state_dir.display().to_string(),
        state_error,
    };
    let pending_restarts = pending_restarts(facts);
    for p in pending_restarts.iter().filter(|p| p.state == "recovering") {
        problems.push(Problem {
            kind: ProblemKind::Failing,
            subject: p.unit.clone(),
            message: format!(
                "{} stopped at its start limit after the agent's restart; the agent starts it again at {}",
                p.unit,
                p.not_before.as_deref().unwrap_or("its next pass")
            ),
        });
    }
    let trust_store = match &facts.layout {
        Ok(l) => {
            let anchors = facts.inventory.anchors.as_ref().ok();
            let count = anchors.map_or(0, BTreeMap::len);
            let in_bundle = match (anchors, facts.bundle.as_ref().ok()) {
                (Some(a), Some(b)) => a.keys().filter(|fp| b.contains(fp)).count(),
                _ => 0,
            };
            TrustStoreReport {
                family: Some(l.family.name().to_string()),
                anchors_dir: Some(l.anchors_dir.display().to_string()),
                bundle_path: Some(l.bundle_path.display().to_string()),
                agent_cas: count,
                agent_cas_in_bundle: in_bundle,
                pending_restarts,
                runtime_roots: runtime_roots.clone(),
                error: facts
                    .inventory
                    .anchors
                    .as_ref()
                    .err()
                    .or(facts.bundle.as_ref().err())
                    .cloned(),
            }
        }
        Err(e) => TrustStoreReport {
            family: None,
            anchors_dir: None,
            bundle_path: None,
            agent_cas: 0,
            agent_cas_in_bundle: 0,
            pending_restarts,
            runtime_roots: runtime_roots.clone(),
            error: Some(e.clone()),
        },
    };
    let healthy = problems.is_empty();
    StatusReport {
        schema_version: SCHEMA_VERSION,
        generated_at: rfc3339(facts.now),
        healthy,
        exit_code: if healthy {
            EXIT_HEALTHY
        } else {
            EXIT_UNHEALTHY
        },
        problems,
        agent,
        custom_cas,
        trust_store,
        kubelet,
        node_certificates,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use super::*;
    use crate::config::kubelet::{DEFAULT_BOOTSTRAP_KUBECONFIG, DEFAULT_KUBELET_CONFIG};
    use crate::kubelet::renewal;
    use crate::node::distro::Family;
    use crate::node::lock::DaemonLock;
    use crate::node::procfs::ProcessIdentity;
    use crate::ops::inventory::{AnchorFact, CertInventory, CertSummary, NodeCertFact};
    use crate::status::gather::KubeletFacts;
    use crate::status::liveness::liveness;
    use crate::status::{render_json, render_table};
    use crate::trust::plan::SourceInput;
    use crate::trust::sources::{read_source, SourceSpec};
    use crate::trust::state::CaState;
    use crate::x509::cert::{CertInfo, Fingerprint};
    use crate::x509::testpki;
    use crate::x509::time::rfc3339;

    const NOW: i64 = 1_800_000_000; // 2027-01-15T08:00:00Z

    fn summary(cn: &str, nb: i64, na: i64) -> CertSummary {
        CertSummary {
            subject: format!("CN={cn}"),
            issuer: "CN=kubernetes".into(),
            subject_fields: vec![("CN".into(), cn.into())],
            issuer_fields: vec![("CN".into(), "kubernetes".into())],
            serial_hex: "0A".into(),
            serial_decimal: "10".into(),
            not_before: nb,
            not_after: na,
            fingerprint: Fingerprint::of_der(cn.as_bytes()),
        }
    }

    fn no_kubelet() -> KubeletFacts {
        KubeletFacts {
            node_name: Some("node-1".into()),
            bootstrap_kubeconfig: None,
            kubeconfig: None,
            kubelet_config: DEFAULT_KUBELET_CONFIG.into(),
            rotate_certificates: false,
            server_tls_bootstrap: false,
            agent_job: false,
            serving_job: false,
            defer_to_kubelet_rotation: true,
            client: KubeletCertFact {
                link: "/var/lib/kubelet/pki/kubelet-client-current.pem".into(),
                current: Ok(None),
            },
            serving: KubeletCertFact {
                link: "/var/lib/kubelet/pki/kubelet-server-current.pem".into(),
                current: Ok(None),
            },
            kubeconfig_credential: None,
            tls_cert_file: None,
            command_line_known: true,
        }
    }

    /// A node with one installed custom CA (key ca1.crt), nothing else.
    fn facts_with_ca(ca: CertSummary) -> Facts {
        let fp = ca.fingerprint;
        let mut state = CaState {
            last_success: Some(NOW - 60),
            ..Default::default()
        };
        state.keys.insert(
            "/etc/node-cert-agent/secret".into(),
            BTreeMap::from([("ca1.crt".to_string(), vec![fp.hex()])]),
        );
        Facts {
            now: NOW,
            version: "0.1.0".into(),
            state_dir: "/var/lib/node-cert-agent".into(),
            daemon: Ok(None),
            liveness: None,
            ca_state: Ok(state),
            restart_history: Default::default(),
            inputs: Vec::new(),
            max_certificates: 10,
            layout: Ok(Family::Debian.layout()),
            runtime_roots: Vec::new(),
            bundle: Ok(BTreeSet::from([fp])),
            inventory: CertInventory {
                anchors: Ok(BTreeMap::from([(
                    fp,
                    AnchorFact {
                        path: format!(
                            "/usr/local/share/ca-certificates/node-cert-agent/node-cert-agent-{}.crt",
                            fp.hex()
                        )
                        .into(),
                        info: CertInfo::from_der(&testpki::good_ca("x").cert.to_der().unwrap())
                            .unwrap(),
                        cert: ca,
                    },
                )])),
                node_certs: Vec::new(),
            },
            kubelet: no_kubelet(),
        }
    }

    fn healthy_ca() -> CertSummary {
        summary("Corp Root", NOW - 86_400 * 365, NOW + 86_400 * 365 * 9)
    }

    #[test]
    fn installed_ca_is_healthy_and_listed_with_its_short_fingerprint() {
        let ca = healthy_ca();
        let report = build_report(&facts_with_ca(ca.clone()));
        assert!(report.healthy, "{:?}", report.problems);
        assert_eq!(report.exit_code(), EXIT_HEALTHY);
        assert_eq!(report.custom_cas.len(), 1);
        let row = &report.custom_cas[0];
        assert!(row.installed && row.anchor_present && row.in_bundle);
        assert_eq!(row.key, "ca1.crt");
        assert_eq!(report.trust_store.agent_cas_in_bundle, 1);
        let table = render_table(&report);
        assert!(table.contains(&ca.fingerprint.short()), "{table}");
        assert!(table.contains("CN=Corp Root"), "{table}");
        assert!(table.contains("Jan 13, 2036 08:00 UTC"), "{table}");
        let row = table.lines().find(|l| l.starts_with("ca1.crt")).unwrap();
        let cells: Vec<&str> = row
            .split("   ")
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .collect();
        assert_eq!(
            cells,
            vec![
                "ca1.crt",
                "CN=Corp Root",
                ca.fingerprint.short().as_str(),
                "Jan 13, 2036 08:00 UTC",
                "9y",
                "yes",
                "-"
            ],
            "{table}"
        );
        assert!(table.contains("HEALTH: ok"), "{table}");
        assert!(
            table.contains("not running (no daemon status file"),
            "{table}"
        );
    }

    #[test]
    fn a_forged_subject_or_key_adds_no_row_and_moves_no_cursor_in_the_table() {
        let mut ca = healthy_ca();
        ca.subject = "CN=x\nHEALTH: ok\r\x1b[2K\u{202e}".into();
        let mut f = facts_with_ca(ca);
        if let Ok(state) = &mut f.ca_state {
            let keys = state.keys.values_mut().next().unwrap();
            let fps = keys.remove("ca1.crt").unwrap();
            keys.insert("ca1.crt\nHEALTH: ok".into(), fps);
        }
        let report = build_report(&f);
        let table = render_table(&report);
        for c in ['\r', '\x1b', '\u{202e}'] {
            assert!(!table.contains(c), "{c:?} in {table:?}");
        }
        assert_eq!(
            table.lines().filter(|l| l.starts_with("HEALTH:")).count(),
            1,
            "{table}"
        );
        assert!(table.contains("ca1.crt\\nHEALTH: ok"), "{table}");
        assert!(
            table.contains("CN=x\\nHEALTH: ok\\r\\x1b[2K\\u{202e}"),
            "{table}"
        );
        // The JSON keeps the raw values.
        let json = render_json(&report).unwrap();
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(v["customCas"][0]["key"], "ca1.crt\nHEALTH: ok");
    }

    #[test]
    fn a_deferred_or_recovering_restart_is_shown_with_its_time() {
        use crate::trust::pacing::UnitHistory;
        let mut f = facts_with_ca(healthy_ca());
        if let Ok(state) = &mut f.ca_state {
            state.pending = Pending::Restart(["containerd.service".to_string()].into());
        }
        let at = u64::try_from(NOW + 7).unwrap() * 1_000_000;
        let mut h = UnitHistory {
            not_before_us: Some(at),
            ..UnitHistory::default()
        };
        h.set_start_limit(crate::node::systemd::StartLimit::SYSTEMD_DEFAULT);
        f.restart_history
            .units
            .insert("containerd.service".into(), h.clone());
        let report = build_report(&f);
        assert!(
            report.healthy,
            "a deferral is no problem: {:?}",
            report.problems
        );
        let p = &report.trust_store.pending_restarts[0];
        assert_eq!(
            (p.state.as_str(), p.not_before.as_deref()),
            ("deferred", Some("2027-01-15T08:00:07.000Z"))
        );
        let table = render_table(&report);
        assert!(
            table.contains(
                "containerd.service (deferred until 2027-01-15 08:00:07 UTC; 5 starts in 10s)"
            ),
            "{table}"
        );

        h.responsible = true;
        h.limit_hit_us = Some(at - 10_000_000);
        f.restart_history
            .units
            .insert("containerd.service".into(), h);
        let report = build_report(&f);
        assert_eq!(report.trust_store.pending_restarts[0].state, "recovering");
        assert!(!report.healthy);
        assert!(render_table(&report)
            .contains("stopped at its start limit; started again at 2027-01-15 08:00:07 UTC"));
    }

    #[test]
    fn ca_missing_from_the_bundle_is_not_installed() {
        let mut f = facts_with_ca(healthy_ca());
        f.bundle = Ok(BTreeSet::new());
        let report = build_report(&f);
        assert!(!report.custom_cas[0].installed);
        assert!(report.custom_cas[0].anchor_present);
        assert_eq!(report.trust_store.agent_cas_in_bundle, 0);
        assert!(render_table(&report).contains("0 of 1"));
    }

    #[test]
    fn expired_or_expiring_ca_makes_the_node_unhealthy() {
        let expired = summary("Old Root", NOW - 1000, NOW - 10);
        let r = build_report(&facts_with_ca(expired));
        assert_eq!(r.exit_code(), EXIT_UNHEALTHY);
        assert_eq!(r.problems[0].kind, ProblemKind::Expired);
        // 5 % of its life left.
        let expiring = summary("Tired Root", NOW - 950, NOW + 50);
        let r = build_report(&facts_with_ca(expiring));
        assert_eq!(r.problems.len(), 1);
        assert_eq!(r.problems[0].kind, ProblemKind::Expiring);
        // 20 % left: fine.
        let ok = summary("Fine Root", NOW - 800, NOW + 200);
        assert!(build_report(&facts_with_ca(ok)).healthy);
    }

    #[test]
    fn input_error_is_shown_on_its_key_and_is_unhealthy() {
        let mut f = facts_with_ca(healthy_ca());
        f.inputs = vec![SourceInput {
            source: "/etc/node-cert-agent/secret".into(),
            content: None,
            keys: Ok(vec![crate::trust::validate::validate_key(
                "bad.crt",
                b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
                NOW,
            )]),
        }];
        let r = build_report(&f);
        assert_eq!(r.exit_code(), EXIT_UNHEALTHY);
        let bad = r.custom_cas.iter().find(|c| c.key == "bad.crt").unwrap();
        assert!(!bad.installed && bad.subject.is_none());
        assert_eq!(bad.findings[0].severity, "error");
        assert!(r
            .problems
            .iter()
            .any(|p| p.kind == ProblemKind::Invalid && p.subject.contains("bad.crt")));
        let table = render_table(&r);
        assert!(table.contains("bad.crt"), "{table}");
        assert!(table.contains("error: "), "{table}");
    }

    #[test]
    fn a_source_that_never_existed_is_only_a_warning() {
        let mut f = facts_with_ca(healthy_ca());
        f.inputs = vec![read_source(
            &SourceSpec::File("/nonexistent/custom-ca.pem".into()),
            NOW,
        )];
        let r = build_report(&f);
        assert!(r.healthy, "{:?}", r.problems);
        let row = r
            .custom_cas
            .iter()
            .find(|c| c.key == "/nonexistent/custom-ca.pem")
            .unwrap();
        assert_eq!(row.findings[0].severity, "warning");
    }

    #[test]
    fn daemon_error_is_failing() {
        let mut f = facts_with_ca(healthy_ca());
        let d = DaemonStatus {
            schema_version: SCHEMA_VERSION,
            version: "0.1.0".into(),
            process: ProcessIdentity {
                pid: 42,
                ..Default::default()
            },
            started_at: NOW - 600,
            heartbeat_at: NOW - 5,
            ca_job: true,
            last_ca_pass: Some(NOW - 5),
            last_ca_error: Some("refresh tool failed".into()),
            ..Default::default()
        };
        f.liveness = Some(liveness(
            &d,
            &ProcessIdentity::default(),
            None,
            &DaemonLock::Held,
        ));
        f.daemon = Ok(Some(d));
        let r = build_report(&f);
        assert!(r.agent.running, "lock held");
        assert_eq!(r.agent.running_check, "lock");
        assert_eq!(r.agent.last_error.as_deref(), Some("refresh tool failed"));
        assert_eq!(r.problems[0].kind, ProblemKind::Failing);
        assert_eq!(r.exit_code(), EXIT_UNHEALTHY);
        let t = render_table(&r);
        assert!(
            t.contains("running (pid 42 in another pid namespace; it holds daemon.lock)"),
            "{t}"
        );
    }

    #[test]
    fn pods_waiting_for_a_pull_retry_are_listed_with_advice_until_the_back_off_is_over() {
        use crate::trust::waiting_pods::{WaitingPod, WaitingPods};
        let mut f = facts_with_ca(healthy_ca());
        let pod = WaitingPod {
            namespace: "shop".into(),
            name: "web-1".into(),
            container: "app".into(),
            image: "registry.example:5000/app:1".into(),
        };
        let d = DaemonStatus {
            schema_version: SCHEMA_VERSION,
            version: "0.1.0".into(),
            started_at: NOW - 600,
            heartbeat_at: NOW - 5,
            ca_job: true,
            last_ca_pass: Some(NOW - 60),
            waiting_pods: Some(WaitingPods {
                checked_at: NOW - 60,
                pods: vec![pod.clone()],
            }),
            ..Default::default()
        };
        f.liveness = Some(liveness(
            &d,
            &ProcessIdentity::default(),
            None,
            &DaemonLock::Held,
        ));
        f.daemon = Ok(Some(d));
        let r = build_report(&f);
        assert!(
            r.healthy,
            "waiting pods are not the node's problem: {:?}",
            r.problems
        );
        assert_eq!(r.agent.waiting_pods, vec![pod]);
        let advice = r.agent.waiting_pods_advice.clone().unwrap();
        assert!(advice.contains("delete the pod"), "{advice}");
        let json: serde_json::Value =
            serde_json::from_str(&crate::status::render_json(&r).unwrap()).unwrap();
        assert_eq!(
            json["agent"]["waitingPods"],
            serde_json::json!([{"namespace": "shop", "name": "web-1", "container": "app", "image": "registry.example:5000/app:1"}])
        );
        assert_eq!(json["agent"]["waitingPodsAdvice"], advice.as_str());
        let t = render_table(&r);
        assert!(
            t.contains("pods in pull back-off   shop/web-1 (container app, image registry.example:5000/app:1)"),
            "{t}"
        );
        assert!(t.contains(&advice), "{t}");

        // Past kubelet's longest back-off every pull has been retried.
        f.now = NOW + 300;
        let r = build_report(&f);
        assert!(r.agent.waiting_pods.is_empty());
        assert_eq!(r.agent.waiting_pods_advice, None);
        assert!(!render_table(&r).contains("pull back-off"));
    }

    fn node_cert(path: &str, read: NodeCertRead) -> NodeCertFact {
        NodeCertFact {
            path: path.into(),
            embedded: None,
            index: 1,
            read,
        }
    }

    #[test]
    fn node_certificates_in_kubeadm_style() {
        let mut f = facts_with_ca(healthy_ca());
        f.inventory.node_certs = vec![
            node_cert(
                "/etc/kubernetes/pki/ca.crt",
                NodeCertRead::Ok(summary("kubernetes", NOW - 86_400, NOW + 86_400 * 3649)),
            ),
            node_cert(
                "/etc/kubernetes/pki/apiserver.crt",
                NodeCertRead::Ok(summary("kube-apiserver", NOW - 86_400 * 400, NOW - 3600)),
            ),
            node_cert(
                "/etc/kubernetes/pki/front-proxy-client.crt",
                NodeCertRead::Ok(summary("front-proxy-client", NOW - 86_400, NOW + 82_800)),
            ),
            node_cert(
                "/etc/kubernetes/pki/sa.crt",
                NodeCertRead::Missing {
                    referenced_by: "/etc/kubernetes/admin.conf".into(),
                },
            ),
        ];
        let r = build_report(&f);
        let t = render_table(&r);
        assert!(
            t.contains("CERTIFICATE                                  EXPIRES                  RESIDUAL TIME   CERTIFICATE AUTHORITY   RENEWED BY   STATUS"),
            "{t}"
        );
        assert!(t.contains("/etc/kubernetes/pki/ca.crt"), "{t}");
        assert!(t.contains("   9y   "), "{t}");
        assert!(t.contains("<invalid>"), "{t}");
        assert!(t.contains("EXPIRED"), "{t}");
        assert!(t.contains("23h"), "{t}");
        assert!(t.contains("!MISSING! /etc/kubernetes/pki/sa.crt"), "{t}");
        let kinds: Vec<_> = r.problems.iter().map(|p| p.kind).collect();
        assert_eq!(
            kinds,
            vec![ProblemKind::Expired, ProblemKind::Missing],
            "{:?}",
            r.problems
        );
        assert!(t.contains("HEALTH: UNHEALTHY (2 problems)"), "{t}");
    }

    #[test]
    fn kubelet_certificate_with_a_renewal_path_is_not_a_problem_when_expiring() {
        let mut f = facts_with_ca(healthy_ca());
        // 5 % of its lifetime left.
        let client = summary("system:node:node-1", NOW - 950, NOW + 50);
        f.kubelet.agent_job = true;
        f.kubelet.bootstrap_kubeconfig = Some(DEFAULT_BOOTSTRAP_KUBECONFIG.into());
        f.kubelet.client.current = Ok(Some((
            "/var/lib/kubelet/pki/kubelet-client-2027-01-15-07-45-00.pem".into(),
            client.clone(),
            true,
        )));
        f.inventory.node_certs = vec![node_cert(
            "/var/lib/kubelet/pki/kubelet-client-current.pem",
            NodeCertRead::Ok(client.clone()),
        )];
        let r = build_report(&f);
        assert!(r.healthy, "{:?}", r.problems);
        assert_eq!(r.kubelet.client.renewed_by, RenewedBy::NodeCertAgent);
        assert_eq!(r.node_certificates[0].status, CertStatus::Expiring);
        assert_eq!(r.node_certificates[0].renewed_by, RenewedBy::NodeCertAgent);
        let deadline = renewal::deadline(
            client.not_before,
            client.not_after,
            renewal::renewal_fraction("node-1"),
        );
        assert_eq!(r.kubelet.client.next_renewal, Some(rfc3339(deadline)));
        assert_eq!(r.agent.next_renewal, Some(rfc3339(deadline)));
        // Without the job and without kubelet rotation, the same cert is a problem.
        f.kubelet.agent_job = false;
        let r = build_report(&f);
        assert_eq!(r.problems[0].kind, ProblemKind::Expiring);
        // kubelet's own rotation is a renewal path too.
        f.kubelet.rotate_certificates = true;
        let r = build_report(&f);
        assert!(r.healthy);
        assert_eq!(r.kubelet.client.renewed_by, RenewedBy::Kubelet);
        let t = render_table(&r);
        assert!(
            t.contains("enabled (/var/lib/kubelet/bootstrap-kubeconfig)"),
            "{t}"
        );
        assert!(t.contains("by kubelet (70-90 % of lifetime)"), "{t}");
    }

    #[test]
    fn a_serving_certificate_kubelet_does_not_serve_is_a_problem_and_kubelets_own_is_not() {
        let mut f = facts_with_ca(healthy_ca());
        f.kubelet.agent_job = true;
        f.kubelet.serving_job = true;
        let r = build_report(&f);
        let p = r
            .problems
            .iter()
            .find(|p| p.kind == ProblemKind::Mismatch)
            .expect("a mismatch for the unserved serving certificate");
        assert!(p.message.contains("sets no tlsCertFile"), "{}", p.message);
        assert!(
            p.message.contains("kubelet-server-current.pem"),
            "{}",
            p.message
        );
        f.kubelet.tls_cert_file = Some("/var/lib/kubelet/pki/kubelet-server-current.pem".into());
        assert!(build_report(&f).healthy);
        // kubelet requesting its own serving certificate is not the agent's.
        f.kubelet.tls_cert_file = None;
        f.kubelet.serving_job = false;
        f.kubelet.server_tls_bootstrap = true;
        let r = build_report(&f);
        assert!(r.healthy, "{:?}", r.problems);
        assert_eq!(r.kubelet.serving.renewed_by, RenewedBy::Kubelet);
    }

    #[test]
    fn a_runtime_whose_environment_points_its_roots_elsewhere_is_a_problem() {
        let mut f = facts_with_ca(healthy_ca());
        f.runtime_roots = vec![
            (
                "containerd.service".into(),
                "SSL_CERT_DIR".into(),
                "/etc/ssl/certs".into(),
            ),
            (
                "containerd.service".into(),
                "SSL_CERT_FILE".into(),
                "/opt/roots.pem".into(),
            ),
        ];
        let r = build_report(&f);
        assert_eq!(r.trust_store.runtime_roots.len(), 2);
        assert_eq!(r.problems.len(), 1, "{:?}", r.problems);
        assert_eq!(r.problems[0].subject, "containerd.service");
        assert!(
            r.problems[0]
                .message
                .contains("SSL_CERT_FILE=/opt/roots.pem"),
            "{}",
            r.problems[0].message
        );
    }

    #[test]
    fn a_kubeconfig_that_uses_another_credential_than_the_renewed_file_is_a_problem() {
        let mut f = facts_with_ca(healthy_ca());
        f.kubelet.agent_job = true;
        f.kubelet.kubeconfig = Some("/var/lib/kubelet/kubeconfig".into());
        f.kubelet.kubeconfig_credential = Some(Ok(Credential::CertificateFile(
            "/var/lib/kubelet/pki/kubelet-client-current.pem".into(),
        )));
        let r = build_report(&f);
        assert!(r.healthy, "{:?}", r.problems);
        assert_eq!(
            r.kubelet.kubeconfig_credential.as_deref(),
            Some("file /var/lib/kubelet/pki/kubelet-client-current.pem")
        );
        for other in [
            Credential::EmbeddedCertificate,
            Credential::CertificateFile("/etc/kubernetes/pki/kubelet.crt".into()),
            Credential::Token,
        ] {
            f.kubelet.kubeconfig_credential = Some(Ok(other.clone()));
            let r = build_report(&f);
            assert_eq!(r.exit_code, EXIT_UNHEALTHY, "{other:?}");
            let p = &r.problems[0];
            assert_eq!(p.kind, ProblemKind::Mismatch);
            assert!(
                p.message.contains("kubelet-client-current.pem") && p.message.contains("Fix:"),
                "{}",
                p.message
            );
        }
        // Without the agent's job, kubelet's own choice is none of its business.
        f.kubelet.agent_job = false;
        assert!(build_report(&f).healthy);
    }

    #[test]
    fn json_has_the_documented_schema() {
        let r = build_report(&facts_with_ca(healthy_ca()));
        let v: serde_json::Value = serde_json::from_str(&render_json(&r).unwrap()).unwrap();
        assert_eq!(v["schemaVersion"], 1);
        assert_eq!(v["healthy"], true);
        assert_eq!(v["exitCode"], 0);
        for key in [
            "generatedAt",
            "problems",
            "agent",
            "customCas",
            "trustStore",
            "kubelet",
            "nodeCertificates",
        ] {
            assert!(v.get(key).is_some(), "missing {key}: {v}");
        }
        let ca = &v["customCas"][0];
        for key in [
            "source",
            "key",
            "subject",
            "sha256",
            "notBefore",
            "notAfter",
            "residualSeconds",
            "anchorPresent",
            "inBundle",
            "installed",
            "findings",
        ] {
            assert!(ca.get(key).is_some(), "customCas[0] lacks {key}: {ca}");
        }
        assert_eq!(ca["installed"], true);
        assert_eq!(v["agent"]["running"], false);
        assert_eq!(v["agent"]["runningCheck"], "none");
        assert_eq!(v["trustStore"]["family"], "debian");
        assert_eq!(v["kubelet"]["client"]["renewedBy"], "none");
    }
}
