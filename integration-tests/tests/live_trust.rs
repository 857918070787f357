//! Live trust for image pulls on real nodes: with containerd's CRI
//! registry `config_path` set as AKS sets it (`/etc/containerd/certs.d`), the
//! agent keeps the desired CAs in `certs.d/_default` (its marked
//! `hosts.toml` and its `node-cert-agent-ca.crt` bundle), so an added CA
//! works at the next CRI pull with **no containerd restart**; a removed CA
//! that the running containerd may have cached still costs exactly one
//! restart; another owner's files force the old restart path and are never
//! touched; and with containerd's default config (no `config_path`) every
//! change restarts containerd once, as before, and the agent says why.
//!
//! Same harness and synchronisation as `ca_trust.rs`: a systemd-nspawn Debian
//! node with its own containerd, real TLS registries (`registry.test:<port>`),
//! CRI pulls as kubelet does them, the agent in host mode (the shipped units)
//! and pod mode (`--host-root`). After each publish the test waits for the
//! agent's pass (`reconciled: ...`) before it asserts. containerd restarts
//! are counted by its MainPID and by systemd's "Started containerd.service"
//! messages ([`ContainerdState`]).
//!
//! The node's `config.toml` is edited, and containerd restarted, before the
//! agent starts: a config newer than containerd's activation makes the agent
//! restart it (the running process may not read `certs.d`).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a failed step must panic loudly"
)]

use std::collections::BTreeSet;
use std::time::{Duration, Instant, SystemTime};

use integration_tests::agent::{self, Agent, LogEntry, Mode};
use integration_tests::containerd_config::{
    config_version, set_config_path, wait_for_cri, with_config_path, CERTS_D, CONTAINERD_CONFIG,
};
use integration_tests::cri::PULL_TIMEOUT;
use integration_tests::observe::{self, ContainerdState, CONTAINERD_UNIT};
use integration_tests::pki::{self, TestCa};
use integration_tests::{
    assert_pull_ok, assert_pull_untrusted, cri_try_pull, preflight, secret_data,
    wait_until_or_timeout, Node, TestRegistry,
};
use openssl::x509::X509;
use serde_json::Value;

// ---------------------------------------------------------------------------
// What containerd and the agent are expected to have on the node.
// ---------------------------------------------------------------------------

/// The directory containerd reads for every registry without its own.
const DEFAULT_DIR: &str = "/etc/containerd/certs.d/_default";
/// The agent's `hosts.toml` in `_default`.
const DEFAULT_HOSTS: &str = "/etc/containerd/certs.d/_default/hosts.toml";
/// The agent's CA bundle in `_default` (`*.crt`, so that containerd 1.6 and
/// 1.7, which cannot parse a `hosts.toml` without a `[host]` table, read it
/// through their fallback to the directory's certificate files).
const DEFAULT_BUNDLE: &str = "/etc/containerd/certs.d/_default/node-cert-agent-ca.crt";
/// The first line of every `hosts.toml` the agent writes.
const HOSTS_MARKER: &str = "# Written by node-cert-agent";
/// The agent's log line when the live path made a restart unnecessary.
const MSG_AVOIDED: &str = "containerd.service is not restarted";
/// The agent's log line when containerd needs a restart (`reason` field).
const MSG_NEEDS_RESTART: &str = "containerd.service needs a restart";
/// How long the daemon's status may lag behind its pass's log line.
const STATUS_TIMEOUT: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// Checks the machine, then boots a node named after the scenario and mode.
fn boot(scenario: &str, mode: Mode) -> Node {
    preflight();
    Node::boot(&format!("live-{scenario}-{mode}"))
}

/// The first entry of `entries` whose message starts with `prefix`.
fn find<'e>(entries: &'e [LogEntry], prefix: &str) -> Option<&'e LogEntry> {
    entries.iter().find(|e| e.message.starts_with(prefix))
}

fn count(entries: &[LogEntry], prefix: &str) -> usize {
    entries
        .iter()
        .filter(|e| e.message.starts_with(prefix))
        .count()
}

