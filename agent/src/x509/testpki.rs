//! Certificates made on the fly for tests: unit tests, and other crates' tests
//! through the `testing` feature. Never in a release build.
//!
//! Two layers. The primitives ([`key`], [`name`], [`random_serial`],
//! [`builder`], [`append_ca_extensions`], [`append_leaf_extensions`],
//! [`TestCa::self_signed`], [`TestCa::sign_leaf`]) are the one place
//! test certificates are built, here and in `integration-tests` (its `pki`
//! module and the API test server's cluster CA are thin layers on top). The
//! fixtures below them ([`ca`], [`good_ca`], [`leaf_signed_by`], ...) are what
//! this crate's unit tests use.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test fixtures")]

use openssl::asn1::{Asn1Integer, Asn1Time};
use openssl::bn::{BigNum, MsbOption};
use openssl::ec::{EcGroup, EcKey};
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{HasPublic, PKey, PKeyRef, Private};
use openssl::x509::extension::{
    AuthorityKeyIdentifier, BasicConstraints, ExtendedKeyUsage, KeyUsage, SubjectKeyIdentifier,
};
use openssl::x509::{X509Builder, X509Name, X509NameRef, X509};

use crate::time::now_unix;

/// The organization in the subject of this crate's own fixtures.
const FIXTURE_ORG: &str = "node-cert-agent tests";

/// Serial width of this crate's fixtures: positive and below 2^127.
const FIXTURE_SERIAL_BITS: i32 = 127;

const DAY: i64 = 86_400;

/// A certificate authority: a CA certificate and its key.
pub struct TestCa {
    pub cert: X509,
    pub key: PKey<Private>,
}

impl TestCa {
    /// A self-signed CA over `key`, subject and issuer `name`: CA:TRUE and
    /// `usage` (pass a critical one), both critical, plus a subject key
    /// identifier when `subject_key_id`; serial of `serial_bits` random bits;
    /// valid from `not_before` to `not_after` (Unix seconds); SHA-256.
    pub fn self_signed(
        name: &X509NameRef,
        key: PKey<Private>,
        serial_bits: i32,
        not_before: i64,
        not_after: i64,
        usage: &KeyUsage,
        subject_key_id: bool,
    ) -> TestCa {
        let mut b = builder(name, name, &key, serial_bits, not_before, not_after);
        append_ca_extensions(&mut b, usage);
        if subject_key_id {
            let ski = SubjectKeyIdentifier::new()
                .build(&b.x509v3_context(None, None))
                .unwrap();
            b.append_extension(ski).unwrap();
        }
        b.sign(&key, MessageDigest::sha256()).unwrap();
        TestCa {
            cert: b.build(),
            key,
        }
    }

    /// Finishes a certificate this CA issues: appends the authority key
    /// identifier (this CA's key id) and signs `b` with the CA's key (SHA-256).
    pub fn sign_leaf(&self, mut b: X509Builder) -> X509 {
        let aki = AuthorityKeyIdentifier::new()
            .keyid(true)
            .build(&b.x509v3_context(Some(&self.cert), None))
            .unwrap();
        b.append_extension(aki).unwrap();
        b.sign(&self.key, MessageDigest::sha256()).unwrap();
        b.build()
    }
}

/// A fresh ECDSA P-256 key (fast to generate).
pub fn key() -> PKey<Private> {
    let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap();
    PKey::from_ec_key(EcKey::generate(&group).unwrap()).unwrap()
}

/// A name `O=<orgs[0]>, O=<orgs[1]>, ..., CN=<cn>`, in that order. Panics
/// naming a CN OpenSSL refuses.
pub fn name(orgs: &[&str], cn: &str) -> X509Name {
    let mut b = X509Name::builder().unwrap();
    for o in orgs {
        b.append_entry_by_nid(Nid::ORGANIZATIONNAME, o)
            .unwrap_or_else(|e| panic!("invalid O {o:?}: {e}"));
    }
    b.append_entry_by_nid(Nid::COMMONNAME, cn)
        .unwrap_or_else(|e| panic!("invalid CN {cn:?}: {e}"));
    b.build()
}

/// A positive random serial of at most `bits` bits.
pub fn random_serial(bits: i32) -> Asn1Integer {
    let mut bn = BigNum::new().unwrap();
    bn.rand(bits, MsbOption::MAYBE_ZERO, false).unwrap();
    bn.to_asn1_integer().unwrap()
}

/// A v3 certificate builder: `subject`, `issuer`, `key`'s public half, a
/// random serial of `serial_bits` bits, valid from `not_before` to
/// `not_after` (Unix seconds). No extensions yet.
pub fn builder<T: HasPublic>(
    subject: &X509NameRef,
    issuer: &X509NameRef,
    key: &PKeyRef<T>,
    serial_bits: i32,
    not_before: i64,
    not_after: i64,
) -> X509Builder {
    let mut b = X509Builder::new().unwrap();
    b.set_version(2).unwrap();
    b.set_serial_number(&random_serial(serial_bits)).unwrap();
    b.set_subject_name(subject).unwrap();
    b.set_issuer_name(issuer).unwrap();
    b.set_pubkey(key).unwrap();
    b.set_not_before(&Asn1Time::from_unix(not_before).unwrap())
        .unwrap();
    b.set_not_after(&Asn1Time::from_unix(not_after).unwrap())
        .unwrap();
    b
}

