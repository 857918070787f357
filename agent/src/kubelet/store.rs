//! Kubelet's certificate files, laid out exactly as kubelet's
//! own certificate store does, so kubelet and the agent can take turns.
//!
//! In the pki directory (`/var/lib/kubelet/pki`) each certificate is a file
//! `<prefix>-<YYYY-MM-DD-HH-MM-SS>.pem` holding the certificate (and chain)
//! followed by its private key, mode 0600, and `<prefix>-current.pem` is a
//! relative symlink to the one in use. A new file is installed by writing it
//! and then renaming a fresh symlink over `-current.pem`, so the link always
//! resolves. The prefix is `kubelet-client` or `kubelet-server`.
//!
//! Boundary: this module reads and writes only those files, all through
//! [`HostRoot`] and `fsutil`. It does not decide when to renew, does not talk
//! to the API server, and does not touch kubelet's kubeconfig. Private keys
//! never appear in logs, `Debug` output or error messages.

use std::ffi::OsString;
use std::path::{Component, Path, PathBuf};
use std::{fmt, fs, io};

use openssl::pkey::{PKey, Private};
use openssl::x509::X509;
use tracing::{info, warn};

#[cfg(test)]
use crate::config::kubelet::DEFAULT_PKI_DIR;
use crate::node::fsutil::{self, FsError};
use crate::node::hostroot::{HostRoot, HostRootError};
use crate::time::rfc3339;
use crate::x509::name::name_to_string;
use crate::x509::openssl_reason;

/// Kubelet creates its pki directory world-readable; the secrets are the
/// files, which are 0600.
const PKI_DIR_MODE: u32 = 0o755;
/// The files hold private keys.
pub const CERT_FILE_MODE: u32 = 0o600;
/// A certificate, a short chain and a key are a few KiB; the cap keeps a
/// wrong link target (a log, a device) from being read whole.
const MAX_PEM_BYTES: u64 = 1024 * 1024;
/// When `<prefix>-<now>.pem` is taken, the next seconds are tried: one per
/// attempt, up to a minute ahead.
const MAX_NAME_ATTEMPTS: i64 = 60;
/// `YYYY-MM-DD-HH-MM-SS`
const TIMESTAMP_LEN: usize = 19;
/// 9999-12-31T23:59:59Z: beyond it the timestamp no longer has four year
/// digits and the names would stop sorting by time.
const MAX_UNIX_TIME: i64 = 253_402_300_799;

/// Which of kubelet's two certificates.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CertKind {
    /// The client certificate kubelet authenticates to the API server with.
    Client,
    /// The serving certificate of kubelet's own HTTPS endpoint.
    Serving,
}

impl CertKind {
    /// `client` or `serving`, for messages and log fields.
    pub fn name(self) -> &'static str {
        match self {
            CertKind::Client => "client",
            CertKind::Serving => "serving",
        }
    }

    /// File name prefix kubelet uses for this kind.
    pub fn prefix(self) -> &'static str {
        match self {
            CertKind::Client => "kubelet-client",
            CertKind::Serving => "kubelet-server",
        }
    }

    /// `<prefix>-current.pem`
    pub fn current_file_name(self) -> String {
        format!("{}-current.pem", self.prefix())
    }
}

impl fmt::Display for CertKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.prefix())
    }
}

/// The certificate `<prefix>-current.pem` points at. Cloning is cheap: the
/// OpenSSL objects are reference-counted.
#[derive(Clone)]
pub struct CurrentCert {
    /// Node path of the file the link points at (the link itself if
    /// `-current.pem` is a regular file).
    pub path: PathBuf,
    pub cert: X509,
    /// Certificates after the first, in file order.
    pub chain: Vec<X509>,
    pub key: PKey<Private>,
    /// Whether `key` is the private key of `cert`; kubelet cannot use the
    /// file when it is not.
    pub key_matches: bool,
}

