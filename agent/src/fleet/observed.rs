//! What one Node says about its agent, read back from the names in
//! [`schema`]: the annotations and the two conditions. Pure: a Node's
//! metadata and conditions in, [`NodeFacts`] out.
//!
//! Everything here is remote input (any user with `patch nodes` can write
//! these annotations), so parsing never panics and never trusts a value's
//! shape: a malformed annotation becomes a [`Problem`] on the row, not an
//! error of the whole command.

use std::collections::BTreeMap;

use crate::fleet::schema;
use crate::time::parse_rfc3339;

/// Longest annotation value kept for display; longer ones are a problem.
const MAX_SHOWN_VALUE: usize = 256;

/// One of the agent's Node conditions as published.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Condition {
    /// `True`, `False` or `Unknown` (anything else is kept as written).
    pub status: String,
    pub reason: String,
    pub message: String,
}

impl Condition {
    pub fn is_true(&self) -> bool {
        self.status == "True"
    }
}

/// A condition as read from `status.conditions[]`, before it is matched by
/// type (the caller's Node type, whatever its crate).
#[derive(Debug, Clone, Default)]
pub struct RawCondition {
    pub type_: String,
    pub status: String,
    pub reason: Option<String>,
    pub message: Option<String>,
}

/// An annotation the agent owns whose value does not parse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub annotation: &'static str,
    pub value: String,
    pub why: &'static str,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "annotation {} = {:?} {}",
            self.annotation, self.value, self.why
        )
    }
}

/// What the agent on one Node has published.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AgentFacts {
    pub version: Option<String>,
    /// Full 64-hex digest of the installed trust set.
    pub trust_set_digest: Option<String>,
    /// The label's short digest (when the annotation is missing).
    pub trust_set_label: Option<String>,
    pub ca_count: Option<u32>,
    /// How pulls get the custom CAs ([`schema::PULL_TRUST_LABEL`]): `live`
    /// or `restart`.
    pub pull_trust: Option<String>,
    pub input_digest: Option<String>,
    /// Unix seconds.
    pub kubelet_client_not_after: Option<i64>,
    /// Unix seconds.
    pub changed_at: Option<i64>,
    pub trust: Option<Condition>,
    pub kubelet: Option<Condition>,
    pub problems: Vec<Problem>,
}

/// One Node as the fleet command sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeFacts {
    pub name: String,
    /// `None`: nothing of the agent's is on the Node.
    pub agent: Option<AgentFacts>,
}

