//! Fault injection on real nodes: each fault is made for real
//! inside a systemd-nspawn node, never mocked, and every case checks four
//! things:
//!
//! 1. the error is clear: the agent's log line names the path, unit, tool or
//!    server concerned, and why;
//! 2. the agent retries by itself: at least two failed attempts are seen;
//! 3. once the fault is gone it converges without help: the CA lands in the
//!    node's bundle and a pull from a registry with a certificate from it
//!    succeeds (or the kubelet certificate is renewed), with exactly one
//!    containerd (kubelet) restart for the one real change;
//! 4. nothing is lost: the CAs installed before the fault are still in the
//!    bundle and their anchors parse, the distro's CAs are all there, no temp
//!    files are left, the state file has no pending step, and
//!    `kubelet-client-current.pem` always resolves to a matching cert and key.
//!
//! The faults: the D-Bus socket missing (pod mode) and the bus going away
//! under a connected agent (host mode); systemd failing containerd's restart
//! job and the refresh tool exiting non-zero (both modes); a full disk (a
//! small tmpfs) under the agent's anchors directory (both modes) and under
//! its state directory; the anchors directory read-only (a read-only bind
//! mount in pod mode, its filesystem remounted read-only in host mode); the
//! API server down, and slow (its latency knob), for the kubelet renewal.
//!
//! Every test has its own node, so they run in parallel. Timeouts are waits,
//! never performance assertions.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a failed step must panic loudly"
)]

use std::collections::BTreeSet;
use std::time::Duration;

use integration_tests::agent::{render_tail, Agent, LogEntry, Mode, PodModeAgent};
use integration_tests::kubelet_node::{
    self, chains_to, serial, subject, KubeletFixture, CLIENT_LINK, KUBELET_UNIT, PKI,
};
use integration_tests::observe::{
    self, ContainerdState, ANCHORS_DIR, CONTAINERD_UNIT, DEBIAN_BUNDLE, STATE_DIR, STATE_FILE,
};
use integration_tests::pki::{sha256_fingerprint, TestCa};
use integration_tests::{
    assert_pull_ok, preflight, secret_data, wait_until_or_timeout, Node, TestRegistry,
};

/// How long a test waits for the failed attempts, or for convergence.
const FAULT_TIMEOUT: Duration = Duration::from_secs(60);
/// Failed attempts a test waits for before it removes the fault.
const ATTEMPTS: usize = 2;
/// The node's system bus socket (systemd's D-Bus API).
const BUS_SOCKET: &str = "/run/dbus/system_bus_socket";
/// The Debian refresh tool the agent runs.
const REFRESH_TOOL: &str = "/usr/sbin/update-ca-certificates";
/// The drop-in that makes containerd's start fail.
const FAILING_DROP_IN: &str = "/etc/systemd/system/containerd.service.d/nca-fault.conf";
/// The message of every failed CA pass.
const CA_PASS_FAILED: &str = "reconcile failed";
/// The message of every failed kubelet pass.
const KUBELET_PASS_FAILED: &str = "kubelet certificate pass failed";

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// Checks the machine, then boots a node named after the scenario and mode.
fn boot(scenario: &str, mode: Mode) -> Node {
    preflight();
    Node::boot(&format!("{scenario}-{mode}"))
}

/// The log entries after the first `skip`.
fn entries_since(entries: Vec<LogEntry>, skip: usize) -> Vec<LogEntry> {
    entries.into_iter().skip(skip).collect()
}

/// Error-level entries of `entries` whose message contains every needle.
fn errors_naming(entries: &[LogEntry], needles: &[&str]) -> Vec<LogEntry> {
    entries
        .iter()
        .filter(|e| e.error && needles.iter().all(|n| e.message.contains(n)))
        .cloned()
        .collect()
}

/// Waits until `logs()` (after the first `skip` entries) holds at least
/// [`ATTEMPTS`] error-level entries naming every needle, and returns them.
/// Panics with the log when it does not: the error is not clear, or the
/// agent does not retry.
fn wait_for_failed_attempts(
    what: &str,
    logs: impl Fn() -> Vec<LogEntry>,
    skip: usize,
    needles: &[&str],
) -> Vec<LogEntry> {
    let seen = wait_until_or_timeout(FAULT_TIMEOUT, || {
        errors_naming(&entries_since(logs(), skip), needles).len() >= ATTEMPTS
    });
    let entries = entries_since(logs(), skip);
    assert!(
        seen,
        "{what}: within {FAULT_TIMEOUT:?} the agent did not log {ATTEMPTS} errors naming all of \
         {needles:?}: its error is unclear, or it does not retry. Its log since the fault:\n{}",
        render_tail(&entries, 40)
    );
    errors_naming(&entries, needles)
}

