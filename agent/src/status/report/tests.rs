//! The tests of `report`.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use std::collections::{BTreeMap, BTreeSet};

use super::*;
use crate::config::kubelet::{DEFAULT_BOOTSTRAP_KUBECONFIG, DEFAULT_KUBELET_CONFIG};
use crate::kubelet::renewal;
use crate::node::distro::Family;
use crate::node::lock::DaemonLock;
use crate::node::procfs::ProcessIdentity;
use crate::ops::inventory::{AnchorFact, CertInventory, CertSummary, NodeCertFact};
use crate::status::gather::KubeletFacts;
use crate::status::liveness::liveness;
use crate::status::{render_json, render_table};
use crate::time::rfc3339;
use crate::trust::plan::SourceInput;
use crate::trust::sources::{read_source, SourceSpec};
use crate::trust::state::CaState;
use crate::x509::cert::{CertInfo, Fingerprint};
use crate::x509::testpki;

const NOW: i64 = 1_800_000_000; // 2027-01-15T08:00:00Z

fn summary(cn: &str, nb: i64, na: i64) -> CertSummary {
    CertSummary {
        subject: format!("CN={cn}"),
        issuer: "CN=kubernetes".into(),
        subject_fields: vec![("CN".into(), cn.into())],
        issuer_fields: vec![("CN".into(), "kubernetes".into())],
        serial_hex: "0A".into(),
        serial_decimal: "10".into(),
        not_before: nb,
        not_after: na,
        fingerprint: Fingerprint::of_der(cn.as_bytes()),
    }
}

fn no_kubelet() -> KubeletFacts {
    KubeletFacts {
        node_name: Some("node-1".into()),
        bootstrap_kubeconfig: None,
        kubeconfig: None,
        kubelet_config: DEFAULT_KUBELET_CONFIG.into(),
        rotate_certificates: false,
        server_tls_bootstrap: false,
        agent_job: false,
        serving_job: false,
        defer_to_kubelet_rotation: true,
        client: KubeletCertFact {
            link: "/var/lib/kubelet/pki/kubelet-client-current.pem".into(),
            current: Ok(None),
        },
        serving: KubeletCertFact {
            link: "/var/lib/kubelet/pki/kubelet-server-current.pem".into(),
            current: Ok(None),
        },
        kubeconfig_credential: None,
        tls_cert_file: None,
        command_line_known: true,
    }
}

/// A node with one installed custom CA (key ca1.crt), nothing else.
fn facts_with_ca(ca: CertSummary) -> Facts {
    let fp = ca.fingerprint;
    let mut state = CaState {
        last_success: Some(NOW - 60),
        ..Default::default()
    };
    state.keys.insert(
        "/etc/node-cert-agent/secret".into(),
        BTreeMap::from([("ca1.crt".to_string(), vec![fp.hex()])]),
    );
    Facts {
        now: NOW,
        version: "0.1.0".into(),
        state_dir: "/var/lib/node-cert-agent".into(),
        daemon: Ok(None),
        liveness: None,
        ca_state: Ok(state),
        restart_history: Default::default(),
        inputs: Vec::new(),
        max_certificates: 10,
        layout: Ok(Family::Debian.layout()),
        runtime_roots: Vec::new(),
        bundle: Ok(BTreeSet::from([fp])),
        inventory: CertInventory {
            anchors: Ok(BTreeMap::from([(
                fp,
                AnchorFact {
                    path: format!(
                        "/usr/local/share/ca-certificates/node-cert-agent/node-cert-agent-{}.crt",
                        fp.hex()
                    )
                    .into(),
                    info: CertInfo::from_der(&testpki::good_ca("x").cert.to_der().unwrap())
                        .unwrap(),
                    cert: ca,
                },
            )])),
            node_certs: Vec::new(),
        },
        kubelet: no_kubelet(),
    }
}

fn healthy_ca() -> CertSummary {
    summary("Corp Root", NOW - 86_400 * 365, NOW + 86_400 * 365 * 9)
}

