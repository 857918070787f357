//! The CA trust loop: a pass when the inputs change (inotify, debounced so
//! a burst gives one pass), retries of a failed pass with capped backoff,
//! one more pass when a deferred restart is due (the pass says when: one
//! timer, no polling), and on a stop signal the pass in flight finished
//! under a timeout.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use notify::EventKind;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::{error, info, warn};

use super::publish_loop::Feed;
use super::waiting_pods::WaitingPodsCheck;
use super::watch::{ensure_watches, store_specs, watch_specs};
use super::{DaemonError, DRAIN_TIMEOUT};
use crate::errors::error_chain;
use crate::node::systemd::Systemd;
use crate::ops::recorder::Recorder;
use crate::retry::Backoff;
use crate::time::{now_unix, now_us, rfc3339_us};
use crate::trust::api_secret::SecretCache;
use crate::trust::reconcile::{Outcome, ReconcileError, Reconciler};

/// A burst never delays a pass by more than this many debounce windows.
const MAX_DEBOUNCE_WINDOWS: u32 = 10;

/// Retry delays for a failed pass: first, and cap.
const RETRY_FIRST: Duration = Duration::from_secs(1);

const RETRY_MAX: Duration = Duration::from_secs(60);

/// How long the first pass waits for the Secret's first list.
pub const FIRST_SYNC_WAIT: Duration = Duration::from_secs(10);

/// Runs until a stop request arrives on `stop` (a signal's name, for the
/// log). After a pass that made a CA effective for pulls, `waiting` (when
/// the node has an identity source) looks for the pods still waiting.
pub async fn run_until<S: Systemd>(
    reconciler: Reconciler<S>,
    debounce: Duration,
    mut stop: mpsc::Receiver<&'static str>,
    metrics: Arc<Recorder>,
    feed: Feed,
    waiting: Option<WaitingPodsCheck>,
) -> Result<(), DaemonError> {
    let (tx, mut rx) = mpsc::unbounded_channel::<()>();
    // The trust store's own events (drift), apart: those a pass causes by
    // its own writes are dropped after it.
    let (store_tx, mut store_rx) = mpsc::unbounded_channel::<()>();
    let specs = watch_specs(&reconciler.settings().sources);
    let store = reconciler.store();
    let drift = match (store.anchors_dir(), store.bundle_path()) {
        (Ok(anchors), Ok(bundle)) => {
            store_specs(&anchors, &bundle, crate::node::distro::ANCHOR_FILE_PREFIX)
        }
        (Err(e), _) | (_, Err(e)) => {
            warn!("the trust store is not watched for drift: {e}; it is checked on every change of the inputs");
            Vec::new()
        }
    };
    let dirs: Vec<PathBuf> = specs.iter().chain(&drift).map(|s| s.dir.clone()).collect();
    let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        let Ok(event) = res else {
            // An overflowed queue may hide a change: treat it as one.
            let _ = tx.send(());
            return;
        };
        if matches!(event.kind, EventKind::Access(_)) {
            return;
        }
        let concerns = |specs: &[super::watch::WatchSpec]| {
            event
                .paths
                .iter()
                .any(|p| specs.iter().any(|s| (s.relevant)(p)))
        };
        if event.paths.is_empty() || concerns(&specs) {
            let _ = tx.send(());
        } else if concerns(&drift) {
            let _ = store_tx.send(());
        }
    })
    .map_err(|source| DaemonError::Watcher { source })?;
    let mut watched = std::collections::BTreeSet::new();
    ensure_watches(&mut watcher, &dirs, &mut watched);

    // The Secret through the API: its watch wakes the loop like a file
    // event, and the first pass waits (briefly) for its first list, so a
    // start does not report a source that is merely not listed yet.
    let api_secret = reconciler.settings().api_secret.clone();
    if let Some(cache) = &api_secret {
        super::secret_watch::first_sync(cache, FIRST_SYNC_WAIT).await;
    }
    let api_changed = api_change(api_secret.clone());
    tokio::pin!(api_changed);

    let mut next_pass: Option<Instant> = Some(Instant::now());
    let mut burst_started: Option<Instant> = None;
    let mut backoff = Backoff::new(RETRY_FIRST, RETRY_MAX, 0.0);

    loop {
        let sleep_until =
            next_pass.unwrap_or_else(|| Instant::now() + Duration::from_secs(86_400 * 365));
        tokio::select! {
            // A stop request wins over starting a new pass.
            biased;
            why = stop.recv() => { info!("{}: stopping", why.unwrap_or("stop channel closed")); return Ok(()); }
            () = &mut api_changed => {
                api_changed.set(api_change(api_secret.clone()));
                let now = Instant::now();
                let started = *burst_started.get_or_insert(now);
                let latest = started + debounce * MAX_DEBOUNCE_WINDOWS;
                next_pass = Some((now + debounce).min(latest));
            }
            ev = rx.recv() => {
                if ev.is_none() {
                    return Err(DaemonError::WatcherStopped);
                }
                let now = Instant::now();
                let started = *burst_started.get_or_insert(now);
                let latest = started + debounce * MAX_DEBOUNCE_WINDOWS;
                next_pass = Some((now + debounce).min(latest));
            }
            ev = store_rx.recv() => {
                if ev.is_none() {
                    return Err(DaemonError::WatcherStopped);
                }
                info!("the trust store changed under the agent (an anchor or the bundle): checking it");
                let now = Instant::now();
                let started = *burst_started.get_or_insert(now);
                let latest = started + debounce * MAX_DEBOUNCE_WINDOWS;
                next_pass = Some((now + debounce).min(latest));
            }
            _ = tokio::time::sleep_until(sleep_until), if next_pass.is_some() => {
                burst_started = None;
                next_pass = None;
                // Drop events queued before this pass: the pass reads the newest state.
                while rx.try_recv().is_ok() {}
                let pass = reconciler.reconcile_observed();
                tokio::pin!(pass);
                let (outcome, result) = tokio::select! {
                    r = &mut pass => r,
                    _ = stop.recv() => return drain(pass, &metrics, &feed).await,
                };
                feed.trust(&outcome, result.as_ref().err());
                match result {
                    Ok(()) => {
                        log_outcome(&outcome);
                        metrics.record_ca_pass(&outcome, now_unix());
                        if let Some(w) = &waiting {
                            w.after_pass(&outcome, &metrics);
                        }
                        backoff.reset();
                        // A deferred restart: one more pass when it is due.
                        if let Some(at) = outcome.wake_at_us {
                            next_pass = Some(Instant::now() + until_us(at));
                        }
                    }
                    Err(e) => {
                        metrics.record_ca_error(&e, now_unix());
                        let wait = retry_delay(&e, &mut backoff);
                        error!(retry_in_s = wait.as_secs(), "reconcile failed: {}", error_chain(&e));
                        next_pass = Some(Instant::now() + wait);
                    }
                }
                // Most store events during a pass are its own anchor writes
                // and refresh; a change of someone else's at the same time
                // is told apart by looking once at what the pass left.
                let mut store_events = false;
                while store_rx.try_recv().is_ok() {
                    store_events = true;
                }
                if store_events && next_pass.is_none() && !reconciler.store_as_left(&outcome) {
                    info!("the trust store changed during the pass: checking it again");
                    next_pass = Some(Instant::now() + debounce);
                }
                ensure_watches(&mut watcher, &dirs, &mut watched);
            }
        }
    }
}

