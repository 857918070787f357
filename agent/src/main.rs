//! The `node-cert-agent` command line. The one place that uses `anyhow`:
//! every error chain is printed once, here, at the edge.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};

use node_cert_agent::config::{self, Flags, LogFormat, Settings};
use node_cert_agent::daemon;
use node_cert_agent::kubelet::manager::KubeletManager;
use node_cert_agent::node::distro::TrustStoreLayout;
use node_cert_agent::node::fsutil;
use node_cert_agent::node::hostroot::HostRoot;
use node_cert_agent::node::systemd::{bus_address, DbusSystemd};
use node_cert_agent::ops::daemon_status::{AgentMode, DAEMON_STATUS_FILE};
use node_cert_agent::ops::logging::{self, error_chain, LogTarget};
use node_cert_agent::ops::metrics::{Metrics, MetricsOptions};
use node_cert_agent::status::StatusSources;
use node_cert_agent::trust::plan::{self, KeyState, DEFAULT_MAX_CERTIFICATES};
use node_cert_agent::trust::reconcile::{CaSettings, Reconciler};
use node_cert_agent::trust::sources::{read_source, SourceSpec};
use node_cert_agent::trust::state::STATE_FILE;
use node_cert_agent::trust::store::{detect_layout, TrustStore};
use node_cert_agent::x509::cert::{now_unix, rfc3339};

/// Keeps a Kubernetes node's custom CA trust correct.
///
/// Watches a mounted Secret (custom-ca-trust-secret) and provisioning files,
/// installs their CAs into the node's OS trust store, and restarts containerd
/// over D-Bus when the effective trust bundle changes.
#[derive(Parser)]
#[command(name = "node-cert-agent", version, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
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
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum OutputFormat {
    Table,
    Json,
}

#[derive(Args)]
struct StatusArgs {
    /// The node's root as this process sees it: / on the node, /host in a pod.
    #[arg(long, value_name = "DIR")]
    host_root: Option<PathBuf>,
    /// table for people, json (schemaVersion 1) for scripts.
    #[arg(long, short, value_enum, default_value_t = OutputFormat::Table)]
    output: OutputFormat,
    /// The agent's config file [default: the node's /etc/node-cert-agent/config.yaml, if any].
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// The agent's state directory, a node path [default: /var/lib/node-cert-agent].
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,
    /// This node's name, for the kubelet renewal time (default: $NODE_NAME,
    /// then the node's /etc/hostname).
    #[arg(long, env = "NODE_NAME", value_name = "NAME")]
    node_name: Option<String>,
}

#[derive(Args)]
struct RenewArgs {
    #[command(flatten)]
    run: RunArgs,
    /// Renew even if the current certificates are healthy.
    #[arg(long)]
    force: bool,
}

#[derive(Args)]
struct RunArgs {
    /// YAML config file; its keys are these flags' names. Flags win over it.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// The node's root as this process sees it: / on the node, /host in a pod.
    #[arg(long, value_name = "DIR")]
    host_root: Option<PathBuf>,
    /// A mounted Secret directory holding CA keys (repeatable).
    #[arg(long, value_name = "DIR")]
    ca_dir: Vec<PathBuf>,
    /// A provisioning file of PEM certificates separated by blank lines (repeatable).
    #[arg(long, value_name = "FILE")]
    ca_file: Vec<PathBuf>,
    /// A unit to restart (if running) when the trust bundle changes
    /// (repeatable; default containerd.service). No other unit is ever restarted.
    #[arg(long, value_name = "UNIT")]
    restart_unit: Vec<String>,
    /// Reconcile once and exit: 0 on success, 1 on invalid input or a failed step.
    #[arg(long)]
    once: bool,
    /// The agent's state directory, a node path [default: /var/lib/node-cert-agent].
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,
    /// Most distinct CAs accepted across all inputs [default: 10].
    #[arg(long, value_name = "N")]
    max_certificates: Option<usize>,
    /// Quiet time after a change before a pass runs [default: 100].
    #[arg(long, value_name = "MS")]
    debounce_ms: Option<u64>,
    /// Log format on stdout.
    #[arg(long, value_enum, env = "NCA_LOG_FORMAT")]
    log_format: Option<LogFormat>,
    /// Where logs go.
    #[arg(long, value_enum, default_value_t = LogTarget::Auto, env = "NCA_LOG_TARGET")]
    log_target: LogTarget,
    /// The kubelet certificate job: auto = on when the node has a bootstrap
    /// or kubelet kubeconfig.
    #[arg(long, value_enum, value_name = "MODE")]
    kubelet: Option<config::KubeletMode>,
    /// This node's name (default: $NODE_NAME, then the node's /etc/hostname).
    #[arg(long, env = "NODE_NAME", value_name = "NAME")]
    node_name: Option<String>,
    /// Where /metrics, /healthz and /readyz are served, or `off`
    /// [default: 127.0.0.1:9795].
    #[arg(long, value_name = "ADDR")]
    metrics_address: Option<String>,
}