/// Panics unless `entries` (one pass) say that containerd was not restarted
/// because the live path made the change effective.
fn assert_restart_avoided(entries: &[LogEntry], context: &str) {
    let avoided = find(entries, MSG_AVOIDED).unwrap_or_else(|| {
        panic!(
            "{context}: the pass did not log {MSG_AVOIDED:?}:\n{}",
            agent::render_tail(entries, 40)
        )
    });
    assert_eq!(
        avoided.field("restart_avoided").as_deref(),
        Some("true"),
        "{context}: {MSG_AVOIDED:?} without restart_avoided=true: {}",
        avoided.raw
    );
    assert_eq!(
        count(entries, MSG_NEEDS_RESTART),
        0,
        "{context}: the pass said containerd needs a restart:\n{}",
        agent::render_tail(entries, 40)
    );
}

/// The `reason` of the pass's "needs a restart" line; panics unless there is
/// exactly one and it mentions `want`.
fn assert_restart_reason(entries: &[LogEntry], want: &str, context: &str) -> String {
    assert_eq!(
        count(entries, MSG_NEEDS_RESTART),
        1,
        "{context}: want exactly one {MSG_NEEDS_RESTART:?} line:\n{}",
        agent::render_tail(entries, 40)
    );
    let e = find(entries, MSG_NEEDS_RESTART).unwrap();
    let reason = e.field("reason").unwrap_or_else(|| {
        panic!(
            "{context}: {MSG_NEEDS_RESTART:?} without a reason field: {}",
            e.raw
        )
    });
    assert!(
        reason.contains(want),
        "{context}: the restart's reason does not mention {want:?}: {reason:?}"
    );
    assert_eq!(
        count(entries, MSG_AVOIDED),
        0,
        "{context}: the pass both needed and avoided the restart:\n{}",
        agent::render_tail(entries, 40)
    );
    println!("{context}: containerd needs a restart: {reason}");
    reason
}

/// SHA-256 fingerprints of the certificates in a PEM file of the node.
fn pem_fingerprints(node: &Node, node_path: &str) -> BTreeSet<String> {
    X509::stack_from_pem(&node.read_file(node_path))
        .unwrap_or_else(|e| panic!("{node_path} is not PEM: {e}"))
        .iter()
        .map(pki::sha256_fingerprint)
        .collect()
}

/// Panics unless `_default` holds exactly the agent's two files: the marked
/// `hosts.toml` naming the bundle by its node path, and the bundle holding
/// exactly `cas`.
fn assert_default_holds(node: &Node, cas: &[&TestCa], context: &str) {
    let mut names: Vec<String> = std::fs::read_dir(node.host_path(DEFAULT_DIR))
        .unwrap_or_else(|e| panic!("{context}: cannot list {DEFAULT_DIR}: {e}"))
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["hosts.toml", "node-cert-agent-ca.crt"],
        "{context}: {DEFAULT_DIR} holds other files"
    );
    let hosts = String::from_utf8(node.read_file(DEFAULT_HOSTS)).unwrap();
    assert!(
        hosts.starts_with(HOSTS_MARKER),
        "{context}: {DEFAULT_HOSTS} does not start with {HOSTS_MARKER:?}:\n{hosts}"
    );
    let ca_line = format!("ca = \"{DEFAULT_BUNDLE}\"");
    assert!(
        hosts.lines().any(|l| l.trim() == ca_line),
        "{context}: {DEFAULT_HOSTS} has no line {ca_line:?}:\n{hosts}"
    );
    let want: BTreeSet<String> = cas.iter().map(|c| c.sha256_fingerprint()).collect();
    assert_eq!(
        pem_fingerprints(node, DEFAULT_BUNDLE),
        want,
        "{context}: {DEFAULT_BUNDLE} does not hold exactly the published CAs"
    );
}

/// Panics if the agent left anything of its own in `_default`.
fn assert_no_agent_files(node: &Node, context: &str) {
    assert!(
        !node.exists(DEFAULT_BUNDLE),
        "{context}: {DEFAULT_BUNDLE} exists"
    );
    if node.exists(DEFAULT_HOSTS) {
        let hosts = node.read_file(DEFAULT_HOSTS);
        assert!(
            !hosts.starts_with(HOSTS_MARKER.as_bytes()),
            "{context}: the agent's {DEFAULT_HOSTS} is still there"
        );
    }
}

