//! The CA Secret read through the Kubernetes API: one list+watch of exactly
//! that object (`fieldSelector=metadata.name=<name>`), kept in a
//! [`SecretCache`] that every CA pass reads (no pass calls the API).
//!
//! What the cache says, and what a pass makes of it:
//!
//! - never synced since the agent started (API down, 401/403, 5xx,
//!   timeouts): the source cannot be read, so the CAs last installed from it
//!   stay installed (persisted key state) and nothing restarts;
//! - synced, the object present: its `data` keys, judged exactly like a
//!   mounted Secret's keys (same findings, limits and last-good rule; keys
//!   starting with `.` are refused as in a volume);
//! - synced, the object absent (a list without it, or a DELETED event): an
//!   empty source with a warning, so what it provided is uninstalled, as the
//!   mounted volume's `optional: true` would;
//! - a failure after a sync keeps the last view (no change), and marks the
//!   source failing for `status`, `/readyz` and the metrics.
//!
//! A 410 or a dropped watch is kube-runtime's relist; the same content
//! plans nothing, so it restarts nothing.
//!
//! Boundary: reads the API through a client it is given (the `k8s` seam);
//! never touches the host.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use tokio::sync::Notify;
use tracing::{debug, error, info, warn};

use crate::config::SecretRef;
use crate::k8s::failure::ApiFailure;
use crate::k8s::source::SourceState;
use crate::k8s::watch::{self, Change};
use crate::trust::plan::SourceInput;
use crate::trust::sources::{validate_raw_keys, RawKey, MAX_KEYS_PER_SOURCE};
use crate::trust::validate::{Finding, FindingKind};

/// The Role (and RoleBinding) of `manifests/base` that lets the agent read
/// the Secret.
pub const SECRET_ROLE: &str = "node-cert-agent:ca-secret-reader";
const SECRET_RBAC_FILE: &str = "manifests/base/rbac-ca-secret.yaml";

/// The Secret as last seen from the API server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretView {
    /// The object does not exist.
    Absent,
    /// Its `data`, by key.
    Present(BTreeMap<String, Vec<u8>>),
}

/// The agent's view of one Secret, and how the watch stands.
#[derive(Debug)]
pub struct SecretCache {
    secret: SecretRef,
    inner: std::sync::Mutex<CacheInner>,
    /// Notified when the view or the state changes.
    changed: Notify,
}

#[derive(Debug, Default)]
struct CacheInner {
    /// `None` until the first list completed.
    view: Option<SecretView>,
    state: SourceState,
}

impl SecretCache {
    pub fn new(secret: SecretRef) -> Self {
        Self {
            secret,
            inner: Default::default(),
            changed: Notify::new(),
        }
    }

