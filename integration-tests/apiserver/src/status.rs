//! `metav1.Status` errors with the codes, reasons, messages and details
//! kube-apiserver's `k8s.io/apimachinery/pkg/api/errors` produce. A leaf:
//! it uses nothing of the crate.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Status, StatusCause, StatusDetails};
use serde_json::Value;

/// An error response: a `Status` object (or, for APF's 429, plain text).
#[derive(Debug, Clone)]
pub(crate) struct ApiError {
    pub code: u16,
    pub body: ErrorBody,
    pub headers: Vec<(&'static str, String)>,
}

#[derive(Debug, Clone)]
pub(crate) enum ErrorBody {
    Status(Box<Status>),
    Plain(String),
}

impl ApiError {
    pub fn body_bytes(&self) -> (Vec<u8>, &'static str) {
        match &self.body {
            ErrorBody::Status(s) => (serde_json::to_vec(s).unwrap(), "application/json"),
            ErrorBody::Plain(t) => (t.clone().into_bytes(), "text/plain; charset=utf-8"),
        }
    }

    pub fn status_value(&self) -> Value {
        match &self.body {
            ErrorBody::Status(s) => serde_json::to_value(s).unwrap(),
            ErrorBody::Plain(t) => Value::String(t.clone()),
        }
    }
}

fn status(code: u16, reason: &str, message: String, details: Option<StatusDetails>) -> ApiError {
    ApiError {
        code,
        body: ErrorBody::Status(Box::new(Status {
            code: Some(i32::from(code)),
            details,
            message: Some(message),
            reason: if reason.is_empty() {
                None
            } else {
                Some(reason.to_string())
            },
            status: Some("Failure".into()),
            ..Default::default()
        })),
        headers: vec![],
    }
}

/// `group`/`resource` as `schema.GroupResource.String()`.
pub(crate) fn qualified(group: &str, resource: &str) -> String {
    if group.is_empty() {
        resource.to_string()
    } else {
        format!("{resource}.{group}")
    }
}

fn details(group: &str, kind: &str, name: &str) -> StatusDetails {
    StatusDetails {
        group: (!group.is_empty()).then(|| group.to_string()),
        kind: (!kind.is_empty()).then(|| kind.to_string()),
        name: (!name.is_empty()).then(|| name.to_string()),
        ..Default::default()
    }
}

pub(crate) fn not_found(group: &str, resource: &str, name: &str) -> ApiError {
    status(
        404,
        "NotFound",
        format!("{} {:?} not found", qualified(group, resource), name),
        Some(details(group, resource, name)),
    )
}

/// The 404 of a path no API serves.
pub(crate) fn no_route() -> ApiError {
    status(
        404,
        "NotFound",
        "the server could not find the requested resource".into(),
        Some(StatusDetails::default()),
    )
}

pub(crate) fn already_exists(group: &str, resource: &str, name: &str) -> ApiError {
    status(
        409,
        "AlreadyExists",
        format!("{} {:?} already exists", qualified(group, resource), name),
        Some(details(group, resource, name)),
    )
}

pub(crate) fn unauthorized() -> ApiError {
    status(401, "Unauthorized", "Unauthorized".into(), None)
}

pub(crate) fn forbidden(message: String, group: &str, resource: &str, name: &str) -> ApiError {
    let d = if resource.is_empty() {
        StatusDetails::default()
    } else {
        details(group, resource, name)
    };
    status(403, "Forbidden", message, Some(d))
}

pub(crate) fn bad_request(message: impl Into<String>) -> ApiError {
    status(400, "BadRequest", message.into(), None)
}

pub(crate) fn method_not_allowed() -> ApiError {
    status(
        405,
        "MethodNotAllowed",
        "the server does not allow this method on the requested resource".into(),
        Some(StatusDetails::default()),
    )
}

pub(crate) fn unsupported_media_type(ct: &str) -> ApiError {
    status(
        415,
        "UnsupportedMediaType",
        format!("the body of the request was in an unknown format - accepted media types include: application/json, application/yaml, application/vnd.kubernetes.protobuf (got {ct:?})"),
        None,
    )
}

/// The 415 of a PATCH whose Content-Type the resource does not take.
pub(crate) fn unsupported_patch(accepted: &[&str]) -> ApiError {
    status(
        415,
        "UnsupportedMediaType",
        format!(
            "the body of the request was in an unknown format - accepted media types include: {}",
            accepted.join(", ")
        ),
        None,
    )
}

/// `errors.NewGenericServerResponse(422, ...)`: a patch that cannot be
/// applied.
pub(crate) fn unprocessable(message: String) -> ApiError {
    status(422, "Invalid", message, Some(StatusDetails::default()))
}

/// A plain error of a handler (`ErrorToAPIStatus` of a non-API error): 500
/// with the message and no reason.
pub(crate) fn unknown(message: String) -> ApiError {
    status(500, "", message, None)
}

pub(crate) fn not_acceptable() -> ApiError {
    status(
        406,
        "NotAcceptable",
        "only the following media types are accepted: application/json, application/yaml, application/vnd.kubernetes.protobuf".into(),
        None,
    )
}

pub(crate) fn too_large() -> ApiError {
    status(
        413,
        "RequestEntityTooLarge",
        "Request entity too large: limit is 3145728".into(),
        None,
    )
}

/// The 429 of APF / max-in-flight: plain text, `Retry-After` header.
pub(crate) fn too_many_requests_apf(retry_after: u32) -> ApiError {
    ApiError {
        code: 429,
        body: ErrorBody::Plain("Too many requests, please try again later.\n".into()),
        headers: vec![("Retry-After", retry_after.to_string())],
    }
}

/// A 429 `Status` (`errors.NewTooManyRequests`), `Retry-After` header and
/// `details.retryAfterSeconds`.
pub(crate) fn too_many_requests_status(retry_after: u32) -> ApiError {
    let mut e = status(
        429,
        "TooManyRequests",
        "Too many requests, please try again later.".into(),
        Some(StatusDetails {
            retry_after_seconds: Some(i32::try_from(retry_after).unwrap_or(i32::MAX)),
            ..Default::default()
        }),
    );
    e.headers.push(("Retry-After", retry_after.to_string()));
    e
}

/// A 5xx as kube-apiserver writes them for the given code.
pub(crate) fn server_error(code: u16, what: &str) -> ApiError {
    match code {
        503 => status(
            503,
            "ServiceUnavailable",
            format!("the server is currently unable to handle the request ({what})"),
            None,
        ),
        504 => status(
            504,
            "Timeout",
            format!("Timeout: request did not complete within requested timeout - {what}"),
            Some(StatusDetails::default()),
        ),
        _ => {
            let mut e = status(
                code,
                "InternalError",
                format!("Internal error occurred: {what}"),
                Some(StatusDetails {
                    causes: Some(vec![StatusCause {
                        message: Some(what.to_string()),
                        ..Default::default()
                    }]),
                    ..Default::default()
                }),
            );
            e.code = code;
            e
        }
    }
}

/// `errors.NewResourceExpired`: 410 with reason `Expired`.
pub(crate) fn expired(message: String) -> ApiError {
    status(410, "Expired", message, None)
}

/// The kind of a `field.Error`.
#[derive(Debug, Clone)]
pub(crate) enum FieldErrorType {
    Required,
    Invalid(String),
    /// `field.TypeInvalid`: rendered as "Invalid value", reason
    /// `FieldValueTypeInvalid`.
    TypeInvalid(String),
    NotSupported(String, Vec<String>),
    Duplicate(String),
    Forbidden,
    TooLong(usize),
}

/// A `field.Error`: the path, its type (with the rendered bad value) and detail.
#[derive(Debug, Clone)]
pub(crate) struct FieldError {
    pub field: String,
    pub typ: FieldErrorType,
    pub detail: String,
}

impl FieldError {
    pub fn required(field: &str, detail: &str) -> FieldError {
        FieldError {
            field: field.into(),
            typ: FieldErrorType::Required,
            detail: detail.into(),
        }
    }
    pub fn invalid(field: &str, value: String, detail: &str) -> FieldError {
        FieldError {
            field: field.into(),
            typ: FieldErrorType::Invalid(value),
            detail: detail.into(),
        }
    }
    pub fn forbidden(field: &str, detail: &str) -> FieldError {
        FieldError {
            field: field.into(),
            typ: FieldErrorType::Forbidden,
            detail: detail.into(),
        }
    }

