//! Trust for image pulls without restarting containerd: the agent's files in
//! containerd's registry host configuration (`<config_path>/_default`), and
//! the rule of when the runtime still needs a restart.
//!
//! containerd's CRI plugin reads `<root>/_default/hosts.toml` on every pull
//! for each registry without a directory of its own, and adds its `ca`
//! files to a copy of the system roots. So a CA written there works at the
//! next pull, with no restart; public registries keep the system roots.
//! The agent writes two files in the first `config_path` directory:
//! `_default/node-cert-agent-ca.crt` (every desired CA, PEM) and
//! `_default/hosts.toml` (its first line marks it as the agent's; `ca`
//! names the bundle by its node path, and an empty `[host]` table, without
//! which containerd 1.6 and 1.7 before 1.7.32 cannot parse the file and
//! read the directory's `*.crt` files instead; the bundle's `.crt` name
//! serves that fallback too).
//!
//! The rule ([`assess`], pure): `_default` reaches a registry only if no
//! directory of its own exists for it in the first root, and nothing of
//! another owner is in `_default`. The live path is used only where it
//! reaches every registry; otherwise the runtime is restarted as before,
//! and [`PullTrust`] names the file that forced it. Never:
//! - a file the agent does not own is edited or replaced;
//! - `_default` is written where it would hide another owner's entries in
//!   a later `config_path` directory;
//! - a CA is reported effective for pulls where it is not.
//!
//! A removed CA needs one restart when the running containerd may hold it
//! in its cached system roots (it was in the OS bundle at any time while
//! that process ran, [`RuntimeTrust`]); the history keeps that set.
//!
//! Boundary: uses `node` for containerd's config and the host root; never
//! touches containerd's own config or any file without the agent's marker.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::node::containerd::{self, HostDirListing, RegistryConfig, DEFAULT_HOST_DIR};
use crate::node::fsutil::{self, FsError};
use crate::node::hostroot::{HostRoot, HostRootError};
use crate::x509::cert::CertInfo;

/// The registry host directory AKS configures (and the agent's files are
/// looked for there when containerd's config cannot be read).
pub const DEFAULT_CERTS_D: &str = "/etc/containerd/certs.d";
/// The only unit whose restarts the live path can replace.
pub const RUNTIME_UNIT: &str = "containerd.service";
/// containerd's registry host file.
pub const HOSTS_FILE: &str = "hosts.toml";
/// The agent's CA bundle in `_default`: `*.crt`, so that containerd
/// versions that fall back to the directory's certificate files read it too.
pub const BUNDLE_FILE: &str = "node-cert-agent-ca.crt";
/// The first line of every `hosts.toml` the agent writes; a file without it
/// is another owner's.
pub const HOSTS_MARKER: &str = "# Written by node-cert-agent";
const FILE_MODE: u32 = 0o644;
const DIR_MODE: u32 = 0o755;
/// A `hosts.toml` larger than this is not one the agent wrote.
const MAX_HOSTS_BYTES: u64 = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum PullTrustError {
    #[error(transparent)]
    HostRoot(#[from] HostRootError),
    #[error("cannot write containerd registry host file {path}: {source}")]
    Write { path: PathBuf, source: FsError },
    #[error("cannot remove containerd registry host file {path}: {source}")]
    Remove { path: PathBuf, source: FsError },
}

/// How image pulls get the node's custom CAs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PullTrust {
    /// `live`: containerd reads them at the next pull, no restart;
    /// `restart`: only a restart of containerd makes a change effective.
    pub mode: PullMode,
    /// The `_default` directory the agent keeps (node path), if any.
    pub dir: Option<PathBuf>,
    /// Why a restart is needed (for `restart`).
    pub reason: Option<String>,
    /// The file or directory that forced the restart path, if one did.
    pub path: Option<PathBuf>,
    /// What would make the live path apply.
    pub hint: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum PullMode {
    Live,
    Restart,
}

impl PullMode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Live => "live",
            Self::Restart => "restart",
        }
    }
}

impl PullTrust {
    pub fn is_live(&self) -> bool {
        self.mode == PullMode::Live
    }

    fn restart(reason: impl Into<String>, path: Option<PathBuf>, hint: Option<String>) -> Self {
        Self {
            mode: PullMode::Restart,
            dir: None,
            reason: Some(reason.into()),
            path,
            hint,
        }
    }
}

