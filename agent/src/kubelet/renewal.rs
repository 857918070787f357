//! When to renew a kubelet certificate. Pure: facts about a certificate, the
//! revocation entries and the time in, a [`Decision`] out. What a revocation
//! entry matches is revocation.rs's; reading the facts is facts.rs's.
//!
//! The deadline is `notBefore + f × lifetime`, where `f` in [0.70, 0.80] is
//! derived from the node name alone: the same node always renews at the same
//! point of its certificate's life, a fleet that joined in one minute spreads
//! its renewals over a tenth of the lifetime, and no node waits past 80 %.
//!
//! A revocation entry makes a certificate due at the node's share of the
//! revocation spread ([`revocation_offset`] of
//! `kubelet.revocation-spread-seconds`) after the agent first saw the entry
//! match ([`FirstSeen`]), or after the entry's `notBefore` when that is
//! later (a renewal before it would be revoked too): the watch wakes every
//! node of a fleet in the same second, and the control plane must not get
//! all their CSRs in that second. Never later than the certificate's normal
//! deadline: one past it renews at once, and so does an expired one.
//!
//! An entry known to be unsatisfiable ([`Unsatisfiable`]: a certificate
//! issued in a renewal matched it too, so renewing again cannot help) is
//! reported, never acted on, and the certificate keeps its normal deadline,
//! as client-go's certificate manager always rotates at its deadline.

use std::time::Duration;

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

/// The node's share of `spread`, in whole seconds: how long after a
/// revocation is seen (or takes effect) the node renews for it. From SHA-256
/// of the node name (`retry::stable_fraction`, as the trust job's
/// `restart-spread-seconds` share): stable across restarts, uniform over a
/// fleet.
pub fn revocation_offset(node_name: &str, spread: Duration) -> i64 {
    // In f64 and floored: no overflow whatever the spread (`as` saturates).
    (spread.as_secs_f64() * crate::retry::stable_fraction(node_name)).floor() as i64
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
    /// The serving certificate's names are not the Node's addresses now.
    NamesChanged {
        /// What the certificate names, and what the Node's addresses ask.
        has: String,
        wants: String,
    },
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
                crate::time::rfc3339(*deadline)
            ),
            Self::Forced => f.write_str("renewal was forced"),
            Self::NamesChanged { has, wants } => write!(
                f,
                "the certificate names {has}, but the Node's status.addresses are now {wants}"
            ),
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum Decision {
    RenewNow(RenewReason),
    RenewAt {
        deadline: i64,
        fraction: f64,
    },
    /// Revoked by the entry `label`, renewed at `at`: the node's share of
    /// the revocation spread after the entry was first seen (or after its
    /// notBefore), and never later than the normal `deadline`.
    RenewRevokedAt {
        at: i64,
        label: String,
        deadline: i64,
    },
}

/// What the decision knows of the revocation entries besides the list.
#[derive(Clone, Copy, Debug)]
pub struct RevocationContext<'a> {
    /// Entries that never make the certificate due.
    pub unsatisfiable: &'a Unsatisfiable,
    /// When each entry was first seen to match; an entry without a time is
    /// seen now.
    pub first_seen: &'a FirstSeen,
    /// `kubelet.revocation-spread-seconds`.
    pub spread: Duration,
}

/// Decides for the current certificate (`None` = missing) of node `node_name`,
/// with no revocation spread: a revoked certificate renews now.
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
        RevocationContext {
            unsatisfiable: &Unsatisfiable::default(),
            first_seen: &FirstSeen::default(),
            spread: Duration::ZERO,
        },
    )
}

