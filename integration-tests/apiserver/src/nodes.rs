//! Nodes: the hooks of their create, and of their PATCH of `nodes` and
//! `nodes/status` (strategic merge patch with Node's patch strategies:
//! status conditions merge by `type`): the typed decoding, the
//! NodeRestriction admission plugin and the node strategies (`nodes` keeps
//! the old status, `nodes/status` the old spec). The write pipeline
//! (`resources.rs`) runs them; this module must not use it or the
//! handlers.
//!
//! Upstream files: `plugin/pkg/admission/noderestriction/admission.go`
//! (`admitNode`, `getForbiddenLabels`), `staging/src/k8s.io/kubelet/pkg/apis/well_known_labels.go`
//! (`IsKubeletLabel`), `pkg/registry/core/node/strategy.go`
//! (`PrepareForUpdate` of both strategies).

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::Node;
use serde_json::Value;

use crate::auth::UserInfo;
use crate::defs::ResourceDef;
use crate::patch::{node_strategy, Strategies};
use crate::request::Req;
use crate::status::{self, ApiError, FieldError};
use crate::store::meta_str;
use crate::validation::{check_object_body, decode_error, validate_meta};
use crate::writes::{strict_known, Patchable, ResourceKind};

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
    serde_json::from_value(v.clone()).map_err(|e| decode_error("Node", "v1", &e.to_string()))
}

/// Nodes, for the write pipeline.
pub(crate) struct Nodes;

impl ResourceKind for Nodes {
    fn check_body(
        &self,
        r: &Req,
        def: &ResourceDef,
        body: &mut Value,
    ) -> Result<Vec<String>, ApiError> {
        check_object_body(body, &def.api_version(), def.kind_name)?;
        let known = serde_json::to_value(decode(body)?).unwrap();
        strict_known(r, def, body, &known, true)
    }

    fn decode(
        &self,
        _r: &Req,
        _def: &ResourceDef,
        body: Value,
    ) -> Result<(Value, Vec<String>), ApiError> {
        Ok((serde_json::to_value(decode(&body)?).unwrap(), vec![]))
    }

    fn admit(&self, user: &UserInfo, obj: &Value) -> Result<(), ApiError> {
        let node = decode(obj)?;
        admit(user, meta_str(obj, "name"), &node, None)
    }

    fn validate(&self, _def: &ResourceDef, obj: &Value) -> Result<Vec<FieldError>, ApiError> {
        Ok(validate_meta(&decode(obj)?.metadata, true))
    }
}

impl Patchable for Nodes {
    fn strategies(&self) -> Strategies {
        node_strategy
    }

    fn check_patched(
        &self,
        r: &Req,
        def: &ResourceDef,
        patched: &mut Value,
    ) -> Result<Vec<String>, ApiError> {
        let known = serde_json::to_value(decode(patched)?).unwrap();
        strict_known(r, def, patched, &known, false)
    }

    fn admit_update(
        &self,
        user: &UserInfo,
        stored: &Value,
        patched: &Value,
    ) -> Result<(), ApiError> {
        let old = decode(stored)?;
        let new = decode(patched)?;
        // Mutating admission sees the patched object, before the strategy.
        admit(user, meta_str(patched, "name"), &new, Some(&old))
    }

    /// PrepareForUpdate: the main resource keeps the old status, the
    /// status subresource the old spec.
    fn update(
        &self,
        r: &Req,
        _def: &ResourceDef,
        stored: &Value,
        mut patched: Value,
        mut errs: Vec<FieldError>,
    ) -> Result<(Value, Vec<FieldError>), ApiError> {
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
        errs.extend(validate_meta(&node.metadata, true));
        Ok((serde_json::to_value(&node).unwrap(), errs))
    }
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
