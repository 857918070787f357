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
use crate::time::rfc3339;
use crate::trust::reconcile::{Outcome, ReconcileError};
use crate::trust::validate::{Finding, FindingKind};

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
mod tests;
