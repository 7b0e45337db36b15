//! A member of a consumer group, seen from both sides: the shards that deliver to it
//! (credit, buffer, assignment generations) and the application thread that drains it
//! (`Consumer`).
//!
//! Owns: the member's bounded buffer and its credit (records delivered and not yet
//! acknowledged, across all its partitions, at most `max_ack_pending`), waking the
//! shards that ran out of credit once some is released, and the liveness clock the
//! group's coordinator reads. Never: lets the buffer grow past the credit (a shard
//! reserves credit before it pushes), or hands the application a record of a partition
//! that was taken away from this member since it was pushed.

use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_queue::SegQueue;

use super::error::StreamError;
use super::message::StreamMessage;
use super::shard::ShardStreams;
use super::Streams;
use crate::doorbell::{Doorbell, EventFd};
use crate::runtime::{RuntimeHandle, ShardCtx, SHARDS_MAX};

/// Identifies a member within a `Streams`.
pub type MemberId = u64;

const STARVED_WORDS: usize = SHARDS_MAX.div_ceil(64);

/// Why a member stopped receiving.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CloseReason {
    /// Left, deleted, its stream deleted, or the engine stopped.
    Closed,
    /// Missed its heartbeat: the group gave its partitions to the others.
    Evicted,
}

/// The state a member's shards and its application thread share.
pub(crate) struct Member {
    pub(crate) id: MemberId,
    queue: SegQueue<StreamMessage>,
    /// Records delivered and not yet released (acked, nacked, taken under
    /// `AckPolicy::None`, or revoked). The buffer holds at most this many.
    in_flight: AtomicUsize,
    max_in_flight: usize,
    /// Shards that found no credit and wait to be told when some is released.
    starved: [AtomicU64; STARVED_WORDS],
    /// Per partition: the generation of its assignment to this member, 0 if none.
    generations: Box<[AtomicU64]>,
    /// Per shard: messages that shard pushed here, numbered from 1 (written only by it).
    pushed: Box<[AtomicU64]>,
    /// Per shard: the highest number of that shard's messages the application took.
    /// One shard's pushes are taken in the order pushed, so a message numbered at or
    /// below this has left the buffer.
    taken: Box<[AtomicU64]>,
    /// Milliseconds since the Unix epoch when the application last showed life.
    last_seen_ms: AtomicU64,
    /// Under `AckPolicy::None` a record's credit is released when it is taken.
    release_on_take: bool,
    closed: AtomicBool,
    evicted: AtomicBool,
    bell: Doorbell<EventFd>,
    runtime: RuntimeHandle,
}

impl Member {
    pub(crate) fn new(
        id: MemberId,
        partitions: u32,
        max_in_flight: usize,
        release_on_take: bool,
        runtime: RuntimeHandle,
    ) -> std::io::Result<Arc<Self>> {
        Ok(Arc::new(Self {
            id,
            queue: SegQueue::new(),
            in_flight: AtomicUsize::new(0),
            max_in_flight,
            starved: std::array::from_fn(|_| AtomicU64::new(0)),
            generations: (0..partitions).map(|_| AtomicU64::new(0)).collect(),
            pushed: (0..runtime.shard_count())
                .map(|_| AtomicU64::new(0))
                .collect(),
            taken: (0..runtime.shard_count())
                .map(|_| AtomicU64::new(0))
                .collect(),
            last_seen_ms: AtomicU64::new(now_ms()),
            release_on_take,
            closed: AtomicBool::new(false),
            evicted: AtomicBool::new(false),
            bell: Doorbell::new(EventFd::new()?),
            runtime,
        }))
    }

    /// Shard side: takes one credit if there is one. A shard that gets none marks
    /// itself starved and tries once more (the release that would have woken it may
    /// have come between), so a wake-up is never lost.
    pub(crate) fn reserve(&self, shard: usize) -> bool {
        if self.try_reserve() {
            return true;
        }
        self.starved[shard / 64].fetch_or(1 << (shard % 64), Ordering::SeqCst);
        self.try_reserve()
    }

