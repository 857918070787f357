//! custom-ca-trust-secret read through the Kubernetes API, on
//! real nodes: a pod-mode agent on a systemd-nspawn node with containerd,
//! real TLS registries and CRI pulls, and the test API server with upstream's
//! default policy plus the RBAC rendered from `manifests/base` only: the
//! agent reads the Secret as its ServiceAccount, which the shipped Role
//! allows for that one Secret, and only with `fieldSelector=metadata.name`.
//!
//! - created, updated and deleted through the API: the pull follows, one
//!   restart per change, a bad key named with the good CAs kept and no
//!   restart;
//! - the same with containerd's `config_path` set (the live pull trust): a
//!   created CA works at the next pull with no restart, identical updates
//!   restart nothing, the delete restarts once;
//! - the API server down for 30 s while the agent restarts: nothing changes,
//!   nothing restarts, and the source says it is not synced;
//! - a 410 (compacted history) and a dropped watch: relists, zero restarts;
//! - the shipped RBAC: a list without the field selector is refused as the
//!   real server refuses it;
//! - the DaemonSet's default identity, the in-cluster config (the
//!   ServiceAccount's projected token, CA and namespace, and
//!   `KUBERNETES_SERVICE_HOST`/`_PORT`), with the token rotated as kubelet
//!   rotates it and the old one expired.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a failed step must panic loudly"
)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use integration_tests::agent::{render_tail, HostModeAgent, LogEntry, PodModeAgent, PASS_TIMEOUT};
use integration_tests::cri::PULL_TIMEOUT;
use integration_tests::observe::{self, ContainerdState};
use integration_tests::pki::TestCa;
use integration_tests::{
    assert_pull_ok, assert_pull_untrusted, cri_try_pull, preflight, wait_until, Node, TestRegistry,
};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::ByteString;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::Api;
use nca_test_apiserver::{ApiServer, Profile};
use serde_json::{json, Value};

const NS: &str = "kube-system";
const NAME: &str = "custom-ca-trust-secret";
const SA: &str = "node-cert-agent";
/// Where kubelet mounts a pod's ServiceAccount token, CA and namespace (the
/// paths kube-rs's in-cluster config reads, as client-go's does).
const SA_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
/// The daemon-status file in the node.
const DAEMON_STATUS: &str = "/var/lib/node-cert-agent/daemon-status.json";

/// A node, the strict API server, and a pod-mode agent reading the Secret
/// through the API as the agent's ServiceAccount.
struct Fixture {
    server: ApiServer,
    node: Node,
    _dir: tempfile::TempDir,
    _empty_volume: tempfile::TempDir,
    admin: kube::Client,
    rt: tokio::runtime::Runtime,
    sa_kubeconfig: PathBuf,
}

impl Fixture {
    fn new(scenario: &str) -> Fixture {
        preflight();
        let server =
            ApiServer::start_with(Profile::Kubeadm, &integration_tests::rbac::shipped_rbac());
        let node = Node::boot(&format!("api-secret-{scenario}"));
        let dir = tempfile::tempdir().unwrap();
        let sa_token = server.add_service_account_token(NS, SA);
        let sa_kubeconfig = dir.path().join("sa-kubeconfig");
        std::fs::write(&sa_kubeconfig, server.token_kubeconfig(&sa_token)).unwrap();
        let admin_kubeconfig = dir.path().join("admin-kubeconfig");
        std::fs::write(&admin_kubeconfig, server.admin_kubeconfig()).unwrap();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let admin = rt.block_on(async {
            let kc = kube::config::Kubeconfig::read_from(&admin_kubeconfig).unwrap();
            let config = kube::Config::from_custom_kubeconfig(kc, &Default::default())
                .await
                .unwrap();
            kube::Client::try_from(config).unwrap()
        });
        Fixture {
            server,
            node,
            _dir: dir,
            _empty_volume: tempfile::tempdir().unwrap(),
            admin,
            rt,
            sa_kubeconfig,
        }
    }

