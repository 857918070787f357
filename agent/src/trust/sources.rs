//! Reads the CA inputs: mounted Secret directories and provisioning files.
//!
//! A Secret volume written by kubelet's AtomicWriter is only consistent
//! through `..data`: this module reads the payload directory `..data` points
//! at, never the user-visible links, and reads again if `..data` was swapped
//! while it read. It reads such a directory exactly the way kubelet writes
//! it, and nothing else:
//!
//! - `..data` is a link to a name of kubelet's form,
//!   `..YYYY_MM_DD_HH_MM_SS.<digits>`, directly inside the directory;
//! - the payload is a real directory, not a link to one;
//! - every key is opened once, relative to the payload's descriptor, without
//!   following a link, and judged on that descriptor (a regular file with
//!   one link, owned by root, not writable by group or others, at most
//!   1 MiB) before a byte of it is read ([`crate::node::dirfd`]).
//!
//! A plain directory (no `..data`) is read by the same rules, and so is a
//! provisioning file. Every directory on the way must be owned by root and
//! not writable by group or others (sticky directories such as `/tmp` and
//! kubelet's tmpfs volumes excepted), as sshd's `StrictModes` asks: a root
//! agent must not be pointed at files by a user who could not read them.
//! Anything refused is a finding that names it and says how to fix it, and
//! keeps the last good state.
//!
//! Source paths are this process's paths (a pod's mount), not node paths,
//! so they do not go through `HostRoot`.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

pub use crate::config::SourceSpec;
use crate::node::dirfd::{
    check_path_owners, open_file_at_path, own_uid, DirError, DirHandle, Facts, Kind, UnsafeDir,
};
use crate::text::is_plain_ascii;
use crate::trust::plan::SourceInput;
use crate::trust::validate::{
    too_large, validate_key, Finding, FindingKind, KeyVerdict, MAX_INPUT_BYTES,
};

/// The link kubelet swaps atomically to publish a new Secret payload.
const DATA_LINK: &str = "..data";
/// How often a read is restarted when `..data` keeps moving under it.
const MAX_READ_ATTEMPTS: usize = 5;
/// More keys than this in one Secret directory is not a CA Secret.
pub const MAX_KEYS_PER_SOURCE: usize = 1000;
/// The most digits kubelet's payload names end with (a random `uint32`).
const MAX_PAYLOAD_SUFFIX_DIGITS: usize = 20;

/// Raw bytes of one key, or why it could not be read.
#[derive(Debug)]
pub struct RawKey {
    pub key: String,
    pub content: Result<Vec<u8>, Finding>,
}

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("Secret directory {path} does not exist; check the volume mount or the --ca-dir path")]
    DirMissing { path: PathBuf },
    #[error("cannot read Secret directory {path}: {source}")]
    Dir { path: PathBuf, source: DirError },
    #[error("{path}/..data points at {target:?}, which is not a payload directory of kubelet's form (..YYYY_MM_DD_HH_MM_SS.<digits>) directly inside the Secret directory; it is not followed")]
    BadDataLink { path: PathBuf, target: String },
    #[error("{path}/{payload} (what ..data points at) is a link or not a directory; kubelet's payload is a real directory, and nothing else is read")]
    PayloadNotADirectory { path: PathBuf, payload: String },
    #[error("{path} can be changed by a user other than root (owner uid {uid}, mode {mode:04o}); the agent runs as root and reads nothing such a user could point it at")]
    Unsafe { path: PathBuf, uid: u32, mode: u32 },
    #[error("{path}/..data changed {attempts} times while it was read; the next change event will read it again")]
    Unstable { path: PathBuf, attempts: usize },
    #[error("Secret directory {path} has more than {MAX_KEYS_PER_SOURCE} keys; it does not look like a CA Secret")]
    TooManyKeys { path: PathBuf, count: usize },
    #[error("provisioning file {path} is not a regular file (a directory, link, FIFO, socket or device); point --ca-file at a PEM file")]
    NotAFile { path: PathBuf },
    #[error("provisioning file {path} has {nlink} hard links; a second name may belong to a file elsewhere, so it is refused without being read")]
    HardLinked { path: PathBuf, nlink: u64 },
    #[error("provisioning file {path} does not exist; create it or remove it from --ca-file")]
    FileMissing { path: PathBuf },
    #[error("cannot read provisioning file {path}: {source}")]
    ReadFile { path: PathBuf, source: DirError },
}

impl SourceError {
    fn unsafe_dir(u: UnsafeDir) -> Self {
        Self::Unsafe {
            path: u.path,
            uid: u.facts.uid,
            mode: u.facts.mode,
        }
    }

