//! One renewal of the kubelet pass: obtain a certificate through a CSR,
//! check it, install it, and restart kubelet only when it cannot pick the
//! new file up itself ([`crate::kubelet::restart_rule`]).
//!
//! Owns: the order of those steps and the kubelet kubeconfig the agent
//! writes after a bootstrap. Boundary: decides nothing about whether to
//! renew (that is `due`'s, in the manager) and makes API calls only
//! through `csr` and `node_facts`.

use openssl::x509::X509;
use tracing::{error, info, warn};

use super::{KubeletError, KubeletManager, PassOutcome};
use crate::k8s::client::build_client;
use crate::k8s::kubeconfig::{self, ResolvedKubeconfig};
use crate::kubelet::csr::{self, CsrError, Purpose};
use crate::kubelet::facts::facts_of;
use crate::kubelet::identity;
use crate::kubelet::kubelet_config::EffectiveKubelet;
use crate::kubelet::node_facts::NodeFacts;
use crate::kubelet::renewal;
use crate::kubelet::restart_rule;
use crate::kubelet::state::{self as kubelet_state, KubeletState};
use crate::kubelet::store::{CertKind, CurrentCert};
use crate::node::fsutil;
use crate::node::systemd::Systemd;
use crate::time::{now_unix, rfc3339};
use crate::x509::cert::CertInfo;

impl<S: Systemd> KubeletManager<S> {
    pub(super) async fn renew(
        &self,
        kind: CertKind,
        purpose: &Purpose,
        usable_client: Option<&CurrentCert>,
        now: i64,
        kubelet: &EffectiveKubelet,
        kubelet_version: Option<(u32, u32)>,
    ) -> Result<(), KubeletError> {
        let (kc, identity) = self.identity.choose(usable_client)?;
        let client = build_client(&kc)?;
        // The key of a CSR still in flight (a retry, or an agent restarted
        // while it waited) is used again: the same key names the same CSR.
        let key = match self.store.pending_key(kind)? {
            Some(key) => key,
            None => {
                let key = csr::generate_key(self.settings.key_type)?;
                self.store.save_pending_key(kind, &key)?;
                key
            }
        };
        let request = csr::build_request(&key, &self.node_name, purpose)?;
        let usages = csr::usages_of(purpose, self.settings.key_type);
        let name = csr::csr_name(&key, &self.node_name, &usages)?;
        let object = csr::csr_object(
            &name,
            request,
            purpose,
            self.settings.key_type,
            self.settings.expiration_seconds,
        );
        info!(cert = kind.name(), csr = %name, identity, server = %kc.server, "requesting a kubelet {} certificate with CertificateSigningRequest {name}", kind.name());
        let waited = csr::submit_and_wait(
            &client,
            &object,
            &key,
            self.settings.api_timeout,
            self.settings.csr_timeout,
        )
        .await;
        let (csr_name, chain_pem) = match waited {
            Ok(ok) => ok,
            Err(source) => {
                if source.ends_the_request() {
                    // The next attempt files a new request with a new key.
                    self.store.remove_pending_key(kind)?;
                }
                return Err(KubeletError::Api {
                    server: kc.server.clone(),
                    source,
                });
            }
        };
        let verified = match csr::verify_issued(
            &csr_name,
            &chain_pem,
            &key,
            &self.node_name,
            kc.ca_pem.as_deref(),
            now_unix(),
        ) {
            Ok(v) => v,
            Err(e) => {
                self.store.remove_pending_key(kind)?;
                return Err(e.into());
            }
        };
        if let Some(w) = &verified.chain_warning {
            warn!(
                cert = kind.name(),
                csr = %csr_name,
                "the kubelet {} certificate from CSR {csr_name}: {w}; installed anyway, as kubelet does (some clusters sign kubelet certificates with another CA than the API server's)",
                kind.name()
            );
        }
        let key_pem = key
            .private_key_to_pem_pkcs8()
            .map_err(|e| CsrError::Rejected {
                name: csr_name.clone(),
                reason: crate::x509::openssl_reason(&e),
            })?;
        // Whether kubelet picks the new file up itself (restart_rule.rs).
        let facts = self.restart_facts(kind, identity, usable_client, kubelet, kubelet_version);
        let restart_reason = restart_rule::restart_reason(kind, &facts, now_unix());
        match &restart_reason {
            Some(why) => info!(
                cert = kind.name(),
                units = %self.settings.restart_units.join(", "),
                "kubelet is restarted for the new {} certificate: {why}",
                kind.name()
            ),
            None => info!(
                cert = kind.name(),
                "no kubelet restart for the new {} certificate: kubelet re-reads the file itself ({})",
                kind.name(),
                match kind {
                    CertKind::Client => "client-go re-reads its kubeconfig's certificate files every 5 minutes",
                    CertKind::Serving => "kubelet 1.31 and later reload tlsCertFile",
                }
            ),
        }
        // Recorded before the certificate becomes current: whatever stops
        // the agent now, the next pass restarts kubelet for it. A failed
        // install takes it back: kubelet has nothing new to read, and every
        // retry would otherwise restart it again.
        let state_path = self.state_path();
        let before = kubelet_state::load(&state_path)?;
        if restart_reason.is_some() {
            let mut state = before.clone();
            state
                .restart_pending
                .extend(self.settings.restart_units.iter().cloned());
            kubelet_state::save(&state_path, &state)?;
        }
        let path = match self.store.install(kind, &chain_pem, &key_pem, now) {
            Ok(path) => path,
            Err(e) => {
                self.withdraw_restart(kind, &verified.leaf, &before);
                return Err(e.into());
            }
        };
        self.store.remove_pending_key(kind)?;
        if kind == CertKind::Client && identity == identity::BOOTSTRAP {
            self.write_kubelet_kubeconfig(&kc)?;
        }
        let info = verified
            .leaf
            .to_der()
            .ok()
            .and_then(|d| CertInfo::from_der(&d).ok());
        if let Some(info) = info {
            let next = renewal::deadline(
                info.not_before,
                info.not_after,
                renewal::renewal_fraction(&self.node_name),
            );
            info!(
                cert = kind.name(),
                csr = %csr_name,
                subject = %info.subject,
                serial = %info.serial,
                not_after = %rfc3339(info.not_after),
                next_renewal = %rfc3339(next),
                path = %path.display(),
                "installed a new kubelet {} certificate from CSR {csr_name}: {}; next renewal at {}",
                kind.name(),
                info.describe(),
                rfc3339(next)
            );
        }
        Ok(())
    }

