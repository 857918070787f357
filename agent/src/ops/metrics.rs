//! Metrics and health: the daemon's counters ([`Metrics`], shared by the
//! loops and the listener), their Prometheus text, and a minimal HTTP/1.1
//! listener serving `/metrics`, `/healthz` and `/readyz`.
//!
//! Certificate gauges use x509-certificate-exporter's names and labels
//! (NODE-FACTS §7), so its alerts and dashboards keep working; they are
//! computed on each scrape from the same inventory `status` lists
//! ([`crate::ops::inventory::gather_certificates`]). The listener is deliberately
//! tiny: GET (and HEAD) only, one request per connection (`Connection:
//! close`), a capped request head and a read timeout.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tracing::{error, info, warn};

use crate::kubelet::manager::{KubeletError, PassOutcome};
use crate::node::procfs::ProcessIdentity;
use crate::ops::daemon_status::{AgentMode, DaemonStatus, SCHEMA_VERSION};
use crate::ops::events::{EventSink, NodeEvent};
use crate::ops::inventory::{self, CertInventory, CertSummary, InventorySources, NodeCertRead};
use crate::trust::reconcile::{Outcome, ReconcileError};

/// Prometheus' text exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
/// A request head larger than this is refused (431).
const MAX_REQUEST_HEAD: usize = 8 * 1024;
/// How long a client may take to send its request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How long to wait before trying to bind again when the address is taken.
pub const BIND_RETRY: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error("cannot listen on {address} for /metrics: {source}; free the port or set metrics-address (`off` turns the listener off)")]
    Bind {
        address: SocketAddr,
        source: std::io::Error,
    },
}

/// The daemon's counters and its view of itself; one per process, shared
/// (`Arc`) by the CA loop, the kubelet loop, the status writer and the
/// listener. Every update also wakes the status writer ([`Metrics::changed`]).
#[derive(Debug)]
pub struct Metrics {
    version: &'static str,
    mode: AgentMode,
    started_at: i64,
    ca_job: bool,
    kubelet_job: bool,
    metrics_address: Option<SocketAddr>,
    ready: AtomicBool,
    refreshes_ok: AtomicU64,
    refreshes_failed: AtomicU64,
    inner: Mutex<Inner>,
    changed: Notify,
    /// Node Events for what the passes did; set once at start, when the
    /// node has an API identity.
    events: std::sync::OnceLock<EventSink>,
}

#[derive(Debug, Default)]
struct Inner {
    /// (unit, job result) → count.
    unit_restarts: BTreeMap<(String, String), u64>,
    /// result → count.
    kubelet_renewals: BTreeMap<String, u64>,
    /// key → current error findings.
    input_errors: BTreeMap<String, u64>,
    last_reconcile: Option<i64>,
    last_ca_pass: Option<i64>,
    last_ca_error: Option<String>,
    last_kubelet_pass: Option<i64>,
    last_kubelet_error: Option<String>,
    next_renewal: Option<i64>,
    revocation_matches: Vec<String>,
}

/// What the daemon runs, for [`Metrics::new`].
#[derive(Debug, Clone, Copy)]
pub struct MetricsOptions {
    pub mode: AgentMode,
    pub started_at: i64,
    pub ca_job: bool,
    pub kubelet_job: bool,
    pub metrics_address: Option<SocketAddr>,
}

impl Metrics {
    pub fn new(o: MetricsOptions) -> Self {
        Self {
            version: env!("CARGO_PKG_VERSION"),
            mode: o.mode,
            started_at: o.started_at,
            ca_job: o.ca_job,
            kubelet_job: o.kubelet_job,
            metrics_address: o.metrics_address,
            ready: AtomicBool::new(false),
            refreshes_ok: AtomicU64::new(0),
            refreshes_failed: AtomicU64::new(0),
            inner: Mutex::new(Inner::default()),
            changed: Notify::new(),
            events: std::sync::OnceLock::new(),
        }
    }

