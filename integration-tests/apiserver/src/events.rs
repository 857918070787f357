//! Events: core/v1 and `events.k8s.io/v1` share one storage (core/v1
//! form), with the field renames between the two APIs, create and update
//! validation (`ValidateEventCreate`, `ValidateEventUpdate`,
//! `legacyValidateEvent`: with `eventTime` set, `reportingController`
//! (`reportingComponent` in core/v1), `reportingInstance` and `action` are
//! required and `message` is at most 1024 bytes), and the handlers.
//!
//! Upstream files: `pkg/apis/core/validation/events.go`,
//! `pkg/apis/events/v1/conversion.go`, `pkg/registry/core/event/strategy.go`.

use std::sync::Arc;

use http::Response;
use serde_json::{json, Value};

use super::body::Body;
use super::handler::Req;
use super::resources::{
    self, apply_patch, before_update, check_identity, get_str, namespace_exists, parse_body,
    prepare_meta, present, respond_warned, PatchType, ResourceDef,
};
use super::selectors::qualified_name_errors;
use super::status::{self, ApiError, FieldError};
use super::store::{meta_str, Kind};
use super::Shared;

/// POST of an Event (either API).
pub(crate) fn create(
    shared: &Arc<Shared>,
    def: &'static ResourceDef,
    r: &Req,
    dry: bool,
) -> Result<Response<Body>, ApiError> {
    let mut body = parse_body(r)?;
    let obj = body
        .as_object()
        .ok_or_else(|| status::bad_request("the body of the request was in an unknown format"))?;
    super::csr::check_type_meta(obj, &def.api_version(), "Event")?;
    prepare_meta(r, def, &mut body)?;
    let core = if def.group == "events.k8s.io" {
        events_to_core(&body)
    } else {
        body
    };
    // NamespaceLifecycle admission runs before validation.
    namespace_exists(&shared.state.lock().unwrap(), &r.attrs.namespace)?;
    let errs = validate_event(&core, def.group == "events.k8s.io");
    let name = meta_str(&core, "name").to_string();
    if !errs.is_empty() {
        return Err(status::invalid(def.group, "Event", &name, &errs));
    }
    let mut st = shared.state.lock().unwrap();
    if st
        .store
        .get(Kind::Event, &r.attrs.namespace, &name)
        .is_some()
    {
        return Err(status::already_exists(def.group, def.plural, &name));
    }
    let mut core = core;
    core["apiVersion"] = json!("v1");
    core["kind"] = json!("Event");
    let stored = if dry {
        core
    } else {
        st.store.create(Kind::Event, core)
    };
    Ok(respond_warned(201, &present(def, &stored, false), &[]))
}

/// PATCH of an Event (either API).
pub(crate) fn patch(
    shared: &Arc<Shared>,
    def: &'static ResourceDef,
    r: &Req,
    pt: PatchType,
    dry: bool,
) -> Result<Response<Body>, ApiError> {
    let mut st = shared.state.lock().unwrap();
    let Some(stored) = st
        .store
        .get(def.kind, &r.attrs.namespace, &r.attrs.name)
        .cloned()
    else {
        return Err(status::not_found(def.group, def.plural, &r.attrs.name));
    };
    let presented = present(def, &stored, false);
    let mut patched = apply_patch(pt, &presented, r, super::patch::no_strategy)?;
    check_identity(def, &stored, &patched, r)?;
    let mut errs = before_update(&stored, &mut patched);
    let core = if def.group == "events.k8s.io" {
        events_to_core(&patched)
    } else {
        patched
    };
    let strict = def.group == "events.k8s.io";
    errs.extend(validate_event(&core, strict));
    if strict {
        let old_events = core_to_events(&stored);
        let new_events = core_to_events(&core);
        for f in [
            "regarding",
            "reason",
            "note",
            "deprecatedSource",
            "deprecatedFirstTimestamp",
            "deprecatedLastTimestamp",
            "deprecatedCount",
            "type",
            "eventTime",
            "action",
            "related",
            "reportingController",
            "reportingInstance",
        ] {
            if old_events.get(f) != new_events.get(f) {
                let internal = match f {
                    "regarding" => "involvedObject",
                    "note" => "message",
                    "deprecatedSource" => "source",
                    "deprecatedFirstTimestamp" => "firstTimestamp",
                    "deprecatedLastTimestamp" => "lastTimestamp",
                    "deprecatedCount" => "count",
                    other => other,
                };
                errs.push(FieldError::invalid(
                    internal,
                    "…".into(),
                    "field is immutable",
                ));
            }
        }
    }
    if !errs.is_empty() {
        return Err(status::invalid(def.group, "Event", &r.attrs.name, &errs));
    }
    let mut core = core;
    core["apiVersion"] = json!("v1");
    core["kind"] = json!("Event");
    let out = resources::store_update(&mut st, def.kind, &stored, core, dry);
    Ok(respond_warned(200, &present(def, &out, false), &[]))
}

const EVENT_RENAMES: &[(&str, &str)] = &[
    ("regarding", "involvedObject"),
    ("note", "message"),
    ("deprecatedSource", "source"),
    ("deprecatedFirstTimestamp", "firstTimestamp"),
    ("deprecatedLastTimestamp", "lastTimestamp"),
    ("deprecatedCount", "count"),
    ("reportingController", "reportingComponent"),
];

/// events.k8s.io/v1 → core/v1 field names.
pub(crate) fn events_to_core(v: &Value) -> Value {
    let mut out = v.clone();
    if let Some(o) = out.as_object_mut() {
        for (from, to) in EVENT_RENAMES {
            if let Some(x) = o.remove(*from) {
                o.insert((*to).into(), x);
            }
        }
    }
    out
}