/// Waits up to [`PULL_TIMEOUT`] from `swapped` for a pull of `image` to
/// succeed (without removing it first: it was not pulled before); returns
/// the time from the `..data` swap.
fn pull_until_ok(node: &Node, agent: &Agent, image: &str, swapped: Instant) -> Duration {
    loop {
        let last_error = match cri_try_pull(node, image) {
            Ok(_) => return swapped.elapsed(),
            Err(e) => e,
        };
        assert!(
            swapped.elapsed() < PULL_TIMEOUT,
            "pull of {image} still failing {PULL_TIMEOUT:?} after the ..data swap: {last_error}\n\
             --- agent log ---\n{}",
            agent.log_tail(40)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Where `key` first occurs in `v`, depth first.
fn find_key<'v>(v: &'v Value, key: &str) -> Option<&'v Value> {
    match v {
        Value::Object(m) => m
            .get(key)
            .or_else(|| m.values().find_map(|x| find_key(x, key))),
        Value::Array(a) => a.iter().find_map(|x| find_key(x, key)),
        _ => None,
    }
}

/// `node-cert-agent status -o json` of the node, run from the host with the
/// node's root as host root (what a pod runs; in host mode it reads the
/// node's config file there).
fn status_json(node: &Node) -> Value {
    let out = std::process::Command::new(agent::agent_binary())
        .args(["status", "-o", "json", "--host-root"])
        .arg(node.root())
        .output()
        .unwrap();
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "status -o json is not JSON ({e}): {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// Waits until `status -o json` reports how pulls get the CAs
/// (`pullTrust`) with `mode`; returns that object.
fn status_pull_trust(node: &Node, mode: &str, context: &str) -> Value {
    let mut last = Value::Null;
    let ok = wait_until_or_timeout(STATUS_TIMEOUT, || {
        last = status_json(node);
        find_key(&last, "pullTrust")
            .and_then(|t| t.get("mode"))
            .and_then(Value::as_str)
            == Some(mode)
    });
    assert!(
        ok,
        "{context}: `status -o json` has no pullTrust with mode {mode:?} within {STATUS_TIMEOUT:?}:\n{last:#}"
    );
    let trust = find_key(&last, "pullTrust").unwrap().clone();
    println!("{context}: status pullTrust = {trust}");
    trust
}

fn str_of<'v>(v: &'v Value, key: &str) -> &'v str {
    v.get(key).and_then(Value::as_str).unwrap_or("")
}

/// A file's bytes, permissions and modification time, from the host.
fn snapshot(node: &Node, node_path: &str) -> (Vec<u8>, u32, SystemTime) {
    use std::os::unix::fs::PermissionsExt;
    let path = node.host_path(node_path);
    let meta =
        std::fs::metadata(&path).unwrap_or_else(|e| panic!("cannot stat {}: {e}", path.display()));
    (
        std::fs::read(&path).unwrap(),
        meta.permissions().mode(),
        meta.modified().unwrap(),
    )
}

/// The names in a node directory, sorted.
fn listing(node: &Node, node_dir: &str) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(node.host_path(node_dir))
        .unwrap_or_else(|e| panic!("cannot list {node_dir}: {e}"))
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn refresh_count(node: &Node) -> usize {
    observe::refresh_runs(node).len()
}

// ---------------------------------------------------------------------------
// 1. A CA published: the pull from its registry works at the next pull,
//    with 0 containerd restarts; the agent's _default files are there.
// ---------------------------------------------------------------------------

