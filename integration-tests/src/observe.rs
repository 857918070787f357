//! What a scenario observes on a node besides the agent's own log: how often
//! containerd was (re)started, how often the refresh tool ran, which CAs
//! the node's trust bundle holds, and what the agent left in its anchors
//! directory.

use std::collections::BTreeSet;
use std::time::Duration;

use openssl::x509::X509;
use serde_json::Value;

use crate::agent::{MSG_UNIT_STARTED, MSG_UNIT_STARTING, REFRESH_UNIT_PREFIX};
use crate::node::Node;
use crate::pki::{sha256_fingerprint, TestCa};

/// The unit the agent restarts.
pub const CONTAINERD_UNIT: &str = "containerd.service";
/// The Debian trust bundle Go and OpenSSL read.
pub const DEBIAN_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";
/// The directory Debian's `update-ca-certificates` reads local anchors from.
pub const DEBIAN_LOCAL_ANCHORS: &str = "/usr/local/share/ca-certificates";
/// The agent's own anchors directory on a Debian node.
pub const ANCHORS_DIR: &str = "/usr/local/share/ca-certificates/node-cert-agent";
/// The agent's default state directory.
pub const STATE_DIR: &str = "/var/lib/node-cert-agent";
/// The agent's CA state file.
pub const STATE_FILE: &str = "/var/lib/node-cert-agent/ca-state.json";
/// Name prefix of the agent's temp files (a leftover is an interrupted write).
pub const TEMP_PREFIX: &str = ".nca-tmp-";

fn str_field<'v>(v: &'v Value, k: &str) -> Option<&'v str> {
    v.get(k).and_then(Value::as_str)
}

/// systemd's own journal entries (`_PID=1`) with `MESSAGE_ID=message_id`.
fn systemd_entries(node: &Node, message_id: &str) -> Vec<Value> {
    node.journal_json(&["_PID=1", &format!("MESSAGE_ID={message_id}")])
}

/// How many times systemd completed a start of `unit` ("Started <its
/// description>" in the node's journal): 1 after boot for a unit started at
/// boot, +1 per (re)start. Failed starts do not count.
pub fn unit_starts(node: &Node, unit: &str) -> usize {
    systemd_entries(node, MSG_UNIT_STARTED)
        .iter()
        .filter(|v| {
            str_field(v, "UNIT") == Some(unit)
                && str_field(v, "MESSAGE").is_some_and(|m| m.starts_with("Started "))
        })
        .count()
}

/// How many times systemd completed a start of containerd.service ("Started
/// containerd.service ..." in the node's journal): 1 after boot, +1 per
/// restart.
pub fn containerd_starts(node: &Node) -> usize {
    unit_starts(node, CONTAINERD_UNIT)
}

/// The names of the agent's refresh-tool units systemd started so far
/// (`Starting node-cert-agent-refresh-<token>-<n>.service ...`), one per run.
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

/// Panics unless the node's trust bundle holds `ca` (by certificate).
pub fn assert_trusted(node: &Node, ca: &TestCa, context: &str) {
    assert!(
        bundle_has(node, ca.cert()),
        "{context}: {ca:?} is not in the node's {DEBIAN_BUNDLE}"
    );
}

/// Panics if the node's trust bundle holds `ca` (by certificate).
pub fn assert_not_trusted(node: &Node, ca: &TestCa, context: &str) {
    assert!(
        !bundle_has(node, ca.cert()),
        "{context}: {ca:?} is still in the node's {DEBIAN_BUNDLE}"
    );
}

/// Something wrong with the agent's anchors directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnchorProblem {
    /// `foreign-file`, `anchor-misnamed` or `anchor-unparsable`.
    pub kind: &'static str,
    /// Which file, and what it holds.
    pub detail: String,
}

/// What the agent's anchors directory ([`ANCHORS_DIR`]) holds.
#[derive(Debug, Clone, Default)]
pub struct AgentAnchors {
    /// SHA-256 fingerprints of the anchors that parse as one certificate.
    pub fingerprints: BTreeSet<String>,
    /// Names of temp files ([`TEMP_PREFIX`]).
    pub temps: Vec<String>,
    /// Files that are not a well-formed anchor of the agent's.
    pub problems: Vec<AnchorProblem>,
}

/// Reads [`ANCHORS_DIR`] from the host: every file but temp files must be
/// `node-cert-agent-<sha256>.crt` holding exactly the certificate with that
/// fingerprint. An absent directory is empty.
pub fn agent_anchors(node: &Node) -> AgentAnchors {
    let mut seen = AgentAnchors::default();
    let dir = node.host_path(ANCHORS_DIR);
    let Ok(rd) = std::fs::read_dir(&dir) else {
        return seen;
    };
    for e in rd {
        let e = e.unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()));
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with(TEMP_PREFIX) {
            seen.temps.push(name);
            continue;
        }
        let mut problem = |kind, detail| seen.problems.push(AnchorProblem { kind, detail });
        let Some(fp) = name
            .strip_prefix("node-cert-agent-")
            .and_then(|n| n.strip_suffix(".crt"))
        else {
            problem("foreign-file", format!("{name} in {ANCHORS_DIR}"));
            continue;
        };
        let bytes = std::fs::read(e.path())
            .unwrap_or_else(|err| panic!("cannot read {}: {err}", e.path().display()));
        match X509::stack_from_pem(&bytes) {
            Ok(certs) if certs.len() == 1 => {
                let actual = sha256_fingerprint(&certs[0]);
                if actual != fp {
                    problem("anchor-misnamed", format!("{name} holds {actual}"));
                }
                seen.fingerprints.insert(actual);
            }
            Ok(certs) => problem(
                "anchor-unparsable",
                format!("{name} holds {} certificates", certs.len()),
            ),
            Err(err) => problem("anchor-unparsable", format!("{name}: {err}")),
        }
    }
    seen.temps.sort();
    seen
}

/// Names of the agent's temp files ([`TEMP_PREFIX`]) in the node directory
/// `node_dir`; an absent directory has none.
pub fn temp_files(node: &Node, node_dir: &str) -> Vec<String> {
    let Ok(rd) = std::fs::read_dir(node.host_path(node_dir)) else {
        return Vec::new();
    };
    let mut temps: Vec<String> = rd
        .filter_map(|e| Some(e.ok()?.file_name().to_string_lossy().into_owned()))
        .filter(|n| n.starts_with(TEMP_PREFIX))
        .collect();
    temps.sort();
    temps
}
