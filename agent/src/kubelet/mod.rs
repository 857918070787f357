//! Kubelet certificates.
pub mod csr;
pub mod kubeconfig;
pub mod kubelet_config;
pub mod manager;
pub mod renewal;
pub mod store;
