//! Custom CA trust.
pub mod plan;
pub mod reconcile;
pub mod sources;
pub mod state;
pub mod store;
pub mod validate;
