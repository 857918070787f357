//! X.509 facts.
pub mod cert;
pub(crate) mod der;
#[cfg(any(test, feature = "testing"))]
pub mod testpki;
