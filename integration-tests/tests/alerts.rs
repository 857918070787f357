//! The shipped alerts (`manifests/examples/prometheusrule.yaml`) under
//! `promtool test rules`, against series recorded from a real agent's
//! /metrics: a pod-mode agent on a systemd-nspawn node is driven through
//! healthy, an expiring CA with a refused key, a failing refresh tool, a
//! failing containerd restart, and healthy again; each stage's scrapes
//! (real values, with the `job` and `instance` labels Prometheus adds)
//! become promtool's input series on a compressed time axis. Each alert
//! must fire in its stage, with the labels and annotations the recorded
//! series give it, and none in the healthy stages.
//!
//! Needs root (the node) and `promtool` (Debian's `prometheus`; installed
//! with apt-get when missing). Nothing is skipped: a missing tool fails.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use integration_tests::agent::{Agent, PodModeAgent};
use integration_tests::pki::TestCa;
use integration_tests::prometheus_rule;
use integration_tests::{http_get, preflight, secret_data, Node};
use node_cert_agent::time::now_unix;

const REFRESH_TOOL: &str = "/usr/sbin/update-ca-certificates";
const FAILING_DROP_IN: &str = "/etc/systemd/system/containerd.service.d/nca-alerts-fault.conf";
const JOB: &str = "node-cert-agent";
const DAY: i64 = 86400;
/// How long a stage waits for the agent to show its fault in /metrics.
const STAGE_TIMEOUT: Duration = Duration::from_secs(180);

/// `promtool`, installed from Debian's `prometheus` when missing.
fn promtool() -> PathBuf {
    let find = || {
        std::env::var_os("PATH")
            .map(|p| {
                std::env::split_paths(&p)
                    .map(|d| d.join("promtool"))
                    .find(|p| p.is_file())
            })
            .unwrap_or_default()
    };
    if let Some(p) = find() {
        return p;
    }
    eprintln!("alerts: promtool missing; installing Debian's prometheus package");
    for args in [
        &["update", "-qq"][..],
        &[
            "install",
            "-y",
            "-qq",
            "--no-install-recommends",
            "prometheus",
        ][..],
    ] {
        let s = Command::new("apt-get")
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .expect("apt-get must run to install promtool");
        assert!(
            s.success(),
            "apt-get {args:?} failed ({s}): install Debian's prometheus package"
        );
    }
    find().expect("the prometheus package installed no promtool on PATH")
}

/// One sample of a scrape: the series (`name{labels}`, with job and
/// instance), its name, labels and value.
#[derive(Debug, Clone)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

impl Sample {
    fn series(&self) -> String {
        let labels: Vec<String> = self
            .labels
            .iter()
            .map(|(k, v)| format!("{k}={}", serde_json::to_string(v).unwrap()))
            .collect();
        format!("{}{{{}}}", self.name, labels.join(", "))
    }
}

/// Parses one line of Prometheus text (the agent's labels are
/// `k="v"` pairs with Go-style escapes, which JSON string syntax reads).
fn parse_line(line: &str, instance: &str) -> Option<Sample> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let (series, value) = line.rsplit_once(' ').unwrap();
    let value: f64 = value.parse().unwrap_or_else(|e| panic!("{line}: {e}"));
    let (name, mut labels) = match series.split_once('{') {
        None => (series.to_string(), BTreeMap::new()),
        Some((name, rest)) => {
            let body = rest.strip_suffix('}').unwrap();
            let mut labels = BTreeMap::new();
            let mut rest = body;
            while !rest.is_empty() {
                let (k, after) = rest.split_once("=\"").unwrap();
                // The value ends at the first unescaped quote.
                let bytes = after.as_bytes();
                let mut end = 0;
                while bytes[end] != b'"' {
                    end += if bytes[end] == b'\\' { 2 } else { 1 };
                }
                let v: String = serde_json::from_str(&format!("\"{}\"", &after[..end])).unwrap();
                labels.insert(k.trim().to_string(), v);
                rest = after[end + 1..].trim_start_matches(',').trim_start();
            }
            (name.to_string(), labels)
        }
    };
    labels.insert("job".into(), JOB.into());
    labels.insert("instance".into(), instance.into());
    Some(Sample {
        name,
        labels,
        value,
    })
}

struct Recorder {
    port: u16,
    instance: String,
    /// (scrape, minutes it spans) in order.
    stages: Vec<(Vec<Sample>, u32)>,
}

