//! Configuration: the YAML file (every `run` flag has a key of the same
//! name) merged with the command line, where flags win, and the defaults,
//! resolved once into one typed settings struct per job ([`TrustSettings`],
//! [`KubeletSettings`]) and the operator surface's ([`OpsSettings`]).
//!
//! Pure apart from reading the file. Boundary: a leaf; nothing here reads
//! the node (what a default needs from the node comes in as data).

pub mod kubelet;
pub mod ops;
pub mod trust;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use kubelet::{
    KeyType, KubeletConfig, KubeletMode, KubeletOnNode, KubeletSettings, ServingConfig,
};
pub use ops::{parse_metrics_address, LogFormat, LogTarget, DEFAULT_METRICS_ADDRESS, METRICS_OFF};
use serde::Deserialize;
pub use trust::{
    SecretRef, SourceSpec, TrustSettings, TrustStoreOverride, DEFAULT_CA_SECRET_NAME,
    DEFAULT_CA_SECRET_NAMESPACE, DEFAULT_DEBOUNCE_MS, DEFAULT_MAX_CERTIFICATES,
    DEFAULT_RESTART_UNIT, MAX_RESTART_SPREAD_SECONDS,
};

/// Where the node's root is when the agent runs on the node itself.
pub const DEFAULT_HOST_ROOT: &str = "/";
/// Node path of the agent's state directory.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/node-cert-agent";
/// Node path of the system bus socket (systemd's D-Bus API).
pub const SYSTEM_BUS_SOCKET: &str = "/run/dbus/system_bus_socket";
/// The agent publishes its state on its own Node (docs/fleet.md) unless
/// `fleet-publish: false`: it costs no API write while nothing changes.
pub const DEFAULT_FLEET_PUBLISH: bool = true;
/// The least time between two of the agent's restarts of one unit
/// (`restart-min-spacing-seconds`), doubling with each restart in the last
/// 2 minutes up to a minute (`trust::pacing::spaced_start`).
pub const DEFAULT_RESTART_MIN_SPACING_SECONDS: u64 = 2;
/// A change is published on the Node at the node's stable share of this
/// many seconds after it was first seen (`fleet-publish-spread-seconds`),
/// so a fleet that sees one Secret change in the same second does not
/// PATCH its Nodes in that second.
pub const DEFAULT_FLEET_PUBLISH_SPREAD_SECONDS: u64 = 30;
/// Node path of the host-mode config file, which `status` reads by default.
pub const HOST_CONFIG_FILE: &str = "/etc/node-cert-agent/config.yaml";

/// The YAML file. Keys are the `run` flags' names; unknown keys are errors.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct FileConfig {
    pub host_root: Option<PathBuf>,
    pub ca_dir: Option<Vec<PathBuf>>,
    pub ca_file: Option<Vec<PathBuf>>,
    pub ca_secret: Option<SecretRef>,
    pub ca_secret_kubeconfig: Option<PathBuf>,
    pub restart_spread_seconds: Option<u64>,
    pub restart_min_spacing_seconds: Option<u64>,
    pub restart_unit: Option<Vec<String>>,
    pub once: Option<bool>,
    pub state_dir: Option<PathBuf>,
    pub max_certificates: Option<usize>,
    pub debounce_ms: Option<u64>,
    pub log_format: Option<LogFormat>,
    pub metrics_address: Option<String>,
    pub trust_store: Option<TrustStoreOverride>,
    pub kubelet: Option<KubeletConfig>,
    pub fleet_publish: Option<bool>,
    pub fleet_publish_spread_seconds: Option<u64>,
}

/// The `run` flags, as clap parsed them (absent = not given).
#[derive(Debug, Default, Clone)]
pub struct Flags {
    pub host_root: Option<PathBuf>,
    pub ca_dir: Vec<PathBuf>,
    pub ca_file: Vec<PathBuf>,
    /// `--ca-secret NAMESPACE/NAME`, parsed.
    pub ca_secret: Option<SecretRef>,
    pub ca_secret_kubeconfig: Option<PathBuf>,
    pub restart_spread_seconds: Option<u64>,
    pub restart_min_spacing_seconds: Option<u64>,
    pub restart_unit: Vec<String>,
    pub once: bool,
    pub state_dir: Option<PathBuf>,
    pub max_certificates: Option<usize>,
    pub debounce_ms: Option<u64>,
    pub log_format: Option<LogFormat>,
    pub kubelet: Option<KubeletMode>,
    pub node_name: Option<String>,
    pub metrics_address: Option<String>,
}

