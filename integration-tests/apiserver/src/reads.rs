//! Reads: get, list and watch of every served kind, as kube-apiserver's
//! registry and watch cache serve them: list options validated as
//! `ValidateListOptions` does, label and field selectors, pagination with
//! continue tokens (and 410 for a compacted one), `resourceVersion` and
//! `resourceVersionMatch`, watches resumed from a resourceVersion or with
//! initial events, per-watcher filtering and bookmarks.
//!
//! It reads the storage and the resource definitions; it must not use the
//! write pipeline, the kinds' modules or the filter chain (`handler.rs`).
//!
//! Upstream files: `staging/src/k8s.io/apimachinery/pkg/apis/meta/internalversion/validation/validation.go`,
//! `staging/src/k8s.io/apiserver/pkg/storage/continue.go`,
//! `staging/src/k8s.io/apiserver/pkg/storage/cacher` (`cacher.go`,
//! `cache_watcher.go`, `watch_cache.go`).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use http::Response;
use serde_json::{json, Value};
use tokio::sync::mpsc;

use crate::body::Body;
use crate::defs::{fields, present, ResourceDef};
use crate::request::{parse_bool, respond, Req};
use crate::selectors::{FieldSelector, LabelSelector};
use crate::status::{self, ApiError, FieldError};
use crate::store::{meta_str, set_meta, WatchMsg, WatchRecord};
use crate::Shared;

/// GET of one object.
pub(crate) fn get(shared: &Shared, def: &ResourceDef, r: &Req) -> Result<Response<Body>, ApiError> {
    let st = shared.state.lock().unwrap();
    match st.store.get(def.kind, &r.attrs.namespace, &r.attrs.name) {
        Some(v) => Ok(respond(200, &present(def, v, false))),
        None => Err(status::not_found(def.group, def.plural, &r.attrs.name)),
    }
}

/// List/watch options, validated as `ValidateListOptions` does.
struct ListOpts {
    labels: LabelSelector,
    fields: FieldSelector,
    rv: Option<u64>,
    rv_match: String,
    limit: Option<usize>,
    cont: Option<(u64, String)>,
    timeout: Option<u64>,
    bookmarks: bool,
    send_initial: Option<bool>,
}

