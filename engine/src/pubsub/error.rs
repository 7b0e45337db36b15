//! Errors of the subjects model.

use crate::routing::SubjectError;

/// Why a publish, subscribe or request failed.
#[derive(Debug, thiserror::Error)]
pub enum PubSubError {
    /// The subject or pattern is invalid.
    #[error(transparent)]
    Subject(#[from] SubjectError),
    /// A request found no subscription on its subject: nobody can answer.
    #[error("no responders on the request's subject")]
    NoResponders,
    /// A request got no reply in time, or a wait for a message timed out.
    #[error("timed out")]
    Timeout,
    /// The subscription was closed (unsubscribed, its auto-unsubscribe count reached,
    /// or the engine shut down) and every message it received has been read.
    #[error("subscription closed")]
    Closed,
    /// The subscription was closed because its pending buffer overflowed under
    /// `SlowConsumerPolicy::Close`.
    #[error("subscription closed: slow consumer (pending buffer overflowed)")]
    SlowConsumer,
    /// The shard's queues are full: publish more slowly, or retry.
    #[error("backpressure: the engine's queues are full")]
    Backpressure,
    /// The engine is shutting down or gone.
    #[error("the engine is shutting down")]
    ShuttingDown,
    /// A shard task failed (a bug: it panicked).
    #[error("engine task failed: {0}")]
    Task(String),
    /// Waiting on the subscription's eventfd failed.
    #[error("waiting for messages: {0}")]
    Wait(#[source] std::io::Error),
}

crate::runtime::model_error_from_runtime!(PubSubError);