/// Resolves when the API Secret's view or state changes (never without one).
async fn api_change(cache: Option<Arc<SecretCache>>) {
    match cache {
        Some(c) => c.changed().await,
        None => std::future::pending().await,
    }
}

/// How long until `at` (microseconds since the epoch); zero if past.
fn until_us(at: u64) -> Duration {
    Duration::from_micros(at.saturating_sub(now_us()))
}

/// When to try a failed pass again: when the error says (a unit waiting for
/// its start limit's window), else the backoff's next delay.
fn retry_delay(e: &ReconcileError, backoff: &mut Backoff) -> Duration {
    match e.retry_at_us() {
        Some(at) => until_us(at),
        None => backoff.next_delay(None),
    }
}

/// Most a `--once` run waits for a deferred restart or a unit's recovery
/// (systemd's default window is 10 s), so that it exits with the restart
/// done rather than pending.
pub const ONCE_MAX_WAIT: Duration = Duration::from_secs(120);

/// `run --once`: one pass, plus, when a restart had to wait for the unit's
/// start limit, the pass that does it (up to [`ONCE_MAX_WAIT`] in all).
pub async fn reconcile_once<S: Systemd>(
    reconciler: &Reconciler<S>,
) -> Result<Outcome, ReconcileError> {
    let deadline = Instant::now() + ONCE_MAX_WAIT;
    loop {
        let result = reconciler.reconcile().await;
        let wake = match &result {
            Ok(o) => o.wake_at_us,
            Err(e) => e.retry_at_us(),
        };
        let Some(at) = wake else { return result };
        let wait = until_us(at);
        if Instant::now() + wait > deadline {
            return result;
        }
        match &result {
            Ok(o) => log_outcome(o),
            Err(e) => error!("reconcile failed: {}", error_chain(e)),
        }
        info!(until = %rfc3339_us(at), "waiting for the unit's start limit before the restart");
        tokio::time::sleep(wait).await;
    }
}

