//! The publisher: after every CA pass and kubelet pass, the node's state as
//! `fleet::publish` defines it, written on the node's own Node only when it
//! differs from what was last published. What was published is kept in
//! memory and in `<state-dir>/fleet-published.json`, so a restarted agent
//! with nothing new to say writes nothing. No heartbeat: while nothing
//! changes, this task sleeps on its channels and makes no request.
//!
//! At start, the record is checked once against the Node itself (one GET),
//! and again whenever the Node's watch (`node_watch`) sees a new uid, so a
//! Node registered again, before or while the agent runs, is repaired. A failed write changes nothing
//! on the node; it is logged (once per
//! distinct error), shown in `status` (`agent.fleetPublish`) and retried
//! with backoff. Without a node identity (before the bootstrap) the state
//! waits, and is published by the first pass after the node has one.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tracing::{debug, info, warn};

use crate::fleet::publish::{self, KubeletView, Published, TrustView};
use crate::fleet::writer::{NodeWriter, Part, WriteError};
use crate::kubelet::manager::PassOutcome;
use crate::node::fsutil;
use crate::ops::daemon_status::PublishReport;
use crate::ops::recorder::Recorder;
use crate::retry::Backoff;
use crate::time::now_unix;
use crate::trust::reconcile::{Outcome, ReconcileError};
use crate::trust::restart::spread_offset;

/// What was last published, in the state directory.
pub const PUBLISHED_FILE: &str = "fleet-published.json";

/// Retry delays of a failed write (kubelet's node status backs off too).
const RETRY_FIRST: Duration = Duration::from_secs(2);
const RETRY_MAX: Duration = Duration::from_secs(300);
/// After a 401 or 403 only RBAC or credentials help: minutes between tries.
const AUTH_RETRY_FIRST: Duration = Duration::from_secs(60);
const AUTH_RETRY_MAX: Duration = Duration::from_secs(900);
/// Up to 10 % more, so a fleet does not retry in lockstep.
const RETRY_JITTER: f64 = 0.1;

/// Where the loops hand their passes to the publisher; cheap to clone.
/// [`Feed::disabled`] drops everything (publishing off).
#[derive(Clone, Debug, Default)]
pub struct Feed {
    trust: Option<Arc<watch::Sender<Option<TrustView>>>>,
    kubelet: Option<Arc<watch::Sender<Option<KubeletView>>>>,
}

/// The publisher's ends of a [`Feed`].
pub struct FeedReceivers {
    trust: watch::Receiver<Option<TrustView>>,
    kubelet: watch::Receiver<Option<KubeletView>>,
    /// Which jobs run: nothing is published before each has reported once,
    /// so a restarted agent never publishes half its state (which would
    /// remove the other half, then write it back).
    needs: (bool, bool),
    /// The link to the Node's watch; `None`: no watch.
    node_watch: Option<NodeWatchLink>,
}

/// The publisher's link to the watch of its Node ([`super::node_watch`]).
pub struct NodeWatchLink {
    /// The Node's uid as the watch sees it.
    pub uid: watch::Receiver<Option<String>>,
    /// Set once the publisher has read the Node: the node has an identity
    /// that may read it, so the watch starts (before the bootstrap there
    /// is none, and nothing to watch with).
    pub readable: watch::Sender<bool>,
}

impl FeedReceivers {
    /// Also repair the Node as soon as its watch sees it registered again
    /// (a uid other than the one last read).
    pub fn with_node_watch(mut self, link: NodeWatchLink) -> Self {
        self.node_watch = Some(link);
        self
    }
}

impl Feed {
    pub fn disabled() -> Self {
        Self::default()
    }

    /// A feed for the jobs that run (the CA trust job, the kubelet job).
    pub fn new(trust_job: bool, kubelet_job: bool) -> (Self, FeedReceivers) {
        let (t, trust) = watch::channel(None);
        let (k, kubelet) = watch::channel(None);
        (
            Self {
                trust: Some(Arc::new(t)),
                kubelet: Some(Arc::new(k)),
            },
            FeedReceivers {
                trust,
                kubelet,
                needs: (trust_job, kubelet_job),
                node_watch: None,
            },
        )
    }

