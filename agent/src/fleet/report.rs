//! The `fleet` command's report: one row per Node, whether it is in sync
//! with the [`Expected`] state and, if not, why; the summary that groups
//! the rest by reason; the table; the exit code (the JSON is
//! [`crate::fleet::output`]'s). Pure: data in, text and numbers out.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::fleet::expected::Expected;
use crate::fleet::observed::{Condition, NodeFacts};
use crate::fleet::schema::{self, TrustReason};
use crate::time::rfc3339;

/// The JSON schema's version; bump it on any incompatible change.
pub const SCHEMA_VERSION: u32 = 1;
/// Every selected node has converged.
pub const EXIT_CONVERGED: u8 = 0;
/// Some selected node has not converged (or `--wait` timed out).
pub const EXIT_NOT_CONVERGED: u8 = 1;
/// The command could not run (kubeconfig, API, Secret unreadable).
pub const EXIT_ERROR: u8 = 2;
/// `--wait` stopped by Ctrl-C (128 + SIGINT, as a shell reports it).
pub const EXIT_INTERRUPTED: u8 = 130;

/// Where one node stands, in the order the summary lists them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum State {
    Converged,
    /// Its input digest is not the current Secret's: it has not acted on it.
    Behind,
    /// It acted on the current Secret and refused a key (keeps its last good CAs).
    InputInvalid,
    RefreshFailed,
    RestartFailed,
    SourceNotSynced,
    /// The trust condition is False with a reason this version does not know.
    OtherFalse,
    /// Same input, True condition, but another trust set than expected
    /// (provisioning files that `--ca-file` did not name, say).
    TrustDiffers,
    /// The agent's annotations are there but incomplete or malformed, or the
    /// trust condition is missing.
    Incomplete,
    /// Nothing of the agent's is on the Node.
    NoAgent,
}

impl State {
    /// The JSON name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Converged => "converged",
            Self::Behind => "behind",
            Self::InputInvalid => "inputInvalid",
            Self::RefreshFailed => "refreshFailed",
            Self::RestartFailed => "restartFailed",
            Self::SourceNotSynced => "sourceNotSynced",
            Self::OtherFalse => "conditionFalse",
            Self::TrustDiffers => "trustDiffers",
            Self::Incomplete => "incomplete",
            Self::NoAgent => "noAgent",
        }
    }

    /// How the summary line names the group.
    pub fn describe(self) -> &'static str {
        match self {
            Self::Converged => "converged",
            Self::Behind => "behind (has not acted on the current Secret yet)",
            Self::InputInvalid => "invalid input (acted on the current Secret and refused a key; keeps its last good CAs)",
            Self::RefreshFailed => "trust-store refresh failed",
            Self::RestartFailed => "unit restart failed",
            Self::SourceNotSynced => "source not synced",
            Self::OtherFalse => "trust condition False (other reason)",
            Self::TrustDiffers => "other trust set (same Secret; provisioning files differ: pass them with --ca-file)",
            Self::Incomplete => "incomplete report (agent annotations or condition missing or malformed)",
            Self::NoAgent => "no agent",
        }
    }
}

/// One row of the report.
#[derive(Debug, Clone)]
pub struct Row {
    pub node: NodeFacts,
    pub state: State,
}

impl Row {
    pub fn in_sync(&self) -> bool {
        self.state == State::Converged
    }
}

/// Judges one node against the expected state.
pub fn judge(node: &NodeFacts, expected: &Expected) -> State {
    let Some(a) = &node.agent else {
        return State::NoAgent;
    };
    match &a.input_digest {
        Some(d) if *d != expected.input_digest => return State::Behind,
        Some(_) => {}
        None => return State::Incomplete,
    }
    let Some(trust) = &a.trust else {
        return State::Incomplete;
    };
    if !trust.is_true() {
        return match trust.reason.as_str() {
            r if r == TrustReason::InputInvalid.as_str() => State::InputInvalid,
            r if r == TrustReason::RefreshFailed.as_str() => State::RefreshFailed,
            r if r == TrustReason::RestartFailed.as_str() => State::RestartFailed,
            r if r == TrustReason::SourceNotSynced.as_str() => State::SourceNotSynced,
            _ => State::OtherFalse,
        };
    }
    match &a.trust_set_digest {
        Some(d) if *d == expected.trust_set_digest => State::Converged,
        Some(_) => State::TrustDiffers,
        None => State::Incomplete,
    }
}

