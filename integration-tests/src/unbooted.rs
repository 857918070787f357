//! A node root that is never booted, as in an image build: a fresh overlay
//! of the cached rootfs in which commands run in a plain (non-booting)
//! `systemd-nspawn` container. There is no systemd as PID 1 and no system
//! bus, so `/run/systemd/system` does not exist, which is how package
//! scripts tell that they run in an image build.
//!
//! Like [`crate::Node`], it is recorded in the run (see [`crate::run`]) and
//! torn down on drop, panics included.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use crate::cgroup::NodeCgroups;
use crate::cmd;
use crate::overlay::Overlay;
use crate::run::Record;

/// An unbooted node root; see the module documentation.
#[derive(Debug)]
pub struct UnbootedRoot {
    name: String,
    dir: PathBuf,
    overlay: Option<Overlay>,
    record: Option<Record>,
}

impl UnbootedRoot {
    /// A fresh overlay of the rootfs, named after `name` (made unique as
    /// [`crate::Node::boot`] does).
    pub fn new(name: &str) -> UnbootedRoot {
        crate::preflight::preflight();
        let name = crate::node::machine_name(name);
        let base = std::env::var_os("NCA_WORK_DIR").map_or_else(std::env::temp_dir, PathBuf::from);
        let dir = tempfile::Builder::new()
            .prefix(&format!("nca-{name}-"))
            .tempdir_in(&base)
            .unwrap_or_else(|e| panic!("cannot create a directory in {}: {e}", base.display()))
            .keep();
        let mut record = Record::new("node", &name);
        record.set("dir", dir.display());
        record.set("mount", dir.join("merged").display());
        let mut root = UnbootedRoot {
            name,
            dir,
            overlay: None,
            record: Some(record),
        };
        root.overlay = Some(Overlay::mount(&crate::preflight::rootfs_path(), &root.dir));
        root
    }

    /// The root directory on the host (the overlay's merged dir).
    pub fn root(&self) -> &Path {
        self.overlay
            .as_ref()
            .map_or(self.dir.as_path(), Overlay::merged)
    }

    /// `node_path` (absolute) under [`UnbootedRoot::root`].
    pub fn path(&self, node_path: &str) -> PathBuf {
        assert!(node_path.starts_with('/'), "{node_path:?} is not absolute");
        self.root().join(node_path.trim_start_matches('/'))
    }

    /// Runs `argv` in the root, in a non-booting nspawn container of its own
    /// cgroups (no shell, the root's own binaries), and returns its output
    /// whatever the exit status.
    pub fn run(&mut self, argv: &[&str]) -> Output {
        assert!(!argv.is_empty(), "{}: run of an empty argv", self.name);
        let cgroup_dirs = NodeCgroups::dirs_for(&self.name);
        if let Some(record) = self.record.as_mut() {
            record.unset("cgroup");
            for dir in &cgroup_dirs {
                record.set("cgroup", dir.display());
            }
        }
        let mut cgroups = NodeCgroups::create(cgroup_dirs);
        let mut c = Command::new("/bin/sh");
        crate::node::nspawn_env(&mut c)
            .arg("-c")
            .arg(r#"while [ "$1" != -- ]; do echo $$ > "$1" || exit 125; shift; done; shift; exec "$@""#)
            .arg("nca-unbooted-cgroup")
            .args(cgroups.procs_files())
            .args(["--", "systemd-nspawn", "--quiet", "--register=no", "--keep-unit"])
            .arg("--console=pipe")
            .arg("-D")
            .arg(self.root())
            .args(["-M", &self.name, "--setenv=PATH=/usr/sbin:/usr/bin:/sbin:/bin", "--"])
            .args(argv)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let shown = cmd::display(&c);
        let child = c
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start `{shown}`: {e}"));
        if let Some(record) = self.record.as_mut() {
            record.replace_process("nspawn", child.id());
        }
        let out = child
            .wait_with_output()
            .unwrap_or_else(|e| panic!("`{shown}`: cannot wait: {e}"));
        if let Err(e) = cgroups.remove() {
            eprintln!("harness: warning: {}: {e}", self.name);
        }
        remove_propagate_dir(&self.name);
        out
    }

    /// Like [`UnbootedRoot::run`], but panics with the output unless the
    /// command succeeds.
    pub fn run_ok(&mut self, argv: &[&str]) -> Output {
        let out = self.run(argv);
        if !out.status.success() {
            panic!(
                "{}",
                cmd::describe_output(
                    &format!("{} (unbooted): `{}` failed", self.name, argv.join(" ")),
                    &out
                )
            );
        }
        out
    }
}

/// Removes the empty directory nspawn leaves for a non-booting container in
/// the host's `/run/systemd/nspawn/propagate/` (it refuses to remove it
/// itself where the host's /run is not a tmpfs). Only an empty directory
/// goes.
pub fn remove_propagate_dir(machine: &str) {
    let _ = std::fs::remove_dir(Path::new("/run/systemd/nspawn/propagate").join(machine));
}

impl Drop for UnbootedRoot {
    fn drop(&mut self) {
        if let Some(mut overlay) = self.overlay.take() {
            if let Err(e) = overlay.unmount() {
                eprintln!(
                    "harness: warning: {}: {e}; leaving {} (its run record stays)",
                    self.name,
                    self.dir.display()
                );
                if let Some(record) = self.record.as_mut() {
                    record.keep();
                }
                return;
            }
        }
        if let Err(e) = std::fs::remove_dir_all(&self.dir) {
            eprintln!(
                "harness: warning: {}: cannot remove {}: {e}",
                self.name,
                self.dir.display()
            );
        }
    }
}
