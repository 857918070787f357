//! Runs the CA Secret's API watch ([`crate::trust::api_secret::watch`]) for
//! the daemon and for `run --once`: builds the client of the configured
//! identity (retrying with backoff while it cannot be built), then keeps
//! the cache current until dropped.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tracing::error;

use crate::k8s::client::service_client;
use crate::k8s::source::SourceState;
use crate::retry::Backoff;
use crate::trust::api_secret::{self, SecretCache};

const BUILD_RETRY_FIRST: Duration = Duration::from_secs(5);
const BUILD_RETRY_MAX: Duration = Duration::from_secs(300);

/// Who reads the Secret, for messages.
pub fn identity_of(kubeconfig: Option<&std::path::Path>) -> String {
    match kubeconfig {
        Some(p) => format!("the identity of {}", p.display()),
        None => "the pod's ServiceAccount".to_string(),
    }
}

/// Starts the watch of `cache`'s Secret as the identity of `kubeconfig`
/// (or the pod's ServiceAccount).
pub fn start(cache: Arc<SecretCache>, kubeconfig: Option<PathBuf>) -> JoinHandle<()> {
    tokio::spawn(async move {
        let identity = identity_of(kubeconfig.as_deref());
        let mut backoff = Backoff::new(BUILD_RETRY_FIRST, BUILD_RETRY_MAX, 0.2);
        let client = loop {
            match service_client(kubeconfig.as_deref()).await {
                Ok(c) => break c,
                Err(e) => {
                    let wait = backoff.next_delay(None);
                    let message = format!("cannot read Secret {}: {e}", cache.secret());
                    error!(secret = %cache.secret(), retry_in_s = wait.as_secs(), "{message}");
                    cache.fail(message, false);
                    tokio::time::sleep(wait).await;
                }
            }
        };
        api_secret::watch(client, identity, cache).await;
    })
}

/// Waits until the first list completed or failed, at most `timeout`.
pub async fn first_sync(cache: &SecretCache, timeout: Duration) {
    let settled = async {
        while matches!(
            cache.state(),
            SourceState::NoIdentity | SourceState::Syncing
        ) {
            cache.changed().await;
        }
    };
    let _ = tokio::time::timeout(timeout, settled).await;
}
