//! Per-shard counters: counted locally with plain integers on the data path, published
//! to atomics once per loop turn, read by anyone through `RuntimeHandle::stats`.
//!
//! Owns: the counters and their snapshot type. Never: costs an atomic read-modify-write
//! on the data path (publishing is a relaxed store per counter per loop turn).

use std::sync::atomic::{AtomicU64, Ordering};

/// Buckets of the fsync latency histogram: bucket `i` counts syncs that took less than
/// `2^i` µs and at least `2^(i-1)` (bucket 0: under 1 µs); the last also counts every
/// slower one (`2^22` µs is about 4 s).
pub const FSYNC_LATENCY_BUCKETS: usize = 24;

/// The bucket a sync of `us` microseconds falls in.
pub fn fsync_latency_bucket(us: u64) -> usize {
    let bits = (u64::BITS - us.leading_zeros()) as usize;
    bits.min(FSYNC_LATENCY_BUCKETS - 1)
}

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
    /// `fdatasync` calls completed through the shard's io_uring.
    pub fsyncs: u64,
    /// How long they took, submit to completion (see `FSYNC_LATENCY_BUCKETS`).
    pub fsync_latency_us: [u64; FSYNC_LATENCY_BUCKETS],
    /// Their total time, in µs.
    pub fsync_us_total: u64,
    /// Tasks this shard pushed into other shards' rings that they had not taken yet,
    /// as last seen (the producer's cached view, so at most this many).
    pub ring_occupancy: u64,
    /// Tasks waiting in this shard for room in full rings.
    pub outbound_backlog: u64,
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
    pub(crate) fsyncs: u64,
    pub(crate) fsync_latency_us: [u64; FSYNC_LATENCY_BUCKETS],
    pub(crate) fsync_us_total: u64,
    /// Set by anything that changed `fsyncs` or the histogram, cleared at publish.
    pub(crate) fsyncs_dirty: bool,
    pub(crate) ring_occupancy: u64,
    pub(crate) outbound_backlog: u64,
}

impl LocalStats {
    /// Counts one completed sync that took `took`.
    pub(crate) fn record_fsync(&mut self, took: std::time::Duration) {
        let us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        self.fsyncs += 1;
        self.fsync_latency_us[fsync_latency_bucket(us)] += 1;
        self.fsync_us_total = self.fsync_us_total.saturating_add(us);
        self.fsyncs_dirty = true;
    }
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
    fsyncs: AtomicU64,
    fsync_latency_us: [AtomicU64; FSYNC_LATENCY_BUCKETS],
    fsync_us_total: AtomicU64,
    ring_occupancy: AtomicU64,
    outbound_backlog: AtomicU64,
}

impl PublishedStats {
    /// Owner only. Relaxed: readers want recent values, not ordering with other data.
    pub(crate) fn publish(&self, local: &mut LocalStats, uring_enters: u64) {
        let r = Ordering::Relaxed;
        if local.fsyncs_dirty {
            local.fsyncs_dirty = false;
            self.fsyncs.store(local.fsyncs, r);
            self.fsync_us_total.store(local.fsync_us_total, r);
            for (slot, &n) in self.fsync_latency_us.iter().zip(&local.fsync_latency_us) {
                slot.store(n, r);
            }
        }
        self.ring_occupancy.store(local.ring_occupancy, r);
        self.outbound_backlog.store(local.outbound_backlog, r);
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
            fsyncs: self.fsyncs.load(r),
            fsync_latency_us: std::array::from_fn(|i| self.fsync_latency_us[i].load(r)),
            fsync_us_total: self.fsync_us_total.load(r),
            ring_occupancy: self.ring_occupancy.load(r),
            outbound_backlog: self.outbound_backlog.load(r),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fsync_latencies_fall_in_power_of_two_buckets() {
        assert_eq!(fsync_latency_bucket(0), 0);
        assert_eq!(fsync_latency_bucket(1), 1);
        assert_eq!(fsync_latency_bucket(3), 2);
        assert_eq!(fsync_latency_bucket(4), 3);
        assert_eq!(fsync_latency_bucket(1000), 10);
        assert_eq!(fsync_latency_bucket(u64::MAX), FSYNC_LATENCY_BUCKETS - 1);
        let mut local = LocalStats::default();
        local.record_fsync(std::time::Duration::from_micros(1500));
        assert_eq!(local.fsyncs, 1);
        assert_eq!(local.fsync_latency_us[11], 1);
        assert_eq!(local.fsync_us_total, 1500);
    }
}