#[derive(Args)]
struct CheckArgs {
    /// Mounted Secret directories, provisioning files, or Secret manifests
    /// (YAML with `kind: Secret`, linted before they are applied).
    #[arg(required = true, value_name = "PATH")]
    paths: Vec<PathBuf>,
    /// Findings as a table, or as JSON for a CI pipeline.
    #[arg(long, short = 'o', value_enum, default_value_t = OutputFormat::Table)]
    output: OutputFormat,
    /// Most distinct CAs accepted across all inputs.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_MAX_CERTIFICATES)]
    max_certificates: usize,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(args) => run(args),
        Command::Check(args) => Ok(check(&args)),
        Command::Renew(args) => renew(args),
        Command::Status(args) => {
            // Scripts tell "unhealthy" (1) from "could not look" (2).
            return status(args).unwrap_or_else(|e| {
                eprintln!("node-cert-agent: error: {}", error_chain(e.as_ref()));
                ExitCode::from(node_cert_agent::status::EXIT_STATUS_ERROR)
            });
        }
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("node-cert-agent: error: {}", error_chain(e.as_ref()));
            ExitCode::FAILURE
        }
    }
}

fn settings_of(args: RunArgs) -> anyhow::Result<(Settings, LogTarget)> {
    let file = match &args.config {
        Some(path) => config::load_file(path)?,
        None => config::FileConfig::default(),
    };
    let settings = config::resolve(
        file,
        Flags {
            host_root: args.host_root,
            ca_dir: args.ca_dir,
            ca_file: args.ca_file,
            restart_unit: args.restart_unit,
            once: args.once,
            state_dir: args.state_dir,
            max_certificates: args.max_certificates,
            debounce_ms: args.debounce_ms,
            log_format: args.log_format,
            kubelet: args.kubelet,
            node_name: args.node_name,
            metrics_address: args.metrics_address,
        },
    )?;
    Ok((settings, args.log_target))
}

fn status(args: StatusArgs) -> anyhow::Result<ExitCode> {
    use node_cert_agent::status::{build_report, gather, render_json, render_table, StatusSources};
    // Without --config, the node's own host-mode config, if it has one: its
    // paths are node paths.
    let probe_root = HostRoot::new(args.host_root.as_deref().unwrap_or(Path::new("/")))?;
    let (file, node_config) = match &args.config {
        Some(path) => (config::load_file(path)?, false),
        None => {
            let path = probe_root.resolve(Path::new(config::HOST_CONFIG_FILE))?;
            if path.is_file() {
                (config::load_file(&path)?, true)
            } else {
                (config::FileConfig::default(), false)
            }
        }
    };
    let settings = config::resolve_for_status(
        file,
        Flags {
            host_root: args.host_root,
            state_dir: args.state_dir,
            node_name: args.node_name,
            ..Flags::default()
        },
    )?;
    let host = HostRoot::new(&settings.host_root)?;
    let layout = layout_for(&host, &settings).map_err(|e| e.to_string());
    let mut sources = StatusSources::from_settings(&settings, host.clone(), layout);
    if node_config && settings.host_root != Path::new("/") {
        // The node's config names its inputs as node paths.
        for spec in &mut sources.sources {
            let resolved = host.resolve(spec.path())?;
            *spec = match spec {
                SourceSpec::SecretDir(_) => SourceSpec::SecretDir(resolved),
                SourceSpec::File(_) => SourceSpec::File(resolved),
            };
        }
    }
    let report = build_report(&gather(&sources, now_unix()));
    match args.output {
        OutputFormat::Table => print!("{}", render_table(&report)),
        OutputFormat::Json => print!("{}", render_json(&report)?),
    }
    Ok(ExitCode::from(report.exit_code()))
}

fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    let (settings, log_target) = settings_of(args)?;
    logging::init(settings.log_format, log_target)?;

    let host = HostRoot::new(&settings.host_root)?;
    let layout = layout_for(&host, &settings)?;
    let state_dir = host.resolve(&settings.state_dir)?;
    fsutil::ensure_dir(&state_dir, 0o700)
        .with_context(|| format!("creating the state directory {}", state_dir.display()))?;
    let env: HashMap<String, String> = std::env::vars().collect();
    let bus = bus_address(&env, &host.resolve(Path::new(config::SYSTEM_BUS_SOCKET))?);
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        host_root = %settings.host_root.display(),
        family = layout.family.name(),
        anchors_dir = %layout.anchors_dir.display(),
        bundle = %layout.bundle_path.display(),
        restart_units = %settings.restart_units.join(","),
        bus = %bus,
        "node-cert-agent starting"
    );
    let host_for_kubelet = host.clone();
    let certificates = StatusSources::from_settings(&settings, host.clone(), Ok(layout.clone()));
    let reconciler = Reconciler::new(
        TrustStore::new(host, layout),
        DbusSystemd::new(bus.clone()),
        CaSettings {
            sources: settings.sources.clone(),
            restart_units: settings.restart_units.clone(),
            max_certificates: settings.max_certificates,
            state_path: state_dir.join(STATE_FILE),
        },
    );
    let reconciler = if settings.sources.is_empty() {
        // Kubelet-only: leave the CA state (and anchors) alone entirely.
        None
    } else {
        reconciler.sweep()?;
        Some(reconciler)
    };

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    if settings.once {
        let Some(reconciler) = reconciler else {
            anyhow::bail!("--once reconciles the CA trust, but no CA source is configured; use `renew` for kubelet certificates");
        };
        let outcome = runtime.block_on(reconciler.reconcile())?;
        daemon::log_outcome(&outcome);
        return Ok(if outcome.has_input_errors() {
            ExitCode::FAILURE
        } else {
            ExitCode::SUCCESS
        });
    }
    let kubelet = kubelet_manager(&host_for_kubelet, &settings, &state_dir, &bus)?;
    let metrics = Arc::new(Metrics::new(MetricsOptions {
        mode: AgentMode::of_host_root(&settings.host_root),
        started_at: now_unix(),
        ca_job: reconciler.is_some(),
        kubelet_job: kubelet.is_some(),
        metrics_address: settings.metrics_address,
    }));
    let obs = daemon::Observability {
        metrics,
        listen: settings.metrics_address,
        status_path: state_dir.join(DAEMON_STATUS_FILE),
        certificates: Some(certificates.inventory()),
    };
    if let Some(manager) = &kubelet {
        // Node Events need the node's API identity, which the kubelet job
        // keeps; a second handle reads it when an event is posted.
        let identity = KubeletManager::new(
            host_for_kubelet.clone(),
            DbusSystemd::new(bus.clone()),
            manager.settings().clone(),
        );
        let node = manager.settings().node_name.clone();
        let _enter = runtime.enter();
        let sink = node_cert_agent::ops::events::start(
            node,
            std::sync::Arc::new(move || identity.node_client()),
        );
        obs.metrics.set_event_sink(sink);
    }
    runtime.block_on(daemon::run(reconciler, kubelet, settings.debounce, obs))?;
    Ok(ExitCode::SUCCESS)
}

fn renew(args: RenewArgs) -> anyhow::Result<ExitCode> {
    let (mut settings, log_target) = settings_of(args.run)?;
    logging::init(settings.log_format, log_target)?;
    settings.kubelet_mode = config::KubeletMode::On;
    let host = HostRoot::new(&settings.host_root)?;
    let state_dir = host.resolve(&settings.state_dir)?;
    let env: HashMap<String, String> = std::env::vars().collect();
    let bus = bus_address(&env, &host.resolve(Path::new(config::SYSTEM_BUS_SOCKET))?);
    let manager = kubelet_manager(&host, &settings, &state_dir, &bus)?
        .context("the kubelet certificate job is not configured")?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let outcome = runtime.block_on(manager.pass(args.force))?;
    if outcome.renewed.is_empty() {
        println!("nothing renewed (use --force to renew healthy certificates)");
    }
    for kind in &outcome.renewed {
        println!("renewed the kubelet {} certificate", kind.name());
    }
    if let Some(d) = outcome.next_deadline {
        println!("next renewal: {}", rfc3339(d));
    }
    Ok(ExitCode::SUCCESS)
}