    pub fn secret(&self) -> &SecretRef {
        &self.secret
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, CacheInner> {
        // A panic while holding it leaves plain data behind: still the best view.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn state(&self) -> SourceState {
        self.lock().state.clone()
    }

    pub fn view(&self) -> Option<SecretView> {
        self.lock().view.clone()
    }

    /// Waits until the view or the state changes.
    pub async fn changed(&self) {
        self.changed.notified().await;
    }

    /// Records that the Secret cannot be read: the view stays.
    pub fn fail(&self, message: String, forbidden: bool) {
        self.set_state(SourceState::Failing { message, forbidden });
    }

    fn set_state(&self, state: SourceState) {
        let changed = {
            let mut inner = self.lock();
            let changed = inner.state != state;
            inner.state = state;
            changed
        };
        if changed {
            self.changed.notify_one();
        }
    }

    /// A completed list or an event: the server's view.
    pub fn set_view(&self, view: SecretView) {
        let changed = {
            let mut inner = self.lock();
            let changed = inner.view.as_ref() != Some(&view) || inner.state != SourceState::Synced;
            inner.view = Some(view);
            inner.state = SourceState::Synced;
            changed
        };
        if changed {
            self.changed.notify_one();
        }
    }

    /// The source as a pass reads it at time `now`.
    pub fn input(&self, now: i64) -> SourceInput {
        let (view, state) = {
            let inner = self.lock();
            (inner.view.clone(), inner.state.clone())
        };
        input_of(&self.secret, view.as_ref(), &state, now)
    }
}

/// The source input of `secret` given the cache's view and state. Pure.
pub fn input_of(
    secret: &SecretRef,
    view: Option<&SecretView>,
    state: &SourceState,
    now: i64,
) -> SourceInput {
    let source = secret.source_name();
    match view {
        None => {
            let why = match state {
                SourceState::Failing { message, .. } => message.clone(),
                _ => "the first list has not completed yet".into(),
            };
            SourceInput {
                keys: Err(Finding::error(
                    FindingKind::SourceUnavailable,
                    &source,
                    None,
                    format!(
                        "Secret {secret} is not synced from the API server: {why}; the CAs last installed from it stay installed"
                    ),
                    "check the API server and the agent's RBAC; the agent retries with backoff",
                )),
                source,
                content: None,
            }
        }
        // What the source provided is uninstalled (the watch warns once).
        Some(SecretView::Absent) => SourceInput {
            content: Some(BTreeMap::new()),
            ..validate_raw_keys(source, Vec::new(), now)
        },
        Some(SecretView::Present(data)) => {
            if data.len() > MAX_KEYS_PER_SOURCE {
                return SourceInput {
                    keys: Err(Finding::error(
                        FindingKind::SourceUnavailable,
                        &source,
                        None,
                        format!(
                            "Secret {secret} has {} keys, more than {MAX_KEYS_PER_SOURCE}; it does not look like a CA Secret, and the CAs last installed from it stay installed",
                            data.len()
                        ),
                        "keep only CA certificates in the Secret",
                    )),
                    source,
                    content: None,
                };
            }
            let keys = data
                .iter()
                .map(|(k, v)| RawKey {
                    key: k.clone(),
                    content: Ok(v.clone()),
                })
                .collect();
            SourceInput {
                content: Some(data.clone()),
                ..validate_raw_keys(source, keys, now)
            }
        }
    }
}

/// The view a Secret object gives: its `data` (`stringData` is write-only
/// and never returned by the server).
pub fn view_of(secret: Secret) -> SecretView {
    SecretView::Present(
        secret
            .data
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k, v.0))
            .collect(),
    )
}

/// Keeps `cache` current with one list+watch of the Secret, as `identity`
/// (for messages). Runs until dropped; the server's watch timeouts are
/// re-established by kube-runtime's watcher (a relist only after a 410).
pub async fn watch(client: kube::Client, identity: String, cache: Arc<SecretCache>) {
    use futures_util::StreamExt;
    use kube::runtime::watcher;

    let secret = cache.secret().clone();
    if cache.state() == SourceState::NoIdentity {
        cache.set_state(SourceState::Syncing);
    }
    let api: Api<Secret> = Api::namespaced(client, &secret.namespace);
    let config = watcher::Config::default().fields(&format!("metadata.name={}", secret.name));
    let mut changes = watch::changes(move || watcher(api.clone(), config.clone()).boxed()).boxed();
    let ours = |object: &Secret| object.metadata.name.as_deref() == Some(secret.name.as_str());
    while let Some(change) = changes.next().await {
        match change {
            Change::Listed { objects, recovered } => {
                if recovered {
                    info!(secret = %secret, "Secret {secret} can be read again");
                }
                let view = objects
                    .into_iter()
                    .find(ours)
                    .map_or(SecretView::Absent, view_of);
                if view == SecretView::Absent && cache.view() != Some(SecretView::Absent) {
                    warn!(
                        secret = %secret,
                        "Secret {secret} does not exist: nothing is installed from it; create it with kubectl -n {} apply -f <file>",
                        secret.namespace
                    );
                }
                debug!(secret = %secret, present = view != SecretView::Absent, "listed Secret {secret}");
                cache.set_view(view);
            }
            Change::Applied(object) if ours(&object) => cache.set_view(view_of(object)),
            Change::Deleted(object) if ours(&object) => {
                warn!(secret = %secret, "Secret {secret} was deleted: the CAs installed from it are removed");
                cache.set_view(SecretView::Absent);
            }
            Change::Applied(_) | Change::Deleted(_) => {}
            Change::Failed {
                failure,
                retry_in,
                repeated,
            } => {
                let message = failure_message(&secret, &identity, &failure);
                if repeated {
                    debug!(secret = %secret, retry_in_s = retry_in.as_secs(), "{message}");
                } else {
                    error!(secret = %secret, retry_in_s = retry_in.as_secs(), "{message}");
                }
                cache.set_state(SourceState::Failing {
                    message,
                    forbidden: failure.is_auth(),
                });
            }
        }
    }
}

