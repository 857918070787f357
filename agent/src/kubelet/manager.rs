//! The kubelet certificate pass: decide (renewal.rs, with the entries of
//! revocation.rs), obtain (csr.rs, with the identity of identity.rs), check,
//! install (store.rs), restart kubelet (node::systemd).
//!
//! One pass looks at the client certificate (and the serving one, opt-in),
//! renews what is due, and returns when the next pass is needed. When kubelet
//! rotates its own client certificate, the agent only monitors it. A pass
//! holds `<state-dir>/kubelet.lock`, so the daemon and `node-cert-agent
//! renew` never renew at the same time.
//!
//! Boundary: this module sequences the others and owns no format, file
//! layout or API call of its own; it depends only on the leaf modules
//! `x509`, `node` and `config` outside `kubelet`.

use std::fs::File;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::fcntl::Flock;
use tracing::{error, info, warn};

pub use crate::config::KubeletSettings;
use crate::errors::error_chain;
use crate::k8s::client::{build_client, ClientError};
use crate::k8s::kubeconfig::KubeconfigError;
use crate::kubelet::csr::{self, CsrError, Purpose};
use crate::kubelet::facts::facts_of;
use crate::kubelet::identity::{self, IdentityError, IdentitySource};
use crate::kubelet::kubelet_config::SelfRotation;
use crate::kubelet::renewal::{self, Decision, RenewReason};
use crate::kubelet::revocation::{self, Revocation};
use crate::kubelet::store::{CertKind, CurrentCert, KubeletStore, StoreError};
use crate::node::hostroot::{HostRoot, HostRootError};
use crate::node::lock::{lock_exclusive, LockError};
use crate::node::systemd::{Systemd, SystemdError};
use crate::x509::cert::CertInfo;
use crate::x509::time::{now_unix, rfc3339};

/// The longest sleep between passes, so a clock jump (suspend, NTP step) is
/// noticed within this time even when nothing else wakes the agent.
pub const MAX_SLEEP: Duration = Duration::from_secs(3600);

/// What the kubelet job works with on this node.
#[derive(Clone, Debug)]
pub struct KubeletJob {
    pub settings: KubeletSettings,
    pub node_name: String,
    /// The serving certificate's DNS names and IPs, when it is on.
    pub serving: Option<(Vec<String>, Vec<IpAddr>)>,
    /// The lock file shared with `renew`, as this process sees it.
    pub lock_path: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum KubeletError {
    #[error(transparent)]
    HostRoot(#[from] HostRootError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Csr(#[from] CsrError),
    #[error("API server {server}: {source}")]
    Api { server: String, source: CsrError },
    #[error(
        "cannot bootstrap the kubelet client certificate: {reason}. Provide a bootstrap kubeconfig at {path} \
         (server URL, cluster CA, and a bootstrap token `<id>.<secret>` of a token in group system:bootstrappers), \
         or a valid client certificate at {pki}/kubelet-client-current.pem"
    )]
    NoBootstrap {
        path: PathBuf,
        pki: PathBuf,
        reason: String,
    },
    #[error("kubeconfig: {0}")]
    Kubeconfig(#[from] KubeconfigError),
    #[error("building an API client for {server}: {reason}")]
    Client { server: String, reason: String },
    #[error("restart of {unit} after installing the new certificate: {source}")]
    Restart { unit: String, source: SystemdError },
    #[error("restart job for {unit} ended with result \"{result}\"; see `journalctl -u {unit}` on the node")]
    RestartFailed { unit: String, result: String },
    #[error("the kubelet lock (shared with `node-cert-agent renew`): {0}")]
    Lock(LockError),
}

impl From<IdentityError> for KubeletError {
    fn from(e: IdentityError) -> Self {
        match e {
            IdentityError::NoBootstrap { path, pki, reason } => {
                Self::NoBootstrap { path, pki, reason }
            }
            IdentityError::Client(e) => e.into(),
        }
    }
}

impl From<ClientError> for KubeletError {
    fn from(e: ClientError) -> Self {
        match e {
            ClientError::Build { server, reason } => Self::Client { server, reason },
        }
    }
}

impl KubeletError {
    /// How long the API server asked us to wait, if it did.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Csr(e) | Self::Api { source: e, .. } => e.retry_after(),
            _ => None,
        }
    }
}

