//! The watch of the node's own Node, for the fleet publisher: it reports
//! the Node's uid, so a Node registered again while the agent runs (a new
//! object under the same name, without the agent's label, annotations and
//! conditions: kubelet registers its Node once per kubelet process, so
//! after a `kubectl delete node` the Node comes back when kubelet
//! restarts) is repaired at once instead of at the next change.
//!
//! One list+watch by name (`fieldSelector=metadata.name=<node>`, the only
//! read of Nodes the Node authorizer allows a node), as the node's identity
//! at the moment it starts; after a 401 or 403 (say, the certificate it
//! started with has expired since a renewal) it starts again with the
//! identity of that moment. The server's watch timeouts are re-established
//! by kube-runtime's watcher. Only `metadata.uid` is taken from the events.
//!
//! Boundary: reads the Node; never writes it (the publisher does).

use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::Node;
use kube::runtime::watcher;
use kube::Api;
use tokio::sync::watch;
use tracing::{info, warn};

use crate::fleet::writer::NodeClientSource;
use crate::k8s::failure::{ApiFailure, WatchRetry};
use crate::k8s::watch::{self as k8s_watch, Change};

/// How soon a node whose identity cannot be loaded any more looks again.
const NO_IDENTITY_WAIT: Duration = Duration::from_secs(30);

/// Keeps `uid` at the uid of Node `node` (`None` until first seen) as the
/// node's identity from `client`, from the moment `readable` is true (the
/// publisher has read the Node once: the node has an identity). Runs until
/// dropped.
pub async fn run(
    node: String,
    client: NodeClientSource,
    uid: watch::Sender<Option<String>>,
    mut readable: watch::Receiver<bool>,
) {
    if readable.wait_for(|r| *r).await.is_err() {
        // The publisher is gone; so is the daemon.
        return std::future::pending().await;
    }
    // Kept across the watches built with each identity: a node forbidden
    // for hours backs off to minutes and says so once, not every time.
    let mut auth_retry = WatchRetry::default();
    let mut last_warned: Option<ApiFailure> = None;
    loop {
        let Some(c) = client() else {
            tokio::time::sleep(NO_IDENTITY_WAIT).await;
            continue;
        };
        let api: Api<Node> = Api::all(c);
        let config = watcher::Config::default().fields(&format!("metadata.name={node}"));
        let mut changes =
            k8s_watch::changes(move || watcher(api.clone(), config.clone()).boxed()).boxed();
        while let Some(change) = changes.next().await {
            let seen = match change {
                Change::Listed { objects, .. } => {
                    auth_retry.reset();
                    if last_warned.take().is_some() {
                        info!(node = %node, "Node {node} can be watched again");
                    }
                    objects.into_iter().next()
                }
                Change::Applied(n) => Some(n),
                Change::Deleted(_) => None,
                Change::Failed {
                    failure, retry_in, ..
                } => {
                    // Another identity may be allowed after a 401 or 403:
                    // the watch starts again with the node's identity of
                    // now, after the auth schedule's wait.
                    let wait = if failure.is_auth() {
                        auth_retry.next_delay(&failure)
                    } else {
                        retry_in
                    };
                    if last_warned.as_ref() != Some(&failure) {
                        warn!(
                            node = %node,
                            retry_in_s = wait.as_secs(),
                            "cannot watch Node {node} as system:node:{node}: {failure}; a Node registered again is repaired only at the next change"
                        );
                        last_warned = Some(failure.clone());
                    }
                    if failure.is_auth() {
                        tokio::time::sleep(wait).await;
                        break;
                    }
                    None
                }
            };
            if let Some(u) = seen.and_then(|n| n.metadata.uid) {
                uid.send_if_modified(|current| {
                    let new = current.as_deref() != Some(u.as_str());
                    if new {
                        *current = Some(u);
                    }
                    new
                });
            }
        }
    }
}
