//! Settings of the kubelet certificate job: kubelet's file layout (with
//! kubelet's own defaults), the key type, the timeouts and the restart
//! allowlist.
//!
//! What needs the node itself (what kubelet holds there, the hostname, the
//! node's addresses) comes in as data: [`KubeletSettings::job_enabled`] and
//! [`KubeletSettings::serving_names`] are pure.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

/// kubelet's bootstrap kubeconfig on AKS (kubeadm: `/etc/kubernetes/bootstrap-kubelet.conf`).
pub const DEFAULT_BOOTSTRAP_KUBECONFIG: &str = "/var/lib/kubelet/bootstrap-kubeconfig";
/// kubelet's kubeconfig on AKS (kubeadm: `/etc/kubernetes/kubelet.conf`).
pub const DEFAULT_KUBECONFIG: &str = "/var/lib/kubelet/kubeconfig";
/// kubelet's certificate directory (`--cert-dir`).
pub const DEFAULT_PKI_DIR: &str = "/var/lib/kubelet/pki";
/// kubelet's config file, which says whether kubelet rotates its own certificates.
pub const DEFAULT_KUBELET_CONFIG: &str = "/var/lib/kubelet/config.yaml";
/// Where RenewRevocations are read: the namespace the AKS hybrid
/// documentation puts them in.
pub const DEFAULT_REVOCATION_NAMESPACE: &str = "kube-system";
/// How long after a RenewRevocation is seen the nodes it revokes renew, each
/// at its own stable share of it (from its name). The watch wakes every node
/// of a fleet in the same second; over 300 s, 5,000 nodes file about 17 CSRs
/// a second (the same number of SubjectAccessReviews from the approver, and
/// of kubelet restarts) instead of 5,000 at once. Small beside any
/// certificate's lifetime (the signer's minimum is 10 minutes), and never
/// past a certificate's normal renewal deadline.
pub const DEFAULT_REVOCATION_SPREAD: Duration = Duration::from_secs(300);
/// The unit restarted after a new certificate is in place.
pub const DEFAULT_KUBELET_UNIT: &str = "kubelet.service";
/// kubelet's own limit on waiting for a signature.
pub const DEFAULT_CSR_TIMEOUT: Duration = Duration::from_secs(15 * 60);
/// How long one API request may go unanswered. kube's client sets no read
/// timeout, so without one a server that accepts the connection and never
/// answers would hold the pass (and the kubelet lock) forever, with nothing
/// logged and no retry. 30 s is far above a healthy API server's answer time.
pub const DEFAULT_API_TIMEOUT: Duration = Duration::from_secs(30);

/// Whether the kubelet certificate job runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum KubeletMode {
    /// On where kubelet bootstraps or holds a client certificate: the node
    /// has a bootstrap kubeconfig, or kubelet's kubeconfig names a client
    /// certificate.
    #[default]
    Auto,
    On,
    Off,
}

/// What `mode: auto` asks of the node: whether kubelet bootstraps or holds
/// a client certificate there (`kubelet::scope` reads it).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KubeletOnNode {
    /// The bootstrap kubeconfig exists: kubelet bootstraps a client
    /// certificate with it.
    pub bootstrap_kubeconfig: bool,
    /// kubelet's kubeconfig names a client certificate (`client-certificate`
    /// or `client-certificate-data`): kubelet holds one. One with a token or
    /// an exec plugin (EKS) leaves nothing to renew.
    pub kubeconfig_client_certificate: bool,
}

/// The key of a new kubelet certificate.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum KeyType {
    /// kubelet's own choice.
    #[default]
    EcdsaP256,
    EcdsaP384,
    Rsa2048,
    Rsa4096,
}

impl KeyType {
    pub fn is_rsa(self) -> bool {
        matches!(self, Self::Rsa2048 | Self::Rsa4096)
    }
}

