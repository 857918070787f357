//! The tests of `reconcile`.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use std::fs;
use std::sync::Arc;

use super::*;
use crate::time::now_us;
use crate::trust::restart::{spread_offset, started_after};

/// The peak restarts in any one second when `nodes` nodes see one change
/// at the same instant and each waits its [`spread_offset`] of `window`.
fn peak_restarts_per_second(nodes: usize, window: Duration) -> usize {
    let mut per_second = std::collections::BTreeMap::<u64, usize>::new();
    for n in 0..nodes {
        let offset = spread_offset(&format!("aks-nodepool1-{n:05}-vmss"), window);
        *per_second.entry(offset.as_secs()).or_default() += 1;
    }
    per_second.values().copied().max().unwrap_or(0)
}

#[test]
fn a_60_second_spread_cuts_the_peak_of_5000_nodes_from_5000_to_under_130_per_second() {
    let without = peak_restarts_per_second(5000, Duration::ZERO);
    let with = peak_restarts_per_second(5000, Duration::from_secs(60));
    println!("5000 nodes, one change: peak containerd restarts per second: restart-spread-seconds 0: {without}, 60: {with}");
    assert_eq!(without, 5000);
    // Uniform would be 83.3 per second; allow the binomial's tail.
    assert!(with < 130, "{with}");
    // Stable per node, and within the window.
    let a = spread_offset("node-a", Duration::from_secs(60));
    assert_eq!(a, spread_offset("node-a", Duration::from_secs(60)));
    assert!(a < Duration::from_secs(60));
}
use crate::node::distro::Family;
use crate::node::hostroot::HostRoot;
use crate::node::systemd::fake::{FakeUnit, RecordingSystemd};
use crate::x509::testpki;

struct Node {
    root: tempfile::TempDir,
    secret: tempfile::TempDir,
}

impl Node {
    fn new() -> Self {
        let root = tempfile::tempdir().unwrap();
        fs::create_dir_all(root.path().join("etc/ssl/certs")).unwrap();
        fs::write(
            root.path().join("etc/ssl/certs/ca-certificates.crt"),
            "distro\n",
        )
        .unwrap();
        Self {
            root,
            secret: tempfile::tempdir().unwrap(),
        }
    }

    fn reconciler(&self, systemd: Arc<RecordingSystemd>) -> Reconciler<Arc<RecordingSystemd>> {
        let host = HostRoot::new(self.root.path()).unwrap();
        let store = TrustStore::new(host, Family::Debian.layout());
        Reconciler::new(
            store,
            systemd,
            CaSettings {
                sources: vec![SourceSpec::SecretDir(self.secret.path().into())],
                api_secret: None,
                restart_delay: std::time::Duration::ZERO,
                restart_units: vec!["containerd.service".into()],
                restart_spacing: std::time::Duration::ZERO,
                max_certificates: 10,
                state_path: self
                    .root
                    .path()
                    .join("var/lib/node-cert-agent/ca-state.json"),
            },
        )
    }

    fn put(&self, key: &str, value: &str) {
        fs::write(self.secret.path().join(key), value).unwrap();
    }

