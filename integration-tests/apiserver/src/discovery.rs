//! Discovery and the other non-resource paths kube-apiserver answers:
//! `/api`, `/apis` (legacy and aggregated `apidiscovery.k8s.io/v2`),
//! `/api/v1`, `/apis/<group>[/<version>]`, `/version`, the health checks
//! and `/openapi/v3` (the documents are `openapi.rs`'s), all from the
//! resource definitions (`defs.rs`).
//!
//! It reads definitions only: it must not use the handlers, the write
//! pipeline or the kinds' modules.
//!
//! Upstream files: `staging/src/k8s.io/apiserver/pkg/endpoints/discovery/`,
//! `.../discovery/aggregated/`,
//! `staging/src/k8s.io/apiextensions-apiserver/pkg/apiserver/customresource_discovery_controller.go`.

use http::Response;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    APIGroup, APIGroupList, APIResource, APIResourceList, APIVersions, GroupVersionForDiscovery,
    ServerAddressByClientCIDR,
};
use k8s_openapi::apimachinery::pkg::version::Info;
use serde_json::{json, Value};

use crate::body::Body;
use crate::defs::DEFS;
use crate::openapi;
use crate::request::{plain, respond, Req};
use crate::status::ApiError;
use crate::Shared;

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

/// A non-resource path: discovery, version, health, OpenAPI v3.
pub(crate) fn serve(shared: &Shared, r: &Req) -> Result<Response<Body>, ApiError> {
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
        "/openapi/v3" => to(openapi::index()),
        p if p == openapi::gv_path() => to(openapi::gv_document()),
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
