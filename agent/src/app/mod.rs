//! Composition: the commands put together from the library's parts. Settings
//! are resolved once (`config`), the node is looked at once (host root,
//! trust-store layout, node identity, bus address), and the results are
//! handed to the trust job, the kubelet job and the operator sinks.
//!
//! Boundary: wiring only. Every decision lives in the library's modules;
//! this is the one place (with `main`) that uses `anyhow`.

mod check;
mod fleet;
mod uninstall;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
pub use check::check;
pub use fleet::fleet;
use node_cert_agent::config::{self, FileConfig, Flags, Settings, SourceSpec};
use node_cert_agent::daemon;
use node_cert_agent::kubelet::manager::{lock_path, KubeletJob, KubeletManager};
use node_cert_agent::kubelet::scope;
use node_cert_agent::node::distro::TrustStoreLayout;
use node_cert_agent::node::fsutil;
use node_cert_agent::node::hostroot::HostRoot;
use node_cert_agent::node::identity::NodeIdentity;
use node_cert_agent::node::systemd::{bus_address, DbusSystemd, Systemd, UnitExec};
use node_cert_agent::ops::daemon_status::{AgentMode, DAEMON_STATUS_FILE};
use node_cert_agent::ops::logging;
use node_cert_agent::ops::recorder::{Recorder, RecorderOptions};
use node_cert_agent::status::{self, StatusSources};
use node_cert_agent::time::{now_unix, rfc3339};
use node_cert_agent::trust;
use node_cert_agent::trust::api_secret::SecretCache;
use node_cert_agent::trust::reconcile::{CaSettings, Reconciler};
use node_cert_agent::trust::state::STATE_FILE;
use node_cert_agent::trust::store::{layout_for, TrustStore};

use crate::cli::{OutputFormat, RenewArgs, RunArgs, StatusArgs, UninstallArgs};

/// The node as this process sees it, looked at once.
struct NodeView {
    host: HostRoot,
    identity: NodeIdentity,
    /// The state directory as this process sees it.
    state_dir: PathBuf,
    /// The system bus address.
    bus: String,
}

impl NodeView {
    fn of(settings: &Settings) -> anyhow::Result<Self> {
        let host = HostRoot::new(&settings.host_root)?;
        let identity = scope::node_identity(&host, &settings.kubelet);
        let state_dir = host.resolve(&settings.state_dir)?;
        let env: HashMap<String, String> = std::env::vars().collect();
        let bus = bus_address(&env, &host.resolve(Path::new(config::SYSTEM_BUS_SOCKET))?);
        Ok(Self {
            host,
            identity,
            state_dir,
            bus,
        })
    }

    /// Whether the kubelet job runs on this node (`auto`: where kubelet
    /// bootstraps or holds a client certificate).
    fn kubelet_job_enabled(&self, settings: &Settings) -> bool {
        settings
            .kubelet
            .job_enabled(&scope::kubelet_on_node(&self.host, &settings.kubelet))
    }

    /// The kubelet job, if it runs on this node.
    fn kubelet_job(&self, settings: &Settings) -> anyhow::Result<Option<KubeletJob>> {
        if !self.kubelet_job_enabled(settings) {
            tracing::info!("kubelet certificate job is off (no bootstrap kubeconfig, and kubelet's kubeconfig names no client certificate: a token or an exec plugin leaves nothing to renew; --kubelet on forces it)");
            return Ok(None);
        }
        let node_name = scope::job_node_name(&self.identity, &settings.kubelet)?;
        let serving = settings.kubelet.serving_names();
        let job = KubeletJob {
            settings: settings.kubelet.clone(),
            node_name,
            serving,
            lock_path: lock_path(&self.state_dir),
            // A pod sees kubelet's directory read-only: only the host writes
            // kubelet's kubeconfig.
            write_kubeconfig: AgentMode::of_host_root(&settings.host_root) == AgentMode::Host,
        };
        tracing::info!(node = %job.node_name, bootstrap_kubeconfig = %job.settings.bootstrap_kubeconfig.display(), pki_dir = %job.settings.pki_dir.display(), "kubelet certificate job is on");
        Ok(Some(job))
    }

    fn kubelet_manager(
        &self,
        settings: &Settings,
    ) -> anyhow::Result<Option<KubeletManager<DbusSystemd>>> {
        Ok(self.kubelet_job(settings)?.map(|job| {
            KubeletManager::new(self.host.clone(), DbusSystemd::new(self.bus.clone()), job)
        }))
    }
}

