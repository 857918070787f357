//! The `/metrics` exposition, with `prometheus-client`: the agent's own
//! series ([`AgentMetrics`], counters and gauges in one [`Registry`]) and
//! the certificate gauges ([`encode_certificates`]), in the Prometheus text
//! format 0.0.4.
//!
//! Owns the series: their names, help, label sets and value types. The
//! certificate gauges use x509-certificate-exporter's names and labels, so
//! its alerts and dashboards keep working; they are
//! computed on each scrape from the inventory `status` lists
//! ([`crate::ops::inventory::gather_certificates`]).
//!
//! Every label value goes through [`crate::text::escape`] first (a key
//! name, a unit, a subject's fields, a path), so a control character or a
//! bidi mark reaches no dashboard raw; prometheus-client then escapes the
//! backslash, the quote and the newline of the text format.
//!
//! Boundary: counts what it is told. What a pass or a failure means for a
//! counter is the recorder's ([`crate::ops::recorder`]); reading the node's
//! certificates is the inventory's; serving the text is the listener's
//! ([`crate::ops::http`]). No I/O here.

use std::fmt;
use std::path::Path;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{prometheus_text, DescriptorEncoder, EncodeLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::info::Info;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use crate::ops::inventory::{CertInventory, CertSummary, Embedded, NodeCertRead};
use crate::text::escape;

/// Prometheus' text exposition format, version 0.0.4: what scrapers have
/// always been served here (no OpenMetrics `# EOF`, counters typed by their
/// `_total` name).
pub const CONTENT_TYPE: &str = prometheus_text::CONTENT_TYPE;

#[derive(Debug, thiserror::Error)]
pub enum PrometheusError {
    #[error("cannot encode the agent's own metrics as Prometheus text")]
    EncodeAgent(#[source] fmt::Error),
    #[error("cannot encode the certificate gauges as Prometheus text")]
    EncodeCertificates(#[source] fmt::Error),
}

/// `result="..."`: of a trust-store refresh (`success`, `failure`) or a
/// kubelet renewal.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: &'static str,
}

/// A unit restart: the unit, and systemd's job result (`done`, `failed`,
/// ..., or `error` when the call itself failed).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RestartLabels {
    unit: String,
    result: String,
}

/// A unit.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UnitLabel {
    unit: String,
}

/// An input key (a Secret key, a file) of the CA sources.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KeyLabel {
    key: String,
}

/// A CA source read through the API (`secret/<namespace>/<name>`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SourceLabel {
    source: String,
}

const SUCCESS: ResultLabel = ResultLabel { result: "success" };
const FAILURE: ResultLabel = ResultLabel { result: "failure" };

/// The agent's own series, registered once; the handles are updated by the
/// recorder and read on every scrape.
#[derive(Debug)]
pub struct AgentMetrics {
    registry: Registry,
    refreshes: Family<ResultLabel, Counter>,
    unit_restarts: Family<RestartLabels, Counter>,
    restarts_avoided: Family<UnitLabel, Counter>,
    pull_trust_live: Gauge,
    kubelet_renewals: Family<ResultLabel, Counter>,
    input_errors: Family<KeyLabel, Gauge>,
    source_synced: Family<SourceLabel, Gauge>,
    last_reconcile: Gauge,
    ready: Gauge,
}

impl AgentMetrics {
    /// Every series at its start value; `version` labels the build info.
    pub fn new(version: &str) -> Self {
        let this = Self {
            registry: Registry::default(),
            refreshes: Family::default(),
            unit_restarts: Family::default(),
            restarts_avoided: Family::default(),
            pull_trust_live: Gauge::default(),
            kubelet_renewals: Family::default(),
            input_errors: Family::default(),
            source_synced: Family::default(),
            last_reconcile: Gauge::default(),
            ready: Gauge::default(),
        };
        // Both results are always there, from 0: a rate() needs the series
        // before the first event.
        for result in [&SUCCESS, &FAILURE] {
            let _ = this.refreshes.get_or_create(result);
            let _ = this.kubelet_renewals.get_or_create(result);
        }
        this.registered(version)
    }

