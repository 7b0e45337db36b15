//! Graceful shutdown: detecting that every accepted task has run, then stopping.
//!
//! Owns: the per-shard work counters and the coordinator that reads them.
//!
//! Never: stops a shard while work it accepted may still be in flight, unless the drain
//! deadline (`shutdown_drain_max`) passes, in which case the report says so.
//!
//! # Termination detection (Mattern's four-counter method)
//!
//! Every unit of work is counted twice: *created* when it is accepted (a task sent to a
//! shard, an I/O op submitted, an external submission that passed the closing check)
//! and *finished* after it has completely run (so any work it created is already
//! counted as created). Each shard keeps its counts in plain integers and publishes them
//! once per loop turn; external submitters count `ext_accepted`/`ext_rejected` directly
//! with atomics. All counters only grow.
//!
//! Once `closing` is set, shard 0 repeatedly takes a *wave*: it reads every shard's
//! counters and sums them, S = created + ext_accepted, R = finished + ext_rejected. A
//! wave's reads are not one atomic snapshot, so one wave with S == R proves nothing. Two
//! consecutive waves with the same S == R do: any work in flight during both waves would
//! have raised R (when it finished) or S (when it created more) between them, or kept
//! S > R. Timers do not fire after `closing`, so nothing creates work from nothing.
//!
//! External submitters add to `ext_accepted` *before* reading `closing` (both SeqCst,
//! as is the coordinator's store of `closing` and its wave reads): a submitter that saw
//! `closing == false` has its count ordered before every wave, so its task is waited for.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The counters of one shard that the coordinator reads.
#[derive(Debug, Default)]
#[repr(align(128))]
pub(crate) struct DrainCounters {
    /// Published by the owner shard.
    created: AtomicU64,
    /// Published by the owner shard.
    finished: AtomicU64,
    /// Incremented by external submitters before they check `closing`.
    pub(crate) ext_accepted: AtomicU64,
    /// Incremented by external submitters whose submission was then refused.
    pub(crate) ext_rejected: AtomicU64,
}

impl DrainCounters {
    /// Owner shard only, once per loop turn, after its last task of the turn.
    pub(crate) fn publish(&self, created: u64, finished: u64) {
        // SeqCst pairs with the coordinator's SeqCst wave loads.
        self.created.store(created, Ordering::SeqCst);
        self.finished.store(finished, Ordering::SeqCst);
    }

    fn read(&self) -> (u64, u64) {
        let s = self.created.load(Ordering::SeqCst) + self.ext_accepted.load(Ordering::SeqCst);
        let r = self.finished.load(Ordering::SeqCst) + self.ext_rejected.load(Ordering::SeqCst);
        (s, r)
    }
}

/// What the coordinator decided after a wave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Work may be in flight: keep going.
    Draining,
    /// Everything accepted has run: stop.
    Drained,
    /// The drain deadline passed: stop anyway.
    DeadlinePassed,
}

/// Shard 0's view of the drain, from the first wave after `closing` was seen.
#[derive(Debug)]
pub(crate) struct Coordinator {
    started: Instant,
    deadline: Duration,
    last: Option<(u64, u64)>,
}

impl Coordinator {
    pub(crate) fn new(deadline: Duration) -> Self {
        Self {
            started: Instant::now(),
            deadline,
            last: None,
        }
    }

    /// Takes one wave over every shard's counters.
    pub(crate) fn wave(&mut self, counters: impl Iterator<Item = (u64, u64)>) -> Verdict {
        let (s, r) = counters.fold((0, 0), |(s, r), (cs, cr)| (s + cs, r + cr));
        let previous = self.last.replace((s, r));
        if s == r && previous == Some((s, r)) {
            return Verdict::Drained;
        }
        if self.started.elapsed() >= self.deadline {
            return Verdict::DeadlinePassed;
        }
        Verdict::Draining
    }

    /// How long shard 0 may park between waves.
    pub(crate) const WAVE_INTERVAL: Duration = Duration::from_micros(500);
}

/// Reads one shard's `(S, R)` contribution for a wave.
pub(crate) fn wave_reading(counters: &DrainCounters) -> (u64, u64) {
    counters.read()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_balanced_wave_is_not_enough() {
        let mut c = Coordinator::new(Duration::from_secs(60));
        assert_eq!(c.wave([(5, 5)].into_iter()), Verdict::Draining);
        assert_eq!(c.wave([(5, 5)].into_iter()), Verdict::Drained);
    }

    #[test]
    fn changing_or_unbalanced_waves_keep_draining() {
        let mut c = Coordinator::new(Duration::from_secs(60));
        assert_eq!(c.wave([(5, 4)].into_iter()), Verdict::Draining);
        assert_eq!(c.wave([(5, 4)].into_iter()), Verdict::Draining);
        assert_eq!(c.wave([(6, 6)].into_iter()), Verdict::Draining);
        assert_eq!(c.wave([(6, 6), (1, 1)].into_iter()), Verdict::Draining);
        assert_eq!(c.wave([(6, 6), (1, 1)].into_iter()), Verdict::Drained);
    }

    #[test]
    fn deadline_ends_an_endless_drain() {
        let mut c = Coordinator::new(Duration::ZERO);
        assert_eq!(c.wave([(9, 1)].into_iter()), Verdict::DeadlinePassed);
    }
}