    fn agent(&self) -> PodModeAgent<'_> {
        PodModeAgent::start(
            &self.node,
            self._empty_volume.path(),
            &[
                "--ca-secret",
                &format!("{NS}/{NAME}"),
                "--ca-secret-kubeconfig",
                self.sa_kubeconfig.to_str().unwrap(),
                "--kubelet",
                "off",
            ],
        )
    }

    fn secrets(&self) -> Api<Secret> {
        Api::namespaced(self.admin.clone(), NS)
    }

    fn data(pairs: &[(&str, &[u8])]) -> BTreeMap<String, ByteString> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_string(), ByteString(v.to_vec())))
            .collect()
    }

    /// `kubectl create` of the Secret; returns when the server answered.
    fn create(&self, pairs: &[(&str, &[u8])]) -> Instant {
        let s = Secret {
            metadata: kube::api::ObjectMeta {
                name: Some(NAME.into()),
                namespace: Some(NS.into()),
                ..Default::default()
            },
            data: Some(Self::data(pairs)),
            ..Default::default()
        };
        self.rt
            .block_on(self.secrets().create(&PostParams::default(), &s))
            .unwrap();
        Instant::now()
    }

    /// `kubectl apply` of new data (a merge patch of `data`, keys not named
    /// removed with null, as a three-way merge does).
    fn update(&self, pairs: &[(&str, &[u8])]) -> Instant {
        let current = self.rt.block_on(self.secrets().get(NAME)).unwrap();
        let mut data = serde_json::Map::new();
        for k in current.data.unwrap_or_default().keys() {
            data.insert(k.clone(), Value::Null);
        }
        for (k, v) in Self::data(pairs) {
            data.insert(k, serde_json::to_value(v).unwrap());
        }
        self.rt
            .block_on(self.secrets().patch(
                NAME,
                &PatchParams::default(),
                &Patch::Merge(json!({ "data": data })),
            ))
            .unwrap();
        Instant::now()
    }

    fn delete(&self) -> Instant {
        self.rt
            .block_on(self.secrets().delete(NAME, &DeleteParams::default()))
            .unwrap();
        Instant::now()
    }

    /// The daemon's view of the Secret's source (`caSecretSource.state`).
    fn source_state(&self) -> Option<String> {
        let path = self.node.root().join(DAEMON_STATUS.trim_start_matches('/'));
        let bytes = std::fs::read(path).ok()?;
        let v: Value = serde_json::from_slice(&bytes).ok()?;
        v["caSecretSource"]["state"].as_str().map(str::to_string)
    }
}

