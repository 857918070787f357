//! The tests of `manager`.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use super::*;
use crate::kubelet::fake_api::{
    documentation_example, FakeApi, TestNode, EXAMPLE_GROUP_LABEL, NODE,
};
use crate::kubelet::state as kubelet_state;
use crate::node::systemd::fake::RecordingSystemd;

/// `node`'s manager with `kubelet.revocation-spread-seconds: spread`: a
/// new manager is also the agent after a restart.
fn manager_with_spread(node: &TestNode, spread: Duration) -> KubeletManager<Arc<RecordingSystemd>> {
    let job = node.manager().job();
    let settings = KubeletSettings {
        revocation_spread: spread,
        ..job.settings.clone()
    };
    KubeletManager::new(
        node.host(),
        node.systemd.clone(),
        KubeletJob { settings, ..job },
    )
}

/// A RenewRevocation object in kube-system with one entry.
fn renew_revocation(name: &str, entry: serde_json::Value) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "certificates.microsoft.com/v1",
        "kind": "RenewRevocation",
        "metadata": {"name": name, "namespace": "kube-system", "uid": format!("uid-{name}"), "resourceVersion": "9"},
        "spec": {"revocations": [entry]},
    })
}

/// The backdate case: a revocation of everything issued before the
/// moment it was written (`notBefore` = its creation time), against a
/// signer that backdates by 5 minutes. One renewal; the new certificate
/// is not revoked (it was signed after the cutoff, though its notBefore
/// is 5 minutes before it); no second renewal, and none after a restart
/// of the agent.
#[tokio::test]
async fn a_revocation_of_everything_before_its_creation_renews_once_and_not_after_a_restart() {
    let api = FakeApi::start(3600);
    let now = now_unix();
    let node = TestNode::new(&api, now - 600, now + 3000);
    let created = now_unix();
    api.set_revocations(vec![renew_revocation(
        "before-now",
        serde_json::json!({"kind": "Group", "group": "system:nodes", "notBefore": rfc3339(created)}),
    )]);
    let label = "RenewRevocation before-now: Group system:nodes";
    let manager = manager_with_spread(&node, Duration::ZERO);

    let first = manager.pass(false).await.unwrap();
    assert!(first.failures.is_empty(), "{:?}", first.failures);
    assert_eq!(
        first.reasons,
        [(CertKind::Client, RenewReason::Revoked(label.into()))]
    );
    assert!(
        first.unfixable_found.is_empty() && first.unfixable_revocations.is_empty(),
        "the new certificate is not revoked: {:?}",
        first.unfixable_revocations
    );
    let issued = &api.issued()[0];
    assert_eq!(issued.not_before, issued.at - 300, "the signer backdates");
    assert!(issued.not_before < created, "{issued:?} vs {created}");

    let second = manager.pass(false).await.unwrap();
    assert!(second.renewed.is_empty(), "{:?}", second.reasons);
    assert!(second.unfixable_revocations.is_empty());

    let restarted = manager_with_spread(&node, Duration::ZERO);
    let third = restarted.pass(false).await.unwrap();
    assert!(third.failures.is_empty(), "{:?}", third.failures);
    assert!(third.renewed.is_empty(), "{:?}", third.reasons);
    assert_eq!(api.issued().len(), 1);
    // kubelet's kubeconfig names the renewed file and the old
    // certificate outlives client-go's re-read: no restart.
    assert!(node.systemd.restarts().is_empty());
}

/// The documentation's example can never be satisfied (its Group entry
/// has no notBefore): what the first agent learned is kept in the state
/// directory, so the agent after a restart (a rollout of the DaemonSet)
/// neither renews for it again nor announces it again, and still says
/// it stands.
#[tokio::test]
async fn an_unsatisfiable_revocation_learned_before_a_restart_of_the_agent_renews_nothing_after_it()
{
    let api = FakeApi::start(3600);
    api.set_revocations(vec![documentation_example()]);
    let now = now_unix();
    let node = TestNode::new(&api, now - 300, now + 3600);

    let first = manager_with_spread(&node, Duration::ZERO)
        .pass(false)
        .await
        .unwrap();
    assert_eq!(first.renewed, [CertKind::Client]);
    assert_eq!(first.unfixable_found, [EXAMPLE_GROUP_LABEL]);
    let records = kubelet_state::load_revocations(
        &node.state_dir.join(kubelet_state::KUBELET_REVOCATIONS_FILE),
    )
    .unwrap();
    assert_eq!(records.version, kubelet_state::REVOCATIONS_VERSION);
    assert_eq!(records.unsatisfiable["client"].len(), 1);

    let restarted = manager_with_spread(&node, Duration::ZERO);
    let after = restarted.pass(false).await.unwrap();
    assert!(after.failures.is_empty(), "{:?}", after.failures);
    assert!(after.renewed.is_empty(), "{:?}", after.reasons);
    assert!(
        after.unfixable_found.is_empty(),
        "announced before the restart"
    );
    assert_eq!(after.unfixable_revocations, [EXAMPLE_GROUP_LABEL]);
    assert_eq!(api.issued().len(), 1);
}

