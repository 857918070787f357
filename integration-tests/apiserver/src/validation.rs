//! The validation rules several kinds share, as apimachinery has them:
//! name forms (DNS labels and subdomains, path segments, qualified names,
//! label keys and values), `ValidateObjectMeta`'s name, label and
//! annotation checks, the decoder's `apiVersion`/`kind` check and error,
//! and finding the fields a typed decoding dropped (what
//! `fieldValidation=Strict` reports).
//!
//! It is a leaf: it uses only `status` (the errors it builds), never a
//! kind's module, the request pipeline or the authorizers.
//!
//! Upstream files: `staging/src/k8s.io/apimachinery/pkg/util/validation/validation.go`,
//! `.../pkg/api/validation/objectmeta.go`, `.../pkg/api/validation/path/name.go`,
//! `staging/src/k8s.io/apimachinery/pkg/runtime/serializer/json/json.go`
//! (the decode errors).

use serde_json::Value;

use crate::status::{bad_request, ApiError, FieldError, FieldErrorType};

// ---------------------------------------------------------------- name forms

pub(crate) fn valid_label_key(k: &str) -> bool {
    let (prefix, name) = match k.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, k),
    };
    if let Some(p) = prefix {
        if p.is_empty() || p.len() > 253 || !p.split('.').all(valid_dns_label) {
            return false;
        }
    }
    valid_label_value(name) && !name.is_empty()
}

pub(crate) fn valid_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

pub(crate) fn valid_dns_subdomain(s: &str) -> bool {
    !s.is_empty() && s.len() <= 253 && s.split('.').all(valid_dns_label)
}

/// `path.IsValidPathSegmentName`: the messages for a name that cannot be
/// a URL path segment.
pub(crate) fn valid_path_segment_name(name: &str) -> Vec<String> {
    if name == "." || name == ".." {
        return vec![format!("may not be '{name}'")];
    }
    ["/", "%"]
        .iter()
        .filter(|bad| name.contains(**bad))
        .map(|bad| format!("may not contain '{bad}'"))
        .collect()
}

/// `validation.IsQualifiedName`: the messages for a value that is not an
/// optionally prefixed qualified name (label keys, event controllers).
pub(crate) fn qualified_name_errors(value: &str) -> Vec<String> {
    const REGEX_MSG: &str = "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')";
    let mut errs = vec![];
    let parts: Vec<&str> = value.split('/').collect();
    let name = match parts.as_slice() {
        [n] => *n,
        [prefix, n] => {
            if prefix.is_empty() {
                errs.push("prefix part must be non-empty".to_string());
            } else if !valid_dns_subdomain(prefix) {
                errs.push("prefix part a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')".to_string());
            }
            n
        }
        _ => {
            return vec!["a qualified name must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]') with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')".to_string()];
        }
    };
    if name.is_empty() {
        errs.push("name part must be non-empty".to_string());
    } else if name.len() > 63 {
        errs.push("name part must be no more than 63 characters".to_string());
    }
    let alnum = |b: Option<&u8>| b.is_some_and(u8::is_ascii_alphanumeric);
    let regex_ok = alnum(name.as_bytes().first())
        && alnum(name.as_bytes().last())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
    if !regex_ok {
        errs.push(REGEX_MSG.to_string());
    }
    errs
}

/// A label value: empty, or up to 63 of `[A-Za-z0-9_.-]`, alphanumeric at
/// both ends.
pub(crate) fn valid_label_value(v: &str) -> bool {
    if v.is_empty() {
        return true;
    }
    let ok = |b: u8| b.is_ascii_alphanumeric();
    v.len() <= 63
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
        && ok(v.as_bytes()[0])
        && ok(v.as_bytes()[v.len() - 1])
}

// ---------------------------------------------------------------- objects

pub(crate) fn decode_error(kind: &str, version: &str, e: &str) -> ApiError {
    bad_request(format!(
        "{kind} in version {version:?} cannot be handled as a {kind}: {e}"
    ))
}

