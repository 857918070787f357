//! The command line as clap parses it: the subcommands and their flags.
//! Only types and the mapping of `run` flags onto [`config::Flags`]; what a
//! command does is `app`'s.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use clap::{Args, Parser, Subcommand};
use node_cert_agent::config::{self, Flags, LogFormat, LogTarget, DEFAULT_MAX_CERTIFICATES};

/// Keeps a Kubernetes node's custom CA trust correct.
///
/// Watches a mounted Secret (custom-ca-trust-secret) and provisioning files,
/// installs their CAs into the node's OS trust store, and restarts containerd
/// over D-Bus when the effective trust bundle changes.
#[derive(Parser)]
#[command(name = "node-cert-agent", version, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Install the CAs from the inputs into the node's trust store, and keep
    /// them in sync (or once, with --once).
    Run(RunArgs),
    /// Validate a Secret directory or a provisioning file offline; print every
    /// finding. Exit 0 when all input is valid, 1 otherwise.
    Check(CheckArgs),
    /// Renew the kubelet certificates now if they are due (or always, with
    /// --force), from a node shell. Safe while the daemon runs: both take the
    /// same lock, and the daemon picks up the new certificate.
    Renew(RenewArgs),
    /// Show this node's custom CAs, trust store, kubelet and node
    /// certificates, and the daemon's view, from a node shell (also while
    /// the daemon is down). Exit 0 when healthy, 1 when anything is expired,
    /// invalid, failing, or in the last 10 % of its lifetime with nothing to
    /// renew it, 2 when status itself cannot run.
    Status(StatusArgs),
    /// From an operator's workstation: every Node's CA trust and kubelet
    /// certificate state as its agent published it, judged against the
    /// current custom-ca-trust-secret. Exit 0 when every selected node has
    /// converged, 1 otherwise (or when --wait times out), 2 when the command
    /// cannot run, 130 when --wait is stopped with Ctrl-C.
    Fleet(FleetArgs),
    /// Take the agent's custom CAs off this node: remove every anchor the
    /// agent installed, run the distro's refresh tool once, restart the
    /// allowlisted units once (if running) when the bundle changed, and
    /// remove the agent's CA state. Kubelet's certificates are left alone.
    /// Refused while a node-cert-agent daemon runs on the node. Exit 0 when
    /// done, 1 when a step failed (run it again to finish).
    Uninstall(UninstallArgs),
}

/// The file name of the kubectl plugin link: `kubectl node-cert ...` runs
/// `kubectl-node_cert ...` (kubectl maps `-` in a command to `_`).
pub const KUBECTL_PLUGIN_NAME: &str = "kubectl-node_cert";

/// Whether argv\[0\] is the kubectl plugin link (or a copy of the binary by
/// that name).
pub fn invoked_as_kubectl_plugin(argv0: &OsStr) -> bool {
    Path::new(argv0).file_name() == Some(OsStr::new(KUBECTL_PLUGIN_NAME))
}

#[derive(Args)]
pub struct FleetArgs {
    /// The kubeconfig file [default: as kubectl: $KUBECONFIG, then ~/.kube/config].
    #[arg(long, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context [default: its current-context].
    #[arg(long, value_name = "NAME")]
    pub context: Option<String>,
    /// Only the Nodes matching this label selector (as kubectl's -l).
    #[arg(long, short = 'l', value_name = "SELECTOR")]
    pub selector: Option<String>,
    /// The CA Secret, as `check --secret` and `run --ca-secret` name it.
    #[arg(
        long,
        value_name = "NAMESPACE/NAME",
        value_parser = config::SecretRef::parse,
        default_value = "kube-system/custom-ca-trust-secret"
    )]
    pub secret: config::SecretRef,
    /// A provisioning file the nodes also trust (PEM certificates separated by
    /// blank lines; repeatable), for the expected trust set.
    #[arg(long, value_name = "FILE")]
    pub ca_file: Vec<PathBuf>,
    /// The agents' max-certificates, for the expected trust set.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_MAX_CERTIFICATES)]
    pub max_certificates: usize,
    /// table for people, json (schemaVersion 1) for scripts.
    #[arg(long, short = 'o', value_enum, default_value_t = OutputFormat::Table)]
    pub output: OutputFormat,
    /// Watch the Nodes until every selected one has converged (or --timeout).
    #[arg(long)]
    pub wait: bool,
    /// How long --wait waits: 90s, 5m, 1h30m.
    #[arg(long, value_name = "DURATION", default_value = DEFAULT_WAIT_TIMEOUT, requires = "wait")]
    pub timeout: String,
    /// Nodes per list request (the API's `limit`; the rest follows by `continue`).
    #[arg(long, value_name = "N", default_value_t = DEFAULT_PAGE_SIZE, value_parser = clap::value_parser!(u32).range(1..))]
    pub page_size: u32,
}

