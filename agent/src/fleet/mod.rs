//! The fleet view: what each agent publishes on its own Node object, and how
//! the `fleet` command reads it back across a cluster.
//!
//! - [`schema`]: the published names (label, annotations, condition types
//!   and reasons) and the digests. Pure; the one definition both sides use.
//!
//! Boundary: this folder uses the leaves (`x509`, `k8s`, `config`, `errors`,
//! `retry`) and the jobs' pure planning; it never writes to the host, and
//! talks to the API only through `k8s`.

pub mod schema;
