//! node-cert-agent: keeps a Kubernetes node's custom CA trust correct.
//!
//! The pure core (`validate`, `plan`, `distro`, `config`, `cert`) decides;
//! the edges (`sources`, `trust`, `state`, `systemd`, `fsutil`, `hostroot`)
//! touch the node. `reconcile` ties one pass together and `daemon` runs
//! passes when the inputs change. The operator surface: `status` (the node
//! shell's report) and `metrics` (Prometheus, health and readiness).

pub mod cert;
pub mod config;
pub mod csr;
pub mod daemon;
mod der;
pub mod distro;
pub mod events;
pub mod fsutil;
pub mod hostroot;
pub mod kubeconfig;
pub mod kubelet;
pub mod kubelet_store;
pub mod logging;
pub mod metrics;
pub mod plan;
pub mod reconcile;
pub mod renewal;
pub mod sources;
pub mod state;
pub mod status;
pub mod systemd;
#[cfg(test)]
mod testpki;
pub mod trust;
pub mod validate;