/// Waits until the agent logged a pass (`reconciled: ...`) after its first
/// `skip` entries: it converged by its own retry.
fn wait_for_pass_since(agent: &Agent<'_>, skip: usize, what: &str) {
    let ok = wait_until_or_timeout(FAULT_TIMEOUT, || {
        entries_since(agent.logs(), skip)
            .iter()
            .any(|e| e.is_pass())
    });
    assert!(
        ok,
        "{what}: no successful pass within {FAULT_TIMEOUT:?} of removing the fault; log:\n{}",
        render_tail(&entries_since(agent.logs(), skip), 40)
    );
}

/// Panics unless every failure in `failures` is logged with the retry delay.
fn assert_retry_announced(failures: &[LogEntry], what: &str) {
    for f in failures {
        assert!(
            f.field("retry_in_s").is_some(),
            "{what}: a failed pass does not say when it is retried: {}",
            f.raw
        );
    }
}

/// The nothing-lost checks after a fault on the CA side: the agent's anchors
/// are exactly `cas`, each parses and is named after its fingerprint, no temp
/// file is left in the anchors or state directory, the bundle holds the
/// `distro` CAs plus `cas`, and the state file parses with no pending step.
fn assert_nothing_lost(node: &Node, cas: &[&TestCa], distro: usize, context: &str) {
    let anchors = observe::agent_anchors(node);
    assert!(
        anchors.problems.is_empty(),
        "{context}: damaged anchors: {:?}",
        anchors.problems
    );
    assert!(
        anchors.temps.is_empty(),
        "{context}: temp files left in {ANCHORS_DIR}: {:?}",
        anchors.temps
    );
    let want: BTreeSet<String> = cas.iter().map(|c| sha256_fingerprint(c.cert())).collect();
    assert_eq!(
        anchors.fingerprints, want,
        "{context}: the agent's anchors are not exactly the published CAs"
    );
    let temps = observe::temp_files(node, STATE_DIR);
    assert!(
        temps.is_empty(),
        "{context}: temp files left in {STATE_DIR}: {temps:?}"
    );
    let bundle = observe::bundle_fingerprints(node);
    for ca in cas {
        observe::assert_trusted(node, ca, context);
    }
    assert_eq!(
        observe::bundle_certs(node, DEBIAN_BUNDLE).len(),
        distro + cas.len(),
        "{context}: {DEBIAN_BUNDLE} does not hold the {distro} distro CAs plus the {} published \
         ones ({} distinct certificates)",
        cas.len(),
        bundle.len()
    );
    let state: serde_json::Value = serde_json::from_slice(&node.read_file(STATE_FILE))
        .unwrap_or_else(|e| panic!("{context}: {STATE_FILE} does not parse: {e}"));
    assert_eq!(
        state["refresh_pending"],
        serde_json::json!(false),
        "{context}: a refresh is still pending: {state}"
    );
    assert_eq!(
        state["restart_pending"],
        serde_json::json!([]),
        "{context}: a restart is still pending: {state}"
    );
}

/// A CA-side fault scenario's fixture: a node with the agent, CA1 installed
/// before the fault, and a registry for CA2 (which the fault will hold up).
struct CaFixture<'n> {
    node: &'n Node,
    agent: Agent<'n>,
    ca1: TestCa,
    ca2: TestCa,
    reg2: TestRegistry,
    /// The number of distro CAs in the node's bundle.
    distro: usize,
    _storage: tempfile::TempDir,
}