    /// What [`restart_rule::restart_reason`] looks at for a new
    /// certificate of `kind`.
    pub(super) fn restart_facts(
        &self,
        kind: CertKind,
        identity: &str,
        usable_client: Option<&CurrentCert>,
        kubelet: &EffectiveKubelet,
        kubelet_version: Option<(u32, u32)>,
    ) -> restart_rule::RestartFacts {
        match kind {
            CertKind::Client => {
                let bootstrapped = identity == identity::BOOTSTRAP;
                let kubeconfig_absent = self
                    .host
                    .resolve(&self.settings.kubeconfig)
                    .map_or(true, |p| std::fs::symlink_metadata(p).is_err());
                restart_rule::RestartFacts {
                    bootstrapped,
                    kubeconfig_written: bootstrapped && self.write_kubeconfig && kubeconfig_absent,
                    // With its own rotation, kubelet's client uses the
                    // certificate manager's certificate, not the files.
                    kubelet_reads_the_file: !kubelet.rotation.client
                        && !kubeconfig_absent
                        && self.kubeconfig_mismatch().is_none(),
                    old_not_after: usable_client.map(|c| facts_of(c).not_after),
                    ..Default::default()
                }
            }
            CertKind::Serving => {
                let link = self.store.current_link(CertKind::Serving);
                restart_rule::RestartFacts {
                    // With serverTLSBootstrap, kubelet serves its own.
                    kubelet_reads_the_file: !kubelet.rotation.serving
                        && kubelet.tls_cert_file.as_deref() == Some(link.as_path()),
                    old_not_after: self
                        .read_current(CertKind::Serving)
                        .as_ref()
                        .map(|c| facts_of(c).not_after),
                    kubelet_version,
                    serving_reload_gate: kubelet.serving_reload_gate,
                    ..Default::default()
                }
            }
        }
    }

    /// The serving certificate's purpose: its names (configured, or the
    /// Node's addresses, which it then follows), and kubelet's version from
    /// the Node (one GET per pass with the serving certificate on).
    pub(super) async fn serving_purpose(
        &self,
    ) -> Result<(Purpose, Option<NodeFacts>, Option<(u32, u32)>), KubeletError> {
        let (dns, ips) = self.serving.clone().unwrap_or_default();
        let node = self.read_node().await;
        let version = node.as_ref().ok().and_then(|n| n.kubelet_version);
        if !dns.is_empty() || !ips.is_empty() {
            return Ok((Purpose::Serving { dns, ips }, None, version));
        }
        let reason = match node {
            Ok(n) if !n.has_no_names() => {
                let purpose = Purpose::Serving {
                    dns: n.dns.clone(),
                    ips: n.ips.clone(),
                };
                return Ok((purpose, Some(n), version));
            }
            Ok(_) => "its status.addresses hold no IP or DNS name".to_string(),
            Err(reason) => reason,
        };
        Err(KubeletError::NodeAddresses {
            node: self.node_name.clone(),
            reason,
        })
    }

