//! A parsed certificate and the facts about it that the agent logs, compares
//! and installs. Pure: no I/O. The PEM written to a trust store is always
//! re-encoded from the parsed DER, so no byte of the input other than the
//! certificate itself can ever reach the store.

use std::fmt;

use openssl::asn1::{Asn1Time, Asn1TimeRef};
use openssl::x509::{X509NameRef, X509Ref, X509};

use super::name::name_to_string;
use super::{der, openssl_reason_or};
use crate::time::rfc3339;

/// What OpenSSL's silence about a certificate means.
const NOT_A_CERTIFICATE: &str = "not a valid X.509 certificate";

/// SHA-256 over the DER encoding, the identity of a CA everywhere in the agent.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Fingerprint([u8; 32]);

impl Fingerprint {
    pub fn of_der(der: &[u8]) -> Self {
        let digest = openssl::sha::sha256(der);
        Self(digest)
    }

    /// Parses the 64-character lowercase hex form.
    pub fn from_hex(s: &str) -> Option<Self> {
        if s.len() != 64 {
            return None;
        }
        let bytes = hex::decode(s).ok()?;
        let arr: [u8; 32] = bytes.try_into().ok()?;
        Some(Self(arr))
    }

    pub fn hex(&self) -> String {
        hex::encode(self.0)
    }

    /// The first 16 hex digits, for tables and short log lines.
    pub fn short(&self) -> String {
        self.hex()[..16].to_string()
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.hex())
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint({})", self.short())
    }
}

/// A certificate together with the facts operators need about it.
#[derive(Clone, Debug)]
pub struct CertInfo {
    pub fingerprint: Fingerprint,
    pub subject: String,
    pub issuer: String,
    /// Upper-case hex, as `openssl x509 -serial` prints it (`-` first if
    /// negative).
    pub serial: String,
    /// The serial number is negative (DER allows it; RFC 5280 does not).
    pub serial_negative: bool,
    /// The X.509 version: 1, 2 or 3 (v1 certificates have no extensions).
    pub version: i32,
    pub not_before: i64,
    pub not_after: i64,
    /// `Some(true)` when basicConstraints says CA:TRUE; `None` when absent.
    pub is_ca: Option<bool>,
    pub self_signed: bool,
    /// Canonical PEM re-encoded from the DER.
    pub pem: String,
}

/// Why a DER blob could not be turned into a [`CertInfo`].
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ParseCertError(String);

impl CertInfo {
    pub fn from_der(der: &[u8]) -> Result<Self, ParseCertError> {
        let cert = X509::from_der(der)
            .map_err(|e| ParseCertError(openssl_reason_or(&e, NOT_A_CERTIFICATE)))?;
        // OpenSSL's d2i can stop short of the end; trailing bytes mean the
        // input was not one certificate.
        let reencoded = cert
            .to_der()
            .map_err(|e| ParseCertError(openssl_reason_or(&e, NOT_A_CERTIFICATE)))?;
        if reencoded.len() != der.len() {
            return Err(ParseCertError(format!(
                "{} bytes of data follow the certificate",
                der.len().saturating_sub(reencoded.len())
            )));
        }
        Self::from_x509(&cert, der)
    }

    fn from_x509(cert: &X509Ref, der: &[u8]) -> Result<Self, ParseCertError> {
        let serial_bn = cert
            .serial_number()
            .to_bn()
            .map_err(|e| ParseCertError(openssl_reason_or(&e, NOT_A_CERTIFICATE)))?;
        let serial = serial_bn
            .to_hex_str()
            .map(|s| s.to_string())
            .map_err(|e| ParseCertError(openssl_reason_or(&e, NOT_A_CERTIFICATE)))?;
        let pem = cert
            .to_pem()
            .ok()
            .and_then(|p| String::from_utf8(p).ok())
            .ok_or_else(|| ParseCertError("cannot re-encode the certificate as PEM".into()))?;
        let self_signed = names_equal(cert.subject_name(), cert.issuer_name())
            && cert
                .public_key()
                .and_then(|k| cert.verify(&k))
                .unwrap_or(false);
        Ok(Self {
            fingerprint: Fingerprint::of_der(der),
            subject: name_to_string(cert.subject_name()),
            issuer: name_to_string(cert.issuer_name()),
            serial,
            serial_negative: serial_bn.is_negative(),
            // OpenSSL counts from 0 (v1), as the DER field does.
            version: cert.version() + 1,
            not_before: asn1_to_unix(cert.not_before())?,
            not_after: asn1_to_unix(cert.not_after())?,
            is_ca: der::basic_constraints_ca(der),
            self_signed,
            pem,
        })
    }