impl fmt::Debug for CurrentCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CurrentCert")
            .field("path", &self.path)
            .field("subject", &name_to_string(self.cert.subject_name()))
            .field("chain_len", &self.chain.len())
            .field("key", &format_args!("<redacted>"))
            .field("key_matches", &self.key_matches)
            .finish()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot map kubelet path {} onto the host root: {source}", path.display())]
    Resolve {
        path: PathBuf,
        source: Box<HostRootError>,
    },
    #[error("cannot inspect {}: {source}", path.display())]
    Inspect { path: PathBuf, source: io::Error },
    #[error("cannot read symlink {}: {source}", path.display())]
    ReadLink { path: PathBuf, source: io::Error },
    #[error("cannot read kubelet certificate file {}: {source}", path.display())]
    Read { path: PathBuf, source: Box<FsError> },
    #[error("kubelet certificate file {} holds no usable PEM certificate ({reason}); replace the file, or remove the link to it so a new certificate is requested", path.display())]
    ParseCert { path: PathBuf, reason: String },
    #[error("kubelet certificate file {} holds no usable unencrypted PEM private key ({reason}); kubelet keeps the certificate and its key in one file: replace the file, or remove the link to it so a new certificate is requested", path.display())]
    ParseKey { path: PathBuf, reason: String },
    #[error("cannot encode the pending key {} ({reason})", path.display())]
    EncodePendingKey { path: PathBuf, reason: String },
    #[error("cannot install a new {kind} certificate: the certificate chain is not PEM certificates ({reason})")]
    ParseNewChain { kind: CertKind, reason: String },
    #[error("cannot install a new {kind} certificate: the key is not an unencrypted PEM private key ({reason})")]
    ParseNewKey { kind: CertKind, reason: String },
    #[error("cannot install a new {kind} certificate: the key is not the private key of the certificate {subject:?}; kubelet could not use the pair")]
    MatchNewKey { kind: CertKind, subject: String },
    #[error("cannot install a new {kind} certificate: the time {now_unix} is outside 1970..9999, so no kubelet file name can be made for it; check the clock")]
    NameNewFile { kind: CertKind, now_unix: i64 },
    #[error("cannot remove leftover temp files in {}: {source}", path.display())]
    Sweep { path: PathBuf, source: Box<FsError> },
    #[error("cannot create kubelet's pki directory {}: {source}", path.display())]
    CreateDir { path: PathBuf, source: Box<FsError> },
    #[error("cannot install a new {kind} certificate in {}: {first} and the {MAX_NAME_ATTEMPTS} names after it are all taken; remove old {kind}-*.pem files", path.display())]
    FindFreeName {
        kind: CertKind,
        path: PathBuf,
        first: String,
    },
    #[error("cannot write kubelet certificate file {}: {source}", path.display())]
    WriteCert { path: PathBuf, source: Box<FsError> },
    #[error("cannot point {} at {target}: {source}", path.display())]
    SwapLink {
        path: PathBuf,
        target: String,
        source: Box<FsError>,
    },
    #[error("cannot list {} to remove old certificate files: {source}", path.display())]
    ListOld { path: PathBuf, source: io::Error },
    #[error("cannot remove old kubelet certificate file {}: {source}", path.display())]
    RemoveOld { path: PathBuf, source: Box<FsError> },
}

/// Kubelet's certificate directory on the node.
#[derive(Clone, Debug)]
pub struct KubeletStore {
    host: HostRoot,
    /// Node path, normally `/var/lib/kubelet/pki` (kubelet's `--cert-dir`).
    dir: PathBuf,
}

impl KubeletStore {
    pub fn new(host: HostRoot, dir: PathBuf) -> Self {
        Self { host, dir }
    }

    /// Node path of the pki directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Node path of `<prefix>-current.pem`.
    pub fn current_link(&self, kind: CertKind) -> PathBuf {
        self.dir.join(kind.current_file_name())
    }