    fn try_reserve(&self) -> bool {
        self.in_flight
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n < self.max_in_flight).then_some(n + 1)
            })
            .is_ok()
    }

    /// Gives back `n` credits and wakes the shards that ran out.
    pub(crate) fn release(self: &Arc<Self>, n: usize) {
        if n == 0 {
            return;
        }
        let before = self.in_flight.fetch_sub(n, Ordering::SeqCst);
        debug_assert!(before >= n, "credit released twice");
        for (word, bits) in self.starved.iter().enumerate() {
            // A load first: no write (and no cache-line steal from the shards) when no
            // shard starves, the usual case. SeqCst keeps the argument of `reserve`.
            if bits.load(Ordering::SeqCst) == 0 {
                continue;
            }
            let mut bits = bits.swap(0, Ordering::SeqCst);
            while bits != 0 {
                let shard = word * 64 + bits.trailing_zeros() as usize;
                bits &= bits - 1;
                let member = self.clone();
                let resume = move |ctx: &mut ShardCtx| ShardStreams::get(ctx).resume(ctx, &member);
                if let Err(error) = self.runtime.spawn(shard, resume) {
                    // Keep it marked: the next release tries again.
                    self.starved[word].fetch_or(1 << (shard % 64), Ordering::SeqCst);
                    tracing::warn!(%error, shard, "cannot wake a shard waiting for credit yet");
                }
            }
        }
    }

    /// Shard side: queues a message (credit already reserved) from `shard`; returns
    /// its number among that shard's pushes here. Call `notify` after.
    pub(crate) fn push(&self, shard: usize, mut message: StreamMessage) -> u64 {
        let seq = match self.pushed.get(shard) {
            Some(pushed) => pushed.fetch_add(1, Ordering::SeqCst) + 1,
            None => 0,
        };
        message.pushed_by = (shard, seq);
        self.queue.push(message);
        seq
    }

    /// Whether push `seq` of `shard` has been taken by the application.
    pub(crate) fn was_taken(&self, shard: usize, seq: u64) -> bool {
        self.taken
            .get(shard)
            .is_none_or(|t| t.load(Ordering::SeqCst) >= seq)
    }

    /// Shard side: wakes the application if it sleeps.
    pub(crate) fn notify(&self) {
        self.bell.ring();
    }

    pub(crate) fn set_generation(&self, partition: u32, generation: u64) {
        if let Some(slot) = self.generations.get(partition as usize) {
            slot.store(generation, Ordering::SeqCst);
        }
    }

    /// Forgets partition `partition` if its assignment is still `generation`.
    pub(crate) fn revoke(&self, partition: u32, generation: u64) {
        if let Some(slot) = self.generations.get(partition as usize) {
            let _ = slot.compare_exchange(generation, 0, Ordering::SeqCst, Ordering::SeqCst);
        }
    }

    fn is_current(&self, message: &StreamMessage) -> bool {
        self.generations
            .get(message.partition as usize)
            .is_some_and(|g| g.load(Ordering::SeqCst) == message.generation)
    }

    pub(crate) fn close(&self, reason: CloseReason) {
        if reason == CloseReason::Evicted {
            self.evicted.store(true, Ordering::SeqCst);
        }
        self.closed.store(true, Ordering::SeqCst);
        self.notify();
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }

    pub(crate) fn touch(&self) {
        self.last_seen_ms.store(now_ms(), Ordering::Relaxed);
    }

    /// How long since the application last showed life.
    pub(crate) fn silent_for(&self) -> Duration {
        let last = self.last_seen_ms.load(Ordering::Relaxed);
        Duration::from_millis(now_ms().saturating_sub(last))
    }

    /// The next message that is still this member's. Under `AckPolicy::None` each one
    /// taken adds a credit to `release` (the caller releases them together).
    fn take(&self, release: &mut usize) -> Option<StreamMessage> {
        while let Some(message) = self.queue.pop() {
            let (shard, seq) = message.pushed_by;
            if let Some(taken) = self.taken.get(shard) {
                taken.fetch_max(seq, Ordering::SeqCst);
            }
            if self.release_on_take {
                // At most once: the record counted as processed when it was pushed,
                // so it is handed out even if its partition moved since.
                *release += 1;
                return Some(message);
            }
            if self.is_current(&message) {
                return Some(message);
            }
            // Revoked: the revoke released its credit, and the partition's new member
            // receives the record.
        }
        None
    }
}

pub(crate) use crate::runtime::unix_ms as now_ms;

/// How an application answers a delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AckKind {
    Ack,
    Nak(Duration),
}

/// Where acknowledgements of one partition's deliveries go: its owner shard.
#[derive(Debug)]
pub(crate) struct AckRoute {
    pub(crate) runtime: RuntimeHandle,
    pub(crate) owner: usize,
    pub(crate) group: Arc<str>,
}