fn list_opts(def: &ResourceDef, r: &Req, watch: bool) -> Result<ListOpts, ApiError> {
    let labels =
        LabelSelector::parse(r.q("labelSelector").unwrap_or("")).map_err(status::bad_request)?;
    let fields = FieldSelector::parse(r.q("fieldSelector").unwrap_or(""), def.field_labels)
        .map_err(status::bad_request)?;
    let rv_str = r.q("resourceVersion").unwrap_or("");
    let rv =
        if rv_str.is_empty() {
            None
        } else {
            Some(rv_str.parse::<u64>().map_err(|_| {
                status::bad_request(format!("invalid resource version: {rv_str:?}"))
            })?)
        };
    let rv_match = r.q("resourceVersionMatch").unwrap_or("").to_string();
    let limit = match r.q("limit") {
        None | Some("") => None,
        Some(l) => Some(
            l.parse::<i64>()
                .map_err(|e| status::bad_request(format!("limit: {e}")))?,
        ),
    };
    let timeout = match r.q("timeoutSeconds") {
        None | Some("") => None,
        Some(t) => Some(
            t.parse::<u64>()
                .map_err(|e| status::bad_request(format!("timeoutSeconds: {e}")))?,
        ),
    };
    let bookmarks = r
        .q("allowWatchBookmarks")
        .and_then(parse_bool)
        .unwrap_or(false);
    let send_initial = r.q("sendInitialEvents").and_then(parse_bool);
    let mut errs = vec![];
    if !rv_match.is_empty() {
        if !matches!(rv_match.as_str(), "NotOlderThan" | "Exact") {
            errs.push(FieldError {
                field: "resourceVersionMatch".into(),
                typ: status::FieldErrorType::NotSupported(
                    format!("{rv_match:?}"),
                    vec!["Exact".into(), "NotOlderThan".into(), String::new()],
                ),
                detail: String::new(),
            });
        }
        if rv.is_none() {
            errs.push(FieldError::forbidden(
                "resourceVersionMatch",
                "resourceVersionMatch is forbidden unless resourceVersion is provided",
            ));
        }
        if rv == Some(0) && rv_match == "Exact" {
            errs.push(FieldError::forbidden(
                "resourceVersionMatch",
                "resourceVersionMatch \"exact\" is forbidden for resourceVersion \"0\"",
            ));
        }
        if watch && send_initial.is_none() {
            errs.push(FieldError::forbidden(
                "resourceVersionMatch",
                "resourceVersionMatch is forbidden for watch unless sendInitialEvents is provided",
            ));
        }
        if watch && send_initial.is_some() && rv_match != "NotOlderThan" {
            errs.push(FieldError::forbidden(
                "resourceVersionMatch",
                "sendInitialEvents requires setting resourceVersionMatch to NotOlderThan",
            ));
        }
    }
    if let Some(si) = send_initial {
        if !watch {
            errs.push(FieldError::forbidden(
                "sendInitialEvents",
                "sendInitialEvents is forbidden for list",
            ));
        } else if si && !bookmarks {
            errs.push(FieldError::forbidden(
                "allowWatchBookmarks",
                "allowWatchBookmarks must be set to true when sendInitialEvents is true",
            ));
        }
        if watch && rv_match.is_empty() {
            errs.push(FieldError::forbidden(
                "resourceVersionMatch",
                "sendInitialEvents requires setting resourceVersionMatch to NotOlderThan",
            ));
        }
    }
    if let Some(l) = limit {
        if l < 0 {
            errs.push(FieldError::invalid(
                "limit",
                l.to_string(),
                "must be greater than or equal to 0",
            ));
        }
    }
    let cont = match r.q("continue") {
        None | Some("") => None,
        Some(c) => {
            if rv.is_some() {
                errs.push(FieldError::forbidden(
                    "resourceVersion",
                    "specifying resource version is not allowed when using continue",
                ));
            }
            Some(decode_continue(c)?)
        }
    };
    if !errs.is_empty() {
        return Err(status::invalid("meta.k8s.io", "ListOptions", "", &errs));
    }
    Ok(ListOpts {
        labels,
        fields,
        rv,
        rv_match,
        limit: limit
            .and_then(|l| usize::try_from(l).ok())
            .filter(|l| *l > 0),
        cont,
        timeout,
        bookmarks,
        send_initial,
    })
}

fn decode_continue(c: &str) -> Result<(u64, String), ApiError> {
    let bad = |why: &str| status::bad_request(format!("continue key is not valid: {why}"));
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(c.trim_end_matches('='))
        .map_err(|_| bad("incorrect encoded start resourceVersion (version meta.k8s.io/v1)"))?;
    let v: Value = serde_json::from_slice(&raw)
        .map_err(|_| bad("incorrect encoded start resourceVersion (version meta.k8s.io/v1)"))?;
    if v["v"] != "meta.k8s.io/v1" {
        return Err(bad("server does not recognize this encoded key"));
    }
    let rv = v["rv"]
        .as_u64()
        .ok_or_else(|| bad("incorrect encoded start resourceVersion (version meta.k8s.io/v1)"))?;
    let start = v["start"].as_str().unwrap_or("").to_string();
    Ok((rv, start))
}

fn encode_continue(rv: u64, start_after: &str) -> String {
    let v = json!({"v": "meta.k8s.io/v1", "rv": rv, "start": format!("{start_after}\u{0}")});
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(serde_json::to_vec(&v).unwrap())
}

fn matches(def: &ResourceDef, o: &ListOpts, ns: &str, obj: &Value) -> bool {
    if !ns.is_empty() && meta_str(obj, "namespace") != ns {
        return false;
    }
    let labels: BTreeMap<String, String> = obj
        .get("metadata")
        .and_then(|m| m.get("labels"))
        .and_then(|l| serde_json::from_value(l.clone()).ok())
        .unwrap_or_default();
    o.labels.matches(&labels) && o.fields.matches(&fields(def, obj))
}