#[test]
fn installed_ca_is_healthy_and_listed_with_its_short_fingerprint() {
    let ca = healthy_ca();
    let report = build_report(&facts_with_ca(ca.clone()));
    assert!(report.healthy, "{:?}", report.problems);
    assert_eq!(report.exit_code(), EXIT_HEALTHY);
    assert_eq!(report.custom_cas.len(), 1);
    let row = &report.custom_cas[0];
    assert!(row.installed && row.anchor_present && row.in_bundle);
    assert_eq!(row.key, "ca1.crt");
    assert_eq!(report.trust_store.agent_cas_in_bundle, 1);
    let table = render_table(&report);
    assert!(table.contains(&ca.fingerprint.short()), "{table}");
    assert!(table.contains("CN=Corp Root"), "{table}");
    assert!(table.contains("Jan 13, 2036 08:00 UTC"), "{table}");
    let row = table.lines().find(|l| l.starts_with("ca1.crt")).unwrap();
    let cells: Vec<&str> = row
        .split("   ")
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .collect();
    assert_eq!(
        cells,
        vec![
            "ca1.crt",
            "CN=Corp Root",
            ca.fingerprint.short().as_str(),
            "Jan 13, 2036 08:00 UTC",
            "9y",
            "yes",
            "-"
        ],
        "{table}"
    );
    assert!(table.contains("HEALTH: ok"), "{table}");
    assert!(
        table.contains("not running (no daemon status file"),
        "{table}"
    );
}

#[test]
fn a_forged_subject_or_key_adds_no_row_and_moves_no_cursor_in_the_table() {
    let mut ca = healthy_ca();
    ca.subject = "CN=x\nHEALTH: ok\r\x1b[2K\u{202e}".into();
    let mut f = facts_with_ca(ca);
    if let Ok(state) = &mut f.ca_state {
        let keys = state.keys.values_mut().next().unwrap();
        let fps = keys.remove("ca1.crt").unwrap();
        keys.insert("ca1.crt\nHEALTH: ok".into(), fps);
    }
    let report = build_report(&f);
    let table = render_table(&report);
    for c in ['\r', '\x1b', '\u{202e}'] {
        assert!(!table.contains(c), "{c:?} in {table:?}");
    }
    assert_eq!(
        table.lines().filter(|l| l.starts_with("HEALTH:")).count(),
        1,
        "{table}"
    );
    assert!(table.contains("ca1.crt\\nHEALTH: ok"), "{table}");
    assert!(
        table.contains("CN=x\\nHEALTH: ok\\r\\x1b[2K\\u{202e}"),
        "{table}"
    );
    // The JSON keeps the raw values.
    let json = render_json(&report).unwrap();
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["customCas"][0]["key"], "ca1.crt\nHEALTH: ok");
}

#[test]
fn a_deferred_or_recovering_restart_is_shown_with_its_time() {
    use crate::trust::pacing::UnitHistory;
    let mut f = facts_with_ca(healthy_ca());
    if let Ok(state) = &mut f.ca_state {
        state.pending = Pending::Restart(["containerd.service".to_string()].into());
    }
    let at = u64::try_from(NOW + 7).unwrap() * 1_000_000;
    let mut h = UnitHistory {
        not_before_us: Some(at),
        ..UnitHistory::default()
    };
    h.set_start_limit(crate::node::systemd::StartLimit::SYSTEMD_DEFAULT);
    f.restart_history
        .units
        .insert("containerd.service".into(), h.clone());
    let report = build_report(&f);
    assert!(
        report.healthy,
        "a deferral is no problem: {:?}",
        report.problems
    );
    let p = &report.trust_store.pending_restarts[0];
    assert_eq!(
        (p.state.as_str(), p.not_before.as_deref()),
        ("deferred", Some("2027-01-15T08:00:07.000Z"))
    );
    let table = render_table(&report);
    assert!(
        table.contains(
            "containerd.service (deferred until 2027-01-15 08:00:07 UTC; 5 starts in 10s)"
        ),
        "{table}"
    );

    h.responsible = true;
    h.limit_hit_us = Some(at - 10_000_000);
    f.restart_history
        .units
        .insert("containerd.service".into(), h);
    let report = build_report(&f);
    assert_eq!(report.trust_store.pending_restarts[0].state, "recovering");
    assert!(!report.healthy);
    assert!(render_table(&report)
        .contains("stopped at its start limit; started again at 2027-01-15 08:00:07 UTC"));
}

