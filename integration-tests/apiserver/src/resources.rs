//! The served resources: their definitions (the custom resource's from
//! the shipped CRD), discovery, wire form and field labels, and what every
//! write shares: body decoding, `dryRun`, `fieldValidation`, create-time
//! metadata, the patch types, update-time identity checks and no-op
//! detection. Each resource's own create/patch is in its module
//! (`csr.rs`/here for CSRs, `events.rs`, `nodes.rs`, `custom.rs`).

use std::collections::BTreeMap;
use std::sync::{Arc, LazyLock};

use http::Response;
use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    APIGroup, APIGroupList, APIResource, APIResourceList, APIVersions, GroupVersionForDiscovery,
    ServerAddressByClientCIDR, Time,
};
use k8s_openapi::apimachinery::pkg::version::Info;
use serde_json::{json, Value};

use super::body::Body;
use super::ca::parse_csr;
use super::crd::CRD;
use super::events::core_to_events;
use super::handler::{respond, Req};
use super::patch::Strategies;
use super::status::{self, ApiError, FieldError};
use super::store::{meta_str, set_meta, Kind};
use super::{csr, Shared, State, Verdict};

/// One served resource.
#[derive(Debug, Clone)]
pub(crate) struct ResourceDef {
    pub kind: Kind,
    pub group: &'static str,
    pub version: &'static str,
    pub plural: &'static str,
    pub singular: &'static str,
    pub kind_name: &'static str,
    pub namespaced: bool,
    pub verbs: &'static [&'static str],
    pub short_names: &'static [&'static str],
    pub categories: &'static [&'static str],
    pub field_labels: &'static [&'static str],
    /// Built-in types: list items carry no apiVersion/kind on the wire.
    pub builtin: bool,
}

impl ResourceDef {
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }
}

/// The Pod field labels of v1 (`pkg/apis/core/v1/conversion.go`), plus
/// `spec.host`, which the conversion turns into `spec.nodeName` for old
/// clients.
const POD_FIELDS: &[&str] = &[
    "metadata.name",
    "metadata.namespace",
    "spec.nodeName",
    "spec.restartPolicy",
    "spec.schedulerName",
    "spec.serviceAccountName",
    "spec.hostNetwork",
    "status.phase",
    "status.podIP",
    "status.podIPs",
    "status.nominatedNodeName",
    "spec.host",
];

const EVENT_FIELDS: &[&str] = &[
    "metadata.name",
    "metadata.namespace",
    "involvedObject.kind",
    "involvedObject.namespace",
    "involvedObject.name",
    "involvedObject.uid",
    "involvedObject.apiVersion",
    "involvedObject.resourceVersion",
    "involvedObject.fieldPath",
    "reason",
    "reportingComponent",
    "source",
    "type",
];

