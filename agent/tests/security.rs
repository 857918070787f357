//! Security properties: only allowlisted units are restarted;
//! nothing goes through a shell; node paths never escape the host root; keys
//! and state are written 0600 and anchors 0644.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

mod common;

use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use common::{corpus, rt, Node};
use node_cert_agent::config::{self, ConfigError, Flags};
use node_cert_agent::kubelet::store::{CertKind, KubeletStore};
use node_cert_agent::node::distro::Family;
use node_cert_agent::node::hostroot::{HostRoot, HostRootError};
use node_cert_agent::trust::state::Pending;

/// The process umask is shared by every test of this binary, and one test
/// changes it: each test holds this lock, so none creates its fixtures
/// under another test's umask.
static UMASK: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    UMASK
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn good_pem() -> Vec<u8> {
    fs::read(corpus("certs/good-ca.pem")).unwrap()
}

fn mode(path: &Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

// --- Units off the allowlist are never restarted ---------------------------

#[test]
fn a_state_file_asking_for_another_unit_restarts_only_the_allowlist() {
    let _serial = serial();
    let node = Node::new();
    let r = node.reconciler(&["containerd.service"]);
    let mut st = node_cert_agent::trust::state::load(&node.state_path()).unwrap();
    st.pending = Pending::Restart(["sshd.service", "kubelet.service"].map(String::from).into());
    node_cert_agent::trust::state::save(&node.state_path(), &st).unwrap();
    node.publish(&[("ca1.crt", &good_pem())]);
    rt().block_on(r.reconcile()).unwrap();
    assert_eq!(node.fake.restarts(), vec!["containerd.service"]);
    // The refused units are dropped from the state, not kept pending forever.
    let st = node_cert_agent::trust::state::load(&node.state_path()).unwrap();
    assert_eq!(st.pending, Pending::Nothing, "{:?}", st.pending);
}

#[test]
fn an_empty_allowlist_restarts_nothing_even_when_the_bundle_changes() {
    let _serial = serial();
    let node = Node::new();
    let r = node.reconciler(&[]);
    node.publish(&[("ca1.crt", &good_pem())]);
    let out = rt().block_on(r.reconcile()).unwrap();
    assert!(out.refreshed);
    assert!(node.fake.restarts().is_empty());
}

#[test]
fn config_refuses_unit_names_that_are_not_plain_service_names() {
    let _serial = serial();
    for unit in [
        "sshd; rm -rf /",
        "sshd.service; rm",
        "$(reboot).service",
        "a b.service",
        "../../etc/passwd",
        "sshd",
        "sshd.socket",
        "`id`.service",
        "x.service\n",
    ] {
        let yaml = format!(
            "ca-dir: [/etc/ca]\nrestart-unit: [{}]\n",
            serde_json::to_string(unit).unwrap()
        );
        let err =
            config::resolve(config::parse_file(&yaml).unwrap(), Flags::default()).expect_err(unit);
        assert!(
            matches!(&err, ConfigError::Invalid { key: "restart-unit", value, .. } if value == unit),
            "{unit:?}: {err}"
        );
        assert!(err.to_string().contains("restart-unit"), "{err}");
        // The same value from the command line.
        let flags = Flags {
            ca_dir: vec!["/etc/ca".into()],
            restart_unit: vec![unit.to_string()],
            ..Flags::default()
        };
        assert!(
            config::resolve(Default::default(), flags).is_err(),
            "{unit:?}"
        );
        let yaml = format!(
            "ca-dir: [/etc/ca]\nkubelet:\n  restart-unit: [{}]\n",
            serde_json::to_string(unit).unwrap()
        );
        let err =
            config::resolve(config::parse_file(&yaml).unwrap(), Flags::default()).expect_err(unit);
        assert!(err.to_string().contains("kubelet.restart-unit"), "{err}");
    }
}

// --- Nothing passes through a shell -----------------------------------------

#[test]
fn the_refresh_tool_is_sent_to_systemd_as_an_argv_with_an_absolute_program() {
    let _serial = serial();
    let node = Node::new();
    let r = node.reconciler(&["containerd.service"]);
    node.publish(&[("ca1.crt", &good_pem())]);
    rt().block_on(r.reconcile()).unwrap();
    let commands = node.fake.commands();
    assert_eq!(commands.len(), 1);
    let argv = &commands[0];
    assert_eq!(argv, &Family::Debian.layout().refresh_command);
    assert!(argv[0].starts_with('/'), "{argv:?}");
    for arg in argv {
        assert!(!arg.contains(' ') && !arg.contains(';'), "{argv:?}");
    }
    let program = Path::new(&argv[0]).file_name().unwrap().to_string_lossy();
    assert!(
        !["sh", "bash", "dash", "env"].contains(&program.as_ref()),
        "{argv:?}"
    );
}

#[test]
fn every_distro_refresh_command_is_an_absolute_argv_without_a_shell() {
    let _serial = serial();
    for family in [
        Family::Debian,
        Family::RedHat,
        Family::Suse,
        Family::Flatcar,
    ] {
        let argv = family.layout().refresh_command;
        assert!(argv[0].starts_with('/'), "{family:?}: {argv:?}");
        let program = Path::new(&argv[0]).file_name().unwrap().to_string_lossy();
        assert!(
            !["sh", "bash", "dash", "env"].contains(&program.as_ref()),
            "{family:?}: {argv:?}"
        );
    }
}

#[test]
fn config_refuses_a_refresh_command_without_an_absolute_program() {
    let _serial = serial();
    for cmd in [
        "[update-ca-certificates]",
        "[sh, -c, 'update-ca-certificates; rm -rf /']",
        "['update-ca-certificates && reboot']",
        "[./update-ca-certificates]",
        "[]",
    ] {
        let yaml = format!("ca-dir: [/etc/ca]\ntrust-store:\n  refresh-command: {cmd}\n");
        let err =
            config::resolve(config::parse_file(&yaml).unwrap(), Flags::default()).expect_err(cmd);
        assert!(
            err.to_string().contains("trust-store.refresh-command")
                && err.to_string().contains("no shell"),
            "{cmd}: {err}"
        );
    }
}

/// The agent's non-test code, file by file in every folder of `src` (each
/// file up to its test module).
fn agent_sources() -> Vec<(PathBuf, String)> {
    let mut dirs = vec![Path::new(env!("CARGO_MANIFEST_DIR")).join("src")];
    let mut out = Vec::new();
    while let Some(dir) = dirs.pop() {
        for entry in fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = fs::read_to_string(&path).unwrap();
                let code = match text.find("\n#[cfg(test)]\n") {
                    Some(at) => text[..at].to_string(),
                    None => text,
                };
                out.push((path, code));
            }
        }
    }
    assert!(out.len() > 10, "found the agent's sources");
    out
}

