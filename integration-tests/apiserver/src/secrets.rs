//! core/v1 Secrets, as the agent's CA source reads them: create (with
//! `stringData` merged into `data`, as the conversion does), patch and
//! delete, validated as `ValidateSecret` does: a DNS-1123 subdomain name,
//! data keys of `IsConfigMapKey` form, at most 1 MiB of data in total,
//! `type` defaulted to Opaque and immutable, and `immutable: true` honoured.
//! List and watch are the generic ones (with the `metadata.name` and `type`
//! field selectors); what RBAC lets a caller list is authz's.
//!
//! Upstream files: `pkg/apis/core/validation/validation.go`
//! (`ValidateSecret`, `ValidateSecretUpdate`), `pkg/apis/core/types.go`
//! (`MaxSecretSize`), `pkg/registry/core/secret/strategy.go`,
//! `staging/src/k8s.io/apimachinery/pkg/util/validation/validation.go`
//! (`IsConfigMapKey`).

use std::sync::Arc;

use base64::Engine;
use http::Response;
use serde_json::{json, Value};

use super::body::Body;
use super::handler::Req;
use super::resources::{
    apply_patch, before_update, check_identity, namespace_exists, parse_body, prepare_meta,
    present, respond_warned, store_update, PatchType, ResourceDef,
};
use super::selectors::valid_dns_subdomain;
use super::status::{self, ApiError, FieldError, FieldErrorType};
use super::store::{meta_str, Kind};
use super::Shared;

/// `core.MaxSecretSize`.
const MAX_SECRET_SIZE: usize = 1024 * 1024;
const CONFIG_KEY_MSG: &str = "a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')";

/// `IsConfigMapKey`'s messages for `key`.
fn config_key_errors(key: &str) -> Vec<String> {
    let mut out = Vec::new();
    if key.len() > 253 {
        out.push("must be no more than 253 characters".to_string());
    }
    if key.is_empty()
        || !key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
    {
        out.push(CONFIG_KEY_MSG.to_string());
    }
    if key == "." {
        out.push("must not be '.'".to_string());
    } else if key == ".." {
        out.push("must not be '..'".to_string());
    } else if key.starts_with("..") {
        out.push("must not start with '..'".to_string());
    }
    out
}

/// `stringData` folded into `data` (base64), as the v1 conversion does.
fn fold_string_data(v: &mut Value) {
    let Some(obj) = v.as_object_mut() else { return };
    let Some(Value::Object(sd)) = obj.remove("stringData") else {
        return;
    };
    obj.entry("data").or_insert_with(|| json!({}));
    let data = obj["data"].as_object_mut();
    if let Some(data) = data {
        for (k, val) in sd {
            let text = val.as_str().unwrap_or_default();
            data.insert(
                k,
                Value::String(base64::engine::general_purpose::STANDARD.encode(text)),
            );
        }
    }
}

/// `ValidateSecret` on the stored form.
fn validate(v: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let name = meta_str(v, "name");
    if name.is_empty() {
        errs.push(FieldError::required(
            "metadata.name",
            "name or generateName is required",
        ));
    } else if !valid_dns_subdomain(name) {
        errs.push(FieldError::invalid(
            "metadata.name",
            name.to_string(),
            "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')",
        ));
    }
    let mut total = 0usize;
    if let Some(data) = v.get("data").and_then(Value::as_object) {
        for (k, val) in data {
            for msg in config_key_errors(k) {
                errs.push(FieldError::invalid(&format!("data[{k}]"), k.clone(), &msg));
            }
            let bytes = val
                .as_str()
                .and_then(|s| base64::engine::general_purpose::STANDARD.decode(s).ok());
            match bytes {
                Some(b) => total += b.len(),
                None => errs.push(FieldError::invalid(
                    &format!("data[{k}]"),
                    "<value>".into(),
                    "illegal base64 data",
                )),
            }
        }
    }
    if total > MAX_SECRET_SIZE {
        errs.push(FieldError {
            field: "data".into(),
            typ: FieldErrorType::TooLong(MAX_SECRET_SIZE),
            detail: String::new(),
        });
    }
    errs
}

/// POST of a Secret.
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
    super::csr::check_type_meta(obj, "v1", "Secret")?;
    prepare_meta(r, def, &mut body)?;
    fold_string_data(&mut body);
    if body
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("")
        .is_empty()
    {
        body["type"] = json!("Opaque");
    }
    namespace_exists(&shared.state.lock().unwrap(), &r.attrs.namespace)?;
    let name = meta_str(&body, "name").to_string();
    let errs = validate(&body);
    if !errs.is_empty() {
        return Err(status::invalid("", "Secret", &name, &errs));
    }
    let mut st = shared.state.lock().unwrap();
    if st
        .store
        .get(Kind::Secret, &r.attrs.namespace, &name)
        .is_some()
    {
        return Err(status::already_exists("", "secrets", &name));
    }
    body["apiVersion"] = json!("v1");
    body["kind"] = json!("Secret");
    let stored = if dry {
        body
    } else {
        st.store.create(Kind::Secret, body)
    };
    Ok(respond_warned(201, &present(def, &stored, false), &[]))
}

/// PATCH of a Secret (merge and strategic patches treat `data` alike: a
/// map of strings).
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
        .get(Kind::Secret, &r.attrs.namespace, &r.attrs.name)
        .cloned()
    else {
        return Err(status::not_found("", "secrets", &r.attrs.name));
    };
    let presented = present(def, &stored, false);
    let mut patched = apply_patch(pt, &presented, r, super::patch::no_strategy)?;
    fold_string_data(&mut patched);
    check_identity(def, &stored, &patched, r)?;
    let mut errs = before_update(&stored, &mut patched);
    errs.extend(validate(&patched));
    if patched.get("type") != stored.get("type") {
        errs.push(FieldError::invalid(
            "type",
            patched["type"].as_str().unwrap_or_default().to_string(),
            "field is immutable",
        ));
    }
    if stored.get("immutable").and_then(Value::as_bool) == Some(true)
        && (patched.get("data") != stored.get("data")
            || patched.get("immutable") != stored.get("immutable"))
    {
        errs.push(FieldError::invalid(
            "data",
            "<value>".into(),
            "field is immutable when `immutable` is set",
        ));
    }
    if !errs.is_empty() {
        return Err(status::invalid("", "Secret", &r.attrs.name, &errs));
    }
    let out = store_update(&mut st, Kind::Secret, &stored, patched, dry);
    Ok(respond_warned(200, &present(def, &out, false), &[]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_keys_as_upstream() {
        assert!(config_key_errors("ca1.crt").is_empty());
        assert!(!config_key_errors("a/b").is_empty());
        assert!(!config_key_errors("..data").is_empty());
        assert!(!config_key_errors("").is_empty());
        assert!(config_key_errors(".hidden").is_empty());
    }
}
