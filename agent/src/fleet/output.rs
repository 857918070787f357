//! The schema of `fleet -o json` (documented in docs/json.md, "fleet"):
//! typed, so a renamed field is a change made here on purpose, and pinned
//! by `agent/tests/json_contract.rs`.
//!
//! Owns: the output's types and their serialised names. Boundary: judges
//! nothing (that is [`crate::fleet::report`]'s) and reads nothing.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;

use crate::fleet::observed::Condition;
use crate::fleet::report::{Report, Row, SCHEMA_VERSION};
use crate::time::rfc3339;

/// What `fleet -o json` prints.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FleetReport {
    pub schema_version: u32,
    pub generated_at: String,
    pub selector: Option<String>,
    pub expected: ExpectedReport,
    pub nodes: Vec<NodeReport>,
    pub summary: SummaryReport,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ExpectedReport {
    pub secret: String,
    pub secret_found: bool,
    pub input_digest: String,
    pub trust_set_digest: String,
    pub ca_count: usize,
    pub findings: Vec<ExpectedFinding>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ExpectedFinding {
    /// `error` or `warning`.
    pub severity: &'static str,
    pub key: String,
    pub message: String,
}

/// One Node; every agent field is `null` when `agent` is false.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeReport {
    pub name: String,
    pub agent: bool,
    pub state: &'static str,
    pub in_sync: bool,
    pub version: Option<String>,
    pub trust_set_digest: Option<String>,
    pub input_digest: Option<String>,
    pub ca_count: Option<u32>,
    pub pull_trust: Option<String>,
    pub trust_condition: Option<ConditionReport>,
    pub kubelet_condition: Option<ConditionReport>,
    pub kubelet_client_not_after: Option<String>,
    pub changed_at: Option<String>,
    pub problems: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ConditionReport {
    pub status: String,
    pub reason: String,
    pub message: String,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SummaryReport {
    pub total: usize,
    pub converged: usize,
    pub all_converged: bool,
    /// `{state: count}` for every state but converged that has nodes.
    pub not_converged: BTreeMap<&'static str, usize>,
    /// `{reason: count}` of kubelet conditions that are not True.
    pub kubelet_not_valid: BTreeMap<String, usize>,
    pub pull_trust_restart: usize,
    pub line: String,
}

impl FleetReport {
    pub fn of(report: &Report) -> Self {
        let e = &report.expected;
        let summary = report.summary();
        Self {
            schema_version: SCHEMA_VERSION,
            generated_at: rfc3339(report.now),
            selector: report.selector.clone(),
            expected: ExpectedReport {
                secret: e.secret.clone(),
                secret_found: e.secret_found,
                input_digest: e.input_digest.clone(),
                trust_set_digest: e.trust_set_digest.clone(),
                ca_count: e.ca_count,
                findings: e
                    .findings
                    .iter()
                    .map(|f| ExpectedFinding {
                        severity: if f.is_error() { "error" } else { "warning" },
                        key: f.key.clone(),
                        message: f.to_string(),
                    })
                    .collect(),
            },
            nodes: report.rows.iter().map(NodeReport::of).collect(),
            summary: SummaryReport {
                total: summary.total,
                converged: summary.converged,
                all_converged: summary.all_converged(),
                not_converged: summary
                    .not_converged
                    .iter()
                    .map(|(s, n)| (s.as_str(), *n))
                    .collect(),
                kubelet_not_valid: summary.kubelet_not_valid.clone(),
                pull_trust_restart: summary.pull_trust_restart,
                line: summary.line(),
            },
        }
    }
}

impl NodeReport {
    fn of(r: &Row) -> Self {
        let a = r.node.agent.as_ref();
        Self {
            name: r.node.name.clone(),
            agent: a.is_some(),
            state: r.state.as_str(),
            in_sync: r.in_sync(),
            version: a.and_then(|a| a.version.clone()),
            trust_set_digest: a.and_then(|a| a.trust_set_digest.clone()),
            input_digest: a.and_then(|a| a.input_digest.clone()),
            ca_count: a.and_then(|a| a.ca_count),
            pull_trust: a.and_then(|a| a.pull_trust.clone()),
            trust_condition: a.and_then(|a| a.trust.as_ref()).map(ConditionReport::of),
            kubelet_condition: a.and_then(|a| a.kubelet.as_ref()).map(ConditionReport::of),
            kubelet_client_not_after: a.and_then(|a| a.kubelet_client_not_after).map(rfc3339),
            changed_at: a.and_then(|a| a.changed_at).map(rfc3339),
            problems: a
                .map(|a| a.problems.iter().map(ToString::to_string).collect())
                .unwrap_or_default(),
        }
    }
}

impl ConditionReport {
    fn of(c: &Condition) -> Self {
        Self {
            status: c.status.clone(),
            reason: c.reason.clone(),
            message: c.message.clone(),
        }
    }
}

impl Report {
    /// `-o json`: schemaVersion 1 (docs/json.md documents every field),
    /// as a JSON value whose object keys are in sorted order, as every
    /// earlier version printed them.
    pub fn json(&self) -> Result<Value, serde_json::Error> {
        serde_json::to_value(FleetReport::of(self))
    }
}
