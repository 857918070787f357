//! The kubelet certificate job against a cluster as strict as a real one:
//! the test API server takes its authorization only from upstream's
//! default policy (a kubeadm cluster, with or without its CSR auto-approve
//! bindings) and from the RBAC that `manifests/base` ships.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a failed step must panic loudly"
)]

use std::process::Command;
use std::time::{Duration, Instant};

use integration_tests::agent::{
    agent_binary, host_config, render_tail, workspace_dir, HostModeAgent, HOST_SECRET_DIR,
};
use integration_tests::kubelet_node::{serial, KubeletFixture, CLIENT_LINK, NODE_NAME, PKI};
use integration_tests::rbac::shipped_rbac;
use integration_tests::wait_until;
use nca_test_apiserver::Profile;
use serde_json::{json, Value};

/// The namespace the agent reads RenewRevocations from by default.
const REVOCATIONS_NS: &str = "kube-system";

/// Waits until the agent's RenewRevocation watch is up (a watch request of
/// the node's identity).
fn wait_for_revocation_watch(fx: &KubeletFixture) {
    wait_until(Duration::from_secs(60), "the RenewRevocation watch", || {
        fx.server
            .requests()
            .iter()
            .any(|r| r.resource == "renewrevocations" && r.verb == "watch" && r.code == 200)
    });
}

#[test]
fn the_documented_renewrevocation_applies_unchanged_and_is_honoured() {
    let fx = KubeletFixture::new("kbc-docrev");
    let agent = fx.start_agent("");
    let first = fx.wait_for_client_cert(&agent, "the first certificate", |_| true);
    wait_for_revocation_watch(&fx);

    let example = workspace_dir().join("manifests/examples/renewrevocation.yaml");
    let example = example.to_str().unwrap();
    let dry = fx.kubectl_admin(&["apply", "--dry-run=server", "-f", example]);
    assert!(
        dry.status.success(),
        "kubectl apply --dry-run=server of the documented example failed:\n{}{}",
        String::from_utf8_lossy(&dry.stdout),
        String::from_utf8_lossy(&dry.stderr)
    );
    assert!(
        fx.server.revocations().is_empty(),
        "a dry run stores nothing"
    );
    let applied = fx.kubectl_admin(&["apply", "-f", example]);
    assert!(
        applied.status.success(),
        "{}",
        String::from_utf8_lossy(&applied.stderr)
    );
    let stored = fx.server.revocations();
    assert_eq!(stored.len(), 1, "{stored:?}");
    let entries = stored[0]["spec"]["revocations"].as_array().unwrap();
    assert_eq!(entries.len(), 5, "all five entries are kept: {stored:?}");
    assert!(
        entries.iter().all(|e| e["description"].is_string()),
        "the entries' descriptions are kept, not pruned: {entries:?}"
    );
    // None of the documented entries matches this node: nothing renews.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(serial(&fx.client_cert().unwrap()), serial(&first));
    let logs = agent.logs();
    assert!(
        !logs.iter().any(|e| e.message.contains("malformed")
            || e.message.contains("ignoring a RenewRevocation entry")),
        "the documented object must read cleanly:\n{}",
        render_tail(&logs, 30)
    );

    // The same form, with this node's serial: honoured, with the entry's
    // own description in the log.
    let revoke = json!({
        "apiVersion": "certificates.microsoft.com/v1",
        "kind": "RenewRevocation",
        "metadata": {"name": "incident-7", "namespace": REVOCATIONS_NS},
        "spec": {
            "description": "incident 7",
            "revocations": [{
                "kind": "serialnumber",
                "description": "the key of node n1 leaked",
                "serialNumber": serial(&first),
            }],
        },
    });
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), revoke.to_string()).unwrap();
    let applied = fx.kubectl_admin(&["apply", "-f", file.path().to_str().unwrap()]);
    assert!(
        applied.status.success(),
        "{}",
        String::from_utf8_lossy(&applied.stderr)
    );
    let second = fx.wait_for_client_cert(&agent, "the renewal the revocation asks for", |c| {
        serial(c) != serial(&first)
    });
    assert_ne!(serial(&second), serial(&first));
    assert!(
        agent
            .logs()
            .iter()
            .any(|e| e.message.contains("the key of node n1 leaked")),
        "the entry's description is not logged:\n{}",
        render_tail(&agent.logs(), 30)
    );
}

