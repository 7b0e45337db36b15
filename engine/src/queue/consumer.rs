//! A queue consumer read by a thread that is not a shard: the bounded buffer its
//! queue's owner shard pushes deliveries into, and the handle that drains it and sends
//! acknowledgements back.
//!
//! Owns: the buffer bound (the owner reserves a slot before it pushes; a full buffer
//! marks the owner starved and the next take wakes it), waiting on the eventfd, and
//! routing `ack`/`nack`/`reject` to the owner. Never: lets the buffer pass its bound,
//! or blocks the owner shard.

use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_queue::SegQueue;

use super::error::QueueError;
use super::message::Delivery;
use super::shard::ShardQueues;
use crate::doorbell::{Doorbell, EventFd};
use crate::runtime::{CallError, RuntimeHandle, ShardCtx};

/// How long an ack waits for room in a full shard queue before `Backpressure`.
const ACK_PATIENCE: Duration = Duration::from_secs(1);

/// The buffer between a queue's owner shard and one consumer.
pub(crate) struct ConsumerBuffer {
    deliveries: SegQueue<Delivery>,
    /// Slots reserved (by the owner, before a push) and not yet taken.
    count: AtomicUsize,
    capacity: usize,
    /// The owner found the buffer full; the next take wakes it.
    starved: AtomicBool,
    closed: AtomicBool,
    bell: Doorbell<EventFd>,
    runtime: RuntimeHandle,
    owner: usize,
    queue: Arc<str>,
}

impl ConsumerBuffer {
    pub(crate) fn new(
        capacity: usize,
        runtime: RuntimeHandle,
        owner: usize,
        queue: Arc<str>,
    ) -> std::io::Result<Arc<Self>> {
        Ok(Arc::new(Self {
            deliveries: SegQueue::new(),
            count: AtomicUsize::new(0),
            capacity: capacity.max(1),
            starved: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            bell: Doorbell::new(EventFd::new()?),
            runtime,
            owner,
            queue,
        }))
    }

    /// Owner side: takes a slot if there is one; otherwise marks itself starved and
    /// looks once more (a take in between would not have seen the mark).
    pub(crate) fn reserve(&self) -> bool {
        let take = |n: usize| (n < self.capacity).then_some(n + 1);
        if self
            .count
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, take)
            .is_ok()
        {
            return true;
        }
        self.starved.store(true, Ordering::SeqCst);
        self.count
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, take)
            .is_ok()
    }

    /// Owner side: queues a delivery into a reserved slot. Call `notify` after.
    pub(crate) fn push(&self, delivery: Delivery) {
        self.deliveries.push(delivery);
    }

    pub(crate) fn notify(&self) {
        self.bell.ring();
    }

    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        self.notify();
    }

    fn take(&self) -> Option<Delivery> {
        let delivery = self.deliveries.pop()?;
        self.count.fetch_sub(1, Ordering::SeqCst);
        if self.starved.load(Ordering::SeqCst) && self.starved.swap(false, Ordering::SeqCst) {
            let queue = self.queue.clone();
            let resume = move |ctx: &mut ShardCtx| ShardQueues::get(ctx).dispatch(ctx, &queue);
            if let Err(error) = self
                .runtime
                .spawn_patiently(self.owner, ACK_PATIENCE, resume)
            {
                self.starved.store(true, Ordering::SeqCst); // the next take tries again
                tracing::warn!(%error, "cannot wake a queue's shard for a drained consumer");
            }
        }
        Some(delivery)
    }
}

/// A consumer of one queue. Dropping it cancels it: its unacknowledged deliveries go
/// back to the queue, in order, flagged redelivered.
///
/// Event-loop integration: watch `fd()`; when readable drain with `try_next()` until
/// `Ok(None)`, then `arm()` (true: drain again before waiting). `Send`, not `Sync`.
pub struct QueueConsumer {
    pub(crate) buffer: Arc<ConsumerBuffer>,
    pub(crate) id: u64,
    pub(crate) queue: Arc<str>,
    pub(crate) cancelled: bool,
    pub(crate) queues: super::Queues,
}

impl std::fmt::Debug for QueueConsumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueueConsumer")
            .field("queue", &self.queue)
            .field("id", &self.id)
            .finish()
    }
}

impl QueueConsumer {
    /// The next delivery if one is buffered; `Err(Cancelled)` once cancelled and
    /// drained.
    pub fn try_next(&self) -> Result<Option<Delivery>, QueueError> {
        if let Some(delivery) = self.buffer.take() {
            return Ok(Some(delivery));
        }
        if self.buffer.closed.load(Ordering::SeqCst) {
            return match self.buffer.take() {
                Some(delivery) => Ok(Some(delivery)),
                None => Err(QueueError::Cancelled),
            };
        }
        Ok(None)
    }

    /// Waits up to `timeout` for the next delivery.
    pub fn next(&self, timeout: Duration) -> Result<Delivery, QueueError> {
        let deadline = Instant::now() + timeout.min(Duration::from_secs(365 * 24 * 3600));
        loop {
            if let Some(delivery) = self.try_next()? {
                return Ok(delivery);
            }
            if Instant::now() >= deadline {
                return Err(QueueError::Timeout);
            }
            let buffer = &self.buffer;
            let ready = || !buffer.deliveries.is_empty() || buffer.closed.load(Ordering::SeqCst);
            buffer
                .bell
                .sleep(deadline, ready)
                .map_err(QueueError::Wait)?;
        }
    }