#[test]
fn ca_missing_from_the_bundle_is_not_installed() {
    let mut f = facts_with_ca(healthy_ca());
    f.bundle = Ok(BTreeSet::new());
    let report = build_report(&f);
    assert!(!report.custom_cas[0].installed);
    assert!(report.custom_cas[0].anchor_present);
    assert_eq!(report.trust_store.agent_cas_in_bundle, 0);
    assert!(render_table(&report).contains("0 of 1"));
}

#[test]
fn expired_or_expiring_ca_makes_the_node_unhealthy() {
    let expired = summary("Old Root", NOW - 1000, NOW - 10);
    let r = build_report(&facts_with_ca(expired));
    assert_eq!(r.exit_code(), EXIT_UNHEALTHY);
    assert_eq!(r.problems[0].kind, ProblemKind::Expired);
    // 5 % of its life left.
    let expiring = summary("Tired Root", NOW - 950, NOW + 50);
    let r = build_report(&facts_with_ca(expiring));
    assert_eq!(r.problems.len(), 1);
    assert_eq!(r.problems[0].kind, ProblemKind::Expiring);
    // 20 % left: fine.
    let ok = summary("Fine Root", NOW - 800, NOW + 200);
    assert!(build_report(&facts_with_ca(ok)).healthy);
}

#[test]
fn input_error_is_shown_on_its_key_and_is_unhealthy() {
    let mut f = facts_with_ca(healthy_ca());
    f.inputs = vec![SourceInput {
        source: "/etc/node-cert-agent/secret".into(),
        content: None,
        keys: Ok(vec![crate::trust::validate::validate_key(
            "bad.crt",
            b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
            NOW,
        )]),
    }];
    let r = build_report(&f);
    assert_eq!(r.exit_code(), EXIT_UNHEALTHY);
    let bad = r.custom_cas.iter().find(|c| c.key == "bad.crt").unwrap();
    assert!(!bad.installed && bad.subject.is_none());
    assert_eq!(bad.findings[0].severity, "error");
    assert!(r
        .problems
        .iter()
        .any(|p| p.kind == ProblemKind::Invalid && p.subject.contains("bad.crt")));
    let table = render_table(&r);
    assert!(table.contains("bad.crt"), "{table}");
    assert!(table.contains("error: "), "{table}");
}

#[test]
fn a_source_that_never_existed_is_only_a_warning() {
    let mut f = facts_with_ca(healthy_ca());
    f.inputs = vec![read_source(
        &SourceSpec::File("/nonexistent/custom-ca.pem".into()),
        NOW,
    )];
    let r = build_report(&f);
    assert!(r.healthy, "{:?}", r.problems);
    let row = r
        .custom_cas
        .iter()
        .find(|c| c.key == "/nonexistent/custom-ca.pem")
        .unwrap();
    assert_eq!(row.findings[0].severity, "warning");
}

