//! The request filter chain, in kube-apiserver's filter order: request
//! info (the authorizer [`Attributes`]), authentication (401), flow control
//! and injected faults (429, 5xx, dropped connections), authorization
//! (403), then the routing to a handler: discovery (`discovery.rs`), reads
//! (`reads.rs`) or writes (the pipeline of `resources.rs`). Every request
//! is recorded.
//!
//! Nothing of the crate but the listener (`net.rs`) uses this module.

use std::collections::BTreeMap;
use std::sync::Arc;

use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use openssl::x509::X509;

use crate::attributes::Attributes;
use crate::auth::{parse_bootstrap_token, valid_bootstrap_group, UserInfo};
use crate::authz::{authorize, forbidden_message, Decision};
use crate::body::Body;
use crate::ca::{now_unix, subject_parts};
use crate::request::{parse_bool, respond, Req};
use crate::selectors::{FieldSelector, LabelSelector};
use crate::status::{self, ApiError};
use crate::store::Kind;
use crate::validation::valid_path_segment_name;
use crate::{defs, discovery, openapi, reads, resources, RequestRecord, Shared, State, Throttle};

/// What the TLS layer learned about a connection.
pub(crate) struct ConnInfo {
    pub peer: Option<(X509, Vec<X509>)>,
}

/// Returned by the service to make hyper close the connection unanswered.
#[derive(Debug)]
pub(crate) struct Dropped;

impl std::fmt::Display for Dropped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection dropped by fault injection")
    }
}

impl std::error::Error for Dropped {}

/// `RequestInfoFactory.NewRequestInfo`.
fn request_info(method: &Method, path: &str, query: &BTreeMap<String, String>) -> Attributes {
    let mut a = Attributes {
        verb: method.as_str().to_lowercase(),
        resource_request: false,
        path: path.to_string(),
        group: String::new(),
        version: String::new(),
        resource: String::new(),
        subresource: String::new(),
        namespace: String::new(),
        name: String::new(),
        field_selector: vec![],
    };
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let mut rest: &[&str] = match parts.first() {
        Some(&"api") if parts.len() >= 2 => {
            a.version = parts[1].to_string();
            &parts[2..]
        }
        Some(&"apis") if parts.len() >= 3 => {
            a.group = parts[1].to_string();
            a.version = parts[2].to_string();
            &parts[3..]
        }
        _ => return a,
    };
    if rest.is_empty() || rest[0].is_empty() {
        return a;
    }
    a.resource_request = true;
    a.verb = match *method {
        Method::POST => "create",
        Method::GET | Method::HEAD => "get",
        Method::PUT => "update",
        Method::PATCH => "patch",
        Method::DELETE => "delete",
        _ => "",
    }
    .to_string();
    if rest[0] == "watch" {
        a.verb = "watch".into();
        rest = &rest[1..];
    }
    if rest.first() == Some(&"namespaces") && rest.len() > 1 {
        a.namespace = rest[1].to_string();
        if rest.len() > 2 && rest[2] != "status" && rest[2] != "finalize" {
            rest = &rest[2..];
        }
    }
    if let Some(r) = rest.first() {
        a.resource = r.to_string();
    }
    if rest.len() >= 2 {
        a.name = rest[1].to_string();
    }
    if rest.len() >= 3 {
        a.subresource = rest[2].to_string();
    }
    if a.name.is_empty() && a.verb == "get" {
        // DecodeParameters of the list options; on a parse error the verb
        // is list (or watch, unless watch is false/0) and no name is taken.
        let bools = ["watch", "allowWatchBookmarks", "sendInitialEvents"];
        let ints = ["limit", "timeoutSeconds"];
        let fields = query
            .get("fieldSelector")
            .map(|f| FieldSelector::parse_any(f))
            .transpose();
        let parsed_ok = bools.iter().all(|k| {
            query
                .get(*k)
                .is_none_or(|v| v.is_empty() || parse_bool(v).is_some())
        }) && ints.iter().all(|k| {
            query
                .get(*k)
                .is_none_or(|v| v.is_empty() || v.parse::<i64>().is_ok())
        }) && fields.is_ok()
            && query
                .get("labelSelector")
                .is_none_or(|l| LabelSelector::parse(l).is_ok());
        let watch = match query.get("watch").map(String::as_str) {
            None | Some("") => false,
            Some(w) if parsed_ok => parse_bool(w).unwrap_or(false),
            Some(w) => !matches!(w.to_lowercase().as_str(), "false" | "0"),
        };
        a.verb = if watch { "watch" } else { "list" }.into();
        if parsed_ok {
            if let Ok(Some(sel)) = &fields {
                if let Some(n) = sel.exact_match("metadata.name") {
                    if valid_path_segment_name(n).is_empty() {
                        a.name = n.to_string();
                    }
                }
            }
        }
    }
    if a.name.is_empty() && a.verb == "delete" {
        a.verb = "deletecollection".into();
    }
    // GetFieldSelector: the requirements a list/watch is scoped to.
    if matches!(a.verb.as_str(), "list" | "watch" | "deletecollection") {
        if let Some(Ok(sel)) = query
            .get("fieldSelector")
            .map(|f| FieldSelector::parse_any(f))
        {
            a.field_selector = sel.0;
        }
    }
    a
}

