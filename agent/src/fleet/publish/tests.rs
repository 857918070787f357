//! The tests of `publish`.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use std::collections::BTreeSet;

use super::*;
use crate::trust::validate::Finding;
use crate::x509::cert::Fingerprint;

const NOW: i64 = 1_800_000_000;

fn outcome(fps: &[u8]) -> Outcome {
    Outcome {
        trusted: fps
            .iter()
            .map(|b| Fingerprint::of_der(&[*b]))
            .collect::<BTreeSet<_>>(),
        secret_content: Some([("ca1.crt".to_string(), b"pem".to_vec())].into()),
        ..Outcome::default()
    }
}

fn kubelet_ok() -> PassOutcome {
    PassOutcome {
        client: Some(ClientTimes {
            not_before: NOW - 3600,
            not_after: NOW + 86_400,
            deadline: NOW + 3600,
            kubelet_rotates: false,
        }),
        ..PassOutcome::default()
    }
}

fn state(trust: &Outcome, err: Option<&ReconcileError>, last: &Published) -> Desired {
    desired(
        Some(&TrustView::of(trust, err)),
        Some(&KubeletView::of(&kubelet_ok(), NOW)),
        last,
        "1.2.3",
    )
}

#[test]
fn the_pull_trust_label_says_live_or_restart_and_a_failed_pass_keeps_it() {
    use crate::trust::pull_trust::{PullMode, PullTrust};
    let mut o = outcome(&[1]);
    o.pull_trust = Some(PullTrust {
        mode: PullMode::Restart,
        dir: None,
        reason: Some("no config_path".into()),
        path: None,
        hint: None,
    });
    let d = state(&o, None, &Published::empty("n1"));
    assert_eq!(d.labels[PULL_TRUST_LABEL], "restart");
    o.pull_trust.as_mut().unwrap().mode = PullMode::Live;
    let d = state(&o, None, &Published::empty("n1"));
    assert_eq!(d.labels[PULL_TRUST_LABEL], "live");
    let mut last = Published::empty("n1");
    last.labels.insert(PULL_TRUST_LABEL.into(), "live".into());
    let d = state(&outcome(&[1]), None, &last);
    assert_eq!(d.labels[PULL_TRUST_LABEL], "live", "kept");
}

#[test]
fn a_converged_node_publishes_label_annotations_and_two_true_conditions() {
    let last = Published::empty("n1");
    let d = state(&outcome(&[1, 2]), None, &last);
    let digest = trust_set_digest(&outcome(&[1, 2]).trusted);
    assert_eq!(d.labels[TRUST_SET_LABEL], digest[..12]);
    assert_eq!(d.annotations[TRUST_SET_ANNOTATION], digest);
    assert_eq!(d.annotations[CA_COUNT_ANNOTATION], "2");
    assert_eq!(d.annotations[VERSION_ANNOTATION], "1.2.3");
    assert_eq!(
        d.annotations[KUBELET_CLIENT_NOT_AFTER_ANNOTATION],
        rfc3339(NOW + 86_400)
    );
    assert_eq!(d.conditions[TRUST_CONDITION].reason, "Converged");
    assert!(d.conditions[TRUST_CONDITION].status);
    assert_eq!(d.conditions[KUBELET_CONDITION].reason, "Valid");
    let w = plan(&last, &d, NOW);
    let meta = w.metadata.unwrap();
    assert_eq!(meta["metadata"]["labels"][TRUST_SET_LABEL], digest[..12]);
    assert_eq!(
        meta["metadata"]["annotations"][CHANGED_AT_ANNOTATION],
        rfc3339(NOW)
    );
    let conditions = w.status.unwrap()["status"]["conditions"].clone();
    assert_eq!(conditions.as_array().unwrap().len(), 2);
    for c in conditions.as_array().unwrap() {
        assert_eq!(c["lastHeartbeatTime"], rfc3339(NOW));
        assert_eq!(c["lastTransitionTime"], rfc3339(NOW));
    }
}

