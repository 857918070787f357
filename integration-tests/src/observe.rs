//! What a scenario observes on a node besides the agent's own log: how often
//! containerd was (re)started, how often the refresh tool ran, and which CAs
//! the node's trust bundle holds.

use std::collections::BTreeSet;
use std::time::Duration;

use openssl::x509::X509;
use serde_json::Value;

use crate::agent::{MSG_UNIT_STARTED, MSG_UNIT_STARTING, REFRESH_UNIT_PREFIX};
use crate::node::Node;

/// The unit the agent restarts.
pub const CONTAINERD_UNIT: &str = "containerd.service";
/// The Debian trust bundle Go and OpenSSL read.
pub const DEBIAN_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

fn str_field<'v>(v: &'v Value, k: &str) -> Option<&'v str> {
    v.get(k).and_then(Value::as_str)
}

/// systemd's own journal entries (`_PID=1`) with `MESSAGE_ID=message_id`.
fn systemd_entries(node: &Node, message_id: &str) -> Vec<Value> {
    node.journal_json(&["_PID=1", &format!("MESSAGE_ID={message_id}")])
}

/// How many times systemd completed a start of containerd.service ("Started
/// containerd.service ..." in the node's journal): 1 after boot, +1 per
/// restart.
pub fn containerd_starts(node: &Node) -> usize {
    systemd_entries(node, MSG_UNIT_STARTED)
        .iter()
        .filter(|v| {
            str_field(v, "UNIT") == Some(CONTAINERD_UNIT)
                && str_field(v, "MESSAGE").is_some_and(|m| m.starts_with("Started containerd"))
        })
        .count()
}

/// The names of the agent's refresh-tool units systemd started so far
/// (`Starting node-cert-agent-refresh-<pid>-<n>.service ...`), one per run.
pub fn refresh_runs(node: &Node) -> Vec<String> {
    systemd_entries(node, MSG_UNIT_STARTING)
        .iter()
        .filter_map(|v| str_field(v, "UNIT"))
        .filter(|u| u.starts_with(REFRESH_UNIT_PREFIX))
        .map(str::to_owned)
        .collect()
}

/// containerd's MainPID and start count at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ContainerdState {
    /// `MainPID` (0 when not running).
    pub main_pid: u32,
    /// [`containerd_starts`].
    pub starts: usize,
}

impl ContainerdState {
    /// The current state of `node`'s containerd.
    pub fn of(node: &Node) -> ContainerdState {
        ContainerdState {
            main_pid: node.main_pid(CONTAINERD_UNIT),
            starts: containerd_starts(node),
        }
    }

    /// Panics unless containerd was restarted exactly once since `self`: its
    /// MainPID changed and systemd logged exactly one more start. The start
    /// message may reach the journal a moment after the restart job is done,
    /// so this waits up to 10 s for it before counting.
    pub fn assert_restarted_once(&self, node: &Node, context: &str) {
        let want = self.starts + 1;
        let _ = crate::wait::wait_until_or_timeout(Duration::from_secs(10), || {
            containerd_starts(node) >= want
        });
        let now = ContainerdState::of(node);
        assert!(
            now.main_pid != 0 && now.main_pid != self.main_pid && now.starts == want,
            "{context}: containerd was not restarted exactly once: before {self:?}, now {now:?} \
             (want a new MainPID and starts == {want})"
        );
    }

    /// Panics if containerd was (re)started since `self`.
    pub fn assert_not_restarted(&self, node: &Node, context: &str) {
        let now = ContainerdState::of(node);
        assert!(
            now == *self,
            "{context}: containerd was restarted: before {self:?}, now {now:?}"
        );
    }
}

/// The certificates of the node's trust bundle `bundle` (e.g.
/// [`DEBIAN_BUNDLE`]), parsed.
pub fn bundle_certs(node: &Node, bundle: &str) -> Vec<X509> {
    let pem = node.read_file(bundle);
    X509::stack_from_pem(&pem)
        .unwrap_or_else(|e| panic!("node {}: {bundle} is not a PEM bundle: {e}", node.name()))
}

/// SHA-256 fingerprints of the certificates in the node's Debian bundle.
pub fn bundle_fingerprints(node: &Node) -> BTreeSet<String> {
    bundle_certs(node, DEBIAN_BUNDLE)
        .iter()
        .map(crate::pki::sha256_fingerprint)
        .collect()
}

/// Whether the node's Debian bundle holds `cert` (compared by certificate,
/// via its SHA-256 fingerprint, not by text).
pub fn bundle_has(node: &Node, cert: &X509) -> bool {
    bundle_fingerprints(node).contains(&crate::pki::sha256_fingerprint(cert))
}