/// Authenticates: x509 client certificate, then bearer tokens; anonymous
/// only when there are no credentials and anonymous auth is on.
fn authenticate(
    shared: &Shared,
    state: &State,
    conn: &ConnInfo,
    headers: &http::HeaderMap,
) -> Option<UserInfo> {
    let mut presented = false;
    if let Some((leaf, chain)) = &conn.peer {
        presented = true;
        if shared.ca.verify_client(leaf, chain).is_ok() {
            let (cn, orgs) = subject_parts(leaf.subject_name());
            match cn.filter(|c| !c.is_empty()) {
                Some(name) => {
                    let mut groups = orgs;
                    groups.push("system:authenticated".into());
                    return Some(UserInfo {
                        name,
                        uid: String::new(),
                        groups,
                    });
                }
                // CommonNameUserConversion: no CN is no user, and no error
                // (the other authenticators, then anonymous, may apply).
                None => presented = false,
            }
        }
    }
    if let Some(h) = headers.get(http::header::AUTHORIZATION) {
        presented = true;
        let h = h.to_str().unwrap_or("");
        let token = h
            .strip_prefix("Bearer ")
            .or_else(|| h.strip_prefix("bearer "))
            .map(str::trim)
            .unwrap_or("");
        if let Some((id, secret)) = parse_bootstrap_token(token) {
            if let Some(t) = state.bootstrap_tokens.get(id) {
                let live = t.expires_unix.is_none_or(|e| now_unix() < e);
                let groups_ok = t.extra_groups.iter().all(|g| valid_bootstrap_group(g));
                if t.secret == secret && live && groups_ok {
                    // GetGroups: the default group and the extra ones,
                    // deduplicated and sorted.
                    let mut groups: Vec<String> =
                        std::iter::once("system:bootstrappers".to_string())
                            .chain(t.extra_groups.iter().cloned())
                            .collect::<std::collections::BTreeSet<_>>()
                            .into_iter()
                            .collect();
                    groups.push("system:authenticated".into());
                    return Some(UserInfo {
                        name: format!("system:bootstrap:{id}"),
                        uid: String::new(),
                        groups,
                    });
                }
            }
        }
        if let Some(u) = state.sa_tokens.get(token) {
            return Some(u.clone());
        }
    }
    if !presented && state.anonymous {
        return Some(UserInfo::anonymous());
    }
    None
}

fn take(n: &mut u32) -> bool {
    if *n == 0 {
        return false;
    }
    if *n != u32::MAX {
        *n -= 1;
    }
    true
}