/// A fleet-wide revocation wakes every node at once: this node renews
/// at its share of `kubelet.revocation-spread-seconds` after it saw the
/// revocation, not at once, and a restart of the agent in between does
/// not push that time back.
#[tokio::test]
async fn a_revoked_certificate_waits_for_its_nodes_share_of_the_spread_across_a_restart() {
    let spread = Duration::from_secs(3600);
    let offset = renewal::revocation_offset(NODE, spread);
    assert!(offset > 0, "{NODE} renews at the start of the spread");
    let api = FakeApi::start(3600);
    let now = now_unix();
    let node = TestNode::new(&api, now - 600, now + 86_400);
    api.set_revocations(vec![renew_revocation(
        "before-now",
        serde_json::json!({"kind": "Group", "group": "system:nodes", "notBefore": rfc3339(now)}),
    )]);

    let before = now_unix();
    let first = manager_with_spread(&node, spread)
        .pass(false)
        .await
        .unwrap();
    let after = now_unix();
    assert!(first.failures.is_empty(), "{:?}", first.failures);
    assert!(first.renewed.is_empty(), "not at once: {:?}", first.reasons);
    let at = first.next_deadline.unwrap();
    assert!(
        (before + offset..=after + offset).contains(&at),
        "renews at {at}, {offset} s after it saw the revocation at {before}..{after}"
    );

    // Restarted a moment later: a new sighting would move the time.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let restarted = manager_with_spread(&node, spread);
    let again = restarted.pass(false).await.unwrap();
    assert!(again.renewed.is_empty(), "{:?}", again.reasons);
    assert_eq!(
        again.next_deadline,
        Some(at),
        "the same time after a restart"
    );
    assert!(api.issued().is_empty());
    // `renew --force` still renews at once.
    let forced = restarted.pass(true).await.unwrap();
    assert_eq!(forced.renewed, [CertKind::Client]);
}

#[test]
fn identity_errors_read_the_same_as_kubelet_errors() {
    let no_bootstrap = || IdentityError::NoBootstrap {
        path: "/var/lib/kubelet/bootstrap-kubeconfig".into(),
        pki: "/var/lib/kubelet/pki".into(),
        reason: "kubeconfig /var/lib/kubelet/bootstrap-kubeconfig does not exist".into(),
    };
    let client = || {
        IdentityError::Client(ClientError::Build {
            server: "https://10.0.0.1:6443".into(),
            reason: "server URL is invalid".into(),
        })
    };
    for e in [no_bootstrap(), client()] {
        let text = e.to_string();
        assert_eq!(KubeletError::from(e).to_string(), text);
    }
    assert!(matches!(
        KubeletError::from(no_bootstrap()),
        KubeletError::NoBootstrap { .. }
    ));
    assert!(matches!(
        KubeletError::from(client()),
        KubeletError::Client { .. }
    ));
}