    /// The finding kind and the fix an operator needs.
    fn kind_and_fix(&self) -> (FindingKind, &'static str) {
        match self {
            Self::DirMissing { .. } | Self::FileMissing { .. } => (
                FindingKind::SourceMissing,
                "create it, or remove it from the agent's configuration",
            ),
            Self::TooManyKeys { .. } => (
                FindingKind::SourceUnavailable,
                "a CA Secret holds at most a few CA keys; remove the keys that are not CA certificates, or point --ca-dir at the right directory",
            ),
            Self::NotAFile { .. } => (
                FindingKind::SourceUnavailable,
                "point --ca-file at a regular PEM file",
            ),
            Self::BadDataLink { .. } | Self::PayloadNotADirectory { .. } => (
                FindingKind::BadLayout,
                "kubelet writes ..data itself, as a link to a payload directory beside it; in a kubelet Secret volume, recreate the volume (restart the pod); in a plain --ca-dir, remove ..data and the payload directories",
            ),
            Self::Unsafe { .. } => (
                FindingKind::WritableByOthers,
                "make it owned by root and not writable by group or others (`chown root PATH && chmod go-w PATH`), or point the agent at a directory only root writes",
            ),
            Self::HardLinked { .. } => (
                FindingKind::HardLink,
                "replace the hard link by a copy of the file",
            ),
            _ => (
                FindingKind::SourceUnavailable,
                "check the volume mount and the agent's configuration",
            ),
        }
    }
}

/// Reads and validates one source at time `now`.
pub fn read_source(spec: &SourceSpec, now: i64) -> SourceInput {
    let source = spec.name();
    let mut content = None;
    let keys = match spec {
        SourceSpec::SecretDir(dir) => read_secret_dir(dir).map(|raw| {
            // The bytes the pass read, for the input digest the fleet view
            // publishes (`None` when a key could not be read).
            content = raw
                .iter()
                .map(|k| k.content.as_ref().ok().map(|b| (k.key.clone(), b.clone())))
                .collect::<Option<std::collections::BTreeMap<_, _>>>();
            raw.into_iter().map(|k| verdict_of(k, now)).collect()
        }),
        SourceSpec::File(path) => read_provisioning_file(path).map(|content| {
            vec![match content {
                Ok(bytes) => validate_key(&source, &bytes, now),
                Err(finding) => unvalidated(source.clone(), finding),
            }]
        }),
    };
    SourceInput {
        keys: keys.map_err(|e| {
            let (kind, fix) = e.kind_and_fix();
            Finding::error(
                kind,
                &source,
                None,
                format!("{e}; the CAs last installed from it stay installed"),
                fix,
            )
        }),
        source,
        content,
    }
}

/// A key's verdict: validated if it was read, with a warning for a name
/// that is not plain ASCII.
fn verdict_of(k: RawKey, now: i64) -> KeyVerdict {
    let mut verdict = match k.content {
        Ok(bytes) => validate_key(&k.key, &bytes, now),
        Err(finding) => unvalidated(k.key.clone(), finding),
    };
    if let Some(f) = name_warning(&k.key) {
        verdict.findings.insert(0, f);
    }
    verdict
}

/// The warning for a key name that is not plain printable ASCII: it may
/// look like another key (a Cyrillic `а` is not a Latin `a`), or hide
/// characters that turn text around (a right-to-left mark).
fn name_warning(key: &str) -> Option<Finding> {
    if is_plain_ascii(key) {
        return None;
    }
    let odd: Vec<String> = key
        .chars()
        .filter(|c| !(' '..='~').contains(c))
        .map(|c| format!("U+{:04X}", u32::from(c)))
        .collect();
    Some(Finding::warning(
        FindingKind::NonAsciiKeyName,
        key,
        None,
        format!(
            "the key name is not plain ASCII (it has {}); it may look like another key in logs and tables",
            odd.join(", ")
        ),
        "rename the key using only ASCII letters, digits, '.', '-' and '_'",
    ))
}

/// Whether `name` is a payload directory name of kubelet's AtomicWriter:
/// `..YYYY_MM_DD_HH_MM_SS.` and a number (what Go's `os.MkdirTemp` adds).
pub fn is_payload_name(name: &[u8]) -> bool {
    const STAMP: &[u8] = b"dddd_dd_dd_dd_dd_dd.";
    let Some(rest) = name.strip_prefix(b"..") else {
        return false;
    };
    if rest.len() <= STAMP.len() {
        return false;
    }
    let (stamp, suffix) = rest.split_at(STAMP.len());
    stamp.iter().zip(STAMP).all(|(c, p)| match p {
        b'd' => c.is_ascii_digit(),
        p => c == p,
    }) && suffix.len() <= MAX_PAYLOAD_SUFFIX_DIGITS
        && suffix.iter().all(u8::is_ascii_digit)
}

