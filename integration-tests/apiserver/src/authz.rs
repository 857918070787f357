//! Authorization as kube-apiserver runs it with `--authorization-mode=Node,RBAC`
//! (kubeadm's default): the privileged-group authorizer (`system:masters`),
//! then the Node authorizer, then RBAC; the first that allows wins, and a
//! denial carries the reasons of those that had no opinion.
//!
//! Upstream files: `pkg/kubeapiserver/authorizer/config.go` (the chain),
//! `staging/src/k8s.io/apiserver/pkg/authorization/union/union.go` (reasons
//! joined by newlines), `plugin/pkg/auth/authorizer/node/node_authorizer.go`
//! (`Authorize`, `authorizeNode`, `authorizePod`, `authorizeLease`, ...,
//! with `AuthorizeNodeWithSelectors`, on by default since v1.32), and
//! `staging/src/k8s.io/apiserver/pkg/endpoints/handlers/responsewriters/errors.go`
//! (`forbiddenMessage`, `Forbidden`).
//!
//! The Node authorizer's graph (pods bound to the node and what they
//! reference) is empty here: the pods tests put (`ApiServer::set_pod`) add
//! no edges, so a node reads no Secret, ConfigMap, PVC or PV, and gets no
//! pod by name, as a node without pods could not. Its pod list by
//! `spec.nodeName=<node>` needs no graph, and is allowed as upstream allows
//! it.
//!
//! It uses `rbac` (the RBAC authorizer and the Node rules) and never the
//! other way round: the attributes both read are `attributes.rs`'s.

use crate::attributes::Attributes;
use crate::auth::UserInfo;
use crate::rbac::{node_rules, Rbac};

/// The outcome: allowed, or denied with the reasons of every authorizer
/// (empty when none gave one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Decision {
    Allow,
    Deny(String),
}

/// `Node,RBAC` behind the privileged-group authorizer.
pub(crate) fn authorize(rbac: &Rbac, u: &UserInfo, a: &Attributes) -> Decision {
    if u.in_group("system:masters") {
        return Decision::Allow;
    }
    let mut reasons = vec![];
    match node_authorizer(u, a) {
        Some(Ok(())) => return Decision::Allow,
        Some(Err(r)) if !r.is_empty() => reasons.push(r),
        _ => {}
    }
    match rbac.authorize(u, a) {
        Ok(()) => return Decision::Allow,
        Err(r) if !r.is_empty() => reasons.push(r),
        Err(_) => {}
    }
    Decision::Deny(reasons.join("\n"))
}

/// The Node authorizer: `None` for a user that is not a node (no opinion,
/// no reason); `Some(Err(reason))` for no opinion with a reason (maybe
/// empty).
fn node_authorizer(u: &UserInfo, a: &Attributes) -> Option<Result<(), String>> {
    let node = u.node_name()?;
    if node.is_empty() {
        return Some(Err(format!("unknown node for user {:?}", u.name)));
    }
    if a.resource_request {
        match (a.group.as_str(), a.resource.as_str()) {
            ("", "secrets") | ("", "configmaps") => {
                if !matches!(a.verb.as_str(), "get" | "list" | "watch") {
                    return Some(Err("can only read resources of this type".into()));
                }
                if !a.subresource.is_empty() {
                    return Some(Err("cannot read subresource".into()));
                }
                if a.namespace.is_empty() {
                    return Some(Err("can only read namespaced object of this type".into()));
                }
                return Some(graph_get(a, node));
            }
            ("", "persistentvolumeclaims") if a.subresource == "status" => {
                if !matches!(a.verb.as_str(), "update" | "patch") {
                    return Some(Err("can only get/update/patch this type".into()));
                }
                return Some(graph_get(a, node));
            }
            ("", "persistentvolumeclaims" | "persistentvolumes")
            | ("resource.k8s.io", "resourceclaims")
            | ("storage.k8s.io", "volumeattachments") => {
                if a.verb != "get" {
                    return Some(Err("can only get individual resources of this type".into()));
                }
                if !a.subresource.is_empty() {
                    return Some(Err("cannot get subresource".into()));
                }
                return Some(graph_get(a, node));
            }
            ("", "serviceaccounts") => {
                if a.verb != "create" || a.name.is_empty() {
                    return Some(Err(
                        "can only create tokens for individual service accounts".into(),
                    ));
                }
                if a.subresource != "token" {
                    return Some(Err(
                        "can only create token subresource of serviceaccount".into()
                    ));
                }
                return Some(graph_get(a, node));
            }
            ("coordination.k8s.io", "leases") => {
                if !matches!(
                    a.verb.as_str(),
                    "get" | "create" | "update" | "patch" | "delete"
                ) {
                    return Some(Err(
                        "can only get, create, update, patch, or delete a node lease".into(),
                    ));
                }
                if a.namespace != "kube-node-lease" {
                    return Some(Err(
                        "can only access leases in the \"kube-node-lease\" system namespace".into(),
                    ));
                }
                if a.verb != "create" && a.name != node {
                    return Some(Err(
                        "can only access node lease with the same name as the requesting node"
                            .into(),
                    ));
                }
                return Some(Ok(()));
            }
            ("storage.k8s.io", "csinodes") => {
                if !matches!(
                    a.verb.as_str(),
                    "get" | "create" | "update" | "patch" | "delete"
                ) {
                    return Some(Err(
                        "can only get, create, update, patch, or delete a CSINode".into(),
                    ));
                }
                if !a.subresource.is_empty() {
                    return Some(Err("cannot authorize CSINode subresources".into()));
                }
                if a.verb != "create" && a.name != node {
                    return Some(Err(
                        "can only access CSINode with the same name as the requesting node".into(),
                    ));
                }
                return Some(Ok(()));
            }
            ("resource.k8s.io", "resourceslices") => {
                if !a.subresource.is_empty() {
                    return Some(Err("cannot authorize ResourceSlice subresources".into()));
                }
                return Some(match a.verb.as_str() {
                    "create" => Ok(()),
                    "get" | "update" | "patch" | "delete" => graph_get(a, node),
                    "watch" | "list" | "deletecollection" => {
                        if a.field_selector
                            .iter()
                            .any(|(f, eq, v)| f == "nodeName" && *eq && v == node)
                        {
                            Ok(())
                        } else {
                            Err("can only list/watch/deletecollection resourceslices with nodeName field selector".into())
                        }
                    }
                    _ => Err("only the following verbs are allowed for a ResourceSlice: get, watch, list, create, update, patch, delete, deletecollection".into()),
                });
            }
            ("", "nodes") => return Some(authorize_node(node, a)),
            ("", "pods") => return Some(authorize_pod(node, a)),
            _ => {}
        }
    }
    if node_rules().iter().any(|r| r.allows(a)) {
        Some(Ok(()))
    } else {
        Some(Err(String::new()))
    }
}