    fn inner(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves plain counters behind:
        // still the best numbers there are.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Wakes whoever publishes the daemon's status.
    pub fn changed(&self) -> &Notify {
        &self.changed
    }

    /// `/readyz` answers 200 from the first completed pass on: the first CA
    /// pass, or the first kubelet pass of a kubelet-only agent.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }

    /// Sends Node Events for every outcome recorded from now on.
    pub fn set_event_sink(&self, sink: EventSink) {
        let _ = self.events.set(sink);
    }

    fn emit(&self, event: NodeEvent) {
        if let Some(sink) = self.events.get() {
            sink.emit(event);
        }
    }

    pub fn record_ca_pass(&self, o: &Outcome, now: i64) {
        if !o.installed.is_empty() || !o.removed.is_empty() {
            let names = |v: &[crate::x509::cert::CertInfo]| {
                v.iter()
                    .map(|c| format!("\"{}\" ({})", c.subject, c.fingerprint.short()))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            let mut msg = String::from("custom CA trust changed:");
            if !o.installed.is_empty() {
                msg.push_str(&format!(" installed {}", names(&o.installed)));
            }
            if !o.removed.is_empty() {
                msg.push_str(&format!(" removed {}", names(&o.removed)));
            }
            self.emit(NodeEvent::normal("CATrustChanged", msg));
        }
        for unit in &o.restarted {
            self.emit(NodeEvent::normal(
                "UnitRestarted",
                format!("restarted {unit} (if it was running) so it reloads its root CAs"),
            ));
        }
        if o.refreshed {
            self.refreshes_ok.fetch_add(1, Ordering::Relaxed);
        }
        {
            let mut i = self.inner();
            for unit in &o.restarted {
                *i.unit_restarts
                    .entry((unit.clone(), "done".to_string()))
                    .or_default() += 1;
            }
            // Keys that had errors and have none now go to 0, not away.
            for v in i.input_errors.values_mut() {
                *v = 0;
            }
            for f in &o.findings {
                let n = i.input_errors.entry(f.key.clone()).or_default();
                if f.is_error() {
                    *n += 1;
                }
            }
            i.last_reconcile = Some(now);
            i.last_ca_pass = Some(now);
            i.last_ca_error = None;
        }
        self.ready.store(true, Ordering::Relaxed);
        self.changed.notify_one();
    }

    pub fn record_ca_error(&self, e: &ReconcileError, now: i64) {
        self.emit(NodeEvent::warning(
            "CATrustUpdateFailed",
            crate::ops::logging::error_chain(e),
        ));
        {
            let mut i = self.inner();
            match e {
                ReconcileError::RefreshCall { .. } | ReconcileError::RefreshFailed { .. } => {
                    self.refreshes_failed.fetch_add(1, Ordering::Relaxed);
                }
                ReconcileError::RestartCall { unit, .. } => {
                    *i.unit_restarts
                        .entry((unit.clone(), "error".to_string()))
                        .or_default() += 1;
                }
                ReconcileError::RestartFailed { unit, result } => {
                    *i.unit_restarts
                        .entry((unit.clone(), result.clone()))
                        .or_default() += 1;
                }
                ReconcileError::State(_) | ReconcileError::Trust(_) => {}
            }
            i.last_ca_pass = Some(now);
            i.last_ca_error = Some(crate::ops::logging::error_chain(e));
        }
        self.changed.notify_one();
    }

    /// A kubelet pass that ended well; `restart_units` were restarted if it renewed.
    pub fn record_kubelet_pass(&self, o: &PassOutcome, restart_units: &[String], now: i64) {
        for label in &o.unfixable_revocations {
            self.emit(NodeEvent::warning(
                "KubeletCertificateRevocationUnfixable",
                format!("{label} matches every certificate this node can get; give it a notBefore or narrow it"),
            ));
        }
        for (kind, reason) in &o.reasons {
            if let crate::kubelet::renewal::RenewReason::Revoked(label) = reason {
                self.emit(NodeEvent::warning(
                    "KubeletCertificateRevoked",
                    format!("the kubelet {} certificate matched {label}", kind.name()),
                ));
            }
            self.emit(NodeEvent::normal(
                "KubeletCertificateRenewed",
                format!("renewed the kubelet {} certificate: {reason}", kind.name()),
            ));
        }
        if !o.renewed.is_empty() {
            for unit in restart_units {
                self.emit(NodeEvent::normal(
                    "UnitRestarted",
                    format!("restarted {unit} (if it was running) so it uses the new certificate"),
                ));
            }
        }
        {
            let mut i = self.inner();
            if !o.renewed.is_empty() {
                *i.kubelet_renewals.entry("success".to_string()).or_default() +=
                    o.renewed.len() as u64;
                for unit in restart_units {
                    *i.unit_restarts
                        .entry((unit.clone(), "done".to_string()))
                        .or_default() += 1;
                }
            }
            i.last_kubelet_pass = Some(now);
            i.last_kubelet_error = None;
            i.next_renewal = o.next_deadline;
            i.revocation_matches = o
                .reasons
                .iter()
                .filter_map(|(_, r)| match r {
                    crate::kubelet::renewal::RenewReason::Revoked(label) => Some(label.clone()),
                    _ => None,
                })
                .chain(o.unfixable_revocations.iter().cloned())
                .collect();
        }
        if !self.ca_job {
            self.ready.store(true, Ordering::Relaxed);
        }
        self.changed.notify_one();
    }

    pub fn record_kubelet_error(&self, e: &KubeletError, now: i64) {
        self.emit(NodeEvent::warning(
            "KubeletCertificateRenewalFailed",
            crate::ops::logging::error_chain(e),
        ));
        {
            let mut i = self.inner();
            *i.kubelet_renewals.entry("failure".to_string()).or_default() += 1;
            match e {
                KubeletError::Restart { unit, .. } => {
                    *i.unit_restarts
                        .entry((unit.clone(), "error".to_string()))
                        .or_default() += 1;
                }
                KubeletError::RestartFailed { unit, result } => {
                    *i.unit_restarts
                        .entry((unit.clone(), result.clone()))
                        .or_default() += 1;
                }
                _ => {}
            }
            i.last_kubelet_pass = Some(now);
            i.last_kubelet_error = Some(crate::ops::logging::error_chain(e));
        }
        self.changed.notify_one();
    }

    /// The daemon's status file content at `now`.
    pub fn daemon_status(
        &self,
        process: &ProcessIdentity,
        now: i64,
        stopped: bool,
    ) -> DaemonStatus {
        let i = self.inner();
        DaemonStatus {
            schema_version: SCHEMA_VERSION,
            version: self.version.to_string(),
            mode: self.mode,
            process: process.clone(),
            started_at: self.started_at,
            heartbeat_at: now,
            stopped_at: stopped.then_some(now),
            ca_job: self.ca_job,
            kubelet_job: self.kubelet_job,
            last_ca_pass: i.last_ca_pass,
            last_ca_error: i.last_ca_error.clone(),
            last_kubelet_pass: i.last_kubelet_pass,
            last_kubelet_error: i.last_kubelet_error.clone(),
            next_renewal: i.next_renewal,
            metrics_address: self.metrics_address.map(|a| a.to_string()),
            revocation_matches: i.revocation_matches.clone(),
        }
    }

    /// The agent's own metrics, in Prometheus text.
    pub fn render_agent(&self, out: &mut String) {
        let i = self.inner();
        family(
            out,
            "node_cert_agent_build_info",
            "gauge",
            "Always 1; the version label says which agent runs.",
        );
        sample(
            out,
            "node_cert_agent_build_info",
            &[("version", self.version)],
            1.0,
        );
        family(
            out,
            "node_cert_agent_trust_store_refreshes_total",
            "counter",
            "Runs of the distro's trust-store refresh tool, by result.",
        );
        for (result, n) in [
            ("success", self.refreshes_ok.load(Ordering::Relaxed)),
            ("failure", self.refreshes_failed.load(Ordering::Relaxed)),
        ] {
            sample(
                out,
                "node_cert_agent_trust_store_refreshes_total",
                &[("result", result)],
                n as f64,
            );
        }
        family(
            out,
            "node_cert_agent_unit_restarts_total",
            "counter",
            "Unit restarts the agent asked systemd for, by unit and job result (done, failed, ..., or error when the call itself failed).",
        );
        for ((unit, result), n) in &i.unit_restarts {
            sample(
                out,
                "node_cert_agent_unit_restarts_total",
                &[("unit", unit), ("result", result)],
                *n as f64,
            );
        }
        family(
            out,
            "node_cert_agent_kubelet_renewals_total",
            "counter",
            "Kubelet certificate renewals, by result (success per certificate, failure per failed pass).",
        );
        for result in ["success", "failure"] {
            sample(
                out,
                "node_cert_agent_kubelet_renewals_total",
                &[("result", result)],
                i.kubelet_renewals.get(result).copied().unwrap_or(0) as f64,
            );
        }
        family(
            out,
            "node_cert_agent_input_errors",
            "gauge",
            "Error findings of the last CA pass, by input key (0 once fixed).",
        );
        for (key, n) in &i.input_errors {
            sample(
                out,
                "node_cert_agent_input_errors",
                &[("key", key)],
                *n as f64,
            );
        }
        family(
            out,
            "node_cert_agent_last_reconcile_timestamp_seconds",
            "gauge",
            "Unix time of the last CA pass that completed (0 before the first).",
        );
        sample(
            out,
            "node_cert_agent_last_reconcile_timestamp_seconds",
            &[],
            i.last_reconcile.unwrap_or(0) as f64,
        );
        family(
            out,
            "node_cert_agent_ready",
            "gauge",
            "1 once the first pass has completed (what /readyz says).",
        );
        sample(
            out,
            "node_cert_agent_ready",
            &[],
            if self.is_ready() { 1.0 } else { 0.0 },
        );
    }
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// One sample line; label values escaped as the text format requires.
fn sample(out: &mut String, name: &str, labels: &[(&str, &str)], value: f64) {
    out.push_str(name);
    if !labels.is_empty() {
        out.push('{');
        for (i, (k, v)) in labels.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            let _ = write!(out, "{k}=\"{}\"", escape_label(v));
        }
        out.push('}');
    }
    let _ = writeln!(out, " {value}");
}

fn escape_label(v: &str) -> String {
    let mut s = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => s.push_str("\\\\"),
            '"' => s.push_str("\\\""),
            '\n' => s.push_str("\\n"),
            c => s.push(c),
        }
    }
    s
}