    /// The node's own Node, read as the node (its current client
    /// certificate): its addresses and kubelet's version, or why not.
    pub(super) async fn read_node(&self) -> Result<NodeFacts, String> {
        let Some(client) = self.node_client() else {
            return Err("the node has no usable client certificate to read it with".into());
        };
        let api: kube::Api<k8s_openapi::api::core::v1::Node> = kube::Api::all(client);
        match tokio::time::timeout(self.settings.api_timeout, api.get(&self.node_name)).await {
            Ok(Ok(node)) => Ok(NodeFacts::of(&node)),
            Ok(Err(e)) => Err(format!("GET Node {}: {e}", self.node_name)),
            Err(_) => Err(format!(
                "GET Node {} took longer than {} s",
                self.node_name,
                self.settings.api_timeout.as_secs()
            )),
        }
    }

    /// After a failed install of `issued`: the kubelet state as it was
    /// before (`before`), so no restart is owed for it, unless `issued`
    /// became current all the same.
    pub(super) fn withdraw_restart(&self, kind: CertKind, issued: &X509, before: &KubeletState) {
        let current = self.read_current(kind);
        let installed = current.is_some_and(|c| c.cert.to_der().ok() == issued.to_der().ok());
        if installed {
            return;
        }
        if let Err(e) = kubelet_state::save(&self.state_path(), before) {
            error!(
                cert = kind.name(),
                "the new kubelet {} certificate was not installed, but the restart recorded for it could not be withdrawn ({e}): the next pass restarts {} once without a new certificate",
                kind.name(),
                self.settings.restart_units.join(", ")
            );
        }
    }

    /// After a bootstrap, kubelet's kubeconfig as kubelet itself writes it
    /// (the bootstrap's server and CA, and `kubelet-client-current.pem` as
    /// client certificate and key), when the job is told to (host mode) and
    /// the file is absent. An existing kubeconfig is never touched.
    pub(super) fn write_kubelet_kubeconfig(
        &self,
        bootstrap: &ResolvedKubeconfig,
    ) -> Result<(), KubeletError> {
        if !self.write_kubeconfig {
            return Ok(());
        }
        let node_path = &self.settings.kubeconfig;
        let host = self.host.resolve(node_path)?;
        if std::fs::symlink_metadata(&host).is_ok() {
            return Ok(());
        }
        let cert = self.store.current_link(CertKind::Client);
        let yaml = kubeconfig::kubelet_kubeconfig(bootstrap, &cert).map_err(|e| {
            KubeletError::RenderKubeconfig {
                path: node_path.clone(),
                reason: e.to_string(),
            }
        })?;
        if let Some(dir) = host.parent() {
            fsutil::ensure_dir(dir, 0o755).map_err(|source| KubeletError::WriteKubeconfig {
                path: node_path.clone(),
                source: Box::new(source),
            })?;
        }
        fsutil::write_atomic(&host, yaml.as_bytes(), 0o600).map_err(|source| {
            KubeletError::WriteKubeconfig {
                path: node_path.clone(),
                source: Box::new(source),
            }
        })?;
        info!(kubeconfig = %node_path.display(), client_certificate = %cert.display(), "wrote kubelet's kubeconfig {} after the bootstrap, as kubelet does: server and CA of the bootstrap kubeconfig, client certificate {}", node_path.display(), cert.display());
        Ok(())
    }

    /// Restarts the units a newly installed certificate still waits for
    /// (recorded in the kubelet state file), and clears them once done.
    pub(super) async fn finish_restarts(
        &self,
        outcome: &mut PassOutcome,
    ) -> Result<(), KubeletError> {
        let path = self.state_path();
        let mut state = kubelet_state::load(&path)?;
        // Only allowlisted units, even if an older config left others.
        state
            .restart_pending
            .retain(|u| self.settings.restart_units.contains(u));
        let pending: Vec<String> = state.restart_pending.iter().cloned().collect();
        for unit in pending {
            let job = self
                .systemd
                .try_restart_unit(&unit)
                .await
                .map_err(|source| KubeletError::Restart {
                    unit: unit.clone(),
                    source,
                })?;
            if !job.is_done() {
                return Err(KubeletError::RestartFailed {
                    unit: unit.clone(),
                    result: job.0,
                });
            }
            info!(unit = %unit, job_result = %job.0, "restarted unit (if it was running) so it uses the new certificate");
            state.restart_pending.remove(&unit);
            kubelet_state::save(&path, &state)?;
            outcome.restarted.push(unit);
        }
        Ok(())
    }
}
