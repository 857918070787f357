//! Decides the desired CA set from the validated inputs, the remembered
//! per-key state and what is installed. Pure: data in, a [`Plan`] out.
//!
//! The rules that keep a node safe live here:
//! - a rejected key keeps its last good version (from the remembered state);
//! - a source that cannot be read keeps all of its keys' last good versions;
//! - a key that is gone from a readable source is removed;
//! - the same fingerprint in several keys is installed once;
//! - more certificates than the limit changes nothing at all.

use std::collections::BTreeMap;

pub use crate::config::DEFAULT_MAX_CERTIFICATES;
use crate::trust::validate::{Finding, FindingKind, KeyVerdict};
use crate::x509::cert::{CertInfo, Fingerprint};

/// Remembered fingerprints per source, per key: the last good version of each key.
pub type KeyState = BTreeMap<String, BTreeMap<String, Vec<Fingerprint>>>;

/// One configured source as read right now.
#[derive(Debug)]
pub struct SourceInput {
    /// The source's path as configured; the first level of [`KeyState`].
    pub source: String,
    /// The verdict of every key, or why the source could not be read at all.
    pub keys: Result<Vec<KeyVerdict>, Finding>,
    /// A Secret directory's bytes, key by key, as read for this pass (what
    /// the fleet view's input digest covers); `None` for a provisioning
    /// file, or when the directory or one of its keys could not be read.
    pub content: Option<BTreeMap<String, Vec<u8>>>,
}

/// A CA the node should trust, with every key that asks for it.
#[derive(Clone, Debug)]
pub struct DesiredCa {
    pub cert: CertInfo,
    /// `(source, key)` pairs, sorted.
    pub keys: Vec<(String, String)>,
}

#[derive(Debug, Default)]
pub struct Plan {
    pub desired: BTreeMap<Fingerprint, DesiredCa>,
    pub keys: KeyState,
    pub install: Vec<Fingerprint>,
    pub remove: Vec<Fingerprint>,
    /// Findings the plan adds on top of the per-key ones.
    pub findings: Vec<Finding>,
    /// True when the inputs were refused as a whole and nothing changes.
    pub held_back: bool,
}

impl Plan {
    pub fn is_noop(&self) -> bool {
        self.install.is_empty() && self.remove.is_empty()
    }
}

pub fn plan(
    inputs: &[SourceInput],
    previous: &KeyState,
    installed: &BTreeMap<Fingerprint, CertInfo>,
    max_certificates: usize,
) -> Plan {
    let mut desired: BTreeMap<Fingerprint, DesiredCa> = BTreeMap::new();
    let mut keys = KeyState::new();
    let mut findings = Vec::new();
    let empty = BTreeMap::new();

    for input in inputs {
        let remembered = previous.get(&input.source).unwrap_or(&empty);
        let source_keys = keys.entry(input.source.clone()).or_default();
        match &input.keys {
            Err(_) => {
                // Unreadable source: every key keeps its last good version.
                for (key, fps) in remembered {
                    carry(
                        &input.source,
                        key,
                        fps,
                        installed,
                        &mut desired,
                        &mut findings,
                    );
                    source_keys.insert(key.clone(), fps.clone());
                }
            }
            Ok(verdicts) => {
                for verdict in verdicts {
                    if verdict.rejected {
                        if let Some(fps) = remembered.get(&verdict.key) {
                            carry(
                                &input.source,
                                &verdict.key,
                                fps,
                                installed,
                                &mut desired,
                                &mut findings,
                            );
                            source_keys.insert(verdict.key.clone(), fps.clone());
                        }
                        continue;
                    }
                    let mut fps = Vec::new();
                    for cert in &verdict.certs {
                        fps.push(cert.fingerprint);
                        add(&mut desired, cert, &input.source, &verdict.key);
                    }
                    source_keys.insert(verdict.key.clone(), fps);
                }
            }
        }
        if source_keys.is_empty() {
            keys.remove(&input.source);
        }
    }

    if desired.len() > max_certificates {
        findings.extend(over_limit(&desired, installed, max_certificates));
        return Plan {
            desired: installed
                .iter()
                .map(|(fp, cert)| {
                    (
                        *fp,
                        DesiredCa {
                            cert: cert.clone(),
                            keys: Vec::new(),
                        },
                    )
                })
                .collect(),
            keys: previous.clone(),
            install: Vec::new(),
            remove: Vec::new(),
            findings,
            held_back: true,
        };
    }

    let install = desired
        .keys()
        .filter(|fp| !installed.contains_key(fp))
        .copied()
        .collect();
    let remove = installed
        .keys()
        .filter(|fp| !desired.contains_key(fp))
        .copied()
        .collect();
    Plan {
        desired,
        keys,
        install,
        remove,
        findings,
        held_back: false,
    }
}