impl<'n> CaFixture<'n> {
    /// Starts the agent on `node` in `mode` and installs CA1 (one restart).
    fn new(node: &'n Node, mode: Mode, scenario: &str) -> CaFixture<'n> {
        let distro = observe::bundle_certs(node, DEBIAN_BUNDLE).len();
        let agent = Agent::start(node, mode);
        let ca1 = TestCa::new(&format!("nca {scenario} {mode} CA1"));
        let ca2 = TestCa::new(&format!("nca {scenario} {mode} CA2"));
        let storage = tempfile::tempdir().unwrap();
        let reg2 = TestRegistry::start(&ca2, storage.path(), &format!("{scenario}/hello"));
        let s = ContainerdState::of(node);
        agent.publish_and_wait(&secret_data(&[("ca1.crt", ca1.cert_pem().as_bytes())]));
        s.assert_restarted_once(node, &format!("({mode}) CA1 installed before the fault"));
        observe::assert_trusted(node, &ca1, &format!("({mode}) before the fault"));
        CaFixture {
            node,
            agent,
            ca1,
            ca2,
            reg2,
            distro,
            _storage: storage,
        }
    }

    /// Publishes CA1 and CA2 (the change the fault holds up), without
    /// waiting for a pass.
    fn publish_both(&self) {
        self.agent.secret().publish(&secret_data(&[
            ("ca1.crt", self.ca1.cert_pem().as_bytes()),
            ("ca2.crt", self.ca2.cert_pem().as_bytes()),
        ]));
    }

    /// The log entries so far.
    fn log_len(&self) -> usize {
        self.agent.logs().len()
    }

    /// Waits for the failed attempts after `skip` (see
    /// [`wait_for_failed_attempts`]).
    fn failed_attempts(&self, skip: usize, needles: &[&str]) -> Vec<LogEntry> {
        let mode = self.agent.mode();
        let failures =
            wait_for_failed_attempts(&format!("({mode})"), || self.agent.logs(), skip, needles);
        assert_retry_announced(&failures, &format!("({mode})"));
        failures
    }

    /// After the fault is removed: the agent's own retry converges (a pass
    /// after `skip`), CA2 is trusted, containerd was restarted exactly once
    /// since `before`, a pull from CA2's registry works, and nothing is lost.
    fn assert_converged(&self, skip: usize, before: ContainerdState, context: &str) {
        wait_for_pass_since(&self.agent, skip, context);
        before.assert_restarted_once(self.node, context);
        observe::assert_trusted(self.node, &self.ca2, context);
        assert_pull_ok(self.node, &self.reg2.image, context);
        assert_nothing_lost(self.node, &[&self.ca1, &self.ca2], self.distro, context);
    }

    /// The anchor file name CA2 gets.
    fn ca2_anchor(&self) -> String {
        format!(
            "{ANCHORS_DIR}/node-cert-agent-{}.crt",
            sha256_fingerprint(self.ca2.cert())
        )
    }
}

// ---------------------------------------------------------------------------
// 1. D-Bus socket missing (pod mode): the pod (re)starts while the node's bus
//    socket is not there.
// ---------------------------------------------------------------------------

#[test]
fn dbus_socket_missing_pod() {
    let mode = Mode::Pod;
    let node = boot("dbus-missing", mode);
    let mut fx = CaFixture::new(&node, mode, "dbus-missing");
    let hidden = format!("{BUS_SOCKET}.nca-hidden");

    node.exec_ok(&["mv", "-T", BUS_SOCKET, &hidden]);
    // A new process: no D-Bus connection yet (its first pass is a no-op).
    fx.agent.restart();
    let before = ContainerdState::of(&node);
    let refreshes = observe::refresh_runs(&node).len();
    let skip = fx.log_len();
    fx.publish_both();
    let failures = fx.failed_attempts(
        skip,
        &[
            CA_PASS_FAILED,
            "cannot connect to the system bus",
            BUS_SOCKET,
            "No such file or directory",
        ],
    );
    println!("dbus missing ({mode}): {}", failures[0].message);
    let context = format!("({mode}) while the bus socket is missing");
    before.assert_not_restarted(&node, &context);
    assert_eq!(observe::refresh_runs(&node).len(), refreshes, "{context}");
    observe::assert_not_trusted(&node, &fx.ca2, &context);

    let skip = fx.log_len();
    node.exec_ok(&["mv", "-T", &hidden, BUS_SOCKET]);
    fx.assert_converged(skip, before, &format!("({mode}) after the socket is back"));
    assert_eq!(
        observe::refresh_runs(&node).len(),
        refreshes + 1,
        "({mode}) one refresh for the one change"
    );
}

// ---------------------------------------------------------------------------
// 2. The bus goes away under a connected agent (host mode): dbus is stopped
//    (every connection closed, nobody listening on the socket) and started
//    again.
// ---------------------------------------------------------------------------

#[test]
fn dbus_stopped_under_a_connected_agent_host() {
    let mode = Mode::Host;
    let node = boot("dbus-stopped", mode);
    // CA1's install connected the agent to the bus.
    let fx = CaFixture::new(&node, mode, "dbus-stopped");

    // The socket file stays (RemoveOnStop=no), with nobody listening.
    node.exec_ok(&["systemctl", "stop", "dbus.socket", "dbus.service"]);
    let before = ContainerdState::of(&node);
    let refreshes = observe::refresh_runs(&node).len();
    let skip = fx.log_len();
    fx.publish_both();
    let failures = fx.failed_attempts(
        skip,
        &[
            CA_PASS_FAILED,
            "cannot connect to the system bus",
            BUS_SOCKET,
            "Connection refused",
        ],
    );
    println!("dbus stopped ({mode}): {}", failures[0].message);
    let context = format!("({mode}) while dbus is stopped");
    before.assert_not_restarted(&node, &context);
    assert_eq!(observe::refresh_runs(&node).len(), refreshes, "{context}");

    // Every attempt names the bus, the first one too (whose call failed on
    // the connection the agent had before dbus stopped).
    let attempts = errors_naming(&entries_since(fx.agent.logs(), skip), &[CA_PASS_FAILED]);
    for a in &attempts {
        assert!(
            a.message.contains(BUS_SOCKET),
            "({mode}) a failed attempt does not name the bus {BUS_SOCKET}: {}",
            a.message
        );
    }
    println!(
        "dbus stopped ({mode}), first attempt: {}",
        attempts[0].message
    );
    let skip = fx.log_len();
    node.exec_ok(&["systemctl", "start", "dbus.socket", "dbus.service"]);
    fx.assert_converged(skip, before, &format!("({mode}) after dbus is back"));
}

// ---------------------------------------------------------------------------
// 3. systemd fails containerd's restart job (a drop-in with
//    ExecStartPre=/bin/false). containerd's own Restart=always competes with
//    the agent's retries; either way containerd must come up once, with the
//    new bundle.
// ---------------------------------------------------------------------------

/// Failed restart jobs a test waits for: enough for the agent's backoff (1,
/// 2, 4, then 8 s) to outgrow containerd's RestartSec=5, so that systemd's
/// own restart comes before the agent's next attempt.
const RESTART_ATTEMPTS: usize = 4;

fn scenario_restart_job_fails(mode: Mode) {
    let node = boot("restart-fails", mode);
    let fx = CaFixture::new(&node, mode, "restart-fails");

    node.write_file(
        FAILING_DROP_IN,
        b"[Service]\nExecStartPre=/bin/false\n",
        0o644,
    );
    node.exec_ok(&["systemctl", "daemon-reload"]);
    let before = ContainerdState::of(&node);
    let refreshes = observe::refresh_runs(&node).len();
    let skip = fx.log_len();
    fx.publish_both();
    let needles = [
        CA_PASS_FAILED,
        "restart job for containerd.service ended with result \"failed\"",
        "journalctl -u containerd.service",
    ];
    let ok = wait_until_or_timeout(FAULT_TIMEOUT, || {
        errors_naming(&entries_since(fx.agent.logs(), skip), &needles).len() >= RESTART_ATTEMPTS
    });
    assert!(
        ok,
        "({mode}) no {RESTART_ATTEMPTS} failed restarts naming {needles:?}; log:\n{}",
        render_tail(&entries_since(fx.agent.logs(), skip), 40)
    );
    let context = format!("({mode}) while containerd's start fails");
    assert_eq!(
        observe::refresh_runs(&node).len(),
        refreshes + 1,
        "{context}: a failed restart must not run the refresh tool again"
    );
    assert_eq!(
        observe::containerd_starts(&node),
        before.starts,
        "{context}: containerd started"
    );
    // The CA is in the bundle already: only the restart is outstanding.
    observe::assert_trusted(&node, &fx.ca2, &context);

    let skip = fx.log_len();
    node.remove_file(FAILING_DROP_IN);
    node.exec_ok(&["systemctl", "daemon-reload"]);
    fx.assert_converged(skip, before, &format!("({mode}) after the drop-in is gone"));
    // Who brought containerd up: systemd's Restart=always (then the agent
    // must not restart it again) or the agent's own retry. Both are right.
    let by_systemd = entries_since(fx.agent.logs(), skip)
        .iter()
        .any(|e| e.message.contains("not restarting it again"));
    println!(
        "restart job fails ({mode}): containerd came up by {}",
        if by_systemd {
            "systemd's Restart=always; the agent did not restart it again"
        } else {
            "the agent's retry"
        }
    );
    assert_eq!(
        observe::refresh_runs(&node).len(),
        refreshes + 1,
        "({mode}) one refresh for the one change"
    );
    assert!(node.is_active(CONTAINERD_UNIT));
}

#[test]
fn restart_job_fails_pod() {
    scenario_restart_job_fails(Mode::Pod);
}

#[test]
fn restart_job_fails_host() {
    scenario_restart_job_fails(Mode::Host);
}

// ---------------------------------------------------------------------------
// 4. The refresh tool exits non-zero: /bin/false bind-mounted over
//    update-ca-certificates in the node, then unmounted.
// ---------------------------------------------------------------------------

fn scenario_refresh_tool_fails(mode: Mode) {
    let node = boot("refresh-fails", mode);
    let fx = CaFixture::new(&node, mode, "refresh-fails");
    let bundle_before = node.read_file(DEBIAN_BUNDLE);

    node.exec_ok(&["mount", "--bind", "/bin/false", REFRESH_TOOL]);
    let before = ContainerdState::of(&node);
    let refreshes = observe::refresh_runs(&node).len();
    let skip = fx.log_len();
    fx.publish_both();
    let failures = fx.failed_attempts(
        skip,
        &[
            CA_PASS_FAILED,
            REFRESH_TOOL,
            "exit status 1",
            "journalctl -u node-cert-agent-refresh-",
        ],
    );
    println!("refresh tool fails ({mode}): {}", failures[0].message);
    let context = format!("({mode}) while the refresh tool fails");
    let runs = observe::refresh_runs(&node).len() - refreshes;
    assert!(
        runs >= ATTEMPTS,
        "{context}: the refresh tool ran {runs} times"
    );
    // The unit the error names holds the tool's failure in the journal.
    let unit = failures[0]
        .message
        .split("journalctl -u ")
        .nth(1)
        .and_then(|s| s.split('`').next())
        .unwrap();
    let journal = node.journal_json(&["-u", unit]);
    assert!(
        journal.iter().any(|v| v["MESSAGE"]
            .as_str()
            .is_some_and(|m| m.contains("status=1/FAILURE"))),
        "{context}: `journalctl -u {unit}` does not show the tool's exit status: {journal:?}"
    );
    before.assert_not_restarted(&node, &context);
    assert_eq!(
        node.read_file(DEBIAN_BUNDLE),
        bundle_before,
        "{context}: the bundle changed"
    );

    let skip = fx.log_len();
    node.exec_ok(&["umount", REFRESH_TOOL]);
    fx.assert_converged(skip, before, &format!("({mode}) after the tool is back"));
}

#[test]
fn refresh_tool_fails_host() {
    scenario_refresh_tool_fails(Mode::Host);
}

#[test]
fn refresh_tool_fails_pod() {
    scenario_refresh_tool_fails(Mode::Pod);
}

// ---------------------------------------------------------------------------
// 5. Disk full: the agent's anchors directory (both modes) or its state
//    directory (pod mode) on a 64 KiB tmpfs holding what was in it, filled
//    up; then the filler is removed.
// ---------------------------------------------------------------------------

/// Mounts a 64 KiB tmpfs with `mode` over the node directory `dir`, with the
/// directory's content copied in: the agent sees the same files, on a small
/// filesystem of their own. No pass runs meanwhile (nothing changed).
fn tmpfs_over(node: &Node, dir: &str, mode: &str) {
    let copy = format!("/run/nca-copy-{}", dir.replace('/', "-"));
    node.exec_ok(&["cp", "-a", "-T", dir, &copy]);
    node.exec_ok(&[
        "mount",
        "-t",
        "tmpfs",
        "-o",
        &format!("size=64k,mode={mode}"),
        "nca-fault",
        dir,
    ]);
    node.exec_ok(&["cp", "-a", "-T", &copy, dir]);
}

/// [`tmpfs_over`], then fills the tmpfs up with `<dir>/nca-filler` (not a
/// `.crt`, so the refresh tool ignores it). Returns the filler.
fn fill_up(node: &Node, dir: &str, mode: &str) -> String {
    tmpfs_over(node, dir, mode);
    let filler = format!("{dir}/nca-filler");
    // dd stops with "No space left on device".
    let out = node.exec(&["dd", "if=/dev/zero", &format!("of={filler}"), "bs=4k"]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("No space left on device"),
        "the tmpfs on {dir} did not fill up: {out:?}"
    );
    filler
}

fn scenario_disk_full(mode: Mode, dir: &str) {
    let node = boot("disk-full", mode);
    let fx = CaFixture::new(&node, mode, "disk-full");

    let filler = fill_up(&node, dir, if dir == STATE_DIR { "0700" } else { "0755" });
    let before = ContainerdState::of(&node);
    let refreshes = observe::refresh_runs(&node).len();
    let skip = fx.log_len();
    fx.publish_both();
    // The first write of the pass fails: the state file (it records the
    // pending steps first), or CA2's anchor.
    let written = if dir == STATE_DIR {
        STATE_FILE.to_owned()
    } else {
        fx.ca2_anchor()
    };
    let failures = fx.failed_attempts(skip, &[CA_PASS_FAILED, &written, "No space left on device"]);
    println!("disk full ({mode}, {dir}): {}", failures[0].message);
    let context = format!("({mode}) while {dir} is full");
    before.assert_not_restarted(&node, &context);
    assert_eq!(observe::refresh_runs(&node).len(), refreshes, "{context}");
    let temps = observe::temp_files(&node, dir);
    assert!(temps.is_empty(), "{context}: temp files left: {temps:?}");

    let skip = fx.log_len();
    node.remove_file(&filler);
    fx.assert_converged(
        skip,
        before,
        &format!("({mode}) after space is freed in {dir}"),
    );
}

#[test]
fn disk_full_anchors_dir_pod() {
    scenario_disk_full(Mode::Pod, ANCHORS_DIR);
}

#[test]
fn disk_full_anchors_dir_host() {
    scenario_disk_full(Mode::Host, ANCHORS_DIR);
}

#[test]
fn disk_full_state_dir_pod() {
    scenario_disk_full(Mode::Pod, STATE_DIR);
}

// ---------------------------------------------------------------------------
// 6. A read-only trust directory, two ways: the anchors directory
//    bind-mounted read-only onto itself (pod mode), and the filesystem under
//    it remounted read-only, as `errors=remount-ro` does (host mode: a
//    bind mount's read-only flag does not propagate into the host-mode
//    unit's own mount namespace, a filesystem's does). Then made writable
//    again.
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ReadOnly {
    /// `mount --bind DIR DIR; mount -o remount,bind,ro DIR`.
    BindMount,
    /// A tmpfs with the directory's content, then `mount -o remount,ro`.
    Filesystem,
}

fn scenario_read_only(mode: Mode, how: ReadOnly) {
    let node = boot("read-only", mode);
    let fx = CaFixture::new(&node, mode, "read-only");

    match how {
        ReadOnly::BindMount => {
            node.exec_ok(&["mount", "--bind", ANCHORS_DIR, ANCHORS_DIR]);
            node.exec_ok(&["mount", "-o", "remount,bind,ro", ANCHORS_DIR]);
        }
        ReadOnly::Filesystem => {
            tmpfs_over(&node, ANCHORS_DIR, "0755");
            node.exec_ok(&["mount", "-o", "remount,ro", ANCHORS_DIR]);
        }
    }
    let before = ContainerdState::of(&node);
    let refreshes = observe::refresh_runs(&node).len();
    let skip = fx.log_len();
    fx.publish_both();
    let failures = fx.failed_attempts(
        skip,
        &[CA_PASS_FAILED, &fx.ca2_anchor(), "Read-only file system"],
    );
    println!("read-only ({mode}, {how:?}): {}", failures[0].message);
    let context = format!("({mode}) while the anchors directory is read-only ({how:?})");
    before.assert_not_restarted(&node, &context);
    assert_eq!(observe::refresh_runs(&node).len(), refreshes, "{context}");

    let skip = fx.log_len();
    match how {
        ReadOnly::BindMount => node.exec_ok(&["umount", ANCHORS_DIR]),
        ReadOnly::Filesystem => node.exec_ok(&["mount", "-o", "remount,rw", ANCHORS_DIR]),
    };
    fx.assert_converged(skip, before, &format!("({mode}) after the remount"));
}

#[test]
fn read_only_bind_mount_pod() {
    scenario_read_only(Mode::Pod, ReadOnly::BindMount);
}

#[test]
fn read_only_filesystem_host() {
    scenario_read_only(Mode::Host, ReadOnly::Filesystem);
}

// ---------------------------------------------------------------------------
// 7. The API server is down, then slow, while the kubelet client certificate
//    is due (pod mode).
// ---------------------------------------------------------------------------

/// The lifetime of the first certificate: it is due for renewal (at 70-80 %)
/// soon after the test injects the fault.
const SHORT_LIFETIME: Duration = Duration::from_secs(12);
/// The lifetime of certificates issued once the fault is gone: nothing else
/// is due while the test counts restarts.
const LONG_LIFETIME: Duration = Duration::from_secs(3600);
/// Far longer than any test: a request that slow never completes in one.
const SLOW: Duration = Duration::from_secs(600);
/// The agent's per-request API timeout in the slow-API test.
const API_TIMEOUT_SECS: u64 = 3;

/// The stand-in kubelet's completed starts so far.
fn kubelet_starts(node: &Node) -> usize {
    observe::unit_starts(node, KUBELET_UNIT)
}

/// Panics unless kubelet's client link resolves to a matching cert and key;
/// returns its target and certificate.
fn assert_client_link_ok(node: &Node, context: &str) -> (String, openssl::x509::X509) {
    match kubelet_node::client_link(node) {
        Ok(link) => (link.target, link.cert),
        Err(p) => panic!("{context}: {CLIENT_LINK}: {}: {}", p.kind, p.detail),
    }
}

/// Starts the agent with `extra_yaml` and waits for its first certificate
/// (short-lived) and the one kubelet restart for it. Returns the agent and
/// the certificate's serial.
fn first_certificate<'f>(fx: &'f KubeletFixture, extra_yaml: &str) -> (PodModeAgent<'f>, String) {
    fx.server.set_cert_lifetime(SHORT_LIFETIME);
    fx.server.set_backdate(Duration::ZERO);
    let starts = kubelet_starts(&fx.node);
    let agent = fx.start_agent(extra_yaml);
    let first = fx.wait_for_client_cert(&agent, "the first certificate", |_| true);
    fx.node
        .wait_until(Duration::from_secs(10), "kubelet restarted", || {
            kubelet_starts(&fx.node) == starts + 1
        });
    (agent, serial(&first))
}

