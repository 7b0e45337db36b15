//! `ShardCtx`: everything a task may do while it runs on a shard.
//!
//! Owns: the shard's outbound ring producers and per-target backlogs, its local queue,
//! its timers, its io_uring and in-flight ops, its shard-local state, and its counters.
//! A `&mut ShardCtx` is only ever handed to code running on the shard's own thread.
//!
//! Never: blocks, takes a lock, or drops a task it accepted. A task for another shard is
//! staged in a bounded per-target backlog and pushed into the ring at the end of the
//! turn, after the shard has published how much work it created (so shutdown's
//! counting always sees a task created before anyone can see it finished); what the
//! ring cannot take stays staged, in order, for the next turn. When a backlog is full,
//! `send` hands the task back.

use std::any::{Any, TypeId};
use std::cell::RefCell;
use std::collections::VecDeque;
use std::io;
use std::os::fd::RawFd;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use io_uring::{opcode, types};

use crate::hash::FastMap;

use super::error::{panic_message, OpError, SendError, SubmitError, TaskError, TimerError};
use super::external::RuntimeHandle;
use super::shared::{RuntimeShared, Task};
use super::stats::LocalStats;
use super::timer::Timers;
use super::uring::{OpSlot, Uring};
use crate::ring::Producer;

/// An in-flight io_uring op, for `ShardCtx::cancel_op`: its slot and the slot's
/// generation, so a stale id never names a later op.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct OpId(u64);

/// The running shard, as seen by a task. Not `Send`: it never leaves its thread.
pub struct ShardCtx {
    pub(crate) id: usize,
    pub(crate) shared: Arc<RuntimeShared>,
    /// `outbound[t]` feeds shard `t`; `None` at our own index.
    pub(crate) outbound: Vec<Option<Producer<Task>>>,
    /// Tasks for shard `t` that did not fit its ring, oldest first.
    pub(crate) backlog: Vec<VecDeque<Task>>,
    pub(crate) backlog_max: usize,
    /// Tasks this shard sent to itself.
    pub(crate) local: VecDeque<Task>,
    pub(crate) local_max: usize,
    /// Targets pushed to this turn, whose doorbells the loop rings once at turn end.
    pub(crate) dirty: Vec<usize>,
    pub(crate) is_dirty: Vec<bool>,
    pub(crate) timers: Timers,
    pub(crate) uring: Uring,
    pub(crate) batch_max: usize,
    /// Work created / finished, for shutdown's termination detection.
    pub(crate) created: u64,
    pub(crate) finished: u64,
    pub(crate) stats: LocalStats,
    locals: FastMap<TypeId, Box<dyn Any>>,
    /// Types whose state a `with_local` call has taken out of `locals` right now.
    locals_in_use: Vec<TypeId>,
    /// Not `Send`, not `Sync`.
    _not_send: std::marker::PhantomData<*const ()>,
}

