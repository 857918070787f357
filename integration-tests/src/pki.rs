//! Test PKI: CAs, server certificates for the test registry, and malformed
//! trust inputs (leaf certs, expired and not-yet-valid CAs, private keys).
//!
//! A thin layer over the agent's `x509::testpki`, where certificates are
//! built: this module picks the names, validity windows and extensions the
//! end-to-end tests need. Keys are ECDSA P-256 (fast to generate). Every
//! serial is 159 random bits, so no two certificates collide. Validity starts
//! an hour in the past to tolerate clock skew and lasts about a day.

use node_cert_agent::time::now_unix;
use node_cert_agent::x509::testpki;
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{PKey, Private};
use openssl::x509::extension::{ExtendedKeyUsage, KeyUsage, SubjectAlternativeName};
use openssl::x509::{X509Builder, X509};

const HOUR: i64 = 3600;
const DAY: i64 = 24 * HOUR;

/// 159 bits keeps the DER INTEGER positive and within 20 octets (RFC 5280).
const SERIAL_BITS: i32 = 159;

/// A certificate authority: a self-signed CA certificate and its key.
pub struct TestCa(testpki::TestCa);

impl std::fmt::Debug for TestCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestCa")
            .field("subject", &subject_cn(self.cert()))
            .field("sha256", &self.sha256_fingerprint())
            .finish_non_exhaustive()
    }
}

impl TestCa {
    /// A valid CA named `CN=<cn>`: basicConstraints CA:TRUE (critical),
    /// keyUsage keyCertSign+cRLSign (critical), valid from 1 h ago for 1 day.
    pub fn new(cn: &str) -> TestCa {
        let now = now_unix();
        TestCa::with_validity(cn, now - HOUR, now + DAY)
    }

    /// Like [`TestCa::new`], valid from `not_before` to `not_after` (Unix seconds).
    pub fn with_validity(cn: &str, not_before: i64, not_after: i64) -> TestCa {
        TestCa(testpki::TestCa::self_signed(
            &testpki::name(&[], cn),
            testpki::key(),
            SERIAL_BITS,
            not_before,
            not_after,
            KeyUsage::new().critical().key_cert_sign().crl_sign(),
            true,
        ))
    }

    /// The CA certificate.
    pub fn cert(&self) -> &X509 {
        &self.0.cert
    }

    /// The CA certificate in PEM.
    pub fn cert_pem(&self) -> String {
        testpki::pem(self.cert())
    }

    /// The CA's private key in PKCS#8 PEM.
    pub fn key_pem(&self) -> String {
        testpki::key_pem(&self.0.key)
    }

    /// SHA-256 over the certificate's DER, lowercase hex without separators.
    pub fn sha256_fingerprint(&self) -> String {
        sha256_fingerprint(self.cert())
    }

    /// Issues a TLS server certificate for the DNS names `dns` (SAN DNS,
    /// EKU serverAuth, CA:FALSE), valid from 1 h ago for 1 day.
    /// Returns `(cert_pem, key_pem)`.
    pub fn issue_server_cert(&self, dns: &[&str]) -> (String, String) {
        assert!(
            !dns.is_empty(),
            "issue_server_cert: at least one DNS name is needed"
        );
        let key = testpki::key();
        let mut b = self.leaf_builder(dns[0], &key);
        testpki::append_leaf_extensions(
            &mut b,
            KeyUsage::new().critical().digital_signature(),
            Some(ExtendedKeyUsage::new().server_auth()),
        );
        let mut san = SubjectAlternativeName::new();
        for d in dns {
            san.dns(d);
        }
        let san = san
            .build(&b.x509v3_context(Some(self.cert()), None))
            .unwrap();
        b.append_extension(san).unwrap();
        (testpki::pem(&self.0.sign_leaf(b)), testpki::key_pem(&key))
    }

    /// A builder for `CN=<cn>` over `key`, issued by this CA, valid from 1 h
    /// ago for 1 day.
    fn leaf_builder(&self, cn: &str, key: &PKey<Private>) -> X509Builder {
        let now = now_unix();
        testpki::builder(
            &testpki::name(&[], cn),
            self.cert().subject_name(),
            key,
            SERIAL_BITS,
            now - HOUR,
            now + DAY,
        )
    }
}

/// A self-signed certificate with CA:FALSE: not a CA, so not a valid trust anchor
/// for the agent. Returns the certificate PEM.
pub fn self_signed_leaf(cn: &str) -> String {
    let key = testpki::key();
    let now = now_unix();
    let name = testpki::name(&[], cn);
    let mut b = testpki::builder(&name, &name, &key, SERIAL_BITS, now - HOUR, now + DAY);
    testpki::append_leaf_extensions(&mut b, KeyUsage::new().critical().digital_signature(), None);
    b.sign(&key, MessageDigest::sha256()).unwrap();
    testpki::pem(&b.build())
}

/// A CA:FALSE client/server leaf `CN=<cn>` signed by `ca` (not self-signed, not
/// a CA). Returns the certificate PEM.
pub fn leaf_signed_by(ca: &TestCa, cn: &str) -> String {
    let key = testpki::key();
    let mut b = ca.leaf_builder(cn, &key);
    testpki::append_leaf_extensions(&mut b, KeyUsage::new().critical().digital_signature(), None);
    testpki::pem(&ca.0.sign_leaf(b))
}

/// A CA that expired a day ago (valid from 10 days ago until 1 day ago).
pub fn expired_ca(cn: &str) -> TestCa {
    let now = now_unix();
    TestCa::with_validity(cn, now - 10 * DAY, now - DAY)
}

/// A CA that becomes valid only in a day (and lasts 10 days from now).
pub fn not_yet_valid_ca(cn: &str) -> TestCa {
    let now = now_unix();
    TestCa::with_validity(cn, now + DAY, now + 10 * DAY)
}

/// A fresh private key in PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`), the kind
/// of thing that must never be accepted as a CA.
pub fn private_key_pem() -> String {
    testpki::private_key_pem()
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

fn subject_cn(cert: &X509) -> String {
    cert.subject_name()
        .entries_by_nid(Nid::COMMONNAME)
        .next()
        .and_then(|e| e.data().to_string().ok())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use openssl::asn1::Asn1Time;
    use openssl::stack::Stack;
    use openssl::x509::store::X509StoreBuilder;
    use openssl::x509::{X509StoreContext, X509VerifyResult};

    use super::*;

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
