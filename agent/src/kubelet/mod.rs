//! Kubelet certificates.
pub mod csr;
pub mod kubeconfig;
pub mod manager;
pub mod renewal;
pub mod store;