#[test]
fn agent_source_never_spawns_a_shell_or_a_process() {
    let _serial = serial();
    let forbidden = [
        "Command::new(\"sh\"",
        "Command::new(\"bash\"",
        "\"/bin/sh\"",
        "\"/bin/bash\"",
        "\"/usr/bin/sh\"",
        "\"/usr/bin/env\"",
        "\"sh\", \"-c\"",
        // The agent runs node commands through systemd only; it never
        // spawns a process itself.
        "process::Command",
        "Command::new(",
        "libc::system",
        "execvp",
    ];
    let mut hits = Vec::new();
    for (path, code) in agent_sources() {
        for (n, line) in code.lines().enumerate() {
            let line = line.trim_start();
            if line.starts_with("//") {
                continue;
            }
            for f in forbidden {
                if line.contains(f) {
                    hits.push(format!("{}:{}: {line}", path.display(), n + 1));
                }
            }
        }
    }
    assert!(hits.is_empty(), "{}", hits.join("\n"));
}

// --- Paths that escape the host root are refused ---------------------------

#[test]
fn dotdot_above_the_host_root_is_refused() {
    let _serial = serial();
    let root = tempfile::tempdir().unwrap();
    fs::create_dir_all(root.path().join("etc")).unwrap();
    let host = HostRoot::new(root.path()).unwrap();
    for p in [
        "/..",
        "/../etc/passwd",
        "/etc/../../etc/shadow",
        "/a/b/../../../x",
    ] {
        let err = host.resolve(Path::new(p)).expect_err(p);
        assert!(
            matches!(
                err,
                HostRootError::Escapes { .. } | HostRootError::DotDotAfterMissing { .. }
            ),
            "{p}: {err}"
        );
        assert!(host.resolve_nofollow(Path::new(p)).is_err(), "{p}");
    }
    assert!(matches!(
        host.resolve(Path::new("etc/passwd")),
        Err(HostRootError::NotAbsolute { .. })
    ));
}

