//! The kubelet pass's memory of RenewRevocations: when each entry was first
//! seen (its spread starts there), which entries no certificate this node
//! can get will satisfy, and reading the entries (the daemon's watched view,
//! or one list with the node's identity).
//!
//! Owns: `kubelet-revocations.json` through [`crate::kubelet::state`].
//! Boundary: decides no renewal (that is `renewal`'s) and writes no
//! certificate.

use std::path::PathBuf;
use std::time::Duration;

use tracing::{error, warn};

use super::{slot, KubeletManager, PassOutcome};
use crate::errors::error_chain;
use crate::k8s::client::build_client;
use crate::kubelet::facts::facts_of;
use crate::kubelet::identity;
use crate::kubelet::renewal::{self, FirstSeen, RevocationContext, Unsatisfiable};
use crate::kubelet::revocation::{self, Revocation, SourceState};
use crate::kubelet::state::{
    self as kubelet_state, RevocationRecords, SeenRecord, KUBELET_REVOCATIONS_FILE,
};
use crate::kubelet::store::CertKind;
use crate::node::systemd::Systemd;
use crate::time::{parse_rfc3339, rfc3339};

/// What the job learned of the RenewRevocation entries, each kept while it
/// stands unchanged in a complete list:
///
/// - when each was first seen to match a current certificate (renewal.rs's
///   [`FirstSeen`]): the node renews at its share of the revocation spread
///   after that, however often the pass runs in between, or the agent
///   restarts;
/// - per certificate, those no new certificate can satisfy (renewal.rs's
///   [`Unsatisfiable`]): a revocation without notBefore can match every
///   certificate this node can get (say, a whole group), and renewing for
///   it again would be a CSR storm, so it is reported instead and the
///   certificate renewed at its deadline.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct RevocationMemory {
    pub(super) first_seen: FirstSeen,
    /// By [`slot`].
    pub(super) unsatisfiable: [Unsatisfiable; 2],
}

impl RevocationMemory {
    /// From the file; a time that does not parse is skipped (seen afresh).
    pub(super) fn from_records(records: &RevocationRecords) -> Self {
        let first_seen = FirstSeen::from_entries(
            records
                .seen
                .iter()
                .filter_map(|s| Some((s.entry.clone(), parse_rfc3339(&s.first_seen)?)))
                .collect(),
        );
        let unsatisfiable = [CertKind::Client, CertKind::Serving].map(|kind| {
            Unsatisfiable::from_entries(
                records
                    .unsatisfiable
                    .get(kind.name())
                    .cloned()
                    .unwrap_or_default(),
            )
        });
        Self {
            first_seen,
            unsatisfiable,
        }
    }

    pub(super) fn to_records(&self) -> RevocationRecords {
        RevocationRecords {
            seen: self
                .first_seen
                .entries()
                .iter()
                .map(|(entry, at)| SeenRecord {
                    entry: entry.clone(),
                    first_seen: rfc3339(*at),
                })
                .collect(),
            unsatisfiable: [CertKind::Client, CertKind::Serving]
                .into_iter()
                .filter(|kind| !self.unsatisfiable[slot(*kind)].entries().is_empty())
                .map(|kind| {
                    (
                        kind.name().to_string(),
                        self.unsatisfiable[slot(kind)].entries().to_vec(),
                    )
                })
                .collect(),
            ..RevocationRecords::default()
        }
    }

    pub(super) fn merge(&mut self, other: &Self) {
        self.first_seen.merge(&other.first_seen);
        for (mine, theirs) in self.unsatisfiable.iter_mut().zip(&other.unsatisfiable) {
            mine.merge(theirs);
        }
    }

    /// Forgets what a complete list no longer holds unchanged.
    pub(super) fn retain_listed(&mut self, listed: &[Revocation]) {
        self.first_seen.retain_listed(listed);
        for known in &mut self.unsatisfiable {
            known.retain_listed(listed);
        }
    }

    /// The decision's view for certificate `kind`.
    pub(super) fn context(&self, kind: CertKind, spread: Duration) -> RevocationContext<'_> {
        RevocationContext {
            unsatisfiable: &self.unsatisfiable[slot(kind)],
            first_seen: &self.first_seen,
            spread,
        }
    }
}

impl<S: Systemd> KubeletManager<S> {
    /// After a renewal of `kind`: the listed entries that the certificate
    /// just issued matches cannot be satisfied by renewing. Each is said
    /// once, when found, and not renewed for again.
    pub(super) fn learn_unsatisfiable(
        &self,
        kind: CertKind,
        revocations: &[Revocation],
        now: i64,
        outcome: &mut PassOutcome,
    ) {
        let Some(issued) = self.read_current(kind).as_ref().map(facts_of) else {
            return;
        };
        let found =
            self.with_memory(|m| m.unsatisfiable[slot(kind)].learn(revocations, &issued, now));
        let next = rfc3339(renewal::deadline(
            issued.not_before,
            issued.not_after,
            renewal::renewal_fraction(&self.node_name),
        ));
        for r in found {
            let label = r.label();
            let why = match &r.not_before {
                None => "without a notBefore it revokes every certificate this node can get".to_string(),
                Some(cutoff) => format!(
                    "its notBefore {cutoff} has passed, yet the new certificate counts as issued before it (its notBefore {} plus the {} s by which kube-controller-manager's signer backdates): the signer's clock is behind, or it backdates by more",
                    rfc3339(issued.not_before),
                    revocation::SIGNER_BACKDATE
                ),
            };
            error!(
                cert = kind.name(),
                revocation = %label,
                next_renewal = %next,
                "the kubelet {} certificate issued just now matches {label} too: {why}, so renewing again cannot help. The agent does not renew for it again while the entry stands unchanged, and renews the certificate at its normal deadline {next}. Give the entry a notBefore (only certificates issued before it are revoked) or narrow it",
                kind.name()
            );
            if !outcome.unfixable_found.contains(&label) {
                outcome.unfixable_found.push(label);
            }
        }
    }

