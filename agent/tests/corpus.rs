//! The bad-input corpus: every case in
//! `tests/data/corpus/cases.yaml` is run against a node that already trusts
//! one good CA. A bad key must give an error that names the key and says how
//! to fix it, keep the last good CA installed and in the bundle, and cause no
//! refresh and no restart. Bad kubeconfigs must fail to load with an error
//! naming the file and the field. `check` must exit 1 and name every bad key.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

mod common;

use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::Path;
use std::process::Command;

use base64::Engine as _;
use common::{corpus, rt, Node};
use node_cert_agent::k8s::kubeconfig;
use node_cert_agent::node::hostroot::HostRoot;
use node_cert_agent::trust::validate::{Finding, Severity};
use node_cert_agent::x509::cert::CertInfo;
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct Cases {
    secret_keys: Vec<KeyCase>,
    kubeconfigs: Vec<KubeconfigCase>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
struct KeyCase {
    name: String,
    key: String,
    input: Option<String>,
    generate: Option<String>,
    finding: String,
    #[serde(default = "error")]
    severity: String,
    outcome: String,
    #[serde(default)]
    words: Vec<String>,
    known_gap: Option<String>,
    #[serde(default)]
    gap_missing: Vec<String>,
}

fn error() -> String {
    "error".into()
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct KubeconfigCase {
    name: String,
    input: String,
    error: String,
    words: Vec<String>,
}

fn cases() -> Cases {
    serde_yaml::from_str(&fs::read_to_string(corpus("cases.yaml")).unwrap()).unwrap()
}

const GOOD_KEY: &str = "ca1.crt";

fn good_pem() -> Vec<u8> {
    fs::read(corpus("certs/good-ca.pem")).unwrap()
}

fn good_ca() -> CertInfo {
    CertInfo::from_pem(&good_pem()).unwrap()
}

/// A line of the good CA's base64 body, to find it in the bundle.
fn good_body_line() -> String {
    String::from_utf8(good_pem())
        .unwrap()
        .lines()
        .nth(1)
        .unwrap()
        .to_string()
}

/// Publishes `ca1.crt` plus the case's bad input as the next payload.
fn publish_case(node: &Node, case: &KeyCase) {
    let good = good_pem();
    let good_kv: (&str, &[u8]) = (GOOD_KEY, &good);
    if let Some(input) = &case.input {
        let value = fs::read(corpus(input)).unwrap();
        node.publish(&[good_kv, (case.key.as_str(), &value)]);
        return;
    }
    match case.generate.as_deref() {
        Some("five-mib") => {
            let mut big = good.clone();
            big.resize(5 * 1024 * 1024, b'\n');
            node.publish(&[good_kv, (case.key.as_str(), &big)]);
        }
        Some("symlink-out-of-dir") => {
            let outside = node.root.path().join("etc/outside-secret.pem");
            fs::write(&outside, fs::read(corpus("certs/issuer-ca.pem")).unwrap()).unwrap();
            let payload = node.stage(&[good_kv]);
            symlink(&outside, payload.join(&case.key)).unwrap();
            node.swap_data(payload.file_name().unwrap().to_str().unwrap());
        }
        Some("thousands-of-keys") => {
            let junk: Vec<String> = (0..3000).map(|i| format!("k{i:04}.crt")).collect();
            let mut keys: Vec<(&str, &[u8])> = vec![good_kv];
            keys.extend(junk.iter().map(|k| (k.as_str(), &good[..])));
            node.publish(&keys);
        }
        Some("subdirectory") => {
            let payload = node.stage(&[good_kv]);
            fs::create_dir(payload.join(&case.key)).unwrap();
            node.swap_data(payload.file_name().unwrap().to_str().unwrap());
        }
        Some("hardlink-out-of-dir") => {
            let outside = node.root.path().join("etc/outside-secret.pem");
            fs::write(&outside, fs::read(corpus("certs/issuer-ca.pem")).unwrap()).unwrap();
            let payload = node.stage(&[good_kv]);
            fs::hard_link(&outside, payload.join(&case.key)).unwrap();
            node.swap_data(payload.file_name().unwrap().to_str().unwrap());
        }
        Some("world-writable") => {
            let issuer = fs::read(corpus("certs/issuer-ca.pem")).unwrap();
            let payload = node.stage(&[good_kv, (case.key.as_str(), &issuer)]);
            fs::set_permissions(payload.join(&case.key), fs::Permissions::from_mode(0o666))
                .unwrap();
            node.swap_data(payload.file_name().unwrap().to_str().unwrap());
        }
        Some("data-link-to-parent") => {
            node.stage(&[good_kv]);
            node.swap_data("..");
        }
        Some("payload-link-out-of-dir") => {
            let outside = node.root.path().join("etc/outside-payload");
            fs::create_dir_all(&outside).unwrap();
            fs::write(
                outside.join("ca9.crt"),
                fs::read(corpus("certs/issuer-ca.pem")).unwrap(),
            )
            .unwrap();
            let name = "..2026_11_22_04_45_59.000000001";
            symlink(&outside, node.secret.path().join(name)).unwrap();
            node.swap_data(name);
        }
        Some("repeated-good-ca") => {
            let repeated = good.repeat(500);
            node.publish(&[good_kv, (case.key.as_str(), &repeated)]);
        }
        other => panic!("case {}: unknown generator {other:?}", case.name),
    }
}

/// The finding a case is about, chosen by what the outcome says it concerns.
fn case_findings<'a>(case: &KeyCase, findings: &'a [Finding], secret: &Path) -> Vec<&'a Finding> {
    let subject = match case.outcome.as_str() {
        "source-refused" => secret.display().to_string(),
        _ => case.key.clone(),
    };
    findings.iter().filter(|f| f.key == subject).collect()
}

