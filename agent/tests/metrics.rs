//! The `/metrics` contract: every series (name, labels, value) that the
//! agent exposes, as a Prometheus text parser reads them, for one node
//! before any pass and after a few recorded passes and failures.
//!
//! The lists below are the contract, captured from the hand-written
//! exposition this crate had before it moved to `prometheus-client`: a
//! change to them is a change of what dashboards and alerts see. HELP and
//! TYPE text are not part of it.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use common::{corpus, rt, Node};
use node_cert_agent::kubelet::manager::{KubeletError, PassOutcome};
use node_cert_agent::kubelet::renewal::RenewReason;
use node_cert_agent::kubelet::store::{is_timestamped_file, CertKind};
use node_cert_agent::node::distro::Family;
use node_cert_agent::node::hostroot::HostRoot;
use node_cert_agent::ops::daemon_status::AgentMode;
use node_cert_agent::ops::inventory::{gather_certificates, AnchorList, InventorySources};
use node_cert_agent::ops::recorder::{Recorder, RecorderOptions};
use node_cert_agent::trust::pull_trust::{PullMode, PullTrust};
use node_cert_agent::trust::reconcile::{Outcome, ReconcileError};
use node_cert_agent::trust::store::TrustStore;

/// The clock of every scrape: 2030-03-17T17:46:40Z.
const NOW: i64 = 1_900_000_000;
const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The whole `/metrics` body for `recorder` and the node's certificates at `now`.
fn scrape(recorder: &Recorder, sources: &InventorySources, now: i64) -> String {
    recorder
        .metrics()
        .render(Some(gather_certificates(sources)), now)
        .unwrap()
}

fn recorder() -> Recorder {
    Recorder::new(RecorderOptions {
        mode: AgentMode::Host,
        started_at: NOW - 1000,
        ca_job: true,
        kubelet_job: true,
        metrics_address: None,
    })
}

/// Every sample as `name{label="value",...} value`, labels sorted by name,
/// samples sorted: what a Prometheus text parser reads, in a stable order.
fn series(body: &str) -> Vec<String> {
    let scrape = prometheus_parse::Scrape::parse(body.lines().map(|l| Ok(l.to_owned())))
        .unwrap_or_else(|e| panic!("{e}: {body}"));
    let mut out: Vec<String> = scrape
        .samples
        .iter()
        .map(|s| {
            let value = match s.value {
                prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Untyped(v) => v,
                ref other => panic!("{} is not a plain value: {other:?}", s.metric),
            };
            let labels: std::collections::BTreeMap<_, _> = s.labels.iter().collect();
            let labels: Vec<String> = labels
                .into_iter()
                .map(|(k, v)| format!("{k}=\"{v}\""))
                .collect();
            if labels.is_empty() {
                format!("{} {value}", s.metric)
            } else {
                format!("{}{{{}}} {value}", s.metric, labels.join(","))
            }
        })
        .collect();
    out.sort();
    out
}

/// A Debian node with node certificates: two CAs in kubeadm's pki dir (one
/// of them expired), a damaged one, one whose file name needs escaping, and
/// kubeadm's admin.conf with an inline client certificate.
fn node_with_certificates() -> (Node, InventorySources) {
    let node = Node::new();
    let pki = node.root.path().join("etc/kubernetes/pki");
    fs::create_dir_all(&pki).unwrap();
    fs::copy(corpus("certs/issuer-ca.pem"), pki.join("ca.crt")).unwrap();
    fs::copy(corpus("certs/expired-ca.pem"), pki.join("expired.crt")).unwrap();
    fs::copy(corpus("keys/damaged-base64.crt"), pki.join("broken.crt")).unwrap();
    fs::copy(corpus("certs/leaf.pem"), pki.join("odd \"name\\.crt")).unwrap();
    fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/metrics/admin.conf"),
        node.root.path().join("etc/kubernetes/admin.conf"),
    )
    .unwrap();
    let host = HostRoot::new(node.root.path()).unwrap();
    let store = TrustStore::new(host.clone(), Family::Debian.layout());
    // The agent's anchors, as `status` lists them (status::gather).
    let anchors: AnchorList = Arc::new(move || {
        let installed = store.installed().map_err(|e| e.to_string())?;
        Ok(installed
            .certs
            .into_iter()
            .map(|(fp, info)| (store.anchor_node_path(&fp), info))
            .collect())
    });
    let sources = InventorySources {
        host,
        anchors,
        superseded: is_timestamped_file,
        cert_dirs: vec![PathBuf::from("/etc/kubernetes/pki")],
        pki_dir: PathBuf::from("/var/lib/kubelet/pki"),
        kubeconfigs: vec![],
    };
    (node, sources)
}

