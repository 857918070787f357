//! The fleet view, agent side, on real nodes: the agent (pod mode, kubelet
//! job on, bootstrapping its node identity from a bootstrap token) publishes
//! its CA trust and kubelet state on its own Node of the test API server,
//! which authorizes only by upstream's default policy (the Node authorizer)
//! and the shipped RBAC, and admits by NodeRestriction as upstream does.
//!
//! What is checked is what is stored on the Node (labels, annotations,
//! conditions) and how many write requests reached it
//! (`ApiServer::node_writes`), never the agent's calls alone.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a failed step must panic loudly"
)]

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use integration_tests::agent::{render_tail, PodModeAgent, PASS_TIMEOUT};
use integration_tests::kubelet_node::{KubeletFixture, CLIENT_LINK, NODE_NAME};
use integration_tests::pki::{self, TestCa};
use integration_tests::{secret_data, wait};
use k8s_openapi::api::core::v1::{Node, NodeCondition};
use node_cert_agent::fleet::schema::{
    input_digest, short_digest, trust_set_digest, CA_COUNT_ANNOTATION, CHANGED_AT_ANNOTATION,
    INPUT_DIGEST_ANNOTATION, KUBELET_CLIENT_NOT_AFTER_ANNOTATION, KUBELET_CONDITION,
    TRUST_CONDITION, TRUST_SET_ANNOTATION, TRUST_SET_LABEL, VERSION_ANNOTATION,
};
use node_cert_agent::x509::cert::Fingerprint;
use serde_json::json;

/// How long a published change may take to reach the Node.
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(60);
/// kubelet's kubeconfig (the agent's default, AKS's path).
const KUBELET_KUBECONFIG: &str = "/var/lib/kubelet/kubeconfig";
/// The Debian refresh tool the agent runs.
const REFRESH_TOOL: &str = "/usr/sbin/update-ca-certificates";

fn fingerprint(ca: &TestCa) -> Fingerprint {
    Fingerprint::of_der(&ca.cert().to_der().unwrap())
}

fn digest_of(cas: &[&TestCa]) -> String {
    let fps: Vec<Fingerprint> = cas.iter().map(|c| fingerprint(c)).collect();
    trust_set_digest(&fps)
}

fn condition(node: &Node, type_: &str) -> Option<NodeCondition> {
    node.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == type_)
        .cloned()
}

fn label(node: &Node, key: &str) -> Option<String> {
    node.metadata.labels.as_ref()?.get(key).cloned()
}

fn annotation(node: &Node, key: &str) -> Option<String> {
    node.metadata.annotations.as_ref()?.get(key).cloned()
}

fn reason(node: &Node, type_: &str) -> Option<String> {
    condition(node, type_).and_then(|c| c.reason)
}

/// Waits until the stored Node satisfies `cond`; panics with the Node and
/// the agent's log otherwise.
fn wait_node(
    fx: &KubeletFixture,
    agent: &PodModeAgent<'_>,
    what: &str,
    cond: impl Fn(&Node) -> bool,
) -> Node {
    let ok = wait::wait_until_or_timeout(PUBLISH_TIMEOUT, || {
        fx.server.node(NODE_NAME).is_some_and(|n| cond(&n))
    });
    let node = fx.server.node(NODE_NAME).unwrap();
    assert!(
        ok,
        "timed out waiting for {what}; the Node:\n{}\nagent log:\n{}",
        serde_json::to_string_pretty(&node).unwrap(),
        render_tail(&agent.logs(), 40)
    );
    node
}

/// Waits until no write reached the Node for `quiet`; returns the count.
fn settled_writes(fx: &KubeletFixture, quiet: Duration) -> usize {
    let mut last = fx.server.node_writes(NODE_NAME);
    loop {
        std::thread::sleep(quiet);
        let now = fx.server.node_writes(NODE_NAME);
        if now == last {
            return now;
        }
        last = now;
    }
}

/// A condition another owner (node-problem-detector) keeps on the Node.
fn foreign_condition() -> NodeCondition {
    serde_json::from_value(json!({
        "type": "KernelDeadlock",
        "status": "False",
        "reason": "KernelHasNoDeadlock",
        "message": "kernel has no deadlock",
        "lastHeartbeatTime": "2026-01-02T03:04:05Z",
        "lastTransitionTime": "2026-01-01T00:00:00Z",
    }))
    .unwrap()
}

