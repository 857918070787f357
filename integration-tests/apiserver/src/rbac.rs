//! RBAC, as kube-apiserver's RBAC authorizer evaluates it, from exactly two
//! sources: upstream's default policy ([`Profile`]) and RBAC objects given
//! as YAML ([`Rbac::from_yaml`], the output of `kubectl kustomize`). Nothing
//! else grants a permission here.
//!
//! Upstream files: `plugin/pkg/auth/authorizer/rbac/bootstrappolicy/policy.go`
//! (default ClusterRoles and ClusterRoleBindings),
//! `cmd/kubeadm/app/phases/bootstraptoken/node/tlsbootstrap.go` (kubeadm's
//! TLS-bootstrap bindings), `pkg/apis/rbac/validation/validation.go` and
//! `pkg/apis/rbac/v1/defaults.go` (what the API accepts),
//! `pkg/registry/rbac/validation/rule.go` (`VisitRulesFor`, `appliesTo`),
//! `plugin/pkg/auth/authorizer/rbac/rbac.go` (`RuleAllows`, the denial
//! reason) and `pkg/apis/rbac/v1/evaluation_helpers.go` (the matchers).
//!
//! The authorizer chain that uses this (privileged group, Node, RBAC) is in
//! `authz.rs`; this module must not use it (the request attributes it
//! matches are `attributes.rs`'s), nor anything of the request pipeline.

use std::collections::BTreeMap;

use serde::Deserialize as _;
use serde_json::Value;

use crate::attributes::Attributes;
use crate::auth::UserInfo;
use crate::status::{self, FieldError, FieldErrorType};
use crate::validation::{unknown_fields, valid_dns_subdomain, valid_path_segment_name};

/// The RBAC API group.
const RBAC_GROUP: &str = "rbac.authorization.k8s.io";
/// kubeadm's bootstrap-token group (`constants.NodeBootstrapTokenAuthGroup`):
/// `kubeadm token create` puts its tokens in it (`auth-extra-groups`).
pub const KUBEADM_NODE_TOKEN_GROUP: &str = "system:bootstrappers:kubeadm:default-node-token";
/// `system:certificates.k8s.io:certificatesigningrequests:nodeclient`.
const NODECLIENT_ROLE: &str = "system:certificates.k8s.io:certificatesigningrequests:nodeclient";
/// `system:certificates.k8s.io:certificatesigningrequests:selfnodeclient`.
const SELFNODECLIENT_ROLE: &str =
    "system:certificates.k8s.io:certificatesigningrequests:selfnodeclient";

/// The cluster's default policy besides the YAML objects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    /// A kubeadm cluster: upstream's default ClusterRoles and
    /// ClusterRoleBindings, plus kubeadm's `kubeadm:kubelet-bootstrap`
    /// (`system:node-bootstrapper` for the kubeadm token group),
    /// `kubeadm:node-autoapprove-bootstrap` (`nodeclient`) and
    /// `kubeadm:node-autoapprove-certificate-rotation` (`selfnodeclient` for
    /// `system:nodes`): kube-controller-manager auto-approves kubelet client
    /// CSRs.
    Kubeadm,
    /// A cluster with its own CSR approver: as [`Profile::Kubeadm`] without
    /// the two auto-approve bindings, so kubelet client CSRs stay pending
    /// until a test approves them ([`crate::ApiServer::approve`]).
    OwnApprover,
}

/// A subject of a (Cluster)RoleBinding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subject {
    /// `kind: User`.
    User(String),
    /// `kind: Group`.
    Group(String),
    /// `kind: ServiceAccount`: the user
    /// `system:serviceaccount:<namespace>:<name>`. An empty namespace (allowed
    /// in a RoleBinding only) means the binding's own namespace.
    ServiceAccount {
        /// `namespace`.
        namespace: String,
        /// `name`.
        name: String,
    },
}

