//! Kubelet certificates: when to renew ([`renewal`], pure), how to get a
//! certificate through the CSR API ([`csr`]), kubelet's files ([`store`],
//! [`kubeconfig`], [`kubelet_config`]), and one pass over the client (and
//! opt-in serving) certificate ([`manager`]).
//!
//! Boundary: depends only on the leaves (`x509`, `node`, `config`). It
//! writes only kubelet's certificate files in kubelet's own layout, and
//! reports through its outcome types, never to the operator sinks.

pub mod csr;
pub mod kubeconfig;
pub mod kubelet_config;
pub mod manager;
pub mod renewal;
pub mod store;