    fn bundle(&self) -> String {
        fs::read_to_string(self.root.path().join("etc/ssl/certs/ca-certificates.crt")).unwrap()
    }
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn pem(cn: &str) -> String {
    testpki::pem(&testpki::good_ca(cn).cert)
}

#[test]
fn new_ca_is_installed_refreshed_and_restarts_containerd_once() {
    let node = Node::new();
    let fake = Arc::new(RecordingSystemd::emulating_debian(node.root.path()));
    let r = node.reconciler(fake.clone());
    let a = pem("A");
    node.put("ca1.crt", &a);
    let out = rt().block_on(r.reconcile()).unwrap();
    assert_eq!(out.installed.len(), 1);
    assert!(node.bundle().contains(a.lines().nth(1).unwrap()));
    assert_eq!(fake.commands().len(), 1);
    assert_eq!(fake.restarts(), vec!["containerd.service"]);
}

/// `trust-store.anchors-dir` and `anchor-extension` changed: the
/// anchors written under the old ones are the agent's still, and are
/// removed (the old directory is remembered until it holds none).
#[test]
fn anchors_left_under_an_earlier_directory_or_extension_are_removed() {
    let node = Node::new();
    let fake = Arc::new(RecordingSystemd::emulating_debian(node.root.path()));
    let a = pem("A");
    node.put("ca1.crt", &a);
    let host = HostRoot::new(node.root.path()).unwrap();
    let mut old_layout = Family::Debian.layout();
    old_layout.anchors_dir = "/usr/local/share/ca-certificates/old".into();
    old_layout.anchor_extension = "pem".into();
    // (The fake's refresh reads only the default directory: these
    // passes write their anchors, then find the bundle without them.)
    let mut r = node.reconciler(fake.clone());
    r.store = TrustStore::new(host.clone(), old_layout);
    let _ = rt().block_on(r.reconcile());
    let old_dir = node.root.path().join("usr/local/share/ca-certificates/old");
    assert_eq!(fs::read_dir(&old_dir).unwrap().count(), 1);

    // Same directory, another extension: the .pem anchor is the agent's.
    let mut pem_to_crt = Family::Debian.layout();
    pem_to_crt.anchors_dir = "/usr/local/share/ca-certificates/old".into();
    let mut r = node.reconciler(fake.clone());
    r.store = TrustStore::new(host.clone(), pem_to_crt);
    let _ = rt().block_on(r.reconcile());
    let names: Vec<String> = fs::read_dir(&old_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.len(), 1, "{names:?}");
    assert!(names[0].ends_with(".crt"), "{names:?}");

    // Another directory: the old one is emptied and forgotten.
    let r = node.reconciler(fake.clone());
    let out = rt().block_on(r.reconcile()).unwrap();
    assert_eq!(out.installed.len(), 1);
    assert_eq!(fs::read_dir(&old_dir).unwrap().count(), 0);
    assert!(node.bundle().contains(a.lines().nth(1).unwrap()));
    let dirs = state::load_anchor_dirs(&state::anchor_dirs_path(&r.settings.state_path)).unwrap();
    assert_eq!(
        dirs.dirs.into_iter().collect::<Vec<_>>(),
        [PathBuf::from(
            "/usr/local/share/ca-certificates/node-cert-agent"
        )]
    );
    // Settled: the next pass touches nothing.
    let commands = fake.commands().len();
    rt().block_on(r.reconcile()).unwrap();
    assert_eq!(fake.commands().len(), commands);
}

/// Side effects of a restart: dockerd without live-restore is never
/// restarted (its restart stops every container); a unit that others
/// require is restarted with a warning naming them.
#[test]
fn a_restart_that_would_stop_containers_is_refused_and_one_that_restarts_others_says_so() {
    let node = Node::new();
    let fake = Arc::new(RecordingSystemd::emulating_debian(node.root.path()));
    let mut r = node.reconciler(fake.clone());
    r.settings.restart_units = vec!["docker.service".into()];
    node.put("ca1.crt", &pem("A"));
    let err = rt().block_on(r.reconcile()).unwrap_err();
    assert!(
        matches!(err, ReconcileError::RestartWouldStopContainers { .. }),
        "{err}"
    );
    assert!(err.to_string().contains("live-restore"), "{err}");
    assert!(fake.restarts().is_empty());
    // With live-restore, containers survive: restarted.
    fs::create_dir_all(node.root.path().join("etc/docker")).unwrap();
    fs::write(
        node.root.path().join("etc/docker/daemon.json"),
        r#"{"live-restore": true}"#,
    )
    .unwrap();
    let out = rt().block_on(r.reconcile()).unwrap();
    assert_eq!(out.restarted, vec!["docker.service"]);

    // containerd, which kubelet requires on this image.
    let node = Node::new();
    let fake = Arc::new(RecordingSystemd::emulating_debian(node.root.path()));
    fake.with_unit("containerd.service", |u| {
        u.restarted_with = vec!["kubelet.service".into()];
    });
    let r = node.reconciler(fake.clone());
    node.put("ca1.crt", &pem("A"));
    let out = rt().block_on(r.reconcile()).unwrap();
    assert_eq!(out.restarted, vec!["containerd.service"]);
    assert_eq!(
        out.restarted_with,
        vec![(
            "containerd.service".to_string(),
            vec!["kubelet.service".to_string()]
        )]
    );
}

/// Two units, one restarted and one deferred by its start limit, then
/// the change reverted: the restarted one took the removed CA and is
/// restarted again; the deferred one never took it and is not.
#[test]
fn a_revert_restarts_exactly_the_units_that_took_the_change() {
    let node = Node::new();
    let fake = Arc::new(RecordingSystemd::emulating_debian(node.root.path()));
    let other = "other-runtime.service";
    fake.with_unit(other, |u| {
        u.start_limit = StartLimit {
            burst: 2,
            interval_us: 3_600_000_000,
        };
    });
    // Its one start of the window is used: the agent's restart waits.
    assert!(fake.external_start(other).is_done());
    let mut r = node.reconciler(fake.clone());
    r.settings.restart_units = vec![UNIT.into(), other.into()];
    node.put("ca1.crt", &pem("A"));
    let out = rt().block_on(r.reconcile()).unwrap();
    assert_eq!(out.restarted, vec![UNIT]);
    assert_eq!(out.deferred.len(), 1, "{out:?}");
    assert_eq!(out.deferred[0].unit, other);

    // Reverted before the deferred restart came.
    fs::remove_file(node.secret.path().join("ca1.crt")).unwrap();
    let out = rt().block_on(r.reconcile()).unwrap();
    assert_eq!(out.restarted, vec![UNIT], "{out:?}");
    assert!(out.deferred.is_empty(), "{out:?}");
    assert_eq!(fake.restarts(), vec![UNIT, UNIT]);
    let st = state::load(&r.settings().state_path).unwrap();
    assert_eq!(st.pending, Pending::Nothing);
}

/// Changes faster than the spacing share one restart: the second one's
/// restart waits for `restart-min-spacing-seconds` after the first.
#[test]
fn restarts_are_spaced_and_changes_within_the_spacing_share_one() {
    let node = Node::new();
    let fake = Arc::new(RecordingSystemd::emulating_debian(node.root.path()));
    let mut r = node.reconciler(fake.clone());
    r.settings.restart_spacing = std::time::Duration::from_secs(1);
    node.put("ca1.crt", &pem("A"));
    let first = now_us();
    let out = rt().block_on(r.reconcile()).unwrap();
    assert_eq!(out.restarted, vec![UNIT]);
    node.put("ca2.crt", &pem("B"));
    let out = rt().block_on(r.reconcile()).unwrap();
    assert!(out.restarted.is_empty(), "{out:?}");
    let wake = out.wake_at_us.unwrap();
    assert!(wake >= first + 1_000_000, "{wake} vs {first}");
    node.put("ca3.crt", &pem("C"));
    let out = rt().block_on(r.reconcile()).unwrap();
    assert!(out.restarted.is_empty(), "{out:?}");
    sleep_until_us(wake);
    let out = rt().block_on(r.reconcile()).unwrap();
    assert_eq!(out.restarted, vec![UNIT]);
    assert_eq!(
        fake.restarts(),
        vec![UNIT, UNIT],
        "one restart for both changes"
    );
}

#[test]
fn republish_and_agent_restarts_are_noops() {
    let node = Node::new();
    let fake = Arc::new(RecordingSystemd::emulating_debian(node.root.path()));
    let a = pem("A");
    node.put("ca1.crt", &a);
    rt().block_on(node.reconciler(fake.clone()).reconcile())
        .unwrap();
    for _ in 0..20 {
        node.put("ca1.crt", &a);
        let out = rt()
            .block_on(node.reconciler(fake.clone()).reconcile())
            .unwrap();
        assert!(!out.refreshed && out.restarted.is_empty());
    }
    assert_eq!(
        fake.commands().len(),
        1,
        "one refresh for the one real change"
    );
    assert_eq!(
        fake.restarts().len(),
        1,
        "one restart for the one real change"
    );
}

#[test]
fn bad_keys_cause_no_refresh_and_no_restart() {
    let node = Node::new();
    let fake = Arc::new(RecordingSystemd::emulating_debian(node.root.path()));
    node.put("ca1.crt", &pem("A"));
    let r = node.reconciler(fake.clone());
    rt().block_on(r.reconcile()).unwrap();
    node.put("garbage.crt", "garbage");
    node.put("key.crt", &testpki::private_key_pem());
    let out = rt().block_on(r.reconcile()).unwrap();
    assert!(out.has_input_errors());
    assert!(out.findings.iter().any(|f| f.key == "garbage.crt"));
    assert!(out.findings.iter().any(|f| f.key == "key.crt"));
    assert_eq!(fake.commands().len(), 1);
    assert_eq!(fake.restarts().len(), 1);
    assert!(!node.bundle().contains("PRIVATE"));
}

#[test]
fn broken_replacement_keeps_the_previous_version_trusted() {
    let node = Node::new();
    let fake = Arc::new(RecordingSystemd::emulating_debian(node.root.path()));
    let a = pem("A");
    node.put("ca1.crt", &a);
    let r = node.reconciler(fake.clone());
    rt().block_on(r.reconcile()).unwrap();
    node.put("ca1.crt", "-----BEGIN CERTIFICATE-----\nbroken\n");
    let out = rt().block_on(r.reconcile()).unwrap();
    assert!(out.removed.is_empty());
    assert!(node.bundle().contains(a.lines().nth(1).unwrap()));
    assert_eq!(fake.restarts().len(), 1);
}

#[test]
fn removing_a_key_removes_its_ca_with_one_restart() {
    let node = Node::new();
    let fake = Arc::new(RecordingSystemd::emulating_debian(node.root.path()));
    let (a, b) = (pem("A"), pem("B"));
    node.put("ca1.crt", &a);
    node.put("ca2.crt", &b);
    let r = node.reconciler(fake.clone());
    rt().block_on(r.reconcile()).unwrap();
    fs::remove_file(node.secret.path().join("ca1.crt")).unwrap();
    let out = rt().block_on(r.reconcile()).unwrap();
    assert_eq!(out.removed.len(), 1);
    assert!(!node.bundle().contains(a.lines().nth(1).unwrap()));
    assert_eq!(fake.restarts().len(), 2);
}

#[test]
fn failed_refresh_is_retried_by_the_next_pass_and_restarts_once() {
    let node = Node::new();
    let fake = Arc::new(RecordingSystemd::emulating_debian(node.root.path()));
    node.put("ca1.crt", &pem("A"));
    let r = node.reconciler(fake.clone());
    *fake.command_status.lock().unwrap() = 1;
    let err = rt().block_on(r.reconcile()).unwrap_err();
    assert!(
        matches!(err, ReconcileError::RefreshFailed { status: 1, .. }),
        "{err}"
    );
    assert!(fake.restarts().is_empty());
    *fake.command_status.lock().unwrap() = 0;
    // Nothing changed in the input, but the pending refresh is finished.
    let out = rt().block_on(r.reconcile()).unwrap();
    assert!(out.refreshed);
    assert_eq!(fake.restarts().len(), 1);
    let out = rt().block_on(r.reconcile()).unwrap();
    assert!(!out.refreshed && out.restarted.is_empty());
}

#[test]
fn a_failed_pass_still_reports_the_anchors_it_wrote_and_the_input_it_read() {
    let node = Node::new();
    let fake = Arc::new(RecordingSystemd::emulating_debian(node.root.path()));
    let a = pem("A");
    node.put("ca1.crt", &a);
    let r = node.reconciler(fake.clone());
    *fake.command_status.lock().unwrap() = 1;
    let (out, result) = rt().block_on(r.reconcile_observed());
    assert!(matches!(result, Err(ReconcileError::RefreshFailed { .. })));
    let fp = crate::x509::cert::CertInfo::from_pem(a.as_bytes())
        .unwrap()
        .fingerprint;
    assert_eq!(out.trusted, [fp].into(), "the anchor was written");
    assert_eq!(
        out.secret_content,
        Some([("ca1.crt".to_string(), a.as_bytes().to_vec())].into())
    );
    // Removing the key: the next pass reports the empty set.
    *fake.command_status.lock().unwrap() = 0;
    fs::remove_file(node.secret.path().join("ca1.crt")).unwrap();
    let (out, result) = rt().block_on(r.reconcile_observed());
    result.unwrap();
    assert!(out.trusted.is_empty());
    assert_eq!(out.secret_content, Some(Default::default()));
}

#[test]
fn failed_restart_job_is_retried_without_another_refresh() {
    let node = Node::new();
    let fake = Arc::new(RecordingSystemd::emulating_debian(node.root.path()));
    node.put("ca1.crt", &pem("A"));
    let r = node.reconciler(fake.clone());
    *fake.restart_result.lock().unwrap() = Some("failed".into());
    let err = rt().block_on(r.reconcile()).unwrap_err();
    assert!(matches!(err, ReconcileError::RestartFailed { .. }), "{err}");
    *fake.restart_result.lock().unwrap() = None;
    let out = rt().block_on(r.reconcile()).unwrap();
    assert!(!out.refreshed);
    assert_eq!(out.restarted, vec!["containerd.service"]);
    assert_eq!(fake.commands().len(), 1);
}

#[test]
fn a_unit_that_came_up_by_itself_after_a_failed_restart_is_not_restarted_again() {
    let node = Node::new();
    let fake = Arc::new(RecordingSystemd::emulating_debian(node.root.path()));
    node.put("ca1.crt", &pem("A"));
    let r = node.reconciler(fake.clone());
    *fake.restart_result.lock().unwrap() = Some("failed".into());
    rt().block_on(r.reconcile()).unwrap_err();
    assert_eq!(fake.restarts().len(), 1);
    // containerd's Restart=always brought it up after the bundle was written.
    let written = r.store().bundle_modified_us().unwrap().unwrap();
    fake.set_active_since("containerd.service", written + 1);
    *fake.restart_result.lock().unwrap() = None;
    let out = rt().block_on(r.reconcile()).unwrap();
    assert!(out.restarted.is_empty() && !out.refreshed);
    assert_eq!(fake.restarts().len(), 1, "no second restart");
    let st = state::load(&r.settings().state_path).unwrap();
    assert_eq!(st.pending, Pending::Nothing, "the restart is done");
    assert_eq!(
        st.bundle_sha256,
        r.store().bundle_digest().unwrap(),
        "the unit runs with the current bundle"
    );
}

#[test]
fn a_unit_running_since_before_the_bundle_changed_is_restarted() {
    let node = Node::new();
    let fake = Arc::new(RecordingSystemd::emulating_debian(node.root.path()));
    fake.set_active_since("containerd.service", 1);
    node.put("ca1.crt", &pem("A"));
    let out = rt()
        .block_on(node.reconciler(fake.clone()).reconcile())
        .unwrap();
    assert_eq!(out.restarted, vec!["containerd.service"]);
    assert_eq!(fake.restarts().len(), 1);
}

#[test]
fn restarts_are_skipped_only_when_the_unit_started_after_the_bundle_was_written() {
    assert!(started_after(Some(2_000_001), Some(2_000_000)));
    assert!(!started_after(Some(2_000_000), Some(2_000_000)));
    assert!(!started_after(Some(1_000_000), Some(2_000_000)));
    assert!(!started_after(None, Some(2_000_000)), "not active");
    assert!(!started_after(Some(2_000_001), None), "no bundle time");
}

#[test]
fn only_allowlisted_units_are_ever_restarted() {
    let node = Node::new();
    let fake = Arc::new(RecordingSystemd::emulating_debian(node.root.path()));
    node.put("ca1.crt", &pem("A"));
    let r = node.reconciler(fake.clone());
    // A state file from an older config asks for another unit.
    let state_path = r.settings().state_path.clone();
    fs::create_dir_all(state_path.parent().unwrap()).unwrap();
    let mut st = state::load(&state_path).unwrap();
    st.pending = Pending::Restart(["sshd.service".to_string()].into());
    state::save(&state_path, &st).unwrap();
    rt().block_on(r.reconcile()).unwrap();
    assert_eq!(fake.restarts(), vec!["containerd.service"]);
}

#[test]
fn missing_source_that_never_existed_is_a_warning_but_one_that_vanished_is_an_error() {
    let node = Node::new();
    let fake = Arc::new(RecordingSystemd::emulating_debian(node.root.path()));
    let mut r = node.reconciler(fake.clone());
    r.settings
        .sources
        .push(SourceSpec::File(node.root.path().join("no-such-file.pem")));
    node.put("ca1.crt", &pem("A"));
    let out = rt().block_on(r.reconcile()).unwrap();
    assert!(!out.has_input_errors(), "{:?}", out.findings);
    assert_eq!(out.installed.len(), 1);
    // The Secret dir provided a CA; now it is gone: error, CA kept.
    let secret = node.secret.path().to_path_buf();
    fs::remove_dir_all(&secret).unwrap();
    let out = rt().block_on(r.reconcile()).unwrap();
    assert!(out.has_input_errors());
    assert!(out.removed.is_empty());
    assert_eq!(fake.restarts().len(), 1);
}

const UNIT: &str = "containerd.service";

/// containerd's config with `config_path` set, as AKS sets it.
fn with_certs_d(node: &Node) -> std::path::PathBuf {
    let etc = node.root.path().join("etc/containerd");
    fs::create_dir_all(&etc).unwrap();
    fs::write(
        etc.join("config.toml"),
        "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".registry]\nconfig_path = \"/etc/containerd/certs.d\"\n",
    )
    .unwrap();
    etc.join("certs.d")
}