/// A list, with selectors and pagination.
pub(crate) fn list(
    shared: &Shared,
    def: &ResourceDef,
    r: &Req,
) -> Result<Response<Body>, ApiError> {
    let o = list_opts(def, r, false)?;
    let st = shared.state.lock().unwrap();
    let (list_rv, start) = match &o.cont {
        Some((rv, start)) => {
            if *rv < st.store.compacted_rv {
                return Err(status::expired("The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter, or use the continue token in this response to retrieve the remainder of the results. Continuing with the provided token results in an inconsistent list - objects that were created, modified, or deleted between the time the first chunk was returned and now may show up in the list.".into()));
            }
            (*rv, Some(start.trim_end_matches('\u{0}').to_string()))
        }
        None => {
            if o.rv_match == "Exact" && o.rv != Some(st.store.rv) {
                // Exact reads of an older revision need etcd's history,
                // which this server does not keep for lists.
                return Err(status::expired(format!(
                    "too old resource version: {} ({})",
                    o.rv.unwrap_or(0),
                    st.store.rv
                )));
            }
            (st.store.rv, None)
        }
    };
    let key_of = |v: &Value| {
        let ns = meta_str(v, "namespace");
        let name = meta_str(v, "name");
        if ns.is_empty() {
            name.to_string()
        } else {
            format!("{ns}/{name}")
        }
    };
    let mut items = vec![];
    let mut cont = None;
    let mut remaining = 0i64;
    for v in st.store.list(def.kind) {
        if !matches(def, &o, &r.attrs.namespace, v) {
            continue;
        }
        let k = key_of(v);
        if let Some(s) = &start {
            if k.as_str() <= s.as_str() {
                continue;
            }
        }
        if let Some(l) = o.limit {
            if items.len() == l {
                remaining += 1;
                if cont.is_none() {
                    cont = Some(encode_continue(
                        list_rv,
                        &key_of(items.last().map(|(_, v): &(String, Value)| v).unwrap()),
                    ));
                }
                continue;
            }
        }
        items.push((k, v.clone()));
    }
    let items: Vec<Value> = items.iter().map(|(_, v)| present(def, v, true)).collect();
    let mut meta = json!({"resourceVersion": list_rv.to_string()});
    if let Some(c) = cont {
        meta["continue"] = Value::String(c);
        meta["remainingItemCount"] = json!(remaining);
    }
    Ok(respond(
        200,
        &json!({
            "kind": format!("{}List", def.kind_name),
            "apiVersion": def.api_version(),
            "metadata": meta,
            "items": items,
        }),
    ))
}

fn event_line(typ: &str, obj: &Value) -> Bytes {
    let mut b = serde_json::to_vec(&json!({"type": typ, "object": obj})).unwrap();
    b.push(b'\n');
    Bytes::from(b)
}

