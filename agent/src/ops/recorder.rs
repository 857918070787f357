//! The daemon's recorder ([`Recorder`]): what the passes did, kept for the
//! operator. One per process, shared (`Arc`) by the CA loop, the kubelet
//! loop, the status writer and the listener.
//!
//! Owns the meaning of an outcome: which counters a pass or a failure moves
//! (through [`AgentMetrics`]), the last pass and error of each job,
//! readiness, the wording of the Node Events (but for the pods waiting
//! for a pull retry, whose words are `trust::waiting_pods`'), and the
//! daemon's status ([`Recorder::daemon_status`]). Every update wakes the
//! status writer ([`Recorder::changed`]).
//!
//! Boundary: it sees outcome types only (the trust job's [`Outcome`],
//! [`ReconcileError`] and [`WaitingPods`], the kubelet job's
//! [`PassOutcome`] and [`KubeletError`]), never the jobs themselves. Series names and the text
//! format are [`crate::ops::prometheus`]'s; posting events is
//! [`crate::ops::events`]'; serving is [`crate::ops::http`]'s.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock, PoisonError};

use tokio::sync::Notify;

use crate::errors::error_chain;
use crate::k8s::source::SourceState;
use crate::kubelet::manager::{KubeletError, PassOutcome};
use crate::kubelet::renewal::RenewReason;
use crate::node::procfs::ProcessIdentity;
use crate::ops::daemon_status::{
    AgentMode, DaemonStatus, PublishReport, SourceReport, SCHEMA_VERSION,
};
use crate::ops::events::{EventSink, NodeEvent, MAX_MESSAGE_BYTES};
use crate::ops::prometheus::AgentMetrics;
use crate::time::rfc3339_us;
use crate::trust::pull_trust::PullTrust;
use crate::trust::reconcile::{Outcome, ReconcileError};
use crate::trust::waiting_pods::WaitingPods;
use crate::x509::cert::CertInfo;

/// What the daemon did and how it stands; see the module comment.
#[derive(Debug)]
pub struct Recorder {
    version: &'static str,
    mode: AgentMode,
    started_at: i64,
    ca_job: bool,
    kubelet_job: bool,
    metrics_address: Option<SocketAddr>,
    ready: AtomicBool,
    metrics: AgentMetrics,
    inner: Mutex<Inner>,
    changed: Notify,
    /// Node Events for what the passes did; set once at start, when the
    /// node has an API identity.
    events: OnceLock<EventSink>,
}

#[derive(Debug, Default)]
struct Inner {
    /// key → current error findings; a key stays once seen (at 0 when fixed).
    input_errors: BTreeMap<String, u64>,
    last_ca_pass: Option<i64>,
    last_ca_error: Option<String>,
    last_kubelet_pass: Option<i64>,
    last_kubelet_error: Option<String>,
    next_renewal: Option<i64>,
    revocation_matches: Vec<String>,
    revocation_source: Option<SourceReport>,
    ca_secret_source: Option<SourceReport>,
    fleet_publish: Option<PublishReport>,
    pull_trust: Option<PullTrust>,
    waiting_pods: Option<WaitingPods>,
    /// Why the anchors directory cannot be written here, as probed at
    /// start (the wrong overlay, a read-only `/usr`); cleared by the first
    /// CA pass that writes anchors.
    store_unwritable: Option<String>,
}

/// What the daemon runs, for [`Recorder::new`].
#[derive(Debug, Clone, Copy)]
pub struct RecorderOptions {
    pub mode: AgentMode,
    pub started_at: i64,
    pub ca_job: bool,
    pub kubelet_job: bool,
    pub metrics_address: Option<SocketAddr>,
}

/// The `result` of a restart whose D-Bus call itself failed.
const CALL_FAILED: &str = "error";
/// The `result` of a restart that worked: systemd's job result `done`, and
/// (for the trust job) the unit active again.
const JOB_DONE: &str = "done";
/// The `result` of a restart after which the unit failed at its start limit.
const START_LIMIT_HIT: &str = "start-limit-hit";
/// The `result` of a restart whose job ended `done` but left the unit not
/// active.
const NOT_ACTIVE: &str = "not-active";