impl Recorder {
    fn scrape(&self) -> Vec<Sample> {
        let (code, body) = http_get(self.port, "/metrics");
        assert_eq!(code, 200, "{body}");
        body.lines()
            .filter_map(|l| parse_line(l, &self.instance))
            .collect()
    }

    /// The minute at which the next recorded scrape starts.
    fn now_minute(&self) -> u32 {
        self.stages.iter().map(|(_, m)| m).sum()
    }

    fn record(&mut self, scrape: Vec<Sample>, minutes: u32) -> u32 {
        let at = self.now_minute();
        self.stages.push((scrape, minutes));
        at
    }

    /// Scrapes until `ok` holds for a scrape, or fails naming `what`.
    fn scrape_until(&self, what: &str, ok: impl Fn(&[Sample]) -> bool) -> Vec<Sample> {
        let start = Instant::now();
        loop {
            let s = self.scrape();
            if ok(&s) {
                return s;
            }
            assert!(
                start.elapsed() < STAGE_TIMEOUT,
                "the agent's /metrics never showed {what}; last scrape:\n{}",
                s.iter()
                    .map(|x| format!("{} {}", x.series(), x.value))
                    .collect::<Vec<_>>()
                    .join("\n")
            );
            std::thread::sleep(Duration::from_secs(1));
        }
    }

    /// promtool's `input_series`: every series seen, one value a minute,
    /// `_` where a scrape did not have it.
    fn input_series(&self) -> Vec<serde_json::Value> {
        let mut all: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let total = self.now_minute() as usize;
        let mut minute = 0usize;
        for (scrape, span) in &self.stages {
            for s in scrape {
                let values = all
                    .entry(s.series())
                    .or_insert_with(|| vec!["_".to_string(); total]);
                for v in values.iter_mut().skip(minute).take(*span as usize) {
                    *v = s.value.to_string();
                }
            }
            minute += *span as usize;
        }
        all.into_iter()
            .map(|(series, values)| serde_json::json!({"series": series, "values": values.join(" ")}))
            .collect()
    }
}

fn value(scrape: &[Sample], name: &str, label: (&str, &str)) -> f64 {
    scrape
        .iter()
        .filter(|s| s.name == name && s.labels.get(label.0).map(String::as_str) == Some(label.1))
        .map(|s| s.value)
        .sum()
}

/// The rule of `alert`, its labels and annotation templates.
fn rule(alert: &str) -> prometheus_rule::Rule {
    prometheus_rule::example()
        .spec
        .groups
        .into_iter()
        .flat_map(|g| g.rules)
        .find(|r| r.alert.as_deref() == Some(alert))
        .unwrap_or_else(|| panic!("the PrometheusRule has no alert {alert}"))
}

/// The alert `alert` fires for `labels` (the expression's result labels):
/// the rule's labels added, its annotations rendered with them (the
/// shipped annotations use only `{{ $labels.x }}`).
fn firing(alert: &str, labels: &BTreeMap<String, String>) -> serde_json::Value {
    let r = rule(alert);
    let mut all = labels.clone();
    all.extend(r.labels.clone());
    let annotations: BTreeMap<String, String> = r
        .annotations
        .iter()
        .map(|(k, t)| {
            let mut text = t.clone();
            for (lk, lv) in &all {
                text = text.replace(&format!("{{{{ $labels.{lk} }}}}"), lv);
            }
            assert!(
                !text.contains("{{"),
                "{alert}: template the test cannot render: {t}"
            );
            (k.clone(), text)
        })
        .collect();
    serde_json::json!({"exp_labels": all, "exp_annotations": annotations})
}

