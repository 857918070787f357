//! Test PKI: CAs, server certificates for the test registry, and malformed
//! trust inputs (leaf certs, expired and not-yet-valid CAs, private keys).
//!
//! Keys are ECDSA P-256 (fast to generate). Every serial is 159 random bits,
//! so no two certificates collide. Validity starts an hour in the past to
//! tolerate clock skew and lasts about a day.

use openssl::asn1::{Asn1Integer, Asn1Time};
use openssl::bn::{BigNum, MsbOption};
use openssl::ec::{EcGroup, EcKey};
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{PKey, Private};
use openssl::x509::extension::{
    AuthorityKeyIdentifier, BasicConstraints, ExtendedKeyUsage, KeyUsage, SubjectAlternativeName,
    SubjectKeyIdentifier,
};
use openssl::x509::{X509Builder, X509Name, X509};

const HOUR: i64 = 3600;
const DAY: i64 = 24 * HOUR;

/// A certificate authority: a self-signed CA certificate and its key.
pub struct TestCa {
    cert: X509,
    key: PKey<Private>,
}

impl std::fmt::Debug for TestCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestCa")
            .field("subject", &subject_cn(&self.cert))
            .field("sha256", &self.sha256_fingerprint())
            .finish_non_exhaustive()
    }
}

impl TestCa {
    /// A valid CA named `CN=<cn>`: basicConstraints CA:TRUE (critical),
    /// keyUsage keyCertSign+cRLSign (critical), valid from 1 h ago for 1 day.
    pub fn new(cn: &str) -> TestCa {
        let now = now();
        TestCa::with_validity(cn, now - HOUR, now + DAY)
    }

    /// Like [`TestCa::new`], valid from `not_before` to `not_after` (Unix seconds).
    pub fn with_validity(cn: &str, not_before: i64, not_after: i64) -> TestCa {
        let key = new_key();
        let name = name(cn);
        let mut b = builder(&name, &name, &key, not_before, not_after);
        b.append_extension(BasicConstraints::new().critical().ca().build().unwrap())
            .unwrap();
        b.append_extension(
            KeyUsage::new()
                .critical()
                .key_cert_sign()
                .crl_sign()
                .build()
                .unwrap(),
        )
        .unwrap();
        let ski = SubjectKeyIdentifier::new()
            .build(&b.x509v3_context(None, None))
            .unwrap();
        b.append_extension(ski).unwrap();
        b.sign(&key, MessageDigest::sha256()).unwrap();
        TestCa {
            cert: b.build(),
            key,
        }
    }

    /// The CA certificate.
    pub fn cert(&self) -> &X509 {
        &self.cert
    }

    /// The CA certificate in PEM.
    pub fn cert_pem(&self) -> String {
        pem(&self.cert)
    }

    /// The CA's private key in PKCS#8 PEM.
    pub fn key_pem(&self) -> String {
        key_pem(&self.key)
    }

    /// SHA-256 over the certificate's DER, lowercase hex without separators.
    pub fn sha256_fingerprint(&self) -> String {
        sha256_fingerprint(&self.cert)
    }

    /// Issues a TLS server certificate for the DNS names `dns` (SAN DNS,
    /// EKU serverAuth, CA:FALSE), valid from 1 h ago for 1 day.
    /// Returns `(cert_pem, key_pem)`.
    pub fn issue_server_cert(&self, dns: &[&str]) -> (String, String) {
        assert!(
            !dns.is_empty(),
            "issue_server_cert: at least one DNS name is needed"
        );
        let key = new_key();
        let now = now();
        let mut b = builder(
            &name(dns[0]),
            self.cert.subject_name(),
            &key,
            now - HOUR,
            now + DAY,
        );
        b.append_extension(BasicConstraints::new().critical().build().unwrap())
            .unwrap();
        b.append_extension(
            KeyUsage::new()
                .critical()
                .digital_signature()
                .build()
                .unwrap(),
        )
        .unwrap();
        b.append_extension(ExtendedKeyUsage::new().server_auth().build().unwrap())
            .unwrap();
        let mut san = SubjectAlternativeName::new();
        for d in dns {
            san.dns(d);
        }
        let san = san
            .build(&b.x509v3_context(Some(&self.cert), None))
            .unwrap();
        b.append_extension(san).unwrap();
        self.finish_leaf(b, &key)
    }