/// [`decide`], with what the agent knows of the entries: those of
/// `context.unsatisfiable` never make the certificate due (it keeps its
/// normal deadline; past it, it is due as any certificate is), and a
/// revoked certificate renews at the node's share of `context.spread` after
/// the entry was first seen or took effect ([`Decision::RenewRevokedAt`]),
/// at once when that time or the normal deadline has come.
pub fn decide_except(
    current: Option<&CertFacts>,
    node_name: &str,
    now: i64,
    revocations: &[Revocation],
    context: RevocationContext<'_>,
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
    let fraction = renewal_fraction(node_name);
    let normal = deadline(facts.not_before, facts.not_after, fraction);
    let offset = revocation_offset(node_name, context.spread);
    // The entry that makes the certificate due first, and when.
    let mut revoked: Option<(i64, String)> = None;
    for r in revocations {
        match r.matches(facts) {
            Ok(true) if !context.unsatisfiable.contains(r) => {
                let seen = context.first_seen.at(r).unwrap_or(now);
                let at = revocation_due(r, seen, offset);
                if revoked.as_ref().is_none_or(|(first, _)| at < *first) {
                    revoked = Some((at, r.label()));
                }
            }
            Ok(_) => {}
            Err(e) => bad.push((r.clone(), e)),
        }
    }
    let decision = match revoked {
        Some((at, label)) if at <= now || normal <= now => {
            Decision::RenewNow(RenewReason::Revoked(label))
        }
        Some((at, label)) => Decision::RenewRevokedAt {
            at: at.min(normal),
            label,
            deadline: normal,
        },
        None => Decision::RenewAt {
            deadline: normal,
            fraction,
        },
    };
    (decision, bad)
}

/// When a matching entry first seen at `seen` makes the certificate due:
/// `offset` after it was seen, or after its notBefore when that is later
/// (until then every new certificate would be issued before it, and
/// revoked too).
fn revocation_due(entry: &Revocation, seen: i64, offset: i64) -> i64 {
    let from = match entry.cutoff() {
        Ok(Some(cutoff)) => cutoff.max(seen),
        _ => seen,
    };
    from.saturating_add(offset)
}

/// The revocation entries that renewing (a certificate of one kind) cannot
/// satisfy: a certificate issued in a renewal, moments before, matched
/// them. An entry without notBefore that matches what every certificate of
/// the node carries (`kind: Group, group: system:nodes`) is one for good;
/// one whose notBefore has passed and still matches a new certificate (the
/// signer's clock is behind, or it backdates by more than 5 minutes), until
/// the next renewal at the deadline. An entry whose notBefore is still to
/// come is not one: the certificate is renewed after it. Pure; its keeper
/// decides how long it is kept.
///
/// Entries are compared whole: an entry that is edited (given a notBefore,
/// say) is a new entry and judged afresh.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Unsatisfiable {
    entries: Vec<Revocation>,
}

impl Unsatisfiable {
    /// The entries as kept (say, read back from the state directory).
    pub fn from_entries(entries: Vec<Revocation>) -> Self {
        let mut known = Self::default();
        known.merge(&Self { entries });
        known
    }

    pub fn entries(&self) -> &[Revocation] {
        &self.entries
    }

    /// Adds the entries of `other` not known yet.
    pub fn merge(&mut self, other: &Self) {
        for r in &other.entries {
            if !self.contains(r) {
                self.entries.push(r.clone());
            }
        }
    }

