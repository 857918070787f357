//! The write pipeline: create, PATCH and delete of every served kind, in
//! kube-apiserver's order (`dryRun`, decoding, `rest.BeforeCreate`'s
//! metadata, NamespaceLifecycle, admission, validation, uniqueness and
//! storage for a create; the patch types, the URL's name and namespace, the
//! optimistic lock, `rest.BeforeUpdate`'s metadata rules, validation and
//! no-op detection for a PATCH). What differs between kinds comes from
//! their hooks ([`ResourceKind`], [`Patchable`] in `writes.rs`); which kind
//! is served for which write is decided here, in [`creatable`] and
//! [`patchable`].
//!
//! It uses the kinds' modules; they never use it (nor the handlers).
//!
//! Upstream files: `staging/src/k8s.io/apiserver/pkg/endpoints/handlers/create.go`,
//! `patch.go` and `delete.go`, `staging/src/k8s.io/apiserver/pkg/registry/rest/create.go`
//! and `update.go` (`BeforeCreate`, `BeforeUpdate`),
//! `staging/src/k8s.io/apiserver/pkg/registry/generic/registry/store.go`,
//! `staging/src/k8s.io/apiserver/pkg/storage/names/generate.go`,
//! `staging/src/k8s.io/apiserver/pkg/admission/plugin/namespace/lifecycle/admission.go`.

use std::sync::Arc;

use http::Response;
use serde_json::Value;

use crate::auth::UserInfo;
use crate::body::Body;
use crate::defs::{present, ResourceDef};
use crate::patch::Strategies;
use crate::request::{dry_run, parse_body, respond, respond_warned, validation_directive, Req};
use crate::status::{self, ApiError, FieldError};
use crate::store::{meta_str, set_meta, Kind};
use crate::writes::{new_uid, now_time, store_update, Patchable, ResourceKind};
use crate::{csr, custom, events, nodes, secrets, Shared, State};

/// The kinds served for create.
fn creatable(kind: Kind) -> Option<&'static dyn ResourceKind> {
    match kind {
        Kind::Csr => Some(&csr::Csrs),
        Kind::Event => Some(&events::Events),
        Kind::Revocation => Some(&custom::Custom),
        Kind::Node => Some(&nodes::Nodes),
        Kind::Secret => Some(&secrets::Secrets),
        // Pods are put by tests (`ApiServer::set_pod`), not served for writes.
        Kind::Namespace | Kind::Pod => None,
    }
}

/// The kinds served for PATCH.
fn patchable(kind: Kind) -> Option<&'static dyn Patchable> {
    match kind {
        Kind::Event => Some(&events::Events),
        Kind::Revocation => Some(&custom::Custom),
        Kind::Node => Some(&nodes::Nodes),
        Kind::Secret => Some(&secrets::Secrets),
        Kind::Csr | Kind::Namespace | Kind::Pod => None,
    }
}

// ---------------------------------------------------------------- create

/// POST of a new object.
pub(crate) fn create(
    shared: &Arc<Shared>,
    def: &'static ResourceDef,
    r: &Req,
) -> Result<Response<Body>, ApiError> {
    let dry = dry_run(r)?;
    let Some(kind) = creatable(def.kind) else {
        return Err(status::method_not_allowed());
    };
    let mut body = parse_body(r)?;
    let mut warnings = kind.check_body(r, def, &mut body)?;
    prepare_meta(r, def, &mut body)?;
    let (obj, more) = kind.decode(r, def, body)?;
    warnings.extend(more);
    let mut st = shared.state.lock().unwrap();
    let (stored, wake) = admit_and_store(&mut st, def, kind, &r.user, obj, dry)?;
    drop(st);
    if wake {
        shared.controller.notify_one();
    }
    Ok(respond_warned(
        201,
        &present(def, &stored, false),
        &warnings,
    ))
}

/// The second half of a create, for an object decoded with its metadata
/// prepared (by a POST, or a test fixture that goes through the API's
/// checks): NamespaceLifecycle, admission, validation, uniqueness and
/// storage, by `user`. Returns the stored object (on a dry run, the object
/// as it would be stored) and whether the CSR controllers have work.
pub(crate) fn create_decoded(
    st: &mut State,
    def: &'static ResourceDef,
    user: &UserInfo,
    obj: Value,
    dry: bool,
) -> Result<(Value, bool), ApiError> {
    let Some(kind) = creatable(def.kind) else {
        return Err(status::method_not_allowed());
    };
    admit_and_store(st, def, kind, user, obj, dry)
}

