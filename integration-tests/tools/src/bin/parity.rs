//! Compares two node-cert-agent binaries on one fixture node: the output of
//! `status -o json`, of `check -o json`, and the series of `/metrics` (read
//! with a Prometheus text parser). Used to show that a restructuring
//! changed no behaviour: `parity OLD_BINARY NEW_BINARY` exits 0 when both
//! agree, and prints every difference otherwise.
//!
//! The fixture node is a directory used as the host root (as a DaemonSet
//! pod's `/host`): a Debian trust store with one agent anchor, a Secret
//! volume with that CA and a broken key, the agent's state, a stopped
//! daemon's status file, kubeadm's pki and an `admin.conf` with an embedded
//! client certificate, and kubelet's client certificate. The daemon runs
//! with the kubelet job off and no D-Bus: its pass is a no-op, so it needs
//! neither. Values that depend on the clock (`generatedAt`,
//! `residualSeconds`, `*_seconds` gauges) are compared within a tolerance.
//! With `NCA_PARITY_SHOW` set, the new binary's status JSON and series are
//! printed too.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test tool: a failed step must stop loudly"
)]

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use integration_tests::pki::TestCa;
use integration_tests::{secret_data, SecretVolume};
use serde_json::Value;

/// Seconds two readings of a clock-derived value may differ by.
const CLOCK_TOLERANCE: f64 = 30.0;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, old, new] = args.as_slice() else {
        eprintln!("usage: parity OLD_BINARY NEW_BINARY");
        std::process::exit(2);
    };
    let dir = tempfile::tempdir().unwrap();
    let fixture = Fixture::build(dir.path());
    let mut problems = Vec::new();

    let status = |bin: &str| -> Value {
        let out = Command::new(bin)
            .args(["status", "-o", "json", "--host-root"])
            .arg(&fixture.root)
            .arg("--config")
            .arg(&fixture.config)
            .output()
            .unwrap();
        serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{bin} status: not JSON ({e}): {out:?}"))
    };
    let show = std::env::var_os("NCA_PARITY_SHOW").is_some();
    let new_status = status(new);
    if show {
        println!("{}", serde_json::to_string_pretty(&new_status).unwrap());
    }
    compare_json("status", &status(old), &new_status, &mut problems);

    let check = |bin: &str| -> Value {
        let out = Command::new(bin)
            .args(["check", "-o", "json"])
            .arg(fixture.secret.dir())
            .output()
            .unwrap();
        serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{bin} check: not JSON ({e}): {out:?}"))
    };
    compare_json("check", &check(old), &check(new), &mut problems);

    let old_metrics = scrape(old, &fixture);
    let new_metrics = scrape(new, &fixture);
    if show {
        for ((name, labels), v) in &new_metrics {
            println!("{name}{labels} {v}");
        }
    }
    compare_series(&old_metrics, &new_metrics, &mut problems);

    println!(
        "compared: status -o json, check -o json, and {} /metrics series",
        old_metrics.len()
    );
    if problems.is_empty() {
        println!("parity: both binaries agree");
    } else {
        for p in &problems {
            println!("DIFFERENT: {p}");
        }
        std::process::exit(1);
    }
}

struct Fixture {
    root: PathBuf,
    config: PathBuf,
    secret: SecretVolume,
}

impl Fixture {
    fn build(base: &Path) -> Fixture {
        let root = base.join("node");
        let write = |node_path: &str, bytes: &[u8]| {
            let p = root.join(node_path.trim_start_matches('/'));
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, bytes).unwrap();
        };
        write("/etc/os-release", b"ID=debian\nVERSION_ID=12\n");
        write("/etc/hostname", b"parity-node\n");
        let ca = TestCa::new("parity CA");
        let fp = ca.sha256_fingerprint();
        write(
            &format!("/usr/local/share/ca-certificates/node-cert-agent/node-cert-agent-{fp}.crt"),
            ca.cert_pem().as_bytes(),
        );
        let distro = TestCa::new("parity distro CA");
        write(
            "/etc/ssl/certs/ca-certificates.crt",
            format!("{}{}", distro.cert_pem(), ca.cert_pem()).as_bytes(),
        );

