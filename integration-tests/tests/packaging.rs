//! The host-mode packages on real nodes, installed as an operator installs
//! them (run on Debian 12 and, with `NCA_DEBIAN_RELEASE=trixie`, Debian 13):
//!
//! - both shipped units pass `systemd-analyze verify` in the node;
//! - the .deb: `dpkg -i` installs the files with their modes and the
//!   conffile, enables and starts nothing; the service then installs a
//!   published CA; `dpkg -i` of a newer revision keeps the edited conffile
//!   and leaves the service as it was; `dpkg -r` stops and disables both
//!   units and takes the agent's CAs off the trust store (one containerd
//!   restart); `dpkg --purge` removes the config and the state directory;
//! - the .rpm, with Debian's `rpm` in the node: the same for `rpm -i`,
//!   `rpm -U` (`%config(noreplace)` keeps the edit) and `rpm -e` (which
//!   keeps the edited config as `.rpmsave`);
//! - where systemd is not running (an image build: an unbooted root), every
//!   scriptlet of both packages succeeds and does nothing.
//!
//! The packages under test are made from the debug binary by
//! `packaging/build.sh --test` (revisions 1 and 2 of each, for the
//! upgrades); the release packages come from `packaging/build.sh`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a failed step must panic loudly"
)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use integration_tests::agent::{
    agent_binary, install_files, workspace_dir, AGENT_UNIT, HOST_CONFIG, NODE_BINARY,
    PROVISION_UNIT,
};
use integration_tests::observe::{self, ContainerdState, ANCHORS_DIR, STATE_DIR};
use integration_tests::pki::TestCa;
use integration_tests::unbooted::UnbootedRoot;
use integration_tests::{wait_until_or_timeout, Node, SecretVolume};

/// Where the packaged default config (systemd/config.yaml) reads its Secret.
const PACKAGED_CA_DIR: &str = "/etc/node-cert-agent/ca.d";
/// The package's name in dpkg's and rpm's databases.
const PACKAGE: &str = "node-cert-agent";
/// A local edit of the packaged config, which upgrades must keep.
const EDITED_CONFIG: &str =
    "# edited by the operator\nca-dir:\n  - /etc/node-cert-agent/ca.d\nrestart-unit:\n  - containerd.service\n";
/// How `rpm` installs on a Debian node: its database knows none of the
/// node's dpkg packages, so every requirement would be missing (the tests
/// check the requirements by hand, [`assert_rpm_requirements_present`], and
/// install without the database check); and Debian 12's rpm refuses to
/// install at all unless told that this is meant (`--force-debian`, an
/// option Debian 13's rpm no longer has).
fn rpm_on_debian(run: impl FnOnce(&[&str]) -> bool) -> Vec<&'static str> {
    let mut flags = vec!["--nodeps"];
    if run(&["rpm", "--force-debian", "--version"]) {
        flags.push("--force-debian");
    }
    flags
}