/// x509-certificate-exporter's labels for one certificate: `filename`,
/// `filepath` (the node path), `serial_number` (decimal), `subject_*` and
/// `issuer_*` (C, ST, L, O, OU, CN, when present), and `embedded_kind` /
/// `embedded_key` for a kubeconfig's embedded certificate.
fn cert_labels(
    path: &std::path::Path,
    cert: &CertSummary,
    embedded: Option<&inventory::Embedded>,
) -> Vec<(String, String)> {
    let mut labels = vec![
        (
            "filename".to_string(),
            path.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
        ),
        ("filepath".to_string(), path.display().to_string()),
        ("serial_number".to_string(), cert.serial_decimal.clone()),
    ];
    for (prefix, fields) in [
        ("issuer", &cert.issuer_fields),
        ("subject", &cert.subject_fields),
    ] {
        for short in ["C", "ST", "L", "O", "OU", "CN"] {
            if let Some((_, v)) = fields.iter().find(|(k, _)| k == short) {
                labels.push((format!("{prefix}_{short}"), v.clone()));
            }
        }
    }
    if let Some(e) = embedded {
        labels.push(("embedded_kind".to_string(), e.kind.to_string()));
        labels.push(("embedded_key".to_string(), e.name.clone()));
    }
    labels
}

/// A certificate gauge's value for a certificate at a time.
type Gauge = fn(&CertSummary, i64) -> f64;

