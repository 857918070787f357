//! Authentication (client certificates, bootstrap tokens, service-account
//! tokens, optional anonymous) and authorization (the Node authorizer's
//! static rules plus RBAC bindings as a kubeadm cluster has them by default).

use std::collections::BTreeMap;

/// An authenticated identity, as kube-apiserver's `user.Info`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserInfo {
    /// `user.Info.GetName()`.
    pub name: String,
    /// `user.Info.GetUID()` (empty for certificates and bootstrap tokens).
    pub uid: String,
    /// Groups, including the virtual `system:authenticated`.
    pub groups: Vec<String>,
}

impl UserInfo {
    pub(crate) fn in_group(&self, g: &str) -> bool {
        self.groups.iter().any(|x| x == g)
    }

    /// The Node authorizer's identity check: user `system:node:<n>` in group
    /// `system:nodes`. Returns `<n>`.
    pub(crate) fn node_name(&self) -> Option<&str> {
        if !self.in_group("system:nodes") {
            return None;
        }
        self.name.strip_prefix("system:node:")
    }

    pub(crate) fn anonymous() -> UserInfo {
        UserInfo {
            name: "system:anonymous".into(),
            uid: String::new(),
            groups: vec!["system:unauthenticated".into()],
        }
    }
}

/// A subject of an RBAC binding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subject {
    /// A user name (a service account is the user
    /// `system:serviceaccount:<ns>:<name>`).
    User(String),
    /// A group name.
    Group(String),
}

impl Subject {
    fn matches(&self, u: &UserInfo) -> bool {
        match self {
            Subject::User(n) => *n == u.name,
            Subject::Group(g) => u.in_group(g),
        }
    }
}

/// An RBAC `PolicyRule`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyRule {
    /// `verbs` (`*` matches all).
    pub verbs: Vec<String>,
    /// `apiGroups` (`""` is the core group, `*` all).
    pub api_groups: Vec<String>,
    /// `resources`, `res/sub` for subresources (`*` all).
    pub resources: Vec<String>,
    /// `resourceNames` (empty: any).
    pub resource_names: Vec<String>,
    /// `nonResourceURLs` (a trailing `*` is a prefix match).
    pub non_resource_urls: Vec<String>,
}

impl PolicyRule {
    /// A resource rule.
    pub fn resource(verbs: &[&str], groups: &[&str], resources: &[&str]) -> PolicyRule {
        PolicyRule {
            verbs: verbs.iter().map(|s| s.to_string()).collect(),
            api_groups: groups.iter().map(|s| s.to_string()).collect(),
            resources: resources.iter().map(|s| s.to_string()).collect(),
            resource_names: vec![],
            non_resource_urls: vec![],
        }
    }