/// What the first root's `_default` holds that is not the agent's.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DefaultDir {
    pub exists: bool,
    /// Entries of another owner (a `hosts.toml` without the marker, or any
    /// other name), node paths.
    pub foreign: Vec<PathBuf>,
}

/// Where the agent may keep its `_default`, and whether it reaches every
/// registry. Pure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assessment {
    /// The `_default` directory to write (node path); `None`: write nothing
    /// and remove the agent's own files where they are.
    pub write_to: Option<PathBuf>,
    pub trust: PullTrust,
    /// The newest modification of containerd's config files (microseconds):
    /// a containerd that started before it may run another configuration.
    pub config_modified_us: Option<u64>,
    /// The first `config_path` directory's `_default` (node path), where
    /// the agent's files are if it wrote any.
    pub default_dir: Option<PathBuf>,
}

/// Decides from containerd's config and what its host directories hold.
pub fn assess(
    config: &RegistryConfig,
    listings: &[(PathBuf, HostDirListing)],
    default_dir_facts: &DefaultDir,
) -> Assessment {
    let default_dir = config.dirs.first().map(|d| d.join(DEFAULT_HOST_DIR));
    let none = |trust| Assessment {
        write_to: None,
        trust,
        config_modified_us: config.newest_file_us,
        default_dir: default_dir.clone(),
    };
    let hint = Some(config.config_path_hint());
    let Some(first) = config.dirs.first() else {
        return none(PullTrust::restart(
            "containerd reads no registry host directory (its CRI registry config_path is not set)",
            config
                .set_in
                .as_ref()
                .map(|(p, _)| p.clone())
                .or_else(|| config.files.first().cloned()),
            hint,
        ));
    };
    if let Some(why) = &config.ambiguous {
        return none(PullTrust::restart(
            format!(
                "the agent cannot be sure which registry host directory containerd reads: {why}"
            ),
            config.set_in.as_ref().map(|(p, _)| p.clone()),
            Some(
                "use absolute import paths, and one CRI registry section of the config's version"
                    .into(),
            ),
        ));
    }
    // Writing <first>/_default would hide every entry of a later root.
    for (root, listing) in listings.iter().skip(1) {
        if let Some(name) = listing.as_ref().and_then(|l| l.keys().next()) {
            return none(PullTrust::restart(
                format!(
                    "a _default in {} would hide {} from containerd, which looks no further once a root has _default",
                    first.display(),
                    root.join(name).display()
                ),
                Some(root.join(name)),
                Some(format!(
                    "move the entries of {} into {}",
                    root.display(),
                    first.display()
                )),
            ));
        }
    }
    if config.dirs.len() > 1 {
        // Whatever the config's version: containerd 2.x migrates a version
        // 2 file, and the agent cannot tell which containerd runs.
        return none(PullTrust::restart(
            format!(
                "containerd 2.1 and later pull through the transfer service, which reads a config_path of several directories ({}) as one path and so none of them",
                config.dirs.iter().map(|d| d.display().to_string()).collect::<Vec<_>>().join(":")
            ),
            config.set_in.as_ref().map(|(p, _)| p.clone()),
            Some(format!("set config_path to the one directory {}", first.display())),
        ));
    }
    let default = first.join(DEFAULT_HOST_DIR);
    if let Some(path) = default_dir_facts.foreign.first() {
        return none(PullTrust::restart(
            format!(
                "{} is not the agent's, and the agent never edits another owner's file",
                path.display()
            ),
            Some(path.clone()),
            Some(format!(
                "remove {} or give each registry its own directory under {}",
                path.display(),
                first.display()
            )),
        ));
    }
    let own_dirs: Vec<PathBuf> = listings
        .first()
        .and_then(|(_, l)| l.as_ref())
        .map(|l| {
            l.keys()
                .filter(|n| n.as_str() != DEFAULT_HOST_DIR)
                .map(|n| first.join(n))
                .collect()
        })
        .unwrap_or_default();
    let trust = match own_dirs.first() {
        None => PullTrust {
            mode: PullMode::Live,
            dir: Some(default.clone()),
            reason: None,
            path: None,
            hint: None,
        },
        Some(path) => PullTrust {
            mode: PullMode::Restart,
            dir: Some(default.clone()),
            reason: Some(
                format!(
                    "{} registr{} {} a directory of {} own, which _default does not reach",
                    own_dirs.len(),
                    if own_dirs.len() == 1 {
                        "y has"
                    } else {
                        "ies have"
                    },
                    if own_dirs.len() == 1 { "" } else { "each" },
                    if own_dirs.len() == 1 { "its" } else { "their" }
                )
                .replace("  ", " "),
            ),
            path: Some(path.clone()),
            hint: Some(format!(
                "put the CAs that registry needs in {}'s own hosts.toml (`ca = ` a file you own, not the agent's bundle, which it removes when the set empties), or remove that directory",
                path.display()
            )),
        },
    };
    Assessment {
        write_to: Some(default),
        trust,
        config_modified_us: config.newest_file_us,
        default_dir,
    }
}

