//! The parsed request a handler works on ([`Req`]: its attributes, query,
//! headers, body and authenticated user), the readers of its options
//! (`dryRun`, `fieldValidation`, Go's boolean query values, the JSON body),
//! and the response builders every handler shares (JSON, JSON with
//! `Warning` headers, plain text).
//!
//! It builds no `Req` (the filter chain in `handler.rs` does) and knows no
//! kind: it uses only `attributes`, `auth`, `body` and `status`.

use std::collections::BTreeMap;

use bytes::Bytes;
use http::{Response, StatusCode};
use serde_json::Value;

use crate::attributes::Attributes;
use crate::auth::UserInfo;
use crate::body::Body;
use crate::status::{self, ApiError};

/// The parsed request (`request.RequestInfo`) plus its query.
pub(crate) struct Req {
    pub attrs: Attributes,
    pub query: BTreeMap<String, String>,
    pub headers: http::HeaderMap,
    pub body: Bytes,
    pub user: UserInfo,
}

impl Req {
    /// A query parameter (its first value).
    pub fn q(&self, k: &str) -> Option<&str> {
        self.query.get(k).map(String::as_str)
    }
}

/// Go's `strconv.ParseBool`.
pub(crate) fn parse_bool(s: &str) -> Option<bool> {
    match s {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Some(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Some(false),
        _ => None,
    }
}

/// The JSON body of a write (the decoder's 400 for anything else).
pub(crate) fn parse_body(r: &Req) -> Result<Value, ApiError> {
    serde_json::from_slice(&r.body).map_err(|e| {
        status::bad_request(format!("the body of the request was in an unknown format - accepted media types include: application/json, application/yaml, application/vnd.kubernetes.protobuf ({e})"))
    })
}

/// `dryRun`: `All` or nothing.
pub(crate) fn dry_run(r: &Req) -> Result<bool, ApiError> {
    match r.q("dryRun") {
        None | Some("") => Ok(false),
        Some("All") => Ok(true),
        Some(other) => Err(status::bad_request(format!(
            "dryRun: Unsupported value: {other:?}: supported values: \"All\""
        ))),
    }
}

/// `fieldValidation`: `Strict`, `Warn` (the default) or `Ignore`.
pub(crate) fn validation_directive(r: &Req) -> Result<&'static str, ApiError> {
    match r.q("fieldValidation") {
        None | Some("" | "Warn") => Ok("Warn"),
        Some("Ignore") => Ok("Ignore"),
        Some("Strict") => Ok("Strict"),
        Some(other) => Err(status::bad_request(format!(
            "fieldValidation: Unsupported value: {other:?}: supported values: \"Ignore\", \"Strict\", \"Warn\""
        ))),
    }
}

/// A JSON response.
pub(crate) fn respond(code: u16, v: &Value) -> Response<Body> {
    Response::builder()
        .status(StatusCode::from_u16(code).unwrap())
        .header("Content-Type", "application/json")
        .header("Cache-Control", "no-cache, private")
        .body(Body::full(serde_json::to_vec(v).unwrap()))
        .unwrap()
}

/// A JSON response with `Warning: 299 - "<text>"` headers.
pub(crate) fn respond_warned(code: u16, v: &Value, warnings: &[String]) -> Response<Body> {
    let mut resp = respond(code, v);
    for w in warnings {
        let quoted = serde_json::to_string(w).unwrap();
        if let Ok(h) = http::HeaderValue::from_str(&format!("299 - {quoted}")) {
            resp.headers_mut().append("Warning", h);
        }
    }
    resp
}

/// A plain-text response.
pub(crate) fn plain(code: u16, text: &str) -> Response<Body> {
    Response::builder()
        .status(code)
        .header("Content-Type", "text/plain; charset=utf-8")
        .header("X-Content-Type-Options", "nosniff")
        .body(Body::full(text.to_string()))
        .unwrap()
}
