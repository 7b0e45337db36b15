//! A shard's io_uring: submission, completion routing, the armed wake-up read, and the
//! timed park.
//!
//! Owns: the ring, the slab of in-flight operations (each op's completion handler, which
//! also owns the op's buffers), and the 8-byte buffer of the wake-up read.
//!
//! Never: runs handlers itself (the shard loop does, with `&mut ShardCtx`), frees a
//! buffer the kernel may still write (an op's handler lives in the slab until its
//! completion arrives; at a forced stop, ops that never complete are leaked on purpose).
//!
//! `user_data` is the op's slab index in the low 32 bits and the slot's generation in
//! the high 32 (so a cancel or a stray completion for an op that finished can never
//! reach the op that reuses its slot); `USER_DATA_WAKE` and `USER_DATA_CANCEL` are
//! reserved. A one-shot op's slot is freed by its completion; a multishot op (accept,
//! recv, poll, `SEND_ZC` with its notification) keeps its slot and handler until a
//! completion comes without `IORING_CQE_F_MORE`.

use std::io;
use std::os::fd::AsRawFd;
use std::time::Duration;

use io_uring::{opcode, types, IoUring};

use super::context::ShardCtx;
use super::error::{OpError, RuntimeError};
use crate::doorbell::EventFd;

/// Reserved `user_data` of the read armed on the shard's wake-up eventfd.
pub(crate) const USER_DATA_WAKE: u64 = u64::MAX;
/// Reserved `user_data` of cancel requests at stop (their completions are ignored).
pub(crate) const USER_DATA_CANCEL: u64 = u64::MAX - 1;

/// What an op's handler receives: the CQE's `res` (bytes or a negative errno).
pub(crate) type OpHandler = Box<dyn FnOnce(&mut ShardCtx, i32)>;

/// A multishot op's handler: runs once per completion with `res` and the CQE's flags
/// (buffer id, `IORING_CQE_F_MORE`, `IORING_CQE_F_NOTIF`).
pub(crate) type MultiHandler = Box<dyn FnMut(&mut ShardCtx, i32, u32)>;

/// Generations wrap below `u32::MAX` so no `user_data` can equal a reserved value.
const GENERATION_MAX: u32 = u32::MAX - 2;

/// An in-flight op's handler.
pub(crate) enum OpSlot {
    /// Completes once.
    Once(OpHandler),
    /// Completes until a CQE without `IORING_CQE_F_MORE`.
    Multi(MultiHandler),
}

/// A completion taken out of the CQ: `user_data`, `res`, flags.
pub(crate) type Reaped = (u64, i32, u32);

pub(crate) struct Uring {
    ring: IoUring,
    ops: Vec<Option<OpSlot>>,
    /// Each slot's generation, bumped whenever the slot is freed.
    generations: Vec<u32>,
    free: Vec<usize>,
    inflight: usize,
    inflight_max: usize,
    /// The wake read's buffer. Boxed so its address is stable; lives as long as the ring.
    wake_buf: Box<u64>,
    wake_armed: bool,
    /// Completions taken from the CQ, waiting for the loop to dispatch them.
    reaped: Vec<Reaped>,
    /// `io_uring_enter` calls made (statistics).
    pub(crate) enters: u64,
}

impl Uring {
    pub(crate) fn new(
        shard: usize,
        entries: u32,
        inflight_max: usize,
    ) -> Result<Self, RuntimeError> {
        let start_err = |what, source| RuntimeError::ShardStart {
            shard,
            what,
            source,
        };
        // SINGLE_ISSUER lets the kernel skip submission locking: only this shard's thread
        // ever submits. Fall back to a plain ring on kernels that reject the flag.
        let ring = IoUring::builder()
            .setup_single_issuer()
            .setup_cqsize(entries * 2)
            .build(entries)
            .or_else(|_| IoUring::builder().setup_cqsize(entries * 2).build(entries))
            .map_err(|e| start_err("io_uring_setup", e))?;
        if !ring.params().is_feature_ext_arg() {
            return Err(RuntimeError::UringUnsupported {
                feature: "IORING_FEAT_EXT_ARG (timed waits)",
            });
        }
        if !ring.params().is_feature_nodrop() {
            return Err(RuntimeError::UringUnsupported {
                feature: "IORING_FEAT_NODROP (completions past the queue are kept)",
            });
        }
        let mut ops = Vec::with_capacity(inflight_max);
        ops.resize_with(inflight_max, || None);
        Ok(Self {
            ring,
            ops,
            generations: vec![0; inflight_max],
            free: (0..inflight_max).rev().collect(),
            inflight: 0,
            inflight_max,
            wake_buf: Box::new(0),
            wake_armed: false,
            reaped: Vec::with_capacity(entries as usize * 2),
            enters: 0,
        })
    }

