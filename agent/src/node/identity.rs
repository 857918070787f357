//! Who this node is: its name (configured, or its hostname) and its
//! addresses. Read once at start and handed to every job that needs them.
//!
//! Boundary: reads `/etc/hostname` through [`HostRoot`] and this process's
//! network interfaces (a DaemonSet pod shares the node's network namespace).

use std::net::IpAddr;
use std::path::Path;

use super::hostroot::HostRoot;

/// The node's hostname file.
const HOSTNAME_FILE: &str = "/etc/hostname";

/// The node's name and hostname.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeIdentity {
    /// The node's name: the configured one, else the hostname.
    pub name: Option<String>,
    /// The node's `/etc/hostname`, if it has one.
    pub hostname: Option<String>,
}

impl NodeIdentity {
    /// `configured` (`--node-name`, `$NODE_NAME`, the config) wins; the
    /// hostname is read either way (the serving certificate names it).
    pub fn read(host: &HostRoot, configured: Option<&str>) -> Self {
        let hostname = host
            .resolve(Path::new(HOSTNAME_FILE))
            .ok()
            .and_then(|p| std::fs::read_to_string(p).ok())
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty());
        Self {
            name: configured
                .map(str::to_string)
                .filter(|n| !n.is_empty())
                .or_else(|| hostname.clone()),
            hostname,
        }
    }
}

/// This process's interface addresses (the node's, in host mode or in a
/// host-network pod).
pub fn local_addresses() -> Vec<IpAddr> {
    nix::ifaddrs::getifaddrs()
        .map(|addrs| {
            addrs
                .filter_map(|a| a.address)
                .filter_map(|sa| {
                    sa.as_sockaddr_in()
                        .map(|v4| IpAddr::from(v4.ip()))
                        .or_else(|| sa.as_sockaddr_in6().map(|v6| IpAddr::from(v6.ip())))
                })
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]
mod tests {
    use super::*;

    #[test]
    fn the_configured_name_wins_over_the_hostname() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("etc")).unwrap();
        std::fs::write(dir.path().join("etc/hostname"), "host-1\n").unwrap();
        let host = HostRoot::new(dir.path()).unwrap();
        let id = NodeIdentity::read(&host, None);
        assert_eq!(id.name.as_deref(), Some("host-1"));
        let id = NodeIdentity::read(&host, Some("node-1"));
        assert_eq!(id.name.as_deref(), Some("node-1"));
        assert_eq!(id.hostname.as_deref(), Some("host-1"));
        let empty = HostRoot::new(tempfile::tempdir().unwrap().path()).unwrap();
        assert_eq!(NodeIdentity::read(&empty, None), NodeIdentity::default());
    }

    #[test]
    fn local_addresses_include_loopback() {
        assert!(local_addresses().iter().any(IpAddr::is_loopback));
    }
}