/// A watch: the initial or missed events, then the changes, filtered
/// for this watcher, with bookmarks.
pub(crate) fn watch(
    shared: &Arc<Shared>,
    def: &'static ResourceDef,
    r: &Req,
) -> Result<Response<Body>, ApiError> {
    let o = list_opts(def, r, true)?;
    let (tx, mut rx) = mpsc::unbounded_channel::<WatchMsg>();
    let (out_tx, out_rx) = mpsc::channel::<Bytes>(256);
    let ns = r.attrs.namespace.clone();
    let mut initial: Vec<Bytes> = vec![];
    let mut expired: Option<ApiError> = None;
    let mut last_rv;
    {
        let mut st = shared.state.lock().unwrap();
        last_rv = st.store.rv;
        let synthetic = o.send_initial == Some(true)
            || (o.send_initial.is_none() && matches!(o.rv, None | Some(0)));
        if synthetic {
            for v in st.store.list(def.kind) {
                if matches(def, &o, &ns, v) {
                    initial.push(event_line("ADDED", &present(def, v, false)));
                }
            }
            if o.send_initial == Some(true) {
                initial.push(event_line("BOOKMARK", &bookmark(def, last_rv, true)));
            }
            st.store.watch_now(def.kind, tx.clone());
        } else {
            let from = o.rv.unwrap_or(0);
            match st.store.watch_from(def.kind, from, tx.clone()) {
                Ok(missed) => {
                    for rec in missed {
                        if let Some(line) = filter(def, &o, &ns, &rec) {
                            initial.push(line);
                        }
                    }
                }
                Err(oldest) => {
                    expired = Some(status::expired(format!(
                        "too old resource version: {from} ({oldest})"
                    )));
                }
            }
        }
    }
    let (bookmark_every, timeout) = {
        let st = shared.state.lock().unwrap();
        (
            st.bookmark_interval,
            Duration::from_secs(o.timeout.unwrap_or(1800)),
        )
    };
    let shared2 = shared.clone();
    tokio::spawn(async move {
        if let Some(e) = expired {
            let _ = out_tx.send(event_line("ERROR", &e.status_value())).await;
            return;
        }
        for line in initial {
            if out_tx.send(line).await.is_err() {
                return;
            }
        }
        let deadline = tokio::time::Instant::now() + timeout;
        let mut tick = tokio::time::interval(bookmark_every);
        tick.tick().await;
        loop {
            tokio::select! {
                msg = rx.recv() => match msg {
                    Some(WatchMsg::Event(rec)) => {
                        last_rv = rec.rv;
                        if let Some(line) = filter(def, &o, &ns, &rec) {
                            if out_tx.send(line).await.is_err() { return; }
                        }
                    }
                    Some(WatchMsg::Bookmark(rv)) => {
                        last_rv = last_rv.max(rv);
                        if out_tx.send(event_line("BOOKMARK", &bookmark(def, last_rv, false))).await.is_err() { return; }
                    }
                    None => return,
                },
                _ = tick.tick(), if o.bookmarks => {
                    // Queue the bookmark behind every change already sent to
                    // this watcher: take the revision under the store lock.
                    let st = shared2.state.lock().unwrap();
                    let _ = tx.send(WatchMsg::Bookmark(st.store.rv));
                }
                () = tokio::time::sleep_until(deadline) => return,
                () = out_tx.closed() => return,
            }
        }
    });
    Ok(Response::builder()
        .status(200)
        .header("Content-Type", "application/json")
        .header("Cache-Control", "no-cache, private")
        .body(Body::Stream(out_rx))
        .unwrap())
}

fn bookmark(def: &ResourceDef, rv: u64, initial_end: bool) -> Value {
    let mut meta = json!({"resourceVersion": rv.to_string(), "creationTimestamp": null});
    if initial_end {
        meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
    }
    json!({"kind": def.kind_name, "apiVersion": def.api_version(), "metadata": meta})
}

/// The watch cache's per-watcher filtering, with ADDED/DELETED for objects
/// that start or stop matching.
fn filter(def: &ResourceDef, o: &ListOpts, ns: &str, rec: &WatchRecord) -> Option<Bytes> {
    let cur = matches(def, o, ns, &rec.object);
    let old = rec.prev.as_ref().is_some_and(|p| matches(def, o, ns, p));
    let (typ, obj) = match rec.typ {
        "ADDED" => (cur.then_some("ADDED")?, rec.object.clone()),
        "DELETED" => (old.then_some("DELETED")?, rec.object.clone()),
        _ => match (old, cur) {
            (true, true) => ("MODIFIED", rec.object.clone()),
            (false, true) => ("ADDED", rec.object.clone()),
            (true, false) => {
                let mut p = rec.prev.clone().unwrap();
                set_meta(&mut p, "resourceVersion", Value::String(rec.rv.to_string()));
                ("DELETED", p)
            }
            (false, false) => return None,
        },
    };
    Some(event_line(typ, &present(def, &obj, false)))
}