#[test]
fn a_serving_csr_pending_forever_after_a_client_revocation_restarts_kubelet_once_with_the_new_client_certificate(
) {
    let fx = KubeletFixture::new("kbc-unit");
    let agent = fx.start_agent(
        "  csr-timeout-seconds: 20\n  serving:\n    enabled: true\n    dns: [n1.nodes.test]\n",
    );
    let first = fx.wait_for_client_cert(&agent, "the bootstrapped client certificate", |_| true);
    // The serving CSR of the first pass goes out with the new client
    // identity, not the bootstrap token.
    wait_until(Duration::from_secs(30), "the serving CSR", || {
        fx.server
            .csrs()
            .iter()
            .any(|c| c.spec.signer_name == "kubernetes.io/kubelet-serving")
    });
    let serving = fx
        .server
        .csrs()
        .into_iter()
        .find(|c| c.spec.signer_name == "kubernetes.io/kubelet-serving")
        .unwrap();
    assert_eq!(
        serving.spec.username.as_deref(),
        Some(format!("system:node:{NODE_NAME}").as_str()),
        "the serving CSR must use the newest client identity"
    );
    wait_for_revocation_watch(&fx);
    let kubelet_before = fx.kubelet_pid();

    // Revoke the client certificate; nobody ever approves the serving CSR.
    fx.server
        .add_revocation(
            REVOCATIONS_NS,
            json!({
                "metadata": {"name": "revoke-client"},
                "spec": {"revocations": [{"kind": "serialnumber", "serialNumber": serial(&first)}]},
            }),
        )
        .unwrap();
    let second = fx.wait_for_client_cert(&agent, "the client renewal", |c| {
        serial(c) != serial(&first)
    });
    wait_until(Duration::from_secs(20), "kubelet's restart", || {
        fx.kubelet_pid() != kubelet_before
    });
    let restarted = fx.kubelet_pid();
    // The serving CSR times out (20 s) and fails: still no second restart.
    wait_until(
        Duration::from_secs(60),
        "the serving CSR to time out",
        || {
            agent.logs().iter().any(|e| {
                e.message.contains("got no certificate within") && e.message.contains("serving")
            })
        },
    );
    assert_eq!(fx.kubelet_pid(), restarted, "kubelet was restarted again");
    // kubelet reads the new client certificate.
    assert_eq!(serial(&fx.client_cert().unwrap()), serial(&second));
    let restarts = agent
        .logs()
        .iter()
        .filter(|e| e.message.contains("so it uses the new certificate"))
        .count();
    // One for the bootstrap, one for the revocation.
    assert_eq!(restarts, 2, "{}", render_tail(&agent.logs(), 40));
    // The failing serving CSR is this pass's failure; the state file owes nothing.
    let state = fx
        .node
        .read_file("/var/lib/node-cert-agent/kubelet-state.json");
    let state: Value = serde_json::from_slice(&state).unwrap();
    assert_eq!(state["restartPending"], json!([]), "{state}");
}