/// The `hosts.toml` the agent writes for a bundle at `bundle` (node path).
pub fn hosts_toml(bundle: &Path) -> String {
    format!(
        "{HOSTS_MARKER}. Do not edit: the agent rewrites or removes this file.\n\
         # The node's custom CAs for pulls from every registry without a directory\n\
         # of its own here. To configure one registry, give it its own directory.\n\
         ca = {}\n\
         # No mirrors. (containerd 1.6, and 1.7 before 1.7.32, cannot read a\n\
         # file without this table; they read the directory's *.crt instead.)\n\
         [host]\n",
        toml_string(&bundle.to_string_lossy())
    )
}

/// A TOML basic string.
fn toml_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The bundle's bytes: every desired CA's PEM, in the order given.
pub fn bundle_bytes<'a>(cas: impl IntoIterator<Item = &'a CertInfo>) -> Vec<u8> {
    let mut out = Vec::new();
    for ca in cas {
        out.extend_from_slice(ca.pem.trim_end().as_bytes());
        out.push(b'\n');
    }
    out
}

/// The node's containerd registry host configuration, as far as the agent
/// owns it.
pub struct RegistryHosts {
    host: HostRoot,
}

impl RegistryHosts {
    pub fn new(host: HostRoot) -> Self {
        Self { host }
    }

    /// Reads containerd's config and its host directories, and decides.
    pub fn assess(&self) -> Assessment {
        let config = match containerd::read_registry_config(&self.host) {
            Ok(c) => c,
            Err(e) => {
                return Assessment {
                    write_to: None,
                    trust: PullTrust::restart(
                        format!("containerd's config cannot be read: {e}"),
                        Some(PathBuf::from(containerd::CONFIG_FILE)),
                        None,
                    ),
                    config_modified_us: None,
                    // Where the agent's files are on the nodes it knows
                    // (AKS's config_path): withdrawn, so no CA it no longer
                    // wants stays live while it cannot tell where to look.
                    default_dir: Some(PathBuf::from(DEFAULT_CERTS_D).join(DEFAULT_HOST_DIR)),
                };
            }
        };
        self.assess_config(&config)
    }

    /// Like [`RegistryHosts::assess`], for a config already read.
    pub fn assess_config(&self, config: &RegistryConfig) -> Assessment {
        let listings = match containerd::list_host_dirs(&self.host, &config.dirs) {
            Ok(l) => l,
            Err(e) => {
                return Assessment {
                    write_to: None,
                    trust: PullTrust::restart(e.to_string(), config.dirs.first().cloned(), None),
                    config_modified_us: config.newest_file_us,
                    default_dir: config.dirs.first().map(|d| d.join(DEFAULT_HOST_DIR)),
                }
            }
        };
        let default_dir = match config.dirs.first() {
            Some(first) => self.default_dir(&first.join(DEFAULT_HOST_DIR)),
            None => DefaultDir::default(),
        };
        assess(config, &listings, &default_dir)
    }

