//! What the kubelet job takes from its own Node object: the serving
//! certificate's names, from `status.addresses` as kubelet takes them
//! (`addressesToHostnamesAndIPs` in kubelet's `certificate/kubelet.go`),
//! and kubelet's version (`status.nodeInfo.kubeletVersion`), which says
//! whether kubelet reloads its serving certificate file.
//!
//! Pure: a Node in, facts out. Boundary: the GET of the Node is the
//! manager's; judging the facts is `restart_rule`'s and the manager's.

use std::net::IpAddr;

use k8s_openapi::api::core::v1::Node;

use crate::kubelet::facts::CertFacts;
use crate::kubelet::restart_rule::parse_kubelet_version;

/// The Node's facts the job uses.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeFacts {
    /// DNS names and IPs for the serving certificate, sorted, without
    /// duplicates.
    pub dns: Vec<String>,
    pub ips: Vec<IpAddr>,
    /// kubelet's (major, minor) version, if the Node says.
    pub kubelet_version: Option<(u32, u32)>,
}

impl NodeFacts {
    /// What `node` says: `InternalIP`/`ExternalIP` are IPs (when they
    /// parse), `InternalDNS`/`ExternalDNS` are DNS names, a `Hostname` is an
    /// IP if it parses as one, else a DNS name; other types are left out.
    pub fn of(node: &Node) -> Self {
        let status = node.status.as_ref();
        let mut dns = Vec::new();
        let mut ips = Vec::new();
        for a in status
            .and_then(|s| s.addresses.as_ref())
            .into_iter()
            .flatten()
        {
            // As Go's signer writes it (`To4()`): a v4-mapped v6 address is v4.
            let parsed = a.address.parse::<IpAddr>().ok().map(|ip| ip.to_canonical());
            match (a.type_.as_str(), parsed) {
                ("InternalIP" | "ExternalIP" | "Hostname", Some(ip)) => ips.push(ip),
                ("InternalDNS" | "ExternalDNS" | "Hostname", None) if !a.address.is_empty() => {
                    dns.push(a.address.clone());
                }
                _ => {}
            }
        }
        dns.sort();
        dns.dedup();
        ips.sort();
        ips.dedup();
        Self {
            dns,
            ips,
            kubelet_version: status
                .and_then(|s| s.node_info.as_ref())
                .and_then(|i| parse_kubelet_version(&i.kubelet_version)),
        }
    }

    /// The Node gives no name at all for a serving certificate.
    pub fn has_no_names(&self) -> bool {
        self.dns.is_empty() && self.ips.is_empty()
    }

    /// Whether the certificate `current` names exactly these names; if
    /// not, what it names and what is wanted, for the log.
    pub fn differs_from(&self, current: &CertFacts) -> Option<(String, String)> {
        let mut dns = current.dns_names.clone();
        dns.sort();
        dns.dedup();
        let mut ips: Vec<IpAddr> = current.ips.iter().map(IpAddr::to_canonical).collect();
        ips.sort();
        ips.dedup();
        if dns == self.dns && ips == self.ips {
            return None;
        }
        let show = |d: &[String], i: &[IpAddr]| {
            let all: Vec<String> = d
                .iter()
                .cloned()
                .chain(i.iter().map(IpAddr::to_string))
                .collect();
            format!("[{}]", all.join(", "))
        };
        Some((show(&dns, &ips), show(&self.dns, &self.ips)))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]
mod tests {
    use super::*;

    fn node(addresses: serde_json::Value, version: &str) -> Node {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "n1"},
            "status": {
                "addresses": addresses,
                "nodeInfo": {
                    "kubeletVersion": version, "architecture": "", "bootID": "",
                    "containerRuntimeVersion": "", "kernelVersion": "", "kubeProxyVersion": "",
                    "machineID": "", "operatingSystem": "", "osImage": "", "systemUUID": ""
                }
            }
        }))
        .unwrap()
    }

    #[test]
    fn addresses_become_names_as_kubelet_makes_them() {
        let f = NodeFacts::of(&node(
            serde_json::json!([
                {"type": "InternalIP", "address": "10.0.0.5"},
                {"type": "ExternalIP", "address": "203.0.113.7"},
                {"type": "InternalIP", "address": "not-an-ip"},
                {"type": "Hostname", "address": "n1"},
                {"type": "Hostname", "address": "10.0.0.5"},
                {"type": "InternalDNS", "address": "n1.internal"},
                {"type": "ExternalDNS", "address": "n1.example.com"},
                {"type": "Other", "address": "x"}
            ]),
            "v1.31.4",
        ));
        assert_eq!(f.dns, ["n1", "n1.example.com", "n1.internal"]);
        assert_eq!(
            f.ips,
            [
                "10.0.0.5".parse::<IpAddr>().unwrap(),
                "203.0.113.7".parse().unwrap()
            ]
        );
        assert_eq!(f.kubelet_version, Some((1, 31)));
        assert!(!f.has_no_names());
    }

    #[test]
    fn a_certificate_with_other_names_differs_and_one_with_the_same_does_not() {
        let f = NodeFacts {
            dns: vec!["n1".into()],
            ips: vec!["10.0.0.5".parse().unwrap()],
            kubelet_version: None,
        };
        let same = CertFacts {
            dns_names: vec!["n1".into(), "n1".into()],
            ips: vec!["10.0.0.5".parse().unwrap()],
            ..CertFacts::default()
        };
        assert_eq!(f.differs_from(&same), None);
        let moved = CertFacts {
            ips: vec!["10.0.0.6".parse().unwrap()],
            ..same
        };
        assert_eq!(
            f.differs_from(&moved),
            Some(("[n1, 10.0.0.6]".into(), "[n1, 10.0.0.5]".into()))
        );
        assert!(NodeFacts::of(&node(serde_json::json!([]), "")).has_no_names());
    }
}
