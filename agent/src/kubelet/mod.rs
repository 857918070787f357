//! Kubelet certificates (NODE-FACTS §6): kubelet's client certificate, and
//! its serving certificate when asked, kept valid through the CSR API.
//!
//! Boundary: outside `kubelet`, these modules use only the leaf modules
//! `x509`, `node` and `config`; never `trust`, `ops`, `status` or `daemon`.
pub mod csr;
pub mod facts;
pub mod identity;
pub mod kubeconfig;
pub mod kubelet_config;
pub mod manager;
pub mod renewal;
pub mod revocation;
pub mod store;
