//! node-cert-agent: keeps a Kubernetes node's custom CA trust and kubelet
//! certificates correct.
//!
//! The folders are the architecture; each `mod.rs` says what it owns and
//! what it must not touch. Dependencies point one way:
//!
//! ```text
//!   app (bin) ──> daemon ──> trust ──┐
//!                   │   └──> kubelet ─┼──> x509, node, k8s, config, errors, retry, text, time
//!                   └──> ops ─────────┘
//!   status ──> everything above it; nothing imports status
//! ```
//!
//! - [`x509`], [`node`], [`k8s`], [`config`], [`errors`], [`retry`],
//!   [`text`], [`time`]: the leaves. Certificate facts, the host boundary
//!   (host root, atomic files, systemd, locks), the Kubernetes API boundary
//!   (kubeconfigs, clients), settings, how an error reads, when to try
//!   again, the one escaping rule of every operator-facing text sink, and
//!   the clock with its formats.
//! - [`trust`]: the custom CA trust job. [`kubelet`]: the kubelet
//!   certificate job. Both depend only on the leaves.
//! - [`ops`]: logs, metrics, Events, the daemon-status file and the
//!   certificate inventory; it sees the jobs' outcome types only.
//! - [`daemon`]: runs the jobs' loops and the operator tasks.
//! - [`fleet`]: what each agent publishes on its Node, and the `fleet`
//!   command's reading of it.
//! - [`status`]: the `status` command's report.
//!
//! `agent/tests/layout.rs` checks these rules on the source.

pub mod config;
pub mod daemon;
pub mod errors;
pub mod fleet;
pub mod k8s;
pub mod kubelet;
pub mod node;
pub mod ops;
pub mod retry;
pub mod status;
pub mod text;
pub mod time;
pub mod trust;
pub mod x509;

/// The contract tests of the documented JSON outputs (`status`, `check`,
/// `fleet`): every field path of a report, pinned, and every field name
/// found in docs/json.md.
#[cfg(test)]
pub(crate) mod contract {
    #![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

    use std::collections::BTreeSet;

    /// Every field path of `v`: `a.b` for objects, `a[]` for array items.
    pub fn paths(v: &serde_json::Value) -> BTreeSet<String> {
        fn walk(prefix: &str, v: &serde_json::Value, out: &mut BTreeSet<String>) {
            match v {
                serde_json::Value::Object(m) => {
                    for (k, v) in m {
                        let p = if prefix.is_empty() {
                            k.clone()
                        } else {
                            format!("{prefix}.{k}")
                        };
                        out.insert(p.clone());
                        walk(&p, v, out);
                    }
                }
                serde_json::Value::Array(items) => {
                    for item in items {
                        walk(&format!("{prefix}[]"), item, out);
                    }
                }
                _ => {}
            }
        }
        let mut out = BTreeSet::new();
        walk("", v, &mut out);
        out
    }

    /// The section `## {section}` of docs/json.md.
    fn documented(section: &str) -> String {
        let docs = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/json.md"))
            .unwrap();
        let start = docs
            .find(&format!("\n## {section}\n"))
            .unwrap_or_else(|| panic!("docs/json.md has no section {section}"));
        let rest = &docs[start + 1..];
        let end = rest[3..].find("\n## ").map_or(rest.len(), |e| e + 3);
        rest[..end].to_string()
    }

    /// `v`'s field paths are exactly `expected`, and docs/json.md's section
    /// names each field (`name` in backticks).
    /// Fields under the paths of `maps` are data (`{state: count}`), not
    /// schema, and are left out.
    pub fn assert_contract(v: &serde_json::Value, expected: &[&str], section: &str) {
        assert_contract_with_maps(v, expected, &[], section);
    }

    /// [`assert_contract`], with the paths whose keys are data.
    pub fn assert_contract_with_maps(
        v: &serde_json::Value,
        expected: &[&str],
        maps: &[&str],
        section: &str,
    ) {
        let got: BTreeSet<String> = paths(v)
            .into_iter()
            .filter(|p| !maps.iter().any(|m| p.starts_with(&format!("{m}."))))
            .collect();
        let want: BTreeSet<String> = expected.iter().map(|s| s.to_string()).collect();
        let added: Vec<_> = got.difference(&want).collect();
        let removed: Vec<_> = want.difference(&got).collect();
        assert!(
            added.is_empty() && removed.is_empty(),
            "the {section} JSON changed: added {added:?}, removed {removed:?}; change it on purpose, with docs/json.md"
        );
        let docs = documented(section);
        let undocumented: Vec<_> = want
            .iter()
            .filter(|p| {
                let leaf = p.rsplit('.').next().unwrap().trim_end_matches("[]");
                ![
                    format!("`{leaf}`"),
                    format!(".{leaf}`"),
                    format!("`{leaf}[]"),
                    format!(".{leaf}[]"),
                    format!("`{leaf}."),
                ]
                .iter()
                .any(|named| docs.contains(named.as_str()))
            })
            .collect();
        assert!(
            undocumented.is_empty(),
            "docs/json.md \"{section}\" does not name {undocumented:?}"
        );
    }
}
