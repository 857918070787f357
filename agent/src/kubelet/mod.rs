//! Kubelet certificates: when to renew ([`renewal`], pure), the facts of a
//! certificate it decides on ([`facts`]), revocations ([`revocation`]), how
//! to get a certificate through the CSR API ([`csr`]) and with which
//! identity ([`identity`]), kubelet's files ([`store`],
//! [`kubelet_config`]; kubeconfigs are `k8s`'), what the job covers on
//! this node and for which node name ([`scope`]), what it takes from its
//! Node ([`node_facts`], pure: serving names, kubelet's version), when a new certificate
//! needs a restart of kubelet ([`restart_rule`], pure), and one pass over
//! the client (and opt-in serving) certificate ([`manager`]).
//!
//! Boundary: depends only on the leaves (`x509`, `node`, `k8s`, `config`,
//! `errors`, `retry`, `time`). It
//! writes only kubelet's certificate files in kubelet's own layout, and
//! reports through its outcome types, never to the operator sinks.

pub mod csr;
pub mod facts;
#[cfg(test)]
pub mod fake_api;
pub mod identity;
pub mod kubelet_config;
pub mod manager;
pub mod node_facts;
pub mod renewal;
pub mod restart_rule;
pub mod revocation;
pub mod scope;
pub mod state;
pub mod store;
