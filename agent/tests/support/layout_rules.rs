//! The layout rules every crate of the workspace keeps, checked on the
//! source of the crate whose layout test includes this file (with
//! `#[path = "…/layout_rules.rs"] mod layout_rules;`), and the reader the
//! crate's own rules are written on:
//!
//! - no import cycle between modules: every `crate::` and `super::` path of
//!   the non-test code (with `{a, b::{c}}` groups expanded) is an edge from
//!   its module to the longest module path it names; a module's use of its
//!   own ancestors is no edge (a parent's items are its children's), and the
//!   graph must have no strongly connected component of more than one
//!   module;
//! - no source file (test-only files aside) over `MAX_LINES` lines, the
//!   limit the including file names (`const MAX_LINES: usize`).
//!
//! Code is what is left of a file without its comments (doc comments
//! included) and with its string and character literals emptied. Test code
//! is every item under a `#[cfg]` that names `test` (and no `not`):
//! `#[cfg(test)] mod tests { … }`, `#[cfg(test)] use …;`, and a module
//! declared so (`#[cfg(any(test, feature = "testing"))] pub mod fake;`),
//! whose file (and everything below it) is test code altogether.
//!
//! A binary's modules (`main.rs` and what it declares) share the graph with
//! the library's: both roots are `""`, and neither crate can name the
//! other's modules through `crate::`.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// One source file: its path under `src`, its module path (`""` for a crate
/// root, `a::b`), its whole text and its non-test code.
pub struct Source {
    pub file: PathBuf,
    pub module: String,
    pub text: String,
    pub code: String,
}

/// The `src` folder of the crate being tested (`env!` is read where this
/// file is compiled, in each including crate).
pub fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Every non-test `.rs` file under `src`.
pub fn read_src(src: &Path) -> Vec<Source> {
    let mut files = Vec::new();
    let mut dirs = vec![src.to_path_buf()];
    while let Some(d) = dirs.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                dirs.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") {
                let text = fs::read_to_string(&p).unwrap();
                files.push((p.strip_prefix(src).unwrap().to_path_buf(), text));
            }
        }
    }
    sources_of(files)
}

