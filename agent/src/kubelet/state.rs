//! What the kubelet job keeps across a restart of the agent, in its state
//! directory, written atomically, 0600:
//!
//! - `kubelet-state.json` ([`KubeletState`]): what it must finish after a
//!   crash, the restart of kubelet's units that a newly installed
//!   certificate needs. It is recorded *before* the new certificate becomes
//!   current and cleared once the units are restarted, so a renewal is never
//!   installed without its restart, whatever stops the agent in between.
//! - `kubelet-revocations.json` ([`RevocationRecords`]): what it learned of
//!   the RenewRevocation entries, so that a restart or a rollout of the
//!   agent renews nothing again: when each entry was first seen to match
//!   (the revocation spread counts from then) and which ones no new
//!   certificate can satisfy. A file of its own, versioned: an older agent,
//!   whose reading of `kubelet-state.json` refuses unknown fields, still
//!   reads that file after a rollback, and this file is read leniently.
//!
//! Boundary: these two files; what to restart and when to renew are the
//! manager's and renewal.rs's.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::kubelet::revocation::Revocation;
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

/// The revocation file's name, beside the state file.
pub const KUBELET_REVOCATIONS_FILE: &str = "kubelet-revocations.json";
/// The revocation file's format. A file of a later version is read for the
/// fields this one knows (later versions only add fields).
pub const REVOCATIONS_VERSION: u32 = 1;
/// A few entries of a few hundred bytes each; a larger file is not ours.
const MAX_REVOCATIONS_BYTES: u64 = 1024 * 1024;

/// What the kubelet job learned of the RenewRevocation entries. Entries are
/// kept whole, as listed (their `description` is the label the logs use),
/// and compared whole: an edited entry is a new one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RevocationRecords {
    /// [`REVOCATIONS_VERSION`] when written.
    pub version: u32,
    /// The entries that match a current certificate of the node, with when
    /// the agent first saw that.
    #[serde(default)]
    pub seen: Vec<SeenRecord>,
    /// By certificate kind (`client`, `serving`), the entries a certificate
    /// issued in a renewal matched too.
    #[serde(default)]
    pub unsatisfiable: BTreeMap<String, Vec<Revocation>>,
}

impl Default for RevocationRecords {
    fn default() -> Self {
        Self {
            version: REVOCATIONS_VERSION,
            seen: Vec::new(),
            unsatisfiable: BTreeMap::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SeenRecord {
    pub entry: Revocation,
    /// RFC 3339, UTC.
    pub first_seen: String,
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
    #[error("the kubelet revocation file {} is not valid ({source}); the agent starts from what it knows and writes it again (a revocation found unsatisfiable before may cost one more renewal)", path.display())]
    ParseRevocations {
        path: PathBuf,
        source: serde_json::Error,
    },
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

/// Loads the revocation records at `path` (a process path); a missing file
/// is the empty record. Fields this version does not know are ignored.
pub fn load_revocations(path: &Path) -> Result<RevocationRecords, KubeletStateError> {
    let bytes = match fsutil::read_limited(path, MAX_REVOCATIONS_BYTES) {
        Ok(b) => b,
        Err(FsError::Open { ref source, .. }) if source.kind() == io::ErrorKind::NotFound => {
            return Ok(RevocationRecords::default())
        }
        Err(source) => {
            return Err(KubeletStateError::Read {
                path: path.to_path_buf(),
                source: Box::new(source),
            })
        }
    };
    serde_json::from_slice(&bytes).map_err(|source| KubeletStateError::ParseRevocations {
        path: path.to_path_buf(),
        source,
    })
}

/// Writes `records` at `path`, as version [`REVOCATIONS_VERSION`].
pub fn save_revocations(path: &Path, records: &RevocationRecords) -> Result<(), KubeletStateError> {
    let records = RevocationRecords {
        version: REVOCATIONS_VERSION,
        ..records.clone()
    };
    let mut bytes = serde_json::to_vec_pretty(&records).map_err(|source| {
        KubeletStateError::ParseRevocations {
            path: path.to_path_buf(),
            source,
        }
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

    fn group_entry() -> Revocation {
        serde_json::from_value(serde_json::json!({
            "kind": "Group",
            "group": "system:nodes",
            "description": "RenewRevocation r: Group system:nodes",
        }))
        .unwrap()
    }

    #[test]
    fn revocation_records_read_back_0600_and_missing_is_empty() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(KUBELET_REVOCATIONS_FILE);
        assert_eq!(
            load_revocations(&path).unwrap(),
            RevocationRecords::default()
        );
        let records = RevocationRecords {
            seen: vec![SeenRecord {
                entry: group_entry(),
                first_seen: "2026-12-07T10:00:00Z".into(),
            }],
            unsatisfiable: [("client".to_string(), vec![group_entry()])].into(),
            ..RevocationRecords::default()
        };
        save_revocations(&path, &records).unwrap();
        assert_eq!(load_revocations(&path).unwrap(), records);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        std::fs::write(&path, b"[").unwrap();
        assert!(matches!(
            load_revocations(&path),
            Err(KubeletStateError::ParseRevocations { .. })
        ));
    }

    /// A later version's file is read for what this one knows; the state
    /// file of an older agent (restarts only) reads as before, and this
    /// version never adds a field to it, so an older agent reads it after a
    /// rollback.
    #[test]
    fn files_of_other_versions_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(KUBELET_REVOCATIONS_FILE);
        std::fs::write(
            &path,
            serde_json::to_vec(&serde_json::json!({
                "version": 2,
                "seen": [{"entry": {"kind": "Group", "group": "system:nodes", "description": "RenewRevocation r: Group system:nodes"},
                          "firstSeen": "2026-12-07T10:00:00Z", "source": "watch"}],
                "unsatisfiable": {"client": [], "kubeconfig": []},
                "pending": {"x": 1},
            }))
            .unwrap(),
        )
        .unwrap();
        let read = load_revocations(&path).unwrap();
        assert_eq!(read.version, 2);
        assert_eq!(read.seen[0].entry, group_entry());

        let state = dir.path().join(KUBELET_STATE_FILE);
        std::fs::write(&state, br#"{"restartPending": ["kubelet.service"]}"#).unwrap();
        let st = load(&state).unwrap();
        assert_eq!(st.restart_pending, ["kubelet.service".to_string()].into());
        save(&state, &st).unwrap();
        assert_eq!(
            serde_json::from_slice::<serde_json::Value>(&std::fs::read(&state).unwrap()).unwrap(),
            serde_json::json!({"restartPending": ["kubelet.service"]}),
            "the state file keeps the form an older agent reads"
        );
    }
}