fn admit_and_store(
    st: &mut State,
    def: &'static ResourceDef,
    kind: &dyn ResourceKind,
    user: &UserInfo,
    mut obj: Value,
    dry: bool,
) -> Result<(Value, bool), ApiError> {
    let ns = meta_str(&obj, "namespace").to_string();
    let name = meta_str(&obj, "name").to_string();
    if def.namespaced {
        namespace_exists(st, &ns)?;
    }
    kind.admit(user, &obj)?;
    let errs = kind.validate(def, &obj)?;
    if !errs.is_empty() {
        return Err(status::invalid(def.group, def.kind_name, &name, &errs));
    }
    kind.validate_admission(&obj)?;
    kind.finalize(user, &mut obj)?;
    if st.store.get(def.kind, &ns, &name).is_some() {
        return Err(status::already_exists(def.group, def.plural, &name));
    }
    if dry {
        return Ok((obj, false));
    }
    let stored = st.store.create(def.kind, obj);
    let wake = kind.after_create(st, &stored);
    Ok((stored, wake))
}

/// `rest.BeforeCreate`'s metadata handling: name generation, namespace
/// checks, system fields.
fn prepare_meta(r: &Req, def: &ResourceDef, v: &mut Value) -> Result<(), ApiError> {
    if !v.get("metadata").is_some_and(Value::is_object) {
        set_meta(v, "name", Value::Null);
        v["metadata"].as_object_mut().unwrap().remove("name");
    }
    if def.namespaced {
        let body_ns = meta_str(v, "namespace").to_string();
        if !body_ns.is_empty() && body_ns != r.attrs.namespace {
            return Err(status::bad_request("the namespace of the provided object does not match the namespace sent on the request"));
        }
        set_meta(v, "namespace", Value::String(r.attrs.namespace.clone()));
    } else if let Some(m) = v["metadata"].as_object_mut() {
        m.remove("namespace");
    }
    if meta_str(v, "name").is_empty() {
        let g = meta_str(v, "generateName").to_string();
        if !g.is_empty() {
            set_meta(v, "name", Value::String(generate_name(&g)));
        }
    }
    let rv = meta_str(v, "resourceVersion");
    if !rv.is_empty() && rv != "0" {
        return Err(status::server_error(
            500,
            "resourceVersion should not be set on objects to be created",
        ));
    }
    let m = v["metadata"].as_object_mut().unwrap();
    m.insert("uid".into(), Value::String(new_uid()));
    m.insert(
        "creationTimestamp".into(),
        serde_json::to_value(now_time()).unwrap(),
    );
    m.remove("resourceVersion");
    m.remove("deletionTimestamp");
    m.remove("deletionGracePeriodSeconds");
    m.remove("managedFields");
    Ok(())
}

/// `names.SimpleNameGenerator`: prefix + 5 random characters.
fn generate_name(prefix: &str) -> String {
    const ALPHA: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut buf = [0u8; 5];
    openssl::rand::rand_bytes(&mut buf).unwrap();
    let suffix: String = buf
        .iter()
        .map(|b| ALPHA[usize::from(*b) % ALPHA.len()] as char)
        .collect();
    let max = 63 - 5;
    let p = if prefix.len() > max {
        &prefix[..max]
    } else {
        prefix
    };
    format!("{p}{suffix}")
}

/// NamespaceLifecycle: writes only in an existing namespace.
fn namespace_exists(st: &State, ns: &str) -> Result<(), ApiError> {
    if st.store.get(Kind::Namespace, "", ns).is_some() {
        Ok(())
    } else {
        Err(status::not_found("", "namespaces", ns))
    }
}

// ---------------------------------------------------------------- patch

/// A PATCH body's type (its Content-Type).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PatchType {
    Json,
    Merge,
    Strategic,
}

const JSON_PATCH: &str = "application/json-patch+json";
const MERGE_PATCH: &str = "application/merge-patch+json";
const STRATEGIC_PATCH: &str = "application/strategic-merge-patch+json";

/// PATCH of an object (or of `nodes/<name>/status`).
pub(crate) fn patch(
    shared: &Arc<Shared>,
    def: &'static ResourceDef,
    r: &Req,
) -> Result<Response<Body>, ApiError> {
    let ct = r
        .headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    let ct_base = ct.split(';').next().unwrap_or("").trim();
    // Server-side apply (application/apply-patch+yaml) is not served.
    let accepted: &[&str] = if def.builtin {
        &[JSON_PATCH, MERGE_PATCH, STRATEGIC_PATCH]
    } else {
        &[JSON_PATCH, MERGE_PATCH]
    };
    if !accepted.contains(&ct_base) {
        return Err(status::unsupported_patch(accepted));
    }
    let pt = match ct_base {
        JSON_PATCH => PatchType::Json,
        MERGE_PATCH => PatchType::Merge,
        _ => PatchType::Strategic,
    };
    if r.body.len() > 3 * 1024 * 1024 {
        return Err(status::too_large());
    }
    let dry = dry_run(r)?;
    validation_directive(r)?;
    let Some(kind) = patchable(def.kind) else {
        return Err(status::method_not_allowed());
    };
    let mut st = shared.state.lock().unwrap();
    let Some(stored) = st
        .store
        .get(def.kind, &r.attrs.namespace, &r.attrs.name)
        .cloned()
    else {
        return Err(status::not_found(def.group, def.plural, &r.attrs.name));
    };
    let presented = present(def, &stored, false);
    let mut patched = apply_patch(pt, &presented, r, kind.strategies())?;
    let warnings = kind.check_patched(r, def, &mut patched)?;
    check_identity(def, &stored, &patched, r)?;
    kind.admit_update(&r.user, &stored, &patched)?;
    let errs = before_update(&stored, &mut patched);
    let (new, errs) = kind.update(r, def, &stored, patched, errs)?;
    if !errs.is_empty() {
        return Err(status::invalid(
            def.group,
            def.kind_name,
            &r.attrs.name,
            &errs,
        ));
    }
    let out = store_update(&mut st, def.kind, &stored, new, dry);
    Ok(respond_warned(200, &present(def, &out, false), &warnings))
}