    /// Registers every series, in the order they are served.
    fn registered(mut self, version: &str) -> Self {
        let r = &mut self.registry;
        // An info metric is a gauge that is always 1; prometheus-client adds
        // the `_info` suffix: node_cert_agent_build_info{version}.
        r.register(
            "node_cert_agent_build",
            "Always 1; the version label says which agent runs",
            Info::new([("version", version.to_string())]),
        );
        // Counters get their `_total` suffix from prometheus-client.
        r.register(
            "node_cert_agent_trust_store_refreshes",
            "Runs of the distro's trust-store refresh tool, by result",
            self.refreshes.clone(),
        );
        r.register(
            "node_cert_agent_unit_restarts",
            "Unit restarts the agent asked systemd for, by unit and job result (done, failed, ..., or error when the call itself failed)",
            self.unit_restarts.clone(),
        );
        r.register(
            "node_cert_agent_unit_restarts_avoided",
            "Restarts a trust change did not need, by unit: containerd read the added CAs live through its registry host configuration",
            self.restarts_avoided.clone(),
        );
        r.register(
            "node_cert_agent_pull_trust_live",
            "1 when image pulls get the custom CAs live through containerd's registry host configuration (no restart for an added CA), 0 when only a restart makes a change effective",
            self.pull_trust_live.clone(),
        );
        r.register(
            "node_cert_agent_kubelet_renewals",
            "Kubelet certificate renewals, by result (success per certificate, failure per failed pass)",
            self.kubelet_renewals.clone(),
        );
        r.register(
            "node_cert_agent_input_errors",
            "Error findings of the last CA pass, by input key (0 once fixed)",
            self.input_errors.clone(),
        );
        r.register(
            "node_cert_agent_source_synced",
            "1 when the CA source read through the API (the Secret) is synced with the API server, 0 when it is not (the CAs last installed from it stay)",
            self.source_synced.clone(),
        );
        r.register(
            "node_cert_agent_last_reconcile_timestamp_seconds",
            "Unix time of the last CA pass that completed (0 before the first)",
            self.last_reconcile.clone(),
        );
        r.register(
            "node_cert_agent_ready",
            "1 once the first pass has completed (what /readyz says)",
            self.ready.clone(),
        );
        self
    }

    pub fn trust_store_refreshed(&self, ok: bool) {
        self.refreshes
            .get_or_create(if ok { &SUCCESS } else { &FAILURE })
            .inc();
    }

    pub fn unit_restarted(&self, unit: &str, result: &str) {
        self.unit_restarts
            .get_or_create(&RestartLabels {
                unit: escape(unit).into_owned(),
                result: escape(result).into_owned(),
            })
            .inc();
    }

    pub fn unit_restart_avoided(&self, unit: &str) {
        self.restarts_avoided
            .get_or_create(&UnitLabel {
                unit: escape(unit).into_owned(),
            })
            .inc();
    }

    pub fn set_pull_trust_live(&self, live: bool) {
        self.pull_trust_live.set(i64::from(live));
    }

    /// `certificates` kubelet certificates renewed.
    pub fn kubelet_renewed(&self, certificates: u64) {
        self.kubelet_renewals
            .get_or_create(&SUCCESS)
            .inc_by(certificates);
    }

    pub fn kubelet_renewal_failed(&self) {
        self.kubelet_renewals.get_or_create(&FAILURE).inc();
    }

    pub fn set_input_errors(&self, key: &str, errors: u64) {
        self.input_errors
            .get_or_create(&KeyLabel {
                key: escape(key).into_owned(),
            })
            .set(i64::try_from(errors).unwrap_or(i64::MAX));
    }

    pub fn set_source_synced(&self, source: &str, synced: bool) {
        self.source_synced
            .get_or_create(&SourceLabel {
                source: escape(source).into_owned(),
            })
            .set(i64::from(synced));
    }

    pub fn set_last_reconcile(&self, unix_seconds: i64) {
        self.last_reconcile.set(unix_seconds);
    }

    pub fn set_ready(&self, ready: bool) {
        self.ready.set(i64::from(ready));
    }

    /// The agent's own series, in Prometheus text.
    pub fn encode(&self, out: &mut String) -> Result<(), PrometheusError> {
        prometheus_text::encode(out, &self.registry).map_err(PrometheusError::EncodeAgent)
    }