    /// Reads the certificate `<prefix>-current.pem` points at. `Ok(None)` if
    /// there is none: the link is absent, or dangles (kubelet treats a
    /// dangling link as no certificate too; a warning is logged). A file that
    /// does not parse is an error naming it.
    pub fn current(&self, kind: CertKind) -> Result<Option<CurrentCert>, StoreError> {
        let link = self.current_link(kind);
        let link_host = self.resolve_nofollow(&link)?;
        let meta = match fs::symlink_metadata(&link_host) {
            Ok(meta) => meta,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(StoreError::Inspect { path: link, source }),
        };
        let path = if meta.file_type().is_symlink() {
            let target = fs::read_link(&link_host).map_err(|source| StoreError::ReadLink {
                path: link.clone(),
                source,
            })?;
            self.dir.join(target)
        } else {
            link.clone()
        };
        let target_host = self
            .host
            .resolve(&link)
            .map_err(|source| StoreError::Resolve {
                path: link.clone(),
                source: Box::new(source),
            })?;
        let pem = match fsutil::read_limited(&target_host, MAX_PEM_BYTES) {
            Ok(pem) => pem,
            Err(FsError::Open { ref source, .. }) if source.kind() == io::ErrorKind::NotFound => {
                warn!(
                    link = %link.display(),
                    target = %path.display(),
                    "{} points at {}, which does not exist; treating it as no certificate",
                    link.display(),
                    path.display()
                );
                return Ok(None);
            }
            Err(source) => {
                return Err(StoreError::Read {
                    path,
                    source: Box::new(source),
                })
            }
        };
        parse_pair(path, &pem).map(Some)
    }

    /// Installs a new certificate of `kind` and makes it current; returns the
    /// node path of the new file.
    ///
    /// The certificates are re-encoded from their DER and the key as PKCS#8
    /// PEM, so only what was validated reaches the file; the key must be the
    /// first certificate's. The file is `<prefix>-<now, UTC>.pem`, written
    /// atomically with mode 0600. If that name is taken (two installs within
    /// a second, or a clock that went back), the next free second is used
    /// instead of overwriting a file `-current.pem` may point at: the name
    /// keeps kubelet's pattern and still sorts by time. Then a temp symlink
    /// with the relative target is renamed over `<prefix>-current.pem` and
    /// the directory fsynced (what kubelet does with `-updated.pem`).
    ///
    /// Finally timestamped files of the prefix older than the new one are
    /// removed, except the previous current one, so a rollback target
    /// remains. A failure there is logged, not returned: the new certificate
    /// is in place either way. The directory is created with mode 0755 (and
    /// missing parents with it) if missing.
    pub fn install(
        &self,
        kind: CertKind,
        cert_chain_pem: &[u8],
        key_pem: &[u8],
        now_unix: i64,
    ) -> Result<PathBuf, StoreError> {
        let contents = new_file_contents(kind, cert_chain_pem, key_pem)?;
        if !(0..=MAX_UNIX_TIME - MAX_NAME_ATTEMPTS).contains(&now_unix) {
            return Err(StoreError::NameNewFile { kind, now_unix });
        }

        let dir_host = self
            .host
            .resolve(&self.dir)
            .map_err(|source| StoreError::Resolve {
                path: self.dir.clone(),
                source: Box::new(source),
            })?;
        fsutil::ensure_dir(&dir_host, PKI_DIR_MODE).map_err(|source| StoreError::CreateDir {
            path: self.dir.clone(),
            source: Box::new(source),
        })?;

        let link = self.current_link(kind);
        let link_host = dir_host.join(kind.current_file_name());
        let previous = self.previous_target(&link, &link_host)?;

        let name = self.free_name(kind, &dir_host, now_unix)?;
        let file = self.dir.join(&name);
        let file_host = dir_host.join(&name);
        fsutil::write_atomic(&file_host, &contents, CERT_FILE_MODE).map_err(|source| {
            StoreError::WriteCert {
                path: file.clone(),
                source: Box::new(source),
            }
        })?;
        if let Err(source) = fsutil::replace_symlink_atomic(&link_host, Path::new(&name)) {
            // Best effort: the new file is unused; leaving it would only make
            // it a candidate for the next cleanup.
            let _ = fsutil::remove_durable(&file_host);
            return Err(StoreError::SwapLink {
                path: link,
                target: name,
                source: Box::new(source),
            });
        }
        info!(
            kind = %kind,
            path = %file.display(),
            link = %link.display(),
            "installed a new kubelet certificate"
        );

        if let Err(e) = self.remove_older(kind, &dir_host, &name, previous.as_deref()) {
            warn!(kind = %kind, error = %e, "{e}");
        }
        Ok(file)
    }

