//! The node's OS trust store, as far as the agent owns it.
//!
//! The agent writes one anchor file per CA, named after its fingerprint, in
//! the distro's anchors directory, and only ever lists, rewrites or removes
//! files with its own prefix there. The distro's CAs are never touched. All
//! node paths go through [`HostRoot`]; the refresh tool runs via `Systemd`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::{fs, io};

use crate::config::TrustStoreOverride;
use crate::node::distro::{self, TrustStoreLayout, ANCHOR_FILE_PREFIX};
use crate::node::fsutil::{self, FsError};
use crate::node::hostroot::{HostRoot, HostRootError};
use crate::x509::cert::{CertInfo, Fingerprint};

/// Anchors are public certificates: world-readable, as the distro's are.
pub const ANCHOR_MODE: u32 = 0o644;
const ANCHORS_DIR_MODE: u32 = 0o755;
/// An owned anchor larger than this is not one the agent wrote.
const MAX_ANCHOR_BYTES: u64 = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    #[error(transparent)]
    HostRoot(#[from] HostRootError),
    #[error("cannot read {path}: {source}")]
    ReadOsRelease { path: PathBuf, source: io::Error },
    #[error("unknown distribution (ID={id:?}, ID_LIKE={id_like:?} in {path}); set trust-store anchors-dir, refresh-command and bundle in the agent's config")]
    UnknownDistro {
        path: PathBuf,
        id: String,
        id_like: Vec<String>,
    },
    #[error("this node runs {platform} (ID in {path}), whose trust store is not a set of files the agent can manage, so no trust-store override can work here; give the node its CAs through {mechanism}, and do not run node-cert-agent's CA job on it")]
    ManagedPlatform {
        path: PathBuf,
        platform: &'static str,
        mechanism: &'static str,
    },
    #[error("cannot list the anchors directory {path}: {source}")]
    ListAnchors { path: PathBuf, source: io::Error },
    #[error("cannot write anchor {path}: {source}")]
    WriteAnchor { path: PathBuf, source: FsError },
    #[error("cannot remove anchor {path}: {source}")]
    RemoveAnchor { path: PathBuf, source: FsError },
    #[error("cannot read the trust bundle {path}: {source}")]
    ReadBundle { path: PathBuf, source: io::Error },
    #[error("this node is {family}, and its anchors directory {dir} cannot be written here ({at}: {errno}). In a pod: apply manifests/overlays/{overlay}, which mounts this family's anchors directory writable. On the host: the filesystem of {dir} is read-only; set trust-store.anchors-dir to a writable directory that {refresh} reads")]
    AnchorsNotWritable {
        family: &'static str,
        overlay: &'static str,
        dir: PathBuf,
        /// The directory probed (the anchors directory, or its nearest
        /// existing parent).
        at: PathBuf,
        errno: nix::errno::Errno,
        refresh: String,
    },
}

/// Picks the trust-store layout from `<host-root>/etc/os-release`.
pub fn detect_layout(host: &HostRoot) -> Result<TrustStoreLayout, TrustError> {
    let mut last_err = None;
    for candidate in ["/etc/os-release", "/usr/lib/os-release"] {
        let path = host.resolve(Path::new(candidate))?;
        match fs::read_to_string(&path) {
            Ok(text) => {
                let os = distro::parse_os_release(&text);
                if let Some((platform, mechanism)) = distro::managed_platform(&os) {
                    return Err(TrustError::ManagedPlatform {
                        path,
                        platform,
                        mechanism,
                    });
                }
                return distro::detect_family(&os).map(|f| f.layout()).ok_or(
                    TrustError::UnknownDistro {
                        path,
                        id: os.id,
                        id_like: os.id_like,
                    },
                );
            }
            Err(source) => last_err = Some(TrustError::ReadOsRelease { path, source }),
        }
    }
    Err(last_err.unwrap_or(TrustError::ReadOsRelease {
        path: PathBuf::from("/etc/os-release"),
        source: io::Error::from(io::ErrorKind::NotFound),
    }))
}

