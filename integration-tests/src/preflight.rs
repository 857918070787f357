//! Checks that this machine can run the end-to-end tests, and panics naming
//! everything that is missing. End-to-end tests are never skipped. Also
//! says which node rootfs (which Debian release) the nodes boot.

use std::path::PathBuf;

/// The Debian release nodes boot when `NCA_DEBIAN_RELEASE` is not set.
pub const DEFAULT_RELEASE: &str = "bookworm";
/// The Debian releases `scripts/build-rootfs.sh` builds.
pub const RELEASES: [&str; 2] = ["bookworm", "trixie"];
/// The rootfs recipe's version: `ROOTFS_VERSION` in `scripts/build-rootfs.sh`.
pub const ROOTFS_VERSION: u32 = 4;
/// Where `scripts/build-rootfs.sh` caches rootfs builds when
/// `NCA_CACHE_DIR` is not set.
pub const DEFAULT_CACHE_DIR: &str = "/var/cache/node-cert-agent";

/// Host programs the harness runs.
pub const REQUIRED_PROGRAMS: [&str; 3] = ["systemd-nspawn", "nsenter", "docker-registry"];

/// The Debian release of the nodes: `$NCA_DEBIAN_RELEASE` (`bookworm` or
/// `trixie`), or [`DEFAULT_RELEASE`]. Panics on any other value.
pub fn debian_release() -> String {
    let release = std::env::var("NCA_DEBIAN_RELEASE")
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| DEFAULT_RELEASE.to_owned());
    assert!(
        RELEASES.contains(&release.as_str()),
        "NCA_DEBIAN_RELEASE={release:?}: the harness builds and boots only {RELEASES:?}"
    );
    release
}

/// The cached node rootfs: `$NCA_ROOTFS`, or the one of [`debian_release`]
/// in `$NCA_CACHE_DIR` (default [`DEFAULT_CACHE_DIR`]):
/// `rootfs-<release>-v<ROOTFS_VERSION>`.
pub fn rootfs_path() -> PathBuf {
    if let Some(path) = std::env::var_os("NCA_ROOTFS").filter(|v| !v.is_empty()) {
        return PathBuf::from(path);
    }
    let cache = std::env::var_os("NCA_CACHE_DIR")
        .filter(|v| !v.is_empty())
        .map_or_else(|| PathBuf::from(DEFAULT_CACHE_DIR), PathBuf::from);
    cache.join(format!("rootfs-{}-v{ROOTFS_VERSION}", debian_release()))
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
            "node rootfs {} (no usr/bin/containerd in it): run integration-tests/scripts/build-rootfs.sh {} \
             (or point NCA_ROOTFS at a built rootfs)",
            rootfs.display(),
            debian_release()
        ));
    } else if std::env::var_os("NCA_ROOTFS").is_none_or(|v| v.is_empty()) {
        // A release's rootfs is that release: nodes must boot what was asked for.
        let os_release = std::fs::read_to_string(rootfs.join("etc/os-release")).unwrap_or_default();
        let codename = format!("VERSION_CODENAME={}", debian_release());
        if !os_release.lines().any(|l| l == codename) {
            missing.push(format!(
                "node rootfs {}: its etc/os-release has no {codename}; rebuild it with \
                 integration-tests/scripts/build-rootfs.sh {}",
                rootfs.display(),
                debian_release()
            ));
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rootfs_version_is_the_build_scripts() {
        let script = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/build-rootfs.sh"),
        )
        .unwrap();
        assert!(
            script.contains(&format!("\nROOTFS_VERSION={ROOTFS_VERSION}\n")),
            "scripts/build-rootfs.sh and preflight.rs disagree on the rootfs version"
        );
        for release in RELEASES {
            assert!(
                script.contains(release),
                "build-rootfs.sh does not know {release}"
            );
        }
    }
}
