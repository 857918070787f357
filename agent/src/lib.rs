//! node-cert-agent: keeps a Kubernetes node's custom CA trust and kubelet
//! certificates correct.

pub mod config;
pub mod daemon;
pub mod kubelet;
pub mod node;
pub mod ops;
pub mod status;
pub mod trust;
pub mod x509;