/// `authorize` over the (empty) graph: a named object has no path to a
/// node that no pod is bound to.
fn graph_get(a: &Attributes, node: &str) -> Result<(), String> {
    if a.name.is_empty() {
        return Err("No Object name found".into());
    }
    Err(format!(
        "no relationship found between node '{node}' and this object"
    ))
}

/// `authorizeNode`: create/update/patch any Node (NodeRestriction limits
/// them to its own), get/list/watch only its own (a list/watch names it
/// with `fieldSelector=metadata.name=<node>`), update/patch of its status.
fn authorize_node(node: &str, a: &Attributes) -> Result<(), String> {
    match (a.subresource.as_str(), a.verb.as_str()) {
        ("", "create" | "update" | "patch") => Ok(()),
        ("", "get" | "list" | "watch") => {
            if a.name == node {
                Ok(())
            } else if a.name.is_empty() {
                Err(format!(
                    "node '{node}' cannot read all nodes, only its own Node object"
                ))
            } else {
                Err(format!(
                    "node '{node}' cannot read '{}', only its own Node object",
                    a.name
                ))
            }
        }
        ("status", "update" | "patch") => Ok(()),
        _ => Err(String::new()),
    }
}

/// `authorizePod` without pods in the graph: a list or watch with the
/// node's own `spec.nodeName=` selector, never a pod by name.
fn authorize_pod(node: &str, a: &Attributes) -> Result<(), String> {
    match (a.subresource.as_str(), a.verb.as_str()) {
        ("", "get") => graph_get(a, node),
        ("", "list" | "watch") => {
            if a.field_selector
                .iter()
                .any(|(f, eq, v)| f == "spec.nodeName" && *eq && v == node)
            {
                Ok(())
            } else if !a.name.is_empty() {
                graph_get(a, node)
            } else {
                Err("can only list/watch pods with spec.nodeName field selector".into())
            }
        }
        ("", "create" | "delete") | ("status", "update" | "patch") | ("eviction", "create") => {
            Ok(())
        }
        _ => Err(String::new()),
    }
}