fn scenario_publish_live(mode: Mode) {
    let node = boot("publish", mode);
    set_config_path(&node);
    let agent = Agent::start(&node, mode);
    let ca = TestCa::new(&format!("nca live publish {mode} CA"));
    let storage = tempfile::tempdir().unwrap();
    let reg = TestRegistry::start(&ca, storage.path(), "live-publish/hello");
    let context = format!("({mode}) CA published with config_path set");

    // containerd verifies a certificate before the CA exists: its system
    // roots are loaded (and cached) without it.
    assert_pull_untrusted(&node, &reg.image, "before the CA is published");

    let before = ContainerdState::of(&node);
    let refreshes = refresh_count(&node);
    let log_start = agent.logs().len();
    let passes = agent.passes();
    let swapped = agent
        .secret()
        .publish(&secret_data(&[("ca1.crt", ca.cert_pem().as_bytes())]));
    let latency = pull_until_ok(&node, &agent, &reg.image, swapped);
    println!(
        "scenario 1 ({mode}): ..data swap -> pull succeeded in {} ms, no restart",
        latency.as_millis()
    );
    agent.wait_for_passes(passes + 1);
    let pass = agent.logs().split_off(log_start);

    before.assert_not_restarted(&node, &context);
    assert_restart_avoided(&pass, &context);
    assert_eq!(
        refresh_count(&node),
        refreshes + 1,
        "{context}: the OS trust store is still refreshed, once"
    );
    observe::assert_trusted(&node, &ca, &context);
    assert_default_holds(&node, &[&ca], &context);
    let trust = status_pull_trust(&node, "live", &context);
    assert_eq!(str_of(&trust, "dir"), DEFAULT_DIR, "{context}: {trust}");

    // A fresh pull (the image removed first) works too, still no restart.
    assert_pull_ok(&node, &reg.image, &format!("{context}, fresh pull"));
    before.assert_not_restarted(&node, &format!("{context}, after a fresh pull"));

    // Every containerd parses the agent's hosts.toml (1.6 and 1.7 before
    // 1.7.32 cannot decode one without a [host] table; the agent writes an
    // empty one), so none logs a decode failure on every pull.
    let version = node.exec_ok(&["containerd", "--version"]).stdout;
    let decode_failures = node
        .journal_json(&["-u", CONTAINERD_UNIT])
        .iter()
        .filter(|v| {
            v.get("MESSAGE")
                .and_then(Value::as_str)
                .is_some_and(|m| m.contains("failed to decode hosts.toml"))
        })
        .count();
    assert_eq!(
        decode_failures,
        0,
        "{context}: {} could not decode the agent's hosts.toml",
        String::from_utf8_lossy(&version).trim()
    );
}

#[test]
fn publish_live_host() {
    scenario_publish_live(Mode::Host);
}

#[test]
fn publish_live_pod() {
    scenario_publish_live(Mode::Pod);
}

// ---------------------------------------------------------------------------
// 2. 10 identical republishes and an agent restart: still 0 restarts.
// ---------------------------------------------------------------------------

const NOOP_REPUBLISHES: usize = 10;

fn scenario_noops_live(mode: Mode) {
    let node = boot("noops", mode);
    set_config_path(&node);
    let mut agent = Agent::start(&node, mode);
    let ca = TestCa::new(&format!("nca live noops {mode} CA"));
    let storage = tempfile::tempdir().unwrap();
    let reg = TestRegistry::start(&ca, storage.path(), "live-noops/hello");
    let secret = secret_data(&[("ca1.crt", ca.cert_pem().as_bytes())]);

    let before = ContainerdState::of(&node);
    let (_, pass) = agent.publish_and_wait(&secret);
    let context = format!("({mode}) first publish");
    assert_restart_avoided(&pass, &context);
    assert_pull_ok(&node, &reg.image, &context);

    let refreshes = refresh_count(&node);
    let hosts = snapshot(&node, DEFAULT_HOSTS);
    let bundle = snapshot(&node, DEFAULT_BUNDLE);
    let log_start = agent.logs().len();
    let start = Instant::now();
    for _ in 0..NOOP_REPUBLISHES {
        agent.publish_and_wait(&secret);
    }
    agent.restart();
    println!(
        "scenario 2 ({mode}): {NOOP_REPUBLISHES} republishes and an agent restart in {:.1?}",
        start.elapsed()
    );

    let context = format!("({mode}) {NOOP_REPUBLISHES} republishes and an agent restart");
    before.assert_not_restarted(&node, &context);
    assert_eq!(
        refresh_count(&node),
        refreshes,
        "{context}: the refresh tool ran"
    );
    let phase = agent.logs().split_off(log_start);
    assert!(
        agent::count_passes(&phase) > NOOP_REPUBLISHES,
        "{context}: only {} passes logged",
        agent::count_passes(&phase)
    );
    assert_eq!(
        count(&phase, "reconciled: trust set changed"),
        0,
        "{context}: a pass changed the trust set:\n{}",
        agent::render_tail(&phase, 60)
    );
    assert_eq!(
        count(&phase, "containerd's registry host configuration updated"),
        0,
        "{context}: a no-op pass rewrote _default:\n{}",
        agent::render_tail(&phase, 60)
    );
    assert_eq!(
        snapshot(&node, DEFAULT_HOSTS),
        hosts,
        "{context}: hosts.toml was rewritten"
    );
    assert_eq!(
        snapshot(&node, DEFAULT_BUNDLE),
        bundle,
        "{context}: the bundle was rewritten"
    );
    assert_default_holds(&node, &[&ca], &context);
    assert_pull_ok(&node, &reg.image, &format!("{context}, at the end"));
    before.assert_not_restarted(&node, &format!("{context}, at the end"));
}