fn is_digest(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn shown(value: &str) -> String {
    let mut end = value.len().min(MAX_SHOWN_VALUE);
    while !value.is_char_boundary(end) {
        end -= 1;
    }
    value[..end].to_string()
}

impl NodeFacts {
    /// [`NodeFacts::read`] of a Node as the API serves it.
    pub fn of_node(node: &k8s_openapi::api::core::v1::Node) -> NodeFacts {
        let empty = BTreeMap::new();
        let meta = &node.metadata;
        let conditions: Vec<RawCondition> = node
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .map(|cs| {
                cs.iter()
                    .map(|c| RawCondition {
                        type_: c.type_.clone(),
                        status: c.status.clone(),
                        reason: c.reason.clone(),
                        message: c.message.clone(),
                    })
                    .collect()
            })
            .unwrap_or_default();
        NodeFacts::read(
            meta.name.as_deref().unwrap_or_default(),
            meta.labels.as_ref().unwrap_or(&empty),
            meta.annotations.as_ref().unwrap_or(&empty),
            &conditions,
        )
    }

    /// Reads a Node's agent state from its labels, annotations and
    /// conditions. Never fails: what does not parse is a [`Problem`].
    pub fn read(
        name: &str,
        labels: &BTreeMap<String, String>,
        annotations: &BTreeMap<String, String>,
        conditions: &[RawCondition],
    ) -> NodeFacts {
        let owned = |key: &str| annotations.get(key).map(String::as_str);
        let condition = |type_: &str| {
            conditions
                .iter()
                .find(|c| c.type_ == type_)
                .map(|c| Condition {
                    status: shown(&c.status),
                    reason: shown(c.reason.as_deref().unwrap_or("")),
                    message: shown(c.message.as_deref().unwrap_or("")),
                })
        };
        let trust = condition(schema::TRUST_CONDITION);
        let kubelet = condition(schema::KUBELET_CONDITION);
        let label = labels.get(schema::TRUST_SET_LABEL);
        let any_annotation = [
            schema::VERSION_ANNOTATION,
            schema::TRUST_SET_ANNOTATION,
            schema::CA_COUNT_ANNOTATION,
            schema::INPUT_DIGEST_ANNOTATION,
            schema::KUBELET_CLIENT_NOT_AFTER_ANNOTATION,
            schema::CHANGED_AT_ANNOTATION,
        ]
        .iter()
        .any(|k| annotations.contains_key(*k));
        if !any_annotation && trust.is_none() && kubelet.is_none() && label.is_none() {
            return NodeFacts {
                name: name.to_string(),
                agent: None,
            };
        }
        let mut problems = Vec::new();
        let mut problem = |annotation: &'static str, value: &str, why: &'static str| {
            problems.push(Problem {
                annotation,
                value: shown(value),
                why,
            });
        };
        let mut digest = |key: &'static str| match owned(key) {
            Some(v) if is_digest(v) => Some(v.to_string()),
            Some(v) => {
                problem(key, v, "is not a 64-digit lowercase hex SHA-256 digest");
                None
            }
            None => None,
        };
        let trust_set_digest = digest(schema::TRUST_SET_ANNOTATION);
        let input_digest = digest(schema::INPUT_DIGEST_ANNOTATION);
        let mut time = |key: &'static str| match owned(key) {
            Some(v) => match parse_rfc3339(v) {
                Some(t) => Some(t),
                None => {
                    problem(key, v, "is not an RFC 3339 time");
                    None
                }
            },
            None => None,
        };
        let kubelet_client_not_after = time(schema::KUBELET_CLIENT_NOT_AFTER_ANNOTATION);
        let changed_at = time(schema::CHANGED_AT_ANNOTATION);
        let ca_count = match owned(schema::CA_COUNT_ANNOTATION) {
            Some(v) => match v.parse::<u32>() {
                Ok(n) if !v.starts_with('+') => Some(n),
                _ => {
                    problem(
                        schema::CA_COUNT_ANNOTATION,
                        v,
                        "is not a decimal count of CAs",
                    );
                    None
                }
            },
            None => None,
        };
        let pull_trust = match labels.get(schema::PULL_TRUST_LABEL) {
            Some(v) if v == "live" || v == "restart" => Some(v.clone()),
            Some(v) => {
                problem(schema::PULL_TRUST_LABEL, v, "is neither live nor restart");
                None
            }
            None => None,
        };
        let version = owned(schema::VERSION_ANNOTATION).map(shown);
        NodeFacts {
            name: name.to_string(),
            agent: Some(AgentFacts {
                version,
                trust_set_digest,
                trust_set_label: label.map(|l| shown(l)),
                ca_count,
                pull_trust,
                input_digest,
                kubelet_client_not_after,
                changed_at,
                trust,
                kubelet,
                problems,
            }),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]
mod tests {
    use super::*;

    const D: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn a_node_without_the_agents_names_has_no_agent() {
        let n = NodeFacts::read(
            "n1",
            &map(&[("kubernetes.io/hostname", "n1")]),
            &map(&[("other.io/x", "1")]),
            &[RawCondition {
                type_: "Ready".into(),
                status: "True".into(),
                ..Default::default()
            }],
        );
        assert_eq!(n.agent, None);
    }

    #[test]
    fn published_annotations_and_conditions_are_read() {
        let n = NodeFacts::read(
            "n1",
            &map(&[(schema::TRUST_SET_LABEL, &D[..12])]),
            &map(&[
                (schema::VERSION_ANNOTATION, "0.1.0"),
                (schema::TRUST_SET_ANNOTATION, D),
                (schema::INPUT_DIGEST_ANNOTATION, D),
                (schema::CA_COUNT_ANNOTATION, "3"),
                (
                    schema::KUBELET_CLIENT_NOT_AFTER_ANNOTATION,
                    "2027-01-01T00:00:00Z",
                ),
                (schema::CHANGED_AT_ANNOTATION, "2026-12-01T00:00:00Z"),
            ]),
            &[RawCondition {
                type_: schema::TRUST_CONDITION.into(),
                status: "True".into(),
                reason: Some("Converged".into()),
                message: None,
            }],
        );
        let a = n.agent.unwrap();
        assert_eq!(a.version.as_deref(), Some("0.1.0"));
        assert_eq!(a.trust_set_digest.as_deref(), Some(D));
        assert_eq!(a.ca_count, Some(3));
        assert_eq!(a.kubelet_client_not_after, Some(1_798_761_600));
        assert!(a.trust.unwrap().is_true());
        assert_eq!(a.kubelet, None);
        assert!(a.problems.is_empty());
    }

    #[test]
    fn malformed_annotations_are_problems_not_errors() {
        let n = NodeFacts::read(
            "n1",
            &BTreeMap::new(),
            &map(&[
                (schema::TRUST_SET_ANNOTATION, "ABC"),
                (schema::CA_COUNT_ANNOTATION, "-1"),
                (schema::CHANGED_AT_ANNOTATION, "yesterday"),
            ]),
            &[],
        );
        let a = n.agent.unwrap();
        assert_eq!(a.trust_set_digest, None);
        assert_eq!(a.ca_count, None);
        assert_eq!(a.problems.len(), 3, "{:?}", a.problems);
        assert!(a.problems[0].to_string().contains("ABC"));
    }

    #[test]
    fn a_huge_value_is_cut_on_a_character_boundary() {
        let long = "é".repeat(1000);
        let n = NodeFacts::read(
            "n1",
            &BTreeMap::new(),
            &map(&[(schema::VERSION_ANNOTATION, &long)]),
            &[],
        );
        assert!(n.agent.unwrap().version.unwrap().len() <= MAX_SHOWN_VALUE);
    }
}