/// The documentation's example revokes every node certificate (its
/// Group entry has no notBefore), and the signer's certificates are past
/// their deadline the moment they are issued (5 minutes backdated, one
/// minute to live). The first pass renews for the revocation and finds
/// it unsatisfiable; the second still renews, at the deadline, instead
/// of leaving the certificate to expire (and the loop to spin on its
/// past deadline).
#[tokio::test]
async fn a_certificate_past_its_deadline_is_renewed_though_it_matches_an_unsatisfiable_revocation()
{
    let api = FakeApi::start(60);
    api.set_revocations(vec![documentation_example()]);
    let now = now_unix();
    let node = TestNode::new(&api, now - 300, now + 3600);
    let manager = manager_with_spread(&node, Duration::ZERO);

    let first = manager.pass(false).await.unwrap();
    assert!(first.failures.is_empty(), "{:?}", first.failures);
    assert_eq!(first.revocations, SourceState::Synced);
    assert_eq!(
        first.reasons,
        [(
            CertKind::Client,
            RenewReason::Revoked(EXAMPLE_GROUP_LABEL.into())
        )]
    );
    assert_eq!(first.unfixable_found, [EXAMPLE_GROUP_LABEL]);
    assert_eq!(first.unfixable_revocations, [EXAMPLE_GROUP_LABEL]);

    let second = manager.pass(false).await.unwrap();
    assert!(second.failures.is_empty(), "{:?}", second.failures);
    assert_eq!(
        second.renewed,
        [CertKind::Client],
        "renewed at its deadline"
    );
    assert!(
        matches!(
            second.reasons[..],
            [(CertKind::Client, RenewReason::Due { .. })]
        ),
        "{:?}",
        second.reasons
    );
    assert!(
        second.unfixable_found.is_empty(),
        "announced once, by the first pass"
    );
    assert_eq!(
        second.unfixable_revocations,
        [EXAMPLE_GROUP_LABEL],
        "still reported while it stands"
    );
    assert_eq!(api.issued().len(), 2);
    // The first renewal left a certificate of an hour: kubelet re-reads
    // it; the second came at the end of the short one: restarted.
    assert_eq!(node.systemd.restarts().len(), 1);
}

#[tokio::test]
async fn an_unsatisfiable_revocation_waits_for_the_normal_deadline_and_is_forgotten_when_deleted() {
    let api = FakeApi::start(3600);
    api.set_revocations(vec![documentation_example()]);
    let now = now_unix();
    let node = TestNode::new(&api, now - 300, now + 3600);
    let manager = manager_with_spread(&node, Duration::ZERO);

    let first = manager.pass(false).await.unwrap();
    assert_eq!(first.renewed, [CertKind::Client]);
    assert_eq!(first.unfixable_found, [EXAMPLE_GROUP_LABEL]);

    let second = manager.pass(false).await.unwrap();
    assert!(second.renewed.is_empty(), "{:?}", second.reasons);
    let issued = &api.issued()[0];
    let deadline = renewal::deadline(
        issued.not_before,
        issued.not_after,
        renewal::renewal_fraction(crate::kubelet::fake_api::NODE),
    );
    assert_eq!(second.next_deadline, Some(deadline));
    assert!(deadline > now_unix());
    assert_eq!(second.unfixable_revocations, [EXAMPLE_GROUP_LABEL]);
    assert!(second.unfixable_found.is_empty());

    // Deleted: nothing stands; given back unchanged, it is judged afresh
    // (one renewal, found unsatisfiable again).
    api.set_revocations(vec![]);
    let third = manager.pass(false).await.unwrap();
    assert!(third.renewed.is_empty() && third.unfixable_revocations.is_empty());
    api.set_revocations(vec![documentation_example()]);
    let fourth = manager.pass(false).await.unwrap();
    assert_eq!(fourth.renewed, [CertKind::Client]);
    assert_eq!(fourth.unfixable_found, [EXAMPLE_GROUP_LABEL]);
    assert_eq!(api.issued().len(), 2);
}

