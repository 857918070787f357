//! The long-running loop: watch the inputs with inotify, debounce bursts into
//! one pass, retry failed passes with capped backoff, and on SIGTERM finish
//! the pass in flight (under a timeout) before exiting.
//!
//! Nothing here polls: when nothing changes and nothing failed, the loop
//! sleeps on the event channel and the signal streams only. Beside the loops
//! run two more long-lived tasks: the metrics listener and the writer of
//! `<state-dir>/daemon-status.json` (after every pass). Any of them ending is
//! an error. The daemon holds `<state-dir>/daemon.lock` for its whole life,
//! which is how `status` tells that it runs without any heartbeat.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::{EventKind, RecursiveMode, Watcher};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::{error, info, warn};

use crate::kubelet::manager::{KubeletManager, MAX_SLEEP};
use crate::node::lock::try_daemon_lock;
use crate::node::procfs::ProcessIdentity;
use crate::node::systemd::Systemd;
use crate::ops::daemon_status::{self, DAEMON_LOCK_FILE};
use crate::ops::inventory::InventorySources;
use crate::ops::logging::error_chain;
use crate::ops::metrics::{self, Endpoint, Metrics};
use crate::trust::reconcile::{Outcome, Reconciler};
use crate::trust::sources::SourceSpec;
use crate::x509::time::now_unix;

/// How long SIGTERM waits for the pass in flight before giving up.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(20);
/// A burst never delays a pass by more than this many debounce windows.
const MAX_DEBOUNCE_WINDOWS: u32 = 10;
/// Retry delays for a failed pass: first, and cap.
const RETRY_FIRST: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(60);
/// Retry delays for a failed kubelet pass (kubelet backs off from 2 s too).
const KUBELET_RETRY_FIRST: Duration = Duration::from_secs(2);
const KUBELET_RETRY_MAX: Duration = Duration::from_secs(300);
/// The shortest time between two renewals made by the loop itself.
const MIN_RENEWAL_INTERVAL: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("cannot start the file watcher: {source}")]
    Watcher { source: notify::Error },
    #[error("cannot install the {signal} handler: {source}")]
    Signal {
        signal: &'static str,
        source: std::io::Error,
    },
    #[error("the file watcher stopped; the agent cannot see changes any more")]
    WatcherStopped,
    #[error("nothing to do: no CA source is configured and the kubelet certificate job is off")]
    NothingToDo,
    #[error("the pass in flight did not finish within {DRAIN_TIMEOUT:?} of the stop signal")]
    DrainTimeout,
    #[error("the {task} task ended; the agent stops rather than run without it")]
    TaskEnded { task: &'static str },
}

/// What the daemon publishes about itself: counters for `/metrics`, and its
/// status file for `node-cert-agent status`.
pub struct Observability {
    pub metrics: Arc<Metrics>,
    /// Where `/metrics`, `/healthz` and `/readyz` are served; `None` = off.
    pub listen: Option<SocketAddr>,
    /// `<state-dir>/daemon-status.json`, as this process sees it.
    pub status_path: PathBuf,
    /// Where the certificate gauges come from (what `status` lists).
    pub certificates: Option<InventorySources>,
}

/// What to watch for one source: the directory to add, and which paths in
/// its events concern the source.
struct WatchSpec {
    dir: PathBuf,
    relevant: Box<dyn Fn(&Path) -> bool + Send>,
}

fn watch_specs(sources: &[SourceSpec]) -> Vec<WatchSpec> {
    let mut specs = Vec::new();
    for source in sources {
        match source {
            SourceSpec::SecretDir(dir) => {
                // The dir itself sees the `..data` swap; its parent sees the
                // dir appear or be replaced.
                let d = dir.clone();
                specs.push(WatchSpec {
                    dir: dir.clone(),
                    relevant: Box::new(move |p| p.starts_with(&d)),
                });
                if let Some(parent) = dir.parent() {
                    let d = dir.clone();
                    specs.push(WatchSpec {
                        dir: parent.to_path_buf(),
                        relevant: Box::new(move |p| p == d),
                    });
                }
            }
            SourceSpec::File(file) => {
                if let Some(parent) = file.parent() {
                    let f = file.clone();
                    specs.push(WatchSpec {
                        dir: parent.to_path_buf(),
                        relevant: Box::new(move |p| p == f),
                    });
                }
            }
        }
    }
    specs
}

