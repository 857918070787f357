//! `node-cert-agent status`: what an operator in a node shell needs to know
//! about this node's trust and identity, with or without the daemon running.
//!
//! Three steps, so the middle one can be tested with fixed data:
//! 1. [`gather`] reads the node into [`gather::Facts`];
//! 2. [`report`] judges them into a [`schema::StatusReport`] (pure), whose
//!    types are the JSON schema;
//! 3. [`render`] prints it as a table or as JSON (pure).
//!
//! [`liveness`] decides whether the daemon behind the daemon status file
//! still runs. Boundary: status only reads; nothing else imports it.

pub mod gather;
pub mod liveness;
pub mod render;
pub mod report;
pub mod schema;

pub use gather::{gather, StatusSources};
pub use render::{render_json, render_table};
pub use report::build_report;

/// Exit code of `status` when everything is healthy.
pub const EXIT_HEALTHY: u8 = 0;

/// Exit code when something is expired, invalid, failing or expiring unrenewed.
pub const EXIT_UNHEALTHY: u8 = 1;

/// Exit code when `status` itself could not run (bad flags or config).
pub const EXIT_STATUS_ERROR: u8 = 2;
