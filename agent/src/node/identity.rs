//! Who this node is: its name and hostname, taken the way kubelet takes
//! them. Read once at start and handed to every job that
//! needs them.
//!
//! kubelet's node name is its `--hostname-override`, else the kernel
//! hostname, either one trimmed and lowercased (upstream's `GetHostname`,
//! `k8s.io/component-helpers/node/util`). The raw `/etc/hostname` is not
//! kubelet's input: it may differ in case, or hold another name than the
//! kernel's. An in-tree cloud provider could name the node too; those are
//! gone (external cloud providers keep kubelet's name), and
//! `kubelet::scope` prefers the name in kubelet's current client
//! certificate over all of these anyway. `hostnameOverride` is not a
//! `KubeletConfiguration` field (a flag only), so kubelet's config file is
//! not read for it.
//!
//! Boundary: reads the kernel hostname, `/etc/hostname` and the command
//! lines of the node's `kubelet` processes through [`HostRoot`]. The
//! serving certificate's addresses are the Node's (`kubelet::node_facts`),
//! never this process's interfaces.

use std::path::Path;

use super::fsutil;
use super::hostroot::HostRoot;

/// The node's hostname file. Not kubelet's input, but the kernel hostname
/// is set from it at boot, so it stands in where the kernel's cannot be
/// read as the node's (a pod in its own UTS namespace).
const HOSTNAME_FILE: &str = "/etc/hostname";
/// The kernel hostname, as Go's `os.Hostname` (and so kubelet) reads it.
const KERNEL_HOSTNAME_FILE: &str = "/proc/sys/kernel/hostname";
/// The node's processes, whose command lines say kubelet's flags.
const PROC_DIR: &str = "/proc";
/// The process name (`comm`) of kubelet.
const KUBELET_COMM: &str = "kubelet";
/// kubelet's flag that names the node (a flag only: no config file field).
const HOSTNAME_OVERRIDE_FLAG: &str = "--hostname-override";
/// Hostnames and command lines are small; the cap keeps an odd file from
/// being read whole.
const MAX_NAME_FILE_BYTES: u64 = 64 * 1024;

/// Where the node's name came from, for messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameSource {
    /// `--node-name`, `$NODE_NAME` or `kubelet.node-name`.
    Configured,
    /// `--hostname-override` on the running kubelet's command line.
    KubeletHostnameOverride,
    /// The kernel hostname, lowercased.
    KernelHostname,
    /// `/etc/hostname`, lowercased (the kernel's is not the node's here).
    HostnameFile,
    /// The current kubelet client certificate (`CN=system:node:<name>`).
    ClientCertificate,
}

impl std::fmt::Display for NameSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Configured => {
                "the configured node name (--node-name, $NODE_NAME or kubelet.node-name)"
            }
            Self::KubeletHostnameOverride => "kubelet's --hostname-override",
            Self::KernelHostname => "the kernel hostname",
            Self::HostnameFile => "/etc/hostname",
            Self::ClientCertificate => "the current kubelet client certificate",
        })
    }
}

/// Whether this process sees the node's kernel hostname as its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KernelView {
    /// Host mode (host root `/`): this process's kernel hostname is the
    /// node's (systemd's `ProtectHostname=` gives the unit a copy of it).
    Shared,
    /// In a pod: its UTS namespace may be its own (the pod's name), so
    /// `/etc/hostname` speaks for the node.
    Separate,
}

/// The node's name and hostname.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeIdentity {
    /// The node's name: the configured one, else kubelet's.
    pub name: Option<String>,
    /// Where `name` came from.
    pub source: Option<NameSource>,
    /// The node's hostname, lowercased: the kernel's, else `/etc/hostname`.
    pub hostname: Option<String>,
    /// The node name in kubelet's current client certificate, when
    /// `kubelet::scope` found one.
    pub certificate_name: Option<String>,
}

impl NodeIdentity {
    /// `configured` (`--node-name`, `$NODE_NAME`, the config) wins, then
    /// kubelet's `--hostname-override`, then the hostname; the hostname is
    /// read either way (the serving certificate names it).
    pub fn read(host: &HostRoot, configured: Option<&str>) -> Self {
        let view = if host.root() == Path::new("/") {
            KernelView::Shared
        } else {
            KernelView::Separate
        };
        Self::read_with(host, configured, view)
    }