/// The certificate gauges for `inv` at `now`, in Prometheus text.
pub fn render_certificates(inv: &CertInventory, now: i64, out: &mut String) {
    let mut certs: Vec<(Vec<(String, String)>, &CertSummary)> = Vec::new();
    let mut read_errors = 0usize;
    match &inv.anchors {
        Ok(anchors) => {
            for a in anchors.values() {
                certs.push((cert_labels(&a.path, &a.cert, None), &a.cert));
            }
        }
        Err(_) => read_errors += 1,
    }
    for n in &inv.node_certs {
        match &n.read {
            NodeCertRead::Ok(c) => certs.push((cert_labels(&n.path, c, n.embedded.as_ref()), c)),
            NodeCertRead::Unreadable(_) => read_errors += 1,
            // Missing is a status finding, not a read error: the exporter
            // only counts files it failed to parse.
            NodeCertRead::Missing { .. } => {}
        }
    }
    let gauges: [(&str, &str, Gauge); 5] = [
        (
            "x509_cert_not_after",
            "Indicates the certificate's not after timestamp",
            |c, _| c.not_after as f64,
        ),
        (
            "x509_cert_not_before",
            "Indicates the certificate's not before timestamp",
            |c, _| c.not_before as f64,
        ),
        (
            "x509_cert_expired",
            "Indicates if the certificate is expired",
            |c, now| if c.not_after <= now { 1.0 } else { 0.0 },
        ),
        (
            "x509_cert_expires_in_seconds",
            "Indicates the remaining time before the certificate's not after timestamp",
            |c, now| (c.not_after - now) as f64,
        ),
        (
            "x509_cert_valid_since_seconds",
            "Indicates the elapsed time since the certificate's not before timestamp",
            |c, now| (now - c.not_before) as f64,
        ),
    ];
    for (name, help, value) in gauges {
        family(out, name, "gauge", help);
        for (labels, c) in &certs {
            let l: Vec<(&str, &str)> = labels
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            sample(out, name, &l, value(c, now));
        }
    }
    family(
        out,
        "x509_read_errors",
        "gauge",
        "Indicates the number of read failure(s)",
    );
    sample(out, "x509_read_errors", &[], read_errors as f64);
}