fn error_response(e: &ApiError) -> Response<Body> {
    let (bytes, ct) = e.body_bytes();
    let mut b = Response::builder()
        .status(StatusCode::from_u16(e.code).unwrap())
        .header("Content-Type", ct)
        .header("Cache-Control", "no-cache, private");
    for (k, v) in &e.headers {
        b = b.header(*k, v);
    }
    b.body(Body::full(bytes)).unwrap()
}

fn record(
    shared: &Shared,
    method: &Method,
    raw_query: &str,
    a: &Attributes,
    user: Option<&UserInfo>,
    code: u16,
) {
    let mut st = shared.state.lock().unwrap();
    st.requests.push(RequestRecord {
        method: method.to_string(),
        path: a.path.clone(),
        query: raw_query.to_string(),
        verb: a.verb.clone(),
        resource_request: a.resource_request,
        group: a.group.clone(),
        version: a.version.clone(),
        resource: a.resource.clone(),
        subresource: a.subresource.clone(),
        namespace: a.namespace.clone(),
        name: a.name.clone(),
        user: user.map(|u| u.name.clone()).unwrap_or_default(),
        groups: user.map(|u| u.groups.clone()).unwrap_or_default(),
        code,
    });
}

/// The hyper service.
pub(crate) async fn handle(
    shared: Arc<Shared>,
    conn: Arc<ConnInfo>,
    req: Request<Incoming>,
) -> Result<Response<Body>, Dropped> {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let raw_query = req.uri().query().unwrap_or("").to_string();
    let mut query: BTreeMap<String, String> = BTreeMap::new();
    for (k, v) in form_urlencoded::parse(raw_query.as_bytes()) {
        // The first value of a repeated key wins, as url.Values.Get.
        query
            .entry(k.into_owned())
            .or_insert_with(|| v.into_owned());
    }
    let attrs = request_info(&method, &path, &query);

    let (delay, drop) = {
        let mut st = shared.state.lock().unwrap();
        let drop = take(&mut st.faults.drop_remaining);
        (st.faults.delay, drop)
    };
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    if drop {
        record(&shared, &method, &raw_query, &attrs, None, 0);
        return Err(Dropped);
    }

    let headers = req.headers().clone();
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return Err(Dropped),
    };

    // Authentication.
    let user = {
        let st = shared.state.lock().unwrap();
        authenticate(&shared, &st, &conn, &headers)
    };
    let Some(user) = user else {
        record(&shared, &method, &raw_query, &attrs, None, 401);
        return Ok(error_response(&status::unauthorized()));
    };

    // Flow control and injected server errors.
    let injected = {
        let mut st = shared.state.lock().unwrap();
        if take(&mut st.faults.throttle_remaining) {
            let secs = st.faults.throttle_retry_after;
            Some(match st.faults.throttle_style {
                Throttle::Apf => status::too_many_requests_apf(secs),
                Throttle::Status => status::too_many_requests_status(secs),
            })
        } else if take(&mut st.faults.fail_remaining) {
            Some(status::server_error(
                st.faults.fail_code,
                "injected failure",
            ))
        } else {
            None
        }
    };
    if let Some(e) = injected {
        record(&shared, &method, &raw_query, &attrs, Some(&user), e.code);
        return Ok(error_response(&e));
    }

    // Authorization.
    let decision = {
        let st = shared.state.lock().unwrap();
        authorize(&st.rbac, &user, &attrs)
    };
    if let Decision::Deny(reason) = decision {
        let e = status::forbidden(
            forbidden_message(&user, &attrs, &reason),
            &attrs.group,
            &attrs.resource,
            &attrs.name,
        );
        record(&shared, &method, &raw_query, &attrs, Some(&user), 403);
        return Ok(error_response(&e));
    }

    let r = Req {
        attrs: attrs.clone(),
        query,
        headers,
        body,
        user: user.clone(),
    };
    let resp = match dispatch(&shared, &r) {
        Ok(resp) => resp,
        Err(e) => error_response(&e),
    };
    record(
        &shared,
        &method,
        &raw_query,
        &attrs,
        Some(&user),
        resp.status().as_u16(),
    );
    Ok(resp)
}