/// After the fault is gone: the certificate is renewed by the agent's own
/// retry, kubelet restarted exactly once for it, the link is good, and one
/// CSR was created for it.
/// During an API fault: the client link, its certificate, kubelet and the
/// API server's CSRs are as they were before it (`target`, `serial`,
/// kubelet `starts`, `csrs`).
fn assert_kubelet_unchanged(
    fx: &KubeletFixture,
    (first_target, first_serial, starts, csrs): (&str, &str, usize, usize),
    context: &str,
) {
    let (target, cert) = assert_client_link_ok(&fx.node, context);
    assert_eq!(target, first_target, "{context}: the link moved");
    assert_eq!(
        serial(&cert),
        first_serial,
        "{context}: the certificate changed"
    );
    assert_eq!(
        kubelet_starts(&fx.node),
        starts,
        "{context}: kubelet restarted"
    );
    assert_eq!(fx.server.csrs().len(), csrs, "{context}: a CSR was created");
}

fn assert_kubelet_converged(
    fx: &KubeletFixture,
    agent: &PodModeAgent<'_>,
    first_serial: &str,
    starts_before: usize,
    csrs_before: usize,
    context: &str,
) {
    let renewed = fx.wait_for_client_cert(agent, context, |c| serial(c) != first_serial);
    assert_eq!(subject(&renewed), "O=system:nodes, CN=system:node:n1");
    assert!(
        chains_to(&renewed, &fx.server.cluster_ca_pem()),
        "{context}: the new certificate is not from the cluster CA"
    );
    // The restart follows the swap: wait for it, then count.
    fx.node
        .wait_until(Duration::from_secs(10), "kubelet restarted", || {
            kubelet_starts(&fx.node) > starts_before
        });
    let (_, linked) = assert_client_link_ok(&fx.node, context);
    assert_eq!(serial(&linked), serial(&renewed));
    assert_eq!(
        kubelet_starts(&fx.node),
        starts_before + 1,
        "{context}: kubelet must be restarted exactly once for the one renewal"
    );
    assert_eq!(
        fx.server.csrs().len(),
        csrs_before + 1,
        "{context}: one CSR for the one renewal"
    );
    let temps = observe::temp_files(&fx.node, PKI);
    assert!(
        temps.is_empty(),
        "{context}: temp files in {PKI}: {temps:?}"
    );
}