/// The whole report: expected state, rows sorted by node name, taken at `now`.
#[derive(Debug, Clone)]
pub struct Report {
    pub expected: Expected,
    pub rows: Vec<Row>,
    /// Unix seconds.
    pub now: i64,
    /// The label selector used, if any.
    pub selector: Option<String>,
}

/// The counts behind the summary line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    pub total: usize,
    pub converged: usize,
    /// Every state but [`State::Converged`] that has nodes, with its count.
    pub not_converged: BTreeMap<State, usize>,
    /// Nodes whose kubelet condition is present and not True, by reason.
    pub kubelet_not_valid: BTreeMap<String, usize>,
    /// Nodes whose pulls get a changed CA set only by a containerd restart.
    pub pull_trust_restart: usize,
}

impl Summary {
    /// The counts of judged nodes (`--wait` recounts them on every change
    /// without building rows).
    pub fn of<'a>(judged: impl IntoIterator<Item = (State, &'a NodeFacts)>) -> Summary {
        let mut not_converged = BTreeMap::new();
        let mut kubelet_not_valid = BTreeMap::new();
        let (mut total, mut converged, mut pull_trust_restart) = (0, 0, 0);
        for (state, node) in judged {
            total += 1;
            if state == State::Converged {
                converged += 1;
            } else {
                *not_converged.entry(state).or_insert(0) += 1;
            }
            if node.agent.as_ref().and_then(|a| a.pull_trust.as_deref()) == Some("restart") {
                pull_trust_restart += 1;
            }
            if let Some(k) = node.agent.as_ref().and_then(|a| a.kubelet.as_ref()) {
                if !k.is_true() {
                    *kubelet_not_valid.entry(reason_or_status(k)).or_insert(0) += 1;
                }
            }
        }
        Summary {
            total,
            converged,
            not_converged,
            kubelet_not_valid,
            pull_trust_restart,
        }
    }

    /// Every selected node converged. No node at all is not convergence: a
    /// selector that matches nothing is more likely a typo than a fleet.
    pub fn all_converged(&self) -> bool {
        self.total > 0 && self.converged == self.total
    }

    /// `N of M converged; the rest: ...`.
    pub fn line(&self) -> String {
        let mut s = format!("{} of {} converged", self.converged, self.total);
        if self.total == 0 {
            s.push_str(" (no Node matches)");
        }
        if !self.not_converged.is_empty() {
            let rest: Vec<String> = self
                .not_converged
                .iter()
                .map(|(state, n)| format!("{n} {}", state.describe()))
                .collect();
            let _ = write!(s, "; not converged: {}", rest.join(", "));
        }
        if !self.kubelet_not_valid.is_empty() {
            let rest: Vec<String> = self
                .kubelet_not_valid
                .iter()
                .map(|(r, n)| format!("{n} {r}"))
                .collect();
            let _ = write!(s, "; kubelet certificates not valid: {}", rest.join(", "));
        }
        s
    }
}

impl Report {
    /// Judges every node; rows sorted by name.
    pub fn new(
        expected: Expected,
        nodes: impl IntoIterator<Item = NodeFacts>,
        now: i64,
        selector: Option<String>,
    ) -> Report {
        let mut rows: Vec<Row> = nodes
            .into_iter()
            .map(|node| Row {
                state: judge(&node, &expected),
                node,
            })
            .collect();
        rows.sort_by(|a, b| a.node.name.cmp(&b.node.name));
        Report {
            expected,
            rows,
            now,
            selector,
        }
    }

    pub fn summary(&self) -> Summary {
        Summary::of(self.rows.iter().map(|r| (r.state, &r.node)))
    }

    /// 0 when every selected node has converged, 1 otherwise (also when no
    /// node is selected).
    pub fn exit_code(&self) -> u8 {
        if self.summary().all_converged() {
            EXIT_CONVERGED
        } else {
            EXIT_NOT_CONVERGED
        }
    }