/// The file (if any) and the flags, resolved.
fn settings_of(config_file: Option<PathBuf>, flags: Flags) -> anyhow::Result<Settings> {
    let file = match &config_file {
        Some(path) => config::load_file(path)?,
        None => FileConfig::default(),
    };
    Ok(config::resolve(file, flags)?)
}

fn current_thread_runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

/// How long `run --once` waits for the Secret's first list.
const ONCE_SYNC_WAIT: Duration = Duration::from_secs(30);

/// `node-cert-agent run`.
pub fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    let (config_file, flags, log_target) = args.into_flags();
    let settings = settings_of(config_file, flags)?;
    logging::init(settings.ops.log_format, log_target)?;

    let node = NodeView::of(&settings)?;
    let layout = layout_for(&node.host, &settings.trust.trust_store)?;
    fsutil::ensure_dir(&node.state_dir, 0o700)
        .with_context(|| format!("creating the state directory {}", node.state_dir.display()))?;
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        host_root = %settings.host_root.display(),
        family = layout.family.name(),
        anchors_dir = %layout.anchors_dir.display(),
        bundle = %layout.bundle_path.display(),
        restart_units = %settings.trust.restart_units.join(","),
        bus = %node.bus,
        "node-cert-agent starting"
    );
    let reconciler = trust_job(&node, &settings, &layout)?;

    let runtime = current_thread_runtime()?;
    if settings.once {
        let Some(reconciler) = reconciler else {
            anyhow::bail!("--once reconciles the CA trust, but no CA source is configured; use `renew` for kubelet certificates");
        };
        let outcome = runtime.block_on(async {
            // The Secret through the API: one list (as the daemon's watch
            // would start with), then the pass.
            let _watch = reconciler.settings().api_secret.clone().map(|cache| {
                daemon::secret_watch::start(cache, settings.trust.ca_secret_kubeconfig.clone())
            });
            if let Some(cache) = &reconciler.settings().api_secret {
                daemon::secret_watch::first_sync(cache, ONCE_SYNC_WAIT).await;
            }
            daemon::reconcile_once(&reconciler).await
        })?;
        daemon::log_outcome(&outcome);
        return Ok(if outcome.has_input_errors() {
            ExitCode::FAILURE
        } else {
            ExitCode::SUCCESS
        });
    }
    let kubelet = node.kubelet_manager(&settings)?;
    let certificates = StatusSources::from_settings(
        &settings,
        node.host.clone(),
        Ok(layout),
        &node.identity,
        kubelet.is_some(),
    );
    let metrics = Arc::new(Recorder::new(RecorderOptions {
        mode: AgentMode::of_host_root(&settings.host_root),
        started_at: now_unix(),
        ca_job: reconciler.is_some(),
        kubelet_job: kubelet.is_some(),
        metrics_address: settings.ops.metrics_address,
    }));
    // One probe at start: the wrong overlay (or a read-only /usr) is named
    // with its fix in the log and /readyz, not as a bare EROFS per pass.
    if let Some(r) = &reconciler {
        if let Err(e) = r.store().probe_writable() {
            tracing::error!("{e}");
            metrics.set_store_unwritable(e.to_string());
        }
    }
    let fleet = match &kubelet {
        Some(manager) if settings.ops.fleet_publish => {
            // The node's own identity, read at each write (it changes when
            // the client certificate is renewed).
            let identity = KubeletManager::new(
                node.host.clone(),
                DbusSystemd::new(node.bus.clone()),
                manager.job(),
            );
            Some(daemon::FleetPublish {
                node: manager.node_name().to_string(),
                client: Arc::new(move || identity.node_client()),
                state_path: node.state_dir.join(daemon::publish_loop::PUBLISHED_FILE),
                spread: settings.ops.fleet_publish_spread,
            })
        }
        Some(_) => {
            tracing::info!("fleet-publish: false: the node's state is not published on its Node");
            None
        }
        None => {
            if settings.ops.fleet_publish {
                tracing::info!("the node's state is not published on its Node: that uses the node's identity, which the kubelet certificate job keeps, and the job is off");
            }
            None
        }
    };
    // The pods still waiting for a pull after a CA change are listed with
    // the node's identity (a node may list the pods bound to it), which the
    // kubelet job keeps; without it they are not reported.
    let waiting_pods = match (&reconciler, &kubelet) {
        (Some(_), Some(manager)) => {
            let identity = KubeletManager::new(
                node.host.clone(),
                DbusSystemd::new(node.bus.clone()),
                manager.job(),
            );
            Some(daemon::waiting_pods::WaitingPodsCheck::new(
                manager.node_name().to_string(),
                Arc::new(move || identity.node_client()),
            ))
        }
        (Some(_), None) => {
            tracing::info!("pods waiting for an image pull after a CA change are not reported: listing them uses the node's identity, which the kubelet certificate job keeps, and the job is off");
            None
        }
        (None, _) => None,
    };
    let obs = daemon::Observability {
        metrics,
        listen: settings.ops.metrics_address,
        status_path: node.state_dir.join(DAEMON_STATUS_FILE),
        certificates: Some(certificates.inventory()),
        fleet,
        waiting_pods,
    };
    if let Some(manager) = &kubelet {
        // Node Events need the node's API identity, which the kubelet job
        // keeps; a second handle reads it when an event is posted.
        let identity = KubeletManager::new(
            node.host.clone(),
            DbusSystemd::new(node.bus.clone()),
            manager.job(),
        );
        let _enter = runtime.enter();
        let sink = node_cert_agent::ops::events::start(
            manager.node_name().to_string(),
            Arc::new(move || identity.node_client()),
        );
        obs.metrics.set_event_sink(sink);
    }
    // One watch of the Secret through the API, for the daemon's lifetime.
    let _secret_watch = reconciler
        .as_ref()
        .and_then(|r| r.settings().api_secret.clone())
        .map(|cache| {
            let _enter = runtime.enter();
            daemon::secret_watch::start(cache, settings.trust.ca_secret_kubeconfig.clone())
        });
    runtime.block_on(daemon::run(
        reconciler,
        kubelet,
        settings.trust.debounce,
        obs,
    ))?;
    Ok(ExitCode::SUCCESS)
}