/// `--wait` without `--timeout`: ten minutes, several of kubelet's Secret
/// sync periods (a node takes 30 to 90 s to see a change).
pub const DEFAULT_WAIT_TIMEOUT: &str = "10m";
/// kubectl's own chunk size for `get` (`--chunk-size`, 500).
pub const DEFAULT_PAGE_SIZE: u32 = 500;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    Table,
    Json,
}

#[derive(Args)]
pub struct StatusArgs {
    /// The node's root as this process sees it: / on the node, /host in a pod.
    #[arg(long, value_name = "DIR")]
    pub host_root: Option<PathBuf>,
    /// table for people, json (schemaVersion 1) for scripts.
    #[arg(long, short, value_enum, default_value_t = OutputFormat::Table)]
    pub output: OutputFormat,
    /// The agent's config file [default: the node's /etc/node-cert-agent/config.yaml, if any].
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// The agent's state directory, a node path [default: /var/lib/node-cert-agent].
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// This node's name, for the kubelet renewal time (default: $NODE_NAME,
    /// then the name kubelet uses: its current client certificate's, else its
    /// --hostname-override, else the kernel hostname, lowercased).
    #[arg(long, env = "NODE_NAME", value_name = "NAME")]
    pub node_name: Option<String>,
}

#[derive(Args)]
pub struct UninstallArgs {
    /// The agent's config file, for its trust-store overrides, restart-unit
    /// and state-dir [default: the node's /etc/node-cert-agent/config.yaml, if any].
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// The node's root as this process sees it: / on the node, /host in a pod.
    #[arg(long, value_name = "DIR")]
    pub host_root: Option<PathBuf>,
    /// The agent's state directory, a node path [default: /var/lib/node-cert-agent].
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// A unit to restart (if running) after the bundle changed (repeatable;
    /// default: the config's restart-unit, else containerd.service).
    #[arg(long, value_name = "UNIT")]
    pub restart_unit: Vec<String>,
    /// Where logs go.
    #[arg(long, value_enum, default_value_t = LogTarget::Auto, env = "NCA_LOG_TARGET")]
    pub log_target: LogTarget,
}

#[derive(Args)]
pub struct RenewArgs {
    #[command(flatten)]
    pub run: RunArgs,
    /// Renew even if the current certificates are healthy.
    #[arg(long)]
    pub force: bool,
}