#[test]
fn a_410_and_a_dropped_watch_during_a_csr_wait_keep_waiting_on_the_same_csr() {
    let fx = KubeletFixture::with_cluster("kbc-410", Profile::OwnApprover, &shipped_rbac());
    let agent = fx.start_agent("  csr-timeout-seconds: 120\n");
    wait_until(Duration::from_secs(60), "the bootstrap CSR", || {
        !fx.server.csrs().is_empty()
    });
    wait_until(Duration::from_secs(30), "the CSR watch", || {
        fx.server.requests().iter().any(|r| {
            r.resource == "certificatesigningrequests" && r.verb == "watch" && r.code == 200
        })
    });
    let name = fx.server.csrs()[0].metadata.name.clone().unwrap();
    assert!(name.starts_with("node-csr-"), "{name}");
    // The watch's resourceVersion becomes too old (410 on the next watch),
    // and the next connections are dropped.
    fx.server.compact();
    fx.server.drop_next(3);
    std::thread::sleep(Duration::from_secs(5));
    assert!(fx.server.approve(&name));
    let cert = fx.wait_for_client_cert(&agent, "the certificate of the approved CSR", |_| true);
    assert_eq!(fx.server.csrs().len(), 1, "a second CSR was filed");
    assert_eq!(
        cert.public_key().unwrap().public_key_to_der().unwrap(),
        cert.public_key().unwrap().public_key_to_der().unwrap()
    );
    let logs = agent.logs();
    assert!(
        !logs.iter().any(|e| e
            .message
            .contains("renewing the kubelet client certificate failed")),
        "the wait gave up:\n{}",
        render_tail(&logs, 30)
    );
    // The pending key is swept once used.
    assert!(!fx
        .node
        .exists(&format!("{PKI}/node-cert-agent-client.pending.key")));
}

