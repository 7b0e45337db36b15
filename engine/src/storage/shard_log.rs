//! `ShardLog`: a partition log driven by its owning shard's io_uring, the production
//! driver of `PartitionLog`.
//!
//! Owns: carrying out the log's requests (a group's write and its `fdatasync` as one
//! linked chain; a write alone under `Durability::None`), the timer that starts a
//! `Batch` group when its delay ends, and handing each append's outcome to its
//! callback. Never: blocks the shard on the append path, tells a caller "stored"
//! before the log has (the log decides; this only reports), or leaves a short write
//! unfinished (the rest is written before the sync runs).
//!
//! Rare events still use the directory's blocking calls on the shard thread: opening
//! (recovery), rolling a segment (sync of the sealed one, index files, a new file),
//! truncating after a failed group, and retention. They happen per segment, not per
//! append.
//!
//! A `ShardLog` is not `Send`: create it on its shard (e.g. in `ShardCtx::with_local`
//! state) and use it only there. Clones share the one log.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::io;
use std::rc::Rc;
use std::time::{Duration, Instant};

use super::codec::Record;
use super::dir::{FsDir, StorageDir};
use super::error::StorageError;
use super::log::{
    AppendError, AppendOutcome, AppendTicket, IoRequest, LogConfig, PartitionLog, RecoveryReport,
};
use crate::runtime::{OpError, ShardCtx};

/// What runs when an append's outcome is known, on the log's shard.
pub type AppendCallback = Box<dyn FnOnce(&mut ShardCtx, AppendOutcome)>;

/// How long to wait before retrying a submission the ring refused for lack of slots.
const RESUBMIT_DELAY: Duration = Duration::from_micros(50);

struct State<D: StorageDir> {
    log: PartitionLog<D>,
    /// In ticket order, which is the order the log reports outcomes in.
    callbacks: VecDeque<(AppendTicket, AppendCallback)>,
    /// When the armed `Batch` timer fires, if one is armed.
    timer_at: Option<Instant>,
    /// A request the ring could not take yet (too many ops in flight).
    stalled: Option<IoRequest>,
    /// Groups handed to the ring (statistics: appends per group shows group commit).
    groups: u64,
    /// Callbacks are running: appends they make join the pending group, which the
    /// outer pump submits once they all ran. (Submitting from inside the first
    /// callback sent a group of one and made the rest wait a whole extra sync; a
    /// nested pump would instead recurse once per outcome.)
    reporting: bool,
}

impl<D: StorageDir> State<D> {
    /// The callback of `ticket`: the oldest one, since outcomes come in ticket order
    /// (searched for all the same, should that ever change).
    fn take_callback(&mut self, ticket: AppendTicket) -> Option<AppendCallback> {
        let index = match self.callbacks.front() {
            Some((first, _)) if *first == ticket => 0,
            _ => self.callbacks.iter().position(|(t, _)| *t == ticket)?,
        };
        self.callbacks.remove(index).map(|(_, callback)| callback)
    }
}

/// A partition log whose appends go through the owning shard's io_uring.
pub struct ShardLog<D: StorageDir + 'static = FsDir> {
    state: Rc<RefCell<State<D>>>,
}

impl<D: StorageDir + 'static> Clone for ShardLog<D> {
    fn clone(&self) -> Self {
        Self {
            state: self.state.clone(),
        }
    }
}

impl<D: StorageDir + 'static> std::fmt::Debug for ShardLog<D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.state.borrow();
        f.debug_struct("ShardLog")
            .field("next_offset", &state.log.next_offset())
            .field("stored_end", &state.log.stored_end())
            .field("waiting", &state.callbacks.len())
            .finish()
    }
}

