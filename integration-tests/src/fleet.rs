//! A fleet for the `fleet` command's tests and benchmark: the test API
//! server holding many Nodes in chosen states, each written with the names
//! and digests of `node_cert_agent::fleet::schema` (what the agents'
//! publisher writes), the CA Secret, and an admin kubeconfig file.
//!
//! The states are real ones:
//! - **converged:** acted on the current Secret, installed its CA;
//! - **behind:** still acting on the previous Secret (its digest, its CA);
//! - **invalid input:** acted on the current Secret but refused a key of
//!   its own provisioning file, kept its last good (previous) CA;
//! - **no agent:** a Node with nothing of the agent's.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Command, Output};

use k8s_openapi::api::core::v1::{Node, NodeCondition, NodeSpec, NodeStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use nca_test_apiserver::ApiServer;
use node_cert_agent::fleet::schema;
use node_cert_agent::time::{now_unix, rfc3339};
use node_cert_agent::x509::cert::Fingerprint;

use crate::agent::agent_binary;
use crate::pki::{parse_pem, TestCa};

/// The Secret's namespace and name (the command's defaults).
pub const SECRET_NAMESPACE: &str = "kube-system";
pub const SECRET_NAME: &str = "custom-ca-trust-secret";
/// The label that splits the fleet into two pools (`-l pool=b`).
pub const POOL_LABEL: &str = "pool";

/// A node's state in the fixture.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mix {
    Converged,
    Behind,
    InputInvalid,
    NoAgent,
}

/// The fleet: a running test API server with Nodes and the Secret.
pub struct Fleet {
    pub server: ApiServer,
    /// An admin (`system:masters`) kubeconfig for the server.
    pub kubeconfig: PathBuf,
    /// The current Secret's data and its digests.
    pub current: Inputs,
    /// The previous Secret's (what behind nodes still have).
    pub previous: Inputs,
    _dir: tempfile::TempDir,
}

/// One version of the Secret and what a node that acted on it publishes.
#[derive(Debug, Clone)]
pub struct Inputs {
    pub data: BTreeMap<String, Vec<u8>>,
    pub input_digest: String,
    pub trust_set_digest: String,
}

impl Inputs {
    fn of(ca: &TestCa) -> Inputs {
        let data: BTreeMap<String, Vec<u8>> =
            [("ca1.crt".to_string(), ca.cert_pem().into_bytes())].into();
        let fp = Fingerprint::of_der(&parse_pem(&ca.cert_pem()).to_der().unwrap());
        Inputs {
            input_digest: schema::input_digest(&data),
            trust_set_digest: schema::trust_set_digest([&fp]),
            data,
        }
    }
}

/// The name of the `i`th node (sorted order is index order).
pub fn node_name(i: usize) -> String {
    format!("node-{i:05}")
}