/// How long an ack waits for room in a full shard queue before it gives up with
/// `Backpressure`.
const ACK_RETRY_MAX: Duration = Duration::from_secs(1);

/// Runs `task` on `shard`, retrying while the shard's external queue is full (an ack
/// must not be dropped just because acks come in faster than one task each).
fn spawn_retrying<F>(runtime: &RuntimeHandle, shard: usize, task: F) -> Result<(), StreamError>
where
    F: FnOnce(&mut ShardCtx) + Clone + Send + 'static,
{
    Ok(runtime.spawn_patiently(shard, ACK_RETRY_MAX, task)?)
}

/// One acknowledgement, as it travels to the partition's owner.
#[derive(Debug, Clone)]
struct AckItem {
    stream: Arc<str>,
    partition: u32,
    offset: u64,
    generation: u64,
}

impl AckItem {
    fn of(message: &StreamMessage) -> Self {
        Self {
            stream: message.stream.clone(),
            partition: message.partition,
            offset: message.offset,
            generation: message.generation,
        }
    }
}

impl AckRoute {
    pub(crate) fn send(&self, message: &StreamMessage, kind: AckKind) -> Result<(), StreamError> {
        let item = AckItem::of(message);
        let group = self.group.clone();
        spawn_retrying(&self.runtime, self.owner, move |ctx: &mut ShardCtx| {
            let streams = ShardStreams::get(ctx);
            let (s, p, o, g) = (&item.stream, item.partition, item.offset, item.generation);
            let _ = streams.ack(ctx, s, p, &group, o, g, kind);
        })
    }

    pub(crate) fn call(&self, message: &StreamMessage) -> Result<(), StreamError> {
        let item = AckItem::of(message);
        let group = self.group.clone();
        self.runtime.call(self.owner, move |ctx: &mut ShardCtx| {
            let streams = ShardStreams::get(ctx);
            let (s, p, o, g) = (&item.stream, item.partition, item.offset, item.generation);
            streams.ack(ctx, s, p, &group, o, g, AckKind::Ack)
        })?
    }
}

/// Acknowledges `messages` with one task per owner shard (far cheaper per message than
/// `StreamMessage::ack`). Messages delivered without ack routes (`AckPolicy::None`)
/// are skipped.
pub(crate) fn ack_all(messages: &[StreamMessage]) -> Result<(), StreamError> {
    let mut by_owner: Vec<(Arc<AckRoute>, Vec<AckItem>)> = Vec::new();
    for message in messages {
        let Some(route) = &message.route else {
            continue;
        };
        let slot = by_owner
            .iter()
            .position(|(r, _)| r.owner == route.owner && r.group == route.group);
        let index = match slot {
            Some(index) => index,
            None => {
                by_owner.push((route.clone(), Vec::new()));
                by_owner.len() - 1
            }
        };
        by_owner[index].1.push(AckItem::of(message));
    }
    for (route, items) in by_owner {
        let group = route.group.clone();
        let items = Arc::new(items);
        spawn_retrying(&route.runtime, route.owner, move |ctx: &mut ShardCtx| {
            let streams = ShardStreams::get(ctx);
            for i in items.iter() {
                let (s, p, o, g) = (&i.stream, i.partition, i.offset, i.generation);
                let _ = streams.ack(ctx, s, p, &group, o, g, AckKind::Ack);
            }
        })?;
    }
    Ok(())
}

/// A member of a consumer group, read by a thread that is not a shard. Dropping it
/// leaves the group (its partitions go to the other members; an ephemeral consumer is
/// deleted).
///
/// Event-loop integration: watch `fd()` for readability; when readable, drain with
/// `try_next()` until `Ok(None)`, then `arm()`; if it returns true, drain again before
/// waiting. `Send`, not `Sync`.
pub struct Consumer {
    pub(crate) member: Arc<Member>,
    pub(crate) streams: Streams,
    pub(crate) stream: Arc<str>,
    pub(crate) group: Arc<str>,
    pub(crate) ephemeral: bool,
    pub(crate) heartbeat_timeout: Duration,
}

impl std::fmt::Debug for Consumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Consumer")
            .field("stream", &self.stream)
            .field("group", &self.group)
            .field("member", &self.member.id)
            .finish()
    }
}

impl Consumer {
    /// The consumer (group) name; ephemeral consumers get a generated one.
    pub fn name(&self) -> &str {
        &self.group
    }

    /// This member's id in its group.
    pub fn member_id(&self) -> MemberId {
        self.member.id
    }

