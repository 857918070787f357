//! Authentication's result: the user (`user.Info`), the node identity
//! (`pkg/auth/nodeidentifier/default.go`) and bootstrap-token parsing
//! (`plugin/pkg/auth/authenticator/token/bootstrap/bootstrap.go`). The
//! authenticators themselves run in `handler.rs`; authorization is
//! `authz.rs`. A leaf: it uses nothing of the crate.

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

    /// `NodeIdentity`: user `system:node:<n>` in group `system:nodes`.
    /// Returns `<n>`, which may be empty (an unknown node, refused by the
    /// Node authorizer and NodeRestriction).
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

/// Whether a bootstrap token's `auth-extra-groups` entry is valid
/// (`ValidateBootstrapGroupName`:
/// `^system:bootstrappers:[a-z0-9:-]{0,255}[a-z0-9]$`). A token with an
/// invalid group does not authenticate.
pub(crate) fn valid_bootstrap_group(g: &str) -> bool {
    g.strip_prefix("system:bootstrappers:").is_some_and(|rest| {
        (1..=256).contains(&rest.len())
            && rest
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b':' || b == b'-')
            && rest
                .bytes()
                .last()
                .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bootstrap_token_forms_and_groups() {
        assert!(parse_bootstrap_token("abcdef.0123456789abcdef").is_some());
        assert!(parse_bootstrap_token("ABCDEF.0123456789abcdef").is_none());
        assert!(parse_bootstrap_token("abcdef.0123456789abcde").is_none());
        assert!(valid_bootstrap_group(
            "system:bootstrappers:kubeadm:default-node-token"
        ));
        assert!(!valid_bootstrap_group("system:nodes"));
        assert!(!valid_bootstrap_group("system:bootstrappers:"));
        assert!(!valid_bootstrap_group("system:bootstrappers:Pool"));
    }

    #[test]
    fn node_identity_needs_the_group_and_the_prefix() {
        let u = |name: &str, groups: &[&str]| UserInfo {
            name: name.into(),
            uid: String::new(),
            groups: groups.iter().map(|s| s.to_string()).collect(),
        };
        assert_eq!(
            u("system:node:n1", &["system:nodes"]).node_name(),
            Some("n1")
        );
        assert_eq!(u("system:node:", &["system:nodes"]).node_name(), Some(""));
        assert_eq!(u("kubelet", &["system:nodes"]).node_name(), None);
        assert_eq!(u("system:node:n1", &[]).node_name(), None);
    }
}