#[test]
fn noops_live_host() {
    scenario_noops_live(Mode::Host);
}

#[test]
fn noops_live_pod() {
    scenario_noops_live(Mode::Pod);
}

// ---------------------------------------------------------------------------
// 3. The CA removed: the next pulls fail, with exactly one restart (the CA
//    was in the OS bundle while containerd ran, so it may be in its cache).
// ---------------------------------------------------------------------------

fn scenario_remove_live(mode: Mode) {
    let node = boot("remove", mode);
    set_config_path(&node);
    let agent = Agent::start(&node, mode);
    let ca = TestCa::new(&format!("nca live remove {mode} CA"));
    let storage = tempfile::tempdir().unwrap();
    let reg = TestRegistry::start(&ca, storage.path(), "live-remove/hello");

    let s = ContainerdState::of(&node);
    let (_, pass) = agent.publish_and_wait(&secret_data(&[("ca1.crt", ca.cert_pem().as_bytes())]));
    let context = format!("({mode}) CA published");
    assert_restart_avoided(&pass, &context);
    s.assert_not_restarted(&node, &context);
    assert_pull_ok(&node, &reg.image, &context);

    let s = ContainerdState::of(&node);
    let (_, pass) = agent.publish_and_wait(&secret_data(&[]));
    let context = format!("({mode}) CA removed");
    s.assert_restarted_once(&node, &context);
    assert_restart_reason(&pass, "removed CA", &context);
    observe::assert_not_trusted(&node, &ca, &context);
    assert!(
        !node.exists(DEFAULT_DIR),
        "{context}: the agent's empty _default was left behind: {:?}",
        listing(&node, DEFAULT_DIR)
    );
    assert_pull_untrusted(&node, &reg.image, &context);
    assert_pull_untrusted(&node, &reg.image, &format!("{context}, second pull"));
    // Exactly one: nothing restarts it again later.
    s.assert_restarted_once(&node, &format!("{context}, after the pulls"));
}

#[test]
fn remove_live_host() {
    scenario_remove_live(Mode::Host);
}

#[test]
fn remove_live_pod() {
    scenario_remove_live(Mode::Pod);
}

// ---------------------------------------------------------------------------
// 4. The CA published (0 restarts), containerd restarted by someone else
//    (it now starts with the CA in its OS bundle), then the CA removed: the
//    agent restarts containerd and the pull fails.
// ---------------------------------------------------------------------------

fn scenario_foreign_restart(mode: Mode) {
    let node = boot("foreign-restart", mode);
    set_config_path(&node);
    let agent = Agent::start(&node, mode);
    let ca = TestCa::new(&format!("nca live foreign-restart {mode} CA"));
    let storage = tempfile::tempdir().unwrap();
    let reg = TestRegistry::start(&ca, storage.path(), "live-foreign-restart/hello");

    let s = ContainerdState::of(&node);
    let (_, pass) = agent.publish_and_wait(&secret_data(&[("ca1.crt", ca.cert_pem().as_bytes())]));
    let context = format!("({mode}) CA published");
    assert_restart_avoided(&pass, &context);
    s.assert_not_restarted(&node, &context);
    assert_pull_ok(&node, &reg.image, &context);

    // Someone else restarts containerd: its system roots now hold the CA.
    let s = ContainerdState::of(&node);
    node.exec_ok(&["systemctl", "restart", CONTAINERD_UNIT]);
    s.assert_restarted_once(&node, &format!("({mode}) the test's own restart"));
    wait_for_cri(&node);
    assert_pull_ok(
        &node,
        &reg.image,
        &format!("({mode}) after containerd's restart"),
    );

    let s = ContainerdState::of(&node);
    let (_, pass) = agent.publish_and_wait(&secret_data(&[]));
    let context = format!("({mode}) CA removed after a restart the agent did not make");
    s.assert_restarted_once(&node, &context);
    assert_restart_reason(&pass, "removed CA", &context);
    observe::assert_not_trusted(&node, &ca, &context);
    assert_no_agent_files(&node, &context);
    assert_pull_untrusted(&node, &reg.image, &context);
    s.assert_restarted_once(&node, &format!("{context}, after the pull"));
}

