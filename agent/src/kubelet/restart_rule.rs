//! When a new kubelet certificate needs a restart of kubelet, and when
//! kubelet picks the new file up itself. Pure: the caller gathers the facts.
//!
//! - Client certificate: kubelet's API client is client-go's, which
//!   re-reads a kubeconfig's `client-certificate`/`client-key` files every
//!   5 minutes and drops its old connections when they change
//!   (`transport/cert_rotation.go`, since Kubernetes 1.19). So kubelet is
//!   restarted only when it cannot: after a bootstrap (its certificate was
//!   missing or expired), when its kubeconfig was written just now, when
//!   the kubeconfig does not name the renewed file, or when the old
//!   certificate expires before kubelet's next re-read.
//! - Serving certificate: kubelet 1.31 and later watch their `tlsCertFile`
//!   (`ReloadKubeletServerCertificateFile`, on by default; re-armed within a
//!   minute when the file is replaced). Restarted for older or unknown
//!   versions, a gate turned off, a `tlsCertFile` that is not the renewed
//!   file, or when there was no serving file before.
//!
//! Boundary: decides only; recording and restarting are the manager's.

use crate::kubelet::store::CertKind;

/// How often client-go re-reads a kubeconfig's certificate files
/// (`CertCallbackRefreshDuration`), plus a minute of margin.
pub const CLIENT_RELOAD_WINDOW_S: i64 = 5 * 60 + 60;

/// How soon kubelet notices a replaced `tlsCertFile`, plus margin.
pub const SERVING_RELOAD_WINDOW_S: i64 = 60 + 60;

/// The first kubelet minor version (1.x) that reloads its serving
/// certificate file.
pub const SERVING_RELOAD_SINCE_MINOR: u32 = 31;

/// What the rule looks at for one new certificate.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RestartFacts {
    /// The certificate was obtained with the bootstrap kubeconfig: kubelet
    /// had no usable certificate of this kind.
    pub bootstrapped: bool,
    /// The agent writes kubelet's kubeconfig in this renewal.
    pub kubeconfig_written: bool,
    /// kubelet's kubeconfig names the renewed file as its client
    /// certificate and key (client) / kubelet's `tlsCertFile` is the
    /// renewed file (serving).
    pub kubelet_reads_the_file: bool,
    /// When the certificate kubelet holds now expires (Unix seconds);
    /// `None` if there is none.
    pub old_not_after: Option<i64>,
    /// kubelet's version (major, minor) from its Node, if known.
    pub kubelet_version: Option<(u32, u32)>,
    /// `ReloadKubeletServerCertificateFile` as kubelet's flags or config
    /// set it (`None`: the default, on since 1.31).
    pub serving_reload_gate: Option<bool>,
}

/// Why kubelet must be restarted for a new certificate of `kind`, or
/// `None` when it picks the new file up itself.
pub fn restart_reason(kind: CertKind, f: &RestartFacts, now: i64) -> Option<String> {
    match kind {
        CertKind::Client => client_reason(f, now),
        CertKind::Serving => serving_reason(f, now),
    }
}

fn client_reason(f: &RestartFacts, now: i64) -> Option<String> {
    if f.bootstrapped {
        return Some("it had no usable client certificate (a bootstrap)".into());
    }
    if f.kubeconfig_written {
        return Some("its kubeconfig was written just now".into());
    }
    if !f.kubelet_reads_the_file {
        return Some(
            "its kubeconfig does not name the renewed file, so client-go cannot re-read it".into(),
        );
    }
    match f.old_not_after {
        None => Some("it had no client certificate".into()),
        Some(t) if t - now < CLIENT_RELOAD_WINDOW_S => Some(format!(
            "its old certificate expires in {} s, before client-go's next re-read (every 5 minutes)",
            (t - now).max(0)
        )),
        Some(_) => None,
    }
}