#[test]
fn an_added_ca_is_live_with_no_restart_and_a_removed_one_restarts_once() {
    let node = Node::new();
    let certs_d = with_certs_d(&node);
    let fake = Arc::new(RecordingSystemd::emulating_debian(node.root.path()));
    // containerd (re)started with this config.
    fake.set_active_since(UNIT, now_us());
    let r = node.reconciler(fake.clone());
    node.put("ca1.crt", &pem("A"));
    let out = rt().block_on(r.reconcile()).unwrap();
    assert!(out.refreshed, "the OS store is still written");
    assert_eq!(out.restarts_avoided, vec![UNIT]);
    assert!(fake.restarts().is_empty(), "{:?}", fake.restarts());
    let trust = out.pull_trust.unwrap();
    assert!(trust.is_live(), "{trust:?}");
    let bundle = fs::read_to_string(certs_d.join("_default/node-cert-agent-ca.crt")).unwrap();
    assert!(bundle.contains("BEGIN CERTIFICATE"));
    let hosts = fs::read_to_string(certs_d.join("_default/hosts.toml")).unwrap();
    assert!(
        hosts.contains("ca = \"/etc/containerd/certs.d/_default/node-cert-agent-ca.crt\""),
        "{hosts}"
    );
    // A second CA: still live. Republishes and a new agent: nothing.
    node.put("ca2.crt", &pem("B"));
    let out = rt().block_on(r.reconcile()).unwrap();
    assert_eq!(out.restarts_avoided, vec![UNIT]);
    for _ in 0..3 {
        let out = rt()
            .block_on(node.reconciler(fake.clone()).reconcile())
            .unwrap();
        assert!(out.restarts_avoided.is_empty() && out.restarted.is_empty());
    }
    assert!(fake.restarts().is_empty());
    // A removal: containerd may hold B in its cached roots.
    fs::remove_file(node.secret.path().join("ca2.crt")).unwrap();
    let out = rt().block_on(r.reconcile()).unwrap();
    assert_eq!(out.restarted, vec![UNIT]);
    assert!(
        out.restart_reasons[0].1.contains("1 removed CA may be"),
        "{:?}",
        out.restart_reasons
    );
    let bundle2 = fs::read_to_string(certs_d.join("_default/node-cert-agent-ca.crt")).unwrap();
    assert_eq!(bundle2.matches("BEGIN CERTIFICATE").count(), 1);
    // Everything removed: the agent's files go, and one more restart.
    fs::remove_file(node.secret.path().join("ca1.crt")).unwrap();
    let out = rt().block_on(r.reconcile()).unwrap();
    assert_eq!(out.restarted, vec![UNIT]);
    assert!(!certs_d.join("_default").exists());
    assert_eq!(fake.restarts().len(), 2);
}

