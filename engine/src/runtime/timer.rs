//! A shard's timers: tasks to run on this shard at or after a deadline.
//!
//! Owns: a bounded min-heap of (deadline, sequence, task). The shard loop asks it for
//! the nearest deadline and parks in `io_uring_enter` with that timeout (the kernel's
//! timer, via `IORING_ENTER_EXT_ARG`), then fires what is due.
//!
//! Never: fires a task early, or fires timers once shutdown has begun (their tasks are
//! dropped at stop: timers are deferred work, not accepted work).

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::time::Instant;

use super::context::ShardCtx;
use super::error::TimerError;

/// A task that stays on its shard (no `Send` needed).
pub(crate) type LocalTask = Box<dyn FnOnce(&mut ShardCtx)>;

struct Entry {
    deadline: Instant,
    seq: u64,
    task: LocalTask,
}

impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Entry {}
impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Entry {
    /// Reversed so `BinaryHeap` (a max-heap) pops the earliest deadline, FIFO on ties.
    fn cmp(&self, other: &Self) -> Ordering {
        (other.deadline, other.seq).cmp(&(self.deadline, self.seq))
    }
}

pub(crate) struct Timers {
    heap: BinaryHeap<Entry>,
    next_seq: u64,
    max: usize,
}

impl Timers {
    pub(crate) fn new(max: usize) -> Self {
        Self {
            heap: BinaryHeap::with_capacity(max.min(1024)),
            next_seq: 0,
            max,
        }
    }

    pub(crate) fn insert(&mut self, deadline: Instant, task: LocalTask) -> Result<(), TimerError> {
        if self.heap.len() >= self.max {
            return Err(TimerError::Full { max: self.max });
        }
        self.heap.push(Entry {
            deadline,
            seq: self.next_seq,
            task,
        });
        self.next_seq += 1;
        Ok(())
    }

    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.heap.peek().map(|e| e.deadline)
    }

    /// Removes and returns one task whose deadline is at or before `now`.
    pub(crate) fn pop_due(&mut self, now: Instant) -> Option<LocalTask> {
        if self.heap.peek()?.deadline > now {
            return None;
        }
        self.heap.pop().map(|e| e.task)
    }

    /// Drops every pending task; returns how many.
    pub(crate) fn clear(&mut self) -> usize {
        let n = self.heap.len();
        self.heap.clear();
        n
    }
}

/// Wall-clock milliseconds since the Unix epoch (0 if the clock is before it): record
/// timestamps, TTLs, heartbeats.
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
