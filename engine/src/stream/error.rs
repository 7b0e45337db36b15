//! Errors of the streams model.

use crate::routing::SubjectError;
use crate::storage::StorageError;

/// Why a stream or consumer operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    /// A subject or pattern is invalid.
    #[error(transparent)]
    Subject(#[from] SubjectError),
    /// A definition is invalid (the message says which field and why).
    #[error("invalid {what}: {why}")]
    Invalid {
        /// The field or argument.
        what: &'static str,
        /// What is wrong with it.
        why: String,
    },
    /// No stream (or consumer) of that name.
    #[error("{kind} {name:?} not found")]
    NotFound {
        /// `stream` or `consumer`.
        kind: &'static str,
        /// The name asked for.
        name: String,
    },
    /// A stream (or consumer) of that name exists with a different definition.
    #[error("{kind} {name:?} already exists with a different definition")]
    AlreadyExists {
        /// `stream` or `consumer`.
        kind: &'static str,
        /// The name.
        name: String,
    },
    /// A new stream's subjects overlap an existing stream's: a subject must be captured
    /// by at most one stream.
    #[error("subject {subject:?} overlaps stream {stream:?} (pattern {pattern:?})")]
    SubjectOverlap {
        /// The new stream's pattern.
        subject: String,
        /// The stream already capturing some of its subjects.
        stream: String,
        /// That stream's pattern.
        pattern: String,
    },
    /// No stream captures the subject published to.
    #[error("no stream captures subject {0:?}")]
    NoStream(String),
    /// A record exceeds the stream's `max_record_bytes`.
    #[error("record of {bytes} bytes exceeds the stream's maximum of {max}")]
    RecordTooLarge {
        /// Bytes of key, headers and payload.
        bytes: usize,
        /// The stream's limit.
        max: usize,
    },
    /// A header name starting with `Rb-` is reserved for the engine.
    #[error("header {0:?} is reserved (names starting with \"Rb-\" belong to the engine)")]
    ReservedHeader(String),
    /// The record could not be stored; it was not acknowledged and may be retried.
    #[error("store failed: {0}")]
    StoreFailed(String),
    /// The engine's queues (or a log's pending bound) are full: slow down, or retry.
    #[error("backpressure: the engine's queues are full")]
    Backpressure,
    /// A wait timed out.
    #[error("timed out")]
    Timeout,
    /// The consumer was closed (deleted, its stream deleted, or the engine shut down)
    /// and everything it had received has been read.
    #[error("consumer closed")]
    Closed,
    /// The message's partition has been given to another member of the group since it
    /// was delivered (a rebalance): the ack is refused and the new member receives it.
    #[error("stale delivery: its partition was reassigned")]
    Stale,
    /// The disk or a metadata file failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// The engine is shutting down or gone.
    #[error("the engine is shutting down")]
    ShuttingDown,
    /// A shard task failed (a bug: it panicked).
    #[error("engine task failed: {0}")]
    Task(String),
    /// Waiting on an eventfd failed.
    #[error("waiting: {0}")]
    Wait(#[source] std::io::Error),
}

impl StreamError {
    pub(crate) fn invalid(what: &'static str, why: impl Into<String>) -> Self {
        Self::Invalid {
            what,
            why: why.into(),
        }
    }

    pub(crate) fn stream_not_found(name: &str) -> Self {
        Self::NotFound {
            kind: "stream",
            name: name.to_owned(),
        }
    }

    pub(crate) fn consumer_not_found(name: &str) -> Self {
        Self::NotFound {
            kind: "consumer",
            name: name.to_owned(),
        }
    }
}

crate::runtime::model_error_from_runtime!(StreamError);
