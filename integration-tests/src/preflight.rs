//! Checks that this machine can run the end-to-end tests, and panics naming
//! everything that is missing. End-to-end tests are never skipped. Also
//! says which node rootfs (which Debian release) the nodes boot.

use std::path::PathBuf;

/// The Debian release nodes boot when `NCA_DEBIAN_RELEASE` is not set.
pub const DEFAULT_RELEASE: &str = "bookworm";
/// The Debian releases `scripts/build-rootfs.sh` builds: `bookworm` (Debian
/// 12, containerd 1.6, systemd 252), `trixie` (Debian 13, containerd 1.7,
/// systemd 257) and `testing` (Debian testing, "forky" today: containerd 2.1,
/// systemd 262; its rootfs is whatever testing was when it was built).
pub const RELEASES: [&str; 3] = ["bookworm", "trixie", "testing"];
/// The releases whose systemd (258 and later) refuses to boot on a host with
/// the legacy (v1) cgroup hierarchy: their nodes get a unified (cgroup2) one
/// of their own (see [`nspawn_unified_hierarchy`]).
pub const UNIFIED_HIERARCHY_RELEASES: [&str; 1] = ["testing"];
/// The rootfs recipe's version: `ROOTFS_VERSION` in `scripts/build-rootfs.sh`.
pub const ROOTFS_VERSION: u32 = 4;
/// Where `scripts/build-rootfs.sh` caches rootfs builds when
/// `NCA_CACHE_DIR` is not set.
pub const DEFAULT_CACHE_DIR: &str = "/var/cache/node-cert-agent";

/// Host programs the harness runs.
pub const REQUIRED_PROGRAMS: [&str; 3] = ["systemd-nspawn", "nsenter", "docker-registry"];

/// The Debian release of the nodes: `$NCA_DEBIAN_RELEASE` (one of
/// [`RELEASES`]: `bookworm`, `trixie` or `testing`), or [`DEFAULT_RELEASE`].
/// Panics on any other value.
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

/// Whether `systemd-nspawn` must give the nodes of [`debian_release`] the
/// unified cgroup hierarchy (`SYSTEMD_NSPAWN_UNIFIED_HIERARCHY=1` in its
/// environment): true for [`UNIFIED_HIERARCHY_RELEASES`]. A rootfs named by
/// `NCA_ROOTFS` is taken to be of `NCA_DEBIAN_RELEASE`.
pub fn nspawn_unified_hierarchy() -> bool {
    UNIFIED_HIERARCHY_RELEASES.contains(&debian_release().as_str())
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
        let release = debian_release();
        if !os_release_is(&os_release, &release) {
            missing.push(format!(
                "node rootfs {}: its etc/os-release is not that of {release} ({}); rebuild it with \
                 integration-tests/scripts/build-rootfs.sh {release}",
                rootfs.display(),
                expected_os_release(&release)
            ));
        }
    }
    missing
}

/// Whether the text of an `os-release` file is that of `release` (one of
/// [`RELEASES`]): `VERSION_CODENAME=<release>` for a stable release; for
/// `testing`, Debian with no `VERSION_ID` (testing and sid have none) and a
/// codename that is none of the stable releases (testing's is its own, e.g.
/// `forky`).
fn os_release_is(os_release: &str, release: &str) -> bool {
    let value = |key: &str| {
        os_release.lines().find_map(|l| {
            l.strip_prefix(key)
                .and_then(|v| v.strip_prefix('='))
                .map(|v| v.trim_matches('"'))
        })
    };
    if release == "testing" {
        value("ID") == Some("debian")
            && value("VERSION_ID").is_none()
            && value("VERSION_CODENAME").is_some_and(|c| !c.is_empty() && !RELEASES.contains(&c))
    } else {
        value("VERSION_CODENAME") == Some(release)
    }
}

/// What [`os_release_is`] looks for, for messages.
fn expected_os_release(release: &str) -> String {
    if release == "testing" {
        "ID=debian, no VERSION_ID, VERSION_CODENAME of testing".to_owned()
    } else {
        format!("VERSION_CODENAME={release}")
    }
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

    #[test]
    fn os_release_of_each_release() {
        let bookworm = "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\n\
                        VERSION_ID=\"12\"\nVERSION_CODENAME=bookworm\nID=debian\n";
        let trixie = "PRETTY_NAME=\"Debian GNU/Linux 13 (trixie)\"\nVERSION_ID=\"13\"\n\
                      VERSION_CODENAME=trixie\nID=debian\n";
        let forky = "PRETTY_NAME=\"Debian GNU/Linux forky/sid\"\n\
                     VERSION_CODENAME=forky\nID=debian\n";
        assert!(os_release_is(bookworm, "bookworm"));
        assert!(os_release_is(trixie, "trixie"));
        assert!(os_release_is(forky, "testing"));
        assert!(!os_release_is(forky, "bookworm"));
        assert!(!os_release_is(bookworm, "trixie"));
        // A stable release's rootfs is not a testing one, even without VERSION_ID.
        assert!(!os_release_is(bookworm, "testing"));
        assert!(!os_release_is(
            "ID=debian\nVERSION_CODENAME=trixie\n",
            "testing"
        ));
        assert!(!os_release_is(
            "ID=ubuntu\nVERSION_CODENAME=forky\n",
            "testing"
        ));
        assert!(!os_release_is("", "testing"));
    }

    #[test]
    fn only_unified_hierarchy_releases_are_releases() {
        for release in UNIFIED_HIERARCHY_RELEASES {
            assert!(RELEASES.contains(&release), "{release} is not a release");
        }
        assert!(!UNIFIED_HIERARCHY_RELEASES.contains(&DEFAULT_RELEASE));
    }
}
