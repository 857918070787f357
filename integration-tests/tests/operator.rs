//! The operator surface on real nodes: `node-cert-agent status` in the node
//! shell (while the daemon runs and after it stopped), `/metrics`,
//! `/healthz` and `/readyz` of a pod-mode agent parsed with a Prometheus text
//! parser, and the structured journald fields of the CA `status` lists.
//!
//! (`ca_trust.rs`'s `journald_fields_host` checks every CA_* field of the
//! install line; here the journal is only tied to what `status` shows.)
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a failed step must panic loudly"
)]

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Output;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use integration_tests::agent::{self, Agent, Mode, PodModeAgent};
use integration_tests::http_get;
use integration_tests::pki::{self, TestCa};
use integration_tests::{preflight, Node};
use openssl::asn1::{Asn1Time, Asn1TimeRef};
use openssl::x509::X509Ref;
use serde_json::Value;

/// How long the daemon may take to publish a pass in its status file.
const STATUS_TIMEOUT: Duration = Duration::from_secs(15);
const DAY: i64 = 86_400;
/// Where the Debian family keeps the agent's anchors (node path).
const DEBIAN_ANCHORS: &str = "/usr/local/share/ca-certificates/node-cert-agent";

fn data(pairs: &[(&str, &[u8])]) -> BTreeMap<String, Vec<u8>> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.to_vec()))
        .collect()
}

fn now() -> i64 {
    i64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs(),
    )
    .unwrap()
}

fn unix(t: &Asn1TimeRef) -> i64 {
    let d = Asn1Time::from_unix(0).unwrap().diff(t).unwrap();
    i64::from(d.days) * DAY + i64::from(d.secs)
}

fn not_after(c: &X509Ref) -> i64 {
    unix(c.not_after())
}

fn not_before(c: &X509Ref) -> i64 {
    unix(c.not_before())
}

/// RFC 3339 UTC, as the agent prints it.
fn rfc3339(t: i64) -> String {
    // `date` is on every node and host; keep the test free of a date crate.
    let out = std::process::Command::new("date")
        .args(["-u", "-d", &format!("@{t}"), "+%Y-%m-%dT%H:%M:%SZ"])
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// kubeadm's date format, as `status` prints it.
fn kubeadm_date(t: i64) -> String {
    let out = std::process::Command::new("date")
        .args(["-u", "-d", &format!("@{t}"), "+%b %d, %Y %H:%M UTC"])
        .env("LC_ALL", "C")
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn describe(o: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        o.status.code(),
        stdout(o),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// `node-cert-agent status ARGS` in the node shell.
fn status_in_node(node: &Node, args: &[&str]) -> Output {
    let argv: Vec<&str> = ["node-cert-agent", "status"]
        .into_iter()
        .chain(args.iter().copied())
        .collect();
    node.exec(&argv)
}

/// `status --output json` in the node shell, parsed, with its exit code.
fn status_json(node: &Node, args: &[&str]) -> (i32, Value) {
    let mut argv = vec!["--output", "json"];
    argv.extend_from_slice(args);
    let out = status_in_node(node, &argv);
    let code = out.status.code().unwrap_or(-1);
    let v: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("status printed no JSON ({e}):\n{}", describe(&out)));
    (code, v)
}

/// The `customCas` row of `key`.
fn ca_row<'a>(v: &'a Value, key: &str) -> &'a Value {
    v["customCas"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["key"] == key)
        .unwrap_or_else(|| panic!("status lists no custom CA key {key}: {v:#}"))
}

/// The `nodeCertificates` row named `name`.
fn node_cert_row<'a>(v: &'a Value, name: &str) -> &'a Value {
    v["nodeCertificates"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == name)
        .unwrap_or_else(|| panic!("status lists no node certificate {name}: {v:#}"))
}

/// Asserts what `status` must say about the installed `ca` under `key`.
fn assert_ca_listed(v: &Value, ca: &TestCa, key: &str, context: &str) {
    let row = ca_row(v, key);
    assert_eq!(
        row["sha256"].as_str(),
        Some(ca.sha256_fingerprint().as_str()),
        "{context}: {row:#}"
    );
    assert_eq!(
        row["notAfter"].as_str(),
        Some(rfc3339(not_after(ca.cert())).as_str()),
        "{context}: {row:#}"
    );
    assert_eq!(
        row["notBefore"].as_str(),
        Some(rfc3339(not_before(ca.cert())).as_str()),
        "{context}: {row:#}"
    );
    for flag in ["anchorPresent", "inBundle", "installed"] {
        assert_eq!(row[flag], true, "{context}: {flag} in {row:#}");
    }
    assert!(
        row["findings"].as_array().unwrap().is_empty(),
        "{context}: {row:#}"
    );
}