/// The node's conditions other than the agent's own.
fn others(node: &Node) -> Vec<NodeCondition> {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.clone())
        .unwrap_or_default()
        .into_iter()
        .filter(|c| c.type_ != TRUST_CONDITION && c.type_ != KUBELET_CONDITION)
        .collect()
}

/// Every write to the Node through the node's identity was its own and
/// was accepted (the admin's are the test's).
fn assert_writes_were_the_nodes_own(fx: &KubeletFixture) {
    for r in fx.server.requests() {
        if r.resource == "nodes" && r.verb == "patch" && r.user != "kubernetes-admin" {
            assert_eq!(r.user, format!("system:node:{NODE_NAME}"), "{r:?}");
            assert_eq!(r.name, NODE_NAME, "{r:?}");
            assert_eq!(r.code, 200, "a write of the agent was refused: {r:?}");
        }
    }
}

#[test]
fn conditions_and_labels_follow_a_ca_change_a_bad_key_and_a_failing_refresh_and_foreign_conditions_stay(
) {
    let fx = KubeletFixture::new("flp-follow");
    fx.server.set_node_condition(NODE_NAME, foreign_condition());
    let before = others(&fx.server.node(NODE_NAME).unwrap());
    assert_eq!(before.len(), 2, "Ready and KernelDeadlock: {before:?}");
    let agent = fx.start_agent("");
    let client = fx.wait_for_client_cert(&agent, "the bootstrap", |_| true);

    // Before the bootstrap the node had no identity; once it has one, the
    // state is published: no CA yet, and a valid client certificate.
    let node = wait_node(&fx, &agent, "the first publication", |n| {
        reason(n, TRUST_CONDITION).as_deref() == Some("Converged")
            && reason(n, KUBELET_CONDITION).as_deref() == Some("Valid")
    });
    assert_eq!(
        label(&node, TRUST_SET_LABEL).unwrap(),
        short_digest(&digest_of(&[]))
    );
    let not_after = node_cert_agent::time::rfc3339(
        node_cert_agent::x509::cert::CertInfo::from_der(&client.to_der().unwrap())
            .unwrap()
            .not_after,
    );
    assert_eq!(
        annotation(&node, KUBELET_CLIENT_NOT_AFTER_ANNOTATION).as_deref(),
        Some(not_after.as_str())
    );
    assert_eq!(
        annotation(&node, VERSION_ANNOTATION).as_deref(),
        Some(env!("CARGO_PKG_VERSION"))
    );
    assert_eq!(
        others(&node),
        before,
        "a condition of another owner changed"
    );

    // A CA change.
    let ca1 = TestCa::new("Fleet CA 1");
    let data = secret_data(&[("ca1.crt", ca1.cert_pem().as_bytes())]);
    agent.secret().publish(&data);
    let want = digest_of(&[&ca1]);
    let node = wait_node(&fx, &agent, "the new trust set on the Node", |n| {
        label(n, TRUST_SET_LABEL).as_deref() == Some(short_digest(&want))
    });
    assert_eq!(
        annotation(&node, TRUST_SET_ANNOTATION).as_deref(),
        Some(want.as_str())
    );
    assert_eq!(annotation(&node, CA_COUNT_ANNOTATION).as_deref(), Some("1"));
    assert_eq!(
        annotation(&node, INPUT_DIGEST_ANNOTATION),
        Some(input_digest(&data))
    );
    assert!(annotation(&node, CHANGED_AT_ANNOTATION).is_some());
    let trust = condition(&node, TRUST_CONDITION).unwrap();
    assert_eq!(
        (trust.status.as_str(), trust.reason.as_deref()),
        ("True", Some("Converged"))
    );
    assert_eq!(
        others(&node),
        before,
        "a condition of another owner changed"
    );

    // A bad key: refused, the last good CA stays, the input it saw is shown.
    let bad = secret_data(&[
        ("ca1.crt", ca1.cert_pem().as_bytes()),
        ("bad.crt", pki::private_key_pem().as_bytes()),
    ]);
    agent.secret().publish(&bad);
    let node = wait_node(&fx, &agent, "InputInvalid", |n| {
        reason(n, TRUST_CONDITION).as_deref() == Some("InputInvalid")
    });
    let invalid = condition(&node, TRUST_CONDITION).unwrap();
    assert_eq!(invalid.status, "False");
    let message = invalid.message.clone().unwrap();
    assert!(
        message.contains("bad.crt") && message.contains("Fix:"),
        "the message must name the key and the fix: {message}"
    );
    assert_ne!(
        invalid.last_transition_time, trust.last_transition_time,
        "True -> False is a transition"
    );
    assert_eq!(
        label(&node, TRUST_SET_LABEL).as_deref(),
        Some(short_digest(&want)),
        "the last good CA stays"
    );
    assert_eq!(
        annotation(&node, INPUT_DIGEST_ANNOTATION),
        Some(input_digest(&bad)),
        "the input the node saw and refused"
    );

    // A failing refresh: the new anchors are written, the refresh fails and
    // is retried; the retries of the same failure write nothing.
    fx.node
        .exec_ok(&["mount", "--bind", "/bin/false", REFRESH_TOOL]);
    let ca2 = TestCa::new("Fleet CA 2");
    let both = secret_data(&[
        ("ca1.crt", ca1.cert_pem().as_bytes()),
        ("ca2.crt", ca2.cert_pem().as_bytes()),
    ]);
    agent.secret().publish(&both);
    let node = wait_node(&fx, &agent, "RefreshFailed", |n| {
        reason(n, TRUST_CONDITION).as_deref() == Some("RefreshFailed")
    });
    let failed = condition(&node, TRUST_CONDITION).unwrap();
    assert_eq!(failed.status, "False");
    assert!(
        failed.message.as_deref().unwrap().contains("journalctl"),
        "{failed:?}"
    );
    assert_eq!(
        failed.last_transition_time, invalid.last_transition_time,
        "False -> False is no transition"
    );
    let writes = fx.server.node_writes(NODE_NAME);
    let failures = |a: &PodModeAgent<'_>| {
        a.logs()
            .iter()
            .filter(|e| e.message.contains("reconcile failed"))
            .count()
    };
    let seen = failures(&agent);
    wait::wait_until(Duration::from_secs(30), "two more failed refreshes", || {
        failures(&agent) >= seen + 2
    });
    assert_eq!(
        fx.server.node_writes(NODE_NAME),
        writes,
        "retries of the same failure wrote to the Node"
    );
    fx.node.exec_ok(&["umount", REFRESH_TOOL]);
    let want2 = digest_of(&[&ca1, &ca2]);
    let node = wait_node(&fx, &agent, "Converged with both CAs", |n| {
        reason(n, TRUST_CONDITION).as_deref() == Some("Converged")
            && label(n, TRUST_SET_LABEL).as_deref() == Some(short_digest(&want2))
    });
    let converged = condition(&node, TRUST_CONDITION).unwrap();
    assert_ne!(converged.last_transition_time, failed.last_transition_time);
    assert_eq!(annotation(&node, CA_COUNT_ANNOTATION).as_deref(), Some("2"));
    assert_eq!(
        annotation(&node, INPUT_DIGEST_ANNOTATION),
        Some(input_digest(&both))
    );
    assert_eq!(
        others(&node),
        before,
        "a condition of another owner (Ready, KernelDeadlock) changed"
    );
    assert_writes_were_the_nodes_own(&fx);
    let st = fx.status_json().1;
    assert_eq!(st["agent"]["fleetPublish"]["state"], "published", "{st}");
}

