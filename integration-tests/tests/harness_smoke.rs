//! Proves the harness against the real components: a booted node, a TLS
//! registry signed by a test CA, and pulls through containerd's CRI that fail
//! until the CA is trusted and containerd restarted.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a failed step must panic loudly"
)]

use std::time::{Duration, Instant};

use integration_tests::pki::TestCa;
use integration_tests::{cri_pull, cri_remove_image, preflight, Node, Registry};

const UNKNOWN_AUTHORITY: &str = "x509: certificate signed by unknown authority";

/// Runs `f`, prints how long `step` took, returns `f`'s result.
fn timed<T>(step: &str, f: impl FnOnce() -> T) -> T {
    let start = Instant::now();
    let out = f();
    println!("[harness_smoke] {step}: {:.3?}", start.elapsed());
    out
}

#[test]
fn ca_trust_needs_update_ca_certificates_and_a_containerd_restart() {
    let total = Instant::now();
    timed("preflight", preflight);
    let node = timed("boot node (containerd active)", || {
        Node::boot("harness-smoke")
    });
    println!("[harness_smoke] node {} pid {}", node.name(), node.pid());

    let ca = timed("CA A", || TestCa::new("nca harness smoke CA A"));
    let (cert, key) = ca.issue_server_cert(&["registry.test"]);
    let storage = tempfile::tempdir().unwrap();
    let registry = timed("start registry", || {
        Registry::start(&cert, &key, storage.path())
    });
    let digest = timed("push test image", || {
        registry.push_test_image(&ca.cert_pem(), "smoke/hello", "v1")
    });
    let image = registry.reference("smoke/hello:v1");
    println!("[harness_smoke] pushed {image} ({digest})");

    // 1. containerd does not trust CA A.
    let err = timed("pull, CA unknown", || cri_pull(&node, &image))
        .expect_err("pull must fail while CA A is not trusted");
    println!("[harness_smoke] pull error: {err}");
    assert!(
        err.contains(UNKNOWN_AUTHORITY),
        "pull error does not mention {UNKNOWN_AUTHORITY:?}: {err}"
    );

    // 2. Trusted on disk, but the running containerd loaded its roots already.
    timed("trust CA A in the node (update-ca-certificates)", || {
        node.write_file(
            "/usr/local/share/ca-certificates/test.crt",
            ca.cert_pem().as_bytes(),
            0o644,
        );
        node.exec_ok(&["update-ca-certificates"]);
    });
    let bundle = String::from_utf8(node.read_file("/etc/ssl/certs/ca-certificates.crt")).unwrap();
    let ca_body = ca.cert_pem().lines().nth(1).unwrap().to_owned();
    assert!(
        bundle.contains(&ca_body),
        "CA A is not in the node's /etc/ssl/certs/ca-certificates.crt"
    );
    let err = timed("pull, CA trusted but containerd not restarted", || {
        cri_pull(&node, &image)
    })
    .expect_err("pull must still fail: containerd caches its root pool");
    println!("[harness_smoke] pull error: {err}");
    assert!(
        err.contains(UNKNOWN_AUTHORITY),
        "unexpected pull error after update-ca-certificates: {err}"
    );

    // 3. After a restart, containerd reads the new bundle.
    let pid_before = node.main_pid("containerd");
    timed("restart containerd", || {
        node.exec_ok(&["systemctl", "restart", "containerd"]);
        node.wait_until(
            Duration::from_secs(30),
            "containerd is active again",
            || node.is_active("containerd"),
        );
    });
    assert_ne!(
        node.main_pid("containerd"),
        pid_before,
        "containerd's MainPID did not change on restart"
    );
    let image_ref = timed("pull after restart", || cri_pull(&node, &image)).unwrap_or_else(|e| {
        panic!("pull of {image} failed after trusting CA A and restarting containerd: {e}")
    });
    assert!(
        image_ref.starts_with("sha256:"),
        "unexpected image ref {image_ref}"
    );
    println!("[harness_smoke] pulled {image} as {image_ref}");

    // The image can be removed, so later pulls go to the registry again.
    timed("remove image", || cri_remove_image(&node, &image)).unwrap();
    assert_eq!(
        integration_tests::cri::cri_image_id(&node, &image).unwrap(),
        None
    );

    println!("[harness_smoke] total: {:.3?}", total.elapsed());
}
