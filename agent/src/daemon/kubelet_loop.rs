//! The kubelet certificate loop: a pass, then sleep until the next renewal
//! deadline, a change of the kubeconfigs or of the RenewRevocations, or a
//! retry after a failure.
//!
//! Nothing makes it spin: whatever ends the sleep, the next pass starts at
//! least [`MIN_PASS_INTERVAL`] after the last one ended, and at least
//! [`MIN_RENEWAL_INTERVAL`] after one that renewed (client-go's certificate
//! manager paces its rotation loop at one second too).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::{EventKind, RecursiveMode, Watcher};
use tokio::sync::mpsc;
use tracing::{error, info, warn};

use super::publish_loop::Feed;
use super::DaemonError;
use crate::errors::error_chain;
use crate::retry::Backoff;
use tokio::sync::Notify;

use crate::kubelet::manager::{KubeletError, KubeletManager, PassOutcome, MAX_SLEEP};
use crate::kubelet::revocation::{self, RevocationCache, SourceState};
use crate::kubelet::store::CertKind;
use crate::node::systemd::Systemd;
use crate::ops::recorder::Recorder;
use crate::time::now_unix;

/// Retry delays for a failed kubelet pass (kubelet backs off from 2 s too).
const KUBELET_RETRY_FIRST: Duration = Duration::from_secs(2);

const KUBELET_RETRY_MAX: Duration = Duration::from_secs(300);
/// Up to 10 % more, so a fleet does not retry in lockstep.
const KUBELET_RETRY_JITTER: f64 = 0.1;
/// Retry delays after a 401 or 403 (credentials or RBAC must change first):
/// at most one attempt a minute per node, then fewer.
const AUTH_RETRY_FIRST: Duration = Duration::from_secs(60);
const AUTH_RETRY_MAX: Duration = Duration::from_secs(900);

/// The shortest time from the end of one pass to the start of the next,
/// whatever ends the sleep: a deadline already past, a RenewRevocation or
/// kubeconfig change, a retry the API server asked for at once.
const MIN_PASS_INTERVAL: Duration = Duration::from_secs(1);
/// The shortest time between two renewals made by the loop itself: after a
/// renewal the next pass waits this long, even when woken (a new client
/// certificate restarts the RenewRevocation watch, whose first list can
/// wake the loop at once).
const MIN_RENEWAL_INTERVAL: Duration = Duration::from_secs(10);

/// How closely passes may follow each other.
#[derive(Clone, Copy, Debug)]
struct Pacing {
    /// After any pass.
    min_pass: Duration,
    /// After a pass that renewed a certificate.
    min_renewal: Duration,
}

const PACING: Pacing = Pacing {
    min_pass: MIN_PASS_INTERVAL,
    min_renewal: MIN_RENEWAL_INTERVAL,
};

/// Kubelet certificate loop: a pass, then sleep until the next deadline (at
/// most [`MAX_SLEEP`], so clock jumps are noticed), a RenewRevocation change,
/// or a retry after a failure (capped backoff with jitter, or the API
/// server's Retry-After).
pub async fn run_kubelet_until<S: Systemd>(
    manager: KubeletManager<S>,
    stop: mpsc::Receiver<&'static str>,
    metrics: Arc<Recorder>,
    feed: Feed,
) -> Result<(), DaemonError> {
    run_paced(manager, stop, metrics, feed, PACING).await
}