    fn finish_leaf(&self, mut b: X509Builder, key: &PKey<Private>) -> (String, String) {
        let aki = AuthorityKeyIdentifier::new()
            .keyid(true)
            .build(&b.x509v3_context(Some(&self.cert), None))
            .unwrap();
        b.append_extension(aki).unwrap();
        b.sign(&self.key, MessageDigest::sha256()).unwrap();
        (pem(&b.build()), key_pem(key))
    }
}

/// A self-signed certificate with CA:FALSE: not a CA, so not a valid trust anchor
/// for the agent. Returns the certificate PEM.
pub fn self_signed_leaf(cn: &str) -> String {
    let key = new_key();
    let now = now();
    let name = name(cn);
    let mut b = builder(&name, &name, &key, now - HOUR, now + DAY);
    b.append_extension(BasicConstraints::new().critical().build().unwrap())
        .unwrap();
    b.append_extension(
        KeyUsage::new()
            .critical()
            .digital_signature()
            .build()
            .unwrap(),
    )
    .unwrap();
    b.sign(&key, MessageDigest::sha256()).unwrap();
    pem(&b.build())
}

/// A CA:FALSE client/server leaf `CN=<cn>` signed by `ca` (not self-signed, not
/// a CA). Returns the certificate PEM.
pub fn leaf_signed_by(ca: &TestCa, cn: &str) -> String {
    let key = new_key();
    let now = now();
    let mut b = builder(
        &name(cn),
        ca.cert.subject_name(),
        &key,
        now - HOUR,
        now + DAY,
    );
    b.append_extension(BasicConstraints::new().critical().build().unwrap())
        .unwrap();
    b.append_extension(
        KeyUsage::new()
            .critical()
            .digital_signature()
            .build()
            .unwrap(),
    )
    .unwrap();
    ca.finish_leaf(b, &key).0
}

/// A CA that expired a day ago (valid from 10 days ago until 1 day ago).
pub fn expired_ca(cn: &str) -> TestCa {
    let now = now();
    TestCa::with_validity(cn, now - 10 * DAY, now - DAY)
}

/// A CA that becomes valid only in a day (and lasts 10 days from now).
pub fn not_yet_valid_ca(cn: &str) -> TestCa {
    let now = now();
    TestCa::with_validity(cn, now + DAY, now + 10 * DAY)
}

/// A fresh private key in PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`), the kind
/// of thing that must never be accepted as a CA.
pub fn private_key_pem() -> String {
    key_pem(&new_key())
}

