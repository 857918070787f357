//! The daemon's status file, `<state-dir>/daemon-status.json`: its schema
//! ([`DaemonStatus`]), its writer (the daemon) and its reader (`status`).
//!
//! The daemon writes it atomically at start, after every CA pass and
//! kubelet pass, and once more (with `stoppedAt`) when it stops cleanly;
//! nothing is written while nothing happens. Whether the daemon that wrote
//! it still runs is `status`' decision, from `/proc` and the daemon's lock.
//!
//! Boundary: the file's format and its atomic write; no judgement.

use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::node::fsutil::{self, FsError};
use crate::node::procfs::ProcessIdentity;
use crate::trust::pull_trust::PullTrust;
use crate::trust::waiting_pods::WaitingPods;

/// The daemon's view, in the state directory.
pub const DAEMON_STATUS_FILE: &str = "daemon-status.json";

/// Version of the `--output json` schema and of [`DaemonStatus`]. Fields are
/// only ever added within a version.
pub const SCHEMA_VERSION: u32 = 1;

/// Held (flock, exclusive) by the running daemon for its whole life, in the
/// state directory. The kernel drops it when the process ends, however it
/// ends, so `status` in any pid namespace (a node shell looking at a pod's
/// agent) tells a live daemon without a heartbeat.
pub const DAEMON_LOCK_FILE: &str = "daemon.lock";

// ---------------------------------------------------------------------------
// The daemon's status file
// ---------------------------------------------------------------------------

/// How the agent is deployed, as the daemon knows it (host root `/` or not).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum AgentMode {
    #[default]
    Host,
    Pod,
}

impl AgentMode {
    pub fn of_host_root(root: &Path) -> Self {
        if root == Path::new("/") {
            Self::Host
        } else {
            Self::Pod
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Host => "host",
            Self::Pod => "pod",
        }
    }
}

/// What the running daemon says about itself; written atomically at start,
/// after every CA pass and kubelet pass, and once more (with `stoppedAt`)
/// when it stops cleanly. Times are Unix seconds; `heartbeat_at` is when it
/// was written.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DaemonStatus {
    pub schema_version: u32,
    pub version: String,
    pub mode: AgentMode,
    pub process: ProcessIdentity,
    pub started_at: i64,
    pub heartbeat_at: i64,
    #[serde(default)]
    pub stopped_at: Option<i64>,
    pub ca_job: bool,
    pub kubelet_job: bool,
    #[serde(default)]
    pub last_ca_pass: Option<i64>,
    #[serde(default)]
    pub last_ca_error: Option<String>,
    #[serde(default)]
    pub last_kubelet_pass: Option<i64>,
    #[serde(default)]
    pub last_kubelet_error: Option<String>,
    #[serde(default)]
    pub next_renewal: Option<i64>,
    #[serde(default)]
    pub metrics_address: Option<String>,
    /// RenewRevocation entries that matched a kubelet certificate in the
    /// last kubelet pass (renewed for, or unfixable).
    #[serde(default)]
    pub revocation_matches: Vec<String>,
    /// How the RenewRevocations could be read in the last kubelet pass
    /// (absent without the kubelet job).
    #[serde(default)]
    pub revocation_source: Option<SourceReport>,
    /// How the CA Secret read through the API stands (absent without
    /// `ca-secret`).
    #[serde(default)]
    pub ca_secret_source: Option<SourceReport>,
    /// How publishing the node's state on its Node object stands (absent
    /// when `fleet-publish` is off or there is no node identity source).
    #[serde(default)]
    pub fleet_publish: Option<PublishReport>,
    /// How image pulls get the custom CAs, as the last CA pass left it
    /// (absent before the first pass, or without the CA job).
    #[serde(default)]
    pub pull_trust: Option<PullTrust>,
    /// The pods on this node found waiting in image-pull back-off after an
    /// x509 unknown-authority error by the one list after the last CA pass
    /// that made a CA effective for pulls (absent before such a pass, or
    /// without the node's identity).
    #[serde(default)]
    pub waiting_pods: Option<WaitingPods>,
}

/// The publisher of the fleet view (docs/fleet.md, "How it writes").
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PublishReport {
    /// `published` (the Node shows the current state), `pending` (a change
    /// waits for a node identity) or `failing` (the last write failed; it is
    /// retried).
    pub state: String,
    /// The last successful write to the Node (Unix seconds).
    #[serde(default)]
    pub last_write: Option<i64>,
    /// Writes made by this daemon process (PATCH requests that succeeded).
    #[serde(default)]
    pub writes: u64,
    /// Why the last write failed, if it did.
    #[serde(default)]
    pub error: Option<String>,
}

/// How an input the agent watches through the API stands.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SourceReport {
    /// `synced`, `syncing`, `noIdentity` (no credentials yet) or `failing`.
    pub state: String,
    /// Why it is failing, with the fix.
    #[serde(default)]
    pub error: Option<String>,
    /// The failure is a 401/403: only RBAC or credentials fix it.
    #[serde(default)]
    pub forbidden: bool,
}

impl SourceReport {
    pub fn is_failing(&self) -> bool {
        self.state == "failing"
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DaemonStatusError {
    #[error("cannot write the daemon status file {path}: {source}")]
    WriteDaemonStatus { path: PathBuf, source: FsError },
    #[error("cannot encode the daemon status for {path}: {source}")]
    EncodeDaemonStatus {
        path: PathBuf,
        source: serde_json::Error,
    },
}

/// Writes `status` to `path` (a process path) atomically, mode 0644: it
/// holds no secret, and the state directory (0700) guards it anyway.
pub fn write_daemon_status(path: &Path, status: &DaemonStatus) -> Result<(), DaemonStatusError> {
    let mut bytes = serde_json::to_vec_pretty(status).map_err(|source| {
        DaemonStatusError::EncodeDaemonStatus {
            path: path.into(),
            source,
        }
    })?;
    bytes.push(b'\n');
    fsutil::write_atomic(path, &bytes, 0o644).map_err(|source| {
        DaemonStatusError::WriteDaemonStatus {
            path: path.into(),
            source,
        }
    })
}

pub fn read_daemon_status(path: &Path) -> Result<Option<DaemonStatus>, String> {
    let bytes = match fsutil::read_limited(path, MAX_DAEMON_STATUS_BYTES) {
        Ok(b) => b,
        Err(FsError::Open { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
            return Ok(None)
        }
        Err(e) => return Err(crate::errors::error_chain(&e)),
    };
    parse_daemon_status(&bytes)
        .map(Some)
        .map_err(|e| format!("{} is not a daemon status file: {e}", path.display()))
}

/// The daemon status file's content (pure; any bytes, never a panic).
pub fn parse_daemon_status(bytes: &[u8]) -> Result<DaemonStatus, serde_json::Error> {
    serde_json::from_slice(bytes)
}

/// The file is a few hundred bytes; a larger one is not ours.
const MAX_DAEMON_STATUS_BYTES: u64 = 64 * 1024;
