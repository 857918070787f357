//! The host boundary.
pub mod distro;
pub mod fsutil;
pub mod hostroot;
pub mod identity;
pub mod lock;
pub mod procfs;
pub mod systemd;
