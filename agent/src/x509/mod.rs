//! X.509 facts: parsed certificates and their fingerprints ([`cert`]),
//! just enough DER ([`der`]), PEM scanning ([`pem`]) and names ([`name`]).
//! [`testpki`] makes certificates for tests. Time is `crate::time`, a leaf
//! of its own.
//!
//! Boundary: a leaf. Pure: no file, no network, and nothing of the
//! agent's other modules but the `time` leaf.

pub mod cert;
pub(crate) mod der;
pub mod name;
pub mod pem;
#[cfg(any(test, feature = "testing"))]
pub mod testpki;

/// The first reason OpenSSL gives, without its internal file and line
/// noise ("unreadable" when it gives none). It never carries input bytes,
/// so it is safe for errors about keys.
pub fn openssl_reason(e: &openssl::error::ErrorStack) -> String {
    openssl_reason_or(e, "unreadable")
}

/// [`openssl_reason`], with `fallback` when OpenSSL gives no reason.
pub fn openssl_reason_or(e: &openssl::error::ErrorStack, fallback: &str) -> String {
    e.errors()
        .first()
        .and_then(|err| err.reason())
        .unwrap_or(fallback)
        .to_string()
}
