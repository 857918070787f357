//! X.509 facts.
pub mod cert;
pub(crate) mod der;
#[cfg(test)]
pub(crate) mod testpki;