    /// The lines about the expected state, printed above the table.
    pub fn header(&self) -> String {
        let e = &self.expected;
        let mut s = String::new();
        if e.secret_found {
            let _ = writeln!(
                s,
                "expected: Secret {} (input {}), {} CA(s), trust set {}",
                e.secret,
                schema::short_digest(&e.input_digest),
                e.ca_count,
                schema::short_digest(&e.trust_set_digest)
            );
        } else {
            let _ = writeln!(
                s,
                "expected: Secret {} does not exist (nodes should have acted on no Secret CAs), {} CA(s), trust set {}",
                e.secret,
                e.ca_count,
                schema::short_digest(&e.trust_set_digest)
            );
        }
        for f in &e.findings {
            let _ = writeln!(s, "  {f}");
        }
        s
    }

    /// The table, with a header line, the rows and the summary line.
    pub fn table(&self) -> String {
        let head = [
            "NODE",
            "VERSION",
            "TRUST SET",
            "IN SYNC",
            "CAS",
            "REASONS",
            "KUBELET CLIENT EXPIRES",
            "CHANGED",
        ];
        let rows: Vec<[String; 8]> = self.rows.iter().map(|r| self.cells(r)).collect();
        let mut widths = head.map(str::len);
        for r in &rows {
            for (w, c) in widths.iter_mut().zip(r) {
                *w = (*w).max(c.chars().count());
            }
        }
        let mut out = self.header();
        let mut line = |cells: &[&str]| {
            let mut l = String::new();
            for (i, (c, w)) in cells.iter().zip(widths).enumerate() {
                if i + 1 == cells.len() {
                    l.push_str(c);
                } else {
                    let pad = w.saturating_sub(c.chars().count()) + 2;
                    l.push_str(c);
                    l.extend(std::iter::repeat_n(' ', pad));
                }
            }
            out.push_str(l.trim_end());
            out.push('\n');
        };
        line(&head);
        for r in &rows {
            let cells: Vec<&str> = r.iter().map(String::as_str).collect();
            line(&cells);
        }
        out.push_str(&self.summary().line());
        out.push('\n');
        out
    }

    fn cells(&self, r: &Row) -> [String; 8] {
        let name = r.node.name.clone();
        let Some(a) = &r.node.agent else {
            return [
                name,
                "-".into(),
                "-".into(),
                "no".into(),
                "-".into(),
                "no agent".into(),
                "-".into(),
                "-".into(),
            ];
        };
        let dash = || "-".to_string();
        let trust = a
            .trust_set_digest
            .as_deref()
            .map(|d| schema::short_digest(d).to_string())
            .or_else(|| a.trust_set_label.clone())
            .unwrap_or_else(dash);
        let mut reasons: Vec<String> = Vec::new();
        if let Some(c) = &a.trust {
            reasons.push(reason_or_status(c));
        }
        if let Some(c) = &a.kubelet {
            reasons.push(reason_or_status(c));
        }
        if r.state == State::Behind {
            reasons.push("Behind".into());
        }
        if !a.problems.is_empty() {
            reasons.push("BadAnnotations".into());
        }
        if reasons.is_empty() {
            reasons.push("-".into());
        }
        let expires = a
            .kubelet_client_not_after
            .map(|t| {
                let date = rfc3339(t).get(..10).unwrap_or_default().to_string();
                if t <= self.now {
                    format!("{date} (expired)")
                } else {
                    format!("{date} ({})", age(t - self.now))
                }
            })
            .unwrap_or_else(dash);
        let changed = a
            .changed_at
            .map(|t| format!("{} ago", age(self.now.saturating_sub(t).max(0))))
            .unwrap_or_else(dash);
        [
            name,
            a.version.clone().unwrap_or_else(dash),
            trust,
            if r.in_sync() { "yes" } else { "no" }.into(),
            a.ca_count.map(|n| n.to_string()).unwrap_or_else(dash),
            reasons.join(","),
            expires,
            changed,
        ]
    }
}

fn reason_or_status(c: &Condition) -> String {
    if c.reason.is_empty() {
        format!("status={}", c.status)
    } else {
        c.reason.clone()
    }
}

