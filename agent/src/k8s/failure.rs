//! What an API call's failure means for the caller: retry soon (the server
//! is down, slow or busy), retry much later (401/403: only a change of
//! credentials or RBAC fixes it), or not at all (the object is gone).
//!
//! Boundary: classification, and the one retry schedule of the watches
//! ([`WatchRetry`]); the callers decide and say what to do.

use std::time::Duration;

use kube::runtime::watcher;

/// The kind of a failed API call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// 401: the credentials are not accepted.
    Unauthorized,
    /// 403: the identity may not make this call.
    Forbidden,
    /// 404.
    NotFound,
    /// 409 AlreadyExists or Conflict.
    Conflict,
    /// 410: a watch's resourceVersion is too old; a relist fixes it.
    Gone,
    /// 429, with the server's `retryAfterSeconds` when it gave one.
    Throttled,
    /// 422 and other 4xx: the request itself is wrong.
    Invalid,
    /// 5xx.
    Server,
    /// No answer: connection refused, reset, TLS, timeout.
    Unreachable,
}

/// A failed API call, classified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiFailure {
    pub kind: FailureKind,
    /// The HTTP status, when the server answered.
    pub code: Option<u16>,
    /// The server's message (a `Status` message), or the client's error.
    pub message: String,
    /// The server's `retryAfterSeconds`, if it gave one.
    pub retry_after: Option<Duration>,
}

impl ApiFailure {
    /// The failure of a request.
    pub fn of(e: &kube::Error) -> Self {
        match e {
            kube::Error::Api(status) => {
                let retry_after = status
                    .details
                    .as_ref()
                    .map(|d| d.retry_after_seconds)
                    .filter(|s| *s > 0)
                    .map(|s| Duration::from_secs(u64::from(s)));
                Self {
                    kind: kind_of(status.code),
                    code: Some(status.code),
                    message: if status.message.is_empty() {
                        status.reason.clone()
                    } else {
                        status.message.clone()
                    },
                    retry_after,
                }
            }
            other => Self {
                kind: FailureKind::Unreachable,
                code: None,
                message: crate::errors::error_chain(other),
                retry_after: None,
            },
        }
    }

    /// The failure of a watch (kube-runtime's watcher yields it, then
    /// relists or re-watches on the next poll).
    pub fn of_watch(e: &watcher::Error) -> Self {
        match e {
            watcher::Error::InitialListFailed(e)
            | watcher::Error::WatchStartFailed(e)
            | watcher::Error::WatchFailed(e) => Self::of(e),
            watcher::Error::WatchError(status) => Self {
                kind: kind_of(status.code),
                code: Some(status.code),
                message: status.message.clone(),
                retry_after: None,
            },
            watcher::Error::NoResourceVersion => Self {
                kind: FailureKind::Invalid,
                code: None,
                message: e.to_string(),
                retry_after: None,
            },
        }
    }

    /// 401 or 403: retrying soon cannot help.
    pub fn is_auth(&self) -> bool {
        matches!(
            self.kind,
            FailureKind::Unauthorized | FailureKind::Forbidden
        )
    }
}

impl std::fmt::Display for ApiFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.code {
            Some(code) => write!(f, "{} ({code})", self.message),
            None => f.write_str(&self.message),
        }
    }
}

fn kind_of(code: u16) -> FailureKind {
    match code {
        401 => FailureKind::Unauthorized,
        403 => FailureKind::Forbidden,
        404 => FailureKind::NotFound,
        409 => FailureKind::Conflict,
        410 => FailureKind::Gone,
        429 => FailureKind::Throttled,
        500..=599 => FailureKind::Server,
        _ => FailureKind::Invalid,
    }
}

/// How soon a failed list or watch tries again: quickly for what a moment
/// fixes (a restarting API server, a dropped connection; the server's
/// `Retry-After` when it gives one), after minutes for a 401 or 403, which
/// only a change of RBAC or credentials fixes. One for every watch of the
/// agent.
#[derive(Debug, Clone)]
pub struct WatchRetry {
    fast: crate::retry::Backoff,
    slow: crate::retry::Backoff,
}

