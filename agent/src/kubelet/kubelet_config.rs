//! kubelet's own config file (`/var/lib/kubelet/config.yaml`), as far as
//! the agent reads it: whether kubelet rotates its certificates itself.

use std::path::Path;

use crate::node::fsutil;
use crate::node::hostroot::HostRoot;

/// A kubelet config file is a few KiB; the cap keeps a wrong path from
/// being read whole.
const MAX_KUBELET_CONFIG_BYTES: u64 = 1024 * 1024;

/// The latest point of a certificate's lifetime at which kubelet rotates
/// its own client certificate: client-go's certificate manager picks
/// `notBefore + lifetime × U[0.7, 0.9)` (`nextRotationDeadline`,
/// `wait.Jitter(total, 0.2) - 0.3 × total`). Only past it is a certificate
/// that kubelet rotates overdue.
pub const KUBELET_ROTATION_FRACTION_MAX: f64 = 0.90;

/// kubelet's own certificate rotation, as its config file says.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SelfRotation {
    /// `rotateCertificates`: kubelet renews its client certificate.
    pub client: bool,
    /// `serverTLSBootstrap`: kubelet requests its serving certificate.
    pub serving: bool,
}

impl SelfRotation {
    /// Parses the config file's text; anything unreadable is "no rotation".
    pub fn parse(text: &str) -> Self {
        let Ok(v) = serde_yaml::from_str::<serde_yaml::Value>(text) else {
            return Self::default();
        };
        let flag = |k: &str| v.get(k).and_then(serde_yaml::Value::as_bool) == Some(true);
        Self {
            client: flag("rotateCertificates"),
            serving: flag("serverTLSBootstrap"),
        }
    }

    /// Reads the node's config file at `node_path`; a missing or unreadable
    /// file is "no rotation".
    pub fn read(host: &HostRoot, node_path: &Path) -> Self {
        host.resolve(node_path)
            .ok()
            .and_then(|p| fsutil::read_limited(&p, MAX_KUBELET_CONFIG_BYTES).ok())
            .map(|b| Self::parse(&String::from_utf8_lossy(&b)))
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_are_read_and_anything_else_is_off() {
        let r = SelfRotation::parse("rotateCertificates: true\nserverTLSBootstrap: true\n");
        assert!(r.client && r.serving);
        assert_eq!(
            SelfRotation::parse("rotateCertificates: \"true\"\n"),
            SelfRotation::default()
        );
        assert_eq!(SelfRotation::parse(": not yaml ["), SelfRotation::default());
    }
}