#[test]
fn the_same_state_again_writes_nothing() {
    let d = state(&outcome(&[1]), None, &Published::empty("n1"));
    let w = plan(&Published::empty("n1"), &d, NOW);
    let last = w.after_both;
    for i in 0..50 {
        let again = state(&outcome(&[1]), None, &last);
        assert!(plan(&last, &again, NOW + i).is_empty(), "republish {i}");
    }
}

#[test]
fn a_refused_key_keeps_the_digest_and_the_transition_time_follows_the_status() {
    let last = plan(
        &Published::empty("n1"),
        &state(&outcome(&[1]), None, &Published::empty("n1")),
        NOW,
    )
    .after_both;
    let mut bad = outcome(&[1]);
    bad.findings.push(Finding::error(
        FindingKind::PrivateKey,
        "ca2.crt",
        None,
        "holds a private key",
        "put only the CA certificate in the Secret",
    ));
    bad.secret_content
        .as_mut()
        .unwrap()
        .insert("ca2.crt".into(), b"key".to_vec());
    let d = state(&bad, None, &last);
    let c = &d.conditions[TRUST_CONDITION];
    assert_eq!(c.reason, "InputInvalid");
    assert!(!c.status);
    assert!(
        c.message.contains("ca2.crt") && c.message.contains("Fix:"),
        "{}",
        c.message
    );
    assert_eq!(d.labels, last.labels, "the last good CAs stay");
    assert_ne!(
        d.annotations[INPUT_DIGEST_ANNOTATION], last.annotations[INPUT_DIGEST_ANNOTATION],
        "the input it saw and refused is published"
    );
    let w = plan(&last, &d, NOW + 10);
    let conditions = w.status.clone().unwrap()["status"]["conditions"].clone();
    let list = conditions.as_array().unwrap();
    assert_eq!(list.len(), 1, "only the condition that changed: {list:?}");
    assert_eq!(list[0]["type"], TRUST_CONDITION);
    assert_eq!(list[0]["lastTransitionTime"], rfc3339(NOW + 10));
    // Still False, another message: the transition time stays.
    let mut worse = bad;
    worse.findings[0].problem = "is empty".into();
    let d2 = state(&worse, None, &w.after_both);
    let w2 = plan(&w.after_both, &d2, NOW + 20);
    let c2 = w2.status.unwrap()["status"]["conditions"][0].clone();
    assert_eq!(c2["lastTransitionTime"], rfc3339(NOW + 10));
    assert_eq!(c2["lastHeartbeatTime"], rfc3339(NOW + 20));
}

#[test]
fn failures_have_their_reasons_and_retries_of_the_same_failure_write_nothing() {
    let refresh = || ReconcileError::RefreshFailed {
        command: vec!["/usr/sbin/update-ca-certificates".into()],
        unit: format!("node-cert-agent-refresh-{}", rand_suffix()),
        result: "exit-code".into(),
        status: 1,
    };
    let first = TrustView::of(&outcome(&[1]), Some(&refresh()));
    assert_eq!(first.reason, TrustReason::RefreshFailed);
    assert!(first.message.contains("journalctl"), "{}", first.message);
    assert_eq!(first, TrustView::of(&outcome(&[1]), Some(&refresh())));
    let restart = ReconcileError::RestartFailed {
        unit: "containerd.service".into(),
        result: "failed".into(),
    };
    assert_eq!(
        TrustView::of(&outcome(&[1]), Some(&restart)).reason,
        TrustReason::RestartFailed
    );
    let mut missing = outcome(&[1]);
    missing.findings.push(Finding::error(
        FindingKind::SourceUnavailable,
        "/secret",
        None,
        "..data changed 5 times",
        "check the mount",
    ));
    assert_eq!(
        TrustView::of(&missing, None).reason,
        TrustReason::SourceNotSynced
    );
}

fn rand_suffix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

