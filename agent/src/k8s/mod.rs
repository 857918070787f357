//! The Kubernetes API boundary: kubeconfig files ([`kubeconfig`]), the
//! clients built from them ([`client`]), what a failed call means
//! ([`failure`]), the one list+watch loop ([`watch`]) and how a watched view
//! stands ([`source`]). Every job
//! that talks to an API server gets its client here.
//!
//! Boundary: a leaf beside `node` (files are read through its `HostRoot`).
//! It knows how to reach an API server, never what a job asks of it.

pub mod client;
pub mod failure;
pub mod kubeconfig;
pub mod source;
pub mod watch;
