//! The one kubeconfig the agent writes: kubelet's, after a TLS bootstrap,
//! serialised from kube's typed kubeconfig so that a failure is an error,
//! never an empty or partial file. Pure: the caller writes it atomically.

use std::path::Path;

use base64::Engine as _;
use kube::config::{
    AuthInfo, Cluster, Context, Kubeconfig, NamedAuthInfo, NamedCluster, NamedContext, Preferences,
};

use super::ResolvedKubeconfig;

/// kubelet's kubeconfig as kubelet writes it after a TLS bootstrap: the
/// bootstrap's server and cluster CA (embedded), and `cert` (a node path,
/// kubelet's `kubelet-client-current.pem`, which holds the key too) as the
/// client certificate and key. Pure.
pub fn kubelet_kubeconfig(
    bootstrap: &ResolvedKubeconfig,
    cert: &Path,
) -> Result<String, serde_yaml::Error> {
    let cert = cert.display().to_string();
    let config = Kubeconfig {
        api_version: Some("v1".into()),
        kind: Some("Config".into()),
        clusters: vec![NamedCluster {
            name: "default-cluster".into(),
            cluster: Some(Cluster {
                server: Some(bootstrap.server.clone()),
                certificate_authority_data: bootstrap
                    .ca_pem
                    .as_ref()
                    .map(|ca| base64::engine::general_purpose::STANDARD.encode(ca)),
                insecure_skip_tls_verify: bootstrap.insecure_skip_tls_verify.then_some(true),
                ..Cluster::default()
            }),
            ..NamedCluster::default()
        }],
        auth_infos: vec![NamedAuthInfo {
            name: "default-auth".into(),
            auth_info: Some(AuthInfo {
                client_certificate: Some(cert.clone()),
                client_key: Some(cert),
                ..AuthInfo::default()
            }),
            ..NamedAuthInfo::default()
        }],
        contexts: vec![NamedContext {
            name: "default-context".into(),
            context: Some(Context {
                cluster: "default-cluster".into(),
                user: Some("default-auth".into()),
                namespace: Some("default".into()),
                ..Context::default()
            }),
            ..NamedContext::default()
        }],
        current_context: Some("default-context".into()),
        preferences: Some(Preferences::default()),
        ..Kubeconfig::default()
    };
    serde_yaml::to_string(&config)
}
