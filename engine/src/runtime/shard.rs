//! The shard loop: one pinned thread, one io_uring, no locks.
//!
//! Owns: the shard's inbound ring consumers and its `ShardCtx`. Each turn it dispatches
//! I/O completions, drains every inbound ring and the external queue (at most
//! `batch_max` from each, so no source starves another), runs its local queue and due
//! timers, retries backlogs, and rings the doorbells of shards it fed. With nothing to
//! do it parks in `io_uring_enter` (see `doorbell` for why no wake-up is lost).
//!
//! Never: blocks anywhere but in `io_uring_enter`, or exits while accepted work is in
//! flight (unless the drain deadline forces it; then it counts what it dropped).

use std::cell::Cell;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::context::ShardCtx;
use super::shared::{RuntimeShared, Task};
use super::shutdown::{wave_reading, Coordinator, Verdict};
use crate::ring::Consumer;

/// How long a shard with a non-empty backlog parks before retrying its full rings.
const BACKLOG_RETRY: Duration = Duration::from_micros(100);
/// How long a stopping shard waits for the kernel to finish cancelled I/O.
const CANCEL_PATIENCE: Duration = Duration::from_secs(1);

thread_local! {
    /// `(runtime id, shard index)` when this thread is a shard.
    static CURRENT: Cell<Option<(u64, usize)>> = const { Cell::new(None) };
}

/// The `(runtime id, shard index)` of the calling thread, if it is a shard.
pub(crate) fn current_shard() -> Option<(u64, usize)> {
    CURRENT.with(Cell::get)
}

/// What a shard left behind when it stopped.
#[derive(Default)]
pub(crate) struct ShardExit {
    pub(crate) tasks_dropped: usize,
    pub(crate) timers_dropped: usize,
    pub(crate) ops_leaked: usize,
    /// Its inbound rings: shards still running at a forced stop may push into them
    /// after this shard left, so the runtime drains and counts them once all are gone.
    pub(crate) inbound: Vec<Consumer<Task>>,
}

impl std::fmt::Debug for ShardExit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShardExit")
            .field("tasks_dropped", &self.tasks_dropped)
            .field("timers_dropped", &self.timers_dropped)
            .field("ops_leaked", &self.ops_leaked)
            .finish()
    }
}

pub(crate) struct Shard {
    pub(crate) ctx: ShardCtx,
    pub(crate) inbound: Vec<Consumer<Task>>,
    pub(crate) scratch: Vec<Task>,
    pub(crate) idle_spin: Duration,
    pub(crate) drain_max: Duration,
    coordinator: Option<Coordinator>,
}

impl Shard {
    pub(crate) fn new(
        ctx: ShardCtx,
        inbound: Vec<Consumer<Task>>,
        idle_spin: Duration,
        drain_max: Duration,
    ) -> Self {
        let scratch = Vec::with_capacity(ctx.batch_max);
        Self {
            ctx,
            inbound,
            scratch,
            idle_spin,
            drain_max,
            coordinator: None,
        }
    }

    fn shared(&self) -> &RuntimeShared {
        &self.ctx.shared
    }

    pub(crate) fn run(mut self) -> ShardExit {
        CURRENT.with(|c| c.set(Some((self.shared().id, self.ctx.id))));
        let mut idle_since: Option<Instant> = None;
        loop {
            let progressed = self.turn();
            // Publish what this turn created before any of it becomes visible to other
            // shards (see `shutdown`), then push the staged tasks and wake their shards.
            self.publish();
            self.ctx.flush_backlogs();
            self.ctx.ring_dirty_doorbells();
            if self.shared().stop.load(Ordering::SeqCst) || self.coordinate() {
                break;
            }
            if progressed {
                idle_since = None;
                if let Err(err) = self.ctx.uring.submit() {
                    tracing::error!(shard = self.ctx.id, %err, "io_uring submit failed");
                }
                continue;
            }
            let spun = *idle_since.get_or_insert_with(Instant::now);
            if spun.elapsed() < self.idle_spin {
                std::hint::spin_loop();
                continue;
            }
            self.park();
            idle_since = None;
        }
        self.finish()
    }

    /// One turn of the loop. Returns whether anything was done.
    fn turn(&mut self) -> bool {
        let mut n = self.ctx.dispatch_completions();
        n += self.drain_inbound();
        n += self.drain_external();
        n += self.ctx.run_local_queue();
        if !self.shared().closing.load(Ordering::Relaxed) {
            n += self.ctx.fire_timers();
        }
        n > 0
    }

    fn drain_inbound(&mut self) -> usize {
        let mut total = 0;
        let mut scratch = std::mem::take(&mut self.scratch);
        for ring in &mut self.inbound {
            total += ring.pop_batch(self.ctx.batch_max, |task| scratch.push(task));
            for task in scratch.drain(..) {
                self.ctx.run_counted(task);
            }
        }
        self.scratch = scratch;
        total
    }

    fn drain_external(&mut self) -> usize {
        let mut n = 0;
        while n < self.ctx.batch_max {
            // Borrow the shared state only to pop (no Arc clone: that would be an atomic
            // read-modify-write on a line every shard shares, once per turn).
            let me = &self.ctx.shared.shards[self.ctx.id];
            let Some(task) = me.external.pop() else { break };
            // Release the reservation only after the slot is free (see ShardShared).
            me.external_reserved.fetch_sub(1, Ordering::AcqRel);
            self.ctx.run_counted(task);
            n += 1;
        }
        n
    }

