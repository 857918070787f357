//! Certificates made on the fly for tests: unit tests, and other crates' tests
//! through the `testing` feature. Never in a release build.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test fixtures")]

use openssl::asn1::{Asn1Integer, Asn1Time};
use openssl::bn::{BigNum, MsbOption};
use openssl::ec::{EcGroup, EcKey};
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{PKey, Private};
use openssl::x509::extension::{BasicConstraints, KeyUsage};
use openssl::x509::{X509Builder, X509Name, X509NameBuilder, X509};

pub struct TestCa {
    pub cert: X509,
    pub key: PKey<Private>,
}

pub fn key() -> PKey<Private> {
    let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap();
    PKey::from_ec_key(EcKey::generate(&group).unwrap()).unwrap()
}

fn name(cn: &str) -> X509Name {
    let mut b = X509NameBuilder::new().unwrap();
    b.append_entry_by_nid(Nid::ORGANIZATIONNAME, "node-cert-agent tests")
        .unwrap();
    b.append_entry_by_nid(Nid::COMMONNAME, cn).unwrap();
    b.build()
}

fn serial() -> Asn1Integer {
    let mut bn = BigNum::new().unwrap();
    bn.rand(127, MsbOption::MAYBE_ZERO, false).unwrap();
    bn.to_asn1_integer().unwrap()
}

fn builder(cn: &str, key: &PKey<Private>, from_days: i64, to_days: i64) -> X509Builder {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let mut b = X509Builder::new().unwrap();
    b.set_version(2).unwrap();
    b.set_serial_number(&serial()).unwrap();
    b.set_subject_name(&name(cn)).unwrap();
    b.set_pubkey(key).unwrap();
    b.set_not_before(&Asn1Time::from_unix(now + from_days * 86_400).unwrap())
        .unwrap();
    b.set_not_after(&Asn1Time::from_unix(now + to_days * 86_400).unwrap())
        .unwrap();
    b
}

/// A self-signed CA valid from `from_days` to `to_days` relative to now.
pub fn ca(cn: &str, from_days: i64, to_days: i64) -> TestCa {
    let key = key();
    let mut b = builder(cn, &key, from_days, to_days);
    b.set_issuer_name(&name(cn)).unwrap();
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
    b.sign(&key, MessageDigest::sha256()).unwrap();
    TestCa {
        cert: b.build(),
        key,
    }
}

/// A valid CA with a fixed one-year window.
pub fn good_ca(cn: &str) -> TestCa {
    ca(cn, -1, 365)
}

/// A self-signed certificate with CA:FALSE, as people make for one registry.
pub fn self_signed_leaf(cn: &str) -> X509 {
    let key = key();
    let mut b = builder(cn, &key, -1, 30);
    b.set_issuer_name(&name(cn)).unwrap();
    b.append_extension(BasicConstraints::new().build().unwrap())
        .unwrap();
    b.sign(&key, MessageDigest::sha256()).unwrap();
    b.build()
}

/// A leaf (CA:FALSE) issued by `ca`.
pub fn leaf_signed_by(ca: &TestCa, cn: &str) -> X509 {
    let key = key();
    let mut b = builder(cn, &key, -1, 30);
    b.set_issuer_name(ca.cert.subject_name()).unwrap();
    b.append_extension(BasicConstraints::new().build().unwrap())
        .unwrap();
    b.sign(&ca.key, MessageDigest::sha256()).unwrap();
    b.build()
}

/// A version-1 certificate with no extensions at all.
pub fn bare_v1_cert(cn: &str) -> X509 {
    let key = key();
    let mut b = builder(cn, &key, -1, 30);
    b.set_version(0).unwrap();
    b.set_issuer_name(&name(cn)).unwrap();
    b.sign(&key, MessageDigest::sha256()).unwrap();
    b.build()
}

pub fn pem(cert: &X509) -> String {
    String::from_utf8(cert.to_pem().unwrap()).unwrap()
}

pub fn private_key_pem() -> String {
    String::from_utf8(key().private_key_to_pem_pkcs8().unwrap()).unwrap()
}

/// A leaf (CA:FALSE) issued by `ca`, with its private key.
pub fn leaf_with_key(ca: &TestCa, cn: &str) -> (X509, PKey<Private>) {
    let key = key();
    let mut b = builder(cn, &key, -1, 30);
    b.set_issuer_name(ca.cert.subject_name()).unwrap();
    b.append_extension(BasicConstraints::new().build().unwrap())
        .unwrap();
    b.sign(&ca.key, MessageDigest::sha256()).unwrap();
    (b.build(), key)
}
