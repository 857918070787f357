//! `node-cert-agent fleet`: the I/O around `fleet::report`. Reads the
//! operator's kubeconfig (as kubectl), the CA Secret and every Node (pages
//! of `--page-size` with `continue`), prints the report; with `--wait`,
//! watches the Nodes until they converge, with a progress bar on a terminal
//! and plain lines otherwise.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use futures_util::StreamExt;
use k8s_openapi::api::core::v1::{Node, Secret};
use kube::api::{Api, ListParams};
use kube::runtime::watcher;
use node_cert_agent::config::SourceSpec;
use node_cert_agent::errors::error_chain;
use node_cert_agent::fleet::duration::parse_timeout;
use node_cert_agent::fleet::expected::{self, Expected};
use node_cert_agent::fleet::observed::NodeFacts;
use node_cert_agent::fleet::report::{
    judge, Report, Summary, EXIT_ERROR, EXIT_INTERRUPTED, EXIT_NOT_CONVERGED,
};
use node_cert_agent::k8s::client::{user_client, UserTarget};
use node_cert_agent::k8s::failure::{ApiFailure, FailureKind};
use node_cert_agent::k8s::watch::{self, Change};
use node_cert_agent::time::now_unix;
use node_cert_agent::trust::sources::read_source;

use crate::cli::{FleetArgs, OutputFormat};

/// `node-cert-agent fleet`: 0 converged, 1 not, 2 cannot run, 130 Ctrl-C.
pub fn fleet(args: FleetArgs) -> ExitCode {
    match run(args) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            super::report_error(&e);
            ExitCode::from(EXIT_ERROR)
        }
    }
}

fn run(args: FleetArgs) -> anyhow::Result<u8> {
    let timeout = if args.wait {
        Some(parse_timeout(&args.timeout)?)
    } else {
        None
    };
    let now = now_unix();
    let mut ca_files = Vec::new();
    for path in &args.ca_file {
        let input = read_source(&SourceSpec::File(path.clone()), now);
        if let Err(f) = &input.keys {
            anyhow::bail!("--ca-file {}: {f}", path.display());
        }
        ca_files.push(input);
    }
    let runtime = super::current_thread_runtime()?;
    runtime.block_on(async move {
        let (client, target) =
            user_client(args.kubeconfig.as_deref(), args.context.as_deref()).await?;
        let expected = read_expected(&client, &target, &args, ca_files).await?;
        let nodes: Api<Node> = Api::all(client);
        let listed = list_nodes(&nodes, &target, &args).await?;
        let report = Report::new(
            expected,
            listed.iter().map(NodeFacts::of_node),
            now_unix(),
            args.selector.clone(),
        );
        // Only the facts are kept while waiting: at 5,000 Nodes the objects
        // themselves are most of the memory.
        drop(listed);
        let Some(timeout) = timeout.filter(|_| !report.summary().all_converged()) else {
            print_report(&report, args.output)?;
            return Ok(report.exit_code());
        };
        let (report, code) = wait(&nodes, report, &args, timeout).await;
        print_report(&report, args.output)?;
        Ok(code)
    })
}

fn print_report(report: &Report, output: OutputFormat) -> anyhow::Result<()> {
    match output {
        OutputFormat::Table => print!("{}", report.table()),
        OutputFormat::Json => println!(
            "{}",
            serde_json::to_string_pretty(&report.json().context("encoding the report")?)
                .context("encoding the report")?
        ),
    }
    Ok(())
}

/// An API failure as one line: the call, the object, the kubeconfig and
/// context, the server's answer, and the fix.
fn api_error(e: &kube::Error, target: &UserTarget, call: &str, can_i: &str) -> anyhow::Error {
    let failure = ApiFailure::of(e);
    let fix = match failure.kind {
        FailureKind::Unauthorized => {
            "the server refused the kubeconfig's credentials: renew them, or pick another user or context".to_string()
        }
        FailureKind::Forbidden => format!(
            "the kubeconfig's user may not do this; check with `kubectl auth can-i {can_i}` and ask for that permission"
        ),
        FailureKind::Unreachable => {
            "the API server did not answer: check the kubeconfig's server, the network, and `kubectl cluster-info`".to_string()
        }
        _ => "retry; if it persists, check the API server's health".to_string(),
    };
    anyhow::anyhow!(
        "{call} on {} (kubeconfig {}, {}): {}; {fix}",
        target.server,
        target.kubeconfig,
        match &target.context {
            Some(c) => format!("context {c}"),
            None => "its current-context".to_string(),
        },
        match e {
            // The server's own words; kube's Display adds the whole Status.
            kube::Error::Api(status) =>
                format!("{} {}: {}", status.code, status.reason, failure.message),
            other => error_chain(other),
        },
    )
}