#[test]
fn without_an_approver_retries_leave_one_pending_csr_per_certificate_kind() {
    let fx = KubeletFixture::with_cluster("kbc-pileup", Profile::OwnApprover, &shipped_rbac());
    let extra =
        "  csr-timeout-seconds: 1\n  serving:\n    enabled: true\n    dns: [n1.nodes.test]\n";
    let agent = fx.start_agent(extra);
    // The daemon retries on its own; beside it, `renew` from a node shell
    // retries 30 times: more attempts than the daemon's backoff (2 s
    // doubling to 5 min) makes in 30 minutes (11).
    let cfg = fx.config_path(extra);
    for _ in 0..30 {
        let out = Command::new(agent_binary())
            .args(["renew", "--log-format", "json", "--host-root"])
            .arg(fx.node.root())
            .arg("--config")
            .arg(&cfg)
            .env(
                "DBUS_SYSTEM_BUS_ADDRESS",
                format!(
                    "unix:path={}",
                    fx.node.host_path("/run/dbus/system_bus_socket").display()
                ),
            )
            .output()
            .unwrap();
        assert!(
            !out.status.success(),
            "renew cannot succeed without an approver: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let csrs = fx.server.csrs();
    let per_signer = |signer: &str| csrs.iter().filter(|c| c.spec.signer_name == signer).count();
    assert_eq!(
        per_signer("kubernetes.io/kube-apiserver-client-kubelet"),
        1,
        "{:?}",
        csrs.iter()
            .map(|c| c.metadata.name.clone())
            .collect::<Vec<_>>()
    );
    assert!(per_signer("kubernetes.io/kubelet-serving") <= 1);
    // The daemon kept retrying meanwhile, on the same CSR.
    let creates = fx
        .server
        .requests()
        .iter()
        .filter(|r| r.resource == "certificatesigningrequests" && r.verb == "create")
        .count();
    assert!(creates > 30, "{creates} create attempts");
    drop(agent);
}

#[test]
fn a_certificate_from_another_signer_is_installed_with_a_warning_naming_both_issuers() {
    let fx = KubeletFixture::new("kbc-signer");
    let other = integration_tests::pki::TestCa::new("kubelet client signer");
    fx.server
        .sign_client_certificates_with(&other.cert_pem(), &other.key_pem());
    let agent = fx.start_agent("");
    let cert = fx.wait_for_client_cert(&agent, "the certificate of the other signer", |_| true);
    assert!(integration_tests::kubelet_node::chains_to(
        &cert,
        &other.cert_pem()
    ));
    let warning = agent
        .logs()
        .into_iter()
        .find(|e| {
            e.message
                .contains("does not chain to the kubeconfig's cluster CA")
        })
        .unwrap_or_else(|| panic!("no warning:\n{}", render_tail(&agent.logs(), 30)));
    assert_eq!(warning.raw["level"], "WARN");
    assert!(
        warning.message.contains("kubelet client signer") && warning.message.contains("kubernetes"),
        "{}",
        warning.message
    );
}

#[test]
fn a_bootstrap_on_a_node_without_a_kubelet_kubeconfig_writes_it_as_kubelet_does() {
    let fx = KubeletFixture::new("kbc-kubeconfig");
    assert!(!fx.node.exists("/var/lib/kubelet/kubeconfig"));
    let agent = HostModeAgent::install(
        &fx.node,
        &format!(
            "{}kubelet:\n  mode: on\n  node-name: {NODE_NAME}\n  csr-timeout-seconds: 60\nmetrics-address: \"off\"\n",
            host_config(&[HOST_SECRET_DIR], &[])
        ),
    );
    let bootstrapped =
        integration_tests::wait::wait_until_or_timeout(Duration::from_secs(60), || {
            fx.client_cert().is_some()
        });
    assert!(
        bootstrapped,
        "no bootstrapped certificate; agent log:\n{}",
        render_tail(&agent.logs(), 40)
    );
    wait_until(Duration::from_secs(10), "kubelet's kubeconfig", || {
        fx.node.exists("/var/lib/kubelet/kubeconfig")
    });
    let mode = fx
        .node
        .exec_ok(&["stat", "-c", "%a", "/var/lib/kubelet/kubeconfig"]);
    assert_eq!(String::from_utf8_lossy(&mode.stdout).trim(), "600");
    let text = String::from_utf8(fx.node.read_file("/var/lib/kubelet/kubeconfig")).unwrap();
    let kc: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
    assert_eq!(
        kc["clusters"][0]["cluster"]["server"].as_str(),
        Some(fx.server.url().as_str()),
        "{text}"
    );
    assert_eq!(
        kc["users"][0]["user"]["client-certificate"].as_str(),
        Some(CLIENT_LINK)
    );
    assert_eq!(
        kc["users"][0]["user"]["client-key"].as_str(),
        Some(CLIENT_LINK)
    );
    // kubelet's view: the kubeconfig, read as the node reads it, is the node
    // talking to the API server as itself.
    let root = node_cert_agent::node::hostroot::HostRoot::new(fx.node.root()).unwrap();
    let resolved =
        node_cert_agent::k8s::kubeconfig::load(&root, "/var/lib/kubelet/kubeconfig".as_ref())
            .unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let client = {
        let _in_runtime = rt.enter();
        node_cert_agent::k8s::client::build_client(&resolved).unwrap()
    };
    let api: kube::Api<k8s_openapi::api::core::v1::Node> = kube::Api::all(client);
    let node = rt.block_on(api.get(NODE_NAME)).unwrap();
    assert_eq!(node.metadata.name.as_deref(), Some(NODE_NAME));
    let get = fx
        .server
        .requests()
        .into_iter()
        .rev()
        .find(|r| r.resource == "nodes" && r.verb == "get")
        .unwrap();
    assert_eq!(get.user, format!("system:node:{NODE_NAME}"));
    // status agrees: the kubeconfig uses the file the agent renews.
    let status = Command::new(agent_binary())
        .args(["status", "-o", "json", "--host-root"])
        .arg(fx.node.root())
        .output()
        .unwrap();
    let report: Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(
        report["kubelet"]["kubeconfigCredential"],
        format!("file {CLIENT_LINK}"),
        "{report}"
    );
    assert!(
        !report["problems"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["kind"] == "mismatch"),
        "{report}"
    );
    drop(agent);
}

#[test]
fn a_forbidden_revocation_watch_is_a_clear_error_in_status_and_readyz_and_is_retried_once_a_minute()
{
    let rbac = shipped_rbac().without("RoleBinding", "node-cert-agent:renewrevocations-reader");
    let fx = KubeletFixture::with_cluster("kbc-403", Profile::Kubeadm, &rbac);
    let port = integration_tests::registry::free_port();
    let agent = fx.start_agent_with_metrics("", &format!("127.0.0.1:{port}"));
    fx.wait_for_client_cert(&agent, "the client certificate", |_| true);
    let forbidden = || {
        fx.server
            .requests()
            .into_iter()
            .filter(|r| r.resource == "renewrevocations")
            .collect::<Vec<_>>()
    };
    wait_until(Duration::from_secs(60), "the forbidden list", || {
        forbidden().iter().any(|r| r.code == 403)
    });
    let first = Instant::now();
    // The error names the identity, the call and the manifest that grants it.
    wait_until(Duration::from_secs(10), "the error line", || {
        agent.logs().iter().any(|e| {
            e.error
                && e.message.contains("system:node:n1")
                && e.message.contains("renewrevocations")
                && e.message.contains("rbac-renewrevocations.yaml")
        })
    });
    // status says so, and exits 1.
    wait_until(
        Duration::from_secs(20),
        "status to show the failure",
        || {
            let (code, report) = fx.status_json();
            code == 1 && report["agent"]["revocationSource"]["state"] == "failing"
        },
    );
    let (_, report) = fx.status_json();
    assert_eq!(
        report["agent"]["revocationSource"]["forbidden"], true,
        "{report}"
    );
    assert!(report["problems"]
        .as_array()
        .unwrap()
        .iter()
        .any(|p| p["kind"] == "failing"
            && p["message"]
                .as_str()
                .unwrap()
                .contains("rbac-renewrevocations.yaml")));
    // /readyz says so.
    let (code, body) = integration_tests::http_get(port, "/readyz");
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("RenewRevocations"), "{body}");
    // The request rate: after the first, at most one a minute.
    std::thread::sleep(Duration::from_secs(130).saturating_sub(first.elapsed()));
    let after_first: Vec<_> = forbidden().into_iter().skip(1).collect();
    assert!(
        after_first.len() <= 2,
        "{} requests in the 130 s after the first 403: {:?}",
        after_first.len(),
        after_first
            .iter()
            .map(|r| (&r.verb, r.code))
            .collect::<Vec<_>>()
    );
    let lines = agent
        .logs()
        .iter()
        .filter(|e| e.message.contains("cannot read RenewRevocations"))
        .count();
    assert_eq!(
        lines,
        1,
        "the same error is logged once:\n{}",
        render_tail(&agent.logs(), 30)
    );
}

/// `renew --force` from a node shell, as in `kubelet.rs`; its stdout.
fn renew_force(fx: &KubeletFixture) -> String {
    renew_with(fx, "", &["--force"])
}

/// kubelet's API client (client-go) re-reads its kubeconfig's certificate
/// file every 5 minutes: a renewal of a healthy certificate that kubelet's
/// kubeconfig names restarts nothing, while the bootstrap (no usable
/// certificate before) restarts kubelet once.
#[test]
fn a_renewal_kubelet_rereads_by_itself_leaves_kubelet_running() {
    let fx = KubeletFixture::new("kbc-reread");
    let kubelet_before = fx.kubelet_pid();
    let agent = fx.start_agent("");
    let first = fx.wait_for_client_cert(&agent, "the bootstrap", |_| true);
    wait_until(
        Duration::from_secs(10),
        "kubelet's restart for the bootstrap",
        || fx.kubelet_pid() != kubelet_before,
    );
    drop(agent);
    // kubelet's kubeconfig, as kubelet writes it after its bootstrap.
    fx.node.write_file(
        "/var/lib/kubelet/kubeconfig",
        fx.server
            .client_kubeconfig(
                std::path::Path::new(CLIENT_LINK),
                std::path::Path::new(CLIENT_LINK),
            )
            .as_bytes(),
        0o600,
    );
    let kubelet = fx.kubelet_pid();
    let stdout = renew_force(&fx);
    assert!(
        stdout.contains("no kubelet restart for the new client certificate"),
        "{stdout}"
    );
    let second = fx.client_cert().unwrap();
    assert_ne!(serial(&second), serial(&first));
    assert_eq!(fx.kubelet_pid(), kubelet, "kubelet was restarted: {stdout}");

    // A kubeconfig that names another credential: kubelet never re-reads
    // the renewed file, so the renewal restarts it.
    fx.node.write_file(
        "/var/lib/kubelet/kubeconfig",
        fx.server.token_kubeconfig("someone-else").as_bytes(),
        0o600,
    );
    let stdout = renew_force(&fx);
    assert!(
        stdout.contains("kubelet is restarted for the new client certificate"),
        "{stdout}"
    );
    assert_ne!(
        fx.kubelet_pid(),
        kubelet,
        "kubelet was not restarted: {stdout}"
    );
}

/// kubelet's own rotation, as its unit runs it: `--rotate-server-certificates`
/// in an environment file named by the unit (not in its config file). The
/// agent reads the command line over D-Bus, leaves the serving certificate
/// to kubelet (no serving CSR) and says so in `status`.
#[test]
fn kubelets_own_serving_rotation_on_its_command_line_is_left_to_kubelet() {
    let fx = KubeletFixture::new("kbc-cmdline");
    fx.node.write_file(
        "/etc/default/kubelet",
        b"KUBELET_EXTRA_ARGS=\"--v=2 --rotate-server-certificates\"\n",
        0o644,
    );
    // A stand-in named kubelet (only kubelet's own command line says its
    // flags), run as kubeadm's unit runs kubelet.
    fx.node.write_file(
        "/usr/local/bin/kubelet",
        b"#!/bin/sh\nexec sleep infinity\n",
        0o755,
    );
    fx.node.write_file(
        "/etc/systemd/system/kubelet.service",
        b"[Unit]\nDescription=stand-in kubelet for node-cert-agent tests\n[Service]\nEnvironmentFile=-/etc/default/kubelet\nExecStart=/usr/local/bin/kubelet $KUBELET_EXTRA_ARGS\n",
        0o644,
    );
    fx.node.systemctl(&["daemon-reload"]);
    fx.node.exec_ok(&[
        "systemctl",
        "restart",
        integration_tests::kubelet_node::KUBELET_UNIT,
    ]);
    let extra = "  serving:\n    enabled: true\n    dns: [n1.nodes.test]\n";
    let agent = fx.start_agent(extra);
    fx.wait_for_client_cert(&agent, "the bootstrap", |_| true);
    wait_until(
        Duration::from_secs(30),
        "the serving certificate left to kubelet",
        || {
            agent.logs().iter().any(|e| {
                e.message
                    .contains("kubelet rotates its own serving certificate")
            })
        },
    );
    let serving_csrs = fx
        .server
        .csrs()
        .iter()
        .filter(|c| c.spec.signer_name == "kubernetes.io/kubelet-serving")
        .count();
    assert_eq!(serving_csrs, 0, "{}", render_tail(&agent.logs(), 30));
    let status = Command::new(agent_binary())
        .args(["status", "-o", "json", "--host-root"])
        .arg(fx.node.root())
        .output()
        .unwrap();
    let report: Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(report["kubelet"]["serverTlsBootstrap"], true, "{report}");
    assert_eq!(report["kubelet"]["commandLineRead"], true, "{report}");
    assert_eq!(
        report["kubelet"]["serving"]["renewedBy"], "kubelet",
        "{report}"
    );
}

/// The SANs of the serving certificate at `link`: DNS names, then IPs.
fn serving_sans(fx: &KubeletFixture) -> (Vec<String>, Vec<String>) {
    let pem = fx
        .node
        .read_file("/var/lib/kubelet/pki/kubelet-server-current.pem");
    let cert = openssl::x509::X509::stack_from_pem(&pem).unwrap().remove(0);
    let mut dns = Vec::new();
    let mut ips = Vec::new();
    for n in cert.subject_alt_names().into_iter().flatten() {
        if let Some(d) = n.dnsname() {
            dns.push(d.to_string());
        }
        if let Some(ip) = n.ipaddress() {
            ips.push(
                <[u8; 4]>::try_from(ip)
                    .map(|b| std::net::Ipv4Addr::from(b).to_string())
                    .unwrap_or_else(|_| format!("{ip:?}")),
            );
        }
    }
    (dns, ips)
}

/// Sets Node n1's addresses and kubelet version, as kubelet reports them.
fn set_node_addresses(fx: &KubeletFixture, internal_ip: &str) {
    fx.server.update_node(NODE_NAME, |n| {
        let status = n.status.get_or_insert_with(Default::default);
        status.addresses = Some(vec![
            k8s_openapi::api::core::v1::NodeAddress {
                type_: "InternalIP".into(),
                address: internal_ip.into(),
            },
            k8s_openapi::api::core::v1::NodeAddress {
                type_: "Hostname".into(),
                address: NODE_NAME.into(),
            },
        ]);
        status.node_info = Some(k8s_openapi::api::core::v1::NodeSystemInfo {
            kubelet_version: "v1.31.4".into(),
            ..Default::default()
        });
    });
}

/// `renew` (not forced) from a node shell; its stdout.
fn renew(fx: &KubeletFixture, extra: &str) -> String {
    renew_with(fx, extra, &[])
}

/// `renew ARGS` from a node shell, with the fixture's config and
/// `extra` in its kubelet section; its stdout (it must succeed).
fn renew_with(fx: &KubeletFixture, extra: &str, args: &[&str]) -> String {
    let out = Command::new(agent_binary())
        .arg("renew")
        .args(args)
        .args(["--log-target", "stdout", "--config"])
        .arg(fx.config_path(extra))
        .arg("--host-root")
        .arg(fx.node.root())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "renew {args:?} failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// With no names configured, the serving certificate names the Node's
/// `status.addresses` as kubelet does (never the agent's own interfaces),
/// and follows them when they change; kubelet 1.31, serving that file,
/// reloads it: no restart for the serving renewal.
#[test]
fn the_serving_certificate_names_the_nodes_addresses_and_follows_them() {
    let fx = KubeletFixture::new("kbc-addresses");
    set_node_addresses(&fx, "10.0.0.9");
    fx.node.write_file(
        "/var/lib/kubelet/config.yaml",
        b"apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\ntlsCertFile: /var/lib/kubelet/pki/kubelet-server-current.pem\ntlsPrivateKeyFile: /var/lib/kubelet/pki/kubelet-server-current.pem\n",
        0o644,
    );
    let extra = "  serving:\n    enabled: true\n";
    // kubelet-serving CSRs are never approved by the cluster: an admin (this
    // thread) approves each one filed, until the test ends.
    let done = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|scope| {
        scope.spawn(|| {
            while !done.load(std::sync::atomic::Ordering::SeqCst) {
                for c in fx.server.csrs() {
                    let pending = c
                        .status
                        .as_ref()
                        .and_then(|s| s.conditions.as_ref())
                        .is_none();
                    if c.spec.signer_name == "kubernetes.io/kubelet-serving" && pending {
                        fx.server
                            .approve(c.metadata.name.as_deref().unwrap_or_default());
                    }
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        });
        // Stops the approver however the scenario ends (a failed assertion
        // too: the scope joins it before the panic goes on).
        struct Stop<'a>(&'a std::sync::atomic::AtomicBool);
        impl Drop for Stop<'_> {
            fn drop(&mut self) {
                self.0.store(true, std::sync::atomic::Ordering::SeqCst);
            }
        }
        let _stop = Stop(&done);
        serving_follows_the_node(&fx, extra);
    });
}

fn serving_follows_the_node(fx: &KubeletFixture, extra: &str) {
    let agent = fx.start_agent(extra);
    fx.wait_for_client_cert(&agent, "the bootstrap", |_| true);
    let issued = integration_tests::wait::wait_until_or_timeout(Duration::from_secs(30), || {
        fx.node
            .exists("/var/lib/kubelet/pki/kubelet-server-current.pem")
    });
    assert!(
        issued,
        "no serving certificate:\n{}",
        render_tail(&agent.logs(), 30)
    );
    assert_eq!(
        serving_sans(fx),
        (vec![NODE_NAME.to_string()], vec!["10.0.0.9".to_string()])
    );
    // The first serving file restarts kubelet (it had none to watch): let
    // that restart happen before the agent stops.
    wait_until(
        Duration::from_secs(30),
        "kubelet's restarts for the new files",
        || {
            agent
                .logs()
                .iter()
                .filter(|e| e.message.contains("so it uses the new certificate"))
                .count()
                >= 2
        },
    );
    drop(agent);

    // The address changes: the next pass renews to the new one, and
    // kubelet 1.31 re-reads the file it serves.
    set_node_addresses(fx, "10.0.0.10");
    let kubelet = fx.kubelet_pid();
    let stdout = renew(fx, extra);
    assert!(
        stdout.contains("status.addresses are now [n1, 10.0.0.10]"),
        "{stdout}"
    );
    assert!(
        stdout.contains("no kubelet restart for the new serving certificate"),
        "{stdout}"
    );
    assert_eq!(
        serving_sans(fx),
        (vec![NODE_NAME.to_string()], vec!["10.0.0.10".to_string()])
    );
    assert_eq!(fx.kubelet_pid(), kubelet, "kubelet was restarted: {stdout}");
    // Nothing changed since: no renewal.
    let stdout = renew(fx, extra);
    assert!(!stdout.contains("renewing the kubelet serving"), "{stdout}");
}

/// "Everything issued before now": a RenewRevocation whose notBefore is the
/// moment it is written. kube-controller-manager's signer (here the test
/// server, as upstream) backdates NotBefore by 5 minutes, so the renewal's
/// own certificate looks issued before the cutoff; the agent judges it by
/// when it was signed and renews exactly once, with no "cannot help" error
/// and no second CSR.
#[test]
fn a_revocation_of_everything_issued_before_its_creation_renews_exactly_once() {
    let fx = KubeletFixture::new("kbc-nbnow");
    let agent = fx.start_agent("");
    let first = fx.wait_for_client_cert(&agent, "the first certificate", |_| true);
    wait_for_revocation_watch(&fx);
    // Written in a later second than the first certificate was signed.
    std::thread::sleep(Duration::from_secs(2));
    let created = node_cert_agent::time::rfc3339(node_cert_agent::time::now_unix());
    fx.server
        .add_revocation(
            REVOCATIONS_NS,
            json!({
                "metadata": {"name": "rotate-all-now"},
                "spec": {"revocations": [{
                    "kind": "Group",
                    "group": "system:nodes",
                    "notBefore": created,
                    "description": "everything issued before now"
                }]}
            }),
        )
        .unwrap();
    let second = fx.wait_for_client_cert(&agent, "the renewal for the revocation", |c| {
        serial(c) != serial(&first)
    });
    std::thread::sleep(Duration::from_secs(10));
    assert_eq!(serial(&fx.client_cert().unwrap()), serial(&second));
    let client_csrs = fx
        .server
        .csrs()
        .iter()
        .filter(|c| c.spec.signer_name == "kubernetes.io/kube-apiserver-client-kubelet")
        .count();
    assert_eq!(client_csrs, 2, "the bootstrap and exactly one renewal");
    assert!(
        !agent
            .logs()
            .iter()
            .any(|e| e.message.contains("cannot help")),
        "{}",
        render_tail(&agent.logs(), 20)
    );
}
