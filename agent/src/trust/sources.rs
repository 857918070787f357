//! Reads the CA inputs: mounted Secret directories and provisioning files.
//!
//! A Secret volume written by kubelet's AtomicWriter is only consistent
//! through `..data`: this module reads the payload directory `..data` points
//! at, never the user-visible links, and reads again if `..data` was swapped
//! while it read. Source paths are this process's paths (a pod's mount), not
//! node paths, so they do not go through `HostRoot`.

use std::path::{Path, PathBuf};
use std::{fs, io};

pub use crate::config::SourceSpec;
use crate::node::fsutil::read_limited;
use crate::trust::plan::SourceInput;
use crate::trust::validate::{validate_key, Finding, FindingKind, KeyVerdict, MAX_INPUT_BYTES};

/// The link kubelet swaps atomically to publish a new Secret payload.
const DATA_LINK: &str = "..data";
/// How often a read is restarted when `..data` keeps moving under it.
const MAX_READ_ATTEMPTS: usize = 5;
/// More keys than this in one Secret directory is not a CA Secret.
pub const MAX_KEYS_PER_SOURCE: usize = 1000;

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
    #[error("cannot list Secret directory {path}: {source}")]
    ListDir { path: PathBuf, source: io::Error },
    #[error("cannot read {path}: {source}")]
    ReadLink { path: PathBuf, source: io::Error },
    #[error("{path}/..data points at {target:?}, which is not a payload directory inside the Secret directory")]
    BadDataLink { path: PathBuf, target: PathBuf },
    #[error("{path}/..data changed {attempts} times while it was read; the next change event will read it again")]
    Unstable { path: PathBuf, attempts: usize },
    #[error("Secret directory {path} has more than {MAX_KEYS_PER_SOURCE} keys; it does not look like a CA Secret")]
    TooManyKeys { path: PathBuf, count: usize },
    #[error("provisioning file {path} is not a regular file (a directory, FIFO, socket or device); point --ca-file at a PEM file")]
    NotAFile { path: PathBuf },
    #[error("provisioning file {path} does not exist; create it or remove it from --ca-file")]
    FileMissing { path: PathBuf },
    #[error("cannot read provisioning file {path}: {source}")]
    ReadFile {
        path: PathBuf,
        source: crate::node::fsutil::FsError,
    },
}