async fn read_expected(
    client: &kube::Client,
    target: &UserTarget,
    args: &FleetArgs,
    ca_files: Vec<node_cert_agent::trust::plan::SourceInput>,
) -> anyhow::Result<Expected> {
    let secret_ref = args.secret.to_string();
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &args.secret.namespace);
    let secret = secrets.get_opt(&args.secret.name).await.map_err(|e| {
        api_error(
            &e,
            target,
            &format!("reading Secret {secret_ref}"),
            &format!(
                "get secret/{} -n {}",
                args.secret.name, args.secret.namespace
            ),
        )
    })?;
    let data: Option<BTreeMap<String, Vec<u8>>> = secret.map(|s| {
        s.data
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k, v.0))
            .collect()
    });
    Ok(expected::expected(
        &secret_ref,
        data.as_ref(),
        ca_files,
        args.max_certificates,
        now_unix(),
    ))
}

/// Every selected Node, `--page-size` per request, following `continue`.
async fn list_nodes(
    nodes: &Api<Node>,
    target: &UserTarget,
    args: &FleetArgs,
) -> anyhow::Result<Vec<Node>> {
    let mut out = Vec::new();
    let mut params = ListParams::default().limit(args.page_size);
    if let Some(s) = &args.selector {
        params = params.labels(s);
    }
    loop {
        let page = nodes.list(&params).await.map_err(|e| {
            api_error(
                &e,
                target,
                &format!(
                    "listing Nodes{}",
                    args.selector
                        .as_deref()
                        .map(|s| format!(" (-l {s})"))
                        .unwrap_or_default()
                ),
                "list nodes",
            )
        })?;
        out.extend(page.items);
        match page.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(token) => params = params.continue_token(&token),
            None => return Ok(out),
        }
    }
}

/// How `--wait` shows progress: a bar on a terminal, lines otherwise.
enum Progress {
    /// Made at the first count, so that its first frame is a real one.
    Bar(Option<indicatif::ProgressBar>),
    Lines {
        last: String,
        at: Option<std::time::Instant>,
    },
}

/// Plain progress lines come at most this often (the final one always):
/// a rollout over 5,000 nodes is 5,000 changes.
const LINE_INTERVAL: Duration = Duration::from_secs(1);

impl Progress {
    fn new() -> Progress {
        if std::io::stderr().is_terminal() {
            Progress::Bar(None)
        } else {
            Progress::Lines {
                last: String::new(),
                at: None,
            }
        }
    }

    fn show(&mut self, s: &Summary) {
        match self {
            Progress::Bar(bar) => {
                let line = s.line();
                let rest = line
                    .split_once("; ")
                    .map(|(_, r)| r.to_string())
                    .unwrap_or_default();
                match bar {
                    Some(bar) => {
                        bar.set_message(rest);
                        bar.set_length(s.total as u64);
                        bar.set_position(s.converged as u64);
                    }
                    None => {
                        let new = indicatif::ProgressBar::new(s.total as u64)
                            .with_position(s.converged as u64)
                            .with_message(rest);
                        if let Ok(style) = indicatif::ProgressStyle::with_template(
                            "{bar:30} {pos}/{len} converged  {msg}",
                        ) {
                            new.set_style(style);
                        }
                        new.tick();
                        *bar = Some(new);
                    }
                }
            }
            Progress::Lines { last, at } => {
                let line = s.line();
                let due = at.is_none_or(|t| t.elapsed() >= LINE_INTERVAL) || s.all_converged();
                if *line != **last && due {
                    eprintln!("fleet: {line}");
                    *last = line;
                    *at = Some(std::time::Instant::now());
                }
            }
        }
    }

    fn note(&self, text: &str) {
        match self {
            Progress::Bar(Some(bar)) => bar.println(format!("fleet: {text}")),
            Progress::Bar(None) => eprintln!("fleet: {text}"),
            Progress::Lines { .. } => eprintln!("fleet: {text}"),
        }
    }