fn serving_reason(f: &RestartFacts, now: i64) -> Option<String> {
    if !f.kubelet_reads_the_file {
        return Some("its tlsCertFile is not the renewed file".into());
    }
    match f.kubelet_version {
        None => return Some("its version is unknown (the Node's nodeInfo.kubeletVersion cannot be read), and only kubelet 1.31 and later reload tlsCertFile".into()),
        Some((major, minor)) if major == 1 && minor < SERVING_RELOAD_SINCE_MINOR => {
            return Some(format!(
                "kubelet {major}.{minor} reads tlsCertFile only at start (1.31 and later reload it)"
            ))
        }
        Some(_) => {}
    }
    if f.serving_reload_gate == Some(false) {
        return Some("its feature gate ReloadKubeletServerCertificateFile is off".into());
    }
    match f.old_not_after {
        None => Some("it had no serving certificate file to watch".into()),
        Some(t) if t - now < SERVING_RELOAD_WINDOW_S => Some(format!(
            "its old serving certificate expires in {} s",
            (t - now).max(0)
        )),
        Some(_) => None,
    }
}

/// `v1.31.2`, `v1.30.0-eks-1`, `1.29` → (1, 31) ...; anything else `None`.
pub fn parse_kubelet_version(v: &str) -> Option<(u32, u32)> {
    let v = v.strip_prefix('v').unwrap_or(v);
    let mut parts = v.split('.');
    let major = parts.next()?.parse().ok()?;
    let minor: String = parts
        .next()?
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    Some((major, minor.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_800_000_000;

    fn healthy_client() -> RestartFacts {
        RestartFacts {
            kubelet_reads_the_file: true,
            old_not_after: Some(NOW + 3600),
            ..RestartFacts::default()
        }
    }

    #[test]
    fn a_client_renewal_kubelet_can_reload_restarts_nothing() {
        assert_eq!(
            restart_reason(CertKind::Client, &healthy_client(), NOW),
            None
        );
    }

    #[test]
    fn a_client_renewal_restarts_kubelet_when_it_cannot_reload_in_time() {
        let cases = [
            RestartFacts {
                bootstrapped: true,
                ..healthy_client()
            },
            RestartFacts {
                kubeconfig_written: true,
                ..healthy_client()
            },
            RestartFacts {
                kubelet_reads_the_file: false,
                ..healthy_client()
            },
            RestartFacts {
                old_not_after: Some(NOW + CLIENT_RELOAD_WINDOW_S - 1),
                ..healthy_client()
            },
            RestartFacts {
                old_not_after: None,
                ..healthy_client()
            },
        ];
        for f in cases {
            assert!(restart_reason(CertKind::Client, &f, NOW).is_some(), "{f:?}");
        }
    }

    #[test]
    fn a_serving_renewal_restarts_only_kubelet_that_cannot_reload_its_file() {
        let reloads = RestartFacts {
            kubelet_reads_the_file: true,
            old_not_after: Some(NOW + 3600),
            kubelet_version: Some((1, 31)),
            ..RestartFacts::default()
        };
        assert_eq!(restart_reason(CertKind::Serving, &reloads, NOW), None);
        for f in [
            RestartFacts {
                kubelet_version: Some((1, 30)),
                ..reloads.clone()
            },
            RestartFacts {
                kubelet_version: None,
                ..reloads.clone()
            },
            RestartFacts {
                serving_reload_gate: Some(false),
                ..reloads.clone()
            },
            RestartFacts {
                kubelet_reads_the_file: false,
                ..reloads.clone()
            },
            RestartFacts {
                old_not_after: None,
                ..reloads.clone()
            },
        ] {
            assert!(
                restart_reason(CertKind::Serving, &f, NOW).is_some(),
                "{f:?}"
            );
        }
    }

    #[test]
    fn kubelet_versions_parse_as_nodes_report_them() {
        assert_eq!(parse_kubelet_version("v1.31.2"), Some((1, 31)));
        assert_eq!(parse_kubelet_version("v1.30.0-eks-1"), Some((1, 30)));
        assert_eq!(parse_kubelet_version("v1.29+k3s1"), Some((1, 29)));
        assert_eq!(parse_kubelet_version(""), None);
        assert_eq!(parse_kubelet_version("vX.Y"), None);
    }
}
