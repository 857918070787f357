//! The served resources: their discovery, wire form, field labels, and the
//! create/patch/delete handlers with each resource's validation and
//! admission.

use std::collections::BTreeMap;
use std::sync::Arc;

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
use super::handler::{respond, Req};
use super::status::{self, ApiError, FieldError};
use super::store::{meta_str, set_meta, Kind};
use super::{csr, revocation, Shared, State, Verdict};

/// One served resource.
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

pub(crate) static DEFS: &[ResourceDef] = &[
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
        field_labels: EVENT_FIELDS,
        builtin: true,
    },
    ResourceDef {
        kind: Kind::Revocation,
        group: "nodecert.dev",
        version: "v1alpha1",
        plural: "renewrevocations",
        singular: "renewrevocation",
        kind_name: "RenewRevocation",
        namespaced: false,
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
        short_names: &[],
        field_labels: &["metadata.name", "metadata.namespace"],
        builtin: false,
    },
];

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

fn get_str<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
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
            ..Default::default()
        })
        .collect()
}

fn groups() -> Vec<(&'static str, &'static str)> {
    let mut g: Vec<(&str, &str)> = vec![];
    for d in DEFS {
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
                    json!({
                        "resource": d.plural,
                        "responseKind": {"group": "", "version": "", "kind": d.kind_name},
                        "scope": if d.namespaced { "Namespaced" } else { "Cluster" },
                        "singularResource": d.singular,
                        "verbs": d.verbs,
                        "shortNames": d.short_names,
                    })
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

fn plain(code: u16, text: &str) -> Response<Body> {
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

fn parse_body(r: &Req) -> Result<Value, ApiError> {
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

/// `fieldValidation=Strict`: unknown fields are a 400 (`Warn`, the
/// default, and `Ignore` accept them).
fn strict_fields(r: &Req, input: &Value, known: &Value) -> Result<(), ApiError> {
    match r.q("fieldValidation") {
        None | Some("" | "Ignore" | "Warn") => return Ok(()),
        Some("Strict") => {}
        Some(other) => {
            return Err(status::bad_request(format!(
                "fieldValidation: Unsupported value: {other:?}: supported values: \"Ignore\", \"Strict\", \"Warn\""
            )))
        }
    }
    let mut unknown = vec![];
    csr::unknown_fields(input, known, "", &mut unknown);
    if unknown.is_empty() {
        return Ok(());
    }
    let list: Vec<String> = unknown
        .iter()
        .map(|f| format!("unknown field {f:?}"))
        .collect();
    Err(status::bad_request(format!(
        "strict decoding error: {}",
        list.join(", ")
    )))
}

/// `rest.BeforeCreate`'s metadata handling: name generation, namespace
/// checks, system fields.
fn prepare_meta(r: &Req, def: &ResourceDef, v: &mut Value) -> Result<(), ApiError> {
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

fn namespace_exists(st: &State, ns: &str) -> Result<(), ApiError> {
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
    let mut body = parse_body(r)?;
    let dry = dry_run(r)?;
    match def.kind {
        Kind::Csr => create_csr(shared, def, r, body, dry),
        Kind::Event => {
            let obj = body.as_object().ok_or_else(|| {
                status::bad_request("the body of the request was in an unknown format")
            })?;
            csr::check_type_meta(obj, &def.api_version(), "Event")?;
            prepare_meta(r, def, &mut body)?;
            let core = if def.group == "events.k8s.io" {
                events_to_core(&body)
            } else {
                body
            };
            // NamespaceLifecycle admission runs before validation.
            namespace_exists(&shared.state.lock().unwrap(), &r.attrs.namespace)?;
            let errs = validate_event(&core, def.group == "events.k8s.io");
            let name = meta_str(&core, "name").to_string();
            if !errs.is_empty() {
                return Err(status::invalid(def.group, "Event", &name, &errs));
            }
            let mut st = shared.state.lock().unwrap();
            if st
                .store
                .get(Kind::Event, &r.attrs.namespace, &name)
                .is_some()
            {
                return Err(status::already_exists(def.group, def.plural, &name));
            }
            let mut core = core;
            core["apiVersion"] = json!("v1");
            core["kind"] = json!("Event");
            let stored = if dry {
                core
            } else {
                st.store.create(Kind::Event, core)
            };
            Ok(respond(201, &present(def, &stored, false)))
        }
        Kind::Revocation => {
            let obj = body.as_object().ok_or_else(|| {
                status::bad_request("the body of the request was in an unknown format")
            })?;
            csr::check_type_meta(obj, &def.api_version(), def.kind_name)?;
            prepare_meta(r, def, &mut body)?;
            let mut st = shared.state.lock().unwrap();
            let stored = create_revocation(&mut st, body, dry)?;
            Ok(respond(201, &present(def, &stored, false)))
        }
        Kind::Node => {
            let obj = body.as_object().ok_or_else(|| {
                status::bad_request("the body of the request was in an unknown format")
            })?;
            csr::check_type_meta(obj, "v1", "Node")?;
            prepare_meta(r, def, &mut body)?;
            let node: k8s_openapi::api::core::v1::Node = serde_json::from_value(body.clone())
                .map_err(|e| csr::decode_error("Node", "v1", &e.to_string()))?;
            strict_fields(r, &body, &serde_json::to_value(&node).unwrap())?;
            let name = node.metadata.name.clone().unwrap_or_default();
            let errs = csr::validate_meta(&node.metadata, true);
            if !errs.is_empty() {
                return Err(status::invalid("", "Node", &name, &errs));
            }
            // NodeRestriction: a node may create only its own Node object.
            if let Some(own) = r.user.node_name() {
                if own != name {
                    return Err(status::forbidden(
                        format!("nodes {name:?} is forbidden: node {own:?} is not allowed to modify node {name:?}"),
                        "",
                        "nodes",
                        &name,
                    ));
                }
            }
            let mut st = shared.state.lock().unwrap();
            if st.store.get(Kind::Node, "", &name).is_some() {
                return Err(status::already_exists("", "nodes", &name));
            }
            let v = serde_json::to_value(&node).unwrap();
            let stored = if dry {
                v
            } else {
                st.store.create(Kind::Node, v)
            };
            Ok(respond(201, &present(def, &stored, false)))
        }
        Kind::Namespace => Err(status::method_not_allowed()),
    }
}

pub(crate) fn create_revocation(
    st: &mut State,
    mut body: Value,
    dry: bool,
) -> Result<Value, ApiError> {
    let name = meta_str(&body, "name").to_string();
    let mut errs = vec![];
    if name.is_empty() {
        errs.push(FieldError::required(
            "metadata.name",
            "name or generateName is required",
        ));
    } else if !super::selectors::valid_dns_subdomain(&name) {
        errs.push(FieldError::invalid("metadata.name", format!("{name:?}"), "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character"));
    }
    errs.extend(revocation::validate_and_prune(&mut body));
    if !errs.is_empty() {
        return Err(status::invalid(
            "nodecert.dev",
            "RenewRevocation",
            &name,
            &errs,
        ));
    }
    if st.store.get(Kind::Revocation, "", &name).is_some() {
        return Err(status::already_exists(
            "nodecert.dev",
            "renewrevocations",
            &name,
        ));
    }
    body["apiVersion"] = json!("nodecert.dev/v1alpha1");
    body["kind"] = json!("RenewRevocation");
    set_meta(&mut body, "generation", json!(1));
    Ok(if dry {
        body
    } else {
        st.store.create(Kind::Revocation, body)
    })
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
    strict_fields(r, &body, &serde_json::to_value(&csr_obj).unwrap())?;
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
        return Ok(respond(201, &present(def, &v, false)));
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
    Ok(respond(201, &present(def, &stored, false)))
}

pub(crate) fn delete(
    shared: &Arc<Shared>,
    def: &'static ResourceDef,
    r: &Req,
) -> Result<Response<Body>, ApiError> {
    if def.kind == Kind::Namespace {
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

/// RFC 7386 JSON merge patch.
fn merge_patch(target: &mut Value, patch: &Value) {
    match patch {
        Value::Object(p) => {
            if !target.is_object() {
                *target = Value::Object(Default::default());
            }
            let t = target.as_object_mut().unwrap();
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        other => *target = other.clone(),
    }
}

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
    if !matches!(
        ct_base,
        "application/merge-patch+json" | "application/strategic-merge-patch+json"
    ) {
        return Err(status::unsupported_media_type(ct));
    }
    if !matches!(def.kind, Kind::Event | Kind::Revocation) {
        return Err(status::method_not_allowed());
    }
    let patch_v = parse_body(r)?;
    let dry = dry_run(r)?;
    let mut st = shared.state.lock().unwrap();
    let Some(stored) = st
        .store
        .get(def.kind, &r.attrs.namespace, &r.attrs.name)
        .cloned()
    else {
        return Err(status::not_found(def.group, def.plural, &r.attrs.name));
    };
    let mut presented = present(def, &stored, false);
    merge_patch(&mut presented, &patch_v);
    // Identity and system fields stay.
    for f in ["name", "namespace", "uid", "creationTimestamp"] {
        if let Some(old) = stored["metadata"].get(f) {
            set_meta(&mut presented, f, old.clone());
        }
    }
    let patched_rv = meta_str(&presented, "resourceVersion").to_string();
    if !patched_rv.is_empty() && patched_rv != meta_str(&stored, "resourceVersion") {
        return Err(conflict(def, &r.attrs.name));
    }
    let new = match def.kind {
        Kind::Event => {
            let core = if def.group == "events.k8s.io" {
                events_to_core(&presented)
            } else {
                presented
            };
            let strict = def.group == "events.k8s.io";
            let mut errs = validate_event(&core, strict);
            if strict {
                let old_events = core_to_events(&stored);
                let new_events = core_to_events(&core);
                for f in [
                    "regarding",
                    "reason",
                    "note",
                    "deprecatedSource",
                    "deprecatedFirstTimestamp",
                    "deprecatedLastTimestamp",
                    "deprecatedCount",
                    "type",
                    "eventTime",
                    "action",
                    "related",
                    "reportingController",
                    "reportingInstance",
                ] {
                    if old_events.get(f) != new_events.get(f) {
                        let internal = match f {
                            "regarding" => "involvedObject",
                            "note" => "message",
                            "deprecatedSource" => "source",
                            "deprecatedFirstTimestamp" => "firstTimestamp",
                            "deprecatedLastTimestamp" => "lastTimestamp",
                            "deprecatedCount" => "count",
                            "reportingController" => "reportingController",
                            other => other,
                        };
                        errs.push(FieldError::invalid(
                            internal,
                            "…".into(),
                            "field is immutable",
                        ));
                    }
                }
            }
            if !errs.is_empty() {
                return Err(status::invalid(def.group, "Event", &r.attrs.name, &errs));
            }
            let mut core = core;
            core["apiVersion"] = json!("v1");
            core["kind"] = json!("Event");
            core
        }
        _ => {
            let mut p = presented;
            let errs = revocation::validate_and_prune(&mut p);
            if !errs.is_empty() {
                return Err(status::invalid(
                    "nodecert.dev",
                    "RenewRevocation",
                    &r.attrs.name,
                    &errs,
                ));
            }
            if p.get("spec") != stored.get("spec") {
                let g = stored["metadata"]["generation"].as_i64().unwrap_or(1) + 1;
                set_meta(&mut p, "generation", json!(g));
            }
            p
        }
    };
    let out = if dry {
        new
    } else {
        st.store.update(def.kind, new)
    };
    Ok(respond(200, &present(def, &out, false)))
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

// ---------------------------------------------------------------- events

const EVENT_RENAMES: &[(&str, &str)] = &[
    ("regarding", "involvedObject"),
    ("note", "message"),
    ("deprecatedSource", "source"),
    ("deprecatedFirstTimestamp", "firstTimestamp"),
    ("deprecatedLastTimestamp", "lastTimestamp"),
    ("deprecatedCount", "count"),
    ("reportingController", "reportingComponent"),
];

/// events.k8s.io/v1 → core/v1 field names.
pub(crate) fn events_to_core(v: &Value) -> Value {
    let mut out = v.clone();
    if let Some(o) = out.as_object_mut() {
        for (from, to) in EVENT_RENAMES {
            if let Some(x) = o.remove(*from) {
                o.insert((*to).into(), x);
            }
        }
    }
    out
}

/// core/v1 → events.k8s.io/v1 field names.
pub(crate) fn core_to_events(v: &Value) -> Value {
    let mut out = v.clone();
    if let Some(o) = out.as_object_mut() {
        for (to, from) in EVENT_RENAMES {
            if let Some(x) = o.remove(*from) {
                o.insert((*to).into(), x);
            }
        }
    }
    out
}

fn is_qualified_name(s: &str) -> bool {
    let (prefix, name) = match s.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, s),
    };
    if prefix.is_some_and(|p| !super::selectors::valid_dns_subdomain(p)) {
        return false;
    }
    !name.is_empty() && super::selectors::valid_label_value(name) && name.len() <= 63
}

/// `ValidateEventCreate` on the internal (core) form; `strict` for
/// events.k8s.io/v1. Field paths are the internal ones, as the real server
/// reports them.
fn validate_event(e: &Value, strict: bool) -> Vec<FieldError> {
    let mut errs = vec![];
    let s = |k: &str| e.get(k).and_then(Value::as_str).unwrap_or("");
    let ns = meta_str(e, "namespace");
    let involved_ns = get_str(e, &["involvedObject", "namespace"]).unwrap_or("");
    let event_time_set = e.get("eventTime").is_some_and(|t| !t.is_null());
    if !event_time_set {
        if involved_ns.is_empty() {
            if !ns.is_empty() && ns != "default" {
                errs.push(FieldError::invalid(
                    "involvedObject.namespace",
                    format!("{involved_ns:?}"),
                    "does not match event.namespace",
                ));
            }
        } else if ns != involved_ns {
            errs.push(FieldError::invalid(
                "involvedObject.namespace",
                format!("{involved_ns:?}"),
                "does not match event.namespace",
            ));
        }
    } else {
        if involved_ns.is_empty() && ns != "default" && ns != "kube-system" {
            errs.push(FieldError::invalid(
                "involvedObject.namespace",
                format!("{involved_ns:?}"),
                "does not match event.namespace",
            ));
        }
        let rc = s("reportingComponent");
        if rc.is_empty() {
            errs.push(FieldError::required("reportingController", ""));
        } else if !is_qualified_name(rc) {
            errs.push(FieldError::invalid("reportingController", format!("{rc:?}"), "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character"));
        }
        let ri = s("reportingInstance");
        if ri.is_empty() {
            errs.push(FieldError::required("reportingInstance", ""));
        } else if ri.len() > 128 {
            errs.push(FieldError::invalid(
                "reportingInstance",
                "\"\"".into(),
                "can have at most 128 characters",
            ));
        }
        let action = s("action");
        if action.is_empty() {
            errs.push(FieldError::required("action", ""));
        } else if action.len() > 128 {
            errs.push(FieldError::invalid(
                "action",
                "\"\"".into(),
                "can have at most 128 characters",
            ));
        }
        let reason = s("reason");
        if reason.is_empty() {
            errs.push(FieldError::required("reason", ""));
        } else if reason.len() > 128 {
            errs.push(FieldError::invalid(
                "reason",
                "\"\"".into(),
                "can have at most 128 characters",
            ));
        }
        if s("message").len() > 1024 {
            errs.push(FieldError::invalid(
                "message",
                "\"\"".into(),
                "can have at most 1024 characters",
            ));
        }
    }
    if !super::selectors::valid_dns_subdomain(ns) {
        errs.push(FieldError::invalid("namespace", format!("{ns:?}"), "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.'"));
    }
    let name = meta_str(e, "name");
    if name.is_empty() {
        errs.push(FieldError::required(
            "metadata.name",
            "name or generateName is required",
        ));
    }
    if strict {
        if !name.is_empty() && !super::selectors::valid_dns_subdomain(name) {
            errs.push(FieldError::invalid("metadata.name", format!("{name:?}"), "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character"));
        }
        if let Some(series) = e.get("series").filter(|s| !s.is_null()) {
            if series.get("count").and_then(Value::as_i64).unwrap_or(0) < 2 {
                errs.push(FieldError::invalid(
                    "series.count",
                    "\"\"".into(),
                    "should be at least 2",
                ));
            }
            if series.get("lastObservedTime").is_none_or(Value::is_null) {
                errs.push(FieldError::required("series.lastObservedTime", ""));
            }
        }
        if !event_time_set {
            errs.push(FieldError::required("eventTime", ""));
        }
        let t = s("type");
        if t != "Normal" && t != "Warning" {
            errs.push(FieldError::invalid(
                "type",
                "\"\"".into(),
                &format!("has invalid value: {t}"),
            ));
        }
        for f in ["firstTimestamp", "lastTimestamp"] {
            if e.get(f).is_some_and(|v| !v.is_null()) {
                errs.push(FieldError::invalid(f, "\"\"".into(), "needs to be unset"));
            }
        }
        if e.get("count").and_then(Value::as_i64).unwrap_or(0) != 0 {
            errs.push(FieldError::invalid(
                "count",
                "\"\"".into(),
                "needs to be unset",
            ));
        }
        let src = e.get("source");
        let comp = src
            .and_then(|s| s.get("component"))
            .and_then(Value::as_str)
            .unwrap_or("");
        let host = src
            .and_then(|s| s.get("host"))
            .and_then(Value::as_str)
            .unwrap_or("");
        if !comp.is_empty() || !host.is_empty() {
            errs.push(FieldError::invalid(
                "source",
                "\"\"".into(),
                "needs to be unset",
            ));
        }
    }
    errs
}