static BUILTIN: &[ResourceDef] = &[
    ResourceDef {
        kind: Kind::Csr,
        group: "certificates.k8s.io",
        version: "v1",
        plural: "certificatesigningrequests",
        singular: "certificatesigningrequest",
        kind_name: "CertificateSigningRequest",
        namespaced: false,
        verbs: &[
            "create",
            "delete",
            "deletecollection",
            "get",
            "list",
            "patch",
            "update",
            "watch",
        ],
        short_names: &["csr"],
        categories: &[],
        field_labels: &["metadata.name", "spec.signerName"],
        builtin: true,
    },
    ResourceDef {
        kind: Kind::Node,
        group: "",
        version: "v1",
        plural: "nodes",
        singular: "node",
        kind_name: "Node",
        namespaced: false,
        verbs: &[
            "create",
            "delete",
            "deletecollection",
            "get",
            "list",
            "patch",
            "update",
            "watch",
        ],
        short_names: &["no"],
        categories: &[],
        field_labels: &["metadata.name", "spec.unschedulable"],
        builtin: true,
    },
    ResourceDef {
        kind: Kind::Namespace,
        group: "",
        version: "v1",
        plural: "namespaces",
        singular: "namespace",
        kind_name: "Namespace",
        namespaced: false,
        verbs: &[
            "create", "delete", "get", "list", "patch", "update", "watch",
        ],
        short_names: &["ns"],
        categories: &[],
        field_labels: &["metadata.name", "status.phase"],
        builtin: true,
    },
    ResourceDef {
        kind: Kind::Event,
        group: "",
        version: "v1",
        plural: "events",
        singular: "event",
        kind_name: "Event",
        namespaced: true,
        verbs: &[
            "create",
            "delete",
            "deletecollection",
            "get",
            "list",
            "patch",
            "update",
            "watch",
        ],
        short_names: &["ev"],
        categories: &[],
        field_labels: EVENT_FIELDS,
        builtin: true,
    },
    ResourceDef {
        kind: Kind::Event,
        group: "events.k8s.io",
        version: "v1",
        plural: "events",
        singular: "event",
        kind_name: "Event",
        namespaced: true,
        verbs: &[
            "create",
            "delete",
            "deletecollection",
            "get",
            "list",
            "patch",
            "update",
            "watch",
        ],
        short_names: &["ev"],
        categories: &[],
        field_labels: EVENT_FIELDS,
        builtin: true,
    },
    ResourceDef {
        kind: Kind::Secret,
        group: "",
        version: "v1",
        plural: "secrets",
        singular: "secret",
        kind_name: "Secret",
        namespaced: true,
        verbs: &[
            "create",
            "delete",
            "deletecollection",
            "get",
            "list",
            "patch",
            "update",
            "watch",
        ],
        short_names: &[],
        categories: &[],
        field_labels: &["metadata.name", "metadata.namespace", "type"],
        builtin: true,
    },
    ResourceDef {
        kind: Kind::Pod,
        group: "",
        version: "v1",
        plural: "pods",
        singular: "pod",
        kind_name: "Pod",
        namespaced: true,
        verbs: &[
            "create",
            "delete",
            "deletecollection",
            "get",
            "list",
            "patch",
            "update",
            "watch",
        ],
        short_names: &["po"],
        categories: &["all"],
        field_labels: POD_FIELDS,
        builtin: true,
    },
];

/// Every served resource: the built-in ones and the shipped CRD's.
pub(crate) static DEFS: LazyLock<Vec<ResourceDef>> = LazyLock::new(|| {
    let mut defs = BUILTIN.to_vec();
    defs.push(ResourceDef {
        kind: Kind::Revocation,
        group: CRD.group,
        version: CRD.version,
        plural: CRD.plural,
        singular: CRD.singular,
        kind_name: CRD.kind,
        namespaced: CRD.namespaced,
        // What apiextensions-apiserver reports for a CRD without
        // subresources.
        verbs: &[
            "delete",
            "deletecollection",
            "get",
            "list",
            "patch",
            "create",
            "update",
            "watch",
        ],
        short_names: CRD.short_names,
        categories: CRD.categories,
        field_labels: &["metadata.name", "metadata.namespace"],
        builtin: false,
    });
    defs
});

pub(crate) fn lookup(group: &str, version: &str, plural: &str) -> Option<&'static ResourceDef> {
    DEFS.iter()
        .find(|d| d.group == group && d.version == version && d.plural == plural)
}

/// The wire form of a stored object for `def`'s API.
pub(crate) fn present(def: &ResourceDef, stored: &Value, in_list: bool) -> Value {
    let mut v = if def.kind == Kind::Event && def.group == "events.k8s.io" {
        core_to_events(stored)
    } else {
        stored.clone()
    };
    if let Some(o) = v.as_object_mut() {
        if in_list && def.builtin {
            o.remove("apiVersion");
            o.remove("kind");
        } else {
            o.insert("apiVersion".into(), Value::String(def.api_version()));
            o.insert("kind".into(), Value::String(def.kind_name.into()));
        }
    }
    v
}

pub(crate) fn get_str<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    let mut cur = v;
    for p in path {
        cur = cur.get(*p)?;
    }
    cur.as_str()
}