#[test]
fn daemon_error_is_failing() {
    let mut f = facts_with_ca(healthy_ca());
    let d = DaemonStatus {
        schema_version: SCHEMA_VERSION,
        version: "0.1.0".into(),
        process: ProcessIdentity {
            pid: 42,
            ..Default::default()
        },
        started_at: NOW - 600,
        heartbeat_at: NOW - 5,
        ca_job: true,
        last_ca_pass: Some(NOW - 5),
        last_ca_error: Some("refresh tool failed".into()),
        ..Default::default()
    };
    f.liveness = Some(liveness(
        &d,
        &ProcessIdentity::default(),
        None,
        &DaemonLock::Held,
    ));
    f.daemon = Ok(Some(d));
    let r = build_report(&f);
    assert!(r.agent.running, "lock held");
    assert_eq!(r.agent.running_check, "lock");
    assert_eq!(r.agent.last_error.as_deref(), Some("refresh tool failed"));
    assert_eq!(r.problems[0].kind, ProblemKind::Failing);
    assert_eq!(r.exit_code(), EXIT_UNHEALTHY);
    let t = render_table(&r);
    assert!(
        t.contains("running (pid 42 in another pid namespace; it holds daemon.lock)"),
        "{t}"
    );
}

#[test]
fn pods_waiting_for_a_pull_retry_are_listed_with_advice_until_the_back_off_is_over() {
    use crate::trust::waiting_pods::{WaitingPod, WaitingPods};
    let mut f = facts_with_ca(healthy_ca());
    let pod = WaitingPod {
        namespace: "shop".into(),
        name: "web-1".into(),
        container: "app".into(),
        image: "registry.example:5000/app:1".into(),
    };
    let d = DaemonStatus {
        schema_version: SCHEMA_VERSION,
        version: "0.1.0".into(),
        started_at: NOW - 600,
        heartbeat_at: NOW - 5,
        ca_job: true,
        last_ca_pass: Some(NOW - 60),
        waiting_pods: Some(WaitingPods {
            checked_at: NOW - 60,
            pods: vec![pod.clone()],
        }),
        ..Default::default()
    };
    f.liveness = Some(liveness(
        &d,
        &ProcessIdentity::default(),
        None,
        &DaemonLock::Held,
    ));
    f.daemon = Ok(Some(d));
    let r = build_report(&f);
    assert!(
        r.healthy,
        "waiting pods are not the node's problem: {:?}",
        r.problems
    );
    assert_eq!(r.agent.waiting_pods, vec![pod]);
    let advice = r.agent.waiting_pods_advice.clone().unwrap();
    assert!(advice.contains("delete the pod"), "{advice}");
    let json: serde_json::Value =
        serde_json::from_str(&crate::status::render_json(&r).unwrap()).unwrap();
    assert_eq!(
        json["agent"]["waitingPods"],
        serde_json::json!([{"namespace": "shop", "name": "web-1", "container": "app", "image": "registry.example:5000/app:1"}])
    );
    assert_eq!(json["agent"]["waitingPodsAdvice"], advice.as_str());
    let t = render_table(&r);
    assert!(
        t.contains(
            "pods in pull back-off   shop/web-1 (container app, image registry.example:5000/app:1)"
        ),
        "{t}"
    );
    assert!(t.contains(&advice), "{t}");

    // Past kubelet's longest back-off every pull has been retried.
    f.now = NOW + 300;
    let r = build_report(&f);
    assert!(r.agent.waiting_pods.is_empty());
    assert_eq!(r.agent.waiting_pods_advice, None);
    assert!(!render_table(&r).contains("pull back-off"));
}

fn node_cert(path: &str, read: NodeCertRead) -> NodeCertFact {
    NodeCertFact {
        path: path.into(),
        embedded: None,
        index: 1,
        read,
    }
}

