//! A subscription consumed by a thread that is not a shard (the application's, a
//! binding's event loop): a bounded queue the owning shard and publishing threads
//! (direct delivery, `direct.rs`) push into and the consumer drains, announced on an
//! eventfd.
//!
//! Owns: the pending bound (messages and bytes), the slow-consumer policy and its
//! counters, and waiting for messages. Never: grows past its bound (a message that does
//! not fit is dropped and counted, or closes the subscription, as the policy says), or
//! blocks the shard (pushes never wait).

use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_queue::SegQueue;

use super::error::PubSubError;
use super::message::Message;
use super::PubSub;
use crate::doorbell::{Doorbell, EventFd};
use crate::pending::PendingBound;

/// What happens when a message arrives for a subscription whose pending buffer is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SlowConsumerPolicy {
    /// Drop the message and count it (`Subscription::dropped`); the subscription
    /// carries on. NATS core's behaviour towards a slow subscriber, minus disconnecting.
    #[default]
    DropNewest,
    /// Close the subscription: interest is removed everywhere, the consumer gets the
    /// messages already pending, then `PubSubError::SlowConsumer`.
    Close,
}

/// Limits of a subscription's pending buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PendingLimits {
    /// The most messages waiting for the consumer. Default 65,536; at most
    /// `PENDING_MESSAGES_MAX` (8,388,608; larger values are held to it).
    pub messages: usize,
    /// The most bytes (`Message::size`) waiting for the consumer. Default 64 MiB; at
    /// most `PENDING_BYTES_MAX` (512 GiB; larger values are held to it).
    pub bytes: usize,
    /// What happens past either bound.
    pub policy: SlowConsumerPolicy,
}

impl Default for PendingLimits {
    fn default() -> Self {
        Self {
            messages: 65_536,
            bytes: 64 << 20,
            policy: SlowConsumerPolicy::DropNewest,
        }
    }
}

/// The part of a subscription the owning shard and the consumer share.
pub(crate) struct SubQueue {
    /// Grows in small blocks as messages wait, so an idle subscription costs little
    /// whatever its bound (a preallocated ring of 65,536 messages would be ~7.5 MiB).
    queue: SegQueue<Message>,
    /// Messages and bytes in `queue`: reserved before a push (only if they fit, so the
    /// bound holds whoever offers), released after a pop.
    bound: PendingBound,
    policy: SlowConsumerPolicy,
    dropped: AtomicU64,
    /// Messages the consumer took (written by the consumer only).
    taken: AtomicU64,
    /// No more messages will come (unsubscribed, auto-unsubscribed, slow consumer,
    /// shutdown); set by the owning shard after its last push. A publishing thread that
    /// raced the close may still push one message; the consumer may or may not read it
    /// (at most once).
    closed: AtomicBool,
    slow: AtomicBool,
    bell: Doorbell<EventFd>,
}

/// What the shard did with a message offered to a subscription queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Offer {
    /// Queued for the consumer.
    Queued,
    /// Dropped (buffer full, policy `DropNewest`).
    Dropped,
    /// Buffer full under policy `Close`: the shard must remove the subscription.
    Overflow,
    /// The subscription is closed (a publisher that saw it before it went away).
    Closed,
}

impl SubQueue {
    pub(crate) fn new(limits: PendingLimits) -> std::io::Result<Arc<Self>> {
        Ok(Arc::new(Self {
            queue: SegQueue::new(),
            bound: PendingBound::new(limits.messages, limits.bytes),
            policy: limits.policy,
            dropped: AtomicU64::new(0),
            taken: AtomicU64::new(0),
            closed: AtomicBool::new(false),
            slow: AtomicBool::new(false),
            bell: Doorbell::new(EventFd::new()?),
        }))
    }

    /// Queues `message` unless the buffer is full or the subscription closed. Shards
    /// and publishing threads (direct delivery) offer concurrently: each reserves its
    /// room in the counters before it pushes, and only if it fits, so the bound holds
    /// whoever offers. Call `notify` once after a batch of offers.
    pub(crate) fn offer(&self, message: Message) -> Offer {
        if self.closed.load(Ordering::Acquire) {
            return Offer::Closed;
        }
        // Reserved before the push, so the consumer's release (after its pop) can never
        // come first.
        if self.bound.try_reserve(message.size()) {
            self.queue.push(message);
            return Offer::Queued;
        }
        self.dropped.fetch_add(1, Ordering::Relaxed);
        match self.policy {
            SlowConsumerPolicy::DropNewest => Offer::Dropped,
            SlowConsumerPolicy::Close => {
                self.slow.store(true, Ordering::Release);
                Offer::Overflow
            }
        }
    }

    /// Whether direct delivery may write to this queue: only under `DropNewest` (an
    /// overflow under `Close` must be handled by the owning shard).
    pub(crate) fn drops_newest(&self) -> bool {
        self.policy == SlowConsumerPolicy::DropNewest
    }

