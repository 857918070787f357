//! Test harness for real-node tests of node-cert-agent.
//!
//! Everything here drives real components, never mocks:
//! - [`Node`]: a Debian node booted with `systemd-nspawn` on a fresh overlay of
//!   the cached rootfs, running systemd, D-Bus and containerd.
//! - [`Registry`]: a real `docker-registry` (distribution) process serving TLS.
//! - [`cri`]: image pulls through containerd's CRI, exactly as kubelet does them.
//! - [`pki`]: test CAs and certificates, plus malformed inputs.
//! - [`SecretVolume`]: kubelet's AtomicWriter layout for a mounted Secret.
//! - [`Agent`]: node-cert-agent itself, as a systemd service of the node
//!   ([`HostModeAgent`]) or as a DaemonSet pod would run it ([`PodModeAgent`]).
//! - [`nca_test_apiserver`] (a crate of its own, `integration-tests/apiserver`):
//!   a Kubernetes API server (and CSR controllers) for tests, enforcing
//!   kube-apiserver's rules, with fault knobs.
//! - [`observe`]: containerd (re)starts, refresh-tool runs, the node's
//!   trust bundle and the agent's anchors.
//! - [`kubelet_node`]: a node with a stand-in kubelet and a bootstrap
//!   kubeconfig for the API test server, and checks of kubelet's client
//!   certificate link.
//! - [`fleet`]: the test API server holding a fleet of Nodes in chosen
//!   states, for the `fleet` command's tests and benchmark.
//! - [`rbac`]: the RBAC objects `manifests/` ships (`kubectl kustomize`),
//!   for the API test server's authorization.
//!
//! - [`unbooted::UnbootedRoot`]: a node root that is never booted (an image
//!   build), for package scripts that must work without systemd.
//! - [`run`]: the record of every node, registry, mount and host process a
//!   test run starts, which `scripts/cleanup-nodes.sh` reads to stop exactly
//!   those after an aborted run.
//!
//! Nodes boot Debian 12 (bookworm) by default; `NCA_DEBIAN_RELEASE=trixie`
//! boots Debian 13 instead, and `NCA_DEBIAN_RELEASE=testing` Debian testing
//! ("forky" today; its nodes get the unified cgroup hierarchy, see
//! [`node::nspawn_env`]). See [`preflight::rootfs_path`].
//!
//! Call [`preflight()`] first in every end-to-end test: it panics, naming what is
//! missing, when the machine cannot run them. Tests are never skipped.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test harness: a failed step must panic loudly"
)]

pub mod agent;
pub mod cgroup;
mod cmd;
pub mod containerd_config;
pub mod cri;
pub mod fleet;
pub mod http;
pub mod image;
pub mod kubelet_node;
pub mod node;
pub mod observe;
mod overlay;
pub mod pki;
pub mod preflight;
pub mod prometheus_rule;
pub mod rbac;
pub mod registry;
pub mod run;
pub mod secret_volume;
pub mod unbooted;
pub mod wait;

pub use agent::{Agent, HostModeAgent, Mode, PodModeAgent};
pub use cri::{
    assert_pull_ok, assert_pull_untrusted, cri_pull, cri_remove_image, cri_try_pull,
    cri_try_remove_image, pull_fresh, CriError,
};
pub use http::http_get;
pub use node::Node;
pub use preflight::{debian_release, preflight, rootfs_path};
pub use registry::{Registry, TestRegistry};
pub use secret_volume::{secret_data, SecretVolume};
pub use wait::{wait_until, wait_until_or_timeout};
