//! The operator surface.
pub mod events;
pub mod logging;
pub mod metrics;