/// The trust job, if a CA source is configured. A kubelet-only agent leaves
/// the CA state (and anchors) alone entirely.
fn trust_job(
    node: &NodeView,
    settings: &Settings,
    layout: &TrustStoreLayout,
) -> anyhow::Result<Option<Reconciler<DbusSystemd>>> {
    if settings.trust.sources.is_empty() && settings.trust.ca_secret.is_none() {
        return Ok(None);
    }
    let window = settings.trust.restart_spread;
    let restart_delay = match node.identity.name.as_deref() {
        Some(name) => trust::restart::spread_offset(name, window),
        None if window.is_zero() => Duration::ZERO,
        None => anyhow::bail!(
            "restart-spread-seconds needs the node's name: set NODE_NAME or --node-name"
        ),
    };
    let reconciler = Reconciler::new(
        TrustStore::new(node.host.clone(), layout.clone()),
        DbusSystemd::new(node.bus.clone()),
        CaSettings {
            sources: settings.trust.sources.clone(),
            api_secret: settings
                .trust
                .ca_secret
                .clone()
                .map(|s| Arc::new(SecretCache::new(s))),
            restart_delay,
            restart_units: settings.trust.restart_units.clone(),
            restart_spacing: settings.trust.restart_min_spacing,
            max_certificates: settings.trust.max_certificates,
            state_path: node.state_dir.join(STATE_FILE),
        },
    );
    reconciler.sweep()?;
    Ok(Some(reconciler))
}

