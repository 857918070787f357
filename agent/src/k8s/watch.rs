//! The one list+watch loop of the agent, over kube-runtime's watcher: every
//! watch (the CA Secret, the RenewRevocations, the Node, a CSR's wait, the
//! `fleet` command's Nodes) reads a stream of [`Change`]s from [`changes`].
//!
//! What it does for every caller, so none does it again:
//! - a (re)list arrives whole, as one [`Change::Listed`] after the
//!   watcher's `Init`/`InitApply`/`InitDone`, never as a half list;
//! - a 410 (the watch's resourceVersion is too old) is not a failure: the
//!   watcher relists at once and the same content changes nothing;
//! - any other failure is classified ([`ApiFailure`]) and paced by the one
//!   retry schedule ([`WatchRetry`]: soon for a restarting server, minutes
//!   for a 401 or 403), and says whether it repeats the last one, so a
//!   watch that fails for hours is logged once, not every minute;
//! - a list after failures says so (`recovered`).
//!
//! Boundary: no message to the operator and no state of the caller's; the
//! callers say what a change or a failure means.

use std::time::Duration;

use futures_util::{Stream, StreamExt};
use kube::runtime::watcher;
use tracing::debug;

use crate::k8s::failure::{ApiFailure, FailureKind, WatchRetry};

/// What a watched collection did.
#[derive(Debug)]
pub enum Change<K> {
    /// A complete list: the first one, or a relist (after a 410 or a
    /// dropped watch). `recovered`: it ends a run of failures.
    Listed { objects: Vec<K>, recovered: bool },
    /// An object was added or modified.
    Applied(K),
    /// An object was deleted.
    Deleted(K),
    /// The list or the watch failed; the stream waits `retry_in` before it
    /// tries again. `repeated`: the same failure as the one before, with no
    /// list in between (say it at debug level only).
    Failed {
        failure: ApiFailure,
        retry_in: Duration,
        repeated: bool,
    },
}

/// The changes of the watcher stream `events` (from
/// `kube::runtime::watcher`), paced by the agent's retry schedule. Ends
/// when `events` ends.
pub fn changes<K, S>(events: S) -> impl Stream<Item = Change<K>> + Send
where
    K: Send + 'static,
    S: Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + Unpin + 'static,
{
    changes_with(events, WatchRetry::default())
}

/// [`changes`] with `retry` as the schedule.
pub fn changes_with<K, S>(events: S, retry: WatchRetry) -> impl Stream<Item = Change<K>> + Send
where
    K: Send + 'static,
    S: Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + Unpin + 'static,
{
    let state = State {
        events,
        retry,
        listing: None,
        wait: None,
        last_failure: None,
    };
    futures_util::stream::unfold(state, |mut st| async move {
        let change = st.next().await?;
        Some((change, st))
    })
}

struct State<K, S> {
    events: S,
    retry: WatchRetry,
    /// The list being received (between `Init` and `InitDone`).
    listing: Option<Vec<K>>,
    /// The wait owed before the next try, after a failure.
    wait: Option<Duration>,
    /// The last failure since the last list.
    last_failure: Option<ApiFailure>,
}

impl<K, S> State<K, S>
where
    S: Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Unpin,
{
    async fn next(&mut self) -> Option<Change<K>> {
        loop {
            if let Some(wait) = self.wait.take() {
                tokio::time::sleep(wait).await;
            }
            match self.events.next().await? {
                Ok(watcher::Event::Init) => self.listing = Some(Vec::new()),
                Ok(watcher::Event::InitApply(object)) => {
                    self.listing.get_or_insert_with(Vec::new).push(object);
                }
                Ok(watcher::Event::InitDone) => {
                    self.retry.reset();
                    return Some(Change::Listed {
                        objects: self.listing.take().unwrap_or_default(),
                        recovered: self.last_failure.take().is_some(),
                    });
                }
                Ok(watcher::Event::Apply(object)) => return Some(Change::Applied(object)),
                Ok(watcher::Event::Delete(object)) => return Some(Change::Deleted(object)),
                Err(e) => {
                    let failure = ApiFailure::of_watch(&e);
                    if failure.kind == FailureKind::Gone {
                        debug!("watch expired (410: {failure}); the watcher relists");
                        continue;
                    }
                    let retry_in = self.retry.next_delay(&failure);
                    let repeated = self.last_failure.as_ref() == Some(&failure);
                    self.last_failure = Some(failure.clone());
                    self.wait = Some(retry_in);
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

    async fn collect(events: Vec<Result<watcher::Event<u32>, watcher::Error>>) -> Vec<Change<u32>> {
        changes(futures_util::stream::iter(events)).collect().await
    }

    #[tokio::test(start_paused = true)]
    async fn a_list_arrives_whole_and_a_410_is_no_failure() {
        use watcher::Event::*;
        let got = collect(vec![
            Ok(Init),
            Ok(InitApply(1)),
            Ok(InitApply(2)),
            Ok(InitDone),
            Ok(Apply(3)),
            Err(api(410, "too old resource version")),
            Ok(Init),
            Ok(InitApply(3)),
            Ok(InitDone),
            Ok(Delete(3)),
        ])
        .await;
        let shape: Vec<String> = got
            .iter()
            .map(|c| match c {
                Change::Listed { objects, recovered } => format!("listed {objects:?} {recovered}"),
                Change::Applied(o) => format!("applied {o}"),
                Change::Deleted(o) => format!("deleted {o}"),
                Change::Failed { failure, .. } => format!("failed {failure}"),
            })
            .collect();
        assert_eq!(
            shape,
            [
                "listed [1, 2] false",
                "applied 3",
                "listed [3] false",
                "deleted 3"
            ]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn failures_are_paced_said_once_and_a_list_ends_them() {
        use watcher::Event::*;
        let started = tokio::time::Instant::now();
        let got = collect(vec![
            Err(api(503, "unavailable")),
            Err(api(503, "unavailable")),
            Err(api(403, "forbidden")),
            Ok(Init),
            Ok(InitDone),
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
