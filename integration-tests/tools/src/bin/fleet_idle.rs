//! The idle API load of the fleet publisher, measured (docs/benchmarks.md, "Fleet idle API load"): a
//! real node with the agent (pod mode, kubelet job on) against the test API
//! server; once its state is published, the agent is left alone for
//! `--minutes M` (default 10) and the write requests that reach its Node
//! are counted. Prints them per hour (expected: 0), then what
//! `kubectl get nodes -L node-cert-agent.dev/trust-set` and
//! `kubectl get node n1 -o yaml` show.
//!
//! `cargo build -p node-cert-agent && cargo run -p integration-tests --bin fleet_idle -- --minutes 10`
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "benchmark: a failed step must stop loudly"
)]

use std::process::Command;
use std::time::{Duration, Instant};

use integration_tests::kubelet_node::{KubeletFixture, NODE_NAME};
use integration_tests::pki::TestCa;
use integration_tests::{preflight, secret_data, wait_until};
use node_cert_agent::fleet::schema::{TRUST_CONDITION, TRUST_SET_LABEL};

fn minutes() -> f64 {
    let mut it = std::env::args().skip(1);
    let mut m = 10.0;
    while let Some(f) = it.next() {
        match f.as_str() {
            "--minutes" => {
                m = it
                    .next()
                    .and_then(|v| v.parse().ok())
                    .expect("--minutes M (a number)")
            }
            other => panic!("unknown flag {other}; flags: --minutes M"),
        }
    }
    m
}

fn main() {
    let minutes = minutes();
    preflight();
    let fx = KubeletFixture::new("fleet-idle");
    let agent = fx.start_agent("");
    fx.wait_for_client_cert(&agent, "the bootstrap", |_| true);
    let ca = TestCa::new("Fleet idle CA");
    agent
        .secret()
        .publish(&secret_data(&[("ca1.crt", ca.cert_pem().as_bytes())]));
    wait_until(Duration::from_secs(60), "the published trust state", || {
        fx.server.node(NODE_NAME).is_some_and(|n| {
            n.status
                .and_then(|s| s.conditions)
                .unwrap_or_default()
                .iter()
                .any(|c| c.type_ == TRUST_CONDITION && c.reason.as_deref() == Some("Converged"))
                && n.metadata
                    .labels
                    .unwrap_or_default()
                    .contains_key(TRUST_SET_LABEL)
        })
    });
    // Let the first publication's writes land.
    std::thread::sleep(Duration::from_secs(5));
    let published = fx.server.node_writes(NODE_NAME);
    let requests = fx.server.requests().len();
    println!("published with {published} Node writes; idle for {minutes} min ...");
    let start = Instant::now();
    std::thread::sleep(Duration::from_secs_f64(minutes * 60.0));
    let elapsed_h = start.elapsed().as_secs_f64() / 3600.0;
    let writes = fx.server.node_writes(NODE_NAME) - published;
    let idle_requests: Vec<_> = fx.server.requests().into_iter().skip(requests).collect();
    let other = idle_requests.len();
    // Which requests they were: verb and resource, with how many of each.
    let mut kinds: std::collections::BTreeMap<String, usize> = Default::default();
    for r in &idle_requests {
        *kinds
            .entry(format!("{} {}", r.verb, r.resource))
            .or_default() += 1;
    }
    let kinds: Vec<String> = kinds.iter().map(|(k, n)| format!("{n} {k}")).collect();
    println!(
        "idle agent: {writes} Node writes in {:.1} min = {:.1} Node writes/hour (goal 0); {other} API requests of any kind ({:.1}/hour: {})",
        elapsed_h * 60.0,
        writes as f64 / elapsed_h,
        other as f64 / elapsed_h,
        kinds.join(", ")
    );

    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("admin.conf");
    std::fs::write(&kubeconfig, fx.server.admin_kubeconfig()).unwrap();
    fx.server.add_node("n2");
    for args in [
        vec!["get", "nodes", "-L", TRUST_SET_LABEL],
        vec!["get", "node", NODE_NAME, "-o", "yaml"],
    ] {
        let out = Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .args(&args)
            .output()
            .expect("kubectl runs");
        println!(
            "$ kubectl {}\n{}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    drop(agent);
    assert_eq!(writes, 0, "an idle agent wrote to its Node");
}
