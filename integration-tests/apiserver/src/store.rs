//! Object storage with one global resourceVersion counter (an etcd
//! revision), an event history for watch resumption with compaction, and
//! live watchers. A leaf: it knows no kind's rules and uses nothing of the
//! crate; validation and admission happen before anything is stored.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use serde_json::Value;
use tokio::sync::mpsc::UnboundedSender;

/// The resources the server stores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum Kind {
    Csr,
    Node,
    Namespace,
    /// Events of both APIs share one storage (core/v1 form).
    Event,
    Revocation,
    /// core/v1 Secrets (`secrets.rs`); tests may also put them with
    /// `ApiServer::set_secret`.
    Secret,
    /// core/v1 Pods, read only (get, list, watch); tests put them with
    /// `ApiServer::set_pod`.
    Pod,
}

/// One change, as the watch cache keeps it.
#[derive(Debug)]
pub(crate) struct WatchRecord {
    pub rv: u64,
    pub kind: Kind,
    /// `ADDED`, `MODIFIED` or `DELETED`.
    pub typ: &'static str,
    pub object: Value,
    pub prev: Option<Value>,
}

/// What a watcher's channel carries.
#[derive(Debug, Clone)]
pub(crate) enum WatchMsg {
    Event(Arc<WatchRecord>),
    Bookmark(u64),
}

pub(crate) struct Watcher {
    pub kind: Kind,
    pub tx: UnboundedSender<WatchMsg>,
}

pub(crate) type Key = (Kind, String, String);

pub(crate) struct Store {
    pub rv: u64,
    pub objects: BTreeMap<Key, Value>,
    history: VecDeque<Arc<WatchRecord>>,
    /// The history holds every change with rv > compacted_rv.
    pub compacted_rv: u64,
    pub history_cap: usize,
    watchers: Vec<Watcher>,
}

pub(crate) fn meta_str<'a>(v: &'a Value, field: &str) -> &'a str {
    v.get("metadata")
        .and_then(|m| m.get(field))
        .and_then(Value::as_str)
        .unwrap_or("")
}

pub(crate) fn set_meta(v: &mut Value, field: &str, value: Value) {
    if !v.get("metadata").is_some_and(Value::is_object) {
        v["metadata"] = Value::Object(Default::default());
    }
    v["metadata"][field] = value;
}

impl Store {
    pub fn new() -> Store {
        Store {
            rv: 1,
            objects: BTreeMap::new(),
            history: VecDeque::new(),
            compacted_rv: 1,
            history_cap: 10_000,
            watchers: vec![],
        }
    }

    pub fn get(&self, kind: Kind, ns: &str, name: &str) -> Option<&Value> {
        self.objects.get(&(kind, ns.to_string(), name.to_string()))
    }

    pub fn list(&self, kind: Kind) -> impl Iterator<Item = &Value> {
        self.objects
            .range((kind, String::new(), String::new())..)
            .take_while(move |(k, _)| k.0 == kind)
            .map(|(_, v)| v)
    }

    fn record(&mut self, rec: WatchRecord) {
        let rec = Arc::new(rec);
        self.watchers.retain(|w| {
            if w.kind != rec.kind {
                return !w.tx.is_closed();
            }
            w.tx.send(WatchMsg::Event(rec.clone())).is_ok()
        });
        self.history.push_back(rec);
        while self.history.len() > self.history_cap {
            if let Some(old) = self.history.pop_front() {
                self.compacted_rv = old.rv;
            }
        }
    }

    /// Stores a new object; sets its resourceVersion; emits ADDED.
    pub fn create(&mut self, kind: Kind, mut obj: Value) -> Value {
        self.rv += 1;
        set_meta(
            &mut obj,
            "resourceVersion",
            Value::String(self.rv.to_string()),
        );
        let key = (
            kind,
            meta_str(&obj, "namespace").to_string(),
            meta_str(&obj, "name").to_string(),
        );
        self.objects.insert(key, obj.clone());
        self.record(WatchRecord {
            rv: self.rv,
            kind,
            typ: "ADDED",
            object: obj.clone(),
            prev: None,
        });
        obj
    }

    /// Replaces a stored object; bumps its resourceVersion; emits MODIFIED.
    pub fn update(&mut self, kind: Kind, mut obj: Value) -> Value {
        self.rv += 1;
        set_meta(
            &mut obj,
            "resourceVersion",
            Value::String(self.rv.to_string()),
        );
        let key = (
            kind,
            meta_str(&obj, "namespace").to_string(),
            meta_str(&obj, "name").to_string(),
        );
        let prev = self.objects.insert(key, obj.clone());
        self.record(WatchRecord {
            rv: self.rv,
            kind,
            typ: "MODIFIED",
            object: obj.clone(),
            prev,
        });
        obj
    }

    /// Deletes an object; emits DELETED carrying the deletion's revision.
    pub fn delete(&mut self, kind: Kind, ns: &str, name: &str) -> Option<Value> {
        let mut obj = self
            .objects
            .remove(&(kind, ns.to_string(), name.to_string()))?;
        self.rv += 1;
        let prev = obj.clone();
        set_meta(
            &mut obj,
            "resourceVersion",
            Value::String(self.rv.to_string()),
        );
        self.record(WatchRecord {
            rv: self.rv,
            kind,
            typ: "DELETED",
            object: obj.clone(),
            prev: Some(prev),
        });
        Some(obj)
    }

    /// Drops the whole history: a watch from any older revision gets 410.
    pub fn compact(&mut self) {
        self.history.clear();
        self.compacted_rv = self.rv;
    }

    /// Registers a watcher for `kind` from revision `from` (exclusive):
    /// returns the changes it missed, or `Err(oldest)` when `from` is
    /// compacted. Registration and replay happen under one lock, so nothing
    /// is lost or repeated.
    pub fn watch_from(
        &mut self,
        kind: Kind,
        from: u64,
        tx: UnboundedSender<WatchMsg>,
    ) -> Result<Vec<Arc<WatchRecord>>, u64> {
        if from < self.compacted_rv {
            return Err(self.compacted_rv);
        }
        let missed = self
            .history
            .iter()
            .filter(|r| r.kind == kind && r.rv > from)
            .cloned()
            .collect();
        self.watchers.push(Watcher { kind, tx });
        Ok(missed)
    }

    /// Registers a watcher that starts now (after a synthetic initial state).
    pub fn watch_now(&mut self, kind: Kind, tx: UnboundedSender<WatchMsg>) {
        self.watchers.push(Watcher { kind, tx });
    }
}
