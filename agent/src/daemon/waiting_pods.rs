//! After a CA pass that made a CA effective for image pulls, one look at
//! the pods of this node: which wait in kubelet's image-pull back-off after
//! an x509 unknown-authority error ([`crate::trust::waiting_pods`] judges
//! them). They are logged, kept for `status` and named in one Event
//! ([`Recorder::record_waiting_pods`]), so the user knows that kubelet's
//! back-off (up to 5 minutes) is what they wait for.
//!
//! The look is one LIST of `pods` with the node's own identity, with
//! `fieldSelector=spec.nodeName=<node>` (the only pod list the Node
//! authorizer allows a node) and `resourceVersion=0` (served from the API
//! server's watch cache: cheap when a whole fleet gets a CA at once). At
//! most one per pass that made an installed CA effective (the pass that
//! installed it, or the later one that did the runtime restart it waited
//! for), never polled, never retried: a failed list is logged (once per
//! distinct error) and changes nothing.
//!
//! Boundary: reads pods; never deletes, restarts or writes one.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};
use tokio::sync::Mutex;
use tracing::{debug, info, warn};

use crate::fleet::writer::NodeClientSource;
use crate::k8s::failure::ApiFailure;
use crate::ops::recorder::Recorder;
use crate::time::{now_unix, rfc3339};
use crate::trust::reconcile::Outcome;
use crate::trust::waiting_pods::{self, WaitingPods};

/// How long the list may take before it is given up (not retried).
const LIST_TIMEOUT: Duration = Duration::from_secs(10);

/// The list failed; nothing was recorded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ListPodsError {
    #[error("no node identity yet (no usable kubelet client certificate)")]
    NoIdentity,
    /// `request` is the method and path with its query.
    #[error("{request}: {failure}")]
    Api {
        request: String,
        failure: ApiFailure,
    },
    #[error("{request}: the API server did not answer within {LIST_TIMEOUT:?}")]
    Timeout { request: String },
}

/// The node, its identity, and the last failure logged; cheap to clone.
#[derive(Clone)]
pub struct WaitingPodsCheck {
    node: String,
    client: NodeClientSource,
    /// Held for a whole check, so two checks never interleave their
    /// results; holds the last failure logged at warning.
    last_error: Arc<Mutex<Option<ListPodsError>>>,
    /// An installed CA waits for the runtime restart that makes it
    /// effective (in memory: after an agent restart, the restart pass does
    /// not look).
    awaiting_restart: Arc<AtomicBool>,
    /// This node's wait before its list: its stable share of
    /// [`LIST_SPREAD`], so 5,000 nodes that take one Secret change in the
    /// same second do not list their pods in the same second.
    delay: std::time::Duration,
}

/// The window over which a fleet's lists after one CA change are spread.
/// Kubelet's image-pull back-off is up to 5 minutes, so half a minute
/// changes little for the user.
pub const LIST_SPREAD: std::time::Duration = std::time::Duration::from_secs(30);

impl WaitingPodsCheck {
    pub fn new(node: String, client: NodeClientSource) -> Self {
        let delay = LIST_SPREAD.mul_f64(crate::retry::stable_fraction(&node));
        Self {
            node,
            client,
            last_error: Arc::new(Mutex::new(None)),
            awaiting_restart: Arc::new(AtomicBool::new(false)),
            delay,
        }
    }

    /// The same check with no wait before its list (tests).
    pub fn without_spread(mut self) -> Self {
        self.delay = std::time::Duration::ZERO;
        self
    }

    /// After a CA pass that succeeded: when it made an installed CA
    /// effective for pulls (this pass installed it, or an earlier one whose
    /// restart this pass did), one check in the background (the CA loop
    /// does not wait for the API server). Called by the CA loop, one pass
    /// at a time.
    pub fn after_pass(&self, outcome: &Outcome, metrics: &Arc<Recorder>) {
        let verdict =
            waiting_pods::judge_pass(outcome, self.awaiting_restart.load(Ordering::Relaxed));
        self.awaiting_restart
            .store(verdict.awaiting_restart, Ordering::Relaxed);
        if !verdict.look {
            return;
        }
        let check = self.clone();
        let metrics = metrics.clone();
        tokio::spawn(async move {
            tokio::time::sleep(check.delay).await;
            let _ = check.run(&metrics).await;
        });
    }

    /// One list of the node's pods, judged and recorded (log line, status,
    /// one Event when pods wait). A failure is logged, and returned.
    pub async fn run(&self, metrics: &Recorder) -> Result<WaitingPods, ListPodsError> {
        let mut last_error = self.last_error.lock().await;
        match self.list().await {
            Ok(pods) => {
                let found = waiting_pods::judge(&pods, now_unix());
                if found.is_empty() {
                    debug!(
                        node = %self.node,
                        pods = pods.len(),
                        "no pod on this node waits in image-pull back-off after an x509 error"
                    );
                } else {
                    let names = found.pod_names();
                    info!(
                        node = %self.node,
                        waiting_pods = names.len(),
                        pods = %names.join(","),
                        retried_by = %rfc3339(found.retried_by()),
                        "{} on this node wait in image-pull back-off after x509: {}: kubelet retries their pulls within its back-off (up to 5 minutes); to retry now, delete the pod (its controller recreates it) or recreate it",
                        names.len(),
                        waiting_pods::UNKNOWN_AUTHORITY,
                    );
                }
                *last_error = None;
                metrics.record_waiting_pods(found.clone());
                Ok(found)
            }
            Err(e) => {
                let message = format!(
                    "cannot list the pods of node {}: {e}; the pods that wait for an image pull after an x509 error are not reported for this CA change, nothing else changes",
                    self.node
                );
                if last_error.as_ref() == Some(&e) {
                    debug!(node = %self.node, "{message}");
                } else if e == ListPodsError::NoIdentity {
                    info!(node = %self.node, "{message}");
                } else {
                    warn!(node = %self.node, "{message}");
                }
                *last_error = Some(e.clone());
                Err(e)
            }
        }
    }