#[test]
fn foreign_restart_then_remove_host() {
    scenario_foreign_restart(Mode::Host);
}

#[test]
fn foreign_restart_then_remove_pod() {
    scenario_foreign_restart(Mode::Pod);
}

// ---------------------------------------------------------------------------
// 5. A second registry whose CA is only in the OS bundle (a distro anchor
//    installed by hand) keeps working while the agent's _default holds
//    another CA: `ca` entries are added to the system roots, not put in
//    their place.
// ---------------------------------------------------------------------------

const OTHER_ANCHOR: &str = "/usr/local/share/ca-certificates/nca-live-os-only.crt";

fn scenario_os_bundle_kept(mode: Mode) {
    let node = boot("os-bundle", mode);
    let agent_ca = TestCa::new(&format!("nca live os-bundle {mode} agent CA"));
    let os_ca = TestCa::new(&format!("nca live os-bundle {mode} OS-only CA"));
    let storage = tempfile::tempdir().unwrap();
    let reg_agent = TestRegistry::start(&agent_ca, storage.path(), "live-os-bundle/agent");
    let reg_os = TestRegistry::start(&os_ca, storage.path(), "live-os-bundle/os");

    node.write_file(OTHER_ANCHOR, os_ca.cert_pem().as_bytes(), 0o644);
    node.exec_ok(&["update-ca-certificates"]);
    observe::assert_trusted(&node, &os_ca, "the hand-installed distro anchor");
    // Restarts containerd: it starts with the OS-only CA in its bundle.
    set_config_path(&node);
    let agent = Agent::start(&node, mode);

    let context = format!("({mode}) before the agent's CA is published");
    assert_pull_ok(&node, &reg_os.image, &context);
    assert_pull_untrusted(&node, &reg_agent.image, &context);

    let s = ContainerdState::of(&node);
    let (_, pass) =
        agent.publish_and_wait(&secret_data(&[("ca1.crt", agent_ca.cert_pem().as_bytes())]));
    let context = format!("({mode}) the agent's CA in _default, the other only in the OS bundle");
    assert_restart_avoided(&pass, &context);
    s.assert_not_restarted(&node, &context);
    assert_default_holds(&node, &[&agent_ca], &context);
    assert_pull_ok(&node, &reg_agent.image, &context);
    assert_pull_ok(&node, &reg_os.image, &context);
    s.assert_not_restarted(&node, &format!("{context}, after the pulls"));
    observe::assert_trusted(&node, &os_ca, &context);
}

#[test]
fn os_bundle_registry_kept_host() {
    scenario_os_bundle_kept(Mode::Host);
}

#[test]
fn os_bundle_registry_kept_pod() {
    scenario_os_bundle_kept(Mode::Pod);
}

// ---------------------------------------------------------------------------
// 6. Another owner's files in certs.d: an operator's _default/hosts.toml,
//    and (separately) an operator's host directory for another registry.
//    They stay byte for byte, and a publish restarts containerd once (the
//    documented fallback); the pull works.
// ---------------------------------------------------------------------------

/// An operator's `_default/hosts.toml`: a comment and a key that changes
/// nothing (containerd parses it; 1.6 and 1.7 fail to, for want of a
/// `[host]` table, and then read the directory's `*.crt` files: none).
const OPERATOR_DEFAULT_HOSTS: &str = "# operator's\nskip_verify = false\n";
/// An operator's host directory for a registry the tests never pull from.
const OPERATOR_HOST_DIR: &str = "/etc/containerd/certs.d/mirror.example_5000_";
const OPERATOR_HOST_HOSTS: &str = "/etc/containerd/certs.d/mirror.example_5000_/hosts.toml";
const OPERATOR_HOST_TOML: &str = "# operator's mirror\nserver = \"https://mirror.example:5000\"\n\n[host.\"https://mirror.example:5000\"]\n  capabilities = [\"pull\", \"resolve\"]\n";