    /// What `_default` (node path) holds that is not the agent's.
    fn default_dir(&self, default: &Path) -> DefaultDir {
        let Ok(local) = self.host.resolve(default) else {
            return DefaultDir {
                exists: true,
                foreign: vec![default.to_path_buf()],
            };
        };
        let entries = match std::fs::read_dir(&local) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return DefaultDir::default(),
            // A file named _default, or one we cannot list: not ours.
            Err(_) => {
                return DefaultDir {
                    exists: true,
                    foreign: vec![default.to_path_buf()],
                }
            }
        };
        let mut foreign = Vec::new();
        for e in entries.filter_map(Result::ok) {
            let name = e.file_name().to_string_lossy().into_owned();
            let owned = match name.as_str() {
                BUNDLE_FILE => true,
                HOSTS_FILE => is_agents_hosts_file(&e.path()),
                n => n.starts_with(fsutil::TEMP_PREFIX),
            };
            if !owned {
                foreign.push(default.join(name));
            }
        }
        foreign.sort();
        DefaultDir {
            exists: true,
            foreign,
        }
    }

    /// Makes `_default` hold exactly `cas` (none, or where `assessment`
    /// does not allow the live path: the agent's own files are removed). The bundle is written before the
    /// `hosts.toml` that names it, and removed after it, so containerd
    /// never reads a `ca` that is not there. Whether anything changed.
    pub fn sync(
        &self,
        assessment: &Assessment,
        cas: &BTreeMap<String, &CertInfo>,
    ) -> Result<bool, PullTrustError> {
        match (&assessment.write_to, &assessment.default_dir) {
            (Some(dir), _) if !cas.is_empty() => self.write(dir, cas.values().copied()),
            (Some(dir), _) | (None, Some(dir)) => self.withdraw(dir),
            (None, None) => Ok(false),
        }
    }

    fn write<'a>(
        &self,
        dir: &Path,
        cas: impl IntoIterator<Item = &'a CertInfo>,
    ) -> Result<bool, PullTrustError> {
        let local_dir = self.host.resolve(dir)?;
        let bundle_node = dir.join(BUNDLE_FILE);
        let bundle = local_dir.join(BUNDLE_FILE);
        let hosts = local_dir.join(HOSTS_FILE);
        let write_err = |path: &Path| {
            let path = path.to_path_buf();
            move |source| PullTrustError::Write { path, source }
        };
        fsutil::ensure_dir(&local_dir, DIR_MODE).map_err(write_err(dir))?;
        let mut changed = false;
        let bytes = bundle_bytes(cas);
        if std::fs::read(&bundle).ok().as_deref() != Some(bytes.as_slice()) {
            fsutil::write_atomic(&bundle, &bytes, FILE_MODE).map_err(write_err(&bundle_node))?;
            changed = true;
        }
        let text = hosts_toml(&bundle_node);
        if std::fs::read(&hosts).ok().as_deref() != Some(text.as_bytes()) {
            fsutil::write_atomic(&hosts, text.as_bytes(), FILE_MODE)
                .map_err(write_err(&dir.join(HOSTS_FILE)))?;
            changed = true;
        }
        Ok(changed)
    }

    /// Removes the agent's files from `dir` (a `_default`, node path), and
    /// the directory if that leaves it empty. Never another owner's file.
    pub fn withdraw(&self, dir: &Path) -> Result<bool, PullTrustError> {
        let local_dir = self.host.resolve(dir)?;
        let mut changed = false;
        let hosts = local_dir.join(HOSTS_FILE);
        if is_agents_hosts_file(&hosts) {
            changed |= fsutil::remove_durable(&hosts).map_err(|source| PullTrustError::Remove {
                path: dir.join(HOSTS_FILE),
                source,
            })?;
        }
        // Only what is there: on a read-only directory even removing a
        // missing file fails (EROFS), and nothing is to be done then.
        let bundle = local_dir.join(BUNDLE_FILE);
        if bundle.symlink_metadata().is_ok() {
            changed |=
                fsutil::remove_durable(&bundle).map_err(|source| PullTrustError::Remove {
                    path: dir.join(BUNDLE_FILE),
                    source,
                })?;
        }
        if changed {
            // Only if empty: an empty _default the agent left would still
            // stop containerd's search at this root.
            let _ = std::fs::remove_dir(&local_dir);
        }
        Ok(changed)
    }
}

fn is_agents_hosts_file(path: &Path) -> bool {
    fsutil::read_limited(path, MAX_HOSTS_BYTES)
        .is_ok_and(|b| b.starts_with(HOSTS_MARKER.as_bytes()))
}

/// What the running containerd may trust of the agent's CAs, for one
/// activation of its unit (kept in the restart history).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RuntimeTrust {
    /// The activation (ActiveEnterTimestamp, microseconds) this is about.
    pub activation_us: Option<u64>,
    /// The agent's CAs in the OS bundle when that activation began: in its
    /// system roots whenever Go loads them.
    pub started_with: BTreeSet<String>,
    /// The agent's CAs that were in the OS bundle at any time during that
    /// activation: Go may have loaded any of them.
    pub may_cache: BTreeSet<String>,
}