#[test]
fn a_deferred_removal_restart_is_kept_when_the_history_is_lost() {
    let node = Node::new();
    with_certs_d(&node);
    let fake = Arc::new(RecordingSystemd::emulating_debian(node.root.path()));
    fake.set_active_since(UNIT, now_us());
    let mut r = node.reconciler(fake.clone());
    node.put("ca1.crt", &pem("A"));
    rt().block_on(r.reconcile()).unwrap();
    assert!(fake.restarts().is_empty(), "added live");
    // The removal's restart waits for the node's share of the spread.
    r.settings.restart_delay = std::time::Duration::from_millis(800);
    fs::remove_file(node.secret.path().join("ca1.crt")).unwrap();
    let out = rt().block_on(r.reconcile()).unwrap();
    let wake = out.wake_at_us.expect("deferred");
    // The restart history is lost (unreadable, or an older agent's).
    fs::remove_file(crate::trust::pacing::history_path(&r.settings().state_path)).unwrap();
    sleep_until_us(wake);
    let out = rt().block_on(r.reconcile()).unwrap();
    assert_eq!(out.restarted, vec![UNIT], "containerd may still hold A");
    assert!(out.restarts_avoided.is_empty());
}

#[test]
fn a_ca_taken_live_is_cached_after_someone_elses_restart_so_its_removal_restarts() {
    let node = Node::new();
    with_certs_d(&node);
    let fake = Arc::new(RecordingSystemd::emulating_debian(node.root.path()));
    // containerd (re)started with this config.
    fake.set_active_since(UNIT, now_us());
    let r = node.reconciler(fake.clone());
    node.put("ca1.crt", &pem("A"));
    node.put("ca2.crt", &pem("B"));
    rt().block_on(r.reconcile()).unwrap();
    assert!(fake.restarts().is_empty());
    // An operator restarts containerd: the new process loads A and B.
    assert!(fake.external_start(UNIT).is_done());
    fs::remove_file(node.secret.path().join("ca2.crt")).unwrap();
    let out = rt().block_on(r.reconcile()).unwrap();
    assert_eq!(out.restarted, vec![UNIT]);
}