/// Field-selector values of an object (stored form).
pub(crate) fn fields(def: &ResourceDef, v: &Value) -> BTreeMap<&'static str, String> {
    let mut f = BTreeMap::new();
    let s = |p: &[&str]| get_str(v, p).unwrap_or("").to_string();
    f.insert("metadata.name", s(&["metadata", "name"]));
    f.insert("metadata.namespace", s(&["metadata", "namespace"]));
    match def.kind {
        Kind::Csr => {
            f.insert("spec.signerName", s(&["spec", "signerName"]));
        }
        Kind::Node => {
            let u = v
                .get("spec")
                .and_then(|s| s.get("unschedulable"))
                .and_then(Value::as_bool)
                .unwrap_or(false);
            f.insert("spec.unschedulable", u.to_string());
        }
        Kind::Namespace => {
            f.insert("status.phase", s(&["status", "phase"]));
        }
        Kind::Event => {
            for (label, field) in [
                ("involvedObject.kind", "kind"),
                ("involvedObject.namespace", "namespace"),
                ("involvedObject.name", "name"),
                ("involvedObject.uid", "uid"),
                ("involvedObject.apiVersion", "apiVersion"),
                ("involvedObject.resourceVersion", "resourceVersion"),
                ("involvedObject.fieldPath", "fieldPath"),
            ] {
                f.insert(label, s(&["involvedObject", field]));
            }
            f.insert("reason", s(&["reason"]));
            f.insert("reportingComponent", s(&["reportingComponent"]));
            f.insert("source", s(&["source", "component"]));
            f.insert("type", s(&["type"]));
        }
        Kind::Secret => {
            f.insert("type", s(&["type"]));
        }
        Kind::Pod => {
            // `ToSelectableFields` (pkg/registry/core/pod/strategy.go).
            let node = s(&["spec", "nodeName"]);
            f.insert("spec.host", node.clone());
            f.insert("spec.nodeName", node);
            f.insert("spec.restartPolicy", s(&["spec", "restartPolicy"]));
            f.insert("spec.schedulerName", s(&["spec", "schedulerName"]));
            f.insert(
                "spec.serviceAccountName",
                s(&["spec", "serviceAccountName"]),
            );
            let host_network = v
                .get("spec")
                .and_then(|s| s.get("hostNetwork"))
                .and_then(Value::as_bool)
                .unwrap_or(false);
            f.insert("spec.hostNetwork", host_network.to_string());
            f.insert("status.phase", s(&["status", "phase"]));
            // The first of `podIPs` (v1's `podIP` is the same address).
            let ip = v
                .get("status")
                .and_then(|s| s.get("podIPs"))
                .and_then(|ips| ips.get(0))
                .and_then(|ip| ip.get("ip"))
                .and_then(Value::as_str)
                .map_or_else(|| s(&["status", "podIP"]), str::to_string);
            f.insert("status.podIP", ip);
            // Accepted as a label, but not a selectable field: it matches
            // as the empty string, as upstream's does.
            f.insert("status.podIPs", String::new());
            f.insert(
                "status.nominatedNodeName",
                s(&["status", "nominatedNodeName"]),
            );
        }
        Kind::Revocation => {}
    }
    f
}

// ---------------------------------------------------------------- discovery

fn discovery_resources(group: &str, version: &str) -> Vec<APIResource> {
    DEFS.iter()
        .filter(|d| d.group == group && d.version == version)
        .map(|d| APIResource {
            name: d.plural.into(),
            singular_name: d.singular.into(),
            namespaced: d.namespaced,
            kind: d.kind_name.into(),
            verbs: d.verbs.iter().map(|s| s.to_string()).collect(),
            short_names: (!d.short_names.is_empty())
                .then(|| d.short_names.iter().map(|s| s.to_string()).collect()),
            categories: (!d.categories.is_empty())
                .then(|| d.categories.iter().map(|s| s.to_string()).collect()),
            ..Default::default()
        })
        .collect()
}

fn groups() -> Vec<(&'static str, &'static str)> {
    let mut g: Vec<(&str, &str)> = vec![];
    for d in DEFS.iter() {
        if !d.group.is_empty() && !g.contains(&(d.group, d.version)) {
            g.push((d.group, d.version));
        }
    }
    g
}

