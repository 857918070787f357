//! The agent's layout, checked on its source (`agent/src`, test code left
//! out as `support/layout_rules.rs` reads it):
//!
//! - the rules of every crate (`layout_rules`): no import cycle between
//!   modules, and no source file over [`MAX_LINES`] lines;
//! - the dependency rules of the folders: every `crate::` and `super::`
//!   path of the non-test code of each folder must be one its folder may
//!   use:
//!   - `x509`, `node`, `k8s`, `config`, `errors`, `retry`, `text` and
//!     `time` are leaves: they use nothing of the agent but each other
//!     (`node` and `k8s` may use the other leaves; `x509` only `time`;
//!     `config`, `errors`, `retry`, `text` and `time` use nothing).
//!   - `trust` and `kubelet` use only the leaves (and themselves).
//!   - `ops` uses the leaves, and of the jobs only their outcome types.
//!   - `fleet` uses the leaves and the jobs (their pure planning), never
//!     `daemon`, `ops` or `status`.
//! - nothing but the binary (`main.rs`, `cli.rs`, `app/`) and `status`
//!   itself uses `status`, the library's root included: a test of its own,
//!   though the folder rules imply it (`daemon`'s is "anything but
//!   `status`", every other folder names all it may use).

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

#[path = "support/layout_rules.rs"]
mod layout_rules;

use std::collections::BTreeSet;
use std::path::{Component, PathBuf};

use layout_rules::{assert_none, paths, read_src, sources_of, src, Source};

/// The most lines a source file may have.
const MAX_LINES: usize = 900;

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

/// The first segment of `path` (a module path or a file under `src`).
fn top(path: &str) -> &str {
    path.split("::").next().unwrap_or_default()
}

/// Whether `s` is a file of the binary (`main.rs`, `cli.rs`, `app/`).
fn is_binary(s: &Source) -> bool {
    matches!(
        s.file.components().next(),
        Some(Component::Normal(first)) if ["main.rs", "cli.rs", "app"].iter().any(|b| first == *b)
    )
}

/// The paths of `sources` their folder may not use (`file: crate::path`),
/// and how many paths were checked.
fn folder_violations(sources: &[Source]) -> (BTreeSet<String>, usize) {
    let mut violations = BTreeSet::new();
    let mut checked = 0;
    for s in sources
        .iter()
        .filter(|s| !is_binary(s) && !s.module.is_empty())
    {
        for p in paths(&s.module, &s.code) {
            checked += 1;
            if !allowed(top(&s.module), &p) {
                violations.insert(format!("{}: crate::{p}", s.file.display()));
            }
        }
    }
    (violations, checked)
}

/// The uses of `status` outside the binary and `status` itself.
fn status_imports(sources: &[Source]) -> Vec<String> {
    sources
        .iter()
        .filter(|s| !is_binary(s) && top(&s.module) != "status")
        .flat_map(|s| {
            paths(&s.module, &s.code)
                .into_iter()
                .filter(|p| top(p) == "status")
                .map(|p| format!("{}: crate::{p}", s.file.display()))
        })
        .collect()
}

#[test]
fn every_folder_uses_only_what_the_layout_allows() {
    let (violations, checked) = folder_violations(&read_src(&src()));
    assert!(checked > 100, "found the agent's crate paths ({checked})");
    assert_none("uses the layout does not allow", violations);
}

#[test]
fn nothing_but_the_binary_imports_status() {
    let sources = read_src(&src());
    assert!(
        sources
            .iter()
            .any(|s| is_binary(s) && top(&s.module) == "app"),
        "read the binary's files"
    );
    assert_none(
        "`status` is the binary's alone (it reads everything; nothing reads it)",
        status_imports(&sources),
    );
}

#[test]
fn the_rules_catch_a_use_they_do_not_allow() {
    let files = [
        (
            "lib.rs",
            "pub mod daemon;\npub mod status;\npub mod trust;\n",
        ),
        ("main.rs", "mod app;\n"),
        ("app/mod.rs", "use crate::status::Report;\n"),
        ("status/mod.rs", "use crate::daemon::Loops;\n"),
        ("daemon/mod.rs", "use crate::{status::Report, trust};\n"),
        (
            "trust/mod.rs",
            "use crate::x509::Cert;\nuse crate::daemon::Loops;\n",
        ),
    ];
    let sources = sources_of(files.map(|(f, t)| (PathBuf::from(f), t.to_string())).into());
    assert_eq!(
        status_imports(&sources),
        ["daemon/mod.rs: crate::status::Report"]
    );
    let (violations, checked) = folder_violations(&sources);
    assert_eq!(checked, 5);
    assert_eq!(
        violations.into_iter().collect::<Vec<_>>(),
        [
            "daemon/mod.rs: crate::status::Report",
            "trust/mod.rs: crate::daemon::Loops"
        ]
    );
}