fn output_of(out: &std::process::Output) -> String {
    format!(
        "stdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
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
        output_of(&out)
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

/// The test packages, by file name (`node-cert-agent-test-<rev>.deb`, `.rpm`).
struct Packages(BTreeMap<String, PathBuf>);

impl Packages {
    fn get(&self, name: &str) -> &PathBuf {
        self.0
            .get(name)
            .unwrap_or_else(|| panic!("build.sh --test made no {name}: {:?}", self.0))
    }
}

/// The test packages, built once per test process by `packaging/build.sh
/// --test` from the current debug binary (never a stale one).
fn packages() -> &'static Packages {
    static BUILT: OnceLock<Packages> = OnceLock::new();
    BUILT.get_or_init(|| {
        agent_binary();
        let script = workspace_dir().join("packaging/build.sh");
        let out = Command::new(&script)
            .arg("--test")
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
        assert!(
            out.status.success(),
            "`packaging/build.sh --test` failed (run it by hand to see why): {}",
            output_of(&out)
        );
        let built: BTreeMap<String, PathBuf> = stdout(&out)
            .lines()
            .filter_map(|l| l.split('\t').next())
            .map(PathBuf::from)
            .map(|p| (p.file_name().unwrap().to_string_lossy().into_owned(), p))
            .collect();
        for path in built.values() {
            assert!(path.is_file(), "{} missing", path.display());
        }
        Packages(built)
    })
}

/// Copies package `name` into the node's /tmp; its node path.
fn copy_into(node: &Node, name: &str) -> String {
    let node_path = format!("/tmp/{name}");
    std::fs::copy(packages().get(name), node.host_path(&node_path)).unwrap();
    node_path
}

/// `stat -c '%a %U:%G' path` in the node.
fn mode_owner(node: &Node, path: &str) -> String {
    stdout(&node.exec_ok(&["stat", "-c", "%a %U:%G", path]))
        .trim()
        .to_owned()
}

/// The documents the packages ship: the README and every `docs/*.md` of
/// the repository (each needs its asset entries in agent/Cargo.toml), at
/// their node paths.
fn shipped_docs() -> Vec<String> {
    let mut docs = vec!["/usr/share/doc/node-cert-agent/README.md".to_owned()];
    let mut names: Vec<String> = std::fs::read_dir(workspace_dir().join("docs"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".md"))
        .collect();
    names.sort();
    assert!(!names.is_empty(), "no docs/*.md in the repository");
    docs.extend(
        names
            .iter()
            .map(|name| format!("/usr/share/doc/node-cert-agent/docs/{name}")),
    );
    docs
}

/// Files, modes, no unit enabled or started: what any install leaves.
fn assert_installed(node: &Node, unit_dir: &str) {
    let files = [
        (NODE_BINARY.to_owned(), "755"),
        (format!("{unit_dir}/{AGENT_UNIT}"), "644"),
        (format!("{unit_dir}/{PROVISION_UNIT}"), "644"),
        (HOST_CONFIG.to_owned(), "644"),
    ];
    let docs = shipped_docs().into_iter().map(|doc| (doc, "644"));
    for (path, mode) in files.into_iter().chain(docs) {
        assert!(node.exists(&path), "{path} not installed");
        assert_eq!(
            mode_owner(node, &path),
            format!("{mode} root:root"),
            "{path}"
        );
    }
    let version = stdout(&node.exec_ok(&[NODE_BINARY, "--version"]));
    assert!(version.contains(env!("CARGO_PKG_VERSION")), "{version}");
    for unit in [AGENT_UNIT, PROVISION_UNIT] {
        assert_eq!(node.unit_property(unit, "LoadState"), "loaded", "{unit}");
        assert_eq!(
            node.unit_property(unit, "UnitFileState"),
            "disabled",
            "{unit}"
        );
        assert!(!node.is_active(unit), "installing started {unit}");
    }
    verify_units(
        node,
        &[
            &format!("{unit_dir}/{AGENT_UNIT}"),
            &format!("{unit_dir}/{PROVISION_UNIT}"),
        ],
    );
}

/// The operator's step, then the job: the service runs, and a CA published
/// in the configured ca-dir lands in the node's bundle. Returns the CA.
fn enable_and_publish(node: &Node) -> TestCa {
    node.exec_ok(&["systemctl", "enable", "--now", AGENT_UNIT]);
    assert!(
        wait_until_or_timeout(Duration::from_secs(20), || node.is_active(AGENT_UNIT)),
        "{AGENT_UNIT} did not start: {}",
        journal(node)
    );
    let ca = TestCa::new("packaged agent CA");
    let secret = SecretVolume::new(node.host_path(PACKAGED_CA_DIR));
    secret.publish(&BTreeMap::from([(
        "ca1.crt".to_string(),
        ca.cert_pem().into_bytes(),
    )]));
    assert!(
        wait_until_or_timeout(Duration::from_secs(60), || observe::bundle_has(
            node,
            ca.cert()
        )),
        "the packaged service did not install the CA: {}",
        journal(node)
    );
    ca
}

fn journal(node: &Node) -> String {
    output_of(&node.exec(&["journalctl", "-u", AGENT_UNIT, "--no-pager"]))
}

/// An upgrade kept the operator's config and left the service running.
fn assert_upgraded(node: &Node, pid_before: u32) {
    assert_eq!(
        String::from_utf8(node.read_file(HOST_CONFIG)).unwrap(),
        EDITED_CONFIG,
        "the upgrade replaced the edited config"
    );
    assert!(
        node.is_active(AGENT_UNIT),
        "the upgrade stopped {AGENT_UNIT}"
    );
    assert_eq!(
        node.unit_property(AGENT_UNIT, "UnitFileState"),
        "enabled",
        "the upgrade changed whether {AGENT_UNIT} is enabled"
    );
    assert_eq!(
        node.main_pid(AGENT_UNIT),
        pid_before,
        "the upgrade restarted {AGENT_UNIT} (docs/install.md says the operator does)"
    );
}

/// A removal stopped and disabled both units, removed the files, and took
/// the agent's CA off the trust store with exactly one containerd restart.
fn assert_removed(node: &Node, unit_dir: &str, ca: &TestCa, before: ContainerdState, out: &str) {
    for path in [
        NODE_BINARY.to_owned(),
        format!("{unit_dir}/{AGENT_UNIT}"),
        format!("{unit_dir}/{PROVISION_UNIT}"),
        format!("/etc/systemd/system/multi-user.target.wants/{AGENT_UNIT}"),
    ] {
        assert!(!node.exists(&path), "{path} left behind");
    }
    for unit in [AGENT_UNIT, PROVISION_UNIT] {
        assert!(!node.is_active(unit), "{unit} still running");
        assert_eq!(node.unit_property(unit, "LoadState"), "not-found", "{unit}");
    }
    observe::assert_not_trusted(node, ca, "after the package's removal");
    assert!(!node.exists(ANCHORS_DIR), "{ANCHORS_DIR} left behind");
    assert!(!node.exists(STATE_DIR), "{STATE_DIR} left behind");
    before.assert_restarted_once(node, "the package's removal");
    assert!(
        out.contains("removed CA") && out.contains(&ca.sha256_fingerprint()),
        "the removal does not say which CA it took off the trust store:\n{out}"
    );
}

#[test]
fn the_deb_installs_upgrades_runs_and_removes_cleanly() {
    let node = Node::boot("pkg-deb");
    let (rev1, rev2) = (
        copy_into(&node, "node-cert-agent-test-1.deb"),
        copy_into(&node, "node-cert-agent-test-2.deb"),
    );

    let out = node.exec(&["dpkg", "-i", &rev1]);
    assert!(out.status.success(), "dpkg -i: {}", output_of(&out));
    assert_installed(&node, "/lib/systemd/system");
    let conffiles = node.exec_ok(&["dpkg-query", "-W", "-f=${Conffiles}", PACKAGE]);
    assert!(
        stdout(&conffiles).contains(HOST_CONFIG),
        "{HOST_CONFIG} is not a conffile"
    );
    let ca = enable_and_publish(&node);

    // Upgrade: a newer revision, with the conffile edited.
    node.write_file(HOST_CONFIG, EDITED_CONFIG.as_bytes(), 0o644);
    let pid = node.main_pid(AGENT_UNIT);
    let out = node.exec(&["dpkg", "-i", &rev2]);
    assert!(
        out.status.success(),
        "dpkg -i (upgrade): {}",
        output_of(&out)
    );
    let version = node.exec_ok(&["dpkg-query", "-W", "-f=${Version}", PACKAGE]);
    assert_eq!(stdout(&version), format!("{}-2", env!("CARGO_PKG_VERSION")));
    assert_upgraded(&node, pid);
    assert!(
        observe::bundle_has(&node, ca.cert()),
        "the upgrade lost the CA"
    );

    // Removal: the agent's CAs go with it; the config stays until purge.
    let before = ContainerdState::of(&node);
    let out = node.exec(&["dpkg", "-r", PACKAGE]);
    assert!(out.status.success(), "dpkg -r: {}", output_of(&out));
    assert_removed(&node, "/lib/systemd/system", &ca, before, &output_of(&out));
    assert!(
        node.exists(HOST_CONFIG),
        "dpkg -r keeps the edited conffile"
    );
    let status = node.exec_ok(&["dpkg-query", "-W", "-f=${db:Status-Status}", PACKAGE]);
    assert_eq!(stdout(&status), "config-files");
    let out = node.exec(&["dpkg", "--purge", PACKAGE]);
    assert!(out.status.success(), "dpkg --purge: {}", output_of(&out));
    assert!(
        !node.exists(HOST_CONFIG),
        "dpkg --purge removes the conffile"
    );
    assert!(!node.exists(STATE_DIR), "dpkg --purge removes {STATE_DIR}");
}

/// Every requirement the .rpm declares is met by the node (which `rpm -i`
/// cannot check on Debian: see [`RPM_ON_DEBIAN`]).
fn assert_rpm_requirements_present(node: &Node, rpm: &str) {
    let requires = stdout(&node.exec_ok(&["rpm", "-qp", "--requires", rpm]));
    let provides = stdout(&node.exec_ok(&["rpm", "-qp", "--provides", rpm]));
    let mut checked = 0;
    for req in requires.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let name = req.split_whitespace().next().unwrap();
        if name.starts_with("rpmlib(") || provides.lines().any(|p| p.trim() == req) {
            continue; // a feature of rpm itself, or the package's own
        }
        let present = if name.starts_with('/') {
            node.exists(name)
        } else {
            node.exec(&["dpkg-query", "-W", "-f=${Status}", name])
                .status
                .success()
        };
        assert!(present, "{rpm} requires {req}, which the node lacks");
        checked += 1;
    }
    assert!(
        requires.contains("/bin/sh") && requires.contains("systemd"),
        "{rpm} requires {requires}"
    );
    assert!(
        !requires.contains(".so"),
        "the .rpm must not require shared libraries: {requires}"
    );
    assert!(checked >= 2);
}