fn api_group(name: &str, version: &str) -> APIGroup {
    let gv = GroupVersionForDiscovery {
        group_version: format!("{name}/{version}"),
        version: version.into(),
    };
    APIGroup {
        name: name.into(),
        preferred_version: Some(gv.clone()),
        versions: vec![gv],
        ..Default::default()
    }
}

fn wants_aggregated(r: &Req) -> bool {
    r.headers
        .get(http::header::ACCEPT)
        .and_then(|h| h.to_str().ok())
        .and_then(|a| a.split(',').next().map(str::to_string))
        .is_some_and(|first| {
            first.contains("g=apidiscovery.k8s.io")
                && first.contains("v=v2;")
                && first.contains("as=APIGroupDiscoveryList")
        })
}

fn aggregated(core: bool) -> Value {
    let mut by_group: Vec<(&str, &str)> = vec![];
    if core {
        by_group.push(("", "v1"));
    } else {
        by_group = groups();
    }
    let items: Vec<Value> = by_group
        .iter()
        .map(|(g, v)| {
            let resources: Vec<Value> = DEFS
                .iter()
                .filter(|d| d.group == *g && d.version == *v)
                .map(|d| {
                    // Built-in kinds leave the response group/version to the
                    // group's; a CRD's names them.
                    let (rg, rv) = if d.builtin {
                        ("", "")
                    } else {
                        (d.group, d.version)
                    };
                    let mut r = json!({
                        "resource": d.plural,
                        "responseKind": {"group": rg, "version": rv, "kind": d.kind_name},
                        "scope": if d.namespaced { "Namespaced" } else { "Cluster" },
                        "singularResource": d.singular,
                        "verbs": d.verbs,
                    });
                    if !d.short_names.is_empty() {
                        r["shortNames"] = json!(d.short_names);
                    }
                    if !d.categories.is_empty() {
                        r["categories"] = json!(d.categories);
                    }
                    r
                })
                .collect();
            json!({
                "metadata": {"name": g, "creationTimestamp": null},
                "versions": [{"version": v, "resources": resources, "freshness": "Current"}],
            })
        })
        .collect();
    json!({"kind": "APIGroupDiscoveryList", "apiVersion": "apidiscovery.k8s.io/v2", "metadata": {}, "items": items})
}

pub(crate) fn plain(code: u16, text: &str) -> Response<Body> {
    Response::builder()
        .status(code)
        .header("Content-Type", "text/plain; charset=utf-8")
        .header("X-Content-Type-Options", "nosniff")
        .body(Body::full(text.to_string()))
        .unwrap()
}

pub(crate) fn discovery(shared: &Shared, r: &Req) -> Result<Response<Body>, ApiError> {
    if r.attrs.verb != "get" {
        return Ok(plain(404, "404 page not found\n"));
    }
    let path = r.attrs.path.trim_end_matches('/');
    let to = |v: Value| Ok(respond(200, &v));
    match path {
        "/api" => {
            if wants_aggregated(r) {
                return Ok(aggregated_response(aggregated(true)));
            }
            to(serde_json::to_value(APIVersions {
                versions: vec!["v1".into()],
                server_address_by_client_cidrs: vec![ServerAddressByClientCIDR {
                    client_cidr: "0.0.0.0/0".into(),
                    server_address: format!("127.0.0.1:{}", shared.port),
                }],
            })
            .unwrap())
        }
        "/apis" => {
            if wants_aggregated(r) {
                return Ok(aggregated_response(aggregated(false)));
            }
            to(serde_json::to_value(APIGroupList {
                groups: groups().iter().map(|(g, v)| api_group(g, v)).collect(),
            })
            .unwrap())
        }
        "/api/v1" => to(serde_json::to_value(APIResourceList {
            group_version: "v1".into(),
            resources: discovery_resources("", "v1"),
        })
        .unwrap()),
        "/version" => to(serde_json::to_value(Info {
            major: "1".into(),
            minor: "33".into(),
            git_version: "v1.33.0".into(),
            git_commit: "0000000000000000000000000000000000000000".into(),
            git_tree_state: "clean".into(),
            build_date: "2025-04-23T00:00:00Z".into(),
            go_version: "go1.24.2".into(),
            compiler: "gc".into(),
            platform: "linux/amd64".into(),
            ..Default::default()
        })
        .unwrap()),
        "/healthz" | "/livez" | "/readyz" => Ok(plain(200, "ok")),
        "/openapi/v3" => to(super::openapi::index()),
        p if p == super::openapi::gv_path() => to(super::openapi::gv_document()),
        _ => {
            let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
            match parts.as_slice() {
                ["apis", g] => match groups().iter().find(|(x, _)| x == g) {
                    Some((g, v)) => to(serde_json::to_value(api_group(g, v)).unwrap()),
                    None => Ok(plain(404, "404 page not found\n")),
                },
                ["apis", g, v] if groups().contains(&(g, v)) => {
                    to(serde_json::to_value(APIResourceList {
                        group_version: format!("{g}/{v}"),
                        resources: discovery_resources(g, v),
                    })
                    .unwrap())
                }
                _ => Ok(plain(404, "404 page not found\n")),
            }
        }
    }
}

