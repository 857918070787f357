//! CertificateSigningRequests: kube-apiserver's create validation, and the
//! kube-controller-manager's `csrapproving` and `csrsigning` decisions.

use std::collections::BTreeSet;
use std::time::Duration;

use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use serde_json::Value;

use super::auth::UserInfo;
use super::authz::{authorize, Attributes, Decision};
use super::ca::ParsedCsr;
use super::rbac::Rbac;
use super::selectors::{valid_dns_label, valid_dns_subdomain, valid_label_key, valid_label_value};
use super::status::{bad_request, go_bytes, ApiError, FieldError, FieldErrorType};

pub(crate) const CLIENT_KUBELET: &str = "kubernetes.io/kube-apiserver-client-kubelet";
pub(crate) const KUBELET_SERVING: &str = "kubernetes.io/kubelet-serving";
pub(crate) const APISERVER_CLIENT: &str = "kubernetes.io/kube-apiserver-client";
pub(crate) const LEGACY_UNKNOWN: &str = "kubernetes.io/legacy-unknown";

/// Every usage value the v1 API accepts.
pub(crate) const VALID_USAGES: &[&str] = &[
    "signing",
    "digital signature",
    "content commitment",
    "key encipherment",
    "key agreement",
    "data encipherment",
    "cert sign",
    "crl sign",
    "encipher only",
    "decipher only",
    "any",
    "server auth",
    "client auth",
    "code signing",
    "email protection",
    "s/mime",
    "ipsec end system",
    "ipsec tunnel",
    "ipsec user",
    "timestamping",
    "ocsp signing",
    "microsoft sgc",
    "netscape sgc",
];