    /// Queues `entry` with `handler` to run on its completion.
    ///
    /// # Safety
    /// Every pointer in `entry` must stay valid until the handler runs: point it into
    /// memory the handler owns (moved into the closure) or that outlives the runtime.
    pub(crate) unsafe fn push(
        &mut self,
        entry: io_uring::squeue::Entry,
        handler: OpSlot,
    ) -> Result<u64, OpError> {
        let Some(slot) = self.free.pop() else {
            return Err(OpError::TooManyInFlight {
                max: self.inflight_max,
            });
        };
        debug_assert!(self.ops[slot].is_none());
        let user_data = self.user_data(slot);
        let entry = entry.user_data(user_data);
        // SAFETY: the caller guarantees the entry's pointers outlive the handler, which
        // we keep in the slab until the (last) completion for `slot` arrives.
        if let Err(err) = unsafe { self.push_sqe(&entry) } {
            self.free.push(slot);
            return Err(err);
        }
        self.ops[slot] = Some(handler);
        self.inflight += 1;
        Ok(user_data)
    }

    fn user_data(&self, slot: usize) -> u64 {
        (u64::from(self.generations[slot]) << 32) | slot as u64
    }

    /// The slot `user_data` names, if it names the op now in that slot.
    fn slot_of(&self, user_data: u64) -> Option<usize> {
        let slot = usize::try_from(user_data & u64::from(u32::MAX)).ok()?;
        let generation = u32::try_from(user_data >> 32).ok()?;
        (self.generations.get(slot) == Some(&generation)).then_some(slot)
    }

    fn free_slot(&mut self, slot: usize) {
        let generation = &mut self.generations[slot];
        *generation = if *generation >= GENERATION_MAX {
            0
        } else {
            *generation + 1
        };
        self.free.push(slot);
        self.inflight -= 1;
    }

    /// Free op slots.
    pub(crate) fn available(&self) -> usize {
        self.free.len()
    }

    /// Queues a chain of entries linked with `IOSQE_IO_LINK` (each starts only after
    /// the previous completed in full; a failed or short one cancels the rest, which
    /// complete with `-ECANCELED`), each with its handler. The chain is placed in the
    /// SQ whole, never split across a submission (a split chain loses its link).
    ///
    /// # Safety
    /// As for `push`, for every entry.
    pub(crate) unsafe fn push_linked(
        &mut self,
        entries: Vec<io_uring::squeue::Entry>,
        handlers: Vec<OpHandler>,
    ) -> Result<(), OpError> {
        debug_assert_eq!(entries.len(), handlers.len());
        let n = entries.len();
        if self.free.len() < n {
            return Err(OpError::TooManyInFlight {
                max: self.inflight_max,
            });
        }
        let room = {
            let sq = self.ring.submission();
            sq.capacity() - sq.len()
        };
        if room < n {
            self.submit().map_err(OpError::Submit)?;
        }
        let slots: Vec<usize> = (0..n).filter_map(|_| self.free.pop()).collect();
        let last = n - 1;
        let chain: Vec<io_uring::squeue::Entry> = entries
            .into_iter()
            .zip(&slots)
            .enumerate()
            .map(|(i, (entry, &slot))| {
                let entry = entry.user_data(self.user_data(slot));
                if i < last {
                    entry.flags(io_uring::squeue::Flags::IO_LINK)
                } else {
                    entry
                }
            })
            .collect();
        // SAFETY: the caller guarantees the entries' pointers outlive their handlers,
        // which stay in the slab until each slot's completion arrives.
        if unsafe { self.ring.submission().push_multiple(&chain) }.is_err() {
            self.free.extend(slots);
            return Err(OpError::Submit(io::Error::new(
                io::ErrorKind::WouldBlock,
                "SQ full after submit",
            )));
        }
        for (slot, handler) in slots.into_iter().zip(handlers) {
            self.ops[slot] = Some(OpSlot::Once(handler));
            self.inflight += 1;
        }
        Ok(())
    }

