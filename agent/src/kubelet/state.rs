//! What the kubelet job must finish after a crash, in
//! `<state-dir>/kubelet-state.json`: the restart of kubelet's units that a
//! newly installed certificate needs. It is recorded *before* the new
//! certificate becomes current and cleared once the units are restarted, so
//! a renewal is never installed without its restart, whatever stops the
//! agent in between. Written atomically, 0600.
//!
//! Boundary: this one file; what to restart, and when, is the manager's.

use std::collections::BTreeSet;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::node::fsutil::{self, FsError};

/// Its file name, beside the kubelet lock in the state directory.
pub const KUBELET_STATE_FILE: &str = "kubelet-state.json";
/// A state file is a few dozen bytes; a larger one is not ours.
const MAX_STATE_BYTES: u64 = 64 * 1024;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KubeletState {
    /// Units still to restart for the certificates installed last.
    #[serde(default)]
    pub restart_pending: BTreeSet<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum KubeletStateError {
    #[error("cannot read the kubelet state file {}: {source}", path.display())]
    Read { path: PathBuf, source: Box<FsError> },
    #[error("the kubelet state file {} is not valid ({source}); move it aside (the agent then restarts kubelet after its next renewal only)", path.display())]
    Parse {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("cannot write the kubelet state file {}: {source}", path.display())]
    Write { path: PathBuf, source: Box<FsError> },
}

/// Loads the state at `path` (a process path); a missing file is the empty state.
pub fn load(path: &Path) -> Result<KubeletState, KubeletStateError> {
    let bytes = match fsutil::read_limited(path, MAX_STATE_BYTES) {
        Ok(b) => b,
        Err(FsError::Open { ref source, .. }) if source.kind() == io::ErrorKind::NotFound => {
            return Ok(KubeletState::default())
        }
        Err(source) => {
            return Err(KubeletStateError::Read {
                path: path.to_path_buf(),
                source: Box::new(source),
            })
        }
    };
    serde_json::from_slice(&bytes).map_err(|source| KubeletStateError::Parse {
        path: path.to_path_buf(),
        source,
    })
}

pub fn save(path: &Path, state: &KubeletState) -> Result<(), KubeletStateError> {
    let mut bytes =
        serde_json::to_vec_pretty(state).map_err(|source| KubeletStateError::Parse {
            path: path.to_path_buf(),
            source,
        })?;
    bytes.push(b'\n');
    fsutil::write_atomic(path, &bytes, 0o600).map_err(|source| KubeletStateError::Write {
        path: path.to_path_buf(),
        source: Box::new(source),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn missing_is_empty_and_a_saved_state_reads_back_0600() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(KUBELET_STATE_FILE);
        assert_eq!(load(&path).unwrap(), KubeletState::default());
        let st = KubeletState {
            restart_pending: ["kubelet.service".to_string()].into(),
        };
        save(&path, &st).unwrap();
        assert_eq!(load(&path).unwrap(), st);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        std::fs::write(&path, b"{").unwrap();
        assert!(load(&path)
            .unwrap_err()
            .to_string()
            .contains("move it aside"));
    }
}