/// Decodes a create body into the v1 type, with Go's zero values for
/// absent fields so that validation (not decoding) reports them, as the
/// real server does. Type errors are 400s.
pub(crate) fn decode(body: &Value) -> Result<CertificateSigningRequest, ApiError> {
    let Some(obj) = body.as_object() else {
        return Err(bad_request(
            "the body of the request was in an unknown format - accepted media types include: application/json, application/yaml, application/vnd.kubernetes.protobuf",
        ));
    };
    check_type_meta(obj, "certificates.k8s.io/v1", "CertificateSigningRequest")?;
    let mut v = body.clone();
    if !v.get("spec").is_some_and(Value::is_object) {
        if v.get("spec").is_some_and(|s| !s.is_null()) {
            return Err(decode_error(
                "CertificateSigningRequest",
                "v1",
                "spec: expected an object",
            ));
        }
        v["spec"] = Value::Object(Default::default());
    }
    for (f, zero) in [
        ("request", Value::String(String::new())),
        ("signerName", Value::String(String::new())),
    ] {
        if v["spec"].get(f).is_none_or(Value::is_null) {
            v["spec"][f] = zero;
        }
    }
    serde_json::from_value(v)
        .map_err(|e| decode_error("CertificateSigningRequest", "v1", &e.to_string()))
}

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
        for msg in super::selectors::valid_path_segment_name(name) {
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
            for m in super::selectors::qualified_name_errors(&k.to_lowercase()) {
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

/// `ValidateSignerName` (apis/core/validation).
fn validate_signer_name(s: &str) -> Vec<FieldError> {
    let f = "spec.signerName";
    if s.is_empty() {
        return vec![FieldError::required(f, "")];
    }
    let segments: Vec<&str> = s.split('/').collect();
    if segments.len() != 2 {
        return vec![FieldError::invalid(
            f,
            format!("{s:?}"),
            "must be a fully qualified domain and path of the form 'example.com/signer-name'",
        )];
    }
    let (domain, path) = (segments[0], segments[1]);
    let mut errs = vec![];
    if domain.len() > 253 {
        errs.push(FieldError {
            field: f.into(),
            typ: FieldErrorType::TooLong(253),
            detail: String::new(),
        });
    }
    let labels: Vec<&str> = domain.split('.').collect();
    if let Some(bad) = labels.iter().find(|l| !valid_dns_label(l)) {
        errs.push(FieldError::invalid(
            f,
            format!("{domain:?}"),
            &format!("validating label {bad:?}: a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')"),
        ));
    }
    if labels.len() < 2 {
        errs.push(FieldError::invalid(
            f,
            format!("{domain:?}"),
            "should be a domain with at least two segments separated by dots",
        ));
    }
    if let Some(bad) = path.split('.').find(|l| !valid_dns_subdomain(l)) {
        errs.push(FieldError::invalid(
            f,
            format!("{path:?}"),
            &format!("validating label {bad:?}: a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"),
        ));
    }
    if s.len() > 571 {
        errs.push(FieldError {
            field: f.into(),
            typ: FieldErrorType::TooLong(571),
            detail: String::new(),
        });
    }
    errs
}

/// `ValidateCertificateSigningRequestCreate` on the v1 API. `parsed` is the
/// outcome of parsing and signature-checking `spec.request`.
pub(crate) fn validate_create(
    csr: &CertificateSigningRequest,
    parsed: &Result<ParsedCsr, String>,
) -> Vec<FieldError> {
    let mut errs = validate_meta(&csr.metadata, false);
    if let Err(e) = parsed {
        errs.push(FieldError::invalid(
            "spec.request",
            go_bytes(&csr.spec.request.0),
            e,
        ));
    }
    let usages = csr.spec.usages.clone().unwrap_or_default();
    if usages.is_empty() {
        errs.push(FieldError::required("spec.usages", ""));
    }
    for (i, u) in usages.iter().enumerate() {
        if !VALID_USAGES.contains(&u.as_str()) {
            let mut sorted: Vec<String> = VALID_USAGES.iter().map(|s| s.to_string()).collect();
            sorted.sort();
            errs.push(FieldError {
                field: format!("spec.usages[{i}]"),
                typ: FieldErrorType::NotSupported(format!("{u:?}"), sorted),
                detail: String::new(),
            });
        }
    }
    let mut seen = BTreeSet::new();
    for (i, u) in usages.iter().enumerate() {
        if !seen.insert(u) {
            errs.push(FieldError {
                field: format!("spec.usages[{i}]"),
                typ: FieldErrorType::Duplicate(format!("{u:?}")),
                detail: String::new(),
            });
        }
    }
    if csr.spec.signer_name == LEGACY_UNKNOWN {
        errs.push(FieldError::invalid(
            "spec.signerName",
            format!("{:?}", csr.spec.signer_name),
            "the legacy signerName is not allowed via this API version",
        ));
    } else {
        errs.extend(validate_signer_name(&csr.spec.signer_name));
    }
    if let Some(e) = csr.spec.expiration_seconds {
        if e < 600 {
            errs.push(FieldError::invalid(
                "spec.expirationSeconds",
                e.to_string(),
                "may not specify a duration less than 600 seconds (10 minutes)",
            ));
        }
    }
    errs
}

fn usage_set(usages: &[String]) -> BTreeSet<&str> {
    usages.iter().map(String::as_str).collect()
}

/// `ValidateKubeletClientCSR`.
pub(crate) fn validate_kubelet_client(p: &ParsedCsr, usages: &[String]) -> Result<(), String> {
    if p.orgs != ["system:nodes"] {
        return Err("subject organization is not system:nodes".into());
    }
    if !p.sans.dns.is_empty() {
        return Err("DNS subjectAltNames are not allowed".into());
    }
    if !p.sans.emails.is_empty() {
        return Err("Email subjectAltNames are not allowed".into());
    }
    if !p.sans.ips.is_empty() {
        return Err("IP subjectAltNames are not allowed".into());
    }
    if !p.sans.uris.is_empty() {
        return Err("URI subjectAltNames are not allowed".into());
    }
    if !p.cn.as_deref().unwrap_or("").starts_with("system:node:") {
        return Err("subject common name does not begin with system:node:".into());
    }
    let set = usage_set(usages);
    let full: BTreeSet<&str> = ["digital signature", "key encipherment", "client auth"].into();
    let no_rsa: BTreeSet<&str> = ["digital signature", "client auth"].into();
    if set != full && set != no_rsa {
        return Err("usages did not match [client auth digital signature key encipherment]".into());
    }
    Ok(())
}

/// `ValidateKubeletServingCSR`.
pub(crate) fn validate_kubelet_serving(p: &ParsedCsr, usages: &[String]) -> Result<(), String> {
    if p.orgs != ["system:nodes"] {
        return Err("subject organization is not system:nodes".into());
    }
    if p.sans.dns.is_empty() && p.sans.ips.is_empty() {
        return Err("DNS or IP subjectAltName is required".into());
    }
    if !p.sans.emails.is_empty() {
        return Err("Email subjectAltNames are not allowed".into());
    }
    if !p.sans.uris.is_empty() {
        return Err("URI subjectAltNames are not allowed".into());
    }
    let set = usage_set(usages);
    let full: BTreeSet<&str> = ["digital signature", "key encipherment", "server auth"].into();
    let no_rsa: BTreeSet<&str> = ["digital signature", "server auth"].into();
    if set != full && set != no_rsa {
        return Err("usages did not match [digital signature key encipherment server auth]".into());
    }
    if !p.cn.as_deref().unwrap_or("").starts_with("system:node:") {
        return Err("subject common name does not begin with system:node:".into());
    }
    Ok(())
}

fn valid_apiserver_client_usages(usages: &[String]) -> Result<(), String> {
    let mut client = false;
    for u in usages {
        match u.as_str() {
            "digital signature" | "key encipherment" => {}
            "client auth" => client = true,
            other => return Err(format!("invalid usage for client certificate: {other}")),
        }
    }
    if client {
        Ok(())
    } else {
        Err("missing required usage for client certificate: client auth".into())
    }
}

/// The signer's check: `Ok(true)` to sign, `Ok(false)` when no built-in
/// signer handles `signer`, `Err` for a `Failed` condition
/// (`SignerValidationFailure`).
pub(crate) fn signer_check(signer: &str, p: &ParsedCsr, usages: &[String]) -> Result<bool, String> {
    match signer {
        CLIENT_KUBELET => validate_kubelet_client(p, usages).map(|()| true),
        KUBELET_SERVING => validate_kubelet_serving(p, usages).map(|()| true),
        APISERVER_CLIENT => valid_apiserver_client_usages(usages).map(|()| true),
        _ => Ok(false),
    }
}

/// `csrapproving`: the approval message when the requester may have this
/// CSR approved automatically (a SubjectAccessReview on `selfnodeclient`
/// or `nodeclient` for the requester recorded in the spec).
pub(crate) fn auto_approval(
    csr: &CertificateSigningRequest,
    p: &ParsedCsr,
    rbac: &Rbac,
) -> Option<&'static str> {
    if csr.spec.signer_name != CLIENT_KUBELET {
        return None;
    }
    let usages = csr.spec.usages.clone().unwrap_or_default();
    validate_kubelet_client(p, &usages).ok()?;
    let user = UserInfo {
        name: csr.spec.username.clone().unwrap_or_default(),
        uid: csr.spec.uid.clone().unwrap_or_default(),
        groups: csr.spec.groups.clone().unwrap_or_default(),
    };
    let sar = |sub: &str| Attributes {
        verb: "create".into(),
        resource_request: true,
        path: String::new(),
        group: "certificates.k8s.io".into(),
        version: "v1".into(),
        resource: "certificatesigningrequests".into(),
        subresource: sub.into(),
        namespace: String::new(),
        name: String::new(),
        field_selector: vec![],
    };
    if p.cn.as_deref() == Some(user.name.as_str())
        && authorize(rbac, &user, &sar("selfnodeclient")) == Decision::Allow
    {
        return Some("Auto approving self kubelet client certificate after SubjectAccessReview.");
    }
    if authorize(rbac, &user, &sar("nodeclient")) == Decision::Allow {
        return Some("Auto approving kubelet client certificate after SubjectAccessReview.");
    }
    None
}

/// The signer's duration: `spec.expirationSeconds` within [10 min, max].
pub(crate) fn signing_duration(max: Duration, expiration_seconds: Option<i32>) -> Duration {
    let Some(e) = expiration_seconds else {
        return max;
    };
    let requested = Duration::from_secs(u64::try_from(e).unwrap_or(0));
    let min = Duration::from_secs(600);
    if requested > max {
        max
    } else if requested < min {
        min
    } else {
        requested
    }
}

/// The condition types present on a CSR.
pub(crate) fn has_condition(csr: &CertificateSigningRequest, typ: &str) -> bool {
    csr.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == typ && c.status == "True"))
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