    /// A non-resource URL rule.
    pub fn urls(verbs: &[&str], urls: &[&str]) -> PolicyRule {
        PolicyRule {
            verbs: verbs.iter().map(|s| s.to_string()).collect(),
            api_groups: vec![],
            resources: vec![],
            resource_names: vec![],
            non_resource_urls: urls.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn allows(&self, a: &Attributes) -> bool {
        let verb_ok = self.verbs.iter().any(|v| v == "*" || *v == a.verb);
        if !verb_ok {
            return false;
        }
        if !a.resource_request {
            return self.non_resource_urls.iter().any(|u| {
                u == "*"
                    || *u == a.path
                    || (u.ends_with('*') && a.path.starts_with(&u[..u.len() - 1]))
            });
        }
        let group_ok = self.api_groups.iter().any(|g| g == "*" || *g == a.group);
        let combined = if a.subresource.is_empty() {
            a.resource.clone()
        } else {
            format!("{}/{}", a.resource, a.subresource)
        };
        let res_ok = self.resources.iter().any(|r| {
            r == "*"
                || *r == combined
                || (!a.subresource.is_empty() && *r == format!("*/{}", a.subresource))
        });
        let name_ok = self.resource_names.is_empty() || self.resource_names.contains(&a.name);
        group_ok && res_ok && name_ok
    }
}

/// The request attributes an authorizer sees (`authorizer.Attributes`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Attributes {
    pub verb: String,
    pub resource_request: bool,
    pub path: String,
    pub group: String,
    pub version: String,
    pub resource: String,
    pub subresource: String,
    pub namespace: String,
    pub name: String,
}

/// A ClusterRoleBinding with its role's rules inlined.
#[derive(Debug, Clone)]
pub(crate) struct Binding {
    pub subjects: Vec<Subject>,
    pub rules: Vec<PolicyRule>,
}

/// The Node authorizer's static rules (`bootstrappolicy.NodeRules()`) that
/// matter here: nodes may read Node objects, write core/v1 Events (not
/// events.k8s.io), and create/get/list/watch CSRs.
fn node_rules() -> Vec<PolicyRule> {
    vec![
        PolicyRule::resource(&["create", "get", "list", "watch"], &[""], &["nodes"]),
        PolicyRule::resource(&["update", "patch"], &[""], &["nodes/status", "nodes"]),
        PolicyRule::resource(&["create", "update", "patch"], &[""], &["events"]),
        PolicyRule::resource(
            &["create", "get", "list", "watch"],
            &["certificates.k8s.io"],
            &["certificatesigningrequests"],
        ),
        PolicyRule::resource(&["get", "list", "watch"], &[""], &["services", "pods"]),
        PolicyRule::resource(
            &["get", "create", "update", "patch", "delete"],
            &["coordination.k8s.io"],
            &["leases"],
        ),
    ]
}

/// The default ClusterRoleBindings of a kubeadm cluster that decide what a
/// node agent can do, plus the project's RenewRevocation reader binding.
pub(crate) fn default_bindings() -> BTreeMap<String, Binding> {
    let mut b = BTreeMap::new();
    let group = |g: &str| vec![Subject::Group(g.to_string())];
    b.insert(
        "cluster-admin".into(),
        Binding {
            subjects: group("system:masters"),
            rules: vec![
                PolicyRule::resource(&["*"], &["*"], &["*"]),
                PolicyRule::urls(&["*"], &["*"]),
            ],
        },
    );
    b.insert(
        "system:discovery".into(),
        Binding {
            subjects: group("system:authenticated"),
            rules: vec![PolicyRule::urls(
                &["get"],
                &[
                    "/livez",
                    "/readyz",
                    "/healthz",
                    "/version",
                    "/version/",
                    "/openapi",
                    "/openapi/*",
                    "/api",
                    "/api/*",
                    "/apis",
                    "/apis/*",
                ],
            )],
        },
    );
    b.insert(
        "system:public-info-viewer".into(),
        Binding {
            subjects: vec![
                Subject::Group("system:authenticated".into()),
                Subject::Group("system:unauthenticated".into()),
            ],
            rules: vec![PolicyRule::urls(
                &["get"],
                &["/livez", "/readyz", "/healthz", "/version", "/version/"],
            )],
        },
    );
    b.insert(
        "system:basic-user".into(),
        Binding {
            subjects: group("system:authenticated"),
            rules: vec![PolicyRule::resource(
                &["create"],
                &["authorization.k8s.io"],
                &["selfsubjectaccessreviews", "selfsubjectrulesreviews"],
            )],
        },
    );
    // kubeadm:kubelet-bootstrap -> system:node-bootstrapper
    b.insert(
        "kubeadm:kubelet-bootstrap".into(),
        Binding {
            subjects: group("system:bootstrappers"),
            rules: vec![PolicyRule::resource(
                &["create", "get", "list", "watch"],
                &["certificates.k8s.io"],
                &["certificatesigningrequests"],
            )],
        },
    );
    // kubeadm:node-autoapprove-bootstrap -> ...:nodeclient
    b.insert(
        "kubeadm:node-autoapprove-bootstrap".into(),
        Binding {
            subjects: group("system:bootstrappers"),
            rules: vec![PolicyRule::resource(
                &["create"],
                &["certificates.k8s.io"],
                &["certificatesigningrequests/nodeclient"],
            )],
        },
    );
    // kubeadm:node-autoapprove-certificate-rotation -> ...:selfnodeclient
    b.insert(
        "kubeadm:node-autoapprove-certificate-rotation".into(),
        Binding {
            subjects: group("system:nodes"),
            rules: vec![PolicyRule::resource(
                &["create"],
                &["certificates.k8s.io"],
                &["certificatesigningrequests/selfnodeclient"],
            )],
        },
    );
    // The project's own RBAC (not a Kubernetes default): nodes read
    // RenewRevocations.
    b.insert(
        "node-cert-agent:renewrevocations-reader".into(),
        Binding {
            subjects: group("system:nodes"),
            rules: vec![PolicyRule::resource(
                &["get", "list", "watch"],
                &["nodecert.dev"],
                &["renewrevocations"],
            )],
        },
    );
    b
}

/// `Node,RBAC` authorization. Returns whether `a` is allowed for `u`.
pub(crate) fn authorize(
    bindings: &BTreeMap<String, Binding>,
    u: &UserInfo,
    a: &Attributes,
) -> bool {
    if u.node_name().is_some() && node_rules().iter().any(|r| r.allows(a)) {
        return true;
    }
    bindings
        .values()
        .any(|b| b.subjects.iter().any(|s| s.matches(u)) && b.rules.iter().any(|r| r.allows(a)))
}

/// The message of kube-apiserver's 403 (`responsewriters.Forbidden`).
pub(crate) fn forbidden_message(u: &UserInfo, a: &Attributes) -> String {
    if !a.resource_request {
        return format!(
            "forbidden: User {:?} cannot {} path {:?}",
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
        format!("{qualified} is forbidden: {inner}")
    } else {
        format!("{qualified} {:?} is forbidden: {inner}", a.name)
    }
}

/// Whether `s` has the form of a bootstrap token `[a-z0-9]{6}.[a-z0-9]{16}`.
pub(crate) fn parse_bootstrap_token(s: &str) -> Option<(&str, &str)> {
    let (id, secret) = s.split_once('.')?;
    let ok = |x: &str, n: usize| {
        x.len() == n
            && x.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    };
    (ok(id, 6) && ok(secret, 16)).then_some((id, secret))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attrs(verb: &str, group: &str, resource: &str, ns: &str, name: &str) -> Attributes {
        Attributes {
            verb: verb.into(),
            resource_request: true,
            path: String::new(),
            group: group.into(),
            version: "v1".into(),
            resource: resource.into(),
            subresource: String::new(),
            namespace: ns.into(),
            name: name.into(),
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
            forbidden_message(&u, &attrs("list", "", "nodes", "", "")),
            "nodes is forbidden: User \"system:bootstrap:abcdef\" cannot list resource \"nodes\" in API group \"\" at the cluster scope"
        );
        assert_eq!(
            forbidden_message(&u, &attrs("create", "events.k8s.io", "events", "default", "")),
            "events.events.k8s.io is forbidden: User \"system:bootstrap:abcdef\" cannot create resource \"events\" in API group \"events.k8s.io\" in the namespace \"default\""
        );
        assert_eq!(
            forbidden_message(&u, &attrs("get", "", "nodes", "", "n2")),
            "nodes \"n2\" is forbidden: User \"system:bootstrap:abcdef\" cannot get resource \"nodes\" in API group \"\" at the cluster scope"
        );
    }

    #[test]
    fn node_rules_and_bindings() {
        let b = default_bindings();
        let node = UserInfo {
            name: "system:node:n1".into(),
            uid: String::new(),
            groups: vec!["system:nodes".into(), "system:authenticated".into()],
        };
        assert!(authorize(&b, &node, &attrs("get", "", "nodes", "", "n1")));
        assert!(authorize(
            &b,
            &node,
            &attrs("create", "", "events", "default", "")
        ));
        assert!(!authorize(
            &b,
            &node,
            &attrs("create", "events.k8s.io", "events", "default", "")
        ));
        assert!(!authorize(
            &b,
            &node,
            &attrs(
                "delete",
                "certificates.k8s.io",
                "certificatesigningrequests",
                "",
                "x"
            )
        ));
        // In system:nodes but not named system:node:*: no Node authorizer.
        let odd = UserInfo {
            name: "kubelet".into(),
            ..node.clone()
        };
        assert!(!authorize(&b, &odd, &attrs("get", "", "nodes", "", "n1")));
        assert!(parse_bootstrap_token("abcdef.0123456789abcdef").is_some());
        assert!(parse_bootstrap_token("ABCDEF.0123456789abcdef").is_none());
        assert!(parse_bootstrap_token("abcdef.0123456789abcde").is_none());
    }
}