impl Recorder {
    pub fn new(o: RecorderOptions) -> Self {
        let version = env!("CARGO_PKG_VERSION");
        Self {
            version,
            mode: o.mode,
            started_at: o.started_at,
            ca_job: o.ca_job,
            kubelet_job: o.kubelet_job,
            metrics_address: o.metrics_address,
            ready: AtomicBool::new(false),
            metrics: AgentMetrics::new(version),
            inner: Mutex::new(Inner::default()),
            changed: Notify::new(),
            events: OnceLock::new(),
        }
    }

    fn inner(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves plain values behind: still
        // the best there are.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The agent's own series, for `/metrics`.
    pub fn metrics(&self) -> &AgentMetrics {
        &self.metrics
    }

    /// Wakes whoever publishes the daemon's status.
    pub fn changed(&self) -> &Notify {
        &self.changed
    }

    /// `/readyz` answers 200 from the first completed pass on: the first CA
    /// pass, or the first kubelet pass of a kubelet-only agent.
    pub fn is_ready(&self) -> bool {
        self.not_ready_reason().is_none()
    }

    /// Why `/readyz` says not ready: the first pass has not completed, or
    /// an input the agent must read (the RenewRevocations) cannot be read.
    pub fn not_ready_reason(&self) -> Option<String> {
        if let Some(why) = self.inner().store_unwritable.clone() {
            return Some(why);
        }
        if !self.ready.load(Ordering::Relaxed) {
            return Some("the first pass has not completed".into());
        }
        let i = self.inner();
        if let Some(r) = i.ca_secret_source.as_ref().filter(|r| r.state != "synced") {
            return Some(format!(
                "the CA Secret is not synced ({}): {}",
                r.state,
                r.error
                    .as_deref()
                    .unwrap_or("its first list has not completed")
            ));
        }
        match &i.revocation_source {
            Some(r) if r.is_failing() => Some(format!(
                "RenewRevocations cannot be read: {}",
                r.error.as_deref().unwrap_or("unknown error")
            )),
            _ => None,
        }
    }

    /// The anchors directory cannot be written here (the start's probe):
    /// `/readyz` says why until a CA pass writes anchors.
    pub fn set_store_unwritable(&self, why: String) {
        self.inner().store_unwritable = Some(why);
        self.changed.notify_one();
    }

    fn mark_ready(&self) {
        self.ready.store(true, Ordering::Relaxed);
        self.metrics.set_ready(true);
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
            let names = |v: &[CertInfo]| {
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
            let message = if o.recovered.contains(unit) {
                format!("started {unit} again after it hit its start limit; it is active and reads the new root CAs")
            } else {
                format!("restarted {unit}; it is active again and reads the new root CAs")
            };
            self.emit(NodeEvent::normal("UnitRestarted", message));
        }
        for d in &o.deferred {
            self.emit(NodeEvent::normal(
                "UnitRestartDeferred",
                format!(
                    "restart of {} deferred to {} to stay within its start limit ({}); every change until then shares it",
                    d.unit,
                    rfc3339_us(d.at_us),
                    d.limit
                ),
            ));
        }
        for unit in &o.restarts_avoided {
            self.metrics.unit_restart_avoided(unit);
            self.emit(NodeEvent::normal(
                "UnitRestartAvoided",
                format!("{unit} was not restarted: it reads the added CAs at the next pull through its registry host configuration"),
            ));
        }
        if let Some(t) = &o.pull_trust {
            self.metrics.set_pull_trust_live(t.is_live());
            self.inner().pull_trust = Some(t.clone());
        }
        for unit in &o.not_running {
            self.emit(NodeEvent::normal(
                "UnitNotRestarted",
                format!("{unit} is not running, so it was not restarted; it reads the new root CAs when it starts"),
            ));
        }
        if o.refreshed {
            self.metrics.trust_store_refreshed(true);
        }
        if let Some((name, state)) = &o.api_source {
            self.metrics
                .set_source_synced(name, *state == SourceState::Synced);
            self.inner().ca_secret_source = Some(source_report(state));
        }
        for unit in &o.restarted {
            self.metrics.unit_restarted(unit, JOB_DONE);
        }
        {
            let mut i = self.inner();
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
            for (key, n) in &i.input_errors {
                self.metrics.set_input_errors(key, *n);
            }
            i.last_ca_pass = Some(now);
            i.last_ca_error = None;
            // Anchors written: the directory is writable after all.
            if !o.installed.is_empty() || !o.removed.is_empty() {
                i.store_unwritable = None;
            }
        }
        self.metrics.set_last_reconcile(now);
        self.mark_ready();
        self.changed.notify_one();
    }

    pub fn record_ca_error(&self, e: &ReconcileError, now: i64) {
        self.emit(NodeEvent::warning("CATrustUpdateFailed", error_chain(e)));
        match e {
            ReconcileError::RefreshCall { .. }
            | ReconcileError::RefreshFailed { .. }
            | ReconcileError::BundleIncomplete { .. } => {
                self.metrics.trust_store_refreshed(false);
            }
            ReconcileError::RestartCall { unit, .. } => {
                self.metrics.unit_restarted(unit, CALL_FAILED);
            }
            ReconcileError::RestartFailed { unit, result } => {
                self.metrics.unit_restarted(unit, result);
            }
            ReconcileError::StartLimitHit { unit, .. } => {
                self.metrics.unit_restarted(unit, START_LIMIT_HIT);
            }
            ReconcileError::NotActiveAfterRestart { unit, .. } => {
                self.metrics.unit_restarted(unit, NOT_ACTIVE);
            }
            // No restart was asked for.
            ReconcileError::UnitFailed { .. }
            | ReconcileError::UnitMissing { .. }
            | ReconcileError::RestartWouldStopContainers { .. }
            | ReconcileError::AwaitingRecovery { .. }
            | ReconcileError::History(_)
            | ReconcileError::State(_)
            | ReconcileError::Trust(_)
            | ReconcileError::PullTrust(_) => {}
        }
        {
            let mut i = self.inner();
            i.last_ca_pass = Some(now);
            i.last_ca_error = Some(error_chain(e));
        }
        self.changed.notify_one();
    }

    /// A kubelet pass that ended well; `restart_units` were restarted if it renewed.
    /// A kubelet pass; its failures (certificate by certificate) are
    /// recorded as errors of the pass.
    pub fn record_kubelet_pass(&self, o: &PassOutcome, now: i64) {
        for label in &o.unfixable_found {
            self.emit(NodeEvent::warning(
                "KubeletCertificateRevocationUnfixable",
                format!("{label} matches every certificate this node can get; give it a notBefore or narrow it"),
            ));
        }
        for (kind, reason) in &o.reasons {
            if let RenewReason::Revoked(label) = reason {
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
            self.metrics.kubelet_renewed(o.renewed.len() as u64);
        }
        for unit in &o.restarted {
            self.emit(NodeEvent::normal(
                "UnitRestarted",
                format!("restarted {unit} (if it was running) so it uses the new certificate"),
            ));
            self.metrics.unit_restarted(unit, JOB_DONE);
        }
        {
            let mut i = self.inner();
            i.last_kubelet_pass = Some(now);
            i.last_kubelet_error = None;
            i.next_renewal = o.next_deadline;
            i.revocation_matches = o
                .reasons
                .iter()
                .filter_map(|(_, r)| match r {
                    RenewReason::Revoked(label) => Some(label.clone()),
                    _ => None,
                })
                .chain(o.unfixable_revocations.iter().cloned())
                .collect();
            i.revocation_source = Some(source_report(&o.revocations));
        }
        if !self.ca_job {
            self.mark_ready();
        }
        if let Some((first, rest)) = o.failures.split_first() {
            self.record_kubelet_error(first, now);
            for e in rest {
                self.emit(NodeEvent::warning(
                    "KubeletCertificateRenewalFailed",
                    error_chain(e),
                ));
                self.count_restart_failure(e);
            }
        }
        self.changed.notify_one();
    }

    pub fn record_kubelet_error(&self, e: &KubeletError, now: i64) {
        self.emit(NodeEvent::warning(
            "KubeletCertificateRenewalFailed",
            error_chain(e),
        ));
        self.metrics.kubelet_renewal_failed();
        self.count_restart_failure(e);
        {
            let mut i = self.inner();
            i.last_kubelet_pass = Some(now);
            i.last_kubelet_error = Some(error_chain(e));
        }
        self.changed.notify_one();
    }

    fn count_restart_failure(&self, e: &KubeletError) {
        match e {
            KubeletError::Restart { unit, .. } => {
                self.metrics.unit_restarted(unit, CALL_FAILED);
            }
            KubeletError::RestartFailed { unit, result } => {
                self.metrics.unit_restarted(unit, result);
            }
            _ => {}
        }
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
            revocation_source: i.revocation_source.clone(),
            ca_secret_source: i.ca_secret_source.clone(),
            fleet_publish: i.fleet_publish.clone(),
            pull_trust: i.pull_trust.clone(),
            waiting_pods: i.waiting_pods.clone(),
        }
    }

    /// What the one list of the node's pods after a CA pass found: kept for
    /// `status` (replacing the last), and one Event when pods wait.
    pub fn record_waiting_pods(&self, found: WaitingPods) {
        if let Some(message) = found.event_message(MAX_MESSAGE_BYTES) {
            self.emit(NodeEvent::normal("PodsWaitingForImagePullRetry", message));
        }
        self.inner().waiting_pods = Some(found);
        self.changed.notify_one();
    }

    /// How publishing on the Node stands (the publisher calls it after
    /// every attempt).
    pub fn record_publish(&self, report: PublishReport) {
        let mut i = self.inner();
        if i.fleet_publish.as_ref() == Some(&report) {
            return;
        }
        i.fleet_publish = Some(report);
        drop(i);
        self.changed.notify_one();
    }
}

/// The RenewRevocations' source state as the daemon-status file and
/// `status` show it.
fn source_report(s: &SourceState) -> SourceReport {
    let (state, error, forbidden) = match s {
        SourceState::NoIdentity => ("noIdentity", None, false),
        SourceState::Syncing => ("syncing", None, false),
        SourceState::Synced => ("synced", None, false),
        SourceState::Failing { message, forbidden } => {
            ("failing", Some(message.clone()), *forbidden)
        }
    };
    SourceReport {
        state: state.to_string(),
        error,
        forbidden,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::trust::validate::{Finding, FindingKind};

    fn recorder() -> Arc<Recorder> {
        Arc::new(Recorder::new(RecorderOptions {
            mode: AgentMode::Host,
            started_at: 1000,
            ca_job: true,
            kubelet_job: false,
            metrics_address: None,
        }))
    }

    #[test]
    fn agent_metrics_follow_the_passes() {
        let m = recorder();
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
        let out = m.metrics().render(None, 0).unwrap();
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

    #[test]
    fn a_failed_pass_keeps_the_last_reconcile_time_and_says_what_failed() {
        let m = recorder();
        m.record_ca_pass(&Outcome::default(), 5_000);
        m.record_ca_error(
            &ReconcileError::RestartFailed {
                unit: "containerd.service".into(),
                result: "failed".into(),
            },
            6_000,
        );
        let out = m.metrics().render(None, 0).unwrap();
        assert!(
            out.contains("node_cert_agent_last_reconcile_timestamp_seconds 5000\n"),
            "{out}"
        );
        assert!(
            out.contains(
                "node_cert_agent_unit_restarts_total{unit=\"containerd.service\",result=\"failed\"} 1\n"
            ),
            "{out}"
        );
        let st = m.daemon_status(&ProcessIdentity::default(), 6_001, true);
        assert_eq!(st.last_ca_pass, Some(6_000));
        assert!(st
            .last_ca_error
            .as_deref()
            .is_some_and(|e| e.contains("containerd.service")));
        assert_eq!(st.stopped_at, Some(6_001));
    }

    #[test]
    fn restart_results_say_what_systemd_did() {
        let m = recorder();
        m.record_ca_error(
            &ReconcileError::StartLimitHit {
                unit: "containerd.service".into(),
                limit: crate::node::systemd::StartLimit::SYSTEMD_DEFAULT,
                recover_at_us: 1_000_000,
            },
            6_000,
        );
        // Waiting for the window asks systemd for nothing: not counted.
        m.record_ca_error(
            &ReconcileError::AwaitingRecovery {
                unit: "containerd.service".into(),
                limit: crate::node::systemd::StartLimit::SYSTEMD_DEFAULT,
                recover_at_us: 1_000_000,
            },
            6_001,
        );
        m.record_ca_pass(
            &Outcome {
                restarted: vec!["containerd.service".into()],
                recovered: vec!["containerd.service".into()],
                ..Outcome::default()
            },
            6_002,
        );
        let out = m.metrics().render(None, 0).unwrap();
        for line in [
            "node_cert_agent_unit_restarts_total{unit=\"containerd.service\",result=\"start-limit-hit\"} 1\n",
            "node_cert_agent_unit_restarts_total{unit=\"containerd.service\",result=\"done\"} 1\n",
        ] {
            assert!(out.contains(line), "missing {line:?} in\n{out}");
        }
        let st = m.daemon_status(&ProcessIdentity::default(), 6_003, false);
        assert_eq!(st.last_ca_error, None, "recovered");
    }

    #[test]
    fn the_last_look_at_waiting_pods_is_kept_for_status() {
        use crate::trust::waiting_pods::{WaitingPod, WaitingPods};
        let m = recorder();
        let st = m.daemon_status(&ProcessIdentity::default(), 1, false);
        assert_eq!(st.waiting_pods, None, "before any look");
        let found = WaitingPods {
            checked_at: 2_000,
            pods: vec![WaitingPod {
                namespace: "shop".into(),
                name: "web-1".into(),
                container: "app".into(),
                image: "registry.example:5000/app:1".into(),
            }],
        };
        m.record_waiting_pods(found.clone());
        let st = m.daemon_status(&ProcessIdentity::default(), 2_001, false);
        assert_eq!(st.waiting_pods, Some(found));
        // The next look replaces it, also when it finds none.
        m.record_waiting_pods(WaitingPods {
            checked_at: 3_000,
            pods: vec![],
        });
        let st = m.daemon_status(&ProcessIdentity::default(), 3_001, false);
        assert_eq!(st.waiting_pods.map(|w| w.pods.len()), Some(0));
    }

    #[test]
    fn a_kubelet_only_agent_is_ready_after_its_first_kubelet_pass() {
        let m = Recorder::new(RecorderOptions {
            mode: AgentMode::Pod,
            started_at: 1000,
            ca_job: false,
            kubelet_job: true,
            metrics_address: None,
        });
        assert!(!m.is_ready());
        m.record_kubelet_pass(
            &PassOutcome {
                reasons: vec![(
                    crate::kubelet::store::CertKind::Client,
                    RenewReason::Revoked("old-ca".into()),
                )],
                renewed: vec![crate::kubelet::store::CertKind::Client],
                restarted: vec!["kubelet.service".to_string()],
                next_deadline: Some(9_000),
                ..PassOutcome::default()
            },
            2_000,
        );
        assert!(m.is_ready());
        let st = m.daemon_status(&ProcessIdentity::default(), 2_001, false);
        assert_eq!(st.next_renewal, Some(9_000));
        assert_eq!(st.revocation_matches, vec!["old-ca".to_string()]);
        let out = m.metrics().render(None, 0).unwrap();
        assert!(out.contains("node_cert_agent_ready 1\n"), "{out}");
        assert!(
            out.contains("node_cert_agent_kubelet_renewals_total{result=\"success\"} 1\n"),
            "{out}"
        );
    }
}