    /// The whole `/metrics` body: the agent's series, then the certificate
    /// gauges of `certificates` (if any) at `now`.
    pub fn render(
        &self,
        certificates: Option<CertInventory>,
        now: i64,
    ) -> Result<String, PrometheusError> {
        let mut out = String::new();
        self.encode(&mut out)?;
        if let Some(inventory) = certificates {
            encode_certificates(&mut out, inventory, now)?;
        }
        Ok(out)
    }
}

/// x509-certificate-exporter's labels for one certificate: `filename`,
/// `filepath` (the node path), `serial_number` (decimal), `issuer_*` and
/// `subject_*` (C, ST, L, O, OU, CN, when present), and `embedded_kind` /
/// `embedded_key` for a kubeconfig's embedded certificate.
fn cert_labels(path: &Path, cert: &CertSummary, embedded: Option<&Embedded>) -> CertLabels {
    let mut labels = vec![
        (
            "filename".to_string(),
            path.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
        ),
        ("filepath".to_string(), path.display().to_string()),
        ("serial_number".to_string(), cert.serial_decimal.clone()),
    ];
    for (prefix, fields) in [
        ("issuer", &cert.issuer_fields),
        ("subject", &cert.subject_fields),
    ] {
        for short in ["C", "ST", "L", "O", "OU", "CN"] {
            if let Some((_, v)) = fields.iter().find(|(k, _)| k == short) {
                labels.push((format!("{prefix}_{short}"), v.clone()));
            }
        }
    }
    if let Some(e) = embedded {
        labels.push(("embedded_kind".to_string(), e.kind.to_string()));
        labels.push(("embedded_key".to_string(), e.name.clone()));
    }
    for (_, v) in &mut labels {
        if let std::borrow::Cow::Owned(escaped) = escape(v) {
            *v = escaped;
        }
    }
    labels
}

/// One certificate's labels, in the exporter's order, escaped by
/// [`crate::text`]; prometheus-client escapes the text format's backslash,
/// double quote and newline.
type CertLabels = Vec<(String, String)>;

/// A certificate gauge's value for a certificate at a time.
type CertGauge = fn(&CertSummary, i64) -> i64;

const CERT_GAUGES: [(&str, &str, CertGauge); 5] = [
    (
        "x509_cert_not_after",
        "Indicates the certificate's not after timestamp",
        |c, _| c.not_after,
    ),
    (
        "x509_cert_not_before",
        "Indicates the certificate's not before timestamp",
        |c, _| c.not_before,
    ),
    (
        "x509_cert_expired",
        "Indicates if the certificate is expired",
        |c, now| i64::from(c.not_after <= now),
    ),
    (
        "x509_cert_expires_in_seconds",
        "Indicates the remaining time before the certificate's not after timestamp",
        |c, now| c.not_after - now,
    ),
    (
        "x509_cert_valid_since_seconds",
        "Indicates the elapsed time since the certificate's not before timestamp",
        |c, now| now - c.not_before,
    ),
];

/// The certificate gauges of one scrape. A collector rather than families:
/// every certificate is one sample, even two identical ones in one file,
/// as the exporter does.
#[derive(Debug)]
struct CertificateGauges {
    certs: Vec<(CertLabels, CertSummary)>,
    read_errors: i64,
    now: i64,
}

impl CertificateGauges {
    fn of(inventory: CertInventory, now: i64) -> Self {
        let mut certs = Vec::new();
        let mut read_errors = 0;
        match inventory.anchors {
            Ok(anchors) => {
                for a in anchors.into_values() {
                    certs.push((cert_labels(&a.path, &a.cert, None), a.cert));
                }
            }
            Err(_) => read_errors += 1,
        }
        for n in inventory.node_certs {
            match n.read {
                NodeCertRead::Ok(c) => {
                    certs.push((cert_labels(&n.path, &c, n.embedded.as_ref()), c));
                }
                NodeCertRead::Unreadable(_) => read_errors += 1,
                // Missing is a status finding, not a read error: the exporter
                // only counts files it failed to parse.
                NodeCertRead::Missing { .. } => {}
            }
        }
        Self {
            certs,
            read_errors,
            now,
        }
    }
}