#[test]
fn a_registry_directory_of_another_owner_brings_back_the_restart() {
    let node = Node::new();
    let certs_d = with_certs_d(&node);
    let fake = Arc::new(RecordingSystemd::emulating_debian(node.root.path()));
    // containerd (re)started with this config.
    fake.set_active_since(UNIT, now_us());
    let r = node.reconciler(fake.clone());
    node.put("ca1.crt", &pem("A"));
    rt().block_on(r.reconcile()).unwrap();
    assert!(fake.restarts().is_empty());
    // A took effect live; a registry gets its own directory, which
    // _default does not reach: containerd needs A in its system roots.
    fs::create_dir_all(certs_d.join("registry.test_5000_")).unwrap();
    let out = rt().block_on(r.reconcile()).unwrap();
    assert_eq!(out.restarted, vec![UNIT]);
    let trust = out.pull_trust.unwrap();
    assert_eq!(
        trust.path.as_deref(),
        Some(std::path::Path::new(
            "/etc/containerd/certs.d/registry.test_5000_"
        ))
    );
    // Then each added CA restarts, once.
    node.put("ca2.crt", &pem("B"));
    let out = rt().block_on(r.reconcile()).unwrap();
    assert_eq!(out.restarted, vec![UNIT]);
    assert!(out.restarts_avoided.is_empty());
    assert_eq!(fake.restarts().len(), 2);
}