    /// # Safety
    /// As for `push`: the entry's pointers stay valid until its completion.
    unsafe fn push_sqe(&mut self, entry: &io_uring::squeue::Entry) -> Result<(), OpError> {
        // SAFETY: forwarded from the caller.
        if unsafe { self.ring.submission().push(entry) }.is_ok() {
            return Ok(());
        }
        // The SQ is full: hand what is queued to the kernel, then there is room.
        self.submit().map_err(OpError::Submit)?;
        // SAFETY: forwarded from the caller.
        unsafe { self.ring.submission().push(entry) }.map_err(|_| {
            OpError::Submit(io::Error::new(
                io::ErrorKind::WouldBlock,
                "SQ full after submit",
            ))
        })
    }

    /// Makes sure a read is armed on `wake` so an eventfd write completes it and ends a
    /// park. The read stays armed until it completes; then `reap` clears the flag.
    pub(crate) fn arm_wake(&mut self, wake: &EventFd) -> io::Result<()> {
        if self.wake_armed {
            return Ok(());
        }
        let buf: *mut u64 = &mut *self.wake_buf;
        let entry = opcode::Read::new(types::Fd(wake.as_raw_fd()), buf.cast(), 8)
            .build()
            .user_data(USER_DATA_WAKE);
        // SAFETY: `wake_buf` is boxed and owned by `self`, and the ring it is submitted to
        // is dropped no earlier (`finish` waits for the read's completion or leaks both).
        unsafe { self.push_sqe(&entry) }.map_err(|e| match e {
            OpError::Submit(io) => io,
            OpError::TooManyInFlight { .. } | OpError::Register(_) => {
                io::Error::other("unreachable: wake read")
            }
        })?;
        self.wake_armed = true;
        Ok(())
    }

    /// Submits queued SQEs without waiting. Costs a syscall only when some are queued,
    /// or when completions overflowed the CQ (the enter flushes them in as room allows).
    pub(crate) fn submit(&mut self) -> io::Result<()> {
        let overflowed = self.ring.submission().cq_overflow();
        if self.ring.submission().is_empty() && !overflowed {
            return Ok(());
        }
        self.enters += 1;
        self.ring.submit().map(|_| ())
    }