/// Pulls `image` until it works; the time from `since`.
fn pull_until_ok(
    node: &Node,
    image: &str,
    since: Instant,
    logs: impl Fn() -> Vec<LogEntry>,
) -> Duration {
    loop {
        match cri_try_pull(node, image) {
            Ok(_) => return since.elapsed(),
            Err(e) => assert!(
                since.elapsed() < PULL_TIMEOUT,
                "pull of {image} still failing {PULL_TIMEOUT:?} after the API write: {e}\n--- agent log ---\n{}",
                render_tail(&logs(), 40)
            ),
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn since(agent: &PodModeAgent<'_>, skip: usize) -> Vec<LogEntry> {
    agent.logs().into_iter().skip(skip).collect()
}

fn passes(agent: &PodModeAgent<'_>) -> usize {
    integration_tests::agent::count_passes(&agent.logs())
}

#[test]
fn created_updated_and_deleted_through_the_api_with_one_restart_per_change_and_bad_keys_named() {
    let fx = Fixture::new("crud");
    let ca1 = TestCa::new("nca api-secret CA one");
    let ca2 = TestCa::new("nca api-secret CA two");
    let storage = tempfile::tempdir().unwrap();
    let reg1 = TestRegistry::start(&ca1, storage.path(), "api-secret/one");
    let reg2 = TestRegistry::start(&ca2, storage.path(), "api-secret/two");
    let agent = fx.agent();
    agent.wait_for_passes(1, PASS_TIMEOUT);
    wait_until(PASS_TIMEOUT, "the Secret's source synced (absent)", || {
        fx.source_state().as_deref() == Some("synced")
    });
    assert_pull_untrusted(&fx.node, &reg1.image, "before the Secret exists");

    // Create.
    let before = ContainerdState::of(&fx.node);
    let n = passes(&agent);
    let written = fx.create(&[("ca1.crt", ca1.cert_pem().as_bytes())]);
    let latency = pull_until_ok(&fx.node, &reg1.image, written, || agent.logs());
    println!("API create -> pull succeeded in {} ms", latency.as_millis());
    agent.wait_for_passes(n + 1, PASS_TIMEOUT);
    before.assert_restarted_once(&fx.node, "after the Secret was created through the API");
    observe::assert_trusted(&fx.node, &ca1, "after create");

    // Update: a second CA.
    let before = ContainerdState::of(&fx.node);
    let written = fx.update(&[
        ("ca1.crt", ca1.cert_pem().as_bytes()),
        ("ca2.crt", ca2.cert_pem().as_bytes()),
    ]);
    let latency = pull_until_ok(&fx.node, &reg2.image, written, || agent.logs());
    println!("API update -> pull succeeded in {} ms", latency.as_millis());
    wait_until(PASS_TIMEOUT, "one restart for the update", || {
        observe::containerd_starts(&fx.node) > before.starts
    });
    std::thread::sleep(Duration::from_secs(2));
    before.assert_restarted_once(&fx.node, "after the update");
    assert_pull_ok(&fx.node, &reg1.image, "the first CA stays");

    // A bad key: named, both good CAs kept, no restart.
    let before = ContainerdState::of(&fx.node);
    let skip = agent.logs().len();
    let n = passes(&agent);
    fx.update(&[
        ("ca1.crt", ca1.cert_pem().as_bytes()),
        ("ca2.crt", ca2.cert_pem().as_bytes()),
        (
            "bad.crt",
            b"-----BEGIN CERTIFICATE-----\nnot base64 at all\n-----END CERTIFICATE-----\n",
        ),
    ]);
    agent.wait_for_passes(n + 1, PASS_TIMEOUT);
    let entries = since(&agent, skip);
    assert!(
        entries
            .iter()
            .any(|e| e.error && e.message.contains("bad.crt")),
        "the bad key is not named in an error:\n{}",
        render_tail(&entries, 30)
    );
    before.assert_not_restarted(&fx.node, "after a bad key");
    observe::assert_trusted(&fx.node, &ca1, "the good CAs stay after a bad key");
    observe::assert_trusted(&fx.node, &ca2, "the good CAs stay after a bad key");

    // Delete: both uninstalled, one restart.
    let before = ContainerdState::of(&fx.node);
    let n = passes(&agent);
    fx.delete();
    agent.wait_for_passes(n + 1, PASS_TIMEOUT);
    wait_until(PASS_TIMEOUT, "the CAs removed after the delete", || {
        !observe::bundle_has(&fx.node, ca1.cert()) && !observe::bundle_has(&fx.node, ca2.cert())
    });
    wait_until(PASS_TIMEOUT, "one restart for the delete", || {
        observe::containerd_starts(&fx.node) > before.starts
    });
    std::thread::sleep(Duration::from_secs(2));
    before.assert_restarted_once(&fx.node, "after the delete");
    assert_pull_untrusted(&fx.node, &reg1.image, "after the Secret was deleted");
}

#[test]
fn with_containerds_certs_d_a_ca_created_through_the_api_works_at_the_next_pull_with_no_restart() {
    let fx = Fixture::new("live");
    integration_tests::containerd_config::set_config_path(&fx.node);
    let ca = TestCa::new("nca api-secret live CA");
    let storage = tempfile::tempdir().unwrap();
    let reg = TestRegistry::start(&ca, storage.path(), "api-secret/live");
    let agent = fx.agent();
    agent.wait_for_passes(1, PASS_TIMEOUT);
    wait_until(PASS_TIMEOUT, "the Secret's source synced (absent)", || {
        fx.source_state().as_deref() == Some("synced")
    });
    assert_pull_untrusted(&fx.node, &reg.image, "before the Secret exists");

    let before = ContainerdState::of(&fx.node);
    let n = passes(&agent);
    let written = fx.create(&[("ca1.crt", ca.cert_pem().as_bytes())]);
    let latency = pull_until_ok(&fx.node, &reg.image, written, || agent.logs());
    println!(
        "live path: API create -> pull succeeded in {} ms",
        latency.as_millis()
    );
    agent.wait_for_passes(n + 1, PASS_TIMEOUT);
    before.assert_not_restarted(&fx.node, "a CA created through the API, live path");
    observe::assert_trusted(&fx.node, &ca, "the OS store is written too");
    // Identical writes (the same data) and an update that adds nothing new.
    for _ in 0..3 {
        fx.update(&[("ca1.crt", ca.cert_pem().as_bytes())]);
    }
    std::thread::sleep(Duration::from_secs(2));
    before.assert_not_restarted(&fx.node, "after identical updates");

    // The delete: one restart (containerd may hold the CA), the pull fails.
    let n = passes(&agent);
    fx.delete();
    agent.wait_for_passes(n + 1, PASS_TIMEOUT);
    wait_until(PASS_TIMEOUT, "one restart for the delete", || {
        observe::containerd_starts(&fx.node) > before.starts
    });
    std::thread::sleep(Duration::from_secs(2));
    before.assert_restarted_once(&fx.node, "after the delete, live path");
    assert_pull_untrusted(&fx.node, &reg.image, "after the Secret was deleted");
}

#[test]
fn the_api_down_for_30s_while_the_agent_restarts_changes_nothing_and_restarts_nothing() {
    let fx = Fixture::new("down");
    let ca = TestCa::new("nca api-secret down CA");
    let storage = tempfile::tempdir().unwrap();
    let reg = TestRegistry::start(&ca, storage.path(), "api-secret/down");
    let mut agent = fx.agent();
    agent.wait_for_passes(1, PASS_TIMEOUT);
    let written = fx.create(&[("ca1.crt", ca.cert_pem().as_bytes())]);
    pull_until_ok(&fx.node, &reg.image, written, || agent.logs());
    wait_until(PASS_TIMEOUT, "no restart pending", || {
        observe::containerd_starts(&fx.node) > 0
    });
    std::thread::sleep(Duration::from_secs(2));

    let before = ContainerdState::of(&fx.node);
    let refreshes = observe::refresh_runs(&fx.node).len();
    let down_at = Instant::now();
    fx.server.down();
    agent.restart();
    wait_until(PASS_TIMEOUT, "the source reported not synced", || {
        fx.source_state().as_deref() == Some("failing")
    });
    let logs = agent.logs();
    assert!(
        logs.iter().any(|e| e.error
            && e.message.contains(NAME)
            && e.message.contains("Connection refused")),
        "no error names the Secret and the refused connection:\n{}",
        render_tail(&logs, 30)
    );
    let remaining = Duration::from_secs(30).saturating_sub(down_at.elapsed());
    std::thread::sleep(remaining);
    observe::assert_trusted(&fx.node, &ca, "while the API server is down");
    assert_pull_ok(&fx.node, &reg.image, "while the API server is down");
    before.assert_not_restarted(&fx.node, "while the API server is down");
    fx.server.up();
    wait_until(Duration::from_secs(90), "the source synced again", || {
        fx.source_state().as_deref() == Some("synced")
    });
    std::thread::sleep(Duration::from_secs(2));
    before.assert_not_restarted(&fx.node, "after the API server came back");
    assert_eq!(
        observe::refresh_runs(&fx.node).len(),
        refreshes,
        "no refresh for unchanged content"
    );
}

#[test]
fn a_410_and_a_dropped_watch_relist_and_restart_nothing() {
    let fx = Fixture::new("relist");
    // No bookmarks: the watch's resourceVersion stays at the Secret's, so
    // the compaction below leaves it behind (an ERROR event with a 410
    // Status on the next watch, as upstream's watch cache sends it).
    fx.server.set_bookmark_interval(Duration::from_secs(3600));
    let ca = TestCa::new("nca api-secret relist CA");
    let agent = fx.agent();
    agent.wait_for_passes(1, PASS_TIMEOUT);
    let n = passes(&agent);
    fx.create(&[("ca1.crt", ca.cert_pem().as_bytes())]);
    agent.wait_for_passes(n + 1, PASS_TIMEOUT);
    wait_until(PASS_TIMEOUT, "the CA installed", || {
        observe::bundle_has(&fx.node, ca.cert())
    });
    std::thread::sleep(Duration::from_secs(2));
    let before = ContainerdState::of(&fx.node);
    let lists = |server: &ApiServer| {
        server
            .requests()
            .iter()
            .filter(|r| r.resource == "secrets" && r.verb == "list")
            .count()
    };

    // A dropped watch: every connection closed; the watch resumes.
    let watches = |server: &ApiServer| {
        server
            .requests()
            .iter()
            .filter(|r| r.resource == "secrets" && r.verb == "watch")
            .count()
    };
    let w = watches(&fx.server);
    fx.server.down();
    fx.server.up();
    wait_until(Duration::from_secs(60), "the watch re-established", || {
        watches(&fx.server) > w
    });

    // A 410: other writes move the revision on, the history is compacted,
    // and the connection drops; the watch's resourceVersion is gone.
    let other: Api<Secret> = Api::namespaced(fx.admin.clone(), "default");
    for i in 0..3 {
        let s = Secret {
            metadata: kube::api::ObjectMeta {
                name: Some(format!("unrelated-{i}")),
                ..Default::default()
            },
            ..Default::default()
        };
        fx.rt
            .block_on(other.create(&PostParams::default(), &s))
            .unwrap();
    }
    fx.server.compact();
    let l = lists(&fx.server);
    fx.server.down();
    fx.server.up();
    // Only a 410 makes kube-runtime's watcher list again.
    wait_until(Duration::from_secs(60), "a relist after the 410", || {
        lists(&fx.server) > l
    });
    wait_until(PASS_TIMEOUT, "synced after the relist", || {
        fx.source_state().as_deref() == Some("synced")
    });
    std::thread::sleep(Duration::from_secs(3));
    before.assert_not_restarted(&fx.node, "after a dropped watch and a 410");
    observe::assert_trusted(&fx.node, &ca, "after a dropped watch and a 410");
}

#[test]
fn the_shipped_role_allows_only_that_secret_and_only_with_its_field_selector() {
    let server = ApiServer::start_with(Profile::Kubeadm, &integration_tests::rbac::shipped_rbac());
    let token = server.add_service_account_token(NS, SA);
    let http = reqwest::blocking::Client::builder()
        .add_root_certificate(
            reqwest::Certificate::from_pem(server.cluster_ca_pem().as_bytes()).unwrap(),
        )
        .build()
        .unwrap();
    let get = |path: &str| -> (u16, Value) {
        let r = http
            .get(format!("{}{path}", server.url()))
            .bearer_auth(&token)
            .send()
            .unwrap();
        let code = r.status().as_u16();
        let body = if path.contains("watch=true") {
            Value::Null
        } else {
            serde_json::from_slice(&r.bytes().unwrap()).unwrap_or(Value::Null)
        };
        (code, body)
    };
    let base = format!("/api/v1/namespaces/{NS}/secrets");
    let (code, st) = get(&base);
    assert_eq!(code, 403, "{st}");
    assert_eq!(
        st["message"],
        json!(format!(
            "secrets is forbidden: User \"system:serviceaccount:{NS}:{SA}\" cannot list resource \"secrets\" in API group \"\" in the namespace \"{NS}\""
        )),
        "{st}"
    );
    assert_eq!(st["reason"], "Forbidden");
    let (code, st) = get(&format!("{base}?fieldSelector=metadata.name%3D{NAME}"));
    assert_eq!(code, 200, "{st}");
    let (code, _) = get(&format!(
        "{base}?fieldSelector=metadata.name%3Dsomething-else"
    ));
    assert_eq!(code, 403);
    let (code, _) = get(&format!("{base}/{NAME}"));
    assert_eq!(code, 404, "get is allowed (and the Secret does not exist)");
    let (code, _) = get(&format!("{base}/other"));
    assert_eq!(code, 403);
    let (code, _) = get(&format!(
        "{base}?fieldSelector=metadata.name%3D{NAME}&watch=true&timeoutSeconds=1"
    ));
    assert_eq!(code, 200);
    let (code, _) = get(&format!(
        "/api/v1/namespaces/default/secrets?fieldSelector=metadata.name%3D{NAME}"
    ));
    assert_eq!(code, 403, "only in {NS}");
}

#[test]
fn check_secret_lints_the_live_object_with_the_users_kubeconfig() {
    let server = ApiServer::start_with(Profile::Kubeadm, &integration_tests::rbac::shipped_rbac());
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("admin-kubeconfig");
    std::fs::write(&kubeconfig, server.admin_kubeconfig()).unwrap();
    let check = || {
        std::process::Command::new(integration_tests::agent::agent_binary())
            .args(["check", "--secret", &format!("{NS}/{NAME}")])
            .env("KUBECONFIG", &kubeconfig)
            .env_remove("HOME")
            .output()
            .unwrap()
    };
    let out = check();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("does not exist"),
        "{out:?}"
    );

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let ca = TestCa::new("nca check --secret CA");
    rt.block_on(async {
        let kc = kube::config::Kubeconfig::read_from(&kubeconfig).unwrap();
        let config = kube::Config::from_custom_kubeconfig(kc, &Default::default())
            .await
            .unwrap();
        let api: Api<Secret> = Api::namespaced(kube::Client::try_from(config).unwrap(), NS);
        let s = Secret {
            metadata: kube::api::ObjectMeta {
                name: Some(NAME.into()),
                ..Default::default()
            },
            data: Some(Fixture::data(&[
                ("ca1.crt", ca.cert_pem().as_bytes()),
                ("bad.crt", b"not a certificate"),
            ])),
            ..Default::default()
        };
        api.create(&PostParams::default(), &s).await.unwrap();
    });
    let out = check();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        stdout.contains("bad.crt") && stdout.contains("ca1.crt"),
        "{stdout}"
    );
}

/// The DaemonSet's default identity: no `ca-secret-kubeconfig`, so the agent
/// takes the in-cluster config, as in its pod: `KUBERNETES_SERVICE_HOST` and
/// `_PORT` (kubelet sets both in every container) and the ServiceAccount's
/// token, CA and namespace under /var/run/secrets/kubernetes.io/serviceaccount.
/// The agent runs as the node's service with exactly that environment and
/// those files in the node: the pod's view of them. Then kubelet rotates the
/// projected token (a new file at the same path) and the old one expires
/// (401 from then on); every watch is dropped, so every request after it
/// must present the new token, and the next change still arrives.
#[test]
fn in_cluster_the_serviceaccount_token_reads_the_secret_and_a_rotated_token_is_taken_up() {
    let fx = Fixture::new("incluster");
    let ca1 = TestCa::new("nca api-secret in-cluster CA one");
    let ca2 = TestCa::new("nca api-secret in-cluster CA two");
    let storage = tempfile::tempdir().unwrap();
    let reg1 = TestRegistry::start(&ca1, storage.path(), "api-secret/incluster-one");
    let reg2 = TestRegistry::start(&ca2, storage.path(), "api-secret/incluster-two");
    let old_token = fx.server.add_service_account_token(NS, SA);
    fx.node
        .write_file(&format!("{SA_DIR}/token"), old_token.as_bytes(), 0o644);
    fx.node.write_file(
        &format!("{SA_DIR}/ca.crt"),
        fx.server.cluster_ca_pem().as_bytes(),
        0o644,
    );
    fx.node
        .write_file(&format!("{SA_DIR}/namespace"), NS.as_bytes(), 0o644);
    fx.node.write_file(
        "/etc/systemd/system/node-cert-agent.service.d/in-cluster.conf",
        format!(
            "[Service]\nEnvironment=KUBERNETES_SERVICE_HOST=127.0.0.1 KUBERNETES_SERVICE_PORT={}\n",
            fx.server.port()
        )
        .as_bytes(),
        0o644,
    );
    let config = format!(
        "ca-secret:\n  namespace: {NS}\n  name: {NAME}\nrestart-unit:\n  - containerd.service\n"
    );
    let agent = HostModeAgent::install(&fx.node, &config);
    wait_until(PASS_TIMEOUT, "the Secret's source synced (absent)", || {
        fx.source_state().as_deref() == Some("synced")
    });
    assert_pull_untrusted(&fx.node, &reg1.image, "before the Secret exists");

    let before = ContainerdState::of(&fx.node);
    let written = fx.create(&[("ca1.crt", ca1.cert_pem().as_bytes())]);
    pull_until_ok(&fx.node, &reg1.image, written, || agent.logs());
    wait_until(PASS_TIMEOUT, "one restart for the create", || {
        observe::containerd_starts(&fx.node) > before.starts
    });
    std::thread::sleep(Duration::from_secs(2));
    before.assert_restarted_once(&fx.node, "after the create, in-cluster");
    let sa_user = format!("system:serviceaccount:{NS}:{SA}");
    let secret_calls = |server: &ApiServer| -> Vec<(String, String, u16)> {
        server
            .requests()
            .into_iter()
            .filter(|r| r.resource == "secrets" && r.namespace == NS)
            .filter(|r| !r.groups.iter().any(|g| g == "system:masters"))
            .map(|r| (r.verb, r.user, r.code))
            .collect()
    };
    let calls = secret_calls(&fx.server);
    assert!(
        !calls.is_empty()
            && calls
                .iter()
                .all(|(_, user, code)| *user == sa_user && *code == 200),
        "the agent's Secret calls are not all its ServiceAccount's and answered 200: {calls:?}"
    );

    // kubelet writes the rotated token; kube-rs re-reads a token file at
    // most a minute after it last read it (client-go's cached token source
    // does the same), so the old token expires only after that.
    let new_token = fx.server.add_service_account_token(NS, SA);
    fx.node
        .write_file(&format!("{SA_DIR}/token"), new_token.as_bytes(), 0o644);
    std::thread::sleep(Duration::from_secs(65));
    fx.server.clear_requests();
    fx.server.expire_service_account_token(&old_token);
    fx.server.down();
    fx.server.up();
    let before = ContainerdState::of(&fx.node);
    let written = fx.update(&[
        ("ca1.crt", ca1.cert_pem().as_bytes()),
        ("ca2.crt", ca2.cert_pem().as_bytes()),
    ]);
    pull_until_ok(&fx.node, &reg2.image, written, || agent.logs());
    wait_until(PASS_TIMEOUT, "one restart for the update", || {
        observe::containerd_starts(&fx.node) > before.starts
    });
    std::thread::sleep(Duration::from_secs(2));
    before.assert_restarted_once(&fx.node, "after the update with the rotated token");
    assert_pull_ok(&fx.node, &reg1.image, "the first CA stays");
    let calls = secret_calls(&fx.server);
    assert!(
        calls.iter().any(|(verb, _, _)| verb == "watch"),
        "no watch of the Secret after the drop: {calls:?}"
    );
    assert!(
        calls.iter().all(|(_, user, code)| *user == sa_user && *code == 200),
        "after the rotation a Secret call was not the ServiceAccount's new token (a 401 is the expired one): {calls:?}"
    );
    let unauthorized: Vec<LogEntry> = agent
        .logs()
        .into_iter()
        .filter(|e| e.error && e.message.contains("401"))
        .collect();
    assert!(
        unauthorized.is_empty(),
        "the agent was refused with the expired token:\n{}",
        render_tail(&unauthorized, 10)
    );
}
