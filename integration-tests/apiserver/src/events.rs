//! Events: core/v1 and `events.k8s.io/v1` share one storage (core/v1
//! form; the field renames between the two APIs are the wire form's, in
//! `defs.rs`). This module has the hooks of their create and PATCH: create
//! and update validation (`ValidateEventCreate`, `ValidateEventUpdate`,
//! `legacyValidateEvent`: with `eventTime` set, `reportingController`
//! (`reportingComponent` in core/v1), `reportingInstance` and `action` are
//! required and `message` is at most 1024 bytes). The write pipeline
//! (`resources.rs`) runs the hooks; this module must not use it or the
//! handlers.
//!
//! Upstream files: `pkg/apis/core/validation/events.go`,
//! `pkg/apis/events/v1/conversion.go`, `pkg/registry/core/event/strategy.go`.

use serde_json::{json, Value};

use crate::auth::UserInfo;
use crate::defs::{core_to_events, events_to_core, get_str, ResourceDef};
use crate::request::Req;
use crate::status::{ApiError, FieldError};
use crate::store::meta_str;
use crate::validation::{qualified_name_errors, valid_dns_subdomain};
use crate::writes::{Patchable, ResourceKind};

/// Events of either API, for the write pipeline.
pub(crate) struct Events;

/// Whether `def` is the `events.k8s.io/v1` API (validated strictly).
fn events_api(def: &ResourceDef) -> bool {
    def.group == "events.k8s.io"
}

impl ResourceKind for Events {
    /// The stored (core/v1) form.
    fn decode(
        &self,
        _r: &Req,
        def: &ResourceDef,
        body: Value,
    ) -> Result<(Value, Vec<String>), ApiError> {
        let core = if events_api(def) {
            events_to_core(&body)
        } else {
            body
        };
        Ok((core, vec![]))
    }

    fn validate(&self, def: &ResourceDef, obj: &Value) -> Result<Vec<FieldError>, ApiError> {
        Ok(validate_event(obj, events_api(def)))
    }

    fn finalize(&self, _user: &UserInfo, obj: &mut Value) -> Result<(), ApiError> {
        obj["apiVersion"] = json!("v1");
        obj["kind"] = json!("Event");
        Ok(())
    }
}

impl Patchable for Events {
    fn check_patched(
        &self,
        _r: &Req,
        _def: &ResourceDef,
        _patched: &mut Value,
    ) -> Result<Vec<String>, ApiError> {
        Ok(vec![])
    }

    /// `ValidateEventUpdate`: validation as on create, and for
    /// `events.k8s.io/v1` every field but the series immutable.
    fn update(
        &self,
        _r: &Req,
        def: &ResourceDef,
        stored: &Value,
        patched: Value,
        mut errs: Vec<FieldError>,
    ) -> Result<(Value, Vec<FieldError>), ApiError> {
        let strict = events_api(def);
        let mut core = if strict {
            events_to_core(&patched)
        } else {
            patched
        };
        errs.extend(validate_event(&core, strict));
        if strict {
            let old_events = core_to_events(stored);
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
        core["apiVersion"] = json!("v1");
        core["kind"] = json!("Event");
        Ok((core, errs))
    }
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
    if !valid_dns_subdomain(ns) {
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
        if !name.is_empty() && !valid_dns_subdomain(name) {
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
