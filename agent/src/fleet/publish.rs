//! What an agent publishes on its own Node, and which writes bring the Node
//! there from what it last published. Pure: data in, patches out.
//!
//! - [`TrustView::of`] and [`KubeletView::of`] turn a pass (and its error)
//!   into a condition (reason, short message that names the fix) and the
//!   digests of [`schema`](super::schema).
//! - [`desired`] is the whole published state: the label, the
//!   annotations and the two conditions this agent owns.
//! - [`plan`] compares it with [`Published`] (what the last successful
//!   writes put there, kept in memory and in the state directory) and
//!   gives at most two patches: a JSON merge patch of `nodes/<name>` for
//!   the label and annotations, and a strategic merge patch of
//!   `nodes/<name>/status` for the conditions, which merge by `type`, so
//!   conditions of other owners are never part of a write. Nothing
//!   changed: no patch at all (no heartbeat).
//!
//! Timestamps: `lastHeartbeatTime` is the time of the write,
//! `lastTransitionTime` changes only when the status (True/False) does, and
//! [`CHANGED_AT_ANNOTATION`] is the time of the last change of anything
//! published.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use super::schema::{
    input_digest, short_digest, trust_set_digest, KubeletReason, TrustReason, CA_COUNT_ANNOTATION,
    CHANGED_AT_ANNOTATION, INPUT_DIGEST_ANNOTATION, KUBELET_CLIENT_NOT_AFTER_ANNOTATION,
    KUBELET_CONDITION, PULL_TRUST_LABEL, TRUST_CONDITION, TRUST_SET_ANNOTATION, TRUST_SET_LABEL,
    VERSION_ANNOTATION,
};
use crate::kubelet::kubelet_config::KUBELET_ROTATION_FRACTION_MAX;
use crate::kubelet::manager::{ClientTimes, KubeletError, PassOutcome};
use crate::kubelet::renewal;
use crate::trust::reconcile::{Outcome, ReconcileError};
use crate::trust::validate::{Finding, FindingKind};
use crate::x509::time::rfc3339;

/// The longest condition message published, in bytes. The API sets no
/// limit of its own on a Node condition's message; this keeps
/// `kubectl describe node` readable and the object small. Events allow
/// 1024, and a message here says one thing and its fix.
pub const MAX_MESSAGE_BYTES: usize = 512;

/// Version of the [`Published`] file's format.
const PUBLISHED_VERSION: u32 = 1;

/// The CA trust as a pass left it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustView {
    pub reason: TrustReason,
    pub message: String,
    /// [`trust_set_digest`] of the agent's anchors.
    pub digest: String,
    pub ca_count: usize,
    /// [`input_digest`] of the Secret content read; `None` keeps the value
    /// last published (no Secret directory read this pass).
    pub input_digest: Option<String>,
    /// `live` or `restart` ([`PULL_TRUST_LABEL`]); `None` keeps the value
    /// last published (the pass did not get that far).
    pub pull_trust: Option<&'static str>,
}

impl TrustView {
    /// The view of a pass that returned `error` (if it failed) after doing
    /// what `outcome` records.
    pub fn of(outcome: &Outcome, error: Option<&ReconcileError>) -> Self {
        let (reason, message) = match error {
            Some(e) => trust_failure(e),
            None => trust_findings(&outcome.findings, outcome.trusted.len()),
        };
        Self {
            reason,
            message: cap(message),
            digest: trust_set_digest(&outcome.trusted),
            ca_count: outcome.trusted.len(),
            input_digest: outcome.secret_content.as_ref().map(input_digest),
            pull_trust: outcome.pull_trust.as_ref().map(|t| t.mode.as_str()),
        }
    }
}

