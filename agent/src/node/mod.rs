//! The host boundary.
pub mod distro;
pub mod fsutil;
pub mod hostroot;
pub mod lock;
pub mod procfs;
pub mod systemd;
