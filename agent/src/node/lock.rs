//! Advisory file locks (`flock`) on the node: the daemon's lifetime lock,
//! which `status` probes, and the exclusive locks that keep two writers of
//! the same files apart.
//!
//! Boundary: opening and locking lock files; what a held lock means is the
//! caller's.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg, OFlag};

use crate::node::fsutil;

/// A lock could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("cannot open the lock {}: {source}", path.display())]
    Open { path: PathBuf, source: io::Error },
    #[error("cannot create the directory of the lock {}: {source}", path.display())]
    Dir {
        path: PathBuf,
        source: fsutil::FsError,
    },
    #[error("cannot take the lock {}: {errno}", path.display())]
    Lock {
        path: PathBuf,
        errno: nix::errno::Errno,
    },
}

/// Opens a lock file (for `flock`): never through a symlink, never blocking
/// on a FIFO. `create` makes it (mode 0644) and opens it for writing;
/// otherwise it is opened read-only and must exist.
pub fn open_lock_file(path: &Path, create: bool) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(create)
        .create(create)
        .truncate(false)
        .mode(0o644)
        .custom_flags((OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK).bits())
        .open(path)
}

/// Takes the exclusive lock at `path`, waiting for its holder; the file
/// and its directory (0700) are created if missing.
pub fn lock_exclusive(path: &Path) -> Result<Flock<File>, LockError> {
    if let Some(dir) = path.parent() {
        fsutil::ensure_dir(dir, 0o700).map_err(|source| LockError::Dir {
            path: path.to_path_buf(),
            source,
        })?;
    }
    let file = open_lock_file(path, true).map_err(|source| LockError::Open {
        path: path.to_path_buf(),
        source,
    })?;
    Flock::lock(file, FlockArg::LockExclusive).map_err(|(_, errno)| LockError::Lock {
        path: path.to_path_buf(),
        errno,
    })
}

/// The daemon's lifetime lock as `status` finds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DaemonLock {
    /// A process holds it: the daemon runs.
    Held,
    /// Nobody holds it: no daemon runs.
    Free,
    /// It cannot be tested (missing, unreadable): why.
    Unknown(String),
}

/// Tests the daemon's lock at `path` without waiting (a shared lock, dropped
/// at once).
pub fn probe_daemon_lock(path: &Path) -> DaemonLock {
    let file = match open_lock_file(path, false) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return DaemonLock::Unknown(format!("{} does not exist", path.display()))
        }
        Err(e) => return DaemonLock::Unknown(format!("cannot open {}: {e}", path.display())),
    };
    match Flock::lock(file, FlockArg::LockSharedNonblock) {
        Ok(_unlocked_on_drop) => DaemonLock::Free,
        Err((_, nix::errno::Errno::EWOULDBLOCK)) => DaemonLock::Held,
        Err((_, e)) => {
            DaemonLock::Unknown(format!("cannot test the lock on {}: {e}", path.display()))
        }
    }
}

/// Takes the daemon's lock at `path` (created 0644 if missing) without
/// waiting: `Ok(None)` if another process holds it.
pub fn try_daemon_lock(path: &Path) -> Result<Option<Flock<File>>, LockError> {
    let file = open_lock_file(path, true).map_err(|source| LockError::Open {
        path: path.to_path_buf(),
        source,
    })?;
    match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(lock) => Ok(Some(lock)),
        Err((_, nix::errno::Errno::EWOULDBLOCK)) => Ok(None),
        Err((_, errno)) => Err(LockError::Lock {
            path: path.to_path_buf(),
            errno,
        }),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]
mod tests {
    use super::*;

    #[test]
    fn the_daemon_lock_is_held_until_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("daemon.lock");
        assert!(
            matches!(probe_daemon_lock(&path), DaemonLock::Unknown(w) if w.contains("does not exist"))
        );
        let lock = try_daemon_lock(&path).unwrap().expect("free");
        assert_eq!(probe_daemon_lock(&path), DaemonLock::Held);
        assert!(try_daemon_lock(&path).unwrap().is_none(), "a second daemon");
        drop(lock);
        assert_eq!(probe_daemon_lock(&path), DaemonLock::Free);
        assert!(try_daemon_lock(&path).unwrap().is_some());
    }
}
