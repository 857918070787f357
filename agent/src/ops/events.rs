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
//! Repeats are correlated before they are written, as client-go's
//! `EventCorrelator` (`tools/record/events_cache.go`) does for kubelet's
//! Events: [`EventCorrelator`] is pure (the caller passes the time in), and
//! decides whether an Event is created, PATCHes the count of the Event it
//! repeats, or is dropped by the per-object rate limit.
//!
//! Messages go through [`crate::text::escape`]: `kubectl describe node`
//! prints them to a terminal, and a subject or key in them is input others
//! control.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Event, EventSource, Node, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, Time};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, Patch, PatchParams, PostParams};
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

// The correlator's limits: client-go's defaults
// (`tools/record/events_cache.go`), which kubelet's node Events go through.
/// Entries kept in each of the correlator's caches; the least recently used
/// goes first (client-go: `maxLruCacheEntries`).
const CORRELATOR_ENTRIES: usize = 4096;
/// Events alike but for their message: at this many different messages
/// within [`AGGREGATE_INTERVAL`], they are combined into one Event
/// (client-go: `defaultAggregateMaxEvents`).
const AGGREGATE_MAX_MESSAGES: usize = 10;
/// How long after the last of them similar Events still count as one group
/// (client-go: `defaultAggregateIntervalInSeconds`).
const AGGREGATE_INTERVAL: Duration = Duration::from_secs(600);
/// Writes (creates and PATCHes) one source may make about one object at
/// once... (client-go: `defaultSpamBurst`).
const OBJECT_BURST: f64 = 25.0;
/// ...and the time that refills one of them (client-go: `defaultSpamQPS`,
/// 1/300 per second): an object that is always unhealthy costs the API at
/// most 12 writes an hour.
const OBJECT_REFILL: Duration = Duration::from_secs(300);
/// The message of an Event that stands for similar ones (client-go:
/// `EventAggregatorByReasonMessageFunc`).
const COMBINED_PREFIX: &str = "(combined from similar events): ";

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
        let mut correlator = EventCorrelator::default();
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
                let post = post(&client, &node_name, &mut node_uid, &mut correlator, &event);
                let failure = match tokio::time::timeout(POST_TIMEOUT, post).await {
                    Ok(Ok(written)) => {
                        debug!(reason = event.reason, "node event: {written}");
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

/// Writes `event` as the correlator decides; says what it did.
async fn post(
    client: &kube::Client,
    node: &str,
    node_uid: &mut Option<String>,
    correlator: &mut EventCorrelator,
    event: &NodeEvent,
) -> Result<&'static str, kube::Error> {
    if node_uid.is_none() {
        let nodes: Api<Node> = Api::all(client.clone());
        *node_uid = nodes.get(node).await.ok().and_then(|n| n.metadata.uid);
    }
    let api: Api<Event> = Api::namespaced(client.clone(), NAMESPACE);
    let now = jiff_now();
    let object = event_object(node, node_uid.as_deref(), event, now);
    match correlator.correlate(object, now) {
        Write::Skip => Ok("over the rate limit of Events about the Node: not written"),
        Write::Create(object) => api
            .create(&PostParams::default(), &object)
            .await
            .map(|_| "created"),
        Write::Patch { event, patch } => {
            let name = event.metadata.name.clone().unwrap_or_default();
            match api
                .patch(&name, &PatchParams::default(), &Patch::Strategic(patch))
                .await
            {
                Ok(_) => Ok("counted on the Event it repeats"),
                // The Event it repeats is gone (the API server keeps Events
                // for an hour, by default, after their last write): written
                // again whole, as client-go does.
                Err(kube::Error::Api(status)) if status.code == 404 => api
                    .create(&PostParams::default(), &event)
                    .await
                    .map(|_| "created again (the Event it repeats was gone)"),
                Err(e) => Err(e),
            }
        }
    }
}

fn jiff_now() -> Timestamp {
    Timestamp::now()
}

/// The core/v1 Event as kubelet shapes node events, named as kubelet names
/// them (`<node>.<time in ns, hex>`), so a repeat can PATCH it by name.
pub fn event_object(
    node: &str,
    node_uid: Option<&str>,
    event: &NodeEvent,
    now: Timestamp,
) -> Event {
    Event {
        metadata: ObjectMeta {
            name: Some(event_name(node, now.as_nanosecond())),
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

/// `<object>.<now in ns, hex>`, kubelet's Event names; the object's name
/// is cut so the whole stays within the API's 253 characters (kubelet's
/// would be refused; Node names are DNS subdomains, ASCII).
fn event_name(object: &str, ns: i128) -> String {
    let suffix = format!(".{ns:x}");
    let mut end = object.len().min(253 - suffix.len());
    while !object.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{suffix}", &object[..end])
}

/// What to do with one Event, by [`EventCorrelator::correlate`].
#[derive(Clone, Debug, PartialEq)]
pub enum Write {
    /// POST it: the first of its kind.
    Create(Box<Event>),
    /// A repeat: PATCH (strategic merge) the Event it repeats, named in
    /// `event`, with `patch` (its `count`, `lastTimestamp` and `message`);
    /// `event` is the whole repeat, to create should that Event be gone.
    Patch {
        event: Box<Event>,
        patch: serde_json::Value,
    },
    /// Over the rate limit of writes about its object: dropped.
    Skip,
}

/// Aggregates, counts and rate-limits Events before they are written, with
/// client-go's `EventCorrelator` rules and defaults:
/// - Events alike but for their message, at [`AGGREGATE_MAX_MESSAGES`]
///   different messages within [`AGGREGATE_INTERVAL`], become one Event
///   whose message says it is combined (`EventAggregator`).
/// - An Event identical to one written before (source, object, type,
///   reason, message) PATCHes that Event's `count` instead of creating
///   another (`eventLogger`).
/// - Every write about an object takes a token from that object's bucket
///   ([`OBJECT_BURST`], one more every [`OBJECT_REFILL`]); without one the
///   Event is dropped (`EventSourceObjectSpamFilter`), but still counted, so
///   the next write carries the true count.
///
/// Pure: the time is passed in. Each cache holds [`CORRELATOR_ENTRIES`].
#[derive(Debug)]
pub struct EventCorrelator {
    aggregates: Recent<Aggregate>,
    observed: Recent<Observation>,
    buckets: Recent<TokenBucket>,
    /// The last name given, so two Events in one nanosecond differ.
    last_name_ns: i128,
}

impl Default for EventCorrelator {
    fn default() -> Self {
        Self {
            aggregates: Recent::new(CORRELATOR_ENTRIES),
            observed: Recent::new(CORRELATOR_ENTRIES),
            buckets: Recent::new(CORRELATOR_ENTRIES),
            last_name_ns: i128::MIN,
        }
    }
}

/// Similar Events seen lately: their messages and the time of the last.
#[derive(Debug)]
struct Aggregate {
    messages: BTreeSet<String>,
    last: Timestamp,
}

/// An Event written before: what a repeat PATCHes.
#[derive(Debug)]
struct Observation {
    name: String,
    count: i32,
    first_timestamp: Option<Time>,
}

#[derive(Debug)]
struct TokenBucket {
    tokens: f64,
    at: Timestamp,
}

impl TokenBucket {
    /// Takes a token if there is one, after refilling for the time since
    /// the last look (a clock stepped back refills nothing).
    fn try_take(&mut self, now: Timestamp) -> bool {
        let elapsed = now.duration_since(self.at).as_secs_f64().max(0.0);
        self.tokens = (self.tokens + elapsed / OBJECT_REFILL.as_secs_f64()).min(OBJECT_BURST);
        self.at = self.at.max(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

impl EventCorrelator {
    /// Decides how `event` (as [`event_object`] makes it, at `now`) is
    /// written; see the type's comment.
    pub fn correlate(&mut self, event: Event, now: Timestamp) -> Write {
        let (mut event, key) = self.aggregate(event, now);
        let mut patch = None;
        if let Some(seen) = self.observed.get_mut(&key) {
            seen.count = seen.count.saturating_add(1);
            event.metadata.name = Some(seen.name.clone());
            event.first_timestamp = seen.first_timestamp.clone();
            event.count = Some(seen.count);
            patch = Some(serde_json::json!({
                "count": seen.count,
                "lastTimestamp": event.last_timestamp,
                "message": event.message,
            }));
        } else {
            self.observed.insert(
                &key,
                Observation {
                    name: event.metadata.name.clone().unwrap_or_default(),
                    count: event.count.unwrap_or(1),
                    first_timestamp: event.first_timestamp.clone(),
                },
            );
        }
        let bucket = self
            .buckets
            .get_or_insert_with(&object_key(&event), || TokenBucket {
                tokens: OBJECT_BURST,
                at: now,
            });
        if !bucket.try_take(now) {
            return Write::Skip;
        }
        match patch {
            Some(patch) => Write::Patch {
                event: Box::new(event),
                patch,
            },
            None => Write::Create(Box::new(event)),
        }
    }

    /// client-go's `EventAggregate`: the Event to go on with and the key it
    /// is counted under (its own, or its group's once combined).
    fn aggregate(&mut self, event: Event, now: Timestamp) -> (Event, String) {
        let group = group_key(&event);
        let message = event.message.clone().unwrap_or_default();
        let fresh = || Aggregate {
            messages: BTreeSet::new(),
            last: now,
        };
        let record = self.aggregates.get_or_insert_with(&group, fresh);
        if now.duration_since(record.last)
            > SignedDuration::from_secs(AGGREGATE_INTERVAL.as_secs() as i64)
        {
            *record = fresh();
        }
        record.messages.insert(message.clone());
        record.last = now;
        if record.messages.len() < AGGREGATE_MAX_MESSAGES {
            let key = event_key(&event);
            return (event, key);
        }
        // Never more than the limit: the next new message combines too.
        record.messages.pop_first();
        let object = event.involved_object.name.clone().unwrap_or_default();
        let mut combined = event;
        combined.metadata.name = Some(self.unique_name(&object, now));
        combined.message = Some(truncate_message(&format!("{COMBINED_PREFIX}{message}")));
        combined.count = Some(1);
        combined.first_timestamp = Some(Time(now));
        combined.last_timestamp = Some(Time(now));
        (combined, group)
    }

    fn unique_name(&mut self, object: &str, now: Timestamp) -> String {
        let ns = now.as_nanosecond().max(self.last_name_ns.saturating_add(1));
        self.last_name_ns = ns;
        event_name(object, ns)
    }
}

/// Parts joined with NUL, which no part holds (messages are escaped).
fn join(parts: &[&str]) -> String {
    parts.join("\0")
}

/// The object an Event is about, and who reports it (client-go:
/// `getSpamKey`).
fn object_key(e: &Event) -> String {
    let o = &e.involved_object;
    let source = e.source.clone().unwrap_or_default();
    join(&[
        source.component.as_deref().unwrap_or(""),
        source.host.as_deref().unwrap_or(""),
        o.kind.as_deref().unwrap_or(""),
        o.namespace.as_deref().unwrap_or(""),
        o.name.as_deref().unwrap_or(""),
        o.uid.as_deref().unwrap_or(""),
        o.api_version.as_deref().unwrap_or(""),
    ])
}

/// Events alike but for their message (client-go:
/// `EventAggregatorByReasonFunc`).
fn group_key(e: &Event) -> String {
    join(&[
        &object_key(e),
        e.type_.as_deref().unwrap_or(""),
        e.reason.as_deref().unwrap_or(""),
        e.reporting_component.as_deref().unwrap_or(""),
        e.reporting_instance.as_deref().unwrap_or(""),
    ])
}

/// Identical Events (client-go: `getEventKey`).
fn event_key(e: &Event) -> String {
    join(&[
        &object_key(e),
        e.involved_object.field_path.as_deref().unwrap_or(""),
        e.type_.as_deref().unwrap_or(""),
        e.reason.as_deref().unwrap_or(""),
        e.message.as_deref().unwrap_or(""),
    ])
}

/// A map of at most `cap` entries that drops the least recently used.
#[derive(Debug)]
struct Recent<V> {
    cap: usize,
    tick: u64,
    entries: HashMap<String, (u64, V)>,
}

impl<V> Recent<V> {
    fn new(cap: usize) -> Self {
        Self {
            cap,
            tick: 0,
            entries: HashMap::new(),
        }
    }

    fn get_mut(&mut self, key: &str) -> Option<&mut V> {
        self.tick += 1;
        let tick = self.tick;
        self.entries.get_mut(key).map(|(used, v)| {
            *used = tick;
            v
        })
    }

    fn insert(&mut self, key: &str, value: V) {
        self.get_or_insert_with(key, || value);
    }

    fn get_or_insert_with(&mut self, key: &str, new: impl FnOnce() -> V) -> &mut V {
        self.tick += 1;
        if !self.entries.contains_key(key) && self.entries.len() >= self.cap {
            let oldest = self
                .entries
                .iter()
                .min_by_key(|(_, (used, _))| *used)
                .map(|(k, _)| k.clone());
            if let Some(oldest) = oldest {
                self.entries.remove(&oldest);
            }
        }
        let slot = self
            .entries
            .entry(key.to_string())
            .or_insert_with(|| (0, new()));
        slot.0 = self.tick;
        &mut slot.1
    }
}

#[cfg(test)]
mod tests;