    /// Up to `max` deliveries: waits up to `timeout` for the first, then takes what is
    /// buffered.
    pub fn fetch(&self, max: usize, timeout: Duration) -> Result<Vec<Delivery>, QueueError> {
        let mut batch = Vec::new();
        if max == 0 {
            return Ok(batch);
        }
        match self.next(timeout) {
            Ok(first) => batch.push(first),
            Err(QueueError::Timeout) => return Ok(batch),
            Err(error) => return Err(error),
        }
        while batch.len() < max {
            match self.buffer.take() {
                Some(delivery) => batch.push(delivery),
                None => break,
            }
        }
        Ok(batch)
    }

    /// Acknowledges `delivery_tag` (and every earlier one, if `multiple`). Returns once
    /// queued for the queue's shard.
    pub fn ack(&self, delivery_tag: u64, multiple: bool) -> Result<(), QueueError> {
        self.answer(delivery_tag, multiple, Answer::Ack)
    }

    /// Negative acknowledgement: back to the head of the queue (`requeue`, flagged
    /// redelivered), or dead-lettered (if the queue has a dead-letter exchange) or
    /// dropped.
    pub fn nack(&self, delivery_tag: u64, multiple: bool, requeue: bool) -> Result<(), QueueError> {
        self.answer(delivery_tag, multiple, Answer::Nack { requeue })
    }

    /// `nack` of one delivery.
    pub fn reject(&self, delivery_tag: u64, requeue: bool) -> Result<(), QueueError> {
        self.nack(delivery_tag, false, requeue)
    }

    fn answer(&self, tag: u64, multiple: bool, answer: Answer) -> Result<(), QueueError> {
        let (queue, id) = (self.queue.clone(), self.id);
        let task = move |ctx: &mut ShardCtx| {
            let queues = ShardQueues::get(ctx);
            if let Err(error) = queues.answer(ctx, &queue, id, tag, multiple, answer) {
                tracing::debug!(%error, "acknowledgement refused");
            }
        };
        let runtime = &self.buffer.runtime;
        Ok(runtime.spawn_patiently(self.buffer.owner, ACK_PATIENCE, task)?)
    }

    /// Deliveries buffered and not yet taken.
    pub fn buffered(&self) -> usize {
        self.buffer.count.load(Ordering::SeqCst)
    }

    /// The eventfd that becomes readable when deliveries arrive (after `arm`).
    pub fn fd(&self) -> RawFd {
        self.buffer.bell.notifier().as_raw_fd()
    }

    /// Announces the caller is about to wait on `fd()`; true if deliveries (or the
    /// cancel) are already there.
    pub fn arm(&self) -> bool {
        self.buffer.bell.arm();
        let ready = !self.buffer.deliveries.is_empty() || self.buffer.closed.load(Ordering::SeqCst);
        if ready {
            self.buffer.bell.disarm();
        }
        ready
    }

    /// Clears the eventfd after it was readable.
    pub fn clear_notification(&self) -> std::io::Result<()> {
        self.buffer.bell.notifier().read_count().map(drop)
    }

    /// Cancels the consumer and waits until the queue has taken its unacknowledged
    /// deliveries back (and, for an auto-delete queue that lost its last consumer,
    /// deleted it).
    pub fn cancel(mut self) -> Result<(), QueueError> {
        self.cancelled = true;
        self.cancel_now()
    }

    fn cancel_now(&self) -> Result<(), QueueError> {
        let (queue, id) = (self.queue.clone(), self.id);
        let cancel = move |ctx: &mut ShardCtx| ShardQueues::get(ctx).cancel(ctx, &queue, id);
        match self.buffer.runtime.call(self.buffer.owner, cancel.clone()) {
            // `if_unused`: a consumer that came meanwhile keeps the queue.
            Ok(true) => {
                match self
                    .queues
                    .delete_queue_as(super::Access::Internal, &self.queue, true, false)
                {
                    Ok(_) | Err(QueueError::NotFound { .. } | QueueError::InUse { .. }) => Ok(()),
                    Err(error) => Err(error),
                }
            }
            Ok(false) => Ok(()),
            Err(CallError::OnShardThread { .. }) => {
                // Dropped on a shard: cancel without waiting (no auto-delete from here).
                let cancel = move |ctx: &mut ShardCtx| {
                    cancel(ctx);
                };
                Ok(self
                    .buffer
                    .runtime
                    .spawn_patiently(self.buffer.owner, ACK_PATIENCE, cancel)?)
            }
            Err(error) => Err(error.into()),
        }
    }
}

impl Drop for QueueConsumer {
    fn drop(&mut self) {
        if !self.cancelled {
            if let Err(error) = self.cancel_now() {
                tracing::warn!(%error, "consumer could not be cancelled (engine stopping?)");
            }
        }
    }
}

/// How a consumer answers a delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Answer {
    Ack,
    Nack { requeue: bool },
}
