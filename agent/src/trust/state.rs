//! The agent's memory across restarts, in `<state-dir>/ca-state.json`.
//!
//! It records the last good version of every key (so a broken update never
//! removes it), and the steps of an update that are not finished yet (so a
//! crash between writing anchors and restarting containerd is finished on the
//! next start, and a clean restart does nothing). Written atomically, 0600.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::{fs, io};

use serde::{Deserialize, Serialize};

use crate::node::fsutil;
use crate::trust::plan::KeyState;
use crate::x509::cert::Fingerprint;

pub const STATE_FILE: &str = "ca-state.json";
const STATE_VERSION: u32 = 1;
/// Only root reads what the agent remembers.
const STATE_DIR_MODE: u32 = 0o700;

/// What a pass has left to finish, persisted *before* the step it guards,
/// so a restarted agent finishes exactly that and a clean restart does
/// nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Pending {
    /// The trust store is as the last pass left it; nothing to finish.
    #[default]
    Nothing,
    /// Anchors were changed and the refresh tool has not yet succeeded.
    /// After it, the restart units are restarted if the bundle changed.
    Refresh,
    /// The bundle changed; these units still have to be restarted so they
    /// read it.
    Restart(BTreeSet<String>),
}

/// The agent's memory of the CA trust.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "StateFile", into = "StateFile")]
pub struct CaState {
    pub version: u32,
    /// source → key → fingerprints (hex) of its last good version.
    pub keys: BTreeMap<String, BTreeMap<String, Vec<String>>>,
    pub pending: Pending,
    /// SHA-256 of the bundle the restart units last (re)started with.
    pub bundle_sha256: Option<String>,
    /// Unix time of the last successful reconcile, for `status`.
    pub last_success: Option<i64>,
}

/// The file's format. It predates [`Pending`] and is kept, so that an
/// upgrade (or a downgrade) of the agent reads the state it finds.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StateFile {
    version: u32,
    keys: BTreeMap<String, BTreeMap<String, Vec<String>>>,
    refresh_pending: bool,
    restart_pending: BTreeSet<String>,
    bundle_sha256: Option<String>,
    last_success: Option<i64>,
}

impl From<StateFile> for CaState {
    fn from(f: StateFile) -> Self {
        // A pending refresh decides the restarts anew: after it, every unit
        // restarts whose bundle differs from the one it started with.
        let pending = if f.refresh_pending {
            Pending::Refresh
        } else if !f.restart_pending.is_empty() {
            Pending::Restart(f.restart_pending)
        } else {
            Pending::Nothing
        };
        Self {
            version: f.version,
            keys: f.keys,
            pending,
            bundle_sha256: f.bundle_sha256,
            last_success: f.last_success,
        }
    }
}

