//! The pods still waiting for an image pull after a CA change, against the
//! test API server: the agent's check (`daemon::waiting_pods`) lists the
//! pods of its node once, with the node's identity, and the server
//! authorizes that list only as upstream's Node authorizer does (a
//! `spec.nodeName=<own node>` selector) and by the shipped RBAC. What is
//! checked is what reached the server (the one request, the Event stored)
//! and what the daemon keeps for `status`, never the agent's calls alone.
//!
//! In-process: no node, no root.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a failed step must panic loudly"
)]

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use integration_tests::rbac::shipped_rbac;
use k8s_openapi::api::core::v1::{
    Container, ContainerState, ContainerStateRunning, ContainerStateWaiting, ContainerStatus, Pod,
    PodSpec, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use nca_test_apiserver::{ApiServer, Profile, RequestRecord, StoredEvent};
use node_cert_agent::daemon::waiting_pods::{ListPodsError, WaitingPodsCheck};
use node_cert_agent::k8s::failure::FailureKind;
use node_cert_agent::node::procfs::ProcessIdentity;
use node_cert_agent::ops::daemon_status::AgentMode;
use node_cert_agent::ops::recorder::{Recorder, RecorderOptions};
use node_cert_agent::trust::pull_trust::{PullMode, PullTrust};
use node_cert_agent::trust::reconcile::Outcome;
use node_cert_agent::trust::waiting_pods::{WaitingPod, WaitingPods};
use node_cert_agent::x509::cert::CertInfo;
use node_cert_agent::x509::testpki;

const NODE: &str = "n1";
const REASON: &str = "PodsWaitingForImagePullRetry";
/// kubelet's waiting message after a pull from a registry whose CA the
/// node does not trust (containerd 1.7).
const X509: &str = "failed to pull and unpack image \"registry.example:5000/app:1\": failed to resolve reference \"registry.example:5000/app:1\": failed to do request: Head \"https://registry.example:5000/v2/app/manifests/1\": tls: failed to verify certificate: x509: certificate signed by unknown authority";
const NOT_FOUND: &str = "rpc error: code = NotFound desc = failed to pull and unpack image \"registry.example:5000/gone:1\": not found";

fn waiting(name: &str, reason: &str, message: &str) -> ContainerStatus {
    ContainerStatus {
        name: name.into(),
        image: format!("registry.example:5000/{name}:1"),
        state: Some(ContainerState {
            waiting: Some(ContainerStateWaiting {
                reason: Some(reason.into()),
                message: Some(message.into()),
            }),
            ..ContainerState::default()
        }),
        ..ContainerStatus::default()
    }
}

fn running(name: &str) -> ContainerStatus {
    ContainerStatus {
        name: name.into(),
        image: format!("registry.example:5000/{name}:1"),
        ready: true,
        state: Some(ContainerState {
            running: Some(ContainerStateRunning::default()),
            ..ContainerState::default()
        }),
        ..ContainerStatus::default()
    }
}

/// A pod bound to `node`, with these init and app container statuses.
fn pod(
    ns: &str,
    name: &str,
    node: &str,
    init: Vec<ContainerStatus>,
    app: Vec<ContainerStatus>,
) -> Pod {
    let containers = |s: &[ContainerStatus]| -> Vec<Container> {
        s.iter()
            .map(|c| Container {
                name: c.name.clone(),
                image: Some(c.image.clone()),
                ..Container::default()
            })
            .collect()
    };
    Pod {
        metadata: ObjectMeta {
            namespace: Some(ns.into()),
            name: Some(name.into()),
            ..ObjectMeta::default()
        },
        spec: Some(PodSpec {
            node_name: Some(node.into()),
            init_containers: (!init.is_empty()).then(|| containers(&init)),
            containers: containers(&app),
            ..PodSpec::default()
        }),
        status: Some(PodStatus {
            phase: Some("Pending".into()),
            init_container_statuses: (!init.is_empty()).then_some(init),
            container_statuses: Some(app),
            ..PodStatus::default()
        }),
    }
}

fn expected(ns: &str, name: &str, container: &str) -> WaitingPod {
    WaitingPod {
        namespace: ns.into(),
        name: name.into(),
        container: container.into(),
        image: format!("registry.example:5000/{container}:1"),
    }
}

/// A server with the shipped RBAC, Node `n1`, namespace `shop`, and pods:
/// on n1 two waiting after an x509 error (an app container, an init
/// container), one waiting after another pull error and one running; on
/// n2 one waiting after an x509 error.
fn cluster() -> ApiServer {
    let server = ApiServer::start_with(Profile::Kubeadm, &shipped_rbac());
    server.add_node(NODE);
    server.add_namespace("shop");
    let x509 = |c: &str| waiting(c, "ImagePullBackOff", X509);
    server.set_pod(pod("shop", "web-1", NODE, vec![], vec![x509("web")]));
    server.set_pod(pod(
        "default",
        "job-1",
        NODE,
        vec![waiting("setup", "ErrImagePull", X509)],
        vec![waiting("main", "PodInitializing", "")],
    ));
    server.set_pod(pod(
        "shop",
        "gone-1",
        NODE,
        vec![],
        vec![waiting("gone", "ImagePullBackOff", NOT_FOUND)],
    ));
    server.set_pod(pod("shop", "db-1", NODE, vec![], vec![running("db")]));
    server.set_pod(pod("shop", "web-2", "n2", vec![], vec![x509("web")]));
    server
}

async fn client_of(kubeconfig: &str) -> kube::Client {
    let kc = kube::config::Kubeconfig::from_yaml(kubeconfig).unwrap();
    let cfg = kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
        .await
        .unwrap();
    kube::Client::try_from(cfg).unwrap()
}

/// The node's kubelet kubeconfig (client certificate and key in one PEM).
async fn node_client(server: &ApiServer, dir: &std::path::Path, node: &str) -> kube::Client {
    let now = SystemTime::now();
    let (cert, key) = server.issue_client_cert(
        &format!("system:node:{node}"),
        &["system:nodes"],
        now - Duration::from_secs(600),
        now + Duration::from_secs(3600),
    );
    let pem = dir.join(format!("{node}-client.pem"));
    std::fs::write(&pem, format!("{cert}{key}")).unwrap();
    client_of(&server.client_kubeconfig(&pem, &pem)).await
}

/// An identity source that a test can switch (the node's identity changes
/// when its certificate is renewed, or is a bootstrap token before).
fn switchable(client: kube::Client) -> (Arc<Mutex<kube::Client>>, WaitingPodsCheck) {
    let current = Arc::new(Mutex::new(client));
    let source = current.clone();
    let check = WaitingPodsCheck::new(
        NODE.into(),
        Arc::new(move || Some(source.lock().unwrap().clone())),
    )
    .without_spread();
    (current, check)
}

/// A daemon's recorder whose Node Events go to `server` as the node.
fn recorder(client: kube::Client) -> Arc<Recorder> {
    let r = Arc::new(Recorder::new(RecorderOptions {
        mode: AgentMode::Pod,
        started_at: 0,
        ca_job: true,
        kubelet_job: true,
        metrics_address: None,
    }));
    r.set_event_sink(node_cert_agent::ops::events::start(
        NODE.into(),
        Arc::new(move || Some(client.clone())),
    ));
    r
}

fn pod_lists(server: &ApiServer) -> Vec<RequestRecord> {
    server
        .requests()
        .into_iter()
        .filter(|r| r.resource == "pods")
        .collect()
}

fn waiting_events(server: &ApiServer) -> Vec<StoredEvent> {
    server
        .events()
        .into_iter()
        .filter(|e| e.event.reason.as_deref() == Some(REASON))
        .collect()
}

/// Waits (without blocking the runtime, whose tasks post the Events) until
/// `cond` holds, at most 10 s.
async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn waiting_pods_of(r: &Recorder) -> Option<WaitingPods> {
    r.daemon_status(&ProcessIdentity::default(), 0, false)
        .waiting_pods
}

#[tokio::test]
async fn the_node_lists_its_own_pods_once_and_names_those_waiting_after_an_x509_error_in_one_event()
{
    let server = cluster();
    let dir = tempfile::tempdir().unwrap();
    let client = node_client(&server, dir.path(), NODE).await;
    let metrics = recorder(client.clone());
    let (_, check) = switchable(client);

    let found = check.run(&metrics).await.unwrap();

    assert_eq!(
        found.pods,
        vec![
            expected("default", "job-1", "setup"),
            expected("shop", "web-1", "web"),
        ],
        "only this node's pods that wait after an x509 error"
    );
    assert_eq!(waiting_pods_of(&metrics), Some(found.clone()));
    // One LIST, as the node, from the watch cache, scoped to the node.
    let lists = pod_lists(&server);
    assert_eq!(lists.len(), 1, "{lists:?}");
    let l = &lists[0];
    assert_eq!(
        (l.verb.as_str(), l.path.as_str(), l.code),
        ("list", "/api/v1/pods", 200),
        "{l:?}"
    );
    assert_eq!(l.user, format!("system:node:{NODE}"));
    assert!(
        l.query.contains("fieldSelector=spec.nodeName%3Dn1")
            && l.query.contains("resourceVersion=0"),
        "{l:?}"
    );

    eventually("the Event", || !waiting_events(&server).is_empty()).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let events = waiting_events(&server);
    assert_eq!(events.len(), 1, "exactly one Event for the pass");
    let e = &events[0].event;
    assert_eq!(e.type_.as_deref(), Some("Normal"));
    assert_eq!(e.involved_object.kind.as_deref(), Some("Node"));
    assert_eq!(e.involved_object.name.as_deref(), Some(NODE));
    let message = e.message.clone().unwrap();
    for part in [
        "2 pods on this node wait in image-pull back-off after x509: certificate signed by unknown authority",
        "kubelet retries each pull within its back-off (up to 5 minutes)",
        "to retry now, delete the pod",
        "Waiting: default/job-1, shop/web-1",
    ] {
        assert!(message.contains(part), "{part:?} not in {message:?}");
    }
    assert!(
        !message.contains("web-2") && !message.contains("gone-1"),
        "{message}"
    );
    let posts: Vec<RequestRecord> = server
        .requests()
        .into_iter()
        .filter(|r| r.resource == "events" && r.verb == "create")
        .collect();
    assert!(
        posts
            .iter()
            .all(|r| r.user == format!("system:node:{NODE}") && r.code == 201),
        "{posts:?}"
    );
    // Nothing but reads of pods: the agent never deletes or changes one.
    assert!(server
        .requests()
        .iter()
        .filter(|r| r.resource == "pods")
        .all(|r| r.verb == "list"));
}

#[tokio::test]
async fn no_waiting_pod_means_no_event_and_an_empty_list_for_status() {
    let server = ApiServer::start_with(Profile::Kubeadm, &shipped_rbac());
    server.add_node(NODE);
    server.set_pod(pod("default", "db-1", NODE, vec![], vec![running("db")]));
    let dir = tempfile::tempdir().unwrap();
    let client = node_client(&server, dir.path(), NODE).await;
    let metrics = recorder(client.clone());
    let (_, check) = switchable(client);

    let found = check.run(&metrics).await.unwrap();
    assert!(found.is_empty());
    assert_eq!(waiting_pods_of(&metrics), Some(found));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(waiting_events(&server).is_empty());
    assert_eq!(pod_lists(&server).len(), 1);
}

fn installed() -> Vec<CertInfo> {
    let ca = testpki::good_ca("Waiting pods CA");
    vec![CertInfo::from_der(&ca.cert.to_der().unwrap()).unwrap()]
}

#[tokio::test]
async fn only_a_pass_that_made_an_installed_ca_effective_for_pulls_lists_the_pods() {
    let server = cluster();
    let dir = tempfile::tempdir().unwrap();
    let client = node_client(&server, dir.path(), NODE).await;
    let metrics = recorder(client.clone());
    let (_, check) = switchable(client);
    let restart_trust = PullTrust {
        mode: PullMode::Restart,
        dir: None,
        reason: Some("containerd does not read certs.d".into()),
        path: None,
        hint: None,
    };
    let containerd = || vec!["containerd.service".to_string()];

    // A pass that changed nothing, and one that installed a CA whose
    // restart waits (the restart spread, or the unit's start limit): no
    // list yet.
    check.after_pass(&Outcome::default(), &metrics);
    check.after_pass(
        &Outcome {
            installed: installed(),
            pull_trust: Some(restart_trust.clone()),
            ..Outcome::default()
        },
        &metrics,
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(pod_lists(&server).is_empty());
    assert_eq!(waiting_pods_of(&metrics), None);

    // The pass that does that restart makes the CA effective: one list,
    // one Event.
    check.after_pass(
        &Outcome {
            restarted: containerd(),
            pull_trust: Some(restart_trust.clone()),
            ..Outcome::default()
        },
        &metrics,
    );
    eventually("the list", || {
        waiting_pods_of(&metrics).is_some_and(|w| w.pods.len() == 2)
    })
    .await;
    eventually("the Event", || waiting_events(&server).len() == 1).await;
    assert_eq!(pod_lists(&server).len(), 1);

    // A restart for a removal frees no pod: no list.
    check.after_pass(
        &Outcome {
            restarted: containerd(),
            pull_trust: Some(restart_trust),
            ..Outcome::default()
        },
        &metrics,
    );
    // A CA installed and live at the next pull: one more list, and the same
    // pods waiting again count on the Event before (client-go's correlator:
    // an identical Event PATCHes the count).
    check.after_pass(
        &Outcome {
            installed: installed(),
            restarts_avoided: containerd(),
            ..Outcome::default()
        },
        &metrics,
    );
    eventually("the Event counted twice", || {
        let events = waiting_events(&server);
        events.len() == 1 && events[0].event.count == Some(2)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        pod_lists(&server).len(),
        2,
        "one list per pass that made a CA effective"
    );
}

/// What a refused list leaves: the error, one request (no retry), no Event,
/// and the daemon's last result for `status` as it was.
async fn assert_refused_and_nothing_changes(
    server: &ApiServer,
    check: &WaitingPodsCheck,
    metrics: &Recorder,
    user: &str,
) {
    let before = waiting_pods_of(metrics);
    let events_before = waiting_events(server).len();
    let lists_before = pod_lists(server).len();
    let err = check.run(metrics).await.unwrap_err();
    match &err {
        ListPodsError::Api { failure, .. } => {
            assert_eq!(failure.kind, FailureKind::Forbidden, "{err}");
            assert_eq!(failure.code, Some(403), "{err}");
            assert!(
                failure
                    .message
                    .contains(&format!("User \"{user}\" cannot list resource \"pods\"")),
                "{err}"
            );
        }
        other => panic!("expected a 403, got {other}"),
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let lists = pod_lists(server);
    assert_eq!(
        lists.len(),
        lists_before + 1,
        "one list, no retry: {lists:?}"
    );
    let last = lists.last().unwrap();
    assert_eq!((last.user.as_str(), last.code), (user, 403), "{last:?}");
    assert_eq!(waiting_events(server).len(), events_before, "no Event");
    assert_eq!(
        waiting_pods_of(metrics),
        before,
        "status keeps the last result"
    );
}

#[tokio::test]
async fn a_bootstrap_token_or_a_service_account_without_pods_rbac_gets_403_and_nothing_changes() {
    let server = cluster();
    let dir = tempfile::tempdir().unwrap();
    let node = node_client(&server, dir.path(), NODE).await;
    let metrics = recorder(node.clone());
    let (identity, check) = switchable(node);
    let found = check.run(&metrics).await.unwrap();
    assert_eq!(found.pods.len(), 2);
    eventually("the first Event", || waiting_events(&server).len() == 1).await;

    // Before the bootstrap the node has only its bootstrap token, which
    // system:node-bootstrapper lets file CSRs and nothing else.
    server.add_bootstrap_token("abcdef", "0123456789abcdef");
    *identity.lock().unwrap() =
        client_of(&server.bootstrap_kubeconfig("abcdef", "0123456789abcdef")).await;
    assert_refused_and_nothing_changes(&server, &check, &metrics, "system:bootstrap:abcdef").await;

    // The agent's own ServiceAccount: the shipped RBAC grants it one
    // Secret, no pods.
    let token = server.add_service_account_token("kube-system", "node-cert-agent");
    *identity.lock().unwrap() = client_of(&server.token_kubeconfig(&token)).await;
    assert_refused_and_nothing_changes(
        &server,
        &check,
        &metrics,
        "system:serviceaccount:kube-system:node-cert-agent",
    )
    .await;
}

#[tokio::test]
async fn another_nodes_identity_cannot_list_this_nodes_pods() {
    let server = cluster();
    let dir = tempfile::tempdir().unwrap();
    let other = node_client(&server, dir.path(), "n2").await;
    let metrics = recorder(other.clone());
    // A check for n1 made with n2's identity: the Node authorizer allows a
    // node only the list scoped to itself.
    let (_, check) = switchable(other);
    assert_refused_and_nothing_changes(&server, &check, &metrics, "system:node:n2").await;
}
