//! Step 3 of `status`: print a [`StatusReport`] as the table an operator
//! reads in a node shell, or as the stable JSON scripts read. Pure.
//!
//! Every cell and line of the table goes through [`crate::text::escape`]:
//! subjects, key names and paths come from inputs others control, and must
//! not add a row or move the terminal's cursor. The JSON carries raw values.

use std::fmt::Write as _;

use crate::status::schema::{CertStatus, PendingRestartReport, RenewedBy, StatusReport};
use crate::text::escape;
use crate::time::{kubeadm_date, parse_rfc3339};

// ---------------------------------------------------------------------------
// Rendering (pure)
// ---------------------------------------------------------------------------

/// The report could not be printed.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error("cannot encode the status report as JSON: {source}")]
    EncodeReport { source: serde_json::Error },
}

pub fn render_json(report: &StatusReport) -> Result<String, RenderError> {
    let mut s = serde_json::to_string_pretty(report)
        .map_err(|source| RenderError::EncodeReport { source })?;
    s.push('\n');
    Ok(s)
}

/// kubeadm's RESIDUAL TIME: `<invalid>` once expired, then `59s`, `59m`,
/// `23h`, `364d`, `9y` (Kubernetes' ShortHumanDuration).
pub fn short_duration(secs: i64) -> String {
    if secs < -1 {
        "<invalid>".to_string()
    } else if secs < 0 {
        "0s".to_string()
    } else if secs < 60 {
        format!("{secs}s")
    } else if secs < 3600 {
        format!("{}m", secs / 60)
    } else if secs < 86_400 {
        format!("{}h", secs / 3600)
    } else if secs < 86_400 * 365 {
        format!("{}d", secs / 86_400)
    } else {
        format!("{}y", secs / (86_400 * 365))
    }
}

/// Left-aligned columns separated by three spaces, like kubeadm's tables;
/// every cell escaped.
fn table(out: &mut String, headers: &[&str], rows: &[Vec<String>]) {
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|r| r.iter().map(|c| escape(c).into_owned()).collect())
        .collect();
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in &rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cell.chars().count());
            }
        }
    }
    let line = |out: &mut String, cells: &mut dyn Iterator<Item = &str>| {
        let mut s = String::new();
        for (i, cell) in cells.enumerate() {
            if i > 0 {
                s.push_str("   ");
            }
            s.push_str(cell);
            let pad = widths[i].saturating_sub(cell.chars().count());
            s.extend(std::iter::repeat_n(' ', pad));
        }
        out.push_str(s.trim_end());
        out.push('\n');
    };
    line(out, &mut headers.iter().copied());
    for row in &rows {
        line(out, &mut row.iter().map(String::as_str));
    }
}

fn dash(v: Option<&str>) -> String {
    v.filter(|s| !s.is_empty()).unwrap_or("-").to_string()
}

fn yes_no(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}

fn date_of(rfc: Option<&str>) -> String {
    rfc.and_then(parse_rfc3339)
        .map(kubeadm_date)
        .unwrap_or_else(|| "-".to_string())
}

fn kv(out: &mut String, pairs: &[(&str, String)]) {
    let w = pairs.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    for (k, v) in pairs {
        let _ = writeln!(out, "  {k:<w$}   {}", escape(v));
    }
}