/// What a pass found and did.
#[derive(Debug, Default)]
pub struct PassOutcome {
    /// Unix time of the next scheduled renewal, if any certificate is managed.
    pub next_deadline: Option<i64>,
    pub renewed: Vec<CertKind>,
    /// Why each renewal happened, in the order of `renewed`.
    pub reasons: Vec<(CertKind, RenewReason)>,
    /// Revocations that match the certificate issued in answer to them.
    pub unfixable_revocations: Vec<String>,
    pub monitoring_only: bool,
}

pub struct KubeletManager<S: Systemd> {
    host: HostRoot,
    identity: IdentitySource,
    store: KubeletStore,
    systemd: S,
    settings: KubeletSettings,
    node_name: String,
    serving: Option<(Vec<String>, Vec<IpAddr>)>,
    lock_path: PathBuf,
    /// Revocation label → serial of the certificate issued in answer to it.
    /// A revocation without notBefore can match every certificate this node
    /// can get (say, a whole group): renewing once more per match would be a
    /// CSR storm, so a replacement that still matches is reported instead.
    answered_revocations: std::sync::Mutex<std::collections::BTreeMap<String, String>>,
}

impl<S: Systemd> KubeletManager<S> {
    pub fn new(host: HostRoot, systemd: S, job: KubeletJob) -> Self {
        let store = KubeletStore::new(host.clone(), job.settings.pki_dir.clone());
        let identity = IdentitySource::new(host.clone(), &job.settings);
        Self {
            host,
            identity,
            store,
            systemd,
            settings: job.settings,
            node_name: job.node_name,
            serving: job.serving,
            lock_path: job.lock_path,
            answered_revocations: std::sync::Mutex::new(std::collections::BTreeMap::new()),
        }
    }

    pub fn settings(&self) -> &KubeletSettings {
        &self.settings
    }

    /// The node whose certificates this manager keeps.
    pub fn node_name(&self) -> &str {
        &self.node_name
    }

    /// The job as given to [`KubeletManager::new`], for a second manager
    /// of the same node (the event sink's identity source).
    pub fn job(&self) -> KubeletJob {
        KubeletJob {
            settings: self.settings.clone(),
            node_name: self.node_name.clone(),
            serving: self.serving.clone(),
            lock_path: self.lock_path.clone(),
        }
    }

    /// Whether kubelet's own config turns on client certificate rotation.
    pub fn kubelet_rotates_itself(&self) -> bool {
        SelfRotation::read(&self.host, &self.settings.kubelet_config).client
    }

    fn lock(&self) -> Result<Flock<File>, KubeletError> {
        lock_exclusive(&self.lock_path).map_err(KubeletError::Lock)
    }

