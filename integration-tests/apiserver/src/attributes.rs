//! The attributes of a request as the authorizers see them
//! (`authorizer.Attributes`): verb, resource or non-resource path, group,
//! version, resource, subresource, namespace, name and the list/watch field
//! selector. Request info (`handler.rs`) builds them; `authz.rs`, `rbac.rs`
//! and the CSR approver's SubjectAccessReview (`csr.rs`) read them. It is a
//! leaf: it uses nothing of the crate.
//!
//! Upstream files: `staging/src/k8s.io/apiserver/pkg/authorization/authorizer/interfaces.go`,
//! `staging/src/k8s.io/apiserver/pkg/endpoints/request/requestinfo.go`.

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
    /// The list/watch field selector's requirements (`GetFieldSelector`):
    /// (field, equals, value).
    pub field_selector: Vec<(String, bool, String)>,
}

#[cfg(test)]
impl Attributes {
    /// A resource request of API version v1, for tests.
    pub(crate) fn resource(verb: &str, group: &str, resource: &str, ns: &str, name: &str) -> Self {
        Self {
            verb: verb.into(),
            resource_request: true,
            path: String::new(),
            group: group.into(),
            version: "v1".into(),
            resource: resource.into(),
            subresource: String::new(),
            namespace: ns.into(),
            name: name.into(),
            field_selector: vec![],
        }
    }
}