/// Runs the CA trust loop, and the kubelet certificate loop when given,
/// until SIGTERM or SIGINT. A loop that ends on its own is an error.
pub async fn run<S: Systemd, K: Systemd>(
    reconciler: Option<Reconciler<S>>,
    kubelet: Option<KubeletManager<K>>,
    debounce: Duration,
    obs: Observability,
) -> Result<(), DaemonError> {
    let mut sigterm = signal(SignalKind::terminate()).map_err(|source| DaemonError::Signal {
        signal: "SIGTERM",
        source,
    })?;
    let mut sigint = signal(SignalKind::interrupt()).map_err(|source| DaemonError::Signal {
        signal: "SIGINT",
        source,
    })?;
    let (ca_tx, ca_rx) = mpsc::channel::<&'static str>(4);
    let (kubelet_tx, kubelet_rx) = mpsc::channel::<&'static str>(4);
    tokio::spawn(async move {
        loop {
            let name = tokio::select! {
                _ = sigterm.recv() => "SIGTERM",
                _ = sigint.recv() => "SIGINT",
            };
            let _ = kubelet_tx.send(name).await;
            if ca_tx.send(name).await.is_err() {
                return;
            }
        }
    });
    if reconciler.is_none() && kubelet.is_none() {
        return Err(DaemonError::NothingToDo);
    }
    let m = obs.metrics.clone();
    let loops = async move {
        let (reconciler, manager) = match (reconciler, kubelet) {
            (Some(r), None) => return run_until(r, debounce, ca_rx, m).await,
            (None, Some(k)) => return run_kubelet_until(k, kubelet_rx, m).await,
            (None, None) => return Err(DaemonError::NothingToDo),
            (Some(r), Some(k)) => (r, k),
        };
        let ca = run_until(reconciler, debounce, ca_rx, m.clone());
        let kubelet = run_kubelet_until(manager, kubelet_rx, m);
        tokio::pin!(ca);
        tokio::pin!(kubelet);
        tokio::select! {
            r = &mut ca => {
                r?;
                // Stopped by a signal: the kubelet loop got it too.
                tokio::time::timeout(DRAIN_TIMEOUT, kubelet).await.map_err(|_| DaemonError::DrainTimeout)?
            }
            r = &mut kubelet => {
                r?;
                tokio::time::timeout(DRAIN_TIMEOUT, ca).await.map_err(|_| DaemonError::DrainTimeout)?
            }
        }
    };
    let identity = ProcessIdentity::current();
    let metrics = obs.metrics.clone();
    let status_path = obs.status_path.clone();
    let _lock = hold_daemon_lock(&status_path.with_file_name(DAEMON_LOCK_FILE)).await;
    let side = side_tasks(obs, identity.clone());
    tokio::pin!(loops);
    tokio::pin!(side);
    let result = tokio::select! {
        r = &mut loops => r,
        e = &mut side => Err(e),
    };
    // Say so (`stoppedAt`), so that `status` tells a clean stop from a crash.
    let stopped = metrics.daemon_status(&identity, now_unix(), true);
    if let Err(e) = daemon_status::write_daemon_status(&status_path, &stopped) {
        warn!("{e}");
    }
    result
}