/// Effective, validated settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub host_root: PathBuf,
    /// Node path of the agent's state directory.
    pub state_dir: PathBuf,
    pub once: bool,
    pub trust: TrustSettings,
    pub kubelet: KubeletSettings,
    pub ops: OpsSettings,
}

/// The operator surface's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpsSettings {
    pub log_format: LogFormat,
    /// `None` when the metrics listener is off.
    pub metrics_address: Option<SocketAddr>,
    /// Publish the node's state on its Node object (`fleet-publish`).
    pub fleet_publish: bool,
    /// `fleet-publish-spread-seconds`.
    pub fleet_publish_spread: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {source}")]
    Parse {
        path: PathBuf,
        source: serde_yaml::Error,
    },
    #[error("config key `{key}` has the value {value:?}: {reason}")]
    Invalid {
        key: &'static str,
        value: String,
        reason: String,
    },
    #[error("no CA source configured: give --ca-secret NAMESPACE/NAME (the Secret through the API), --ca-dir (a mounted Secret) or --ca-file (a provisioning file), or `ca-secret`/`ca-dir`/`ca-file` in the config file (or --kubelet on for a kubelet-only agent)")]
    NoSources,
}

pub fn load_file(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.into(),
        source,
    })?;
    parse_file(&text).map_err(|source| ConfigError::Parse {
        path: path.into(),
        source,
    })
}

pub fn parse_file(text: &str) -> Result<FileConfig, serde_yaml::Error> {
    if text.trim().is_empty() {
        return Ok(FileConfig::default());
    }
    serde_yaml::from_str(text)
}

/// Merges the file and the flags (flags win) and checks every value.
pub fn resolve(file: FileConfig, flags: Flags) -> Result<Settings, ConfigError> {
    let settings = merge(file, flags)?;
    validate(&settings, true)?;
    Ok(settings)
}

/// Like [`resolve`], but a config without any CA source is fine: `status`
/// reports on a node whatever the agent's inputs are.
pub fn resolve_for_status(file: FileConfig, flags: Flags) -> Result<Settings, ConfigError> {
    let settings = merge(file, flags)?;
    validate(&settings, false)?;
    Ok(settings)
}

fn merge(file: FileConfig, flags: Flags) -> Result<Settings, ConfigError> {
    let pick_list = |flag: Vec<PathBuf>, file: Option<Vec<PathBuf>>| {
        if flag.is_empty() {
            file.unwrap_or_default()
        } else {
            flag
        }
    };
    let ca_dirs = pick_list(flags.ca_dir, file.ca_dir);
    let ca_files = pick_list(flags.ca_file, file.ca_file);
    let restart_units = if flags.restart_unit.is_empty() {
        file.restart_unit
            .unwrap_or_else(|| vec![DEFAULT_RESTART_UNIT.to_string()])
    } else {
        flags.restart_unit
    };
    let kubelet_file = file.kubelet.unwrap_or_default();
    let kubelet_mode = flags.kubelet.or(kubelet_file.mode).unwrap_or_default();
    let node_name = flags.node_name.or(kubelet_file.node_name.clone());
    Ok(Settings {
        host_root: flags
            .host_root
            .or(file.host_root)
            .unwrap_or_else(|| DEFAULT_HOST_ROOT.into()),
        state_dir: flags
            .state_dir
            .or(file.state_dir)
            .unwrap_or_else(|| DEFAULT_STATE_DIR.into()),
        once: flags.once || file.once.unwrap_or(false),
        trust: TrustSettings {
            sources: ca_dirs
                .into_iter()
                .map(SourceSpec::SecretDir)
                .chain(ca_files.into_iter().map(SourceSpec::File))
                .collect(),
            restart_units,
            max_certificates: flags
                .max_certificates
                .or(file.max_certificates)
                .unwrap_or(DEFAULT_MAX_CERTIFICATES),
            debounce: Duration::from_millis(
                flags
                    .debounce_ms
                    .or(file.debounce_ms)
                    .unwrap_or(DEFAULT_DEBOUNCE_MS),
            ),
            trust_store: file.trust_store.unwrap_or_default(),
            ca_secret: flags.ca_secret.or(file.ca_secret),
            ca_secret_kubeconfig: flags.ca_secret_kubeconfig.or(file.ca_secret_kubeconfig),
            restart_spread: Duration::from_secs(
                flags
                    .restart_spread_seconds
                    .or(file.restart_spread_seconds)
                    .unwrap_or(0),
            ),
            restart_min_spacing: Duration::from_secs(
                flags
                    .restart_min_spacing_seconds
                    .or(file.restart_min_spacing_seconds)
                    .unwrap_or(DEFAULT_RESTART_MIN_SPACING_SECONDS),
            ),
        },
        kubelet: KubeletSettings::from_file(kubelet_file.clone(), kubelet_mode, node_name),
        ops: OpsSettings {
            log_format: flags.log_format.or(file.log_format).unwrap_or_default(),
            metrics_address: parse_metrics_address(
                flags
                    .metrics_address
                    .as_deref()
                    .or(file.metrics_address.as_deref())
                    .unwrap_or(DEFAULT_METRICS_ADDRESS),
            )?,
            fleet_publish: file.fleet_publish.unwrap_or(DEFAULT_FLEET_PUBLISH),
            fleet_publish_spread: Duration::from_secs(
                file.fleet_publish_spread_seconds
                    .unwrap_or(DEFAULT_FLEET_PUBLISH_SPREAD_SECONDS),
            ),
        },
    })
    .and_then(|s| validate_kubelet_file(&kubelet_file).map(|()| s))
}