    /// A CA pass ended (with `error` if it failed).
    pub fn trust(&self, outcome: &Outcome, error: Option<&ReconcileError>) {
        if let Some(tx) = &self.trust {
            send_if_new(tx, TrustView::of(outcome, error));
        }
    }

    /// A kubelet pass ended at `now`.
    pub fn kubelet(&self, outcome: &PassOutcome, now: i64) {
        if let Some(tx) = &self.kubelet {
            send_if_new(tx, KubeletView::of(outcome, now));
        }
    }
}

/// Wakes the publisher only for a view that differs from the last one.
fn send_if_new<T: PartialEq>(tx: &watch::Sender<Option<T>>, view: T) {
    tx.send_if_modified(|current| {
        if current.as_ref() == Some(&view) {
            false
        } else {
            *current = Some(view);
            true
        }
    });
}

/// The publisher's settings.
pub struct Publisher<W: NodeWriter> {
    pub node: String,
    pub writer: W,
    /// `<state-dir>/fleet-published.json`, as this process sees it.
    pub state_path: PathBuf,
    pub metrics: Arc<Recorder>,
    /// `fleet-publish-spread-seconds`: a change is written at the node's
    /// stable share of this after it was first seen.
    pub spread: Duration,
}

/// Publishes until the feed's senders are gone (the loops ended), then
/// waits forever: the daemon stops through its loops, never through this.
pub async fn run_publisher<W: NodeWriter>(p: Publisher<W>, mut rx: FeedReceivers) {
    let mut last = load(&p.state_path).for_node(&p.node);
    let mut backoff = Backoff::new(RETRY_FIRST, RETRY_MAX, RETRY_JITTER);
    let mut auth_backoff = Backoff::new(AUTH_RETRY_FIRST, AUTH_RETRY_MAX, RETRY_JITTER);
    let mut writes: u64 = 0;
    let mut last_write: Option<i64> = None;
    let mut logged: Option<WriteError> = None;
    // The record is checked against the Node itself once, before the first
    // publication (one GET per start), and again whenever the Node's watch
    // sees another uid (the Node registered again): a Node registered
    // again, or edited while the agent was down, is repaired, and one that
    // already shows the state costs no write.
    let mut checked = false;
    let mut known_uid: Option<String> = None;
    // When the unpublished change was first seen: it is written at the
    // node's share of the spread after that, however many changes join it.
    let mut unpublished_since: Option<tokio::time::Instant> = None;
    let offset = spread_offset(&p.node, p.spread);
    loop {
        let trust = rx.trust.borrow_and_update().clone();
        let kubelet = rx.kubelet.borrow_and_update().clone();
        let (need_trust, need_kubelet) = rx.needs;
        let waiting = (need_trust && trust.is_none()) || (need_kubelet && kubelet.is_none());
        let retry_in = if waiting || (trust.is_none() && kubelet.is_none()) {
            None
        } else {
            let read = if checked {
                Ok(())
            } else {
                p.writer.get(&p.node).await.map(|node| {
                    known_uid.clone_from(&node.metadata.uid);
                    last = publish::observed(&node, &last);
                    checked = true;
                    if let Some(link) = &rx.node_watch {
                        link.readable.send_replace(true);
                    }
                })
            };
            let desired = publish::desired(
                trust.as_ref(),
                kubelet.as_ref(),
                &last,
                env!("CARGO_PKG_VERSION"),
            );
            let now = now_unix();
            let plan = publish::plan(&last, &desired, now);
            if plan.is_empty() {
                unpublished_since = None;
            }
            // A change waits for the node's share of the spread after it
            // was first seen; one whose time has come is written at once.
            let hold = if plan.is_empty() || read.is_err() {
                None
            } else {
                let since = *unpublished_since.get_or_insert_with(tokio::time::Instant::now);
                (since + offset)
                    .checked_duration_since(tokio::time::Instant::now())
                    .filter(|w| !w.is_zero())
            };
            match hold {
                Some(wait) => {
                    debug!(
                        node = %p.node,
                        wait_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
                        "the node's change is published on Node {} at its share of the {} s spread (fleet-publish-spread-seconds)",
                        p.node,
                        p.spread.as_secs()
                    );
                    Some(wait)
                }
                None => {
                    let result = match read {
                        Ok(()) => apply(&p, &plan, &mut last, &mut writes).await,
                        Err(e) => Err(e),
                    };
                    report(
                        &p,
                        result,
                        &mut Reporting {
                            backoff: &mut backoff,
                            auth_backoff: &mut auth_backoff,
                            writes,
                            last_write: &mut last_write,
                            logged: &mut logged,
                            unpublished_since: &mut unpublished_since,
                            last: &last,
                            now,
                        },
                    )
                }
            }
        };
        let changed = async {
            tokio::select! {
                r = rx.trust.changed() => r.is_ok(),
                r = rx.kubelet.changed() => r.is_ok(),
                () = registered_again(rx.node_watch.as_mut(), known_uid.as_deref()) => {
                    info!(node = %p.node, "Node {} was registered again: reading it to repair what it shows", p.node);
                    checked = false;
                    true
                }
            }
        };
        let open = match retry_in {
            Some(wait) => tokio::select! {
                open = changed => open,
                _ = tokio::time::sleep(wait) => true,
            },
            None => changed.await,
        };
        if !open {
            std::future::pending::<()>().await;
        }
    }
}

