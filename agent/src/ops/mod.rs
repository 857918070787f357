//! The operator surface.
pub mod daemon_status;
pub mod events;
pub mod inventory;
pub mod logging;
pub mod metrics;