impl Default for WatchRetry {
    fn default() -> Self {
        use crate::retry::Backoff;
        Self {
            fast: Backoff::new(Duration::from_secs(1), Duration::from_secs(60), 0.2),
            slow: Backoff::new(Duration::from_secs(60), Duration::from_secs(600), 0.2),
        }
    }
}

impl WatchRetry {
    /// The wait before the next try after `failure`.
    pub fn next_delay(&mut self, failure: &ApiFailure) -> Duration {
        if failure.is_auth() {
            self.slow.next_delay(None)
        } else {
            self.fast.next_delay(failure.retry_after)
        }
    }

    /// After a successful list: the next failure starts from the beginning.
    pub fn reset(&mut self) {
        self.fast.reset();
        self.slow.reset();
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]
mod tests {
    use kube::core::Status;

    use super::*;

    fn api(code: u16, message: &str) -> kube::Error {
        kube::Error::Api(Box::new(Status {
            code,
            message: message.into(),
            ..Status::default()
        }))
    }

    #[test]
    fn statuses_are_classified_and_keep_the_servers_message() {
        let f = ApiFailure::of(&api(403, "renewrevocations is forbidden"));
        assert_eq!(f.kind, FailureKind::Forbidden);
        assert!(f.is_auth());
        assert_eq!(f.to_string(), "renewrevocations is forbidden (403)");
        assert!(ApiFailure::of(&api(401, "Unauthorized")).is_auth());
        for (code, kind) in [
            (404, FailureKind::NotFound),
            (409, FailureKind::Conflict),
            (410, FailureKind::Gone),
            (429, FailureKind::Throttled),
            (422, FailureKind::Invalid),
            (503, FailureKind::Server),
        ] {
            let f = ApiFailure::of(&api(code, "x"));
            assert_eq!(f.kind, kind, "{code}");
            assert!(!f.is_auth());
        }
        let w = ApiFailure::of_watch(&watcher::Error::InitialListFailed(api(403, "no")));
        assert_eq!(w.kind, FailureKind::Forbidden);
    }

    #[test]
    fn watch_retry_is_seconds_for_an_outage_and_minutes_for_a_403_and_resets() {
        let secs = |d: Duration| d.as_secs_f64();
        let mut retry = WatchRetry::default();
        let down = ApiFailure::of(&api(503, "down"));
        let forbidden = ApiFailure::of(&api(403, "no"));
        // Jitter adds at most 20 % to each base delay.
        let first = secs(retry.next_delay(&down));
        assert!((1.0..=1.2).contains(&first), "{first}");
        let second = secs(retry.next_delay(&down));
        assert!((2.0..=2.4).contains(&second), "{second}");
        for _ in 0..10 {
            retry.next_delay(&down);
        }
        let capped = secs(retry.next_delay(&down));
        assert!((60.0..=72.0).contains(&capped), "{capped}");
        let auth = secs(retry.next_delay(&forbidden));
        assert!((60.0..=72.0).contains(&auth), "{auth}");
        for _ in 0..10 {
            retry.next_delay(&forbidden);
        }
        let auth_capped = secs(retry.next_delay(&forbidden));
        assert!((600.0..=720.0).contains(&auth_capped), "{auth_capped}");
        // The server's Retry-After replaces the base delay.
        let mut throttled = ApiFailure::of(&api(429, "slow down"));
        throttled.retry_after = Some(Duration::from_secs(7));
        let told = secs(retry.next_delay(&throttled));
        assert!((7.0..=7.0 + 72.0 * 0.2).contains(&told), "{told}");
        retry.reset();
        let again = secs(retry.next_delay(&down));
        assert!((1.0..=1.2).contains(&again), "{again}");
        let auth_again = secs(retry.next_delay(&forbidden));
        assert!((60.0..=72.0).contains(&auth_again), "{auth_again}");
    }
}