/// The reason and message of a failed pass. Messages are stable across
/// retries of the same failure (no unit names or times that change per
/// attempt), so a failing pass retried every minute writes nothing new.
fn trust_failure(e: &ReconcileError) -> (TrustReason, String) {
    match e {
        ReconcileError::RefreshCall { command, .. } => (
            TrustReason::RefreshFailed,
            format!(
                "the trust store refresh ({}) could not be started through systemd's D-Bus API; check the node's system bus, the agent retries",
                command.join(" ")
            ),
        ),
        ReconcileError::RefreshFailed {
            command, status, ..
        } => (
            TrustReason::RefreshFailed,
            format!(
                "{} exited with status {status}: the node trust store was not refreshed. See `journalctl -u 'node-cert-agent-refresh-*'` on the node and fix the tool; the agent retries",
                command.join(" ")
            ),
        ),
        ReconcileError::BundleIncomplete { bundle, .. } => (
            TrustReason::RefreshFailed,
            format!("the trust bundle {} lacks CAs of the agent after the refresh, so nothing was restarted. See the agent's log for the fingerprints; the agent retries", bundle.display()),
        ),
        ReconcileError::RestartWouldStopContainers { unit, .. } => (
            TrustReason::RestartFailed,
            format!("{unit} is not restarted: without live-restore in /etc/docker/daemon.json its restart stops every container on the node. Set \"live-restore\": true, or take {unit} off restart-units"),
        ),
        ReconcileError::RestartCall { unit, .. } => (
            TrustReason::RestartFailed,
            format!("the restart of {unit} could not be requested through systemd's D-Bus API; check the node's system bus, the agent retries"),
        ),
        ReconcileError::RestartFailed { unit, result } => (
            TrustReason::RestartFailed,
            format!("the restart of {unit} ended with result \"{result}\", so it still uses the old CAs. See `journalctl -u {unit}` on the node; the agent retries"),
        ),
        ReconcileError::StartLimitHit { unit, limit, .. }
        | ReconcileError::AwaitingRecovery { unit, limit, .. } => (
            TrustReason::RestartFailed,
            format!("{unit} hit its start limit ({limit}) after the agent's restart and is stopped; the agent resets it and starts it again. See `journalctl -u {unit}` on the node"),
        ),
        ReconcileError::UnitMissing { unit, load_state } => (
            TrustReason::RestartFailed,
            format!("{unit} is {load_state} on this node, so the new CAs do not reach the container runtime; set restart-units to the unit that runs it here (containerd.service, k3s-agent.service, rke2-agent.service or crio.service)"),
        ),
        ReconcileError::UnitFailed { unit, result } => (
            TrustReason::RestartFailed,
            format!("{unit} is failed (Result={result}) and was not running before the agent's restart, so it is left alone: `systemctl reset-failed {unit} && systemctl start {unit}` on the node"),
        ),
        ReconcileError::NotActiveAfterRestart { unit, .. } => (
            TrustReason::RestartFailed,
            format!("{unit} did not start again after the agent's restart, so it does not run with the new CAs. See `journalctl -u {unit}` on the node; the agent retries"),
        ),
        ReconcileError::History(e) => (
            TrustReason::RestartFailed,
            format!("the agent's restart history cannot be used: {e}; restarts wait"),
        ),
        ReconcileError::State(e) => (
            TrustReason::RefreshFailed,
            format!("the agent's state file cannot be used: {e}; the trust store was not updated"),
        ),
        ReconcileError::Trust(e) => (
            TrustReason::RefreshFailed,
            format!("the trust store cannot be updated: {e}"),
        ),
        ReconcileError::PullTrust(e) => (
            TrustReason::RefreshFailed,
            format!("containerd's registry host configuration cannot be withdrawn: {e}; fix the directory's permissions, the agent retries"),
        ),
    }
}

/// The reason and message of a pass that ran to its end.
fn trust_findings(findings: &[Finding], count: usize) -> (TrustReason, String) {
    let errors: Vec<&Finding> = findings.iter().filter(|f| f.is_error()).collect();
    let source = |f: &&&Finding| {
        matches!(
            f.kind,
            FindingKind::SourceMissing | FindingKind::SourceUnavailable
        )
    };
    let (reason, first) = match errors.iter().find(source) {
        Some(f) => (TrustReason::SourceNotSynced, *f),
        None => match errors.first() {
            Some(f) => (TrustReason::InputInvalid, *f),
            None => {
                let noun = if count == 1 { "CA" } else { "CAs" };
                return (
                    TrustReason::Converged,
                    format!("{count} custom {noun} trusted: the installed set is the desired set"),
                );
            }
        },
    };
    let mut message = match reason {
        TrustReason::SourceNotSynced => first.problem.clone(),
        _ => format!("key \"{}\": {}", first.key, first.problem),
    };
    if !first.fix.is_empty() {
        message.push_str(". Fix: ");
        message.push_str(&first.fix);
    }
    if reason == TrustReason::InputInvalid {
        message.push_str("; the last good CAs stay installed");
    }
    if errors.len() > 1 {
        message.push_str(&format!(
            " (and {} more problem(s): `node-cert-agent status` on the node)",
            errors.len() - 1
        ));
    }
    (reason, message)
}

/// The kubelet certificates as a pass left them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubeletView {
    pub reason: KubeletReason,
    pub message: String,
    /// The client certificate's notAfter; `None` keeps the value last
    /// published (the pass could not read it).
    pub client_not_after: Option<i64>,
}