/// What the listener serves.
#[derive(Clone)]
pub struct Endpoint {
    pub metrics: Arc<Metrics>,
    /// Where the certificate gauges come from; `None` serves agent metrics only.
    pub certificates: Option<InventorySources>,
}

impl Endpoint {
    /// The whole `/metrics` body.
    pub async fn render(&self) -> String {
        let mut out = String::new();
        self.metrics.render_agent(&mut out);
        if let Some(src) = self.certificates.clone() {
            // File reads: off the async thread.
            let inv =
                tokio::task::spawn_blocking(move || inventory::gather_certificates(&src)).await;
            match inv {
                Ok(inv) => render_certificates(&inv, crate::x509::time::now_unix(), &mut out),
                Err(e) => warn!("gathering certificates for /metrics failed: {e}"),
            }
        }
        out
    }
}

/// Binds `address` and serves until the process ends. A taken address is
/// logged and retried every [`BIND_RETRY`]: the trust job matters more than
/// its metrics, and must not stop because a port is busy.
pub async fn run_listener(address: SocketAddr, endpoint: Endpoint) {
    loop {
        match TcpListener::bind(address).await {
            Ok(listener) => {
                info!(address = %address, "serving /metrics, /healthz and /readyz");
                serve(listener, endpoint.clone()).await;
            }
            Err(source) => {
                let e = MetricsError::Bind { address, source };
                error!(retry_in_s = BIND_RETRY.as_secs(), "{e}");
                tokio::time::sleep(BIND_RETRY).await;
            }
        }
    }
}