/// The findings for a desired set over the limit: one per key that brings a
/// certificate not installed yet (the keys that pushed the set over), or,
/// when every desired certificate is installed already (the limit was
/// lowered), one for the whole input.
fn over_limit(
    desired: &BTreeMap<Fingerprint, DesiredCa>,
    installed: &BTreeMap<Fingerprint, CertInfo>,
    max_certificates: usize,
) -> Vec<Finding> {
    let total = desired.len();
    let unchanged = "nothing was changed and the last good set stays installed";
    let mut new_per_key: BTreeMap<&str, usize> = BTreeMap::new();
    for (fp, ca) in desired {
        if !installed.contains_key(fp) {
            for (_, key) in &ca.keys {
                *new_per_key.entry(key.as_str()).or_default() += 1;
            }
        }
    }
    if new_per_key.is_empty() {
        return vec![Finding::error(
            FindingKind::TooManyCertificates,
            "(all sources)",
            None,
            format!(
                "the inputs hold {total} distinct certificates, all installed already, over the limit of {max_certificates}; {unchanged}"
            ),
            "raise max-certificates back to at least the installed count, or remove certificates the nodes do not need",
        )];
    }
    new_per_key
        .into_iter()
        .map(|(key, n)| {
            Finding::error(
                FindingKind::TooManyCertificates,
                key,
                None,
                format!(
                    "this key brings {n} certificate(s) not installed yet, and the inputs would hold {total} distinct certificates, over the limit of {max_certificates}; {unchanged}"
                ),
                "remove this key (or other certificates the nodes do not need), or raise max-certificates in the agent's configuration",
            )
        })
        .collect()
}

fn add(desired: &mut BTreeMap<Fingerprint, DesiredCa>, cert: &CertInfo, source: &str, key: &str) {
    let entry = desired
        .entry(cert.fingerprint)
        .or_insert_with(|| DesiredCa {
            cert: cert.clone(),
            keys: Vec::new(),
        });
    let pair = (source.to_string(), key.to_string());
    if let Err(at) = entry.keys.binary_search(&pair) {
        entry.keys.insert(at, pair);
    }
}