/// Clears `reporting` when the callbacks are done, even if one panicked (the shard
/// catches task panics and carries on; the log must not stay muted).
struct ReportingGuard<'a, D: StorageDir + 'static>(&'a ShardLog<D>);

impl<D: StorageDir + 'static> Drop for ReportingGuard<'_, D> {
    fn drop(&mut self) {
        if let Ok(mut state) = self.0.state.try_borrow_mut() {
            state.reporting = false;
        }
    }
}

impl<D: StorageDir + 'static> ShardLog<D> {
    /// Opens (recovering) the log in `dir`. Blocking: call it on the owning shard
    /// before its first append, or on any thread and move the directory in after.
    pub fn open(dir: D, config: LogConfig) -> Result<(Self, RecoveryReport), StorageError> {
        let (log, report) = PartitionLog::open(dir, config)?;
        let state = State {
            log,
            callbacks: VecDeque::new(),
            timer_at: None,
            stalled: None,
            groups: 0,
            reporting: false,
        };
        let log = Self {
            state: Rc::new(RefCell::new(state)),
        };
        Ok((log, report))
    }

    /// Appends `records` as one batch; `done` runs on this shard with the outcome once
    /// the log's durability policy is met (or the append failed).
    pub fn append<F>(
        &self,
        ctx: &mut ShardCtx,
        records: &[Record<'_>],
        done: F,
    ) -> Result<AppendTicket, AppendError>
    where
        F: FnOnce(&mut ShardCtx, AppendOutcome) + 'static,
    {
        let ticket = {
            let mut state = self.state.borrow_mut();
            let ticket = state.log.append(records, Instant::now())?;
            state.callbacks.push_back((ticket, Box::new(done)));
            ticket
        };
        self.pump(ctx);
        Ok(ticket)
    }

    /// Starts the pending group now, without waiting for a `Batch` delay (e.g. before
    /// shutdown, so no append waits on a timer that will not fire).
    pub fn flush(&self, ctx: &mut ShardCtx) {
        self.state.borrow_mut().log.flush_pending();
        self.pump(ctx);
    }

    /// Runs `f` with the log, for reads and queries. Do not append through it.
    pub fn with_log<R>(&self, f: impl FnOnce(&PartitionLog<D>) -> R) -> R {
        f(&self.state.borrow().log)
    }

    /// Runs `f` with the log mutably, for retention and rolls.
    pub fn with_log_mut<R>(&self, f: impl FnOnce(&mut PartitionLog<D>) -> R) -> R {
        f(&mut self.state.borrow_mut().log)
    }

    /// Groups (one write, and one sync unless the policy is `None`) submitted so far.
    pub fn groups(&self) -> u64 {
        self.state.borrow().groups
    }

    /// Appends whose outcome has not been reported yet.
    pub fn waiting(&self) -> usize {
        self.state.borrow().callbacks.len()
    }

    /// Submits every due request, reports every known outcome, and arms the `Batch`
    /// timer if a group waits for its delay.
    /// Reports first, so that the appends the callbacks make join the next group.
    fn pump(&self, ctx: &mut ShardCtx) {
        if self.state.borrow().reporting {
            return; // the pump running the callbacks submits after them
        }
        loop {
            self.report(ctx);
            self.submit_due(ctx);
            if !self.state.borrow().log.has_outcomes() {
                break;
            }
        }
        self.arm_timer(ctx);
    }

    /// Submits every request the log has due (up to its `groups_in_flight_max`).
    fn submit_due(&self, ctx: &mut ShardCtx) {
        loop {
            let request = {
                let mut state = self.state.borrow_mut();
                let now = Instant::now();
                state.stalled.take().or_else(|| state.log.next_request(now))
            };
            let Some(request) = request else { break };
            if !self.submit(ctx, request) {
                break;
            }
        }
    }

    /// Hands a request to the ring; false if it had to wait (stalled or failed).
    fn submit(&self, ctx: &mut ShardCtx, request: IoRequest) -> bool {
        let fd = self.state.borrow().log.dir().raw_fd(request.file);
        let Some(fd) = fd else {
            let error = io::Error::new(io::ErrorKind::Unsupported, "directory has no fds");
            self.state.borrow_mut().log.complete(request.id, Err(error));
            return true;
        };
        // A chain needs two slots; wait for them rather than fail the group.
        if ctx.ops_available() < 2 {
            self.state.borrow_mut().stalled = Some(request);
            let this = self.clone();
            if let Err(error) = ctx.after(RESUBMIT_DELAY, move |ctx| this.pump(ctx)) {
                tracing::error!(%error, "log request stalled and no timer to retry it");
            }
            return false;
        }
        let (id, position, sync) = (request.id, request.position, request.sync);
        self.state.borrow_mut().groups += 1;
        if let Err(error) = self.submit_write(ctx, fd, id, position, sync, request.data) {
            let error = io::Error::other(error.to_string());
            self.state.borrow_mut().log.complete(id, Err(error));
        }
        true
    }

    /// Writes `data` at `position` (then syncs, if `sync`); a short write continues
    /// with the rest. Completes request `id` in the log when done.
    fn submit_write(
        &self,
        ctx: &mut ShardCtx,
        fd: std::os::fd::RawFd,
        id: u64,
        position: u64,
        sync: bool,
        data: Vec<u8>,
    ) -> Result<(), OpError> {
        let this = self.clone();
        let on_done = move |ctx: &mut ShardCtx,
                            written: io::Result<usize>,
                            synced: io::Result<()>,
                            mut data: Vec<u8>| {
            let result = match written {
                Ok(n) if n == data.len() => synced,
                Ok(0) => Err(io::Error::from(io::ErrorKind::WriteZero)),
                Ok(n) => {
                    data.drain(..n);
                    let next = position + n as u64;
                    match this.submit_write(ctx, fd, id, next, sync, data) {
                        Ok(()) => return,
                        Err(error) => {
                            let error = io::Error::other(error.to_string());
                            this.state.borrow_mut().log.complete(id, Err(error));
                            this.pump(ctx);
                            return;
                        }
                    }
                }
                Err(e) => Err(e),
            };
            {
                let mut state = this.state.borrow_mut();
                state.log.complete(id, result);
                state.log.recycle_buffer(data);
            }
            this.pump(ctx);
        };
        if sync {
            ctx.write_then_fdatasync(fd, data, position, on_done)
        } else {
            ctx.write_at(fd, data, position, move |ctx, written, data| {
                on_done(ctx, written, Ok(()), data);
            })
        }
    }

    /// Calls the callback of every append whose outcome the log has reported, outside
    /// the borrow (a callback may append again).
    fn report(&self, ctx: &mut ShardCtx) {
        self.state.borrow_mut().reporting = true;
        let guard = ReportingGuard(self);
        loop {
            let next = {
                let mut state = self.state.borrow_mut();
                state.log.take_outcome().map(|outcome| {
                    let ticket = match &outcome {
                        AppendOutcome::Stored { ticket, .. }
                        | AppendOutcome::Failed { ticket, .. } => *ticket,
                    };
                    (state.take_callback(ticket), outcome)
                })
            };
            match next {
                Some((Some(callback), outcome)) => callback(ctx, outcome),
                Some((None, _)) => {}
                None => break,
            }
        }
        drop(guard);
    }

    /// Arms a timer for the log's next deadline unless one fires no later.
    fn arm_timer(&self, ctx: &mut ShardCtx) {
        let deadline = {
            let state = self.state.borrow();
            match (state.log.next_deadline(), state.timer_at) {
                (Some(d), Some(armed)) if armed <= d => return,
                (Some(d), _) => d,
                (None, _) => return,
            }
        };
        let this = self.clone();
        let delay = deadline.saturating_duration_since(Instant::now());
        let armed = ctx.after(delay, move |ctx| {
            this.state.borrow_mut().timer_at = None;
            this.pump(ctx);
        });
        match armed {
            Ok(()) => self.state.borrow_mut().timer_at = Some(deadline),
            Err(error) => tracing::error!(%error, "cannot arm the log's group-commit timer"),
        }
    }
}
