//! Checks that this machine can run the end-to-end tests, and panics naming
//! everything that is missing. End-to-end tests are never skipped.

use std::path::PathBuf;

/// The rootfs used when `NCA_ROOTFS` is not set.
pub const DEFAULT_ROOTFS: &str = "/var/cache/node-cert-agent/rootfs-bookworm-v3";

/// Host programs the harness runs.
pub const REQUIRED_PROGRAMS: [&str; 3] = ["systemd-nspawn", "nsenter", "docker-registry"];

/// The cached node rootfs: `$NCA_ROOTFS`, or [`DEFAULT_ROOTFS`].
pub fn rootfs_path() -> PathBuf {
    std::env::var_os("NCA_ROOTFS")
        .filter(|v| !v.is_empty())
        .map_or_else(|| PathBuf::from(DEFAULT_ROOTFS), PathBuf::from)
}

/// What [`preflight`] would complain about; empty when all is in place.
pub fn missing_requirements() -> Vec<String> {
    let mut missing = Vec::new();
    if !nix::unistd::Uid::effective().is_root() {
        missing.push(format!(
            "root: the tests boot nspawn nodes and mount overlays, but euid is {}",
            nix::unistd::Uid::effective()
        ));
    }
    for prog in REQUIRED_PROGRAMS {
        if !crate::cmd::on_path(prog) {
            missing.push(format!("`{prog}` is not on PATH"));
        }
    }
    let rootfs = rootfs_path();
    if !rootfs.join("usr/bin/containerd").is_file() {
        missing.push(format!(
            "node rootfs {} (no usr/bin/containerd in it): run integration-tests/scripts/build-rootfs.sh \
             (or point NCA_ROOTFS at a built rootfs)",
            rootfs.display()
        ));
    }
    missing
}

/// Panics, listing every missing requirement, unless this machine can run the
/// end-to-end tests: root, `systemd-nspawn`, `nsenter` and `docker-registry` on
/// PATH, and the cached rootfs (see [`rootfs_path`]).
pub fn preflight() {
    let missing = missing_requirements();
    assert!(
        missing.is_empty(),
        "preflight: this machine cannot run the end-to-end tests; missing:\n  - {}",
        missing.join("\n  - ")
    );
}
