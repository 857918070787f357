//! End-to-end scenarios of node-cert-agent on real nodes: a systemd-nspawn
//! Debian node with containerd, real TLS registries, pulls through CRI as
//! kubelet does them, and the agent itself in host mode (a systemd service of
//! the node, from the shipped units) and in pod mode (run as a DaemonSet pod
//! runs it, with the node's root as `--host-root`).
//!
//! Each scenario is written once and run in both modes, except where a mode
//! does not apply (provisioning and journald are host mode only). Every test
//! has its own node, registries and temp dirs, so they run in parallel.
//!
//! Synchronisation: after each publish the test waits until the agent logged
//! one more pass (`reconciled: ...`), then asserts. containerd restarts are
//! counted by its MainPID and by systemd's "Started containerd.service"
//! messages; refresh-tool runs by systemd's "Starting
//! node-cert-agent-refresh-*" messages.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a failed step must panic loudly"
)]

use std::time::{Duration, Instant};

use integration_tests::agent::{self, Agent, HostModeAgent, LogEntry, Mode, PASS_TIMEOUT};
use integration_tests::cri::PULL_TIMEOUT;
use integration_tests::observe::{self, ContainerdState};
use integration_tests::pki::{self, TestCa};
use integration_tests::{
    assert_pull_ok, assert_pull_untrusted, cri_try_pull, preflight, secret_data, Node, TestRegistry,
};

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

fn refresh_count(node: &Node) -> usize {
    observe::refresh_runs(node).len()
}

/// Panics unless `entries` hold an error-level entry naming `key` (in its
/// `CA_KEY`/`ca_key` field or its message).
fn assert_error_names_key(entries: &[LogEntry], key: &str, context: &str) {
    let quoted = format!("\"{key}\"");
    assert!(
        entries.iter().any(|e| e.error
            && (e.ca_key().as_deref() == Some(key) || e.message.contains(&quoted))),
        "{context}: no error-level log entry names key {key:?}; the pass logged:\n{}",
        agent::render_tail(entries, 50)
    );
}

fn count_messages(entries: &[LogEntry], prefix: &str) -> usize {
    entries
        .iter()
        .filter(|e| e.message.starts_with(prefix))
        .count()
}

/// `systemctl start containerd.service`; panics with containerd's journal if
/// that fails.
fn start_containerd(node: &Node) {
    let out = node.exec(&["systemctl", "start", observe::CONTAINERD_UNIT]);
    if !out.status.success() {
        let journal = node.exec(&[
            "journalctl",
            "--no-pager",
            "-n",
            "40",
            "-u",
            observe::CONTAINERD_UNIT,
        ]);
        panic!(
            "node {}: `systemctl start {}` failed ({}): {}\n--- journalctl -u {} ---\n{}",
            node.name(),
            observe::CONTAINERD_UNIT,
            out.status,
            String::from_utf8_lossy(&out.stderr).trim_end(),
            observe::CONTAINERD_UNIT,
            String::from_utf8_lossy(&journal.stdout).trim_end()
        );
    }
}

/// Checks the machine, then boots a node named after the scenario and mode.
fn boot(scenario: &str, mode: Mode) -> Node {
    preflight();
    Node::boot(&format!("{scenario}-{mode}"))
}

// ---------------------------------------------------------------------------
// 1. Before/after: publishing a CA makes pulls from its registry work, with
//    exactly one containerd restart and no other step.
// ---------------------------------------------------------------------------

