//! Exercises the rest of the harness API against real nodes and registries:
//! files, units and the journal inside a node, concurrent nodes, registries
//! sharing storage, and teardown after a panic.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a failed step must panic loudly"
)]

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::Duration;

use integration_tests::pki::TestCa;
use integration_tests::{cri_pull, preflight, Node, Registry};

#[test]
fn node_files_units_and_journal() {
    preflight();
    let node = Node::boot("api-files");

    let path = "/etc/nca test/sub/a.bin";
    assert!(!node.exists(path));
    node.write_file(path, b"bytes\x00\xff", 0o600);
    assert_eq!(node.read_file(path), b"bytes\x00\xff");
    assert!(node.exists(path));
    let mode = node.exec_ok(&["stat", "-c", "%a %U", path]);
    assert_eq!(String::from_utf8_lossy(&mode.stdout).trim(), "600 root");
    node.write_file(path, b"replaced", 0o644);
    assert_eq!(node.read_file(path), b"replaced");
    node.remove_file(path);
    assert!(!node.exists(path));
    node.remove_file(path); // absent: still fine

    assert_eq!(
        node.read_link("/etc/localtime").as_deref(),
        Some("/usr/share/zoneinfo/Etc/UTC")
    );
    assert_eq!(node.read_link("/etc/hostname"), None);
    assert!(
        node.host_path("/run/containerd/containerd.sock").exists(),
        "node's /run is visible from the host"
    );

    let failed = node.exec(&["ls", "/nonexistent"]);
    assert_eq!(failed.status.code(), Some(2));
    let msg = catch_unwind(AssertUnwindSafe(|| node.exec_ok(&["ls", "/nonexistent"])))
        .expect_err("exec_ok of a failing command must panic");
    let msg = msg.downcast_ref::<String>().unwrap();
    assert!(
        msg.contains("`ls /nonexistent` failed") && msg.contains("No such file"),
        "{msg}"
    );

    assert!(node.is_active("containerd"));
    assert!(node.main_pid("containerd") > 0);
    assert_eq!(node.n_restarts("containerd"), 0);
    assert_eq!(node.unit_property("containerd", "SubState"), "running");
    assert!(!node.is_active("no-such-unit"));

    node.exec_ok(&["systemd-cat", "-t", "nca-harness", "echo", "hello journal"]);
    node.wait_until(
        Duration::from_secs(10),
        "the journal has the systemd-cat line",
        || {
            node.journal_json(&["-t", "nca-harness"])
                .iter()
                .any(|e| e["MESSAGE"] == "hello journal" && e["SYSLOG_IDENTIFIER"] == "nca-harness")
        },
    );
    assert!(
        node.console_tail(50).contains("containerd"),
        "console log: {}",
        node.console_tail(50)
    );
}

#[test]
fn concurrent_nodes_and_registries_sharing_storage() {
    preflight();
    let other = std::thread::spawn(|| Node::boot("api-concurrent-b"));
    let node = Node::boot("api-concurrent-a");
    let other = other.join().unwrap();
    assert_ne!(node.pid(), other.pid());
    assert_ne!(node.name(), other.name());

    let (a, b) = (TestCa::new("api CA A"), TestCa::new("api CA B"));
    let storage = tempfile::tempdir().unwrap();
    let (cert_a, key_a) = a.issue_server_cert(&["registry.test"]);
    let (cert_b, key_b) = b.issue_server_cert(&["registry.test"]);
    let reg_a = Registry::start(&cert_a, &key_a, storage.path());
    let reg_b = Registry::start(&cert_b, &key_b, storage.path());
    assert_ne!(reg_a.port(), reg_b.port());
    reg_a.push_test_image(&a.cert_pem(), "api/shared", "v1");

    node.write_file(
        "/usr/local/share/ca-certificates/a.crt",
        a.cert_pem().as_bytes(),
        0o644,
    );
    node.exec_ok(&["update-ca-certificates"]);
    node.restart("containerd");

    // Same storage: B serves the image A received, with a certificate from CA B.
    cri_pull(&node, &reg_a.reference("api/shared:v1")).unwrap();
    let err = cri_pull(&node, &reg_b.reference("api/shared:v1")).unwrap_err();
    assert!(
        err.contains("x509: certificate signed by unknown authority"),
        "{err}"
    );
    let err = cri_pull(&node, &reg_a.reference("api/shared:missing")).unwrap_err();
    assert!(err.ends_with("not found"), "{err}");
    // The other node trusts neither CA.
    let err = cri_pull(&other, &reg_a.reference("api/shared:v1")).unwrap_err();
    assert!(
        err.contains("x509: certificate signed by unknown authority"),
        "{err}"
    );
}

#[test]
fn node_is_torn_down_after_a_panic() {
    preflight();
    let mut seen = None;
    let result = catch_unwind(AssertUnwindSafe(|| {
        let node = Node::boot("api-panic");
        seen = Some((node.pid(), node.dir().to_owned()));
        panic!("deliberate panic with a node up");
    }));
    assert!(result.is_err());
    let (pid, dir) = seen.unwrap();
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "node init {pid} still alive after the panic"
    );
    assert!(
        !dir.exists(),
        "{} still exists after the panic",
        dir.display()
    );
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mounts.contains(dir.to_str().unwrap()),
        "overlay under {} still mounted",
        dir.display()
    );
}
