//! The crate's layout, checked on its source:
//!
//! - no import cycle between modules: every `crate::` and `super::` path of
//!   the non-test code (with `{a, b::{c}}` groups expanded) is an edge from
//!   its module to the longest module path it names; a module's use of its
//!   own ancestors is no edge (a parent's items are its children's), and the
//!   graph must have no strongly connected component of more than one
//!   module;
//! - no source file (test-only files aside) over [`MAX_LINES`] lines.
//!
//! Non-test code is a file up to a line `#[cfg(test)]` followed by
//! `mod tests`; a file declared as `#[cfg(test)] mod <name>;` is test code
//! altogether.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// The most lines a source file may have.
const MAX_LINES: usize = 900;

/// One source file: its module path (`""` for the crate root, `a::b`),
/// whole text and non-test code.
struct Source {
    file: PathBuf,
    module: String,
    text: String,
    code: String,
}

/// The module path of `rel` (a path under `src`).
fn module_of(rel: &Path) -> String {
    let mut parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    let last = parts.pop().unwrap();
    let stem = last.trim_end_matches(".rs").to_string();
    if parts.is_empty() && (stem == "lib" || stem == "main") {
        return String::new();
    }
    if stem != "mod" {
        parts.push(stem);
    }
    parts.join("::")
}

/// The code before the test module: the text up to a line `#[cfg(test)]`
/// followed by a line starting with `mod tests`.
fn non_test_code(text: &str) -> &str {
    let mut at = 0;
    let mut lines = text.split_inclusive('\n').peekable();
    while let Some(line) = lines.next() {
        if line.trim() == "#[cfg(test)]"
            && lines
                .peek()
                .is_some_and(|next| next.trim_start().starts_with("mod tests"))
        {
            return &text[..at];
        }
        at += line.len();
    }
    text
}

/// The modules a file declares as test-only: `#[cfg(test)]` then
/// `mod <name>;` (a module in a file of its own).
fn test_only_children(text: &str) -> Vec<String> {
    let lines: Vec<&str> = text.lines().map(str::trim).collect();
    lines
        .windows(2)
        .filter(|w| w[0] == "#[cfg(test)]")
        .filter_map(|w| {
            let rest = w[1].strip_prefix("mod ")?;
            let name = rest.strip_suffix(';')?;
            Some(name.trim().to_string())
        })
        .collect()
}

/// Every `.rs` file under `src`, test-only files left out.
fn sources(src: &Path) -> Vec<Source> {
    let mut files = Vec::new();
    let mut dirs = vec![src.to_path_buf()];
    while let Some(d) = dirs.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                dirs.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") {
                files.push(p);
            }
        }
    }
    files.sort();
    let all: Vec<Source> = files
        .into_iter()
        .map(|file| {
            let text = fs::read_to_string(&file).unwrap();
            Source {
                module: module_of(file.strip_prefix(src).unwrap()),
                code: non_test_code(&text).to_string(),
                text,
                file,
            }
        })
        .collect();
    let test_only: BTreeSet<String> = all
        .iter()
        .flat_map(|s| {
            test_only_children(&s.text)
                .into_iter()
                .map(|child| join(&s.module, &child))
                .collect::<Vec<_>>()
        })
        .collect();
    all.into_iter()
        .filter(|s| {
            !test_only
                .iter()
                .any(|t| s.module == *t || s.module.starts_with(&format!("{t}::")))
        })
        .collect()
}

