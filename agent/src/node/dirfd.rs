//! Reading a directory that someone else writes, by descriptor.
//!
//! A name that is checked and then opened by path again can be swapped in
//! between (a key link pointed elsewhere after the check). So a directory
//! is opened once and everything in it is reached relative to that
//! descriptor, one name at a time (`openat`, `fstatat`, `readlinkat`), with
//! `O_NOFOLLOW`: a link is seen as a link and never followed. A file is
//! judged on its open descriptor (`fstat`: type, owner, mode, links, size)
//! before a byte of it is read, so what is judged is what is read.
//!
//! [`Facts`] also answers the question sshd's `StrictModes` asks: could a
//! user other than root (or this process's own user) change this entry?
//! [`check_path_owners`] asks it of every directory on a path.
//!
//! Boundary: how to read safely, not what to accept; which layout is a
//! Secret volume and what a finding says is `trust::sources`'. Paths here
//! are this process's paths (a pod's mounts), not node paths.

use std::ffi::{OsStr, OsString};
use std::io::{self, Read};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::{FileStat, Mode, SFlag};

#[derive(Debug, thiserror::Error)]
pub enum DirError {
    #[error("cannot open directory {path}: {source}")]
    OpenDir { path: PathBuf, source: io::Error },
    #[error("cannot list directory {path}: {source}")]
    List { path: PathBuf, source: io::Error },
    #[error("cannot inspect {path}: {source}")]
    Stat { path: PathBuf, source: io::Error },
    #[error("cannot read link {path}: {source}")]
    ReadLink { path: PathBuf, source: io::Error },
    #[error("cannot open {path}: {source}")]
    Open { path: PathBuf, source: io::Error },
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("{path} is a symbolic link; it is not followed")]
    IsLink { path: PathBuf },
    #[error("{path} is not a directory")]
    NotADirectory { path: PathBuf },
    #[error("cannot resolve {path}: {source}")]
    Resolve { path: PathBuf, source: io::Error },
}

impl DirError {
    /// Whether the entry it concerns does not exist (any more): a name
    /// removed between the listing and the open.
    pub fn is_not_found(&self) -> bool {
        match self {
            Self::OpenDir { source, .. }
            | Self::Stat { source, .. }
            | Self::ReadLink { source, .. }
            | Self::Open { source, .. }
            | Self::Resolve { source, .. } => source.kind() == io::ErrorKind::NotFound,
            _ => false,
        }
    }
}

fn io(e: Errno) -> io::Error {
    io::Error::from_raw_os_error(e as i32)
}

/// What kind of entry a name is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    File,
    Dir,
    Link,
    /// A FIFO, socket or device: nothing to read.
    Special,
}

/// An entry's `stat`, as much of it as the checks need.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Facts {
    pub kind: Kind,
    pub uid: u32,
    /// The permission bits, with setuid, setgid and sticky.
    pub mode: u32,
    pub nlink: u64,
    pub size: u64,
}

const STICKY: u32 = 0o1000;
const GROUP_OR_OTHER_WRITE: u32 = 0o022;

impl Facts {
    #[allow(
        clippy::useless_conversion,
        reason = "nlink_t is u32 on some targets (aarch64), u64 on x86_64"
    )]
    fn of(st: &FileStat) -> Self {
        let fmt = SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits());
        let kind = if fmt == SFlag::S_IFREG {
            Kind::File
        } else if fmt == SFlag::S_IFDIR {
            Kind::Dir
        } else if fmt == SFlag::S_IFLNK {
            Kind::Link
        } else {
            Kind::Special
        };
        Self {
            kind,
            uid: st.st_uid,
            mode: st.st_mode & 0o7777,
            nlink: u64::from(st.st_nlink),
            size: u64::try_from(st.st_size).unwrap_or(0),
        }
    }

    /// Whether its owner is root or `own_uid` (this process's user).
    pub fn owned_by_trusted(&self, own_uid: u32) -> bool {
        self.uid == 0 || self.uid == own_uid
    }

    /// Whether a user other than root and `own_uid` can change it: another
    /// owner, or group or world write. A sticky directory (`/tmp`, kubelet's
    /// tmpfs volumes) lets others add entries but not replace ours, which
    /// is why each entry read is judged on its own too.
    pub fn writable_by_others(&self, own_uid: u32) -> bool {
        if !self.owned_by_trusted(own_uid) {
            return true;
        }
        let sticky_dir = self.kind == Kind::Dir && self.mode & STICKY != 0;
        self.mode & GROUP_OR_OTHER_WRITE != 0 && !sticky_dir
    }
}

