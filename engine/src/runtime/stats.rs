//! Per-shard counters: counted locally with plain integers on the data path, published
//! to atomics once per loop turn, read by anyone through `RuntimeHandle::stats`.
//!
//! Owns: the counters and their snapshot type. Never: costs an atomic read-modify-write
//! on the data path (publishing is a relaxed store per counter per loop turn).

use std::sync::atomic::{AtomicU64, Ordering};

/// A snapshot of one shard's counters since the runtime started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ShardStats {
    /// The shard's index.
    pub shard: usize,
    /// Tasks run (from rings, the external queue, the local queue, timers).
    pub tasks_run: u64,
    /// Tasks that panicked (caught; the shard carried on).
    pub tasks_panicked: u64,
    /// Tasks this shard sent to shards (itself included).
    pub tasks_sent: u64,
    /// I/O completions dispatched to their handlers.
    pub ops_completed: u64,
    /// Times the shard parked in `io_uring_enter` with nothing to do.
    pub parks: u64,
    /// `io_uring_enter` calls (parks plus plain submits).
    pub uring_enters: u64,
    /// Eventfd writes this shard made to wake parked shards.
    pub wakeups_sent: u64,
    /// Eventfd writes non-shard threads made to wake this shard.
    pub external_wakeups: u64,
    /// Timer tasks fired.
    pub timers_fired: u64,
}

impl ShardStats {
    /// Syscalls this shard caused: its `io_uring_enter` calls and the wake-ups it sent.
    pub fn syscalls(&self) -> u64 {
        self.uring_enters + self.wakeups_sent
    }
}

/// The shard's own running counts (plain integers, owner-only).
#[derive(Debug, Default)]
pub(crate) struct LocalStats {
    pub(crate) tasks_run: u64,
    pub(crate) tasks_panicked: u64,
    pub(crate) tasks_sent: u64,
    pub(crate) ops_completed: u64,
    pub(crate) parks: u64,
    pub(crate) wakeups_sent: u64,
    pub(crate) timers_fired: u64,
}

/// The published copy, one cache-line-aligned block per shard.
#[derive(Debug, Default)]
#[repr(align(128))]
pub(crate) struct PublishedStats {
    tasks_run: AtomicU64,
    tasks_panicked: AtomicU64,
    tasks_sent: AtomicU64,
    ops_completed: AtomicU64,
    parks: AtomicU64,
    uring_enters: AtomicU64,
    wakeups_sent: AtomicU64,
    pub(crate) external_wakeups: AtomicU64,
    timers_fired: AtomicU64,
}

impl PublishedStats {
    /// Owner only. Relaxed: readers want recent values, not ordering with other data.
    pub(crate) fn publish(&self, local: &LocalStats, uring_enters: u64) {
        let r = Ordering::Relaxed;
        self.tasks_run.store(local.tasks_run, r);
        self.tasks_panicked.store(local.tasks_panicked, r);
        self.tasks_sent.store(local.tasks_sent, r);
        self.ops_completed.store(local.ops_completed, r);
        self.parks.store(local.parks, r);
        self.uring_enters.store(uring_enters, r);
        self.wakeups_sent.store(local.wakeups_sent, r);
        self.timers_fired.store(local.timers_fired, r);
    }

    pub(crate) fn snapshot(&self, shard: usize) -> ShardStats {
        let r = Ordering::Relaxed;
        ShardStats {
            shard,
            tasks_run: self.tasks_run.load(r),
            tasks_panicked: self.tasks_panicked.load(r),
            tasks_sent: self.tasks_sent.load(r),
            ops_completed: self.ops_completed.load(r),
            parks: self.parks.load(r),
            uring_enters: self.uring_enters.load(r),
            wakeups_sent: self.wakeups_sent.load(r),
            external_wakeups: self.external_wakeups.load(r),
            timers_fired: self.timers_fired.load(r),
        }
    }
}