fn aggregated_response(v: Value) -> Response<Body> {
    Response::builder()
        .status(200)
        .header(
            "Content-Type",
            "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList",
        )
        .body(Body::full(serde_json::to_vec(&v).unwrap()))
        .unwrap()
}

// ---------------------------------------------------------------- writes

/// `names.SimpleNameGenerator`: prefix + 5 random characters.
pub(crate) fn generate_name(prefix: &str) -> String {
    const ALPHA: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut buf = [0u8; 5];
    openssl::rand::rand_bytes(&mut buf).unwrap();
    let suffix: String = buf
        .iter()
        .map(|b| ALPHA[usize::from(*b) % ALPHA.len()] as char)
        .collect();
    let max = 63 - 5;
    let p = if prefix.len() > max {
        &prefix[..max]
    } else {
        prefix
    };
    format!("{p}{suffix}")
}

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

pub(crate) fn now_time() -> Time {
    Time(k8s_openapi::jiff::Timestamp::from_second(super::ca::now_unix()).unwrap())
}

pub(crate) fn parse_body(r: &Req) -> Result<Value, ApiError> {
    serde_json::from_slice(&r.body).map_err(|e| {
        status::bad_request(format!("the body of the request was in an unknown format - accepted media types include: application/json, application/yaml, application/vnd.kubernetes.protobuf ({e})"))
    })
}

