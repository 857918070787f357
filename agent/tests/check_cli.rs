//! `node-cert-agent check` as a linter: the binary, run on a Secret manifest,
//! a Secret directory and a provisioning file; table and JSON output; exit
//! codes a CI pipeline can rely on.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use std::path::Path;
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_node-cert-agent");

fn example_secret() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../manifests/examples/custom-ca-trust-secret.yaml")
}

fn run(args: &[&str]) -> (i32, String) {
    let out = Command::new(BIN).arg("check").args(args).output().unwrap();
    (
        out.status.code().unwrap(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn valid_secret_manifest_passes_with_exit_0_and_json_says_valid() {
    let path = example_secret();
    let (code, table) = run(&[path.to_str().unwrap()]);
    assert_eq!(code, 0, "{table}");
    assert!(
        table.contains("key \"ca1.crt\": ok") && table.contains("key \"ca2.crt\": ok"),
        "{table}"
    );
    let (code, json) = run(&["--output", "json", path.to_str().unwrap()]);
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["schemaVersion"], 1);
    assert_eq!(v["summary"]["valid"], true);
    assert_eq!(v["summary"]["distinctCertificates"], 2);
    assert_eq!(
        v["sources"][0]["keys"][0]["certificates"][0]["sha256"]
            .as_str()
            .unwrap()
            .len(),
        64
    );
}

#[test]
fn secret_manifest_with_bad_keys_fails_and_names_each_key_with_a_fix() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("secret.yaml");
    // ca1 is base64 of base64 of a PEM header (encoded twice); ca2 is garbage.
    let twice = "TFMwdExTMUNSVWRKVGlCRFJWSlVTVVpKUTBGVVJTMHRMUzB0Q2sxSlNVST0=";
    std::fs::write(
        &path,
        format!("apiVersion: v1\nkind: Secret\nmetadata:\n  name: custom-ca-trust-secret\n  namespace: kube-system\ndata:\n  ca1.crt: {twice}\nstringData:\n  ca2.crt: hello\n"),
    )
    .unwrap();
    let (code, json) = run(&["-o", "json", path.to_str().unwrap()]);
    assert_eq!(code, 1, "{json}");
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["summary"]["valid"], false);
    let keys = v["sources"][0]["keys"].as_array().unwrap();
    for key in keys {
        let f = &key["findings"][0];
        assert_eq!(f["severity"], "error", "{key}");
        assert!(!f["fix"].as_str().unwrap().is_empty(), "{key}");
        assert!(f["message"]
            .as_str()
            .unwrap()
            .contains(key["key"].as_str().unwrap()));
    }
    assert_eq!(keys[0]["findings"][0]["kind"], "DoubleBase64");
}

#[test]
fn missing_path_is_an_error() {
    let (code, out) = run(&["/nonexistent/custom-ca.pem"]);
    assert_eq!(code, 1);
    assert!(out.contains("/nonexistent/custom-ca.pem"), "{out}");
}