/// SHA-256 over a certificate's DER, lowercase hex without separators.
pub fn sha256_fingerprint(cert: &X509) -> String {
    cert.digest(MessageDigest::sha256())
        .unwrap()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The serial number of a certificate, uppercase hex as OpenSSL prints it.
pub fn serial_hex(cert: &X509) -> String {
    cert.serial_number()
        .to_bn()
        .unwrap()
        .to_hex_str()
        .unwrap()
        .to_string()
}

/// Parses one PEM certificate; panics naming the problem.
pub fn parse_pem(pem: &str) -> X509 {
    X509::from_pem(pem.as_bytes()).unwrap_or_else(|e| panic!("not a PEM certificate ({e}):\n{pem}"))
}

fn now() -> i64 {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    i64::try_from(secs).unwrap()
}

fn new_key() -> PKey<Private> {
    let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap();
    PKey::from_ec_key(EcKey::generate(&group).unwrap()).unwrap()
}

fn name(cn: &str) -> X509Name {
    let mut n = X509Name::builder().unwrap();
    n.append_entry_by_nid(Nid::COMMONNAME, cn)
        .unwrap_or_else(|e| panic!("invalid CN {cn:?}: {e}"));
    n.build()
}

fn random_serial() -> Asn1Integer {
    let mut bn = BigNum::new().unwrap();
    // 159 bits keeps the DER INTEGER positive and within 20 octets (RFC 5280).
    bn.rand(159, MsbOption::MAYBE_ZERO, false).unwrap();
    bn.to_asn1_integer().unwrap()
}

/// A v3 certificate builder with subject, issuer, key, random serial, validity.
fn builder(
    subject: &X509Name,
    issuer: &openssl::x509::X509NameRef,
    key: &PKey<Private>,
    not_before: i64,
    not_after: i64,
) -> X509Builder {
    let mut b = X509Builder::new().unwrap();
    b.set_version(2).unwrap();
    b.set_serial_number(&random_serial()).unwrap();
    b.set_subject_name(subject).unwrap();
    b.set_issuer_name(issuer).unwrap();
    b.set_pubkey(key).unwrap();
    b.set_not_before(&Asn1Time::from_unix(not_before).unwrap())
        .unwrap();
    b.set_not_after(&Asn1Time::from_unix(not_after).unwrap())
        .unwrap();
    b
}

fn pem(cert: &X509) -> String {
    String::from_utf8(cert.to_pem().unwrap()).unwrap()
}

fn key_pem(key: &PKey<Private>) -> String {
    String::from_utf8(key.private_key_to_pem_pkcs8().unwrap()).unwrap()
}

fn subject_cn(cert: &X509) -> String {
    cert.subject_name()
        .entries_by_nid(Nid::COMMONNAME)
        .next()
        .and_then(|e| e.data().to_string().ok())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use openssl::stack::Stack;
    use openssl::x509::store::X509StoreBuilder;
    use openssl::x509::{X509StoreContext, X509VerifyResult};

    fn verify(ca: &X509, leaf: &X509) -> X509VerifyResult {
        let mut store = X509StoreBuilder::new().unwrap();
        store.add_cert(ca.clone()).unwrap();
        let store = store.build();
        let mut ctx = X509StoreContext::new().unwrap();
        let chain = Stack::new().unwrap();
        ctx.init(&store, leaf, &chain, |c| {
            c.verify_cert()?;
            Ok(c.error())
        })
        .unwrap()
    }

    #[test]
    fn server_cert_chains_to_its_ca_and_names_the_dns() {
        let ca = TestCa::new("Test CA A");
        let (cert, key) = ca.issue_server_cert(&["registry.test"]);
        let cert = parse_pem(&cert);
        assert_eq!(verify(ca.cert(), &cert), X509VerifyResult::OK);
        let sans = cert.subject_alt_names().unwrap();
        assert_eq!(sans.iter().next().unwrap().dnsname(), Some("registry.test"));
        assert!(PKey::private_key_from_pem(key.as_bytes())
            .unwrap()
            .public_eq(&cert.public_key().unwrap()));
        let other = TestCa::new("Test CA B");
        assert_ne!(verify(other.cert(), &cert), X509VerifyResult::OK);
    }

    #[test]
    fn serials_are_random_and_fingerprints_differ() {
        let a = TestCa::new("same");
        let b = TestCa::new("same");
        assert_ne!(serial_hex(a.cert()), serial_hex(b.cert()));
        assert_ne!(a.sha256_fingerprint(), b.sha256_fingerprint());
        assert_eq!(a.sha256_fingerprint().len(), 64);
    }

    #[test]
    fn bad_inputs_are_what_they_claim() {
        let now = Asn1Time::days_from_now(0).unwrap();
        let expired = expired_ca("old");
        assert!(expired.cert().not_after() < now);
        let future = not_yet_valid_ca("future");
        assert!(future.cert().not_before() > now);
        let leaf = parse_pem(&self_signed_leaf("leaf"));
        assert_eq!(
            leaf.subject_name().to_der().unwrap(),
            leaf.issuer_name().to_der().unwrap()
        );
        let ca = TestCa::new("issuer");
        let signed = parse_pem(&leaf_signed_by(&ca, "leaf2"));
        assert_eq!(verify(ca.cert(), &signed), X509VerifyResult::OK);
        assert!(private_key_pem().starts_with("-----BEGIN PRIVATE KEY-----"));
    }
}
