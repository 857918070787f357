//! The fleet schema: the names an agent publishes on its Node and the
//! digests in them. Pure: no I/O. Changing anything here changes what
//! operators' selectors, dashboards and the `fleet` command depend on
//! (docs/fleet.md, "What each agent publishes"), so do it on purpose.

use std::collections::BTreeMap;

use crate::x509::cert::Fingerprint;

/// Label with the first [`SHORT_DIGEST_LEN`] hex digits of the installed
/// trust set's digest: `kubectl get nodes -L node-cert-agent.dev/trust-set`.
pub const TRUST_SET_LABEL: &str = "node-cert-agent.dev/trust-set";
/// How image pulls on the node get the custom CAs: `live` (containerd
/// reads an added CA at the next pull, no restart) or `restart` (each
/// change restarts containerd): `kubectl get nodes -l
/// node-cert-agent.dev/pull-trust=restart` lists the nodes that need
/// restarts for changes, and `status` on one of them says why.
pub const PULL_TRUST_LABEL: &str = "node-cert-agent.dev/pull-trust";
/// The full (64 hex) digest of the installed trust set.
pub const TRUST_SET_ANNOTATION: &str = "node-cert-agent.dev/trust-set-digest";
/// The number of CAs in the installed trust set (decimal).
pub const CA_COUNT_ANNOTATION: &str = "node-cert-agent.dev/ca-count";
/// The full digest of the input content the node last acted on.
pub const INPUT_DIGEST_ANNOTATION: &str = "node-cert-agent.dev/input-digest";
/// The kubelet client certificate's notAfter (RFC 3339, UTC).
pub const KUBELET_CLIENT_NOT_AFTER_ANNOTATION: &str =
    "node-cert-agent.dev/kubelet-client-not-after";
/// The agent's version (`CARGO_PKG_VERSION`).
pub const VERSION_ANNOTATION: &str = "node-cert-agent.dev/version";
/// When the published state last changed (RFC 3339, UTC).
pub const CHANGED_AT_ANNOTATION: &str = "node-cert-agent.dev/changed-at";

/// Hex digits of the digest in [`TRUST_SET_LABEL`] (a label value holds
/// at most 63 characters; 12 hex digits are 48 bits).
pub const SHORT_DIGEST_LEN: usize = 12;

/// The Node condition type for the custom CA trust.
pub const TRUST_CONDITION: &str = "NodeCertAgentTrustConverged";
/// The Node condition type for the kubelet certificates.
pub const KUBELET_CONDITION: &str = "NodeCertAgentKubeletCertificatesValid";

/// Reasons of [`TRUST_CONDITION`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum TrustReason {
    /// True: the installed set is the desired set and the last pass succeeded.
    Converged,
    /// False: an input key or file was refused; the last good CAs stay.
    InputInvalid,
    /// False: the distro's refresh tool failed.
    RefreshFailed,
    /// False: a restart of an allowlisted unit failed.
    RestartFailed,
    /// False: a source (the Secret through the API, say) is not synced.
    SourceNotSynced,
}

impl TrustReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Converged => "Converged",
            Self::InputInvalid => "InputInvalid",
            Self::RefreshFailed => "RefreshFailed",
            Self::RestartFailed => "RestartFailed",
            Self::SourceNotSynced => "SourceNotSynced",
        }
    }

    pub fn status(self) -> bool {
        self == Self::Converged
    }
}

/// Reasons of [`KUBELET_CONDITION`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum KubeletReason {
    /// True: valid, and renewed or renewable in time.
    Valid,
    /// False: the last renewal attempt failed.
    RenewalFailing,
    /// False: past its renewal deadline and not yet renewed.
    Expiring,
    /// False: a RenewRevocation matches it and it is not yet replaced.
    Revoked,
    /// False: kubelet's kubeconfig does not point at the current certificate.
    KubeconfigMismatch,
}

impl KubeletReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Valid => "Valid",
            Self::RenewalFailing => "RenewalFailing",
            Self::Expiring => "Expiring",
            Self::Revoked => "Revoked",
            Self::KubeconfigMismatch => "KubeconfigMismatch",
        }
    }

    pub fn status(self) -> bool {
        self == Self::Valid
    }
}

/// The digest of a trust set: SHA-256 over the sorted, de-duplicated,
/// lowercase hex fingerprints, each followed by `\n`. The same CAs always
/// give the same digest, whatever their order, file names or PEM text; the
/// empty set has the digest of the empty string.
pub fn trust_set_digest<'a>(fingerprints: impl IntoIterator<Item = &'a Fingerprint>) -> String {
    let sorted: std::collections::BTreeSet<String> =
        fingerprints.into_iter().map(Fingerprint::hex).collect();
    let mut text = String::with_capacity(sorted.len() * 65);
    for f in sorted {
        text.push_str(&f);
        text.push('\n');
    }
    hex::encode(openssl::sha::sha256(text.as_bytes()))
}

/// The digest of the Secret content a node acted on (its `data` as mounted
/// or as read through the API): SHA-256 over, for each key in key order
/// (keys starting with `.` excluded, as in a volume), the key, `\0`, the
/// length of the bytes in decimal, `\0`, the bytes. Provisioning files are
/// node-local and not in it (the trust-set digest covers them). The `fleet`
/// command computes the same digest from the live Secret, which tells "has
/// not seen the new Secret" from "has seen it and refused a key".
pub fn input_digest(entries: &BTreeMap<String, Vec<u8>>) -> String {
    let mut h = openssl::sha::Sha256::new();
    for (name, bytes) in entries.iter().filter(|(k, _)| !k.starts_with('.')) {
        h.update(name.as_bytes());
        h.update(b"\0");
        h.update(bytes.len().to_string().as_bytes());
        h.update(b"\0");
        h.update(bytes);
    }
    hex::encode(h.finish())
}

/// The label value for a full digest.
pub fn short_digest(digest: &str) -> &str {
    digest.get(..SHORT_DIGEST_LEN).unwrap_or(digest)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fp(b: u8) -> Fingerprint {
        Fingerprint::of_der(&[b])
    }

    #[test]
    fn trust_digest_ignores_order_and_duplicates() {
        let (a, b) = (fp(1), fp(2));
        assert_eq!(trust_set_digest([&a, &b]), trust_set_digest([&b, &a, &b]));
        assert_ne!(trust_set_digest([&a]), trust_set_digest([&a, &b]));
        assert_eq!(
            trust_set_digest([]),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn input_digest_separates_names_and_bytes() {
        let one: BTreeMap<String, Vec<u8>> = [("a".to_string(), b"bc".to_vec())].into();
        let two: BTreeMap<String, Vec<u8>> = [("ab".to_string(), b"c".to_vec())].into();
        assert_ne!(input_digest(&one), input_digest(&two));
        assert_eq!(input_digest(&one), input_digest(&one.clone()));
    }

    #[test]
    fn short_digest_fits_a_label() {
        let d = trust_set_digest([&fp(3)]);
        assert_eq!(short_digest(&d).len(), SHORT_DIGEST_LEN);
        assert!(d.starts_with(short_digest(&d)));
    }
}
