//! The layout's dependency rules, checked on the source: every
//! `crate::...` path of the non-test code of each folder of `agent/src`
//! must be one its folder may use.
//!
//! - `x509`, `node`, `k8s`, `config`, `errors`, `retry`, `text` and `time`
//!   are leaves: they use nothing of the agent but each other (`node` and
//!   `k8s` may use the other leaves; `x509` only `time`; `config`,
//!   `errors`, `retry`, `text` and `time` use nothing).
//! - `trust` and `kubelet` use only the leaves (and themselves).
//! - `ops` uses the leaves, and of the jobs only their outcome types.
//! - `fleet` uses the leaves and the jobs (their pure planning), never
//!   `daemon`, `ops` or `status`.
//! - Nothing but the binary (`main.rs`, `cli.rs`, `app/`) uses `status`.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

/// The outcome types of the jobs, the only part of them `ops` sees.
const OUTCOME_TYPES: &[&str] = &[
    "trust::reconcile::Outcome",
    "trust::reconcile::ReconcileError",
    "trust::pull_trust::PullTrust",
    "trust::waiting_pods::WaitingPods",
    "kubelet::manager::PassOutcome",
    "kubelet::manager::KubeletError",
    "kubelet::renewal::RenewReason",
    "kubelet::store::CertKind",
    "kubelet::revocation::SourceState",
];

/// What a folder (the first path segment under `crate::`) may use.
fn allowed(folder: &str, path: &str) -> bool {
    let top = path.split("::").next().unwrap_or_default();
    let leaves = [
        "x509", "node", "k8s", "config", "errors", "retry", "text", "time",
    ];
    match folder {
        "config" | "errors" | "retry" | "text" | "time" => top == folder,
        "x509" => top == folder || top == "time",
        "node" | "k8s" => leaves.contains(&top),
        "trust" | "kubelet" => top == folder || leaves.contains(&top),
        "ops" => {
            top == "ops"
                || leaves.contains(&top)
                || OUTCOME_TYPES
                    .iter()
                    .any(|t| path == *t || path.starts_with(&format!("{t}::")))
        }
        "fleet" => top == "fleet" || leaves.contains(&top) || top == "trust" || top == "kubelet",
        "daemon" => top != "status",
        "status" => true,
        other => panic!("a folder the layout rules do not know: {other}; add its rule here"),
    }
}

/// Every `crate::` path in `code`, with `{a, b::{c, d}}` groups expanded.
fn crate_paths(code: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = code;
    while let Some(at) = rest.find("crate::") {
        rest = &rest[at + "crate::".len()..];
        expand(String::new(), rest, &mut out);
    }
    out
}

/// Expands the path that starts at `text` after `prefix`.
fn expand(prefix: String, text: &str, out: &mut Vec<String>) {
    let ident_end = text
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .unwrap_or(text.len());
    let (path, rest) = text.split_at(ident_end);
    let full = format!("{prefix}{path}");
    if full.ends_with("::") && rest.starts_with('{') {
        // A group: split its top-level items.
        let mut depth = 0;
        let mut start = 1;
        for (i, c) in rest.char_indices() {
            match c {
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        item(&full, &rest[start..i], out);
                        return;
                    }
                }
                ',' if depth == 1 => {
                    item(&full, &rest[start..i], out);
                    start = i + 1;
                }
                _ => {}
            }
        }
    } else if !full.is_empty() {
        out.push(full.trim_end_matches(':').to_string());
    }
}

fn item(prefix: &str, text: &str, out: &mut Vec<String>) {
    let text = text.trim();
    if text.is_empty() {
        return;
    }
    if text == "self" {
        out.push(prefix.trim_end_matches(':').to_string());
        return;
    }
    expand(prefix.to_string(), text, out);
}

/// The non-test code of every `.rs` file under `dir`.
fn sources(dir: &Path) -> Vec<(PathBuf, String)> {
    let mut out = Vec::new();
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(d) = dirs.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                dirs.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") {
                let text = fs::read_to_string(&p).unwrap();
                let code = match text.find("\n#[cfg(test)]\n") {
                    Some(at) => text[..at].to_string(),
                    None => text,
                };
                out.push((p, code));
            }
        }
    }
    out.sort();
    out
}

#[test]
fn every_folder_uses_only_what_the_layout_allows() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let binary = ["main.rs", "cli.rs", "app"];
    let mut violations = BTreeSet::new();
    let mut checked = 0;
    for (path, code) in sources(&src) {
        let rel = path.strip_prefix(&src).unwrap();
        let first = rel
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy();
        let folder = first.trim_end_matches(".rs").to_string();
        if binary.contains(&first.as_ref()) || folder == "lib" {
            continue;
        }
        for p in crate_paths(&code) {
            checked += 1;
            if !allowed(&folder, &p) {
                violations.insert(format!("{}: crate::{p}", rel.display()));
            }
        }
    }
    assert!(checked > 100, "found the agent's crate paths ({checked})");
    assert!(
        violations.is_empty(),
        "uses the layout does not allow:\n  {}",
        violations.into_iter().collect::<Vec<_>>().join("\n  ")
    );
}

#[test]
fn the_path_expander_reads_groups() {
    let paths = crate_paths("use crate::a::{b, c::{d, e}, self};\nlet x = crate::f::g(1);");
    assert_eq!(paths, ["a::b", "a::c::d", "a::c::e", "a", "f::g"]);
}