/// The message of kube-apiserver's 403 (`responsewriters.Forbidden`):
/// `forbiddenMessage`, then `: <reason>` when there is one, inside
/// `errors.NewForbidden`.
pub(crate) fn forbidden_message(u: &UserInfo, a: &Attributes, reason: &str) -> String {
    let tail = if reason.is_empty() {
        String::new()
    } else {
        format!(": {reason}")
    };
    if !a.resource_request {
        return format!(
            "forbidden: User {:?} cannot {} path {:?}{tail}",
            u.name, a.verb, a.path
        );
    }
    let mut resource = a.resource.clone();
    if !a.subresource.is_empty() {
        resource = format!("{resource}/{}", a.subresource);
    }
    let inner = if a.namespace.is_empty() {
        format!(
            "User {:?} cannot {} resource {:?} in API group {:?} at the cluster scope",
            u.name, a.verb, resource, a.group
        )
    } else {
        format!(
            "User {:?} cannot {} resource {:?} in API group {:?} in the namespace {:?}",
            u.name, a.verb, resource, a.group, a.namespace
        )
    };
    let qualified = if a.group.is_empty() {
        a.resource.clone()
    } else {
        format!("{}.{}", a.resource, a.group)
    };
    if a.name.is_empty() {
        format!("{qualified} is forbidden: {inner}{tail}")
    } else {
        format!("{qualified} {:?} is forbidden: {inner}{tail}", a.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rbac::Profile;

    fn attrs(verb: &str, group: &str, resource: &str, ns: &str, name: &str) -> Attributes {
        Attributes::resource(verb, group, resource, ns, name)
    }

    fn node(name: &str) -> UserInfo {
        UserInfo {
            name: format!("system:node:{name}"),
            uid: String::new(),
            groups: vec!["system:nodes".into(), "system:authenticated".into()],
        }
    }

    #[test]
    fn forbidden_messages_have_the_real_shape() {
        let u = UserInfo {
            name: "system:bootstrap:abcdef".into(),
            uid: String::new(),
            groups: vec![],
        };
        assert_eq!(
            forbidden_message(&u, &attrs("list", "", "nodes", "", ""), ""),
            "nodes is forbidden: User \"system:bootstrap:abcdef\" cannot list resource \"nodes\" in API group \"\" at the cluster scope"
        );
        assert_eq!(
            forbidden_message(&u, &attrs("create", "events.k8s.io", "events", "default", ""), ""),
            "events.events.k8s.io is forbidden: User \"system:bootstrap:abcdef\" cannot create resource \"events\" in API group \"events.k8s.io\" in the namespace \"default\""
        );
        assert_eq!(
            forbidden_message(&node("n1"), &attrs("get", "", "nodes", "", "n2"), "node 'n1' cannot read 'n2', only its own Node object"),
            "nodes \"n2\" is forbidden: User \"system:node:n1\" cannot get resource \"nodes\" in API group \"\" at the cluster scope: node 'n1' cannot read 'n2', only its own Node object"
        );
    }

    #[test]
    fn a_node_reads_only_its_own_node_and_lists_it_only_by_name() {
        let rbac = Rbac::defaults(Profile::Kubeadm);
        let n1 = node("n1");
        assert_eq!(
            authorize(&rbac, &n1, &attrs("get", "", "nodes", "", "n1")),
            Decision::Allow
        );
        assert_eq!(
            authorize(&rbac, &n1, &attrs("get", "", "nodes", "", "n2")),
            Decision::Deny("node 'n1' cannot read 'n2', only its own Node object".into())
        );
        assert_eq!(
            authorize(&rbac, &n1, &attrs("list", "", "nodes", "", "")),
            Decision::Deny("node 'n1' cannot read all nodes, only its own Node object".into())
        );
        assert_eq!(
            authorize(&rbac, &n1, &attrs("watch", "", "nodes", "", "n1")),
            Decision::Allow
        );
        // Writes to any Node pass the authorizer; NodeRestriction limits them.
        assert_eq!(
            authorize(&rbac, &n1, &attrs("patch", "", "nodes", "", "n2")),
            Decision::Allow
        );
        let mut status = attrs("patch", "", "nodes", "", "n1");
        status.subresource = "status".into();
        assert_eq!(authorize(&rbac, &n1, &status), Decision::Allow);
        // No delete, and nodes get no Opinion on events.k8s.io.
        assert!(matches!(
            authorize(&rbac, &n1, &attrs("delete", "", "nodes", "", "n1")),
            Decision::Deny(_)
        ));
        assert!(matches!(
            authorize(
                &rbac,
                &n1,
                &attrs("create", "events.k8s.io", "events", "default", "")
            ),
            Decision::Deny(_)
        ));
        assert_eq!(
            authorize(&rbac, &n1, &attrs("create", "", "events", "default", "")),
            Decision::Allow
        );
        // No custom resource is in the node rules.
        assert_eq!(
            authorize(
                &rbac,
                &n1,
                &attrs(
                    "list",
                    "certificates.microsoft.com",
                    "renewrevocations",
                    "kube-system",
                    ""
                )
            ),
            Decision::Deny(String::new())
        );
        // A node without pods reads no Secret.
        assert_eq!(
            authorize(&rbac, &n1, &attrs("get", "", "secrets", "kube-system", "s")),
            Decision::Deny("no relationship found between node 'n1' and this object".into())
        );
    }

    #[test]
    fn an_unnamed_node_gets_nothing_and_masters_get_everything() {
        let rbac = Rbac::defaults(Profile::Kubeadm);
        assert_eq!(
            authorize(
                &rbac,
                &node(""),
                &attrs(
                    "create",
                    "certificates.k8s.io",
                    "certificatesigningrequests",
                    "",
                    ""
                )
            ),
            Decision::Deny("unknown node for user \"system:node:\"".into())
        );
        let admin = UserInfo {
            name: "kubernetes-admin".into(),
            uid: String::new(),
            groups: vec!["system:masters".into()],
        };
        assert_eq!(
            authorize(&rbac, &admin, &attrs("delete", "", "nodes", "", "n1")),
            Decision::Allow
        );
        // In system:nodes but not named system:node:*: no Node authorizer.
        let odd = UserInfo {
            name: "kubelet".into(),
            ..node("n1")
        };
        assert!(matches!(
            authorize(&rbac, &odd, &attrs("get", "", "nodes", "", "n1")),
            Decision::Deny(_)
        ));
    }
}