/// A body's `apiVersion`/`kind` must be absent or name this resource.
pub(crate) fn check_type_meta(
    obj: &serde_json::Map<String, Value>,
    api_version: &str,
    kind: &str,
) -> Result<(), ApiError> {
    let av = obj.get("apiVersion").and_then(Value::as_str).unwrap_or("");
    let k = obj.get("kind").and_then(Value::as_str).unwrap_or("");
    if (!av.is_empty() && av != api_version) || (!k.is_empty() && k != kind) {
        let (g, ver) = av.rsplit_once('/').unwrap_or(("", av));
        let _ = g;
        return Err(bad_request(format!(
            "{k} in version {ver:?} cannot be handled as a {kind}: no kind {k:?} is registered for version {av:?} in scheme \"pkg/api/legacyscheme/scheme.go:30\""
        )));
    }
    Ok(())
}

/// A create body must be a JSON object (else the decoder's 400) whose
/// `apiVersion`/`kind` are absent or name this resource.
pub(crate) fn check_object_body(
    body: &Value,
    api_version: &str,
    kind: &str,
) -> Result<(), ApiError> {
    let obj = body
        .as_object()
        .ok_or_else(|| bad_request("the body of the request was in an unknown format"))?;
    check_type_meta(obj, api_version, kind)
}

/// `metadata.name`/`generateName` checks of `ValidateObjectMeta` plus the
/// path-segment rule of `ValidateObjectMetaAccessor`.
pub(crate) fn validate_meta(
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    dns_subdomain_name: bool,
) -> Vec<FieldError> {
    let mut errs = vec![];
    let name = meta.name.as_deref().unwrap_or("");
    if name.is_empty() {
        errs.push(FieldError::required(
            "metadata.name",
            "name or generateName is required",
        ));
    } else {
        for msg in valid_path_segment_name(name) {
            errs.push(FieldError::invalid(
                "metadata.name",
                format!("{name:?}"),
                &msg,
            ));
        }
        if dns_subdomain_name && !valid_dns_subdomain(name) {
            errs.push(FieldError::invalid(
                "metadata.name",
                format!("{name:?}"),
                "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')",
            ));
        }
    }
    if let Some(labels) = &meta.labels {
        for (k, v) in labels {
            if !valid_label_value(v) {
                errs.push(FieldError::invalid(
                    "metadata.labels",
                    format!("{v:?}"),
                    "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')",
                ));
            }
            if !valid_label_key(k) {
                errs.push(FieldError::invalid(
                    "metadata.labels",
                    format!("{k:?}"),
                    "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')",
                ));
            }
        }
    }
    // ValidateAnnotations: qualified-name keys (lower-cased), 256 KiB in all.
    if let Some(annotations) = &meta.annotations {
        let mut total = 0;
        for (k, v) in annotations {
            total += k.len() + v.len();
            for m in qualified_name_errors(&k.to_lowercase()) {
                errs.push(FieldError::invalid(
                    "metadata.annotations",
                    format!("{k:?}"),
                    &m,
                ));
            }
        }
        if total > 256 * 1024 {
            errs.push(FieldError {
                field: "metadata.annotations".into(),
                typ: FieldErrorType::TooLong(256 * 1024),
                detail: String::new(),
            });
        }
    }
    errs
}

/// Fields of `input` a typed round trip (`known`) dropped: what
/// `fieldValidation=Strict` reports as unknown.
pub(crate) fn unknown_fields(input: &Value, known: &Value, prefix: &str, out: &mut Vec<String>) {
    if let (Some(i), Some(k)) = (input.as_array(), known.as_array()) {
        if i.len() == k.len() {
            for (n, (a, b)) in i.iter().zip(k).enumerate() {
                unknown_fields(a, b, &format!("{prefix}[{n}]"), out);
            }
        }
        return;
    }
    let (Some(i), Some(k)) = (input.as_object(), known.as_object()) else {
        return;
    };
    for (key, v) in i {
        let path = if prefix.is_empty() {
            key.clone()
        } else {
            format!("{prefix}.{key}")
        };
        match k.get(key) {
            None => {
                let empty = v.is_null()
                    || v.as_object().is_some_and(serde_json::Map::is_empty)
                    || v.as_array().is_some_and(Vec::is_empty);
                if !empty {
                    out.push(path);
                }
            }
            Some(kv) => unknown_fields(v, kv, &path, out),
        }
    }
}