#[test]
fn api_server_down_during_kubelet_renewal() {
    preflight();
    let fx = KubeletFixture::new("api-down");
    let (agent, first_serial) = first_certificate(&fx, "");
    let (first_target, _) = assert_client_link_ok(&fx.node, "before the outage");
    let starts = kubelet_starts(&fx.node);
    let csrs = fx.server.csrs().len();

    let skip = agent.logs().len();
    fx.server.down();
    let failures = wait_for_failed_attempts(
        "API server down",
        || agent.logs(),
        skip,
        &[KUBELET_PASS_FAILED, &fx.server.url(), "Connection refused"],
    );
    assert_retry_announced(&failures, "API server down");
    println!("api down: {}", failures[0].message);
    assert_kubelet_unchanged(
        &fx,
        (&first_target, &first_serial, starts, csrs),
        "while the API server is down",
    );

    fx.server.set_cert_lifetime(LONG_LIFETIME);
    fx.server.up();
    assert_kubelet_converged(
        &fx,
        &agent,
        &first_serial,
        starts,
        csrs,
        "after the API server is back",
    );
    // The previous certificate file is kept beside the new one.
    assert!(
        fx.node.exists(&format!("{PKI}/{first_target}")),
        "the previous certificate {first_target} was removed"
    );
}