/// The table row of `key` split into its cells.
fn table_row(table: &str, key: &str) -> Vec<String> {
    table
        .lines()
        .find(|l| l.starts_with(key))
        .unwrap_or_else(|| panic!("the status table has no row for {key}:\n{table}"))
        .split("   ")
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .map(str::to_owned)
        .collect()
}

/// A kubeconfig with one user whose client certificate is embedded.
fn kubeconfig_with_client_cert(user: &str, cert_pem: &str) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(cert_pem);
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: k\n  cluster:\n    server: https://127.0.0.1:6443\n\
         users:\n- name: {user}\n  user:\n    client-certificate-data: {b64}\n"
    )
}

/// Copies the agent binary into the node (for `status` in a pod-mode node's shell).
fn install_binary(node: &Node) {
    let to = node.host_path(agent::NODE_BINARY);
    std::fs::create_dir_all(to.parent().unwrap()).unwrap();
    std::fs::copy(agent::agent_binary(), &to).unwrap();
}

// ---------------------------------------------------------------------------
// 1. `status` in the node shell (host mode), daemon running, then stopped.
// ---------------------------------------------------------------------------

#[test]
fn status_in_the_node_shell_host() {
    preflight();
    let node = Node::boot("status-host");
    let agent = Agent::start(&node, Mode::Host);
    // A minute short of a day, so its residual time reads 23h however fast
    // `status` runs after it was made.
    let ca = TestCa::with_validity("nca status CA", now() - 3600, now() + DAY - 60);
    let (_, entries) = agent.publish_and_wait(&data(&[("ca1.crt", ca.cert_pem().as_bytes())]));
    assert!(
        entries
            .iter()
            .any(|e| e.message.starts_with("installed CA")),
        "the pass did not install the CA:\n{}",
        agent::render_tail(&entries, 20)
    );
    // Kubernetes certificates beside it: a long-lived cluster CA, and an
    // admin kubeconfig with an embedded client certificate.
    // Just under ten years: 9y, as kubeadm shows a fresh cluster CA.
    let kube_ca = TestCa::with_validity("kubernetes", now() - DAY, now() + 3650 * DAY - 60);
    node.write_file(
        "/etc/kubernetes/pki/ca.crt",
        kube_ca.cert_pem().as_bytes(),
        0o644,
    );
    let (admin_cert, _) = kube_ca.issue_server_cert(&["kubernetes-admin"]);
    node.write_file(
        "/etc/kubernetes/admin.conf",
        kubeconfig_with_client_cert("kubernetes-admin", &admin_cert).as_bytes(),
        0o600,
    );

    // The daemon publishes each pass in its status file; wait for this one.
    let pid = node.main_pid(agent::AGENT_UNIT);
    let mut last = Value::Null;
    let ready = integration_tests::wait_until_or_timeout(STATUS_TIMEOUT, || {
        let (_, v) = status_json(&node, &[]);
        let ok = v["agent"]["running"] == true
            && v["agent"]["lastReconcile"].is_string()
            && v["customCas"]
                .as_array()
                .is_some_and(|a| a.iter().any(|r| r["installed"] == true));
        last = v;
        ok
    });
    assert!(
        ready,
        "status never showed the running daemon and the installed CA: {last:#}"
    );

    // --- The table, as an operator reads it.
    let out = status_in_node(&node, &[]);
    let table = stdout(&out);
    println!(
        "--- `node-cert-agent status` in node {} (daemon running) ---\n{table}",
        node.name()
    );
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert!(
        table.contains(&format!("running (pid {pid} is alive)")),
        "{table}"
    );
    assert!(table.contains("HEALTH: ok"), "{table}");
    let fp = ca.sha256_fingerprint();
    assert_eq!(
        table_row(&table, "ca1.crt"),
        vec![
            "ca1.crt".to_owned(),
            "CN=nca status CA".to_owned(),
            fp[..16].to_owned(),
            kubeadm_date(not_after(ca.cert())),
            "23h".to_owned(),
            "yes".to_owned(),
            "-".to_owned(),
        ],
        "{table}"
    );
    assert!(table.contains("1 of 1"), "agent CAs in bundle:\n{table}");
    let kube_row = table_row(&table, "/etc/kubernetes/pki/ca.crt");
    assert_eq!(
        kube_row[1..],
        [
            kubeadm_date(not_after(kube_ca.cert())),
            "9y".to_owned(),
            "kubernetes".to_owned(),
            "-".to_owned(),
            "ok".to_owned()
        ],
        "{table}"
    );
    assert!(
        table.contains("/etc/kubernetes/admin.conf#user:kubernetes-admin"),
        "{table}"
    );

    // --- The JSON, as a script reads it.
    let (code, v) = status_json(&node, &[]);
    println!("--- `node-cert-agent status --output json` (daemon running) ---\n{v:#}");
    assert_eq!(code, 0, "{v:#}");
    assert_eq!(v["schemaVersion"], 1);
    assert_eq!(v["healthy"], true, "{v:#}");
    assert_eq!(v["agent"]["running"], true);
    assert_eq!(v["agent"]["runningCheck"], "pid");
    assert_eq!(v["agent"]["pid"], pid);
    assert_eq!(v["agent"]["mode"], "host");
    assert_eq!(v["agent"]["lastError"], Value::Null);
    assert_eq!(v["agent"]["metricsAddress"], "127.0.0.1:9795");
    assert_eq!(v["trustStore"]["family"], "debian");
    assert_eq!(v["trustStore"]["agentCasInBundle"], 1);
    assert_ca_listed(&v, &ca, "ca1.crt", "daemon running");
    let row = node_cert_row(&v, "/etc/kubernetes/pki/ca.crt");
    assert_eq!(
        row["notAfter"].as_str(),
        Some(rfc3339(not_after(kube_ca.cert())).as_str())
    );
    assert_eq!(row["status"], "ok");

    // --- journald has the same CA, with its structured fields.
    let journal = node.journal_json(&["-u", agent::AGENT_UNIT]);
    let entry = journal
        .iter()
        .find(|e| e["CA_FINGERPRINT"] == fp.as_str())
        .unwrap_or_else(|| panic!("no journal entry has CA_FINGERPRINT={fp}"));
    assert_eq!(entry["SYSLOG_IDENTIFIER"], agent::SYSLOG_IDENTIFIER);
    assert_eq!(entry["CA_KEY"], "ca1.crt");
    assert_eq!(entry["CA_SUBJECT"], ca_row(&v, "ca1.crt")["subject"]);
    println!(
        "--- journalctl -u {} -o json (the install line) ---\n{entry}",
        agent::AGENT_UNIT
    );

    // --- The daemon stops: status still shows the node, and says so.
    node.exec_ok(&["systemctl", "stop", agent::AGENT_UNIT]);
    let out = status_in_node(&node, &[]);
    let table = stdout(&out);
    println!(
        "--- `node-cert-agent status` after `systemctl stop {}` ---\n{table}",
        agent::AGENT_UNIT
    );
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert!(table.contains("not running (stopped at "), "{table}");
    assert_eq!(table_row(&table, "ca1.crt")[2], fp[..16], "{table}");
    let (code, v) = status_json(&node, &[]);
    assert_eq!(code, 0, "{v:#}");
    assert_eq!(v["agent"]["running"], false);
    assert_eq!(v["agent"]["runningCheck"], "stopped");
    assert!(v["agent"]["lastReconcile"].is_string(), "{v:#}");
    assert_ca_listed(&v, &ca, "ca1.crt", "daemon stopped");

    // A daemon killed without a chance to say so is seen by its pid.
    node.exec_ok(&["systemctl", "start", agent::AGENT_UNIT]);
    node.wait_until(STATUS_TIMEOUT, "status sees the restarted daemon", || {
        status_json(&node, &[]).1["agent"]["running"] == true
    });
    node.exec_ok(&["systemctl", "kill", "-s", "SIGKILL", agent::AGENT_UNIT]);
    node.exec_ok(&["systemctl", "stop", agent::AGENT_UNIT]);
    let (_, v) = status_json(&node, &[]);
    assert_eq!(v["agent"]["running"], false, "{v:#}");
    assert_eq!(v["agent"]["runningCheck"], "pid", "{v:#}");

    // --- An expired node certificate makes the node unhealthy: exit 1.
    let expired = pki::expired_ca("etcd-ca");
    node.write_file(
        "/etc/kubernetes/pki/etcd/ca.crt",
        expired.cert_pem().as_bytes(),
        0o644,
    );
    let out = status_in_node(&node, &[]);
    let table = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let row = table_row(&table, "/etc/kubernetes/pki/etcd/ca.crt");
    assert_eq!(row[2], "<invalid>", "{table}");
    assert_eq!(row.last().map(String::as_str), Some("EXPIRED"), "{table}");
    assert!(table.contains("HEALTH: UNHEALTHY (1 problem)"), "{table}");
    let (code, v) = status_json(&node, &[]);
    assert_eq!(code, 1);
    assert_eq!(v["healthy"], false);
    assert_eq!(v["problems"][0]["kind"], "expired", "{v:#}");
    assert_eq!(
        v["problems"][0]["subject"],
        "/etc/kubernetes/pki/etcd/ca.crt"
    );
}

