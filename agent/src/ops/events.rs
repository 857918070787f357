//! Kubernetes Events on this node's Node object, so `kubectl describe node`
//! shows what the agent did: CA set changed, unit restarted, kubelet
//! certificate renewed, renewal failed, revocation matched.
//!
//! Events are posted as core/v1 Events in `default` (where kubelet posts its
//! node events), with the node's own identity: the Node authorizer lets a
//! node create core/v1 Events, not `events.k8s.io` ones. Posting happens on a
//! background task fed by a bounded queue: when the API is slow or down,
//! events are dropped, never waited for (a failed post is logged at warning,
//! once per reason and error). Events raised before the node has an identity
//! (during a bootstrap, or with an expired certificate) wait, in a bounded
//! queue, and are posted once it has one. Messages are cut to the API's
//! limit.
//!
//! Messages go through [`crate::text::escape`]: `kubectl describe node`
//! prints them to a terminal, and a subject or key in them is input others
//! control.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Event, EventSource, Node, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, Time};
use kube::api::{Api, PostParams};
use tokio::sync::mpsc;
use tracing::{debug, warn};

use crate::text::escape;

/// Events waiting to be posted; beyond this they are dropped.
const QUEUE: usize = 64;
/// Events raised without an identity, kept for when one exists; the oldest
/// go first when more arrive.
const HELD: usize = 32;
/// The API's limit on an Event's message (bytes) when `eventTime` is set.
pub const MAX_MESSAGE_BYTES: usize = 1024;
/// How long one post may take before it is given up.
const POST_TIMEOUT: Duration = Duration::from_secs(5);
const COMPONENT: &str = "node-cert-agent";
const NAMESPACE: &str = "default";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Severity {
    Normal,
    Warning,
}

/// One event about this node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeEvent {
    pub severity: Severity,
    /// CamelCase, as Kubernetes reasons are: `CATrustChanged`, ...
    pub reason: &'static str,
    pub message: String,
}

impl NodeEvent {
    pub fn normal(reason: &'static str, message: impl Into<String>) -> Self {
        Self::new(Severity::Normal, reason, message.into())
    }

    pub fn warning(reason: &'static str, message: impl Into<String>) -> Self {
        Self::new(Severity::Warning, reason, message.into())
    }

    fn new(severity: Severity, reason: &'static str, message: String) -> Self {
        let message = match escape(&message) {
            std::borrow::Cow::Owned(escaped) => escaped,
            std::borrow::Cow::Borrowed(_) => message,
        };
        Self {
            severity,
            reason,
            message,
        }
    }
}

/// Where the loops put events; cheap to clone, never blocks.
#[derive(Clone, Debug, Default)]
pub struct EventSink {
    tx: Option<mpsc::Sender<NodeEvent>>,
}

impl EventSink {
    /// A sink that drops everything (no API identity, or events turned off).
    pub fn disabled() -> Self {
        Self { tx: None }
    }

    pub fn emit(&self, event: NodeEvent) {
        if let Some(tx) = &self.tx {
            if tx.try_send(event).is_err() {
                debug!("event queue full or closed: an event was dropped");
            }
        }
    }
}

/// Builds the API client at the moment of posting (the node's identity
/// changes when its certificate is renewed); `None` = no identity yet.
pub type ClientSource = Arc<dyn Fn() -> Option<kube::Client> + Send + Sync>;

/// Starts the posting task; returns the sink the loops use.
pub fn start(node_name: String, client: ClientSource) -> EventSink {
    let (tx, mut rx) = mpsc::channel::<NodeEvent>(QUEUE);
    tokio::spawn(async move {
        let mut node_uid: Option<String> = None;
        let mut held: VecDeque<NodeEvent> = VecDeque::new();
        // reason → the last failure logged for it.
        let mut logged: HashMap<&'static str, String> = HashMap::new();
        while let Some(event) = rx.recv().await {
            let Some(client) = client() else {
                if held.len() == HELD {
                    if let Some(old) = held.pop_front() {
                        debug!(reason = old.reason, "more events than are kept without a node identity: the oldest was dropped");
                    }
                }
                debug!(
                    reason = event.reason,
                    "no node identity yet: event kept until there is one"
                );
                held.push_back(event);
                continue;
            };
            held.push_back(event);
            while let Some(event) = held.pop_front() {
                let post = post(&client, &node_name, &mut node_uid, &event);
                let failure = match tokio::time::timeout(POST_TIMEOUT, post).await {
                    Ok(Ok(())) => {
                        debug!(reason = event.reason, "posted node event");
                        logged.remove(event.reason);
                        continue;
                    }
                    Ok(Err(e)) => crate::errors::error_chain(&e),
                    Err(_) => format!("the API server did not answer within {POST_TIMEOUT:?}"),
                };
                if logged.get(event.reason) != Some(&failure) {
                    warn!(
                        reason = event.reason,
                        "a {} Event on Node {node_name} was not posted: {failure}", event.reason
                    );
                    logged.insert(event.reason, failure);
                }
            }
        }
    });
    EventSink { tx: Some(tx) }
}

