//! Step 2 of `status`: judge the [`Facts`] into a [`StatusReport`], with the
//! health verdict ([`StatusReport::problems`]): the health rules of the
//! agent, the CAs, the runtime's roots, the kubelet certificates and the
//! node's other certificates. Pure.
//!
//! Owns: the rules. Boundary: the report's shape is
//! [`crate::status::schema`]'s; nothing here reads the node.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use crate::k8s::kubeconfig::Credential;
use crate::kubelet::renewal;
use crate::kubelet::store::CertKind;
use crate::ops::daemon_status::{DaemonStatus, SCHEMA_VERSION};
use crate::ops::inventory::NodeCertRead;
use crate::status::gather::{Facts, KubeletCertFact};
use crate::status::liveness::Liveness;
use crate::status::schema::{
    AgentReport, CaRow, CertStatus, FindingReport, KubeletCertReport, KubeletReport, NodeCertRow,
    PendingRestartReport, Problem, ProblemKind, RenewedBy, RuntimeRootsReport, StatusReport,
    TrustStoreReport,
};
use crate::status::{EXIT_HEALTHY, EXIT_UNHEALTHY};
use crate::time::{rfc3339, rfc3339_us};
use crate::trust::plan::{self};
use crate::trust::state::{CaState, Pending};
use crate::trust::validate::{Finding, FindingKind, Severity};
use crate::x509::cert::{CertInfo, Fingerprint};

/// A certificate in the last tenth of its lifetime, with nothing that renews
/// it, makes the node unhealthy.
pub const EXPIRING_FRACTION: f64 = 0.10;

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
                .and_then(crate::time::parse_rfc3339)
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
mod tests;
