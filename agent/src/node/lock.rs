//! Advisory file locks (`flock`) on the node: the daemon's lifetime lock,
//! which `status` probes, and the exclusive locks that keep two writers of
//! the same files apart.
//!
//! Boundary: opening and locking lock files; what a held lock means is the
//! caller's.

use std::io;
use std::path::Path;

use crate::node::fsutil::{self};

/// The daemon's lock ([`DAEMON_LOCK_FILE`]) as `status` finds it.
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
    use nix::fcntl::{Flock, FlockArg};
    let file = match fsutil::open_lock_file(path, false) {
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
pub fn try_daemon_lock(path: &Path) -> Result<Option<nix::fcntl::Flock<std::fs::File>>, String> {
    use nix::fcntl::{Flock, FlockArg};
    let file = fsutil::open_lock_file(path, true)
        .map_err(|e| format!("cannot open the daemon lock {}: {e}", path.display()))?;
    match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(lock) => Ok(Some(lock)),
        Err((_, nix::errno::Errno::EWOULDBLOCK)) => Ok(None),
        Err((_, e)) => Err(format!(
            "cannot take the daemon lock {}: {e}",
            path.display()
        )),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]
mod tests {
    use super::*;

    use crate::ops::daemon_status::*;

    #[test]
    fn the_daemon_lock_is_held_until_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(DAEMON_LOCK_FILE);
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