/// The `kubelet:` section of the config file.
#[derive(Debug, Default, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct KubeletConfig {
    pub mode: Option<KubeletMode>,
    pub node_name: Option<String>,
    pub bootstrap_kubeconfig: Option<PathBuf>,
    pub kubeconfig: Option<PathBuf>,
    pub pki_dir: Option<PathBuf>,
    pub kubelet_config: Option<PathBuf>,
    pub key_type: Option<KeyType>,
    pub expiration_seconds: Option<i32>,
    pub csr_timeout_seconds: Option<u64>,
    /// How long one API request (the CSR create, the RenewRevocation list)
    /// may go unanswered before the pass fails and is retried.
    pub api_timeout_seconds: Option<u64>,
    pub restart_unit: Option<Vec<String>>,
    pub serving: Option<ServingConfig>,
    pub defer_to_kubelet_rotation: Option<bool>,
    /// The namespace whose RenewRevocations the agent honours.
    pub revocation_namespace: Option<String>,
    /// Over how many seconds the nodes a RenewRevocation revokes spread
    /// their renewals.
    pub revocation_spread_seconds: Option<u64>,
}

#[derive(Debug, Default, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ServingConfig {
    #[serde(default)]
    pub enabled: bool,
    #[serde(default)]
    pub dns: Vec<String>,
    #[serde(default)]
    pub ips: Vec<IpAddr>,
}

/// The kubelet job's effective settings. Paths are node paths.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubeletSettings {
    pub mode: KubeletMode,
    /// The node's name as configured (`--node-name`, `$NODE_NAME`, or the
    /// file); `None` means the node's hostname.
    pub node_name: Option<String>,
    pub bootstrap_kubeconfig: PathBuf,
    pub kubeconfig: PathBuf,
    pub pki_dir: PathBuf,
    pub kubelet_config: PathBuf,
    pub key_type: KeyType,
    pub expiration_seconds: Option<i32>,
    pub csr_timeout: Duration,
    pub api_timeout: Duration,
    /// Units restarted after a new certificate is in place (the allowlist).
    pub restart_units: Vec<String>,
    /// The opt-in serving certificate, as configured (`None`: off).
    pub serving: Option<ServingConfig>,
    /// When kubelet's config says `rotateCertificates: true`, only monitor.
    pub defer_to_kubelet_rotation: bool,
    /// The namespace whose RenewRevocations the agent honours.
    pub revocation_namespace: String,
    /// A revoked certificate renews at the node's share of this after the
    /// revocation was seen (renewal.rs's `revocation_offset`).
    pub revocation_spread: Duration,
}

impl KubeletSettings {
    /// The file section with kubelet's defaults filled in.
    pub fn from_file(k: KubeletConfig, mode: KubeletMode, node_name: Option<String>) -> Self {
        Self {
            mode,
            node_name,
            bootstrap_kubeconfig: k
                .bootstrap_kubeconfig
                .unwrap_or_else(|| DEFAULT_BOOTSTRAP_KUBECONFIG.into()),
            kubeconfig: k.kubeconfig.unwrap_or_else(|| DEFAULT_KUBECONFIG.into()),
            pki_dir: k.pki_dir.unwrap_or_else(|| DEFAULT_PKI_DIR.into()),
            kubelet_config: k
                .kubelet_config
                .unwrap_or_else(|| DEFAULT_KUBELET_CONFIG.into()),
            key_type: k.key_type.unwrap_or_default(),
            expiration_seconds: k.expiration_seconds,
            csr_timeout: k
                .csr_timeout_seconds
                .map_or(DEFAULT_CSR_TIMEOUT, Duration::from_secs),
            api_timeout: k
                .api_timeout_seconds
                .map_or(DEFAULT_API_TIMEOUT, Duration::from_secs),
            restart_units: k
                .restart_unit
                .unwrap_or_else(|| vec![DEFAULT_KUBELET_UNIT.to_string()]),
            serving: k.serving.filter(|s| s.enabled),
            defer_to_kubelet_rotation: k.defer_to_kubelet_rotation.unwrap_or(true),
            revocation_namespace: k
                .revocation_namespace
                .unwrap_or_else(|| DEFAULT_REVOCATION_NAMESPACE.to_string()),
            revocation_spread: k
                .revocation_spread_seconds
                .map_or(DEFAULT_REVOCATION_SPREAD, Duration::from_secs),
        }
    }