fn run_key_case(case: &KeyCase) -> Result<(), String> {
    let node = Node::new();
    let r = node.reconciler(&["containerd.service"]);
    node.publish(&[(GOOD_KEY, &good_pem())]);
    let first = rt().block_on(r.reconcile()).map_err(|e| e.to_string())?;
    if first.installed.len() != 1 || node.fake.commands().len() != 1 {
        return Err(format!("setup: the good CA was not installed: {first:?}"));
    }

    publish_case(&node, case);
    let out = rt()
        .block_on(r.reconcile())
        .map_err(|e| format!("the pass failed instead of reporting a finding: {e}"))?;
    let mut problems = Vec::new();
    let found = case_findings(case, &out.findings, node.secret.path());
    let all: Vec<String> = out.findings.iter().map(ToString::to_string).collect();

    if case.finding == "none" {
        if !found.is_empty() || !out.findings.is_empty() {
            problems.push(format!(
                "expected no finding (if a known gap was fixed, update the case), got {all:?}"
            ));
        }
    } else {
        let matching: Vec<&&Finding> = found
            .iter()
            .filter(|f| format!("{:?}", f.kind) == case.finding)
            .collect();
        match matching.first() {
            None => problems.push(format!("no {} finding; findings: {all:?}", case.finding)),
            Some(f) => {
                let text = f.to_string();
                let want = if case.severity == "warning" {
                    Severity::Warning
                } else {
                    Severity::Error
                };
                if f.severity != want {
                    problems.push(format!("severity {:?}, want {want:?}: {text}", f.severity));
                }
                let lower = text.to_lowercase();
                for w in &case.words {
                    if !lower.contains(&w.to_lowercase()) {
                        problems.push(format!("message lacks {w:?}: {text}"));
                    }
                }
                let names_key = text.contains(&format!("key \"{}\"", case.key));
                let has_fix = text.contains(". Fix: ");
                match &case.known_gap {
                    None => {
                        if !names_key && case.outcome != "source-refused" {
                            problems.push(format!("message does not name the key: {text}"));
                        }
                        if !text.contains(&format!("key \"{}\"", f.key)) {
                            problems.push(format!("message does not name its subject: {text}"));
                        }
                        if !has_fix {
                            problems.push(format!("message has no fix: {text}"));
                        }
                    }
                    Some(gap) => {
                        println!("known gap in case {}: {gap}\n  message: {text}", case.name);
                        if case.gap_missing.is_empty() {
                            problems.push("a known_gap needs gap_missing".into());
                        }
                        for w in &case.gap_missing {
                            if text.contains(w.as_str()) {
                                problems.push(format!(
                                    "the known gap seems fixed (the message has {w:?}); delete known_gap and gap_missing from the case: {text}"
                                ));
                            }
                        }
                    }
                }
            }
        }
    }
    if case.finding == "none" {
        if let Some(gap) = &case.known_gap {
            println!("known gap in case {}: {gap}", case.name);
        }
    }

    // The last good state: the good CA's anchor and its place in the bundle.
    let installed = r.store().installed().map_err(|e| e.to_string())?;
    if !installed.certs.contains_key(&good_ca().fingerprint) || installed.certs.len() != 1 {
        problems.push(format!(
            "the installed set changed: {:?}",
            installed
                .certs
                .values()
                .map(|c| &c.subject)
                .collect::<Vec<_>>()
        ));
    }
    if !node.bundle().contains(&good_body_line()) {
        problems.push("the good CA is no longer in the bundle".into());
    }
    let state =
        node_cert_agent::trust::state::load(&node.state_path()).map_err(|e| e.to_string())?;
    let source = node.secret.path().display().to_string();
    let kept = state
        .key_state()
        .get(&source)
        .and_then(|keys| keys.get(GOOD_KEY))
        .is_some_and(|fps| fps == &vec![good_ca().fingerprint]);
    if !kept {
        problems.push(format!("the good key's state was lost: {:?}", state.keys));
    }
    let bad_in_state = state
        .key_state()
        .get(&source)
        .is_some_and(|keys| keys.contains_key(&case.key));
    if bad_in_state != (case.outcome == "accepted") {
        problems.push(format!(
            "the bad key in state is {bad_in_state}, outcome {}",
            case.outcome
        ));
    }
    if !out.installed.is_empty() || !out.removed.is_empty() {
        problems.push(format!(
            "installed {:?} removed {:?}",
            out.installed, out.removed
        ));
    }
    // No extra refresh and no restart, now or on the next pass.
    let again = rt().block_on(r.reconcile()).map_err(|e| e.to_string())?;
    if again.refreshed || !again.restarted.is_empty() {
        problems.push("the pass after the bad input refreshed or restarted".into());
    }
    if node.fake.commands().len() != 1 {
        problems.push(format!("refreshes: {:?}", node.fake.commands()));
    }
    if node.fake.restarts() != vec!["containerd.service"] {
        problems.push(format!("restarts: {:?}", node.fake.restarts()));
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("\n    "))
    }
}