async fn run_paced<S: Systemd>(
    manager: KubeletManager<S>,
    mut stop: mpsc::Receiver<&'static str>,
    metrics: Arc<Recorder>,
    feed: Feed,
    pacing: Pacing,
) -> Result<(), DaemonError> {
    let wake = Arc::new(Notify::new());
    // The RenewRevocations, kept current by one watch with the node's
    // identity of the moment (restarted whenever that identity is renewed);
    // passes read them from here.
    let revocations = Arc::new(RevocationCache::default());
    let manager = manager.with_revocation_cache(revocations.clone());
    // A bootstrap or kubelet kubeconfig that appears or changes (say, an
    // operator repairing a node) wakes the loop at once.
    let _kubeconfig_watch = watch_kubeconfigs(&manager, wake.clone());
    let mut watch: Option<tokio::task::JoinHandle<()>> = None;
    let mut backoff = Backoff::new(KUBELET_RETRY_FIRST, KUBELET_RETRY_MAX, KUBELET_RETRY_JITTER);
    let mut auth_backoff = Backoff::new(AUTH_RETRY_FIRST, AUTH_RETRY_MAX, KUBELET_RETRY_JITTER);
    let mut last_error: Option<String> = None;
    let mut repeats: u32 = 0;
    loop {
        let pass = manager.pass(false);
        tokio::pin!(pass);
        let result = tokio::select! {
            biased;
            why = stop.recv() => {
                // Waiting for a CSR can take minutes; a stop drops the wait.
                info!("{}: stopping the kubelet certificate loop", why.unwrap_or("stop channel closed"));
                return Ok(());
            }
            r = &mut pass => r,
        };
        let now = now_unix();
        let outcome = match result {
            Ok(outcome) => outcome,
            Err(e) => PassOutcome {
                failures: vec![e],
                ..PassOutcome::default()
            },
        };
        metrics.record_kubelet_pass(&outcome, now);
        feed.kubelet(&outcome, now);
        if outcome.renewed.contains(&CertKind::Client) {
            // The watch holds the old identity; restart it with the new one.
            if let Some(old) = watch.take() {
                old.abort();
            }
        }
        // The watch starts as soon as the node has an identity (after its
        // bootstrap, say); its first list wakes this loop.
        if watch.as_ref().is_none_or(|h| h.is_finished()) {
            watch = match manager.node_client() {
                Some(client) => Some(tokio::spawn(revocation::watch(
                    client,
                    manager.settings().revocation_namespace.clone(),
                    format!("system:node:{}", manager.node_name()),
                    revocations.clone(),
                    wake.clone(),
                ))),
                None => {
                    revocations.set_state(SourceState::NoIdentity);
                    None
                }
            };
        }
        let sleep_for = match outcome.failures.first() {
            None => {
                if last_error.take().is_some() {
                    info!("kubelet certificate pass succeeded again");
                }
                if let Some(d) = outcome.next_deadline {
                    info!(next_renewal = %crate::time::rfc3339(d), "kubelet certificates checked");
                }
                match outcome.next_deadline {
                    // A deadline already past that the pass did not renew
                    // for (none should be left behind): retried as a
                    // failure is, never at once.
                    Some(d) if d <= now && outcome.renewed.is_empty() => {
                        let wait = backoff.next_delay(None);
                        warn!(
                            next_renewal = %crate::time::rfc3339(d),
                            retry_in_s = wait.as_secs(),
                            "the kubelet certificate pass left a renewal deadline in the past without renewing; checking again in {}s",
                            wait.as_secs()
                        );
                        wait
                    }
                    next => {
                        backoff.reset();
                        auth_backoff.reset();
                        next.map(|d| Duration::from_secs((d - now).max(0) as u64))
                            .unwrap_or(MAX_SLEEP)
                            .min(MAX_SLEEP)
                    }
                }
            }
            Some(first) => {
                // A 401 or 403 is fixed by RBAC or credentials, not by
                // retrying in a second: minutes between tries.
                let wait = if outcome.failures.iter().any(KubeletError::is_auth) {
                    auth_backoff.next_delay(None)
                } else {
                    backoff.next_delay(first.retry_after())
                };
                let message = outcome
                    .failures
                    .iter()
                    .map(|e| error_chain(e))
                    .collect::<Vec<_>>()
                    .join("; ");
                // Every failed pass is an error in the log (the backoff
                // bounds how often); a repeat of the same error says so.
                if last_error.as_deref() == Some(message.as_str()) {
                    repeats += 1;
                    error!(
                        retry_in_s = wait.as_secs(),
                        attempt = repeats + 1,
                        "kubelet certificate pass failed again (attempt {}): {message}",
                        repeats + 1
                    );
                } else {
                    repeats = 0;
                    error!(
                        retry_in_s = wait.as_secs(),
                        "kubelet certificate pass failed: {message}"
                    );
                    last_error = Some(message);
                }
                wait
            }
        };
        // A signer that backdates notBefore (kube-controller-manager does,
        // by 5 min) can put a new short-lived certificate's deadline in the
        // past, and a watch can wake the loop right after a pass: the floor
        // holds for every way out of the sleep.
        let floor = if outcome.renewed.is_empty() {
            pacing.min_pass
        } else {
            pacing.min_renewal
        };
        let ended = tokio::time::Instant::now();
        tokio::select! {
            biased;
            why = stop.recv() => {
                info!("{}: stopping the kubelet certificate loop", why.unwrap_or("stop channel closed"));
                return Ok(());
            }
            _ = tokio::time::sleep_until(ended + sleep_for.max(floor)) => {}
            _ = wake.notified() => {
                info!("RenewRevocations or kubeconfigs changed: checking the kubelet certificates");
                tokio::select! {
                    biased;
                    why = stop.recv() => {
                        info!("{}: stopping the kubelet certificate loop", why.unwrap_or("stop channel closed"));
                        return Ok(());
                    }
                    _ = tokio::time::sleep_until(ended + floor) => {}
                }
            }
        }
    }
}