    /// One pass over the managed certificates. `force` renews now.
    pub async fn pass(&self, force: bool) -> Result<PassOutcome, KubeletError> {
        let _lock = self.lock()?;
        // A renewal killed mid-write leaves its temp file: clear it now that
        // no other writer of ours can be in flight.
        match self.store.sweep_leftovers() {
            Ok(0) => {}
            Ok(n) => {
                info!(pki_dir = %self.store.dir().display(), "removed {n} leftover temp file(s) of an interrupted renewal")
            }
            Err(e) => warn!("{e}"),
        }
        let now = now_unix();
        let mut outcome = PassOutcome::default();
        let client_current = self.read_current(CertKind::Client);
        let revocations = self.revocations(client_current.as_ref(), now).await;

        let mut kinds = vec![(CertKind::Client, Purpose::Client)];
        if let Some((dns, ips)) = &self.serving {
            kinds.push((
                CertKind::Serving,
                Purpose::Serving {
                    dns: dns.clone(),
                    ips: ips.clone(),
                },
            ));
        }
        for (kind, purpose) in kinds {
            let current = if kind == CertKind::Client {
                client_current.clone()
            } else {
                self.read_current(kind)
            };
            let facts = current.as_ref().map(facts_of);
            let (decision, bad) =
                renewal::decide(facts.as_ref(), &self.node_name, now, &revocations);
            for (r, e) in bad {
                warn!(revocation = %r.label(), "ignoring a RenewRevocation entry: {e}");
            }
            let current_serial = facts.as_ref().map(|f| f.serial.clone()).unwrap_or_default();
            let reason = match decision {
                _ if force => Some(RenewReason::Forced),
                Decision::RenewNow(RenewReason::Revoked(label))
                    if self.already_answered(&label, &current_serial) =>
                {
                    error!(
                        cert = kind.name(),
                        revocation = %label,
                        "the kubelet {} certificate issued in answer to {label} matches it again: the revocation matches every certificate this node can get, so renewing cannot help. Give the revocation a notBefore (only certificates issued before it are revoked) or narrow it",
                        kind.name()
                    );
                    outcome.unfixable_revocations.push(label);
                    let f = facts.as_ref().map(|f| {
                        renewal::deadline(
                            f.not_before,
                            f.not_after,
                            renewal::renewal_fraction(&self.node_name),
                        )
                    });
                    if let Some(d) = f {
                        outcome.next_deadline =
                            Some(outcome.next_deadline.map_or(d, |x: i64| x.min(d)));
                    }
                    None
                }
                Decision::RenewNow(reason) => Some(reason),
                Decision::RenewAt { deadline, .. } if deadline <= now => {
                    Some(RenewReason::Due { deadline })
                }
                Decision::RenewAt { deadline, fraction } => {
                    info!(
                        cert = kind.name(),
                        deadline = %rfc3339(deadline),
                        fraction = format!("{fraction:.3}"),
                        not_after = %facts.as_ref().map(|f| rfc3339(f.not_after)).unwrap_or_default(),
                        "kubelet {} certificate is healthy; renewal scheduled at {} ({:.1} % of its lifetime)",
                        kind.name(),
                        rfc3339(deadline),
                        fraction * 100.0
                    );
                    outcome.next_deadline = Some(
                        outcome
                            .next_deadline
                            .map_or(deadline, |d: i64| d.min(deadline)),
                    );
                    None
                }
            };
            let Some(reason) = reason else { continue };
            if kind == CertKind::Client
                && !force
                && self.settings.defer_to_kubelet_rotation
                && self.kubelet_rotates_itself()
            {
                outcome.monitoring_only = true;
                warn!(
                    cert = kind.name(),
                    reason = %reason,
                    kubelet_config = %self.settings.kubelet_config.display(),
                    "kubelet rotates its own client certificate (rotateCertificates: true); node-cert-agent only monitors it and does not renew: {reason}"
                );
                continue;
            }
            info!(cert = kind.name(), reason = %reason, "renewing the kubelet {} certificate: {reason}", kind.name());
            let usable_client = client_current
                .as_ref()
                .filter(|c| identity::is_usable(c, now));
            self.renew(kind, &purpose, usable_client, now).await?;
            if let RenewReason::Revoked(label) = &reason {
                if let Some(new_facts) = self.read_current(kind).as_ref().map(facts_of) {
                    if let Ok(mut answered) = self.answered_revocations.lock() {
                        answered.insert(label.clone(), new_facts.serial.clone());
                    }
                    let still = revocations
                        .iter()
                        .any(|r| &r.label() == label && r.matches(&new_facts) == Ok(true));
                    if still {
                        error!(
                            cert = kind.name(),
                            revocation = %label,
                            "the new kubelet {} certificate matches {label} too: the revocation matches every certificate this node can get, so renewing cannot help and the agent will not renew for it again. Give the revocation a notBefore (only certificates issued before it are revoked) or narrow it",
                            kind.name()
                        );
                        outcome.unfixable_revocations.push(label.clone());
                    }
                }
            }
            outcome.reasons.push((kind, reason.clone()));
            outcome.renewed.push(kind);
        }
        if !outcome.renewed.is_empty() {
            self.restart_units().await?;
            // The new certificates set the next deadline.
            for kind in &outcome.renewed {
                if let Some(f) = self.read_current(*kind).as_ref().map(facts_of) {
                    let d = renewal::deadline(
                        f.not_before,
                        f.not_after,
                        renewal::renewal_fraction(&self.node_name),
                    );
                    outcome.next_deadline = Some(outcome.next_deadline.map_or(d, |x| x.min(d)));
                }
            }
        }
        Ok(outcome)
    }

    fn already_answered(&self, label: &str, current_serial: &str) -> bool {
        self.answered_revocations
            .lock()
            .map(|a| a.get(label).is_some_and(|s| s == current_serial))
            .unwrap_or(false)
    }

    fn read_current(&self, kind: CertKind) -> Option<CurrentCert> {
        match self.store.current(kind) {
            Ok(c) => c,
            Err(e) => {
                warn!(
                    cert = kind.name(),
                    "the current kubelet {} certificate is unreadable and will be replaced: {e}",
                    kind.name()
                );
                None
            }
        }
    }

