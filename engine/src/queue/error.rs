//! Errors of the exchanges-and-queues model.

use crate::routing::RouteError;
use crate::storage::StorageError;

/// Why an exchange, queue, publish or consume operation failed.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// A definition or argument is invalid (the message says which and why).
    #[error("invalid {what}: {why}")]
    Invalid {
        /// The field or argument.
        what: &'static str,
        /// What is wrong with it.
        why: String,
    },
    /// No exchange or queue of that name.
    #[error("{kind} {name:?} not found")]
    NotFound {
        /// `exchange` or `queue`.
        kind: &'static str,
        /// The name asked for.
        name: String,
    },
    /// It exists with different arguments (AMQP's PRECONDITION_FAILED on declare).
    #[error("{kind} {name:?} exists with different arguments")]
    Mismatch {
        /// `exchange` or `queue`.
        kind: &'static str,
        /// The name.
        name: String,
    },
    /// A conditional delete found it in use (bindings, consumers) or not empty.
    #[error("{kind} {name:?} is in use")]
    InUse {
        /// `exchange` or `queue`.
        kind: &'static str,
        /// The name.
        name: String,
    },
    /// An exclusive queue used by another connection.
    #[error("queue {0:?} is exclusive to another connection")]
    Locked(String),
    /// A binding was refused (bad topic key, bad x-match, the default exchange).
    #[error(transparent)]
    Route(#[from] RouteError),
    /// A `mandatory` publish reached no queue: it is returned, not stored.
    #[error("unroutable: no queue is bound for this routing key (message returned)")]
    Unroutable,
    /// A queue with `x-overflow: reject-publish` is full: the message was not stored.
    #[error("queue {0:?} is full (reject-publish): message refused")]
    Refused(String),
    /// The message could not be stored; it was not confirmed and may be retried.
    #[error("store failed: {0}")]
    StoreFailed(String),
    /// The delivery tag is unknown on this consumer (already acked, or never given).
    #[error("unknown delivery tag {0}")]
    UnknownTag(u64),
    /// The engine's queues are full: slow down, or retry.
    #[error("backpressure: the engine's queues are full")]
    Backpressure,
    /// A wait timed out.
    #[error("timed out")]
    Timeout,
    /// The consumer was cancelled (or its queue deleted) and is drained.
    #[error("consumer cancelled")]
    Cancelled,
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

impl QueueError {
    pub(crate) fn invalid(what: &'static str, why: impl Into<String>) -> Self {
        Self::Invalid {
            what,
            why: why.into(),
        }
    }

    pub(crate) fn no_queue(name: &str) -> Self {
        Self::NotFound {
            kind: "queue",
            name: name.to_owned(),
        }
    }

    pub(crate) fn no_exchange(name: &str) -> Self {
        Self::NotFound {
            kind: "exchange",
            name: name.to_owned(),
        }
    }
}

crate::runtime::model_error_from_runtime!(QueueError);
