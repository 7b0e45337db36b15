//! The runtime's errors: starting, sending between shards, submitting from outside,
//! waiting for replies, and tasks that failed.
//!
//! Owns: the error enums and their messages. Never: logs or panics.

use std::io;
use std::time::Duration;

/// Starting or stopping the runtime failed.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// A configuration value is out of range.
    #[error("invalid runtime config: {field} = {value}, accepted {min}..={max}")]
    InvalidConfig {
        /// The `RuntimeConfig` field.
        field: &'static str,
        /// What was given.
        value: u64,
        /// Smallest accepted value.
        min: u64,
        /// Largest accepted value.
        max: u64,
    },
    /// A shard could not set itself up (io_uring, eventfd, affinity or thread spawn).
    #[error("shard {shard} failed to start: {what}: {source}")]
    ShardStart {
        /// Which shard.
        shard: usize,
        /// The step that failed.
        what: &'static str,
        /// The OS error.
        source: io::Error,
    },
    /// The kernel's io_uring lacks a feature the runtime needs.
    #[error("io_uring lacks {feature} (Linux 5.11 or later is required)")]
    UringUnsupported {
        /// The missing feature.
        feature: &'static str,
    },
    /// Blocking shutdown was called from a shard thread, which would wait for itself.
    #[error("shutdown() called from shard thread {shard}; use request_shutdown() there")]
    ShutdownFromShard {
        /// The calling shard.
        shard: usize,
    },
    /// A shard thread ended by panicking outside any task (a runtime bug).
    #[error("shard {shard} thread panicked: {message}")]
    ShardPanicked {
        /// Which shard.
        shard: usize,
        /// The panic message.
        message: String,
    },
}

/// A shard could not accept a task for another shard. The task is handed back.
#[derive(Debug, thiserror::Error)]
pub enum SendError<F> {
    /// The target's ring is full and so is this shard's backlog for it
    /// (`outbound_backlog_max`): backpressure; retry later or slow the source down.
    #[error("shard ring and outbound backlog are full")]
    Full(F),
    /// There is no shard with that index.
    #[error("no shard {shard} (runtime has {shards})")]
    NoSuchShard {
        /// The index asked for.
        shard: usize,
        /// The runtime's shard count.
        shards: usize,
        /// The task, handed back.
        task: F,
    },
}

impl<F> SendError<F> {
    /// The task that was not sent.
    pub fn into_task(self) -> F {
        match self {
            SendError::Full(task) | SendError::NoSuchShard { task, .. } => task,
        }
    }
}

/// A submission from a non-shard thread was refused; nothing was queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SubmitError {
    /// The shard's external queue is full (`external_queue_capacity`): backpressure.
    #[error("shard {shard} external queue is full")]
    Full {
        /// The target shard.
        shard: usize,
    },
    /// The submitter already has `capacity` tasks whose completions it has not taken.
    #[error("{in_flight} submissions in flight, the submitter's limit")]
    TooManyInFlight {
        /// Its limit.
        in_flight: usize,
    },
    /// There is no shard with that index.
    #[error("no shard {shard} (runtime has {shards})")]
    NoSuchShard {
        /// The index asked for.
        shard: usize,
        /// The runtime's shard count.
        shards: usize,
    },
    /// The runtime is shutting down and accepts no new work.
    #[error("runtime is shutting down")]
    ShuttingDown,
}

/// A task ran but did not produce its result.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TaskError {
    /// The task panicked; the shard caught it and carried on.
    #[error("task panicked on shard {shard}: {message}")]
    Panicked {
        /// The shard it ran on.
        shard: usize,
        /// The panic message.
        message: String,
    },
    /// The runtime stopped (forced shutdown) before the task ran.
    #[error("task cancelled: runtime stopped before it ran")]
    Cancelled,
}

/// A blocking call from a non-shard thread failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    /// The task could not be submitted.
    #[error(transparent)]
    Submit(#[from] SubmitError),
    /// The task failed.
    #[error(transparent)]
    Task(#[from] TaskError),
    /// No reply within the timeout. The task may still run later.
    #[error("no reply within the timeout")]
    Timeout,
    /// Called from a shard thread, where blocking would stall that shard (and deadlock
    /// if the target is the caller). Use `ShardCtx::call` there.
    #[error("blocking call from shard thread {shard}; use ShardCtx::call there")]
    OnShardThread {
        /// The calling shard.
        shard: usize,
    },
}

/// An I/O operation could not be submitted; the handler was not called.
#[derive(Debug, thiserror::Error)]
pub enum OpError {
    /// `ops_inflight_max` operations are already in flight on this shard.
    #[error("{max} io_uring operations already in flight")]
    TooManyInFlight {
        /// The shard's limit.
        max: usize,
    },
    /// The kernel refused the submission.
    #[error("io_uring submit failed: {0}")]
    Submit(io::Error),
    /// The kernel refused to register a resource (a provided-buffer ring).
    #[error("io_uring register failed: {0}")]
    Register(io::Error),
}

/// A timer could not be scheduled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TimerError {
    /// `timers_max` timers are already pending on this shard.
    #[error("{max} timers already pending")]
    Full {
        /// The shard's limit.
        max: usize,
    },
    /// The deadline would be past what `Instant` can represent.
    #[error("timer delay {delay:?} is too long")]
    DelayTooLong {
        /// The delay asked for.
        delay: Duration,
    },
}

/// The text of a caught panic payload.
pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&'static str>() {
        return (*s).to_owned();
    }
    if let Some(s) = payload.downcast_ref::<String>() {
        return s.clone();
    }
    "non-string panic payload".to_owned()
}

/// Implements `From<SubmitError>` and `From<CallError>` for a model's error enum that
/// has the variants `Backpressure`, `ShuttingDown` and `Task(String)`: a full queue is
/// backpressure, a stopping engine is shutdown, anything else is a bug report.
macro_rules! model_error_from_runtime {
    ($error:ty) => {
        impl From<$crate::runtime::SubmitError> for $error {
            fn from(error: $crate::runtime::SubmitError) -> Self {
                match error {
                    $crate::runtime::SubmitError::Full { .. } => Self::Backpressure,
                    $crate::runtime::SubmitError::ShuttingDown => Self::ShuttingDown,
                    other => Self::Task(other.to_string()),
                }
            }
        }

        impl From<$crate::runtime::CallError> for $error {
            fn from(error: $crate::runtime::CallError) -> Self {
                match error {
                    $crate::runtime::CallError::Submit(e) => e.into(),
                    other => Self::Task(other.to_string()),
                }
            }
        }
    };
}
pub(crate) use model_error_from_runtime;