#[test]
fn kubelet_reasons() {
    let mut o = kubelet_ok();
    assert_eq!(KubeletView::of(&o, NOW).reason, KubeletReason::Valid);
    assert_eq!(
        KubeletView::of(&o, NOW + 7200).reason,
        KubeletReason::Expiring
    );
    o.kubeconfig_mismatch = Some(crate::kubelet::manager::KubeconfigMismatch {
        uses: "a token".into(),
        renewed: "/var/lib/kubelet/pki/kubelet-client-current.pem".into(),
    });
    assert_eq!(
        KubeletView::of(&o, NOW).reason,
        KubeletReason::KubeconfigMismatch
    );
    o.unfixable_revocations.push("kube-system/r1[0]".into());
    assert_eq!(KubeletView::of(&o, NOW).reason, KubeletReason::Revoked);
    let failing = PassOutcome {
        failures: vec![KubeletError::RestartFailed {
            unit: "kubelet.service".into(),
            result: "failed".into(),
        }],
        ..PassOutcome::default()
    };
    let v = KubeletView::of(&failing, NOW);
    assert_eq!(v.reason, KubeletReason::RenewalFailing);
    assert_eq!(v.client_not_after, None);
}

#[test]
fn a_certificate_kubelet_rotates_is_expiring_only_past_kubelets_own_window() {
    // 100 h of life; the agent's deadline at 75 %, kubelet's window ends at 90 %.
    let nb = NOW - 85 * 3600;
    let times = |kubelet_rotates| ClientTimes {
        not_before: nb,
        not_after: nb + 100 * 3600,
        deadline: nb + 75 * 3600,
        kubelet_rotates,
    };
    let at = |kubelet_rotates, now| {
        let o = PassOutcome {
            client: Some(times(kubelet_rotates)),
            monitoring_only: kubelet_rotates,
            ..PassOutcome::default()
        };
        KubeletView::of(&o, now)
    };
    // At 85 %: kubelet may still rotate (70 to 90 %): healthy.
    assert_eq!(at(true, NOW).reason, KubeletReason::Valid);
    // The agent's own renewal is overdue at 85 %.
    assert_eq!(at(false, NOW).reason, KubeletReason::Expiring);
    // Past 90 %, kubelet is late too, and the message says whose it is.
    let late = at(true, nb + 90 * 3600);
    assert_eq!(late.reason, KubeletReason::Expiring);
    assert!(
        late.message.contains("kubelet rotates it itself"),
        "{}",
        late.message
    );
    assert_eq!(at(true, nb + 90 * 3600 - 1).reason, KubeletReason::Valid);
}

#[test]
fn unknown_digests_keep_what_was_published_and_messages_are_capped() {
    let last = plan(
        &Published::empty("n1"),
        &state(&outcome(&[1]), None, &Published::empty("n1")),
        NOW,
    )
    .after_both;
    let mut unread = outcome(&[1]);
    unread.secret_content = None;
    let failing = PassOutcome {
        failures: vec![KubeletError::RestartFailed {
            unit: "kubelet.service".into(),
            result: "failed".into(),
        }],
        ..PassOutcome::default()
    };
    let d = desired(
        Some(&TrustView::of(&unread, None)),
        Some(&KubeletView::of(&failing, NOW)),
        &last,
        "1.2.3",
    );
    assert_eq!(
        d.annotations[INPUT_DIGEST_ANNOTATION],
        last.annotations[INPUT_DIGEST_ANNOTATION]
    );
    assert_eq!(
        d.annotations[KUBELET_CLIENT_NOT_AFTER_ANNOTATION],
        last.annotations[KUBELET_CLIENT_NOT_AFTER_ANNOTATION]
    );
    let long = cap("é".repeat(1000));
    assert!(long.len() <= MAX_MESSAGE_BYTES && long.ends_with("..."));
}

