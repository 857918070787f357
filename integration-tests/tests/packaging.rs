//! The host-mode packaging on a real node: both shipped units pass
//! `systemd-analyze verify` in the node, and the .deb installs with
//! `dpkg -i`, runs (the service installs a published CA into the node's
//! bundle), and is removed cleanly with `dpkg -r`.
//!
//! The .deb under test is made from the debug binary by
//! `packaging/build.sh --test-deb` (seconds, no release build); the release
//! packages come from `packaging/build.sh`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a failed step must panic loudly"
)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use integration_tests::agent::{
    agent_binary, install_files, workspace_dir, AGENT_UNIT, HOST_CONFIG, NODE_BINARY,
    PROVISION_UNIT,
};
use integration_tests::pki::TestCa;
use integration_tests::{observe, wait_until_or_timeout, Node, SecretVolume};

/// Where the packaged default config (systemd/config.yaml) reads its Secret.
const PACKAGED_CA_DIR: &str = "/etc/node-cert-agent/ca.d";

fn stderr_of(out: &std::process::Output) -> String {
    format!(
        "stdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `systemd-analyze verify` of `units` (node paths) in the node: exit 0 and
/// nothing said about them.
fn verify_units(node: &Node, units: &[&str]) {
    let mut argv = vec!["systemd-analyze", "verify"];
    argv.extend_from_slice(units);
    let out = node.exec(&argv);
    let said = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(
        out.status.success(),
        "systemd-analyze verify {units:?} failed: {}",
        stderr_of(&out)
    );
    assert!(
        !said.contains("node-cert-agent"),
        "systemd-analyze verify {units:?} warned:\n{said}"
    );
}

#[test]
fn systemd_analyze_verify_passes_for_both_units() {
    let node = Node::boot("pkg-verify");
    install_files(&node.root(), "ca-dir: [/etc/node-cert-agent/secret]\n");
    assert!(node.exists(NODE_BINARY));
    node.systemctl(&["daemon-reload"]);
    verify_units(
        &node,
        &[
            &format!("/etc/systemd/system/{AGENT_UNIT}"),
            &format!("/etc/systemd/system/{PROVISION_UNIT}"),
        ],
    );
}

/// The test .deb, built by `packaging/build.sh --test-deb` from the current
/// debug binary (rebuilt every run, so it never tests a stale binary).
fn test_deb() -> PathBuf {
    let script = workspace_dir().join("packaging/build.sh");
    let out = Command::new(&script)
        .arg("--test-deb")
        .env("NCA_AGENT_BIN", agent_binary())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
    assert!(
        out.status.success(),
        "`packaging/build.sh --test-deb` failed (run it by hand to see why): {}",
        stderr_of(&out)
    );
    let path = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split('\t').next())
        .find(|p| p.ends_with(".deb"))
        .map(PathBuf::from)
        .unwrap_or_else(|| panic!("build.sh printed no .deb path: {}", stderr_of(&out)));
    assert!(path.is_file(), "{} missing", path.display());
    path
}

#[test]
fn the_deb_installs_runs_and_removes_cleanly() {
    let deb = test_deb();
    let node = Node::boot("pkg-deb");
    std::fs::copy(&deb, node.host_path("/tmp/node-cert-agent.deb")).unwrap();

    let out = node.exec(&["dpkg", "-i", "/tmp/node-cert-agent.deb"]);
    assert!(out.status.success(), "dpkg -i: {}", stderr_of(&out));
    for path in [
        NODE_BINARY,
        "/lib/systemd/system/node-cert-agent.service",
        "/lib/systemd/system/node-cert-agent-provision.service",
        HOST_CONFIG,
        "/usr/share/doc/node-cert-agent/README.md",
    ] {
        assert!(node.exists(path), "{path} not installed by the .deb");
    }
    let conffiles = node.exec_ok(&["dpkg-query", "-W", "-f=${Conffiles}", "node-cert-agent"]);
    assert!(
        String::from_utf8_lossy(&conffiles.stdout).contains(HOST_CONFIG),
        "{HOST_CONFIG} is not a conffile"
    );
    // Installing enables and starts nothing.
    assert!(!node.is_active(AGENT_UNIT));
    verify_units(
        &node,
        &[
            "/lib/systemd/system/node-cert-agent.service",
            "/lib/systemd/system/node-cert-agent-provision.service",
        ],
    );

    // The operator's step, then the job: a CA published in the configured
    // ca-dir lands in the node's bundle.
    node.exec_ok(&["systemctl", "enable", "--now", AGENT_UNIT]);
    assert!(
        wait_until_or_timeout(Duration::from_secs(20), || node.is_active(AGENT_UNIT)),
        "{AGENT_UNIT} did not start: {}",
        stderr_of(&node.exec(&["journalctl", "-u", AGENT_UNIT, "--no-pager"]))
    );
    let ca = TestCa::new("packaged agent CA");
    let secret = SecretVolume::new(node.host_path(PACKAGED_CA_DIR));
    secret.publish(&BTreeMap::from([(
        "ca1.crt".to_string(),
        ca.cert_pem().into_bytes(),
    )]));
    assert!(
        wait_until_or_timeout(Duration::from_secs(60), || observe::bundle_has(
            &node,
            ca.cert()
        )),
        "the packaged service did not install the CA: {}",
        stderr_of(&node.exec(&["journalctl", "-u", AGENT_UNIT, "--no-pager"]))
    );

    // A local edit of the conffile survives removal (dpkg -r keeps
    // conffiles; purge deletes them).
    node.write_file(
        HOST_CONFIG,
        format!("ca-dir: [{PACKAGED_CA_DIR}]\n# edited\n").as_bytes(),
        0o644,
    );
    let out = node.exec(&["dpkg", "-r", "node-cert-agent"]);
    assert!(out.status.success(), "dpkg -r: {}", stderr_of(&out));
    for path in [
        NODE_BINARY,
        "/lib/systemd/system/node-cert-agent.service",
        "/lib/systemd/system/node-cert-agent-provision.service",
        "/etc/systemd/system/multi-user.target.wants/node-cert-agent.service",
    ] {
        assert!(!node.exists(path), "{path} left behind by dpkg -r");
    }
    assert!(!node.is_active(AGENT_UNIT), "{AGENT_UNIT} still running");
    let state = node.unit_property(AGENT_UNIT, "LoadState");
    assert_eq!(state, "not-found", "systemd still knows {AGENT_UNIT}");
    assert!(
        node.exists(HOST_CONFIG),
        "dpkg -r keeps the edited conffile"
    );
    let status = node.exec_ok(&[
        "dpkg-query",
        "-W",
        "-f=${db:Status-Status}",
        "node-cert-agent",
    ]);
    assert_eq!(String::from_utf8_lossy(&status.stdout), "config-files");
    let out = node.exec(&["dpkg", "--purge", "node-cert-agent"]);
    assert!(out.status.success(), "dpkg --purge: {}", stderr_of(&out));
    assert!(
        !node.exists(HOST_CONFIG),
        "dpkg --purge removes the conffile"
    );
}
