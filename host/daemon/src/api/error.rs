//! The one error type of the API handlers, with the HTTP status of each
//! class of failure.

use shoal_registry::RegistryError;
use shoal_runtime::grants::GrantError;
use shoal_runtime::node::NodeError;
use shoal_runtime::snapshot::format::SnapshotFormatError;

/// Why an API request failed. The message is shown to the user as is (the
/// client prints `error: <message>`), so it says what is wrong and, where it
/// helps, what to do.
///
/// Statuses are plain `u16`s so that handlers do not depend on the HTTP
/// library: a later transport maps them its own way.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The request itself is wrong (bad JSON, bad module, bad argument): 400.
    #[error("{0}")]
    BadRequest(String),
    /// The caller may not do this (e.g. grant that directory): 403.
    #[error("{0}")]
    Forbidden(String),
    /// No such process, module, snapshot or route: 404.
    #[error("{0}")]
    NotFound(String),
    /// The route exists but not with this method: 405.
    #[error("{0}")]
    MethodNotAllowed(String),
    /// Not possible in the current state (limit reached, capture busy,
    /// process not capturable): 409.
    #[error("{0}")]
    Conflict(String),
    /// The body is over its limit: 413.
    #[error("{0}")]
    TooLarge(String),
    /// A bounded wait ran out: 504.
    #[error("{0}")]
    Timeout(String),
    /// The feature is not available on this node: 501.
    #[error("{0}")]
    NotImplemented(String),
    /// The node failed: 500.
    #[error("{0}")]
    Internal(String),
}

impl ApiError {
    /// The HTTP status of this error.
    pub fn status(&self) -> u16 {
        match self {
            ApiError::BadRequest(_) => 400,
            ApiError::Forbidden(_) => 403,
            ApiError::NotFound(_) => 404,
            ApiError::MethodNotAllowed(_) => 405,
            ApiError::Conflict(_) => 409,
            ApiError::TooLarge(_) => 413,
            ApiError::Timeout(_) => 504,
            ApiError::NotImplemented(_) => 501,
            ApiError::Internal(_) => 500,
        }
    }
}

impl From<NodeError> for ApiError {
    fn from(e: NodeError) -> Self {
        let message = error_chain(&e);
        match &e {
            NodeError::Registry(r) => match r {
                RegistryError::NotFound(_) | RegistryError::UnknownName(_) => {
                    ApiError::NotFound(message)
                }
                RegistryError::BadName { .. } | RegistryError::BadHash(_) => {
                    ApiError::BadRequest(message)
                }
                _ => ApiError::Internal(message),
            },
            NodeError::Module(_)
            | NodeError::InvalidSpawn(_)
            | NodeError::Dir { .. }
            | NodeError::Image(_) => ApiError::BadRequest(message),
            NodeError::Grant(g) => match g {
                GrantError::DataDir(_) | GrantError::NotGrantable { .. } => {
                    ApiError::Forbidden(message)
                }
                _ => ApiError::BadRequest(message),
            },
            NodeError::NoProcess(_) => ApiError::NotFound(message),
            NodeError::ProcessLimit(_)
            | NodeError::MemoryBudget { .. }
            | NodeError::NotCapturable(_)
            | NodeError::CaptureBusy(_)
            | NodeError::ExitedBeforeCapture(..)
            | NodeError::CaptureCalledOff(_) => ApiError::Conflict(message),
            NodeError::CaptureTimeout { .. } => ApiError::Timeout(message),
            NodeError::Snapshot(s) => match s {
                SnapshotFormatError::Registry(
                    RegistryError::NotFound(_) | RegistryError::UnknownName(_),
                ) => ApiError::NotFound(message),
                SnapshotFormatError::Registry(_)
                | SnapshotFormatError::MemorySizeMismatch { .. } => ApiError::Internal(message),
                SnapshotFormatError::TooLarge { .. } => ApiError::TooLarge(message),
                _ => ApiError::BadRequest(message),
            },
            // Runtime failures, and any kind of error the node gains later
            // that is not mapped here yet.
            #[allow(unreachable_patterns)]
            _ => ApiError::Internal(message),
        }
    }
}

impl From<RegistryError> for ApiError {
    fn from(e: RegistryError) -> Self {
        ApiError::from(NodeError::Registry(e))
    }
}

/// `e` and its sources, joined with `: ` (like anyhow's `{:#}`), skipping
/// a source whose text the outer message already contains.
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let s_text = s.to_string();
        if !text.contains(&s_text) {
            text.push_str(": ");
            text.push_str(&s_text);
        }
        source = s.source();
    }
    text
}