impl Subject {
    /// `appliesToUser`.
    fn applies_to(&self, u: &UserInfo, binding_namespace: &str) -> bool {
        match self {
            Subject::User(n) => *n == u.name,
            Subject::Group(g) => u.in_group(g),
            Subject::ServiceAccount { namespace, name } => {
                let ns = if namespace.is_empty() {
                    binding_namespace
                } else {
                    namespace
                };
                !ns.is_empty() && u.name == format!("system:serviceaccount:{ns}:{name}")
            }
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
    /// `resources`, `res/sub` for subresources (`*` all, `*/sub`).
    pub resources: Vec<String>,
    /// `resourceNames` (empty: any).
    pub resource_names: Vec<String>,
    /// `nonResourceURLs` (a trailing `*` is a prefix match).
    pub non_resource_urls: Vec<String>,
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

impl PolicyRule {
    /// A resource rule.
    pub fn resource(verbs: &[&str], groups: &[&str], resources: &[&str]) -> PolicyRule {
        PolicyRule {
            verbs: strings(verbs),
            api_groups: strings(groups),
            resources: strings(resources),
            resource_names: vec![],
            non_resource_urls: vec![],
        }
    }

    /// A non-resource URL rule.
    pub fn urls(verbs: &[&str], urls: &[&str]) -> PolicyRule {
        PolicyRule {
            verbs: strings(verbs),
            api_groups: vec![],
            resources: vec![],
            resource_names: vec![],
            non_resource_urls: strings(urls),
        }
    }

    /// `RuleAllows`: verb, then group, resource (`res/sub`, `*/sub`) and
    /// resourceNames for resource requests; verb and URL otherwise. A
    /// list/watch carries the name of a `metadata.name=` field selector
    /// (request info), so resourceNames can authorize it.
    pub(crate) fn allows(&self, a: &Attributes) -> bool {
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

/// A binding's `roleRef`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct RoleRef {
    /// `Role` or `ClusterRole`.
    kind: String,
    name: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Binding {
    role_ref: RoleRef,
    subjects: Vec<Subject>,
}

/// A set of RBAC objects: ClusterRoles, ClusterRoleBindings, Roles and
/// RoleBindings. Aggregated ClusterRoles are not supported.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rbac {
    cluster_roles: BTreeMap<String, Vec<PolicyRule>>,
    cluster_role_bindings: BTreeMap<String, Binding>,
    /// (namespace, name).
    roles: BTreeMap<(String, String), Vec<PolicyRule>>,
    /// (namespace, name).
    role_bindings: BTreeMap<(String, String), Binding>,
}

/// The RBAC kinds; every other kind in the YAML is ignored.
const RBAC_KINDS: &[&str] = &["ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"];

impl Rbac {
    /// Parses the RBAC objects of a multi-document YAML text (such as the
    /// output of `kubectl kustomize manifests/base`), validated as
    /// kube-apiserver validates them on `kubectl apply`; other kinds are
    /// ignored. A Role or RoleBinding without a namespace lands in
    /// `default`, as `kubectl apply` with the default context puts it.
    /// Errors name the document and say what kube-apiserver would refuse.
    pub fn from_yaml(text: &str) -> Result<Rbac, String> {
        let mut rbac = Rbac::default();
        for (i, doc) in serde_yaml::Deserializer::from_str(text).enumerate() {
            let n = i + 1;
            let v = Value::deserialize(doc).map_err(|e| format!("YAML document {n}: {e}"))?;
            if v.is_null() {
                continue;
            }
            let kind = v.get("kind").and_then(Value::as_str).unwrap_or_default();
            if !RBAC_KINDS.contains(&kind) {
                continue;
            }
            let name = v
                .get("metadata")
                .and_then(|m| m.get("name"))
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            let what = format!("YAML document {n} ({kind} {name:?})");
            let api_version = v
                .get("apiVersion")
                .and_then(Value::as_str)
                .unwrap_or_default();
            if api_version != "rbac.authorization.k8s.io/v1" {
                return Err(format!(
                    "{what}: apiVersion {api_version:?} is not served by Kubernetes v1.33; use rbac.authorization.k8s.io/v1"
                ));
            }
            rbac.add_object(kind, &v)
                .map_err(|e| format!("{what}: {e}"))?;
        }
        Ok(rbac)
    }

    fn add_object(&mut self, kind: &str, v: &Value) -> Result<(), String> {
        let mut unknown = vec![];
        macro_rules! typed {
            ($t:ty) => {{
                let typed: $t = serde_json::from_value(v.clone()).map_err(|e| {
                    format!("{kind} in version \"v1\" cannot be handled as a {kind}: {e}")
                })?;
                unknown_fields(v, &serde_json::to_value(&typed).unwrap(), "", &mut unknown);
                if !unknown.is_empty() {
                    let list: Vec<String> =
                        unknown.iter().map(|f| format!("unknown field {f:?}")).collect();
                    return Err(format!(
                        "{kind} in version \"v1\" cannot be handled as a {kind}: strict decoding error: {}",
                        list.join(", ")
                    ));
                }
                typed
            }};
        }
        use k8s_openapi::api::rbac::v1 as r;
        match kind {
            "ClusterRole" => {
                let o = typed!(r::ClusterRole);
                let name = o.metadata.name.clone().unwrap_or_default();
                let mut errs = meta_errors(&name);
                if o.aggregation_rule.is_some() {
                    return Err("aggregationRule is not supported by the test API server: list the rules in the ClusterRole".into());
                }
                let rules = convert_rules(o.rules.unwrap_or_default(), false, &mut errs);
                invalid(kind, &name, &errs)?;
                self.cluster_roles.insert(name, rules);
            }
            "Role" => {
                let o = typed!(r::Role);
                let name = o.metadata.name.clone().unwrap_or_default();
                let ns = namespace_of(&o.metadata);
                let mut errs = meta_errors(&name);
                let rules = convert_rules(o.rules.unwrap_or_default(), true, &mut errs);
                invalid(kind, &name, &errs)?;
                self.roles.insert((ns, name), rules);
            }
            "ClusterRoleBinding" => {
                let o = typed!(r::ClusterRoleBinding);
                let name = o.metadata.name.clone().unwrap_or_default();
                let mut errs = meta_errors(&name);
                let binding = convert_binding(
                    &o.role_ref,
                    o.subjects.unwrap_or_default(),
                    false,
                    &mut errs,
                );
                invalid(kind, &name, &errs)?;
                self.cluster_role_bindings.insert(name, binding);
            }
            _ => {
                let o = typed!(r::RoleBinding);
                let name = o.metadata.name.clone().unwrap_or_default();
                let ns = namespace_of(&o.metadata);
                let mut errs = meta_errors(&name);
                let binding =
                    convert_binding(&o.role_ref, o.subjects.unwrap_or_default(), true, &mut errs);
                invalid(kind, &name, &errs)?;
                self.role_bindings.insert((ns, name), binding);
            }
        }
        Ok(())
    }

    /// A copy without the objects of `kind` (`ClusterRole`,
    /// `ClusterRoleBinding`, `Role`, `RoleBinding`) named `name` (in any
    /// namespace): the same RBAC with one object missing, as a manifest
    /// that lacks it. Panics when there is no such object, so a renamed
    /// object fails the test instead of making it pass vacuously.
    pub fn without(&self, kind: &str, name: &str) -> Rbac {
        let mut out = self.clone();
        let removed = match kind {
            "ClusterRole" => out.cluster_roles.remove(name).is_some(),
            "ClusterRoleBinding" => out.cluster_role_bindings.remove(name).is_some(),
            "Role" => {
                let before = out.roles.len();
                out.roles.retain(|(_, n), _| n != name);
                out.roles.len() != before
            }
            "RoleBinding" => {
                let before = out.role_bindings.len();
                out.role_bindings.retain(|(_, n), _| n != name);
                out.role_bindings.len() != before
            }
            other => panic!("Rbac::without: {other:?} is not an RBAC kind ({RBAC_KINDS:?})"),
        };
        assert!(
            removed,
            "Rbac::without: there is no {kind} named {name:?} (have: {:?})",
            self.objects()
        );
        out
    }

    /// Every object, as `(kind, namespace, name)` (namespace empty for the
    /// cluster-scoped kinds).
    pub fn objects(&self) -> Vec<(String, String, String)> {
        let mut out = vec![];
        for n in self.cluster_roles.keys() {
            out.push(("ClusterRole".into(), String::new(), n.clone()));
        }
        for n in self.cluster_role_bindings.keys() {
            out.push(("ClusterRoleBinding".into(), String::new(), n.clone()));
        }
        for (ns, n) in self.roles.keys() {
            out.push(("Role".into(), ns.clone(), n.clone()));
        }
        for (ns, n) in self.role_bindings.keys() {
            out.push(("RoleBinding".into(), ns.clone(), n.clone()));
        }
        out
    }

    /// `other`'s objects over this one's (an object of the same kind and
    /// name is replaced, as `kubectl apply` replaces it).
    pub(crate) fn overlay(&mut self, other: &Rbac) {
        self.cluster_roles.extend(other.cluster_roles.clone());
        self.cluster_role_bindings
            .extend(other.cluster_role_bindings.clone());
        self.roles.extend(other.roles.clone());
        self.role_bindings.extend(other.role_bindings.clone());
    }

    /// A ClusterRole and a ClusterRoleBinding named `name`, binding `rules`
    /// to `subject` (the test-only [`crate::ApiServer::grant`]).
    pub(crate) fn insert_grant(&mut self, name: &str, subject: Subject, rules: Vec<PolicyRule>) {
        self.cluster_roles.insert(name.to_string(), rules);
        self.cluster_role_bindings.insert(
            name.to_string(),
            Binding {
                role_ref: RoleRef {
                    kind: "ClusterRole".into(),
                    name: name.to_string(),
                },
                subjects: vec![subject],
            },
        );
    }

    /// Removes every ClusterRoleBinding and RoleBinding named `name`.
    /// Returns whether there was one.
    pub(crate) fn remove_bindings(&mut self, name: &str) -> bool {
        let crb = self.cluster_role_bindings.remove(name).is_some();
        let before = self.role_bindings.len();
        self.role_bindings.retain(|(_, n), _| n != name);
        crb || self.role_bindings.len() != before
    }

    fn role_rules(&self, r: &RoleRef, namespace: &str) -> Result<&[PolicyRule], String> {
        let found = match r.kind.as_str() {
            "ClusterRole" => self.cluster_roles.get(&r.name),
            _ => self.roles.get(&(namespace.to_string(), r.name.clone())),
        };
        found.map(Vec::as_slice).ok_or_else(|| {
            format!(
                "{}.{RBAC_GROUP} {:?} not found",
                r.kind.to_lowercase(),
                r.name
            )
        })
    }

    /// The RBAC authorizer: `Ok(())` when a rule of a binding that applies
    /// to `u` allows `a`; otherwise the denial reason (empty, or
    /// `RBAC: <errors>` when an applicable binding names a missing role).
    pub(crate) fn authorize(&self, u: &UserInfo, a: &Attributes) -> Result<(), String> {
        let mut errors = vec![];
        for b in self.cluster_role_bindings.values() {
            if !b.subjects.iter().any(|s| s.applies_to(u, "")) {
                continue;
            }
            match self.role_rules(&b.role_ref, "") {
                Ok(rules) if rules.iter().any(|r| r.allows(a)) => return Ok(()),
                Ok(_) => {}
                Err(e) => errors.push(e),
            }
        }
        if !a.namespace.is_empty() {
            for ((ns, _), b) in &self.role_bindings {
                if *ns != a.namespace || !b.subjects.iter().any(|s| s.applies_to(u, ns)) {
                    continue;
                }
                match self.role_rules(&b.role_ref, ns) {
                    Ok(rules) if rules.iter().any(|r| r.allows(a)) => return Ok(()),
                    Ok(_) => {}
                    Err(e) => errors.push(e),
                }
            }
        }
        Err(match errors.len() {
            0 => String::new(),
            1 => format!("RBAC: {}", errors[0]),
            _ => format!("RBAC: [{}]", errors.join(", ")),
        })
    }

    /// The default policy of `profile`.
    pub(crate) fn defaults(profile: Profile) -> Rbac {
        let mut r = upstream_defaults();
        let group = |g: &str| vec![Subject::Group(g.to_string())];
        let mut bind = |name: &str, role: &str, subjects: Vec<Subject>| {
            r.cluster_role_bindings.insert(
                name.to_string(),
                Binding {
                    role_ref: RoleRef {
                        kind: "ClusterRole".into(),
                        name: role.to_string(),
                    },
                    subjects,
                },
            );
        };
        // tlsbootstrap.go: AllowBootstrapTokensToPostCSRs.
        bind(
            "kubeadm:kubelet-bootstrap",
            "system:node-bootstrapper",
            group(KUBEADM_NODE_TOKEN_GROUP),
        );
        if profile == Profile::Kubeadm {
            // AutoApproveNodeBootstrapTokens, AutoApproveNodeCertificateRotation.
            bind(
                "kubeadm:node-autoapprove-bootstrap",
                NODECLIENT_ROLE,
                group(KUBEADM_NODE_TOKEN_GROUP),
            );
            bind(
                "kubeadm:node-autoapprove-certificate-rotation",
                SELFNODECLIENT_ROLE,
                group("system:nodes"),
            );
        }
        r
    }
}

fn namespace_of(m: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> String {
    m.namespace
        .clone()
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| "default".into())
}

/// `ValidateObjectMeta` with `ValidateRBACName` (a path segment name).
fn meta_errors(name: &str) -> Vec<FieldError> {
    if name.is_empty() {
        return vec![FieldError::required(
            "metadata.name",
            "name or generateName is required",
        )];
    }
    valid_path_segment_name(name)
        .into_iter()
        .map(|m| FieldError::invalid("metadata.name", format!("{name:?}"), &m))
        .collect()
}

fn invalid(kind: &str, name: &str, errs: &[FieldError]) -> Result<(), String> {
    if errs.is_empty() {
        return Ok(());
    }
    let e = status::invalid(RBAC_GROUP, kind, name, errs);
    Err(e.status_value()["message"]
        .as_str()
        .unwrap_or_default()
        .to_string())
}

fn not_supported(field: &str, value: &str, supported: &[&str]) -> FieldError {
    FieldError {
        field: field.into(),
        typ: FieldErrorType::NotSupported(format!("{value:?}"), strings(supported)),
        detail: String::new(),
    }
}

/// `ValidatePolicyRule` for each rule, then the internal form.
fn convert_rules(
    rules: Vec<k8s_openapi::api::rbac::v1::PolicyRule>,
    namespaced: bool,
    errs: &mut Vec<FieldError>,
) -> Vec<PolicyRule> {
    let mut out = vec![];
    for (i, r) in rules.into_iter().enumerate() {
        let p = |f: &str| format!("rules[{i}].{f}");
        let rule = PolicyRule {
            verbs: r.verbs,
            api_groups: r.api_groups.unwrap_or_default(),
            resources: r.resources.unwrap_or_default(),
            resource_names: r.resource_names.unwrap_or_default(),
            non_resource_urls: r.non_resource_urls.unwrap_or_default(),
        };
        if rule.verbs.is_empty() {
            errs.push(FieldError::required(
                &p("verbs"),
                "verbs must contain at least one value",
            ));
        }
        if !rule.non_resource_urls.is_empty() {
            let shown = format!("{:?}", rule.non_resource_urls);
            if namespaced {
                errs.push(FieldError::invalid(
                    &p("nonResourceURLs"),
                    shown.clone(),
                    "namespaced rules cannot apply to non-resource URLs",
                ));
            }
            if !rule.api_groups.is_empty()
                || !rule.resources.is_empty()
                || !rule.resource_names.is_empty()
            {
                errs.push(FieldError::invalid(
                    &p("nonResourceURLs"),
                    shown,
                    "rules cannot apply to both regular resources and non-resource URLs",
                ));
            }
        } else {
            if rule.api_groups.is_empty() {
                errs.push(FieldError::required(
                    &p("apiGroups"),
                    "resource rules must supply at least one api group",
                ));
            }
            if rule.resources.is_empty() {
                errs.push(FieldError::required(
                    &p("resources"),
                    "resource rules must supply at least one resource",
                ));
            }
        }
        out.push(rule);
    }
    out
}

/// v1 defaulting (`roleRef.apiGroup`, `subjects[].apiGroup`), then
/// `ValidateRoleBinding`/`ValidateClusterRoleBinding` and the subjects.
fn convert_binding(
    role_ref: &k8s_openapi::api::rbac::v1::RoleRef,
    subjects: Vec<k8s_openapi::api::rbac::v1::Subject>,
    namespaced: bool,
    errs: &mut Vec<FieldError>,
) -> Binding {
    let api_group = if role_ref.api_group.is_empty() {
        RBAC_GROUP
    } else {
        role_ref.api_group.as_str()
    };
    if api_group != RBAC_GROUP {
        errs.push(not_supported("roleRef.apiGroup", api_group, &[RBAC_GROUP]));
    }
    let kinds: &[&str] = if namespaced {
        &["Role", "ClusterRole"]
    } else {
        &["ClusterRole"]
    };
    if !kinds.contains(&role_ref.kind.as_str()) {
        errs.push(not_supported("roleRef.kind", &role_ref.kind, kinds));
    }
    if role_ref.name.is_empty() {
        errs.push(FieldError::required("roleRef.name", ""));
    } else {
        for m in valid_path_segment_name(&role_ref.name) {
            errs.push(FieldError::invalid(
                "roleRef.name",
                format!("{:?}", role_ref.name),
                &m,
            ));
        }
    }
    let mut out = vec![];
    for (i, s) in subjects.into_iter().enumerate() {
        let p = |f: &str| format!("subjects[{i}].{f}");
        if s.name.is_empty() {
            errs.push(FieldError::required(&p("name"), ""));
        }
        let group = s.api_group.clone().unwrap_or_default();
        match s.kind.as_str() {
            "ServiceAccount" => {
                if !s.name.is_empty() && !valid_dns_subdomain(&s.name) {
                    errs.push(FieldError::invalid(&p("name"), format!("{:?}", s.name), "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"));
                }
                if !group.is_empty() {
                    errs.push(not_supported(&p("apiGroup"), &group, &[""]));
                }
                let namespace = s.namespace.clone().unwrap_or_default();
                if !namespaced && namespace.is_empty() {
                    errs.push(FieldError::required(&p("namespace"), ""));
                }
                out.push(Subject::ServiceAccount {
                    namespace,
                    name: s.name,
                });
            }
            "User" | "Group" => {
                let g = if group.is_empty() { RBAC_GROUP } else { &group };
                if g != RBAC_GROUP {
                    errs.push(not_supported(&p("apiGroup"), g, &[RBAC_GROUP]));
                }
                out.push(if s.kind == "User" {
                    Subject::User(s.name)
                } else {
                    Subject::Group(s.name)
                });
            }
            other => errs.push(not_supported(
                &p("kind"),
                other,
                &["ServiceAccount", "User", "Group"],
            )),
        }
    }
    Binding {
        role_ref: RoleRef {
            kind: role_ref.kind.clone(),
            name: role_ref.name.clone(),
        },
        subjects: out,
    }
}

/// The Node authorizer's static rules (`bootstrappolicy.NodeRules()`, with
/// v1.33's default feature gates: no DRA, no ClusterTrustBundle). Also the
/// rules of the (unbound) `system:node` ClusterRole.
pub(crate) fn node_rules() -> Vec<PolicyRule> {
    let read = ["get", "list", "watch"];
    vec![
        PolicyRule::resource(&["create"], &["authentication.k8s.io"], &["tokenreviews"]),
        PolicyRule::resource(
            &["create"],
            &["authorization.k8s.io"],
            &["subjectaccessreviews", "localsubjectaccessreviews"],
        ),
        PolicyRule::resource(&read, &[""], &["services"]),
        PolicyRule::resource(&["create", "get", "list", "watch"], &[""], &["nodes"]),
        PolicyRule::resource(&["update", "patch"], &[""], &["nodes/status"]),
        PolicyRule::resource(&["update", "patch"], &[""], &["nodes"]),
        PolicyRule::resource(&["create", "update", "patch"], &[""], &["events"]),
        PolicyRule::resource(&read, &[""], &["pods"]),
        PolicyRule::resource(&["create", "delete"], &[""], &["pods"]),
        PolicyRule::resource(&["update", "patch"], &[""], &["pods/status"]),
        PolicyRule::resource(&["create"], &[""], &["pods/eviction"]),
        PolicyRule::resource(&read, &[""], &["secrets", "configmaps"]),
        PolicyRule::resource(
            &["get"],
            &[""],
            &["persistentvolumeclaims", "persistentvolumes"],
        ),
        PolicyRule::resource(&["get"], &[""], &["endpoints"]),
        PolicyRule::resource(
            &["create", "get", "list", "watch"],
            &["certificates.k8s.io"],
            &["certificatesigningrequests"],
        ),
        PolicyRule::resource(
            &["get", "create", "update", "patch", "delete"],
            &["coordination.k8s.io"],
            &["leases"],
        ),
        PolicyRule::resource(&["get"], &["storage.k8s.io"], &["volumeattachments"]),
        PolicyRule::resource(&["create"], &[""], &["serviceaccounts/token"]),
        PolicyRule::resource(
            &["get", "update", "patch"],
            &[""],
            &["persistentvolumeclaims/status"],
        ),
        PolicyRule::resource(
            &["get", "watch", "list"],
            &["storage.k8s.io"],
            &["csidrivers"],
        ),
        PolicyRule::resource(
            &["get", "create", "update", "patch", "delete"],
            &["storage.k8s.io"],
            &["csinodes"],
        ),
        PolicyRule::resource(&read, &["node.k8s.io"], &["runtimeclasses"]),
    ]
}

/// The part of upstream's default ClusterRoles and ClusterRoleBindings
/// (`bootstrappolicy.ClusterRoles()`, `ClusterRoleBindings()`) that a node
/// agent, a bootstrap token, a service account or an admin can reach. The
/// aggregated roles (`admin`, `edit`, `view`) and the controllers' roles
/// are not modelled: a binding to one of them finds no role here.
fn upstream_defaults() -> Rbac {
    let mut r = Rbac::default();
    let mut role = |name: &str, rules: Vec<PolicyRule>| {
        r.cluster_roles.insert(name.to_string(), rules);
    };
    role(
        "cluster-admin",
        vec![
            PolicyRule::resource(&["*"], &["*"], &["*"]),
            PolicyRule::urls(&["*"], &["*"]),
        ],
    );
    role(
        "system:discovery",
        vec![PolicyRule::urls(
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
    );
    role(
        "system:public-info-viewer",
        vec![PolicyRule::urls(
            &["get"],
            &["/livez", "/readyz", "/healthz", "/version", "/version/"],
        )],
    );
    role(
        "system:basic-user",
        vec![PolicyRule::resource(
            &["create"],
            &["authorization.k8s.io"],
            &["selfsubjectaccessreviews", "selfsubjectrulesreviews"],
        )],
    );
    role(
        "system:monitoring",
        vec![PolicyRule::urls(
            &["get"],
            &[
                "/metrics",
                "/metrics/slis",
                "/livez",
                "/readyz",
                "/healthz",
                "/livez/*",
                "/readyz/*",
                "/healthz/*",
            ],
        )],
    );
    role(
        "system:service-account-issuer-discovery",
        vec![PolicyRule::urls(
            &["get"],
            &[
                "/.well-known/openid-configuration",
                "/.well-known/openid-configuration/",
                "/openid/v1/jwks",
                "/openid/v1/jwks/",
            ],
        )],
    );
    role("system:node", node_rules());
    role(
        "system:node-bootstrapper",
        vec![PolicyRule::resource(
            &["create", "get", "list", "watch"],
            &["certificates.k8s.io"],
            &["certificatesigningrequests"],
        )],
    );
    role(
        NODECLIENT_ROLE,
        vec![PolicyRule::resource(
            &["create"],
            &["certificates.k8s.io"],
            &["certificatesigningrequests/nodeclient"],
        )],
    );
    role(
        SELFNODECLIENT_ROLE,
        vec![PolicyRule::resource(
            &["create"],
            &["certificates.k8s.io"],
            &["certificatesigningrequests/selfnodeclient"],
        )],
    );
    let group = |g: &str| Subject::Group(g.to_string());
    for (name, subjects) in [
        ("cluster-admin", vec![group("system:masters")]),
        ("system:discovery", vec![group("system:authenticated")]),
        ("system:basic-user", vec![group("system:authenticated")]),
        (
            "system:public-info-viewer",
            vec![
                group("system:authenticated"),
                group("system:unauthenticated"),
            ],
        ),
        ("system:monitoring", vec![group("system:monitoring")]),
        (
            "system:service-account-issuer-discovery",
            vec![group("system:serviceaccounts")],
        ),
    ] {
        r.cluster_role_bindings.insert(
            name.to_string(),
            Binding {
                role_ref: RoleRef {
                    kind: "ClusterRole".into(),
                    name: name.to_string(),
                },
                subjects,
            },
        );
    }
    r
}

#[cfg(test)]
mod tests;