/// The listener and the status writer; returns only if one of them ended.
async fn side_tasks(obs: Observability, identity: ProcessIdentity) -> DaemonError {
    let endpoint = Endpoint {
        metrics: obs.metrics.clone(),
        certificates: obs.certificates,
    };
    let listener = async move {
        match obs.listen {
            Some(address) => metrics::run_listener(address, endpoint).await,
            None => std::future::pending::<()>().await,
        }
    };
    let writer = write_status_until_stopped(obs.metrics, obs.status_path, identity);
    tokio::select! {
        _ = listener => DaemonError::TaskEnded { task: "metrics listener" },
        _ = writer => DaemonError::TaskEnded { task: "status writer" },
    }
}

/// Takes `<state-dir>/daemon.lock` for the life of the returned guard (the
/// kernel drops it when the process ends, however it ends). A moment of
/// contention is `status` testing it; a lock still held after that is a
/// second daemon on the same state directory, which is warned about, and
/// this daemon runs on without the lock.
async fn hold_daemon_lock(path: &Path) -> Option<nix::fcntl::Flock<std::fs::File>> {
    for _ in 0..DAEMON_LOCK_TRIES {
        match try_daemon_lock(path) {
            Ok(Some(lock)) => return Some(lock),
            Ok(None) => tokio::time::sleep(DAEMON_LOCK_RETRY).await,
            Err(e) => {
                warn!("{e}; `node-cert-agent status` from another pid namespace cannot tell that this daemon runs");
                return None;
            }
        }
    }
    warn!(
        lock = %path.display(),
        "another node-cert-agent daemon holds {}: two daemons share this state directory, and          they undo each other's CA changes unless they have the same sources",
        path.display()
    );
    None
}

/// How often, and how far apart, [`hold_daemon_lock`] tries the lock.
const DAEMON_LOCK_TRIES: u32 = 20;
const DAEMON_LOCK_RETRY: Duration = Duration::from_millis(100);
/// After a failed status write, the next try (only while it fails).
const STATUS_WRITE_RETRY: Duration = Duration::from_secs(30);

/// Rewrites the daemon status file after every recorded pass. Nothing is
/// written while nothing happens. A failed write is logged once per distinct
/// error and retried every [`STATUS_WRITE_RETRY`] until it works: status is
/// secondary to the trust job.
async fn write_status_until_stopped(
    metrics: Arc<Metrics>,
    path: PathBuf,
    identity: ProcessIdentity,
) {
    let mut last_error: Option<String> = None;
    loop {
        let st = metrics.daemon_status(&identity, now_unix(), false);
        match daemon_status::write_daemon_status(&path, &st) {
            Ok(()) => last_error = None,
            Err(e) => {
                let e = e.to_string();
                if last_error.as_deref() != Some(e.as_str()) {
                    warn!("{e}; `node-cert-agent status` cannot see the daemon's view until this works");
                    last_error = Some(e);
                }
            }
        }
        if last_error.is_some() {
            tokio::select! {
                _ = metrics.changed().notified() => {}
                _ = tokio::time::sleep(STATUS_WRITE_RETRY) => {}
            }
        } else {
            metrics.changed().notified().await;
        }
    }
}