/// The non-test sources among `files` (path under `src`, text), by path.
pub fn sources_of(mut files: Vec<(PathBuf, String)>) -> Vec<Source> {
    files.sort();
    let mut test_only = BTreeSet::new();
    let all: Vec<Source> = files
        .into_iter()
        .map(|(file, text)| {
            let module = module_of(&file);
            let (code, test_children) = split_test_items(&code_of(&text));
            test_only.extend(test_children.iter().map(|c| join(&module, c)));
            Source {
                file,
                module,
                text,
                code,
            }
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

/// The module path of `rel` (a path under `src`).
pub fn module_of(rel: &Path) -> String {
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

/// `text` without its comments and with every string and character literal
/// emptied (`""`, `' '`), its line breaks kept.
pub fn code_of(text: &str) -> String {
    let c: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < c.len() {
        let start = i;
        let next = c.get(i + 1).copied();
        if c[i] == '/' && next == Some('/') {
            while i < c.len() && c[i] != '\n' {
                i += 1;
            }
            continue;
        } else if c[i] == '/' && next == Some('*') {
            let mut depth = 0;
            while i < c.len() {
                if c[i] == '/' && c.get(i + 1) == Some(&'*') {
                    depth += 1;
                    i += 2;
                } else if c[i] == '*' && c.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
        } else if let Some(hashes) = raw_string_at(&c, i) {
            i += hashes + 2;
            while i < c.len()
                && !(c[i] == '"' && c[i + 1..].iter().take_while(|&&h| h == '#').count() >= hashes)
            {
                i += 1;
            }
            i += hashes + 1;
            out.push_str("\"\"");
        } else if c[i] == '"'
            || (c[i] == '\'' && (next == Some('\\') || c.get(i + 2) == Some(&'\'')))
        {
            // A string or a character (a lifetime has no closing quote).
            let quote = c[i];
            i += 1;
            while i < c.len() && c[i] != quote {
                i += if c[i] == '\\' { 2 } else { 1 };
            }
            i += 1;
            out.push_str(if quote == '"' { "\"\"" } else { "' '" });
        } else {
            out.push(c[i]);
            i += 1;
            continue;
        }
        let end = i.min(c.len());
        out.extend(c[start..end].iter().filter(|&&x| x == '\n'));
    }
    out
}

/// The number of `#` of a raw string (`r"…"`, `r#"…"#`, `br"…"`) that
/// starts at `c[i]`.
fn raw_string_at(c: &[char], i: usize) -> Option<usize> {
    let ident_at = |j: Option<usize>| j.and_then(|j| c.get(j)).is_some_and(|&x| is_ident(x));
    let before = i.checked_sub(1);
    let starts = !ident_at(before)
        || (before.is_some_and(|b| c[b] == 'b')
            && !ident_at(before.and_then(|b| b.checked_sub(1))));
    if c[i] != 'r' || !starts {
        return None;
    }
    let hashes = c[i + 1..].iter().take_while(|&&h| h == '#').count();
    (c.get(i + 1 + hashes) == Some(&'"')).then_some(hashes)
}

/// `code` (from [`code_of`]) without the items compiled for tests only, and
/// the names of the modules among them that have files of their own
/// (`mod name;`).
pub fn split_test_items(code: &str) -> (String, Vec<String>) {
    let mut kept = String::new();
    let mut children = Vec::new();
    let mut rest = code;
    while let Some(at) = rest.find("#[cfg(") {
        let attribute = balanced_end(&rest[at + 1..]) + at + 1;
        let predicate = &rest[at + "#[cfg(".len()..attribute];
        let is_test = !predicate.contains("not(")
            && predicate
                .split(|c: char| !is_ident(c))
                .any(|word| word == "test");
        if !is_test {
            kept.push_str(&rest[..attribute]);
            rest = &rest[attribute..];
            continue;
        }
        kept.push_str(&rest[..at]);
        let item_end = attribute + item_len(&rest[attribute..]);
        children.extend(declared_module(&rest[attribute..item_end]));
        rest = &rest[item_end..];
    }
    kept.push_str(rest);
    (kept, children)
}

/// Where the bracketed text that `s` starts with (`(…)`, `[…]`, `{…}`)
/// ends, past its closing bracket.
fn balanced_end(s: &str) -> usize {
    let mut depth = 0;
    for (i, c) in s.char_indices() {
        match c {
            '(' | '[' | '{' => depth += 1,
            ')' | ']' | '}' => {
                depth -= 1;
                if depth == 0 {
                    return i + 1;
                }
            }
            _ => {}
        }
    }
    s.len()
}

/// The length of the item that `s` starts with, its attributes included:
/// up to its `;` or the `}` of its body, or up to the end of the block it
/// stands in.
fn item_len(s: &str) -> usize {
    let mut depth = 0;
    for (i, c) in s.char_indices() {
        match c {
            '(' | '[' | '{' => depth += 1,
            ')' | ']' | '}' if depth == 0 => return i,
            ')' | ']' | '}' => {
                depth -= 1;
                if depth == 0 && c == '}' {
                    // `use a::{b, c};` ends at its `;`.
                    let after = &s[i + 1..];
                    let tail = match after.trim_start().starts_with(';') {
                        true => after.find(';').unwrap() + 1,
                        false => 0,
                    };
                    return i + 1 + tail;
                }
            }
            ';' if depth == 0 => return i + 1,
            _ => {}
        }
    }
    s.len()
}

/// The name of the module that `item` declares in a file of its own
/// (`#[attr] pub(crate) mod name;`).
fn declared_module(item: &str) -> Option<String> {
    let mut item = item.trim_start();
    while item.starts_with("#[") {
        item = item[1 + balanced_end(&item[1..])..].trim_start();
    }
    if let Some(rest) = item.strip_prefix("pub") {
        item = match rest.strip_prefix('(') {
            Some(_) => &rest[balanced_end(rest)..],
            None => rest,
        }
        .trim_start();
    }
    let name = item.strip_prefix("mod ")?.strip_suffix(';')?.trim();
    name.chars().all(is_ident).then(|| name.to_string())
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
pub fn paths(module: &str, code: &str) -> Vec<String> {
    let mut out = Vec::new();
    for (keyword, is_super) in [("crate::", false), ("super::", true)] {
        let mut from = 0;
        while let Some(found) = code[from..].find(keyword) {
            let at = from + found;
            from = at + keyword.len();
            let before = code[..at].chars().next_back();
            if before.is_some_and(|c| is_ident(c) || c == '$' || c == ':') {
                // Part of another path (`x::super::`, a longer name, a
                // macro's `$crate::`) or the second `super::` of a chain.
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
    if (full.is_empty() || full.ends_with("::")) && rest.starts_with('{') {
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
    if text == "self" || text.starts_with("self ") {
        if !prefix.is_empty() {
            out.push(prefix.trim_end_matches(':').to_string());
        }
        return;
    }
    expand(prefix.to_string(), text, out);
}

/// The longest module path of `modules` that `path` starts with (the crate
/// root, `""`, when no other).
pub fn module_named<'a>(modules: &'a BTreeSet<String>, path: &str) -> &'a str {
    let segments: Vec<&str> = path.split("::").collect();
    (1..=segments.len())
        .rev()
        .map(|n| segments[..n].join("::"))
        .find_map(|p| modules.get(&p))
        .map_or("", String::as_str)
}

/// Whether `ancestor` is `module` itself or one of its ancestors.
pub fn is_self_or_ancestor(ancestor: &str, module: &str) -> bool {
    ancestor.is_empty() || ancestor == module || module.starts_with(&format!("{ancestor}::"))
}

/// The module graph: module -> the modules its paths name.
pub fn graph(sources: &[Source]) -> BTreeMap<String, BTreeSet<String>> {
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
pub fn cycles(g: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
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

/// The cycles of `sources`' graph, each with the uses that close it:
/// `{a, b}: a -> b; b -> a`.
pub fn import_cycles(sources: &[Source]) -> Vec<String> {
    let g = graph(sources);
    cycles(&g)
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
        .collect()
}

/// The files of `sources` over `max` lines, with their lengths.
pub fn files_over(sources: &[Source], max: usize) -> Vec<String> {
    sources
        .iter()
        .map(|s| (s, s.text.lines().count()))
        .filter(|(_, n)| *n > max)
        .map(|(s, n)| format!("{}: {n} lines", s.file.display()))
        .collect()
}

/// Fails, saying `what` they are, unless `found` is empty.
#[track_caller]
pub fn assert_none<S: AsRef<str>>(what: &str, found: impl IntoIterator<Item = S>) {
    let found: Vec<S> = found.into_iter().collect();
    let lines: Vec<&str> = found.iter().map(AsRef::as_ref).collect();
    assert!(lines.is_empty(), "{what}:\n  {}", lines.join("\n  "));
}

#[test]
fn no_module_import_cycles() {
    let sources = read_src(&src());
    let edges: usize = graph(&sources).values().map(BTreeSet::len).sum();
    assert!(
        sources.len() > 20 && edges > 40,
        "read the crate's modules ({}) and their uses ({edges})",
        sources.len()
    );
    assert_none(
        "modules that import each other (directly or through others)",
        import_cycles(&sources),
    );
}

#[test]
fn no_source_file_is_over_the_line_limit() {
    let max = super::MAX_LINES;
    assert_none(
        &format!("source files over {max} lines (move big test modules to a sibling `tests.rs`, or split the module)"),
        files_over(&read_src(&src()), max),
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
    assert_eq!(
        paths(
            "a",
            "use crate::{self, b::C, d};\nuse super::{e::{self as g}, f};"
        ),
        ["b::C", "d", "e", "f"]
    );
}

#[test]
fn code_is_read_without_comments_literals_and_test_items() {
    let text = "//! crate::doc\n/// [`crate::doc`]\nuse crate::a; // crate::b\n/* crate::c /* nested */ */\nlet s = \"crate::d \\\" /*\";\nlet r = r#\"crate::e \"# ;\nlet q = '\"'; fn f<'a>(x: &'a str) {}\n";
    let code = code_of(text);
    assert_eq!(code.lines().count(), text.lines().count(), "{code}");
    assert_eq!(paths("", &code), ["a"], "{code}");
    let code = "a\n#[cfg(test)]\n#[allow(x)]\nmod tests {\n fn t() { crate::x(); }\n}\n#[cfg(test)]\nuse crate::y::{z, w};\n#[cfg(any(test, feature = \"\"))]\npub mod fake;\n#[cfg(test)]\npub(crate) mod data;\n#[cfg(not(test))]\nb\n#[cfg(unix)]\nc\n";
    let (kept, children) = split_test_items(code);
    assert_eq!(
        kept.split_whitespace().collect::<Vec<_>>(),
        ["a", "#[cfg(not(test))]", "b", "#[cfg(unix)]", "c"]
    );
    assert_eq!(children, ["fake", "data"]);
}

#[test]
fn modules_are_named_as_rustc_names_them_and_test_files_left_out() {
    assert_eq!(module_of(Path::new("lib.rs")), "");
    assert_eq!(module_of(Path::new("main.rs")), "");
    assert_eq!(module_of(Path::new("csr.rs")), "csr");
    assert_eq!(module_of(Path::new("server/mod.rs")), "server");
    assert_eq!(module_of(Path::new("server/faults.rs")), "server::faults");
    let files = [
        ("lib.rs", "pub mod a;\n#[cfg(test)]\nmod support;"),
        ("a.rs", "#[cfg(test)]\nmod tests;"),
        ("a/tests.rs", ""),
        ("support/mod.rs", "mod deep;"),
        ("support/deep.rs", ""),
    ]
    .map(|(f, t)| (PathBuf::from(f), t.to_string()));
    let read: Vec<String> = sources_of(files.into())
        .into_iter()
        .map(|s| s.module)
        .collect();
    assert_eq!(read, ["a", ""]);
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

#[test]
fn a_cycle_through_files_and_a_long_file_are_reported() {
    let read = |a: &str| {
        let files = [
            ("lib.rs", "mod a;\nmod b;\nmod c;\n"),
            ("a.rs", a),
            ("b.rs", "use super::a::{self, A};\n"),
            (
                "c.rs",
                "use crate::a;\n#[cfg(test)]\nmod tests {\n    use crate::c;\n}\n",
            ),
        ];
        sources_of(files.map(|(f, t)| (PathBuf::from(f), t.to_string())).into())
    };
    let quiet = read("//! Not crate::b.\nconst B: &str = \"crate::b\";\n");
    assert!(
        import_cycles(&quiet).is_empty(),
        "comments and strings are no use"
    );
    assert_eq!(
        import_cycles(&read("use crate::b::B;\n")),
        ["{a, b}: a -> b; b -> a"]
    );
    assert_eq!(files_over(&quiet, 4), ["c.rs: 5 lines"]);
    assert!(files_over(&quiet, 5).is_empty());
}