#[test]
fn a_condition_no_longer_owned_is_deleted_by_type_and_a_label_by_null() {
    let last = plan(
        &Published::empty("n1"),
        &state(&outcome(&[1]), None, &Published::empty("n1")),
        NOW,
    )
    .after_both;
    let d = desired(
        None,
        Some(&KubeletView::of(&kubelet_ok(), NOW)),
        &last,
        "1.2.3",
    );
    let w = plan(&last, &d, NOW + 1);
    let meta = w.metadata.unwrap();
    assert!(meta["metadata"]["labels"][TRUST_SET_LABEL].is_null());
    assert!(meta["metadata"]["labels"]
        .as_object()
        .unwrap()
        .contains_key(TRUST_SET_LABEL));
    let list = w.status.unwrap()["status"]["conditions"].clone();
    assert_eq!(list, json!([{"type": TRUST_CONDITION, "$patch": "delete"}]));
}

#[test]
fn what_the_node_really_shows_replaces_the_record_and_other_keys_are_ignored() {
    let last = plan(
        &Published::empty("n1"),
        &state(&outcome(&[1]), None, &Published::empty("n1")),
        NOW,
    )
    .after_both;
    // The Node as the API shows it after the agent's writes, with
    // kubelet's and another owner's keys beside them.
    let mut labels = last.labels.clone();
    labels.insert("kubernetes.io/hostname".into(), "n1".into());
    let mut annotations = last.annotations.clone();
    annotations.insert(CHANGED_AT_ANNOTATION.into(), rfc3339(NOW));
    annotations.insert("example.com/x".into(), "y".into());
    let mut conditions: Vec<Value> = last
        .conditions
        .iter()
        .map(|(t, c)| {
            json!({"type": t, "status": if c.condition.status {"True"} else {"False"},
                "reason": c.condition.reason, "message": c.condition.message,
                "lastTransitionTime": rfc3339(c.last_transition)})
        })
        .collect();
    conditions.push(json!({"type": "Ready", "status": "True"}));
    let node: k8s_openapi::api::core::v1::Node = serde_json::from_value(json!({
        "metadata": {"name": "n1", "labels": labels, "annotations": annotations},
        "status": {"conditions": conditions},
    }))
    .unwrap();
    assert_eq!(observed(&node, &last), last);
    let again = state(&outcome(&[1]), None, &last);
    assert!(plan(&observed(&node, &last), &again, NOW + 5).is_empty());
    // Registered again: nothing of the agent's is left; all is written.
    let bare: k8s_openapi::api::core::v1::Node =
        serde_json::from_value(json!({"metadata": {"name": "n1"}})).unwrap();
    let seen = observed(&bare, &last);
    assert!(seen.labels.is_empty() && seen.conditions.is_empty());
    let w = plan(&seen, &again, NOW + 5);
    assert!(w.metadata.is_some() && w.status.is_some());
}

#[test]
fn the_fuzz_seed_node_reads_as_published_with_an_unknown_condition_dropped() {
    let node: k8s_openapi::api::core::v1::Node = serde_json::from_str(include_str!(
        "../../../tests/data/fuzz/node_object/published-node.json"
    ))
    .unwrap();
    let seen = observed(&node, &Published::empty("n1"));
    assert_eq!(seen.labels[TRUST_SET_LABEL], "648e6050e599");
    assert_eq!(
        seen.annotations.len(),
        5,
        "changed-at is not a compared key"
    );
    assert_eq!(
        seen.conditions.len(),
        1,
        "Ready is not ours, Unknown not written by us"
    );
    assert_eq!(
        seen.conditions[KUBELET_CONDITION].last_transition,
        crate::time::parse_rfc3339("2026-12-02T00:48:22Z").unwrap()
    );
}

#[test]
fn published_state_of_another_node_is_ignored() {
    let p = Published::empty("n1");
    assert_eq!(p.clone().for_node("n1"), p);
    assert_eq!(p.for_node("n2"), Published::empty("n2"));
}