/// What [`report`] updates of the publisher's loop.
struct Reporting<'a> {
    backoff: &'a mut Backoff,
    auth_backoff: &'a mut Backoff,
    writes: u64,
    last_write: &'a mut Option<i64>,
    logged: &'a mut Option<WriteError>,
    unpublished_since: &'a mut Option<tokio::time::Instant>,
    last: &'a Published,
    now: i64,
}

/// Logs and records the result of one publication; when to retry, if it
/// failed.
fn report<W: NodeWriter>(
    p: &Publisher<W>,
    result: Result<bool, WriteError>,
    r: &mut Reporting<'_>,
) -> Option<Duration> {
    match result {
        Ok(wrote) => {
            r.backoff.reset();
            r.auth_backoff.reset();
            *r.unpublished_since = None;
            if wrote {
                *r.last_write = Some(r.now);
                info!(
                    node = %p.node,
                    trust_set = %r.last.labels.get(crate::fleet::schema::TRUST_SET_LABEL).map_or("-", String::as_str),
                    "published the node's state on Node {}", p.node
                );
            }
            if r.logged.take().is_some() {
                info!(node = %p.node, "publishing on Node {} works again", p.node);
            }
            p.metrics.record_publish(PublishReport {
                state: "published".into(),
                last_write: *r.last_write,
                writes: r.writes,
                error: None,
            });
            None
        }
        Err(WriteError::NoIdentity) => {
            // Published by a later pass: its change starts a spread anew.
            *r.unpublished_since = None;
            p.metrics.record_publish(PublishReport {
                state: "pending".into(),
                last_write: *r.last_write,
                writes: r.writes,
                error: Some(WriteError::NoIdentity.to_string()),
            });
            None
        }
        Err(e) => {
            let auth = matches!(&e, WriteError::Api { failure, .. } if failure.is_auth());
            let wait = if auth {
                r.auth_backoff.next_delay(None)
            } else {
                r.backoff.next_delay(e.retry_after())
            };
            if r.logged.as_ref() != Some(&e) {
                warn!(
                    node = %p.node,
                    retry_in_s = wait.as_secs(),
                    "cannot publish the node's state on Node {}: {e}; nothing on the node changes, the agent retries",
                    p.node
                );
            }
            p.metrics.record_publish(PublishReport {
                state: "failing".into(),
                last_write: *r.last_write,
                writes: r.writes,
                error: Some(e.to_string()),
            });
            *r.logged = Some(e);
            Some(wait)
        }
    }
}

/// Resolves when the Node's watch sees a uid other than `known` (the uid
/// last read; with none, the next read happens anyway). Never, without a
/// watch or once it has ended.
async fn registered_again(link: Option<&mut NodeWatchLink>, known: Option<&str>) {
    let (Some(NodeWatchLink { uid: rx, .. }), Some(known)) = (link, known) else {
        return std::future::pending().await;
    };
    loop {
        if rx.changed().await.is_err() {
            return std::future::pending().await;
        }
        if rx
            .borrow_and_update()
            .as_deref()
            .is_some_and(|u| u != known)
        {
            return;
        }
    }
}