/// Appends basicConstraints CA:TRUE (critical), then `usage`.
pub fn append_ca_extensions(b: &mut X509Builder, usage: &KeyUsage) {
    b.append_extension(BasicConstraints::new().critical().ca().build().unwrap())
        .unwrap();
    b.append_extension(usage.build().unwrap()).unwrap();
}

/// Appends basicConstraints CA:FALSE (critical), then `usage`, then `eku`
/// when given.
pub fn append_leaf_extensions(
    b: &mut X509Builder,
    usage: &KeyUsage,
    eku: Option<&ExtendedKeyUsage>,
) {
    b.append_extension(BasicConstraints::new().critical().build().unwrap())
        .unwrap();
    b.append_extension(usage.build().unwrap()).unwrap();
    if let Some(eku) = eku {
        b.append_extension(eku.build().unwrap()).unwrap();
    }
}

/// A certificate in PEM.
pub fn pem(cert: &X509) -> String {
    String::from_utf8(cert.to_pem().unwrap()).unwrap()
}

/// A private key in PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`).
pub fn key_pem(key: &PKey<Private>) -> String {
    String::from_utf8(key.private_key_to_pem_pkcs8().unwrap()).unwrap()
}

// ------------------------------------------------ this crate's fixtures

/// A fixture builder: subject `O=node-cert-agent tests, CN=<cn>`, valid from
/// `from_days` to `to_days` relative to now. The caller sets the issuer.
fn fixture_builder(cn: &str, key: &PKey<Private>, from_days: i64, to_days: i64) -> X509Builder {
    let now = now_unix();
    let n = name(&[FIXTURE_ORG], cn);
    builder(
        &n,
        &n,
        key,
        FIXTURE_SERIAL_BITS,
        now + from_days * DAY,
        now + to_days * DAY,
    )
}

/// A self-signed CA valid from `from_days` to `to_days` relative to now.
pub fn ca(cn: &str, from_days: i64, to_days: i64) -> TestCa {
    let now = now_unix();
    TestCa::self_signed(
        &name(&[FIXTURE_ORG], cn),
        key(),
        FIXTURE_SERIAL_BITS,
        now + from_days * DAY,
        now + to_days * DAY,
        KeyUsage::new().critical().key_cert_sign().crl_sign(),
        false,
    )
}

/// A valid CA with a fixed one-year window.
pub fn good_ca(cn: &str) -> TestCa {
    ca(cn, -1, 365)
}

/// A self-signed certificate with CA:FALSE, as people make for one registry.
pub fn self_signed_leaf(cn: &str) -> X509 {
    let key = key();
    let mut b = fixture_builder(cn, &key, -1, 30);
    b.append_extension(BasicConstraints::new().build().unwrap())
        .unwrap();
    b.sign(&key, MessageDigest::sha256()).unwrap();
    b.build()
}

/// A leaf (CA:FALSE) issued by `ca`.
pub fn leaf_signed_by(ca: &TestCa, cn: &str) -> X509 {
    leaf_with_key(ca, cn).0
}

/// A version-1 certificate with no extensions at all.
pub fn bare_v1_cert(cn: &str) -> X509 {
    let key = key();
    let mut b = fixture_builder(cn, &key, -1, 30);
    b.set_version(0).unwrap();
    b.sign(&key, MessageDigest::sha256()).unwrap();
    b.build()
}

/// A valid self-signed CA whose serial number is negative (DER allows it;
/// RFC 5280 and Go 1.23 do not).
pub fn negative_serial_ca(cn: &str) -> TestCa {
    let key = key();
    let mut b = fixture_builder(cn, &key, -1, 365);
    let serial = BigNum::from_dec_str("-4242").unwrap();
    b.set_serial_number(&serial.to_asn1_integer().unwrap())
        .unwrap();
    append_ca_extensions(&mut b, KeyUsage::new().critical().key_cert_sign());
    b.sign(&key, MessageDigest::sha256()).unwrap();
    TestCa {
        cert: b.build(),
        key,
    }
}

/// A fresh private key in PKCS#8 PEM.
pub fn private_key_pem() -> String {
    key_pem(&key())
}

/// A leaf (CA:FALSE) issued by `ca`, with its private key.
pub fn leaf_with_key(ca: &TestCa, cn: &str) -> (X509, PKey<Private>) {
    let key = key();
    let mut b = fixture_builder(cn, &key, -1, 30);
    b.set_issuer_name(ca.cert.subject_name()).unwrap();
    b.append_extension(BasicConstraints::new().build().unwrap())
        .unwrap();
    b.sign(&ca.key, MessageDigest::sha256()).unwrap();
    (b.build(), key)
}