/// `containerd.service (deferred until Nov 22, 2026 06:10 UTC; 5 starts in
/// 10s)`, one per pending restart, or `-`.
fn pending_restarts(p: &[PendingRestartReport]) -> String {
    if p.is_empty() {
        return "-".to_string();
    }
    p.iter()
        .map(|r| {
            let when = match (r.state.as_str(), &r.not_before) {
                ("recovering", Some(t)) => format!(
                    "stopped at its start limit; started again at {}",
                    date_time_of(t)
                ),
                ("recovering", None) => {
                    "stopped at its start limit; started again on the next pass".to_string()
                }
                ("deferred", Some(t)) => format!("deferred until {}", date_time_of(t)),
                _ => "on the next pass".to_string(),
            };
            match &r.start_limit {
                Some(l) => format!("{} ({when}; {l})", r.unit),
                None => format!("{} ({when})", r.unit),
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// An RFC 3339 time to the second, as `2026-11-22 06:10:05 UTC`: a
/// deferral is seconds, not minutes.
fn date_time_of(rfc: &str) -> String {
    rfc.get(..19)
        .map(|t| format!("{} UTC", t.replace('T', " ")))
        .unwrap_or_else(|| rfc.to_string())
}

/// The report as an operator reads it in a node shell.
pub fn render_table(r: &StatusReport) -> String {
    let mut out = String::new();
    let a = &r.agent;
    out.push_str("AGENT\n");
    let running = if a.running {
        format!("running ({})", a.running_detail)
    } else {
        format!("not running ({})", a.running_detail)
    };
    kv(
        &mut out,
        &[
            ("version", a.version.clone()),
            ("daemon", running),
            ("mode", dash(a.mode.as_deref())),
            ("started", date_of(a.started_at.as_deref())),
            ("last reconcile", date_of(a.last_reconcile.as_deref())),
            ("last error", dash(a.last_error.as_deref())),
            ("last kubelet pass", date_of(a.last_kubelet_pass.as_deref())),
            ("last kubelet error", dash(a.last_kubelet_error.as_deref())),
            ("next renewal", date_of(a.next_renewal.as_deref())),
            (
                "revocations (last pass)",
                if a.revocation_matches.is_empty() {
                    "-".to_string()
                } else {
                    a.revocation_matches.join("; ")
                },
            ),
            ("metrics", dash(a.metrics_address.as_deref())),
            ("state dir", a.state_dir.clone()),
        ],
    );
    if let Some(src) = &a.revocation_source {
        let text = match &src.error {
            Some(e) => format!("{}: {e}", src.state),
            None => src.state.clone(),
        };
        kv(&mut out, &[("RenewRevocations", text)]);
    }
    if let Some(src) = &a.ca_secret_source {
        let text = match &src.error {
            Some(e) => format!("{}: {e}", src.state),
            None => src.state.clone(),
        };
        kv(&mut out, &[("CA Secret (API)", text)]);
    }
    if let Some(t) = &a.pull_trust {
        let dir = t
            .dir
            .as_ref()
            .map(|d| d.display().to_string())
            .unwrap_or_default();
        let mut text = match t.mode {
            crate::trust::pull_trust::PullMode::Live => {
                format!("live through {dir} (no containerd restart for an added CA)")
            }
            crate::trust::pull_trust::PullMode::Restart => format!(
                "by containerd restart: {}",
                t.reason
                    .as_deref()
                    .unwrap_or("the live path does not apply")
            ),
        };
        if let Some(p) = &t.path {
            text.push_str(&format!(" [{}]", p.display()));
        }
        if let Some(h) = &t.hint {
            text.push_str(&format!("; to avoid restarts: {h}"));
        }
        kv(&mut out, &[("image pulls", text)]);
    }
    if !a.waiting_pods.is_empty() {
        let pods: Vec<String> = a
            .waiting_pods
            .iter()
            .map(|p| {
                format!(
                    "{}/{} (container {}, image {})",
                    p.namespace, p.name, p.container, p.image
                )
            })
            .collect();
        kv(
            &mut out,
            &[
                ("pods in pull back-off", pods.join("; ")),
                ("", a.waiting_pods_advice.clone().unwrap_or_default()),
            ],
        );
    }
    if let Some(p) = &a.fleet_publish {
        let last = p
            .last_write
            .map(|t| format!(", last write {}", crate::time::rfc3339(t)))
            .unwrap_or_default();
        let text = match &p.error {
            Some(e) => format!("{} ({} writes{last}): {e}", p.state, p.writes),
            None => format!("{} ({} writes{last})", p.state, p.writes),
        };
        kv(&mut out, &[("published on Node", text)]);
    }
    if let Some(e) = &a.state_error {
        let _ = writeln!(out, "  state error: {}", escape(e));
    }

    out.push_str("\nCUSTOM CAS\n");
    if r.custom_cas.is_empty() {
        out.push_str("  (none installed and no CA input configured)\n");
    } else {
        let rows: Vec<Vec<String>> = r
            .custom_cas
            .iter()
            .map(|c| {
                let finding = c
                    .findings
                    .first()
                    .map(|f| {
                        let more = if c.findings.len() > 1 {
                            format!(" (+{} more)", c.findings.len() - 1)
                        } else {
                            String::new()
                        };
                        format!("{}: {}{more}", f.severity, f.problem)
                    })
                    .unwrap_or_else(|| "-".to_string());
                vec![
                    c.key.clone(),
                    dash(c.subject.as_deref()),
                    c.sha256
                        .as_deref()
                        .map(|s| s.chars().take(16).collect())
                        .unwrap_or_else(|| "-".to_string()),
                    date_of(c.not_after.as_deref()),
                    c.residual_seconds
                        .map(short_duration)
                        .unwrap_or_else(|| "-".to_string()),
                    yes_no(c.installed).to_string(),
                    finding,
                ]
            })
            .collect();
        table(
            &mut out,
            &[
                "KEY",
                "SUBJECT",
                "SHA-256",
                "EXPIRES",
                "RESIDUAL TIME",
                "INSTALLED",
                "FINDING",
            ],
            &rows,
        );
    }

    out.push_str("\nTRUST STORE\n");
    let t = &r.trust_store;
    kv(
        &mut out,
        &[
            ("family", dash(t.family.as_deref())),
            ("anchors dir", dash(t.anchors_dir.as_deref())),
            ("bundle", dash(t.bundle_path.as_deref())),
            (
                "agent CAs in bundle",
                format!("{} of {}", t.agent_cas_in_bundle, t.agent_cas),
            ),
            ("pending restarts", pending_restarts(&t.pending_restarts)),
        ],
    );
    if let Some(e) = &t.error {
        let _ = writeln!(out, "  error: {}", escape(e));
    }

    out.push_str("\nKUBELET CERTIFICATES\n");
    let k = &r.kubelet;
    kv(
        &mut out,
        &[
            ("node name", dash(k.node_name.as_deref())),
            (
                "TLS bootstrapping",
                match &k.bootstrap_kubeconfig {
                    Some(p) => format!("enabled ({p})"),
                    None => "disabled (no bootstrap kubeconfig)".to_string(),
                },
            ),
            (
                "kubelet self-rotation",
                format!(
                    "client {} (rotateCertificates), serving {} (serverTLSBootstrap) in {}{}",
                    yes_no(k.rotate_certificates),
                    yes_no(k.server_tls_bootstrap),
                    k.kubelet_config,
                    if k.command_line_read {
                        " and kubelet's command line"
                    } else {
                        " (kubelet's command line not read)"
                    }
                ),
            ),
            (
                "kubelet serves",
                k.tls_cert_file
                    .clone()
                    .unwrap_or_else(|| "its own serving certificate (no tlsCertFile)".into()),
            ),
            (
                "node-cert-agent job",
                if k.agent_job { "on" } else { "off" }.to_string(),
            ),
        ],
    );
    if let (Some(path), Some(cred)) = (&k.kubeconfig, &k.kubeconfig_credential) {
        kv(&mut out, &[("kubeconfig", format!("{path} ({cred})"))]);
    }
    if let (Some(path), Some(e)) = (&k.kubeconfig, &k.kubeconfig_error) {
        kv(
            &mut out,
            &[("kubeconfig", format!("{path}: UNREADABLE: {e}"))],
        );
    }
    let rows: Vec<Vec<String>> = [&k.client, &k.serving]
        .iter()
        .map(|c| {
            if !c.present {
                return vec![
                    c.kind.clone(),
                    c.error
                        .as_ref()
                        .map(|e| format!("UNREADABLE: {e}"))
                        .unwrap_or_else(|| format!("none ({})", c.path)),
                    "-".into(),
                    "-".into(),
                    "-".into(),
                    "-".into(),
                    c.renewed_by.name().to_string(),
                ];
            }
            vec![
                c.kind.clone(),
                dash(c.subject.as_deref()),
                dash(c.issuer.as_deref()),
                date_of(c.not_after.as_deref()),
                c.residual_seconds
                    .map(short_duration)
                    .unwrap_or_else(|| "-".to_string()),
                match (&c.next_renewal, c.renewed_by) {
                    (Some(n), _) => date_of(Some(n)),
                    (None, RenewedBy::Kubelet) => "by kubelet (70-90 % of lifetime)".to_string(),
                    _ => "-".to_string(),
                },
                c.renewed_by.name().to_string(),
            ]
        })
        .collect();
    table(
        &mut out,
        &[
            "CERT",
            "SUBJECT",
            "ISSUER",
            "EXPIRES",
            "RESIDUAL TIME",
            "NEXT RENEWAL",
            "RENEWED BY",
        ],
        &rows,
    );

    out.push_str("\nNODE CERTIFICATES\n");
    if r.node_certificates.is_empty() {
        out.push_str("  (none under /etc/kubernetes or kubelet's pki dir)\n");
    } else {
        let rows: Vec<Vec<String>> = r
            .node_certificates
            .iter()
            .map(|n| {
                if n.status == CertStatus::Missing {
                    return vec![
                        format!("!MISSING! {}", n.name),
                        String::new(),
                        String::new(),
                        String::new(),
                        n.renewed_by.name().to_string(),
                        n.status.name().to_string(),
                    ];
                }
                vec![
                    n.name.clone(),
                    date_of(n.not_after.as_deref()),
                    n.residual_seconds
                        .map(short_duration)
                        .unwrap_or_else(|| "-".to_string()),
                    dash(n.certificate_authority.as_deref()),
                    n.renewed_by.name().to_string(),
                    match (&n.error, n.status) {
                        (Some(e), _) => format!("{}: {e}", n.status.name()),
                        (None, s) => s.name().to_string(),
                    },
                ]
            })
            .collect();
        table(
            &mut out,
            &[
                "CERTIFICATE",
                "EXPIRES",
                "RESIDUAL TIME",
                "CERTIFICATE AUTHORITY",
                "RENEWED BY",
                "STATUS",
            ],
            &rows,
        );
    }

    out.push('\n');
    if r.healthy {
        out.push_str("HEALTH: ok\n");
    } else {
        let _ = writeln!(
            out,
            "HEALTH: UNHEALTHY ({} problem{})",
            r.problems.len(),
            if r.problems.len() == 1 { "" } else { "s" }
        );
        for p in &r.problems {
            let _ = writeln!(
                out,
                "  - {} {}: {}",
                p.kind.name(),
                escape(&p.subject),
                escape(&p.message)
            );
        }
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]
mod tests {
    use super::*;

    #[test]
    fn durations_and_dates_read_like_kubeadm() {
        assert_eq!(short_duration(-5), "<invalid>");
        assert_eq!(short_duration(59), "59s");
        assert_eq!(short_duration(3599), "59m");
        assert_eq!(short_duration(86_399), "23h");
        assert_eq!(short_duration(86_400 * 364), "364d");
        assert_eq!(short_duration(86_400 * 365 * 10), "10y");
        assert_eq!(kubeadm_date(1_136_214_240), "Jan 02, 2006 15:04 UTC");
    }
}