/// Accepts connections on `listener` forever, one task per connection.
pub async fn serve(listener: TcpListener, endpoint: Endpoint) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let endpoint = endpoint.clone();
                tokio::spawn(async move {
                    let _ = handle(stream, &endpoint).await;
                });
            }
            Err(e) => {
                // EMFILE and friends: wait a little rather than spin.
                warn!("accepting a /metrics connection failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// The response to one request head. Pure apart from rendering `/metrics`.
pub async fn respond(head: &str, endpoint: &Endpoint) -> (u16, &'static str, String) {
    let mut parts = head.lines().next().unwrap_or_default().split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");
    if method != "GET" && method != "HEAD" {
        return (405, "text/plain", "only GET is served\n".into());
    }
    match path {
        "/metrics" => (200, CONTENT_TYPE, endpoint.render().await),
        // The process answers, so its runtime and the loops on it are alive:
        // a loop that ends ends the process.
        "/healthz" => (200, "text/plain", "ok\n".into()),
        "/readyz" if endpoint.metrics.is_ready() => (200, "text/plain", "ok\n".into()),
        "/readyz" => (
            503,
            "text/plain",
            "not ready: the first pass has not completed\n".into(),
        ),
        _ => (
            404,
            "text/plain",
            "not found; try /metrics, /healthz or /readyz\n".into(),
        ),
    }
}

async fn handle(mut stream: TcpStream, endpoint: &Endpoint) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(1024);
    let head = tokio::time::timeout(REQUEST_TIMEOUT, async {
        let mut chunk = [0u8; 1024];
        loop {
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                return Ok(Some(end));
            }
            if buf.len() > MAX_REQUEST_HEAD {
                return Ok(None);
            }
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof));
            }
            buf.extend_from_slice(&chunk[..n]);
        }
    })
    .await
    .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
    let (code, content_type, body) = match head {
        Some(end) => respond(&String::from_utf8_lossy(&buf[..end]), endpoint).await,
        None => (431, "text/plain", "request head too large\n".to_string()),
    };
    let is_head = buf.starts_with(b"HEAD ");
    let reason = match code {
        200 => "OK",
        404 => "Not Found",
        405 => "Method Not Allowed",
        431 => "Request Header Fields Too Large",
        _ => "Service Unavailable",
    };
    let mut response = format!(
        "HTTP/1.1 {code} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    if !is_head {
        response.extend_from_slice(body.as_bytes());
    }
    stream.write_all(&response).await?;
    stream.shutdown().await
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]
mod tests {
    use super::*;
    use crate::ops::inventory::{AnchorFact, Embedded, NodeCertFact};
    use crate::trust::validate::{Finding, FindingKind};
    use crate::x509::cert::Fingerprint;

    fn metrics() -> Arc<Metrics> {
        Arc::new(Metrics::new(MetricsOptions {
            mode: AgentMode::Host,
            started_at: 1000,
            ca_job: true,
            kubelet_job: false,
            metrics_address: None,
        }))
    }

    fn summary(cn: &str) -> CertSummary {
        CertSummary {
            subject: format!("O=Corp, CN={cn}"),
            issuer: format!("O=Corp, CN={cn}"),
            subject_fields: vec![("O".into(), "Corp".into()), ("CN".into(), cn.into())],
            issuer_fields: vec![("O".into(), "Corp".into()), ("CN".into(), cn.into())],
            serial_hex: "FF".into(),
            serial_decimal: "255".into(),
            not_before: 1_000,
            not_after: 2_000,
            fingerprint: Fingerprint::of_der(cn.as_bytes()),
        }
    }

    #[test]
    fn certificate_gauges_use_the_exporters_names_and_labels() {
        let c = summary("Corp \"Root\"");
        let info = crate::x509::cert::CertInfo::from_der(
            &crate::x509::testpki::good_ca("x").cert.to_der().unwrap(),
        )
        .unwrap();
        let inv = CertInventory {
            anchors: Ok(BTreeMap::from([(
                c.fingerprint,
                AnchorFact {
                    path: "/usr/local/share/ca-certificates/node-cert-agent/node-cert-agent-ab.crt"
                        .into(),
                    cert: c.clone(),
                    info,
                },
            )])),
            node_certs: vec![
                NodeCertFact {
                    path: "/etc/kubernetes/admin.conf".into(),
                    embedded: Some(Embedded {
                        kind: "user",
                        name: "kubernetes-admin".into(),
                    }),
                    index: 1,
                    read: NodeCertRead::Ok(summary("kubernetes-admin")),
                },
                NodeCertFact {
                    path: "/etc/kubernetes/pki/broken.crt".into(),
                    embedded: None,
                    index: 1,
                    read: NodeCertRead::Unreadable("damaged".into()),
                },
            ],
        };
        let mut out = String::new();
        render_certificates(&inv, 2_500, &mut out);
        assert!(out.contains("# TYPE x509_cert_not_after gauge"), "{out}");
        assert!(
            out.contains(
                "x509_cert_not_after{filename=\"node-cert-agent-ab.crt\",filepath=\"/usr/local/share/ca-certificates/node-cert-agent/node-cert-agent-ab.crt\",serial_number=\"255\",issuer_O=\"Corp\",issuer_CN=\"Corp \\\"Root\\\"\",subject_O=\"Corp\",subject_CN=\"Corp \\\"Root\\\"\"} 2000"
            ),
            "{out}"
        );
        assert!(out.contains("embedded_kind=\"user\",embedded_key=\"kubernetes-admin\"} 1000"));
        assert!(out.contains("x509_cert_expired{"), "{out}");
        assert!(
            out.contains("} -500\n"),
            "expires_in is negative once expired: {out}"
        );
        assert!(out.contains("x509_read_errors 1\n"), "{out}");
    }

