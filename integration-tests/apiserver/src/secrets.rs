//! core/v1 Secrets, as the agent's CA source reads them: the hooks of
//! their create (with `stringData` merged into `data`, as the conversion
//! does) and PATCH, validated as `ValidateSecret` does: a DNS-1123
//! subdomain name, data keys of `IsConfigMapKey` form, at most 1 MiB of
//! data in total, `type` defaulted to Opaque and immutable, and
//! `immutable: true` honoured. Delete, list and watch are the generic ones
//! (with the `metadata.name` and `type` field selectors); what RBAC lets a
//! caller list is authz's. The write pipeline (`resources.rs`) runs the
//! hooks; this module must not use it or the handlers.
//!
//! Upstream files: `pkg/apis/core/validation/validation.go`
//! (`ValidateSecret`, `ValidateSecretUpdate`), `pkg/apis/core/types.go`
//! (`MaxSecretSize`), `pkg/registry/core/secret/strategy.go`,
//! `staging/src/k8s.io/apimachinery/pkg/util/validation/validation.go`
//! (`IsConfigMapKey`).

use base64::Engine;
use serde_json::{json, Value};

use crate::auth::UserInfo;
use crate::defs::ResourceDef;
use crate::request::Req;
use crate::status::{ApiError, FieldError, FieldErrorType};
use crate::store::meta_str;
use crate::validation::valid_dns_subdomain;
use crate::writes::{Patchable, ResourceKind};

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

/// Secrets, for the write pipeline.
pub(crate) struct Secrets;

impl ResourceKind for Secrets {
    /// `stringData` folded into `data`; `type` defaulted to Opaque.
    fn decode(
        &self,
        _r: &Req,
        _def: &ResourceDef,
        mut body: Value,
    ) -> Result<(Value, Vec<String>), ApiError> {
        fold_string_data(&mut body);
        if body
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or("")
            .is_empty()
        {
            body["type"] = json!("Opaque");
        }
        Ok((body, vec![]))
    }

    fn validate(&self, _def: &ResourceDef, obj: &Value) -> Result<Vec<FieldError>, ApiError> {
        Ok(validate(obj))
    }

    fn finalize(&self, _user: &UserInfo, obj: &mut Value) -> Result<(), ApiError> {
        obj["apiVersion"] = json!("v1");
        obj["kind"] = json!("Secret");
        Ok(())
    }
}

/// PATCH of a Secret: merge and strategic patches treat `data` alike (a
/// map of strings).
impl Patchable for Secrets {
    fn check_patched(
        &self,
        _r: &Req,
        _def: &ResourceDef,
        patched: &mut Value,
    ) -> Result<Vec<String>, ApiError> {
        fold_string_data(patched);
        Ok(vec![])
    }

    /// `ValidateSecretUpdate`: `type` is immutable, and so are `data` and
    /// `immutable` once `immutable` is true.
    fn update(
        &self,
        _r: &Req,
        _def: &ResourceDef,
        stored: &Value,
        patched: Value,
        mut errs: Vec<FieldError>,
    ) -> Result<(Value, Vec<FieldError>), ApiError> {
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
        Ok((patched, errs))
    }
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