    /// [`NodeIdentity::read`], with the kernel hostname read through `host`
    /// only when `view` says it is the node's.
    pub fn read_with(host: &HostRoot, configured: Option<&str>, view: KernelView) -> Self {
        let kernel = match view {
            KernelView::Shared => read_name(host, KERNEL_HOSTNAME_FILE),
            KernelView::Separate => None,
        };
        let (hostname, hostname_source) = match kernel {
            Some(h) => (Some(h), NameSource::KernelHostname),
            None => (read_name(host, HOSTNAME_FILE), NameSource::HostnameFile),
        };
        let (name, source) = match configured.filter(|n| !n.is_empty()) {
            Some(n) => (Some(n.to_string()), Some(NameSource::Configured)),
            None => match kubelet_hostname_override(host) {
                Some(o) => (Some(o), Some(NameSource::KubeletHostnameOverride)),
                None => (hostname.clone(), hostname.as_ref().map(|_| hostname_source)),
            },
        };
        Self {
            name,
            source,
            hostname,
            certificate_name: None,
        }
    }
}

/// A name as kubelet normalises it: trimmed, lowercased; empty is none.
fn normalise(name: &str) -> Option<String> {
    Some(name.trim().to_lowercase()).filter(|n| !n.is_empty())
}

/// The file at `node_path`, as a name.
fn read_name(host: &HostRoot, node_path: &str) -> Option<String> {
    let path = host.resolve(Path::new(node_path)).ok()?;
    let bytes = fsutil::read_limited(&path, MAX_NAME_FILE_BYTES).ok()?;
    normalise(&String::from_utf8_lossy(&bytes))
}