    fn finish(&self) {
        // The report that follows has the final count.
        if let Progress::Bar(Some(bar)) = self {
            bar.finish_and_clear();
        }
    }
}

/// Watches the selected Nodes until all have converged, `timeout` passes or
/// Ctrl-C; the last report and its exit code.
async fn wait(
    nodes: &Api<Node>,
    first: Report,
    args: &FleetArgs,
    timeout: Duration,
) -> (Report, u8) {
    let expected = first.expected.clone();
    let mut facts: BTreeMap<String, NodeFacts> = first
        .rows
        .into_iter()
        .map(|r| (r.node.name.clone(), r.node))
        .collect();
    let summary_of = |facts: &BTreeMap<String, NodeFacts>| {
        Summary::of(facts.values().map(|f| (judge(f, &expected), f)))
    };
    let report_of = |facts: &BTreeMap<String, NodeFacts>| {
        Report::new(
            expected.clone(),
            facts.values().cloned(),
            now_unix(),
            args.selector.clone(),
        )
    };
    // Registered before the first progress line: from then on Ctrl-C is
    // ours (a clean stop), never the default (killed by the signal).
    let mut interrupt =
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt()) {
            Ok(s) => Some(s),
            Err(e) => {
                eprintln!(
                    "fleet: cannot catch Ctrl-C ({e}); it will end the command without a report"
                );
                None
            }
        };
    let mut progress = Progress::new();
    progress.show(&summary_of(&facts));
    let mut config = watcher::Config::default().page_size(args.page_size);
    if let Some(s) = &args.selector {
        config = config.labels(s);
    }
    let nodes = nodes.clone();
    // Each Node becomes its facts as it arrives, so a relist of 5,000
    // Nodes never holds the objects.
    let mut stream = watch::changes(move || {
        watcher(nodes.clone(), config.clone())
            .map(|event| event.map(facts_event))
            .boxed()
    })
    .boxed();
    let deadline = tokio::time::sleep(timeout);
    let mut deadline = std::pin::pin!(deadline);
    let code = loop {
        let event = tokio::select! {
            e = stream.next() => e,
            () = &mut deadline => {
                progress.note(&format!("timed out after {}: not every node converged", args.timeout));
                break EXIT_NOT_CONVERGED;
            }
            Some(()) = async {
                match interrupt.as_mut() {
                    Some(s) => s.recv().await,
                    None => std::future::pending().await,
                }
            } => {
                progress.note("interrupted (Ctrl-C): the report below is the state when stopped");
                break EXIT_INTERRUPTED;
            }
        };
        let changed = match event {
            None => {
                progress.note("the watch of Nodes ended");
                break EXIT_NOT_CONVERGED;
            }
            Some(Change::Failed { failure, .. }) if failure.is_auth() => {
                progress.note(&format!(
                    "watching Nodes: {failure}; the kubeconfig's user may not watch them: check with `kubectl auth can-i watch nodes` and ask for that permission"
                ));
                break EXIT_ERROR;
            }
            Some(Change::Failed {
                failure,
                retry_in,
                repeated,
            }) => {
                if !repeated {
                    progress.note(&format!(
                        "watching Nodes: {failure}; retrying in {}s",
                        retry_in.as_secs()
                    ));
                }
                false
            }
            Some(Change::Listed { objects, .. }) => {
                facts = objects.into_iter().map(|f| (f.name.clone(), f)).collect();
                true
            }
            Some(Change::Applied(f)) => {
                facts.insert(f.name.clone(), f);
                true
            }
            Some(Change::Deleted(f)) => {
                facts.remove(&f.name);
                true
            }
        };
        if changed {
            let summary = summary_of(&facts);
            progress.show(&summary);
            if summary.all_converged() {
                break 0;
            }
        }
    };
    progress.finish();
    (report_of(&facts), code)
}

/// A watcher event of a Node as the event of its facts.
fn facts_event(event: watcher::Event<Node>) -> watcher::Event<NodeFacts> {
    match event {
        watcher::Event::Init => watcher::Event::Init,
        watcher::Event::InitApply(n) => watcher::Event::InitApply(NodeFacts::of_node(&n)),
        watcher::Event::InitDone => watcher::Event::InitDone,
        watcher::Event::Apply(n) => watcher::Event::Apply(NodeFacts::of_node(&n)),
        watcher::Event::Delete(n) => watcher::Event::Delete(NodeFacts::of_node(&n)),
    }
}