/// kubelet's own rotation as its unit runs it: a flag in an
/// environment file counts, and a flag wins over the config file.
#[tokio::test]
async fn a_certificate_kubelet_rotates_by_its_command_line_is_left_to_kubelet() {
    let api = FakeApi::start(3600);
    let now = now_unix();
    // Past its deadline: due.
    let node = TestNode::new(&api, now - 3000, now + 300);
    std::fs::create_dir_all(node.host_path(Path::new("/etc/default"))).unwrap();
    std::fs::write(
        node.host_path(Path::new("/etc/default/kubelet")),
        "KUBELET_EXTRA_ARGS=\"--v=2 --rotate-certificates\"\n",
    )
    .unwrap();
    node.systemd.with_unit("kubelet.service", |u| {
        u.exec = UnitExec {
            argv: ["/usr/bin/kubelet", "$KUBELET_EXTRA_ARGS"]
                .map(String::from)
                .to_vec(),
            environment: Vec::new(),
            environment_files: vec![("/etc/default/kubelet".into(), true)],
        };
    });
    let manager = node.manager();
    let out = manager.pass(false).await.unwrap();
    assert!(out.renewed.is_empty(), "{:?}", out.reasons);
    assert!(out.monitoring_only);
    assert!(out.client.is_some_and(|c| c.kubelet_rotates));

    // `--rotate-certificates=false` wins over the config file's true.
    let config = node.host_path(&node.settings().kubelet_config);
    std::fs::create_dir_all(config.parent().unwrap()).unwrap();
    std::fs::write(&config, "rotateCertificates: true\n").unwrap();
    std::fs::write(
        node.host_path(Path::new("/etc/default/kubelet")),
        "KUBELET_EXTRA_ARGS=--rotate-certificates=false\n",
    )
    .unwrap();
    let out = manager.pass(false).await.unwrap();
    assert_eq!(out.renewed, [CertKind::Client]);
}

/// The restart rule in a pass: a renewal kubelet re-reads by itself
/// restarts nothing; one at the end of the old certificate's life
/// restarts kubelet once (restart_rule.rs's tests cover the others).
#[tokio::test]
async fn kubelet_is_restarted_only_when_it_cannot_reread_the_new_client_certificate() {
    let api = FakeApi::start(3600);
    let now = now_unix();
    let node = TestNode::new(&api, now - 60, now + 3600);
    let manager = node.manager();
    let out = manager.pass(true).await.unwrap();
    assert_eq!(out.renewed, [CertKind::Client]);
    assert!(out.restarted.is_empty());
    assert!(node.systemd.restarts().is_empty());

    // An old certificate that ends before the next re-read.
    node.install_client(&api, now - 3000, now + 120);
    let out = manager.pass(true).await.unwrap();
    assert_eq!(out.restarted, ["kubelet.service"]);
    assert_eq!(node.systemd.restarts().len(), 1);
}

/// Every name the next install could take (`kubelet-client-<now..>.pem`)
/// is taken by a directory: the install fails whatever the user.
fn block_installs(node: &TestNode) -> Vec<PathBuf> {
    let pki = node.host_path(&node.settings().pki_dir);
    let now = now_unix();
    (now - 5..now + 200)
        .map(|t| {
            let stamp: String = rfc3339(t)
                .chars()
                .take(19)
                .map(|c| if c == 'T' || c == ':' { '-' } else { c })
                .collect();
            let dir = pki.join(format!("kubelet-client-{stamp}.pem"));
            std::fs::create_dir(&dir).unwrap();
            dir
        })
        .collect()
}

#[tokio::test]
async fn a_failed_install_never_restarts_kubelet() {
    let api = FakeApi::start(3600);
    let now = now_unix();
    // Past its deadline (at most 80 % of its life), so every pass
    // renews, and so near its end that the renewal restarts kubelet
    // (before client-go's next re-read of the file).
    let node = TestNode::new(&api, now - 3000, now + 300);
    let manager = node.manager();
    let blocked = block_installs(&node);

    for attempt in 1..=2 {
        let outcome = manager.pass(false).await.unwrap();
        assert!(
            matches!(outcome.failures[..], [KubeletError::Store(_)]),
            "attempt {attempt}: {:?}",
            outcome.failures
        );
        assert!(outcome.renewed.is_empty());
        assert!(
            node.systemd.restarts().is_empty(),
            "attempt {attempt}: kubelet restarted for a certificate that was never installed"
        );
        assert!(
            kubelet_state::load(&node.state_file())
                .unwrap()
                .restart_pending
                .is_empty(),
            "attempt {attempt}: a restart is owed for nothing"
        );
    }

    for dir in blocked {
        std::fs::remove_dir(dir).unwrap();
    }
    let outcome = manager.pass(false).await.unwrap();
    assert!(outcome.failures.is_empty(), "{:?}", outcome.failures);
    assert_eq!(outcome.renewed, [CertKind::Client]);
    assert_eq!(node.systemd.restarts(), ["kubelet.service"]);
    let again = manager.pass(false).await.unwrap();
    assert!(again.restarted.is_empty() && again.renewed.is_empty());
    assert_eq!(node.systemd.restarts().len(), 1);
}