fn join(a: &str, b: &str) -> String {
    match (a.is_empty(), b.is_empty()) {
        (true, _) => b.to_string(),
        (_, true) => a.to_string(),
        _ => format!("{a}::{b}"),
    }
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// Every `crate::` and `super::` path in the code of `module`, as a path
/// from the crate root, with `{a, b::{c, d}}` groups expanded.
fn paths(module: &str, code: &str) -> Vec<String> {
    let mut out = Vec::new();
    for (keyword, is_super) in [("crate::", false), ("super::", true)] {
        let mut from = 0;
        while let Some(found) = code[from..].find(keyword) {
            let at = from + found;
            from = at + keyword.len();
            let before = code[..at].chars().next_back();
            if before.is_some_and(|c| is_ident(c) || c == '$' || c == ':') {
                // Part of another path (`x::super::`, a longer name) or
                // the second `super::` of a chain.
                continue;
            }
            let mut rest = &code[from..];
            let base = if is_super {
                let mut segments: Vec<&str> =
                    module.split("::").filter(|s| !s.is_empty()).collect();
                segments.pop();
                while let Some(r) = rest.strip_prefix("super::") {
                    segments.pop();
                    rest = r;
                }
                segments.join("::")
            } else {
                String::new()
            };
            let prefix = if base.is_empty() {
                String::new()
            } else {
                format!("{base}::")
            };
            expand(prefix, rest, &mut out);
        }
    }
    out
}

/// Expands the path that starts at `text` after `prefix`.
fn expand(prefix: String, text: &str, out: &mut Vec<String>) {
    let end = text
        .find(|c: char| !(is_ident(c) || c == ':'))
        .unwrap_or(text.len());
    let (path, rest) = text.split_at(end);
    let full = format!("{prefix}{path}");
    if full.ends_with("::") && rest.starts_with('{') {
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

/// The longest module path of `modules` that `path` starts with (the crate
/// root, `""`, when no other).
fn module_named<'a>(modules: &'a BTreeSet<String>, path: &str) -> &'a str {
    let segments: Vec<&str> = path.split("::").collect();
    (1..=segments.len())
        .rev()
        .map(|n| segments[..n].join("::"))
        .find_map(|p| modules.get(&p))
        .map_or("", String::as_str)
}

/// Whether `ancestor` is `module` itself or one of its ancestors.
fn is_self_or_ancestor(ancestor: &str, module: &str) -> bool {
    ancestor.is_empty() || ancestor == module || module.starts_with(&format!("{ancestor}::"))
}

/// The module graph: module -> the modules its paths name.
fn graph(sources: &[Source]) -> BTreeMap<String, BTreeSet<String>> {
    let modules: BTreeSet<String> = sources.iter().map(|s| s.module.clone()).collect();
    let mut g: BTreeMap<String, BTreeSet<String>> = modules
        .iter()
        .map(|m| (m.clone(), BTreeSet::new()))
        .collect();
    for s in sources {
        for p in paths(&s.module, &s.code) {
            let target = module_named(&modules, &p);
            if !is_self_or_ancestor(target, &s.module) {
                g.get_mut(&s.module).unwrap().insert(target.to_string());
            }
        }
    }
    g
}

/// The strongly connected components of more than one node (Tarjan).
fn cycles(g: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    struct Tarjan<'a> {
        g: &'a BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on_stack: BTreeSet<&'a str>,
        out: Vec<Vec<String>>,
    }
    impl<'a> Tarjan<'a> {
        fn visit(&mut self, v: &'a str) {
            let i = self.index.len();
            self.index.insert(v, i);
            self.low.insert(v, i);
            self.stack.push(v);
            self.on_stack.insert(v);
            let g = self.g;
            for w in g.get(v).into_iter().flatten() {
                let w = w.as_str();
                if !self.index.contains_key(w) {
                    self.visit(w);
                    let lw = self.low[w];
                    let lv = self.low.get_mut(v).unwrap();
                    *lv = (*lv).min(lw);
                } else if self.on_stack.contains(w) {
                    let iw = self.index[w];
                    let lv = self.low.get_mut(v).unwrap();
                    *lv = (*lv).min(iw);
                }
            }
            if self.low[v] == self.index[v] {
                let mut component = vec![];
                loop {
                    let w = self.stack.pop().unwrap();
                    self.on_stack.remove(w);
                    component.push(w.to_string());
                    if w == v {
                        break;
                    }
                }
                if component.len() > 1 {
                    component.sort();
                    self.out.push(component);
                }
            }
        }
    }
    let mut t = Tarjan {
        g,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: vec![],
        on_stack: BTreeSet::new(),
        out: vec![],
    };
    for v in g.keys() {
        if !t.index.contains_key(v.as_str()) {
            t.visit(v);
        }
    }
    t.out
}

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

