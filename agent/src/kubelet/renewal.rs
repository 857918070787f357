//! When to renew a kubelet certificate, and whether a revocation applies.
//! Pure: facts about a certificate and the time in, a [`Decision`] out.
//!
//! The deadline is `notBefore + f × lifetime`, where `f` in [0.70, 0.80] is
//! derived from the node name alone: the same node always renews at the same
//! point of its certificate's life, a fleet that joined in one minute spreads
//! its renewals over a tenth of the lifetime, and no node waits past 80 %.

use std::net::IpAddr;

use serde::Deserialize;

/// The earliest and latest point of a certificate's life to renew at.
pub const FRACTION_MIN: f64 = 0.70;
pub const FRACTION_MAX: f64 = 0.80;

/// The node's renewal fraction in [0.70, 0.80), from SHA-256 of its name.
pub fn renewal_fraction(node_name: &str) -> f64 {
    let digest = openssl::sha::sha256(node_name.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    // 53 bits give an exactly representable, uniform value in [0, 1).
    let unit = (u64::from_be_bytes(first) >> 11) as f64 / (1u64 << 53) as f64;
    FRACTION_MIN + (FRACTION_MAX - FRACTION_MIN) * unit
}

/// Unix time at which a certificate valid over `[not_before, not_after]` is renewed.
pub fn deadline(not_before: i64, not_after: i64, fraction: f64) -> i64 {
    let lifetime = (not_after - not_before).max(0) as f64;
    not_before + (lifetime * fraction).floor() as i64
}

/// What the renewal logic needs to know about the current certificate.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CertFacts {
    /// Upper-case hex without separators or leading zeros.
    pub serial: String,
    pub common_name: Option<String>,
    pub organizations: Vec<String>,
    pub dns_names: Vec<String>,
    pub ips: Vec<IpAddr>,
    pub not_before: i64,
    pub not_after: i64,
    pub key_matches: bool,
}

/// One entry of a `RenewRevocation` object (NODE-FACTS §6).
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Revocation {
    /// `serialnumber`, `Group`, `DNS` or `IP` (case-insensitive).
    pub kind: String,
    #[serde(default)]
    pub serial_number: Option<String>,
    #[serde(default)]
    pub group: Option<String>,
    #[serde(default)]
    pub dns: Option<String>,
    #[serde(default)]
    pub ip: Option<String>,
    /// RFC 3339: only certificates issued before it are revoked.
    #[serde(default)]
    pub not_before: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
}

/// Why a revocation entry cannot be applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RevocationError {
    #[error("revocation kind {0:?} is unknown; use serialnumber, Group, DNS or IP")]
    UnknownKind(String),
    #[error("revocation of kind {kind} lacks its field `{field}`")]
    MissingField { kind: String, field: &'static str },
    #[error("revocation notBefore {0:?} is not an RFC 3339 time such as 2026-11-22T00:00:00Z")]
    BadTime(String),
    #[error("revocation ip {0:?} is not an IP address")]
    BadIp(String),
}

/// Normalises a hex serial: no `:`, no leading zeros, upper case.
pub fn normalize_serial(s: &str) -> String {
    let hex: String = s
        .chars()
        .filter(|c| *c != ':' && !c.is_whitespace())
        .collect::<String>()
        .to_ascii_uppercase();
    let trimmed = hex.trim_start_matches('0');
    if trimmed.is_empty() {
        "0".to_string()
    } else {
        trimmed.to_string()
    }
}

impl Revocation {
    /// A short label for logs: the description, or what the entry matches.
    pub fn label(&self) -> String {
        if let Some(d) = &self.description {
            return d.clone();
        }
        let what = self
            .serial_number
            .as_ref()
            .or(self.group.as_ref())
            .or(self.dns.as_ref())
            .or(self.ip.as_ref());
        format!("{} {}", self.kind, what.map(String::as_str).unwrap_or("?"))
    }

    /// Whether this entry revokes a certificate with `facts`.
    pub fn matches(&self, facts: &CertFacts) -> Result<bool, RevocationError> {
        if let Some(nb) = &self.not_before {
            let cutoff = crate::x509::time::parse_rfc3339(nb)
                .ok_or_else(|| RevocationError::BadTime(nb.clone()))?;
            if facts.not_before >= cutoff {
                return Ok(false);
            }
        }
        let missing = |field| RevocationError::MissingField {
            kind: self.kind.clone(),
            field,
        };
        match self.kind.to_ascii_lowercase().as_str() {
            "serialnumber" => {
                let want = self
                    .serial_number
                    .as_deref()
                    .ok_or_else(|| missing("serialNumber"))?;
                Ok(normalize_serial(want) == normalize_serial(&facts.serial))
            }
            "group" => {
                let want = self.group.as_deref().ok_or_else(|| missing("group"))?;
                Ok(facts.organizations.iter().any(|o| o == want))
            }
            "dns" => {
                let want = self
                    .dns
                    .as_deref()
                    .ok_or_else(|| missing("dns"))?
                    .to_ascii_lowercase();
                Ok(facts.dns_names.iter().any(|d| {
                    let d = d.to_ascii_lowercase();
                    if want.starts_with('.') {
                        d.ends_with(&want)
                    } else {
                        d == want
                    }
                }))
            }
            "ip" => {
                let raw = self.ip.as_deref().ok_or_else(|| missing("ip"))?;
                let want: IpAddr = raw
                    .parse()
                    .map_err(|_| RevocationError::BadIp(raw.to_string()))?;
                Ok(facts.ips.contains(&want))
            }
            other => Err(RevocationError::UnknownKind(other.to_string())),
        }
    }
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
            Ok(true) => return (Decision::RenewNow(RenewReason::Revoked(r.label())), bad),
            Ok(false) => {}
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

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]
mod tests {
    use super::*;
    use crate::x509::time::rfc3339;

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
    fn revocations_match_by_serial_group_dns_suffix_and_ip() {
        let f = facts("n1");
        assert!(rev("serialnumber", "serialNumber", "00:0a:1b")
            .matches(&f)
            .unwrap());
        assert!(!rev("serialnumber", "serialNumber", "0A1C")
            .matches(&f)
            .unwrap());
        assert!(rev("Group", "group", "system:nodes").matches(&f).unwrap());
        assert!(!rev("Group", "group", "system:masters").matches(&f).unwrap());
        assert!(rev("DNS", "dns", ".eu.example.com").matches(&f).unwrap());
        assert!(rev("DNS", "dns", "node1.eu.example.com")
            .matches(&f)
            .unwrap());
        assert!(
            !rev("DNS", "dns", "eu.example.com").matches(&f).unwrap(),
            "no leading dot: exact name only"
        );
        assert!(rev("IP", "ip", "10.0.0.7").matches(&f).unwrap());
        assert!(!rev("IP", "ip", "10.0.0.8").matches(&f).unwrap());
    }

    #[test]
    fn revocation_with_not_before_spares_certificates_issued_after_it() {
        let f = facts("n1");
        let mut r = rev("Group", "group", "system:nodes");
        r.not_before = Some(rfc3339(f.not_before + 1));
        assert!(r.matches(&f).unwrap(), "issued before the cutoff: revoked");
        r.not_before = Some(rfc3339(f.not_before));
        assert!(
            !r.matches(&f).unwrap(),
            "issued at or after the cutoff: kept"
        );
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
}