        let secret = SecretVolume::new(base.join("custom-ca-trust-secret"));
        secret.publish(&secret_data(&[
            ("ca1.crt", ca.cert_pem().as_bytes()),
            ("broken.crt", b"-----BEGIN CERTIFICATE-----\nbroken\n"),
        ]));
        let state = serde_json::json!({
            "version": 1,
            "keys": {secret.dir().display().to_string(): {"ca1.crt": [fp]}},
            "refresh_pending": false,
            "restart_pending": [],
            "bundle_sha256": null,
            "last_success": 1_790_000_000,
        });
        write(
            "/var/lib/node-cert-agent/ca-state.json",
            serde_json::to_string_pretty(&state).unwrap().as_bytes(),
        );

        let cluster = TestCa::new("kubernetes");
        write("/etc/kubernetes/pki/ca.crt", cluster.cert_pem().as_bytes());
        let (admin_cert, admin_key) = cluster.issue_server_cert(&["kubernetes-admin"]);
        let b64 = |s: &str| {
            base64::Engine::encode(&base64::engine::general_purpose::STANDARD, s.as_bytes())
        };
        write(
            "/etc/kubernetes/admin.conf",
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: k\n  cluster:\n    server: https://127.0.0.1:6443\n    certificate-authority: pki/ca.crt\nusers:\n- name: kubernetes-admin\n  user:\n    client-certificate-data: {}\n    client-key-data: {}\ncontexts:\n- name: k\n  context: {{cluster: k, user: kubernetes-admin}}\ncurrent-context: k\n",
                b64(&admin_cert),
                b64(&admin_key)
            )
            .as_bytes(),
        );
        let (kubelet_cert, kubelet_key) = cluster.issue_server_cert(&["parity-node"]);
        write(
            "/var/lib/kubelet/pki/kubelet-client-2026-11-30-10-00-00.pem",
            format!("{kubelet_cert}{kubelet_key}").as_bytes(),
        );
        std::os::unix::fs::symlink(
            "kubelet-client-2026-11-30-10-00-00.pem",
            root.join("var/lib/kubelet/pki/kubelet-client-current.pem"),
        )
        .unwrap();
        write(
            "/var/lib/kubelet/kubeconfig",
            b"apiVersion: v1\nkind: Config\nclusters:\n- name: k\n  cluster:\n    server: https://127.0.0.1:6443\n    certificate-authority: /etc/kubernetes/pki/ca.crt\nusers:\n- name: kubelet\n  user:\n    client-certificate: /var/lib/kubelet/pki/kubelet-client-current.pem\n    client-key: /var/lib/kubelet/pki/kubelet-client-current.pem\n",
        );
        write(
            "/var/lib/kubelet/config.yaml",
            b"rotateCertificates: true\n",
        );
        // A daemon that ran and stopped cleanly.
        let daemon = serde_json::json!({
            "schemaVersion": 1, "version": "0.1.0", "mode": "pod",
            "process": {"pid": 4242, "pidNamespace": "pid:[1]", "startTicks": 1, "bootTime": 1},
            "startedAt": 1_790_000_000, "heartbeatAt": 1_790_000_100, "stoppedAt": 1_790_000_200,
            "caJob": true, "kubeletJob": false, "lastCaPass": 1_790_000_100,
            "lastCaError": null, "lastKubeletPass": null, "lastKubeletError": null,
            "nextRenewal": null, "metricsAddress": "127.0.0.1:9795", "revocationMatches": [],
        });
        write(
            "/var/lib/node-cert-agent/daemon-status.json",
            serde_json::to_string_pretty(&daemon).unwrap().as_bytes(),
        );

        let config = base.join("config.yaml");
        std::fs::write(
            &config,
            format!(
                "ca-dir: [{}]\nkubelet:\n  mode: off\n",
                secret.dir().display()
            ),
        )
        .unwrap();
        Fixture {
            root,
            config,
            secret,
        }
    }
}

/// A sample: metric name and labels, and its value.
type Series = BTreeMap<(String, String), f64>;