    /// Node path of the key of the CSR in flight for `kind`
    /// (`node-cert-agent-client.pending.key`, 0600): kept until its CSR is
    /// finished, so a retry, or an agent restarted meanwhile, files the same
    /// request again and finds its own pending CSR instead of a new one.
    pub fn pending_key_path(&self, kind: CertKind) -> PathBuf {
        self.dir
            .join(format!("node-cert-agent-{}.pending.key", kind.name()))
    }

    /// The pending key of `kind`, if there is one that parses; a damaged one
    /// is removed (with a warning) and `None`.
    pub fn pending_key(&self, kind: CertKind) -> Result<Option<PKey<Private>>, StoreError> {
        let path = self.pending_key_path(kind);
        let host = self.resolve_nofollow(&path)?;
        let pem = match fsutil::read_limited(&host, MAX_PEM_BYTES) {
            Ok(pem) => pem,
            Err(FsError::Open { ref source, .. }) if source.kind() == io::ErrorKind::NotFound => {
                return Ok(None)
            }
            Err(source) => {
                return Err(StoreError::Read {
                    path,
                    source: Box::new(source),
                })
            }
        };
        match PKey::private_key_from_pem(&pem) {
            Ok(key) => Ok(Some(key)),
            Err(_) => {
                warn!(path = %path.display(), "the pending key {} does not parse; a new key replaces it", path.display());
                self.remove_pending_key(kind)?;
                Ok(None)
            }
        }
    }

    /// Keeps `key` as the pending key of `kind` (atomically, 0600).
    pub fn save_pending_key(&self, kind: CertKind, key: &PKey<Private>) -> Result<(), StoreError> {
        let path = self.pending_key_path(kind);
        let pem = key
            .private_key_to_pem_pkcs8()
            .map_err(|e| StoreError::EncodePendingKey {
                path: path.clone(),
                reason: openssl_reason(&e),
            })?;
        let dir_host = self
            .host
            .resolve(&self.dir)
            .map_err(|source| StoreError::Resolve {
                path: self.dir.clone(),
                source: Box::new(source),
            })?;
        fsutil::ensure_dir(&dir_host, PKI_DIR_MODE).map_err(|source| StoreError::CreateDir {
            path: self.dir.clone(),
            source: Box::new(source),
        })?;
        let host = self.resolve_nofollow(&path)?;
        fsutil::write_atomic(&host, &pem, CERT_FILE_MODE).map_err(|source| StoreError::WriteCert {
            path,
            source: Box::new(source),
        })
    }

    /// Sweeps the pending key of `kind`: its CSR is finished.
    pub fn remove_pending_key(&self, kind: CertKind) -> Result<(), StoreError> {
        let path = self.pending_key_path(kind);
        let host = self.resolve_nofollow(&path)?;
        fsutil::remove_durable(&host)
            .map(|_| ())
            .map_err(|source| StoreError::RemoveOld {
                path,
                source: Box::new(source),
            })
    }

    /// Removes the agent's own temp files (`.nca-tmp-*`) that a process
    /// killed mid-write left in the pki directory; how many. Only under the
    /// kubelet lock, when no write of the agent's can be in flight (kubelet
    /// itself never makes such names).
    pub fn sweep_leftovers(&self) -> Result<usize, StoreError> {
        let dir_host = self.resolve_nofollow(&self.dir)?;
        crate::node::fsutil::sweep_temp_files(&dir_host).map_err(|source| StoreError::Sweep {
            path: self.dir.clone(),
            source: Box::new(source),
        })
    }