/// `rpm -qp --qf '[%{FILENAMES} %{FILEFLAGS:fflags}\n]'`: flags per file.
fn rpm_file_flags(node: &Node, rpm: &str) -> BTreeMap<String, String> {
    let out = node.exec_ok(&[
        "rpm",
        "-qp",
        "--qf",
        "[%{FILENAMES} %{FILEFLAGS:fflags}\n]",
        rpm,
    ]);
    stdout(&out)
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(f, flags)| (f.to_owned(), flags.trim().to_owned()))
        .collect()
}

#[test]
fn the_rpm_installs_upgrades_runs_and_erases_cleanly() {
    let node = Node::boot("pkg-rpm");
    let (rel1, rel2) = (
        copy_into(&node, "node-cert-agent-test-1.rpm"),
        copy_into(&node, "node-cert-agent-test-2.rpm"),
    );
    assert_rpm_requirements_present(&node, &rel1);
    let flags = rpm_file_flags(&node, &rel1);
    assert_eq!(
        flags.get(HOST_CONFIG).map(String::as_str),
        Some("cn"),
        "{HOST_CONFIG} must be %config(noreplace): {flags:?}"
    );
    let scripts = stdout(&node.exec_ok(&["rpm", "-qp", "--scripts", &rel1]));
    for part in [
        "postinstall",
        "preuninstall",
        "postuninstall",
        "node-cert-agent uninstall",
    ] {
        assert!(
            scripts.contains(part),
            "no {part} in the scriptlets:\n{scripts}"
        );
    }

    let on_debian = rpm_on_debian(|argv| node.exec(argv).status.success());
    let rpm = |args: &[&str]| {
        let mut argv = vec!["rpm"];
        argv.extend_from_slice(args);
        let out = node.exec(&argv);
        assert!(out.status.success(), "{argv:?}: {}", output_of(&out));
        output_of(&out)
    };
    rpm(&[&["-i"][..], &on_debian, &[rel1.as_str()]].concat());
    assert_installed(&node, "/usr/lib/systemd/system");
    let config_files = stdout(&node.exec_ok(&["rpm", "-qc", PACKAGE]));
    assert_eq!(config_files.trim(), HOST_CONFIG);
    let ca = enable_and_publish(&node);

    // Upgrade: a newer release, with the config edited.
    node.write_file(HOST_CONFIG, EDITED_CONFIG.as_bytes(), 0o644);
    let pid = node.main_pid(AGENT_UNIT);
    rpm(&[&["-U"][..], &on_debian, &[rel2.as_str()]].concat());
    let release = node.exec_ok(&["rpm", "-q", "--qf", "%{RELEASE}", PACKAGE]);
    assert_eq!(stdout(&release), "2");
    assert!(
        !node.exists(&format!("{HOST_CONFIG}.rpmnew")),
        "the packaged config did not change, so no .rpmnew"
    );
    assert_upgraded(&node, pid);
    assert!(
        observe::bundle_has(&node, ca.cert()),
        "the upgrade lost the CA"
    );

    // Erase: the agent's CAs go with it; the edited config is kept aside.
    let before = ContainerdState::of(&node);
    let out = rpm(&["-e", PACKAGE]);
    assert_removed(&node, "/usr/lib/systemd/system", &ca, before, &out);
    assert!(
        !node.exec(&["rpm", "-q", PACKAGE]).status.success(),
        "rpm still lists {PACKAGE}"
    );
    assert!(!node.exists(HOST_CONFIG));
    assert_eq!(
        String::from_utf8(node.read_file(&format!("{HOST_CONFIG}.rpmsave"))).unwrap(),
        EDITED_CONFIG,
        "rpm -e keeps an edited %config as .rpmsave"
    );
}