    /// Parses the first certificate of a PEM text (used for the agent's own anchors).
    pub fn from_pem(pem: &[u8]) -> Result<Self, ParseCertError> {
        let cert = X509::from_pem(pem)
            .map_err(|e| ParseCertError(openssl_reason_or(&e, NOT_A_CERTIFICATE)))?;
        let der = cert
            .to_der()
            .map_err(|e| ParseCertError(openssl_reason_or(&e, NOT_A_CERTIFICATE)))?;
        Self::from_x509(&cert, &der)
    }

    /// The certificate in the words istiod uses, so the line reads the same
    /// in any log an operator already knows.
    pub fn describe(&self) -> String {
        format!(
            "x509 cert - Issuer: \"{}\", Subject: \"{}\", SN: {}, NotBefore: \"{}\", NotAfter: \"{}\", SHA256: {}",
            self.issuer,
            self.subject,
            self.serial,
            rfc3339(self.not_before),
            rfc3339(self.not_after),
            self.fingerprint
        )
    }
}

fn names_equal(a: &X509NameRef, b: &X509NameRef) -> bool {
    match (a.to_der(), b.to_der()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

fn asn1_to_unix(t: &Asn1TimeRef) -> Result<i64, ParseCertError> {
    let epoch = Asn1Time::from_unix(0)
        .map_err(|e| ParseCertError(openssl_reason_or(&e, NOT_A_CERTIFICATE)))?;
    let diff = epoch.diff(t).map_err(|e| {
        ParseCertError(format!(
            "unreadable validity time: {}",
            openssl_reason_or(&e, NOT_A_CERTIFICATE)
        ))
    })?;
    Ok(i64::from(diff.days) * 86_400 + i64::from(diff.secs))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]
mod tests {
    use openssl::hash::MessageDigest;

    use super::*;
    use crate::x509::testpki;

    #[test]
    fn ca_info_has_every_logged_fact() {
        let ca = testpki::good_ca("Example Root");
        let der = ca.cert.to_der().unwrap();
        let info = CertInfo::from_der(&der).unwrap();
        assert_eq!(info.subject, "O=node-cert-agent tests, CN=Example Root");
        assert_eq!(info.issuer, info.subject);
        assert_eq!(info.is_ca, Some(true));
        assert!(info.self_signed);
        assert!(info.not_before < info.not_after);
        assert_eq!(info.fingerprint, Fingerprint::of_der(&der));
        assert_eq!(
            info.fingerprint.hex(),
            hex::encode(ca.cert.digest(MessageDigest::sha256()).unwrap())
        );
        let line = info.describe();
        for part in [
            "Issuer: \"O=",
            "Subject: \"O=",
            "SN: ",
            "NotBefore: \"",
            "NotAfter: \"",
            "SHA256: ",
        ] {
            assert!(line.contains(part), "{line} lacks {part}");
        }
    }

    #[test]
    fn leaf_issued_by_a_ca_is_not_self_signed() {
        let ca = testpki::good_ca("Root");
        let leaf = testpki::leaf_signed_by(&ca, "leaf");
        let info = CertInfo::from_der(&leaf.to_der().unwrap()).unwrap();
        assert!(!info.self_signed);
        assert_eq!(info.is_ca, Some(false));
    }

    #[test]
    fn trailing_bytes_after_der_are_refused() {
        let mut der = testpki::good_ca("Root").cert.to_der().unwrap();
        der.extend_from_slice(b"junk");
        let err = CertInfo::from_der(&der).unwrap_err();
        assert!(err.to_string().contains("4 bytes"), "{err}");
    }

    #[test]
    fn fingerprint_hex_round_trips() {
        let fp = Fingerprint::of_der(b"abc");
        assert_eq!(Fingerprint::from_hex(&fp.hex()), Some(fp));
        assert_eq!(Fingerprint::from_hex("zz"), None);
        assert_eq!(fp.short().len(), 16);
    }
}