    async fn list(&self) -> Result<Vec<Pod>, ListPodsError> {
        let client = (self.client)().ok_or(ListPodsError::NoIdentity)?;
        let selector = format!("spec.nodeName={}", self.node);
        let request = format!("LIST pods?fieldSelector={selector}&resourceVersion=0");
        let api: Api<Pod> = Api::all(client);
        // resourceVersion=0 (NotOlderThan): any recent state will do, and
        // the watch cache serves it without a read from etcd.
        let params = ListParams::default().fields(&selector).match_any();
        match tokio::time::timeout(LIST_TIMEOUT, api.list(&params)).await {
            Ok(Ok(list)) => Ok(list.items),
            Ok(Err(e)) => Err(ListPodsError::Api {
                request,
                failure: ApiFailure::of(&e),
            }),
            Err(_) => Err(ListPodsError::Timeout { request }),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]
mod tests {
    use std::sync::Mutex as StdMutex;

    use super::*;
    use crate::daemon::test_support::test_metrics;
    use crate::node::procfs::ProcessIdentity;

    /// Everything logged while the guard lives (this thread only: the
    /// tests run on a current-thread runtime).
    #[derive(Clone, Default)]
    struct Logged(Arc<StdMutex<Vec<u8>>>);

    impl std::io::Write for Logged {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Logged {
        fn capture(&self) -> tracing::subscriber::DefaultGuard {
            let sink = self.clone();
            let subscriber = tracing_subscriber::fmt()
                .with_max_level(tracing::Level::DEBUG)
                .with_ansi(false)
                .with_writer(move || sink.clone())
                .finish();
            tracing::subscriber::set_default(subscriber)
        }

        fn lines(&self, level: &str) -> Vec<String> {
            String::from_utf8(self.0.lock().unwrap().clone())
                .unwrap()
                .lines()
                .filter(|l| l.contains(level))
                .map(str::to_string)
                .collect()
        }
    }

    /// A client of an API server that is not there (connection refused).
    fn unreachable_client() -> kube::Client {
        let config = kube::Config::new("https://127.0.0.1:1".parse().unwrap());
        kube::Client::try_from(config).unwrap()
    }

    #[tokio::test]
    async fn an_unreachable_api_server_is_logged_once_and_changes_nothing() {
        let logged = Logged::default();
        let _guard = logged.capture();
        let metrics = test_metrics();
        let check = WaitingPodsCheck::new("n1".into(), Arc::new(|| Some(unreachable_client())))
            .without_spread();
        for _ in 0..2 {
            let err = check.run(&metrics).await.unwrap_err();
            assert!(
                matches!(&err, ListPodsError::Api { failure, .. } if failure.code.is_none()),
                "{err:?}"
            );
            assert!(
                err.to_string()
                    .starts_with("LIST pods?fieldSelector=spec.nodeName=n1&resourceVersion=0: "),
                "{err}"
            );
        }
        let warnings = logged.lines("WARN");
        assert_eq!(warnings.len(), 1, "once per distinct error: {warnings:?}");
        assert!(
            warnings[0].contains("cannot list the pods of node n1")
                && warnings[0].contains("nothing else changes"),
            "{warnings:?}"
        );
        let repeats: Vec<String> = logged
            .lines("DEBUG")
            .into_iter()
            .filter(|l| l.contains("cannot list the pods of node n1"))
            .collect();
        assert_eq!(repeats.len(), 1, "the repeat, at debug: {repeats:?}");
        let st = metrics.daemon_status(&ProcessIdentity::default(), 0, false);
        assert_eq!(st.waiting_pods, None, "nothing recorded");
    }

    #[tokio::test]
    async fn without_a_node_identity_nothing_is_asked_and_it_is_said_at_info() {
        let logged = Logged::default();
        let _guard = logged.capture();
        let metrics = test_metrics();
        let check = WaitingPodsCheck::new("n1".into(), Arc::new(|| None)).without_spread();
        assert_eq!(
            check.run(&metrics).await.unwrap_err(),
            ListPodsError::NoIdentity
        );
        assert!(logged.lines("WARN").is_empty());
        let info = logged.lines("INFO");
        assert_eq!(info.len(), 1, "{info:?}");
        assert!(info[0].contains("no node identity yet"), "{info:?}");
        let st = metrics.daemon_status(&ProcessIdentity::default(), 0, false);
        assert_eq!(st.waiting_pods, None);
    }

    #[test]
    fn each_node_lists_at_its_own_point_of_the_spread() {
        let delays: std::collections::BTreeSet<_> = (0..50)
            .map(|i| WaitingPodsCheck::new(format!("node-{i}"), Arc::new(|| None)).delay)
            .collect();
        assert!(delays.iter().all(|d| *d < LIST_SPREAD));
        assert!(
            delays.len() > 40,
            "spread, not one second for all: {delays:?}"
        );
        let again = WaitingPodsCheck::new("node-1".into(), Arc::new(|| None)).delay;
        assert_eq!(
            again,
            WaitingPodsCheck::new("node-1".into(), Arc::new(|| None)).delay
        );
    }
}