/// Reads and validates one source at time `now`.
pub fn read_source(spec: &SourceSpec, now: i64) -> SourceInput {
    let source = spec.name();
    let mut content = None;
    let keys = match spec {
        SourceSpec::SecretDir(dir) => read_secret_dir(dir).map(|raw| {
            content = raw
                .iter()
                .map(|k| k.content.as_ref().ok().map(|b| (k.key.clone(), b.clone())))
                .collect::<Option<std::collections::BTreeMap<_, _>>>();
            raw.into_iter()
                .map(|k| match k.content {
                    Ok(bytes) => validate_key(&k.key, &bytes, now),
                    Err(finding) => unvalidated(k.key, finding),
                })
                .collect()
        }),
        SourceSpec::File(path) => {
            read_provisioning_file(path).map(|bytes| vec![validate_key(&source, &bytes, now)])
        }
    };
    SourceInput {
        keys: keys.map_err(|e| {
            let fix = match &e {
                SourceError::TooManyKeys { .. } => "a CA Secret holds at most a few CA keys; remove the keys that are not CA certificates, or point --ca-dir at the right directory",
                SourceError::DirMissing { .. } | SourceError::FileMissing { .. } => "create it, or remove it from the agent's configuration",
                SourceError::NotAFile { .. } => "point --ca-file at a regular PEM file",
                _ => "check the volume mount and the agent's configuration",
            };
            let kind = match e {
                SourceError::DirMissing { .. } | SourceError::FileMissing { .. } => {
                    FindingKind::SourceMissing
                }
                _ => FindingKind::SourceUnavailable,
            };
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

fn read_provisioning_file(path: &Path) -> Result<Vec<u8>, SourceError> {
    match fs::metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(SourceError::FileMissing {
                path: path.to_path_buf(),
            })
        }
        // A FIFO would block the read forever.
        Ok(m) if !m.is_file() => {
            return Err(SourceError::NotAFile {
                path: path.to_path_buf(),
            })
        }
        _ => {}
    }
    // Over-size input still reaches validation, so the finding names the key.
    read_limited(path, MAX_INPUT_BYTES + 1).or_else(|e| match e {
        crate::node::fsutil::FsError::ReadTooLarge { .. } => {
            Ok(vec![0; MAX_INPUT_BYTES as usize + 1])
        }
        other => Err(SourceError::ReadFile {
            path: path.to_path_buf(),
            source: other,
        }),
    })
}

/// Reads every key of a Secret directory from one consistent payload.
pub fn read_secret_dir(dir: &Path) -> Result<Vec<RawKey>, SourceError> {
    if !dir.is_dir() {
        return Err(SourceError::DirMissing {
            path: dir.to_path_buf(),
        });
    }
    let data_link = dir.join(DATA_LINK);
    for _ in 0..MAX_READ_ATTEMPTS {
        let target = match fs::read_link(&data_link) {
            Ok(t) => t,
            // Not written by kubelet: a plain directory of files.
            Err(e) if e.kind() == io::ErrorKind::NotFound => return read_keys(dir, dir),
            Err(e) if e.kind() == io::ErrorKind::InvalidInput => return read_keys(dir, dir),
            Err(source) => {
                return Err(SourceError::ReadLink {
                    path: data_link,
                    source,
                })
            }
        };
        if target.components().count() != 1 || !target.to_string_lossy().starts_with("..") {
            return Err(SourceError::BadDataLink {
                path: dir.to_path_buf(),
                target,
            });
        }
        let payload = dir.join(&target);
        let result = read_keys(dir, &payload);
        let after = fs::read_link(&data_link).ok();
        match result {
            Ok(keys) if after.as_deref() == Some(target.as_path()) => return Ok(keys),
            // Swapped mid-read, or the old payload was deleted under us: again.
            Ok(_) => continue,
            Err(SourceError::ListDir { source, .. })
                if source.kind() == io::ErrorKind::NotFound =>
            {
                continue
            }
            Err(e) => return Err(e),
        }
    }
    Err(SourceError::Unstable {
        path: dir.to_path_buf(),
        attempts: MAX_READ_ATTEMPTS,
    })
}

/// Reads the non-dot entries of `payload`; links must stay inside `dir`.
fn read_keys(dir: &Path, payload: &Path) -> Result<Vec<RawKey>, SourceError> {
    let entries = fs::read_dir(payload).map_err(|source| SourceError::ListDir {
        path: payload.to_path_buf(),
        source,
    })?;
    let mut names = Vec::new();
    let mut hidden = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|source| SourceError::ListDir {
            path: payload.to_path_buf(),
            source,
        })?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            // In kubelet's payload dir a single-dot name is a Secret key
            // (`.ca.crt` is valid; the API refuses `..` prefixes, kubelet's
            // own namespace). In a plain directory it is a hidden file of
            // whoever manages it (`.keep`, an editor's swap file).
            if payload != dir && !name.starts_with("..") {
                hidden.push(name);
            }
            continue;
        }
        names.push(name);
        if names.len() > MAX_KEYS_PER_SOURCE {
            return Err(SourceError::TooManyKeys {
                path: dir.to_path_buf(),
                count: names.len(),
            });
        }
    }
    names.sort();
    let dir_real = fs::canonicalize(dir).map_err(|source| SourceError::ListDir {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut keys = Vec::with_capacity(names.len());
    for name in names {
        let path = payload.join(&name);
        let content = read_key(&dir_real, &name, &path);
        if let Err(f) = &content {
            // A payload dir deleted mid-read surfaces here as NotFound.
            if f.kind == FindingKind::Unreadable && !path.exists() && !payload.exists() {
                return Err(SourceError::ListDir {
                    path: payload.to_path_buf(),
                    source: io::Error::from(io::ErrorKind::NotFound),
                });
            }
        }
        if matches!(&content, Err(f) if f.kind == FindingKind::NotAKey) {
            // Sub-directories are not keys (kubelet writes none for a CA Secret).
            continue;
        }
        keys.push(RawKey { key: name, content });
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

fn read_key(dir_real: &Path, name: &str, path: &Path) -> Result<Vec<u8>, Finding> {
    let unreadable = |e: &dyn std::fmt::Display| {
        Finding::error(
            FindingKind::Unreadable,
            name,
            None,
            format!("cannot read {}: {e}", path.display()),
            "check the Secret volume",
        )
    };
    let meta = fs::symlink_metadata(path).map_err(|e| unreadable(&e))?;
    if meta.file_type().is_symlink() {
        let real = fs::canonicalize(path).map_err(|e| unreadable(&e))?;
        if !real.starts_with(dir_real) {
            return Err(Finding::error(
                FindingKind::LinkOutsideDir,
                name,
                None,
                format!(
                    "the key is a link to {}, outside the Secret directory; it is refused",
                    real.display()
                ),
                "publish the CA's content in the Secret itself",
            ));
        }
    }
    // Follow the (checked) link: only a regular file is a key. A FIFO would
    // block the read forever; a device or socket is nothing to trust.
    let target = fs::metadata(path).map_err(|e| unreadable(&e))?;
    if target.is_dir() {
        return Err(Finding::warning(
            FindingKind::NotAKey,
            name,
            None,
            "a directory, not a key",
            "",
        ));
    }
    if !target.is_file() {
        return Err(Finding::error(
            FindingKind::Unreadable,
            name,
            None,
            format!("{} is not a regular file (a FIFO, socket or device); it is refused without being read", path.display()),
            "make the key a regular file holding PEM certificates",
        ));
    }
    match read_limited(path, MAX_INPUT_BYTES + 1) {
        Ok(bytes) => Ok(bytes),
        // Let validation report the size with its usual words.
        Err(crate::node::fsutil::FsError::ReadTooLarge { .. }) => {
            Ok(vec![0; MAX_INPUT_BYTES as usize + 1])
        }
        Err(e) => Err(unreadable(&e)),
    }
}

/// One Secret of a manifest: a display name and its keys.
pub type ManifestSecret = (String, Vec<RawKey>);

/// A Kubernetes Secret manifest (YAML, possibly several documents) as an
/// input to `check`, so a pipeline can lint a Secret before it is applied.
/// `Ok(None)` when the file holds no `kind: Secret` document. Keys come from
/// `data` (decoded from base64 once, as kubelet does) and `stringData`.
pub fn read_secret_manifest(path: &Path) -> Result<Option<Vec<ManifestSecret>>, String> {
    let bytes = read_limited(path, 4 * MAX_INPUT_BYTES).map_err(|e| e.to_string())?;
    let Ok(text) = std::str::from_utf8(&bytes) else {
        return Ok(None);
    };
    Ok(parse_secret_manifest(text, &path.display().to_string()))
}

/// The Secrets of manifest text (pure); `origin` names the file in the
/// Secrets' display names. `None` when the text is not YAML or holds no
/// `kind: Secret` document.
pub fn parse_secret_manifest(text: &str, origin: &str) -> Option<Vec<ManifestSecret>> {
    let mut secrets = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(text) {
        let Ok(value) = <serde_yaml::Value as serde::Deserialize>::deserialize(doc) else {
            return None;
        };
        if value.get("kind").and_then(serde_yaml::Value::as_str) != Some("Secret") {
            continue;
        }
        let meta = value.get("metadata");
        let field = |k: &str| {
            meta.and_then(|m| m.get(k))
                .and_then(serde_yaml::Value::as_str)
                .unwrap_or("")
        };
        let name = format!(
            "{} (Secret {}/{})",
            origin,
            field("namespace"),
            field("name")
        );
        let mut keys: Vec<RawKey> = Vec::new();
        if let Some(data) = value.get("data").and_then(serde_yaml::Value::as_mapping) {
            for (k, v) in data {
                let key = k.as_str().unwrap_or_default().to_string();
                let encoded: String = v
                    .as_str()
                    .unwrap_or_default()
                    .chars()
                    .filter(|c| !c.is_whitespace())
                    .collect();
                let content = base64::Engine::decode(&base64::engine::general_purpose::STANDARD, encoded.as_bytes()).map_err(|e| {
                    Finding::error(
                        FindingKind::Unparsable,
                        &key,
                        None,
                        format!("the value under `data` is not valid base64 ({e})"),
                        "base64-encode the PEM exactly once (`base64 -w0 ca.crt`), or put the plain PEM under `stringData:`",
                    )
                });
                keys.push(RawKey { key, content });
            }
        }
        if let Some(data) = value
            .get("stringData")
            .and_then(serde_yaml::Value::as_mapping)
        {
            for (k, v) in data {
                let key = k.as_str().unwrap_or_default().to_string();
                // stringData wins over data for the same key, as in the API server.
                keys.retain(|r| r.key != key);
                keys.push(RawKey {
                    key,
                    content: Ok(v.as_str().unwrap_or_default().as_bytes().to_vec()),
                });
            }
        }
        keys.sort_by(|a, b| a.key.cmp(&b.key));
        secrets.push((name, keys));
    }
    (!secrets.is_empty()).then_some(secrets)
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
            Ok(bytes) => validate_key(&k.key, &bytes, now),
            Err(finding) => unvalidated(k.key, finding),
        })
        .collect();
    SourceInput {
        source,
        keys: Ok(verdicts),
        content: None,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]
mod tests {
    use std::os::unix::fs::symlink;

    use super::*;
    use crate::x509::testpki;
    use crate::x509::time::now_unix;

    /// Publishes `keys` the way kubelet's AtomicWriter does.
    fn publish(dir: &Path, generation: u32, keys: &[(&str, &[u8])]) {
        let payload = format!("..2026_11_22_04_45_{generation:02}.000000001");
        fs::create_dir(dir.join(&payload)).unwrap();
        for (k, v) in keys {
            fs::write(dir.join(&payload).join(k), v).unwrap();
        }
        let _ = fs::remove_file(dir.join("..data_tmp"));
        symlink(&payload, dir.join("..data_tmp")).unwrap();
        fs::rename(dir.join("..data_tmp"), dir.join("..data")).unwrap();
        for (k, _) in keys {
            let link = dir.join(k);
            if fs::symlink_metadata(&link).is_err() {
                symlink(format!("..data/{k}"), &link).unwrap();
            }
        }
    }

    #[test]
    fn reads_exactly_the_keys_data_points_at() {
        let dir = tempfile::tempdir().unwrap();
        publish(dir.path(), 1, &[("ca1.crt", b"one"), ("ca2.crt", b"two")]);
        // A stale user-visible link and a dotfile must not count.
        symlink("..data/gone.crt", dir.path().join("gone.crt")).unwrap();
        fs::write(dir.path().join(".hidden"), b"x").unwrap();
        let keys = read_secret_dir(dir.path()).unwrap();
        let names: Vec<_> = keys.iter().map(|k| k.key.as_str()).collect();
        assert_eq!(names, ["ca1.crt", "ca2.crt"]);
        assert_eq!(keys[1].content.as_ref().unwrap(), b"two");
    }

    #[test]
    fn a_dot_key_in_the_payload_is_reported_not_read_and_a_plain_dirs_dotfile_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        publish(dir.path(), 1, &[("ca1.crt", b"one"), (".ca2.crt", b"two")]);
        let keys = read_secret_dir(dir.path()).unwrap();
        assert_eq!(keys.len(), 2);
        assert_eq!(keys[1].key, ".ca2.crt");
        let finding = keys[1].content.as_ref().unwrap_err();
        assert_eq!(finding.kind, FindingKind::HiddenKey);
        assert!(!finding.is_error(), "a warning: {finding}");
        assert!(
            finding
                .to_string()
                .contains("rename the key to \"ca2.crt\""),
            "{finding}"
        );
        let input = read_source(&SourceSpec::SecretDir(dir.path().to_owned()), 0);
        let verdicts = input.keys.unwrap();
        assert!(verdicts[1].rejected && verdicts[1].certs.is_empty());

        let plain = tempfile::tempdir().unwrap();
        fs::write(plain.path().join("ca1.crt"), b"one").unwrap();
        fs::write(plain.path().join(".keep"), b"").unwrap();
        let keys = read_secret_dir(plain.path()).unwrap();
        assert_eq!(
            keys.iter().map(|k| k.key.as_str()).collect::<Vec<_>>(),
            ["ca1.crt"]
        );
    }

    #[test]
    fn a_new_payload_replaces_the_old_key_set() {
        let dir = tempfile::tempdir().unwrap();
        publish(dir.path(), 1, &[("ca1.crt", b"one")]);
        publish(dir.path(), 2, &[("ca2.crt", b"two")]);
        let keys = read_secret_dir(dir.path()).unwrap();
        assert_eq!(keys.len(), 1);
        assert_eq!(keys[0].key, "ca2.crt");
    }

    #[test]
    fn half_written_payload_is_invisible_until_the_swap() {
        let dir = tempfile::tempdir().unwrap();
        publish(dir.path(), 1, &[("ca1.crt", b"one")]);
        // Step 1 of an update: a new payload dir exists, ..data not yet swapped.
        fs::create_dir(dir.path().join("..2026_11_22_04_45_09.000000001")).unwrap();
        fs::write(
            dir.path().join("..2026_11_22_04_45_09.000000001/ca1.crt"),
            b"half",
        )
        .unwrap();
        let keys = read_secret_dir(dir.path()).unwrap();
        assert_eq!(keys[0].content.as_ref().unwrap(), b"one");
    }

    #[test]
    fn swap_in_the_middle_of_a_read_is_read_again() {
        let dir = tempfile::tempdir().unwrap();
        publish(dir.path(), 1, &[("ca1.crt", b"one")]);
        let payload = dir
            .path()
            .join(fs::read_link(dir.path().join("..data")).unwrap());
        // Simulate the read seeing generation 1's listing, then a swap and the
        // old payload's deletion before the key was read.
        let listed = read_keys(dir.path(), &payload).unwrap();
        assert_eq!(listed[0].content.as_ref().unwrap(), b"one");
        publish(dir.path(), 2, &[("ca1.crt", b"two")]);
        fs::remove_dir_all(&payload).unwrap();
        let err = read_keys(dir.path(), &payload).unwrap_err();
        assert!(matches!(err, SourceError::ListDir { .. }));
        // The full read notices and returns only the new generation.
        let keys = read_secret_dir(dir.path()).unwrap();
        assert_eq!(keys[0].content.as_ref().unwrap(), b"two");
    }

    #[test]
    fn link_leading_outside_the_dir_is_refused() {
        let outside = tempfile::tempdir().unwrap();
        fs::write(outside.path().join("secret"), b"not yours").unwrap();
        let dir = tempfile::tempdir().unwrap();
        publish(dir.path(), 1, &[("ok.crt", b"x")]);
        let payload = dir
            .path()
            .join(fs::read_link(dir.path().join("..data")).unwrap());
        symlink(outside.path().join("secret"), payload.join("evil.crt")).unwrap();
        let keys = read_secret_dir(dir.path()).unwrap();
        let evil = keys.iter().find(|k| k.key == "evil.crt").unwrap();
        let finding = evil.content.as_ref().unwrap_err();
        assert_eq!(finding.kind, FindingKind::LinkOutsideDir);
        assert!(finding.to_string().contains("evil.crt"));
    }

    #[test]
    fn plain_directory_without_data_link_is_read_directly() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("a.crt"), b"A").unwrap();
        let keys = read_secret_dir(dir.path()).unwrap();
        assert_eq!(keys.len(), 1);
    }

    #[test]
    fn missing_dir_is_a_source_error_that_keeps_state() {
        let input = read_source(
            &SourceSpec::SecretDir("/nonexistent/nca".into()),
            now_unix(),
        );
        let finding = input.keys.unwrap_err();
        assert_eq!(finding.kind, FindingKind::SourceMissing);
        assert!(finding.problem.contains("/nonexistent/nca"));
    }

    #[test]
    fn provisioning_file_with_blank_line_separated_pems_is_one_key() {
        let dir = tempfile::tempdir().unwrap();
        let a = testpki::pem(&testpki::good_ca("A").cert);
        let b = testpki::pem(&testpki::good_ca("B").cert);
        let path = dir.path().join("custom-ca.pem");
        fs::write(&path, format!("{a}\n{b}")).unwrap();
        let input = read_source(&SourceSpec::File(path.clone()), now_unix());
        let verdicts = input.keys.unwrap();
        assert_eq!(verdicts.len(), 1);
        assert_eq!(verdicts[0].certs.len(), 2);
        assert_eq!(verdicts[0].key, path.display().to_string());
    }

    #[test]
    fn oversized_key_reports_its_size() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("big.crt"), vec![b'a'; 5 * 1024 * 1024]).unwrap();
        let input = read_source(&SourceSpec::SecretDir(dir.path().into()), now_unix());
        let verdict = &input.keys.unwrap()[0];
        assert_eq!(verdict.findings[0].kind, FindingKind::TooLarge);
    }

    #[test]
    fn secret_manifest_keys_are_read_from_data_and_string_data() {
        let dir = tempfile::tempdir().unwrap();
        let pem = testpki::pem(&testpki::good_ca("Manifest").cert);
        let b64 = |b: &[u8]| base64::Engine::encode(&base64::engine::general_purpose::STANDARD, b);
        let yaml = format!(
            "apiVersion: v1\nkind: Secret\nmetadata:\n  name: custom-ca-trust-secret\n  namespace: kube-system\ndata:\n  ca1.crt: {}\n  twice.crt: {}\nstringData:\n  ca2.crt: |\n{}\n",
            b64(pem.as_bytes()),
            b64(b64(pem.as_bytes()).as_bytes()),
            pem.lines().map(|l| format!("    {l}")).collect::<Vec<_>>().join("\n")
        );
        let path = dir.path().join("secret.yaml");
        fs::write(&path, yaml).unwrap();
        let secrets = read_secret_manifest(&path).unwrap().unwrap();
        assert_eq!(secrets.len(), 1);
        assert!(secrets[0]
            .0
            .contains("Secret kube-system/custom-ca-trust-secret"));
        let input = validate_raw_keys(secrets[0].0.clone(), secrets[0].1.clone_keys(), now_unix());
        let verdicts = input.keys.unwrap();
        let by_key = |k: &str| verdicts.iter().find(|v| v.key == k).unwrap();
        assert!(!by_key("ca1.crt").rejected);
        assert!(!by_key("ca2.crt").rejected);
        assert_eq!(
            by_key("twice.crt").findings[0].kind,
            FindingKind::DoubleBase64
        );
    }

    #[test]
    fn a_pem_file_is_not_a_secret_manifest() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ca.pem");
        fs::write(&path, testpki::pem(&testpki::good_ca("A").cert)).unwrap();
        assert!(read_secret_manifest(&path).unwrap().is_none());
    }

    trait CloneKeys {
        fn clone_keys(&self) -> Vec<RawKey>;
    }
    impl CloneKeys for Vec<RawKey> {
        fn clone_keys(&self) -> Vec<RawKey> {
            self.iter()
                .map(|k| RawKey {
                    key: k.key.clone(),
                    content: k.content.clone(),
                })
                .collect()
        }
    }
}