fn accepts_json(headers: &http::HeaderMap) -> bool {
    let Some(a) = headers
        .get(http::header::ACCEPT)
        .and_then(|h| h.to_str().ok())
    else {
        return true;
    };
    a.split(',').any(|m| {
        let m = m.trim();
        m.starts_with("application/json")
            || m.starts_with("*/*")
            || m.starts_with("application/*")
            || m.is_empty()
    })
}

fn dispatch(shared: &Arc<Shared>, r: &Req) -> Result<Response<Body>, ApiError> {
    if r.attrs.path == "/openapi/v2" && r.attrs.verb == "get" {
        return Ok(openapi_v2(r));
    }
    if !accepts_json(&r.headers) {
        return Err(status::not_acceptable());
    }
    if !r.attrs.resource_request {
        return discovery::serve(shared, r);
    }
    let Some(def) = defs::lookup(&r.attrs.group, &r.attrs.version, &r.attrs.resource) else {
        return Err(status::no_route());
    };
    // `/api/v1/namespaces/<name>`: request info reports the name as the
    // namespace too; the object itself is cluster-scoped.
    let unscoped;
    let r = if def.kind == Kind::Namespace
        && !r.attrs.namespace.is_empty()
        && r.attrs.namespace == r.attrs.name
    {
        unscoped = Req {
            attrs: Attributes {
                namespace: String::new(),
                ..r.attrs.clone()
            },
            query: r.query.clone(),
            headers: r.headers.clone(),
            body: r.body.clone(),
            user: r.user.clone(),
        };
        &unscoped
    } else {
        r
    };
    if def.namespaced == r.attrs.namespace.is_empty()
        && !(def.namespaced && matches!(r.attrs.verb.as_str(), "list" | "watch"))
    {
        return Err(status::no_route());
    }
    if !r.attrs.subresource.is_empty() {
        let node_status = def.kind == Kind::Node && r.attrs.subresource == "status";
        // CSR approval/status subresources exist but are not served here.
        let csr_sub =
            def.kind == Kind::Csr && matches!(r.attrs.subresource.as_str(), "approval" | "status");
        return match r.attrs.verb.as_str() {
            "get" if node_status => reads::get(shared, def, r),
            "patch" if node_status => resources::patch(shared, def, r),
            _ if node_status || csr_sub => Err(status::method_not_allowed()),
            _ => Err(status::no_route()),
        };
    }
    match r.attrs.verb.as_str() {
        "get" => reads::get(shared, def, r),
        "list" => reads::list(shared, def, r),
        "watch" => reads::watch(shared, def, r),
        "create" => {
            check_json_body(r)?;
            resources::create(shared, def, r)
        }
        "patch" => resources::patch(shared, def, r),
        "delete" => resources::delete(shared, def, r),
        _ => Err(status::method_not_allowed()),
    }
}

/// `/openapi/v2` in the format the client asks for (protobuf first).
fn openapi_v2(r: &Req) -> Response<Body> {
    let accept = r
        .headers
        .get(http::header::ACCEPT)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    // kube-openapi answers the deprecated `...spec.v2@v1.0+protobuf` too,
    // with a Content-Type a MIME parser takes (no `@`).
    const PB: &str = "application/com.github.proto-openapi.spec.v2.v1.0+protobuf";
    if accept.contains("protobuf") {
        Response::builder()
            .status(200)
            .header("Content-Type", PB)
            .body(Body::full(openapi::v2_protobuf()))
            .unwrap()
    } else {
        respond(200, &openapi::v2_json())
    }
}

fn check_json_body(r: &Req) -> Result<(), ApiError> {
    let ct = r
        .headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    if !ct.is_empty() && !ct.starts_with("application/json") {
        return Err(status::unsupported_media_type(ct));
    }
    if r.body.len() > 3 * 1024 * 1024 {
        return Err(status::too_large());
    }
    Ok(())
}