#[test]
fn node_certificates_in_kubeadm_style() {
    let mut f = facts_with_ca(healthy_ca());
    f.inventory.node_certs = vec![
        node_cert(
            "/etc/kubernetes/pki/ca.crt",
            NodeCertRead::Ok(summary("kubernetes", NOW - 86_400, NOW + 86_400 * 3649)),
        ),
        node_cert(
            "/etc/kubernetes/pki/apiserver.crt",
            NodeCertRead::Ok(summary("kube-apiserver", NOW - 86_400 * 400, NOW - 3600)),
        ),
        node_cert(
            "/etc/kubernetes/pki/front-proxy-client.crt",
            NodeCertRead::Ok(summary("front-proxy-client", NOW - 86_400, NOW + 82_800)),
        ),
        node_cert(
            "/etc/kubernetes/pki/sa.crt",
            NodeCertRead::Missing {
                referenced_by: "/etc/kubernetes/admin.conf".into(),
            },
        ),
    ];
    let r = build_report(&f);
    let t = render_table(&r);
    assert!(
        t.contains("CERTIFICATE                                  EXPIRES                  RESIDUAL TIME   CERTIFICATE AUTHORITY   RENEWED BY   STATUS"),
        "{t}"
    );
    assert!(t.contains("/etc/kubernetes/pki/ca.crt"), "{t}");
    assert!(t.contains("   9y   "), "{t}");
    assert!(t.contains("<invalid>"), "{t}");
    assert!(t.contains("EXPIRED"), "{t}");
    assert!(t.contains("23h"), "{t}");
    assert!(t.contains("!MISSING! /etc/kubernetes/pki/sa.crt"), "{t}");
    let kinds: Vec<_> = r.problems.iter().map(|p| p.kind).collect();
    assert_eq!(
        kinds,
        vec![ProblemKind::Expired, ProblemKind::Missing],
        "{:?}",
        r.problems
    );
    assert!(t.contains("HEALTH: UNHEALTHY (2 problems)"), "{t}");
}

#[test]
fn kubelet_certificate_with_a_renewal_path_is_not_a_problem_when_expiring() {
    let mut f = facts_with_ca(healthy_ca());
    // 5 % of its lifetime left.
    let client = summary("system:node:node-1", NOW - 950, NOW + 50);
    f.kubelet.agent_job = true;
    f.kubelet.bootstrap_kubeconfig = Some(DEFAULT_BOOTSTRAP_KUBECONFIG.into());
    f.kubelet.client.current = Ok(Some((
        "/var/lib/kubelet/pki/kubelet-client-2027-01-15-07-45-00.pem".into(),
        client.clone(),
        true,
    )));
    f.inventory.node_certs = vec![node_cert(
        "/var/lib/kubelet/pki/kubelet-client-current.pem",
        NodeCertRead::Ok(client.clone()),
    )];
    let r = build_report(&f);
    assert!(r.healthy, "{:?}", r.problems);
    assert_eq!(r.kubelet.client.renewed_by, RenewedBy::NodeCertAgent);
    assert_eq!(r.node_certificates[0].status, CertStatus::Expiring);
    assert_eq!(r.node_certificates[0].renewed_by, RenewedBy::NodeCertAgent);
    let deadline = renewal::deadline(
        client.not_before,
        client.not_after,
        renewal::renewal_fraction("node-1"),
    );
    assert_eq!(r.kubelet.client.next_renewal, Some(rfc3339(deadline)));
    assert_eq!(r.agent.next_renewal, Some(rfc3339(deadline)));
    // Without the job and without kubelet rotation, the same cert is a problem.
    f.kubelet.agent_job = false;
    let r = build_report(&f);
    assert_eq!(r.problems[0].kind, ProblemKind::Expiring);
    // kubelet's own rotation is a renewal path too.
    f.kubelet.rotate_certificates = true;
    let r = build_report(&f);
    assert!(r.healthy);
    assert_eq!(r.kubelet.client.renewed_by, RenewedBy::Kubelet);
    let t = render_table(&r);
    assert!(
        t.contains("enabled (/var/lib/kubelet/bootstrap-kubeconfig)"),
        "{t}"
    );
    assert!(t.contains("by kubelet (70-90 % of lifetime)"), "{t}");
}

