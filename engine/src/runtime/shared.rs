//! What every shard and every `RuntimeHandle` can see of each shard: its external
//! queue, its doorbell, and its published counters; plus the runtime-wide flags.
//!
//! Owns: the cross-thread state of the runtime. Everything here is either immutable
//! after start, an atomic, or a lock-free queue. Never: holds shard-owned data.

use std::any::Any;
use std::sync::atomic::{AtomicBool, AtomicUsize};
use std::sync::{Arc, Mutex};

use crossbeam_queue::ArrayQueue;

use super::context::ShardCtx;
use super::shutdown::DrainCounters;
use super::stats::PublishedStats;
use crate::doorbell::{Doorbell, EventFd};

/// A unit of work sent to a shard. Runs once, on that shard, with its context.
pub(crate) type Task = Box<dyn FnOnce(&mut ShardCtx) + Send>;

pub(crate) struct ShardShared {
    /// Submissions from non-shard threads (bounded MPSC).
    pub(crate) external: ArrayQueue<Task>,
    /// Slots of `external` reserved by submitters; a submitter reserves before it builds
    /// the task, so a push never fails and a refused submission never builds one.
    pub(crate) external_reserved: AtomicUsize,
    /// Armed while the shard is parked; its eventfd has a read armed in the shard's ring.
    pub(crate) doorbell: Doorbell<EventFd>,
    pub(crate) drain: DrainCounters,
    pub(crate) stats: PublishedStats,
}

pub(crate) struct RuntimeShared {
    pub(crate) shards: Vec<ShardShared>,
    /// Set once by `request_shutdown`: no new external work; drain what was accepted.
    pub(crate) closing: AtomicBool,
    /// Set once by the coordinator: leave the loop now.
    pub(crate) stop: AtomicBool,
    /// Set with `stop` when the drain deadline passed rather than the work drained.
    pub(crate) forced: AtomicBool,
    /// A process-unique id, so a shard thread knows which runtime it belongs to.
    pub(crate) id: u64,
    /// One value per type that a model shares between its shards and the threads that
    /// use it (`RuntimeHandle::singleton`); looked up when a model starts, not per
    /// message.
    pub(crate) singletons: Mutex<Vec<Arc<dyn Any + Send + Sync>>>,
}

impl RuntimeShared {
    pub(crate) fn shard_count(&self) -> usize {
        self.shards.len()
    }
}