fn only(labels: &[(&str, &str)]) -> BTreeMap<String, String> {
    labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn minutes(m: u32) -> String {
    format!("{m}m")
}

#[test]
fn the_shipped_alerts_fire_on_a_real_agents_series() {
    preflight();
    let promtool = promtool();
    let node = Node::boot("alerts");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let address = format!("127.0.0.1:{port}");
    let dir = tempfile::tempdir().unwrap();
    let agent = Agent::Pod(PodModeAgent::start(
        &node,
        &dir.path().join("custom-ca-trust-secret"),
        &["--metrics-address", &address],
    ));
    let instance = format!("{}:{port}", node.name());
    let mut rec = Recorder {
        port,
        instance: instance.clone(),
        stages: vec![],
    };
    let agent_labels = only(&[("job", JOB), ("instance", &instance)]);
    let mut tests: Vec<serde_json::Value> = Vec::new();
    let mut expect = |at: u32, alert: &str, alerts: Vec<serde_json::Value>| {
        tests.push(
            serde_json::json!({"eval_time": minutes(at), "alertname": alert, "exp_alerts": alerts}),
        );
    };
    const ALL: [&str; 5] = [
        "NodeCertAgentCertificateExpiring",
        "NodeCertAgentInputErrors",
        "NodeCertAgentTrustStoreRefreshFailed",
        "NodeCertAgentUnitRestartFailed",
        "NodeCertAgentNotConverged",
    ];

    // Stage 0, healthy: one valid CA (23 of its 25 hours left).
    agent.publish_and_wait(&secret_data(&[(
        "ca1.crt",
        TestCa::new("nca alerts CA 1").cert_pem().as_bytes(),
    )]));
    let s0 = rec.scrape_until("the agent ready", |s| {
        value(s, "node_cert_agent_ready", ("job", JOB)) == 1.0
    });
    let t0 = rec.record(s0, 20);
    for a in ALL {
        expect(t0 + 15, a, vec![]);
    }

    // Stage 1: a CA 12 hours from its end (of 9.5 days) and a refused key.
    let now = now_unix();
    let expiring = TestCa::with_validity("nca alerts expiring CA", now - 9 * DAY, now + DAY / 2);
    agent.publish_and_wait(&secret_data(&[
        ("expiring.crt", expiring.cert_pem().as_bytes()),
        ("bad.crt", b"not a certificate"),
    ]));
    let s1 = rec.scrape_until("an input error and the expiring CA", |s| {
        s.iter()
            .any(|x| x.name == "node_cert_agent_input_errors" && x.value > 0.0)
            && s.iter().any(|x| {
                x.name == "x509_cert_expires_in_seconds"
                    && x.labels.get("subject_CN").map(String::as_str)
                        == Some("nca alerts expiring CA")
            })
    });
    let expiring_labels: Vec<BTreeMap<String, String>> = s1
        .iter()
        .filter(|x| x.name == "x509_cert_expires_in_seconds")
        .filter(|x| {
            let of = |n: &str| {
                s1.iter()
                    .find(|y| y.name == n && y.labels == x.labels)
                    .map(|y| y.value)
                    .unwrap()
            };
            x.value < 0.1 * (of("x509_cert_not_after") - of("x509_cert_not_before"))
        })
        .map(|x| x.labels.clone())
        .collect();
    assert_eq!(
        expiring_labels.len(),
        1,
        "one certificate in its last 10 %: {expiring_labels:?}"
    );
    let input_error_labels: Vec<BTreeMap<String, String>> = s1
        .iter()
        .filter(|x| x.name == "node_cert_agent_input_errors" && x.value > 0.0)
        .map(|x| x.labels.clone())
        .collect();
    let t1 = rec.record(s1, 30);
    expect(
        t1 + 25,
        "NodeCertAgentCertificateExpiring",
        expiring_labels
            .iter()
            .map(|l| firing("NodeCertAgentCertificateExpiring", l))
            .collect(),
    );
    expect(
        t1 + 25,
        "NodeCertAgentInputErrors",
        input_error_labels
            .iter()
            .map(|l| firing("NodeCertAgentInputErrors", l))
            .collect(),
    );
    expect(
        t1 + 25,
        "NodeCertAgentNotConverged",
        vec![firing("NodeCertAgentNotConverged", &agent_labels)],
    );
    expect(t1 + 25, "NodeCertAgentTrustStoreRefreshFailed", vec![]);
    expect(t1 + 25, "NodeCertAgentUnitRestartFailed", vec![]);
    // Not yet for the 15 minutes.
    expect(t1 + 10, "NodeCertAgentNotConverged", vec![]);

    // Stage 2: the refresh tool fails (/bin/false over it), a new CA waits.
    node.exec_ok(&["mount", "--bind", "/bin/false", REFRESH_TOOL]);
    agent.secret().publish(&secret_data(&[(
        "ca3.crt",
        TestCa::new("nca alerts CA 3").cert_pem().as_bytes(),
    )]));
    let failed = |s: &[Sample]| {
        value(
            s,
            "node_cert_agent_trust_store_refreshes_total",
            ("result", "failure"),
        )
    };
    let a = rec.scrape_until("a failed refresh", |s| failed(s) >= 1.0);
    let first = failed(&a);
    let b = rec.scrape_until("a second failed refresh", |s| failed(s) > first);
    let t2 = rec.record(a, 2);
    rec.record(b, 13);
    let refresh_labels = only(&[("job", JOB), ("instance", &instance), ("result", "failure")]);
    expect(
        t2 + 5,
        "NodeCertAgentTrustStoreRefreshFailed",
        vec![firing(
            "NodeCertAgentTrustStoreRefreshFailed",
            &refresh_labels,
        )],
    );

    // Stage 3: the refresh works again, containerd's restart job fails.
    node.write_file(
        FAILING_DROP_IN,
        b"[Service]\nExecStartPre=/bin/false\n",
        0o644,
    );
    node.exec_ok(&["systemctl", "daemon-reload"]);
    node.exec_ok(&["umount", REFRESH_TOOL]);
    let failed_restarts = |s: &[Sample]| -> Vec<Sample> {
        s.iter()
            .filter(|x| {
                x.name == "node_cert_agent_unit_restarts_total"
                    && x.labels.get("result").map(String::as_str) != Some("done")
            })
            .cloned()
            .collect()
    };
    let a = rec.scrape_until("a failed restart", |s| !failed_restarts(s).is_empty());
    let firsts = failed_restarts(&a);
    let b = rec.scrape_until("a second failed restart", |s| {
        failed_restarts(s).iter().any(|x| {
            firsts
                .iter()
                .any(|f| f.labels == x.labels && x.value > f.value)
        })
    });
    let grown: Vec<BTreeMap<String, String>> = failed_restarts(&b)
        .into_iter()
        .filter(|x| {
            firsts
                .iter()
                .any(|f| f.labels == x.labels && x.value > f.value)
        })
        .map(|x| x.labels)
        .collect();
    let t3 = rec.record(a, 2);
    rec.record(b, 13);
    expect(
        t3 + 5,
        "NodeCertAgentUnitRestartFailed",
        grown
            .iter()
            .map(|l| firing("NodeCertAgentUnitRestartFailed", l))
            .collect(),
    );
    // Refused input (stage 1), then a failing refresh, then a failing
    // restart: one cause after the other, one alert all along.
    expect(
        t3 + 5,
        "NodeCertAgentNotConverged",
        vec![firing("NodeCertAgentNotConverged", &agent_labels)],
    );

    // Stage 4: healthy again.
    let passes = agent.passes();
    node.remove_file(FAILING_DROP_IN);
    node.exec_ok(&["systemctl", "daemon-reload"]);
    let start = Instant::now();
    while agent.passes() <= passes {
        assert!(
            start.elapsed() < STAGE_TIMEOUT,
            "the agent never converged after the faults:\n{}",
            agent.log_tail(30)
        );
        std::thread::sleep(Duration::from_secs(1));
    }
    let s4 = rec.scrape_until("no input error", |s| {
        s.iter()
            .all(|x| x.name != "node_cert_agent_input_errors" || x.value == 0.0)
    });
    let t4 = rec.record(s4, 40);
    for a in ALL {
        expect(t4 + 35, a, vec![]);
    }

    // promtool: the example's spec as the rule file, the recording as input.
    let rules = dir.path().join("rules.yaml");
    std::fs::write(
        &rules,
        serde_yaml::to_string(&prometheus_rule::example().spec).unwrap(),
    )
    .unwrap();
    let test = serde_json::json!({
        "rule_files": [rules.display().to_string()],
        "evaluation_interval": "1m",
        "tests": [{
            "interval": "1m",
            "input_series": rec.input_series(),
            "alert_rule_test": tests,
        }],
    });
    let test_file = dir.path().join("alerts-test.yaml");
    std::fs::write(&test_file, serde_yaml::to_string(&test).unwrap()).unwrap();
    let check = Command::new(&promtool)
        .arg("check")
        .arg("rules")
        .arg(&rules)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "promtool check rules:\n{}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
    let out = Command::new(&promtool)
        .arg("test")
        .arg("rules")
        .arg(&test_file)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    println!(
        "--- promtool test rules ({} series, {} checks) ---\n{text}",
        rec.input_series().len(),
        tests_len(&test)
    );
    assert!(
        out.status.success(),
        "promtool test rules failed:\n{text}\n--- test file ---\n{}",
        std::fs::read_to_string(&test_file).unwrap()
    );
}

fn tests_len(test: &serde_json::Value) -> usize {
    test["tests"][0]["alert_rule_test"]
        .as_array()
        .map_or(0, Vec::len)
}
