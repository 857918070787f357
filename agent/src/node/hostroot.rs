//! Translation of node paths into the paths this process must open.
//!
//! The agent runs either directly on the node (host root `/`) or in a pod that
//! sees the node's root filesystem under a prefix such as `/host` (in tests:
//! `/proc/<pid>/root` or a temporary directory). Every node path the agent
//! touches goes through [`HostRoot::resolve`] or [`HostRoot::resolve_nofollow`],
//! which follow symlinks the way the node itself would see them and refuse
//! anything that would leave the node's root.
//!
//! Boundary: this module only computes paths; it never creates, writes or
//! removes anything (that is `fsutil`). Resolution is a best-effort check
//! against mistakes and surprising node layouts, not a race-free sandbox: a
//! component swapped for a symlink between resolution and use is not detected.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::path::{Component, Path, PathBuf};
use std::{fmt, io};

/// Linux's own limit (MAXSYMLINKS), so we give up exactly where the node would.
pub const MAX_SYMLINKS: usize = 40;

/// The node's root filesystem as seen by this process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostRoot {
    root: PathBuf,
}

/// A symlink that was followed while resolving a node path, for error messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SymlinkHop {
    /// Node path of the symlink itself.
    pub link: PathBuf,
    /// The symlink's target, exactly as stored in the link.
    pub target: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum HostRootError {
    #[error("cannot use host root {root:?}: inspecting it failed")]
    InspectRoot {
        root: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot use host root {root:?}: it is not a directory")]
    RootNotADirectory { root: PathBuf },
    #[error("refusing node path {path:?}: node paths must be absolute")]
    NotAbsolute { path: PathBuf },
    #[error("refusing node path {path:?}: it escapes the host root {root:?}{}", describe_hop(.via))]
    Escapes {
        path: PathBuf,
        root: PathBuf,
        /// The symlink whose target climbed out, if the escape was not lexical.
        via: Option<SymlinkHop>,
    },
    #[error(
        "refusing node path {path:?}: '..' follows the missing component {missing:?}, so it cannot be resolved under the host root {root:?}"
    )]
    DotDotAfterMissing {
        path: PathBuf,
        missing: PathBuf,
        root: PathBuf,
    },
    #[error(
        "cannot resolve node path {path:?} under the host root {root:?}: more than {MAX_SYMLINKS} symlinks (a symlink loop?)"
    )]
    TooManyLinks { path: PathBuf, root: PathBuf },
    #[error("cannot resolve node path {path:?}: inspecting {host_path:?} failed")]
    Stat {
        path: PathBuf,
        host_path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot resolve node path {path:?}: reading symlink {host_path:?} failed")]
    ReadLink {
        path: PathBuf,
        host_path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot resolve node path {path:?}: symlink {host_path:?} has an empty target")]
    EmptySymlink { path: PathBuf, host_path: PathBuf },
}

fn describe_hop(via: &Option<SymlinkHop>) -> String {
    match via {
        Some(hop) => format!(" through symlink {:?} -> {:?}", hop.link, hop.target),
        None => String::new(),
    }
}

/// One pending step of resolution. `via` records which symlink expansion
/// produced the step so an escape can be blamed on the right link.
struct Step {
    kind: StepKind,
    via: Option<usize>,
}

enum StepKind {
    Root,
    Parent,
    Name(OsString),
}

impl HostRoot {
    /// `root` must exist and be a directory. It is kept exactly as given and
    /// never canonicalized: `/proc/<pid>/root` only works as a magic link, and
    /// canonicalizing it would silently land in this process's own root.
    pub fn new(root: impl Into<PathBuf>) -> Result<Self, HostRootError> {
        let root = root.into();
        let meta = std::fs::metadata(&root).map_err(|source| HostRootError::InspectRoot {
            root: root.clone(),
            source,
        })?;
        if !meta.is_dir() {
            return Err(HostRootError::RootNotADirectory { root });
        }
        Ok(Self { root })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Maps an absolute node path (e.g. `/etc/os-release`) to the path this
    /// process must use, following symlinks including the final component.
    ///
    /// Symlinks are followed as the node would see them: an absolute target is
    /// re-rooted under the host root, a relative one is resolved against the
    /// link's directory; at most [`MAX_SYMLINKS`] links. A missing component
    /// ends resolution and the rest is appended lexically, so paths of files
    /// about to be created can be resolved.
    pub fn resolve(&self, node_path: &Path) -> Result<PathBuf, HostRootError> {
        self.resolve_inner(node_path, true)
    }

    /// Like [`HostRoot::resolve`], but the final component is not followed:
    /// needed to replace or remove a symlink itself.
    pub fn resolve_nofollow(&self, node_path: &Path) -> Result<PathBuf, HostRootError> {
        self.resolve_inner(node_path, false)
    }

    fn resolve_inner(
        &self,
        node_path: &Path,
        follow_final: bool,
    ) -> Result<PathBuf, HostRootError> {
        if !node_path.is_absolute() {
            return Err(HostRootError::NotAbsolute {
                path: node_path.to_path_buf(),
            });
        }

        // Components already verified not to be symlinks (or the missing tail),
        // relative to the node root. Because none of them is a symlink, joining
        // them onto the host root makes the kernel walk exactly this path.
        let mut resolved: Vec<OsString> = Vec::new();
        let mut pending: VecDeque<Step> = VecDeque::new();
        push_components(&mut pending, node_path, None, false);
        let mut hops: Vec<SymlinkHop> = Vec::new();

        while let Some(step) = pending.pop_front() {
            let name = match step.kind {
                StepKind::Root => {
                    resolved.clear();
                    continue;
                }
                StepKind::Parent => {
                    // Refuse rather than clamp at "/" like the kernel does: a
                    // path that tries to climb out is a bug or an attack, and
                    // clamping would hide it.
                    if resolved.pop().is_none() {
                        return Err(HostRootError::Escapes {
                            path: node_path.to_path_buf(),
                            root: self.root.clone(),
                            via: step.via.and_then(|i| hops.get(i).cloned()),
                        });
                    }
                    continue;
                }
                StepKind::Name(name) => name,
            };

            let is_final = pending.is_empty();
            if is_final && !follow_final {
                resolved.push(name);
                break;
            }

            let host_path = self.host_path(&resolved).join(&name);
            let meta = match std::fs::symlink_metadata(&host_path) {
                Ok(meta) => meta,
                // ENOTDIR: a parent is a regular file; the node would fail the
                // same way on use, so treat it like a missing component.
                Err(e)
                    if e.kind() == io::ErrorKind::NotFound
                        || e.kind() == io::ErrorKind::NotADirectory =>
                {
                    resolved.push(name);
                    self.append_missing_tail(node_path, &mut resolved, pending)?;
                    break;
                }
                Err(source) => {
                    return Err(HostRootError::Stat {
                        path: node_path.to_path_buf(),
                        host_path,
                        source,
                    })
                }
            };

            if !meta.file_type().is_symlink() {
                resolved.push(name);
                continue;
            }

            if hops.len() >= MAX_SYMLINKS {
                return Err(HostRootError::TooManyLinks {
                    path: node_path.to_path_buf(),
                    root: self.root.clone(),
                });
            }
            let target =
                std::fs::read_link(&host_path).map_err(|source| HostRootError::ReadLink {
                    path: node_path.to_path_buf(),
                    host_path: host_path.clone(),
                    source,
                })?;
            if target.as_os_str().is_empty() {
                return Err(HostRootError::EmptySymlink {
                    path: node_path.to_path_buf(),
                    host_path,
                });
            }
            let mut link_node_path = node_path_of(&resolved);
            link_node_path.push(&name);
            hops.push(SymlinkHop {
                link: link_node_path,
                target: target.clone(),
            });
            // The link's own name is not pushed: a relative target resolves
            // against the link's directory, which is exactly `resolved`.
            push_components(&mut pending, &target, Some(hops.len() - 1), true);
        }

        Ok(self.host_path(&resolved))
    }

    /// After a missing component nothing can be checked on disk, so `..` can
    /// no longer be interpreted the way the node would (it depends on whether
    /// the missing parts would be symlinks); refuse it instead of guessing.
    fn append_missing_tail(
        &self,
        node_path: &Path,
        resolved: &mut Vec<OsString>,
        pending: VecDeque<Step>,
    ) -> Result<(), HostRootError> {
        for step in pending {
            match step.kind {
                StepKind::Name(name) => resolved.push(name),
                StepKind::Parent | StepKind::Root => {
                    return Err(HostRootError::DotDotAfterMissing {
                        path: node_path.to_path_buf(),
                        missing: node_path_of(resolved),
                        root: self.root.clone(),
                    })
                }
            }
        }
        Ok(())
    }

    fn host_path(&self, components: &[OsString]) -> PathBuf {
        let mut path = self.root.clone();
        path.extend(components);
        path
    }
}

fn node_path_of(components: &[OsString]) -> PathBuf {
    let mut path = PathBuf::from("/");
    path.extend(components);
    path
}

/// Queues `path`'s components, in order, ahead of whatever is already pending
/// (`front`) or behind it. `.` components are dropped; `Path::components`
/// already drops interior ones.
fn push_components(pending: &mut VecDeque<Step>, path: &Path, via: Option<usize>, front: bool) {
    let steps: Vec<Step> = path
        .components()
        .filter_map(|c| {
            let kind = match c {
                Component::RootDir | Component::Prefix(_) => StepKind::Root,
                Component::ParentDir => StepKind::Parent,
                Component::Normal(name) => StepKind::Name(name.to_os_string()),
                Component::CurDir => return None,
            };
            Some(Step { kind, via })
        })
        .collect();
    if front {
        for step in steps.into_iter().rev() {
            pending.push_front(step);
        }
    } else {
        pending.extend(steps);
    }
}

impl fmt::Display for HostRoot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.root.display())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]
mod tests {
    use std::fs;
    use std::os::unix::fs::symlink;