/// Why the runtime needs a restart for the desired set, if it does. Pure.
pub fn restart_needed(
    trust: &RuntimeTrust,
    desired: &BTreeSet<String>,
    live: bool,
) -> Option<String> {
    let evict: Vec<&String> = trust.may_cache.difference(desired).collect();
    if !evict.is_empty() {
        return Some(format!(
            "{} removed CA{} may be in containerd's cached system roots (in the OS bundle while it ran)",
            evict.len(),
            if evict.len() == 1 { "" } else { "s" }
        ));
    }
    let missing = desired.difference(&trust.started_with).count();
    if missing > 0 && !live {
        return Some(format!(
            "{missing} CA{} reach{} containerd only through its system roots",
            if missing == 1 { "" } else { "s" },
            if missing == 1 { "es" } else { "" }
        ));
    }
    None
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]
mod tests {
    use super::*;

    fn config(dirs: &[&str], version: i64) -> RegistryConfig {
        RegistryConfig {
            files: vec![PathBuf::from(containerd::CONFIG_FILE)],
            dirs: dirs.iter().map(PathBuf::from).collect(),
            set_in: Some((PathBuf::from(containerd::CONFIG_FILE), "x".into())),
            version,
            ambiguous: None,
            newest_file_us: None,
        }
    }

    fn listing(names: &[(&str, bool)]) -> HostDirListing {
        Some(names.iter().map(|(n, d)| (n.to_string(), *d)).collect())
    }

    const CERTS_D: &str = "/etc/containerd/certs.d";

    #[test]
    fn an_empty_certs_d_is_reached_live_through_default() {
        let a = assess(
            &config(&[CERTS_D], 2),
            &[(CERTS_D.into(), None)],
            &DefaultDir::default(),
        );
        assert!(a.trust.is_live());
        assert_eq!(
            a.write_to,
            Some(PathBuf::from("/etc/containerd/certs.d/_default"))
        );
    }

    #[test]
    fn no_config_path_means_restarts_and_names_the_line_that_avoids_them() {
        let a = assess(&config(&[], 2), &[], &DefaultDir::default());
        assert_eq!(a.write_to, None);
        assert_eq!(a.trust.mode, PullMode::Restart);
        assert_eq!(
            a.trust.hint.as_deref(),
            Some("config_path = \"/etc/containerd/certs.d\" under [plugins.\"io.containerd.grpc.v1.cri\".registry] in /etc/containerd/config.toml")
        );
    }

    #[test]
    fn another_owners_default_is_never_written() {
        let foreign = PathBuf::from("/etc/containerd/certs.d/_default/hosts.toml");
        let a = assess(
            &config(&[CERTS_D], 2),
            &[(CERTS_D.into(), listing(&[("_default", true)]))],
            &DefaultDir {
                exists: true,
                foreign: vec![foreign.clone()],
            },
        );
        assert_eq!(a.write_to, None);
        assert_eq!(a.trust.path, Some(foreign));
    }

    #[test]
    fn a_registry_with_its_own_directory_forces_restarts_but_default_is_kept() {
        let a = assess(
            &config(&[CERTS_D], 2),
            &[(
                CERTS_D.into(),
                listing(&[("_default", true), ("registry.test_5000_", true)]),
            )],
            &DefaultDir {
                exists: true,
                foreign: vec![],
            },
        );
        assert!(a.write_to.is_some());
        assert_eq!(a.trust.mode, PullMode::Restart);
        assert_eq!(
            a.trust.path,
            Some(PathBuf::from("/etc/containerd/certs.d/registry.test_5000_"))
        );
        assert_eq!(
            a.trust.reason.as_deref(),
            Some("1 registry has a directory of its own, which _default does not reach")
        );
    }

    #[test]
    fn entries_in_a_later_root_are_never_hidden() {
        let a = assess(
            &config(&[CERTS_D, "/etc/docker/certs.d"], 2),
            &[
                (CERTS_D.into(), None),
                (
                    "/etc/docker/certs.d".into(),
                    listing(&[("mirror.example", true)]),
                ),
            ],
            &DefaultDir::default(),
        );
        assert_eq!(a.write_to, None);
        assert_eq!(
            a.trust.path,
            Some(PathBuf::from("/etc/docker/certs.d/mirror.example"))
        );
        // An empty or missing later root hides nothing, but several roots
        // are not read on containerd 2.1 and later: still not live.
        let a = assess(
            &config(&[CERTS_D, "/etc/docker/certs.d"], 2),
            &[(CERTS_D.into(), None), ("/etc/docker/certs.d".into(), None)],
            &DefaultDir::default(),
        );
        assert!(!a.trust.is_live());
    }