/// Keeps a key's last good version installed.
fn carry(
    source: &str,
    key: &str,
    fps: &[Fingerprint],
    installed: &BTreeMap<Fingerprint, CertInfo>,
    desired: &mut BTreeMap<Fingerprint, DesiredCa>,
    findings: &mut Vec<Finding>,
) {
    for fp in fps {
        match installed.get(fp) {
            Some(cert) => add(desired, cert, source, key),
            None => findings.push(Finding::error(
                FindingKind::Unreadable,
                key,
                None,
                format!("the last good version of this key (SHA256 {}) is no longer in the trust store, so it cannot be kept", fp.short()),
                "publish a valid version of this key",
            )),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]
mod tests {
    use super::*;
    use crate::time::now_unix;
    use crate::trust::validate::validate_key;
    use crate::x509::testpki;

    fn pem(cn: &str) -> String {
        testpki::pem(&testpki::good_ca(cn).cert)
    }

    fn input(source: &str, keys: &[(&str, &str)]) -> SourceInput {
        SourceInput {
            source: source.into(),
            keys: Ok(keys
                .iter()
                .map(|(k, v)| validate_key(k, v.as_bytes(), now_unix()))
                .collect()),
            content: None,
        }
    }

    fn installed_from(plan: &Plan) -> BTreeMap<Fingerprint, CertInfo> {
        plan.desired
            .iter()
            .map(|(fp, d)| (*fp, d.cert.clone()))
            .collect()
    }

    #[test]
    fn first_run_installs_every_valid_ca() {
        let (a, b) = (pem("A"), pem("B"));
        let p = plan(
            &[input("/s", &[("ca1.crt", &a), ("ca2.crt", &b)])],
            &KeyState::new(),
            &BTreeMap::new(),
            10,
        );
        assert_eq!(p.install.len(), 2);
        assert!(p.remove.is_empty());
        assert_eq!(p.keys["/s"].len(), 2);
    }

    #[test]
    fn identical_inputs_after_install_are_a_noop() {
        let a = pem("A");
        let inputs = [input("/s", &[("ca1.crt", &a)])];
        let first = plan(&inputs, &KeyState::new(), &BTreeMap::new(), 10);
        let second = plan(&inputs, &first.keys, &installed_from(&first), 10);
        assert!(second.is_noop());
        assert_eq!(second.keys, first.keys);
    }

    #[test]
    fn broken_new_version_keeps_the_last_good_version() {
        let a = pem("A");
        let first = plan(
            &[input("/s", &[("ca1.crt", &a)])],
            &KeyState::new(),
            &BTreeMap::new(),
            10,
        );
        let second = plan(
            &[input("/s", &[("ca1.crt", "garbage")])],
            &first.keys,
            &installed_from(&first),
            10,
        );
        assert!(second.is_noop(), "the good version must stay installed");
        assert_eq!(
            second.keys, first.keys,
            "the remembered version stays the good one"
        );
    }

    #[test]
    fn bad_key_never_blocks_a_good_key() {
        let a = pem("A");
        let p = plan(
            &[input("/s", &[("bad.crt", "garbage"), ("good.crt", &a)])],
            &KeyState::new(),
            &BTreeMap::new(),
            10,
        );
        assert_eq!(p.install.len(), 1);
        assert!(!p.keys["/s"].contains_key("bad.crt"));
    }

    #[test]
    fn removed_key_is_uninstalled() {
        let (a, b) = (pem("A"), pem("B"));
        let first = plan(
            &[input("/s", &[("ca1.crt", &a), ("ca2.crt", &b)])],
            &KeyState::new(),
            &BTreeMap::new(),
            10,
        );
        let second = plan(
            &[input("/s", &[("ca2.crt", &b)])],
            &first.keys,
            &installed_from(&first),
            10,
        );
        assert_eq!(second.remove.len(), 1);
        assert!(second.install.is_empty());
        assert!(!second.keys["/s"].contains_key("ca1.crt"));
    }

    #[test]
    fn unreadable_source_keeps_all_of_its_keys() {
        let a = pem("A");
        let first = plan(
            &[input("/s", &[("ca1.crt", &a)])],
            &KeyState::new(),
            &BTreeMap::new(),
            10,
        );
        let gone = SourceInput {
            source: "/s".into(),
            content: None,
            keys: Err(Finding::error(
                FindingKind::SourceUnavailable,
                "/s",
                None,
                "missing",
                "mount it",
            )),
        };
        let second = plan(&[gone], &first.keys, &installed_from(&first), 10);
        assert!(second.is_noop());
        assert_eq!(second.keys, first.keys);
    }

    #[test]
    fn same_ca_in_two_keys_is_installed_once_and_kept_while_either_has_it() {
        let a = pem("A");
        let first = plan(
            &[input("/s", &[("x.crt", &a), ("y.crt", &a)])],
            &KeyState::new(),
            &BTreeMap::new(),
            10,
        );
        assert_eq!(first.install.len(), 1);
        assert_eq!(first.desired.values().next().unwrap().keys.len(), 2);
        let second = plan(
            &[input("/s", &[("y.crt", &a)])],
            &first.keys,
            &installed_from(&first),
            10,
        );
        assert!(second.is_noop());
    }

    #[test]
    fn over_the_limit_changes_nothing() {
        let a = pem("A");
        let first = plan(
            &[input("/s", &[("a.crt", &a)])],
            &KeyState::new(),
            &BTreeMap::new(),
            2,
        );
        let many: Vec<String> = (0..3).map(|i| pem(&format!("C{i}"))).collect();
        let keys: Vec<(String, &str)> = many
            .iter()
            .enumerate()
            .map(|(i, p)| (format!("k{i}.crt"), p.as_str()))
            .collect();
        let refs: Vec<(&str, &str)> = keys.iter().map(|(k, v)| (k.as_str(), *v)).collect();
        let second = plan(
            &[input("/s", &refs)],
            &first.keys,
            &installed_from(&first),
            2,
        );
        assert!(second.held_back);
        assert!(second.is_noop());
        assert_eq!(second.keys, first.keys);
        let over: Vec<_> = second
            .findings
            .iter()
            .filter(|f| f.kind == FindingKind::TooManyCertificates)
            .collect();
        assert!(!over.is_empty());
        // Each names a key that brings a certificate not installed yet.
        for f in &over {
            assert!(f.key.starts_with('k'), "{f}");
            assert!(f.problem.contains("not installed yet"), "{f}");
        }
        // A lowered limit, with everything installed already: the whole input.
        let lowered = plan(
            &[input("/s", &[("a.crt", &a)])],
            &first.keys,
            &installed_from(&first),
            0,
        );
        assert!(lowered
            .findings
            .iter()
            .any(|f| f.key == "(all sources)" && f.problem.contains("all installed already")));
    }

    #[test]
    fn source_no_longer_configured_is_removed() {
        let a = pem("A");
        let first = plan(
            &[input("/old", &[("a.crt", &a)])],
            &KeyState::new(),
            &BTreeMap::new(),
            10,
        );
        let second = plan(
            &[input("/new", &[])],
            &first.keys,
            &installed_from(&first),
            10,
        );
        assert_eq!(second.remove.len(), 1);
        assert!(second.keys.is_empty());
    }

    #[test]
    fn rejected_key_whose_anchor_vanished_is_reported() {
        let a = pem("A");
        let first = plan(
            &[input("/s", &[("ca1.crt", &a)])],
            &KeyState::new(),
            &BTreeMap::new(),
            10,
        );
        let second = plan(
            &[input("/s", &[("ca1.crt", "garbage")])],
            &first.keys,
            &BTreeMap::new(),
            10,
        );
        assert!(second.is_noop());
        assert!(second
            .findings
            .iter()
            .any(|f| f.kind == FindingKind::Unreadable && f.key == "ca1.crt"));
    }
}