    /// Shard side: no more messages will come. Wakes the consumer.
    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.notify();
    }

    /// Shard side: wakes the consumer if it sleeps.
    pub(crate) fn notify(&self) {
        self.bell.ring();
    }

    fn pop(&self) -> Option<Message> {
        let message = self.queue.pop()?;
        self.bound.release(1, message.size());
        self.taken.fetch_add(1, Ordering::Relaxed);
        Some(message)
    }

    /// Consumer side: the next queued message. `Err` once closed and drained:
    /// `Closed`, or `SlowConsumer` after an overflow under `SlowConsumerPolicy::Close`.
    pub(crate) fn try_next(&self) -> Result<Option<Message>, PubSubError> {
        if let Some(message) = self.pop() {
            return Ok(Some(message));
        }
        if self.closed.load(Ordering::Acquire) {
            // Pushes happen before `closed` is set: one more look catches the last.
            if let Some(message) = self.pop() {
                return Ok(Some(message));
            }
            return Err(self.end_error());
        }
        Ok(None)
    }

    /// Consumer side: moves up to `max` queued messages to the end of `out` and
    /// returns how many, updating the shared counters once for all of them (the
    /// per-message cost `try_next` pays twice). 0: none queued. `Err` as `try_next`.
    pub(crate) fn try_next_batch(
        &self,
        max: usize,
        out: &mut Vec<Message>,
    ) -> Result<usize, PubSubError> {
        if max == 0 {
            return Ok(0);
        }
        let mut taken = 0;
        let mut bytes = 0;
        let mut look_again = true;
        loop {
            while taken < max {
                let Some(message) = self.queue.pop() else {
                    break;
                };
                bytes += message.size();
                out.push(message);
                taken += 1;
            }
            // Pushes happen before `closed` is set: after seeing it, one more look
            // catches the last.
            if taken > 0 || !look_again || !self.closed.load(Ordering::Acquire) {
                break;
            }
            look_again = false;
        }
        if taken > 0 {
            self.bound.release(taken, bytes);
            self.taken.fetch_add(taken as u64, Ordering::Relaxed);
            return Ok(taken);
        }
        if !look_again {
            return Err(self.end_error());
        }
        Ok(0)
    }

    fn end_error(&self) -> PubSubError {
        if self.slow.load(Ordering::Acquire) {
            PubSubError::SlowConsumer
        } else {
            PubSubError::Closed
        }
    }

    /// Consumer side: waits up to `timeout` for the next message: `Err(Timeout)` if
    /// none came.
    pub(crate) fn next_timeout(&self, timeout: Duration) -> Result<Message, PubSubError> {
        let timeout = timeout.min(Duration::from_secs(365 * 24 * 3600));
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(message) = self.try_next()? {
                return Ok(message);
            }
            if Instant::now() >= deadline {
                return Err(PubSubError::Timeout);
            }
            let ready = || !self.queue.is_empty() || self.closed.load(Ordering::Acquire);
            self.bell
                .sleep(deadline, ready)
                .map_err(PubSubError::Wait)?;
        }
    }

    /// Messages waiting for the consumer.
    pub(crate) fn pending(&self) -> usize {
        self.bound.pending().0
    }

    /// Bytes (`Message::size`) waiting for the consumer.
    pub(crate) fn pending_bytes(&self) -> usize {
        self.bound.pending().1
    }

    /// Messages dropped because the pending buffer was full.
    pub(crate) fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Messages queued for the consumer so far: those it took and those in the queue
    /// (for a moment after a take, short by what it took).
    pub(crate) fn delivered(&self) -> u64 {
        self.taken.load(Ordering::Relaxed) + self.queue.len() as u64
    }

    /// The eventfd that becomes readable when messages arrive (after `arm`).
    pub(crate) fn fd(&self) -> RawFd {
        self.bell.notifier().as_raw_fd()
    }

    /// Consumer side: announces it is about to wait on `fd()`. True if messages (or the
    /// close) are already there: drain again instead of waiting.
    pub(crate) fn arm(&self) -> bool {
        self.bell.arm();
        let ready = !self.queue.is_empty() || self.closed.load(Ordering::Acquire);
        if ready {
            self.bell.disarm();
        }
        ready
    }

    /// Clears the eventfd after it was readable.
    pub(crate) fn clear_notification(&self) -> std::io::Result<()> {
        self.bell.notifier().read_count().map(drop)
    }
}

/// A subscription read by a thread that is not a shard. Dropping it unsubscribes.
///
/// Event-loop integration: watch `fd()` for readability; when readable call
/// `clear_notification()`, drain with `try_next()` until `Ok(None)`, then `arm()`; if
/// `arm()` returns true, messages arrived meanwhile: drain again before waiting.
/// `Send`, not `Sync` (one consumer at a time).
pub struct Subscription {
    pub(crate) id: u64,
    pub(crate) queue: Arc<SubQueue>,
    pub(crate) pubsub: PubSub,
    pub(crate) unsubscribed: bool,
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription")
            .field("id", &self.id)
            .field("pending", &self.pending())
            .field("dropped", &self.dropped())
            .finish()
    }
}