    #[test]
    fn several_dirs_are_not_live_whatever_the_config_version() {
        for version in [2, 3] {
            let a = assess(
                &config(&[CERTS_D, "/etc/docker/certs.d"], version),
                &[(CERTS_D.into(), None), ("/etc/docker/certs.d".into(), None)],
                &DefaultDir::default(),
            );
            assert_eq!(a.write_to, None);
            assert!(a.trust.reason.unwrap().contains("transfer service"));
        }
    }

    #[test]
    fn a_config_the_agent_cannot_be_sure_of_is_not_live() {
        let mut c = config(&[CERTS_D], 2);
        c.ambiguous = Some("x imports \"conf.d/*.toml\"".into());
        let a = assess(&c, &[(CERTS_D.into(), None)], &DefaultDir::default());
        assert_eq!(a.write_to, None);
        assert!(a.trust.reason.unwrap().contains("cannot be sure"));
    }

    #[test]
    fn a_removed_ca_the_runtime_may_cache_needs_a_restart_an_added_one_does_not() {
        let set = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
        let t = RuntimeTrust {
            activation_us: Some(1),
            started_with: set(&["a"]),
            may_cache: set(&["a", "b"]),
        };
        assert_eq!(restart_needed(&t, &set(&["a", "b", "c"]), true), None);
        assert!(restart_needed(&t, &set(&["a", "b", "c"]), false).is_some());
        assert!(restart_needed(&t, &set(&["a"]), true)
            .unwrap()
            .starts_with("1 removed CA may be"));
        assert_eq!(
            restart_needed(&t, &set(&["a"]), false),
            restart_needed(&t, &set(&["a"]), true)
        );
    }

    #[test]
    fn the_hosts_file_names_the_bundle_and_carries_the_marker() {
        let text = hosts_toml(Path::new(
            "/etc/containerd/certs.d/_default/node-cert-agent-ca.crt",
        ));
        assert!(text.starts_with(HOSTS_MARKER));
        let parsed: toml::Table = toml::from_str(&text).unwrap();
        assert_eq!(
            parsed["ca"].as_str(),
            Some("/etc/containerd/certs.d/_default/node-cert-agent-ca.crt")
        );
        assert_eq!(toml_string("a\"b\\c"), "\"a\\\"b\\\\c\"");
    }

    #[test]
    fn sync_writes_the_bundle_then_the_hosts_file_and_withdraws_only_its_own() {
        let root = tempfile::tempdir().unwrap();
        let host = HostRoot::new(root.path()).unwrap();
        let hosts = RegistryHosts::new(host);
        let a = hosts.assess();
        assert_eq!(a.trust.mode, PullMode::Restart, "no config at all");
        let etc = root.path().join("etc/containerd");
        std::fs::create_dir_all(&etc).unwrap();
        std::fs::write(
            etc.join("config.toml"),
            "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".registry]\nconfig_path = \"/etc/containerd/certs.d\"\n",
        )
        .unwrap();
        let a = hosts.assess();
        assert!(a.trust.is_live(), "{a:?}");
        let ca = crate::x509::testpki::pem(&crate::x509::testpki::good_ca("Live CA").cert);
        let info = CertInfo::from_pem(ca.as_bytes()).unwrap();
        let cas: BTreeMap<String, &CertInfo> = [(info.fingerprint.hex(), &info)].into();
        assert!(hosts.sync(&a, &cas).unwrap());
        assert!(!hosts.sync(&a, &cas).unwrap(), "a no-op writes nothing");
        let default = etc.join("certs.d/_default");
        assert_eq!(
            std::fs::read_to_string(default.join(BUNDLE_FILE))
                .unwrap()
                .trim_end(),
            info.pem.trim_end()
        );
        // The agent's own _default is still reachable on the next look.
        assert!(hosts.assess().trust.is_live());
        assert!(hosts.sync(&hosts.assess(), &BTreeMap::new()).unwrap());
        assert!(!default.exists(), "an empty _default is removed");
        // Another owner's hosts.toml: left byte for byte.
        std::fs::create_dir_all(&default).unwrap();
        std::fs::write(default.join("hosts.toml"), "ca = \"/x.pem\"\n").unwrap();
        let a = hosts.assess();
        assert_eq!(a.write_to, None);
        assert!(!hosts.sync(&a, &cas).unwrap());
        assert_eq!(
            std::fs::read(default.join("hosts.toml")).unwrap(),
            b"ca = \"/x.pem\"\n"
        );
        assert!(!hosts
            .withdraw(Path::new("/etc/containerd/certs.d/_default"))
            .unwrap());
        assert!(default.join("hosts.toml").exists());
    }
}
