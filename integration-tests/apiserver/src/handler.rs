//! The request pipeline, in kube-apiserver's filter order: request info,
//! authentication (401), flow control (429), authorization (403), then the
//! REST handlers. Every request is recorded.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use openssl::x509::X509;
use serde_json::{json, Value};
use tokio::sync::mpsc;

use super::auth::{parse_bootstrap_token, valid_bootstrap_group, UserInfo};
use super::authz::{authorize, forbidden_message, Attributes, Decision};
use super::body::Body;
use super::ca::{now_unix, subject_parts};
use super::resources::{self, ResourceDef};
use super::selectors::{FieldSelector, LabelSelector};
use super::status::{self, ApiError};
use super::store::{meta_str, Kind, WatchMsg, WatchRecord};
use super::{RequestRecord, Shared, State, Throttle};

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

/// The parsed request (`request.RequestInfo`) plus its query.
pub(crate) struct Req {
    pub attrs: Attributes,
    pub query: BTreeMap<String, String>,
    pub headers: http::HeaderMap,
    pub body: Bytes,
    pub user: UserInfo,
}

impl Req {
    pub fn q(&self, k: &str) -> Option<&str> {
        self.query.get(k).map(String::as_str)
    }
}

fn parse_bool(s: &str) -> Option<bool> {
    match s {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Some(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Some(false),
        _ => None,
    }
}

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
                    if super::selectors::valid_path_segment_name(n).is_empty() {
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

pub(crate) fn respond(code: u16, v: &Value) -> Response<Body> {
    Response::builder()
        .status(StatusCode::from_u16(code).unwrap())
        .header("Content-Type", "application/json")
        .header("Cache-Control", "no-cache, private")
        .body(Body::full(serde_json::to_vec(v).unwrap()))
        .unwrap()
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
        return resources::discovery(shared, r);
    }
    let Some(def) = resources::lookup(&r.attrs.group, &r.attrs.version, &r.attrs.resource) else {
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
            "get" if node_status => get(shared, def, r),
            "patch" if node_status => resources::patch(shared, def, r),
            _ if node_status || csr_sub => Err(status::method_not_allowed()),
            _ => Err(status::no_route()),
        };
    }
    match r.attrs.verb.as_str() {
        "get" => get(shared, def, r),
        "list" => list(shared, def, r),
        "watch" => watch(shared, def, r),
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
            .body(Body::full(super::openapi::v2_protobuf()))
            .unwrap()
    } else {
        respond(200, &super::openapi::v2_json())
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

fn get(shared: &Shared, def: &ResourceDef, r: &Req) -> Result<Response<Body>, ApiError> {
    let st = shared.state.lock().unwrap();
    match st.store.get(def.kind, &r.attrs.namespace, &r.attrs.name) {
        Some(v) => Ok(respond(200, &resources::present(def, v, false))),
        None => Err(status::not_found(def.group, def.plural, &r.attrs.name)),
    }
}

/// List/watch options, validated as `ValidateListOptions` does.
struct ListOpts {
    labels: LabelSelector,
    fields: FieldSelector,
    rv: Option<u64>,
    rv_match: String,
    limit: Option<usize>,
    cont: Option<(u64, String)>,
    timeout: Option<u64>,
    bookmarks: bool,
    send_initial: Option<bool>,
}

fn list_opts(def: &ResourceDef, r: &Req, watch: bool) -> Result<ListOpts, ApiError> {
    let labels =
        LabelSelector::parse(r.q("labelSelector").unwrap_or("")).map_err(status::bad_request)?;
    let fields = FieldSelector::parse(r.q("fieldSelector").unwrap_or(""), def.field_labels)
        .map_err(status::bad_request)?;
    let rv_str = r.q("resourceVersion").unwrap_or("");
    let rv =
        if rv_str.is_empty() {
            None
        } else {
            Some(rv_str.parse::<u64>().map_err(|_| {
                status::bad_request(format!("invalid resource version: {rv_str:?}"))
            })?)
        };
    let rv_match = r.q("resourceVersionMatch").unwrap_or("").to_string();
    let limit = match r.q("limit") {
        None | Some("") => None,
        Some(l) => Some(
            l.parse::<i64>()
                .map_err(|e| status::bad_request(format!("limit: {e}")))?,
        ),
    };
    let timeout = match r.q("timeoutSeconds") {
        None | Some("") => None,
        Some(t) => Some(
            t.parse::<u64>()
                .map_err(|e| status::bad_request(format!("timeoutSeconds: {e}")))?,
        ),
    };
    let bookmarks = r
        .q("allowWatchBookmarks")
        .and_then(parse_bool)
        .unwrap_or(false);
    let send_initial = r.q("sendInitialEvents").and_then(parse_bool);
    let mut errs = vec![];
    use super::status::FieldError;
    if !rv_match.is_empty() {
        if !matches!(rv_match.as_str(), "NotOlderThan" | "Exact") {
            errs.push(FieldError {
                field: "resourceVersionMatch".into(),
                typ: status::FieldErrorType::NotSupported(
                    format!("{rv_match:?}"),
                    vec!["Exact".into(), "NotOlderThan".into(), String::new()],
                ),
                detail: String::new(),
            });
        }
        if rv.is_none() {
            errs.push(FieldError::forbidden(
                "resourceVersionMatch",
                "resourceVersionMatch is forbidden unless resourceVersion is provided",
            ));
        }
        if rv == Some(0) && rv_match == "Exact" {
            errs.push(FieldError::forbidden(
                "resourceVersionMatch",
                "resourceVersionMatch \"exact\" is forbidden for resourceVersion \"0\"",
            ));
        }
        if watch && send_initial.is_none() {
            errs.push(FieldError::forbidden(
                "resourceVersionMatch",
                "resourceVersionMatch is forbidden for watch unless sendInitialEvents is provided",
            ));
        }
        if watch && send_initial.is_some() && rv_match != "NotOlderThan" {
            errs.push(FieldError::forbidden(
                "resourceVersionMatch",
                "sendInitialEvents requires setting resourceVersionMatch to NotOlderThan",
            ));
        }
    }
    if let Some(si) = send_initial {
        if !watch {
            errs.push(FieldError::forbidden(
                "sendInitialEvents",
                "sendInitialEvents is forbidden for list",
            ));
        } else if si && !bookmarks {
            errs.push(FieldError::forbidden(
                "allowWatchBookmarks",
                "allowWatchBookmarks must be set to true when sendInitialEvents is true",
            ));
        }
        if watch && rv_match.is_empty() {
            errs.push(FieldError::forbidden(
                "resourceVersionMatch",
                "sendInitialEvents requires setting resourceVersionMatch to NotOlderThan",
            ));
        }
    }
    if let Some(l) = limit {
        if l < 0 {
            errs.push(FieldError::invalid(
                "limit",
                l.to_string(),
                "must be greater than or equal to 0",
            ));
        }
    }
    let cont = match r.q("continue") {
        None | Some("") => None,
        Some(c) => {
            if rv.is_some() {
                errs.push(FieldError::forbidden(
                    "resourceVersion",
                    "specifying resource version is not allowed when using continue",
                ));
            }
            Some(decode_continue(c)?)
        }
    };
    if !errs.is_empty() {
        return Err(status::invalid("meta.k8s.io", "ListOptions", "", &errs));
    }
    Ok(ListOpts {
        labels,
        fields,
        rv,
        rv_match,
        limit: limit
            .and_then(|l| usize::try_from(l).ok())
            .filter(|l| *l > 0),
        cont,
        timeout,
        bookmarks,
        send_initial,
    })
}

fn decode_continue(c: &str) -> Result<(u64, String), ApiError> {
    let bad = |why: &str| status::bad_request(format!("continue key is not valid: {why}"));
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(c.trim_end_matches('='))
        .map_err(|_| bad("incorrect encoded start resourceVersion (version meta.k8s.io/v1)"))?;
    let v: Value = serde_json::from_slice(&raw)
        .map_err(|_| bad("incorrect encoded start resourceVersion (version meta.k8s.io/v1)"))?;
    if v["v"] != "meta.k8s.io/v1" {
        return Err(bad("server does not recognize this encoded key"));
    }
    let rv = v["rv"]
        .as_u64()
        .ok_or_else(|| bad("incorrect encoded start resourceVersion (version meta.k8s.io/v1)"))?;
    let start = v["start"].as_str().unwrap_or("").to_string();
    Ok((rv, start))
}

fn encode_continue(rv: u64, start_after: &str) -> String {
    let v = json!({"v": "meta.k8s.io/v1", "rv": rv, "start": format!("{start_after}\u{0}")});
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(serde_json::to_vec(&v).unwrap())
}

fn matches(def: &ResourceDef, o: &ListOpts, ns: &str, obj: &Value) -> bool {
    if !ns.is_empty() && meta_str(obj, "namespace") != ns {
        return false;
    }
    let labels: BTreeMap<String, String> = obj
        .get("metadata")
        .and_then(|m| m.get("labels"))
        .and_then(|l| serde_json::from_value(l.clone()).ok())
        .unwrap_or_default();
    o.labels.matches(&labels) && o.fields.matches(&resources::fields(def, obj))
}

fn list(shared: &Shared, def: &ResourceDef, r: &Req) -> Result<Response<Body>, ApiError> {
    let o = list_opts(def, r, false)?;
    let st = shared.state.lock().unwrap();
    let (list_rv, start) = match &o.cont {
        Some((rv, start)) => {
            if *rv < st.store.compacted_rv {
                return Err(status::expired("The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter, or use the continue token in this response to retrieve the remainder of the results. Continuing with the provided token results in an inconsistent list - objects that were created, modified, or deleted between the time the first chunk was returned and now may show up in the list.".into()));
            }
            (*rv, Some(start.trim_end_matches('\u{0}').to_string()))
        }
        None => {
            if o.rv_match == "Exact" && o.rv != Some(st.store.rv) {
                // Exact reads of an older revision need etcd's history,
                // which this server does not keep for lists.
                return Err(status::expired(format!(
                    "too old resource version: {} ({})",
                    o.rv.unwrap_or(0),
                    st.store.rv
                )));
            }
            (st.store.rv, None)
        }
    };
    let key_of = |v: &Value| {
        let ns = meta_str(v, "namespace");
        let name = meta_str(v, "name");
        if ns.is_empty() {
            name.to_string()
        } else {
            format!("{ns}/{name}")
        }
    };
    let mut items = vec![];
    let mut cont = None;
    let mut remaining = 0i64;
    for v in st.store.list(def.kind) {
        if !matches(def, &o, &r.attrs.namespace, v) {
            continue;
        }
        let k = key_of(v);
        if let Some(s) = &start {
            if k.as_str() <= s.as_str() {
                continue;
            }
        }
        if let Some(l) = o.limit {
            if items.len() == l {
                remaining += 1;
                if cont.is_none() {
                    cont = Some(encode_continue(
                        list_rv,
                        &key_of(items.last().map(|(_, v): &(String, Value)| v).unwrap()),
                    ));
                }
                continue;
            }
        }
        items.push((k, v.clone()));
    }
    let items: Vec<Value> = items
        .iter()
        .map(|(_, v)| resources::present(def, v, true))
        .collect();
    let mut meta = json!({"resourceVersion": list_rv.to_string()});
    if let Some(c) = cont {
        meta["continue"] = Value::String(c);
        meta["remainingItemCount"] = json!(remaining);
    }
    Ok(respond(
        200,
        &json!({
            "kind": format!("{}List", def.kind_name),
            "apiVersion": def.api_version(),
            "metadata": meta,
            "items": items,
        }),
    ))
}

fn event_line(typ: &str, obj: &Value) -> Bytes {
    let mut b = serde_json::to_vec(&json!({"type": typ, "object": obj})).unwrap();
    b.push(b'\n');
    Bytes::from(b)
}

fn watch(
    shared: &Arc<Shared>,
    def: &'static ResourceDef,
    r: &Req,
) -> Result<Response<Body>, ApiError> {
    let o = list_opts(def, r, true)?;
    let (tx, mut rx) = mpsc::unbounded_channel::<WatchMsg>();
    let (out_tx, out_rx) = mpsc::channel::<Bytes>(256);
    let ns = r.attrs.namespace.clone();
    let mut initial: Vec<Bytes> = vec![];
    let mut expired: Option<ApiError> = None;
    let mut last_rv;
    {
        let mut st = shared.state.lock().unwrap();
        last_rv = st.store.rv;
        let synthetic = o.send_initial == Some(true)
            || (o.send_initial.is_none() && matches!(o.rv, None | Some(0)));
        if synthetic {
            for v in st.store.list(def.kind) {
                if matches(def, &o, &ns, v) {
                    initial.push(event_line("ADDED", &resources::present(def, v, false)));
                }
            }
            if o.send_initial == Some(true) {
                initial.push(event_line("BOOKMARK", &bookmark(def, last_rv, true)));
            }
            st.store.watch_now(def.kind, tx.clone());
        } else {
            let from = o.rv.unwrap_or(0);
            match st.store.watch_from(def.kind, from, tx.clone()) {
                Ok(missed) => {
                    for rec in missed {
                        if let Some(line) = filter(def, &o, &ns, &rec) {
                            initial.push(line);
                        }
                    }
                }
                Err(oldest) => {
                    expired = Some(status::expired(format!(
                        "too old resource version: {from} ({oldest})"
                    )));
                }
            }
        }
    }
    let (bookmark_every, timeout) = {
        let st = shared.state.lock().unwrap();
        (
            st.bookmark_interval,
            Duration::from_secs(o.timeout.unwrap_or(1800)),
        )
    };
    let shared2 = shared.clone();
    tokio::spawn(async move {
        if let Some(e) = expired {
            let _ = out_tx.send(event_line("ERROR", &e.status_value())).await;
            return;
        }
        for line in initial {
            if out_tx.send(line).await.is_err() {
                return;
            }
        }
        let deadline = tokio::time::Instant::now() + timeout;
        let mut tick = tokio::time::interval(bookmark_every);
        tick.tick().await;
        loop {
            tokio::select! {
                msg = rx.recv() => match msg {
                    Some(WatchMsg::Event(rec)) => {
                        last_rv = rec.rv;
                        if let Some(line) = filter(def, &o, &ns, &rec) {
                            if out_tx.send(line).await.is_err() { return; }
                        }
                    }
                    Some(WatchMsg::Bookmark(rv)) => {
                        last_rv = last_rv.max(rv);
                        if out_tx.send(event_line("BOOKMARK", &bookmark(def, last_rv, false))).await.is_err() { return; }
                    }
                    None => return,
                },
                _ = tick.tick(), if o.bookmarks => {
                    // Queue the bookmark behind every change already sent to
                    // this watcher: take the revision under the store lock.
                    let st = shared2.state.lock().unwrap();
                    let _ = tx.send(WatchMsg::Bookmark(st.store.rv));
                }
                () = tokio::time::sleep_until(deadline) => return,
                () = out_tx.closed() => return,
            }
        }
    });
    Ok(Response::builder()
        .status(200)
        .header("Content-Type", "application/json")
        .header("Cache-Control", "no-cache, private")
        .body(Body::Stream(out_rx))
        .unwrap())
}

fn bookmark(def: &ResourceDef, rv: u64, initial_end: bool) -> Value {
    let mut meta = json!({"resourceVersion": rv.to_string(), "creationTimestamp": null});
    if initial_end {
        meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
    }
    json!({"kind": def.kind_name, "apiVersion": def.api_version(), "metadata": meta})
}

/// The watch cache's per-watcher filtering, with ADDED/DELETED for objects
/// that start or stop matching.
fn filter(def: &ResourceDef, o: &ListOpts, ns: &str, rec: &WatchRecord) -> Option<Bytes> {
    let cur = matches(def, o, ns, &rec.object);
    let old = rec.prev.as_ref().is_some_and(|p| matches(def, o, ns, p));
    let (typ, obj) = match rec.typ {
        "ADDED" => (cur.then_some("ADDED")?, rec.object.clone()),
        "DELETED" => (old.then_some("DELETED")?, rec.object.clone()),
        _ => match (old, cur) {
            (true, true) => ("MODIFIED", rec.object.clone()),
            (false, true) => ("ADDED", rec.object.clone()),
            (true, false) => {
                let mut p = rec.prev.clone().unwrap();
                super::store::set_meta(
                    &mut p,
                    "resourceVersion",
                    Value::String(rec.rv.to_string()),
                );
                ("DELETED", p)
            }
            (false, false) => return None,
        },
    };
    Some(event_line(typ, &resources::present(def, &obj, false)))
}