/// The kubelet manager, if the job is on (or `auto` and the node has a kubeconfig).
fn kubelet_manager(
    host: &HostRoot,
    settings: &Settings,
    state_dir: &Path,
    bus: &str,
) -> anyhow::Result<Option<KubeletManager<DbusSystemd>>> {
    use node_cert_agent::kubelet::manager::*;
    let k = &settings.kubelet;
    let bootstrap = k
        .bootstrap_kubeconfig
        .clone()
        .unwrap_or_else(|| DEFAULT_BOOTSTRAP_KUBECONFIG.into());
    let kubeconfig = k
        .kubeconfig
        .clone()
        .unwrap_or_else(|| DEFAULT_KUBECONFIG.into());
    let enabled = match settings.kubelet_mode {
        config::KubeletMode::On => true,
        config::KubeletMode::Off => false,
        config::KubeletMode::Auto => {
            host.resolve(&bootstrap)?.exists() || host.resolve(&kubeconfig)?.exists()
        }
    };
    if !enabled {
        tracing::info!("kubelet certificate job is off (no bootstrap or kubelet kubeconfig on the node; --kubelet on forces it)");
        return Ok(None);
    }
    let node_name = match &settings.node_name {
        Some(n) => n.clone(),
        None => std::fs::read_to_string(host.resolve(Path::new("/etc/hostname"))?)
            .ok()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .context("no node name: give --node-name, set NODE_NAME (the downward API's spec.nodeName in a pod), or kubelet.node-name in the config")?,
    };
    let serving = k.serving.as_ref().filter(|s| s.enabled).map(|s| {
        if s.dns.is_empty() && s.ips.is_empty() {
            let hostname = std::fs::read_to_string(
                host.resolve(Path::new("/etc/hostname")).unwrap_or_default(),
            )
            .ok()
            .map(|h| h.trim().to_string());
            default_serving_names(&node_name, hostname.as_deref())
        } else {
            (s.dns.clone(), s.ips.clone())
        }
    });
    let settings = KubeletSettings {
        node_name,
        bootstrap_kubeconfig: bootstrap,
        kubeconfig,
        pki_dir: k.pki_dir.clone().unwrap_or_else(|| DEFAULT_PKI_DIR.into()),
        kubelet_config: k
            .kubelet_config
            .clone()
            .unwrap_or_else(|| DEFAULT_KUBELET_CONFIG.into()),
        key_type: k.key_type.unwrap_or_default(),
        expiration_seconds: k.expiration_seconds,
        csr_timeout: k
            .csr_timeout_seconds
            .map(std::time::Duration::from_secs)
            .unwrap_or(node_cert_agent::kubelet::csr::DEFAULT_CSR_TIMEOUT),
        api_timeout: k
            .api_timeout_seconds
            .map(std::time::Duration::from_secs)
            .unwrap_or(node_cert_agent::kubelet::csr::DEFAULT_API_TIMEOUT),
        restart_units: k
            .restart_unit
            .clone()
            .unwrap_or_else(|| vec![DEFAULT_KUBELET_UNIT.to_string()]),
        serving,
        defer_to_kubelet_rotation: k.defer_to_kubelet_rotation.unwrap_or(true),
        lock_path: lock_path(state_dir),
    };
    tracing::info!(node = %settings.node_name, bootstrap_kubeconfig = %settings.bootstrap_kubeconfig.display(), pki_dir = %settings.pki_dir.display(), "kubelet certificate job is on");
    Ok(Some(KubeletManager::new(
        host.clone(),
        DbusSystemd::new(bus.to_string()),
        settings,
    )))
}

/// The detected layout with the config's overrides applied.
fn layout_for(host: &HostRoot, settings: &Settings) -> anyhow::Result<TrustStoreLayout> {
    let o = &settings.trust_store;
    let detected = detect_layout(host);
    let mut layout = match (detected, &o.anchors_dir, &o.refresh_command, &o.bundle) {
        (Ok(l), ..) => l,
        // An unknown distro works when the config says everything.
        (Err(_), Some(_), Some(_), Some(_)) => {
            node_cert_agent::node::distro::Family::Debian.layout()
        }
        (Err(e), ..) => return Err(e.into()),
    };
    if let Some(d) = &o.anchors_dir {
        layout.anchors_dir = d.clone();
    }
    if let Some(c) = &o.refresh_command {
        layout.refresh_command = c.clone();
    }
    if let Some(b) = &o.bundle {
        layout.bundle_path = b.clone();
    }
    if let Some(e) = &o.anchor_extension {
        layout.anchor_extension = e.clone();
    }
    Ok(layout)
}

