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
}