/// Applies the request's patch to the object as presented.
fn apply_patch(
    pt: PatchType,
    current: &Value,
    r: &Req,
    strategies: Strategies,
) -> Result<Value, ApiError> {
    let body: Value = serde_json::from_slice(&r.body)
        .map_err(|e| status::bad_request(format!("error decoding patch: {e}")))?;
    match pt {
        PatchType::Merge => {
            if !body.is_object() {
                return Err(status::bad_request(
                    "error decoding patch: a merge patch must be a JSON object",
                ));
            }
            Ok(crate::patch::merge(current, &body))
        }
        PatchType::Json => crate::patch::json_patch(current, &body).map_err(status::unprocessable),
        PatchType::Strategic => {
            crate::patch::strategic_merge(current, &body, strategies).map_err(status::unknown)
        }
    }
}

/// `checkName` and the optimistic lock: the patched object must keep the
/// URL's name and namespace, and a resourceVersion it carries must be the
/// current one.
fn check_identity(
    def: &ResourceDef,
    stored: &Value,
    patched: &Value,
    r: &Req,
) -> Result<(), ApiError> {
    let name = meta_str(patched, "name");
    if name != r.attrs.name {
        return Err(status::bad_request(format!(
            "the name of the object ({name}) does not match the name on the URL ({})",
            r.attrs.name
        )));
    }
    let ns = meta_str(patched, "namespace");
    if !r.attrs.namespace.is_empty() && !ns.is_empty() && ns != r.attrs.namespace {
        return Err(status::bad_request(format!(
            "the namespace of the object ({ns}) does not match the namespace on the URL ({})",
            r.attrs.namespace
        )));
    }
    let rv = meta_str(patched, "resourceVersion");
    if !rv.is_empty() && rv != meta_str(stored, "resourceVersion") {
        return Err(conflict(def, &r.attrs.name));
    }
    Ok(())
}

/// `rest.BeforeUpdate`'s metadata rules: generation, creationTimestamp and
/// an empty uid are restored; a changed uid is immutable (422).
fn before_update(stored: &Value, new: &mut Value) -> Vec<FieldError> {
    let mut errs = vec![];
    let uid = meta_str(new, "uid").to_string();
    let old_uid = meta_str(stored, "uid").to_string();
    if uid.is_empty() {
        set_meta(new, "uid", Value::String(old_uid));
    } else if uid != old_uid {
        errs.push(FieldError::invalid(
            "metadata.uid",
            format!("{uid:?}"),
            "field is immutable",
        ));
    }
    for f in ["creationTimestamp", "generation"] {
        match stored["metadata"].get(f) {
            Some(v) => set_meta(new, f, v.clone()),
            None => {
                if let Some(m) = new.get_mut("metadata").and_then(Value::as_object_mut) {
                    m.remove(f);
                }
            }
        }
    }
    errs
}

/// `errors.NewConflict` for a stale resourceVersion.
fn conflict(def: &ResourceDef, name: &str) -> ApiError {
    let mut e = status::already_exists(def.group, def.plural, name);
    e.code = 409;
    if let status::ErrorBody::Status(s) = &mut e.body {
        s.reason = Some("Conflict".into());
        s.message = Some(format!(
                "Operation cannot be fulfilled on {} {name:?}: the object has been modified; please apply your changes to the latest version and try again",
                status::qualified(def.group, def.plural)
            ));
    }
    e
}

// ---------------------------------------------------------------- delete

/// DELETE of an object (Namespaces and Pods are not deleted here).
pub(crate) fn delete(
    shared: &Arc<Shared>,
    def: &'static ResourceDef,
    r: &Req,
) -> Result<Response<Body>, ApiError> {
    // A pod's deletion is graceful upstream (kubelet finishes it); not
    // served here.
    if matches!(def.kind, Kind::Namespace | Kind::Pod) {
        return Err(status::method_not_allowed());
    }
    let dry = dry_run(r)?;
    let mut st = shared.state.lock().unwrap();
    let Some(existing) = st
        .store
        .get(def.kind, &r.attrs.namespace, &r.attrs.name)
        .cloned()
    else {
        return Err(status::not_found(def.group, def.plural, &r.attrs.name));
    };
    let gone = if dry {
        existing
    } else {
        st.store
            .delete(def.kind, &r.attrs.namespace, &r.attrs.name)
            .unwrap()
    };
    Ok(respond(200, &present(def, &gone, false)))
}
