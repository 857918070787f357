//! Writes of the custom resource (`crd.rs` defines it): the hooks of its
//! create and PATCH (JSON patch, merge patch; no strategic merge patch, as
//! for every custom resource) as kube-apiserver runs them: decoding with
//! pruning (unknown fields are errors under `fieldValidation=Strict`,
//! warnings by default), metadata and schema validation, the generation;
//! and the test knob that replaces a stored spec. NamespaceLifecycle and
//! storage (`dryRun=All` stores nothing) are the write pipeline's
//! (`resources.rs`), which runs the hooks; this module must not use it or
//! the handlers.
//!
//! Upstream files: `staging/src/k8s.io/apiextensions-apiserver/pkg/apiserver/customresource_handler.go`
//! (the unstructured decoder, pruning, strict errors),
//! `.../pkg/registry/customresource/strategy.go` (generation, validation),
//! `staging/src/k8s.io/apiserver/pkg/endpoints/handlers/create.go` and
//! `patch.go` (the strict errors' messages).

use serde_json::{json, Value};

use crate::auth::UserInfo;
use crate::crd::{prune_metadata, CRD};
use crate::defs::ResourceDef;
use crate::request::Req;
use crate::status::{self, ApiError, FieldError};
use crate::store::{meta_str, set_meta, Kind};
use crate::validation::{check_object_body, validate_meta};
use crate::writes::{store_update, unknown_field_outcome, Patchable, ResourceKind};
use crate::State;

/// Name and metadata validation of a custom resource
/// (`ValidateObjectMetaAccessor` with `NameIsDNSSubdomain`).
fn meta_errors(obj: &Value) -> Vec<FieldError> {
    match serde_json::from_value::<k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta>(
        obj.get("metadata").cloned().unwrap_or(json!({})),
    ) {
        Ok(m) => validate_meta(&m, true),
        Err(e) => vec![FieldError::invalid(
            "metadata",
            "\"object\"".into(),
            &e.to_string(),
        )],
    }
}

/// Pruning as the decoder does it; `Err` for unknown fields under
/// `fieldValidation=Strict`, otherwise the warnings to send.
fn decode_pruned(
    r: &Req,
    def: &ResourceDef,
    obj: &mut Value,
    create: bool,
) -> Result<Vec<String>, ApiError> {
    let mut unknown = prune_metadata(obj);
    unknown.extend(CRD.prune(obj));
    unknown.sort();
    unknown_field_outcome(r, def, &unknown, create)
}

/// Name, metadata and schema validation (with the CEL rules).
fn validation_errors(obj: &Value) -> Vec<FieldError> {
    let mut errs = meta_errors(obj);
    errs.extend(CRD.validate(obj));
    errs
}

/// Validation after pruning: metadata, then the schema and its rules.
fn validate(obj: &Value) -> Result<(), ApiError> {
    let errs = validation_errors(obj);
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

/// The next generation when the spec changed.
fn bump_generation(stored: &Value, obj: &mut Value) {
    if obj.get("spec") != stored.get("spec") {
        let g = stored["metadata"]["generation"].as_i64().unwrap_or(1) + 1;
        set_meta(obj, "generation", json!(g));
    }
}

/// The custom resource, for the write pipeline.
pub(crate) struct Custom;

impl ResourceKind for Custom {
    fn check_body(
        &self,
        r: &Req,
        def: &ResourceDef,
        body: &mut Value,
    ) -> Result<Vec<String>, ApiError> {
        check_object_body(body, &def.api_version(), def.kind_name)?;
        decode_pruned(r, def, body, true)
    }

    fn decode(
        &self,
        _r: &Req,
        _def: &ResourceDef,
        body: Value,
    ) -> Result<(Value, Vec<String>), ApiError> {
        Ok((body, vec![]))
    }

    fn validate(&self, _def: &ResourceDef, obj: &Value) -> Result<Vec<FieldError>, ApiError> {
        Ok(validation_errors(obj))
    }

    fn finalize(&self, _user: &UserInfo, obj: &mut Value) -> Result<(), ApiError> {
        obj["apiVersion"] = json!(CRD.api_version());
        obj["kind"] = json!(CRD.kind);
        set_meta(obj, "generation", json!(1));
        Ok(())
    }
}

/// PATCH of the custom resource: JSON patch and merge patch only.
impl Patchable for Custom {
    fn check_patched(
        &self,
        r: &Req,
        def: &ResourceDef,
        patched: &mut Value,
    ) -> Result<Vec<String>, ApiError> {
        decode_pruned(r, def, patched, false)
    }

    /// Metadata errors first, alone; then validation; the generation
    /// bumped when the spec changed.
    fn update(
        &self,
        _r: &Req,
        _def: &ResourceDef,
        stored: &Value,
        mut patched: Value,
        errs: Vec<FieldError>,
    ) -> Result<(Value, Vec<FieldError>), ApiError> {
        if !errs.is_empty() {
            return Ok((patched, errs));
        }
        let errs = validation_errors(&patched);
        if errs.is_empty() {
            bump_generation(stored, &mut patched);
        }
        Ok((patched, errs))
    }
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
    bump_generation(&stored, &mut obj);
    Ok(store_update(st, Kind::Revocation, &stored, obj, false))
}