/// This process's effective uid: besides root, the one owner trusted.
pub fn own_uid() -> u32 {
    nix::unistd::geteuid().as_raw()
}

/// Why a directory on a path could be changed by someone else.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnsafeDir {
    pub path: PathBuf,
    pub facts: Facts,
}

/// Resolves `path` (following the operator's own symlinks, as configured)
/// and checks every directory from `/` down to it (to its parent when
/// `path` is a file) as sshd's `StrictModes` does: each must be owned by
/// root or `own_uid` and not writable by group or others, unless sticky.
/// Returns the resolved path, or the first directory that fails.
pub fn check_path_owners(
    path: &Path,
    own_uid: u32,
) -> Result<Result<PathBuf, UnsafeDir>, DirError> {
    let real = std::fs::canonicalize(path).map_err(|source| DirError::Resolve {
        path: path.to_path_buf(),
        source,
    })?;
    let mut dirs: Vec<&Path> = real.ancestors().collect();
    dirs.reverse();
    for dir in dirs {
        let st = nix::sys::stat::lstat(dir).map_err(|e| DirError::Stat {
            path: dir.to_path_buf(),
            source: io(e),
        })?;
        let facts = Facts::of(&st);
        if facts.kind != Kind::Dir {
            continue;
        }
        if facts.writable_by_others(own_uid) {
            return Ok(Err(UnsafeDir {
                path: dir.to_path_buf(),
                facts,
            }));
        }
    }
    Ok(Ok(real))
}

/// An open directory; every name in it is reached through its descriptor.
#[derive(Debug)]
pub struct DirHandle {
    fd: OwnedFd,
    path: PathBuf,
}

/// An open regular file, judged by its [`Facts`] before it is read.
#[derive(Debug)]
pub struct OpenFile {
    file: std::fs::File,
    facts: Facts,
    path: PathBuf,
}

impl OpenFile {
    pub fn facts(&self) -> Facts {
        self.facts
    }

    /// Reads it whole, at most `limit` bytes; `None` if it holds more.
    pub fn read(self, limit: u64) -> Result<Option<Vec<u8>>, DirError> {
        if self.facts.size > limit {
            return Ok(None);
        }
        let mut buf = Vec::new();
        self.file
            .take(limit.saturating_add(1))
            .read_to_end(&mut buf)
            .map_err(|source| DirError::Read {
                path: self.path.clone(),
                source,
            })?;
        Ok((u64::try_from(buf.len()).unwrap_or(u64::MAX) <= limit).then_some(buf))
    }
}

/// Flags of every open here: no controlling terminal, not inherited.
fn base_flags() -> OFlag {
    OFlag::O_CLOEXEC | OFlag::O_NOCTTY
}

