//! What an API call's failure means for the caller: retry soon (the server
//! is down, slow or busy), retry much later (401/403: only a change of
//! credentials or RBAC fixes it), or not at all (the object is gone).
//!
//! Boundary: classification only; the callers decide and say what to do.

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
}