impl Collector for CertificateGauges {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        for (name, help, value) in CERT_GAUGES {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
            for (labels, cert) in &self.certs {
                family
                    .encode_family(labels)?
                    .encode_gauge(&value(cert, self.now))?;
            }
        }
        encoder
            .encode_descriptor(
                "x509_read_errors",
                "Indicates the number of read failure(s)",
                None,
                MetricType::Gauge,
            )?
            .encode_gauge(&self.read_errors)
    }
}

/// The certificate gauges for `inventory` at `now`, in Prometheus text.
pub fn encode_certificates(
    out: &mut String,
    inventory: CertInventory,
    now: i64,
) -> Result<(), PrometheusError> {
    // Registered per scrape: the gauges are computed from this scrape's
    // inventory, which the registry then owns.
    let mut registry = Registry::default();
    registry.register_collector(Box::new(CertificateGauges::of(inventory, now)));
    prometheus_text::encode(out, &registry).map_err(PrometheusError::EncodeCertificates)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::ops::inventory::{AnchorFact, NodeCertFact};
    use crate::x509::cert::Fingerprint;

    fn summary(cn: &str) -> CertSummary {
        CertSummary {
            subject: format!("O=Corp, CN={cn}"),
            issuer: format!("O=Corp, CN={cn}"),
            subject_fields: vec![("O".into(), "Corp".into()), ("CN".into(), cn.into())],
            issuer_fields: vec![("O".into(), "Corp".into()), ("CN".into(), cn.into())],
            serial_hex: "FF".into(),
            serial_decimal: "255".into(),
            not_before: 1_000,
            not_after: 2_000,
            fingerprint: Fingerprint::of_der(cn.as_bytes()),
        }
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
    fn certificate_gauges_use_the_exporters_names_and_labels() {
        let c = summary("Corp \"Root\"");
        let info = crate::x509::cert::CertInfo::from_der(
            &crate::x509::testpki::good_ca("x").cert.to_der().unwrap(),
        )
        .unwrap();
        let inv = CertInventory {
            anchors: Ok(BTreeMap::from([(
                c.fingerprint,
                AnchorFact {
                    path: "/usr/local/share/ca-certificates/node-cert-agent/node-cert-agent-ab.crt"
                        .into(),
                    cert: c.clone(),
                    info,
                },
            )])),
            node_certs: vec![
                NodeCertFact {
                    path: "/etc/kubernetes/admin.conf".into(),
                    embedded: Some(Embedded {
                        kind: "user",
                        name: "kubernetes-admin".into(),
                    }),
                    index: 1,
                    read: NodeCertRead::Ok(summary("kubernetes-admin")),
                },
                NodeCertFact {
                    path: "/etc/kubernetes/pki/broken.crt".into(),
                    embedded: None,
                    index: 1,
                    read: NodeCertRead::Unreadable("damaged".into()),
                },
            ],
        };
        let mut out = String::new();
        encode_certificates(&mut out, inv, 2_500).unwrap();
        assert!(out.contains("# TYPE x509_cert_not_after gauge"), "{out}");
        assert!(
            out.contains(
                "x509_cert_not_after{filename=\"node-cert-agent-ab.crt\",filepath=\"/usr/local/share/ca-certificates/node-cert-agent/node-cert-agent-ab.crt\",serial_number=\"255\",issuer_O=\"Corp\",issuer_CN=\"Corp \\\"Root\\\"\",subject_O=\"Corp\",subject_CN=\"Corp \\\"Root\\\"\"} 2000"
            ),
            "{out}"
        );
        assert!(out.contains("embedded_kind=\"user\",embedded_key=\"kubernetes-admin\"} 1000"));
        assert!(out.contains("x509_cert_expired{"), "{out}");
        assert!(
            out.contains("} -500\n"),
            "expires_in is negative once expired: {out}"
        );
        assert!(out.contains("x509_read_errors 1\n"), "{out}");
    }

    #[test]
    fn label_values_with_newlines_backslashes_and_quotes_stay_on_their_line() {
        // The newline is escaped visibly first (crate::text), then the
        // text format escapes that backslash like any other.
        let inv = CertInventory {
            anchors: Ok(BTreeMap::new()),
            node_certs: vec![node_cert(
                "/etc/kubernetes/pki/a\\b\n\"c\".crt",
                NodeCertRead::Ok(summary("x")),
            )],
        };
        let mut out = String::new();
        encode_certificates(&mut out, inv, 1_500).unwrap();
        assert!(
            out.contains(
                "x509_cert_not_after{filename=\"a\\\\b\\\\n\\\"c\\\".crt\",filepath=\"/etc/kubernetes/pki/a\\\\b\\\\n\\\"c\\\".crt\","
            ),
            "{out}"
        );
        for line in out.lines() {
            assert!(
                line.starts_with('#') || line.starts_with("x509_"),
                "a label value broke a line: {line:?} in\n{out}"
            );
        }
    }

    #[test]
    fn carriage_returns_escapes_and_bidi_marks_in_labels_are_escaped_visibly() {
        let m = AgentMetrics::new("t");
        m.set_input_errors("ca\r\x1b[2K\u{202e}.crt", 1);
        m.unit_restarted("x\x1b.service", "done");
        let mut out = String::new();
        m.encode(&mut out).unwrap();
        assert!(
            out.contains(r#"node_cert_agent_input_errors{key="ca\\r\\x1b[2K\\u{202e}.crt"} 1"#),
            "{out}"
        );
        assert!(out.contains(r#"unit="x\\x1b.service""#), "{out}");
        assert!(
            !out.contains('\r') && !out.contains('\x1b') && !out.contains('\u{202e}'),
            "{out:?}"
        );
    }

    #[test]
    fn two_identical_certificates_in_one_file_are_two_samples() {
        let inv = CertInventory {
            anchors: Ok(BTreeMap::new()),
            node_certs: vec![
                node_cert(
                    "/etc/kubernetes/pki/twice.crt",
                    NodeCertRead::Ok(summary("x")),
                ),
                node_cert(
                    "/etc/kubernetes/pki/twice.crt",
                    NodeCertRead::Ok(summary("x")),
                ),
            ],
        };
        let mut out = String::new();
        encode_certificates(&mut out, inv, 1_500).unwrap();
        assert_eq!(out.matches("x509_cert_not_after{").count(), 2, "{out}");
    }

    #[test]
    fn an_unknown_trust_store_is_one_read_error_and_a_missing_file_none() {
        let inv = CertInventory {
            anchors: Err("unknown distro".into()),
            node_certs: vec![node_cert(
                "/var/lib/kubelet/pki/kubelet-client-current.pem",
                NodeCertRead::Missing {
                    referenced_by: "/etc/kubernetes/kubelet.conf".into(),
                },
            )],
        };
        let mut out = String::new();
        encode_certificates(&mut out, inv, 1_500).unwrap();
        assert!(out.contains("x509_read_errors 1\n"), "{out}");
        assert!(!out.contains("x509_cert_not_after{"), "{out}");
    }

    #[test]
    fn counters_keep_their_total_names_and_both_results_start_at_zero() {
        let m = AgentMetrics::new("1.2.3");
        m.unit_restarted("containerd.service", "done");
        m.kubelet_renewed(2);
        let out = m.render(None, 0).unwrap();
        for line in [
            "node_cert_agent_build_info{version=\"1.2.3\"} 1\n",
            "node_cert_agent_trust_store_refreshes_total{result=\"success\"} 0\n",
            "node_cert_agent_trust_store_refreshes_total{result=\"failure\"} 0\n",
            "node_cert_agent_unit_restarts_total{unit=\"containerd.service\",result=\"done\"} 1\n",
            "node_cert_agent_kubelet_renewals_total{result=\"success\"} 2\n",
            "node_cert_agent_kubelet_renewals_total{result=\"failure\"} 0\n",
            "node_cert_agent_last_reconcile_timestamp_seconds 0\n",
            "node_cert_agent_ready 0\n",
        ] {
            assert!(out.contains(line), "missing {line:?} in\n{out}");
        }
        assert!(!out.contains("_total_total"), "{out}");
        assert!(!out.contains("# EOF"), "{out}");
    }
}
