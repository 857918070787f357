//! The fleet view: what each agent publishes on its own Node object, and how
//! the `fleet` command reads it back across a cluster.
//!
//! - [`schema`]: the published names (label, annotations, condition types
//!   and reasons) and the digests. Pure; the one definition both sides use.
//! - [`observed`]: one Node's published state read back (remote input:
//!   never panics, malformed values become problems on the row).
//! - [`expected`]: what every node should have, from the live Secret and
//!   the provisioning files, by the trust job's own validation and planning.
//! - [`report`]: the `fleet` command's rows, judgement, summary, table and
//!   exit code; [`output`]: its JSON (schemaVersion 1), typed.
//! - [`duration`]: `--timeout DURATION`.
//! - [`publish`]: what an agent publishes, from its passes, and the patches
//!   that bring its Node there from what it last published. Pure.
//! - [`writer`]: the two PATCH requests on the node's own Node.
//!
//! Boundary: this folder uses the leaves (`x509`, `k8s`, `config`, `errors`,
//! `retry`) and the jobs' pure planning; it never writes to the host, and
//! talks to the API only through `k8s`.

pub mod duration;
pub mod expected;
pub mod observed;
pub mod output;
pub mod publish;
pub mod report;
pub mod schema;
pub mod writer;