// ---------------------------------------------------------------------------
// 2. /metrics of a pod-mode agent, parsed; `status` seen from the node shell
//    (another pid namespace: by the daemon's lock) and from the "pod" (by pid).
// ---------------------------------------------------------------------------

/// A TCP port free on this host right now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn gauge(scrape: &prometheus_parse::Scrape, metric: &str, label: &str, value: &str) -> f64 {
    let s = scrape
        .samples
        .iter()
        .find(|s| s.metric == metric && s.labels.get(label) == Some(value))
        .unwrap_or_else(|| {
            panic!(
                "no sample {metric}{{{label}=\"{value}\"}}; samples of {metric}: {:?}",
                scrape
                    .samples
                    .iter()
                    .filter(|s| s.metric == metric)
                    .map(|s| s.labels.to_string())
                    .collect::<Vec<_>>()
            )
        });
    match s.value {
        prometheus_parse::Value::Gauge(v)
        | prometheus_parse::Value::Counter(v)
        | prometheus_parse::Value::Untyped(v) => v,
        ref other => panic!("{metric} is not a plain value: {other:?}"),
    }
}

#[test]
fn metrics_of_a_pod_mode_agent() {
    preflight();
    let node = Node::boot("metrics-pod");
    let port = free_port();
    let address = format!("127.0.0.1:{port}");
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("custom-ca-trust-secret");
    let agent = Agent::Pod(PodModeAgent::start(
        &node,
        &secret,
        &["--metrics-address", &address],
    ));
    let ca = TestCa::new("nca metrics CA");
    agent.publish_and_wait(&data(&[("ca1.crt", ca.cert_pem().as_bytes())]));
    let kube_ca = TestCa::with_validity("kubernetes", now() - DAY, now() + 3650 * DAY);
    node.write_file(
        "/etc/kubernetes/pki/ca.crt",
        kube_ca.cert_pem().as_bytes(),
        0o644,
    );

    let (code, body) = http_get(port, "/healthz");
    assert_eq!((code, body.as_str()), (200, "ok\n"));
    let (code, _) = http_get(port, "/readyz");
    assert_eq!(code, 200, "ready after the first pass");
    assert_eq!(http_get(port, "/nope").0, 404);

    let (code, body) = http_get(port, "/metrics");
    assert_eq!(code, 200, "{body}");
    println!("--- /metrics of the pod-mode agent ---\n{body}");
    let scrape = prometheus_parse::Scrape::parse(body.lines().map(|l| Ok(l.to_owned()))).unwrap();

    // The installed CA, by its anchor file, with the exporter's labels.
    let anchor = format!(
        "{DEBIAN_ANCHORS}/node-cert-agent-{}.crt",
        ca.sha256_fingerprint()
    );
    let at = now();
    assert_eq!(
        gauge(&scrape, "x509_cert_not_after", "filepath", &anchor),
        not_after(ca.cert()) as f64
    );
    assert_eq!(
        gauge(&scrape, "x509_cert_not_before", "filepath", &anchor),
        not_before(ca.cert()) as f64
    );
    assert_eq!(
        gauge(&scrape, "x509_cert_expired", "filepath", &anchor),
        0.0
    );
    let expires_in = gauge(&scrape, "x509_cert_expires_in_seconds", "filepath", &anchor);
    assert!(
        (expires_in - (not_after(ca.cert()) - at) as f64).abs() < 120.0,
        "x509_cert_expires_in_seconds {expires_in} vs notAfter - now"
    );
    let sample = scrape
        .samples
        .iter()
        .find(|s| s.metric == "x509_cert_not_after" && s.labels.get("filepath") == Some(&anchor))
        .unwrap();
    assert_eq!(sample.labels.get("subject_CN"), Some("nca metrics CA"));
    assert_eq!(sample.labels.get("issuer_CN"), Some("nca metrics CA"));
    let serial_dec = ca
        .cert()
        .serial_number()
        .to_bn()
        .unwrap()
        .to_dec_str()
        .unwrap()
        .to_string();
    assert_eq!(
        sample.labels.get("serial_number"),
        Some(serial_dec.as_str())
    );
    // A node certificate, and no read errors.
    assert_eq!(
        gauge(
            &scrape,
            "x509_cert_not_after",
            "filepath",
            "/etc/kubernetes/pki/ca.crt"
        ),
        not_after(kube_ca.cert()) as f64
    );
    let read_errors = scrape
        .samples
        .iter()
        .find(|s| s.metric == "x509_read_errors")
        .unwrap();
    assert_eq!(read_errors.value, prometheus_parse::Value::Gauge(0.0));
    // The agent's own metrics.
    assert_eq!(
        gauge(
            &scrape,
            "node_cert_agent_build_info",
            "version",
            env!("CARGO_PKG_VERSION")
        ),
        1.0
    );
    assert_eq!(
        gauge(
            &scrape,
            "node_cert_agent_trust_store_refreshes_total",
            "result",
            "success"
        ),
        1.0
    );
    assert_eq!(
        gauge(
            &scrape,
            "node_cert_agent_unit_restarts_total",
            "unit",
            "containerd.service"
        ),
        1.0
    );
    let last = scrape
        .samples
        .iter()
        .find(|s| s.metric == "node_cert_agent_last_reconcile_timestamp_seconds")
        .unwrap();
    match last.value {
        prometheus_parse::Value::Gauge(t) => assert!((t - at as f64).abs() < 120.0, "{t}"),
        ref other => panic!("{other:?}"),
    }

    // `status` on the host, in the pod's pid namespace: decided by pid.
    let host_status = std::process::Command::new(agent::agent_binary())
        .args(["status", "--output", "json", "--host-root"])
        .arg(node.root())
        .output()
        .unwrap();
    let v: Value = serde_json::from_slice(&host_status.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", describe(&host_status)));
    assert_eq!(v["agent"]["running"], true, "{v:#}");
    assert_eq!(v["agent"]["runningCheck"], "pid");
    assert_eq!(v["agent"]["mode"], "pod");
    assert_eq!(v["agent"]["metricsAddress"], address.as_str());
    assert_ca_listed(&v, &ca, "ca1.crt", "pod mode, from the host");
    // ... and in the node shell, another pid namespace: by the lock the
    // daemon holds on <state-dir>/daemon.lock.
    install_binary(&node);
    let (code, v) = status_json(&node, &[]);
    assert_eq!(code, 0, "{v:#}");
    assert_eq!(v["agent"]["running"], true, "{v:#}");
    assert_eq!(v["agent"]["runningCheck"], "lock");
    assert_ca_listed(&v, &ca, "ca1.crt", "pod mode, from the node shell");
    assert!(Path::new(&node.host_path("/var/lib/node-cert-agent/daemon-status.json")).exists());

    // Killed without a chance to say so: the kernel dropped the lock, and
    // the node shell sees it within moments (no heartbeat to wait out).
    let Agent::Pod(pod) = &agent else {
        unreachable!("started in pod mode")
    };
    let pid = pod.pid().expect("the pod-mode agent runs");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    // The kernel drops the lock once the last thread of the process is gone
    // (its leader may show as a zombie before the other threads exit).
    let mut v = Value::Null;
    integration_tests::wait_until(
        Duration::from_secs(10),
        "status to see the killed agent gone",
        || {
            v = status_json(&node, &[]).1;
            v["agent"]["running"] == false
        },
    );
    assert_eq!(v["agent"]["runningCheck"], "lock", "{v:#}");
    assert!(
        v["agent"]["runningDetail"]
            .as_str()
            .is_some_and(|d| d.contains("exited without stopping cleanly")),
        "{v:#}"
    );
}

/// The wrong overlay in a pod: the family's anchors directory is not
/// mounted writable (here: bind-mounted read-only onto itself). The start's
/// probe names the family and the overlay to apply, in the log and in
/// `/readyz` (503), instead of a bare EROFS on every pass; fixed, the next
/// pass succeeds and the agent is ready.
#[test]
fn a_read_only_anchors_directory_names_the_overlay_to_apply_in_readyz() {
    preflight();
    let node = Node::boot("ro-overlay");
    let anchors = "/usr/local/share/ca-certificates/node-cert-agent";
    node.exec_ok(&["mkdir", "-p", anchors]);
    node.exec_ok(&["mount", "--bind", anchors, anchors]);
    node.exec_ok(&["mount", "-o", "remount,bind,ro", anchors]);
    let port = free_port();
    let address = format!("127.0.0.1:{port}");
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("custom-ca-trust-secret");
    let agent = PodModeAgent::start(&node, &secret, &["--metrics-address", &address]);
    let ca = TestCa::new("nca overlay CA");
    agent
        .secret()
        .publish(&data(&[("ca1.crt", ca.cert_pem().as_bytes())]));
    integration_tests::wait_until(Duration::from_secs(30), "the failed pass", || {
        agent
            .logs()
            .iter()
            .any(|e| e.message.contains("Read-only file system"))
    });
    let (code, body) = http_get(port, "/readyz");
    assert_eq!(code, 503, "{body}");
    assert!(
        body.contains("this node is debian") && body.contains("manifests/overlays/debian"),
        "{body}"
    );
    assert!(
        agent
            .logs()
            .iter()
            .any(|e| e.error && e.message.contains("manifests/overlays/debian")),
        "{}",
        agent::render_tail(&agent.logs(), 20)
    );
    // Mounted writable (the right overlay): the next pass installs the CA
    // and the agent is ready.
    node.exec_ok(&["umount", anchors]);
    agent.secret().publish(&data(&[
        ("ca1.crt", ca.cert_pem().as_bytes()),
        (
            "ca2.crt",
            TestCa::new("nca overlay CA 2").cert_pem().as_bytes(),
        ),
    ]));
    integration_tests::wait_until(Duration::from_secs(30), "/readyz 200", || {
        http_get(port, "/readyz").0 == 200
    });
}

/// `status --output json --host-root <node>` from the host, as in a pod
/// (the node's bus through its socket under the root).
fn status_from_host(node: &Node) -> (i32, Value) {
    let out = std::process::Command::new(agent::agent_binary())
        .args(["status", "--output", "json", "--host-root"])
        .arg(node.root())
        .output()
        .unwrap();
    let v: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("status printed no JSON ({e}):\n{}", describe(&out)));
    (out.status.code().unwrap_or(-1), v)
}