    /// Learns from `issued`, a certificate a renewal has just obtained at
    /// `now`: the entries of `listed` it matches are unsatisfiable, except
    /// those whose notBefore is still to come. Returns those that were not
    /// known before.
    pub fn learn(
        &mut self,
        listed: &[Revocation],
        issued: &CertFacts,
        now: i64,
    ) -> Vec<Revocation> {
        let mut found = Vec::new();
        for r in listed {
            let takes_effect_later = matches!(r.cutoff(), Ok(Some(cutoff)) if cutoff > now);
            if r.matches(issued) == Ok(true) && !takes_effect_later && !self.contains(r) {
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

/// When the agent first saw each revocation entry match a certificate of
/// the node (Unix seconds): the revocation spread counts from then, so a
/// pass that runs again (woken by the watch, or after a restart of the
/// agent, when its keeper persists it) does not push the renewal back.
/// Entries are compared whole, as in [`Unsatisfiable`]. Pure; its keeper
/// decides how long it is kept.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FirstSeen {
    entries: Vec<(Revocation, i64)>,
}

impl FirstSeen {
    /// The entries as kept; an entry given twice keeps its earliest time.
    pub fn from_entries(entries: Vec<(Revocation, i64)>) -> Self {
        let mut seen = Self::default();
        seen.merge(&Self { entries });
        seen
    }

    pub fn entries(&self) -> &[(Revocation, i64)] {
        &self.entries
    }

    /// When `entry` was first seen to match, if it was.
    pub fn at(&self, entry: &Revocation) -> Option<i64> {
        self.entries
            .iter()
            .find(|(r, _)| r == entry)
            .map(|(_, at)| *at)
    }

    /// Notes `now` for each entry of `listed` that `current` matches and
    /// that has no time yet.
    pub fn note(&mut self, listed: &[Revocation], current: &CertFacts, now: i64) {
        for r in listed {
            if r.matches(current) == Ok(true) && self.at(r).is_none() {
                self.entries.push((r.clone(), now));
            }
        }
    }

    /// Adds the entries of `other`, each with the earlier of the two times.
    pub fn merge(&mut self, other: &Self) {
        for (r, at) in &other.entries {
            match self.entries.iter_mut().find(|(known, _)| known == r) {
                Some((_, known_at)) => *known_at = (*known_at).min(*at),
                None => self.entries.push((r.clone(), *at)),
            }
        }
    }

    /// Forgets the entries that are no longer listed exactly so. Only for a
    /// complete list.
    pub fn retain_listed(&mut self, listed: &[Revocation]) {
        self.entries.retain(|(r, _)| listed.contains(r));
    }

    /// Forgets the entries that none of `current` matches (the certificates
    /// were renewed): one that matches again later is seen afresh.
    pub fn retain_matching(&mut self, current: &[CertFacts]) {
        self.entries
            .retain(|(r, _)| current.iter().any(|c| r.matches(c) == Ok(true)));
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]
mod tests {
    use super::*;
    use crate::kubelet::revocation::SIGNER_BACKDATE;
    use crate::time::rfc3339;

    fn facts(node: &str) -> CertFacts {
        CertFacts::example(node)
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
        assert_eq!(known.learn(&only_group, &issued, 1_000_005), only_group);
        assert_eq!(known.matching(&current).collect::<Vec<_>>(), [&group]);
        let seen = FirstSeen::default();
        let context = RevocationContext {
            unsatisfiable: &known,
            first_seen: &seen,
            spread: Duration::ZERO,
        };

        let before_deadline = 1_000_010;
        let (d, _) = decide_except(Some(&current), "n1", before_deadline, &only_group, context);
        assert!(
            matches!(d, Decision::RenewAt { deadline, .. } if deadline > before_deadline),
            "{d:?}"
        );
        let past_deadline = 1_090_000;
        let (d, _) = decide_except(Some(&current), "n1", past_deadline, &only_group, context);
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
            context,
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
        let now = 1_000_010;
        let mut known = Unsatisfiable::default();
        assert_eq!(
            known.learn(&listed, &issued, now),
            vec![group.clone()],
            "only what the new certificate matches"
        );
        assert!(
            known.learn(&listed, &issued, now).is_empty(),
            "known already"
        );

        // Given a notBefore that has passed, later than the new
        // certificate's issue time (its notBefore + the signer's backdate).
        let later = issued.not_before + SIGNER_BACKDATE + 100;
        let mut edited = group.clone();
        edited.not_before = Some(rfc3339(later));
        let only_edited = vec![edited];
        known.retain_listed(&only_edited);
        assert!(!known.contains(&group), "an edited entry is judged afresh");
        assert_eq!(known.learn(&only_edited, &issued, later), only_edited);
        known.retain_listed(&[]);
        assert_eq!(
            known,
            Unsatisfiable::default(),
            "a deleted entry is forgotten"
        );
    }

    /// The default spread, and a node whose share of it is well inside it.
    const SPREAD: Duration = Duration::from_secs(300);

    fn spread_context<'a>(
        known: &'a Unsatisfiable,
        seen: &'a FirstSeen,
        spread: Duration,
    ) -> RevocationContext<'a> {
        RevocationContext {
            unsatisfiable: known,
            first_seen: seen,
            spread,
        }
    }

    /// A node name whose share of `SPREAD` is at least a minute.
    fn node_with_a_late_offset() -> String {
        (0..)
            .map(|i| format!("node-{i}"))
            .find(|n| revocation_offset(n, SPREAD) >= 60)
            .unwrap()
    }

    #[test]
    fn revocation_offsets_are_stable_per_node_inside_the_spread_and_spread_5000_nodes() {
        assert_eq!(revocation_offset("node-a", Duration::ZERO), 0);
        assert_eq!(
            revocation_offset("node-a", SPREAD),
            revocation_offset("node-a", SPREAD)
        );
        assert_ne!(
            revocation_offset("node-a", SPREAD),
            revocation_offset("node-b", SPREAD)
        );
        assert!(revocation_offset("node-a", Duration::from_secs(u64::MAX)) > 0);
        let mut per_second = std::collections::BTreeMap::<i64, usize>::new();
        for i in 0..5000 {
            let offset = revocation_offset(&format!("aks-nodepool1-12345678-vmss{i:06}"), SPREAD);
            assert!((0..300).contains(&offset), "{offset}");
            *per_second.entry(offset).or_default() += 1;
        }
        // 5000 / 300 = 16.7 a second on average; no second gets twice that.
        let peak = per_second.values().copied().max().unwrap();
        assert!(peak <= 33, "peak {peak} renewals in one second");
        assert_eq!(per_second.len(), 300, "every second of the spread is used");
    }

    /// The watch wakes every node in the same second: a revoked certificate
    /// renews at its node's offset after the revocation was seen, not at
    /// once, and a later pass does not push that time back.
    #[test]
    fn a_revoked_certificate_renews_at_its_nodes_offset_after_the_revocation_was_seen() {
        let node = node_with_a_late_offset();
        let offset = revocation_offset(&node, SPREAD);
        let current = facts(&node);
        let group = rev("Group", "group", "system:nodes");
        let listed = vec![group.clone()];
        let known = Unsatisfiable::default();
        let seen_at = 1_000_010;
        let mut seen = FirstSeen::default();
        seen.note(&listed, &current, seen_at);
        assert_eq!(seen.at(&group), Some(seen_at));

        let (d, _) = decide_except(
            Some(&current),
            &node,
            seen_at,
            &listed,
            spread_context(&known, &seen, SPREAD),
        );
        let normal = deadline(
            current.not_before,
            current.not_after,
            renewal_fraction(&node),
        );
        assert_eq!(
            d,
            Decision::RenewRevokedAt {
                at: seen_at + offset,
                label: "incident 42".into(),
                deadline: normal,
            }
        );
        // Woken again 30 s later (or restarted with what it kept): same time.
        seen.note(&listed, &current, seen_at + 30);
        let (d, _) = decide_except(
            Some(&current),
            &node,
            seen_at + 30,
            &listed,
            spread_context(&known, &seen, SPREAD),
        );
        assert!(
            matches!(d, Decision::RenewRevokedAt { at, .. } if at == seen_at + offset),
            "{d:?}"
        );
        // Its time has come.
        let (d, _) = decide_except(
            Some(&current),
            &node,
            seen_at + offset,
            &listed,
            spread_context(&known, &seen, SPREAD),
        );
        assert_eq!(
            d,
            Decision::RenewNow(RenewReason::Revoked("incident 42".into()))
        );
    }

    /// Never past the certificate's expiry: an expired certificate renews
    /// at once, so does one past its normal deadline, and a spread longer
    /// than the time to the deadline ends at the deadline.
    #[test]
    fn an_expired_or_nearly_expired_revoked_certificate_renews_at_once() {
        let node = node_with_a_late_offset();
        let current = facts(&node);
        let listed = vec![rev("Group", "group", "system:nodes")];
        let known = Unsatisfiable::default();
        let seen = FirstSeen::default();
        let context = spread_context(&known, &seen, SPREAD);
        let normal = deadline(
            current.not_before,
            current.not_after,
            renewal_fraction(&node),
        );

        let (d, _) = decide_except(Some(&current), &node, current.not_after, &listed, context);
        assert_eq!(d, Decision::RenewNow(RenewReason::Expired));
        let (d, _) = decide_except(Some(&current), &node, normal, &listed, context);
        assert_eq!(
            d,
            Decision::RenewNow(RenewReason::Revoked("incident 42".into())),
            "past its deadline: at once"
        );
        let (d, _) = decide_except(Some(&current), &node, normal - 10, &listed, context);
        assert!(
            matches!(d, Decision::RenewRevokedAt { at, .. } if at == normal),
            "the spread ends at the deadline: {d:?}"
        );
        let huge = spread_context(&known, &seen, Duration::from_secs(10 * 365 * 86_400));
        let (d, _) = decide_except(Some(&current), &node, 1_000_010, &listed, huge);
        assert!(
            matches!(d, Decision::RenewRevokedAt { at, .. } if at == normal),
            "{d:?}"
        );
    }

    /// A notBefore still to come: every certificate issued before it is
    /// revoked, so the node renews after it (plus its share of the spread),
    /// and a certificate a renewal got before it does not make the entry
    /// unsatisfiable.
    #[test]
    fn a_revocation_that_takes_effect_later_renews_after_it() {
        let node = node_with_a_late_offset();
        let offset = revocation_offset(&node, SPREAD);
        let current = facts(&node);
        let now = 1_000_010;
        let cutoff = now + 1000;
        let mut future = rev("Group", "group", "system:nodes");
        future.not_before = Some(rfc3339(cutoff));
        let listed = vec![future.clone()];
        let mut known = Unsatisfiable::default();
        let seen = FirstSeen::default();
        let (d, _) = decide_except(
            Some(&current),
            &node,
            now,
            &listed,
            spread_context(&known, &seen, SPREAD),
        );
        assert!(
            matches!(d, Decision::RenewRevokedAt { at, .. } if at == cutoff + offset),
            "{d:?}"
        );
        let issued_now = CertFacts {
            not_before: now - SIGNER_BACKDATE,
            not_after: now + 100_000,
            ..facts(&node)
        };
        assert!(future.matches(&issued_now).unwrap());
        assert!(
            known.learn(&listed, &issued_now, now).is_empty(),
            "not unsatisfiable: it takes effect later"
        );
        assert_eq!(
            known.learn(&listed, &issued_now, cutoff),
            listed,
            "past its notBefore and still matching a new certificate: unsatisfiable"
        );
    }

    #[test]
    fn first_sightings_keep_the_earliest_time_and_are_forgotten_when_nothing_matches() {
        let current = facts("n1");
        let group = rev("Group", "group", "system:nodes");
        let other = rev("serialnumber", "serialNumber", "FFFF");
        let listed = vec![group.clone(), other.clone()];
        let mut seen = FirstSeen::default();
        seen.note(&listed, &current, 100);
        assert_eq!(seen.entries(), [(group.clone(), 100)], "only what matches");
        seen.merge(&FirstSeen::from_entries(vec![
            (group.clone(), 50),
            (other.clone(), 70),
        ]));
        assert_eq!(seen.at(&group), Some(50));
        assert_eq!(seen.at(&other), Some(70));
        seen.retain_listed(std::slice::from_ref(&group));
        assert_eq!(seen.at(&other), None);
        let renewed = CertFacts {
            organizations: vec!["system:other".into()],
            ..facts("n1")
        };
        seen.retain_matching(std::slice::from_ref(&current));
        assert_eq!(seen.at(&group), Some(50));
        seen.retain_matching(&[renewed]);
        assert_eq!(seen, FirstSeen::default());
    }
}
