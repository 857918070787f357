//! The host boundary: everything the agent touches on the node itself.
//! Paths go through [`hostroot::HostRoot`], which maps node paths to this
//! process's paths (the node's root is `/host` in a pod) and refuses any
//! path that escapes it; writes are atomic ([`fsutil`]); directories that
//! others write are read by descriptor, one name at a time, never through
//! a link ([`dirfd`]); systemd is reached only through the
//! [`systemd::Systemd`] trait; locks, `/proc` facts, the distro's identity
//! the node's name, what containerd's own config says of its registry
//! host directories ([`containerd`]) and what Docker's says of a restart
//! ([`docker`]) live here too.
//!
//! Boundary: a leaf. It knows how to reach the node, never what the agent
//! wants from it (no CA, kubelet or operator logic), and imports nothing of
//! the agent but `config` types.

pub mod containerd;
pub mod dirfd;
pub mod distro;
pub mod docker;
pub mod fsutil;
pub mod hostroot;
pub mod identity;
pub mod lock;
pub mod procfs;
pub mod systemd;