#[test]
fn api_server_slow_during_kubelet_renewal() {
    preflight();
    let fx = KubeletFixture::new("api-slow");
    let (agent, first_serial) =
        first_certificate(&fx, &format!("  api-timeout-seconds: {API_TIMEOUT_SECS}\n"));
    let (first_target, _) = assert_client_link_ok(&fx.node, "before the slowdown");
    let starts = kubelet_starts(&fx.node);
    let csrs = fx.server.csrs().len();

    let skip = agent.logs().len();
    fx.server.set_delay(SLOW);
    let failures = wait_for_failed_attempts(
        "API server slow",
        || agent.logs(),
        skip,
        &[
            KUBELET_PASS_FAILED,
            &fx.server.url(),
            &format!("did not answer within {API_TIMEOUT_SECS}s"),
        ],
    );
    assert_retry_announced(&failures, "API server slow");
    println!("api slow: {}", failures[0].message);
    assert_kubelet_unchanged(
        &fx,
        (&first_target, &first_serial, starts, csrs),
        "while the API server is slow",
    );

    fx.server.set_cert_lifetime(LONG_LIFETIME);
    fx.server.set_delay(Duration::ZERO);
    assert_kubelet_converged(
        &fx,
        &agent,
        &first_serial,
        starts,
        csrs,
        "after the API server is fast again",
    );
}

