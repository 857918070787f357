//! When to renew a kubelet certificate. Pure: facts about a certificate, the
//! revocation entries and the time in, a [`Decision`] out. What a revocation
//! entry matches is revocation.rs's; reading the facts is facts.rs's.
//!
//! The deadline is `notBefore + f × lifetime`, where `f` in [0.70, 0.80] is
//! derived from the node name alone: the same node always renews at the same
//! point of its certificate's life, a fleet that joined in one minute spreads
//! its renewals over a tenth of the lifetime, and no node waits past 80 %.
//!
//! A revocation entry makes a certificate due at once, unless it is known to
//! be unsatisfiable ([`Unsatisfiable`]): a certificate issued in a renewal
//! matched it too, so renewing again cannot help. Such an entry is reported,
//! never acted on, and the certificate keeps its normal deadline, as
//! client-go's certificate manager always rotates at its deadline.

use crate::kubelet::facts::CertFacts;
use crate::kubelet::revocation::{Revocation, RevocationError};

/// The earliest and latest point of a certificate's life to renew at.
pub const FRACTION_MIN: f64 = 0.70;
pub const FRACTION_MAX: f64 = 0.80;

/// The node's renewal fraction in [0.70, 0.80), from SHA-256 of its name.
pub fn renewal_fraction(node_name: &str) -> f64 {
    let unit = crate::retry::stable_fraction(node_name);
    FRACTION_MIN + (FRACTION_MAX - FRACTION_MIN) * unit
}

/// Unix time at which a certificate valid over `[not_before, not_after]` is renewed.
pub fn deadline(not_before: i64, not_after: i64, fraction: f64) -> i64 {
    let lifetime = (not_after - not_before).max(0) as f64;
    not_before + (lifetime * fraction).floor() as i64
}

/// Why a certificate must be renewed now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RenewReason {
    Missing,
    Expired,
    Revoked(String),
    WrongSubject {
        found: String,
        expected: String,
    },
    KeyMismatch,
    /// The renewal deadline has passed.
    Due {
        deadline: i64,
    },
    Forced,
}

impl std::fmt::Display for RenewReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Missing => f.write_str("there is no current certificate"),
            Self::Expired => f.write_str("the current certificate has expired"),
            Self::Revoked(label) => write!(f, "the current certificate is revoked ({label})"),
            Self::WrongSubject { found, expected } => write!(
                f,
                "the current certificate is for {found:?}, not {expected:?}"
            ),
            Self::KeyMismatch => {
                f.write_str("the current certificate does not match its private key")
            }
            Self::Due { deadline } => write!(
                f,
                "its renewal deadline {} has passed",
                crate::x509::time::rfc3339(*deadline)
            ),
            Self::Forced => f.write_str("renewal was forced"),
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum Decision {
    RenewNow(RenewReason),
    RenewAt { deadline: i64, fraction: f64 },
}

/// Decides for the current certificate (`None` = missing) of node `node_name`.
/// Revocation entries that cannot be applied are returned for logging.
pub fn decide(
    current: Option<&CertFacts>,
    node_name: &str,
    now: i64,
    revocations: &[Revocation],
) -> (Decision, Vec<(Revocation, RevocationError)>) {
    decide_except(
        current,
        node_name,
        now,
        revocations,
        &Unsatisfiable::default(),
    )
}

/// [`decide`], except that the entries of `unsatisfiable` never make the
/// certificate due: it keeps its normal deadline (past it, it is due as any
/// certificate is).
pub fn decide_except(
    current: Option<&CertFacts>,
    node_name: &str,
    now: i64,
    revocations: &[Revocation],
    unsatisfiable: &Unsatisfiable,
) -> (Decision, Vec<(Revocation, RevocationError)>) {
    let mut bad = Vec::new();
    let Some(facts) = current else {
        return (Decision::RenewNow(RenewReason::Missing), bad);
    };
    let expected = format!("system:node:{node_name}");
    if facts.common_name.as_deref() != Some(expected.as_str())
        || !facts.organizations.iter().any(|o| o == "system:nodes")
    {
        let found = format!(
            "CN={}, O={}",
            facts.common_name.as_deref().unwrap_or(""),
            facts.organizations.join("+")
        );
        return (
            Decision::RenewNow(RenewReason::WrongSubject {
                found,
                expected: format!("CN={expected}, O=system:nodes"),
            }),
            bad,
        );
    }
    if !facts.key_matches {
        return (Decision::RenewNow(RenewReason::KeyMismatch), bad);
    }
    if facts.not_after <= now {
        return (Decision::RenewNow(RenewReason::Expired), bad);
    }
    for r in revocations {
        match r.matches(facts) {
            Ok(true) if !unsatisfiable.contains(r) => {
                return (Decision::RenewNow(RenewReason::Revoked(r.label())), bad)
            }
            Ok(_) => {}
            Err(e) => bad.push((r.clone(), e)),
        }
    }
    let fraction = renewal_fraction(node_name);
    (
        Decision::RenewAt {
            deadline: deadline(facts.not_before, facts.not_after, fraction),
            fraction,
        },
        bad,
    )
}