/// One certificate's labels (sorted by name, values as the parser returns
/// them: still escaped) and its gauges at [`NOW`]: not_after, not_before,
/// expired, expires_in_seconds, valid_since_seconds.
type CertRow = (&'static str, [i64; 5]);

/// The agent's anchor (`certs/good-ca.pem`), once the CA pass installed it.
const ANCHOR: CertRow = (
    r#"filename="node-cert-agent-7893144d14b443cd3cf2cf0fb245c71cde2c01bfbfcda91a5feea0201e080216.crt",filepath="/usr/local/share/ca-certificates/node-cert-agent/node-cert-agent-7893144d14b443cd3cf2cf0fb245c71cde2c01bfbfcda91a5feea0201e080216.crt",issuer_CN="Corpus Good CA",issuer_O="nca corpus",serial_number="493086411249283109743998687550063346804873686052",subject_CN="Corpus Good CA",subject_O="nca corpus""#,
    [2426048907, 1795328907, 0, 526048907, 104671093],
);

/// The node certificates of [`node_with_certificates`].
const NODE_CERTS: [CertRow; 4] = [
    (
        r#"embedded_key="kubernetes-admin",embedded_kind="user",filename="admin.conf",filepath="/etc/kubernetes/admin.conf",issuer_CN="Corpus Issuer CA",issuer_O="nca corpus",serial_number="289804233349782628711842318309504479831214147857",subject_CN="registry.corpus.test",subject_O="nca corpus""#,
        [2426048907, 1795328907, 0, 526048907, 104671093],
    ),
    (
        r#"filename="ca.crt",filepath="/etc/kubernetes/pki/ca.crt",issuer_CN="Corpus Issuer CA",issuer_O="nca corpus",serial_number="141771777507188497405694363483286789437931348673",subject_CN="Corpus Issuer CA",subject_O="nca corpus""#,
        [2426048907, 1795328907, 0, 526048907, 104671093],
    ),
    (
        r#"filename="expired.crt",filepath="/etc/kubernetes/pki/expired.crt",issuer_CN="Corpus Expired CA",issuer_O="nca corpus",serial_number="1",subject_CN="Corpus Expired CA",subject_O="nca corpus""#,
        [978307200, 946684800, 1, -921692800, 953315200],
    ),
    // The parser does not unescape: `\"` and `\\` are the escapes on the wire.
    (
        r#"filename="odd \"name\\.crt",filepath="/etc/kubernetes/pki/odd \"name\\.crt",issuer_CN="Corpus Issuer CA",issuer_O="nca corpus",serial_number="289804233349782628711842318309504479831214147857",subject_CN="registry.corpus.test",subject_O="nca corpus""#,
        [2426048907, 1795328907, 0, 526048907, 104671093],
    ),
];

/// The certificate series: five gauges per certificate, and one read error
/// (`broken.crt`).
fn certificate_series(with_anchor: bool) -> Vec<String> {
    let gauges = [
        "x509_cert_not_after",
        "x509_cert_not_before",
        "x509_cert_expired",
        "x509_cert_expires_in_seconds",
        "x509_cert_valid_since_seconds",
    ];
    let anchor = with_anchor.then_some(ANCHOR);
    let mut out: Vec<String> = anchor
        .iter()
        .chain(NODE_CERTS.iter())
        .flat_map(|(labels, values)| {
            gauges
                .iter()
                .zip(values)
                .map(move |(name, value)| format!("{name}{{{labels}}} {value}"))
        })
        .collect();
    out.push("x509_read_errors 1".into());
    out
}

#[test]
fn metrics_before_any_pass_are_the_contracted_series() {
    let (_node, sources) = node_with_certificates();
    let got = series(&scrape(&recorder(), &sources, NOW));
    let mut want: Vec<String> = [
        format!("node_cert_agent_build_info{{version=\"{VERSION}\"}} 1"),
        "node_cert_agent_kubelet_renewals_total{result=\"failure\"} 0".into(),
        "node_cert_agent_kubelet_renewals_total{result=\"success\"} 0".into(),
        "node_cert_agent_last_reconcile_timestamp_seconds 0".into(),
        "node_cert_agent_pull_trust_live 0".into(),
        "node_cert_agent_ready 0".into(),
        "node_cert_agent_trust_store_refreshes_total{result=\"failure\"} 0".into(),
        "node_cert_agent_trust_store_refreshes_total{result=\"success\"} 0".into(),
    ]
    .into_iter()
    .chain(certificate_series(false))
    .collect();
    want.sort();
    assert_eq!(got, want, "\n{}", got.join("\n"));
}

#[test]
fn metrics_after_passes_and_failures_are_the_contracted_series() {
    let (node, sources) = node_with_certificates();
    let m = recorder();

    // A real CA pass: one CA installed, the refresh tool run, containerd
    // restarted, and an empty key refused (an input error).
    let reconciler = node.reconciler(&["containerd.service"]);
    let good = fs::read(corpus("certs/good-ca.pem")).unwrap();
    let empty = fs::read(corpus("keys/empty.crt")).unwrap();
    node.publish(&[("ca1.crt", &good), ("empty.crt", &empty)]);
    let outcome = rt().block_on(reconciler.reconcile()).unwrap();
    assert_eq!(outcome.installed.len(), 1, "{outcome:?}");
    m.record_ca_pass(&outcome, NOW - 300);
    // Failures of the CA job: a restart job that failed, a refresh tool that failed.
    m.record_ca_error(
        &ReconcileError::RestartFailed {
            unit: "containerd.service".into(),
            result: "failed".into(),
        },
        NOW - 200,
    );
    m.record_ca_error(
        &ReconcileError::RefreshFailed {
            command: vec!["update-ca-certificates".into()],
            unit: "node-cert-agent-refresh-1.service".into(),
            result: "exit-code".into(),
            status: 1,
        },
        NOW - 150,
    );
    // A pass that containerd took live: no restart.
    m.record_ca_pass(
        &Outcome {
            restarts_avoided: vec!["containerd.service".into()],
            pull_trust: Some(PullTrust {
                mode: PullMode::Live,
                dir: Some("/etc/containerd/certs.d/_default".into()),
                reason: None,
                path: None,
                hint: None,
            }),
            ..Outcome::default()
        },
        NOW - 120,
    );
    // The next pass has no input error: the key's gauge goes to 0, not away.
    m.record_ca_pass(&Outcome::default(), NOW - 100);
    // The kubelet job renews both certificates and restarts kubelet, then fails.
    m.record_kubelet_pass(
        &PassOutcome {
            next_deadline: Some(NOW + 86_400),
            renewed: vec![CertKind::Client, CertKind::Serving],
            reasons: vec![
                (CertKind::Client, RenewReason::Due { deadline: NOW - 50 }),
                (CertKind::Serving, RenewReason::Revoked("old-ca".into())),
            ],
            restarted: vec!["kubelet.service".to_string()],
            ..PassOutcome::default()
        },
        NOW - 50,
    );
    m.record_kubelet_error(
        &KubeletError::RestartFailed {
            unit: "kubelet.service".into(),
            result: "timeout".into(),
        },
        NOW - 10,
    );

    let got = series(&scrape(&m, &sources, NOW));
    let mut want: Vec<String> = [
        format!("node_cert_agent_build_info{{version=\"{VERSION}\"}} 1"),
        "node_cert_agent_input_errors{key=\"empty.crt\"} 0".into(),
        "node_cert_agent_kubelet_renewals_total{result=\"failure\"} 1".into(),
        "node_cert_agent_kubelet_renewals_total{result=\"success\"} 2".into(),
        format!(
            "node_cert_agent_last_reconcile_timestamp_seconds {}",
            NOW - 100
        ),
        "node_cert_agent_pull_trust_live 1".into(),
        "node_cert_agent_ready 1".into(),
        "node_cert_agent_trust_store_refreshes_total{result=\"failure\"} 1".into(),
        "node_cert_agent_trust_store_refreshes_total{result=\"success\"} 1".into(),
        "node_cert_agent_unit_restarts_avoided_total{unit=\"containerd.service\"} 1".into(),
        "node_cert_agent_unit_restarts_total{result=\"done\",unit=\"containerd.service\"} 1".into(),
        "node_cert_agent_unit_restarts_total{result=\"failed\",unit=\"containerd.service\"} 1"
            .into(),
        "node_cert_agent_unit_restarts_total{result=\"done\",unit=\"kubelet.service\"} 1".into(),
        "node_cert_agent_unit_restarts_total{result=\"timeout\",unit=\"kubelet.service\"} 1".into(),
    ]
    .into_iter()
    .chain(certificate_series(true))
    .collect();
    want.sort();
    assert_eq!(got, want, "\n{}", got.join("\n"));
}