impl KubeletView {
    /// The view of a kubelet pass at `now`.
    pub fn of(outcome: &PassOutcome, now: i64) -> Self {
        let client = outcome.client;
        let (reason, message) = if let Some(label) = outcome.unfixable_revocations.first() {
            (
                KubeletReason::Revoked,
                format!("RenewRevocation entry {label} matches the current client certificate and every replacement: give it a notBefore or narrow it"),
            )
        } else if let Some(e) = outcome.failures.first() {
            (KubeletReason::RenewalFailing, kubelet_failure(e))
        } else if let Some(m) = &outcome.kubeconfig_mismatch {
            (
                KubeletReason::KubeconfigMismatch,
                format!(
                    "kubelet's kubeconfig uses {}, so kubelet never reads the certificate node-cert-agent renews. Fix: set its user's client-certificate and client-key to {}",
                    m.uses,
                    m.renewed.display()
                ),
            )
        } else {
            match client {
                None => (
                    KubeletReason::RenewalFailing,
                    "no kubelet client certificate: the bootstrap has not succeeded yet; see the agent's log".to_string(),
                ),
                Some(c) if c.not_after <= now => (
                    KubeletReason::Expiring,
                    format!("the kubelet client certificate expired at {}", rfc3339(c.not_after)),
                ),
                Some(c) if overdue_at(&c) <= now => (
                    KubeletReason::Expiring,
                    format!(
                        "the kubelet client certificate is past its renewal deadline and expires at {}{}",
                        rfc3339(c.not_after),
                        if c.kubelet_rotates || outcome.monitoring_only {
                            "; kubelet rotates it itself (rotateCertificates: true) and has not by 90 % of its lifetime: check kubelet's log"
                        } else {
                            ""
                        }
                    ),
                ),
                Some(c) => (
                    KubeletReason::Valid,
                    format!(
                        "the kubelet client certificate is valid until {}",
                        rfc3339(c.not_after)
                    ),
                ),
            }
        };
        Self {
            reason,
            message: cap(message),
            client_not_after: client.map(|c| c.not_after),
        }
    }
}

/// When the client certificate is overdue: the agent's renewal deadline,
/// or, where kubelet rotates it itself, the end of kubelet's own window
/// (90 % of the lifetime; the agent's deadline is at 70 to 80 %), so that a
/// healthy kubelet that rotates at, say, 85 % is never reported Expiring.
fn overdue_at(c: &ClientTimes) -> i64 {
    if c.kubelet_rotates {
        renewal::deadline(c.not_before, c.not_after, KUBELET_ROTATION_FRACTION_MAX)
    } else {
        c.deadline
    }
}

/// A failed renewal in words that stay the same across retries.
fn kubelet_failure(e: &KubeletError) -> String {
    if e.is_auth() {
        return "the API server refuses the node's renewal request (401/403): check the node's credentials and the cluster's CSR RBAC; see the agent's log".into();
    }
    match e {
        KubeletError::NoBootstrap { path, .. } => format!(
            "no usable client certificate and no bootstrap kubeconfig at {}: provide one (server, CA, bootstrap token)",
            path.display()
        ),
        KubeletError::Restart { unit, .. } | KubeletError::RestartFailed { unit, .. } => format!(
            "the restart of {unit} after the new certificate failed: see `journalctl -u {unit}` on the node"
        ),
        KubeletError::NodeName(e) => e.to_string(),
        KubeletError::Api { server, .. } => format!(
            "renewing the kubelet certificate through {server} failed: see the agent's log (`kubelet certificate pass failed`); the agent retries"
        ),
        _ => "renewing the kubelet certificate failed: see the agent's log (`kubelet certificate pass failed`); the agent retries".into(),
    }
}

/// Cuts `s` to [`MAX_MESSAGE_BYTES`] at a character boundary.
fn cap(mut s: String) -> String {
    if s.len() > MAX_MESSAGE_BYTES {
        let mut end = MAX_MESSAGE_BYTES - 3;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
        s.push_str("...");
    }
    s
}

/// One condition as this agent publishes it (without its timestamps).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OwnCondition {
    pub status: bool,
    pub reason: String,
    pub message: String,
}

/// Everything this agent publishes on its Node.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Desired {
    pub labels: BTreeMap<String, String>,
    /// Without [`CHANGED_AT_ANNOTATION`], which [`plan`] adds.
    pub annotations: BTreeMap<String, String>,
    /// By condition type.
    pub conditions: BTreeMap<String, OwnCondition>,
}