#[test]
fn an_operators_default_hosts_file_is_untouched_and_changes_restart() {
    let node = Node::new();
    let certs_d = with_certs_d(&node);
    fs::create_dir_all(certs_d.join("_default")).unwrap();
    let theirs = b"server = \"https://mirror.example\"\n";
    fs::write(certs_d.join("_default/hosts.toml"), theirs).unwrap();
    let fake = Arc::new(RecordingSystemd::emulating_debian(node.root.path()));
    // containerd (re)started with this config.
    fake.set_active_since(UNIT, now_us());
    let r = node.reconciler(fake.clone());
    node.put("ca1.crt", &pem("A"));
    let out = rt().block_on(r.reconcile()).unwrap();
    assert_eq!(out.restarted, vec![UNIT]);
    assert_eq!(
        fs::read(certs_d.join("_default/hosts.toml")).unwrap(),
        theirs
    );
    assert_eq!(
        fs::read_dir(certs_d.join("_default")).unwrap().count(),
        1,
        "nothing of the agent's beside it"
    );
    let trust = out.pull_trust.unwrap();
    assert_eq!(
        trust.path.as_deref(),
        Some(std::path::Path::new(
            "/etc/containerd/certs.d/_default/hosts.toml"
        ))
    );
}

#[test]
fn a_config_changed_since_containerd_started_is_not_trusted_to_be_live() {
    let node = Node::new();
    let fake = Arc::new(RecordingSystemd::emulating_debian(node.root.path()));
    fake.set_active_since(UNIT, 1);
    with_certs_d(&node);
    node.put("ca1.crt", &pem("A"));
    let out = rt()
        .block_on(node.reconciler(fake.clone()).reconcile())
        .unwrap();
    assert_eq!(out.restarted, vec![UNIT]);
    assert!(
        out.restart_reasons[0]
            .1
            .contains("config changed since it started"),
        "{:?}",
        out.restart_reasons
    );
}

/// The fake's containerd with start limit `burst` in `interval_ms`.
fn limit(fake: &RecordingSystemd, burst: u32, interval_ms: u64) -> StartLimit {
    let limit = StartLimit {
        burst,
        interval_us: interval_ms * 1000,
    };
    fake.with_unit(UNIT, |u| u.start_limit = limit);
    limit
}

fn sleep_until_us(at: u64) {
    std::thread::sleep(std::time::Duration::from_micros(
        at.saturating_sub(now_us()),
    ));
}

#[test]
fn changes_faster_than_the_start_limit_share_one_deferred_restart() {
    let node = Node::new();
    let fake = Arc::new(RecordingSystemd::emulating_debian(node.root.path()));
    // One agent start per 1.5 s window (burst 2, one left to others).
    limit(&fake, 2, 1500);
    let r = node.reconciler(fake.clone());
    node.put("ca1.crt", &pem("A"));
    let out = rt().block_on(r.reconcile()).unwrap();
    assert_eq!(out.restarted, vec![UNIT]);
    let mut wake = None;
    for (key, cn) in [("ca2.crt", "B"), ("ca3.crt", "C")] {
        node.put(key, &pem(cn));
        let out = rt().block_on(r.reconcile()).unwrap();
        assert!(out.refreshed && out.restarted.is_empty(), "{out:?}");
        assert_eq!(out.deferred.len(), 1);
        assert_eq!(out.deferred[0].unit, UNIT);
        let at = out.wake_at_us.unwrap();
        assert!(at > now_us() && at <= now_us() + 2_100_000, "{at}");
        wake.get_or_insert(at);
    }
    assert_eq!(fake.restarts().len(), 1, "the changes wait together");
    let st = state::load(&r.settings().state_path).unwrap();
    assert_eq!(st.pending, Pending::Restart([UNIT.to_string()].into()));

    // A restarted agent finds the same wait in the restart history.
    let again = node.reconciler(fake.clone());
    let out = rt().block_on(again.reconcile()).unwrap();
    assert_eq!(out.wake_at_us, wake, "{out:?}");
    let report = crate::trust::pacing::load(&crate::trust::pacing::history_path(
        &r.settings().state_path,
    ))
    .0;
    assert_eq!(report.units[UNIT].not_before_us, wake);

    sleep_until_us(wake.unwrap());
    let out = rt().block_on(again.reconcile()).unwrap();
    assert_eq!(out.restarted, vec![UNIT]);
    assert!(out.deferred.is_empty() && out.wake_at_us.is_none());
    assert_eq!(fake.restarts().len(), 2, "one restart for both changes");
    assert!(
        fake.unit(UNIT).active_state == "active",
        "never at the limit"
    );
    let st = state::load(&r.settings().state_path).unwrap();
    assert_eq!(st.pending, Pending::Nothing);
    assert_eq!(st.bundle_sha256, r.store().bundle_digest().unwrap());
}

#[test]
fn a_restart_the_agent_drove_into_start_limit_hit_is_recovered_at_once_by_a_reset() {
    let node = Node::new();
    let fake = Arc::new(RecordingSystemd::emulating_debian(node.root.path()));
    limit(&fake, 3, 1000);
    // Others used up the window (the agent sees only the latest start).
    for _ in 0..3 {
        assert!(fake.external_start(UNIT).is_done());
    }
    node.put("ca1.crt", &pem("A"));
    let r = node.reconciler(fake.clone());
    let err = rt().block_on(r.reconcile()).unwrap_err();
    let ReconcileError::StartLimitHit { recover_at_us, .. } = err else {
        panic!("{err}");
    };
    assert!(recovering(&r), "the agent brings it back");
    assert!(fake.unit(UNIT).active_state == "failed");
    assert_eq!(fake.restarts(), vec![UNIT]);
    // ResetFailedUnit clears systemd's counter: no window to wait out.
    assert!(recover_at_us <= now_us(), "{recover_at_us}");
    assert_eq!(err.retry_at_us(), Some(recover_at_us));
    let out = rt().block_on(r.reconcile()).unwrap();
    assert_eq!(out.restarted, vec![UNIT]);
    assert_eq!(out.recovered, vec![UNIT]);
    assert_eq!(
        (fake.resets(), fake.starts()),
        (vec![UNIT.to_string()], vec![UNIT.to_string()])
    );
    assert!(fake.unit(UNIT).active_state == "active");
    assert_eq!(
        state::load(&r.settings().state_path).unwrap().pending,
        Pending::Nothing
    );
}