#[test]
fn every_scriptlet_succeeds_and_does_nothing_where_systemd_is_not_running() {
    let mut root = UnbootedRoot::new("pkg-image-build");
    for name in [
        "node-cert-agent-test-1.deb",
        "node-cert-agent-test-1.rpm",
        "node-cert-agent-test-2.rpm",
    ] {
        // /var/tmp: a non-booting nspawn container gets a fresh tmpfs on /tmp.
        std::fs::copy(packages().get(name), root.path(&format!("/var/tmp/{name}"))).unwrap();
    }
    // As in an image build: no systemd as PID 1, so no /run/systemd/system.
    let probe = root.run(&["test", "-e", "/run/systemd/system"]);
    assert!(
        !probe.status.success(),
        "the unbooted root has a running systemd"
    );

    let wants = format!("/etc/systemd/system/multi-user.target.wants/{AGENT_UNIT}");
    let on_debian = rpm_on_debian(|argv| root.run(argv).status.success());
    let rpm_i = [
        &["rpm", "-i"][..],
        &on_debian,
        &["/var/tmp/node-cert-agent-test-1.rpm"],
    ]
    .concat();
    let rpm_u = [
        &["rpm", "-U"][..],
        &on_debian,
        &["/var/tmp/node-cert-agent-test-2.rpm"],
    ]
    .concat();
    let steps: [&[&str]; 6] = [
        &["dpkg", "-i", "/var/tmp/node-cert-agent-test-1.deb"],
        &["dpkg", "-r", PACKAGE],
        &["dpkg", "--purge", PACKAGE],
        &rpm_i,
        &rpm_u,
        &["rpm", "-e", PACKAGE],
    ];
    for argv in steps {
        let out = root.run_ok(argv);
        let said = output_of(&out);
        assert!(
            !said.contains("warning: node-cert-agent") && !said.contains("Failed to"),
            "`{}` without systemd said:\n{said}",
            argv.join(" ")
        );
        assert!(
            !root.path(&wants).exists(),
            "`{}` enabled a unit",
            argv.join(" ")
        );
        if argv[1] == "-i" || argv[1] == "-U" {
            assert!(root.path(NODE_BINARY).is_file(), "`{}`", argv.join(" "));
        }
    }
    assert!(!root.path(NODE_BINARY).exists());
}
