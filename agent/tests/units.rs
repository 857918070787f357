//! The shipped host units against what the agent writes: every distro
//! family's anchors directory (and, for the daemon, kubelet's directory and
//! containerd's registry host directory) must be writable under the units'
//! `ProtectSystem=strict` sandbox, or every pass fails with EROFS on that
//! family.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use std::path::{Path, PathBuf};

use node_cert_agent::node::distro::Family;

/// The `ReadWritePaths=` of a unit file, `-` prefixes dropped.
fn read_write_paths(unit: &str) -> Vec<PathBuf> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../systemd")
        .join(unit);
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(
        text.lines().any(|l| l.trim() == "ProtectSystem=strict"),
        "{unit}: the test assumes ProtectSystem=strict"
    );
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("ReadWritePaths="))
        .flat_map(|v| v.split_whitespace())
        .map(|p| PathBuf::from(p.trim_start_matches('-')))
        .collect()
}

fn writable(unit: &str, node_path: &Path) -> bool {
    read_write_paths(unit)
        .iter()
        .any(|p| node_path.starts_with(p))
}

#[test]
fn both_host_units_may_write_every_familys_anchors_directory() {
    for unit in [
        "node-cert-agent.service",
        "node-cert-agent-provision.service",
    ] {
        for family in [
            Family::Debian,
            Family::RedHat,
            Family::Suse,
            Family::Flatcar,
        ] {
            let dir = family.layout().anchors_dir;
            assert!(
                writable(unit, &dir),
                "{unit}: {family:?}'s anchors directory {} is not in ReadWritePaths {:?}",
                dir.display(),
                read_write_paths(unit)
            );
        }
        assert!(
            writable(unit, Path::new("/etc/containerd/certs.d/_default")),
            "{unit}: containerd's registry host directory (the live pull trust)"
        );
    }
    assert!(writable(
        "node-cert-agent.service",
        Path::new("/var/lib/kubelet/pki")
    ));
}