impl From<CaState> for StateFile {
    fn from(s: CaState) -> Self {
        let (refresh_pending, restart_pending) = match s.pending {
            Pending::Nothing => (false, BTreeSet::new()),
            Pending::Refresh => (true, BTreeSet::new()),
            Pending::Restart(units) => (false, units),
        };
        Self {
            version: s.version,
            keys: s.keys,
            refresh_pending,
            restart_pending,
            bundle_sha256: s.bundle_sha256,
            last_success: s.last_success,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("cannot read state file {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("state file {path} is not valid ({source}); move it aside to start from the trust store as it is")]
    Parse {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("cannot write state file {path}: {source}")]
    Write {
        path: PathBuf,
        source: fsutil::FsError,
    },
    #[error("state file {path} has version {found}, this agent understands {STATE_VERSION}; upgrade the agent")]
    Version { path: PathBuf, found: u32 },
}

/// Every anchors directory the agent has written, beside the state file
/// (`anchor-dirs.json`), so anchors left in a directory it no longer uses
/// (after `trust-store.anchors-dir` changed) are still removed. A file of
/// its own, so agents older than it read their state file unchanged.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AnchorDirs {
    /// Node paths.
    pub dirs: BTreeSet<PathBuf>,
}

/// The file of [`AnchorDirs`] beside the state file `state_path`.
pub fn anchor_dirs_path(state_path: &Path) -> PathBuf {
    state_path.with_file_name("anchor-dirs.json")
}

/// Reads [`AnchorDirs`]; absent is empty.
pub fn load_anchor_dirs(path: &Path) -> Result<AnchorDirs, StateError> {
    match fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|source| StateError::Parse {
            path: path.to_path_buf(),
            source,
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(AnchorDirs::default()),
        Err(source) => Err(StateError::Read {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Writes [`AnchorDirs`] atomically (0600).
pub fn save_anchor_dirs(path: &Path, dirs: &AnchorDirs) -> Result<(), StateError> {
    let bytes = serde_json::to_vec_pretty(dirs).map_err(|source| StateError::Parse {
        path: path.into(),
        source,
    })?;
    write_state_file(path, &bytes)
}

/// Writes a file of the state directory atomically (0600), creating the
/// directory (0700) first.
fn write_state_file(path: &Path, bytes: &[u8]) -> Result<(), StateError> {
    if let Some(dir) = path.parent() {
        fsutil::ensure_dir(dir, STATE_DIR_MODE).map_err(|source| StateError::Write {
            path: path.into(),
            source,
        })?;
    }
    fsutil::write_atomic(path, bytes, 0o600).map_err(|source| StateError::Write {
        path: path.into(),
        source,
    })
}

impl CaState {
    pub fn key_state(&self) -> KeyState {
        self.keys
            .iter()
            .map(|(source, keys)| {
                let keys = keys
                    .iter()
                    .map(|(k, fps)| {
                        (
                            k.clone(),
                            fps.iter()
                                .filter_map(|h| Fingerprint::from_hex(h))
                                .collect(),
                        )
                    })
                    .collect();
                (source.clone(), keys)
            })
            .collect()
    }

    pub fn set_key_state(&mut self, keys: &KeyState) {
        self.keys = keys
            .iter()
            .map(|(source, keys)| {
                let keys = keys
                    .iter()
                    .map(|(k, fps)| (k.clone(), fps.iter().map(Fingerprint::hex).collect()))
                    .collect();
                (source.clone(), keys)
            })
            .collect();
    }
}

/// Loads the state; a missing file is a fresh start.
pub fn load(path: &Path) -> Result<CaState, StateError> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Ok(CaState {
                version: STATE_VERSION,
                ..CaState::default()
            })
        }
        Err(source) => {
            return Err(StateError::Read {
                path: path.into(),
                source,
            })
        }
    };
    let state: CaState = serde_json::from_slice(&bytes).map_err(|source| StateError::Parse {
        path: path.into(),
        source,
    })?;
    if state.version != STATE_VERSION {
        return Err(StateError::Version {
            path: path.into(),
            found: state.version,
        });
    }
    Ok(state)
}

pub fn save(path: &Path, state: &CaState) -> Result<(), StateError> {
    let mut bytes = serde_json::to_vec_pretty(state).map_err(|source| StateError::Parse {
        path: path.into(),
        source,
    })?;
    bytes.push(b'\n');
    write_state_file(path, &bytes)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn missing_file_is_a_fresh_state() {
        let dir = tempfile::tempdir().unwrap();
        let s = load(&dir.path().join(STATE_FILE)).unwrap();
        assert_eq!(s.version, STATE_VERSION);
        assert!(s.keys.is_empty() && s.pending == Pending::Nothing);
    }

    #[test]
    fn save_then_load_round_trips_with_mode_0600() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(STATE_FILE);
        let mut s = load(&path).unwrap();
        let mut ks = KeyState::new();
        ks.entry("/s".into())
            .or_default()
            .insert("ca1.crt".into(), vec![Fingerprint::of_der(b"x")]);
        s.set_key_state(&ks);
        s.pending = Pending::Restart(["containerd.service".to_string()].into());
        save(&path, &s).unwrap();
        let back = load(&path).unwrap();
        assert_eq!(back, s);
        assert_eq!(back.key_state(), ks);
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }

    #[test]
    fn the_file_format_of_earlier_versions_is_read_and_written() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(STATE_FILE);
        std::fs::write(
            &path,
            r#"{"version":1,"keys":{},"refresh_pending":true,"restart_pending":["containerd.service"],"bundle_sha256":null,"last_success":null}"#,
        )
        .unwrap();
        assert_eq!(load(&path).unwrap().pending, Pending::Refresh);
        let mut s = load(&path).unwrap();
        s.pending = Pending::Restart(["containerd.service".to_string()].into());
        save(&path, &s).unwrap();
        let raw: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(raw["refresh_pending"], false);
        assert_eq!(raw["restart_pending"][0], "containerd.service");
    }

    #[test]
    fn corrupt_file_is_an_error_naming_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(STATE_FILE);
        std::fs::write(&path, b"{not json").unwrap();
        let err = load(&path).unwrap_err().to_string();
        assert!(
            err.contains(&path.display().to_string()) && err.contains("move it aside"),
            "{err}"
        );
    }
}