/// The detected layout with the config's overrides applied. An unknown
/// distro works when the overrides say everything.
pub fn layout_for(
    host: &HostRoot,
    overrides: &TrustStoreOverride,
) -> Result<TrustStoreLayout, TrustError> {
    let o = overrides;
    let mut layout = match (
        detect_layout(host),
        &o.anchors_dir,
        &o.refresh_command,
        &o.bundle,
    ) {
        (Ok(l), ..) => l,
        (Err(e @ TrustError::ManagedPlatform { .. }), ..) => return Err(e),
        (Err(_), Some(_), Some(_), Some(_)) => distro::Family::Debian.layout(),
        (Err(e), ..) => return Err(e),
    };
    if let Some(d) = &o.anchors_dir {
        layout.anchors_dir = d.clone();
    }
    if let Some(c) = &o.refresh_command {
        layout.refresh_command = c.clone();
    }
    if let Some(b) = &o.bundle {
        layout.bundle_path = b.clone();
    }
    if let Some(e) = &o.anchor_extension {
        layout.anchor_extension = e.clone();
    }
    Ok(layout)
}

/// What the agent finds of its own in the anchors directory.
#[derive(Debug, Default)]
pub struct Installed {
    pub certs: BTreeMap<Fingerprint, CertInfo>,
    /// Owned files that do not hold the certificate their name promises
    /// (damaged, or left by another version): removed on the next change.
    pub stray: Vec<PathBuf>,
}

pub struct TrustStore {
    host: HostRoot,
    layout: TrustStoreLayout,
}

impl TrustStore {
    pub fn new(host: HostRoot, layout: TrustStoreLayout) -> Self {
        Self { host, layout }
    }

    pub fn layout(&self) -> &TrustStoreLayout {
        &self.layout
    }

    pub fn host(&self) -> &HostRoot {
        &self.host
    }

    /// The anchors directory as this process sees it.
    pub fn anchors_dir(&self) -> Result<PathBuf, TrustError> {
        Ok(self.host.resolve(&self.layout.anchors_dir)?)
    }

    fn anchor_name(&self, fp: &Fingerprint) -> String {
        format!(
            "{ANCHOR_FILE_PREFIX}{}.{}",
            fp.hex(),
            self.layout.anchor_extension
        )
    }

    /// Node path of the anchor for `fp` (for logs and status).
    pub fn anchor_node_path(&self, fp: &Fingerprint) -> PathBuf {
        self.layout.anchors_dir.join(self.anchor_name(fp))
    }

