//! Settings of the custom CA trust job: its inputs, the restart allowlist,
//! the limits, and overrides of the detected trust store.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// The unit whose Go TLS stack caches root CAs until it restarts: Go's
/// crypto/x509 loads the system roots once per process.
pub const DEFAULT_RESTART_UNIT: &str = "containerd.service";
/// Quiet time after the last change event before a pass runs: kubelet's
/// AtomicWriter makes a burst of events within a few milliseconds.
pub const DEFAULT_DEBOUNCE_MS: u64 = 100;
/// Default cap on distinct CAs across all sources (AKS allows 10).
pub const DEFAULT_MAX_CERTIFICATES: usize = 10;

/// The Secret the agent watches through the API by default (in a pod).
pub const DEFAULT_CA_SECRET_NAMESPACE: &str = "kube-system";
pub const DEFAULT_CA_SECRET_NAME: &str = "custom-ca-trust-secret";
/// The longest `restart-spread-seconds` (an hour): a spread longer than
/// that leaves nodes on old trust for too long.
pub const MAX_RESTART_SPREAD_SECONDS: u64 = 3600;

/// A Secret the agent reads through the API: `ca-secret: {namespace, name}`
/// or `--ca-secret NAMESPACE/NAME`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretRef {
    pub namespace: String,
    pub name: String,
}

impl SecretRef {
    /// Parses `NAMESPACE/NAME`, each a valid Kubernetes name (a DNS-1123
    /// label for the namespace, a DNS-1123 subdomain for the name).
    pub fn parse(text: &str) -> Result<Self, String> {
        let (namespace, name) = text.split_once('/').ok_or_else(|| {
            "give NAMESPACE/NAME, for example kube-system/custom-ca-trust-secret".to_string()
        })?;
        let r = Self {
            namespace: namespace.to_string(),
            name: name.to_string(),
        };
        r.check()?;
        Ok(r)
    }

    /// Why this is not a valid namespace and Secret name, if it is not.
    pub fn check(&self) -> Result<(), String> {
        if !is_dns1123_label(&self.namespace) {
            return Err(format!(
                "the namespace {:?} is not a valid namespace name (lowercase letters, digits and '-', at most 63)",
                self.namespace
            ));
        }
        if !is_dns1123_subdomain(&self.name) {
            return Err(format!(
                "the name {:?} is not a valid Secret name (lowercase letters, digits, '-' and '.', at most 253)",
                self.name
            ));
        }
        Ok(())
    }

    /// The source's name in state, logs and findings: `secret/NS/NAME`.
    pub fn source_name(&self) -> String {
        format!("secret/{}/{}", self.namespace, self.name)
    }
}

impl std::fmt::Display for SecretRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// A DNS-1123 label: at most 63 of `[a-z0-9-]`, alphanumeric at both ends.
pub fn is_dns1123_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// A DNS-1123 subdomain: at most 253, dot-separated labels.
pub fn is_dns1123_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(is_dns1123_label)
}

/// A configured input.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SourceSpec {
    /// A mounted Secret directory (or a plain directory of PEM files).
    SecretDir(PathBuf),
    /// A provisioning file: PEM certificates separated by blank lines.
    File(PathBuf),
}

impl SourceSpec {
    pub fn path(&self) -> &Path {
        match self {
            Self::SecretDir(p) | Self::File(p) => p,
        }
    }

    /// The name this source has in state, logs and findings.
    pub fn name(&self) -> String {
        self.path().display().to_string()
    }
}

/// Overrides of the detected trust store, for distros the agent does not know.
#[derive(Debug, Default, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct TrustStoreOverride {
    pub anchors_dir: Option<PathBuf>,
    pub refresh_command: Option<Vec<String>>,
    pub bundle: Option<PathBuf>,
    pub anchor_extension: Option<String>,
}

/// The trust job's effective settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustSettings {
    /// The inputs, as this process sees them (a pod's mounts, or node paths
    /// on the host). Empty: no trust job (a kubelet-only agent).
    pub sources: Vec<SourceSpec>,
    /// The allowlist: the only units ever restarted after the bundle changed.
    pub restart_units: Vec<String>,
    pub max_certificates: usize,
    pub debounce: Duration,
    pub trust_store: TrustStoreOverride,
    /// The Secret read through the API (list+watch of exactly that object).
    pub ca_secret: Option<SecretRef>,
    /// The kubeconfig (a path as this process sees it) of the identity that
    /// reads `ca_secret`; `None`: the pod's ServiceAccount (in-cluster).
    pub ca_secret_kubeconfig: Option<PathBuf>,
    /// Each node delays its restarts (not its anchor writes) by a stable
    /// fraction of this window, from its name.
    pub restart_spread: Duration,
    /// `restart-min-spacing-seconds`: the first spacing between two of the
    /// agent's restarts of one unit (zero: none).
    pub restart_min_spacing: Duration,
}
