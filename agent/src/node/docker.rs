//! What Docker's own config (`/etc/docker/daemon.json`) says about a restart
//! of `docker.service`: with `"live-restore": true` the containers keep
//! running while dockerd restarts; without it, a restart stops every
//! container on the node.
//!
//! Boundary: reads the one file through the [`HostRoot`]; deciding what to
//! do with the answer is the trust job's.

use std::path::Path;

use super::fsutil;
use super::hostroot::HostRoot;

/// Docker's daemon config.
pub const DAEMON_JSON: &str = "/etc/docker/daemon.json";
/// The unit whose restart this is about.
pub const DOCKER_UNIT: &str = "docker.service";
/// A daemon.json is a few KiB.
const MAX_DAEMON_JSON_BYTES: u64 = 1024 * 1024;

/// Whether containers survive a restart of dockerd.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LiveRestore {
    On,
    /// Off, absent, or the file is missing: why, for the error.
    Off(String),
}

/// Parses daemon.json's text: `"live-restore": true` is on; anything else
/// (absent, false, not a bool, not JSON) is off, with the reason.
pub fn parse_live_restore(text: &str) -> LiveRestore {
    match serde_json::from_str::<serde_json::Value>(text) {
        Ok(v) => match v.get("live-restore") {
            Some(serde_json::Value::Bool(true)) => LiveRestore::On,
            Some(serde_json::Value::Bool(false)) => {
                LiveRestore::Off(format!("{DAEMON_JSON} sets \"live-restore\": false"))
            }
            Some(other) => LiveRestore::Off(format!(
                "{DAEMON_JSON} sets \"live-restore\" to {other}, not true"
            )),
            None => LiveRestore::Off(format!("{DAEMON_JSON} does not set \"live-restore\"")),
        },
        Err(e) => LiveRestore::Off(format!("{DAEMON_JSON} is not valid JSON ({e})")),
    }
}

/// Reads the node's daemon.json.
pub fn live_restore(host: &HostRoot) -> LiveRestore {
    let Ok(path) = host.resolve(Path::new(DAEMON_JSON)) else {
        return LiveRestore::Off(format!("{DAEMON_JSON} cannot be resolved on the node"));
    };
    match fsutil::read_limited(&path, MAX_DAEMON_JSON_BYTES) {
        Ok(bytes) => parse_live_restore(&String::from_utf8_lossy(&bytes)),
        Err(e) => LiveRestore::Off(format!("{DAEMON_JSON} cannot be read ({e})")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_true_live_restore_keeps_containers_running() {
        assert_eq!(
            parse_live_restore(r#"{"live-restore": true}"#),
            LiveRestore::On
        );
        for text in [
            r#"{"live-restore": false}"#,
            r#"{"live-restore": "true"}"#,
            "{}",
            "not json",
        ] {
            assert!(
                matches!(parse_live_restore(text), LiveRestore::Off(_)),
                "{text}"
            );
        }
    }
}
