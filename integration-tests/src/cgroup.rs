//! A cgroup of its own for each node.
//!
//! Without a systemd on the host, `systemd-nspawn --register=no --keep-unit`
//! puts the node under the cgroup nspawn was started in (`<own>/payload`). So
//! every node started from the same test process would share one cgroup tree:
//! their systemds would manage the same `payload/system.slice/containerd.service`
//! and collide (a start failing with `status=219/CGROUP`, a stop emptying the
//! other node's cgroup, refresh units of the same name). Starting each nspawn
//! in a fresh child cgroup, `<own>/nca-<machine>`, gives each node its own tree.
//!
//! Public for tests that start an nspawn container of their own (one the
//! harness does not record, to prove that clean-up leaves it alone).

use std::path::{Path, PathBuf};
use std::time::Duration;

/// The cgroup directories made for one node, one per hierarchy that systemd
/// uses (the cgroup2 hierarchy, and the v1 `name=systemd` one on hybrid hosts).
#[derive(Debug)]
pub struct NodeCgroups {
    dirs: Vec<PathBuf>,
}

impl NodeCgroups {
    /// `<own cgroup>/nca-<machine>` in each hierarchy systemd uses: the
    /// directories [`NodeCgroups::create`] makes (recorded before they exist,
    /// see [`crate::run`]).
    pub fn dirs_for(machine: &str) -> Vec<PathBuf> {
        let hierarchies = systemd_hierarchies();
        assert!(
            !hierarchies.is_empty(),
            "no cgroup2 or name=systemd cgroup hierarchy is mounted (see /proc/self/mountinfo); \
             systemd-nspawn nodes need one"
        );
        hierarchies
            .into_iter()
            .map(|dir| dir.join(format!("nca-{machine}")))
            .collect()
    }

    /// Creates `dirs` (from [`NodeCgroups::dirs_for`]). Panics, naming the
    /// directory, if one cannot be made: nodes sharing cgroups would break
    /// each other.
    pub fn create(dirs: Vec<PathBuf>) -> NodeCgroups {
        let mut cgroups = NodeCgroups { dirs: Vec::new() };
        for dir in dirs {
            std::fs::create_dir(&dir).unwrap_or_else(|e| {
                panic!(
                    "cannot create the node's cgroup {}: {e} (each node needs its own cgroup)",
                    dir.display()
                )
            });
            cgroups.dirs.push(dir);
        }
        cgroups
    }

    /// The `cgroup.procs` files a process is written to, to join the node's cgroups.
    pub fn procs_files(&self) -> Vec<PathBuf> {
        self.dirs.iter().map(|d| d.join("cgroup.procs")).collect()
    }

    /// Removes the node's cgroup trees (directories only; they must be
    /// empty of processes, i.e. the node is gone). Returns what could not be
    /// removed.
    pub fn remove(&mut self) -> Result<(), String> {
        let mut errors = Vec::new();
        for dir in std::mem::take(&mut self.dirs) {
            if let Err(e) = remove_tree(&dir) {
                errors.push(e);
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors.join("; "))
        }
    }
}

impl Drop for NodeCgroups {
    fn drop(&mut self) {
        if let Err(e) = self.remove() {
            eprintln!("harness: warning: {e}");
        }
    }
}

/// Removes the cgroup directory `dir` and its sub-cgroups, deepest first.
/// A cgroup whose last processes are still exiting is busy for a moment, so
/// each removal is retried for a few seconds.
fn remove_tree(dir: &Path) -> Result<(), String> {
    if !dir.exists() {
        return Ok(());
    }
    let subdirs: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| format!("cannot list cgroup {}: {e}", dir.display()))?
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.path())
        .collect();
    for sub in subdirs {
        remove_tree(&sub)?;
    }
    let mut last = None;
    for _ in 0..50 {
        match std::fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => last = Some(e),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Err(format!(
        "cannot remove cgroup {}: {}",
        dir.display(),
        last.map(|e| e.to_string()).unwrap_or_default()
    ))
}

/// This process's cgroup directories in the hierarchies systemd uses: the
/// cgroup2 one, and the v1 `name=systemd` one if mounted (hybrid hosts).
fn systemd_hierarchies() -> Vec<PathBuf> {
    let cgroup = std::fs::read_to_string("/proc/self/cgroup")
        .unwrap_or_else(|e| panic!("cannot read /proc/self/cgroup: {e}"));
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_else(|e| panic!("cannot read /proc/self/mountinfo: {e}"));
    hierarchy_dirs(&cgroup, &mountinfo)
}

/// See [`systemd_hierarchies`]; pure, over the texts of `/proc/self/cgroup`
/// and `/proc/self/mountinfo`.
fn hierarchy_dirs(cgroup: &str, mountinfo: &str) -> Vec<PathBuf> {
    let mut v2_mount = None;
    let mut v1_systemd_mount = None;
    for line in mountinfo.lines() {
        // "<id> <parent> <dev> <root> <mount point> <opts> [optional...] - <fstype> <source> <super opts>"
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let mount_point = left.split_whitespace().nth(4);
        let mut right = right.split_whitespace();
        let (fstype, super_opts) = (right.next(), right.nth(1));
        match (fstype, mount_point) {
            (Some("cgroup2"), Some(mp)) if v2_mount.is_none() => v2_mount = Some(mp.to_owned()),
            (Some("cgroup"), Some(mp))
                if super_opts.is_some_and(|o| o.split(',').any(|x| x == "name=systemd")) =>
            {
                v1_systemd_mount = Some(mp.to_owned());
            }
            _ => {}
        }
    }
    let mut dirs = Vec::new();
    for line in cgroup.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(id), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        let mount = if id == "0" && controllers.is_empty() {
            v2_mount.as_deref()
        } else if controllers.split(',').any(|c| c == "name=systemd") {
            v1_systemd_mount.as_deref()
        } else {
            None
        };
        if let Some(mount) = mount {
            dirs.push(Path::new(mount).join(path.trim_start_matches('/')));
        }
    }
    dirs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hybrid_host_gives_both_hierarchies() {
        let cgroup = "9:name=systemd:/\n4:memory:/x\n0::/\n";
        let mountinfo = "\
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";
        assert_eq!(
            hierarchy_dirs(cgroup, mountinfo),
            vec![
                PathBuf::from("/sys/fs/cgroup/systemd/"),
                PathBuf::from("/sys/fs/cgroup/unified/")
            ]
        );
    }

    #[test]
    fn unified_host_gives_its_own_cgroup() {
        let cgroup = "0::/user.slice/session-1.scope\n";
        let mountinfo =
            "30 23 0:26 / /sys/fs/cgroup rw,nosuid shared:4 - cgroup2 cgroup2 rw,nsdelegate\n";
        assert_eq!(
            hierarchy_dirs(cgroup, mountinfo),
            vec![PathBuf::from("/sys/fs/cgroup/user.slice/session-1.scope")]
        );
    }
}