/// kubelet's pki directory read-only (a read-only bind mount, as a
/// read-only hostPath or a full disk leaves it) while the client
/// certificate is due: every retry fails with the path and the errno, and
/// kubelet is never restarted for a certificate that was not installed;
/// writable again, the renewal lands with exactly one restart.
#[test]
fn read_only_pki_directory_never_restarts_kubelet() {
    preflight();
    let fx = KubeletFixture::new("ro-pki");
    let (agent, first_serial) = first_certificate(&fx, "");
    let (first_target, _) = assert_client_link_ok(&fx.node, "before the remount");
    let starts = kubelet_starts(&fx.node);
    let csrs = fx.server.csrs().len();
    fx.server.set_cert_lifetime(LONG_LIFETIME);

    let skip = agent.logs().len();
    fx.node.exec_ok(&["mount", "--bind", PKI, PKI]);
    fx.node.exec_ok(&["mount", "-o", "remount,bind,ro", PKI]);
    let failures = wait_for_failed_attempts(
        "kubelet's pki directory read-only",
        || agent.logs(),
        skip,
        &[KUBELET_PASS_FAILED, PKI, "Read-only file system"],
    );
    println!("read-only pki: {}", failures[0].message);
    // More retries, still no restart.
    let skip = agent.logs().len();
    wait_for_failed_attempts(
        "kubelet's pki directory still read-only",
        || agent.logs(),
        skip,
        &[KUBELET_PASS_FAILED, PKI, "Read-only file system"],
    );
    assert_kubelet_unchanged(
        &fx,
        (&first_target, &first_serial, starts, csrs),
        "while kubelet's pki directory is read-only",
    );

    fx.node.exec_ok(&["umount", PKI]);
    assert_kubelet_converged(
        &fx,
        &agent,
        &first_serial,
        starts,
        csrs,
        "after the pki directory is writable again",
    );
}