    /// kubelet's unit, whose command line says how kubelet runs: the
    /// first of `restart-unit`.
    pub fn kubelet_unit(&self) -> &str {
        self.restart_units
            .first()
            .map_or(DEFAULT_KUBELET_UNIT, String::as_str)
    }

    /// Whether the job runs: `on`, or `auto` where kubelet bootstraps or
    /// holds a client certificate (`node`). Elsewhere there is nothing to
    /// renew, and a job that could only fail would keep `status` at exit 1.
    pub fn job_enabled(&self, node: &KubeletOnNode) -> bool {
        match self.mode {
            KubeletMode::On => true,
            KubeletMode::Off => false,
            KubeletMode::Auto => node.bootstrap_kubeconfig || node.kubeconfig_client_certificate,
        }
    }

    /// The names of the serving certificate, if it is on: the configured
    /// ones, or none, which means the Node's `status.addresses`, read at
    /// each pass as kubelet takes them (`kubelet::node_facts`).
    pub fn serving_names(&self) -> Option<(Vec<String>, Vec<IpAddr>)> {
        let s = self.serving.as_ref()?;
        Some((s.dns.clone(), s.ips.clone()))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]
mod tests {
    use super::*;

    fn serving_on() -> KubeletSettings {
        KubeletSettings::from_file(
            KubeletConfig {
                serving: Some(ServingConfig {
                    enabled: true,
                    ..ServingConfig::default()
                }),
                ..KubeletConfig::default()
            },
            KubeletMode::Auto,
            None,
        )
    }

    #[test]
    fn serving_names_are_the_configured_ones_or_none_for_the_nodes_addresses() {
        let (dns, ips) = serving_on().serving_names().unwrap();
        assert!(dns.is_empty() && ips.is_empty());
        let off = KubeletSettings::from_file(KubeletConfig::default(), KubeletMode::Auto, None);
        assert_eq!(off.serving_names(), None);
    }

    #[test]
    fn auto_mode_needs_a_client_certificate_that_kubelet_bootstraps_or_holds() {
        let k = KubeletSettings::from_file(KubeletConfig::default(), KubeletMode::Auto, None);
        let nothing = KubeletOnNode::default();
        let bootstrap = KubeletOnNode {
            bootstrap_kubeconfig: true,
            ..nothing
        };
        let holds = KubeletOnNode {
            kubeconfig_client_certificate: true,
            ..nothing
        };
        // A kubeconfig with a token or an exec plugin (EKS) is `nothing`.
        assert!(!k.job_enabled(&nothing));
        assert!(k.job_enabled(&bootstrap));
        assert!(k.job_enabled(&holds));
        let on = KubeletSettings {
            mode: KubeletMode::On,
            ..k.clone()
        };
        assert!(on.job_enabled(&nothing));
        let off = KubeletSettings {
            mode: KubeletMode::Off,
            ..k
        };
        assert!(!off.job_enabled(&bootstrap));
    }

    #[test]
    fn revocation_spread_defaults_to_five_minutes_and_reads_its_key() {
        let k = KubeletSettings::from_file(KubeletConfig::default(), KubeletMode::Auto, None);
        assert_eq!(k.revocation_spread, Duration::from_secs(300));
        let file: KubeletConfig = serde_yaml::from_str("revocation-spread-seconds: 0").unwrap();
        let k = KubeletSettings::from_file(file, KubeletMode::Auto, None);
        assert_eq!(k.revocation_spread, Duration::ZERO);
    }
}