#[test]
fn a_serving_certificate_kubelet_does_not_serve_is_a_problem_and_kubelets_own_is_not() {
    let mut f = facts_with_ca(healthy_ca());
    f.kubelet.agent_job = true;
    f.kubelet.serving_job = true;
    let r = build_report(&f);
    let p = r
        .problems
        .iter()
        .find(|p| p.kind == ProblemKind::Mismatch)
        .expect("a mismatch for the unserved serving certificate");
    assert!(p.message.contains("sets no tlsCertFile"), "{}", p.message);
    assert!(
        p.message.contains("kubelet-server-current.pem"),
        "{}",
        p.message
    );
    f.kubelet.tls_cert_file = Some("/var/lib/kubelet/pki/kubelet-server-current.pem".into());
    assert!(build_report(&f).healthy);
    // kubelet requesting its own serving certificate is not the agent's.
    f.kubelet.tls_cert_file = None;
    f.kubelet.serving_job = false;
    f.kubelet.server_tls_bootstrap = true;
    let r = build_report(&f);
    assert!(r.healthy, "{:?}", r.problems);
    assert_eq!(r.kubelet.serving.renewed_by, RenewedBy::Kubelet);
}

#[test]
fn a_runtime_whose_environment_points_its_roots_elsewhere_is_a_problem() {
    let mut f = facts_with_ca(healthy_ca());
    f.runtime_roots = vec![
        (
            "containerd.service".into(),
            "SSL_CERT_DIR".into(),
            "/etc/ssl/certs".into(),
        ),
        (
            "containerd.service".into(),
            "SSL_CERT_FILE".into(),
            "/opt/roots.pem".into(),
        ),
    ];
    let r = build_report(&f);
    assert_eq!(r.trust_store.runtime_roots.len(), 2);
    assert_eq!(r.problems.len(), 1, "{:?}", r.problems);
    assert_eq!(r.problems[0].subject, "containerd.service");
    assert!(
        r.problems[0]
            .message
            .contains("SSL_CERT_FILE=/opt/roots.pem"),
        "{}",
        r.problems[0].message
    );
}

#[test]
fn a_kubeconfig_that_uses_another_credential_than_the_renewed_file_is_a_problem() {
    let mut f = facts_with_ca(healthy_ca());
    f.kubelet.agent_job = true;
    f.kubelet.kubeconfig = Some("/var/lib/kubelet/kubeconfig".into());
    f.kubelet.kubeconfig_credential = Some(Ok(Credential::CertificateFile(
        "/var/lib/kubelet/pki/kubelet-client-current.pem".into(),
    )));
    let r = build_report(&f);
    assert!(r.healthy, "{:?}", r.problems);
    assert_eq!(
        r.kubelet.kubeconfig_credential.as_deref(),
        Some("file /var/lib/kubelet/pki/kubelet-client-current.pem")
    );
    for other in [
        Credential::EmbeddedCertificate,
        Credential::CertificateFile("/etc/kubernetes/pki/kubelet.crt".into()),
        Credential::Token,
    ] {
        f.kubelet.kubeconfig_credential = Some(Ok(other.clone()));
        let r = build_report(&f);
        assert_eq!(r.exit_code, EXIT_UNHEALTHY, "{other:?}");
        let p = &r.problems[0];
        assert_eq!(p.kind, ProblemKind::Mismatch);
        assert!(
            p.message.contains("kubelet-client-current.pem") && p.message.contains("Fix:"),
            "{}",
            p.message
        );
    }
    // Without the agent's job, kubelet's own choice is none of its business.
    f.kubelet.agent_job = false;
    assert!(build_report(&f).healthy);
}