/// Whether the restart history says the agent brings containerd back
/// from a start-limit-hit (what `status` shows as `recovering`).
fn recovering(r: &Reconciler<Arc<RecordingSystemd>>) -> bool {
    let h = crate::trust::pacing::load(&crate::trust::pacing::history_path(
        &r.settings().state_path,
    ))
    .0;
    let u = &h.units[UNIT];
    u.responsible && u.limit_hit_us.is_some()
}

#[test]
fn a_unit_failed_before_the_restart_is_reported_failed_and_never_started() {
    let node = Node::new();
    let fake = Arc::new(RecordingSystemd::emulating_debian(node.root.path()));
    fake.with_unit(UNIT, |u| {
        u.active_state = "failed".into();
        u.sub_state = "failed".into();
        u.result = "start-limit-hit".into();
    });
    node.put("ca1.crt", &pem("A"));
    let r = node.reconciler(fake.clone());
    for _ in 0..2 {
        let err = rt().block_on(r.reconcile()).unwrap_err();
        assert!(matches!(err, ReconcileError::UnitFailed { .. }), "{err}");
        let text = err.to_string();
        assert!(
            text.contains("Result=start-limit-hit")
                && text.contains("systemctl reset-failed containerd.service"),
            "{text}"
        );
    }
    assert!(fake.restarts().is_empty() && fake.starts().is_empty() && fake.resets().is_empty());
    // The operator brings it back: it reads the new bundle; no restart.
    fake.set_active_since(UNIT, now_us());
    let out = rt().block_on(r.reconcile()).unwrap();
    assert!(out.restarted.is_empty());
    assert!(fake.restarts().is_empty());
    assert_eq!(
        state::load(&r.settings().state_path).unwrap().pending,
        Pending::Nothing
    );
}

#[test]
fn a_removal_runs_the_incremental_tool_a_full_rebuild_would_not_tell_the_hooks_either() {
    let node = Node::new();
    let fake = Arc::new(RecordingSystemd::emulating_debian(node.root.path()));
    let r = node.reconciler(fake.clone());
    node.put("ca1.crt", &pem("A"));
    rt().block_on(r.reconcile()).unwrap();
    fs::remove_file(node.secret.path().join("ca1.crt")).unwrap();
    rt().block_on(r.reconcile()).unwrap();
    let tool = vec!["/usr/sbin/update-ca-certificates".to_string()];
    assert_eq!(fake.commands(), vec![tool.clone(), tool]);
}

#[test]
fn a_bundle_without_the_agents_ca_after_the_refresh_is_an_error_and_restarts_nothing() {
    let node = Node::new();
    let fake = Arc::new(RecordingSystemd::default());
    // A refresh that leaves the agent's anchor out (a blocklist entry).
    let root = node.root.path().to_path_buf();
    *fake.on_command.lock().unwrap() = Some(Box::new(move || {
        fs::write(root.join("etc/ssl/certs/ca-certificates.crt"), "distro\n").unwrap();
    }));
    let r = node.reconciler(fake.clone());
    node.put("ca1.crt", &pem("A"));
    let err = rt().block_on(r.reconcile()).unwrap_err();
    assert!(
        matches!(err, ReconcileError::BundleIncomplete { .. }),
        "{err}"
    );
    assert!(
        err.to_string().contains("even after a full rebuild"),
        "{err}"
    );
    let argv: Vec<Vec<String>> = fake.commands();
    assert_eq!(argv.len(), 2, "the tool, then its full rebuild: {argv:?}");
    assert_eq!(argv[1].last().map(String::as_str), Some("--fresh"));
    assert!(fake.restarts().is_empty(), "nothing restarted");
    let st = state::load(&r.settings().state_path).unwrap();
    assert_eq!(st.pending, Pending::Refresh, "retried by the next pass");
    // The next refresh gets it right: the pass finishes with one restart.
    let root = node.root.path().to_path_buf();
    *fake.on_command.lock().unwrap() = Some(Box::new(move || {
        crate::node::systemd::fake::rebuild_debian_bundle_for_tests(&root)
    }));
    let out = rt().block_on(r.reconcile()).unwrap();
    assert!(out.refreshed);
    assert_eq!(fake.restarts(), vec![UNIT]);
}

#[test]
fn drift_is_repaired_by_the_next_pass_with_no_restart() {
    let node = Node::new();
    let fake = Arc::new(RecordingSystemd::emulating_debian(node.root.path()));
    let r = node.reconciler(fake.clone());
    node.put("ca1.crt", &pem("A"));
    rt().block_on(r.reconcile()).unwrap();
    assert_eq!(fake.restarts().len(), 1);
    let with_a = node.bundle();
    // A bundle rebuilt without the agent's anchors (a `--fresh` run of
    // someone else's that did not see them).
    fs::write(
        node.root.path().join("etc/ssl/certs/ca-certificates.crt"),
        "distro\n",
    )
    .unwrap();
    let out = rt().block_on(r.reconcile()).unwrap();
    assert!(out.refreshed, "refreshed again");
    assert_eq!(node.bundle(), with_a);
    assert_eq!(
        fake.restarts().len(),
        1,
        "the units run with that bundle already"
    );
    // An anchor deleted by configuration management.
    let anchors = node
        .root
        .path()
        .join("usr/local/share/ca-certificates/node-cert-agent");
    for e in fs::read_dir(&anchors).unwrap() {
        fs::remove_file(e.unwrap().path()).unwrap();
    }
    let out = rt().block_on(r.reconcile()).unwrap();
    assert_eq!(out.installed.len(), 1, "written again");
    assert_eq!(node.bundle(), with_a);
    // Nothing left to repair: a no-op.
    let out = rt().block_on(r.reconcile()).unwrap();
    assert!(!out.refreshed && out.installed.is_empty());
}