/// Runs `bin` as a daemon on the fixture until `/readyz` says ready, and
/// returns its `/metrics`.
fn scrape(bin: &str, fixture: &Fixture) -> Series {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let address = format!("127.0.0.1:{port}");
    let mut child = Command::new(bin)
        .args(["run", "--log-format", "json", "--metrics-address", &address])
        .arg("--host-root")
        .arg(&fixture.root)
        .arg("--config")
        .arg(&fixture.config)
        .env(
            "DBUS_SYSTEM_BUS_ADDRESS",
            "unix:path=/nonexistent/parity-bus",
        )
        .env("NCA_LOG_TARGET", "stdout")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if get(&address, "/readyz").is_some_and(|(code, _)| code == 200) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{bin}: /readyz never answered 200"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let (code, body) = get(&address, "/metrics").unwrap();
    assert_eq!(code, 200, "{bin} /metrics: {body}");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap()),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    child.wait().unwrap();
    let scrape = prometheus_parse::Scrape::parse(body.lines().map(|l| Ok(l.to_owned()))).unwrap();
    scrape
        .samples
        .into_iter()
        .map(|s| {
            let v = match s.value {
                prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Untyped(v) => v,
                other => panic!("{bin}: {} is not a plain value: {other:?}", s.metric),
            };
            ((s.metric, s.labels.to_string()), v)
        })
        .collect()
}

/// One HTTP/1.1 GET: the status code and the body.
fn get(address: &str, path: &str) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect(address).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let code = response.split_whitespace().nth(1)?.parse().ok()?;
    let body = response.split_once("\r\n\r\n")?.1.to_string();
    Some((code, body))
}

fn clock_derived(metric: &str) -> bool {
    matches!(
        metric,
        "x509_cert_expires_in_seconds"
            | "x509_cert_valid_since_seconds"
            | "node_cert_agent_last_reconcile_timestamp_seconds"
    )
}

fn compare_series(old: &Series, new: &Series, problems: &mut Vec<String>) {
    for (key, v) in old {
        match new.get(key) {
            None => problems.push(format!(
                "/metrics: {}{} only in the old binary",
                key.0, key.1
            )),
            Some(w) if clock_derived(&key.0) && (v - w).abs() <= CLOCK_TOLERANCE => {}
            Some(w) if v != w => problems.push(format!(
                "/metrics: {}{} is {v} in the old, {w} in the new",
                key.0, key.1
            )),
            Some(_) => {}
        }
    }
    for key in new.keys().filter(|k| !old.contains_key(*k)) {
        problems.push(format!(
            "/metrics: {}{} only in the new binary",
            key.0, key.1
        ));
    }
}

fn compare_json(what: &str, old: &Value, new: &Value, problems: &mut Vec<String>) {
    walk(what, old, new, problems);
}

fn walk(path: &str, old: &Value, new: &Value, problems: &mut Vec<String>) {
    let key = path.rsplit('.').next().unwrap_or_default();
    match (old, new) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in a {
                match b.get(k) {
                    Some(w) => walk(&format!("{path}.{k}"), v, w, problems),
                    None => problems.push(format!("{path}.{k} only in the old binary")),
                }
            }
            for k in b.keys().filter(|k| !a.contains_key(*k)) {
                problems.push(format!("{path}.{k} only in the new binary"));
            }
        }
        (Value::Array(a), Value::Array(b)) if a.len() == b.len() => {
            for (i, (v, w)) in a.iter().zip(b).enumerate() {
                walk(&format!("{path}[{i}]"), v, w, problems);
            }
        }
        (Value::Number(a), Value::Number(b)) if key == "residualSeconds" => {
            let (a, b) = (a.as_f64().unwrap_or(0.0), b.as_f64().unwrap_or(0.0));
            if (a - b).abs() > CLOCK_TOLERANCE {
                problems.push(format!("{path}: {a} in the old, {b} in the new"));
            }
        }
        _ if key == "generatedAt" => {}
        (a, b) if a != b => problems.push(format!("{path}: {a} in the old, {b} in the new")),
        _ => {}
    }
}
