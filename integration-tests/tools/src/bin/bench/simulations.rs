//! The fleet simulations of `bench` (no node needed): renewal deadlines,
//! CSRs after a fleet-wide RenewRevocation, restarts and Node writes spread
//! over a window, and the Events of a fleet whose renewals all fail.

use std::collections::BTreeMap;
use std::time::Duration;

use node_cert_agent::kubelet::renewal::{deadline, renewal_fraction};
use node_cert_agent::kubelet::revocation::Revocation;
use node_cert_agent::trust::restart::spread_offset;

fn fleet() -> (usize, usize) {
    const NODES: usize = 5_000;
    const LIFETIME: i64 = 365 * 86_400;
    let t0: i64 = 1_800_000_000;
    let mut ours: BTreeMap<i64, usize> = BTreeMap::new();
    let mut naive: BTreeMap<i64, usize> = BTreeMap::new();
    for i in 0..NODES {
        let name = format!("ip-10-0-{}-{}.ec2.internal", i / 250, i % 250);
        // All joined within the same minute.
        let nb = t0 + (i as i64 * 60) / NODES as i64;
        let na = nb + LIFETIME;
        *ours
            .entry(deadline(nb, na, renewal_fraction(&name)) / 60)
            .or_default() += 1;
        *naive.entry(deadline(nb, na, 0.8) / 60).or_default() += 1;
    }
    (
        ours.values().copied().max().unwrap(),
        naive.values().copied().max().unwrap(),
    )
}

/// CSRs after one fleet-wide RenewRevocation (`kind: Group, group:
/// system:nodes, notBefore: <when it was written>`), which the watch shows
/// 5,000 nodes in the same second: each node's renewal time by the agent's
/// own decision (`renewal::decide_except`) with `kubelet.revocation-spread-
/// seconds` = `spread_s`. The nodes hold 4-day certificates (AKS hybrid's
/// lifetime) issued over the 2.5 days before, none past its deadline.
/// Returns the peak CSRs in any one second and the seconds from the
/// revocation to the last renewal.
fn revocation_peak(spread_s: u64) -> (usize, i64) {
    use node_cert_agent::kubelet::facts::CertFacts;
    use node_cert_agent::kubelet::renewal::{
        decide_except, Decision, FirstSeen, RevocationContext, Unsatisfiable,
    };
    const NODES: i64 = 5_000;
    const LIFETIME: i64 = 4 * 86_400;
    let written: i64 = 1_800_000_000;
    let revocation: Revocation = serde_json::from_value(serde_json::json!({
        "kind": "Group",
        "group": "system:nodes",
        "notBefore": node_cert_agent::time::rfc3339(written),
    }))
    .unwrap();
    let listed = [revocation];
    let unsatisfiable = Unsatisfiable::default();
    let mut per_second: BTreeMap<i64, usize> = BTreeMap::new();
    for i in 0..NODES {
        let name = format!("ip-10-0-{}-{}.ec2.internal", i / 250, i % 250);
        // Signed by kube-controller-manager, which backdates by 5 minutes.
        let signed = written - 60 - (i * 216_000) / NODES;
        let not_before = signed - node_cert_agent::kubelet::revocation::SIGNER_BACKDATE;
        let current = CertFacts {
            serial: format!("{i:X}"),
            common_name: Some(format!("system:node:{name}")),
            organizations: vec!["system:nodes".into()],
            not_before,
            not_after: not_before + LIFETIME,
            key_matches: true,
            ..CertFacts::default()
        };
        let mut seen = FirstSeen::default();
        seen.note(&listed, &current, written);
        let context = RevocationContext {
            unsatisfiable: &unsatisfiable,
            first_seen: &seen,
            spread: Duration::from_secs(spread_s),
        };
        let at = match decide_except(Some(&current), &name, written, &listed, context).0 {
            Decision::RenewNow(_) => written,
            Decision::RenewRevokedAt { at, .. } => {
                // Woken at that time, the node renews.
                let (then, _) = decide_except(Some(&current), &name, at, &listed, context);
                assert!(matches!(then, Decision::RenewNow(_)), "{name}: {then:?}");
                at
            }
            other => panic!("{name}: revoked, yet {other:?}"),
        };
        *per_second.entry(at).or_default() += 1;
    }
    let last = per_second.keys().next_back().copied().unwrap() - written;
    (per_second.values().copied().max().unwrap(), last)
}