/// The annotations, label and conditions of a node in state `mix`.
pub fn node(name: &str, pool: &str, mix: Mix, current: &Inputs, previous: &Inputs) -> Node {
    let now = now_unix();
    let mut labels = BTreeMap::from([
        ("kubernetes.io/hostname".to_string(), name.to_string()),
        ("kubernetes.io/os".to_string(), "linux".to_string()),
        (POOL_LABEL.to_string(), pool.to_string()),
    ]);
    let mut conditions = vec![NodeCondition {
        type_: "Ready".into(),
        status: "True".into(),
        reason: Some("KubeletReady".into()),
        message: Some("kubelet is posting ready status".into()),
        ..Default::default()
    }];
    let mut annotations = BTreeMap::new();
    if mix != Mix::NoAgent {
        let (input, trust, status, reason, message) = match mix {
            Mix::Converged => (
                current,
                current,
                "True",
                schema::TrustReason::Converged,
                "the installed CAs are the desired set",
            ),
            Mix::Behind => (
                previous,
                previous,
                "True",
                schema::TrustReason::Converged,
                "the installed CAs are the desired set",
            ),
            Mix::InputInvalid => (
                current,
                previous,
                "False",
                schema::TrustReason::InputInvalid,
                "key /etc/node-cert-agent/custom-ca.pem refused; fix it (node-cert-agent check)",
            ),
            Mix::NoAgent => unreachable!("handled above"),
        };
        let short = schema::short_digest(&trust.trust_set_digest).to_string();
        labels.insert(schema::TRUST_SET_LABEL.to_string(), short);
        for (k, v) in [
            (
                schema::VERSION_ANNOTATION,
                env!("CARGO_PKG_VERSION").to_string(),
            ),
            (schema::TRUST_SET_ANNOTATION, trust.trust_set_digest.clone()),
            (schema::CA_COUNT_ANNOTATION, "1".to_string()),
            (schema::INPUT_DIGEST_ANNOTATION, input.input_digest.clone()),
            (
                schema::KUBELET_CLIENT_NOT_AFTER_ANNOTATION,
                rfc3339(now + 300 * 86400),
            ),
            (schema::CHANGED_AT_ANNOTATION, rfc3339(now - 600)),
        ] {
            annotations.insert(k.to_string(), v);
        }
        conditions.push(NodeCondition {
            type_: schema::TRUST_CONDITION.into(),
            status: status.into(),
            reason: Some(reason.as_str().into()),
            message: Some(message.into()),
            ..Default::default()
        });
        conditions.push(NodeCondition {
            type_: schema::KUBELET_CONDITION.into(),
            status: "True".into(),
            reason: Some(schema::KubeletReason::Valid.as_str().into()),
            message: Some("valid; renewal due in 210d".into()),
            ..Default::default()
        });
    }
    Node {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            labels: Some(labels),
            annotations: Some(annotations),
            ..Default::default()
        },
        spec: Some(NodeSpec::default()),
        status: Some(NodeStatus {
            conditions: Some(conditions),
            ..Default::default()
        }),
    }
}

/// Makes the Node `name` converged, as its agent's publisher would after
/// acting on the current Secret.
pub fn converge(server: &ApiServer, name: &str, current: &Inputs) {
    let pool = server
        .node(name)
        .and_then(|n| n.metadata.labels.and_then(|l| l.get(POOL_LABEL).cloned()))
        .unwrap_or_default();
    let wanted = node(name, &pool, Mix::Converged, current, current);
    server.update_node(name, |n| {
        n.metadata.labels = wanted.metadata.labels.clone();
        n.metadata.annotations = wanted.metadata.annotations.clone();
        n.status = wanted.status.clone();
    });
}

impl Fleet {
    /// A server with `mix(i)` for the nodes `0..count` (pool `a` for the
    /// even ones, `b` for the odd ones) and the current Secret.
    pub fn new(count: usize, mix: impl Fn(usize) -> Mix) -> Fleet {
        let server = ApiServer::start();
        let current = Inputs::of(&TestCa::new("nca fleet CA 2"));
        let previous = Inputs::of(&TestCa::new("nca fleet CA 1"));
        server.set_secret(SECRET_NAMESPACE, SECRET_NAME, &current.data);
        let nodes = (0..count).map(|i| {
            let pool = if i % 2 == 0 { "a" } else { "b" };
            node(&node_name(i), pool, mix(i), &current, &previous)
        });
        assert_eq!(server.seed_nodes(nodes), count);
        let dir = tempfile::Builder::new()
            .prefix("nca-fleet-")
            .tempdir()
            .unwrap();
        let kubeconfig = dir.path().join("admin.kubeconfig");
        std::fs::write(&kubeconfig, server.admin_kubeconfig()).unwrap();
        Fleet {
            server,
            kubeconfig,
            current,
            previous,
            _dir: dir,
        }
    }

    /// `node-cert-agent fleet --kubeconfig <admin> ARGS`, without
    /// KUBECONFIG from the environment.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(agent_binary());
        c.arg("fleet")
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(args)
            .env_remove("KUBECONFIG");
        c
    }

    /// Runs [`Fleet::command`] to its end.
    pub fn run(&self, args: &[&str]) -> Output {
        let c = &mut self.command(args);
        c.output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", agent_binary().display()))
    }
}