#[test]
fn no_module_import_cycles() {
    let sources = sources(&src());
    let g = graph(&sources);
    let edges: usize = g.values().map(BTreeSet::len).sum();
    assert!(
        sources.len() > 20 && edges > 40,
        "read the crate's modules ({}) and their uses ({edges})",
        sources.len()
    );
    let found = cycles(&g);
    let report: Vec<String> = found
        .iter()
        .map(|c| {
            let inner: Vec<String> = c
                .iter()
                .map(|m| {
                    let uses: Vec<&str> = g[m]
                        .iter()
                        .filter(|t| c.contains(t))
                        .map(String::as_str)
                        .collect();
                    format!("{m} -> {}", uses.join(", "))
                })
                .collect();
            format!("{{{}}}: {}", c.join(", "), inner.join("; "))
        })
        .collect();
    assert!(
        found.is_empty(),
        "modules that import each other (directly or through others):\n  {}",
        report.join("\n  ")
    );
}

#[test]
fn no_source_file_is_over_the_line_limit() {
    let src = src();
    let long: Vec<String> = sources(&src)
        .iter()
        .map(|s| (s, s.text.lines().count()))
        .filter(|(_, n)| *n > MAX_LINES)
        .map(|(s, n)| {
            format!(
                "{}: {n} lines",
                s.file.strip_prefix(&src).unwrap().display()
            )
        })
        .collect();
    assert!(
        long.is_empty(),
        "source files over {MAX_LINES} lines (move big test modules to a sibling `tests.rs`, or split the module):\n  {}",
        long.join("\n  ")
    );
}

#[test]
fn the_path_reader_expands_groups_and_resolves_super() {
    let code = "use crate::a::{b, c::{d, e}, self};\nlet x = crate::f::g(1);\nuse super::{h, i::j};\nuse super::super::k;\n$crate::no; pub(crate) fn f() {}";
    assert_eq!(
        paths("m::n::o", code),
        [
            "a::b",
            "a::c::d",
            "a::c::e",
            "a",
            "f::g",
            "m::n::h",
            "m::n::i::j",
            "m::k"
        ]
    );
    assert_eq!(paths("top", "use super::Shared;"), ["Shared"]);
}

#[test]
fn modules_are_named_as_rustc_names_them() {
    assert_eq!(module_of(Path::new("lib.rs")), "");
    assert_eq!(module_of(Path::new("csr.rs")), "csr");
    assert_eq!(module_of(Path::new("server/mod.rs")), "server");
    assert_eq!(module_of(Path::new("server/faults.rs")), "server::faults");
    assert_eq!(
        non_test_code("a\n#[cfg(test)]\nmod tests {\n}\n"),
        "a\n",
        "the inline test module is cut"
    );
    assert_eq!(
        test_only_children("x\n#[cfg(test)]\nmod tests;\n"),
        ["tests"]
    );
}

#[test]
fn a_cycle_is_found_and_an_ancestor_use_is_not_one() {
    let modules: BTreeSet<String> = ["", "a", "b", "c", "c::d"].map(String::from).into();
    assert_eq!(module_named(&modules, "a::Thing::new"), "a");
    assert_eq!(module_named(&modules, "Shared"), "");
    let g = |edges: &[(&str, &str)]| {
        let mut g: BTreeMap<String, BTreeSet<String>> = modules
            .iter()
            .map(|m| (m.clone(), BTreeSet::new()))
            .collect();
        for (from, to) in edges {
            if !is_self_or_ancestor(to, from) {
                g.get_mut(*from).unwrap().insert((*to).to_string());
            }
        }
        g
    };
    assert_eq!(
        cycles(&g(&[("a", "b"), ("b", "c"), ("c", "a")])),
        [["a", "b", "c"].map(String::from)]
    );
    assert!(cycles(&g(&[("c", "c::d"), ("c::d", "c"), ("a", "b")])).is_empty());
}