    fn resolve_nofollow(&self, node_path: &Path) -> Result<PathBuf, StoreError> {
        self.host
            .resolve_nofollow(node_path)
            .map_err(|source| StoreError::Resolve {
                path: node_path.to_path_buf(),
                source: Box::new(source),
            })
    }

    /// File name (in the pki directory) the current link points at, if it is
    /// a symlink to a file in this directory.
    fn previous_target(
        &self,
        link: &Path,
        link_host: &Path,
    ) -> Result<Option<OsString>, StoreError> {
        match fs::symlink_metadata(link_host) {
            Ok(meta) if meta.file_type().is_symlink() => {}
            Ok(_) => return Ok(None),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(StoreError::Inspect {
                    path: link.to_path_buf(),
                    source,
                })
            }
        }
        let target = fs::read_link(link_host).map_err(|source| StoreError::ReadLink {
            path: link.to_path_buf(),
            source,
        })?;
        let relative = if target.is_absolute() {
            match target.strip_prefix(&self.dir) {
                Ok(rest) => rest.to_path_buf(),
                Err(_) => return Ok(None),
            }
        } else {
            target
        };
        let mut parts = relative
            .components()
            .filter(|c| !matches!(c, Component::CurDir));
        Ok(match (parts.next(), parts.next()) {
            (Some(Component::Normal(name)), None) => Some(name.to_os_string()),
            _ => None,
        })
    }

    fn free_name(
        &self,
        kind: CertKind,
        dir_host: &Path,
        now_unix: i64,
    ) -> Result<String, StoreError> {
        for step in 0..=MAX_NAME_ATTEMPTS {
            let name = timestamped_name(kind, now_unix + step);
            match fs::symlink_metadata(dir_host.join(&name)) {
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(name),
                Ok(_) => {}
                Err(source) => {
                    return Err(StoreError::Inspect {
                        path: self.dir.join(&name),
                        source,
                    })
                }
            }
        }
        Err(StoreError::FindFreeName {
            kind,
            path: self.dir.clone(),
            first: timestamped_name(kind, now_unix),
        })
    }

    /// Removes regular files `<prefix>-<timestamp>.pem` that sort before
    /// `new_name`, except `keep`. Files with a later timestamp are left
    /// alone: they can only come from another writer (kubelet), whose
    /// choice this is not. A file that cannot be removed is logged and
    /// skipped; only failing to list the directory is returned.
    fn remove_older(
        &self,
        kind: CertKind,
        dir_host: &Path,
        new_name: &str,
        keep: Option<&std::ffi::OsStr>,
    ) -> Result<(), StoreError> {
        let list_err = |source| StoreError::ListOld {
            path: self.dir.clone(),
            source,
        };
        for entry in fs::read_dir(dir_host).map_err(list_err)? {
            let entry = entry.map_err(list_err)?;
            let file_name = entry.file_name();
            let Some(name) = file_name.to_str() else {
                continue;
            };
            if !is_timestamped_name(kind, name)
                || name >= new_name
                || keep == Some(file_name.as_os_str())
            {
                continue;
            }
            // Only what kubelet or the agent writes: plain files.
            if !entry.file_type().is_ok_and(|t| t.is_file()) {
                continue;
            }
            let node_path = self.dir.join(name);
            match fsutil::remove_durable(&entry.path()) {
                Ok(_) => info!(
                    kind = %kind,
                    path = %node_path.display(),
                    "removed an old kubelet certificate file"
                ),
                Err(source) => {
                    let e = StoreError::RemoveOld {
                        path: node_path,
                        source: Box::new(source),
                    };
                    // One stuck file must not keep the others around.
                    warn!(kind = %kind, error = %e, "{e}");
                }
            }
        }
        Ok(())
    }
}

