//! CertificateSigningRequests: the hooks of their create (kube-apiserver's
//! decoding, validation, CertificateSubjectRestriction admission and
//! requester recording), and the kube-controller-manager's `csrapproving`
//! and `csrsigning` decisions (`controller.rs` runs them). The write
//! pipeline (`resources.rs`) runs the hooks; this module must not use it or
//! the handlers. The validation it shares with other kinds is
//! `validation.rs`'s.

use std::collections::BTreeSet;
use std::time::Duration;

use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use serde_json::Value;

use crate::attributes::Attributes;
use crate::auth::UserInfo;
use crate::authz::{authorize, Decision};
use crate::ca::{parse_csr, ParsedCsr};
use crate::defs::ResourceDef;
use crate::rbac::Rbac;
use crate::request::Req;
use crate::status::{self, bad_request, go_bytes, ApiError, FieldError, FieldErrorType};
use crate::store::meta_str;
use crate::validation::{
    check_type_meta, decode_error, valid_dns_label, valid_dns_subdomain, validate_meta,
};
use crate::writes::{strict_known, ResourceKind};
use crate::{State, Verdict};

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

/// CertificateSigningRequests, for the write pipeline (create only: their
/// `approval` and `status` subresources are not served).
pub(crate) struct Csrs;

/// The typed CSR of a decoded object.
fn typed(obj: &Value) -> Result<CertificateSigningRequest, ApiError> {
    serde_json::from_value(obj.clone())
        .map_err(|e| decode_error("CertificateSigningRequest", "v1", &e.to_string()))
}

impl ResourceKind for Csrs {
    /// Nothing before the metadata is prepared: the body's checks are
    /// [`decode`]'s.
    fn check_body(
        &self,
        _r: &Req,
        _def: &ResourceDef,
        _body: &mut Value,
    ) -> Result<Vec<String>, ApiError> {
        Ok(vec![])
    }

    fn decode(
        &self,
        r: &Req,
        def: &ResourceDef,
        body: Value,
    ) -> Result<(Value, Vec<String>), ApiError> {
        let known = serde_json::to_value(decode(&body)?).unwrap();
        let warnings = strict_known(r, def, &body, &known, true)?;
        Ok((known, warnings))
    }

    fn validate(&self, _def: &ResourceDef, obj: &Value) -> Result<Vec<FieldError>, ApiError> {
        let csr = typed(obj)?;
        Ok(validate_create(&csr, &parse_csr(&csr.spec.request.0)))
    }

    /// CertificateSubjectRestriction: no `system:masters` with the
    /// `kube-apiserver-client` signer.
    fn validate_admission(&self, obj: &Value) -> Result<(), ApiError> {
        let csr = typed(obj)?;
        if let Ok(p) = parse_csr(&csr.spec.request.0) {
            if csr.spec.signer_name == APISERVER_CLIENT
                && p.orgs.iter().any(|o| o == "system:masters")
            {
                let name = meta_str(obj, "name");
                return Err(status::forbidden(
                    format!("certificatesigningrequests.certificates.k8s.io {name:?} is forbidden: use of kubernetes.io/kube-apiserver-client signer with system:masters group is not allowed"),
                    "certificates.k8s.io",
                    "certificatesigningrequests",
                    name,
                ));
            }
        }
        Ok(())
    }

    /// `PrepareForCreate`: the requester's identity from the
    /// authenticator, the status cleared.
    fn finalize(&self, user: &UserInfo, obj: &mut Value) -> Result<(), ApiError> {
        let mut csr = typed(obj)?;
        csr.spec.username = Some(user.name.clone());
        csr.spec.uid = (!user.uid.is_empty()).then(|| user.uid.clone());
        csr.spec.groups = Some(user.groups.clone());
        csr.spec.extra = None;
        csr.status = None;
        *obj = serde_json::to_value(&csr).unwrap();
        Ok(())
    }

    /// The test's deny knobs give the new CSR its verdict; the controllers
    /// have work.
    fn after_create(&self, st: &mut State, stored: &Value) -> bool {
        if let Some((reason, message)) = st
            .csr
            .deny_next
            .pop_front()
            .or_else(|| st.csr.deny_all.clone())
        {
            st.verdicts.insert(
                meta_str(stored, "name").to_string(),
                Verdict::Deny(reason, message),
            );
        }
        true
    }
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