    #[test]
    fn agent_metrics_follow_the_passes() {
        let m = metrics();
        assert!(!m.is_ready());
        let outcome = Outcome {
            findings: vec![Finding::error(
                FindingKind::PrivateKey,
                "bad.crt",
                None,
                "p",
                "f",
            )],
            refreshed: true,
            restarted: vec!["containerd.service".into()],
            ..Outcome::default()
        };
        m.record_ca_pass(&outcome, 5_000);
        assert!(m.is_ready());
        m.record_ca_pass(&Outcome::default(), 6_000);
        let mut out = String::new();
        m.render_agent(&mut out);
        for line in [
            "node_cert_agent_build_info{version=\"",
            "node_cert_agent_trust_store_refreshes_total{result=\"success\"} 1\n",
            "node_cert_agent_unit_restarts_total{unit=\"containerd.service\",result=\"done\"} 1\n",
            "node_cert_agent_input_errors{key=\"bad.crt\"} 0\n",
            "node_cert_agent_last_reconcile_timestamp_seconds 6000\n",
            "node_cert_agent_kubelet_renewals_total{result=\"success\"} 0\n",
            "node_cert_agent_ready 1\n",
        ] {
            assert!(out.contains(line), "missing {line:?} in\n{out}");
        }
        let st = m.daemon_status(&ProcessIdentity::default(), 6_001, false);
        assert_eq!(st.last_ca_pass, Some(6_000));
        assert_eq!(st.last_ca_error, None);
        assert_eq!(st.stopped_at, None);
    }

    async fn get(addr: SocketAddr, request: &str) -> String {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(request.as_bytes()).await.unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    }

    #[tokio::test]
    async fn listener_serves_metrics_health_and_readiness() {
        let m = metrics();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(serve(
            listener,
            Endpoint {
                metrics: m.clone(),
                certificates: None,
            },
        ));
        let req = |p: &str| format!("GET {p} HTTP/1.1\r\nHost: x\r\n\r\n");
        let r = get(addr, &req("/healthz")).await;
        assert!(r.starts_with("HTTP/1.1 200 OK\r\n"), "{r}");
        assert!(r.contains("Connection: close"), "{r}");
        let r = get(addr, &req("/readyz")).await;
        assert!(r.starts_with("HTTP/1.1 503"), "{r}");
        m.record_ca_pass(&Outcome::default(), 1);
        let r = get(addr, &req("/readyz")).await;
        assert!(r.starts_with("HTTP/1.1 200"), "{r}");
        let r = get(addr, &req("/metrics")).await;
        assert!(r.contains(CONTENT_TYPE), "{r}");
        assert!(r.contains("node_cert_agent_ready 1"), "{r}");
        let r = get(addr, &req("/nope")).await;
        assert!(r.starts_with("HTTP/1.1 404"), "{r}");
        let r = get(addr, "POST /metrics HTTP/1.1\r\n\r\n").await;
        assert!(r.starts_with("HTTP/1.1 405"), "{r}");
        let r = get(addr, "HEAD /metrics HTTP/1.1\r\n\r\n").await;
        assert!(
            r.starts_with("HTTP/1.1 200") && r.ends_with("\r\n\r\n"),
            "{r}"
        );
    }
}