/// The state to publish, from the latest views (`None`: that job is off,
/// or has not finished a pass yet). A `None` digest or notAfter keeps what
/// `last` published.
pub fn desired(
    trust: Option<&TrustView>,
    kubelet: Option<&KubeletView>,
    last: &Published,
    version: &str,
) -> Desired {
    let mut d = Desired::default();
    d.annotations
        .insert(VERSION_ANNOTATION.into(), version.to_string());
    let keep = |key: &str| last.annotations.get(key).cloned();
    if let Some(t) = trust {
        d.labels
            .insert(TRUST_SET_LABEL.into(), short_digest(&t.digest).to_string());
        if let Some(mode) = t
            .pull_trust
            .map(str::to_string)
            .or_else(|| last.labels.get(PULL_TRUST_LABEL).cloned())
        {
            d.labels.insert(PULL_TRUST_LABEL.into(), mode);
        }
        d.annotations
            .insert(TRUST_SET_ANNOTATION.into(), t.digest.clone());
        d.annotations
            .insert(CA_COUNT_ANNOTATION.into(), t.ca_count.to_string());
        if let Some(input) = t
            .input_digest
            .clone()
            .or_else(|| keep(INPUT_DIGEST_ANNOTATION))
        {
            d.annotations.insert(INPUT_DIGEST_ANNOTATION.into(), input);
        }
        d.conditions.insert(
            TRUST_CONDITION.into(),
            OwnCondition {
                status: t.reason.status(),
                reason: t.reason.as_str().into(),
                message: t.message.clone(),
            },
        );
    }
    if let Some(k) = kubelet {
        let not_after = k
            .client_not_after
            .map(rfc3339)
            .or_else(|| keep(KUBELET_CLIENT_NOT_AFTER_ANNOTATION));
        if let Some(not_after) = not_after {
            d.annotations
                .insert(KUBELET_CLIENT_NOT_AFTER_ANNOTATION.into(), not_after);
        }
        d.conditions.insert(
            KUBELET_CONDITION.into(),
            OwnCondition {
                status: k.reason.status(),
                reason: k.reason.as_str().into(),
                message: k.message.clone(),
            },
        );
    }
    d
}

/// A condition as last written, with its transition time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PublishedCondition {
    #[serde(flatten)]
    pub condition: OwnCondition,
    /// `lastTransitionTime`, Unix seconds.
    pub last_transition: i64,
}

/// What the last successful writes put on the Node (the agent's own keys
/// and conditions only). Persisted in the state directory, so a restarted
/// agent that would publish the same writes nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Published {
    pub version: u32,
    /// The Node it was published on.
    pub node: String,
    pub labels: BTreeMap<String, String>,
    /// Without [`CHANGED_AT_ANNOTATION`].
    pub annotations: BTreeMap<String, String>,
    pub conditions: BTreeMap<String, PublishedCondition>,
    /// The last [`CHANGED_AT_ANNOTATION`] written, Unix seconds.
    pub changed_at: Option<i64>,
}

impl Published {
    /// Nothing published yet on `node`.
    pub fn empty(node: &str) -> Self {
        Self {
            version: PUBLISHED_VERSION,
            node: node.to_string(),
            ..Self::default()
        }
    }

    /// `self` if it was published on `node` in this format, else nothing.
    pub fn for_node(self, node: &str) -> Self {
        if self.node == node && self.version == PUBLISHED_VERSION {
            self
        } else {
            Self::empty(node)
        }
    }

    fn same_conditions(&self, desired: &Desired) -> bool {
        self.conditions.len() == desired.conditions.len()
            && desired
                .conditions
                .iter()
                .all(|(t, c)| self.conditions.get(t).is_some_and(|p| &p.condition == c))
    }
}

/// This agent's own label and annotations ([`Published`] keys).
const OWN_LABELS: &[&str] = &[TRUST_SET_LABEL, PULL_TRUST_LABEL];
const OWN_ANNOTATIONS: &[&str] = &[
    TRUST_SET_ANNOTATION,
    CA_COUNT_ANNOTATION,
    INPUT_DIGEST_ANNOTATION,
    KUBELET_CLIENT_NOT_AFTER_ANNOTATION,
    VERSION_ANNOTATION,
];
const OWN_CONDITIONS: &[&str] = &[TRUST_CONDITION, KUBELET_CONDITION];

/// `last` (the agent's record) corrected by what `node` (the Node as read
/// from the API) really shows of this agent's own label, annotations and
/// conditions: a Node registered again, or edited while the agent was
/// down, is repaired by the next publication, and a Node that already
/// shows the state costs no write. Nothing else of the Node is read.
pub fn observed(node: &k8s_openapi::api::core::v1::Node, last: &Published) -> Published {
    let pick = |map: Option<&BTreeMap<String, String>>, own: &[&str]| {
        own.iter()
            .filter_map(|k| {
                map.and_then(|m| m.get(*k))
                    .map(|v| (k.to_string(), v.clone()))
            })
            .collect::<BTreeMap<_, _>>()
    };
    let mut out = last.clone();
    out.labels = pick(node.metadata.labels.as_ref(), OWN_LABELS);
    out.annotations = pick(node.metadata.annotations.as_ref(), OWN_ANNOTATIONS);
    let conditions = node
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .map(Vec::as_slice)
        .unwrap_or_default();
    out.conditions = conditions
        .iter()
        .filter(|c| OWN_CONDITIONS.contains(&c.type_.as_str()))
        .filter_map(|c| {
            let status = match c.status.as_str() {
                "True" => true,
                "False" => false,
                // Unknown, or anything else: not what this agent writes.
                _ => return None,
            };
            let condition = OwnCondition {
                status,
                reason: c.reason.clone().unwrap_or_default(),
                message: c.message.clone().unwrap_or_default(),
            };
            let last_transition = c
                .last_transition_time
                .as_ref()
                .map(|t| t.0.as_second())
                .or_else(|| last.conditions.get(&c.type_).map(|p| p.last_transition))
                .unwrap_or_default();
            Some((
                c.type_.clone(),
                PublishedCondition {
                    condition,
                    last_transition,
                },
            ))
        })
        .collect();
    out
}

