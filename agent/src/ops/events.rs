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

    fn at(second: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + second).unwrap()
    }

    fn failed(node: &str, message: &str, now: Timestamp) -> Event {
        event_object(
            node,
            Some("uid-1"),
            &NodeEvent::warning("KubeletCertificateRenewalFailed", message),
            now,
        )
    }

    /// The name a write goes to, and the count it writes.
    fn written(w: &Write) -> (&'static str, String, i32) {
        match w {
            Write::Create(e) => ("create", e.metadata.name.clone().unwrap(), e.count.unwrap()),
            Write::Patch { event, patch } => {
                assert_eq!(patch["count"].as_i64(), event.count.map(i64::from));
                (
                    "patch",
                    event.metadata.name.clone().unwrap(),
                    event.count.unwrap(),
                )
            }
            Write::Skip => ("skip", String::new(), 0),
        }
    }

    #[test]
    fn an_identical_event_patches_the_count_of_the_first_instead_of_creating_another() {
        let mut c = EventCorrelator::default();
        let first = c.correlate(failed("n1", "boom", at(0)), at(0));
        let (what, name, count) = written(&first);
        assert_eq!((what, count), ("create", 1));
        for (i, t) in [(2, 30), (3, 95)] {
            let w = c.correlate(failed("n1", "boom", at(t)), at(t));
            assert_eq!(written(&w), ("patch", name.clone(), i));
            let Write::Patch { event, patch } = w else {
                unreachable!()
            };
            // What client-go's two-way merge patch holds: the count, the
            // last time and the message; the first time stays.
            assert_eq!(
                patch,
                serde_json::json!({
                    "count": i,
                    "lastTimestamp": Time(at(t)),
                    "message": "boom",
                })
            );
            assert_eq!(event.first_timestamp, Some(Time(at(0))));
        }
        // Another reason, message or node is another Event.
        let other = c.correlate(failed("n1", "other", at(100)), at(100));
        assert_eq!(written(&other).0, "create");
        let other_node = c.correlate(failed("n2", "boom", at(100)), at(100));
        assert_eq!(written(&other_node).0, "create");
    }

    #[test]
    fn ten_different_messages_of_one_reason_within_ten_minutes_are_combined_into_one_event() {
        let mut c = EventCorrelator::default();
        let mut creates = 0;
        for i in 0..9 {
            let w = c.correlate(failed("n1", &format!("csr-{i} denied"), at(i)), at(i));
            assert_eq!(written(&w).0, "create", "message {i}");
            creates += 1;
        }
        let tenth = c.correlate(failed("n1", "csr-9 denied", at(9)), at(9));
        let Write::Create(combined) = &tenth else {
            panic!("{tenth:?}")
        };
        assert_eq!(
            combined.message.as_deref(),
            Some("(combined from similar events): csr-9 denied")
        );
        let name = combined.metadata.name.clone().unwrap();
        // Every further new message counts on the combined Event (one each
        // 5 minutes, within the rate limit and the interval).
        for i in 10..40 {
            let t = 9 + (i - 9) * 300;
            let w = c.correlate(failed("n1", &format!("csr-{i} denied"), at(t)), at(t));
            assert_eq!(written(&w), ("patch", name.clone(), (i - 8) as i32));
        }
        assert_eq!(creates, 9);
        // Quiet for longer than the interval: a new message stands alone.
        let t = 9 + 30 * 300 + 601;
        let w = c.correlate(failed("n1", "csr-x denied", at(t)), at(t));
        let Write::Create(alone) = w else {
            panic!("{w:?}")
        };
        assert_eq!(alone.message.as_deref(), Some("csr-x denied"));
    }

    #[test]
    fn writes_about_one_object_stop_after_25_and_refill_one_every_five_minutes() {
        let mut c = EventCorrelator::default();
        let kinds: Vec<&str> = (0..100)
            .map(|_| written(&c.correlate(failed("n1", "boom", at(0)), at(0))).0)
            .collect();
        assert_eq!(kinds[0], "create");
        assert!(kinds[1..25].iter().all(|k| *k == "patch"), "{kinds:?}");
        assert!(kinds[25..].iter().all(|k| *k == "skip"), "{kinds:?}");
        // 299 s later there is no whole token yet; at 300 s there is one,
        // and the write carries every occurrence, dropped ones included.
        assert_eq!(
            written(&c.correlate(failed("n1", "boom", at(299)), at(299))).0,
            "skip"
        );
        let w = c.correlate(failed("n1", "boom", at(300)), at(300));
        assert_eq!((written(&w).0, written(&w).2), ("patch", 102));
        assert_eq!(
            written(&c.correlate(failed("n1", "boom", at(301)), at(301))).0,
            "skip"
        );
        // Another object has its own bucket.
        assert_eq!(
            written(&c.correlate(failed("n2", "boom", at(301)), at(301))).0,
            "create"
        );
        // A clock stepped back refills nothing and takes nothing wrongly.
        assert_eq!(
            written(&c.correlate(failed("n1", "boom", at(0)), at(0))).0,
            "skip"
        );
    }

    /// One request the fake API server below got: method, path,
    /// content type.
    type Seen = (String, String, String);

    /// What the fake API server below keeps: the requests it got, and the
    /// Events it holds by name.
    type Requests = Arc<std::sync::Mutex<Vec<Seen>>>;
    type Stored = Arc<std::sync::Mutex<HashMap<String, serde_json::Value>>>;

    /// A plain-HTTP API server answering what [`post`] asks: the Node,
    /// Event creates (kept by name) and PATCHes (404 for an Event it does
    /// not hold). One request per connection.
    fn fake_events_api() -> (String, Requests, Stored) {
        use std::io::{BufRead, BufReader, Read, Write as _};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let seen = Arc::new(std::sync::Mutex::new(Vec::<Seen>::new()));
        let stored = Arc::new(std::sync::Mutex::new(HashMap::new()));
        let (seen2, stored2) = (seen.clone(), stored.clone());
        std::thread::spawn(move || {
            for tcp in listener.incoming() {
                let Ok(tcp) = tcp else { continue };
                let mut reader = BufReader::new(tcp);
                let mut line = String::new();
                reader.read_line(&mut line).unwrap();
                let mut parts = line.split_whitespace();
                let method = parts.next().unwrap_or("").to_string();
                let path = parts.next().unwrap_or("").to_string();
                let (mut length, mut content_type) = (0usize, String::new());
                loop {
                    let mut h = String::new();
                    reader.read_line(&mut h).unwrap();
                    let h = h.trim_end();
                    if h.is_empty() {
                        break;
                    }
                    let (k, v) = h.split_once(':').unwrap();
                    if k.eq_ignore_ascii_case("content-length") {
                        length = v.trim().parse().unwrap();
                    } else if k.eq_ignore_ascii_case("content-type") {
                        content_type = v.trim().to_string();
                    }
                }
                let mut body = vec![0u8; length];
                reader.read_exact(&mut body).unwrap();
                let path = path.split('?').next().unwrap().to_string();
                seen2
                    .lock()
                    .unwrap()
                    .push((method.clone(), path.clone(), content_type));
                let name = path.rsplit('/').next().unwrap().to_string();
                let mut stored = stored2.lock().unwrap();
                let (status, answer) = match method.as_str() {
                    "GET" => (
                        "200 OK",
                        serde_json::json!({"apiVersion": "v1", "kind": "Node",
                            "metadata": {"name": "n1", "uid": "uid-1"}}),
                    ),
                    "POST" => {
                        let e: serde_json::Value = serde_json::from_slice(&body).unwrap();
                        let name = e["metadata"]["name"].as_str().unwrap().to_string();
                        stored.insert(name, e.clone());
                        ("201 Created", e)
                    }
                    _ => match stored.get(&name) {
                        Some(e) => ("200 OK", e.clone()),
                        None => (
                            "404 Not Found",
                            serde_json::json!({"kind": "Status", "apiVersion": "v1",
                                "status": "Failure", "reason": "NotFound", "code": 404,
                                "message": format!("events \"{name}\" not found")}),
                        ),
                    },
                };
                let body = serde_json::to_vec(&answer).unwrap();
                let tcp = reader.get_mut();
                let _ = write!(tcp, "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len());
                let _ = tcp.write_all(&body);
            }
        });
        (url, seen, stored)
    }

    #[tokio::test]
    async fn a_failure_repeated_over_the_api_creates_one_event_and_patches_its_count() {
        let (url, seen, stored) = fake_events_api();
        let client = kube::Client::try_from(kube::Config::new(url.parse().unwrap())).unwrap();
        let mut correlator = EventCorrelator::default();
        let mut node_uid = None;
        let failure = NodeEvent::warning("KubeletCertificateRenewalFailed", "CSR create: 403");
        for _ in 0..3 {
            post(&client, "n1", &mut node_uid, &mut correlator, &failure)
                .await
                .unwrap();
        }
        let writes: Vec<(String, String)> = seen
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, p, _)| p.contains("/events"))
            .map(|(m, _, ct)| (m.clone(), ct.clone()))
            .collect();
        let strategic = "application/strategic-merge-patch+json".to_string();
        assert_eq!(
            writes,
            [
                ("POST".to_string(), "application/json".to_string()),
                ("PATCH".to_string(), strategic.clone()),
                ("PATCH".to_string(), strategic.clone()),
            ],
            "one Event created, then its count patched"
        );
        assert_eq!(stored.lock().unwrap().len(), 1);
        // The Event expired (the API server's event TTL): the next repeat
        // creates it again, with the count so far.
        stored.lock().unwrap().clear();
        let written = post(&client, "n1", &mut node_uid, &mut correlator, &failure)
            .await
            .unwrap();
        assert!(written.starts_with("created again"), "{written}");
        let again = stored.lock().unwrap().values().next().cloned().unwrap();
        assert_eq!(again["count"], 4);
    }

    #[test]
    fn an_event_is_named_like_kubelets_and_within_the_apis_limit() {
        let e = failed("n1", "boom", at(0));
        assert_eq!(
            e.metadata.name.as_deref(),
            Some(format!("n1.{:x}", at(0).as_nanosecond()).as_str())
        );
        let long = "a".repeat(253);
        let e = failed(&long, "boom", at(0));
        let name = e.metadata.name.unwrap();
        assert_eq!(name.len(), 253, "{name}");
        assert!(name.ends_with(&format!(".{:x}", at(0).as_nanosecond())));
    }

    #[test]
    fn the_caches_keep_the_most_recently_used_entries() {
        let mut r: Recent<u32> = Recent::new(2);
        r.insert("a", 1);
        r.insert("b", 2);
        assert_eq!(r.get_mut("a").copied(), Some(1));
        r.insert("c", 3);
        assert_eq!(r.get_mut("b"), None, "the least recently used went");
        assert_eq!(r.get_mut("a").copied(), Some(1));
        assert_eq!(r.get_mut("c").copied(), Some(3));
    }

    #[tokio::test]
    async fn a_full_queue_drops_instead_of_blocking() {
        let (tx, mut rx) = mpsc::channel(1);
        let sink = EventSink { tx: Some(tx) };
        // Ten emits into a queue of one return at once (a blocking emit
        // would hang here, which the timeout turns into a failure).
        tokio::time::timeout(std::time::Duration::from_secs(5), async {
            for i in 0..10 {
                sink.emit(NodeEvent::normal("CATrustChanged", format!("{i}")));
            }
        })
        .await
        .expect("emit never waits for the queue");
        // The first was kept; the nine others were dropped.
        let kept = rx.try_recv().expect("the first event is queued");
        assert_eq!(kept.message, "0");
        assert!(rx.try_recv().is_err(), "only one event fits the queue");
        // A disabled sink takes events and keeps none.
        EventSink::disabled().emit(NodeEvent::normal("CATrustChanged", "x"));
    }
}