    fn publish(&mut self) {
        self.ctx.refresh_ring_stats();
        let me = &self.ctx.shared.shards[self.ctx.id];
        me.drain.publish(self.ctx.created, self.ctx.finished);
        me.stats.publish(&mut self.ctx.stats, self.ctx.uring.enters);
    }

    /// Shard 0 coordinates shutdown: returns true when this shard should leave the loop.
    fn coordinate(&mut self) -> bool {
        if self.ctx.id != 0 || !self.shared().closing.load(Ordering::SeqCst) {
            return false;
        }
        let drain_max = self.drain_max;
        let coordinator = self
            .coordinator
            .get_or_insert_with(|| Coordinator::new(drain_max));
        let shared = &self.ctx.shared;
        let verdict = coordinator.wave(shared.shards.iter().map(|s| wave_reading(&s.drain)));
        if verdict == Verdict::Draining {
            return false;
        }
        if verdict == Verdict::DeadlinePassed {
            shared.forced.store(true, Ordering::SeqCst);
            tracing::warn!(
                ?drain_max,
                "shutdown drain deadline passed; stopping anyway"
            );
        }
        shared.stop.store(true, Ordering::SeqCst);
        for shard in &shared.shards {
            shard.doorbell.ring();
        }
        true
    }

    /// Whether any source has work, read fresh (after the doorbell is armed).
    fn work_visible(&mut self) -> bool {
        let shared = &self.ctx.shared;
        !self.ctx.local.is_empty()
            || self.inbound.iter().any(|c| !c.is_empty_now())
            || !shared.shards[self.ctx.id].external.is_empty()
            || shared.stop.load(Ordering::SeqCst)
            || self.ctx.uring.has_completions()
    }

    fn park_timeout(&self) -> Option<Duration> {
        let closing = self.shared().closing.load(Ordering::Relaxed);
        let mut timeout: Option<Duration> = None;
        let mut consider = |d: Duration| timeout = Some(timeout.map_or(d, |t| t.min(d)));
        if !closing {
            if let Some(deadline) = self.ctx.timers.next_deadline() {
                consider(deadline.saturating_duration_since(Instant::now()));
            }
        }
        if self.ctx.backlog_pending() {
            consider(BACKLOG_RETRY);
        }
        if closing && self.ctx.id == 0 {
            consider(Coordinator::WAVE_INTERVAL);
        }
        timeout
    }

    fn park(&mut self) {
        let shared = self.ctx.shared.clone();
        let bell = &shared.shards[self.ctx.id].doorbell;
        if let Err(err) = self.ctx.uring.arm_wake(bell.notifier()) {
            tracing::error!(shard = self.ctx.id, %err, "cannot arm wake-up read; spinning");
            return;
        }
        bell.arm();
        if self.work_visible() {
            bell.disarm();
            return;
        }
        let timeout = self.park_timeout();
        self.ctx.stats.parks += 1;
        if let Err(err) = self.ctx.uring.park(timeout) {
            tracing::error!(shard = self.ctx.id, %err, "io_uring_enter failed while parked");
        }
        bell.disarm();
    }

    fn finish(mut self) -> ShardExit {
        let mut exit = ShardExit {
            timers_dropped: self.ctx.timers.clear(),
            ..ShardExit::default()
        };
        let shared = Arc::clone(&self.ctx.shared);
        let wake = shared.shards[self.ctx.id].doorbell.notifier();
        let (completed, leaked) = self.ctx.uring.cancel_all(wake, CANCEL_PATIENCE);
        drop(completed);
        exit.ops_leaked = leaked;
        exit.tasks_dropped = self.drop_pending_tasks();
        exit.inbound = std::mem::take(&mut self.inbound);
        self.publish();
        if exit.tasks_dropped > 0 || exit.ops_leaked > 0 {
            tracing::warn!(
                shard = self.ctx.id,
                ?exit,
                "shard stopped with work pending"
            );
        }
        if leaked > 0 {
            // The kernel may still write into buffers owned by the leaked ops' handlers;
            // freeing them would be a use-after-free. Leak the whole shard instead.
            std::mem::forget(self);
        }
        exit
    }

    fn drop_pending_tasks(&mut self) -> usize {
        let mut dropped = self.ctx.local.len();
        self.ctx.local.clear();
        for backlog in &mut self.ctx.backlog {
            dropped += backlog.len();
            backlog.clear();
        }
        for ring in &mut self.inbound {
            dropped += ring.pop_batch(usize::MAX, drop);
        }
        dropped + drain_external(&self.ctx.shared.shards[self.ctx.id])
    }
}

/// Drops every task left in a shard's external queue; returns how many.
pub(crate) fn drain_external(shard: &super::shared::ShardShared) -> usize {
    let mut dropped = 0;
    while let Some(task) = shard.external.pop() {
        shard.external_reserved.fetch_sub(1, Ordering::AcqRel);
        drop(task);
        dropped += 1;
    }
    dropped
}