fn dry_run(r: &Req) -> Result<bool, ApiError> {
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

/// Unknown fields of a typed body (`input` against its typed round trip
/// `known`): a 400 under `Strict` (`<Kind> in version "v1" cannot be
/// handled as a <Kind>: strict decoding error: unknown field "..."` on
/// create, without the prefix on patch), else warnings (`Warn`) or nothing.
fn strict_known(
    r: &Req,
    def: &ResourceDef,
    input: &Value,
    known: &Value,
) -> Result<Vec<String>, ApiError> {
    strict_known_as(r, def, input, known, true)
}

fn strict_known_as(
    r: &Req,
    def: &ResourceDef,
    input: &Value,
    known: &Value,
    create: bool,
) -> Result<Vec<String>, ApiError> {
    let directive = validation_directive(r)?;
    let mut unknown = vec![];
    csr::unknown_fields(input, known, "", &mut unknown);
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

/// [`strict_known`] for a built-in kind decoded as its k8s-openapi type.
pub(crate) fn strict_typed(
    r: &Req,
    def: &ResourceDef,
    body: &Value,
) -> Result<Vec<String>, ApiError> {
    strict_typed_as(r, def, body, true)
}

/// The same for a patched object (no kind prefix in the message).
pub(crate) fn strict_typed_patch(
    r: &Req,
    def: &ResourceDef,
    body: &Value,
) -> Result<Vec<String>, ApiError> {
    strict_typed_as(r, def, body, false)
}

fn strict_typed_as(
    r: &Req,
    def: &ResourceDef,
    body: &Value,
    create: bool,
) -> Result<Vec<String>, ApiError> {
    let known = match def.kind {
        Kind::Node => serde_json::from_value::<k8s_openapi::api::core::v1::Node>(body.clone())
            .map(|n| serde_json::to_value(n).unwrap()),
        Kind::Csr => serde_json::from_value::<CertificateSigningRequest>(body.clone())
            .map(|n| serde_json::to_value(n).unwrap()),
        _ => return Ok(vec![]),
    }
    .map_err(|e| csr::decode_error(def.kind_name, def.version, &e.to_string()))?;
    strict_known_as(r, def, body, &known, create)
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

/// `rest.BeforeCreate`'s metadata handling: name generation, namespace
/// checks, system fields.
pub(crate) fn prepare_meta(r: &Req, def: &ResourceDef, v: &mut Value) -> Result<(), ApiError> {
    if !v.get("metadata").is_some_and(Value::is_object) {
        set_meta(v, "name", Value::Null);
        v["metadata"].as_object_mut().unwrap().remove("name");
    }
    if def.namespaced {
        let body_ns = meta_str(v, "namespace").to_string();
        if !body_ns.is_empty() && body_ns != r.attrs.namespace {
            return Err(status::bad_request("the namespace of the provided object does not match the namespace sent on the request"));
        }
        set_meta(v, "namespace", Value::String(r.attrs.namespace.clone()));
    } else if let Some(m) = v["metadata"].as_object_mut() {
        m.remove("namespace");
    }
    if meta_str(v, "name").is_empty() {
        let g = meta_str(v, "generateName").to_string();
        if !g.is_empty() {
            set_meta(v, "name", Value::String(generate_name(&g)));
        }
    }
    let rv = meta_str(v, "resourceVersion");
    if !rv.is_empty() && rv != "0" {
        return Err(status::server_error(
            500,
            "resourceVersion should not be set on objects to be created",
        ));
    }
    let m = v["metadata"].as_object_mut().unwrap();
    m.insert("uid".into(), Value::String(new_uid()));
    m.insert(
        "creationTimestamp".into(),
        serde_json::to_value(now_time()).unwrap(),
    );
    m.remove("resourceVersion");
    m.remove("deletionTimestamp");
    m.remove("deletionGracePeriodSeconds");
    m.remove("managedFields");
    Ok(())
}

/// NamespaceLifecycle: writes only in an existing namespace.
pub(crate) fn namespace_exists(st: &State, ns: &str) -> Result<(), ApiError> {
    if st.store.get(Kind::Namespace, "", ns).is_some() {
        Ok(())
    } else {
        Err(status::not_found("", "namespaces", ns))
    }
}

pub(crate) fn create(
    shared: &Arc<Shared>,
    def: &'static ResourceDef,
    r: &Req,
) -> Result<Response<Body>, ApiError> {
    let dry = dry_run(r)?;
    match def.kind {
        Kind::Csr => create_csr(shared, def, r, parse_body(r)?, dry),
        Kind::Event => super::events::create(shared, def, r, dry),
        Kind::Revocation => super::custom::create(shared, def, r, dry),
        Kind::Node => super::nodes::create(shared, def, r, dry),
        Kind::Secret => super::secrets::create(shared, def, r, dry),
        // Pods are put by tests (`ApiServer::set_pod`), not served for writes.
        Kind::Namespace | Kind::Pod => Err(status::method_not_allowed()),
    }
}

fn create_csr(
    shared: &Arc<Shared>,
    def: &ResourceDef,
    r: &Req,
    mut body: Value,
    dry: bool,
) -> Result<Response<Body>, ApiError> {
    prepare_meta(r, def, &mut body)?;
    let mut csr_obj: CertificateSigningRequest = csr::decode(&body)?;
    let warnings = strict_known(r, def, &body, &serde_json::to_value(&csr_obj).unwrap())?;
    let parsed = parse_csr(&csr_obj.spec.request.0);
    let name = csr_obj.metadata.name.clone().unwrap_or_default();
    let errs = csr::validate_create(&csr_obj, &parsed);
    if !errs.is_empty() {
        return Err(status::invalid(
            "certificates.k8s.io",
            "CertificateSigningRequest",
            &name,
            &errs,
        ));
    }
    // Admission: CertificateSubjectRestriction.
    if let Ok(p) = &parsed {
        if csr_obj.spec.signer_name == csr::APISERVER_CLIENT
            && p.orgs.iter().any(|o| o == "system:masters")
        {
            return Err(status::forbidden(
                format!("certificatesigningrequests.certificates.k8s.io {name:?} is forbidden: use of kubernetes.io/kube-apiserver-client signer with system:masters group is not allowed"),
                "certificates.k8s.io",
                "certificatesigningrequests",
                &name,
            ));
        }
    }
    // PrepareForCreate: requester identity from the authenticator, status cleared.
    csr_obj.spec.username = Some(r.user.name.clone());
    csr_obj.spec.uid = (!r.user.uid.is_empty()).then(|| r.user.uid.clone());
    csr_obj.spec.groups = Some(r.user.groups.clone());
    csr_obj.spec.extra = None;
    csr_obj.status = None;
    let v = serde_json::to_value(&csr_obj).unwrap();
    let mut st = shared.state.lock().unwrap();
    if st.store.get(Kind::Csr, "", &name).is_some() {
        return Err(status::already_exists(
            "certificates.k8s.io",
            "certificatesigningrequests",
            &name,
        ));
    }
    if dry {
        return Ok(respond_warned(201, &present(def, &v, false), &warnings));
    }
    let stored = st.store.create(Kind::Csr, v);
    if let Some((reason, message)) = st
        .csr
        .deny_next
        .pop_front()
        .or_else(|| st.csr.deny_all.clone())
    {
        st.verdicts
            .insert(name.clone(), Verdict::Deny(reason, message));
    }
    drop(st);
    shared.controller.notify_one();
    Ok(respond_warned(
        201,
        &present(def, &stored, false),
        &warnings,
    ))
}

pub(crate) fn delete(
    shared: &Arc<Shared>,
    def: &'static ResourceDef,
    r: &Req,
) -> Result<Response<Body>, ApiError> {
    // A pod's deletion is graceful upstream (kubelet finishes it); not
    // served here.
    if matches!(def.kind, Kind::Namespace | Kind::Pod) {
        return Err(status::method_not_allowed());
    }
    let dry = dry_run(r)?;
    let mut st = shared.state.lock().unwrap();
    let Some(existing) = st
        .store
        .get(def.kind, &r.attrs.namespace, &r.attrs.name)
        .cloned()
    else {
        return Err(status::not_found(def.group, def.plural, &r.attrs.name));
    };
    let gone = if dry {
        existing
    } else {
        st.store
            .delete(def.kind, &r.attrs.namespace, &r.attrs.name)
            .unwrap()
    };
    Ok(respond(200, &present(def, &gone, false)))
}

/// A PATCH body's type (its Content-Type).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PatchType {
    Json,
    Merge,
    Strategic,
}

const JSON_PATCH: &str = "application/json-patch+json";
const MERGE_PATCH: &str = "application/merge-patch+json";
const STRATEGIC_PATCH: &str = "application/strategic-merge-patch+json";

pub(crate) fn patch(
    shared: &Arc<Shared>,
    def: &'static ResourceDef,
    r: &Req,
) -> Result<Response<Body>, ApiError> {
    let ct = r
        .headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    let ct_base = ct.split(';').next().unwrap_or("").trim();
    // Server-side apply (application/apply-patch+yaml) is not served.
    let accepted: &[&str] = if def.builtin {
        &[JSON_PATCH, MERGE_PATCH, STRATEGIC_PATCH]
    } else {
        &[JSON_PATCH, MERGE_PATCH]
    };
    if !accepted.contains(&ct_base) {
        return Err(status::unsupported_patch(accepted));
    }
    let pt = match ct_base {
        JSON_PATCH => PatchType::Json,
        MERGE_PATCH => PatchType::Merge,
        _ => PatchType::Strategic,
    };
    if r.body.len() > 3 * 1024 * 1024 {
        return Err(status::too_large());
    }
    let dry = dry_run(r)?;
    validation_directive(r)?;
    match def.kind {
        Kind::Event => super::events::patch(shared, def, r, pt, dry),
        Kind::Revocation => super::custom::patch(shared, def, r, pt, dry),
        Kind::Node => super::nodes::patch(shared, def, r, pt, dry),
        Kind::Secret => super::secrets::patch(shared, def, r, pt, dry),
        Kind::Csr | Kind::Namespace | Kind::Pod => Err(status::method_not_allowed()),
    }
}

/// Applies the request's patch to the object as presented.
pub(crate) fn apply_patch(
    pt: PatchType,
    current: &Value,
    r: &Req,
    strategies: Strategies,
) -> Result<Value, ApiError> {
    let body: Value = serde_json::from_slice(&r.body)
        .map_err(|e| status::bad_request(format!("error decoding patch: {e}")))?;
    match pt {
        PatchType::Merge => {
            if !body.is_object() {
                return Err(status::bad_request(
                    "error decoding patch: a merge patch must be a JSON object",
                ));
            }
            Ok(super::patch::merge(current, &body))
        }
        PatchType::Json => super::patch::json_patch(current, &body).map_err(status::unprocessable),
        PatchType::Strategic => {
            super::patch::strategic_merge(current, &body, strategies).map_err(status::unknown)
        }
    }
}

/// `checkName` and the optimistic lock: the patched object must keep the
/// URL's name and namespace, and a resourceVersion it carries must be the
/// current one.
pub(crate) fn check_identity(
    def: &ResourceDef,
    stored: &Value,
    patched: &Value,
    r: &Req,
) -> Result<(), ApiError> {
    let name = meta_str(patched, "name");
    if name != r.attrs.name {
        return Err(status::bad_request(format!(
            "the name of the object ({name}) does not match the name on the URL ({})",
            r.attrs.name
        )));
    }
    let ns = meta_str(patched, "namespace");
    if !r.attrs.namespace.is_empty() && !ns.is_empty() && ns != r.attrs.namespace {
        return Err(status::bad_request(format!(
            "the namespace of the object ({ns}) does not match the namespace on the URL ({})",
            r.attrs.namespace
        )));
    }
    let rv = meta_str(patched, "resourceVersion");
    if !rv.is_empty() && rv != meta_str(stored, "resourceVersion") {
        return Err(conflict(def, &r.attrs.name));
    }
    Ok(())
}

/// `rest.BeforeUpdate`'s metadata rules: generation, creationTimestamp and
/// an empty uid are restored; a changed uid is immutable (422).
pub(crate) fn before_update(stored: &Value, new: &mut Value) -> Vec<FieldError> {
    let mut errs = vec![];
    let uid = meta_str(new, "uid").to_string();
    let old_uid = meta_str(stored, "uid").to_string();
    if uid.is_empty() {
        set_meta(new, "uid", Value::String(old_uid));
    } else if uid != old_uid {
        errs.push(FieldError::invalid(
            "metadata.uid",
            format!("{uid:?}"),
            "field is immutable",
        ));
    }
    for f in ["creationTimestamp", "generation"] {
        match stored["metadata"].get(f) {
            Some(v) => set_meta(new, f, v.clone()),
            None => {
                if let Some(m) = new.get_mut("metadata").and_then(Value::as_object_mut) {
                    m.remove(f);
                }
            }
        }
    }
    errs
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

/// `errors.NewConflict` for a stale resourceVersion.
fn conflict(def: &ResourceDef, name: &str) -> ApiError {
    let mut e = status::already_exists(def.group, def.plural, name);
    e.code = 409;
    if let status::ErrorBody::Status(s) = &mut e.body {
        s.reason = Some("Conflict".into());
        s.message = Some(format!(
                "Operation cannot be fulfilled on {} {name:?}: the object has been modified; please apply your changes to the latest version and try again",
                status::qualified(def.group, def.plural)
            ));
    }
    e
}