/// The revocation entries that renewing (a certificate of one kind) cannot
/// satisfy: a certificate issued in a renewal, moments before, matched
/// them. An entry without notBefore that matches what every certificate of
/// the node carries (`kind: Group, group: system:nodes`) is one for good;
/// one whose notBefore is later than a new certificate's (backdated)
/// notBefore, until the next renewal at the deadline. Pure; its keeper
/// decides how long it is kept.
///
/// Entries are compared whole: an entry that is edited (given a notBefore,
/// say) is a new entry and judged afresh.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Unsatisfiable {
    entries: Vec<Revocation>,
}

impl Unsatisfiable {
    /// Learns from `issued`, a certificate a renewal has just obtained: the
    /// entries of `listed` it matches are unsatisfiable. Returns those that
    /// were not known before.
    pub fn learn(&mut self, listed: &[Revocation], issued: &CertFacts) -> Vec<Revocation> {
        let mut found = Vec::new();
        for r in listed {
            if r.matches(issued) == Ok(true) && !self.contains(r) {
                self.entries.push(r.clone());
                found.push(r.clone());
            }
        }
        found
    }

    /// Forgets the entries that are no longer listed exactly so (deleted or
    /// edited). Only for a complete list: an entry missing from a list that
    /// could not be read is not gone.
    pub fn retain_listed(&mut self, listed: &[Revocation]) {
        self.entries.retain(|r| listed.contains(r));
    }

    pub fn contains(&self, entry: &Revocation) -> bool {
        self.entries.contains(entry)
    }

    /// The known entries that `current` matches.
    pub fn matching<'a>(&'a self, current: &'a CertFacts) -> impl Iterator<Item = &'a Revocation> {
        self.entries
            .iter()
            .filter(move |r| r.matches(current) == Ok(true))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]
mod tests {
    use super::*;

    fn facts(node: &str) -> CertFacts {
        CertFacts {
            serial: "0A1B".into(),
            common_name: Some(format!("system:node:{node}")),
            organizations: vec!["system:nodes".into()],
            dns_names: vec!["node1.eu.example.com".into()],
            ips: vec!["10.0.0.7".parse().unwrap()],
            not_before: 1_000_000,
            not_after: 1_000_000 + 100_000,
            key_matches: true,
        }
    }

    #[test]
    fn fractions_of_5000_nodes_spread_evenly_over_70_to_80_percent() {
        let mut bins = [0usize; 10];
        for i in 0..5000 {
            let f = renewal_fraction(&format!("aks-nodepool1-12345678-vmss{i:06}"));
            assert!((FRACTION_MIN..FRACTION_MAX).contains(&f), "{f}");
            bins[((f - FRACTION_MIN) / (FRACTION_MAX - FRACTION_MIN) * 10.0) as usize] += 1;
        }
        // 500 expected per bin; a uniform spread stays well inside ±20 %.
        for (i, n) in bins.iter().enumerate() {
            assert!((400..=600).contains(n), "bin {i} has {n} of 5000: {bins:?}");
        }
    }

    #[test]
    fn fraction_is_stable_per_node_and_differs_between_nodes() {
        assert_eq!(renewal_fraction("node-a"), renewal_fraction("node-a"));
        assert_ne!(renewal_fraction("node-a"), renewal_fraction("node-b"));
    }

    #[test]
    fn deadline_is_never_later_than_80_percent() {
        for node in ["a", "b", "c", "d", "e"] {
            let f = renewal_fraction(node);
            let d = deadline(0, 1000, f);
            assert!((700..=800).contains(&d), "{d}");
        }
    }

