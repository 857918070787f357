//! The long-running daemon: the CA trust loop and the kubelet certificate
//! loop side by side until a stop signal, beside three more long-lived
//! tasks: the metrics listener, the writer of
//! `<state-dir>/daemon-status.json` (after every pass), and the fleet
//! publisher (`publish_loop`: the node's state on its own Node, written
//! only when it changed, with `node_watch` telling it when the Node was
//! registered again). Any task that ends on its own is an error. After a
//! CA pass that made a CA effective for image pulls, `waiting_pods` lists
//! the node's pods once (a short task of its own) and names those still in
//! kubelet's image-pull back-off. The daemon holds
//! `<state-dir>/daemon.lock` for its whole life, which is how `status`
//! tells that it runs without any heartbeat.
//!
//! Nothing here polls: when nothing changes and nothing failed, every task
//! sleeps on its channel. Boundary: scheduling only; what a pass does is
//! `trust`'s and `kubelet`'s, what is recorded is `ops`'.

mod ca_loop;
mod kubelet_loop;
mod node_watch;
pub mod publish_loop;
pub mod secret_watch;
mod signals;
pub mod waiting_pods;
mod watch;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub use ca_loop::{log_outcome, reconcile_once, run_until, ONCE_MAX_WAIT};
pub use kubelet_loop::run_kubelet_until;
use tracing::warn;

use crate::fleet::writer::{ApiNodeWriter, NodeClientSource};
use crate::kubelet::manager::KubeletManager;
use crate::node::lock::try_daemon_lock;
use crate::node::procfs::ProcessIdentity;
use crate::node::systemd::Systemd;
use crate::ops::daemon_status::{self, DAEMON_LOCK_FILE};
use crate::ops::http::{self, Endpoint};
use crate::ops::inventory::InventorySources;
use crate::ops::recorder::Recorder;
use crate::time::now_unix;
use crate::trust::reconcile::Reconciler;

/// How long SIGTERM waits for the pass in flight before giving up.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(20);

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
    pub metrics: Arc<Recorder>,
    /// Where `/metrics`, `/healthz` and `/readyz` are served; `None` = off.
    pub listen: Option<SocketAddr>,
    /// `<state-dir>/daemon-status.json`, as this process sees it.
    pub status_path: PathBuf,
    /// Where the certificate gauges come from (what `status` lists).
    pub certificates: Option<InventorySources>,
    /// Publishing the node's state on its Node (`None`: `fleet-publish:
    /// false`, or no node identity source, as without the kubelet job).
    pub fleet: Option<FleetPublish>,
    /// After a CA pass that made a CA effective for pulls, the one list of
    /// this node's pods (`None`: no node identity source, as without the
    /// kubelet job).
    pub waiting_pods: Option<waiting_pods::WaitingPodsCheck>,
}

/// The publisher's node, identity and state file.
pub struct FleetPublish {
    pub node: String,
    /// The node's own identity (the kubelet client certificate) at the
    /// moment of each write.
    pub client: NodeClientSource,
    /// `<state-dir>/fleet-published.json`, as this process sees it.
    pub state_path: PathBuf,
    /// `fleet-publish-spread-seconds`.
    pub spread: Duration,
}

/// Runs the CA trust loop, and the kubelet certificate loop when given,
/// until SIGTERM or SIGINT. A loop that ends on its own is an error.
pub async fn run<S: Systemd, K: Systemd>(
    reconciler: Option<Reconciler<S>>,
    kubelet: Option<KubeletManager<K>>,
    debounce: Duration,
    mut obs: Observability,
) -> Result<(), DaemonError> {
    let signals::StopSignals {
        ca: ca_rx,
        kubelet: kubelet_rx,
    } = signals::listen()?;
    if reconciler.is_none() && kubelet.is_none() {
        return Err(DaemonError::NothingToDo);
    }
    let m = obs.metrics.clone();
    let (feed, publisher) = match obs.fleet.take() {
        Some(f) => {
            let (feed, rx) = publish_loop::Feed::new(reconciler.is_some(), kubelet.is_some());
            let (uid_tx, uid) = tokio::sync::watch::channel(None);
            let (readable, readable_rx) = tokio::sync::watch::channel(false);
            let watch = node_watch::run(f.node.clone(), f.client.clone(), uid_tx, readable_rx);
            let publisher = publish_loop::Publisher {
                node: f.node,
                writer: ApiNodeWriter::new(f.client),
                state_path: f.state_path,
                metrics: m.clone(),
                spread: f.spread,
            };
            let link = publish_loop::NodeWatchLink { uid, readable };
            let publish = publish_loop::run_publisher(publisher, rx.with_node_watch(link));
            // Both run for the daemon's life; either ending is the
            // publisher's task ending.
            let both = async move {
                tokio::select! {
                    () = publish => {}
                    () = watch => {}
                }
            };
            (feed, Some(both))
        }
        None => (publish_loop::Feed::disabled(), None),
    };
    let waiting = obs.waiting_pods.take();
    let loops = async move {
        let (reconciler, manager) = match (reconciler, kubelet) {
            (Some(r), None) => return run_until(r, debounce, ca_rx, m, feed, waiting).await,
            (None, Some(k)) => return run_kubelet_until(k, kubelet_rx, m, feed).await,
            (None, None) => return Err(DaemonError::NothingToDo),
            (Some(r), Some(k)) => (r, k),
        };
        let ca = run_until(
            reconciler,
            debounce,
            ca_rx,
            m.clone(),
            feed.clone(),
            waiting,
        );
        let kubelet = run_kubelet_until(manager, kubelet_rx, m, feed);
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
    let side = side_tasks(obs, identity.clone(), publisher);
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

/// The listener, the status writer and the publisher; returns only if one
/// of them ended.
async fn side_tasks(
    obs: Observability,
    identity: ProcessIdentity,
    publisher: Option<impl std::future::Future<Output = ()>>,
) -> DaemonError {
    let endpoint = Endpoint {
        recorder: obs.metrics.clone(),
        certificates: obs.certificates,
    };
    let listener = async move {
        match obs.listen {
            Some(address) => http::run_listener(address, endpoint).await,
            None => std::future::pending::<()>().await,
        }
    };
    let writer = write_status_until_stopped(obs.metrics, obs.status_path, identity);
    let publisher = async move {
        match publisher {
            Some(p) => p.await,
            None => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = listener => DaemonError::TaskEnded { task: "metrics listener" },
        _ = writer => DaemonError::TaskEnded { task: "status writer" },
        _ = publisher => DaemonError::TaskEnded { task: "fleet publisher" },
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
        "another node-cert-agent daemon holds {}: two daemons share this state directory, and they undo each other's CA changes unless they have the same sources",
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
    metrics: Arc<Recorder>,
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

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]
mod tests {
    use std::fs;

    use super::test_support::{test_metrics, wait_for};
    use super::*;
    use crate::node::procfs::ProcessIdentity;
    use crate::ops::daemon_status::{self};
    use crate::trust::reconcile::Outcome;

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
}

/// What the loops' tests share.
#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]
mod test_support {
    use std::sync::Arc;
    use std::time::Duration;

    use tokio::time::Instant;

    use crate::ops::daemon_status::AgentMode;
    use crate::ops::recorder::{Recorder, RecorderOptions};
    use crate::time::now_unix;

    pub(super) fn test_metrics() -> Arc<Recorder> {
        Arc::new(Recorder::new(RecorderOptions {
            mode: AgentMode::Pod,
            started_at: now_unix(),
            ca_job: true,
            kubelet_job: false,
            metrics_address: None,
        }))
    }

    pub(super) async fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !cond() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}
