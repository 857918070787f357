//! How a view of API objects that the agent keeps by a watch stands: the
//! RenewRevocations, the CA Secret. Pure data.

/// The state of a watched view.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum SourceState {
    /// Not watched yet: no usable credentials.
    #[default]
    NoIdentity,
    /// Watched; the first list has not completed.
    Syncing,
    /// The view is the server's.
    Synced,
    /// The last list or watch failed; the view is the last good one (or
    /// empty). `forbidden`: a 401/403, which only RBAC or credentials fix.
    Failing { message: String, forbidden: bool },
}

impl SourceState {
    pub fn is_failing(&self) -> bool {
        matches!(self, Self::Failing { .. })
    }

    /// The name `status`, the daemon-status file and metrics use.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::NoIdentity => "noIdentity",
            Self::Syncing => "syncing",
            Self::Synced => "synced",
            Self::Failing { .. } => "failing",
        }
    }
}