/// The writes that bring the Node from `Published` to `Desired`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Writes {
    /// JSON merge patch of `nodes/<name>` (labels and annotations).
    pub metadata: Option<Value>,
    /// Strategic merge patch of `nodes/<name>/status` (conditions).
    pub status: Option<Value>,
    /// What `Published` becomes once the metadata patch succeeded.
    pub after_metadata: Published,
    /// What `Published` becomes once both succeeded.
    pub after_both: Published,
}

impl Writes {
    pub fn is_empty(&self) -> bool {
        self.metadata.is_none() && self.status.is_none()
    }
}

/// The writes from `last` to `desired` at `now` (Unix seconds); none when
/// nothing this agent owns would change.
pub fn plan(last: &Published, desired: &Desired, now: i64) -> Writes {
    let same_meta = last.labels == desired.labels && last.annotations == desired.annotations;
    let same_conditions = last.same_conditions(desired);
    let mut after_metadata = last.clone();
    let mut writes = Writes::default();
    if !(same_meta && same_conditions) {
        writes.metadata = Some(json!({"metadata": {
            "labels": map_patch(&last.labels, &desired.labels, None),
            "annotations": map_patch(
                &last.annotations,
                &desired.annotations,
                Some((CHANGED_AT_ANNOTATION, rfc3339(now))),
            ),
        }}));
        after_metadata.labels = desired.labels.clone();
        after_metadata.annotations = desired.annotations.clone();
        after_metadata.changed_at = Some(now);
    }
    let mut after_both = after_metadata.clone();
    if !same_conditions {
        let heartbeat = rfc3339(now);
        let mut list = Vec::new();
        let mut conditions = BTreeMap::new();
        for (type_, c) in &desired.conditions {
            let previous = last.conditions.get(type_);
            if previous.is_some_and(|p| &p.condition == c) {
                if let Some(p) = previous {
                    conditions.insert(type_.clone(), p.clone());
                }
                continue;
            }
            let transition = match previous {
                Some(p) if p.condition.status == c.status => p.last_transition,
                _ => now,
            };
            list.push(json!({
                "type": type_,
                "status": if c.status { "True" } else { "False" },
                "reason": c.reason,
                "message": c.message,
                "lastHeartbeatTime": heartbeat,
                "lastTransitionTime": rfc3339(transition),
            }));
            conditions.insert(
                type_.clone(),
                PublishedCondition {
                    condition: c.clone(),
                    last_transition: transition,
                },
            );
        }
        // A condition of ours no longer published (its job was turned off)
        // is deleted by its type; other owners' are never named.
        for type_ in last.conditions.keys() {
            if !desired.conditions.contains_key(type_) {
                list.push(json!({"type": type_, "$patch": "delete"}));
            }
        }
        writes.status = Some(json!({"status": {"conditions": list}}));
        after_both.conditions = conditions;
    }
    writes.after_metadata = after_metadata;
    writes.after_both = after_both;
    writes
}

