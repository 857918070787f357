//! Nodes: create, and PATCH of `nodes` and `nodes/status` (JSON patch,
//! merge patch, strategic merge patch with Node's patch strategies: status
//! conditions merge by `type`), with the NodeRestriction admission plugin
//! and the node strategies (`nodes` keeps the old status, `nodes/status`
//! the old spec).
//!
//! Upstream files: `plugin/pkg/admission/noderestriction/admission.go`
//! (`admitNode`, `getForbiddenLabels`), `staging/src/k8s.io/kubelet/pkg/apis/well_known_labels.go`
//! (`IsKubeletLabel`), `pkg/registry/core/node/strategy.go`
//! (`PrepareForUpdate` of both strategies).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use http::Response;
use k8s_openapi::api::core::v1::Node;
use serde_json::Value;

use super::auth::UserInfo;
use super::body::Body;
use super::handler::Req;
use super::resources::{
    self, apply_patch, before_update, check_identity, parse_body, prepare_meta, present,
    respond_warned, PatchType, ResourceDef,
};
use super::status::{self, ApiError};
use super::store::Kind;
use super::Shared;

/// Labels kubelet may set on its own Node (`kubeletLabels`).
const KUBELET_LABELS: &[&str] = &[
    "kubernetes.io/hostname",
    "topology.kubernetes.io/zone",
    "topology.kubernetes.io/region",
    "failure-domain.beta.kubernetes.io/zone",
    "failure-domain.beta.kubernetes.io/region",
    "beta.kubernetes.io/instance-type",
    "node.kubernetes.io/instance-type",
    "kubernetes.io/os",
    "kubernetes.io/arch",
    "beta.kubernetes.io/os",
    "beta.kubernetes.io/arch",
];

/// Label namespaces kubelet may set (`kubeletLabelNamespaces`).
const KUBELET_LABEL_NAMESPACES: &[&str] = &["kubelet.kubernetes.io", "node.kubernetes.io"];

fn label_namespace(key: &str) -> &str {
    key.split_once('/').map_or("", |(ns, _)| ns)
}

fn in_domain(ns: &str, domain: &str) -> bool {
    ns == domain || ns.ends_with(&format!(".{domain}"))
}

/// `IsKubeletLabel`.
fn is_kubelet_label(key: &str) -> bool {
    KUBELET_LABELS.contains(&key)
        || KUBELET_LABEL_NAMESPACES
            .iter()
            .any(|d| in_domain(label_namespace(key), d))
}

/// `getForbiddenLabels`: `node-restriction.kubernetes.io/` labels, and
/// `kubernetes.io`/`k8s.io` labels outside kubelet's own.
fn forbidden_labels(modified: &BTreeSet<String>) -> Vec<String> {
    modified
        .iter()
        .filter(|k| {
            let ns = label_namespace(k);
            let kubernetes = in_domain(ns, "kubernetes.io") || in_domain(ns, "k8s.io");
            in_domain(ns, "node-restriction.kubernetes.io") || (kubernetes && !is_kubelet_label(k))
        })
        .cloned()
        .collect()
}

/// `getModifiedLabels`.
fn modified_labels(a: &BTreeMap<String, String>, b: &BTreeMap<String, String>) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (k, v) in a {
        if b.get(k) != Some(v) {
            out.insert(k.clone());
        }
    }
    for (k, v) in b {
        if a.get(k) != Some(v) {
            out.insert(k.clone());
        }
    }
    out
}

fn forbidden(name: &str, msg: String) -> ApiError {
    status::forbidden(
        format!("nodes {name:?} is forbidden: {msg}"),
        "",
        "nodes",
        name,
    )
}

/// NodeRestriction's `admitNode` (`old` is `None` on create).
fn admit(u: &UserInfo, name: &str, new: &Node, old: Option<&Node>) -> Result<(), ApiError> {
    let Some(own) = u.node_name() else {
        return Ok(());
    };
    if own.is_empty() {
        return Err(forbidden(
            name,
            format!("could not determine node from user {:?}", u.name),
        ));
    }
    if own != name {
        return Err(forbidden(
            name,
            format!("node {own:?} is not allowed to modify node {name:?}"),
        ));
    }
    let labels = |n: &Node| n.metadata.labels.clone().unwrap_or_default();
    let spec = |n: &Node| n.spec.clone().unwrap_or_default();
    match old {
        None => {
            if spec(new).config_source.is_some() {
                return Err(forbidden(
                    name,
                    format!(
                        "node {own:?} is not allowed to create pods with a non-nil configSource"
                    ),
                ));
            }
            let bad = forbidden_labels(&modified_labels(&labels(new), &BTreeMap::new()));
            if !bad.is_empty() {
                return Err(forbidden(
                    name,
                    format!(
                        "node {own:?} is not allowed to set the following labels: {}",
                        bad.join(", ")
                    ),
                ));
            }
        }
        Some(old) => {
            let (ns, os) = (spec(new), spec(old));
            if ns.config_source.is_some() && ns.config_source != os.config_source {
                return Err(forbidden(
                    name,
                    format!("node {own:?} is not allowed to update configSource to a new non-nil configSource"),
                ));
            }
            if ns.taints.clone().unwrap_or_default() != os.taints.clone().unwrap_or_default() {
                return Err(forbidden(
                    name,
                    format!("node {own:?} is not allowed to modify taints"),
                ));
            }
            if new.metadata.owner_references.clone().unwrap_or_default()
                != old.metadata.owner_references.clone().unwrap_or_default()
            {
                return Err(forbidden(
                    name,
                    format!("node {own:?} is not allowed to modify ownerReferences"),
                ));
            }
            let bad = forbidden_labels(&modified_labels(&labels(new), &labels(old)));
            if !bad.is_empty() {
                return Err(forbidden(
                    name,
                    format!("is not allowed to modify labels: {}", bad.join(", ")),
                ));
            }
        }
    }
    Ok(())
}