/// Values of the `kubelet:` section that have no valid meaning.
fn validate_kubelet_file(k: &KubeletConfig) -> Result<(), ConfigError> {
    for unit in k.restart_unit.iter().flatten() {
        if !is_valid_service_name(unit) {
            return Err(ConfigError::Invalid {
                key: "kubelet.restart-unit",
                value: unit.clone(),
                reason: "not a service unit name; give a name such as kubelet.service".into(),
            });
        }
    }
    if k.api_timeout_seconds == Some(0) {
        return Err(ConfigError::Invalid {
            key: "kubelet.api-timeout-seconds",
            value: "0".into(),
            reason: "must be at least 1".into(),
        });
    }
    if let Some(e) = k.expiration_seconds {
        if e < 600 {
            return Err(ConfigError::Invalid {
                key: "kubelet.expiration-seconds",
                value: e.to_string(),
                reason: "the CSR API requires at least 600 seconds".into(),
            });
        }
    }
    Ok(())
}

fn validate(s: &Settings, require_sources: bool) -> Result<(), ConfigError> {
    // A kubelet-only agent needs no CA source.
    if require_sources
        && s.trust.sources.is_empty()
        && s.trust.ca_secret.is_none()
        && s.kubelet.mode != KubeletMode::On
    {
        return Err(ConfigError::NoSources);
    }
    for unit in &s.trust.restart_units {
        if !is_valid_service_name(unit) {
            return Err(ConfigError::Invalid {
                key: "restart-unit",
                value: unit.clone(),
                reason: "not a service unit name; give a name such as containerd.service".into(),
            });
        }
    }
    if let Some(r) = &s.trust.ca_secret {
        r.check().map_err(|reason| ConfigError::Invalid {
            key: "ca-secret",
            value: r.to_string(),
            reason,
        })?;
    }
    if s.trust.restart_spread.as_secs() > MAX_RESTART_SPREAD_SECONDS {
        return Err(ConfigError::Invalid {
            key: "restart-spread-seconds",
            value: s.trust.restart_spread.as_secs().to_string(),
            reason: format!("must be at most {MAX_RESTART_SPREAD_SECONDS} (an hour)"),
        });
    }
    if s.trust.restart_min_spacing.as_secs() > MAX_RESTART_SPREAD_SECONDS {
        return Err(ConfigError::Invalid {
            key: "restart-min-spacing-seconds",
            value: s.trust.restart_min_spacing.as_secs().to_string(),
            reason: format!("must be at most {MAX_RESTART_SPREAD_SECONDS} (an hour)"),
        });
    }
    if s.ops.fleet_publish_spread.as_secs() > MAX_RESTART_SPREAD_SECONDS {
        return Err(ConfigError::Invalid {
            key: "fleet-publish-spread-seconds",
            value: s.ops.fleet_publish_spread.as_secs().to_string(),
            reason: format!("must be at most {MAX_RESTART_SPREAD_SECONDS} (an hour)"),
        });
    }
    if s.trust.max_certificates == 0 {
        return Err(ConfigError::Invalid {
            key: "max-certificates",
            value: "0".into(),
            reason: "must be at least 1".into(),
        });
    }
    if !s.host_root.is_absolute() {
        return Err(ConfigError::Invalid {
            key: "host-root",
            value: s.host_root.display().to_string(),
            reason: "must be an absolute path, such as / or /host".into(),
        });
    }
    if !s.state_dir.is_absolute() {
        return Err(ConfigError::Invalid {
            key: "state-dir",
            value: s.state_dir.display().to_string(),
            reason: "must be an absolute node path".into(),
        });
    }
    if let Some(cmd) = &s.trust.trust_store.refresh_command {
        if cmd.first().is_none_or(|p| !p.starts_with('/')) {
            return Err(ConfigError::Invalid {
                key: "trust-store.refresh-command",
                value: format!("{cmd:?}"),
                reason: "must be an argv list whose first element is an absolute program path (no shell is used)".into(),
            });
        }
    }
    for (key, path) in [
        ("trust-store.anchors-dir", &s.trust.trust_store.anchors_dir),
        ("trust-store.bundle", &s.trust.trust_store.bundle),
    ] {
        if let Some(p) = path {
            if !p.is_absolute() {
                return Err(ConfigError::Invalid {
                    key,
                    value: p.display().to_string(),
                    reason: "must be an absolute node path".into(),
                });
            }
        }
    }
    Ok(())
}

