//! Subjects: fire-and-forget publish/subscribe, queue groups and request-reply (the
//! NATS core model), in process.
//!
//! Owns: the subject model's API for threads that are not shards (`PubSub`,
//! `Subscription`) and for tasks on shards (`ShardPubSub`). Never: persists anything or
//! retries a delivery. **At most once**: a message reaches the subscriptions that
//! matched when it was routed, unless a subscriber's pending buffer is full (then it is
//! dropped and counted) or the subscription goes away meanwhile. For messages that must
//! not be lost, publish to a stream (durable log, acknowledgements, replay).
//!
//! How it works (`docs/architecture.md`, "Subjects"):
//! - Every shard holds a copy of the interest: each subscription's pattern, owner shard
//!   and queue group, in a `routing::Matcher`. A subscribe returns once every shard has
//!   it, so any publish that starts afterwards sees it.
//! - A publish is routed on the shard it is made on: matched there (routes are cached
//!   per subject until interest changes), one member picked per queue group (in turn),
//!   and one delivery per receiving subscription put in the outbox of the owner's shard.
//!   Outboxes leave as one task per shard once the publishing task yields, over the
//!   SPSC rings; payloads travel as `bytes::Bytes` (a reference count, not a copy).
//! - The owner hands each delivery to the subscription's sink: a bounded queue for a
//!   consumer on another thread, or a handler on the shard.
//! - A publish from a thread that is not a shard goes straight into the queues of the
//!   *direct* subscriptions (read by threads, no auto-unsubscribe count, `DropNewest`)
//!   and through the thread's home shard only for the rest (`direct.rs`).
//! - A request publishes with a reply subject `_INBOX.rb.<shard>.<n>`; a publish to such
//!   a subject goes straight to that shard, which completes the request. No match for
//!   the request's subject: `NoResponders` at once.

mod direct;
mod error;
mod message;
mod shard;
mod subscription;
mod waiting;

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use bytes::Bytes;

pub use crate::pending::{PENDING_BYTES_MAX, PENDING_MESSAGES_MAX};
pub use error::PubSubError;
pub use message::{Headers, Message, Subject};
pub use shard::{
    Handler, PubSubStats, ReplyCallback, ShardPubSub, SubId, BATCH_DELIVERIES_MAX, INBOX_PREFIX,
    OUTBOX_MESSAGES_MAX,
};
pub use subscription::{PendingLimits, SlowConsumerPolicy, Subscription};

use crate::routing::{Pattern, Syntax};
use crate::runtime::{CallError, RuntimeHandle, ShardCtx, SubmitError};
pub(crate) use shard::Pressure;
use shard::{Interest, Sink};
pub(crate) use subscription::{Offer, SubQueue};

/// How a subscription is made.
#[derive(Debug, Clone, Default)]
pub struct SubscribeOptions {
    /// Queue group: within a group each message goes to one member.
    pub queue_group: Option<String>,
    /// Auto-unsubscribe after this many messages.
    pub max_messages: Option<u64>,
    /// The pending buffer's bounds and what happens past them.
    pub pending: PendingLimits,
}

/// The subjects model of one runtime, for threads that are not shards. Cheap to clone.
/// `PubSub`s made on one runtime share its state (the shards' `ShardPubSub`, the
/// subscription ids, direct delivery's table).
#[derive(Clone)]
pub struct PubSub {
    runtime: RuntimeHandle,
    shared: Arc<Shared>,
    direct: Arc<direct::Direct>,
}

struct Shared {
    next_id: AtomicU64,
    next_home: AtomicUsize,
}

impl std::fmt::Debug for PubSub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PubSub")
            .field("shards", &self.runtime.shard_count())
            .finish()
    }
}

thread_local! {
    /// The shard this thread publishes through (one per thread keeps its publishes in
    /// order), assigned round-robin on first use.
    static HOME: Cell<Option<usize>> = const { Cell::new(None) };
}

impl PubSub {
    /// The subjects model over `runtime`.
    pub fn new(runtime: RuntimeHandle) -> Self {
        Self {
            direct: shard::direct_state(&runtime),
            // One per runtime: `PubSub`s made on one runtime share the subscription ids
            // (the shards and direct delivery key subscriptions by them).
            shared: runtime.singleton(|| Shared {
                next_id: AtomicU64::new(1),
                next_home: AtomicUsize::new(0),
            }),
            runtime,
        }
    }

    fn home(&self) -> usize {
        let shards = self.runtime.shard_count();
        HOME.with(|home| match home.get() {
            Some(shard) if shard < shards => shard,
            _ => {
                let shard = self.shared.next_home.fetch_add(1, Ordering::Relaxed) % shards;
                home.set(Some(shard));
                shard
            }
        })
    }