/// The `--hostname-override` of the node's running kubelet, lowercased as
/// kubelet lowercases it. `None` when no kubelet runs, when it has none, or
/// when several kubelets (nested nodes) disagree: then no flag is trusted.
fn kubelet_hostname_override(host: &HostRoot) -> Option<String> {
    let proc = host.resolve(Path::new(PROC_DIR)).ok()?;
    let mut seen: Vec<Option<String>> = Vec::new();
    for entry in std::fs::read_dir(&proc).ok()?.flatten() {
        let file_name = entry.file_name();
        let Some(pid) = file_name
            .to_str()
            .filter(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
        else {
            continue;
        };
        let dir = proc.join(pid);
        let comm = fsutil::read_limited(&dir.join("comm"), MAX_NAME_FILE_BYTES);
        if !comm.is_ok_and(|c| String::from_utf8_lossy(&c).trim_end() == KUBELET_COMM) {
            continue;
        }
        let Ok(cmdline) = fsutil::read_limited(&dir.join("cmdline"), MAX_NAME_FILE_BYTES) else {
            continue;
        };
        let args: Vec<String> = cmdline
            .split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        let value = hostname_override_of(&args);
        if !seen.contains(&value) {
            seen.push(value);
        }
    }
    match seen.as_slice() {
        [one] => one.clone(),
        _ => None,
    }
}

/// The value of kubelet's `--hostname-override` in its arguments (pflag's
/// forms `--flag=value` and `--flag value`; the last one wins; nothing
/// after `--`), normalised.
fn hostname_override_of(args: &[String]) -> Option<String> {
    let mut value: Option<&str> = None;
    let mut rest = args.iter().skip(1);
    while let Some(arg) = rest.next() {
        if arg == "--" {
            break;
        }
        if arg == HOSTNAME_OVERRIDE_FLAG {
            value = rest.next().map(String::as_str);
        } else if let Some(v) = arg
            .strip_prefix(HOSTNAME_OVERRIDE_FLAG)
            .and_then(|v| v.strip_prefix('='))
        {
            value = Some(v);
        }
    }
    value.and_then(normalise)
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

    /// A host root with `files` (node path, content) in a temp dir.
    fn host_with(files: &[(&str, &[u8])]) -> (tempfile::TempDir, HostRoot) {
        let dir = tempfile::tempdir().unwrap();
        for (path, content) in files {
            let at = dir.path().join(path.trim_start_matches('/'));
            std::fs::create_dir_all(at.parent().unwrap()).unwrap();
            std::fs::write(at, content).unwrap();
        }
        let host = HostRoot::new(dir.path()).unwrap();
        (dir, host)
    }

    #[test]
    fn a_hostname_file_that_differs_from_kubelets_name_only_in_case_gives_kubelets_name() {
        let (_dir, host) = host_with(&[("/etc/hostname", b"Node-1\n")]);
        let id = NodeIdentity::read(&host, None);
        assert_eq!(id.name.as_deref(), Some("node-1"));
        assert_eq!(id.source, Some(NameSource::HostnameFile));
        assert_eq!(id.hostname.as_deref(), Some("node-1"));
    }

    #[test]
    fn the_kernel_hostname_is_the_nodes_only_where_this_process_shares_it() {
        let (_dir, host) = host_with(&[
            ("/etc/hostname", b"Stale-Name\n"),
            ("/proc/sys/kernel/hostname", b"Worker-3.Example.Test\n"),
        ]);
        let shared = NodeIdentity::read_with(&host, None, KernelView::Shared);
        assert_eq!(shared.name.as_deref(), Some("worker-3.example.test"));
        assert_eq!(shared.source, Some(NameSource::KernelHostname));
        // A pod's kernel hostname is its own: the node's file speaks.
        let pod = NodeIdentity::read_with(&host, None, KernelView::Separate);
        assert_eq!(pod.name.as_deref(), Some("stale-name"));
    }

    #[test]
    fn kubelets_hostname_override_names_the_node_unless_kubelets_disagree() {
        let kubelet = b"/usr/bin/kubelet\0--v=2\0--hostname-override=Ip-10-0-0-7.EC2.Internal\0";
        let (dir, host) = host_with(&[
            ("/etc/hostname", b"host-1\n"),
            ("/proc/812/comm", b"kubelet\n"),
            ("/proc/812/cmdline", kubelet),
            // Another process with the flag is not kubelet.
            ("/proc/900/comm", b"kube-proxy\n"),
            (
                "/proc/900/cmdline",
                b"kube-proxy\0--hostname-override=proxy\0",
            ),
            ("/proc/self/comm", b"kubelet\n"),
        ]);
        let id = NodeIdentity::read(&host, None);
        assert_eq!(id.name.as_deref(), Some("ip-10-0-0-7.ec2.internal"));
        assert_eq!(id.source, Some(NameSource::KubeletHostnameOverride));
        assert_eq!(id.hostname.as_deref(), Some("host-1"));
        // The configured name wins over kubelet's flag.
        let id = NodeIdentity::read(&host, Some("node-1"));
        assert_eq!(id.name.as_deref(), Some("node-1"));
        assert_eq!(id.source, Some(NameSource::Configured));
        // A second kubelet (a nested node) without the flag: none is trusted.
        std::fs::create_dir_all(dir.path().join("proc/950")).unwrap();
        std::fs::write(dir.path().join("proc/950/comm"), "kubelet\n").unwrap();
        std::fs::write(dir.path().join("proc/950/cmdline"), "kubelet\0--v=2\0").unwrap();
        let id = NodeIdentity::read(&host, None);
        assert_eq!(id.name.as_deref(), Some("host-1"));
        assert_eq!(id.source, Some(NameSource::HostnameFile));
    }

    #[test]
    fn hostname_override_is_read_in_both_flag_forms_and_the_last_wins() {
        let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let of = |a: &[&str]| hostname_override_of(&args(a));
        assert_eq!(
            of(&["kubelet", "--hostname-override", "A"]),
            Some("a".into())
        );
        assert_eq!(
            of(&["kubelet", "--hostname-override=a", "--hostname-override=B "]),
            Some("b".into())
        );
        assert_eq!(of(&["kubelet", "--", "--hostname-override=a"]), None);
        assert_eq!(of(&["kubelet", "--hostname-overrides=a"]), None);
        assert_eq!(of(&["kubelet", "--hostname-override="]), None);
        assert_eq!(of(&["kubelet", "--hostname-override"]), None);
    }
}
