//! What the running server lets in and allows, beyond the policy it
//! started with: anonymous authentication aside (`identities.rs`), the
//! test-only knobs that add a binding ([`ApiServer::grant`], only to
//! mirror an object a real cluster has) or remove one
//! ([`ApiServer::revoke`]). The policy itself is `rbac.rs`'s.

use crate::{ApiServer, PolicyRule, Subject};

impl ApiServer {
    /// Test-only knob: adds a ClusterRole and a ClusterRoleBinding named
    /// `binding` that give `rules` to `subject`. Use it only to mirror an
    /// object a real cluster has (for example one a manifest outside
    /// `manifests/` creates), never to grant what no shipped object grants;
    /// prefer [`ApiServer::start_with`] with the YAML of the real object.
    pub fn grant(&self, binding: &str, subject: Subject, rules: Vec<PolicyRule>) {
        self.state().rbac.insert_grant(binding, subject, rules);
    }

    /// Test-only knob: removes the ClusterRoleBindings and RoleBindings
    /// named `binding` (a default, a YAML one or a granted one), as
    /// `kubectl delete` of a real binding would. Panics when there is none,
    /// so a renamed binding fails the test instead of passing it.
    pub fn revoke(&self, binding: &str) {
        assert!(
            self.state().rbac.remove_bindings(binding),
            "ApiServer::revoke: there is no binding named {binding:?}"
        );
    }
}
