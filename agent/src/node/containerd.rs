//! containerd's own configuration, read and never written: where its CRI
//! plugin looks for registry host configuration (`config_path`, the
//! `certs.d` directories), and what those directories hold.
//!
//! containerd reads `/etc/containerd/config.toml`, then every file its
//! `imports` name, breadth first; a file's `[plugins."<id>"]` section
//! replaces the whole section of an earlier file. The registry settings live
//! in the CRI plugin's section, whose id depends on the file's `version`:
//! `cri` (version 1), `io.containerd.grpc.v1.cri` (version 2, containerd
//! 1.x; containerd 2.x migrates it) and `io.containerd.cri.v1.images`
//! (version 3, containerd 2.x, which merges sections key by key instead). `config_path` is a list of directories
//! separated by `:`; for each host containerd takes, root by root, the first
//! of `<root>/<host>_<port>_`, `<root>/<host:port>` and `<root>/_default`
//! that exists. [`parse_registry_config`] is pure; [`read_registry_config`]
//! and [`list_host_dirs`] are the I/O edges, through [`HostRoot`].
//!
//! Boundary: a leaf of the host boundary. It says what containerd will
//! read; what the agent writes there is `trust::pull_trust`'s.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::{Path, PathBuf};

use crate::node::fsutil::{self, FsError};
use crate::node::hostroot::{HostRoot, HostRootError};

/// containerd's main configuration file, as the node sees it.
pub const CONFIG_FILE: &str = "/etc/containerd/config.toml";
/// The name of the host directory every host without one of its own uses.
pub const DEFAULT_HOST_DIR: &str = "_default";
/// A configuration file larger than this is not read (containerd's own are
/// a few KiB).
const MAX_CONFIG_BYTES: u64 = 1024 * 1024;
/// At most this many files are read through `imports` (containerd has no
/// limit; a node with more is not one the agent understands).
const MAX_CONFIG_FILES: usize = 64;

/// The CRI plugin's section id for each config `version`.
const CRI_PLUGIN_V1: &str = "cri";
const CRI_PLUGIN_V2: &str = "io.containerd.grpc.v1.cri";
const CRI_PLUGIN_V3: &str = "io.containerd.cri.v1.images";