    /// Submits and sleeps until a completion arrives or `timeout` passes.
    pub(crate) fn park(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        self.enters += 1;
        let result = match timeout {
            None => self.ring.submit_and_wait(1),
            Some(t) => {
                let ts = types::Timespec::from(t);
                let args = types::SubmitArgs::new().timespec(&ts);
                self.ring.submitter().submit_with_args(1, &args)
            }
        };
        match result {
            Ok(_) => Ok(()),
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::ETIME | libc::EINTR | libc::EBUSY)
                ) =>
            {
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Whether completions are waiting in the CQ (no syscall).
    pub(crate) fn has_completions(&mut self) -> bool {
        !self.ring.completion().is_empty()
    }

    /// Moves up to `max` completions out of the CQ; the wake read's and cancel
    /// requests' are absorbed here. Returns the op completions, to be dispatched with
    /// `take_handler`.
    pub(crate) fn reap(&mut self, max: usize) -> Vec<Reaped> {
        let mut out = std::mem::take(&mut self.reaped);
        out.clear();
        for cqe in self.ring.completion().take(max) {
            match cqe.user_data() {
                USER_DATA_WAKE => self.wake_armed = false,
                USER_DATA_CANCEL => {}
                user_data => out.push((user_data, cqe.result(), cqe.flags())),
            }
        }
        out
    }

    /// Gives back the scratch vector `reap` lent out.
    pub(crate) fn return_reaped(&mut self, v: Vec<Reaped>) {
        self.reaped = v;
    }

    /// Takes the handler of a completed op. A one-shot op's slot is freed; so is a
    /// multishot op's on its last completion (`more` false). Otherwise the slot stays
    /// reserved and the caller gives the handler back with `put_back` once it ran.
    pub(crate) fn take_handler(&mut self, user_data: u64, more: bool) -> Option<OpSlot> {
        let slot = self.slot_of(user_data)?;
        let handler = self.ops[slot].take()?;
        if matches!(handler, OpSlot::Once(_)) || !more {
            self.free_slot(slot);
        }
        Some(handler)
    }

    /// Returns a multishot handler taken with `more` set to its still-reserved slot.
    pub(crate) fn put_back(&mut self, user_data: u64, handler: MultiHandler) {
        match self.slot_of(user_data) {
            Some(slot) if self.ops[slot].is_none() => {
                self.ops[slot] = Some(OpSlot::Multi(handler));
            }
            _ => debug_assert!(false, "multishot slot {user_data:#x} lost while running"),
        }
    }

    /// Asks the kernel to cancel the op `user_data` names (if it is still in flight).
    /// Its handler still runs, with `-ECANCELED` or its result if it raced to finish.
    pub(crate) fn cancel(&mut self, user_data: u64) -> Result<(), OpError> {
        if self.slot_of(user_data).is_none() {
            return Ok(());
        }
        let cancel = opcode::AsyncCancel::new(user_data)
            .build()
            .user_data(USER_DATA_CANCEL);
        // SAFETY: a cancel request carries no pointers.
        unsafe { self.push_sqe(&cancel) }
    }

    /// Registers a ring of provided buffers as group `group`.
    ///
    /// # Safety
    /// `ring_addr` must point to `entries` page-aligned `io_uring_buf` entries that stay
    /// valid (as must every buffer published in it) until `unregister_buf_ring(group)`
    /// or until the ring is dropped with no op in flight that could select from it.
    pub(crate) unsafe fn register_buf_ring(
        &mut self,
        ring_addr: u64,
        entries: u16,
        group: u16,
    ) -> Result<(), OpError> {
        // SAFETY: forwarded from the caller.
        unsafe {
            self.ring
                .submitter()
                .register_buf_ring_with_flags(ring_addr, entries, group, 0)
        }
        .map_err(OpError::Register)
    }

    /// Unregisters buffer group `group`; the kernel no longer selects from it.
    pub(crate) fn unregister_buf_ring(&mut self, group: u16) -> Result<(), OpError> {
        self.ring
            .submitter()
            .unregister_buf_ring(group)
            .map_err(OpError::Register)
    }

    /// At stop: asks the kernel to cancel every op in flight (one `ASYNC_CANCEL` by
    /// `user_data` each, which kernels since 5.5 support), completes the wake read by
    /// writing `wake` itself, and waits up to `patience` for the completions. Returns
    /// the handlers of ops that completed (to drop) and how many never did; those are
    /// leaked with the ring, because the kernel may still write their buffers.
    pub(crate) fn cancel_all(
        &mut self,
        wake: &EventFd,
        patience: Duration,
    ) -> (Vec<OpSlot>, usize) {
        let mut done = Vec::new();
        if self.wake_armed {
            let _ = wake.write_one();
        }
        for slot in 0..self.ops.len() {
            if self.ops[slot].is_some() {
                let cancel = opcode::AsyncCancel::new(self.user_data(slot))
                    .build()
                    .user_data(USER_DATA_CANCEL);
                // SAFETY: a cancel request carries no pointers.
                let _ = unsafe { self.push_sqe(&cancel) };
            }
        }
        let deadline = std::time::Instant::now() + patience;
        while (self.inflight > 0 || self.wake_armed) && std::time::Instant::now() < deadline {
            let _ = self.park(Some(Duration::from_millis(10)));
            let reaped = self.reap(usize::MAX);
            for &(ud, _, flags) in &reaped {
                if let Some(h) = self.take_handler(ud, io_uring::cqueue::more(flags)) {
                    match h {
                        OpSlot::Multi(h) if io_uring::cqueue::more(flags) => self.put_back(ud, h),
                        h => done.push(h),
                    }
                }
            }
            self.return_reaped(reaped);
        }
        (done, self.inflight + usize::from(self.wake_armed))
    }
}