/// Validates the new pair and builds the file: certificates in order, then
/// the key. Errors never include key material.
fn new_file_contents(
    kind: CertKind,
    cert_chain_pem: &[u8],
    key_pem: &[u8],
) -> Result<Vec<u8>, StoreError> {
    let chain_err = |reason: String| StoreError::ParseNewChain { kind, reason };
    let certs = X509::stack_from_pem(cert_chain_pem).map_err(|e| chain_err(openssl_reason(&e)))?;
    let leaf = certs
        .first()
        .ok_or_else(|| chain_err("no BEGIN CERTIFICATE block".to_string()))?;
    let key = PKey::private_key_from_pem_passphrase(key_pem, b"").map_err(|e| {
        StoreError::ParseNewKey {
            kind,
            reason: openssl_reason(&e),
        }
    })?;
    if !key_matches(leaf, &key) {
        return Err(StoreError::MatchNewKey {
            kind,
            subject: name_to_string(leaf.subject_name()),
        });
    }
    let mut contents = Vec::new();
    for cert in &certs {
        contents.extend(cert.to_pem().map_err(|e| chain_err(openssl_reason(&e)))?);
    }
    let key_pem = key
        .private_key_to_pem_pkcs8()
        .map_err(|e| StoreError::ParseNewKey {
            kind,
            reason: openssl_reason(&e),
        })?;
    contents.extend(key_pem);
    Ok(contents)
}

/// Parses a kubelet certificate file: every certificate in it, then the
/// first private key.
fn parse_pair(path: PathBuf, pem: &[u8]) -> Result<CurrentCert, StoreError> {
    let mut certs = match X509::stack_from_pem(pem) {
        Ok(certs) if !certs.is_empty() => certs,
        Ok(_) => {
            return Err(StoreError::ParseCert {
                path,
                reason: "no BEGIN CERTIFICATE block".to_string(),
            })
        }
        Err(e) => {
            return Err(StoreError::ParseCert {
                path,
                reason: openssl_reason(&e),
            })
        }
    };
    let cert = certs.remove(0);
    // An empty passphrase rather than none: with none, OpenSSL would prompt
    // on the terminal for an encrypted key.
    let key = match PKey::private_key_from_pem_passphrase(pem, b"") {
        Ok(key) => key,
        Err(e) => {
            return Err(StoreError::ParseKey {
                path,
                reason: openssl_reason(&e),
            })
        }
    };
    let key_matches = key_matches(&cert, &key);
    Ok(CurrentCert {
        path,
        cert,
        chain: certs,
        key,
        key_matches,
    })
}

fn key_matches(cert: &X509, key: &PKey<Private>) -> bool {
    cert.public_key()
        .map(|public| public.public_eq(key))
        .unwrap_or(false)
}

/// `<prefix>-YYYY-MM-DD-HH-MM-SS.pem` in UTC, kubelet's format.
fn timestamped_name(kind: CertKind, unix: i64) -> String {
    // rfc3339 gives `YYYY-MM-DDTHH:MM:SSZ`; kubelet's layout is the same
    // digits with `-` between every field.
    let stamp: String = rfc3339(unix)
        .chars()
        .take(TIMESTAMP_LEN)
        .map(|c| if c == 'T' || c == ':' { '-' } else { c })
        .collect();
    format!("{}-{stamp}.pem", kind.prefix())
}

/// Whether `name` is one of kubelet's timestamped certificate files
/// (`kubelet-client-2026-01-02-03-04-05.pem`, `kubelet-server-...`), of any
/// kind: superseded ones stay on disk, and the one in use is reached
/// through its `-current.pem` link.
pub fn is_timestamped_file(name: &str) -> bool {
    [CertKind::Client, CertKind::Serving]
        .into_iter()
        .any(|k| is_timestamped_name(k, name))
}

fn is_timestamped_name(kind: CertKind, name: &str) -> bool {
    let Some(stamp) = name
        .strip_prefix(kind.prefix())
        .and_then(|rest| rest.strip_prefix('-'))
        .and_then(|rest| rest.strip_suffix(".pem"))
    else {
        return false;
    };
    stamp.len() == TIMESTAMP_LEN
        && stamp.bytes().enumerate().all(|(i, b)| match i {
            4 | 7 | 10 | 13 | 16 => b == b'-',
            _ => b.is_ascii_digit(),
        })
}

#[cfg(test)]
mod tests;
