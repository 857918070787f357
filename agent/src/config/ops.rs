//! Settings of the operator surface: logs and the metrics listener.

use std::net::SocketAddr;

use serde::Deserialize;

use super::ConfigError;

/// Where `/metrics`, `/healthz` and `/readyz` are served. Loopback, so a
/// host-mode agent exposes nothing by default (a DaemonSet sets
/// `0.0.0.0:9795` for Prometheus); port 9795, next to x509-certificate-exporter's
/// 9793, so both can run on one node.
pub const DEFAULT_METRICS_ADDRESS: &str = "127.0.0.1:9795";
/// The `metrics-address` value that turns the listener off (as does "").
pub const METRICS_OFF: &str = "off";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum, Default)]
#[serde(rename_all = "kebab-case")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// Where logs go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Default)]
pub enum LogTarget {
    /// journald when stdout is connected to the journal (a systemd service), else stdout.
    #[default]
    Auto,
    Stdout,
    Journald,
}

/// `metrics-address`: a socket address, or `off` / empty for no listener.
pub fn parse_metrics_address(value: &str) -> Result<Option<SocketAddr>, ConfigError> {
    let v = value.trim();
    if v.is_empty() || v.eq_ignore_ascii_case(METRICS_OFF) {
        return Ok(None);
    }
    v.parse().map(Some).map_err(|_| ConfigError::Invalid {
        key: "metrics-address",
        value: value.to_string(),
        reason: format!(
            "not an address:port such as {DEFAULT_METRICS_ADDRESS} or 0.0.0.0:9795 (or `{METRICS_OFF}` to turn the listener off)"
        ),
    })
}