/// kubectl's age style: `45s`, `12m`, `3h`, `5d`.
pub fn age(seconds: i64) -> String {
    let s = seconds.max(0);
    match s {
        0..=119 => format!("{s}s"),
        120..=7199 => format!("{}m", s / 60),
        7200..=172_799 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86400),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]
mod tests {
    use super::*;
    use crate::fleet::observed::AgentFacts;

    const IN: &str = "1111111111111111111111111111111111111111111111111111111111111111";
    const OLD: &str = "2222222222222222222222222222222222222222222222222222222222222222";
    const TRUST: &str = "3333333333333333333333333333333333333333333333333333333333333333";
    const OTHER: &str = "4444444444444444444444444444444444444444444444444444444444444444";

    fn expected() -> Expected {
        Expected {
            secret: "kube-system/custom-ca-trust-secret".into(),
            secret_found: true,
            input_digest: IN.into(),
            trust_set_digest: TRUST.into(),
            ca_count: 2,
            findings: vec![],
        }
    }

    fn cond(status: &str, reason: &str) -> Option<Condition> {
        Some(Condition {
            status: status.into(),
            reason: reason.into(),
            message: String::new(),
        })
    }

    fn node(name: &str, input: &str, trust: &str, c: Option<Condition>) -> NodeFacts {
        NodeFacts {
            name: name.into(),
            agent: Some(AgentFacts {
                version: Some("0.1.0".into()),
                trust_set_digest: Some(trust.into()),
                ca_count: Some(2),
                input_digest: Some(input.into()),
                kubelet_client_not_after: Some(1_000_000 + 10 * 86400),
                changed_at: Some(1_000_000 - 300),
                trust: c,
                kubelet: cond("True", "Valid"),
                ..Default::default()
            }),
        }
    }

    #[test]
    fn each_state_is_judged_from_digests_and_the_condition() {
        let e = expected();
        let j = |n: NodeFacts| judge(&n, &e);
        assert_eq!(
            j(node("a", IN, TRUST, cond("True", "Converged"))),
            State::Converged
        );
        assert_eq!(
            j(node("a", OLD, OTHER, cond("True", "Converged"))),
            State::Behind
        );
        assert_eq!(
            j(node("a", OLD, OTHER, cond("False", "InputInvalid"))),
            State::Behind,
            "a refusal of an older Secret is being behind"
        );
        assert_eq!(
            j(node("a", IN, OTHER, cond("False", "InputInvalid"))),
            State::InputInvalid
        );
        assert_eq!(
            j(node("a", IN, OTHER, cond("False", "RefreshFailed"))),
            State::RefreshFailed
        );
        assert_eq!(
            j(node("a", IN, OTHER, cond("False", "RestartFailed"))),
            State::RestartFailed
        );
        assert_eq!(
            j(node("a", IN, OTHER, cond("False", "Whatever"))),
            State::OtherFalse
        );
        assert_eq!(
            j(node("a", IN, OTHER, cond("True", "Converged"))),
            State::TrustDiffers
        );
        assert_eq!(j(node("a", IN, TRUST, None)), State::Incomplete);
        assert_eq!(
            j(NodeFacts {
                name: "x".into(),
                agent: None
            }),
            State::NoAgent
        );
    }

    fn mixed() -> Report {
        let nodes = vec![
            node("n3", IN, TRUST, cond("True", "Converged")),
            node("n1", IN, TRUST, cond("True", "Converged")),
            node("n2", OLD, OTHER, cond("True", "Converged")),
            node("n4", IN, OTHER, cond("False", "InputInvalid")),
            NodeFacts {
                name: "n5".into(),
                agent: None,
            },
        ];
        Report::new(expected(), nodes, 1_000_000, None)
    }