#[test]
fn the_corpus_has_at_least_30_cases_and_each_input_exists() {
    let c = cases();
    assert!(
        c.secret_keys.len() >= 30,
        "{} key cases",
        c.secret_keys.len()
    );
    for case in &c.secret_keys {
        assert!(
            case.input.is_some() != case.generate.is_some(),
            "case {}: give input or generate",
            case.name
        );
        if let Some(input) = &case.input {
            assert!(
                corpus(input).is_file(),
                "case {}: {input} missing",
                case.name
            );
        }
    }
    for case in &c.kubeconfigs {
        assert!(corpus(&case.input).is_file(), "case {}", case.name);
    }
}

#[test]
fn every_bad_secret_key_is_reported_and_keeps_the_last_good_state() {
    let c = cases();
    let failures: Vec<String> = c
        .secret_keys
        .iter()
        .filter_map(|case| {
            run_key_case(case)
                .err()
                .map(|e| format!("case {} ({}):\n    {e}", case.name, case.key))
        })
        .collect();
    println!("{} secret-key cases run", c.secret_keys.len());
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

fn render_kubeconfig(input: &str) -> Vec<u8> {
    let bytes = fs::read(corpus(input)).unwrap();
    let b64 = |rel: &str| {
        base64::engine::general_purpose::STANDARD.encode(fs::read(corpus(rel)).unwrap())
    };
    match String::from_utf8(bytes.clone()) {
        Ok(text) => text
            .replace("@CA_DATA@", &b64("certs/good-ca.pem"))
            .replace("@CERT_DATA@", &b64("certs/leaf.pem"))
            .replace("@KEY_DATA@", &b64("certs/private-key-pkcs8.pem"))
            .into_bytes(),
        Err(_) => bytes,
    }
}

#[test]
fn every_bad_kubeconfig_fails_to_load_naming_the_file_and_the_field() {
    let c = cases();
    let mut failures = Vec::new();
    for case in &c.kubeconfigs {
        let root = tempfile::tempdir().unwrap();
        let node_path = Path::new("/var/lib/kubelet/kubeconfig");
        let host_path = root.path().join("var/lib/kubelet/kubeconfig");
        fs::create_dir_all(host_path.parent().unwrap()).unwrap();
        fs::write(&host_path, render_kubeconfig(&case.input)).unwrap();
        let host = HostRoot::new(root.path()).unwrap();
        match kubeconfig::load(&host, node_path) {
            Ok(_) => failures.push(format!("case {}: loaded", case.name)),
            Err(e) => {
                let text = e.to_string();
                let variant = format!("{e:?}");
                if !variant.starts_with(&format!("{} ", case.error)) {
                    failures.push(format!("case {}: got {variant}", case.name));
                }
                if !text.contains("/var/lib/kubelet/kubeconfig") {
                    failures.push(format!("case {}: file not named: {text}", case.name));
                }
                for w in &case.words {
                    if !text.to_lowercase().contains(&w.to_lowercase()) {
                        failures.push(format!("case {}: lacks {w:?}: {text}", case.name));
                    }
                }
                if text.contains("SECRET") || text.contains("0123456789abcdef") {
                    failures.push(format!("case {}: a secret leaked: {text}", case.name));
                }
            }
        }
    }
    println!("{} kubeconfig cases run", c.kubeconfigs.len());
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn check_exits_1_and_names_every_bad_key_of_the_corpus() {
    let out = Command::new(env!("CARGO_BIN_EXE_node-cert-agent"))
        .arg("check")
        .arg(corpus("keys"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    let c = cases();
    for case in c.secret_keys.iter().filter(|c| {
        c.input.as_deref().is_some_and(|i| i.starts_with("keys/")) && c.outcome != "accepted"
    }) {
        let file = Path::new(case.input.as_deref().unwrap())
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let refused = format!("key \"{file}\": REFUSED");
        let named = format!("key \"{file}\": ");
        assert!(
            stdout.contains(&refused) || (case.outcome == "held-back" && stdout.contains(&named)),
            "case {}: {file} not reported in:\n{stdout}",
            case.name
        );
    }
    assert!(stdout.contains("over the limit of 10"), "{stdout}");
}

#[test]
fn check_exits_1_and_names_the_generated_bad_keys() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("huge.crt"), vec![b'a'; 5 * 1024 * 1024]).unwrap();
    fs::write(dir.path().join("good.crt"), good_pem()).unwrap();
    let outside = tempfile::tempdir().unwrap();
    fs::write(outside.path().join("x.pem"), good_pem()).unwrap();
    symlink(outside.path().join("x.pem"), dir.path().join("evil.crt")).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_node-cert-agent"))
        .arg("check")
        .arg(dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("key \"huge.crt\": REFUSED"), "{stdout}");
    assert!(
        stdout.contains("error: key \"evil.crt\": the key is a link"),
        "{stdout}"
    );
    assert!(stdout.contains("key \"good.crt\": ok"), "{stdout}");
}

/// A FIFO among the keys of a plain directory (host mode) must be refused,
/// not read: opening it blocks until a writer comes, so the pass would hang.
#[test]
fn a_fifo_key_is_refused_without_blocking() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("good.crt"), good_pem()).unwrap();
    nix::unistd::mkfifo(
        &dir.path().join("pipe.crt"),
        nix::sys::stat::Mode::from_bits_truncate(0o600),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_node-cert-agent"))
        .arg("check")
        .arg(dir.path())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            child.kill().unwrap();
            child.wait().unwrap();
            panic!("`check` still blocked on the FIFO key after 5 s");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("key \"pipe.crt\""), "{stdout}");
}