/// The provisioning file's bytes, or the finding that refuses its content
/// (too large); the file itself must be safe to read (see the module).
fn read_provisioning_file(path: &Path) -> Result<Result<Vec<u8>, Finding>, SourceError> {
    let me = own_uid();
    let real = match check_path_owners(path, me) {
        Err(e) if e.is_not_found() => {
            return Err(SourceError::FileMissing {
                path: path.to_path_buf(),
            })
        }
        Err(source) => {
            return Err(SourceError::ReadFile {
                path: path.to_path_buf(),
                source,
            })
        }
        Ok(Err(u)) => return Err(SourceError::unsafe_dir(u)),
        Ok(Ok(real)) => real,
    };
    let file = match open_file_at_path(&real) {
        Err(e) if e.is_not_found() => {
            return Err(SourceError::FileMissing {
                path: path.to_path_buf(),
            })
        }
        Err(source) => {
            return Err(SourceError::ReadFile {
                path: path.to_path_buf(),
                source,
            })
        }
        // A FIFO would block the read forever.
        Ok(Err(_)) => {
            return Err(SourceError::NotAFile {
                path: path.to_path_buf(),
            })
        }
        Ok(Ok(file)) => file,
    };
    let facts = file.facts();
    if facts.nlink > 1 {
        return Err(SourceError::HardLinked {
            path: path.to_path_buf(),
            nlink: facts.nlink,
        });
    }
    if facts.writable_by_others(me) {
        return Err(SourceError::Unsafe {
            path: path.to_path_buf(),
            uid: facts.uid,
            mode: facts.mode,
        });
    }
    let name = path.display().to_string();
    match file.read(MAX_INPUT_BYTES) {
        Ok(Some(bytes)) => Ok(Ok(bytes)),
        Ok(None) => Ok(Err(too_large(&name, facts.size))),
        Err(source) => Err(SourceError::ReadFile {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Why [`read_keys`] stopped.
enum ReadKeysError {
    /// The payload changed under the read (a key vanished): read again.
    Vanished,
    Source(SourceError),
}

/// Reads every key of a Secret directory from one consistent payload.
pub fn read_secret_dir(dir: &Path) -> Result<Vec<RawKey>, SourceError> {
    let me = own_uid();
    let missing = || SourceError::DirMissing {
        path: dir.to_path_buf(),
    };
    let dir_err = |source: DirError| SourceError::Dir {
        path: dir.to_path_buf(),
        source,
    };
    let real = match check_path_owners(dir, me) {
        Err(e) if e.is_not_found() => return Err(missing()),
        Err(e) => return Err(dir_err(e)),
        Ok(Err(u)) => return Err(SourceError::unsafe_dir(u)),
        Ok(Ok(real)) => real,
    };
    let top = match DirHandle::open(&real) {
        Err(DirError::NotADirectory { .. }) => return Err(missing()),
        Err(e) if e.is_not_found() => return Err(missing()),
        Err(e) => return Err(dir_err(e)),
        Ok(top) => top,
    };
    let data_link = OsStr::new(DATA_LINK);
    for _ in 0..MAX_READ_ATTEMPTS {
        let link = match top.entry_facts(data_link) {
            Err(e) if e.is_not_found() => return read_plain(&top, dir, me),
            Err(e) => return Err(dir_err(e)),
            // Not written by kubelet: a plain directory of files.
            Ok(f) if f.kind != Kind::Link => return read_plain(&top, dir, me),
            Ok(f) => f,
        };
        if !link.owned_by_trusted(me) {
            return Err(SourceError::Unsafe {
                path: dir.join(DATA_LINK),
                uid: link.uid,
                mode: link.mode,
            });
        }
        let target = match top.read_link(data_link) {
            Err(e) if e.is_not_found() => continue,
            Err(e) => return Err(dir_err(e)),
            Ok(t) => t,
        };
        if !is_payload_name(target.as_bytes()) {
            return Err(SourceError::BadDataLink {
                path: dir.to_path_buf(),
                target: target.to_string_lossy().into_owned(),
            });
        }
        let payload = match top.open_dir(&target) {
            // Swapped, and the old payload removed, since the readlink.
            Err(e) if e.is_not_found() => continue,
            Err(DirError::IsLink { .. } | DirError::NotADirectory { .. }) => {
                return Err(SourceError::PayloadNotADirectory {
                    path: dir.to_path_buf(),
                    payload: target.to_string_lossy().into_owned(),
                })
            }
            Err(e) => return Err(dir_err(e)),
            Ok(p) => p,
        };
        let facts = payload.facts().map_err(dir_err)?;
        if facts.writable_by_others(me) {
            return Err(SourceError::Unsafe {
                path: dir.join(&target),
                uid: facts.uid,
                mode: facts.mode,
            });
        }
        let result = read_keys(&payload, dir, true, me);
        let after = top.read_link(data_link).ok();
        match result {
            Ok(keys) if after.as_deref() == Some(target.as_os_str()) => return Ok(keys),
            // Swapped mid-read, or the old payload was deleted under us: again.
            Ok(_) | Err(ReadKeysError::Vanished) => continue,
            Err(ReadKeysError::Source(e)) => return Err(e),
        }
    }
    Err(SourceError::Unstable {
        path: dir.to_path_buf(),
        attempts: MAX_READ_ATTEMPTS,
    })
}

/// A directory without `..data`: its own files are the keys.
fn read_plain(top: &DirHandle, dir: &Path, me: u32) -> Result<Vec<RawKey>, SourceError> {
    match read_keys(top, dir, false, me) {
        Ok(keys) => Ok(keys),
        Err(ReadKeysError::Source(e)) => Err(e),
        // Cannot happen for a plain directory (a vanished file is skipped).
        Err(ReadKeysError::Vanished) => Err(SourceError::Unstable {
            path: dir.to_path_buf(),
            attempts: 1,
        }),
    }
}

/// Reads the non-dot entries of the open directory `handle` (kubelet's
/// payload when `payload`, else a plain directory) of the Secret directory
/// `dir`.
fn read_keys(
    handle: &DirHandle,
    dir: &Path,
    payload: bool,
    me: u32,
) -> Result<Vec<RawKey>, ReadKeysError> {
    let names = handle.names().map_err(|e| {
        if payload && e.is_not_found() {
            ReadKeysError::Vanished
        } else {
            ReadKeysError::Source(SourceError::Dir {
                path: dir.to_path_buf(),
                source: e,
            })
        }
    })?;
    let mut visible: Vec<OsString> = Vec::new();
    let mut hidden = Vec::new();
    for name in names {
        let bytes = name.as_bytes();
        if bytes.starts_with(b".") {
            // In kubelet's payload dir a single-dot name is a Secret key
            // (`.ca.crt` is valid; the API refuses `..` prefixes, kubelet's
            // own namespace). In a plain directory it is a hidden file of
            // whoever manages it (`.keep`, an editor's swap file).
            if payload && !bytes.starts_with(b"..") {
                hidden.push(name.to_string_lossy().into_owned());
            }
            continue;
        }
        visible.push(name);
        if visible.len() > MAX_KEYS_PER_SOURCE {
            return Err(ReadKeysError::Source(SourceError::TooManyKeys {
                path: dir.to_path_buf(),
                count: visible.len(),
            }));
        }
    }
    visible.sort();
    let mut keys = Vec::with_capacity(visible.len());
    for name in visible {
        let key = name.to_string_lossy().into_owned();
        match read_key(handle, &name, &key, me) {
            Err(KeyRead::Vanished) if payload => return Err(ReadKeysError::Vanished),
            // Removed from a plain directory since the listing: its removal
            // is a change of its own, seen by the next pass.
            Err(KeyRead::Vanished) => {}
            Err(KeyRead::Refused(f)) => keys.push(RawKey {
                key,
                content: Err(f),
            }),
            Ok(bytes) => keys.push(RawKey {
                key,
                content: Ok(bytes),
            }),
        }
    }
    hidden.sort();
    keys.extend(hidden.into_iter().map(|name| RawKey {
        content: Err(hidden_key(&name)),
        key: name,
    }));
    Ok(keys)
}

/// The warning for a Secret key whose name starts with a dot.
fn hidden_key(name: &str) -> Finding {
    Finding::warning(
        FindingKind::HiddenKey,
        name,
        None,
        "a key whose name starts with a dot is a hidden file in the Secret volume; it is not read",
        format!(
            "rename the key to \"{}\" if it holds CAs to trust, or remove it",
            name.trim_start_matches('.')
        ),
    )
}

/// The verdict on a key that was not read or validated: not used (its last
/// good version, if any, stays). Whether that is an error is the finding's.
fn unvalidated(key: String, finding: Finding) -> KeyVerdict {
    KeyVerdict {
        key,
        certs: Vec::new(),
        findings: vec![finding],
        rejected: true,
    }
}

/// Why a key was not read.
enum KeyRead {
    /// It is gone since the listing.
    Vanished,
    /// It was refused, without reading it (or it could not be read).
    Refused(Finding),
}

/// Opens the key `name` once, judges it on its descriptor, and only then
/// reads it.
fn read_key(handle: &DirHandle, name: &OsStr, key: &str, me: u32) -> Result<Vec<u8>, KeyRead> {
    let path = handle.path().join(name);
    let unreadable = |e: &dyn std::fmt::Display| {
        KeyRead::Refused(Finding::error(
            FindingKind::Unreadable,
            key,
            None,
            format!("cannot read {}: {e}", path.display()),
            "check the Secret volume",
        ))
    };
    let file = match handle.open_file(name) {
        Err(e) if e.is_not_found() => return Err(KeyRead::Vanished),
        // Swapped for a link between the look and the open.
        Err(DirError::IsLink { .. }) => {
            return Err(KeyRead::Refused(link_finding(handle, name, key)))
        }
        Err(e) => return Err(unreadable(&e)),
        Ok(Err(facts)) => {
            return Err(KeyRead::Refused(not_a_file(
                handle, name, key, &path, facts,
            )))
        }
        Ok(Ok(file)) => file,
    };
    let facts = file.facts();
    if facts.nlink > 1 {
        return Err(KeyRead::Refused(Finding::error(
            FindingKind::HardLink,
            key,
            None,
            format!(
                "the key has {} hard links; kubelet's files have one, and another name may be a file outside the Secret directory, so it is refused without being read",
                facts.nlink
            ),
            "replace the hard link by a copy of the file",
        )));
    }
    if facts.writable_by_others(me) {
        return Err(KeyRead::Refused(Finding::error(
            FindingKind::WritableByOthers,
            key,
            None,
            format!(
                "{} can be changed by a user other than root (owner uid {}, mode {:04o}); it is refused without being read",
                path.display(),
                facts.uid,
                facts.mode
            ),
            "make the file owned by root and not writable by group or others (`chmod 0644`; for a Secret volume, a defaultMode of 0644 or less)",
        )));
    }
    match file.read(MAX_INPUT_BYTES) {
        Ok(Some(bytes)) => Ok(bytes),
        Ok(None) => Err(KeyRead::Refused(too_large(key, facts.size))),
        Err(e) if e.is_not_found() => Err(KeyRead::Vanished),
        Err(e) => Err(unreadable(&e)),
    }
}

/// The finding for a key that is a link: never followed.
fn link_finding(handle: &DirHandle, name: &OsStr, key: &str) -> Finding {
    let target = handle
        .read_link(name)
        .map(|t| format!(" to {:?}", t.to_string_lossy()))
        .unwrap_or_default();
    Finding::error(
        FindingKind::Link,
        key,
        None,
        format!("the key is a link{target}; kubelet writes regular files, and the agent follows no link out of (or within) the Secret directory, so it is refused without being read"),
        "publish the CA's content in the Secret itself (in a plain --ca-dir, copy the file instead of linking it)",
    )
}

/// The finding for an entry that is not a regular file.
fn not_a_file(handle: &DirHandle, name: &OsStr, key: &str, path: &Path, facts: Facts) -> Finding {
    match facts.kind {
        Kind::Link => link_finding(handle, name, key),
        Kind::Dir => Finding::warning(
            FindingKind::NotAKey,
            key,
            None,
            format!("{} is a directory, not a key; it is not read", path.display()),
            "remove the directory, or point --ca-dir at it if it holds CA files",
        ),
        Kind::File | Kind::Special => Finding::error(
            FindingKind::Unreadable,
            key,
            None,
            format!("{} is not a regular file (a FIFO, socket or device); it is refused without being read", path.display()),
            "make the key a regular file holding PEM certificates",
        ),
    }
}

/// Validates the keys of a Secret manifest like a mounted Secret's.
pub fn validate_raw_keys(source: String, keys: Vec<RawKey>, now: i64) -> SourceInput {
    let verdicts = keys
        .into_iter()
        .map(|k| match k.content {
            Ok(_) if k.key.starts_with('.') => {
                let finding = hidden_key(&k.key);
                unvalidated(k.key, finding)
            }
            _ => verdict_of(k, now),
        })
        .collect();
    SourceInput {
        source,
        keys: Ok(verdicts),
        content: None,
    }
}

#[cfg(test)]
mod tests;