fn scenario_before_after(mode: Mode) {
    let node = boot("before-after", mode);
    let agent = Agent::start(&node, mode);
    let ca = TestCa::new(&format!("nca before-after {mode} CA"));
    let storage = tempfile::tempdir().unwrap();
    let reg = TestRegistry::start(&ca, storage.path(), "before-after/hello");

    assert_pull_untrusted(&node, &reg.image, "before the CA is published");

    let before = ContainerdState::of(&node);
    let refreshes = refresh_count(&node);
    let passes = agent.passes();
    let swapped = agent
        .secret()
        .publish(&secret_data(&[("ca1.crt", ca.cert_pem().as_bytes())]));
    let latency = loop {
        let last_error = match cri_try_pull(&node, &reg.image) {
            Ok(_) => break swapped.elapsed(),
            Err(e) => e,
        };
        assert!(
            swapped.elapsed() < PULL_TIMEOUT,
            "({mode}) pull of {} still failing {PULL_TIMEOUT:?} after the ..data swap: {last_error}\n\
             --- agent log ---\n{}",
            reg.image,
            agent.log_tail(40)
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    println!(
        "scenario 1 ({mode}): ..data swap -> pull succeeded in {} ms",
        latency.as_millis()
    );

    agent.wait_for_passes(passes + 1);
    before.assert_restarted_once(&node, &format!("({mode}) after publishing the CA"));
    assert_eq!(
        refresh_count(&node),
        refreshes + 1,
        "({mode}) one change must run the refresh tool once"
    );
    observe::assert_trusted(&node, &ca, &format!("({mode}) after publishing the CA"));
}

#[test]
fn before_after_host() {
    scenario_before_after(Mode::Host);
}

#[test]
fn before_after_pod() {
    scenario_before_after(Mode::Pod);
}

// ---------------------------------------------------------------------------
// 2. Provisioning file (host mode): CAs in /etc/node-cert-agent/custom-ca.pem
//    before the first boot are trusted by the first pull, and containerd is
//    started once and never restarted.
// ---------------------------------------------------------------------------

#[test]
fn provisioning_file_host() {
    preflight();
    let ca = TestCa::new("nca provisioning CA");
    let second = TestCa::new("nca provisioning CA 2");
    let storage = tempfile::tempdir().unwrap();
    let reg = TestRegistry::start(&ca, storage.path(), "provisioning/hello");
    // Up to 10 PEM certificates separated by blank lines (each PEM ends in
    // a newline, so one more makes the blank line).
    let provisioning = format!("{}\n{}", ca.cert_pem(), second.cert_pem());
    // The shipped config as it is: its Secret dir is /etc/node-cert-agent/ca.d,
    // its provisioning file /etc/node-cert-agent/custom-ca.pem.
    let config = std::fs::read_to_string(agent::shipped_file("config.yaml")).unwrap();
    let secret_dir = "/etc/node-cert-agent/ca.d";
    assert!(
        config.contains(secret_dir) && config.contains(agent::PROVISIONING_FILE),
        "the shipped config.yaml no longer names {secret_dir} and {}:\n{config}",
        agent::PROVISIONING_FILE
    );

    let node = Node::boot_with("provisioning-host", |root| {
        agent::install_files(root, &config);
        let file = root.join(agent::PROVISIONING_FILE.trim_start_matches('/'));
        std::fs::write(&file, &provisioning).unwrap();
        std::fs::create_dir_all(root.join(secret_dir.trim_start_matches('/'))).unwrap();
        agent::enable_unit_offline(root, agent::PROVISION_UNIT);
        agent::enable_unit_offline(root, agent::AGENT_UNIT);
    });
    let host = HostModeAgent::attach(&node, secret_dir);

    let at_boot = ContainerdState::of(&node);
    assert_eq!(
        at_boot.starts, 1,
        "containerd must have been started once at boot: {at_boot:?}"
    );
    assert_pull_ok(&node, &reg.image, "first pull after boot");

    // The daemon's first pass finds the provisioning unit's work done.
    host.wait_for_passes(1, PASS_TIMEOUT);
    let logs = host.logs();
    let first_pass = logs.iter().find(|e| e.is_pass()).unwrap();
    assert_eq!(
        first_pass.message,
        "reconciled: no change",
        "the daemon's first pass after provisioning must find nothing to do; its log:\n{}",
        agent::render_tail(&logs, 40)
    );

    assert_eq!(
        node.unit_property(agent::PROVISION_UNIT, "Result"),
        "success",
        "{} did not succeed",
        agent::PROVISION_UNIT
    );
    at_boot.assert_not_restarted(&node, "after provisioning and the daemon's first pass");
    assert_eq!(node.n_restarts(observe::CONTAINERD_UNIT), 0);
    assert_eq!(
        refresh_count(&node),
        1,
        "only the provisioning run refreshes the trust store: {:?}",
        observe::refresh_runs(&node)
    );
    observe::assert_trusted(&node, &ca, "after provisioning");
    observe::assert_trusted(
        &node,
        &second,
        "after provisioning (second PEM of the file)",
    );
}

// ---------------------------------------------------------------------------
// 3. No-ops: republishing identical content and restarting the agent never
//    restart containerd or run the refresh tool.
// ---------------------------------------------------------------------------

const NOOP_REPUBLISHES: usize = 20;
const NOOP_AGENT_RESTARTS: usize = 5;

fn scenario_noops(mode: Mode) {
    let node = boot("noops", mode);
    let mut agent = Agent::start(&node, mode);
    let ca = TestCa::new(&format!("nca noops {mode} CA"));
    let storage = tempfile::tempdir().unwrap();
    let reg = TestRegistry::start(&ca, storage.path(), "noops/hello");
    let secret = secret_data(&[("ca1.crt", ca.cert_pem().as_bytes())]);

    let before = ContainerdState::of(&node);
    agent.publish_and_wait(&secret);
    before.assert_restarted_once(&node, &format!("({mode}) first publish"));
    assert_pull_ok(
        &node,
        &reg.image,
        &format!("({mode}) after the first publish"),
    );

    let before = ContainerdState::of(&node);
    let refreshes = refresh_count(&node);
    let log_start = agent.logs().len();
    let start = Instant::now();
    for _ in 0..NOOP_REPUBLISHES {
        agent.publish_and_wait(&secret);
    }
    let republish_time = start.elapsed();
    let start = Instant::now();
    for _ in 0..NOOP_AGENT_RESTARTS {
        agent.restart();
    }
    println!(
        "scenario 3 ({mode}): {NOOP_REPUBLISHES} republishes in {republish_time:.1?}, \
         {NOOP_AGENT_RESTARTS} agent restarts in {:.1?}",
        start.elapsed()
    );

    let context = format!("({mode}) republishes and agent restarts");
    before.assert_not_restarted(&node, &context);
    assert_eq!(
        refresh_count(&node),
        refreshes,
        "{context}: the refresh tool ran: {:?}",
        observe::refresh_runs(&node)
    );
    let phase = agent.logs().split_off(log_start);
    let passes = phase.iter().filter(|e| e.is_pass()).count();
    assert!(
        passes >= NOOP_REPUBLISHES + NOOP_AGENT_RESTARTS,
        "{context}: only {passes} passes logged"
    );
    assert_eq!(
        count_messages(&phase, "reconciled: trust set changed"),
        0,
        "{context}: a pass changed the trust set:\n{}",
        agent::render_tail(&phase, 60)
    );
    assert_pull_ok(&node, &reg.image, &format!("{context}, at the end"));
}

#[test]
fn noops_host() {
    scenario_noops(Mode::Host);
}

#[test]
fn noops_pod() {
    scenario_noops(Mode::Pod);
}

// ---------------------------------------------------------------------------
// 4. Rotation: add a second CA as a second key, then remove the first.
// ---------------------------------------------------------------------------

fn scenario_rotation(mode: Mode) {
    let node = boot("rotation", mode);
    let agent = Agent::start(&node, mode);
    let ca1 = TestCa::new(&format!("nca rotation {mode} CA1"));
    let ca2 = TestCa::new(&format!("nca rotation {mode} CA2"));
    let storage = tempfile::tempdir().unwrap();
    let reg_a = TestRegistry::start(&ca1, storage.path(), "rotation/a");
    let reg_b = TestRegistry::start(&ca2, storage.path(), "rotation/b");
    let (pem1, pem2) = (ca1.cert_pem(), ca2.cert_pem());

    // CA1 trusted.
    let s = ContainerdState::of(&node);
    agent.publish_and_wait(&secret_data(&[("ca1.crt", pem1.as_bytes())]));
    s.assert_restarted_once(&node, &format!("({mode}) CA1 published"));
    assert_pull_ok(&node, &reg_a.image, &format!("({mode}) CA1 published"));
    assert_pull_untrusted(&node, &reg_b.image, &format!("({mode}) CA1 published"));

    // CA2 added as a second key.
    let s = ContainerdState::of(&node);
    agent.publish_and_wait(&secret_data(&[
        ("ca1.crt", pem1.as_bytes()),
        ("ca2.crt", pem2.as_bytes()),
    ]));
    let context = format!("({mode}) CA2 added");
    s.assert_restarted_once(&node, &context);
    assert_pull_ok(&node, &reg_b.image, &context);
    assert_pull_ok(&node, &reg_a.image, &context);

    // CA1's key removed.
    let s = ContainerdState::of(&node);
    agent.publish_and_wait(&secret_data(&[("ca2.crt", pem2.as_bytes())]));
    let context = format!("({mode}) CA1 removed");
    s.assert_restarted_once(&node, &context);
    observe::assert_not_trusted(&node, &ca1, &context);
    observe::assert_trusted(&node, &ca2, &context);
    assert_pull_untrusted(&node, &reg_a.image, &context);
    assert_pull_ok(&node, &reg_b.image, &context);
}

#[test]
fn rotation_host() {
    scenario_rotation(Mode::Host);
}

#[test]
fn rotation_pod() {
    scenario_rotation(Mode::Pod);
}

// ---------------------------------------------------------------------------
// 5. Bad input: garbage, a private key and a double-base64 PEM next to a good
//    CA; then a broken update of the good key.
// ---------------------------------------------------------------------------

fn scenario_bad_input(mode: Mode) {
    let node = boot("bad-input", mode);
    let agent = Agent::start(&node, mode);
    let good = TestCa::new(&format!("nca bad-input {mode} good CA"));
    // A valid CA, but encoded twice: it must not be decoded and trusted.
    let smuggled = TestCa::new(&format!("nca bad-input {mode} double-base64 CA"));
    let storage = tempfile::tempdir().unwrap();
    let reg = TestRegistry::start(&good, storage.path(), "bad-input/hello");

    let good_pem = good.cert_pem();
    let private_key = pki::private_key_pem();
    let double_base64 = openssl::base64::encode_block(smuggled.cert_pem().as_bytes());
    let garbage: &[u8] = b"this is not a certificate\n\x00\x01\x02\xff\xfe\n";
    let bad: [(&str, &[u8]); 3] = [
        ("garbage.crt", garbage),
        ("tls.key", private_key.as_bytes()),
        ("double-base64.crt", double_base64.as_bytes()),
    ];
    let with_bad = |good_value: &[u8]| {
        let mut pairs = vec![("good.crt", good_value)];
        pairs.extend(bad.iter().copied());
        secret_data(&pairs)
    };

    // Bad keys next to the good one: the good CA works.
    let s = ContainerdState::of(&node);
    let (_, entries) = agent.publish_and_wait(&with_bad(good_pem.as_bytes()));
    let context = format!("({mode}) good and bad keys published");
    s.assert_restarted_once(&node, &context);
    assert_pull_ok(&node, &reg.image, &context);
    observe::assert_trusted(&node, &good, &context);
    observe::assert_not_trusted(&node, &smuggled, &context);
    for (key, _) in bad {
        assert_error_names_key(&entries, key, &context);
    }

    // Only the good key; then the bad keys added to it again.
    let s = ContainerdState::of(&node);
    let refreshes = refresh_count(&node);
    agent.publish_and_wait(&secret_data(&[("good.crt", good_pem.as_bytes())]));
    let (_, entries) = agent.publish_and_wait(&with_bad(good_pem.as_bytes()));
    let context = format!("({mode}) bad keys added to a set with the good one");
    s.assert_not_restarted(&node, &context);
    assert_eq!(
        refresh_count(&node),
        refreshes,
        "{context}: the refresh tool ran"
    );
    for (key, _) in bad {
        assert_error_names_key(&entries, key, &context);
    }

    // The good key replaced by a broken version: its last good version stays.
    let truncated = &good_pem.as_bytes()[..good_pem.len() / 2];
    let (_, entries) = agent.publish_and_wait(&with_bad(truncated));
    let context = format!("({mode}) good key replaced by a truncated PEM");
    assert_error_names_key(&entries, "good.crt", &context);
    s.assert_not_restarted(&node, &context);
    assert_eq!(
        refresh_count(&node),
        refreshes,
        "{context}: the refresh tool ran"
    );
    observe::assert_trusted(&node, &good, &context);
    assert_pull_ok(&node, &reg.image, &context);

    // The private key's material never reaches the log.
    let key_line = private_key.lines().nth(1).unwrap();
    let leaked: Vec<String> = agent
        .logs()
        .iter()
        .map(|e| e.raw.to_string())
        .filter(|raw| raw.contains(key_line))
        .collect();
    assert!(
        leaked.is_empty(),
        "({mode}) the private key's PEM body appears in the agent's log: {leaked:?}"
    );
}

#[test]
fn bad_input_host() {
    scenario_bad_input(Mode::Host);
}

#[test]
fn bad_input_pod() {
    scenario_bad_input(Mode::Pod);
}

// ---------------------------------------------------------------------------
// 6. Root rotation (an Istio plug-in CA): one key holds the old and the new
//    root, then only the new one.
// ---------------------------------------------------------------------------

fn scenario_root_rotation(mode: Mode) {
    let node = boot("root-rotation", mode);
    let agent = Agent::start(&node, mode);
    let old = TestCa::new(&format!("nca root-rotation {mode} old root"));
    let new = TestCa::new(&format!("nca root-rotation {mode} new root"));
    let storage = tempfile::tempdir().unwrap();
    let reg_old = TestRegistry::start(&old, storage.path(), "root-rotation/old");
    let reg_new = TestRegistry::start(&new, storage.path(), "root-rotation/new");
    let key = "root-cert.pem";

    let both = format!("{}{}", old.cert_pem(), new.cert_pem());
    let s = ContainerdState::of(&node);
    agent.publish_and_wait(&secret_data(&[(key, both.as_bytes())]));
    let context = format!("({mode}) old and new root in one key");
    s.assert_restarted_once(&node, &context);
    assert_pull_ok(&node, &reg_old.image, &context);
    assert_pull_ok(&node, &reg_new.image, &context);

    let s = ContainerdState::of(&node);
    agent.publish_and_wait(&secret_data(&[(key, new.cert_pem().as_bytes())]));
    let context = format!("({mode}) only the new root");
    s.assert_restarted_once(&node, &context);
    observe::assert_not_trusted(&node, &old, &context);
    observe::assert_trusted(&node, &new, &context);
    assert_pull_untrusted(&node, &reg_old.image, &context);
    assert_pull_ok(&node, &reg_new.image, &context);
}

#[test]
fn root_rotation_host() {
    scenario_root_rotation(Mode::Host);
}

#[test]
fn root_rotation_pod() {
    scenario_root_rotation(Mode::Pod);
}

// ---------------------------------------------------------------------------
// 7. containerd stopped: the trust store is updated and containerd is not
//    started by the agent.
// ---------------------------------------------------------------------------

fn scenario_containerd_stopped(mode: Mode) {
    let node = boot("containerd-stopped", mode);
    let agent = Agent::start(&node, mode);
    let ca = TestCa::new(&format!("nca containerd-stopped {mode} CA"));
    let storage = tempfile::tempdir().unwrap();
    let reg = TestRegistry::start(&ca, storage.path(), "containerd-stopped/hello");

    node.exec_ok(&["systemctl", "stop", observe::CONTAINERD_UNIT]);
    assert_eq!(
        node.unit_property(observe::CONTAINERD_UNIT, "ActiveState"),
        "inactive"
    );
    let starts = observe::containerd_starts(&node);
    let refreshes = refresh_count(&node);

    agent.publish_and_wait(&secret_data(&[("ca1.crt", ca.cert_pem().as_bytes())]));
    let context = format!("({mode}) CA published while containerd is stopped");
    observe::assert_trusted(&node, &ca, &context);
    assert_eq!(
        refresh_count(&node),
        refreshes + 1,
        "{context}: the refresh tool must run once"
    );
    assert_eq!(
        node.unit_property(observe::CONTAINERD_UNIT, "ActiveState"),
        "inactive",
        "{context}: containerd is no longer inactive"
    );
    assert_eq!(
        observe::containerd_starts(&node),
        starts,
        "{context}: containerd was started"
    );

    // Whoever starts containerd later gets the new trust.
    start_containerd(&node);
    assert_pull_ok(&node, &reg.image, &format!("{context}, then started"));
}

#[test]
fn containerd_stopped_host() {
    scenario_containerd_stopped(Mode::Host);
}

#[test]
fn containerd_stopped_pod() {
    scenario_containerd_stopped(Mode::Pod);
}

// ---------------------------------------------------------------------------
// 8. journald (host mode): the installed CA is described by structured fields.
// ---------------------------------------------------------------------------

#[test]
fn journald_fields_host() {
    let node = boot("journald", Mode::Host);
    let agent = Agent::start(&node, Mode::Host);
    let ca = TestCa::new("nca journald CA");
    agent.publish_and_wait(&secret_data(&[("ca1.crt", ca.cert_pem().as_bytes())]));

    let fingerprint = ca.sha256_fingerprint();
    let journal = node.journal_json(&["-u", agent::AGENT_UNIT]);
    let entry = journal
        .iter()
        .find(|v| v.get("CA_FINGERPRINT").and_then(|f| f.as_str()) == Some(fingerprint.as_str()))
        .unwrap_or_else(|| {
            panic!(
                "no entry of `journalctl -u {} -o json` has CA_FINGERPRINT={fingerprint}; entries:\n{}",
                agent::AGENT_UNIT,
                journal
                    .iter()
                    .map(|v| v.to_string())
                    .collect::<Vec<_>>()
                    .join("\n")
            )
        });
    let field = |k: &str| {
        entry
            .get(k)
            .and_then(|f| f.as_str())
            .unwrap_or_else(|| panic!("journal entry has no string field {k}: {entry}"))
            .to_owned()
    };
    assert_eq!(
        field("SYSLOG_IDENTIFIER"),
        agent::SYSLOG_IDENTIFIER,
        "{entry}"
    );
    assert_eq!(field("CA_KEY"), "ca1.crt", "{entry}");
    assert!(
        field("MESSAGE").starts_with("installed CA from key \"ca1.crt\""),
        "{entry}"
    );
    assert!(
        field("CA_SUBJECT").contains("CN=nca journald CA"),
        "CA_SUBJECT does not name the CA: {entry}"
    );
    assert!(
        field("CA_ISSUER").contains("CN=nca journald CA"),
        "CA_ISSUER of a self-signed root is its subject: {entry}"
    );
    let serial = pki::serial_hex(ca.cert());
    assert_eq!(
        field("CA_SERIAL")
            .trim_start_matches('0')
            .to_ascii_uppercase(),
        serial.trim_start_matches('0').to_ascii_uppercase(),
        "{entry}"
    );
}