#[test]
fn symlinks_pointing_out_of_the_host_root_are_refused_or_re_rooted() {
    let _serial = serial();
    let root = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    fs::write(outside.path().join("secret"), "outside").unwrap();
    let etc = root.path().join("etc");
    fs::create_dir_all(&etc).unwrap();
    // A relative link that climbs out: refused, naming the link.
    symlink("../../../../../../../../tmp", etc.join("climb")).unwrap();
    // An absolute link: the node would see its own /tmp, so it is re-rooted,
    // never followed to this process's path.
    symlink(outside.path().join("secret"), etc.join("abs")).unwrap();
    let host = HostRoot::new(root.path()).unwrap();
    let err = host.resolve(Path::new("/etc/climb/x")).unwrap_err();
    assert!(
        matches!(err, HostRootError::Escapes { via: Some(_), .. }),
        "{err}"
    );
    assert!(err.to_string().contains("climb"), "{err}");
    let resolved = host.resolve(Path::new("/etc/abs")).unwrap();
    assert!(resolved.starts_with(root.path()), "{resolved:?}");
    assert!(!resolved.starts_with(outside.path()), "{resolved:?}");
}

#[test]
fn an_anchors_dir_linked_out_of_the_host_root_writes_nothing_outside() {
    let _serial = serial();
    let node = Node::new();
    let outside = tempfile::tempdir().unwrap();
    fs::create_dir_all(node.root.path().join("usr/local/share/ca-certificates")).unwrap();
    symlink(
        "../../../../../../../../../../".to_string() + outside.path().to_str().unwrap(),
        node.root
            .path()
            .join("usr/local/share/ca-certificates/node-cert-agent"),
    )
    .unwrap();
    let r = node.reconciler(&["containerd.service"]);
    node.publish(&[("ca1.crt", &good_pem())]);
    let err = rt().block_on(r.reconcile()).unwrap_err();
    assert!(err.to_string().contains("escapes the host root"), "{err}");
    assert_eq!(fs::read_dir(outside.path()).unwrap().count(), 0);
    assert!(node.fake.commands().is_empty() && node.fake.restarts().is_empty());
}

// --- File modes ----------------------------------------------------------------

#[test]
fn kubelet_key_files_are_0600_anchors_0644_and_state_0600() {
    let _serial = serial();
    // kubelet_store: the certificate with its private key.
    let root = tempfile::tempdir().unwrap();
    let store = KubeletStore::new(
        HostRoot::new(root.path()).unwrap(),
        "/var/lib/kubelet/pki".into(),
    );
    let cert = fs::read(corpus("certs/leaf.pem")).unwrap();
    let key = fs::read(corpus("certs/private-key-pkcs8.pem")).unwrap();
    let file = store
        .install(CertKind::Client, &cert, &key, 1_795_000_000)
        .unwrap();
    let host_file = root.path().join(file.strip_prefix("/").unwrap());
    assert_eq!(mode(&host_file), 0o600, "{host_file:?}");
    assert!(fs::read_to_string(&host_file)
        .unwrap()
        .contains("PRIVATE KEY"));

    // Anchors and state through a reconcile.
    let node = Node::new();
    let r = node.reconciler(&["containerd.service"]);
    node.publish(&[("ca1.crt", &good_pem())]);
    rt().block_on(r.reconcile()).unwrap();
    let anchors: Vec<_> = fs::read_dir(node.anchors_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(anchors.len(), 1);
    assert_eq!(mode(&anchors[0]), 0o644);
    assert_eq!(mode(&node.state_path()), 0o600);
    assert_eq!(mode(node.state_path().parent().unwrap()), 0o700);
}

#[test]
fn modes_are_set_explicitly_whatever_the_umask() {
    let _serial = serial();
    // A permissive umask must not widen a key file, a strict one must not
    // hide an anchor: the modes are set, not inherited.
    let previous = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o000));
    let root = tempfile::tempdir().unwrap();
    let store = KubeletStore::new(
        HostRoot::new(root.path()).unwrap(),
        "/var/lib/kubelet/pki".into(),
    );
    let file = store
        .install(
            CertKind::Client,
            &fs::read(corpus("certs/leaf.pem")).unwrap(),
            &fs::read(corpus("certs/private-key-pkcs8.pem")).unwrap(),
            1_795_000_000,
        )
        .unwrap();
    let key_mode = mode(&root.path().join(file.strip_prefix("/").unwrap()));
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
    let node = Node::new();
    let r = node.reconciler(&["containerd.service"]);
    node.publish(&[("ca1.crt", &good_pem())]);
    let result = rt().block_on(r.reconcile());
    nix::sys::stat::umask(previous);
    result.unwrap();
    assert_eq!(key_mode, 0o600);
    let anchor = fs::read_dir(node.anchors_dir())
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    assert_eq!(mode(&anchor), 0o644);
    assert_eq!(mode(&node.state_path()), 0o600);
}