#[derive(Args)]
pub struct RunArgs {
    /// YAML config file; its keys are these flags' names. Flags win over it.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// The node's root as this process sees it: / on the node, /host in a pod.
    #[arg(long, value_name = "DIR")]
    pub host_root: Option<PathBuf>,
    /// A mounted Secret directory holding CA keys (repeatable).
    #[arg(long, value_name = "DIR")]
    pub ca_dir: Vec<PathBuf>,
    /// A provisioning file of PEM certificates separated by blank lines (repeatable).
    #[arg(long, value_name = "FILE")]
    pub ca_file: Vec<PathBuf>,
    /// A Secret read through the API (a list+watch of exactly that object),
    /// as NAMESPACE/NAME, for example kube-system/custom-ca-trust-secret.
    #[arg(long, value_name = "NAMESPACE/NAME", value_parser = config::SecretRef::parse)]
    pub ca_secret: Option<config::SecretRef>,
    /// The kubeconfig of the identity that reads --ca-secret [default: the
    /// pod's ServiceAccount, in-cluster]; required outside a pod.
    #[arg(long, value_name = "FILE")]
    pub ca_secret_kubeconfig: Option<PathBuf>,
    /// Delay each restart (not the anchor write) by a stable per-node
    /// fraction of this window, so a fleet does not restart containerd in
    /// the same second [default: 0].
    #[arg(long, value_name = "SECONDS")]
    pub restart_spread_seconds: Option<u64>,
    /// The least time between two of the agent's restarts of one unit,
    /// doubling with each restart in the last 2 minutes up to a minute;
    /// changes within it share one restart. 0 turns the spacing off
    /// [default: 2].
    #[arg(long, value_name = "SECONDS")]
    pub restart_min_spacing_seconds: Option<u64>,
    /// A unit to restart (if running) when the trust bundle changes
    /// (repeatable; default containerd.service). No other unit is ever restarted.
    #[arg(long, value_name = "UNIT")]
    pub restart_unit: Vec<String>,
    /// Reconcile once and exit: 0 on success, 1 on invalid input or a failed step.
    #[arg(long)]
    pub once: bool,
    /// The agent's state directory, a node path [default: /var/lib/node-cert-agent].
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Most distinct CAs accepted across all inputs [default: 10].
    #[arg(long, value_name = "N")]
    pub max_certificates: Option<usize>,
    /// Quiet time after a change before a pass runs [default: 100].
    #[arg(long, value_name = "MS")]
    pub debounce_ms: Option<u64>,
    /// Log format on stdout.
    #[arg(long, value_enum, env = "NCA_LOG_FORMAT")]
    pub log_format: Option<LogFormat>,
    /// Where logs go.
    #[arg(long, value_enum, default_value_t = LogTarget::Auto, env = "NCA_LOG_TARGET")]
    pub log_target: LogTarget,
    /// The kubelet certificate job: auto = on where kubelet bootstraps or
    /// holds a client certificate (a bootstrap kubeconfig, or a kubelet
    /// kubeconfig that names a client certificate).
    #[arg(long, value_enum, value_name = "MODE")]
    pub kubelet: Option<config::KubeletMode>,
    /// This node's name (default: $NODE_NAME, then the name kubelet uses: its
    /// current client certificate's, else its --hostname-override, else the
    /// kernel hostname, lowercased).
    #[arg(long, env = "NODE_NAME", value_name = "NAME")]
    pub node_name: Option<String>,
    /// Where /metrics, /healthz and /readyz are served, or `off`
    /// [default: 127.0.0.1:9795].
    #[arg(long, value_name = "ADDR")]
    pub metrics_address: Option<String>,
}

#[derive(Args)]
pub struct CheckArgs {
    /// Mounted Secret directories, provisioning files, or Secret manifests
    /// (YAML with `kind: Secret`, linted before they are applied).
    #[arg(required_unless_present = "secret", value_name = "PATH")]
    pub paths: Vec<PathBuf>,
    /// Lint the live Secret NAMESPACE/NAME, read with the user's kubeconfig
    /// ($KUBECONFIG or ~/.kube/config, as kubectl).
    #[arg(long, value_name = "NAMESPACE/NAME", value_parser = config::SecretRef::parse)]
    pub secret: Option<config::SecretRef>,
    /// Findings as a table, or as JSON for a CI pipeline.
    #[arg(long, short = 'o', value_enum, default_value_t = OutputFormat::Table)]
    pub output: OutputFormat,
    /// Most distinct CAs accepted across all inputs.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_MAX_CERTIFICATES)]
    pub max_certificates: usize,
}

impl RunArgs {
    /// The `run` flags for config resolution; `--config` and `--log-target`
    /// are not config keys.
    pub fn into_flags(self) -> (Option<PathBuf>, Flags, LogTarget) {
        let flags = Flags {
            host_root: self.host_root,
            ca_dir: self.ca_dir,
            ca_file: self.ca_file,
            ca_secret: self.ca_secret,
            ca_secret_kubeconfig: self.ca_secret_kubeconfig,
            restart_spread_seconds: self.restart_spread_seconds,
            restart_min_spacing_seconds: self.restart_min_spacing_seconds,
            restart_unit: self.restart_unit,
            once: self.once,
            state_dir: self.state_dir,
            max_certificates: self.max_certificates,
            debounce_ms: self.debounce_ms,
            log_format: self.log_format,
            kubelet: self.kubelet,
            node_name: self.node_name,
            metrics_address: self.metrics_address,
        };
        (self.config, flags, self.log_target)
    }
}
