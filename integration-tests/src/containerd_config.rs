//! containerd's CRI registry `config_path` on a test node, set as AKS sets
//! it (`/etc/containerd/certs.d`), for the live pull trust's tests and the
//! bench: the key edited under the registry table of the config's version,
//! nothing else changed.

use crate::cri;
use crate::node::Node;

/// containerd's main config file.
pub const CONTAINERD_CONFIG: &str = "/etc/containerd/config.toml";
/// The registry host directory, as AKS configures it.
pub const CERTS_D: &str = "/etc/containerd/certs.d";
const CONTAINERD_UNIT: &str = "containerd.service";

/// The top-level `version` of a containerd config (1 when absent).
pub fn config_version(text: &str) -> i64 {
    for line in text.lines().map(str::trim) {
        if line.starts_with('[') {
            break;
        }
        let Some(rest) = line.strip_prefix("version") else {
            continue;
        };
        let Some(value) = rest.trim_start().strip_prefix('=') else {
            continue;
        };
        return value.trim().parse().unwrap_or_else(|e| {
            panic!("containerd config: version {value:?} is not an integer: {e}")
        });
    }
    1
}

/// The CRI registry table of a config `version`, as `containerd config
/// default` prints its header.
pub fn registry_table(version: i64) -> &'static str {
    match version {
        2 => r#"[plugins."io.containerd.grpc.v1.cri".registry]"#,
        3 => "[plugins.'io.containerd.cri.v1.images'.registry]",
        v => panic!("containerd config version {v} is not one this test edits (2 or 3)"),
    }
}

/// `text` (a containerd config) with the CRI registry `config_path` set to
/// `dir` under the table of its version: the key replaced where the table
/// has one, added under its header otherwise, the table appended where it is
/// missing. Nothing else changes.
pub fn with_config_path(text: &str, dir: &str) -> String {
    let table = registry_table(config_version(text));
    let same_header = |line: &str| line.trim().replace('\'', "\"") == table.replace('\'', "\"");
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    let value = format!("config_path = {}", serde_json::to_string(dir).unwrap());
    match lines.iter().position(|l| same_header(l)) {
        None => {
            lines.push(table.to_owned());
            lines.push(format!("  {value}"));
        }
        Some(header) => {
            let end = lines[header + 1..]
                .iter()
                .position(|l| l.trim_start().starts_with('['))
                .map_or(lines.len(), |n| header + 1 + n);
            let key = (header + 1..end).find(|&i| {
                let l = lines[i].trim_start();
                l.strip_prefix("config_path")
                    .is_some_and(|r| r.trim_start().starts_with('='))
            });
            match key {
                Some(i) => {
                    let indent = indent_of(&lines[i]);
                    lines[i] = format!("{indent}{value}");
                }
                None => {
                    let line = format!("{}  {value}", indent_of(&lines[header]));
                    lines.insert(header + 1, line);
                }
            }
        }
    }
    let mut out = lines.join("\n");
    out.push('\n');
    out
}

/// The leading whitespace of `line`.
pub fn indent_of(line: &str) -> String {
    line[..line.len() - line.trim_start().len()].to_owned()
}

/// Sets containerd's CRI registry `config_path` to [`CERTS_D`] in the node's
/// `config.toml` (for its config version), creates that directory (the
/// shipped host unit and the DaemonSet write only into an existing one),
/// restarts containerd, and checks with `containerd config dump` that the
/// running configuration has it. Before the agent starts.
pub fn set_config_path(node: &Node) {
    let text = String::from_utf8(node.read_file(CONTAINERD_CONFIG)).unwrap();
    let version = config_version(&text);
    let edited = with_config_path(&text, CERTS_D);
    assert_ne!(edited, text, "node {}: config.toml unchanged", node.name());
    node.write_file(CONTAINERD_CONFIG, edited.as_bytes(), 0o644);
    node.exec_ok(&["mkdir", "-p", CERTS_D]);
    node.restart(CONTAINERD_UNIT);
    wait_for_cri(node);
    let dump = node.exec_ok(&["containerd", "config", "dump"]);
    let dump = String::from_utf8_lossy(&dump.stdout);
    assert!(
        dump.lines().any(|l| {
            let l = l.trim();
            l.starts_with("config_path") && l.contains(CERTS_D)
        }),
        "node {}: `containerd config dump` has no config_path = {CERTS_D} after the edit \
         (config version {version}):\n{dump}",
        node.name()
    );
    println!(
        "node {}: containerd config version {version}, CRI registry config_path = {CERTS_D}",
        node.name()
    );
}

/// Waits until containerd's CRI answers (a removal of an absent image
/// succeeds), after a restart by the test.
pub fn wait_for_cri(node: &Node) {
    cri::while_unreachable("CRI after a containerd restart", || {
        cri::cri_try_remove_image(node, "registry.test:1/nca-absent:v1")
    })
    .unwrap_or_else(|e| panic!("node {}: CRI RemoveImage failed: {e}", node.name()));
}