/// containerd's own environment: a unit that sets
/// `SSL_CERT_FILE` takes its roots from there, not from the OS bundle the
/// agent writes. `status`, run in the node, reads the unit's environment
/// over D-Bus (a drop-in here) and says so: `trustStore.runtimeRoots` and a
/// `mismatch` problem naming the unit, the variable and the fix.
#[test]
fn status_says_when_containerds_environment_points_its_roots_elsewhere() {
    preflight();
    let node = Node::boot("runtime-roots");
    node.write_file(
        "/etc/systemd/system/containerd.service.d/roots.conf",
        b"[Service]\nEnvironment=SSL_CERT_FILE=/opt/corp/roots.pem\n",
        0o644,
    );
    node.systemctl(&["daemon-reload"]);
    let (code, v) = status_from_host(&node);
    assert_eq!(code, 1, "{v}");
    assert_eq!(
        v["trustStore"]["runtimeRoots"],
        serde_json::json!([{"unit": "containerd.service", "variable": "SSL_CERT_FILE", "value": "/opt/corp/roots.pem"}]),
        "{v}"
    );
    let problem = v["problems"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["subject"] == "containerd.service")
        .unwrap_or_else(|| panic!("no problem about containerd.service: {v}"));
    assert_eq!(problem["kind"], "mismatch");
    assert!(
        problem["message"]
            .as_str()
            .unwrap()
            .contains("SSL_CERT_FILE=/opt/corp/roots.pem"),
        "{problem}"
    );
    // Pointed at the OS bundle: reported, no problem.
    node.write_file(
        "/etc/systemd/system/containerd.service.d/roots.conf",
        b"[Service]\nEnvironment=SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt\n",
        0o644,
    );
    node.systemctl(&["daemon-reload"]);
    let (_, v) = status_from_host(&node);
    assert_eq!(v["trustStore"]["runtimeRoots"].as_array().unwrap().len(), 1);
    assert!(
        !v["problems"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["subject"] == "containerd.service"),
        "{v}"
    );
}