    #[test]
    fn healthy_certificate_renews_at_its_deadline() {
        let (d, bad) = decide(Some(&facts("n1")), "n1", 1_000_010, &[]);
        assert!(bad.is_empty());
        match d {
            Decision::RenewAt { deadline, fraction } => {
                assert_eq!(fraction, renewal_fraction("n1"));
                assert!((1_070_000..=1_080_000).contains(&deadline), "{deadline}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn missing_expired_wrong_subject_and_mismatched_key_renew_now() {
        assert_eq!(
            decide(None, "n1", 0, &[]).0,
            Decision::RenewNow(RenewReason::Missing)
        );
        assert_eq!(
            decide(Some(&facts("n1")), "n1", 2_000_000, &[]).0,
            Decision::RenewNow(RenewReason::Expired)
        );
        assert!(matches!(
            decide(Some(&facts("other")), "n1", 1_000_010, &[]).0,
            Decision::RenewNow(RenewReason::WrongSubject { .. })
        ));
        let mut f = facts("n1");
        f.key_matches = false;
        assert_eq!(
            decide(Some(&f), "n1", 1_000_010, &[]).0,
            Decision::RenewNow(RenewReason::KeyMismatch)
        );
    }

    fn rev(kind: &str, field: &str, value: &str) -> Revocation {
        let json =
            format!(r#"{{"kind":"{kind}","{field}":"{value}","description":"incident 42"}}"#);
        serde_json::from_str(&json).unwrap()
    }

    #[test]
    fn matching_revocation_renews_now_with_its_description() {
        let (d, _) = decide(
            Some(&facts("n1")),
            "n1",
            1_000_010,
            &[rev("Group", "group", "system:nodes")],
        );
        assert_eq!(
            d,
            Decision::RenewNow(RenewReason::Revoked("incident 42".into()))
        );
    }

    #[test]
    fn broken_revocation_entries_are_reported_not_applied() {
        let (d, bad) = decide(
            Some(&facts("n1")),
            "n1",
            1_000_010,
            &[rev("Color", "group", "x"), rev("IP", "ip", "not-an-ip")],
        );
        assert!(matches!(d, Decision::RenewAt { .. }));
        assert_eq!(bad.len(), 2);
        assert!(matches!(bad[0].1, RevocationError::UnknownKind(_)));
    }

    /// The documentation's own example revokes `kind: Group, group:
    /// system:nodes` without notBefore: every certificate the node can get.
    /// Once a renewal has shown that, the entry is no reason to renew, and
    /// the certificate keeps its normal deadline (it was skipped before).
    #[test]
    fn an_unsatisfiable_revocation_is_no_reason_and_the_deadline_still_applies() {
        let current = facts("n1");
        let issued = CertFacts {
            serial: "0C0D".into(),
            ..facts("n1")
        };
        let group = rev("Group", "group", "system:nodes");
        let only_group = vec![group.clone()];
        let mut known = Unsatisfiable::default();
        assert_eq!(known.learn(&only_group, &issued), only_group);
        assert_eq!(known.matching(&current).collect::<Vec<_>>(), [&group]);

        let before_deadline = 1_000_010;
        let (d, _) = decide_except(Some(&current), "n1", before_deadline, &only_group, &known);
        assert!(
            matches!(d, Decision::RenewAt { deadline, .. } if deadline > before_deadline),
            "{d:?}"
        );
        let past_deadline = 1_090_000;
        let (d, _) = decide_except(Some(&current), "n1", past_deadline, &only_group, &known);
        assert!(
            matches!(d, Decision::RenewAt { deadline, .. } if deadline <= past_deadline),
            "past the deadline the certificate is due as any other: {d:?}"
        );

        // Another entry that a new certificate would satisfy still renews now.
        let serial = rev("serialnumber", "serialNumber", "0A1B");
        let (d, _) = decide_except(
            Some(&current),
            "n1",
            before_deadline,
            &[group.clone(), serial],
            &known,
        );
        assert_eq!(
            d,
            Decision::RenewNow(RenewReason::Revoked("incident 42".into()))
        );
        // Without the knowledge, the entry renews at once, as it always did.
        let (d, _) = decide(Some(&current), "n1", before_deadline, &[group]);
        assert!(matches!(d, Decision::RenewNow(RenewReason::Revoked(_))));
    }

    #[test]
    fn an_entry_is_learned_once_and_an_edited_or_deleted_one_is_forgotten() {
        let issued = facts("n1");
        let group = rev("Group", "group", "system:nodes");
        let other_serial = rev("serialnumber", "serialNumber", "FFFF");
        let listed = [group.clone(), other_serial];
        let mut known = Unsatisfiable::default();
        assert_eq!(
            known.learn(&listed, &issued),
            vec![group.clone()],
            "only what the new certificate matches"
        );
        assert!(known.learn(&listed, &issued).is_empty(), "known already");

        let mut edited = group.clone();
        edited.not_before = Some("2030-01-01T00:00:00Z".into());
        let only_edited = vec![edited];
        known.retain_listed(&only_edited);
        assert!(!known.contains(&group), "an edited entry is judged afresh");
        assert_eq!(known.learn(&only_edited, &issued), only_edited);
        known.retain_listed(&[]);
        assert_eq!(
            known,
            Unsatisfiable::default(),
            "a deleted entry is forgotten"
        );
    }
}