    pub fn installed(&self) -> Result<Installed, TrustError> {
        let dir = self.anchors_dir()?;
        let mut out = Installed::default();
        let entries = match fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
            Err(source) => return Err(TrustError::ListAnchors { path: dir, source }),
        };
        for entry in entries {
            let entry = entry.map_err(|source| TrustError::ListAnchors {
                path: dir.clone(),
                source,
            })?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if !self.layout.is_owned_anchor(&name) {
                continue;
            }
            let path = entry.path();
            let parsed = entry
                .file_type()
                .ok()
                .filter(|t| t.is_file())
                .and_then(|_| fsutil::read_limited(&path, MAX_ANCHOR_BYTES).ok())
                .and_then(|bytes| CertInfo::from_pem(&bytes).ok())
                .filter(|cert| self.anchor_name(&cert.fingerprint) == name);
            match parsed {
                Some(cert) => {
                    out.certs.insert(cert.fingerprint, cert);
                }
                None => out.stray.push(path),
            }
        }
        out.stray.sort();
        Ok(out)
    }

    /// Whether the anchors directory (or, before it exists, its nearest
    /// existing parent, where it would be created) can be written by this
    /// process: a read-only mount (the wrong overlay in a pod, a read-only
    /// `/usr` on the host) fails with what to do.
    pub fn probe_writable(&self) -> Result<(), TrustError> {
        let dir = self.anchors_dir()?;
        let mut at = dir.as_path();
        while !at.exists() {
            match at.parent() {
                Some(p) => at = p,
                None => return Ok(()),
            }
        }
        match nix::unistd::access(at, nix::unistd::AccessFlags::W_OK) {
            Ok(()) => Ok(()),
            Err(errno) => Err(TrustError::AnchorsNotWritable {
                family: self.layout.family.name(),
                overlay: self.layout.family.overlay(),
                dir: self.layout.anchors_dir.clone(),
                at: at.to_path_buf(),
                errno,
                refresh: self
                    .layout
                    .refresh_command
                    .first()
                    .cloned()
                    .unwrap_or_default(),
            }),
        }
    }

    /// The agent's own anchor files (any extension) in `node_dir`, another
    /// anchors directory the agent wrote in the past, with the CA each
    /// holds if it parses. A missing directory has none.
    pub fn owned_in(
        &self,
        node_dir: &Path,
    ) -> Result<Vec<(PathBuf, Option<CertInfo>)>, TrustError> {
        let dir = self.host.resolve(node_dir)?;
        let entries = match fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => return Err(TrustError::ListAnchors { path: dir, source }),
        };
        let mut out = Vec::new();
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if !distro::is_owned_anchor_name(&name) {
                continue;
            }
            let path = entry.path();
            let cert = entry
                .file_type()
                .ok()
                .filter(|t| t.is_file())
                .and_then(|_| fsutil::read_limited(&path, MAX_ANCHOR_BYTES).ok())
                .and_then(|bytes| CertInfo::from_pem(&bytes).ok());
            out.push((path, cert));
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }

    pub fn install(&self, cert: &CertInfo) -> Result<PathBuf, TrustError> {
        let dir = self.anchors_dir()?;
        fsutil::ensure_dir(&dir, ANCHORS_DIR_MODE).map_err(|source| TrustError::WriteAnchor {
            path: dir.clone(),
            source,
        })?;
        let path = dir.join(self.anchor_name(&cert.fingerprint));
        fsutil::write_atomic(&path, cert.pem.as_bytes(), ANCHOR_MODE).map_err(|source| {
            TrustError::WriteAnchor {
                path: path.clone(),
                source,
            }
        })?;
        Ok(path)
    }

    pub fn remove(&self, fp: &Fingerprint) -> Result<(), TrustError> {
        let path = self.anchors_dir()?.join(self.anchor_name(fp));
        self.remove_path(&path)
    }

    pub fn remove_path(&self, path: &Path) -> Result<(), TrustError> {
        fsutil::remove_durable(path)
            .map(|_| ())
            .map_err(|source| TrustError::RemoveAnchor {
                path: path.to_path_buf(),
                source,
            })
    }

    /// Removes temp files a crash may have left in the anchors directory.
    pub fn sweep(&self) -> Result<usize, TrustError> {
        let dir = self.anchors_dir()?;
        fsutil::sweep_temp_files(&dir)
            .map_err(|source| TrustError::WriteAnchor { path: dir, source })
    }

    /// The bundle Go and OpenSSL read, as this process sees it.
    pub fn bundle_path(&self) -> Result<PathBuf, TrustError> {
        Ok(self.host.resolve(&self.layout.bundle_path)?)
    }

    /// SHA-256 of the node's bundle; `None` when there is none yet.
    pub fn bundle_digest(&self) -> Result<Option<String>, TrustError> {
        let path = self.bundle_path()?;
        match fs::read(&path) {
            Ok(bytes) => Ok(Some(hex::encode(openssl::sha::sha256(&bytes)))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(TrustError::ReadBundle { path, source }),
        }
    }

    /// When the bundle was last written (its mtime, microseconds since the
    /// epoch): when the refresh tool last changed it. `None` when there is
    /// no bundle, or its time is before the epoch.
    pub fn bundle_modified_us(&self) -> Result<Option<u64>, TrustError> {
        let path = self.bundle_path()?;
        let modified = match fs::metadata(&path).and_then(|m| m.modified()) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(TrustError::ReadBundle { path, source }),
        };
        Ok(modified
            .duration_since(std::time::UNIX_EPOCH)
            .ok()
            .and_then(|d| u64::try_from(d.as_micros()).ok()))
    }

    /// Which of `certs` the bundle holds (compared by DER, so formatting does not matter).
    pub fn bundle_fingerprints(
        &self,
    ) -> Result<std::collections::BTreeSet<Fingerprint>, TrustError> {
        let path = self.bundle_path()?;
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Default::default()),
            Err(source) => return Err(TrustError::ReadBundle { path, source }),
        };
        let stack = openssl::x509::X509::stack_from_pem(&bytes).unwrap_or_default();
        Ok(stack
            .iter()
            .filter_map(|c| c.to_der().ok())
            .map(|der| Fingerprint::of_der(&der))
            .collect())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;
    use crate::node::distro::Family;
    use crate::x509::testpki;

    fn store(root: &Path) -> TrustStore {
        TrustStore::new(HostRoot::new(root).unwrap(), Family::Debian.layout())
    }

    fn cert(cn: &str) -> CertInfo {
        CertInfo::from_der(&testpki::good_ca(cn).cert.to_der().unwrap()).unwrap()
    }

    #[test]
    fn bottlerocket_and_talos_are_refused_with_their_own_mechanism_even_with_overrides() {
        for (fixture, platform, mechanism) in [
            ("bottlerocket", "Bottlerocket", "settings.pki"),
            ("talos", "Talos Linux", "TrustedRootsConfig"),
        ] {
            let root = tempfile::tempdir().unwrap();
            fs::create_dir_all(root.path().join("etc")).unwrap();
            fs::copy(
                Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join("tests/data/os-release-managed")
                    .join(fixture),
                root.path().join("etc/os-release"),
            )
            .unwrap();
            let host = HostRoot::new(root.path()).unwrap();
            let overrides = TrustStoreOverride {
                anchors_dir: Some("/etc/custom".into()),
                refresh_command: Some(vec!["/bin/true".into()]),
                bundle: Some("/etc/custom/bundle.pem".into()),
                anchor_extension: None,
            };
            let err = layout_for(&host, &overrides).unwrap_err().to_string();
            assert!(err.contains(platform) && err.contains(mechanism), "{err}");
            assert!(err.contains("no trust-store override can work"), "{err}");
        }
    }

    #[test]
    fn bundle_time_is_its_mtime_and_absent_without_a_bundle() {
        let root = tempfile::tempdir().unwrap();
        let s = store(root.path());
        assert_eq!(s.bundle_modified_us().unwrap(), None);
        let dir = root.path().join("etc/ssl/certs");
        fs::create_dir_all(&dir).unwrap();
        let before = std::time::SystemTime::now();
        fs::write(dir.join("ca-certificates.crt"), "distro\n").unwrap();
        let us = s.bundle_modified_us().unwrap().unwrap();
        let before_us = before
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_micros() as u64;
        // Filesystem timestamps may be coarser than the clock.
        assert!(us + 20_000 >= before_us, "{us} < {before_us}");
    }

    #[test]
    fn install_writes_an_owned_0644_anchor_and_lists_it() {
        let root = tempfile::tempdir().unwrap();
        let s = store(root.path());
        let c = cert("A");
        let path = s.install(&c).unwrap();
        assert!(path.starts_with(root.path()));
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o644
        );
        let installed = s.installed().unwrap();
        assert_eq!(
            installed.certs.keys().collect::<Vec<_>>(),
            vec![&c.fingerprint]
        );
        assert!(installed.stray.is_empty());
    }

    #[test]
    fn distro_and_foreign_files_are_never_listed_or_touched() {
        let root = tempfile::tempdir().unwrap();
        let s = store(root.path());
        let dir = s.anchors_dir().unwrap();
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("corp-root.crt"), "foreign").unwrap();
        let c = cert("A");
        s.install(&c).unwrap();
        s.remove(&c.fingerprint).unwrap();
        assert_eq!(
            fs::read_to_string(dir.join("corp-root.crt")).unwrap(),
            "foreign"
        );
        assert!(s.installed().unwrap().certs.is_empty());
    }

    #[test]
    fn damaged_owned_anchor_is_reported_as_stray() {
        let root = tempfile::tempdir().unwrap();
        let s = store(root.path());
        let c = cert("A");
        let path = s.install(&c).unwrap();
        fs::write(&path, "-----BEGIN CERTIFICATE-----\ncut").unwrap();
        let installed = s.installed().unwrap();
        assert!(installed.certs.is_empty());
        assert_eq!(installed.stray, vec![path]);
    }

    #[test]
    fn detects_the_layout_from_os_release_under_the_host_root() {
        let root = tempfile::tempdir().unwrap();
        fs::create_dir_all(root.path().join("etc")).unwrap();
        fs::write(
            root.path().join("etc/os-release"),
            "ID=azurelinux\nVERSION_ID=3.0\n",
        )
        .unwrap();
        let layout = detect_layout(&HostRoot::new(root.path()).unwrap()).unwrap();
        assert_eq!(layout.family, Family::RedHat);
        fs::write(root.path().join("etc/os-release"), "ID=plan9\n").unwrap();
        let err = detect_layout(&HostRoot::new(root.path()).unwrap())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("plan9") && err.contains("anchors-dir"),
            "{err}"
        );
    }

    #[test]
    fn bundle_digest_follows_node_symlinks_inside_the_root() {
        let root = tempfile::tempdir().unwrap();
        let s = store(root.path());
        assert_eq!(s.bundle_digest().unwrap(), None);
        fs::create_dir_all(root.path().join("etc/ssl/certs")).unwrap();
        fs::create_dir_all(root.path().join("usr/share")).unwrap();
        fs::write(
            root.path().join("usr/share/bundle.pem"),
            testpki::pem(&testpki::good_ca("B").cert),
        )
        .unwrap();
        std::os::unix::fs::symlink(
            "/usr/share/bundle.pem",
            root.path().join("etc/ssl/certs/ca-certificates.crt"),
        )
        .unwrap();
        assert!(s.bundle_digest().unwrap().is_some());
        assert_eq!(s.bundle_fingerprints().unwrap().len(), 1);
    }
}