#[test]
fn fifty_republishes_of_the_same_content_and_a_restart_make_no_node_write_and_a_start_repairs_the_node(
) {
    let fx = KubeletFixture::new("flp-idle");
    let mut agent = fx.start_agent("");
    fx.wait_for_client_cert(&agent, "the bootstrap", |_| true);
    let ca = TestCa::new("Fleet idle CA");
    let data = secret_data(&[("ca1.crt", ca.cert_pem().as_bytes())]);
    agent.secret().publish(&data);
    let want = digest_of(&[&ca]);
    wait_node(&fx, &agent, "the trust set", |n| {
        label(n, TRUST_SET_LABEL).as_deref() == Some(short_digest(&want))
            && reason(n, KUBELET_CONDITION).as_deref() == Some("Valid")
    });
    let writes = settled_writes(&fx, Duration::from_secs(3));
    assert!(writes >= 2, "the first publication wrote {writes} times");

    for i in 0..50 {
        let passes = integration_tests::agent::count_passes(&agent.logs());
        agent.secret().publish(&data);
        agent.wait_for_passes(passes + 1, PASS_TIMEOUT);
        assert_eq!(
            fx.server.node_writes(NODE_NAME),
            writes,
            "republish {i} of the same content wrote to the Node"
        );
    }
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(fx.server.node_writes(NODE_NAME), writes);

    // A restarted agent with the same state has nothing new to say.
    agent.restart();
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(
        fx.server.node_writes(NODE_NAME),
        writes,
        "a restarted agent rewrote the same state"
    );

    // The label removed behind the agent's back (or the Node registered
    // again): the next start reads the Node once and puts it back, with
    // one write.
    let out = fx.kubectl_admin(&["label", "node", NODE_NAME, &format!("{TRUST_SET_LABEL}-")]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(label(&fx.server.node(NODE_NAME).unwrap(), TRUST_SET_LABEL).is_none());
    agent.restart();
    wait_node(&fx, &agent, "the label back", |n| {
        label(n, TRUST_SET_LABEL).as_deref() == Some(short_digest(&want))
    });
    assert_eq!(
        settled_writes(&fx, Duration::from_secs(3)),
        writes + 2,
        "the admin's removal, then the agent's repair: one merge patch of the metadata"
    );
    assert_writes_were_the_nodes_own(&fx);
}

#[test]
fn a_node_setting_a_node_restriction_label_is_refused_with_upstreams_message() {
    let fx = KubeletFixture::new("flp-restrict");
    fx.server.add_node("n2");
    let agent = fx.start_agent("");
    fx.wait_for_client_cert(&agent, "the bootstrap", |_| true);
    wait_node(&fx, &agent, "the first publication", |n| {
        label(n, TRUST_SET_LABEL).is_some()
    });
    let labels_before = fx.server.node(NODE_NAME).unwrap().metadata.labels;

    // What an operator sees, through kubectl with the node's identity.
    let out = fx.kubectl_as_node(&[
        "label",
        "node",
        NODE_NAME,
        "node-restriction.kubernetes.io/pool=a",
    ]);
    assert!(!out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        "Error from server (Forbidden): nodes \"n1\" is forbidden: is not allowed to modify labels: node-restriction.kubernetes.io/pool"
    );
    // The Status objects, through a client with the node's identity: the
    // label prefixes NodeRestriction reserves, and another node's Node.
    let refused = [
        (
            NODE_NAME,
            json!({"metadata": {"labels": {"node-restriction.kubernetes.io/pool": "a"}}}),
            "nodes \"n1\" is forbidden: is not allowed to modify labels: node-restriction.kubernetes.io/pool",
        ),
        (
            NODE_NAME,
            json!({"metadata": {"labels": {"node-role.kubernetes.io/worker": "", "example.k8s.io/x": "y"}}}),
            "nodes \"n1\" is forbidden: is not allowed to modify labels: example.k8s.io/x, node-role.kubernetes.io/worker",
        ),
        (
            "n2",
            json!({"metadata": {"labels": {TRUST_SET_LABEL: "000000000000"}}}),
            "nodes \"n2\" is forbidden: node \"n1\" is not allowed to modify node \"n2\"",
        ),
    ];
    let pem = fx.node.host_path(CLIENT_LINK);
    let yaml = fx.server.client_kubeconfig(&pem, &pem);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let kc = kube::config::Kubeconfig::from_yaml(&yaml).unwrap();
        let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default())
            .await
            .unwrap();
        let api: kube::Api<Node> = kube::Api::all(kube::Client::try_from(cfg).unwrap());
        for (name, patch, message) in refused {
            for status in [false, true] {
                let params = kube::api::PatchParams::default();
                let p = kube::api::Patch::Merge(&patch);
                let r = if status {
                    api.patch_status(name, &params, &p).await
                } else {
                    api.patch(name, &params, &p).await
                };
                let Err(kube::Error::Api(s)) = r else {
                    panic!("PATCH of {name} ({patch}) was not refused: {r:?}");
                };
                assert_eq!(
                    (s.code, s.reason.as_str(), s.message.as_str()),
                    (403, "Forbidden", message),
                    "{name} status={status}"
                );
                let details = s.details.unwrap();
                assert_eq!(
                    (details.name.as_str(), details.kind.as_str()),
                    (name, "nodes")
                );
            }
        }
    });
    assert_eq!(
        fx.server.node(NODE_NAME).unwrap().metadata.labels,
        labels_before,
        "a refused write changed the Node"
    );
    assert!(
        !fx.server
            .node("n2")
            .unwrap()
            .metadata
            .labels
            .unwrap()
            .contains_key(TRUST_SET_LABEL),
        "node n1 changed node n2"
    );
    // The project's own domain is the node's to set.
    let out = fx.kubectl_as_node(&["label", "node", NODE_NAME, "node-cert-agent.dev/probe=yes"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let labels: BTreeMap<String, String> =
        fx.server.node(NODE_NAME).unwrap().metadata.labels.unwrap();
    assert_eq!(labels["node-cert-agent.dev/probe"], "yes");
}

#[test]
fn a_kubeconfig_that_does_not_use_the_renewed_certificate_is_kubeconfig_mismatch_until_fixed() {
    let fx = KubeletFixture::new("flp-kubeconfig");
    let agent = fx.start_agent("");
    fx.wait_for_client_cert(&agent, "the bootstrap", |_| true);
    wait_node(&fx, &agent, "Valid", |n| {
        reason(n, KUBELET_CONDITION).as_deref() == Some("Valid")
    });
    // kubelet's kubeconfig with a token: kubelet would never read the
    // certificate the agent renews.
    fx.node.write_file(
        KUBELET_KUBECONFIG,
        fx.server.token_kubeconfig("not-the-node").as_bytes(),
        0o600,
    );
    let node = wait_node(&fx, &agent, "KubeconfigMismatch", |n| {
        reason(n, KUBELET_CONDITION).as_deref() == Some("KubeconfigMismatch")
    });
    let c = condition(&node, KUBELET_CONDITION).unwrap();
    assert_eq!(c.status, "False");
    let message = c.message.unwrap();
    assert!(
        message.contains("a token") && message.contains(CLIENT_LINK),
        "the message must say what it uses and the fix: {message}"
    );
    // Fixed as kubelet writes it: back to Valid.
    fx.node.write_file(
        KUBELET_KUBECONFIG,
        fx.server
            .client_kubeconfig(Path::new(CLIENT_LINK), Path::new(CLIENT_LINK))
            .as_bytes(),
        0o600,
    );
    wait_node(&fx, &agent, "Valid again", |n| {
        reason(n, KUBELET_CONDITION).as_deref() == Some("Valid")
    });
    assert_writes_were_the_nodes_own(&fx);
}

#[test]
fn with_the_api_server_down_the_change_waits_is_shown_in_status_and_is_published_once_it_is_back() {
    let fx = KubeletFixture::new("flp-down");
    let agent = fx.start_agent("");
    fx.wait_for_client_cert(&agent, "the bootstrap", |_| true);
    wait_node(&fx, &agent, "the first publication", |n| {
        reason(n, TRUST_CONDITION).as_deref() == Some("Converged")
    });
    let before = fx.server.node(NODE_NAME).unwrap();
    fx.server.down();
    let ca = TestCa::new("Fleet CA while down");
    agent
        .secret()
        .publish(&secret_data(&[("ca1.crt", ca.cert_pem().as_bytes())]));
    wait::wait_until(
        Duration::from_secs(30),
        "the failed write in the log",
        || {
            agent.logs().iter().any(|e| {
                e.message
                    .contains("cannot publish the node's state on Node n1")
            })
        },
    );
    let (_, st) = fx.status_json();
    assert_eq!(st["agent"]["fleetPublish"]["state"], "failing", "{st}");
    assert!(
        st["agent"]["fleetPublish"]["error"]
            .as_str()
            .is_some_and(|e| e.contains("PATCH nodes/n1")),
        "{st}"
    );
    assert_eq!(
        fx.server.node(NODE_NAME).unwrap().metadata.labels,
        before.metadata.labels,
        "nothing changed on the Node while the server was down"
    );
    fx.server.up();
    let want = digest_of(&[&ca]);
    wait_node(&fx, &agent, "the change after the server is back", |n| {
        label(n, TRUST_SET_LABEL).as_deref() == Some(short_digest(&want))
    });
    wait::wait_until(Duration::from_secs(10), "status to say published", || {
        fx.status_json().1["agent"]["fleetPublish"]["state"] == "published"
    });
    assert_writes_were_the_nodes_own(&fx);
}

/// kubelet registers its Node once per kubelet process, so after `kubectl
/// delete node` the Node comes back (a new uid, none of the agent's keys)
/// when kubelet restarts, while the agent runs on. The agent watches its
/// own Node (by name, as the node: the only Node read the Node authorizer
/// allows it), sees the new uid and repairs the Node at once, with one
/// write of each part; the watch's events of the same Node (another
/// owner's condition, as kubelet's status updates) write nothing.
#[test]
fn a_node_deleted_and_registered_again_while_the_agent_runs_is_repaired_at_once() {
    let fx = KubeletFixture::new("flp-reregister");
    let agent = fx.start_agent("");
    fx.wait_for_client_cert(&agent, "the bootstrap", |_| true);
    let ca = TestCa::new("Fleet re-registration CA");
    agent
        .secret()
        .publish(&secret_data(&[("ca1.crt", ca.cert_pem().as_bytes())]));
    let want = digest_of(&[&ca]);
    let published = |n: &Node| {
        label(n, TRUST_SET_LABEL).as_deref() == Some(short_digest(&want))
            && annotation(n, TRUST_SET_ANNOTATION).as_deref() == Some(want.as_str())
            && reason(n, TRUST_CONDITION).as_deref() == Some("Converged")
            && reason(n, KUBELET_CONDITION).as_deref() == Some("Valid")
    };
    wait_node(&fx, &agent, "the first publication", published);
    let writes = settled_writes(&fx, Duration::from_secs(3));
    let node_user = format!("system:node:{NODE_NAME}");
    let watches: Vec<_> = fx
        .server
        .requests()
        .into_iter()
        .filter(|r| r.resource == "nodes" && r.verb == "watch")
        .collect();
    assert!(
        watches
            .iter()
            .any(|r| r.user == node_user && r.name == NODE_NAME && r.code == 200),
        "no watch of Node {NODE_NAME} by name as {node_user}: {watches:?}"
    );

    // Events of the same Node: nothing is written.
    for _ in 0..5 {
        fx.server.set_node_condition(NODE_NAME, foreign_condition());
        std::thread::sleep(Duration::from_millis(300));
    }
    assert_eq!(
        settled_writes(&fx, Duration::from_secs(3)),
        writes,
        "updates of the same Node by another owner made the agent write"
    );

    let old_uid = fx.server.node(NODE_NAME).unwrap().metadata.uid;
    let out = fx.kubectl_admin(&["delete", "node", NODE_NAME]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::thread::sleep(Duration::from_secs(2));
    // kubelet, restarted, registers its Node again.
    let again = fx.server.add_node(NODE_NAME);
    assert_ne!(again.metadata.uid, old_uid);
    assert!(label(&again, TRUST_SET_LABEL).is_none());
    wait_node(&fx, &agent, "the Node registered again repaired", published);
    assert_eq!(
        settled_writes(&fx, Duration::from_secs(3)),
        writes + 3,
        "the admin's delete, then the agent's repair: one patch of the metadata and one of the status"
    );
    assert!(
        agent
            .logs()
            .iter()
            .any(|e| e.message.contains("was registered again")),
        "the repair is not logged:\n{}",
        render_tail(&agent.logs(), 30)
    );
    assert_writes_were_the_nodes_own(&fx);
}