#[derive(Debug, thiserror::Error)]
pub enum ContainerdConfigError {
    #[error(transparent)]
    HostRoot(#[from] HostRootError),
    #[error("cannot read containerd's config {path}: {source}")]
    Read { path: PathBuf, source: FsError },
    #[error("containerd's config {path} is not valid TOML: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("containerd's config {path}: {field} must be {expected}")]
    Field {
        path: PathBuf,
        field: String,
        expected: &'static str,
    },
    #[error("containerd's config {path} imports more than {MAX_CONFIG_FILES} files; the agent does not follow them")]
    TooManyImports { path: PathBuf },
    #[error("cannot list containerd's registry host directory {path}: {source}")]
    ListHostDir {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Where containerd's CRI plugin reads registry host configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RegistryConfig {
    /// The files read, in containerd's order (node paths).
    pub files: Vec<PathBuf>,
    /// The `config_path` directories, in order; empty when it is not set
    /// (then containerd reads no `certs.d` at all).
    pub dirs: Vec<PathBuf>,
    /// The file and section that set `config_path` (the last one that
    /// defines the CRI plugin's section).
    pub set_in: Option<(PathBuf, String)>,
    /// The config `version` in effect (the last one a file sets).
    pub version: i64,
    /// Why the agent cannot be sure what containerd reads (an import form
    /// whose meaning depends on containerd's version, a mix of sections
    /// containerd 2.x migrates); the live path is then not used.
    pub ambiguous: Option<String>,
    /// The newest modification time of the files read, microseconds since
    /// the epoch: a running containerd started before it may run another
    /// configuration.
    pub newest_file_us: Option<u64>,
}

impl RegistryConfig {
    /// The one line of containerd configuration that would make it read
    /// `/etc/containerd/certs.d`, for the config version in use.
    pub fn config_path_hint(&self) -> String {
        let section = match self.version {
            3.. => format!("[plugins.'{CRI_PLUGIN_V3}'.registry]"),
            2 => format!("[plugins.\"{CRI_PLUGIN_V2}\".registry]"),
            _ => format!("[plugins.{CRI_PLUGIN_V1}.registry]"),
        };
        format!("config_path = \"/etc/containerd/certs.d\" under {section} in {CONFIG_FILE}")
    }
}

/// One parsed configuration file: what it imports and what it says of the
/// CRI registry, under each section id it has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigFile {
    /// `version`, if the file sets it (containerd takes the last one set).
    pub version: Option<i64>,
    pub imports: Vec<String>,
    /// By CRI section id present in the file: `None` when the section has
    /// no `registry.config_path`, else its value.
    pub sections: BTreeMap<&'static str, Option<String>>,
    /// The section ids of the file that have a `registry` table.
    pub registry_tables: BTreeSet<&'static str>,
}

/// Parses one containerd configuration file. Pure.
pub fn parse_config_file(path: &Path, text: &str) -> Result<ConfigFile, ContainerdConfigError> {
    let table: toml::Table = toml::from_str(text).map_err(|e| ContainerdConfigError::Parse {
        path: path.to_path_buf(),
        message: e.message().to_string(),
    })?;
    let field = |field: &str, expected| ContainerdConfigError::Field {
        path: path.to_path_buf(),
        field: field.to_string(),
        expected,
    };
    let version = match table.get("version") {
        None => None,
        Some(toml::Value::Integer(v)) => Some(*v),
        Some(_) => return Err(field("version", "an integer")),
    };
    let imports = match table.get("imports") {
        None => Vec::new(),
        Some(toml::Value::Array(items)) => items
            .iter()
            .map(|v| v.as_str().map(str::to_string))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| field("imports", "a list of strings"))?,
        Some(_) => return Err(field("imports", "a list of strings")),
    };
    let plugins = table.get("plugins").and_then(toml::Value::as_table);
    let mut sections = BTreeMap::new();
    let mut registry_tables = BTreeSet::new();
    for section in [CRI_PLUGIN_V1, CRI_PLUGIN_V2, CRI_PLUGIN_V3] {
        let value = match plugins.and_then(|p| p.get(section)) {
            None => continue,
            Some(toml::Value::Table(plugin)) => {
                let registry = plugin.get("registry").and_then(toml::Value::as_table);
                if registry.is_some() {
                    registry_tables.insert(section);
                }
                registry.and_then(|r| r.get("config_path"))
            }
            Some(_) => return Err(field(&format!("plugins.{section:?}"), "a table")),
        };
        let value = match value {
            None => None,
            Some(toml::Value::String(s)) => Some(s.clone()),
            Some(_) => {
                return Err(field(
                    &format!("plugins.{section:?}.registry.config_path"),
                    "a string",
                ))
            }
        };
        sections.insert(section, value);
    }
    Ok(ConfigFile {
        version,
        imports,
        sections,
        registry_tables,
    })
}

/// The registry configuration of a set of parsed files, in the order
/// containerd merged them. Pure.
///
/// As containerd: the version is the last one a file sets (1 if none),
/// and it decides the CRI section's id for every file, a drop-in without
/// a `version` line included. containerd 1.x (versions 1 and 2) replaces
/// an earlier file's whole section, so a later section without the key
/// resets it; containerd 2.x (version 3) merges key by key. A version 3
/// config whose files also hold the version 2 section (migrated by
/// containerd 2.x, overwriting) is not one the agent can read for sure:
/// it is reported [`RegistryConfig::ambiguous`].
pub fn parse_registry_config(files: &[(PathBuf, ConfigFile)]) -> RegistryConfig {
    let version = files
        .iter()
        .filter_map(|(_, f)| f.version.filter(|v| *v != 0))
        .next_back()
        .unwrap_or(1);
    let section = match version {
        3.. => CRI_PLUGIN_V3,
        2 => CRI_PLUGIN_V2,
        _ => CRI_PLUGIN_V1,
    };
    let mut out = RegistryConfig {
        files: files.iter().map(|(p, _)| p.clone()).collect(),
        version,
        ..RegistryConfig::default()
    };
    for (path, file) in files {
        // containerd 2.x still has the version 2 CRI section (its CRI
        // service), but migrates a `registry` table in it over the images
        // plugin's.
        if version >= 3 && file.registry_tables.contains(CRI_PLUGIN_V2) {
            out.ambiguous = Some(format!(
                "{} has a [plugins.\"{CRI_PLUGIN_V2}\".registry] table, which containerd 2.x migrates over the version 3 one",
                path.display()
            ));
        }
        match file.sections.get(section) {
            None => {}
            // containerd 2.x merges plugin sections key by key.
            Some(None) if version >= 3 => {}
            // containerd 1.x replaces an earlier file's whole section, so a
            // section without the key resets it to the default (empty).
            Some(value) => {
                out.dirs = value.as_deref().map(split_config_path).unwrap_or_default();
                out.set_in = Some((path.clone(), section.to_string()));
            }
        }
    }
    out
}

