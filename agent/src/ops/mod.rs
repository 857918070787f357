//! The operator surface: logs ([`logging`]), what the daemon did
//! ([`recorder`]), its Prometheus exposition ([`prometheus`]) and HTTP
//! endpoints ([`http`]), Node Events ([`events`]), the daemon-status file
//! ([`daemon_status`]) and the node's certificate inventory
//! ([`inventory`]), shared by `/metrics` and `status`.
//!
//! Boundary: it sees the jobs' outcome types only; it never changes the
//! node, and never imports `status`.

pub mod daemon_status;
pub mod events;
pub mod http;
pub mod inventory;
pub mod logging;
pub mod prometheus;
pub mod recorder;