    use super::*;

    fn setup() -> (tempfile::TempDir, HostRoot) {
        let dir = tempfile::tempdir().unwrap();
        let root = HostRoot::new(dir.path()).unwrap();
        (dir, root)
    }

    fn mkdirs(dir: &tempfile::TempDir, rel: &str) {
        fs::create_dir_all(dir.path().join(rel)).unwrap();
    }

    #[test]
    fn new_refuses_missing_root() {
        let dir = tempfile::tempdir().unwrap();
        let err = HostRoot::new(dir.path().join("nope")).unwrap_err();
        assert!(matches!(err, HostRootError::InspectRoot { .. }), "{err:?}");
    }

    #[test]
    fn new_refuses_file_as_root() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("file");
        fs::write(&file, b"x").unwrap();
        let err = HostRoot::new(&file).unwrap_err();
        assert!(
            matches!(err, HostRootError::RootNotADirectory { .. }),
            "{err:?}"
        );
    }

    #[test]
    fn new_keeps_root_as_given() {
        let dir = tempfile::tempdir().unwrap();
        let given = dir.path().join(".");
        let root = HostRoot::new(&given).unwrap();
        assert_eq!(root.root(), given.as_path());
    }

    #[test]
    fn resolve_plain_path() {
        let (dir, root) = setup();
        mkdirs(&dir, "etc");
        fs::write(dir.path().join("etc/os-release"), b"ID=x").unwrap();
        let p = root.resolve(Path::new("/etc/os-release")).unwrap();
        assert_eq!(p, dir.path().join("etc/os-release"));
    }

    #[test]
    fn resolve_slash_is_root() {
        let (dir, root) = setup();
        assert_eq!(root.resolve(Path::new("/")).unwrap(), dir.path());
    }

    #[test]
    fn resolve_refuses_relative_path() {
        let (_dir, root) = setup();
        let err = root.resolve(Path::new("etc/os-release")).unwrap_err();
        assert!(matches!(err, HostRootError::NotAbsolute { .. }), "{err:?}");
    }

    #[test]
    fn resolve_reroots_absolute_symlink() {
        let (dir, root) = setup();
        mkdirs(&dir, "etc/ssl");
        mkdirs(&dir, "usr/share/certs");
        symlink("/usr/share/certs", dir.path().join("etc/ssl/certs")).unwrap();
        let p = root.resolve(Path::new("/etc/ssl/certs/ca.pem")).unwrap();
        assert_eq!(p, dir.path().join("usr/share/certs/ca.pem"));
        assert!(
            p.starts_with(dir.path()),
            "must never point at the real /usr"
        );
    }

    #[test]
    fn resolve_follows_relative_symlink() {
        let (dir, root) = setup();
        mkdirs(&dir, "etc");
        mkdirs(&dir, "usr/lib");
        fs::write(dir.path().join("usr/lib/os-release"), b"ID=x").unwrap();
        symlink("../usr/lib/os-release", dir.path().join("etc/os-release")).unwrap();
        let p = root.resolve(Path::new("/etc/os-release")).unwrap();
        assert_eq!(p, dir.path().join("usr/lib/os-release"));
    }

    #[test]
    fn resolve_follows_symlink_chain() {
        let (dir, root) = setup();
        mkdirs(&dir, "a");
        mkdirs(&dir, "real");
        fs::write(dir.path().join("real/f"), b"x").unwrap();
        // /a/one -> /a/two -> ../b -> /real  (b is itself a link)
        symlink("/a/two", dir.path().join("a/one")).unwrap();
        symlink("../b", dir.path().join("a/two")).unwrap();
        symlink("/real", dir.path().join("b")).unwrap();
        let p = root.resolve(Path::new("/a/one/f")).unwrap();
        assert_eq!(p, dir.path().join("real/f"));
    }

    #[test]
    fn resolve_symlink_loop_is_too_many_links() {
        let (dir, root) = setup();
        symlink("/loop2", dir.path().join("loop1")).unwrap();
        symlink("loop1", dir.path().join("loop2")).unwrap();
        let err = root.resolve(Path::new("/loop1/x")).unwrap_err();
        assert!(matches!(err, HostRootError::TooManyLinks { .. }), "{err:?}");
        assert!(err.to_string().contains("/loop1"), "{err}");
    }

    #[test]
    fn resolve_allows_dotdot_within_bounds() {
        let (dir, root) = setup();
        mkdirs(&dir, "a/b");
        mkdirs(&dir, "a/c");
        let p = root.resolve(Path::new("/a/b/../c")).unwrap();
        assert_eq!(p, dir.path().join("a/c"));
    }

    #[test]
    fn resolve_dotdot_after_symlink_uses_link_target_parent() {
        let (dir, root) = setup();
        mkdirs(&dir, "a");
        mkdirs(&dir, "x/y");
        symlink("/x/y", dir.path().join("a/link")).unwrap();
        // Like the kernel: /a/link/.. is /x, not /a.
        let p = root.resolve(Path::new("/a/link/..")).unwrap();
        assert_eq!(p, dir.path().join("x"));
    }

    #[test]
    fn resolve_refuses_dotdot_escape() {
        let (dir, root) = setup();
        mkdirs(&dir, "etc");
        let err = root.resolve(Path::new("/etc/../../x")).unwrap_err();
        assert!(
            matches!(err, HostRootError::Escapes { via: None, .. }),
            "{err:?}"
        );
        let msg = err.to_string();
        assert_eq!(
            msg,
            format!(
                "refusing node path \"/etc/../../x\": it escapes the host root {:?}",
                dir.path()
            )
        );
    }

    #[test]
    fn resolve_refuses_symlink_dotdot_escape() {
        let (dir, root) = setup();
        mkdirs(&dir, "a/b");
        symlink("../../..", dir.path().join("a/b/up")).unwrap();
        let err = root.resolve(Path::new("/a/b/up/etc/passwd")).unwrap_err();
        match &err {
            HostRootError::Escapes { via: Some(hop), .. } => {
                assert_eq!(hop.link, Path::new("/a/b/up"));
                assert_eq!(hop.target, Path::new("../../.."));
            }
            other => panic!("expected Escapes via symlink, got {other:?}"),
        }
        assert!(err.to_string().contains("through symlink"), "{err}");
    }

    #[test]
    fn resolve_nofollow_refuses_escape_in_final_symlink_only_when_followed() {
        let (dir, root) = setup();
        symlink("../..", dir.path().join("up")).unwrap();
        assert!(matches!(
            root.resolve(Path::new("/up")),
            Err(HostRootError::Escapes { .. })
        ));
        assert_eq!(
            root.resolve_nofollow(Path::new("/up")).unwrap(),
            dir.path().join("up")
        );
    }

    #[test]
    fn resolve_appends_missing_tail() {
        let (dir, root) = setup();
        mkdirs(&dir, "etc");
        let p = root
            .resolve(Path::new("/etc/new-dir/sub/file.pem"))
            .unwrap();
        assert_eq!(p, dir.path().join("etc/new-dir/sub/file.pem"));
    }

    #[test]
    fn resolve_appends_missing_tail_after_symlink() {
        let (dir, root) = setup();
        mkdirs(&dir, "etc");
        mkdirs(&dir, "usr/share");
        symlink("/usr/share/certs", dir.path().join("etc/certs")).unwrap();
        let p = root.resolve(Path::new("/etc/certs/new.pem")).unwrap();
        assert_eq!(p, dir.path().join("usr/share/certs/new.pem"));
    }

    #[test]
    fn resolve_refuses_dotdot_after_missing_component() {
        let (dir, root) = setup();
        mkdirs(&dir, "etc");
        let err = root.resolve(Path::new("/etc/missing/../x")).unwrap_err();
        assert!(
            matches!(err, HostRootError::DotDotAfterMissing { .. }),
            "{err:?}"
        );
    }

    #[test]
    fn resolve_treats_component_under_file_as_missing() {
        let (dir, root) = setup();
        fs::write(dir.path().join("file"), b"x").unwrap();
        let p = root.resolve(Path::new("/file/child")).unwrap();
        assert_eq!(p, dir.path().join("file/child"));
    }

    #[test]
    fn resolve_nofollow_returns_link_path_itself() {
        let (dir, root) = setup();
        mkdirs(&dir, "etc/ssl");
        mkdirs(&dir, "usr/share/certs");
        symlink("/usr/share/certs", dir.path().join("etc/ssl/certs")).unwrap();
        let p = root.resolve_nofollow(Path::new("/etc/ssl/certs")).unwrap();
        assert_eq!(p, dir.path().join("etc/ssl/certs"));
        let followed = root.resolve(Path::new("/etc/ssl/certs")).unwrap();
        assert_eq!(followed, dir.path().join("usr/share/certs"));
    }

    #[test]
    fn resolve_nofollow_still_follows_intermediate_links() {
        let (dir, root) = setup();
        mkdirs(&dir, "real");
        symlink("/real", dir.path().join("dir")).unwrap();
        symlink("/elsewhere", dir.path().join("real/link")).unwrap();
        let p = root.resolve_nofollow(Path::new("/dir/link")).unwrap();
        assert_eq!(p, dir.path().join("real/link"));
    }

    #[test]
    fn resolve_under_slash_root_is_identity_for_plain_paths() {
        let root = HostRoot::new("/").unwrap();
        let p = root.resolve(Path::new("/nonexistent-nca-test/x")).unwrap();
        assert_eq!(p, Path::new("/nonexistent-nca-test/x"));
    }
}
