//! The one list+watch loop of the agent, over kube-runtime's watcher: every
//! watch (the CA Secret, the RenewRevocations, the Node, a CSR's wait, the
//! `fleet` command's Nodes) reads a stream of [`Change`]s from [`changes`].
//!
//! What it does for every caller, so none does it again:
//! - a (re)list arrives whole, as one [`Change::Listed`] after the
//!   watcher's `Init`/`InitApply`/`InitDone`, never as a half list;
//! - a 410 inside an established watch (the watch cache's "too old
//!   resourceVersion") is not a failure: the watcher relists at once, and
//!   the same content changes nothing;
//! - any other failure is classified ([`ApiFailure`]), paced by the one
//!   retry schedule ([`WatchRetry`]: soon for a restarting server, minutes
//!   for a 401 or 403, a server's Retry-After up to the cap), and says
//!   whether it repeats the last one, so a watch that fails for hours is
//!   logged once, not every minute;
//! - after such a failure the watcher is built afresh, so the next success
//!   is always a whole list with `recovered` set: a caller's "failing"
//!   state, the backoff and the repeat check all end there. (kube-runtime
//!   alone resumes a dropped watch from its resourceVersion without a
//!   word, which would leave a caller failing until the next change.) The
//!   lists are by name or of one namespace, so a relist is one small read.
//!
//! Boundary: no message to the operator and no state of the caller's; the
//! callers say what a change or a failure means.

use std::time::Duration;

use futures_util::{Stream, StreamExt};
use kube::runtime::watcher;
use tracing::debug;

use crate::k8s::failure::{ApiFailure, WatchRetry};

/// What a watched collection did.
#[derive(Debug)]
pub enum Change<K> {
    /// A complete list: the first one, or a relist (after a 410 or a
    /// failure). `recovered`: it ends a run of failures.
    Listed { objects: Vec<K>, recovered: bool },
    /// An object was added or modified.
    Applied(K),
    /// An object was deleted.
    Deleted(K),
    /// The list or the watch failed; the stream waits `retry_in` before it
    /// lists again. `repeated`: the same failure as the one before, with no
    /// list in between (say it at debug level only).
    Failed {
        failure: ApiFailure,
        retry_in: Duration,
        repeated: bool,
    },
}

/// The changes of the watcher streams `watch` builds (each a
/// `kube::runtime::watcher`), paced by the agent's retry schedule. Never
/// ends unless a stream `watch` built ends.
pub fn changes<K, S, F>(watch: F) -> impl Stream<Item = Change<K>> + Send
where
    K: Send + 'static,
    S: Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + Unpin + 'static,
    F: FnMut() -> S + Send + 'static,
{
    let state = State {
        events: None,
        watch,
        retry: WatchRetry::default(),
        listing: None,
        wait: None,
        last_failure: None,
    };
    futures_util::stream::unfold(state, |mut st| async move {
        let change = st.next().await?;
        Some((change, st))
    })
}

struct State<K, S, F> {
    /// The watcher of now; `None` after a failure, until it is built again.
    events: Option<S>,
    watch: F,
    retry: WatchRetry,
    /// The list being received (between `Init` and `InitDone`).
    listing: Option<Vec<K>>,
    /// The wait owed before the next try, after a failure.
    wait: Option<Duration>,
    /// The last failure since the last list.
    last_failure: Option<ApiFailure>,
}