    #[test]
    fn the_summary_groups_the_rest_by_reason_and_sets_the_exit_code() {
        let r = mixed();
        let s = r.summary();
        assert_eq!((s.converged, s.total), (2, 5));
        assert_eq!(s.not_converged[&State::Behind], 1);
        assert_eq!(s.not_converged[&State::InputInvalid], 1);
        assert_eq!(s.not_converged[&State::NoAgent], 1);
        assert!(s
            .line()
            .starts_with("2 of 5 converged; not converged: 1 behind"));
        assert!(s.line().contains("1 no agent"), "{}", s.line());
        assert_eq!(r.exit_code(), EXIT_NOT_CONVERGED);
        let all = Report::new(
            expected(),
            vec![node("a", IN, TRUST, cond("True", "Converged"))],
            0,
            None,
        );
        assert_eq!(all.exit_code(), EXIT_CONVERGED);
        assert_eq!(all.summary().line(), "1 of 1 converged");
        let none = Report::new(expected(), vec![], 0, Some("pool=x".into()));
        assert_eq!(none.exit_code(), EXIT_NOT_CONVERGED);
        assert_eq!(none.summary().line(), "0 of 0 converged (no Node matches)");
    }

    #[test]
    fn the_table_has_one_row_per_node_sorted_and_no_agent_rows() {
        let t = mixed().table();
        let lines: Vec<&str> = t.lines().collect();
        assert!(lines[1].starts_with("NODE"), "{t}");
        assert!(lines[2].starts_with("n1 "), "{t}");
        assert!(lines[2].contains(" yes "), "{t}");
        assert!(lines[2].contains("333333333333"), "{t}");
        assert!(lines[2].contains("Converged,Valid"), "{t}");
        assert!(lines[2].contains("(10d)"), "{t}");
        assert!(lines[2].ends_with("5m ago"), "{t}");
        assert!(lines[3].contains("Behind"), "{t}");
        assert!(
            lines[6].starts_with("n5 ") && lines[6].contains("no agent"),
            "{t}"
        );
        assert!(lines[7].starts_with("2 of 5 converged"), "{t}");
    }

    #[test]
    fn the_json_has_schema_version_1_and_every_field() {
        let v = mixed().json().unwrap();
        crate::contract::assert_contract_with_maps(
            &v,
            &[
                "expected",
                "expected.caCount",
                "expected.findings",
                "expected.inputDigest",
                "expected.secret",
                "expected.secretFound",
                "expected.trustSetDigest",
                "generatedAt",
                "nodes",
                "nodes[].agent",
                "nodes[].caCount",
                "nodes[].changedAt",
                "nodes[].inSync",
                "nodes[].inputDigest",
                "nodes[].kubeletClientNotAfter",
                "nodes[].kubeletCondition",
                "nodes[].kubeletCondition.message",
                "nodes[].kubeletCondition.reason",
                "nodes[].kubeletCondition.status",
                "nodes[].name",
                "nodes[].problems",
                "nodes[].pullTrust",
                "nodes[].state",
                "nodes[].trustCondition",
                "nodes[].trustCondition.message",
                "nodes[].trustCondition.reason",
                "nodes[].trustCondition.status",
                "nodes[].trustSetDigest",
                "nodes[].version",
                "schemaVersion",
                "selector",
                "summary",
                "summary.allConverged",
                "summary.converged",
                "summary.kubeletNotValid",
                "summary.line",
                "summary.notConverged",
                "summary.pullTrustRestart",
                "summary.total",
            ],
            &["summary.notConverged", "summary.kubeletNotValid"],
            "fleet",
        );
        assert_eq!(v["schemaVersion"], 1);
        assert_eq!(v["expected"]["inputDigest"], IN);
        assert_eq!(v["nodes"].as_array().unwrap().len(), 5);
        let n1 = &v["nodes"][0];
        for field in [
            "name",
            "agent",
            "state",
            "inSync",
            "version",
            "trustSetDigest",
            "inputDigest",
            "caCount",
            "pullTrust",
            "trustCondition",
            "kubeletCondition",
            "kubeletClientNotAfter",
            "changedAt",
            "problems",
        ] {
            assert!(n1.get(field).is_some(), "missing {field}: {n1}");
        }
        assert_eq!(n1["state"], "converged");
        assert_eq!(v["nodes"][4]["agent"], false);
        assert_eq!(v["summary"]["notConverged"]["behind"], 1);
        assert_eq!(v["summary"]["converged"], 2);
    }

    #[test]
    fn ages_read_like_kubectls() {
        assert_eq!(age(45), "45s");
        assert_eq!(age(600), "10m");
        assert_eq!(age(3 * 3600), "3h");
        assert_eq!(age(5 * 86400), "5d");
        assert_eq!(age(-5), "0s");
    }
}
