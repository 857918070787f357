//! Writes of the custom resource (`crd.rs` defines it): create and PATCH
//! (JSON patch, merge patch; no strategic merge patch, as for every custom
//! resource), in the order kube-apiserver runs them: decode with pruning
//! (unknown fields are errors under `fieldValidation=Strict`, warnings by
//! default), NamespaceLifecycle, metadata and schema validation, then
//! storage (`dryRun=All` stores nothing).
//!
//! Upstream files: `staging/src/k8s.io/apiextensions-apiserver/pkg/apiserver/customresource_handler.go`
//! (the unstructured decoder, pruning, strict errors),
//! `.../pkg/registry/customresource/strategy.go` (generation, validation),
//! `staging/src/k8s.io/apiserver/pkg/endpoints/handlers/create.go` and
//! `patch.go` (the strict errors' messages).

use std::sync::Arc;

use http::Response;
use serde_json::{json, Value};

use super::body::Body;
use super::crd::{prune_metadata, CRD};
use super::handler::Req;
use super::resources::{
    self, apply_patch, before_update, check_identity, namespace_exists, parse_body, prepare_meta,
    present, respond_warned, validation_directive, PatchType, ResourceDef,
};
use super::status::{self, ApiError, FieldError};
use super::store::{meta_str, set_meta, Kind};
use super::{Shared, State};

/// Name and metadata validation of a custom resource
/// (`ValidateObjectMetaAccessor` with `NameIsDNSSubdomain`).
fn meta_errors(obj: &Value) -> Vec<FieldError> {
    match serde_json::from_value::<k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta>(
        obj.get("metadata").cloned().unwrap_or(json!({})),
    ) {
        Ok(m) => super::csr::validate_meta(&m, true),
        Err(e) => vec![FieldError::invalid(
            "metadata",
            "\"object\"".into(),
            &e.to_string(),
        )],
    }
}

/// Pruning as the decoder does it; `Err` for unknown fields under
/// `fieldValidation=Strict`, otherwise the warnings to send.
fn decode_pruned(r: &Req, obj: &mut Value, create: bool) -> Result<Vec<String>, ApiError> {
    let directive = validation_directive(r)?;
    let mut unknown = prune_metadata(obj);
    unknown.extend(CRD.prune(obj));
    unknown.sort();
    let msgs: Vec<String> = unknown
        .iter()
        .map(|f| format!("unknown field {f:?}"))
        .collect();
    match directive {
        _ if msgs.is_empty() => Ok(vec![]),
        "Strict" => {
            let strict = format!("strict decoding error: {}", msgs.join(", "));
            Err(status::bad_request(if create {
                format!(
                    "{kind} in version {v:?} cannot be handled as a {kind}: {strict}",
                    kind = CRD.kind,
                    v = CRD.version
                )
            } else {
                strict
            }))
        }
        "Ignore" => Ok(vec![]),
        _ => Ok(msgs),
    }
}

/// Validation after pruning: metadata, then the schema and its rules.
fn validate(obj: &Value) -> Result<(), ApiError> {
    let mut errs = meta_errors(obj);
    errs.extend(CRD.validate(obj));
    if errs.is_empty() {
        Ok(())
    } else {
        Err(status::invalid(
            CRD.group,
            CRD.kind,
            meta_str(obj, "name"),
            &errs,
        ))
    }
}

/// Creates a custom resource from a decoded body whose metadata is
/// prepared (`prepare_meta`); `dry` stores nothing.
pub(crate) fn create_object(st: &mut State, mut body: Value, dry: bool) -> Result<Value, ApiError> {
    let ns = meta_str(&body, "namespace").to_string();
    if CRD.namespaced {
        // NamespaceLifecycle admission.
        namespace_exists(st, &ns)?;
    }
    validate(&body)?;
    let name = meta_str(&body, "name").to_string();
    if st.store.get(Kind::Revocation, &ns, &name).is_some() {
        return Err(status::already_exists(CRD.group, CRD.plural, &name));
    }
    body["apiVersion"] = json!(CRD.api_version());
    body["kind"] = json!(CRD.kind);
    set_meta(&mut body, "generation", json!(1));
    Ok(if dry {
        body
    } else {
        st.store.create(Kind::Revocation, body)
    })
}

/// POST of the custom resource.
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
    super::csr::check_type_meta(obj, &def.api_version(), def.kind_name)?;
    let warnings = decode_pruned(r, &mut body, true)?;
    prepare_meta(r, def, &mut body)?;
    let mut st = shared.state.lock().unwrap();
    let stored = create_object(&mut st, body, dry)?;
    Ok(respond_warned(
        201,
        &present(def, &stored, false),
        &warnings,
    ))
}

/// PATCH of the custom resource.
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
        .get(Kind::Revocation, &r.attrs.namespace, &r.attrs.name)
        .cloned()
    else {
        return Err(status::not_found(def.group, def.plural, &r.attrs.name));
    };
    let presented = present(def, &stored, false);
    let mut patched = apply_patch(pt, &presented, r, super::patch::no_strategy)?;
    let warnings = decode_pruned(r, &mut patched, false)?;
    check_identity(def, &stored, &patched, r)?;
    let errs = before_update(&stored, &mut patched);
    if !errs.is_empty() {
        return Err(status::invalid(CRD.group, CRD.kind, &r.attrs.name, &errs));
    }
    validate(&patched)?;
    if patched.get("spec") != stored.get("spec") {
        let g = stored["metadata"]["generation"].as_i64().unwrap_or(1) + 1;
        set_meta(&mut patched, "generation", json!(g));
    }
    let out = resources::store_update(&mut st, Kind::Revocation, &stored, patched, dry);
    Ok(respond_warned(200, &present(def, &out, false), &warnings))
}

/// Replaces the spec of a stored custom resource (test knob), validated.
pub(crate) fn replace_spec(
    st: &mut State,
    namespace: &str,
    name: &str,
    spec: Value,
) -> Result<Value, ApiError> {
    let Some(stored) = st.store.get(Kind::Revocation, namespace, name).cloned() else {
        return Err(status::not_found(CRD.group, CRD.plural, name));
    };
    let mut obj = stored.clone();
    obj["spec"] = spec;
    CRD.prune(&mut obj);
    validate(&obj)?;
    if obj.get("spec") != stored.get("spec") {
        let g = stored["metadata"]["generation"].as_i64().unwrap_or(1) + 1;
        set_meta(&mut obj, "generation", json!(g));
    }
    Ok(resources::store_update(
        st,
        Kind::Revocation,
        &stored,
        obj,
        false,
    ))
}