impl DirHandle {
    /// Opens the directory `path` (following the symlinks on the way: the
    /// path is the operator's).
    pub fn open(path: &Path) -> Result<Self, DirError> {
        let fd = nix::fcntl::open(
            path,
            base_flags() | OFlag::O_RDONLY | OFlag::O_DIRECTORY,
            Mode::empty(),
        )
        .map_err(|e| match e {
            Errno::ENOTDIR => DirError::NotADirectory {
                path: path.to_path_buf(),
            },
            e => DirError::OpenDir {
                path: path.to_path_buf(),
                source: io(e),
            },
        })?;
        Ok(Self {
            fd,
            path: path.to_path_buf(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn child(&self, name: &OsStr) -> PathBuf {
        self.path.join(name)
    }

    /// The directory's own facts (`fstat` on its descriptor).
    pub fn facts(&self) -> Result<Facts, DirError> {
        nix::sys::stat::fstat(self.fd.as_fd())
            .map(|st| Facts::of(&st))
            .map_err(|e| DirError::Stat {
                path: self.path.clone(),
                source: io(e),
            })
    }

    /// The facts of the entry `name` itself (a link is a link).
    pub fn entry_facts(&self, name: &OsStr) -> Result<Facts, DirError> {
        nix::sys::stat::fstatat(self.fd.as_fd(), name, AtFlags::AT_SYMLINK_NOFOLLOW)
            .map(|st| Facts::of(&st))
            .map_err(|e| DirError::Stat {
                path: self.child(name),
                source: io(e),
            })
    }

    /// The target of the link `name`, as written (never resolved).
    pub fn read_link(&self, name: &OsStr) -> Result<OsString, DirError> {
        nix::fcntl::readlinkat(self.fd.as_fd(), name).map_err(|e| DirError::ReadLink {
            path: self.child(name),
            source: io(e),
        })
    }

    /// Opens the sub-directory `name`, which must be a real directory
    /// directly inside this one (a link to one is refused).
    pub fn open_dir(&self, name: &OsStr) -> Result<Self, DirError> {
        let path = self.child(name);
        let fd = nix::fcntl::openat(
            self.fd.as_fd(),
            name,
            base_flags() | OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW,
            Mode::empty(),
        )
        .map_err(|e| match e {
            // With O_DIRECTORY, Linux says ENOTDIR for a link too.
            Errno::ELOOP => DirError::IsLink { path: path.clone() },
            Errno::ENOTDIR if self.entry_facts(name).is_ok_and(|f| f.kind == Kind::Link) => {
                DirError::IsLink { path: path.clone() }
            }
            Errno::ENOTDIR => DirError::NotADirectory { path: path.clone() },
            e => DirError::OpenDir {
                path: path.clone(),
                source: io(e),
            },
        })?;
        Ok(Self { fd, path })
    }

    /// Every name in the directory but `.` and `..`, in no order.
    pub fn names(&self) -> Result<Vec<OsString>, DirError> {
        let list_err = |e: Errno| DirError::List {
            path: self.path.clone(),
            source: io(e),
        };
        // A Dir owns its descriptor and its read position: list a duplicate.
        let dup = self.fd.try_clone().map_err(|source| DirError::List {
            path: self.path.clone(),
            source,
        })?;
        let mut dir = nix::dir::Dir::from_fd(dup).map_err(list_err)?;
        let mut names = Vec::new();
        for entry in dir.iter() {
            let entry = entry.map_err(list_err)?;
            let name = entry.file_name().to_bytes();
            if name != b"." && name != b".." {
                names.push(OsStr::from_bytes(name).to_os_string());
            }
        }
        Ok(names)
    }

    /// Opens the regular file `name` directly inside this directory, once,
    /// without following a link, and without blocking on a FIFO. Returns
    /// `Ok(Err(facts))` for an entry that is not a regular file (not opened
    /// at all when `fstatat` already tells so, so no device is ever opened).
    pub fn open_file(&self, name: &OsStr) -> Result<Result<OpenFile, Facts>, DirError> {
        let path = self.child(name);
        let before = self.entry_facts(name)?;
        if before.kind != Kind::File {
            return Ok(Err(before));
        }
        let fd = nix::fcntl::openat(
            self.fd.as_fd(),
            name,
            base_flags() | OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK,
            Mode::empty(),
        )
        .map_err(|e| match e {
            // Swapped for a link since the fstatat.
            Errno::ELOOP => DirError::IsLink { path: path.clone() },
            e => DirError::Open {
                path: path.clone(),
                source: io(e),
            },
        })?;
        let facts = nix::sys::stat::fstat(fd.as_fd())
            .map(|st| Facts::of(&st))
            .map_err(|e| DirError::Stat {
                path: path.clone(),
                source: io(e),
            })?;
        if facts.kind != Kind::File {
            return Ok(Err(facts));
        }
        Ok(Ok(OpenFile {
            file: std::fs::File::from(fd),
            facts,
            path,
        }))
    }
}

/// Opens the regular file at `path` (already resolved: no link on the
/// way) with `O_NOFOLLOW`, for a single configured file. `Ok(Err(facts))`
/// when it is not a regular file.
pub fn open_file_at_path(path: &Path) -> Result<Result<OpenFile, Facts>, DirError> {
    let parent = path.parent().unwrap_or(Path::new("/"));
    let name = path.file_name().ok_or_else(|| DirError::NotADirectory {
        path: path.to_path_buf(),
    })?;
    DirHandle::open(parent)?.open_file(name)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]
mod tests {
    use std::fs;
    use std::os::unix::fs::{symlink, PermissionsExt};

    use super::*;

    fn facts(kind: Kind, uid: u32, mode: u32) -> Facts {
        Facts {
            kind,
            uid,
            mode,
            nlink: 1,
            size: 0,
        }
    }

    #[test]
    fn strict_modes_trusts_root_and_this_user_without_group_or_world_write() {
        assert!(!facts(Kind::File, 0, 0o644).writable_by_others(1000));
        assert!(!facts(Kind::File, 1000, 0o600).writable_by_others(1000));
        assert!(facts(Kind::File, 1001, 0o600).writable_by_others(1000));
        assert!(facts(Kind::File, 0, 0o664).writable_by_others(1000));
        assert!(facts(Kind::File, 0, 0o646).writable_by_others(1000));
        assert!(facts(Kind::Dir, 0, 0o777).writable_by_others(1000));
        assert!(
            !facts(Kind::Dir, 0, 0o1777).writable_by_others(1000),
            "sticky"
        );
        assert!(
            facts(Kind::File, 0, 0o1666).writable_by_others(1000),
            "sticky means nothing for a file"
        );
        assert!(facts(Kind::Dir, 1001, 0o1755).writable_by_others(1000));
    }

    #[test]
    fn a_file_is_opened_once_without_following_a_link() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("a"), b"A").unwrap();
        symlink("a", dir.path().join("link")).unwrap();
        fs::create_dir(dir.path().join("sub")).unwrap();
        let h = DirHandle::open(dir.path()).unwrap();
        let mut names = h.names().unwrap();
        names.sort();
        assert_eq!(names, ["a", "link", "sub"]);
        let f = h.open_file(OsStr::new("a")).unwrap().unwrap();
        assert_eq!(f.facts().kind, Kind::File);
        assert_eq!(f.facts().nlink, 1);
        assert_eq!(f.read(10).unwrap().unwrap(), b"A");
        assert_eq!(
            h.open_file(OsStr::new("link")).unwrap().unwrap_err().kind,
            Kind::Link
        );
        assert_eq!(
            h.open_file(OsStr::new("sub")).unwrap().unwrap_err().kind,
            Kind::Dir
        );
        assert_eq!(h.read_link(OsStr::new("link")).unwrap(), "a");
        assert!(h.open_file(OsStr::new("gone")).unwrap_err().is_not_found());
    }

    #[test]
    fn a_sub_directory_that_is_a_link_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        symlink(outside.path(), dir.path().join("..payload")).unwrap();
        let h = DirHandle::open(dir.path()).unwrap();
        assert!(matches!(
            h.open_dir(OsStr::new("..payload")),
            Err(DirError::IsLink { .. })
        ));
        fs::write(dir.path().join("file"), b"").unwrap();
        assert!(matches!(
            h.open_dir(OsStr::new("file")),
            Err(DirError::NotADirectory { .. })
        ));
    }

    #[test]
    fn more_than_the_limit_is_not_read() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("big"), vec![b'x'; 100]).unwrap();
        let h = DirHandle::open(dir.path()).unwrap();
        let f = h.open_file(OsStr::new("big")).unwrap().unwrap();
        assert_eq!(f.read(99).unwrap(), None);
    }

    #[test]
    fn a_group_writable_directory_on_the_path_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("shared");
        fs::create_dir(&sub).unwrap();
        fs::write(sub.join("ca.pem"), b"x").unwrap();
        let me = own_uid();
        assert_eq!(
            check_path_owners(&sub.join("ca.pem"), me).unwrap().unwrap(),
            fs::canonicalize(sub.join("ca.pem")).unwrap()
        );
        fs::set_permissions(&sub, fs::Permissions::from_mode(0o775)).unwrap();
        let bad = check_path_owners(&sub.join("ca.pem"), me)
            .unwrap()
            .unwrap_err();
        assert_eq!(bad.path, fs::canonicalize(&sub).unwrap());
    }
}