async fn drain<
    F: std::future::Future<Output = (Outcome, Result<(), crate::trust::reconcile::ReconcileError>)>,
>(
    pass: std::pin::Pin<&mut F>,
    metrics: &Recorder,
    feed: &Feed,
) -> Result<(), DaemonError> {
    info!(
        timeout_s = DRAIN_TIMEOUT.as_secs(),
        "stop signal: finishing the pass in flight"
    );
    match tokio::time::timeout(DRAIN_TIMEOUT, pass).await {
        Ok((outcome, result)) => {
            feed.trust(&outcome, result.as_ref().err());
            drained(outcome, result, metrics)
        }
        Err(_) => Err(DaemonError::DrainTimeout),
    }
}

fn drained(
    outcome: Outcome,
    result: Result<(), crate::trust::reconcile::ReconcileError>,
    metrics: &Recorder,
) -> Result<(), DaemonError> {
    match result {
        Ok(()) => {
            log_outcome(&outcome);
            metrics.record_ca_pass(&outcome, now_unix());
            Ok(())
        }
        Err(e) => {
            metrics.record_ca_error(&e, now_unix());
            error!(
                "reconcile failed while stopping: {}; the next start finishes it",
                error_chain(&e)
            );
            Ok(())
        }
    }
}

pub fn log_outcome(o: &Outcome) {
    if o.installed.is_empty() && o.removed.is_empty() && !o.refreshed && o.restarted.is_empty() {
        // A deferral or a stopped unit was logged where it was decided.
        info!(input_errors = o.has_input_errors(), "reconciled: no change");
        return;
    }
    let deferred: Vec<&str> = o.deferred.iter().map(|d| d.unit.as_str()).collect();
    macro_rules! changed {
        ($($extra:tt)*) => {
            info!(
                installed = o.installed.len(),
                removed = o.removed.len(),
                refreshed = o.refreshed,
                restarted = %o.restarted.join(","),
                $($extra)*
                agent_ms = o.agent_time.as_millis() as u64,
                refresh_ms = o.refresh_time.as_millis() as u64,
                restart_ms = o.restart_time.as_millis() as u64,
                input_errors = o.has_input_errors(),
                "reconciled: trust set changed"
            )
        };
    }
    match o.wake_at_us {
        Some(at) => changed!(
            restart_deferred = %deferred.join(","),
            restart_at = %rfc3339_us(at),
        ),
        None => changed!(),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]
mod tests {
    use std::fs;
    use std::path::{Path, PathBuf};
    use std::sync::Arc;
    use std::time::Duration;

    use tokio::sync::mpsc;

    use super::*;
    use crate::daemon::test_support::{test_metrics, wait_for};
    use crate::node::distro::Family;
    use crate::node::hostroot::HostRoot;
    use crate::node::systemd::fake::RecordingSystemd;
    use crate::trust::reconcile::{CaSettings, Reconciler};
    use crate::trust::sources::SourceSpec;
    use crate::trust::store::TrustStore;
    use crate::x509::testpki;

    /// A reconciler for a Debian node rooted at `root`, watching `secret`.
    fn debian_reconciler(
        root: &Path,
        secret: &Path,
        fake: Arc<RecordingSystemd>,
    ) -> (Reconciler<Arc<RecordingSystemd>>, PathBuf) {
        let state_path = root.join("var/lib/node-cert-agent/ca-state.json");
        let reconciler = Reconciler::new(
            TrustStore::new(HostRoot::new(root).unwrap(), Family::Debian.layout()),
            fake,
            CaSettings {
                sources: vec![SourceSpec::SecretDir(secret.into())],
                api_secret: None,
                restart_delay: std::time::Duration::ZERO,
                restart_units: vec!["containerd.service".into()],
                restart_spacing: std::time::Duration::ZERO,
                max_certificates: 10,
                state_path: state_path.clone(),
            },
        );
        (reconciler, state_path)
    }

    #[tokio::test]
    async fn a_burst_of_changes_gives_one_refresh_and_one_restart() {
        let root = tempfile::tempdir().unwrap();
        let secret = tempfile::tempdir().unwrap();
        let fake = Arc::new(RecordingSystemd::emulating_debian(root.path()));
        let (reconciler, state_path) = debian_reconciler(root.path(), secret.path(), fake.clone());
        let (stop_tx, stop_rx) = mpsc::channel(1);
        let daemon = tokio::spawn(run_until(
            reconciler,
            Duration::from_millis(100),
            stop_rx,
            test_metrics(),
            Feed::disabled(),
            None,
        ));
        wait_for("the first pass", || state_path.exists()).await;

        for i in 0..5 {
            let pem = testpki::pem(&testpki::good_ca(&format!("Burst {i}")).cert);
            fs::write(secret.path().join(format!("ca{i}.crt")), pem).unwrap();
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        wait_for("a restart", || !fake.restarts().is_empty()).await;
        // Long enough for any straggling pass to have run.
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert_eq!(fake.commands().len(), 1, "one refresh for the burst");
        assert_eq!(
            fake.restarts(),
            vec!["containerd.service"],
            "one restart for the burst"
        );
        let anchors = fs::read_dir(
            root.path()
                .join("usr/local/share/ca-certificates/node-cert-agent"),
        )
        .unwrap()
        .count();
        assert_eq!(anchors, 5);

        stop_tx.send("test").await.unwrap();
        daemon.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn a_restart_deferred_by_the_start_limit_wakes_the_loop_when_it_is_due() {
        let root = tempfile::tempdir().unwrap();
        let secret = tempfile::tempdir().unwrap();
        let fake = Arc::new(RecordingSystemd::emulating_debian(root.path()));
        // One agent start per second (burst 2, one left to others).
        fake.with_unit("containerd.service", |u| {
            u.start_limit = crate::node::systemd::StartLimit {
                burst: 2,
                interval_us: 1_000_000,
            }
        });
        let (reconciler, state_path) = debian_reconciler(root.path(), secret.path(), fake.clone());
        let (stop_tx, stop_rx) = mpsc::channel(1);
        let daemon = tokio::spawn(run_until(
            reconciler,
            Duration::from_millis(20),
            stop_rx,
            test_metrics(),
            Feed::disabled(),
            None,
        ));
        wait_for("the first pass", || state_path.exists()).await;
        for i in 0..3 {
            let pem = testpki::pem(&testpki::good_ca(&format!("Paced {i}")).cert);
            fs::write(secret.path().join(format!("ca{i}.crt")), pem).unwrap();
            wait_for("a refresh", || fake.commands().len() > i).await;
        }
        assert_eq!(fake.restarts().len(), 1, "the later changes wait");
        // Nothing changes any more: only the deferred restart's timer wakes it.
        wait_for("the deferred restart", || fake.restarts().len() == 2).await;
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert_eq!(
            fake.restarts().len(),
            2,
            "one restart for the two later changes"
        );
        assert_eq!(fake.unit("containerd.service").active_state, "active");
        let st = crate::trust::state::load(&state_path).unwrap();
        assert_eq!(st.pending, crate::trust::state::Pending::Nothing);
        stop_tx.send("test").await.unwrap();
        daemon.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn stop_during_a_pass_finishes_the_pass_and_leaves_no_temp_files() {
        let root = tempfile::tempdir().unwrap();
        let secret = tempfile::tempdir().unwrap();
        fs::write(
            secret.path().join("ca1.crt"),
            testpki::pem(&testpki::good_ca("Drain").cert),
        )
        .unwrap();
        let fake = Arc::new(RecordingSystemd::emulating_debian(root.path()));
        // A slow refresh tool: the stop request arrives while it runs.
        *fake.command_delay.lock().unwrap() = Duration::from_millis(300);
        let (reconciler, state_path) = debian_reconciler(root.path(), secret.path(), fake.clone());
        let (stop_tx, stop_rx) = mpsc::channel(1);
        let daemon = tokio::spawn(run_until(
            reconciler,
            Duration::from_millis(10),
            stop_rx,
            test_metrics(),
            Feed::disabled(),
            None,
        ));
        wait_for("the refresh to start", || fake.commands().len() == 1).await;
        stop_tx.send("test").await.unwrap();
        daemon.await.unwrap().unwrap();
        // The pass that had started ran to its end: refreshed and restarted.
        assert_eq!(fake.commands().len(), 1);
        assert_eq!(fake.restarts().len(), 1);
        let st = crate::trust::state::load(&state_path).unwrap();
        assert_eq!(st.pending, crate::trust::state::Pending::Nothing);
        for dir in [
            root.path()
                .join("usr/local/share/ca-certificates/node-cert-agent"),
            state_path.parent().unwrap().to_path_buf(),
        ] {
            for e in fs::read_dir(dir).unwrap() {
                let name = e.unwrap().file_name().to_string_lossy().into_owned();
                assert!(
                    !name.starts_with(crate::node::fsutil::TEMP_PREFIX),
                    "temp file left: {name}"
                );
            }
        }
    }
}