/// core/v1 → events.k8s.io/v1 field names.
pub(crate) fn core_to_events(v: &Value) -> Value {
    let mut out = v.clone();
    if let Some(o) = out.as_object_mut() {
        for (to, from) in EVENT_RENAMES {
            if let Some(x) = o.remove(*from) {
                o.insert((*to).into(), x);
            }
        }
    }
    out
}

/// `ValidateEventCreate` on the internal (core) form; `strict` for
/// events.k8s.io/v1. Field paths are the internal ones, as the real server
/// reports them.
pub(crate) fn validate_event(e: &Value, strict: bool) -> Vec<FieldError> {
    let mut errs = vec![];
    let s = |k: &str| e.get(k).and_then(Value::as_str).unwrap_or("");
    let ns = meta_str(e, "namespace");
    let involved_ns = get_str(e, &["involvedObject", "namespace"]).unwrap_or("");
    let event_time_set = e.get("eventTime").is_some_and(|t| !t.is_null());
    if !event_time_set {
        if involved_ns.is_empty() {
            if !ns.is_empty() && ns != "default" {
                errs.push(FieldError::invalid(
                    "involvedObject.namespace",
                    format!("{involved_ns:?}"),
                    "does not match event.namespace",
                ));
            }
        } else if ns != involved_ns {
            errs.push(FieldError::invalid(
                "involvedObject.namespace",
                format!("{involved_ns:?}"),
                "does not match event.namespace",
            ));
        }
    } else {
        if involved_ns.is_empty() && ns != "default" && ns != "kube-system" {
            errs.push(FieldError::invalid(
                "involvedObject.namespace",
                format!("{involved_ns:?}"),
                "does not match event.namespace",
            ));
        }
        // The field is named after the API of the request.
        let rc_field = if strict {
            "reportingController"
        } else {
            "reportingComponent"
        };
        let rc = s("reportingComponent");
        if rc.is_empty() {
            errs.push(FieldError::required(rc_field, ""));
        }
        for m in qualified_name_errors(rc) {
            errs.push(FieldError::invalid(rc_field, format!("{rc:?}"), &m));
        }
        let ri = s("reportingInstance");
        if ri.is_empty() {
            errs.push(FieldError::required("reportingInstance", ""));
        } else if ri.len() > 128 {
            errs.push(FieldError::invalid(
                "reportingInstance",
                "\"\"".into(),
                "can have at most 128 characters",
            ));
        }
        let action = s("action");
        if action.is_empty() {
            errs.push(FieldError::required("action", ""));
        } else if action.len() > 128 {
            errs.push(FieldError::invalid(
                "action",
                "\"\"".into(),
                "can have at most 128 characters",
            ));
        }
        let reason = s("reason");
        if reason.is_empty() {
            errs.push(FieldError::required("reason", ""));
        } else if reason.len() > 128 {
            errs.push(FieldError::invalid(
                "reason",
                "\"\"".into(),
                "can have at most 128 characters",
            ));
        }
        if s("message").len() > 1024 {
            errs.push(FieldError::invalid(
                "message",
                "\"\"".into(),
                "can have at most 1024 characters",
            ));
        }
    }
    if !super::selectors::valid_dns_subdomain(ns) {
        errs.push(FieldError::invalid("namespace", format!("{ns:?}"), "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.'"));
    }
    let name = meta_str(e, "name");
    if name.is_empty() {
        errs.push(FieldError::required(
            "metadata.name",
            "name or generateName is required",
        ));
    }
    if strict {
        if !name.is_empty() && !super::selectors::valid_dns_subdomain(name) {
            errs.push(FieldError::invalid("metadata.name", format!("{name:?}"), "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character"));
        }
        if let Some(series) = e.get("series").filter(|s| !s.is_null()) {
            if series.get("count").and_then(Value::as_i64).unwrap_or(0) < 2 {
                errs.push(FieldError::invalid(
                    "series.count",
                    "\"\"".into(),
                    "should be at least 2",
                ));
            }
            if series.get("lastObservedTime").is_none_or(Value::is_null) {
                errs.push(FieldError::required("series.lastObservedTime", ""));
            }
        }
        if !event_time_set {
            errs.push(FieldError::required("eventTime", ""));
        }
        let t = s("type");
        if t != "Normal" && t != "Warning" {
            errs.push(FieldError::invalid(
                "type",
                "\"\"".into(),
                &format!("has invalid value: {t}"),
            ));
        }
        for f in ["firstTimestamp", "lastTimestamp"] {
            if e.get(f).is_some_and(|v| !v.is_null()) {
                errs.push(FieldError::invalid(f, "\"\"".into(), "needs to be unset"));
            }
        }
        if e.get("count").and_then(Value::as_i64).unwrap_or(0) != 0 {
            errs.push(FieldError::invalid(
                "count",
                "\"\"".into(),
                "needs to be unset",
            ));
        }
        let src = e.get("source");
        let comp = src
            .and_then(|s| s.get("component"))
            .and_then(Value::as_str)
            .unwrap_or("");
        let host = src
            .and_then(|s| s.get("host"))
            .and_then(Value::as_str)
            .unwrap_or("");
        if !comp.is_empty() || !host.is_empty() {
            errs.push(FieldError::invalid(
                "source",
                "\"\"".into(),
                "needs to be unset",
            ));
        }
    }
    errs
}