    /// Publishes `payload` on `subject`. Returns once the message is queued for its
    /// shard; messages published by one thread are routed in the order published.
    pub fn publish(&self, subject: &str, payload: impl Into<Bytes>) -> Result<(), PubSubError> {
        let subject = Subject::new(Bytes::copy_from_slice(subject.as_bytes()))?;
        self.publish_message(Message::new(subject, payload))
    }

    /// Publishes `message`. Subscriptions read by threads are reached from this
    /// thread directly; the others through this thread's home shard. `Backpressure`:
    /// that shard's queue is full and nothing was delivered (retry).
    pub fn publish_message(&self, message: Message) -> Result<(), PubSubError> {
        self.direct.publish(&self.runtime, self.home(), [message])
    }

    /// Publishes every message of `batch`, in order, with one look at the interest and
    /// at most one task for the home shard (far cheaper per message). `Backpressure`
    /// as `publish_message`, for the whole batch.
    pub fn publish_batch(&self, batch: Vec<Message>) -> Result<(), PubSubError> {
        self.direct.publish(&self.runtime, self.home(), batch)
    }

    /// Subscribes to `pattern` (`*` one token, `>` one or more trailing tokens). Returns
    /// once every shard routes to it.
    pub fn subscribe(
        &self,
        pattern: &str,
        options: SubscribeOptions,
    ) -> Result<Subscription, PubSubError> {
        let pattern = Pattern::parse(pattern, Syntax::Subjects)?;
        let queue = SubQueue::new(options.pending).map_err(PubSubError::Wait)?;
        let id = self.shared.next_id.fetch_add(1, Ordering::Relaxed);
        let owner = self.owner_of(id);
        let sink_queue = queue.clone();
        let max = options.max_messages;
        let group: Option<Arc<str>> = options.queue_group.map(Arc::from);
        let (owned_pattern, owned_group) = (pattern.clone(), group.clone());
        let direct = self.runtime.call(owner, move |ctx: &mut ShardCtx| {
            ShardPubSub::get(ctx).own(
                id,
                Sink::Queue(sink_queue),
                max,
                &owned_pattern,
                owned_group,
            )
        })?;
        let subscription = Subscription {
            id,
            queue,
            pubsub: self.clone(),
            unsubscribed: false,
        };
        let interest = Interest {
            id,
            shard: owner,
            group,
            queue: direct.then(|| subscription.queue.clone()),
            pressure: None,
        };
        // On failure the subscription's drop removes whatever was added.
        self.add_interest_everywhere(&pattern, &interest)?;
        Ok(subscription)
    }

    /// Sends `payload` to `subject` with a fresh reply subject and waits for the first
    /// reply: `NoResponders` at once if no subscription matches, `Timeout` if no reply
    /// comes within `timeout`.
    pub fn request(
        &self,
        subject: &str,
        payload: impl Into<Bytes>,
        timeout: Duration,
    ) -> Result<Message, PubSubError> {
        let (tx, rx) = mpsc::sync_channel(1);
        self.request_with(subject, payload, timeout, move |result| {
            let _ = tx.send(result);
        })?;
        // The shard's timer answers at `timeout`; the margin covers a busy shard.
        match rx.recv_timeout(timeout.saturating_add(Duration::from_secs(5))) {
            Ok(result) => result,
            Err(mpsc::RecvTimeoutError::Timeout) => Err(PubSubError::Timeout),
            Err(mpsc::RecvTimeoutError::Disconnected) => Err(PubSubError::ShuttingDown),
        }
    }

    /// Sends a request without waiting: `done` gets the first reply, `NoResponders` at
    /// once when nothing subscribes to `subject`, or `Timeout` at `timeout`; exactly
    /// once (keep it short), on a shard thread or on the thread that publishes the
    /// reply; `NoResponders` may come on this thread before this returns. If this
    /// returns an error, `done` is never called.
    ///
    /// When every subscription to `subject` is direct (read by a thread; `direct.rs`),
    /// no shard is on the request's path nor on its reply's.
    pub fn request_with<F>(
        &self,
        subject: &str,
        payload: impl Into<Bytes>,
        timeout: Duration,
        done: F,
    ) -> Result<(), PubSubError>
    where
        F: FnOnce(Result<Message, PubSubError>) + Send + 'static,
    {
        let subject = Subject::new(Bytes::copy_from_slice(subject.as_bytes()))?;
        let message = Message::new(subject, payload);
        let home = self.home();
        let done: direct::Done = Box::new(done);
        let Some((message, done)) =
            self.direct
                .request(&self.runtime, home, message, timeout, done)?
        else {
            return Ok(());
        };
        self.runtime.spawn(home, move |ctx: &mut ShardCtx| {
            let done: ReplyCallback = Box::new(move |_, result| done(result));
            ShardPubSub::get(ctx).request(ctx, message, timeout, done);
        })?;
        Ok(())
    }

    /// Each shard's pub/sub counters, in shard order.
    pub fn stats(&self) -> Result<Vec<PubSubStats>, PubSubError> {
        (0..self.runtime.shard_count())
            .map(|shard| {
                self.runtime
                    .call(shard, |ctx: &mut ShardCtx| ShardPubSub::get(ctx).stats())
                    .map_err(PubSubError::from)
            })
            .collect()
    }