    async fn renew(
        &self,
        kind: CertKind,
        purpose: &Purpose,
        usable_client: Option<&CurrentCert>,
        now: i64,
    ) -> Result<(), KubeletError> {
        let (kc, identity) = self.identity.choose(usable_client)?;
        let client = build_client(&kc)?;
        let key = csr::generate_key(self.settings.key_type)?;
        let request = csr::build_request(&key, &self.node_name, purpose)?;
        let object = csr::csr_object(
            request,
            purpose,
            self.settings.key_type,
            self.settings.expiration_seconds,
        );
        info!(cert = kind.name(), identity, server = %kc.server, "requesting a kubelet {} certificate", kind.name());
        let (csr_name, chain_pem) = csr::submit_and_wait(
            &client,
            &object,
            self.settings.api_timeout,
            self.settings.csr_timeout,
        )
        .await
        .map_err(|source| KubeletError::Api {
            server: kc.server.clone(),
            source,
        })?;
        let leaf = csr::verify_issued(
            &csr_name,
            &chain_pem,
            &key,
            &self.node_name,
            kc.ca_pem.as_deref(),
            now_unix(),
        )?;
        let key_pem = key
            .private_key_to_pem_pkcs8()
            .map_err(|e| CsrError::Rejected {
                name: csr_name.clone(),
                reason: crate::x509::openssl_reason(&e),
            })?;
        let path = self.store.install(kind, &chain_pem, &key_pem, now)?;
        let info = leaf.to_der().ok().and_then(|d| CertInfo::from_der(&d).ok());
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

    async fn restart_units(&self) -> Result<(), KubeletError> {
        for unit in &self.settings.restart_units {
            let job = self
                .systemd
                .try_restart_unit(unit)
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
        }
        Ok(())
    }

    /// The RenewRevocation entries, read with the node's identity. An API
    /// failure leaves the list empty: revocations only ever add renewals.
    async fn revocations(&self, client_current: Option<&CurrentCert>, now: i64) -> Vec<Revocation> {
        let Some(current) = client_current.filter(|c| identity::is_usable(c, now)) else {
            return Vec::new();
        };
        let Ok((kc, _)) = self.identity.choose(Some(current)) else {
            return Vec::new();
        };
        let client = match build_client(&kc) {
            Ok(c) => c,
            Err(e) => {
                warn!("cannot read RenewRevocations: {e}");
                return Vec::new();
            }
        };
        let timeout = self.settings.api_timeout;
        match tokio::time::timeout(timeout, revocation::list_revocations(&client)).await {
            Ok(Ok(list)) => list,
            Ok(Err(e)) => {
                warn!(server = %kc.server, "cannot read RenewRevocations from {}: {}", kc.server, error_chain(&e));
                Vec::new()
            }
            Err(_) => {
                warn!(server = %kc.server, "cannot read RenewRevocations from {}: the API server did not answer within {timeout:?}", kc.server);
                Vec::new()
            }
        }
    }

    /// The bootstrap and kubelet kubeconfigs as this process sees them.
    pub fn kubeconfig_paths(&self) -> Vec<PathBuf> {
        [
            &self.settings.bootstrap_kubeconfig,
            &self.settings.kubeconfig,
        ]
        .into_iter()
        .filter_map(|p| self.host.resolve(p).ok())
        .collect()
    }

    /// A client with the node's current identity, for watches.
    pub fn node_client(&self) -> Option<kube::Client> {
        let current = self.read_current(CertKind::Client);
        self.identity.node_client(current.as_ref(), now_unix())
    }
}

/// Where the lock lives for a given state dir (a process path).
pub fn lock_path(state_dir: &Path) -> PathBuf {
    state_dir.join("kubelet.lock")
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]
mod tests {
    use super::*;

    #[test]
    fn identity_errors_read_the_same_as_kubelet_errors() {
        let no_bootstrap = || IdentityError::NoBootstrap {
            path: "/var/lib/kubelet/bootstrap-kubeconfig".into(),
            pki: "/var/lib/kubelet/pki".into(),
            reason: "kubeconfig /var/lib/kubelet/bootstrap-kubeconfig does not exist".into(),
        };
        let client = || {
            IdentityError::Client(ClientError::Build {
                server: "https://10.0.0.1:6443".into(),
                reason: "server URL is invalid".into(),
            })
        };
        for e in [no_bootstrap(), client()] {
            let text = e.to_string();
            assert_eq!(KubeletError::from(e).to_string(), text);
        }
        assert!(matches!(
            KubeletError::from(no_bootstrap()),
            KubeletError::NoBootstrap { .. }
        ));
        assert!(matches!(
            KubeletError::from(client()),
            KubeletError::Client { .. }
        ));
    }
}