/// `message` cut to the API's limit ([`MAX_MESSAGE_BYTES`]), on a character
/// boundary, ending in `...` when cut.
pub fn truncate_message(message: &str) -> String {
    if message.len() <= MAX_MESSAGE_BYTES {
        return message.to_string();
    }
    let mut end = MAX_MESSAGE_BYTES - 3;
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &message[..end])
}

async fn post(
    client: &kube::Client,
    node: &str,
    node_uid: &mut Option<String>,
    event: &NodeEvent,
) -> Result<(), kube::Error> {
    if node_uid.is_none() {
        let nodes: Api<Node> = Api::all(client.clone());
        *node_uid = nodes.get(node).await.ok().and_then(|n| n.metadata.uid);
    }
    let api: Api<Event> = Api::namespaced(client.clone(), NAMESPACE);
    api.create(
        &PostParams::default(),
        &event_object(node, node_uid.as_deref(), event, jiff_now()),
    )
    .await
    .map(|_| ())
}

fn jiff_now() -> k8s_openapi::jiff::Timestamp {
    k8s_openapi::jiff::Timestamp::now()
}

/// The core/v1 Event as kubelet shapes node events.
pub fn event_object(
    node: &str,
    node_uid: Option<&str>,
    event: &NodeEvent,
    now: k8s_openapi::jiff::Timestamp,
) -> Event {
    Event {
        metadata: ObjectMeta {
            generate_name: Some(format!("{node}.")),
            namespace: Some(NAMESPACE.to_string()),
            ..ObjectMeta::default()
        },
        involved_object: ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Node".into()),
            name: Some(node.to_string()),
            uid: node_uid.map(str::to_string),
            ..ObjectReference::default()
        },
        reason: Some(event.reason.to_string()),
        message: Some(truncate_message(&event.message)),
        type_: Some(match event.severity {
            Severity::Normal => "Normal".into(),
            Severity::Warning => "Warning".into(),
        }),
        source: Some(EventSource {
            component: Some(COMPONENT.into()),
            host: Some(node.to_string()),
        }),
        reporting_component: Some(COMPONENT.into()),
        reporting_instance: Some(node.to_string()),
        first_timestamp: Some(Time(now)),
        last_timestamp: Some(Time(now)),
        event_time: Some(MicroTime(now)),
        action: Some(event.reason.to_string()),
        count: Some(1),
        ..Event::default()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]
mod tests {
    use super::*;

    #[test]
    fn node_event_names_the_node_and_the_agent() {
        let e = event_object(
            "n1",
            Some("uid-1"),
            &NodeEvent::warning("KubeletCertificateRenewalFailed", "boom"),
            jiff_now(),
        );
        assert_eq!(e.involved_object.kind.as_deref(), Some("Node"));
        assert_eq!(e.involved_object.name.as_deref(), Some("n1"));
        assert_eq!(e.involved_object.uid.as_deref(), Some("uid-1"));
        assert_eq!(e.type_.as_deref(), Some("Warning"));
        assert_eq!(e.source.unwrap().component.as_deref(), Some(COMPONENT));
        assert_eq!(e.metadata.namespace.as_deref(), Some("default"));
    }

    #[test]
    fn a_message_with_control_characters_is_escaped_visibly() {
        let e = NodeEvent::normal(
            "CATrustChanged",
            "installed \"CN=a\nKubelet started\r\x1b[2K\u{202e}\"",
        );
        assert_eq!(
            e.message,
            "installed \"CN=a\\nKubelet started\\r\\x1b[2K\\u{202e}\""
        );
    }

    #[test]
    fn long_messages_are_cut_to_the_apis_limit_on_a_character_boundary() {
        assert_eq!(truncate_message("short"), "short");
        let long = "é".repeat(1000);
        let cut = truncate_message(&long);
        assert!(cut.len() <= MAX_MESSAGE_BYTES, "{}", cut.len());
        assert!(cut.ends_with("..."));
        let e = event_object(
            "n1",
            None,
            &NodeEvent::warning("KubeletCertificateRenewalFailed", "x".repeat(5000)),
            jiff_now(),
        );
        assert_eq!(e.message.unwrap().len(), MAX_MESSAGE_BYTES);
    }

    #[tokio::test]
    async fn a_full_queue_drops_instead_of_blocking() {
        let (tx, _rx) = mpsc::channel(1);
        let sink = EventSink { tx: Some(tx) };
        for i in 0..10 {
            sink.emit(NodeEvent::normal("CATrustChanged", format!("{i}")));
        }
        EventSink::disabled().emit(NodeEvent::normal("CATrustChanged", "x"));
    }
}
