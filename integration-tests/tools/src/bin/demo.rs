//! The README's "run the main job": boots a throwaway node and shows the story
//! of node-cert-agent end to end, with the agent running as a DaemonSet pod
//! would (node root at --host-root, the node's D-Bus socket under it):
//! a pull from a private registry fails, the registry's CA is published in the
//! Secret, and the next pull succeeds with no other step.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "demo: a failed step must stop loudly"
)]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use integration_tests::agent::PodModeAgent;
use integration_tests::pki::TestCa;
use integration_tests::{
    cri_pull, cri_remove_image, cri_try_pull, preflight, Node, Registry, SecretVolume,
};

/// A step's heading: bold on a terminal, plain text into a pipe or a file.
fn say(step: &str) {
    use std::io::IsTerminal;
    if std::io::stdout().is_terminal() {
        println!("\n\x1b[1m==> {step}\x1b[0m");
    } else {
        println!("\n==> {step}");
    }
}

fn main() {
    // Panics with the build command when the agent binary is missing.
    integration_tests::agent::agent_binary();
    preflight();

    say("Booting a throwaway node (systemd-nspawn: systemd, D-Bus, journald, containerd)");
    let node = Node::boot("demo");
    println!(
        "node {} is up; its root as a pod sees it: {}",
        node.name(),
        node.root().display()
    );

    say("Starting a private registry at registry.test with TLS from a CA the node does not trust");
    let ca = TestCa::new("Example Corp Registry CA");
    let (cert, key) = ca.issue_server_cert(&["registry.test"]);
    let storage = tempfile::tempdir().unwrap();
    let registry = Registry::start(&cert, &key, storage.path());
    registry.push_test_image(&ca.cert_pem(), "team/app", "v1");
    let image = registry.reference("team/app:v1");
    println!("pushed {image}");

    say("Starting node-cert-agent (pod mode) watching an empty custom-ca-trust-secret volume");
    let secret_dir = tempfile::tempdir().unwrap();
    SecretVolume::new(secret_dir.path()).publish(&BTreeMap::new());
    // Stopped with SIGTERM when dropped, on every exit path.
    let agent = PodModeAgent::start(&node, secret_dir.path(), &[]);
    let mut shown = show_new_logs(&agent, 0);

    say("Pulling through containerd's CRI, as kubelet does");
    match cri_pull(&node, &image) {
        Ok(_) => panic!("the pull should fail before the CA is trusted"),
        Err(e) => println!("pull FAILED as expected:\n  {e}"),
    }
    let pid_before = node.main_pid("containerd.service");

    say("Publishing the registry's CA in the Secret (key ca1.crt), the way kubelet updates the volume");
    let mut data = BTreeMap::new();
    data.insert("ca1.crt".to_string(), ca.cert_pem().into_bytes());
    let swapped = agent.secret().publish(&data);

    let deadline = Instant::now() + Duration::from_secs(30);
    let pulled = loop {
        // containerd is briefly unreachable while it restarts.
        match cri_try_pull(&node, &image) {
            Ok(r) => break r,
            Err(e) if Instant::now() > deadline => panic!("the pull still fails after 30 s: {e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    };
    let elapsed = swapped.elapsed();
    say("The agent's log (what `kubectl logs` shows for its pod)");
    shown = show_new_logs(&agent, shown);
    say("Pulling again, with no other step");
    println!("pull SUCCEEDED: {pulled}");
    println!("..data swap -> successful pull: {} ms", elapsed.as_millis());
    println!(
        "containerd MainPID {} -> {} (restarted once over D-Bus)",
        pid_before,
        node.main_pid("containerd.service")
    );
    let _ = cri_remove_image(&node, &image);

    say("Publishing a bad key next to the good one: a private key");
    data.insert(
        "oops.crt".to_string(),
        integration_tests::pki::private_key_pem().into_bytes(),
    );
    agent.secret().publish(&data);
    agent.wait_for_passes(3, Duration::from_secs(30));
    show_new_logs(&agent, shown);
    println!(
        "containerd MainPID is still {} (no restart for bad input)",
        node.main_pid("containerd.service")
    );

    say("Stopping the agent (SIGTERM) and tearing the node down");
}

/// Prints the agent's log messages after the first `from`; returns the new count.
fn show_new_logs(agent: &PodModeAgent<'_>, from: usize) -> usize {
    let logs = agent.logs();
    for entry in logs.iter().skip(from) {
        let level = if entry.error { "ERROR" } else { "INFO " };
        println!("  [agent] {level} {}", entry.message);
    }
    logs.len()
}
