//! `node-cert-agent check`: lint Secret directories, provisioning files and
//! Secret manifests offline, with the daemon's own validation and planning.

use std::process::ExitCode;

use node_cert_agent::config::{SecretRef, SourceSpec};
use node_cert_agent::k8s::failure::ApiFailure;
use node_cert_agent::k8s::source::SourceState;
use node_cert_agent::text::escape;
use node_cert_agent::time::{now_unix, rfc3339};
use node_cert_agent::trust::api_secret;
use node_cert_agent::trust::check_report::{key_status, CheckReport};
use node_cert_agent::trust::plan::{self, KeyState, SourceInput};
use node_cert_agent::trust::secret_manifest;
use node_cert_agent::trust::sources::{self, read_source};
use node_cert_agent::trust::validate::Finding;

use crate::cli::{CheckArgs, OutputFormat};

pub fn check(args: &CheckArgs) -> ExitCode {
    let now = now_unix();
    let mut inputs = Vec::new();
    if let Some(secret) = &args.secret {
        match live_secret(secret, now) {
            Ok(input) => inputs.push(input),
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(2);
            }
        }
    }
    for p in &args.paths {
        if p.is_dir() {
            inputs.push(read_source(&SourceSpec::SecretDir(p.clone()), now));
            continue;
        }
        // A Secret manifest is linted key by key, as the daemon would see it.
        match secret_manifest::read_secret_manifest(p) {
            Ok(Some(secrets)) => {
                for (name, keys) in secrets {
                    inputs.push(sources::validate_raw_keys(name, keys, now));
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
    let report = CheckReport::new(&inputs, &total.findings, total.desired.len());
    let (errors, warnings) = (report.summary.errors, report.summary.warnings);
    if args.output == OutputFormat::Json {
        match report.to_json() {
            Ok(json) => println!("{json}"),
            Err(e) => {
                eprintln!("error: encoding the report: {e}");
                return ExitCode::from(2);
            }
        }
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

/// The live Secret `secret`, read with the user's kubeconfig (as kubectl:
/// `$KUBECONFIG`, else `~/.kube/config`), judged as the daemon would.
fn live_secret(secret: &SecretRef, now: i64) -> anyhow::Result<SourceInput> {
    use anyhow::Context;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async {
        let client = kube::Client::try_default().await.context(
            "no usable kubeconfig: set KUBECONFIG or write ~/.kube/config (as for kubectl)",
        )?;
        let api: kube::Api<k8s_openapi::api::core::v1::Secret> =
            kube::Api::namespaced(client, &secret.namespace);
        let view = match api.get_opt(&secret.name).await {
            Ok(Some(s)) => api_secret::view_of(s),
            Ok(None) => anyhow::bail!(
                "Secret {secret} does not exist; create it, or check the name and the kubeconfig's cluster"
            ),
            Err(e) => anyhow::bail!("cannot read Secret {secret}: {}", ApiFailure::of(&e)),
        };
        Ok(api_secret::input_of(
            secret,
            Some(&view),
            &SourceState::Synced,
            now,
        ))
    })
}

/// The table: every line through the one escaping rule (`text::escape`),
/// since key names, subjects and paths are the input being linted.
fn print_check_table(inputs: &[SourceInput], totals: &[Finding]) {
    let say = |line: String| println!("{}", escape(&line));
    for input in inputs {
        say(format!("{}:", input.source));
        match &input.keys {
            Err(f) => say(format!("  {f}")),
            Ok(verdicts) if verdicts.is_empty() => say("  (no keys)".to_string()),
            Ok(verdicts) => {
                for v in verdicts {
                    say(format!(
                        "  key \"{}\": {}, {} certificate(s) to trust",
                        v.key,
                        key_status(v),
                        v.certs.len()
                    ));
                    for c in &v.certs {
                        say(format!(
                            "    - Subject \"{}\", expires {}, SHA256 {}",
                            c.subject,
                            rfc3339(c.not_after),
                            c.fingerprint.short()
                        ));
                    }
                    for f in &v.findings {
                        say(format!("    {f}"));
                    }
                }
            }
        }
    }
    for f in totals {
        say(f.to_string());
    }
}