    /// The next message if one is buffered. `Err(Closed)` once the consumer is closed
    /// and drained.
    pub fn try_next(&self) -> Result<Option<StreamMessage>, StreamError> {
        self.member.touch();
        let mut release = 0;
        let next = self.take_one(&mut release);
        self.member.release(release);
        next
    }

    /// `try_next` without the heartbeat and with the credit release left to the caller.
    fn take_one(&self, release: &mut usize) -> Result<Option<StreamMessage>, StreamError> {
        if let Some(message) = self.member.take(release) {
            return Ok(Some(message));
        }
        if self.member.is_closed() {
            // Pushes happen before the close: one more look catches the last.
            return match self.member.take(release) {
                Some(message) => Ok(Some(message)),
                None => Err(StreamError::Closed),
            };
        }
        Ok(None)
    }

    /// Waits up to `timeout` for the next message: `Err(Timeout)` if none came. Waiting
    /// counts as a heartbeat.
    pub fn next(&self, timeout: Duration) -> Result<StreamMessage, StreamError> {
        let timeout = timeout.min(Duration::from_secs(365 * 24 * 3600));
        let deadline = Instant::now() + timeout;
        let slice = self.heartbeat_timeout / 3;
        loop {
            if let Some(message) = self.try_next()? {
                return Ok(message);
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(StreamError::Timeout);
            }
            let wake = deadline.min(now + slice);
            let member = &self.member;
            let ready = || !member.queue.is_empty() || member.is_closed();
            member.bell.sleep(wake, ready).map_err(StreamError::Wait)?;
        }
    }

    /// Up to `max` messages: waits up to `timeout` for the first, then takes what is
    /// buffered. Empty if none came in time.
    pub fn fetch(&self, max: usize, timeout: Duration) -> Result<Vec<StreamMessage>, StreamError> {
        let mut batch = Vec::new();
        if max == 0 {
            return Ok(batch);
        }
        match self.next(timeout) {
            Ok(first) => batch.push(first),
            Err(StreamError::Timeout) => return Ok(batch),
            Err(error) => return Err(error),
        }
        // One heartbeat (`next` did it) and one credit release for the whole batch.
        let mut release = 0;
        while batch.len() < max {
            match self.take_one(&mut release) {
                Ok(Some(message)) => batch.push(message),
                Ok(None) | Err(StreamError::Closed) => break,
                Err(error) => {
                    self.member.release(release);
                    return Err(error);
                }
            }
        }
        self.member.release(release);
        Ok(batch)
    }

    /// An iterator of messages, each waited for up to `timeout`; it ends at the first
    /// timeout or when the consumer closes.
    pub fn iter(&self, timeout: Duration) -> impl Iterator<Item = StreamMessage> + '_ {
        std::iter::from_fn(move || self.next(timeout).ok())
    }

    /// Acknowledges `messages` together: one task per partition owner instead of one
    /// per message.
    pub fn ack_all(&self, messages: &[StreamMessage]) -> Result<(), StreamError> {
        ack_all(messages)
    }

    /// Tells the group this member is alive (taking messages does too).
    pub fn heartbeat(&self) {
        self.member.touch();
    }

    /// Whether the group removed this member for missing its heartbeat.
    pub fn was_evicted(&self) -> bool {
        self.member.evicted.load(Ordering::SeqCst)
    }

    /// Records delivered to this member and not yet acknowledged (buffered ones too).
    pub fn in_flight(&self) -> usize {
        self.member.in_flight.load(Ordering::SeqCst)
    }

    /// The eventfd that becomes readable when messages arrive (after `arm`).
    pub fn fd(&self) -> RawFd {
        self.member.bell.notifier().as_raw_fd()
    }

    /// Announces the caller is about to wait on `fd()`. Returns true if messages (or the
    /// close) are already there: drain again instead of waiting.
    pub fn arm(&self) -> bool {
        self.member.bell.arm();
        let ready = !self.member.queue.is_empty() || self.member.is_closed();
        if ready {
            self.member.bell.disarm();
        }
        ready
    }

    /// Clears the eventfd after it was readable.
    pub fn clear_notification(&self) -> std::io::Result<()> {
        self.member.bell.notifier().read_count().map(drop)
    }
}

impl Drop for Consumer {
    fn drop(&mut self) {
        self.streams
            .leave(&self.stream, &self.group, self.member.id, self.ephemeral);
    }
}