/// Makes the planned writes, recording each success in `last` (and its
/// file). Whether anything was written.
async fn apply<W: NodeWriter>(
    p: &Publisher<W>,
    plan: &publish::Writes,
    last: &mut Published,
    writes: &mut u64,
) -> Result<bool, WriteError> {
    if plan.is_empty() {
        return Ok(false);
    }
    if let Some(patch) = &plan.metadata {
        p.writer.patch(&p.node, Part::Metadata, patch).await?;
        *writes += 1;
        *last = plan.after_metadata.clone();
        save(&p.state_path, last);
    }
    if let Some(patch) = &plan.status {
        p.writer.patch(&p.node, Part::Status, patch).await?;
        *writes += 1;
        *last = plan.after_both.clone();
        save(&p.state_path, last);
    }
    Ok(true)
}

/// What was last published; nothing when the file is absent or unreadable
/// (then the first change is published in full, which is always correct).
fn load(path: &Path) -> Published {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
            warn!(path = %path.display(), "ignoring {}: {e}; the next change is published in full", path.display());
            Published::default()
        }),
        Err(_) => Published::default(),
    }
}

/// Saves `published`; a failure costs a rewrite after a restart, no more.
fn save(path: &Path, published: &Published) {
    let result = serde_json::to_vec_pretty(published)
        .map_err(|e| e.to_string())
        .and_then(|b| fsutil::write_atomic(path, &b, 0o644).map_err(|e| e.to_string()));
    if let Err(e) = result {
        warn!(path = %path.display(), "cannot save what was published to {}: {e}; a restarted agent will publish again", path.display());
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]
mod tests {
    use std::sync::Mutex;

    use serde_json::Value;

    use super::*;
    use crate::daemon::test_support::{test_metrics, wait_for};
    use crate::fleet::schema::{TRUST_CONDITION, TRUST_SET_LABEL};
    use crate::k8s::failure::{ApiFailure, FailureKind};
    use crate::x509::cert::Fingerprint;

    /// Records every write and keeps the Node they make (labels and
    /// annotations merged, conditions merged by type, as the API server
    /// does); fails the next `fail` writes with a 503; with `no_identity`,
    /// answers as a node that has none.
    #[derive(Clone, Default)]
    struct Recording {
        writes: Arc<Mutex<Vec<(Part, Value)>>>,
        node: Arc<Mutex<Value>>,
        fail: Arc<Mutex<u32>>,
        no_identity: Arc<Mutex<bool>>,
        reads: Arc<Mutex<u32>>,
    }

    impl NodeWriter for Recording {
        async fn patch(&self, _node: &str, part: Part, patch: &Value) -> Result<(), WriteError> {
            if *self.no_identity.lock().unwrap() {
                return Err(WriteError::NoIdentity);
            }
            let mut fail = self.fail.lock().unwrap();
            if *fail > 0 {
                *fail -= 1;
                return Err(WriteError::Api {
                    request: format!("PATCH {}", part.path("n1")),
                    failure: ApiFailure {
                        kind: FailureKind::Server,
                        code: Some(503),
                        message: "unavailable".into(),
                        retry_after: Some(Duration::from_millis(50)),
                    },
                });
            }
            self.writes.lock().unwrap().push((part, patch.clone()));
            let mut node = self.node.lock().unwrap();
            for map in ["labels", "annotations"] {
                for (k, v) in patch["metadata"][map].as_object().into_iter().flatten() {
                    let m = &mut node["metadata"][map];
                    if v.is_null() {
                        m.as_object_mut().map(|o| o.remove(k));
                    } else {
                        m[k] = v.clone();
                    }
                }
            }
            for c in patch["status"]["conditions"]
                .as_array()
                .into_iter()
                .flatten()
            {
                if !node["status"]["conditions"].is_array() {
                    node["status"]["conditions"] = Value::Array(vec![]);
                }
                let list = node["status"]["conditions"].as_array_mut().unwrap();
                list.retain(|x| x["type"] != c["type"]);
                if c.get("$patch").is_none() {
                    list.push(c.clone());
                }
            }
            Ok(())
        }

        async fn get(&self, _node: &str) -> Result<k8s_openapi::api::core::v1::Node, WriteError> {
            *self.reads.lock().unwrap() += 1;
            if *self.no_identity.lock().unwrap() {
                return Err(WriteError::NoIdentity);
            }
            let mut node = self.node.lock().unwrap().clone();
            node["metadata"]["name"] = "n1".into();
            Ok(serde_json::from_value(node).unwrap())
        }
    }

    impl Recording {
        fn count(&self) -> usize {
            self.writes.lock().unwrap().len()
        }
    }

    fn outcome(b: u8) -> Outcome {
        Outcome {
            trusted: [Fingerprint::of_der(&[b])].into(),
            ..Outcome::default()
        }
    }

    fn start(
        writer: Recording,
        state: &Path,
    ) -> (Feed, tokio::task::JoinHandle<()>, Arc<Recorder>) {
        start_for(writer, state, false)
    }

    fn start_for(
        writer: Recording,
        state: &Path,
        kubelet_job: bool,
    ) -> (Feed, tokio::task::JoinHandle<()>, Arc<Recorder>) {
        start_spread(writer, state, kubelet_job, Duration::ZERO)
    }

    fn start_spread(
        writer: Recording,
        state: &Path,
        kubelet_job: bool,
        spread: Duration,
    ) -> (Feed, tokio::task::JoinHandle<()>, Arc<Recorder>) {
        let (feed, rx) = Feed::new(true, kubelet_job);
        let metrics = test_metrics();
        let task = tokio::spawn(run_publisher(
            Publisher {
                node: "n1".into(),
                writer,
                state_path: state.to_path_buf(),
                metrics: metrics.clone(),
                spread,
            },
            rx,
        ));
        (feed, task, metrics)
    }

    /// A change waits for the node's share of the spread after it was
    /// first seen; changes in between join it (one write of each part),
    /// and the waiting makes no request.
    #[tokio::test(start_paused = true)]
    async fn a_change_is_published_at_the_nodes_share_of_the_spread_and_changes_in_between_join_it()
    {
        let dir = tempfile::tempdir().unwrap();
        let w = Recording::default();
        let spread = Duration::from_secs(3600);
        let offset = spread_offset("n1", spread);
        assert!(offset > Duration::from_secs(60), "{offset:?}");
        let (feed, task, _) =
            start_spread(w.clone(), &dir.path().join(PUBLISHED_FILE), false, spread);
        feed.trust(&outcome(1), None);
        tokio::time::sleep(offset / 2).await;
        feed.trust(&outcome(2), None);
        tokio::time::sleep(offset / 2 - Duration::from_secs(1)).await;
        assert_eq!(
            w.count(),
            0,
            "written before the node's share of the spread"
        );
        assert_eq!(*w.reads.lock().unwrap(), 1, "the wait made requests");
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(
            w.count(),
            2,
            "one write of each part, with the newest state"
        );
        let writes = w.writes.lock().unwrap().clone();
        let newest = publish::desired(
            Some(&TrustView::of(&outcome(2), None)),
            None,
            &Published::default(),
            env!("CARGO_PKG_VERSION"),
        );
        assert_eq!(
            writes[0].1["metadata"]["labels"][TRUST_SET_LABEL],
            newest.labels[TRUST_SET_LABEL].as_str()
        );
        task.abort();
    }

    #[tokio::test]
    async fn a_node_registered_again_while_running_is_read_and_repaired_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join(PUBLISHED_FILE);
        let w = Recording::default();
        w.node.lock().unwrap()["metadata"]["uid"] = "uid-1".into();
        let (uid_tx, uid_rx) = watch::channel(Some("uid-1".to_string()));
        let (readable_tx, readable) = watch::channel(false);
        let (feed, rx) = Feed::new(true, false);
        let task = tokio::spawn(run_publisher(
            Publisher {
                node: "n1".into(),
                writer: w.clone(),
                state_path: state.clone(),
                metrics: test_metrics(),
                spread: Duration::ZERO,
            },
            rx.with_node_watch(NodeWatchLink {
                uid: uid_rx,
                readable: readable_tx,
            }),
        ));
        assert!(!*readable.borrow(), "the watch waits for the first read");
        feed.trust(&outcome(1), None);
        wait_for("the first publication", || w.count() == 2).await;
        assert!(*readable.borrow(), "the first read starts the watch");
        // The watch's events of the same Node (the agent's own writes,
        // kubelet's status updates): nothing is read or written.
        for _ in 0..5 {
            uid_tx.send_replace(Some("uid-1".into()));
            tokio::task::yield_now().await;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(w.count(), 2);
        // Deleted and registered again: a new uid, none of the agent's keys.
        *w.node.lock().unwrap() = serde_json::json!({"metadata": {"uid": "uid-2"}});
        uid_tx.send_replace(Some("uid-2".into()));
        wait_for("the repair", || w.count() == 4).await;
        let node = w.node.lock().unwrap().clone();
        assert!(
            node["metadata"]["labels"][TRUST_SET_LABEL].is_string(),
            "{node}"
        );
        assert!(
            node["status"]["conditions"]
                .as_array()
                .is_some_and(|c| c.iter().any(|c| c["type"] == TRUST_CONDITION)),
            "{node}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(w.count(), 4, "the repair is one write of each part");
        task.abort();
    }

    #[tokio::test]
    async fn changes_are_published_once_and_repeats_and_restarts_write_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join(PUBLISHED_FILE);
        let w = Recording::default();
        let (feed, task, _) = start(w.clone(), &state);
        feed.trust(&outcome(1), None);
        wait_for("the first publication", || w.count() == 2).await;
        for _ in 0..50 {
            feed.trust(&outcome(1), None);
            tokio::task::yield_now().await;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(w.count(), 2, "republishing the same state wrote");
        feed.trust(&outcome(2), None);
        wait_for("the change", || w.count() == 3).await;
        let writes = w.writes.lock().unwrap().clone();
        // Another CA, still one and still converged: the label and the
        // annotations change, the conditions do not (no status write).
        assert_eq!(writes[2].0, Part::Metadata);
        assert!(writes[2].1["metadata"]["labels"][TRUST_SET_LABEL].is_string());
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(w.count(), 3);
        task.abort();

        // A new process with the same state file publishes nothing.
        let (feed, task, _) = start(w.clone(), &state);
        feed.trust(&outcome(2), None);
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(w.count(), 3, "a restarted agent rewrote the same state");
        task.abort();

        // The Node lost the label while the agent was down: the next start
        // puts it back (the record said it was there).
        w.node.lock().unwrap()["metadata"]["labels"] = serde_json::json!({});
        let (feed, task, _) = start(w.clone(), &state);
        feed.trust(&outcome(2), None);
        wait_for("the repair", || w.count() == 4).await;
        assert!(w.node.lock().unwrap()["metadata"]["labels"][TRUST_SET_LABEL].is_string());
        task.abort();
    }

    #[tokio::test]
    async fn nothing_is_published_before_every_job_reported_once() {
        let dir = tempfile::tempdir().unwrap();
        let w = Recording::default();
        let (feed, task, _) = start_for(w.clone(), &dir.path().join(PUBLISHED_FILE), true);
        feed.trust(&outcome(1), None);
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(w.count(), 0, "half the state was published");
        feed.kubelet(&PassOutcome::default(), now_unix());
        wait_for("the whole state", || w.count() == 2).await;
        task.abort();
    }

    #[tokio::test]
    async fn a_failed_write_is_retried_and_a_missing_identity_waits_for_the_next_pass() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join(PUBLISHED_FILE);
        let w = Recording::default();
        *w.no_identity.lock().unwrap() = true;
        let (feed, task, metrics) = start(w.clone(), &state);
        feed.trust(&outcome(1), None);
        wait_for("pending", || {
            metrics
                .daemon_status(&crate::node::procfs::ProcessIdentity::current(), 0, false)
                .fleet_publish
                .is_some_and(|p| p.state == "pending")
        })
        .await;
        *w.no_identity.lock().unwrap() = false;
        *w.fail.lock().unwrap() = 2;
        feed.kubelet(&PassOutcome::default(), now_unix());
        wait_for("the retried writes", || w.count() == 2).await;
        let status = w.writes.lock().unwrap()[1].1.clone();
        let types: Vec<&str> = status["status"]["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["type"].as_str().unwrap())
            .collect();
        assert!(types.contains(&TRUST_CONDITION), "{types:?}");
        let report = metrics
            .daemon_status(&crate::node::procfs::ProcessIdentity::current(), 0, false)
            .fleet_publish
            .unwrap();
        assert_eq!(report.state, "published");
        assert_eq!(report.writes, 2);
        task.abort();
    }
}