    /// The unsatisfiable entries the current certificates match, by label.
    pub(super) fn standing_unsatisfiable(&self) -> Vec<String> {
        let mut labels = Vec::new();
        let memory = self.memory();
        for kind in [CertKind::Client, CertKind::Serving] {
            let known = &memory.unsatisfiable[slot(kind)];
            if known.entries().is_empty() {
                continue;
            }
            let Some(facts) = self.read_current(kind).as_ref().map(facts_of) else {
                continue;
            };
            for r in known.matching(&facts) {
                let label = r.label();
                if !labels.contains(&label) {
                    labels.push(label);
                }
            }
        }
        labels
    }

    pub(super) fn memory(&self) -> RevocationMemory {
        self.with_memory(|m| m.clone())
    }

    pub(super) fn with_memory<T>(&self, f: impl FnOnce(&mut RevocationMemory) -> T) -> T {
        // A panic while holding it leaves plain data behind: still the best
        // knowledge there is.
        let mut memory = self
            .revocation_memory
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        f(&mut memory)
    }

    /// Joins what the revocation file holds into what this process knows,
    /// and returns it as read (`None`: unreadable, so it is written again).
    /// Memory stays the reference: a file that cannot be read or written
    /// costs at most one renewal after a restart of the agent, never a
    /// renewal per pass.
    pub(super) fn recall_revocations(&self) -> Option<RevocationMemory> {
        match kubelet_state::load_revocations(&self.revocations_path()) {
            Ok(records) => {
                let kept = RevocationMemory::from_records(&records);
                self.with_memory(|m| m.merge(&kept));
                Some(kept)
            }
            Err(e) => {
                warn!("{e}");
                None
            }
        }
    }

    /// Writes what this process knows to the revocation file, when it
    /// differs from what the file held (`kept`).
    pub(super) fn keep_revocations(&self, kept: Option<&RevocationMemory>) {
        let memory = self.memory();
        if kept == Some(&memory) {
            return;
        }
        let path = self.revocations_path();
        if let Err(e) = kubelet_state::save_revocations(&path, &memory.to_records()) {
            warn!(
                path = %path.display(),
                "{e}; what the agent learned of the RenewRevocations is kept in memory only: after a restart of the agent a revoked certificate may be renewed once more"
            );
        }
    }

    pub(super) fn revocations_path(&self) -> PathBuf {
        self.lock_path.with_file_name(KUBELET_REVOCATIONS_FILE)
    }

    /// The RenewRevocation entries: the daemon's watched view when there is
    /// one (its state goes into the outcome), else one list with the node's
    /// identity (`renew`). A failure leaves the list empty (revocations only
    /// ever add renewals) and is reported, never silent.
    pub(super) async fn revocations(&self, now: i64, outcome: &mut PassOutcome) -> Vec<Revocation> {
        if let Some(cache) = &self.revocation_cache {
            outcome.revocations = cache.state();
            return cache.entries();
        }
        let current = self.read_current(CertKind::Client);
        let Some(current) = current.filter(|c| identity::is_usable(c, now)) else {
            outcome.revocations = SourceState::NoIdentity;
            return Vec::new();
        };
        let Ok((kc, _)) = self.identity.choose(Some(&current)) else {
            outcome.revocations = SourceState::NoIdentity;
            return Vec::new();
        };
        let namespace = &self.settings.revocation_namespace;
        let failed = |message: String, forbidden: bool| {
            warn!(server = %kc.server, "{message}");
            SourceState::Failing { message, forbidden }
        };
        let client = match build_client(&kc) {
            Ok(c) => c,
            Err(e) => {
                outcome.revocations = failed(format!("cannot read RenewRevocations: {e}"), false);
                return Vec::new();
            }
        };
        let timeout = self.settings.api_timeout;
        match tokio::time::timeout(timeout, revocation::list_revocations(&client, namespace)).await
        {
            Ok(Ok(list)) => {
                outcome.revocations = SourceState::Synced;
                list
            }
            Ok(Err(e)) => {
                let forbidden = e.api_failure().is_some_and(|f| f.is_auth());
                outcome.revocations = failed(
                    format!(
                        "cannot read RenewRevocations in {namespace} from {}: {}",
                        kc.server,
                        error_chain(&e)
                    ),
                    forbidden,
                );
                Vec::new()
            }
            Err(_) => {
                outcome.revocations = failed(
                    format!(
                        "cannot read RenewRevocations in {namespace} from {}: the API server did not answer within {timeout:?}",
                        kc.server
                    ),
                    false,
                );
                Vec::new()
            }
        }
    }
}