    /// The shard that owns subscription `id`.
    fn owner_of(&self, id: SubId) -> usize {
        (id % self.runtime.shard_count() as u64) as usize
    }

    fn add_interest_everywhere(
        &self,
        pattern: &Pattern,
        interest: &Interest,
    ) -> Result<(), PubSubError> {
        for shard in 0..self.runtime.shard_count() {
            let (pattern, interest) = (pattern.clone(), interest.clone());
            self.runtime.call(shard, move |ctx: &mut ShardCtx| {
                ShardPubSub::get(ctx).add_interest(pattern, interest);
            })?;
        }
        Ok(())
    }

    /// Stops subscription `id`: its owner drops what arrives for it from now on (done
    /// when this returns), and tells every shard to forget its interest. A full queue
    /// is retried for up to a second rather than leave the subscription behind; on a
    /// shard thread (a `Subscription` dropped there) the removal is queued instead.
    pub(crate) fn unsubscribe(&self, id: SubId) -> Result<(), PubSubError> {
        let owner = self.owner_of(id);
        let remove = move |ctx: &mut ShardCtx| ShardPubSub::get(ctx).unsubscribe(ctx, id);
        let give_up = Instant::now() + Duration::from_secs(1);
        loop {
            match self.runtime.call(owner, remove) {
                Ok(()) => return Ok(()),
                Err(CallError::Submit(SubmitError::Full { .. })) if Instant::now() < give_up => {
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err(CallError::OnShardThread { .. }) => {
                    return Ok(self.runtime.spawn(owner, remove)?);
                }
                Err(error) => return Err(error.into()),
            }
        }
    }
}

impl ShardPubSub {
    /// Subscribes on this shard: `handler` runs here for each message. `ready` runs
    /// here once every shard routes to the subscription (publishes that start after
    /// it are delivered). Returns the subscription's id, for `unsubscribe`.
    pub fn subscribe<H, R>(
        &self,
        ctx: &mut ShardCtx,
        pattern: &str,
        queue_group: Option<&str>,
        max_messages: Option<u64>,
        handler: H,
        ready: R,
    ) -> Result<SubId, PubSubError>
    where
        H: FnMut(&mut ShardCtx, Message) + 'static,
        R: FnOnce(&mut ShardCtx) + 'static,
    {
        let spec = (pattern, queue_group, max_messages);
        self.subscribe_from(ctx, spec, None, handler, ready)
    }

    /// `subscribe` for a network connection's client: `pressure` is the connection's
    /// backlog flag, which stalls publishers whose messages reach it while it is set
    /// (`Interest::pressure`).
    pub(crate) fn subscribe_from<H, R>(
        &self,
        ctx: &mut ShardCtx,
        (pattern, queue_group, max_messages): (&str, Option<&str>, Option<u64>),
        pressure: Option<Pressure>,
        handler: H,
        ready: R,
    ) -> Result<SubId, PubSubError>
    where
        H: FnMut(&mut ShardCtx, Message) + 'static,
        R: FnOnce(&mut ShardCtx) + 'static,
    {
        let pattern = Pattern::parse(pattern, Syntax::Subjects)?;
        let id = self.local_sub_id(ctx);
        let handler: Rc<RefCell<Handler>> = Rc::new(RefCell::new(handler));
        let group: Option<Arc<str>> = queue_group.map(Arc::from);
        // A handler is never served by direct delivery (`own` returns false).
        self.own(
            id,
            Sink::Handler(handler),
            max_messages,
            &pattern,
            group.clone(),
        );
        let interest = Interest {
            id,
            shard: ctx.shard_id(),
            group,
            queue: None,
            pressure,
        };
        self.add_interest(pattern.clone(), interest.clone());
        let others: Vec<usize> = (0..ctx.shard_count())
            .filter(|&s| s != ctx.shard_id())
            .collect();
        if others.is_empty() {
            ready(ctx);
            return Ok(id);
        }
        self.await_interest(id, others.len(), Box::new(ready));
        for shard in others {
            let (pattern, interest) = (pattern.clone(), interest.clone());
            let add = move |ctx: &mut ShardCtx| {
                ShardPubSub::get(ctx).add_interest(pattern, interest);
            };
            let acked = move |ctx: &mut ShardCtx, _| {
                ShardPubSub::get(ctx).interest_acked(ctx, id);
            };
            if ctx.call(shard, add, acked).is_err() {
                self.unsubscribe(ctx, id);
                return Err(PubSubError::Backpressure);
            }
        }
        Ok(id)
    }

    /// Stops a subscription made on this shard with `subscribe`.
    pub fn unsubscribe(&self, ctx: &mut ShardCtx, id: SubId) {
        self.disown(id);
        shard::broadcast_removal(ctx, id);
    }
}
