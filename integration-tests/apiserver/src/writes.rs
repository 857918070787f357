//! The contract between the write pipeline (`resources.rs`) and the kinds
//! it serves (`csr.rs`, `nodes.rs`, `secrets.rs`, `events.rs`,
//! `custom.rs`): the hooks a kind gives ([`ResourceKind`] for create,
//! [`Patchable`] for PATCH), and the pieces of kube-apiserver's generic
//! registry those hooks share: the decoder's answer to unknown fields under
//! `fieldValidation`, storing an update with no-op detection, uids and
//! timestamps.
//!
//! The pipeline decides the order of the steps; a kind only fills them in.
//! This module must not use the pipeline, the handlers or any kind's
//! module: the kinds implement it, the pipeline calls it.
//!
//! Upstream files: `staging/src/k8s.io/apiserver/pkg/registry/rest/create.go`
//! and `update.go` (`RESTCreateStrategy`, `RESTUpdateStrategy`),
//! `staging/src/k8s.io/apiserver/pkg/endpoints/handlers/create.go` and
//! `patch.go` (the strict decoding errors).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde_json::Value;

use crate::auth::UserInfo;
use crate::defs::ResourceDef;
use crate::patch::{no_strategy, Strategies};
use crate::request::{validation_directive, Req};
use crate::status::{self, ApiError, FieldError};
use crate::store::{meta_str, set_meta, Kind};
use crate::validation::{check_object_body, unknown_fields};
use crate::State;

/// What a kind does in a create, in the order the pipeline runs the hooks:
/// [`check_body`](ResourceKind::check_body), then `rest.BeforeCreate`'s
/// metadata (the pipeline's), [`decode`](ResourceKind::decode), then under
/// the storage lock NamespaceLifecycle for namespaced kinds (the
/// pipeline's), [`admit`](ResourceKind::admit),
/// [`validate`](ResourceKind::validate) (a 422 `Invalid` when it finds
/// anything), [`validate_admission`](ResourceKind::validate_admission),
/// [`finalize`](ResourceKind::finalize), the name's uniqueness (409, the
/// pipeline's), storage unless `dryRun=All`, and
/// [`after_create`](ResourceKind::after_create).
pub(crate) trait ResourceKind: Sync {
    /// The decoder's checks of the body as sent, before its metadata is
    /// prepared: a JSON object, its `apiVersion` and `kind`, unknown fields
    /// under `fieldValidation` (pruned where the decoder prunes them).
    /// Returns the warnings to send. By default: the object, its
    /// `apiVersion` and `kind`, and no warning (kinds decoded leniently).
    fn check_body(
        &self,
        _r: &Req,
        def: &ResourceDef,
        body: &mut Value,
    ) -> Result<Vec<String>, ApiError> {
        check_object_body(body, &def.api_version(), def.kind_name)?;
        Ok(vec![])
    }

    /// The rest of decoding, with the metadata prepared: conversion to the
    /// stored form, defaulting, the typed round trip. Returns the object
    /// and any further warnings.
    fn decode(
        &self,
        r: &Req,
        def: &ResourceDef,
        body: Value,
    ) -> Result<(Value, Vec<String>), ApiError>;

    /// Mutating admission of the new object (NodeRestriction).
    fn admit(&self, _user: &UserInfo, _obj: &Value) -> Result<(), ApiError> {
        Ok(())
    }

    /// The strategy's validation of the new object: its field errors.
    fn validate(&self, def: &ResourceDef, obj: &Value) -> Result<Vec<FieldError>, ApiError>;

    /// Validating admission of the valid new object
    /// (CertificateSubjectRestriction).
    fn validate_admission(&self, _obj: &Value) -> Result<(), ApiError> {
        Ok(())
    }

    /// The last changes before storage: the requester recorded, the
    /// stored `apiVersion`/`kind`, the first generation.
    fn finalize(&self, _user: &UserInfo, _obj: &mut Value) -> Result<(), ApiError> {
        Ok(())
    }

    /// After the object is stored (never on a dry run), under the storage
    /// lock. Returns whether the CSR controllers have work.
    fn after_create(&self, _st: &mut State, _stored: &Value) -> bool {
        false
    }
}