fn scenario_operator_files(mode: Mode, default_hosts: bool) {
    let scenario = if default_hosts {
        "operator-default"
    } else {
        "operator-host-dir"
    };
    let node = boot(scenario, mode);
    let (dir, file, content) = if default_hosts {
        (DEFAULT_DIR, DEFAULT_HOSTS, OPERATOR_DEFAULT_HOSTS)
    } else {
        (OPERATOR_HOST_DIR, OPERATOR_HOST_HOSTS, OPERATOR_HOST_TOML)
    };
    node.write_file(file, content.as_bytes(), 0o644);
    set_config_path(&node);
    let original = snapshot(&node, file);
    let original_listing = listing(&node, dir);
    let agent = Agent::start(&node, mode);
    let ca = TestCa::new(&format!("nca live {scenario} {mode} CA"));
    let storage = tempfile::tempdir().unwrap();
    let reg = TestRegistry::start(&ca, storage.path(), "live-operator/hello");
    assert_pull_untrusted(&node, &reg.image, "before the CA is published");

    let s = ContainerdState::of(&node);
    let (_, pass) = agent.publish_and_wait(&secret_data(&[("ca1.crt", ca.cert_pem().as_bytes())]));
    let context = format!("({mode}) CA published beside the operator's {file}");
    s.assert_restarted_once(&node, &context);
    let trust = status_pull_trust(&node, "restart", &context);
    if default_hosts {
        assert_restart_reason(&pass, DEFAULT_HOSTS, &context);
        assert_eq!(str_of(&trust, "path"), DEFAULT_HOSTS, "{context}: {trust}");
    } else {
        assert_restart_reason(&pass, "directory of its own", &context);
        assert_eq!(
            str_of(&trust, "path"),
            OPERATOR_HOST_DIR,
            "{context}: {trust}"
        );
    }
    assert_pull_ok(&node, &reg.image, &context);

    // A second change takes the same path: one more restart.
    let ca2 = TestCa::new(&format!("nca live {scenario} {mode} CA2"));
    let s = ContainerdState::of(&node);
    let (_, pass) = agent.publish_and_wait(&secret_data(&[
        ("ca1.crt", ca.cert_pem().as_bytes()),
        ("ca2.crt", ca2.cert_pem().as_bytes()),
    ]));
    let context = format!("({mode}) a second CA added beside the operator's {file}");
    s.assert_restarted_once(&node, &context);
    assert_eq!(count(&pass, MSG_NEEDS_RESTART), 1, "{context}");
    assert_pull_ok(&node, &reg.image, &context);

    let context = format!("({mode}) the operator's {file}");
    assert_eq!(
        snapshot(&node, file),
        original,
        "{context}: changed (bytes, mode or mtime)"
    );
    assert_eq!(
        listing(&node, dir),
        original_listing,
        "{context}: its directory {dir} changed"
    );
}

#[test]
fn operator_default_hosts_untouched_host() {
    scenario_operator_files(Mode::Host, true);
}

#[test]
fn operator_default_hosts_untouched_pod() {
    scenario_operator_files(Mode::Pod, true);
}

#[test]
fn operator_host_dir_untouched_host() {
    scenario_operator_files(Mode::Host, false);
}

#[test]
fn operator_host_dir_untouched_pod() {
    scenario_operator_files(Mode::Pod, false);
}

// ---------------------------------------------------------------------------
// 7. containerd's default config (config_path unset): one restart per
//    change, as before, and the log and `status` say why.
// ---------------------------------------------------------------------------