/// The kubelet loop's retry schedule after a failed pass
/// (`agent/src/daemon/kubelet_loop.rs`, `KUBELET_RETRY_*`, private there):
/// 2 s, doubling up to 300 s, each with up to 10 % added.
const KUBELET_RETRY_FIRST: Duration = Duration::from_secs(2);
const KUBELET_RETRY_MAX: Duration = Duration::from_secs(300);
const KUBELET_RETRY_JITTER: f64 = 0.1;

/// Events about their Nodes from 5,000 nodes whose kubelet renewals fail at
/// every retry, from the same moment on, for `hours`: each node fails a pass
/// at the kubelet loop's retry schedule and raises one
/// `KubeletCertificateRenewalFailed` Event per failed pass. `varying`: each
/// failure's message differs (a denied CSR is named after its new key);
/// otherwise it is the same each time (a 403, an unreachable signer). The
/// agent writes through its own correlator (`ops::events::EventCorrelator`);
/// before it, every Event was created. Returns, per hour: Events created
/// before, Events created now, and the API writes now (creates + count
/// PATCHes).
fn failing_fleet_events(varying: bool, hours: usize) -> Vec<(usize, usize, usize)> {
    use k8s_openapi::jiff::{SignedDuration, Timestamp};
    use node_cert_agent::ops::events::{event_object, EventCorrelator, NodeEvent, Write};
    use node_cert_agent::retry::Backoff;
    let t0 = Timestamp::from_second(1_800_000_000).unwrap();
    let end = hours as u64 * 3_600;
    let mut per_hour = vec![(0, 0, 0); hours];
    for i in 0..5_000 {
        let name = format!("ip-10-0-{}-{}.ec2.internal", i / 250, i % 250);
        let uid = format!("uid-{i}");
        let mut backoff =
            Backoff::new(KUBELET_RETRY_FIRST, KUBELET_RETRY_MAX, KUBELET_RETRY_JITTER);
        let mut correlator = EventCorrelator::default();
        let mut at = Duration::ZERO;
        let mut pass = 0;
        while at.as_secs() < end {
            let now = t0 + SignedDuration::try_from(at).unwrap();
            let message = if varying {
                format!("CertificateSigningRequest node-csr-{name}-{pass} was denied (Denied): not approved")
            } else {
                "creating the CertificateSigningRequest: forbidden (403)".to_string()
            };
            let event = NodeEvent::warning("KubeletCertificateRenewalFailed", message);
            let hour = &mut per_hour[(at.as_secs() / 3_600) as usize];
            hour.0 += 1;
            match correlator.correlate(event_object(&name, Some(&uid), &event, now), now) {
                Write::Create(_) => {
                    hour.1 += 1;
                    hour.2 += 1;
                }
                Write::Patch { .. } => hour.2 += 1,
                Write::Skip => {}
            }
            at += backoff.next_delay(None);
            pass += 1;
        }
    }
    per_hour
}

/// The row of [`failing_fleet_events`] for one kind of failure.
fn failing_fleet_row(varying: bool) -> String {
    const HOURS: usize = 4;
    let hours = failing_fleet_events(varying, HOURS);
    let later = |f: fn(&(usize, usize, usize)) -> usize| {
        hours[1..].iter().map(f).sum::<usize>() / (HOURS - 1)
    };
    let (before, created, writes) = (later(|h| h.0), later(|h| h.1), later(|h| h.2));
    format!(
        "| fleet: Node Events created per hour, 5,000 nodes whose kubelet renewals fail at every retry ({}) | first hour: {} (before: {}); hours 2-{HOURS}: {created}/h (before: {before}/h), and {writes} API writes/h (creates + count PATCHes) | < 10,000/h after the first hour ({}) |",
        if varying {
            "a new message each time"
        } else {
            "the same message each time"
        },
        hours[0].1,
        hours[0].0,
        if created < 10_000 { "met" } else { "MISSED" }
    )
}