fn check(args: &CheckArgs) -> ExitCode {
    let now = now_unix();
    let mut inputs = Vec::new();
    for p in &args.paths {
        if p.is_dir() {
            inputs.push(read_source(&SourceSpec::SecretDir(p.clone()), now));
            continue;
        }
        // A Secret manifest is linted key by key, as the daemon would see it.
        match node_cert_agent::trust::sources::read_secret_manifest(p) {
            Ok(Some(secrets)) => {
                for (name, keys) in secrets {
                    inputs.push(node_cert_agent::trust::sources::validate_raw_keys(
                        name, keys, now,
                    ));
                }
            }
            _ => inputs.push(read_source(&SourceSpec::File(p.clone()), now)),
        }
    }
    let total = plan::plan(
        &inputs,
        &KeyState::new(),
        &Default::default(),
        args.max_certificates,
    );
    let per_key = inputs.iter().flat_map(|i| match &i.keys {
        Err(f) => vec![f.clone()],
        Ok(vs) => vs.iter().flat_map(|v| v.findings.iter().cloned()).collect(),
    });
    let all: Vec<_> = per_key.chain(total.findings.iter().cloned()).collect();
    let errors = all.iter().filter(|f| f.is_error()).count();
    let warnings = all.len() - errors;
    if args.output == OutputFormat::Json {
        println!(
            "{}",
            check_json(
                &inputs,
                &total.findings,
                total.desired.len(),
                errors,
                warnings
            )
        );
    } else {
        print_check_table(&inputs, &total.findings);
        println!(
            "{} distinct certificate(s), {errors} error(s), {warnings} warning(s)",
            total.desired.len()
        );
    }
    if errors > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

fn key_status(v: &node_cert_agent::trust::validate::KeyVerdict) -> &'static str {
    if v.rejected {
        "REFUSED"
    } else if v.has_errors() {
        "partly used"
    } else {
        "ok"
    }
}

fn print_check_table(
    inputs: &[node_cert_agent::trust::plan::SourceInput],
    totals: &[node_cert_agent::trust::validate::Finding],
) {
    for input in inputs {
        println!("{}:", input.source);
        match &input.keys {
            Err(f) => println!("  {f}"),
            Ok(verdicts) if verdicts.is_empty() => println!("  (no keys)"),
            Ok(verdicts) => {
                for v in verdicts {
                    println!(
                        "  key \"{}\": {}, {} certificate(s) to trust",
                        v.key,
                        key_status(v),
                        v.certs.len()
                    );
                    for c in &v.certs {
                        println!(
                            "    - Subject \"{}\", expires {}, SHA256 {}",
                            c.subject,
                            rfc3339(c.not_after),
                            c.fingerprint.short()
                        );
                    }
                    for f in &v.findings {
                        println!("    {f}");
                    }
                }
            }
        }
    }
    for f in totals {
        println!("{f}");
    }
}

/// `check --output json`: schemaVersion 1, documented in the README.
fn check_json(
    inputs: &[node_cert_agent::trust::plan::SourceInput],
    totals: &[node_cert_agent::trust::validate::Finding],
    distinct: usize,
    errors: usize,
    warnings: usize,
) -> String {
    use node_cert_agent::trust::validate::{Finding, Severity};
    let finding = |f: &Finding| {
        serde_json::json!({
            "severity": if f.severity == Severity::Error { "error" } else { "warning" },
            "kind": format!("{:?}", f.kind),
            "key": f.key,
            "position": f.position,
            "problem": f.problem,
            "fix": f.fix,
            "message": f.to_string(),
        })
    };
    let sources: Vec<_> = inputs
        .iter()
        .map(|i| match &i.keys {
            Err(f) => serde_json::json!({"source": i.source, "error": finding(f), "keys": []}),
            Ok(vs) => serde_json::json!({
                "source": i.source,
                "keys": vs.iter().map(|v| serde_json::json!({
                    "key": v.key,
                    "status": key_status(v),
                    "certificates": v.certs.iter().map(|c| serde_json::json!({
                        "subject": c.subject,
                        "issuer": c.issuer,
                        "serial": c.serial,
                        "notBefore": rfc3339(c.not_before),
                        "notAfter": rfc3339(c.not_after),
                        "sha256": c.fingerprint.hex(),
                    })).collect::<Vec<_>>(),
                    "findings": v.findings.iter().map(finding).collect::<Vec<_>>(),
                })).collect::<Vec<_>>(),
            }),
        })
        .collect();
    serde_json::json!({
        "schemaVersion": 1,
        "sources": sources,
        "findings": totals.iter().map(finding).collect::<Vec<_>>(),
        "summary": {"distinctCertificates": distinct, "errors": errors, "warnings": warnings, "valid": errors == 0},
    })
    .to_string()
}
