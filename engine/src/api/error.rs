//! The one error type of the unified API: a code (`protocol::ErrorCode`, the same
//! numbers on the wire and, later, in the C ABI) and a message for people.
//!
//! Owns: the mapping of every model's and the client's errors to a code, used by the
//! server (to answer a request) and by both `BrokerApi` implementations (so a caller
//! sees the same code for the same failure, embedded or remote). Never: loses the
//! original message.

use crate::client::ClientError;
use crate::protocol::{ErrorCode, ProtocolError};
use crate::pubsub::PubSubError;
use crate::queue::QueueError;
use crate::stream::StreamError;

/// Why an operation failed: a stable code and what happened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct Error {
    /// What kind of failure (stable across versions and across embedded / remote).
    pub code: ErrorCode,
    /// What happened, for people.
    pub message: String,
}

impl Error {
    /// An error with `code` and `message`.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    /// An error the server answers with before it closes the connection.
    pub(crate) fn fatal(code: ErrorCode, message: String) -> Self {
        debug_assert!(code.is_fatal());
        Self { code, message }
    }
}

impl From<PubSubError> for Error {
    fn from(error: PubSubError) -> Self {
        let code = match &error {
            PubSubError::Subject(_) => ErrorCode::Invalid,
            PubSubError::NoResponders => ErrorCode::NoResponders,
            PubSubError::Timeout => ErrorCode::Timeout,
            PubSubError::Backpressure | PubSubError::SlowConsumer => ErrorCode::Backpressure,
            PubSubError::ShuttingDown | PubSubError::Closed => ErrorCode::ShuttingDown,
            PubSubError::Task(_) | PubSubError::Wait(_) => ErrorCode::Internal,
        };
        Self::new(code, error.to_string())
    }
}

impl From<StreamError> for Error {
    fn from(error: StreamError) -> Self {
        let code = match &error {
            StreamError::Subject(_)
            | StreamError::Invalid { .. }
            | StreamError::ReservedHeader(_) => ErrorCode::Invalid,
            StreamError::NotFound { .. } | StreamError::NoStream(_) => ErrorCode::NotFound,
            StreamError::AlreadyExists { .. } | StreamError::SubjectOverlap { .. } => {
                ErrorCode::AlreadyExists
            }
            StreamError::RecordTooLarge { .. } | StreamError::Stale => ErrorCode::Refused,
            StreamError::Backpressure => ErrorCode::Backpressure,
            StreamError::Timeout => ErrorCode::Timeout,
            StreamError::Closed | StreamError::ShuttingDown => ErrorCode::ShuttingDown,
            StreamError::StoreFailed(_)
            | StreamError::Storage(_)
            | StreamError::Task(_)
            | StreamError::Wait(_) => ErrorCode::Internal,
        };
        Self::new(code, error.to_string())
    }
}

impl From<QueueError> for Error {
    fn from(error: QueueError) -> Self {
        let code = match &error {
            QueueError::Invalid { .. } | QueueError::Route(_) => ErrorCode::Invalid,
            QueueError::NotFound { .. } | QueueError::UnknownTag(_) => ErrorCode::NotFound,
            QueueError::Mismatch { .. } => ErrorCode::AlreadyExists,
            QueueError::InUse { .. } | QueueError::Refused(_) => ErrorCode::Refused,
            QueueError::Locked(_) => ErrorCode::Locked,
            QueueError::Unroutable => ErrorCode::Unroutable,
            QueueError::Backpressure => ErrorCode::Backpressure,
            QueueError::Timeout => ErrorCode::Timeout,
            QueueError::Cancelled | QueueError::ShuttingDown => ErrorCode::ShuttingDown,
            QueueError::StoreFailed(_)
            | QueueError::Storage(_)
            | QueueError::Task(_)
            | QueueError::Wait(_) => ErrorCode::Internal,
        };
        Self::new(code, error.to_string())
    }
}

impl From<ProtocolError> for Error {
    fn from(error: ProtocolError) -> Self {
        Self::new(error.code(), error.to_string())
    }
}

impl From<ClientError> for Error {
    fn from(error: ClientError) -> Self {
        let code = match &error {
            ClientError::Server { code, message } => return Self::new(*code, message.clone()),
            ClientError::InvalidUrl(_) => ErrorCode::Invalid,
            ClientError::Connect { .. } | ClientError::Disconnected(_) => ErrorCode::Disconnected,
            ClientError::Protocol(e) => e.code(),
            ClientError::Timeout(_) => ErrorCode::Timeout,
            ClientError::Closed => ErrorCode::ShuttingDown,
            ClientError::Resource(_) => ErrorCode::Internal,
        };
        Self::new(code, error.to_string())
    }
}