    fn reason(&self) -> &'static str {
        match self.typ {
            FieldErrorType::Required => "FieldValueRequired",
            FieldErrorType::Invalid(_) => "FieldValueInvalid",
            FieldErrorType::TypeInvalid(_) => "FieldValueTypeInvalid",
            FieldErrorType::NotSupported(..) => "FieldValueNotSupported",
            FieldErrorType::Duplicate(_) => "FieldValueDuplicate",
            FieldErrorType::Forbidden => "FieldValueForbidden",
            FieldErrorType::TooLong(_) => "FieldValueTooLong",
        }
    }

    /// `field.Error.ErrorBody()`.
    fn body(&self) -> String {
        let with = |head: String| {
            if self.detail.is_empty() {
                head
            } else {
                format!("{head}: {}", self.detail)
            }
        };
        match &self.typ {
            FieldErrorType::Required => with("Required value".into()),
            FieldErrorType::Forbidden => with("Forbidden".into()),
            FieldErrorType::Invalid(v) | FieldErrorType::TypeInvalid(v) => {
                with(format!("Invalid value: {v}"))
            }
            FieldErrorType::Duplicate(v) => with(format!("Duplicate value: {v}")),
            FieldErrorType::TooLong(n) => with(format!("Too long: may not be more than {n} bytes")),
            FieldErrorType::NotSupported(v, sup) => {
                let list: Vec<String> = sup.iter().map(|s| format!("{s:?}")).collect();
                let head = format!(
                    "Unsupported value: {v}: supported values: {}",
                    list.join(", ")
                );
                with(head)
            }
        }
    }
}

/// `errors.NewInvalid(kind, name, errs)`: 422 with one cause per field error.
pub(crate) fn invalid(group: &str, kind: &str, name: &str, errs: &[FieldError]) -> ApiError {
    let qualified_kind = if group.is_empty() {
        kind.to_string()
    } else {
        format!("{kind}.{group}")
    };
    let msgs: Vec<String> = errs
        .iter()
        .map(|e| format!("{}: {}", e.field, e.body()))
        .collect();
    let joined = if msgs.len() == 1 {
        msgs[0].clone()
    } else {
        format!("[{}]", msgs.join(", "))
    };
    let causes = errs
        .iter()
        .map(|e| StatusCause {
            field: Some(e.field.clone()),
            message: Some(e.body()),
            reason: Some(e.reason().into()),
        })
        .collect();
    status(
        422,
        "Invalid",
        format!("{qualified_kind} {name:?} is invalid: {joined}"),
        Some(StatusDetails {
            causes: Some(causes),
            group: (!group.is_empty()).then(|| group.to_string()),
            kind: Some(kind.to_string()),
            name: Some(name.to_string()),
            ..Default::default()
        }),
    )
}

/// Go's `%#v` of a `[]byte`, as field errors print `spec.request`.
pub(crate) fn go_bytes(b: &[u8]) -> String {
    let parts: Vec<String> = b.iter().map(|x| format!("0x{x:x}")).collect();
    format!("[]byte{{{}}}", parts.join(", "))
}
