use thiserror::Error;

#[derive(Debug, Error)]
pub enum LogError {
    #[error("storage: {0}")]
    Storage(String),
    #[error("entry {seq} is unreadable: {reason}")]
    Corrupt { seq: u64, reason: String },
}

impl From<sled::Error> for LogError {
    fn from(e: sled::Error) -> Self {
        LogError::Storage(e.to_string())
    }
}

impl From<crate::packed::PackError> for LogError {
    fn from(e: crate::packed::PackError) -> Self {
        match e {
            crate::packed::PackError::Storage(e) => e.into(),
            damage => LogError::Storage(format!("a packed key of the log: {damage}")),
        }
    }
}

/// Why a batch was not appended. `index` is the event's position in the batch, so the
/// caller can name `/events/<index>/<field>`. Nothing of the batch was appended.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum AppendError {
    /// The same event id was already used for another body, or a registration reuses an id.
    #[error("event {index}: {message}")]
    Conflict {
        index: usize,
        field: &'static str,
        message: String,
    },
    /// `expected_version` did not match the young person's current version.
    #[error("event {index}: expected version {expected}, current version is {actual}")]
    VersionMismatch {
        index: usize,
        expected: u64,
        actual: u64,
    },
    /// The event is about a young person the exchange does not know.
    #[error("event {index}: unknown young person")]
    UnknownPerson { index: usize },
    #[error("the log is unavailable: {0}")]
    Storage(String),
    #[error("the log has shut down")]
    Closed,
}