impl<K, S, F> State<K, S, F>
where
    S: Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Unpin,
    F: FnMut() -> S,
{
    async fn next(&mut self) -> Option<Change<K>> {
        loop {
            if let Some(wait) = self.wait.take() {
                tokio::time::sleep(wait).await;
            }
            let events = self.events.get_or_insert_with(&mut self.watch);
            match events.next().await? {
                Ok(watcher::Event::Init) => self.listing = Some(Vec::new()),
                Ok(watcher::Event::InitApply(object)) => {
                    if let Some(listing) = self.listing.as_mut() {
                        listing.push(object);
                    }
                }
                Ok(watcher::Event::InitDone) => {
                    // Only a list that began is one: an `InitDone` alone
                    // must never read as "everything is gone".
                    let Some(objects) = self.listing.take() else {
                        continue;
                    };
                    self.retry.reset();
                    return Some(Change::Listed {
                        objects,
                        recovered: self.last_failure.take().is_some(),
                    });
                }
                Ok(watcher::Event::Apply(object)) => return Some(Change::Applied(object)),
                Ok(watcher::Event::Delete(object)) => return Some(Change::Deleted(object)),
                Err(watcher::Error::WatchError(status)) if status.code == 410 => {
                    // The watch cache no longer has the watch's revision:
                    // the watcher lists again at its next poll.
                    debug!(
                        "watch expired (410: {}); the watcher relists",
                        status.message
                    );
                }
                Err(e) => {
                    let failure = ApiFailure::of_watch(&e);
                    let retry_in = self.retry.next_delay(&failure);
                    let repeated = self.last_failure.as_ref() == Some(&failure);
                    self.last_failure = Some(failure.clone());
                    self.wait = Some(retry_in);
                    self.events = None;
                    self.listing = None;
                    return Some(Change::Failed {
                        failure,
                        retry_in,
                        repeated,
                    });
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

    use kube::core::Status;

    use super::*;

    fn api(code: u16, message: &str) -> watcher::Error {
        watcher::Error::WatchFailed(kube::Error::Api(Box::new(Status {
            code,
            message: message.into(),
            ..Status::default()
        })))
    }

    fn status(code: u16) -> watcher::Error {
        watcher::Error::WatchError(Box::new(Status {
            code,
            message: "too old resource version".into(),
            ..Status::default()
        }))
    }

    /// The changes of one watcher per batch: a failure ends its batch (the
    /// stream builds the next watcher), the last batch ends the stream.
    async fn collect(
        batches: Vec<Vec<Result<watcher::Event<u32>, watcher::Error>>>,
    ) -> Vec<Change<u32>> {
        let mut batches = batches.into_iter();
        changes(move || futures_util::stream::iter(batches.next().unwrap_or_default()))
            .collect()
            .await
    }

    fn shape(got: &[Change<u32>]) -> Vec<String> {
        got.iter()
            .map(|c| match c {
                Change::Listed { objects, recovered } => format!("listed {objects:?} {recovered}"),
                Change::Applied(o) => format!("applied {o}"),
                Change::Deleted(o) => format!("deleted {o}"),
                Change::Failed { failure, .. } => format!("failed {}", failure.code.unwrap_or(0)),
            })
            .collect()
    }

    #[tokio::test(start_paused = true)]
    async fn a_list_arrives_whole_and_a_410_in_the_watch_is_no_failure() {
        use watcher::Event::*;
        let got = collect(vec![vec![
            // An InitDone without its Init is no list: nothing is "gone".
            Ok(InitDone),
            Ok(Init),
            Ok(InitApply(1)),
            Ok(InitApply(2)),
            Ok(InitDone),
            Ok(Apply(3)),
            Err(status(410)),
            Ok(Init),
            Ok(InitApply(3)),
            Ok(InitDone),
            Ok(Delete(3)),
        ]])
        .await;
        assert_eq!(
            shape(&got),
            [
                "listed [1, 2] false",
                "applied 3",
                "listed [3] false",
                "deleted 3"
            ]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn after_a_failure_the_watcher_is_built_again_and_lists_whole() {
        use watcher::Event::*;
        let got = collect(vec![
            // A list cut short: its half is dropped.
            vec![Ok(Init), Ok(InitApply(9)), Err(api(503, "unavailable"))],
            // A watch that cannot start with its old revision (HTTP 410):
            // a failure, paced, never a hot loop.
            vec![Err(watcher::Error::WatchStartFailed(kube::Error::Api(
                Box::new(Status {
                    code: 410,
                    message: "gone".into(),
                    ..Status::default()
                }),
            )))],
            vec![Ok(Init), Ok(InitApply(1)), Ok(InitDone)],
        ])
        .await;
        assert_eq!(shape(&got), ["failed 503", "failed 410", "listed [1] true"]);
    }

    #[tokio::test(start_paused = true)]
    async fn failures_are_paced_said_once_and_a_list_ends_them() {
        use watcher::Event::*;
        let started = tokio::time::Instant::now();
        let got = collect(vec![
            vec![Err(api(503, "unavailable"))],
            vec![Err(api(503, "unavailable"))],
            vec![Err(api(403, "forbidden"))],
            vec![Ok(Init), Ok(InitDone)],
        ])
        .await;
        let failed: Vec<(u16, Duration, bool)> = got
            .iter()
            .filter_map(|c| match c {
                Change::Failed {
                    failure,
                    retry_in,
                    repeated,
                } => Some((failure.code.unwrap(), *retry_in, *repeated)),
                _ => None,
            })
            .collect();
        assert_eq!(failed.len(), 3);
        assert!(!failed[0].2 && failed[1].2 && !failed[2].2, "{failed:?}");
        // 1 s, then about 2 s (±20 %), then a 403 waits about a minute.
        assert!(
            failed[0].1 >= Duration::from_millis(800) && failed[0].1 <= Duration::from_millis(1200)
        );
        assert!(failed[1].1 > failed[0].1);
        assert!(failed[2].1 >= Duration::from_secs(48), "{:?}", failed[2].1);
        assert!(matches!(
            got.last(),
            Some(Change::Listed {
                recovered: true,
                ..
            })
        ));
        // The stream waited every retry_in before trying again.
        let owed: Duration = failed.iter().map(|f| f.1).sum();
        assert!(
            started.elapsed() >= owed,
            "{:?} < {owed:?}",
            started.elapsed()
        );
    }
}