#[test]
fn json_has_the_documented_schema() {
    let r = build_report(&facts_with_ca(healthy_ca()));
    let v: serde_json::Value = serde_json::from_str(&render_json(&r).unwrap()).unwrap();
    crate::contract::assert_contract(
        &v,
        &[
            "agent",
            "agent.caSecretSource",
            "agent.fleetPublish",
            "agent.lastError",
            "agent.lastKubeletError",
            "agent.lastKubeletPass",
            "agent.lastReconcile",
            "agent.metricsAddress",
            "agent.mode",
            "agent.nextRenewal",
            "agent.pid",
            "agent.pullTrust",
            "agent.revocationMatches",
            "agent.revocationSource",
            "agent.running",
            "agent.runningCheck",
            "agent.runningDetail",
            "agent.startedAt",
            "agent.stateDir",
            "agent.stateError",
            "agent.version",
            "agent.waitingPods",
            "agent.waitingPodsAdvice",
            "customCas",
            "customCas[].anchorPresent",
            "customCas[].findings",
            "customCas[].inBundle",
            "customCas[].installed",
            "customCas[].issuer",
            "customCas[].key",
            "customCas[].notAfter",
            "customCas[].notBefore",
            "customCas[].residualSeconds",
            "customCas[].serial",
            "customCas[].sha256",
            "customCas[].source",
            "customCas[].subject",
            "exitCode",
            "generatedAt",
            "healthy",
            "kubelet",
            "kubelet.agentJob",
            "kubelet.bootstrapKubeconfig",
            "kubelet.client",
            "kubelet.client.error",
            "kubelet.client.file",
            "kubelet.client.issuer",
            "kubelet.client.keyMatches",
            "kubelet.client.kind",
            "kubelet.client.nextRenewal",
            "kubelet.client.notAfter",
            "kubelet.client.notBefore",
            "kubelet.client.path",
            "kubelet.client.present",
            "kubelet.client.renewedBy",
            "kubelet.client.residualSeconds",
            "kubelet.client.serial",
            "kubelet.client.subject",
            "kubelet.commandLineRead",
            "kubelet.kubeconfig",
            "kubelet.kubeconfigCredential",
            "kubelet.kubeconfigError",
            "kubelet.kubeletConfig",
            "kubelet.nodeName",
            "kubelet.rotateCertificates",
            "kubelet.serverTlsBootstrap",
            "kubelet.serving",
            "kubelet.serving.error",
            "kubelet.serving.file",
            "kubelet.serving.issuer",
            "kubelet.serving.keyMatches",
            "kubelet.serving.kind",
            "kubelet.serving.nextRenewal",
            "kubelet.serving.notAfter",
            "kubelet.serving.notBefore",
            "kubelet.serving.path",
            "kubelet.serving.present",
            "kubelet.serving.renewedBy",
            "kubelet.serving.residualSeconds",
            "kubelet.serving.serial",
            "kubelet.serving.subject",
            "kubelet.tlsBootstrapping",
            "kubelet.tlsCertFile",
            "nodeCertificates",
            "problems",
            "schemaVersion",
            "trustStore",
            "trustStore.agentCas",
            "trustStore.agentCasInBundle",
            "trustStore.anchorsDir",
            "trustStore.bundlePath",
            "trustStore.error",
            "trustStore.family",
            "trustStore.pendingRestarts",
            "trustStore.runtimeRoots",
        ],
        "status",
    );
    assert_eq!(v["schemaVersion"], 1);
    assert_eq!(v["healthy"], true);
    assert_eq!(v["exitCode"], 0);
    for key in [
        "generatedAt",
        "problems",
        "agent",
        "customCas",
        "trustStore",
        "kubelet",
        "nodeCertificates",
    ] {
        assert!(v.get(key).is_some(), "missing {key}: {v}");
    }
    let ca = &v["customCas"][0];
    for key in [
        "source",
        "key",
        "subject",
        "sha256",
        "notBefore",
        "notAfter",
        "residualSeconds",
        "anchorPresent",
        "inBundle",
        "installed",
        "findings",
    ] {
        assert!(ca.get(key).is_some(), "customCas[0] lacks {key}: {ca}");
    }
    assert_eq!(ca["installed"], true);
    assert_eq!(v["agent"]["running"], false);
    assert_eq!(v["agent"]["runningCheck"], "none");
    assert_eq!(v["trustStore"]["family"], "debian");
    assert_eq!(v["kubelet"]["client"]["renewedBy"], "none");
}