/// Watches the directories of the kubeconfigs (as this process sees them)
/// and wakes the loop when one of the files changes. `None` (with a warning)
/// if no directory can be watched; the hourly wake-up still covers it.
fn watch_kubeconfigs<S: Systemd>(
    manager: &KubeletManager<S>,
    wake: Arc<tokio::sync::Notify>,
) -> Option<notify::RecommendedWatcher> {
    let files = manager.kubeconfig_paths();
    let dirs: std::collections::BTreeSet<PathBuf> = files
        .iter()
        .filter_map(|f| f.parent().map(Path::to_path_buf))
        .collect();
    let targets = files.clone();
    let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        if let Ok(event) = res {
            if !matches!(event.kind, EventKind::Access(_))
                && event.paths.iter().any(|p| targets.contains(p))
            {
                wake.notify_one();
            }
        }
    })
    .map_err(|e| warn!("cannot watch the kubeconfigs: {e}"))
    .ok()?;
    for dir in &dirs {
        if let Err(e) = watcher.watch(dir, RecursiveMode::NonRecursive) {
            warn!(path = %dir.display(), "cannot watch {} for kubeconfig changes: {e}", dir.display());
        }
    }
    Some(watcher)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::daemon::test_support::{test_metrics, wait_for};
    use crate::kubelet::fake_api::{
        documentation_example, FakeApi, TestNode, BACKDATE, EXAMPLE_GROUP_LABEL, NODE,
    };
    use crate::kubelet::renewal::{deadline, renewal_fraction};
    use crate::node::procfs::ProcessIdentity;

    /// The AKS documentation's scenario, compressed: the documentation's example
    /// RenewRevocation (its Group entry matches every node certificate) on
    /// a node whose signer backdates by 5 minutes and whose certificates
    /// reach their renewal deadline 2 s after they are issued. The loop
    /// renews once for the revocation, finds it unsatisfiable, then renews
    /// at the deadline, and runs a handful of passes, not thousands.
    #[tokio::test]
    async fn an_unsatisfiable_revocation_neither_spins_the_loop_nor_skips_the_deadline() {
        const TO_DEADLINE: i64 = 2;
        let fraction = renewal_fraction(NODE);
        let lifetime = ((BACKDATE + TO_DEADLINE) as f64 / fraction).ceil() as i64 - BACKDATE;
        let api = FakeApi::start(lifetime);
        api.set_revocations(vec![documentation_example()]);
        let now = now_unix();
        let node = TestNode::new(&api, now - 60, now + 3600);
        let metrics = test_metrics();
        let passes = Arc::new(AtomicUsize::new(0));
        let counter = {
            let (metrics, passes) = (metrics.clone(), passes.clone());
            // Every pass records its outcome, which wakes the status writer.
            tokio::spawn(async move {
                loop {
                    metrics.changed().notified().await;
                    passes.fetch_add(1, Ordering::SeqCst);
                }
            })
        };
        let (stop_tx, stop_rx) = mpsc::channel(1);
        let pacing = Pacing {
            min_pass: Duration::from_millis(100),
            min_renewal: Duration::from_millis(500),
        };
        // No revocation spread: the renewal for the revocation comes at once.
        let manager = {
            let job = node.manager().job();
            let settings = crate::kubelet::manager::KubeletSettings {
                revocation_spread: Duration::ZERO,
                ..job.settings.clone()
            };
            KubeletManager::new(
                node.host(),
                node.systemd.clone(),
                crate::kubelet::manager::KubeletJob { settings, ..job },
            )
        };
        let run = tokio::spawn(run_paced(
            manager,
            stop_rx,
            metrics.clone(),
            Feed::disabled(),
            pacing,
        ));

        wait_for("the renewal at the deadline", || api.issued().len() >= 2).await;
        // Long enough for any pass that would follow at once.
        tokio::time::sleep(Duration::from_millis(800)).await;
        stop_tx.send("test").await.unwrap();
        run.await.unwrap().unwrap();
        counter.abort();

        let issued = api.issued();
        assert_eq!(
            issued.len(),
            2,
            "one renewal for the revocation, one at the deadline: {issued:?}"
        );
        let first_deadline = deadline(issued[0].not_before, issued[0].not_after, fraction);
        assert!(
            issued[1].at >= first_deadline && issued[1].at < issued[0].not_after,
            "renewed at its deadline {first_deadline}, before it expired: {issued:?}"
        );
        // The renewal for the revocation left an hour-long certificate that
        // kubelet re-reads; the one at the deadline restarts it.
        assert_eq!(node.systemd.restarts().len(), 1);
        let passes = passes.load(Ordering::SeqCst);
        assert!((3..=6).contains(&passes), "{passes} passes in about 3 s");
        let status = metrics.daemon_status(&ProcessIdentity::current(), now_unix(), false);
        assert_eq!(status.revocation_matches, [EXAMPLE_GROUP_LABEL]);
        let current = node.store().current(CertKind::Client).unwrap().unwrap();
        assert!(crate::kubelet::facts::facts_of(&current).not_after > now_unix());
    }
}