fn decode(v: &Value) -> Result<Node, ApiError> {
    serde_json::from_value(v.clone())
        .map_err(|e| super::csr::decode_error("Node", "v1", &e.to_string()))
}

/// POST of a Node.
pub(crate) fn create(
    shared: &Arc<Shared>,
    def: &'static ResourceDef,
    r: &Req,
    dry: bool,
) -> Result<Response<Body>, ApiError> {
    let mut body = parse_body(r)?;
    let obj = body
        .as_object()
        .ok_or_else(|| status::bad_request("the body of the request was in an unknown format"))?;
    super::csr::check_type_meta(obj, "v1", "Node")?;
    let warnings = resources::strict_typed(r, def, &body)?;
    prepare_meta(r, def, &mut body)?;
    let node = decode(&body)?;
    let name = node.metadata.name.clone().unwrap_or_default();
    admit(&r.user, &name, &node, None)?;
    let errs = super::csr::validate_meta(&node.metadata, true);
    if !errs.is_empty() {
        return Err(status::invalid("", "Node", &name, &errs));
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
    Ok(respond_warned(
        201,
        &present(def, &stored, false),
        &warnings,
    ))
}

/// PATCH of `nodes/<name>` or `nodes/<name>/status`.
pub(crate) fn patch(
    shared: &Arc<Shared>,
    def: &'static ResourceDef,
    r: &Req,
    pt: PatchType,
    dry: bool,
) -> Result<Response<Body>, ApiError> {
    let mut st = shared.state.lock().unwrap();
    let Some(stored) = st.store.get(Kind::Node, "", &r.attrs.name).cloned() else {
        return Err(status::not_found("", "nodes", &r.attrs.name));
    };
    let presented = present(def, &stored, false);
    let mut patched = apply_patch(pt, &presented, r, super::patch::node_strategy)?;
    let warnings = resources::strict_typed_patch(r, def, &patched)?;
    check_identity(def, &stored, &patched, r)?;
    let old = decode(&stored)?;
    let new = decode(&patched)?;
    // Mutating admission sees the patched object, before the strategy.
    admit(&r.user, &r.attrs.name, &new, Some(&old))?;
    let mut errs = before_update(&stored, &mut patched);
    // PrepareForUpdate: the main resource keeps the old status, the status
    // subresource the old spec.
    let keep = if r.attrs.subresource == "status" {
        "spec"
    } else {
        "status"
    };
    match stored.get(keep) {
        Some(v) => patched[keep] = v.clone(),
        None => {
            if let Some(o) = patched.as_object_mut() {
                o.remove(keep);
            }
        }
    }
    let node = decode(&patched)?;
    errs.extend(super::csr::validate_meta(&node.metadata, true));
    if !errs.is_empty() {
        return Err(status::invalid("", "Node", &r.attrs.name, &errs));
    }
    let new = serde_json::to_value(&node).unwrap();
    let out = resources::store_update(&mut st, Kind::Node, &stored, new, dry);
    Ok(respond_warned(200, &present(def, &out, false), &warnings))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubelet_labels_and_other_domains_are_allowed_the_rest_of_kubernetes_io_is_not() {
        let set = |keys: &[&str]| keys.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
        assert!(forbidden_labels(&set(&[
            "kubernetes.io/hostname",
            "node.kubernetes.io/exclude-from-external-load-balancers",
            "x.kubelet.kubernetes.io/y",
            "node-cert-agent.dev/enabled",
            "example.com/pool",
            "plain",
        ]))
        .is_empty());
        assert_eq!(
            forbidden_labels(&set(&[
                "node-restriction.kubernetes.io/pool",
                "node-role.kubernetes.io/control-plane",
                "kubernetes.io/role",
                "k8s.io/x",
                "a.k8s.io/y",
            ])),
            [
                "a.k8s.io/y",
                "k8s.io/x",
                "kubernetes.io/role",
                "node-restriction.kubernetes.io/pool",
                "node-role.kubernetes.io/control-plane"
            ]
        );
    }
}