/// What a kind served for PATCH does, in the order the pipeline runs the
/// hooks: the patch applied to the object as presented (with
/// [`strategies`](Patchable::strategies) for a strategic merge patch),
/// [`check_patched`](Patchable::check_patched), the URL's name and
/// namespace and the optimistic lock (the pipeline's),
/// [`admit_update`](Patchable::admit_update), `rest.BeforeUpdate`'s
/// metadata rules (the pipeline's), [`update`](Patchable::update) (a 422
/// `Invalid` when any field error remains), then storage unless it changes
/// nothing or `dryRun=All`.
pub(crate) trait Patchable: Sync {
    /// The strategic-merge-patch strategies of the kind's lists.
    fn strategies(&self) -> Strategies {
        no_strategy
    }

    /// The decoder's handling of the patched object: conversions, unknown
    /// fields under `fieldValidation`. Returns the warnings to send.
    fn check_patched(
        &self,
        r: &Req,
        def: &ResourceDef,
        patched: &mut Value,
    ) -> Result<Vec<String>, ApiError>;

    /// Mutating admission of the update (NodeRestriction).
    fn admit_update(
        &self,
        _user: &UserInfo,
        _stored: &Value,
        _patched: &Value,
    ) -> Result<(), ApiError> {
        Ok(())
    }

    /// `PrepareForUpdate` and `ValidateUpdate` of the patched object (for
    /// the request's subresource), whose `rest.BeforeUpdate` field errors
    /// are `errs`. Returns the
    /// object to store and every field error to report.
    fn update(
        &self,
        r: &Req,
        def: &ResourceDef,
        stored: &Value,
        patched: Value,
        errs: Vec<FieldError>,
    ) -> Result<(Value, Vec<FieldError>), ApiError>;
}

/// The decoder's answer to the `unknown` fields of a body of `def`'s kind
/// (`fieldValidation`, checked first even when there are none): a 400
/// under `Strict` (`<Kind> in version "v1" cannot be handled as a <Kind>:
/// strict decoding error: unknown field "..."` on create, without the
/// prefix on patch), warnings under `Warn` (the default), nothing under
/// `Ignore`.
pub(crate) fn unknown_field_outcome(
    r: &Req,
    def: &ResourceDef,
    unknown: &[String],
    create: bool,
) -> Result<Vec<String>, ApiError> {
    let directive = validation_directive(r)?;
    if unknown.is_empty() || directive == "Ignore" {
        return Ok(vec![]);
    }
    let list: Vec<String> = unknown
        .iter()
        .map(|f| format!("unknown field {f:?}"))
        .collect();
    if directive == "Warn" {
        return Ok(list);
    }
    let strict = format!("strict decoding error: {}", list.join(", "));
    Err(status::bad_request(if create {
        format!(
            "{kind} in version {v:?} cannot be handled as a {kind}: {strict}",
            kind = def.kind_name,
            v = def.version
        )
    } else {
        strict
    }))
}

/// [`unknown_field_outcome`] for a typed body: the fields of `input` its
/// typed round trip `known` dropped.
pub(crate) fn strict_known(
    r: &Req,
    def: &ResourceDef,
    input: &Value,
    known: &Value,
    create: bool,
) -> Result<Vec<String>, ApiError> {
    let mut unknown = vec![];
    unknown_fields(input, known, "", &mut unknown);
    unknown_field_outcome(r, def, &unknown, create)
}

/// Stores `new` unless it is a dry run or changes nothing (then the stored
/// object comes back and no watch event or resourceVersion is made).
pub(crate) fn store_update(
    st: &mut State,
    kind: Kind,
    stored: &Value,
    mut new: Value,
    dry: bool,
) -> Value {
    set_meta(
        &mut new,
        "resourceVersion",
        Value::String(meta_str(stored, "resourceVersion").to_string()),
    );
    if dry || new == *stored {
        return if dry { new } else { stored.clone() };
    }
    st.store.update(kind, new)
}

/// A random (version 4) uid.
pub(crate) fn new_uid() -> String {
    let mut b = [0u8; 16];
    openssl::rand::rand_bytes(&mut b).unwrap();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// Now, to the second, as `metav1.Now()` is stored.
pub(crate) fn now_time() -> Time {
    Time(k8s_openapi::jiff::Timestamp::from_second(crate::ca::now_unix()).unwrap())
}