/// Kubelet certificate loop: a pass, then sleep until the next deadline (at
/// most [`MAX_SLEEP`], so clock jumps are noticed), a RenewRevocation change,
/// or a retry after a failure (capped backoff with jitter, or the API
/// server's Retry-After).
pub async fn run_kubelet_until<S: Systemd>(
    manager: KubeletManager<S>,
    mut stop: mpsc::Receiver<&'static str>,
    metrics: Arc<Metrics>,
) -> Result<(), DaemonError> {
    let wake = std::sync::Arc::new(tokio::sync::Notify::new());
    // A bootstrap or kubelet kubeconfig that appears or changes (say, an
    // operator repairing a node) wakes the loop at once.
    let _kubeconfig_watch = watch_kubeconfigs(&manager, wake.clone());
    // The RenewRevocation watch runs with the node's identity of the moment;
    // it is restarted whenever that identity is renewed.
    let mut watch: Option<tokio::task::JoinHandle<()>> = None;
    let mut backoff = KUBELET_RETRY_FIRST;
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
                backoff = KUBELET_RETRY_FIRST;
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
                let wait = e.retry_after().unwrap_or(backoff) + jitter(backoff);
                error!(
                    retry_in_s = wait.as_secs(),
                    "kubelet certificate pass failed: {}",
                    error_chain(&e)
                );
                backoff = (backoff * 2).min(KUBELET_RETRY_MAX);
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

/// Up to 10 % of `base`, so a fleet does not retry in lockstep.
fn jitter(base: Duration) -> Duration {
    let mut b = [0u8; 2];
    let _ = openssl::rand::rand_bytes(&mut b);
    base.mul_f64(f64::from(u16::from_be_bytes(b)) / f64::from(u16::MAX) * 0.1)
}

/// Runs until a stop request arrives on `stop` (a signal's name, for the log).
pub async fn run_until<S: Systemd>(
    reconciler: Reconciler<S>,
    debounce: Duration,
    mut stop: mpsc::Receiver<&'static str>,
    metrics: Arc<Metrics>,
) -> Result<(), DaemonError> {
    let (tx, mut rx) = mpsc::unbounded_channel::<()>();
    let specs = watch_specs(&reconciler.settings().sources);
    let dirs: Vec<PathBuf> = specs.iter().map(|s| s.dir.clone()).collect();
    let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        let Ok(event) = res else {
            // An overflowed queue may hide a change: treat it as one.
            let _ = tx.send(());
            return;
        };
        if matches!(event.kind, EventKind::Access(_)) {
            return;
        }
        if event.paths.is_empty()
            || event
                .paths
                .iter()
                .any(|p| specs.iter().any(|s| (s.relevant)(p)))
        {
            let _ = tx.send(());
        }
    })
    .map_err(|source| DaemonError::Watcher { source })?;
    let mut watched = std::collections::BTreeSet::new();
    ensure_watches(&mut watcher, &dirs, &mut watched);

    let mut next_pass: Option<Instant> = Some(Instant::now());
    let mut burst_started: Option<Instant> = None;
    let mut backoff = RETRY_FIRST;

    loop {
        let sleep_until =
            next_pass.unwrap_or_else(|| Instant::now() + Duration::from_secs(86_400 * 365));
        tokio::select! {
            // A stop request wins over starting a new pass.
            biased;
            why = stop.recv() => { info!("{}: stopping", why.unwrap_or("stop channel closed")); return Ok(()); }
            ev = rx.recv() => {
                if ev.is_none() {
                    return Err(DaemonError::WatcherStopped);
                }
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
                let pass = reconciler.reconcile();
                tokio::pin!(pass);
                let result = tokio::select! {
                    r = &mut pass => r,
                    _ = stop.recv() => return drain(pass, &metrics).await,
                };
                match result {
                    Ok(outcome) => {
                        log_outcome(&outcome);
                        metrics.record_ca_pass(&outcome, now_unix());
                        backoff = RETRY_FIRST;
                    }
                    Err(e) => {
                        metrics.record_ca_error(&e, now_unix());
                        error!(retry_in_s = backoff.as_secs(), "reconcile failed: {}", error_chain(&e));
                        next_pass = Some(Instant::now() + backoff);
                        backoff = (backoff * 2).min(RETRY_MAX);
                    }
                }
                ensure_watches(&mut watcher, &dirs, &mut watched);
            }
        }
    }
}

fn ensure_watches(
    watcher: &mut notify::RecommendedWatcher,
    dirs: &[PathBuf],
    watched: &mut std::collections::BTreeSet<PathBuf>,
) {
    for dir in dirs {
        if watched.contains(dir) && dir.is_dir() {
            continue;
        }
        match watcher.watch(dir, RecursiveMode::NonRecursive) {
            Ok(()) => {
                watched.insert(dir.clone());
            }
            Err(e) => {
                watched.remove(dir);
                warn!(path = %dir.display(), "cannot watch {}: {e}; changes there are seen once it exists and a parent changes", dir.display());
            }
        }
    }
}

