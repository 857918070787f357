//! node-cert-agent: keeps a Kubernetes node's custom CA trust and kubelet
//! certificates correct.
//!
//! The folders are the architecture; each `mod.rs` says what it owns and
//! what it must not touch. Dependencies point one way:
//!
//! ```text
//!   app (bin) ──> daemon ──> trust ──┐
//!                   │   └──> kubelet ─┼──> x509, node, k8s, config, errors, retry, text, time
//!                   └──> ops ─────────┘
//!   status ──> everything above it; nothing imports status
//! ```
//!
//! - [`x509`], [`node`], [`k8s`], [`config`], [`errors`], [`retry`],
//!   [`text`], [`time`]: the leaves. Certificate facts, the host boundary
//!   (host root, atomic files, systemd, locks), the Kubernetes API boundary
//!   (kubeconfigs, clients), settings, how an error reads, when to try
//!   again, the one escaping rule of every operator-facing text sink, and
//!   the clock with its formats.
//! - [`trust`]: the custom CA trust job. [`kubelet`]: the kubelet
//!   certificate job. Both depend only on the leaves.
//! - [`ops`]: logs, metrics, Events, the daemon-status file and the
//!   certificate inventory; it sees the jobs' outcome types only.
//! - [`daemon`]: runs the jobs' loops and the operator tasks.
//! - [`fleet`]: what each agent publishes on its Node, and the `fleet`
//!   command's reading of it.
//! - [`status`]: the `status` command's report.
//!
//! `agent/tests/layout.rs` checks these rules on the source.

pub mod config;
pub mod daemon;
pub mod errors;
pub mod fleet;
pub mod k8s;
pub mod kubelet;
pub mod node;
pub mod ops;
pub mod retry;
pub mod status;
pub mod text;
pub mod time;
pub mod trust;
pub mod x509;