/// `config_path` as containerd splits it (Go's `filepath.SplitList`).
pub fn split_config_path(value: &str) -> Vec<PathBuf> {
    value
        .split(':')
        .filter(|s| !s.is_empty())
        .map(PathBuf::from)
        .collect()
}

/// Reads containerd's configuration on the node: [`CONFIG_FILE`] and its
/// imports. A node without the file runs containerd's defaults, where
/// `config_path` is empty.
pub fn read_registry_config(host: &HostRoot) -> Result<RegistryConfig, ContainerdConfigError> {
    let mut files = Vec::new();
    let mut seen = BTreeSet::new();
    let mut pending = VecDeque::from([PathBuf::from(CONFIG_FILE)]);
    let mut newest = None;
    let mut ambiguous = None;
    while let Some(path) = pending.pop_front() {
        if !seen.insert(path.clone()) {
            continue;
        }
        if files.len() >= MAX_CONFIG_FILES {
            return Err(ContainerdConfigError::TooManyImports {
                path: PathBuf::from(CONFIG_FILE),
            });
        }
        let local = host.resolve(&path)?;
        let bytes = match fsutil::read_limited(&local, MAX_CONFIG_BYTES) {
            Ok(b) => b,
            Err(FsError::Open { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound && files.is_empty() =>
            {
                // containerd's defaults: no certs.d.
                return Ok(RegistryConfig {
                    version: 2,
                    ..RegistryConfig::default()
                });
            }
            Err(source) => return Err(ContainerdConfigError::Read { path, source }),
        };
        // The change time, not the modification time: a file copied with
        // its old mtime (cp -p, rsync -a, an image build) still changed.
        let modified = std::fs::metadata(&local).ok().and_then(|m| {
            use std::os::unix::fs::MetadataExt;
            u64::try_from(m.ctime())
                .ok()
                .map(|s| s * 1_000_000 + u64::try_from(m.ctime_nsec()).unwrap_or(0) / 1000)
        });
        newest = newest.max(modified);
        let text = String::from_utf8_lossy(&bytes);
        let file = parse_config_file(&path, &text)?;
        for import in resolve_imports(host, &path, &file.imports, &mut ambiguous)? {
            pending.push_back(import);
        }
        files.push((path, file));
    }
    let mut config = parse_registry_config(&files);
    config.newest_file_us = newest;
    if config.ambiguous.is_none() {
        config.ambiguous = ambiguous;
    }
    Ok(config)
}

/// containerd's import rules: a path with `*` is a glob (matched here in
/// its last component, the form containerd's own docs use), a relative one
/// is relative to the importing file's directory.
fn resolve_imports(
    host: &HostRoot,
    parent: &Path,
    imports: &[String],
    ambiguous: &mut Option<String>,
) -> Result<Vec<PathBuf>, ContainerdConfigError> {
    let base = parent.parent().unwrap_or(Path::new("/"));
    let mut out = Vec::new();
    for import in imports {
        let path = Path::new(import);
        let relative = !path.is_absolute();
        let path = if relative {
            base.join(path)
        } else {
            path.to_path_buf()
        };
        if !import.contains('*') {
            out.push(path);
            continue;
        }
        let (Some(dir), Some(pattern)) = (path.parent(), path.file_name()) else {
            continue;
        };
        // containerd before 1.6.29 and 1.7.16 matched a relative glob
        // against its working directory, later ones against the importing
        // file's; a pattern outside the last component, or a class, is Go
        // glob syntax the agent does not follow. Either way: not sure.
        let odd = dir.to_string_lossy().contains(['*', '?', '['])
            || pattern.to_string_lossy().contains('[');
        if relative || odd {
            ambiguous.get_or_insert_with(|| {
                format!(
                    "{} imports {import:?}, which containerd versions resolve differently",
                    parent.display()
                )
            });
        }
        let local = host.resolve(dir)?;
        let mut matches: Vec<PathBuf> = match std::fs::read_dir(&local) {
            Ok(entries) => entries
                .filter_map(Result::ok)
                .map(|e| e.file_name())
                .filter(|n| glob_match(&pattern.to_string_lossy(), &n.to_string_lossy()))
                .map(|n| dir.join(n))
                .collect(),
            Err(_) => Vec::new(),
        };
        // Go's filepath.Glob returns matches in lexical order.
        matches.sort();
        out.extend(matches);
    }
    Ok(out)
}

/// `*` and `?` over one path component.
fn glob_match(pattern: &str, name: &str) -> bool {
    fn go(p: &[char], n: &[char]) -> bool {
        match p.split_first() {
            None => n.is_empty(),
            Some(('*', rest)) => (0..=n.len()).any(|i| go(rest, &n[i..])),
            Some(('?', rest)) => !n.is_empty() && go(rest, &n[1..]),
            Some((c, rest)) => n.first() == Some(c) && go(rest, &n[1..]),
        }
    }
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    // Go's filepath.Glob, unlike a shell, matches hidden files too.
    go(&p, &n)
}

/// What one `config_path` directory holds: entry name → whether it is a
/// directory. `None`: the directory does not exist.
pub type HostDirListing = Option<BTreeMap<String, bool>>;

/// Lists each `config_path` directory on the node, in order.
pub fn list_host_dirs(
    host: &HostRoot,
    dirs: &[PathBuf],
) -> Result<Vec<(PathBuf, HostDirListing)>, ContainerdConfigError> {
    let mut out = Vec::new();
    for dir in dirs {
        let local = host.resolve(dir)?;
        let listing = match std::fs::read_dir(&local) {
            Ok(entries) => {
                let mut names = BTreeMap::new();
                for e in entries {
                    let e = e.map_err(|source| ContainerdConfigError::ListHostDir {
                        path: dir.clone(),
                        source,
                    })?;
                    // A link to a directory is a directory to containerd (stat).
                    let is_dir = std::fs::metadata(e.path()).is_ok_and(|m| m.is_dir());
                    names.insert(e.file_name().to_string_lossy().into_owned(), is_dir);
                }
                Some(names)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(source) => {
                return Err(ContainerdConfigError::ListHostDir {
                    path: dir.clone(),
                    source,
                })
            }
        };
        out.push((dir.clone(), listing));
    }
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]
mod tests {
    use super::*;

    fn parse(text: &str) -> ConfigFile {
        parse_config_file(Path::new("/etc/containerd/config.toml"), text).unwrap()
    }

    fn config(files: &[(&str, &str)]) -> RegistryConfig {
        let parsed: Vec<_> = files
            .iter()
            .map(|(p, t)| (PathBuf::from(p), parse(t)))
            .collect();
        parse_registry_config(&parsed)
    }

    #[test]
    fn version_2_reads_the_grpc_cri_plugins_registry() {
        let c = config(&[(
            CONFIG_FILE,
            "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".registry]\nconfig_path = \"/etc/containerd/certs.d\"\n",
        )]);
        assert_eq!(c.dirs, [PathBuf::from("/etc/containerd/certs.d")]);
        assert_eq!(c.version, 2);
    }

    #[test]
    fn version_3_reads_the_images_plugins_registry_with_several_dirs() {
        let c = config(&[(
            CONFIG_FILE,
            "version = 3\n[plugins.'io.containerd.cri.v1.images'.registry]\nconfig_path = '/etc/containerd/certs.d:/etc/docker/certs.d'\n",
        )]);
        assert_eq!(
            c.dirs,
            [
                PathBuf::from("/etc/containerd/certs.d"),
                PathBuf::from("/etc/docker/certs.d")
            ]
        );
        assert!(c.config_path_hint().contains("io.containerd.cri.v1.images"));
    }

    #[test]
    fn the_default_config_has_no_config_path() {
        let c = config(&[(
            CONFIG_FILE,
            "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".registry]\nconfig_path = \"\"\n[plugins.\"io.containerd.grpc.v1.cri\".registry.mirrors]\n",
        )]);
        assert!(c.dirs.is_empty());
        assert!(c
            .config_path_hint()
            .starts_with("config_path = \"/etc/containerd/certs.d\" under [plugins.\"io.containerd.grpc.v1.cri\".registry]"));
    }

    #[test]
    fn a_version_2_key_in_a_version_3_file_is_not_read() {
        let c = config(&[(
            CONFIG_FILE,
            "version = 3\n[plugins.\"io.containerd.grpc.v1.cri\".registry]\nconfig_path = \"/etc/containerd/certs.d\"\n",
        )]);
        assert!(c.dirs.is_empty());
    }

    #[test]
    fn an_imported_section_replaces_the_main_files_whole_section() {
        let main = "version = 2\nimports = [\"/etc/containerd/conf.d/*.toml\"]\n[plugins.\"io.containerd.grpc.v1.cri\".registry]\nconfig_path = \"/etc/containerd/certs.d\"\n";
        let import =
            "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\"]\nsandbox_image = \"x\"\n";
        let c = config(&[
            (CONFIG_FILE, main),
            ("/etc/containerd/conf.d/a.toml", import),
        ]);
        assert!(c.dirs.is_empty(), "{c:?}");
        assert_eq!(
            c.set_in.unwrap().0,
            PathBuf::from("/etc/containerd/conf.d/a.toml")
        );
        // An import without the section leaves the main file's.
        let other = "version = 2\n[plugins.\"io.containerd.internal.v1.opt\"]\npath = \"/opt\"\n";
        let c = config(&[
            (CONFIG_FILE, main),
            ("/etc/containerd/conf.d/a.toml", other),
        ]);
        assert_eq!(c.dirs, [PathBuf::from("/etc/containerd/certs.d")]);
    }

    #[test]
    fn bad_files_are_errors_naming_the_file_and_field() {
        let p = Path::new("/etc/containerd/config.toml");
        let e = parse_config_file(p, "version = [").unwrap_err().to_string();
        assert!(
            e.contains("/etc/containerd/config.toml") && e.contains("not valid TOML"),
            "{e}"
        );
        let e = parse_config_file(p, "version = \"2\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("version must be an integer"), "{e}");
        let e = parse_config_file(
            p,
            "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".registry]\nconfig_path = 1\n",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("config_path must be a string"), "{e}");
    }

    #[test]
    fn the_debian_nodes_default_configs_set_no_config_path_and_akss_does() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/fuzz/containerd_config");
        let read = |name: &str| {
            let text = std::fs::read_to_string(dir.join(name)).unwrap();
            config(&[(CONFIG_FILE, &text)])
        };
        for (name, version) in [
            ("bookworm-default.toml", 2),
            ("trixie-default.toml", 2),
            ("forky-default.toml", 3),
        ] {
            let c = read(name);
            assert!(c.dirs.is_empty(), "{name}: {c:?}");
            assert_eq!(c.version, version, "{name}");
        }
        assert_eq!(
            read("aks.toml").dirs,
            [PathBuf::from("/etc/containerd/certs.d")]
        );
        assert_eq!(read("v3-two-dirs.toml").dirs.len(), 2);
        assert_eq!(
            read("forky-default.toml").ambiguous,
            None,
            "its CRI service section has no registry"
        );
    }

    #[test]
    fn version_3_sections_merge_key_by_key() {
        let main = "version = 3\n[plugins.'io.containerd.cri.v1.images'.registry]\nconfig_path = '/etc/containerd/certs.d'\n";
        let import =
            "version = 3\n[plugins.'io.containerd.cri.v1.images']\nsnapshotter = 'native'\n";
        let c = config(&[
            (CONFIG_FILE, main),
            ("/etc/containerd/conf.d/a.toml", import),
        ]);
        assert_eq!(c.dirs, [PathBuf::from("/etc/containerd/certs.d")]);
    }

    #[test]
    fn a_drop_in_without_a_version_line_replaces_the_section_under_the_merged_version() {
        let main = "version = 2\nimports = [\"/etc/containerd/conf.d/*.toml\"]\n[plugins.\"io.containerd.grpc.v1.cri\".registry]\nconfig_path = \"/etc/containerd/certs.d\"\n";
        // No version line: containerd 1.x reads it with the merged version 2.
        let drop_in =
            "[plugins.\"io.containerd.grpc.v1.cri\".containerd]\nsnapshotter = \"native\"\n";
        let c = config(&[
            (CONFIG_FILE, main),
            ("/etc/containerd/conf.d/a.toml", drop_in),
        ]);
        assert_eq!(c.version, 2);
        assert!(c.dirs.is_empty(), "the whole section was replaced: {c:?}");
    }

    #[test]
    fn a_version_3_config_with_a_version_2_section_is_ambiguous() {
        let main = "version = 3\n[plugins.'io.containerd.cri.v1.images'.registry]\nconfig_path = '/etc/containerd/certs.d'\n";
        let old =
            "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".registry]\nconfig_path = \"/x\"\n";
        let c = config(&[
            (CONFIG_FILE, main),
            ("/etc/containerd/conf.d/old.toml", old),
        ]);
        assert_eq!(c.version, 2, "the last version set wins");
        let c = config(&[
            ("/etc/containerd/conf.d/old.toml", old),
            (CONFIG_FILE, main),
        ]);
        assert_eq!(c.version, 3);
        assert!(c.ambiguous.is_some(), "{c:?}");
    }

    #[test]
    fn globs_match_one_component_and_hidden_files_as_go_does() {
        assert!(glob_match("*.toml", "a.toml"));
        assert!(!glob_match("*.toml", "a.toml.bak"));
        assert!(glob_match("*.toml", ".a.toml"));
        assert!(glob_match("?.toml", "b.toml"));
    }

    #[test]
    fn the_node_files_are_read_with_their_imports() {
        let root = tempfile::tempdir().unwrap();
        let host = HostRoot::new(root.path()).unwrap();
        let etc = root.path().join("etc/containerd");
        std::fs::create_dir_all(etc.join("conf.d")).unwrap();
        std::fs::write(
            etc.join("config.toml"),
            "version = 2\nimports = [\"/etc/containerd/conf.d/*.toml\"]\n",
        )
        .unwrap();
        std::fs::write(
            etc.join("conf.d/10-registry.toml"),
            "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".registry]\nconfig_path = \"/etc/containerd/certs.d\"\n",
        )
        .unwrap();
        let c = read_registry_config(&host).unwrap();
        assert_eq!(c.dirs, [PathBuf::from("/etc/containerd/certs.d")]);
        assert_eq!(c.files.len(), 2);
        assert_eq!(c.ambiguous, None);
        // A relative glob: containerd 1.6 before 1.6.29 matched it against
        // its working directory, so the agent cannot be sure.
        std::fs::write(
            etc.join("config.toml"),
            "version = 2\nimports = [\"conf.d/*.toml\"]\n",
        )
        .unwrap();
        let c = read_registry_config(&host).unwrap();
        assert!(c.ambiguous.unwrap().contains("conf.d/*.toml"));
        // No config at all: containerd's defaults.
        let empty = tempfile::tempdir().unwrap();
        let c = read_registry_config(&HostRoot::new(empty.path()).unwrap()).unwrap();
        assert!(c.dirs.is_empty() && c.files.is_empty());
        // The host dirs: a missing root is None.
        std::fs::create_dir_all(etc.join("certs.d/registry.test_5000_")).unwrap();
        let l = list_host_dirs(
            &host,
            &[
                PathBuf::from("/etc/containerd/certs.d"),
                PathBuf::from("/etc/docker/certs.d"),
            ],
        )
        .unwrap();
        assert!(l[0].1.as_ref().unwrap()["registry.test_5000_"]);
        assert!(l[1].1.is_none());
    }
}
