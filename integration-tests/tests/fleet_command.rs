//! `node-cert-agent fleet` against the test API server holding 5,000 Nodes
//! in mixed states (`integration_tests::fleet`): the counts, the exit
//! codes, the JSON schema, `-l`, `--wait` (a thread converges the last
//! nodes after a delay), its timeout and Ctrl-C, the errors that stop it
//! (exit 2), and the kubectl plugin link.
//!
//! The agent binary must be built first (`cargo build -p node-cert-agent`);
//! nothing here needs root or a node.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use std::io::Read;
use std::process::{Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use integration_tests::agent::agent_binary;
use integration_tests::fleet::{converge, node_name, Fleet, Mix};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use node_cert_agent::fleet::schema;
use serde_json::Value;

const NODES: usize = 5000;
const BEHIND: usize = 600;
const INVALID: usize = 300;
const NO_AGENT: usize = 100;

/// 4,000 converged, then 600 behind, 300 with invalid input, 100 without
/// the agent.
fn mixed(i: usize) -> Mix {
    let converged = NODES - BEHIND - INVALID - NO_AGENT;
    match i {
        i if i < converged => Mix::Converged,
        i if i < converged + BEHIND => Mix::Behind,
        i if i < converged + BEHIND + INVALID => Mix::InputInvalid,
        _ => Mix::NoAgent,
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn describe(o: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout (head) ---\n{}\n--- stderr ---\n{}",
        o.status.code(),
        text(&o.stdout)
            .lines()
            .take(20)
            .collect::<Vec<_>>()
            .join("\n"),
        text(&o.stderr)
    )
}

fn json_of(o: &Output) -> Value {
    serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {}", describe(o)))
}

#[test]
fn fleet_of_5000_mixed_nodes_counts_each_state_and_exits_1() {
    let fleet = Fleet::new(NODES, mixed);
    fleet.server.clear_requests();

    let o = fleet.run(&["-o", "json"]);
    assert_eq!(o.status.code(), Some(1), "{}", describe(&o));
    let v = json_of(&o);
    assert_eq!(v["schemaVersion"], 1);
    let s = &v["summary"];
    assert_eq!(s["total"], NODES, "{s}");
    assert_eq!(s["converged"], NODES - BEHIND - INVALID - NO_AGENT, "{s}");
    assert_eq!(s["allConverged"], false);
    assert_eq!(s["notConverged"]["behind"], BEHIND, "{s}");
    assert_eq!(s["notConverged"]["inputInvalid"], INVALID, "{s}");
    assert_eq!(s["notConverged"]["noAgent"], NO_AGENT, "{s}");
    assert_eq!(s["notConverged"].as_object().unwrap().len(), 3, "{s}");

    // The expected state is the current Secret's, by the agent's planning.
    let e = &v["expected"];
    assert_eq!(e["secret"], "kube-system/custom-ca-trust-secret");
    assert_eq!(e["secretFound"], true);
    assert_eq!(e["inputDigest"], fleet.current.input_digest.as_str());
    assert_eq!(e["trustSetDigest"], fleet.current.trust_set_digest.as_str());
    assert_eq!(e["caCount"], 1);
    assert_eq!(e["findings"].as_array().unwrap().len(), 0, "{e}");

    // Every node, once, sorted, with every documented field.
    let nodes = v["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), NODES);
    assert!(nodes
        .windows(2)
        .all(|w| w[0]["name"].as_str() < w[1]["name"].as_str()));
    let first = &nodes[0];
    assert_eq!(first["name"], node_name(0).as_str());
    assert_eq!(first["state"], "converged");
    assert_eq!(first["inSync"], true);
    assert_eq!(first["agent"], true);
    assert_eq!(first["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(
        first["trustSetDigest"],
        fleet.current.trust_set_digest.as_str()
    );
    assert_eq!(first["caCount"], 1);
    assert_eq!(first["trustCondition"]["status"], "True");
    assert_eq!(first["trustCondition"]["reason"], "Converged");
    assert_eq!(first["kubeletCondition"]["reason"], "Valid");
    assert!(first["kubeletClientNotAfter"]
        .as_str()
        .unwrap()
        .ends_with('Z'));
    assert!(first["changedAt"].as_str().unwrap().ends_with('Z'));
    assert_eq!(first["problems"].as_array().unwrap().len(), 0);
    let behind = &nodes[NODES - BEHIND - INVALID - NO_AGENT];
    assert_eq!(behind["state"], "behind");
    assert_eq!(behind["inputDigest"], fleet.previous.input_digest.as_str());
    let invalid = &nodes[NODES - INVALID - NO_AGENT];
    assert_eq!(invalid["state"], "inputInvalid");
    assert_eq!(invalid["trustCondition"]["status"], "False");
    let last = &nodes[NODES - 1];
    assert_eq!(
        (last["state"].as_str(), last["agent"].as_bool()),
        (Some("noAgent"), Some(false))
    );
    assert_eq!(last["trustSetDigest"], Value::Null);

    // Paginated: 500 a page, 10 pages, each after the first by `continue`.
    let lists: Vec<_> = fleet
        .server
        .requests()
        .into_iter()
        .filter(|r| r.resource == "nodes" && r.verb == "list")
        .collect();
    assert_eq!(lists.len(), NODES / 500, "{lists:?}");

    // The table: a header, one row per node, the summary line last.
    let o = fleet.run(&[]);
    assert_eq!(o.status.code(), Some(1), "{}", describe(&o));
    let table = text(&o.stdout);
    let lines: Vec<&str> = table.lines().collect();
    // The sample of docs/fleet.md ("The table"): the head, the first row of
    // each other state, the last row and the summary.
    let converged = NODES - BEHIND - INVALID - NO_AGENT;
    println!(
        "--- fleet (rows cut) ---\n{}\n...\n{}\n...\n{}\n...\n{}\n{}",
        lines[..4].join("\n"),
        lines[2 + converged],
        lines[2 + converged + BEHIND],
        lines[NODES + 1],
        lines[NODES + 2],
    );
    assert!(
        lines[0].starts_with("expected: Secret kube-system/custom-ca-trust-secret"),
        "{table}"
    );
    assert!(lines[1].starts_with("NODE "), "{table}");
    assert_eq!(lines.len(), NODES + 3, "header lines + rows + summary");
    let row0: Vec<&str> = lines[2].split_whitespace().collect();
    assert_eq!(row0[0], node_name(0));
    assert_eq!(
        row0[2],
        schema::short_digest(&fleet.current.trust_set_digest)
    );
    assert_eq!(row0[3], "yes");
    assert!(
        lines[NODES + 1].contains("no agent"),
        "{}",
        lines[NODES + 1]
    );
    let summary = lines[NODES + 2];
    assert!(
        summary.starts_with(&format!(
            "4000 of {NODES} converged; not converged: {BEHIND} behind"
        )),
        "{summary}"
    );
    assert!(
        summary.contains(&format!("{INVALID} invalid input")),
        "{summary}"
    );
    assert!(
        summary.contains(&format!("{NO_AGENT} no agent")),
        "{summary}"
    );
}

#[test]
fn a_label_selector_narrows_the_fleet() {
    let fleet = Fleet::new(NODES, mixed);
    fleet.server.clear_requests();
    let o = fleet.run(&["-o", "json", "-l", "pool=b", "--page-size", "300"]);
    assert_eq!(o.status.code(), Some(1), "{}", describe(&o));
    // 2,500 selected Nodes in pages of 300: 9 lists, each with the selector,
    // all but the first with a continue token.
    let lists: Vec<_> = fleet
        .server
        .requests()
        .into_iter()
        .filter(|r| r.resource == "nodes" && r.verb == "list")
        .collect();
    assert_eq!(lists.len(), 9, "{lists:?}");
    assert!(
        lists
            .iter()
            .all(|r| r.query.contains("labelSelector=pool%3Db") && r.query.contains("limit=300")),
        "{lists:?}"
    );
    assert_eq!(
        lists
            .iter()
            .filter(|r| r.query.contains("continue="))
            .count(),
        8,
        "{lists:?}"
    );
    let v = json_of(&o);
    assert_eq!(v["selector"], "pool=b");
    let s = &v["summary"];
    assert_eq!(s["total"], NODES / 2, "{s}");
    assert_eq!(s["notConverged"]["behind"], BEHIND / 2, "{s}");
    assert_eq!(s["notConverged"]["noAgent"], NO_AGENT / 2, "{s}");
    let names = v["nodes"].as_array().unwrap();
    assert!(names.iter().all(|n| {
        let i: usize = n["name"].as_str().unwrap()[5..].parse().unwrap();
        i % 2 == 1
    }));

    // Only the converged nodes of pool a: exit 0.
    let o = fleet.run(&[
        "-l",
        &format!(
            "pool=a,{}={}",
            schema::TRUST_SET_LABEL,
            schema::short_digest(&fleet.current.trust_set_digest)
        ),
    ]);
    let out = text(&o.stdout);
    assert_eq!(o.status.code(), Some(0), "{}", describe(&o));
    assert!(out.trim_end().ends_with("2000 of 2000 converged"), "{out}");

    // A selector that matches nothing is no convergence.
    let o = fleet.run(&["-l", "pool=none"]);
    assert_eq!(o.status.code(), Some(1), "{}", describe(&o));
    assert!(text(&o.stdout).contains("0 of 0 converged (no Node matches)"));
}

#[test]
fn wait_returns_when_the_last_node_converges() {
    const LATE: usize = 20;
    let fleet = Arc::new(Fleet::new(NODES, |i| {
        if i >= NODES - LATE {
            Mix::Behind
        } else {
            Mix::Converged
        }
    }));
    let done = Arc::new(AtomicBool::new(false));
    let child = fleet
        .command(&["--wait", "--timeout", "5m", "-o", "json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let updater = {
        let (fleet, done) = (fleet.clone(), done.clone());
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_secs(2));
            for i in NODES - LATE..NODES {
                converge(&fleet.server, &node_name(i), &fleet.current);
                std::thread::sleep(Duration::from_millis(50));
            }
            done.store(true, Ordering::SeqCst);
        })
    };
    let o = child.wait_with_output().unwrap();
    let converged_all = done.load(Ordering::SeqCst);
    updater.join().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", describe(&o));
    assert!(
        converged_all,
        "--wait returned before the last node converged: {}",
        describe(&o)
    );
    let v = json_of(&o);
    assert_eq!(v["summary"]["converged"], NODES);
    // Not a terminal: plain progress lines on stderr, the last one final.
    let err = text(&o.stderr);
    let progress: Vec<&str> = err.lines().filter(|l| l.starts_with("fleet: ")).collect();
    assert!(progress.len() >= 2, "{err}");
    assert!(
        progress[0].starts_with(&format!("fleet: {} of {NODES} converged", NODES - LATE)),
        "{err}"
    );
    assert_eq!(
        *progress.last().unwrap(),
        format!("fleet: {NODES} of {NODES} converged")
    );
}

#[test]
fn wait_times_out_with_exit_1_and_ctrl_c_stops_it_with_130() {
    let fleet = Fleet::new(50, |i| if i < 45 { Mix::Converged } else { Mix::Behind });
    let o = fleet.run(&["--wait", "--timeout", "2s"]);
    assert_eq!(o.status.code(), Some(1), "{}", describe(&o));
    let err = text(&o.stderr);
    assert!(err.contains("timed out after 2s"), "{err}");
    assert!(text(&o.stdout).contains("45 of 50 converged"));

    let mut child = fleet
        .command(&["--wait", "--timeout", "5m"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = child.stderr.take().unwrap();
    // The first progress line says the wait has begun.
    let mut seen = Vec::new();
    let mut buf = [0u8; 256];
    while !text(&seen).contains("converged") {
        let n = stderr.read(&mut buf).unwrap();
        assert!(n > 0, "stderr ended: {}", text(&seen));
        seen.extend_from_slice(&buf[..n]);
    }
    kill(Pid::from_raw(child.id() as i32), Signal::SIGINT).unwrap();
    let o = child.wait_with_output().unwrap();
    stderr.read_to_end(&mut seen).unwrap();
    assert_eq!(
        o.status.code(),
        Some(130),
        "{}\n{}",
        describe(&o),
        text(&seen)
    );
    assert!(
        text(&seen).contains("interrupted (Ctrl-C)"),
        "{}",
        text(&seen)
    );
    assert!(
        text(&o.stdout).contains("45 of 50 converged"),
        "the report is printed"
    );
}

#[test]
fn errors_that_stop_the_command_exit_2_naming_the_input_and_the_fix() {
    let fleet = Fleet::new(3, |_| Mix::Converged);
    // A context the kubeconfig does not have.
    let o = fleet.run(&["--context", "nope"]);
    assert_eq!(o.status.code(), Some(2), "{}", describe(&o));
    let err = text(&o.stderr);
    assert!(err.contains("context \"nope\""), "{err}");
    assert!(
        err.contains(&fleet.kubeconfig.display().to_string()),
        "{err}"
    );
    assert!(err.contains("--context NAME"), "{err}");

    // A kubeconfig that does not exist.
    let o = agent_cmd(&["fleet", "--kubeconfig", "/nonexistent/kubeconfig"]);
    assert_eq!(o.status.code(), Some(2), "{}", describe(&o));
    assert!(
        text(&o.stderr).contains("/nonexistent/kubeconfig"),
        "{}",
        describe(&o)
    );

    // A user who may not read the Secret: a node's own identity.
    let now = std::time::SystemTime::now();
    let (cert, key) = fleet.server.issue_client_cert(
        "system:node:node-00000",
        &["system:nodes"],
        now - Duration::from_secs(60),
        now + Duration::from_secs(3600),
    );
    let dir = tempfile::tempdir().unwrap();
    let (c, k) = (dir.path().join("c.pem"), dir.path().join("k.pem"));
    std::fs::write(&c, cert).unwrap();
    std::fs::write(&k, key).unwrap();
    let kc = dir.path().join("node.kubeconfig");
    std::fs::write(&kc, fleet.server.client_kubeconfig(&c, &k)).unwrap();
    let o = agent_cmd(&["fleet", "--kubeconfig", kc.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2), "{}", describe(&o));
    let err = text(&o.stderr);
    println!("--- fleet as a node's identity ---\n{err}");
    assert!(
        err.contains("reading Secret kube-system/custom-ca-trust-secret"),
        "{err}"
    );
    assert!(err.contains("403") || err.contains("forbidden"), "{err}");
    assert!(
        err.contains("kubectl auth can-i get secret/custom-ca-trust-secret -n kube-system"),
        "{err}"
    );

    // A bad --timeout names the value.
    let o = fleet.run(&["--wait", "--timeout", "soon"]);
    assert_eq!(o.status.code(), Some(2), "{}", describe(&o));
    assert!(
        text(&o.stderr).contains("--timeout \"soon\""),
        "{}",
        describe(&o)
    );
}

fn agent_cmd(args: &[&str]) -> Output {
    std::process::Command::new(agent_binary())
        .args(args)
        .env_remove("KUBECONFIG")
        .output()
        .unwrap()
}

#[test]
fn kubectl_node_cert_fleet_works_through_the_plugin_link() {
    let fleet = Fleet::new(4, |i| if i == 3 { Mix::NoAgent } else { Mix::Converged });
    let bin = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(agent_binary(), bin.path().join("kubectl-node_cert")).unwrap();
    let path = format!(
        "{}:{}",
        bin.path().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let o = std::process::Command::new("kubectl")
        .args(["node-cert", "fleet", "--kubeconfig"])
        .arg(&fleet.kubeconfig)
        .env("PATH", &path)
        .env_remove("KUBECONFIG")
        .output()
        .expect("kubectl must be installed (Debian's kubernetes-client)");
    assert_eq!(o.status.code(), Some(1), "{}", describe(&o));
    assert!(
        text(&o.stdout).contains("3 of 4 converged; not converged: 1 no agent"),
        "{}",
        describe(&o)
    );
    // Help names it as kubectl does.
    let o = std::process::Command::new("kubectl")
        .args(["node-cert", "--help"])
        .env("PATH", &path)
        .output()
        .unwrap();
    assert!(
        text(&o.stdout).contains("Usage: kubectl node-cert"),
        "{}",
        describe(&o)
    );
}

#[test]
fn wait_shows_a_progress_bar_on_a_terminal() {
    const N: usize = 50;
    let fleet = Arc::new(Fleet::new(N, |i| {
        if i < N - 5 {
            Mix::Converged
        } else {
            Mix::Behind
        }
    }));
    // util-linux's `script` gives the command a pseudo-terminal.
    let cmd = format!(
        "{} fleet --kubeconfig {} --wait --timeout 2m",
        agent_binary().display(),
        fleet.kubeconfig.display()
    );
    let child = std::process::Command::new("script")
        .args(["-qfec", &cmd, "/dev/null"])
        .env_remove("KUBECONFIG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("`script` (util-linux) must be installed");
    let updater = {
        let fleet = fleet.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_secs(2));
            for i in N - 5..N {
                converge(&fleet.server, &node_name(i), &fleet.current);
            }
        })
    };
    let o = child.wait_with_output().unwrap();
    updater.join().unwrap();
    let screen = text(&o.stdout);
    println!("--- the terminal ---\n{screen}");
    assert_eq!(o.status.code(), Some(0), "{}", describe(&o));
    // The bar's template: `{bar} {pos}/{len} converged  {msg}`; no plain lines.
    assert!(
        screen.contains(&format!("{}/{N} converged", N - 5)),
        "{screen}"
    );
    assert!(!screen.contains("fleet: 45 of 50 converged"), "{screen}");
    assert!(
        screen.contains(&format!("{N} of {N} converged")),
        "{screen}"
    );
}