impl Subscription {
    /// The subscription's id (unique in its `PubSub`).
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The next pending message, if any. `Err` once the subscription is closed and
    /// drained: `Closed` (unsubscribed, auto-unsubscribe reached, shutdown) or
    /// `SlowConsumer` (the pending buffer overflowed under `SlowConsumerPolicy::Close`).
    pub fn try_next(&mut self) -> Result<Option<Message>, PubSubError> {
        self.queue.try_next()
    }

    /// Moves up to `max` pending messages to the end of `out` without waiting and
    /// returns how many (0: none pending). Cheaper per message than `try_next`: the
    /// pending counters the shard also writes are updated once per call. `Err` as
    /// `try_next`, only when nothing was taken.
    pub fn try_next_batch(
        &mut self,
        max: usize,
        out: &mut Vec<Message>,
    ) -> Result<usize, PubSubError> {
        self.queue.try_next_batch(max, out)
    }

    /// Waits up to `timeout` for the next message: `Err(Timeout)` if none came.
    pub fn next_timeout(&mut self, timeout: Duration) -> Result<Message, PubSubError> {
        self.queue.next_timeout(timeout)
    }

    /// Messages waiting for this consumer.
    pub fn pending(&self) -> usize {
        self.queue.pending()
    }

    /// Bytes (`Message::size`) waiting for this consumer.
    pub fn pending_bytes(&self) -> usize {
        self.queue.pending_bytes()
    }

    /// Messages dropped because the pending buffer was full.
    pub fn dropped(&self) -> u64 {
        self.queue.dropped()
    }

    /// Messages queued for this consumer so far.
    pub fn delivered(&self) -> u64 {
        self.queue.delivered()
    }

    /// The eventfd that becomes readable when messages arrive (after `arm`).
    pub fn fd(&self) -> RawFd {
        self.queue.fd()
    }

    /// Announces the consumer is about to wait on `fd()`. Returns true if messages (or
    /// the close) are already there: drain again instead of waiting.
    pub fn arm(&self) -> bool {
        self.queue.arm()
    }

    /// Clears the eventfd after it was readable.
    pub fn clear_notification(&self) -> std::io::Result<()> {
        self.queue.clear_notification()
    }

    /// Stops the subscription: no message published after this returns is delivered
    /// to it. Messages already pending stay readable.
    pub fn unsubscribe(mut self) -> Result<(), PubSubError> {
        self.unsubscribed = true;
        self.pubsub.unsubscribe(self.id)
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        if !self.unsubscribed {
            let _ = self.pubsub.unsubscribe(self.id);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use bytes::Bytes;

    use super::*;
    use crate::pubsub::Subject;

    /// A queue of at most `messages` and `bytes` pending that drops the newest.
    fn drop_newest(messages: usize, bytes: usize) -> Arc<SubQueue> {
        let limits = PendingLimits {
            messages,
            bytes,
            policy: SlowConsumerPolicy::DropNewest,
        };
        SubQueue::new(limits).unwrap()
    }

    fn message(payload: usize) -> Message {
        Message::new(Subject::new("q").unwrap(), Bytes::from(vec![0u8; payload]))
    }

    #[test]
    fn counts_share_one_word_and_come_back_to_zero() {
        let queue = drop_newest(3, 1000);
        for size in [10, 20, 30, 40] {
            let offer = queue.offer(message(size));
            assert_eq!(offer == Offer::Queued, size < 40, "{size}: {offer:?}");
        }
        // "q" is one byte of each message's size.
        assert_eq!((queue.pending(), queue.pending_bytes()), (3, 63));
        assert_eq!((queue.dropped(), queue.delivered()), (1, 3));
        let mut out = Vec::new();
        assert_eq!(queue.try_next_batch(2, &mut out).unwrap(), 2);
        assert_eq!((queue.pending(), queue.pending_bytes()), (1, 31));
        assert!(queue.try_next().unwrap().is_some());
        assert_eq!(
            (queue.pending(), queue.pending_bytes(), queue.delivered()),
            (0, 0, 3)
        );
    }

    #[test]
    fn a_message_larger_than_the_byte_bound_is_dropped_without_touching_the_counts() {
        let queue = drop_newest(10, 100);
        assert_eq!(queue.offer(message(1000)), Offer::Dropped);
        assert_eq!(
            (queue.pending(), queue.pending_bytes(), queue.dropped()),
            (0, 0, 1)
        );
        assert_eq!(queue.offer(message(50)), Offer::Queued);
        assert_eq!(queue.pending_bytes(), 51);
    }

    #[test]
    fn limits_past_the_maxima_are_held_to_them() {
        let queue = drop_newest(usize::MAX, usize::MAX);
        assert_eq!(
            queue.bound.limits(),
            (
                crate::pending::PENDING_MESSAGES_MAX,
                crate::pending::PENDING_BYTES_MAX
            )
        );
        assert_eq!(queue.offer(message(8)), Offer::Queued);
        assert_eq!((queue.pending(), queue.pending_bytes()), (1, 9));
    }
}