#[test]
fn changes_faster_than_the_spread_never_push_the_restart_out() {
    let node = Node::new();
    let fake = Arc::new(RecordingSystemd::emulating_debian(node.root.path()));
    let mut r = node.reconciler(fake.clone());
    r.settings.restart_delay = std::time::Duration::from_millis(1500);
    node.put("ca1.crt", &pem("A"));
    let out = rt().block_on(r.reconcile()).unwrap();
    let first = out.wake_at_us.expect("deferred by the spread");
    for (i, cn) in ["B", "C", "D"].iter().enumerate() {
        std::thread::sleep(std::time::Duration::from_millis(300));
        node.put(&format!("ca{}.crt", i + 2), &pem(cn));
        let out = rt().block_on(r.reconcile()).unwrap();
        assert!(out.restarted.is_empty());
        assert_eq!(out.wake_at_us, Some(first), "counted from the first change");
    }
    assert!(fake.restarts().is_empty());
    sleep_until_us(first);
    let out = rt().block_on(r.reconcile()).unwrap();
    assert_eq!(out.restarted, vec![UNIT], "one restart for all four");
    // The next change starts a new spread.
    node.put("ca9.crt", &pem("E"));
    let out = rt().block_on(r.reconcile()).unwrap();
    assert!(out.wake_at_us.unwrap() > first + 1_000_000);
}

#[test]
fn a_restart_unit_that_does_not_exist_is_an_error_naming_the_likely_one() {
    let node = Node::new();
    let fake = Arc::new(RecordingSystemd::emulating_debian(node.root.path()));
    let mut r = node.reconciler(fake.clone());
    r.settings.restart_units = vec!["crio.service".into()];
    fake.with_unit("crio.service", |u| {
        *u = FakeUnit::stopped();
        u.load_state = "not-found".into();
    });
    node.put("ca1.crt", &pem("A"));
    for _ in 0..2 {
        let err = rt().block_on(r.reconcile()).unwrap_err();
        assert!(matches!(err, ReconcileError::UnitMissing { .. }), "{err}");
        assert_eq!(
            err.to_string(),
            "crio.service is not-found on this node, so restarting it cannot make the new CAs effective; set restart-units to the unit that runs the container runtime here (containerd.service on most nodes; k3s.service or k3s-agent.service on k3s, rke2-server.service or rke2-agent.service on RKE2, crio.service on CRI-O nodes)"
        );
    }
    let st = state::load(&r.settings().state_path).unwrap();
    assert_ne!(st.pending, Pending::Nothing, "not reported as done");
    assert!(fake.restarts().is_empty());
    // A masked unit too.
    fake.with_unit("crio.service", |u| u.load_state = "masked".into());
    let err = rt().block_on(r.reconcile()).unwrap_err();
    assert!(
        err.to_string().starts_with("crio.service is masked"),
        "{err}"
    );
}

#[test]
fn a_stopped_unit_stays_stopped_and_is_not_reported_restarted() {
    let node = Node::new();
    let fake = Arc::new(RecordingSystemd::emulating_debian(node.root.path()));
    fake.with_unit(UNIT, |u| *u = FakeUnit::stopped());
    node.put("ca1.crt", &pem("A"));
    let r = node.reconciler(fake.clone());
    let out = rt().block_on(r.reconcile()).unwrap();
    assert!(out.restarted.is_empty());
    assert_eq!(out.not_running, vec![UNIT]);
    assert!(fake.restarts().is_empty());
    assert_eq!(fake.unit(UNIT).active_state, "inactive");
    let st = state::load(&r.settings().state_path).unwrap();
    assert_eq!(st.pending, Pending::Nothing);
}

#[test]
fn a_restart_job_done_that_leaves_the_unit_down_is_not_a_restart() {
    let node = Node::new();
    let fake = Arc::new(RecordingSystemd::emulating_debian(node.root.path()));
    // The job ends `done`, but the unit is where it was, not restarted.
    *fake.restart_result.lock().unwrap() = Some("done".into());
    node.put("ca1.crt", &pem("A"));
    let r = node.reconciler(fake.clone());
    let err = rt().block_on(r.reconcile()).unwrap_err();
    assert!(
        matches!(err, ReconcileError::NotActiveAfterRestart { .. }),
        "{err}"
    );
    assert!(err.to_string().contains("did not start again"), "{err}");
    let st = state::load(&r.settings().state_path).unwrap();
    assert_ne!(st.pending, Pending::Nothing, "the restart is still to do");
}

#[test]
fn interrupted_pass_is_finished_after_a_crash() {
    let node = Node::new();
    let fake = Arc::new(RecordingSystemd::emulating_debian(node.root.path()));
    node.put("ca1.crt", &pem("A"));
    let r = node.reconciler(fake.clone());
    // A crash after writing anchors but before the refresh: state says pending.
    let state_path = r.settings().state_path.clone();
    fs::create_dir_all(state_path.parent().unwrap()).unwrap();
    let mut st = state::load(&state_path).unwrap();
    st.pending = Pending::Refresh;
    st.bundle_sha256 = r.store().bundle_digest().unwrap();
    state::save(&state_path, &st).unwrap();
    let out = rt().block_on(r.reconcile()).unwrap();
    assert!(out.refreshed);
    assert_eq!(fake.restarts().len(), 1);
}