/// `node-cert-agent renew`.
pub fn renew(args: RenewArgs) -> anyhow::Result<ExitCode> {
    let (config_file, flags, log_target) = args.run.into_flags();
    let mut settings = settings_of(config_file, flags)?;
    logging::init(settings.ops.log_format, log_target)?;
    settings.kubelet.mode = config::KubeletMode::On;
    let node = NodeView::of(&settings)?;
    let manager = node
        .kubelet_manager(&settings)?
        .context("the kubelet certificate job is not configured")?;
    let runtime = current_thread_runtime()?;
    let outcome = runtime.block_on(manager.pass(args.force))?;
    if outcome.renewed.is_empty() && outcome.failures.is_empty() {
        println!("nothing renewed (use --force to renew healthy certificates)");
    }
    for kind in &outcome.renewed {
        println!("renewed the kubelet {} certificate", kind.name());
    }
    for failure in &outcome.failures {
        eprintln!("error: {failure}");
    }
    if let Some(d) = outcome.next_deadline {
        println!("next renewal: {}", rfc3339(d));
    }
    // A renewal that failed is a failed command, whatever else succeeded:
    // scripts retry on the exit code.
    Ok(if outcome.failures.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// The config file of a command that reports on (or cleans up) a node:
/// `--config` if given, else the node's own host-mode config under
/// `host_root`, if it has one (then its paths are node paths: the second
/// value says so).
fn node_config_file(
    config: Option<&Path>,
    host_root: Option<&Path>,
) -> anyhow::Result<(FileConfig, bool)> {
    if let Some(path) = config {
        return Ok((config::load_file(path)?, false));
    }
    let probe_root = HostRoot::new(host_root.unwrap_or(Path::new("/")))?;
    let path = probe_root.resolve(Path::new(config::HOST_CONFIG_FILE))?;
    Ok(if path.is_file() {
        (config::load_file(&path)?, true)
    } else {
        (FileConfig::default(), false)
    })
}

/// `node-cert-agent uninstall`.
pub fn uninstall(args: UninstallArgs) -> anyhow::Result<ExitCode> {
    let (file, _) = node_config_file(args.config.as_deref(), args.host_root.as_deref())?;
    let settings = config::resolve_for_status(
        file,
        Flags {
            host_root: args.host_root,
            state_dir: args.state_dir,
            restart_unit: args.restart_unit,
            ..Flags::default()
        },
    )?;
    logging::init(settings.ops.log_format, args.log_target)?;
    let node = NodeView::of(&settings)?;
    let layout = layout_for(&node.host, &settings.trust.trust_store)?;
    let anchors_dir = layout.anchors_dir.clone();
    let runtime = current_thread_runtime()?;
    let removal = runtime.block_on(uninstall::remove_agent_trust(
        TrustStore::new(node.host.clone(), layout),
        DbusSystemd::new(node.bus.clone()),
        settings.trust.restart_units.clone(),
        &node.state_dir,
    ))?;
    daemon::log_outcome(&removal.outcome);
    print!(
        "{}",
        uninstall::summary(&removal, &anchors_dir, &settings.state_dir)
    );
    Ok(ExitCode::SUCCESS)
}

/// `node-cert-agent status`.
pub fn status(args: StatusArgs) -> anyhow::Result<ExitCode> {
    let (file, node_config) = node_config_file(args.config.as_deref(), args.host_root.as_deref())?;
    let settings = config::resolve_for_status(
        file,
        Flags {
            host_root: args.host_root,
            state_dir: args.state_dir,
            node_name: args.node_name,
            ..Flags::default()
        },
    )?;
    let node = NodeView::of(&settings)?;
    let layout = layout_for(&node.host, &settings.trust.trust_store).map_err(|e| e.to_string());
    let mut sources = StatusSources::from_settings(
        &settings,
        node.host.clone(),
        layout,
        &node.identity,
        node.kubelet_job_enabled(&settings),
    );
    let mut units = vec![settings.kubelet.kubelet_unit().to_string()];
    units.extend(settings.trust.restart_units.iter().cloned());
    sources.unit_execs = unit_execs(&node.bus, &units);
    if node_config && settings.host_root != Path::new("/") {
        // The node's config names its inputs as node paths.
        for spec in &mut sources.sources {
            let resolved = node.host.resolve(spec.path())?;
            *spec = match spec {
                SourceSpec::SecretDir(_) => SourceSpec::SecretDir(resolved),
                SourceSpec::File(_) => SourceSpec::File(resolved),
            };
        }
    }
    let report = status::build_report(&status::gather(&sources, now_unix()));
    match args.output {
        OutputFormat::Table => print!("{}", status::render_table(&report)),
        OutputFormat::Json => print!("{}", status::render_json(&report)?),
    }
    Ok(ExitCode::from(report.exit_code()))
}

/// How `units` start their process, as systemd says over D-Bus (at most
/// 2 s per unit); a unit it cannot tell is left out, and `status` then
/// says the command line was not read.
fn unit_execs(bus: &str, units: &[String]) -> BTreeMap<String, UnitExec> {
    let Ok(rt) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        return BTreeMap::new();
    };
    rt.block_on(async {
        let systemd = DbusSystemd::new(bus.to_string());
        let mut out = BTreeMap::new();
        for unit in units {
            if out.contains_key(unit) {
                continue;
            }
            let asked = tokio::time::timeout(Duration::from_secs(2), systemd.unit_exec(unit));
            if let Ok(Ok(exec)) = asked.await {
                out.insert(unit.clone(), exec);
            }
        }
        out
    })
}

/// How `main` prints an error chain: one line, escaped (it may name a
/// path or key from the input).
pub fn report_error(e: &anyhow::Error) {
    eprintln!(
        "node-cert-agent: error: {}",
        node_cert_agent::text::escape(&node_cert_agent::errors::error_chain(e.as_ref()))
    );
}