/// A merge patch of a string map from `old` to `new` (removed keys as
/// `null`), plus `extra`.
fn map_patch(
    old: &BTreeMap<String, String>,
    new: &BTreeMap<String, String>,
    extra: Option<(&str, String)>,
) -> Value {
    let mut m = Map::new();
    for k in old.keys() {
        if !new.contains_key(k) {
            m.insert(k.clone(), Value::Null);
        }
    }
    for (k, v) in new {
        if old.get(k) != Some(v) {
            m.insert(k.clone(), Value::String(v.clone()));
        }
    }
    if let Some((k, v)) = extra {
        m.insert(k.to_string(), Value::String(v));
    }
    Value::Object(m)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::trust::validate::Finding;
    use crate::x509::cert::Fingerprint;

    const NOW: i64 = 1_800_000_000;

    fn outcome(fps: &[u8]) -> Outcome {
        Outcome {
            trusted: fps
                .iter()
                .map(|b| Fingerprint::of_der(&[*b]))
                .collect::<BTreeSet<_>>(),
            secret_content: Some([("ca1.crt".to_string(), b"pem".to_vec())].into()),
            ..Outcome::default()
        }
    }

    fn kubelet_ok() -> PassOutcome {
        PassOutcome {
            client: Some(ClientTimes {
                not_before: NOW - 3600,
                not_after: NOW + 86_400,
                deadline: NOW + 3600,
                kubelet_rotates: false,
            }),
            ..PassOutcome::default()
        }
    }

    fn state(trust: &Outcome, err: Option<&ReconcileError>, last: &Published) -> Desired {
        desired(
            Some(&TrustView::of(trust, err)),
            Some(&KubeletView::of(&kubelet_ok(), NOW)),
            last,
            "1.2.3",
        )
    }

    #[test]
    fn the_pull_trust_label_says_live_or_restart_and_a_failed_pass_keeps_it() {
        use crate::trust::pull_trust::{PullMode, PullTrust};
        let mut o = outcome(&[1]);
        o.pull_trust = Some(PullTrust {
            mode: PullMode::Restart,
            dir: None,
            reason: Some("no config_path".into()),
            path: None,
            hint: None,
        });
        let d = state(&o, None, &Published::empty("n1"));
        assert_eq!(d.labels[PULL_TRUST_LABEL], "restart");
        o.pull_trust.as_mut().unwrap().mode = PullMode::Live;
        let d = state(&o, None, &Published::empty("n1"));
        assert_eq!(d.labels[PULL_TRUST_LABEL], "live");
        let mut last = Published::empty("n1");
        last.labels.insert(PULL_TRUST_LABEL.into(), "live".into());
        let d = state(&outcome(&[1]), None, &last);
        assert_eq!(d.labels[PULL_TRUST_LABEL], "live", "kept");
    }

    #[test]
    fn a_converged_node_publishes_label_annotations_and_two_true_conditions() {
        let last = Published::empty("n1");
        let d = state(&outcome(&[1, 2]), None, &last);
        let digest = trust_set_digest(&outcome(&[1, 2]).trusted);
        assert_eq!(d.labels[TRUST_SET_LABEL], digest[..12]);
        assert_eq!(d.annotations[TRUST_SET_ANNOTATION], digest);
        assert_eq!(d.annotations[CA_COUNT_ANNOTATION], "2");
        assert_eq!(d.annotations[VERSION_ANNOTATION], "1.2.3");
        assert_eq!(
            d.annotations[KUBELET_CLIENT_NOT_AFTER_ANNOTATION],
            rfc3339(NOW + 86_400)
        );
        assert_eq!(d.conditions[TRUST_CONDITION].reason, "Converged");
        assert!(d.conditions[TRUST_CONDITION].status);
        assert_eq!(d.conditions[KUBELET_CONDITION].reason, "Valid");
        let w = plan(&last, &d, NOW);
        let meta = w.metadata.unwrap();
        assert_eq!(meta["metadata"]["labels"][TRUST_SET_LABEL], digest[..12]);
        assert_eq!(
            meta["metadata"]["annotations"][CHANGED_AT_ANNOTATION],
            rfc3339(NOW)
        );
        let conditions = w.status.unwrap()["status"]["conditions"].clone();
        assert_eq!(conditions.as_array().unwrap().len(), 2);
        for c in conditions.as_array().unwrap() {
            assert_eq!(c["lastHeartbeatTime"], rfc3339(NOW));
            assert_eq!(c["lastTransitionTime"], rfc3339(NOW));
        }
    }

    #[test]
    fn the_same_state_again_writes_nothing() {
        let d = state(&outcome(&[1]), None, &Published::empty("n1"));
        let w = plan(&Published::empty("n1"), &d, NOW);
        let last = w.after_both;
        for i in 0..50 {
            let again = state(&outcome(&[1]), None, &last);
            assert!(plan(&last, &again, NOW + i).is_empty(), "republish {i}");
        }
    }

    #[test]
    fn a_refused_key_keeps_the_digest_and_the_transition_time_follows_the_status() {
        let last = plan(
            &Published::empty("n1"),
            &state(&outcome(&[1]), None, &Published::empty("n1")),
            NOW,
        )
        .after_both;
        let mut bad = outcome(&[1]);
        bad.findings.push(Finding::error(
            FindingKind::PrivateKey,
            "ca2.crt",
            None,
            "holds a private key",
            "put only the CA certificate in the Secret",
        ));
        bad.secret_content
            .as_mut()
            .unwrap()
            .insert("ca2.crt".into(), b"key".to_vec());
        let d = state(&bad, None, &last);
        let c = &d.conditions[TRUST_CONDITION];
        assert_eq!(c.reason, "InputInvalid");
        assert!(!c.status);
        assert!(
            c.message.contains("ca2.crt") && c.message.contains("Fix:"),
            "{}",
            c.message
        );
        assert_eq!(d.labels, last.labels, "the last good CAs stay");
        assert_ne!(
            d.annotations[INPUT_DIGEST_ANNOTATION], last.annotations[INPUT_DIGEST_ANNOTATION],
            "the input it saw and refused is published"
        );
        let w = plan(&last, &d, NOW + 10);
        let conditions = w.status.clone().unwrap()["status"]["conditions"].clone();
        let list = conditions.as_array().unwrap();
        assert_eq!(list.len(), 1, "only the condition that changed: {list:?}");
        assert_eq!(list[0]["type"], TRUST_CONDITION);
        assert_eq!(list[0]["lastTransitionTime"], rfc3339(NOW + 10));
        // Still False, another message: the transition time stays.
        let mut worse = bad;
        worse.findings[0].problem = "is empty".into();
        let d2 = state(&worse, None, &w.after_both);
        let w2 = plan(&w.after_both, &d2, NOW + 20);
        let c2 = w2.status.unwrap()["status"]["conditions"][0].clone();
        assert_eq!(c2["lastTransitionTime"], rfc3339(NOW + 10));
        assert_eq!(c2["lastHeartbeatTime"], rfc3339(NOW + 20));
    }

    #[test]
    fn failures_have_their_reasons_and_retries_of_the_same_failure_write_nothing() {
        let refresh = || ReconcileError::RefreshFailed {
            command: vec!["/usr/sbin/update-ca-certificates".into()],
            unit: format!("node-cert-agent-refresh-{}", rand_suffix()),
            result: "exit-code".into(),
            status: 1,
        };
        let first = TrustView::of(&outcome(&[1]), Some(&refresh()));
        assert_eq!(first.reason, TrustReason::RefreshFailed);
        assert!(first.message.contains("journalctl"), "{}", first.message);
        assert_eq!(first, TrustView::of(&outcome(&[1]), Some(&refresh())));
        let restart = ReconcileError::RestartFailed {
            unit: "containerd.service".into(),
            result: "failed".into(),
        };
        assert_eq!(
            TrustView::of(&outcome(&[1]), Some(&restart)).reason,
            TrustReason::RestartFailed
        );
        let mut missing = outcome(&[1]);
        missing.findings.push(Finding::error(
            FindingKind::SourceUnavailable,
            "/secret",
            None,
            "..data changed 5 times",
            "check the mount",
        ));
        assert_eq!(
            TrustView::of(&missing, None).reason,
            TrustReason::SourceNotSynced
        );
    }

    fn rand_suffix() -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64
    }

    #[test]
    fn kubelet_reasons() {
        let mut o = kubelet_ok();
        assert_eq!(KubeletView::of(&o, NOW).reason, KubeletReason::Valid);
        assert_eq!(
            KubeletView::of(&o, NOW + 7200).reason,
            KubeletReason::Expiring
        );
        o.kubeconfig_mismatch = Some(crate::kubelet::manager::KubeconfigMismatch {
            uses: "a token".into(),
            renewed: "/var/lib/kubelet/pki/kubelet-client-current.pem".into(),
        });
        assert_eq!(
            KubeletView::of(&o, NOW).reason,
            KubeletReason::KubeconfigMismatch
        );
        o.unfixable_revocations.push("kube-system/r1[0]".into());
        assert_eq!(KubeletView::of(&o, NOW).reason, KubeletReason::Revoked);
        let failing = PassOutcome {
            failures: vec![KubeletError::RestartFailed {
                unit: "kubelet.service".into(),
                result: "failed".into(),
            }],
            ..PassOutcome::default()
        };
        let v = KubeletView::of(&failing, NOW);
        assert_eq!(v.reason, KubeletReason::RenewalFailing);
        assert_eq!(v.client_not_after, None);
    }

    #[test]
    fn a_certificate_kubelet_rotates_is_expiring_only_past_kubelets_own_window() {
        // 100 h of life; the agent's deadline at 75 %, kubelet's window ends at 90 %.
        let nb = NOW - 85 * 3600;
        let times = |kubelet_rotates| ClientTimes {
            not_before: nb,
            not_after: nb + 100 * 3600,
            deadline: nb + 75 * 3600,
            kubelet_rotates,
        };
        let at = |kubelet_rotates, now| {
            let o = PassOutcome {
                client: Some(times(kubelet_rotates)),
                monitoring_only: kubelet_rotates,
                ..PassOutcome::default()
            };
            KubeletView::of(&o, now)
        };
        // At 85 %: kubelet may still rotate (70 to 90 %): healthy.
        assert_eq!(at(true, NOW).reason, KubeletReason::Valid);
        // The agent's own renewal is overdue at 85 %.
        assert_eq!(at(false, NOW).reason, KubeletReason::Expiring);
        // Past 90 %, kubelet is late too, and the message says whose it is.
        let late = at(true, nb + 90 * 3600);
        assert_eq!(late.reason, KubeletReason::Expiring);
        assert!(
            late.message.contains("kubelet rotates it itself"),
            "{}",
            late.message
        );
        assert_eq!(at(true, nb + 90 * 3600 - 1).reason, KubeletReason::Valid);
    }

    #[test]
    fn unknown_digests_keep_what_was_published_and_messages_are_capped() {
        let last = plan(
            &Published::empty("n1"),
            &state(&outcome(&[1]), None, &Published::empty("n1")),
            NOW,
        )
        .after_both;
        let mut unread = outcome(&[1]);
        unread.secret_content = None;
        let failing = PassOutcome {
            failures: vec![KubeletError::RestartFailed {
                unit: "kubelet.service".into(),
                result: "failed".into(),
            }],
            ..PassOutcome::default()
        };
        let d = desired(
            Some(&TrustView::of(&unread, None)),
            Some(&KubeletView::of(&failing, NOW)),
            &last,
            "1.2.3",
        );
        assert_eq!(
            d.annotations[INPUT_DIGEST_ANNOTATION],
            last.annotations[INPUT_DIGEST_ANNOTATION]
        );
        assert_eq!(
            d.annotations[KUBELET_CLIENT_NOT_AFTER_ANNOTATION],
            last.annotations[KUBELET_CLIENT_NOT_AFTER_ANNOTATION]
        );
        let long = cap("é".repeat(1000));
        assert!(long.len() <= MAX_MESSAGE_BYTES && long.ends_with("..."));
    }

    #[test]
    fn a_condition_no_longer_owned_is_deleted_by_type_and_a_label_by_null() {
        let last = plan(
            &Published::empty("n1"),
            &state(&outcome(&[1]), None, &Published::empty("n1")),
            NOW,
        )
        .after_both;
        let d = desired(
            None,
            Some(&KubeletView::of(&kubelet_ok(), NOW)),
            &last,
            "1.2.3",
        );
        let w = plan(&last, &d, NOW + 1);
        let meta = w.metadata.unwrap();
        assert!(meta["metadata"]["labels"][TRUST_SET_LABEL].is_null());
        assert!(meta["metadata"]["labels"]
            .as_object()
            .unwrap()
            .contains_key(TRUST_SET_LABEL));
        let list = w.status.unwrap()["status"]["conditions"].clone();
        assert_eq!(list, json!([{"type": TRUST_CONDITION, "$patch": "delete"}]));
    }

    #[test]
    fn what_the_node_really_shows_replaces_the_record_and_other_keys_are_ignored() {
        let last = plan(
            &Published::empty("n1"),
            &state(&outcome(&[1]), None, &Published::empty("n1")),
            NOW,
        )
        .after_both;
        // The Node as the API shows it after the agent's writes, with
        // kubelet's and another owner's keys beside them.
        let mut labels = last.labels.clone();
        labels.insert("kubernetes.io/hostname".into(), "n1".into());
        let mut annotations = last.annotations.clone();
        annotations.insert(CHANGED_AT_ANNOTATION.into(), rfc3339(NOW));
        annotations.insert("example.com/x".into(), "y".into());
        let mut conditions: Vec<Value> = last
            .conditions
            .iter()
            .map(|(t, c)| {
                json!({"type": t, "status": if c.condition.status {"True"} else {"False"},
                    "reason": c.condition.reason, "message": c.condition.message,
                    "lastTransitionTime": rfc3339(c.last_transition)})
            })
            .collect();
        conditions.push(json!({"type": "Ready", "status": "True"}));
        let node: k8s_openapi::api::core::v1::Node = serde_json::from_value(json!({
            "metadata": {"name": "n1", "labels": labels, "annotations": annotations},
            "status": {"conditions": conditions},
        }))
        .unwrap();
        assert_eq!(observed(&node, &last), last);
        let again = state(&outcome(&[1]), None, &last);
        assert!(plan(&observed(&node, &last), &again, NOW + 5).is_empty());
        // Registered again: nothing of the agent's is left; all is written.
        let bare: k8s_openapi::api::core::v1::Node =
            serde_json::from_value(json!({"metadata": {"name": "n1"}})).unwrap();
        let seen = observed(&bare, &last);
        assert!(seen.labels.is_empty() && seen.conditions.is_empty());
        let w = plan(&seen, &again, NOW + 5);
        assert!(w.metadata.is_some() && w.status.is_some());
    }

    #[test]
    fn the_fuzz_seed_node_reads_as_published_with_an_unknown_condition_dropped() {
        let node: k8s_openapi::api::core::v1::Node = serde_json::from_str(include_str!(
            "../../tests/data/fuzz/node_object/published-node.json"
        ))
        .unwrap();
        let seen = observed(&node, &Published::empty("n1"));
        assert_eq!(seen.labels[TRUST_SET_LABEL], "648e6050e599");
        assert_eq!(
            seen.annotations.len(),
            5,
            "changed-at is not a compared key"
        );
        assert_eq!(
            seen.conditions.len(),
            1,
            "Ready is not ours, Unknown not written by us"
        );
        assert_eq!(
            seen.conditions[KUBELET_CONDITION].last_transition,
            crate::x509::time::parse_rfc3339("2026-12-02T00:48:22Z").unwrap()
        );
    }

    #[test]
    fn published_state_of_another_node_is_ignored() {
        let p = Published::empty("n1");
        assert_eq!(p.clone().for_node("n1"), p);
        assert_eq!(p.for_node("n2"), Published::empty("n2"));
    }
}
