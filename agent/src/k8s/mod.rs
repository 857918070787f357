//! The Kubernetes API boundary: kubeconfig files ([`kubeconfig`]) and the
//! clients built from them ([`client`]). Every job that talks to an API
//! server gets its client here.
//!
//! Boundary: a leaf beside `node` (files are read through its `HostRoot`).
//! It knows how to reach an API server, never what a job asks of it.

pub mod client;
pub mod kubeconfig;