impl ShardCtx {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        id: usize,
        shared: Arc<RuntimeShared>,
        outbound: Vec<Option<Producer<Task>>>,
        uring: Uring,
        config: &super::RuntimeConfig,
    ) -> Self {
        let n = shared.shard_count();
        Self {
            id,
            shared,
            outbound,
            backlog: (0..n).map(|_| VecDeque::new()).collect(),
            backlog_max: config.outbound_backlog_max,
            local: VecDeque::with_capacity(config.batch_max),
            local_max: config.outbound_backlog_max + config.ring_capacity.next_power_of_two(),
            dirty: Vec::with_capacity(n),
            is_dirty: vec![false; n],
            timers: Timers::new(config.timers_max),
            uring,
            batch_max: config.batch_max,
            created: 0,
            finished: 0,
            stats: LocalStats::default(),
            locals: FastMap::default(),
            locals_in_use: Vec::new(),
            _not_send: std::marker::PhantomData,
        }
    }

    /// This shard's index, `0..shard_count()`.
    pub fn shard_id(&self) -> usize {
        self.id
    }

    /// How many shards the runtime has.
    pub fn shard_count(&self) -> usize {
        self.shared.shard_count()
    }

    /// A handle to the runtime, to pass to code that submits from other threads.
    pub fn runtime(&self) -> RuntimeHandle {
        RuntimeHandle::from_shared(self.shared.clone())
    }

    /// Starts a graceful shutdown (see `RuntimeHandle::request_shutdown`). Returns at once.
    pub fn request_shutdown(&self) {
        self.runtime().request_shutdown();
    }

    /// Sends `task` to run on shard `target` (this shard included). Tasks from one shard
    /// to one target run in the order sent. Fails only with backpressure (`Full`) or a
    /// bad index, handing the task back either way.
    pub fn send<F>(&mut self, target: usize, task: F) -> Result<(), SendError<F>>
    where
        F: FnOnce(&mut ShardCtx) + Send + 'static,
    {
        if let Err(()) = self.check_target(target) {
            return Err(self.no_such_shard(target, task));
        }
        if !self.has_room(target) {
            return Err(SendError::Full(task));
        }
        self.enqueue(target, Box::new(task));
        Ok(())
    }

    /// Runs `f` on shard `target`, then `reply` back on this shard with `f`'s result (or
    /// the panic it raised). The reply bypasses the backlog bound: replies in flight are
    /// bounded by the calls this shard made, each of which passed the bound.
    pub fn call<R, F, G>(&mut self, target: usize, f: F, reply: G) -> Result<(), SendError<(F, G)>>
    where
        R: Send + 'static,
        F: FnOnce(&mut ShardCtx) -> R + Send + 'static,
        G: FnOnce(&mut ShardCtx, Result<R, TaskError>) + Send + 'static,
    {
        if let Err(()) = self.check_target(target) {
            return Err(self.no_such_shard(target, (f, reply)));
        }
        if !self.has_room(target) {
            return Err(SendError::Full((f, reply)));
        }
        let origin = self.id;
        self.enqueue(
            target,
            Box::new(move |ctx: &mut ShardCtx| {
                let result = ctx.run_caught(f);
                ctx.enqueue(
                    origin,
                    Box::new(move |ctx: &mut ShardCtx| reply(ctx, result)),
                );
            }),
        );
        Ok(())
    }

    /// Whether `send` to `target` would accept a task now (no backpressure, valid
    /// index). A caller that keeps its own queue can hold work back instead of getting
    /// it refused.
    pub fn can_send(&mut self, target: usize) -> bool {
        self.check_target(target).is_ok() && self.has_room(target)
    }

    /// How many tasks are staged for `target` and not yet in its ring: those sent this
    /// turn (pushed when the turn ends) plus any its full ring could not take. When it
    /// stays high across turns the target is not keeping up; sources that can slow down
    /// (a connection's reads) should. `send` refuses at `outbound_backlog_max`.
    pub fn outbound_backlog(&self, target: usize) -> usize {
        self.backlog.get(target).map_or(0, VecDeque::len)
    }

    /// Sends `task` through the ring to `target`, or through the runtime's external
    /// queue when the ring is full: for tasks that must not be refused for
    /// backpressure (assignments, wake-ups, dead letters). Order between the two paths
    /// is not kept. Fails only when both are full or the engine is stopping.
    pub fn send_or_spawn<F>(&mut self, target: usize, task: F) -> Result<(), SubmitError>
    where
        F: FnOnce(&mut ShardCtx) + Send + 'static,
    {
        match self.send(target, task) {
            Ok(()) => Ok(()),
            Err(refused) => self.runtime().spawn(target, refused.into_task()),
        }
    }

    /// This shard's shared handle of type `T` (made by `init` on first use), cloned:
    /// how a model keeps its shard state (an `Rc` inside `T`) and reaches it from any
    /// task on the shard.
    pub fn local_handle<T: Clone + 'static>(&mut self, init: impl FnOnce() -> T) -> T {
        // The hot path (every publish asks for its model's handle): one lookup, no
        // lending. Absent, or lent out by a `with_local::<T>` call, it takes the full
        // path, which creates it or panics as `with_local` documents.
        if let Some(handle) = self.existing_handle::<T>() {
            return handle;
        }
        self.with_local(init, |handle, _| handle.clone())
    }

    /// This shard's handle of type `T` if `local_handle` made one (and it is not lent
    /// out): for a model whose `init` needs the context, which `local_handle`'s `init`
    /// cannot borrow.
    pub fn existing_handle<T: Clone + 'static>(&self) -> Option<T> {
        self.locals
            .get(&TypeId::of::<T>())
            .and_then(|state| state.downcast_ref::<T>())
            .cloned()
    }

    /// Runs `task` on this shard once `delay` has passed. Timers do not fire after
    /// shutdown begins; pending ones are dropped at stop.
    pub fn after<F>(&mut self, delay: Duration, task: F) -> Result<(), TimerError>
    where
        F: FnOnce(&mut ShardCtx) + 'static,
    {
        let deadline = Instant::now()
            .checked_add(delay)
            .ok_or(TimerError::DelayTooLong { delay })?;
        self.timers.insert(deadline, Box::new(task))
    }

    /// Gives `f` this shard's instance of `T`, creating it with `init` on first use.
    /// This is how a model keeps shard-owned state (partitions, queues, subscriptions)
    /// without locks: only tasks on this shard ever see it.
    ///
    /// # Panics
    /// If called for `T` from inside a `with_local::<T>` call (the state is lent out;
    /// a second, fresh `T` would silently lose one of the two sets of changes).
    pub fn with_local<T: 'static, R>(
        &mut self,
        init: impl FnOnce() -> T,
        f: impl FnOnce(&mut T, &mut ShardCtx) -> R,
    ) -> R {
        let key = TypeId::of::<T>();
        assert!(
            !self.locals_in_use.contains(&key),
            "with_local::<{}> re-entered: its state is already lent out",
            std::any::type_name::<T>()
        );
        self.locals_in_use.push(key);
        let mut state: Box<dyn Any> = match self.locals.remove(&key) {
            Some(state) => state,
            None => Box::new(init()),
        };
        let result = match state.downcast_mut::<T>() {
            Some(typed) => catch_unwind(AssertUnwindSafe(|| f(typed, self))),
            None => unreachable!("shard-local map is keyed by TypeId"),
        };
        // Put the state back before propagating a panic, so the shard keeps it.
        self.locals.insert(key, state);
        self.locals_in_use.retain(|k| *k != key);
        match result {
            Ok(r) => r,
            Err(payload) => resume_unwind(payload),
        }
    }

    /// Submits a no-op through the shard's io_uring; `handler` runs on its completion.
    pub fn nop<H>(&mut self, handler: H) -> Result<(), OpError>
    where
        H: FnOnce(&mut ShardCtx, io::Result<()>) + 'static,
    {
        let entry = opcode::Nop::new().build();
        // SAFETY: a no-op carries no pointers.
        unsafe { self.submit_op(entry, move |ctx, res| handler(ctx, result_unit(res))) }
    }

    /// Writes `buf` to `fd` at `offset` through io_uring; `handler` gets the bytes
    /// written (possibly fewer than `buf.len()`, as with `pwrite`) and the buffer back.
    pub fn write_at<H>(
        &mut self,
        fd: RawFd,
        buf: Vec<u8>,
        offset: u64,
        handler: H,
    ) -> Result<(), OpError>
    where
        H: FnOnce(&mut ShardCtx, io::Result<usize>, Vec<u8>) + 'static,
    {
        let entry = write_entry(fd, &buf, offset);
        // SAFETY: the entry points into `buf`'s heap allocation, which moves into the
        // handler (moving a Vec does not move its buffer) and so lives until completion.
        unsafe { self.submit_op(entry, move |ctx, res| handler(ctx, result_len(res), buf)) }
    }

    /// Reads up to `buf.len()` bytes of `fd` at `offset` into `buf` through io_uring;
    /// `handler` gets the bytes read (0 at end of file) and the buffer back.
    pub fn read_at<H>(
        &mut self,
        fd: RawFd,
        mut buf: Vec<u8>,
        offset: u64,
        handler: H,
    ) -> Result<(), OpError>
    where
        H: FnOnce(&mut ShardCtx, io::Result<usize>, Vec<u8>) + 'static,
    {
        let len = u32::try_from(buf.len()).unwrap_or(u32::MAX);
        let entry = opcode::Read::new(types::Fd(fd), buf.as_mut_ptr(), len)
            .offset(offset)
            .build();
        // SAFETY: as in `write_at`; the handler owns `buf` until the kernel is done.
        unsafe { self.submit_op(entry, move |ctx, res| handler(ctx, result_len(res), buf)) }
    }

    /// `fdatasync(fd)` through io_uring.
    pub fn fdatasync<H>(&mut self, fd: RawFd, handler: H) -> Result<(), OpError>
    where
        H: FnOnce(&mut ShardCtx, io::Result<()>) + 'static,
    {
        let entry = fdatasync_entry(fd);
        let started = Instant::now();
        let on_sync = move |ctx: &mut ShardCtx, res: i32| {
            ctx.stats.record_fsync(started.elapsed());
            handler(ctx, result_unit(res));
        };
        // SAFETY: an fsync carries no pointers.
        unsafe { self.submit_op(entry, on_sync) }
    }

    /// How many more I/O ops may be in flight now (each `write_then_fdatasync` takes
    /// two).
    pub fn ops_available(&self) -> usize {
        self.uring.available()
    }

    /// Writes `buf` to `fd` at `offset`, then `fdatasync(fd)`, as one linked chain: the
    /// sync starts only after the write completed in full, so a successful sync covers
    /// every byte of it. `handler` runs once both completed, with the write's result
    /// (bytes written: fewer than `buf.len()` means the sync was cancelled and did not
    /// run), the sync's result, and the buffer back.
    pub fn write_then_fdatasync<H>(
        &mut self,
        fd: RawFd,
        buf: Vec<u8>,
        offset: u64,
        handler: H,
    ) -> Result<(), OpError>
    where
        H: FnOnce(&mut ShardCtx, io::Result<usize>, io::Result<()>, Vec<u8>) + 'static,
    {
        /// The two completions' `res`, and the handler with the buffer until both are in.
        struct Link<H> {
            write: Option<i32>,
            sync: Option<i32>,
            handler: Option<(H, Vec<u8>)>,
        }
        let write = write_entry(fd, &buf, offset);
        let sync = fdatasync_entry(fd);
        // Both completions land here; whichever arrives second (the kernel posts them
        // in chain order, but nothing here relies on it) runs the handler.
        let link = Rc::new(RefCell::new(Link {
            write: None,
            sync: None,
            handler: Some((handler, buf)),
        }));
        let finish = |ctx: &mut ShardCtx, link: &Rc<RefCell<Link<H>>>| {
            let mut state = link.borrow_mut();
            let (Some(w), Some(s)) = (state.write, state.sync) else {
                return;
            };
            if let Some((handler, buf)) = state.handler.take() {
                drop(state);
                handler(ctx, result_len(w), result_unit(s), buf);
            }
        };
        let (w_link, s_link) = (link.clone(), link);
        let on_write: super::uring::OpHandler = Box::new(move |ctx, res| {
            w_link.borrow_mut().write = Some(res);
            finish(ctx, &w_link);
        });
        let started = Instant::now();
        let on_sync: super::uring::OpHandler = Box::new(move |ctx, res| {
            if res >= 0 {
                ctx.stats.record_fsync(started.elapsed());
            }
            s_link.borrow_mut().sync = Some(res);
            finish(ctx, &s_link);
        });
        // SAFETY: the write points into `buf`'s heap allocation, owned by the shared
        // state both handlers hold, so it lives until the later of the two completions;
        // the fsync carries no pointers.
        unsafe {
            self.uring
                .push_linked(vec![write, sync], vec![on_write, on_sync])
        }?;
        self.created += 2;
        Ok(())
    }

    /// Submits a raw io_uring entry; `handler` gets the completion's `res` (a byte count
    /// or a negative errno) on this shard. Its `user_data` is overwritten.
    ///
    /// # Safety
    /// Every pointer in `entry` must stay valid until `handler` runs: point it into
    /// memory moved into `handler`, or memory that outlives the runtime. The entry must
    /// produce exactly one completion: no multishot opcodes and no
    /// `IOSQE_CQE_SKIP_SUCCESS` (the handler's slot is freed on the first completion;
    /// a second would reach whichever op reuses the slot, and a skipped one would leak
    /// the slot and keep shutdown waiting).
    pub unsafe fn submit_op<H>(
        &mut self,
        entry: io_uring::squeue::Entry,
        handler: H,
    ) -> Result<(), OpError>
    where
        H: FnOnce(&mut ShardCtx, i32) + 'static,
    {
        // SAFETY: forwarded from our caller.
        unsafe { self.submit_op_id(entry, handler) }.map(drop)
    }

    /// As `submit_op`, returning the op's id, for `cancel_op`.
    ///
    /// # Safety
    /// As for `submit_op`.
    pub(crate) unsafe fn submit_op_id<H>(
        &mut self,
        entry: io_uring::squeue::Entry,
        handler: H,
    ) -> Result<OpId, OpError>
    where
        H: FnOnce(&mut ShardCtx, i32) + 'static,
    {
        // SAFETY: forwarded from our caller.
        let id = unsafe { self.uring.push(entry, OpSlot::Once(Box::new(handler))) }?;
        self.created += 1;
        Ok(OpId(id))
    }

    /// Submits a multishot io_uring entry (multishot accept, recv or poll, or a
    /// `SEND_ZC` with its notification): `handler` runs on this shard for every
    /// completion, with `res` and the CQE's flags, and is dropped after the completion
    /// that comes without `IORING_CQE_F_MORE`. A standing multishot op does not hold
    /// up shutdown; the shard cancels it at stop.
    ///
    /// # Safety
    /// Every pointer in `entry` must stay valid until the last completion: point it into
    /// memory moved into `handler`, or memory that outlives the runtime (a registered
    /// buffer ring must stay registered while the op may select from it).
    pub(crate) unsafe fn submit_multishot<H>(
        &mut self,
        entry: io_uring::squeue::Entry,
        handler: H,
    ) -> Result<OpId, OpError>
    where
        H: FnMut(&mut ShardCtx, i32, u32) + 'static,
    {
        // SAFETY: forwarded from our caller.
        let id = unsafe { self.uring.push(entry, OpSlot::Multi(Box::new(handler))) }?;
        Ok(OpId(id))
    }

    /// Asks the kernel to cancel op `id` if it is still in flight. Its handler still
    /// runs (with `-ECANCELED`, or its result if it finished first). An id whose op has
    /// already finished is ignored, never confused with a later op.
    pub(crate) fn cancel_op(&mut self, id: OpId) -> Result<(), OpError> {
        self.uring.cancel(id.0)
    }

    /// Registers a ring of provided buffers with this shard's io_uring.
    ///
    /// # Safety
    /// As for `Uring::register_buf_ring`: the ring memory and every buffer in it stay
    /// valid until `unregister_buf_ring(group)` or the shard stops.
    pub(crate) unsafe fn register_buf_ring(
        &mut self,
        ring_addr: u64,
        entries: u16,
        group: u16,
    ) -> Result<(), OpError> {
        // SAFETY: forwarded from our caller.
        unsafe { self.uring.register_buf_ring(ring_addr, entries, group) }
    }

    /// Unregisters buffer group `group`.
    pub(crate) fn unregister_buf_ring(&mut self, group: u16) -> Result<(), OpError> {
        self.uring.unregister_buf_ring(group)
    }

    fn check_target(&self, target: usize) -> Result<(), ()> {
        if target < self.shard_count() {
            Ok(())
        } else {
            Err(())
        }
    }

    fn no_such_shard<F>(&self, shard: usize, task: F) -> SendError<F> {
        SendError::NoSuchShard {
            shard,
            shards: self.shard_count(),
            task,
        }
    }

    fn has_room(&mut self, target: usize) -> bool {
        if target == self.id {
            return self.local.len() < self.local_max;
        }
        let ring_free = self.outbound[target]
            .as_mut()
            .map_or(0, Producer::free_space);
        self.backlog[target].len() < self.backlog_max + ring_free
    }

    /// Accepts `task` for `target` unconditionally (bounds are checked by callers). A
    /// task for another shard is staged; `flush_backlogs` pushes it after `publish`.
    pub(crate) fn enqueue(&mut self, target: usize, task: Task) {
        self.created += 1;
        self.stats.tasks_sent += 1;
        if target == self.id {
            self.local.push_back(task);
        } else {
            self.backlog[target].push_back(task);
        }
    }

    fn mark_dirty(&mut self, target: usize) {
        if !self.is_dirty[target] {
            self.is_dirty[target] = true;
            self.dirty.push(target);
        }
    }

    /// Retries every non-empty backlog into its ring, in order.
    pub(crate) fn flush_backlogs(&mut self) {
        for target in 0..self.backlog.len() {
            if self.backlog[target].is_empty() {
                continue;
            }
            let pushed = match self.outbound[target].as_mut() {
                Some(ring) => ring.push_from_deque(&mut self.backlog[target]),
                None => 0,
            };
            if pushed > 0 {
                self.mark_dirty(target);
            }
        }
    }

    /// Counts what waits in this shard's outbound rings (the producer's cached view:
    /// no shared memory is read) and backlogs, for the published statistics.
    pub(crate) fn refresh_ring_stats(&mut self) {
        let occupancy: usize = self
            .outbound
            .iter_mut()
            .flatten()
            .map(|ring| ring.capacity() - ring.free_space())
            .sum();
        self.stats.ring_occupancy = occupancy as u64;
        self.stats.outbound_backlog = self.backlog.iter().map(VecDeque::len).sum::<usize>() as u64;
    }

    pub(crate) fn backlog_pending(&self) -> bool {
        self.backlog.iter().any(|b| !b.is_empty())
    }

    /// Rings the doorbell of every shard pushed to this turn: one fence per target per
    /// turn, and an eventfd write only for a target that is parked.
    pub(crate) fn ring_dirty_doorbells(&mut self) {
        while let Some(target) = self.dirty.pop() {
            self.is_dirty[target] = false;
            if self.shared.shards[target].doorbell.ring() {
                self.stats.wakeups_sent += 1;
            }
        }
    }

    /// Runs `f`, turning a panic into `TaskError::Panicked` (and counting it).
    pub(crate) fn run_caught<R>(
        &mut self,
        f: impl FnOnce(&mut ShardCtx) -> R,
    ) -> Result<R, TaskError> {
        catch_unwind(AssertUnwindSafe(|| f(self))).map_err(|payload| {
            self.stats.tasks_panicked += 1;
            TaskError::Panicked {
                shard: self.id,
                message: panic_message(&*payload),
            }
        })
    }

    /// Runs an accepted task (counted in `finished`), logging a panic.
    pub(crate) fn run_counted(&mut self, task: impl FnOnce(&mut ShardCtx)) {
        self.run_logged(task);
        self.finished += 1;
    }

    /// Runs a task, logging a panic; the shard carries on either way.
    pub(crate) fn run_logged(&mut self, task: impl FnOnce(&mut ShardCtx)) {
        self.stats.tasks_run += 1;
        if let Err(err) = self.run_caught(task) {
            tracing::error!(shard = self.id, %err, "task panicked");
        }
    }

    /// Dispatches up to `batch_max` I/O completions to their handlers.
    pub(crate) fn dispatch_completions(&mut self) -> usize {
        let reaped = self.uring.reap(self.batch_max);
        let n = reaped.len();
        for &(user_data, res, flags) in &reaped {
            let more = io_uring::cqueue::more(flags);
            match self.uring.take_handler(user_data, more) {
                Some(OpSlot::Once(handler)) => {
                    self.stats.ops_completed += 1;
                    self.run_counted(move |ctx| handler(ctx, res));
                }
                Some(OpSlot::Multi(mut handler)) => {
                    self.stats.ops_completed += 1;
                    // A standing multishot op is not accepted work (shutdown does not
                    // wait for it); each completion it posts is.
                    self.created += 1;
                    self.run_counted(|ctx| handler(ctx, res, flags));
                    if more {
                        self.uring.put_back(user_data, handler);
                    }
                }
                None => {}
            }
        }
        self.uring.return_reaped(reaped);
        n
    }

    /// Runs up to `batch_max` tasks this shard sent itself.
    pub(crate) fn run_local_queue(&mut self) -> usize {
        let mut n = 0;
        while n < self.batch_max {
            let Some(task) = self.local.pop_front() else {
                break;
            };
            self.run_counted(task);
            n += 1;
        }
        n
    }

    /// Fires up to `batch_max` due timers. A timer task is work like any other: it is
    /// counted as created and published, then `closing` is checked (both SeqCst, the
    /// order external submitters use), so shutdown either waits for it or it never runs.
    pub(crate) fn fire_timers(&mut self) -> usize {
        let now = Instant::now();
        let mut n = 0;
        while n < self.batch_max {
            let Some(task) = self.timers.pop_due(now) else {
                break;
            };
            self.created += 1;
            self.shared.shards[self.id]
                .drain
                .publish(self.created, self.finished);
            if self.shared.closing.load(Ordering::SeqCst) {
                drop(task);
                self.finished += 1;
                continue;
            }
            self.stats.timers_fired += 1;
            self.run_counted(task);
            n += 1;
        }
        n
    }
}

/// A write of `buf` (at most 4 GiB − 1 of it; the rest is a short write) at `offset`.
/// The entry points into `buf`: whoever submits it keeps `buf` alive until completion.
fn write_entry(fd: RawFd, buf: &[u8], offset: u64) -> io_uring::squeue::Entry {
    let len = u32::try_from(buf.len()).unwrap_or(u32::MAX);
    opcode::Write::new(types::Fd(fd), buf.as_ptr(), len)
        .offset(offset)
        .build()
}

fn fdatasync_entry(fd: RawFd) -> io_uring::squeue::Entry {
    opcode::Fsync::new(types::Fd(fd))
        .flags(types::FsyncFlags::DATASYNC)
        .build()
}

fn result_unit(res: i32) -> io::Result<()> {
    if res < 0 {
        Err(io::Error::from_raw_os_error(-res))
    } else {
        Ok(())
    }
}

fn result_len(res: i32) -> io::Result<usize> {
    usize::try_from(res).map_err(|_| io::Error::from_raw_os_error(-res))
}