fn scenario_default_config(mode: Mode) {
    let node = boot("default-config", mode);
    let agent = Agent::start(&node, mode);
    let ca = TestCa::new(&format!("nca live default-config {mode} CA"));
    let storage = tempfile::tempdir().unwrap();
    let reg = TestRegistry::start(&ca, storage.path(), "live-default-config/hello");

    let s = ContainerdState::of(&node);
    let (_, pass) = agent.publish_and_wait(&secret_data(&[("ca1.crt", ca.cert_pem().as_bytes())]));
    let context = format!("({mode}) CA published on containerd's default config");
    s.assert_restarted_once(&node, &context);
    assert_restart_reason(&pass, "config_path", &context);
    let trust = status_pull_trust(&node, "restart", &context);
    assert!(
        str_of(&trust, "reason").contains("config_path"),
        "{context}: status does not say why: {trust}"
    );
    assert!(
        str_of(&trust, "hint").contains(&format!("config_path = \"{CERTS_D}\"")),
        "{context}: status does not name the config line that avoids restarts: {trust}"
    );
    assert!(
        !node.exists(CERTS_D),
        "{context}: the agent wrote {CERTS_D}, which containerd does not read"
    );
    assert_pull_ok(&node, &reg.image, &context);

    let s = ContainerdState::of(&node);
    let (_, pass) = agent.publish_and_wait(&secret_data(&[]));
    let context = format!("({mode}) CA removed on containerd's default config");
    s.assert_restarted_once(&node, &context);
    assert_eq!(count(&pass, MSG_NEEDS_RESTART), 1, "{context}");
    assert_pull_untrusted(&node, &reg.image, &context);
}

#[test]
fn default_config_restarts_host() {
    scenario_default_config(Mode::Host);
}

#[test]
fn default_config_restarts_pod() {
    scenario_default_config(Mode::Pod);
}

// ---------------------------------------------------------------------------
// The config edit itself (no node).
// ---------------------------------------------------------------------------

#[test]
fn config_path_is_set_under_the_registry_table_of_the_config_version() {
    let v2 = "version = 2\n\n[plugins]\n  [plugins.\"io.containerd.grpc.v1.cri\".registry]\n    config_path = \"\"\n\n    [plugins.\"io.containerd.grpc.v1.cri\".registry.auths]\n\n[proxy_plugins]\n  config_path = \"\"\n";
    assert_eq!(
        with_config_path(v2, CERTS_D),
        v2.replacen(
            "    config_path = \"\"",
            "    config_path = \"/etc/containerd/certs.d\"",
            1
        )
    );
    let v3 = "version = 3\n[plugins.'io.containerd.cri.v1.images'.registry]\n  config_path = ''\n";
    assert_eq!(
        with_config_path(v3, CERTS_D),
        "version = 3\n[plugins.'io.containerd.cri.v1.images'.registry]\n  config_path = \"/etc/containerd/certs.d\"\n"
    );
    let no_key = "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".registry]\n  [plugins.\"io.containerd.grpc.v1.cri\".registry.mirrors]\n";
    assert_eq!(
        with_config_path(no_key, CERTS_D),
        "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".registry]\n  config_path = \"/etc/containerd/certs.d\"\n  [plugins.\"io.containerd.grpc.v1.cri\".registry.mirrors]\n"
    );
    assert_eq!(
        with_config_path("version = 2\n", CERTS_D),
        "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".registry]\n  config_path = \"/etc/containerd/certs.d\"\n"
    );
    assert_eq!(config_version("# c\nversion = 3\n[x]\nversion = 2\n"), 3);
    assert_eq!(config_version("[x]\nversion = 2\n"), 1);
}

#[test]
fn the_rootfs_configs_are_edited() {
    // The node rootfs's own default config, as `containerd config default`
    // printed it when it was built.
    preflight();
    let root = integration_tests::rootfs_path();
    let text =
        std::fs::read_to_string(root.join(CONTAINERD_CONFIG.trim_start_matches('/'))).unwrap();
    let edited = with_config_path(&text, CERTS_D);
    let changed: Vec<(&str, &str)> = text
        .lines()
        .zip(edited.lines())
        .filter(|(a, b)| a != b)
        .collect();
    assert_eq!(
        changed.len(),
        1,
        "{}: want one changed line: {changed:?}",
        root.display()
    );
    assert!(changed[0]
        .1
        .trim()
        .starts_with("config_path = \"/etc/containerd/certs.d\""));
    assert_eq!(text.lines().count(), edited.lines().count());
}