/// The fleet simulations' rows.
pub fn simulation_rows() -> Vec<String> {
    let (peak, naive_peak) = fleet();
    let (none, _) = revocation_peak(0);
    let default_spread = node_cert_agent::config::kubelet::DEFAULT_REVOCATION_SPREAD.as_secs();
    let (spread, last) = revocation_peak(default_spread);
    vec![
        format!(
            "| fleet: peak CSRs/minute, 5,000 nodes joined in one minute, 1-year certs | {peak} vs {naive_peak} naive (1/{:.0}) | <= 1/50 of naive ({}) |",
            naive_peak as f64 / peak as f64,
            if peak * 50 <= naive_peak { "met" } else { "MISSED" }
        ),
        format!(
            "| fleet: peak CSRs/second after one fleet-wide RenewRevocation, 5,000 nodes woken in the same second | revocation-spread-seconds {default_spread} (default): {spread}, the last after {last} s; 0 (no spread): {none} | <= 50/s ({}) |",
            if spread <= 50 { "met" } else { "MISSED" }
        ),
        failing_fleet_row(false),
        failing_fleet_row(true),
        format!(
            "| fleet: peak containerd restarts per second, 5,000 nodes seeing one added CA in the same second (restart-spread-seconds 60) | live path: {}; restart path: {} | 0 where the live path applies ({}) |",
            added_ca_restart_peak(true, 60),
            added_ca_restart_peak(false, 60),
            if added_ca_restart_peak(true, 60) == 0 { "met" } else { "MISSED" }
        ),
        format!(
            "| fleet: peak Node writes per second, 5,000 nodes publishing one Secret change seen in the same second (2 PATCHes each: metadata, status) | fleet-publish-spread-seconds {} (default): {}; 0 (no spread): {} | <= 500/s, the rate of kubelet's own Lease renewals (every 10 s) on 5,000 nodes ({}) |",
            node_cert_agent::config::DEFAULT_FLEET_PUBLISH_SPREAD_SECONDS,
            node_write_peak(node_cert_agent::config::DEFAULT_FLEET_PUBLISH_SPREAD_SECONDS),
            node_write_peak(0),
            if node_write_peak(node_cert_agent::config::DEFAULT_FLEET_PUBLISH_SPREAD_SECONDS) <= 500 { "met" } else { "MISSED" }
        ),
    ]
}

/// Peak restarts in any one second when 5,000 nodes see one change at the
/// same instant, each waiting its `restart-spread-seconds` share.
pub fn spread_peak(window_s: u64) -> usize {
    let mut per_second: BTreeMap<u64, usize> = BTreeMap::new();
    for i in 0..5_000 {
        let name = format!("ip-10-0-{}-{}.ec2.internal", i / 250, i % 250);
        let offset = spread_offset(&name, Duration::from_secs(window_s));
        *per_second.entry(offset.as_secs()).or_default() += 1;
    }
    per_second.values().copied().max().unwrap()
}

/// Peak Node writes in any one second when 5,000 nodes see one Secret
/// change in the same second: each publishes its changed state (a PATCH of
/// the Node's labels and annotations, then one of its status conditions,
/// back to back) at its share of `fleet-publish-spread-seconds` =
/// `window_s` (`spread_offset`, as the publisher computes it).
fn node_write_peak(window_s: u64) -> usize {
    let mut per_second: BTreeMap<u64, usize> = BTreeMap::new();
    for i in 0..5_000 {
        let name = format!("ip-10-0-{}-{}.ec2.internal", i / 250, i % 250);
        let offset = spread_offset(&name, Duration::from_secs(window_s));
        *per_second.entry(offset.as_secs()).or_default() += 2;
    }
    per_second.values().copied().max().unwrap()
}

/// Peak containerd restarts in any one second when 5,000 nodes see one
/// added CA at the same instant: each node's decision by the agent's own
/// rule (`pull_trust::restart_needed`), then its restart-spread share.
fn added_ca_restart_peak(live: bool, window_s: u64) -> usize {
    use node_cert_agent::trust::pull_trust::{restart_needed, RuntimeTrust};
    let mut per_second: BTreeMap<u64, usize> = BTreeMap::new();
    let before: std::collections::BTreeSet<String> = ["a".to_string()].into();
    let desired: std::collections::BTreeSet<String> = ["a".to_string(), "b".to_string()].into();
    for i in 0..5_000 {
        let name = format!("ip-10-0-{}-{}.ec2.internal", i / 250, i % 250);
        let running = RuntimeTrust {
            activation_us: Some(1),
            started_with: before.clone(),
            may_cache: before.union(&desired).cloned().collect(),
        };
        if restart_needed(&running, &desired, live).is_some() {
            let offset = spread_offset(&name, Duration::from_secs(window_s));
            *per_second.entry(offset.as_secs()).or_default() += 1;
        }
    }
    per_second.values().copied().max().unwrap_or(0)
}