/// `name.service`, with the characters systemd allows in unit names.
pub fn is_valid_service_name(unit: &str) -> bool {
    let Some(stem) = unit.strip_suffix(".service") else {
        return false;
    };
    !stem.is_empty()
        && unit.len() <= 255
        && stem
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, ':' | '-' | '_' | '.' | '\\' | '@'))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]
mod tests {
    use super::*;

    #[test]
    fn every_flag_has_a_file_key() {
        let yaml = "host-root: /host\nca-dir: [/etc/custom-ca]\nca-file: [/etc/ca.pem]\nrestart-unit: [containerd.service, kubelet.service]\nonce: true\nstate-dir: /var/lib/x\nmax-certificates: 5\ndebounce-ms: 50\nlog-format: json\ntrust-store:\n  anchors-dir: /etc/anchors\n  refresh-command: [/usr/bin/update-ca-trust, extract]\n  bundle: /etc/bundle.pem\n";
        let s = resolve(parse_file(yaml).unwrap(), Flags::default()).unwrap();
        assert_eq!(s.host_root, PathBuf::from("/host"));
        assert_eq!(s.trust.sources.len(), 2);
        assert_eq!(s.trust.restart_units.len(), 2);
        assert!(s.once);
        assert_eq!(s.trust.max_certificates, 5);
        assert_eq!(s.trust.debounce, Duration::from_millis(50));
        assert_eq!(s.ops.log_format, LogFormat::Json);
        assert_eq!(
            s.trust.trust_store.bundle,
            Some(PathBuf::from("/etc/bundle.pem"))
        );
    }

    #[test]
    fn flags_win_over_the_file() {
        let file = parse_file("host-root: /host\nca-dir: [/a]\nrestart-unit: [kubelet.service]\n")
            .unwrap();
        let flags = Flags {
            host_root: Some("/other".into()),
            ca_dir: vec!["/b".into()],
            restart_unit: vec!["containerd.service".into()],
            ..Flags::default()
        };
        let s = resolve(file, flags).unwrap();
        assert_eq!(s.host_root, PathBuf::from("/other"));
        assert_eq!(s.trust.sources, vec![SourceSpec::SecretDir("/b".into())]);
        assert_eq!(s.trust.restart_units, vec!["containerd.service"]);
    }

