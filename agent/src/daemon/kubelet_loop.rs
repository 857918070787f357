//! The kubelet certificate loop: a pass, then sleep until the next renewal
//! deadline, a change of the kubeconfigs or of the RenewRevocations, or a
//! retry after a failure.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::{EventKind, RecursiveMode, Watcher};
use tokio::sync::mpsc;
use tracing::{error, info, warn};

use super::backoff::Backoff;
use super::DaemonError;
use crate::errors::error_chain;
use crate::kubelet::manager::{KubeletManager, MAX_SLEEP};
use crate::node::systemd::Systemd;
use crate::ops::recorder::Recorder;
use crate::x509::time::now_unix;

/// Retry delays for a failed kubelet pass (kubelet backs off from 2 s too).
const KUBELET_RETRY_FIRST: Duration = Duration::from_secs(2);

const KUBELET_RETRY_MAX: Duration = Duration::from_secs(300);
/// Up to 10 % more, so a fleet does not retry in lockstep.
const KUBELET_RETRY_JITTER: f64 = 0.1;

/// The shortest time between two renewals made by the loop itself.
const MIN_RENEWAL_INTERVAL: Duration = Duration::from_secs(10);

/// Kubelet certificate loop: a pass, then sleep until the next deadline (at
/// most [`MAX_SLEEP`], so clock jumps are noticed), a RenewRevocation change,
/// or a retry after a failure (capped backoff with jitter, or the API
/// server's Retry-After).
pub async fn run_kubelet_until<S: Systemd>(
    manager: KubeletManager<S>,
    mut stop: mpsc::Receiver<&'static str>,
    metrics: Arc<Recorder>,
) -> Result<(), DaemonError> {
    let wake = std::sync::Arc::new(tokio::sync::Notify::new());
    // A bootstrap or kubelet kubeconfig that appears or changes (say, an
    // operator repairing a node) wakes the loop at once.
    let _kubeconfig_watch = watch_kubeconfigs(&manager, wake.clone());
    // The RenewRevocation watch runs with the node's identity of the moment;
    // it is restarted whenever that identity is renewed.
    let mut watch: Option<tokio::task::JoinHandle<()>> = None;
    let mut backoff = Backoff::new(KUBELET_RETRY_FIRST, KUBELET_RETRY_MAX, KUBELET_RETRY_JITTER);
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
        let sleep_for = match result {
            Ok(outcome) => {
                backoff.reset();
                let now = crate::x509::time::now_unix();
                metrics.record_kubelet_pass(&outcome, &manager.settings().restart_units, now);
                let mut until = outcome
                    .next_deadline
                    .map(|d| Duration::from_secs((d - now).max(0) as u64))
                    .unwrap_or(MAX_SLEEP);
                if let Some(d) = outcome.next_deadline {
                    info!(next_renewal = %crate::x509::time::rfc3339(d), "kubelet certificates checked");
                }
                if !outcome.renewed.is_empty() {
                    // A signer that backdates notBefore (kube-controller-manager
                    // does, by 5 min) can put a short-lived certificate's
                    // deadline in the past: never renew in a tight loop.
                    until = until.max(MIN_RENEWAL_INTERVAL);
                    // The watch holds the old identity; restart it with the new one.
                    if let Some(old) = watch.take() {
                        old.abort();
                    }
                }
                until.min(MAX_SLEEP)
            }
            Err(e) => {
                metrics.record_kubelet_error(&e, now_unix());
                let wait = backoff.next_delay(e.retry_after());
                error!(
                    retry_in_s = wait.as_secs(),
                    "kubelet certificate pass failed: {}",
                    error_chain(&e)
                );
                wait
            }
        };
        if watch.as_ref().is_none_or(|h| h.is_finished()) {
            watch = manager
                .node_client()
                .map(|client| tokio::spawn(watch_revocations(client, wake.clone())));
        }
        tokio::select! {
            biased;
            why = stop.recv() => {
                info!("{}: stopping the kubelet certificate loop", why.unwrap_or("stop channel closed"));
                return Ok(());
            }
            _ = tokio::time::sleep(sleep_for) => {}
            _ = wake.notified() => info!("RenewRevocations changed: checking the kubelet certificates"),
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

/// Wakes the kubelet loop on every RenewRevocation change after the first list.
async fn watch_revocations(client: kube::Client, wake: std::sync::Arc<tokio::sync::Notify>) {
    use futures_util::StreamExt;
    use kube::runtime::{watcher, WatchStreamExt};
    // Raw objects: one that does not decode must not stall the watch.
    let api = crate::kubelet::revocation::raw_api(client);
    let mut stream = watcher(api, watcher::Config::default())
        .default_backoff()
        .boxed();
    let mut initial_done = false;
    while let Some(event) = stream.next().await {
        match event {
            Ok(watcher::Event::InitDone) => initial_done = true,
            Ok(watcher::Event::Apply(_) | watcher::Event::Delete(_)) if initial_done => {
                wake.notify_one()
            }
            Ok(_) => {}
            Err(e) => warn!("RenewRevocation watch: {e}; retrying"),
        }
    }
}
