//! A writable overlay over a read-only lower directory, as each node's root.

use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::errno::Errno;
use nix::mount::{MntFlags, MsFlags};

/// A mounted overlay; `dir` holds `upper`, `work` and the mount point `merged`.
#[derive(Debug)]
pub(crate) struct Overlay {
    merged: PathBuf,
    mounted: bool,
}

impl Overlay {
    /// Mounts `lower` (read-only) under a fresh `upper` in `dir` at `dir/merged`.
    pub(crate) fn mount(lower: &Path, dir: &Path) -> Overlay {
        let (upper, work, merged) = (dir.join("upper"), dir.join("work"), dir.join("merged"));
        for d in [&upper, &work, &merged] {
            std::fs::create_dir_all(d)
                .unwrap_or_else(|e| panic!("cannot create {}: {e}", d.display()));
        }
        let opts = format!(
            "lowerdir={},upperdir={},workdir={}",
            lower.display(),
            upper.display(),
            work.display()
        );
        nix::mount::mount(
            Some("overlay"),
            &merged,
            Some("overlay"),
            MsFlags::empty(),
            Some(opts.as_str()),
        )
        .unwrap_or_else(|e| {
            panic!(
                "mount -t overlay -o {opts} overlay {}: {e}",
                merged.display()
            )
        });
        Overlay {
            merged,
            mounted: true,
        }
    }

    /// The mount point.
    pub(crate) fn merged(&self) -> &Path {
        &self.merged
    }

    /// Unmounts, retrying while busy and detaching lazily as a last resort.
    /// Returns a description of what went wrong, if anything.
    pub(crate) fn unmount(&mut self) -> Result<(), String> {
        if !self.mounted {
            return Ok(());
        }
        let mut last = Errno::UnknownErrno;
        for _ in 0..50 {
            match nix::mount::umount2(&self.merged, MntFlags::empty()) {
                Ok(()) | Err(Errno::EINVAL | Errno::ENOENT) => {
                    self.mounted = false;
                    return Ok(());
                }
                Err(e) => last = e,
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        nix::mount::umount2(&self.merged, MntFlags::MNT_DETACH).map_err(|e| {
            format!(
                "umount {}: {last}, then lazy umount: {e}",
                self.merged.display()
            )
        })?;
        self.mounted = false;
        Ok(())
    }
}

impl Drop for Overlay {
    fn drop(&mut self) {
        if let Err(e) = self.unmount() {
            eprintln!("harness: warning: {e}");
        }
    }
}