    #[test]
    fn defaults_restart_containerd_only() {
        let flags = Flags {
            ca_dir: vec!["/a".into()],
            ..Flags::default()
        };
        let s = resolve(FileConfig::default(), flags).unwrap();
        assert_eq!(s.trust.restart_units, vec![DEFAULT_RESTART_UNIT]);
        assert_eq!(s.host_root, PathBuf::from("/"));
        assert_eq!(s.state_dir, PathBuf::from(DEFAULT_STATE_DIR));
    }

    #[test]
    fn unknown_key_is_an_error_naming_it() {
        let err = parse_file("ca-dirs: [/a]\n").unwrap_err().to_string();
        assert!(err.contains("ca-dirs"), "{err}");
    }

    #[test]
    fn bad_values_name_the_key_and_the_value() {
        let cases = [
            (
                "ca-dir: [/a]\nrestart-unit: [\"containerd; rm -rf /\"]\n",
                "restart-unit",
            ),
            ("ca-dir: [/a]\nmax-certificates: 0\n", "max-certificates"),
            (
                "ca-dir: [/a]\nkubelet:\n  api-timeout-seconds: 0\n",
                "kubelet.api-timeout-seconds",
            ),
            ("ca-dir: [/a]\nhost-root: host\n", "host-root"),
            (
                "ca-dir: [/a]\ntrust-store:\n  refresh-command: [\"sh -c update\"]\n",
                "trust-store.refresh-command",
            ),
        ];
        for (yaml, key) in cases {
            let err = resolve(parse_file(yaml).unwrap(), Flags::default())
                .unwrap_err()
                .to_string();
            assert!(err.contains(key), "{yaml} -> {err}");
        }
    }

    #[test]
    fn no_source_is_an_error_that_says_what_to_give() {
        let err = resolve(FileConfig::default(), Flags::default())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("--ca-dir") && err.contains("--ca-file"),
            "{err}"
        );
    }

    #[test]
    fn metrics_address_defaults_to_loopback_and_can_be_turned_off() {
        let base = || Flags {
            ca_dir: vec!["/a".into()],
            ..Flags::default()
        };
        let s = resolve(FileConfig::default(), base()).unwrap();
        assert_eq!(
            s.ops.metrics_address,
            Some(DEFAULT_METRICS_ADDRESS.parse().unwrap())
        );
        let s = resolve(parse_file("metrics-address: off\n").unwrap(), base()).unwrap();
        assert_eq!(s.ops.metrics_address, None);
        let s = resolve(parse_file("metrics-address: \"\"\n").unwrap(), base()).unwrap();
        assert_eq!(s.ops.metrics_address, None);
        let flags = Flags {
            metrics_address: Some("0.0.0.0:9100".into()),
            ..base()
        };
        let s = resolve(parse_file("metrics-address: off\n").unwrap(), flags).unwrap();
        assert_eq!(
            s.ops.metrics_address,
            Some("0.0.0.0:9100".parse().unwrap()),
            "the flag wins"
        );
        let err = resolve(parse_file("metrics-address: localhost\n").unwrap(), base())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("metrics-address") && err.contains("localhost"),
            "{err}"
        );
    }

    #[test]
    fn fleet_publishing_is_on_unless_turned_off() {
        let base = || Flags {
            ca_dir: vec!["/a".into()],
            ..Flags::default()
        };
        assert!(
            resolve(FileConfig::default(), base())
                .unwrap()
                .ops
                .fleet_publish
        );
        let off = resolve(parse_file("fleet-publish: false\n").unwrap(), base()).unwrap();
        assert!(!off.ops.fleet_publish);
        assert!(parse_file("fleet-publish: maybe\n").is_err());
    }

    #[test]
    fn status_accepts_a_config_without_sources() {
        let s = resolve_for_status(FileConfig::default(), Flags::default()).unwrap();
        assert!(s.trust.sources.is_empty());
        assert_eq!(s.state_dir, PathBuf::from(DEFAULT_STATE_DIR));
    }

    #[test]
    fn service_names_are_checked() {
        assert!(is_valid_service_name("containerd.service"));
        assert!(is_valid_service_name("getty@tty1.service"));
        assert!(!is_valid_service_name("containerd"));
        assert!(!is_valid_service_name("a b.service"));
        assert!(!is_valid_service_name(".service"));
    }
}