async fn drain<
    F: std::future::Future<Output = Result<Outcome, crate::trust::reconcile::ReconcileError>>,
>(
    pass: std::pin::Pin<&mut F>,
    metrics: &Metrics,
) -> Result<(), DaemonError> {
    info!(
        timeout_s = DRAIN_TIMEOUT.as_secs(),
        "stop signal: finishing the pass in flight"
    );
    match tokio::time::timeout(DRAIN_TIMEOUT, pass).await {
        Ok(Ok(outcome)) => {
            log_outcome(&outcome);
            metrics.record_ca_pass(&outcome, now_unix());
            Ok(())
        }
        Ok(Err(e)) => {
            metrics.record_ca_error(&e, now_unix());
            error!(
                "reconcile failed while stopping: {}; the next start finishes it",
                error_chain(&e)
            );
            Ok(())
        }
        Err(_) => Err(DaemonError::DrainTimeout),
    }
}

pub fn log_outcome(o: &Outcome) {
    if o.installed.is_empty() && o.removed.is_empty() && !o.refreshed && o.restarted.is_empty() {
        info!(input_errors = o.has_input_errors(), "reconciled: no change");
        return;
    }
    info!(
        installed = o.installed.len(),
        removed = o.removed.len(),
        refreshed = o.refreshed,
        restarted = %o.restarted.join(","),
        agent_ms = o.agent_time.as_millis() as u64,
        refresh_ms = o.refresh_time.as_millis() as u64,
        restart_ms = o.restart_time.as_millis() as u64,
        input_errors = o.has_input_errors(),
        "reconciled: trust set changed"
    );
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]
mod tests {
    use super::*;
    use crate::node::distro::Family;
    use crate::node::hostroot::HostRoot;
    use crate::node::systemd::fake::RecordingSystemd;
    use crate::ops::daemon_status::AgentMode;
    use crate::ops::metrics::MetricsOptions;
    use crate::trust::reconcile::CaSettings;
    use crate::trust::store::TrustStore;
    use crate::x509::testpki;
    use std::fs;

    fn test_metrics() -> Arc<Metrics> {
        Arc::new(Metrics::new(MetricsOptions {
            mode: AgentMode::Pod,
            started_at: now_unix(),
            ca_job: true,
            kubelet_job: false,
            metrics_address: None,
        }))
    }

    async fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !cond() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[tokio::test]
    async fn status_file_follows_the_passes_and_says_when_the_daemon_stopped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(daemon_status::DAEMON_STATUS_FILE);
        let m = test_metrics();
        let read = || -> serde_json::Value {
            serde_json::from_slice(&fs::read(&path).unwrap_or_default()).unwrap_or_default()
        };
        let writer = tokio::spawn(write_status_until_stopped(
            m.clone(),
            path.clone(),
            ProcessIdentity::current(),
        ));
        wait_for("the first write", || path.exists()).await;
        assert!(read()["lastCaPass"].is_null());
        m.record_ca_pass(&Outcome::default(), 1234);
        wait_for("the pass in the file", || read()["lastCaPass"] == 1234).await;
        assert_eq!(read()["mode"], "pod");
        assert_eq!(read()["process"]["pid"], std::process::id());
        writer.abort();
        let stopped = m.daemon_status(&ProcessIdentity::current(), 2000, true);
        daemon_status::write_daemon_status(&path, &stopped).unwrap();
        assert_eq!(read()["stoppedAt"], 2000);
    }

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
                restart_units: vec!["containerd.service".into()],
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
        ));
        wait_for("the refresh to start", || fake.commands().len() == 1).await;
        stop_tx.send("test").await.unwrap();
        daemon.await.unwrap().unwrap();
        // The pass that had started ran to its end: refreshed and restarted.
        assert_eq!(fake.commands().len(), 1);
        assert_eq!(fake.restarts().len(), 1);
        let st = crate::trust::state::load(&state_path).unwrap();
        assert!(!st.refresh_pending && st.restart_pending.is_empty());
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