/// What a failed list or watch of the Secret means, with the fix.
pub fn failure_message(secret: &SecretRef, identity: &str, failure: &ApiFailure) -> String {
    if failure.is_auth() {
        format!(
            "{identity} cannot read Secret {secret}: {failure}. Apply the Role {SECRET_ROLE} \
             and its RoleBinding in {ns} ({SECRET_RBAC_FILE}), with the Secret's name in \
             resourceNames; check with `kubectl auth can-i watch secrets/{name} -n {ns} --as {identity}`",
            ns = secret.namespace,
            name = secret.name,
        )
    } else {
        format!("cannot read Secret {secret} from the API server: {failure}")
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]
mod tests {
    use super::*;
    use crate::k8s::failure::FailureKind;
    use crate::time::now_unix;
    use crate::x509::testpki;

    fn secret() -> SecretRef {
        SecretRef::parse("kube-system/custom-ca-trust-secret").unwrap()
    }

    #[test]
    fn never_synced_is_an_unreadable_source_that_keeps_what_is_installed() {
        let state = SourceState::Failing {
            message: "connection refused".into(),
            forbidden: false,
        };
        let input = input_of(&secret(), None, &state, now_unix());
        let f = input.keys.unwrap_err();
        assert!(f.problem.contains("connection refused"), "{}", f.problem);
        assert!(f.problem.contains("stay installed"), "{}", f.problem);
        assert_eq!(input.source, "secret/kube-system/custom-ca-trust-secret");
    }

    #[test]
    fn absent_is_an_empty_source() {
        let input = input_of(
            &secret(),
            Some(&SecretView::Absent),
            &SourceState::Synced,
            now_unix(),
        );
        assert!(input.keys.unwrap().is_empty());
    }

    #[test]
    fn present_keys_are_judged_like_mounted_ones() {
        let ca = testpki::good_ca("api-ca");
        let pem = testpki::pem(&ca.cert).into_bytes();
        let data: BTreeMap<String, Vec<u8>> = [
            ("ca1.crt".to_string(), pem.clone()),
            ("..data".to_string(), pem),
        ]
        .into();
        let input = input_of(
            &secret(),
            Some(&SecretView::Present(data)),
            &SourceState::Synced,
            now_unix(),
        );
        let keys = input.keys.unwrap();
        let good = keys.iter().find(|k| k.key == "ca1.crt").unwrap();
        assert_eq!(good.certs.len(), 1);
        let hidden = keys.iter().find(|k| k.key == "..data").unwrap();
        assert!(hidden.certs.is_empty());
    }

    #[test]
    fn a_403_names_the_role_to_apply() {
        let f = ApiFailure {
            kind: FailureKind::Forbidden,
            code: Some(403),
            message: "secrets is forbidden".into(),
            retry_after: None,
        };
        let m = failure_message(
            &secret(),
            "system:serviceaccount:kube-system:node-cert-agent",
            &f,
        );
        assert_eq!(
            m,
            "system:serviceaccount:kube-system:node-cert-agent cannot read Secret \
             kube-system/custom-ca-trust-secret: secrets is forbidden (403). Apply the Role \
             node-cert-agent:ca-secret-reader and its RoleBinding in kube-system \
             (manifests/base/rbac-ca-secret.yaml), with the Secret's name in resourceNames; \
             check with `kubectl auth can-i watch secrets/custom-ca-trust-secret -n kube-system \
             --as system:serviceaccount:kube-system:node-cert-agent`"
        );
        let down = ApiFailure {
            kind: FailureKind::Unreachable,
            code: None,
            message: "connection refused".into(),
            retry_after: None,
        };
        assert_eq!(
            failure_message(&secret(), "x", &down),
            "cannot read Secret kube-system/custom-ca-trust-secret from the API server: connection refused"
        );
    }
}
