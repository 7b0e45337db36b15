//! The per-shard half of the subjects model: each shard's copy of the interest (every
//! subscription's pattern), the subscriptions this shard owns, and the outboxes that
//! carry deliveries to their owners.
//!
//! Owns: routing a publish on the shard it happens on (match locally, pick one member
//! per queue group, offer to direct subscriptions' queues at once and batch the other
//! deliveries per owner shard), delivering batches to owned subscriptions (queue or
//! handler), auto-unsubscribe, and the requests this shard waits on (reply inboxes,
//! timeouts). Never: waits, copies a payload, or grows an
//! outbox past `OUTBOX_MESSAGES_MAX` (a publish past it gets `Backpressure`).
//!
//! A delivery that reaches a shard after its subscription was removed is dropped and
//! counted: the model is at-most-once.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::direct::{self, Direct, Registration, Rest};
use super::error::PubSubError;
use super::message::{Message, Subject};
use super::subscription::{Offer, SubQueue};
use super::waiting::Waiting;
use crate::hash::FastMap;
use crate::routing::{Matcher, Pattern};
use crate::runtime::{RuntimeHandle, SendError, ShardCtx};

/// Identifies a subscription within a `PubSub`.
pub type SubId = u64;

/// Reply subjects of requests made through the engine start with this; the next token
/// is the requesting shard, the last the request's number there. A publish to one is
/// routed straight to that shard (no interest needed), and matched as usual too.
pub const INBOX_PREFIX: &str = "_INBOX.rb.";

/// The most deliveries a shard keeps waiting in its outboxes before publishes on it get
/// `Backpressure`.
pub const OUTBOX_MESSAGES_MAX: usize = 1 << 20;

/// Deliveries one outbox collects before the publish that fills it flushes them all
/// at once, instead of when the current task yields (unless the publish comes from a
/// handler being delivered to: `State::delivering`). A task that publishes a great
/// many (a connection's input that waited out a stall: up to a megabyte of `PUB`s)
/// would otherwise build batches of 100k+ deliveries, tens of megabytes grown by
/// reallocation (their page faults were 12% of the server's CPU under `nats bench`
/// fan-out), and deliver nothing until it ends.
pub const BATCH_DELIVERIES_MAX: usize = 4096;

/// Routes cached per shard; the cache is cleared when full or when interest changes.
const ROUTE_CACHE_MAX: usize = 4096;

/// How long to wait before retrying a batch a full ring refused.
const RETRY_DELAY: Duration = Duration::from_micros(50);

/// What the matcher stores for a subscription, on every shard.
#[derive(Clone)]
pub(crate) struct Interest {
    pub(crate) id: SubId,
    /// The shard that owns the subscription.
    pub(crate) shard: usize,
    pub(crate) group: Option<Arc<str>>,
    /// The subscription's queue, when direct delivery serves it (`direct.rs`): a shard
    /// routing a message offers it there itself, with no hop to the owner; and a
    /// publish from a thread has reached it already when its shard routes the rest.
    pub(crate) queue: Option<Arc<SubQueue>>,
    /// The receiving connection's backlog flag, for a network client's subscription
    /// (`subscribe_from`): set while that connection has more than half its output
    /// bound unsent; a publishing connection whose messages reach it then stops being
    /// read until the flag clears (`take_pressed`, `ShardServer::stall`), as
    /// nats-server stalls a fast producer.
    pub(crate) pressure: Option<Pressure>,
}

/// A connection's "backlog over half its bound" flag, written by its shard and read by
/// every shard that routes to it.
pub(crate) type Pressure = Arc<AtomicBool>;

impl PartialEq for Interest {
    fn eq(&self, other: &Self) -> bool {
        // A subscription has one queue: the other fields identify it.
        (self.id, self.shard, &self.group) == (other.id, other.shard, &other.group)
    }
}

impl std::fmt::Debug for Interest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Interest")
            .field("id", &self.id)
            .field("shard", &self.shard)
            .field("group", &self.group)
            .field("direct", &self.queue.is_some())
            .finish()
    }
}

/// A receiving subscription, as a route holds it.
struct Member {
    id: SubId,
    /// Its owner, which delivers to it unless `queue` is there.
    shard: usize,
    /// Its queue, if direct delivery serves it: offered to from the routing shard.
    queue: Option<Arc<SubQueue>>,
    /// Its connection's backlog flag (`Interest::pressure`).
    pressure: Option<Pressure>,
}

/// Where a subject's messages go, computed once per subject and interest version.
#[derive(Default)]
struct Route {
    /// Plain subscriptions: each gets every message.
    plain: Vec<Member>,
    /// Queue groups: each message goes to one member, in turn.
    groups: Vec<Group>,
}

struct Group {
    name: Arc<str>,
    members: Vec<Member>,
    next: Cell<usize>,
}

/// Who a delivery is for.
#[derive(Debug, Clone, Copy)]
enum Target {
    /// A subscription owned by the receiving shard.
    Sub(SubId),
    /// A request the receiving shard waits on.
    Reply(u64),
}

type Delivery = (Target, Message);

/// What runs for each message of an on-shard subscription.
pub type Handler = dyn FnMut(&mut ShardCtx, Message);

/// What runs when a request is answered, times out, or has no responders.
pub type ReplyCallback = Box<dyn FnOnce(&mut ShardCtx, Result<Message, PubSubError>)>;

/// Where an owned subscription's messages go.
pub(crate) enum Sink {
    /// A consumer on another thread (`Subscription`).
    Queue(Arc<SubQueue>),
    /// A handler on this shard (a connection, a responder), called outside any borrow.
    Handler(Rc<RefCell<Handler>>),
}

struct LocalSub {
    sink: Sink,
    /// Auto-unsubscribe after this many messages.
    max: Option<u64>,
    received: u64,
    /// How direct delivery knows it, to undo when it goes.
    registration: Registration,
}

/// Counters of one shard's pub/sub traffic.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PubSubStats {
    /// Messages published on this shard.
    pub published: u64,
    /// Deliveries routed from this shard (one per receiving subscription).
    pub routed: u64,
    /// Messages published on this shard that matched no subscription.
    pub no_interest: u64,
    /// Deliveries that arrived for a subscription already gone (at-most-once).
    pub unknown_target: u64,
    /// Deliveries dropped by full subscription buffers on this shard.
    pub dropped_slow: u64,
    /// Messages refused because this shard's outbox was full (`Backpressure`); a
    /// fire-and-forget publish (one message or a batch) drops them here.
    pub dropped_outbox: u64,
}

struct State {
    shard: usize,
    shards: usize,
    direct: Arc<Direct>,
    interest: Matcher<Interest>,
    /// Pattern of every subscription in `interest`, to remove it.
    patterns: FastMap<SubId, (Pattern, Interest)>,
    routes: FastMap<Box<str>, Rc<Route>>,
    subs: FastMap<SubId, LocalSub>,
    /// Deliveries per target shard, sent when the flush task runs.
    outbox: Vec<Vec<Delivery>>,
    outboxed: usize,
    /// Direct subscriptions' queues offered to since the last flush, which wakes their
    /// consumers once.
    touched: Vec<Arc<SubQueue>>,
    /// Replies routed here to requests made by threads, run once the state is free.
    thread_replies: Vec<(direct::Done, Message)>,
    flush_scheduled: bool,
    /// Batches per target shard that its ring could not take yet, oldest first.
    waiting: Vec<VecDeque<Vec<Delivery>>>,
    /// The timer that sends `waiting` is armed.
    retry_armed: bool,
    /// Requests made on this shard that wait for their reply.
    requests: Waiting<ReplyCallback>,
    /// Subscriptions made here waiting for other shards to add their interest: how
    /// many have not answered yet, and what runs when all have.
    awaiting: FastMap<SubId, (usize, ReadyCallback)>,
    next_local_sub: u64,
    stats: PubSubStats,
    /// Emptied delivery batches, their capacity kept, for the next outboxes: growing a
    /// batch of thousands of deliveries from empty each time cost reallocations and
    /// page faults (`perf`, NATS pub/sub). Batches come back here from whichever
    /// shard delivered them.
    spare_batches: Vec<Vec<Delivery>>,
    /// `deliver_batch`'s list of handler calls, its capacity kept.
    spare_handlers: Vec<(Rc<RefCell<Handler>>, Message)>,
    /// The backlog flag of the first member reached while its connection was
    /// backlogged, since the last `take_pressed`.
    pressed: Option<Pressure>,
    /// `deliver_batch` calls running on this shard's stack: while any runs, a full
    /// outbox waits for the scheduled flush instead of flushing inline, so a handler
    /// that publishes is never re-entered, and a reply published by a handler never
    /// reaches a request before `request` has recorded it.
    delivering: u32,
}

/// Counts one `deliver_batch` on the stack (`State::delivering`) until dropped, a
/// panicking handler included.
struct Delivering<'a>(&'a ShardPubSub);

impl<'a> Delivering<'a> {
    fn enter(pubsub: &'a ShardPubSub) -> Self {
        pubsub.state.borrow_mut().delivering += 1;
        Self(pubsub)
    }
}

impl Drop for Delivering<'_> {
    fn drop(&mut self) {
        self.0.state.borrow_mut().delivering -= 1;
    }
}

/// The most emptied batches a shard keeps.
const SPARE_BATCHES_MAX: usize = 8;
/// The largest capacity (in deliveries) of a vector kept for reuse: a burst must not
/// pin its peak memory.
const SPARE_CAPACITY_MAX: usize = 16 * 1024;

/// What runs when a subscription made on a shard is routed by every shard.
pub(crate) type ReadyCallback = Box<dyn FnOnce(&mut ShardCtx)>;

impl Drop for State {
    fn drop(&mut self) {
        // The shard is stopping: consumers and requesters on other threads must not
        // wait forever.
        for sub in self.subs.values() {
            if let Sink::Queue(queue) = &sub.sink {
                queue.close();
            }
        }
        self.direct.fail_all();
    }
}

/// The shard's pub/sub state. Cheap to clone; not `Send`: use it on its shard only.
#[derive(Clone)]
pub struct ShardPubSub {
    state: Rc<RefCell<State>>,
}

impl ShardPubSub {
    /// This shard's pub/sub state (created on first use).
    pub fn get(ctx: &mut ShardCtx) -> Self {
        if let Some(this) = ctx.existing_handle::<Self>() {
            return this;
        }
        let (shard, shards) = (ctx.shard_id(), ctx.shard_count());
        let direct = direct_state(&ctx.runtime());
        ctx.local_handle(|| Self::new(shard, shards, direct))
    }

    fn new(shard: usize, shards: usize, direct: Arc<Direct>) -> Self {
        let state = State {
            shard,
            shards,
            direct,
            interest: Matcher::new(),
            patterns: FastMap::default(),
            routes: FastMap::default(),
            subs: FastMap::default(),
            outbox: (0..shards).map(|_| Vec::new()).collect(),
            outboxed: 0,
            touched: Vec::new(),
            thread_replies: Vec::new(),
            flush_scheduled: false,
            waiting: (0..shards).map(|_| VecDeque::new()).collect(),
            retry_armed: false,
            requests: Waiting::default(),
            awaiting: FastMap::default(),
            next_local_sub: 0,
            stats: PubSubStats::default(),
            spare_batches: Vec::new(),
            spare_handlers: Vec::new(),
            pressed: None,
            delivering: 0,
        };
        Self {
            state: Rc::new(RefCell::new(state)),
        }
    }

    /// Routes `message` to every matching subscription (one member per queue group).
    /// Returns how many subscriptions it was routed to (0: no interest, dropped).
    /// Deliveries leave when the current task yields (one batch per owner shard), or
    /// at once when an outbox reaches `BATCH_DELIVERIES_MAX`.
    pub fn publish(&self, ctx: &mut ShardCtx, message: Message) -> Result<usize, PubSubError> {
        let schedule = {
            let mut st = self.state.borrow_mut();
            if st.outboxed >= OUTBOX_MESSAGES_MAX {
                st.stats.dropped_outbox += 1;
                return Err(PubSubError::Backpressure);
            }
            let routed = st.route(message, None);
            st.stats.published += 1;
            st.stats.routed += routed as u64;
            let replies = std::mem::take(&mut st.thread_replies);
            if routed == 0 {
                st.stats.no_interest += 1;
            }
            let full =
                st.delivering == 0 && st.outbox.iter().any(|b| b.len() >= BATCH_DELIVERIES_MAX);
            let pending = st.outboxed > 0 || !st.touched.is_empty();
            let schedule = pending && !st.flush_scheduled && !full;
            st.flush_scheduled |= schedule;
            (schedule, full, routed, replies)
        };
        let (schedule, full, routed, replies) = schedule;
        if full {
            self.flush(ctx);
        } else if schedule {
            self.schedule_flush(ctx);
        }
        for (done, reply) in replies {
            done(Ok(reply));
        }
        Ok(routed)
    }

    /// Routes what direct delivery left of messages published by a thread that is not a
    /// shard (`direct.rs`): every target but the direct subscriptions and the queue
    /// groups it served. Counted as routed here; published where direct delivery
    /// counts. A message past the outbox bound is dropped and counted.
    pub(crate) fn publish_rest(&self, ctx: &mut ShardCtx, rests: Vec<Rest>) {
        let schedule = {
            let mut st = self.state.borrow_mut();
            let mut refused = 0usize;
            for rest in rests {
                if st.outboxed >= OUTBOX_MESSAGES_MAX {
                    st.stats.dropped_outbox += 1;
                    refused += 1;
                    continue;
                }
                let routed = st.route(rest.message, Some(&rest.served));
                st.stats.routed += routed as u64;
                if routed == 0 && !rest.matched {
                    st.stats.no_interest += 1;
                }
            }
            if refused > 0 {
                tracing::warn!(refused, "pub/sub outbox full: published messages dropped");
            }
            let pending = st.outboxed > 0 || !st.touched.is_empty();
            let schedule = pending && !st.flush_scheduled;
            st.flush_scheduled |= schedule;
            schedule
        };
        if schedule {
            self.schedule_flush(ctx);
        }
    }

    /// Publishes `payload` to `subject` and calls `done` with the first reply, or
    /// `NoResponders` at once when no subscription matches, or `Timeout`.
    pub fn request(
        &self,
        ctx: &mut ShardCtx,
        mut message: Message,
        timeout: Duration,
        done: ReplyCallback,
    ) {
        let seq = self.state.borrow_mut().requests.next_seq();
        let inbox = format!("{INBOX_PREFIX}{}.{seq}", ctx.shard_id());
        match Subject::new(Bytes::from(inbox)) {
            Ok(inbox) => message.reply = Some(inbox),
            Err(error) => return done(ctx, Err(error.into())),
        }
        match self.publish(ctx, message) {
            Ok(0) => return done(ctx, Err(PubSubError::NoResponders)),
            Ok(_) => {}
            Err(error) => return done(ctx, Err(error)),
        }
        let arm = self.state.borrow_mut().requests.insert(seq, timeout, done);
        if let Some(deadline) = arm {
            self.arm_expiry(ctx, deadline);
        }
    }

    /// Expiry timers end requests (`waiting.rs`): one armed for the earliest deadline
    /// fails every request past its deadline with `Timeout`, then arms for the next.
    fn arm_expiry(&self, ctx: &mut ShardCtx, deadline: Instant) {
        let delay = deadline.saturating_duration_since(Instant::now());
        let fire = move |ctx: &mut ShardCtx| ShardPubSub::get(ctx).expire(ctx, deadline);
        if ctx.after(delay, fire).is_err() {
            // No timer (shutting down, or the shard's timer table is full): fail what
            // waits rather than leave it waiting forever.
            let waiting = self.state.borrow_mut().requests.drain();
            for done in waiting {
                done(ctx, Err(PubSubError::ShuttingDown));
            }
        }
    }

    /// Runs when the timer armed for `armed_at` fires.
    fn expire(&self, ctx: &mut ShardCtx, armed_at: Instant) {
        let (expired, next) = self.state.borrow_mut().requests.expire(armed_at);
        if let Some(next) = next {
            self.arm_expiry(ctx, next);
        }
        for done in expired {
            done(ctx, Err(PubSubError::Timeout));
        }
    }

    /// Makes this shard the owner of subscription `id` (messages for it are delivered
    /// to `sink`) and registers it with direct delivery. Call before the interest is
    /// added anywhere. Returns whether direct delivery serves it (a queue with no
    /// auto-unsubscribe count, dropping the newest when full): `Interest::direct`.
    pub(crate) fn own(
        &self,
        id: SubId,
        sink: Sink,
        max: Option<u64>,
        pattern: &Pattern,
        group: Option<Arc<str>>,
    ) -> bool {
        let max = max.filter(|&m| m > 0);
        let queue = match &sink {
            Sink::Queue(queue) if max.is_none() && queue.drops_newest() => Some(queue.clone()),
            _ => None,
        };
        let mut st = self.state.borrow_mut();
        let registration = st.direct.add(id, pattern, group, queue);
        let direct = registration.direct;
        let sub = LocalSub {
            sink,
            max,
            received: 0,
            registration,
        };
        st.subs.insert(id, sub);
        direct
    }

    /// Stops owning subscription `id`: later deliveries to it are dropped; a queue
    /// consumer sees `Closed` once it has read what is pending. Returns whether it
    /// was owned here.
    pub(crate) fn disown(&self, id: SubId) -> bool {
        let sub = {
            let mut st = self.state.borrow_mut();
            st.awaiting.remove(&id);
            st.forget(id)
        };
        if let Some(LocalSub {
            sink: Sink::Queue(queue),
            ..
        }) = &sub
        {
            queue.close();
        }
        sub.is_some()
    }

    /// Adds a subscription's pattern to this shard's copy of the interest.
    pub(crate) fn add_interest(&self, pattern: Pattern, interest: Interest) {
        let mut st = self.state.borrow_mut();
        st.interest.insert(&pattern, interest.clone());
        st.patterns.insert(interest.id, (pattern, interest));
        st.routes.clear();
    }

    /// Removes a subscription's pattern from this shard's copy of the interest.
    pub(crate) fn remove_interest(&self, id: SubId) {
        let mut st = self.state.borrow_mut();
        if let Some((pattern, interest)) = st.patterns.remove(&id) {
            st.interest.remove(&pattern, &interest);
            st.routes.clear();
        }
    }

    /// Ids of subscriptions made on shards: the high bit set, then the shard, then a
    /// per-shard count (ids from `PubSub` count from 1 without the high bit).
    pub(crate) fn local_sub_id(&self, ctx: &ShardCtx) -> SubId {
        let mut st = self.state.borrow_mut();
        st.next_local_sub += 1;
        (1 << 63) | ((ctx.shard_id() as u64) << 48) | (st.next_local_sub & ((1 << 48) - 1))
    }

    /// Runs `ready` once `shards` other shards have acknowledged subscription `id`.
    pub(crate) fn await_interest(&self, id: SubId, shards: usize, ready: ReadyCallback) {
        self.state.borrow_mut().awaiting.insert(id, (shards, ready));
    }

    /// One more shard routes to subscription `id`.
    pub(crate) fn interest_acked(&self, ctx: &mut ShardCtx, id: SubId) {
        let ready = {
            let mut st = self.state.borrow_mut();
            let Some((left, _)) = st.awaiting.get_mut(&id) else {
                return;
            };
            *left -= 1;
            if *left > 0 {
                return;
            }
            st.awaiting.remove(&id).map(|(_, ready)| ready)
        };
        if let Some(ready) = ready {
            ready(ctx);
        }
    }

    /// The backlog flag of a subscription's connection that a message routed here
    /// since the last call reached while the flag was set (`Interest::pressure`);
    /// clears the answer. A network connection's input loop asks before its commands
    /// and after each.
    pub(crate) fn take_pressed(&self) -> Option<Pressure> {
        self.state.borrow_mut().pressed.take()
    }

    /// Puts back what a `take_pressed` took for an input loop further up the stack,
    /// unless something was reached since.
    pub(crate) fn restore_pressed(&self, pressed: Option<Pressure>) {
        let mut st = self.state.borrow_mut();
        if st.pressed.is_none() {
            st.pressed = pressed;
        }
    }

    /// Subscriptions in this shard's copy of the interest.
    pub fn interest_len(&self) -> usize {
        self.state.borrow().interest.len()
    }

    /// This shard's counters, with what direct delivery did for publishes homed here.
    pub fn stats(&self) -> PubSubStats {
        let st = self.state.borrow();
        let mut stats = st.stats;
        st.direct.add_stats(st.shard, &mut stats);
        stats
    }

    fn schedule_flush(&self, ctx: &mut ShardCtx) {
        let shard = ctx.shard_id();
        // A task to ourselves runs after the tasks already queued: every publish they
        // make joins the same batches.
        if let Err(SendError::Full(_) | SendError::NoSuchShard { .. }) =
            ctx.send(shard, |ctx| ShardPubSub::get(ctx).flush(ctx))
        {
            let this = self.clone();
            if ctx
                .after(Duration::ZERO, move |ctx| this.flush(ctx))
                .is_err()
            {
                // The next publish tries again; what is outboxed leaves with it.
                self.state.borrow_mut().flush_scheduled = false;
                tracing::error!("pub/sub cannot schedule its flush; deliveries wait");
            }
        }
    }

    /// Wakes the consumers of the direct queues offered to, sends every outbox to its
    /// shard, and delivers this shard's own at once.
    fn flush(&self, ctx: &mut ShardCtx) {
        let own = ctx.shard_id();
        let (local, touched) = {
            let mut st = self.state.borrow_mut();
            st.flush_scheduled = false;
            let st = &mut *st;
            for (target, batch) in st.outbox.iter_mut().enumerate() {
                if target != own && !batch.is_empty() {
                    let spare = st.spare_batches.pop().unwrap_or_default();
                    st.waiting[target].push_back(std::mem::replace(batch, spare));
                }
            }
            let local = if st.outbox[own].is_empty() {
                Vec::new()
            } else {
                let spare = st.spare_batches.pop().unwrap_or_default();
                std::mem::replace(&mut st.outbox[own], spare)
            };
            st.outboxed -= local.len();
            (local, std::mem::take(&mut st.touched))
        };
        for queue in touched {
            queue.notify();
        }
        self.send_waiting(ctx);
        if !local.is_empty() {
            deliver_batch(self, ctx, local);
        }
    }

    /// Sends the batches waiting for each shard, oldest first, while its ring takes
    /// them; if some must wait, retries after `RETRY_DELAY`. A later batch never
    /// overtakes an earlier one to the same shard, and waiting batches stay counted
    /// against the outbox bound (so publishers feel the backpressure).
    fn send_waiting(&self, ctx: &mut ShardCtx) {
        let retry = {
            let mut st = self.state.borrow_mut();
            for target in 0..st.shards {
                while !st.waiting[target].is_empty() && ctx.can_send(target) {
                    let Some(batch) = st.waiting[target].pop_front() else {
                        break;
                    };
                    st.outboxed -= batch.len();
                    if ctx.send(target, move |ctx| deliver(ctx, batch)).is_err() {
                        tracing::error!(target, "pub/sub batch refused after can_send");
                    }
                }
            }
            let waiting = st.waiting.iter().any(|q| !q.is_empty());
            let retry = waiting && !st.retry_armed;
            st.retry_armed |= retry;
            retry
        };
        if retry {
            let this = self.clone();
            let armed = ctx.after(RETRY_DELAY, move |ctx| {
                this.state.borrow_mut().retry_armed = false;
                this.send_waiting(ctx);
            });
            if armed.is_err() {
                // The next flush tries again.
                self.state.borrow_mut().retry_armed = false;
                tracing::error!("pub/sub cannot arm its retry timer; batches wait");
            }
        }
    }
}

impl State {
    /// Keeps an emptied batch and handler list for reuse, if there is room and they
    /// are not too large.
    fn keep_spares(
        &mut self,
        batch: Vec<Delivery>,
        handlers: Vec<(Rc<RefCell<Handler>>, Message)>,
    ) {
        debug_assert!(batch.is_empty() && handlers.is_empty());
        let fits = |capacity: usize| capacity > 0 && capacity <= SPARE_CAPACITY_MAX;
        if fits(batch.capacity()) && self.spare_batches.len() < SPARE_BATCHES_MAX {
            self.spare_batches.push(batch);
        }
        if fits(handlers.capacity()) && self.spare_handlers.capacity() == 0 {
            self.spare_handlers = handlers;
        }
    }

    /// Stops owning subscription `id` and unregisters it from direct delivery.
    fn forget(&mut self, id: SubId) -> Option<LocalSub> {
        let sub = self.subs.remove(&id)?;
        self.direct.remove(&sub.registration);
        Some(sub)
    }

    /// Puts one delivery per receiving subscription into the outboxes; returns how many.
    /// `served`: the message comes from direct delivery, which reached the direct
    /// subscriptions and these queue groups already.
    fn route(&mut self, message: Message, served: Option<&[Arc<str>]>) -> usize {
        let subject = message.subject.as_str();
        let mut routed = 0;
        // A reply to a thread's request: completed here unless the thread that
        // published it did (`served`), then matched as usual.
        if served.is_none() {
            if let Some(done) = self.direct.take_request(subject) {
                self.thread_replies.push((done, message.clone()));
                routed += 1;
            }
        }
        if let Some((shard, seq)) = parse_inbox(subject, self.shards) {
            self.outbox[shard].push((Target::Reply(seq), message.clone()));
            self.outboxed += 1;
            routed += 1;
        }
        if subject.starts_with(INBOX_PREFIX) {
            // Inbox subjects are unique: matched without the cache.
            let extra: Vec<Interest> = self.interest.matches_uncached(subject);
            let route = build_route(extra);
            return routed + self.enqueue(&route, &message, served);
        }
        let route = match self.routes.get(subject) {
            Some(route) => route.clone(),
            None => {
                let route = Rc::new(build_route(self.interest.matches_uncached(subject)));
                if self.routes.len() >= ROUTE_CACHE_MAX {
                    self.routes.clear();
                }
                self.routes.insert(subject.into(), route.clone());
                route
            }
        };
        routed + self.enqueue(&route, &message, served)
    }

    fn enqueue(&mut self, route: &Route, message: &Message, served: Option<&[Arc<str>]>) -> usize {
        let mut routed = 0;
        for member in &route.plain {
            if member.queue.is_some() && served.is_some() {
                continue;
            }
            self.deliver_to(member, message);
            routed += 1;
        }
        for group in &route.groups {
            if served.is_some_and(|served| served.contains(&group.name)) {
                continue;
            }
            let turn = group.next.get();
            group.next.set(turn.wrapping_add(1));
            self.deliver_to(&group.members[turn % group.members.len()], message);
            routed += 1;
        }
        routed
    }

    /// Offers `message` to a direct subscription's queue here, or puts it in the
    /// outbox of the subscription's owner.
    fn deliver_to(&mut self, member: &Member, message: &Message) {
        if let Some(pressure) = &member.pressure {
            if self.pressed.is_none() && pressure.load(Ordering::Relaxed) {
                self.pressed = Some(pressure.clone());
            }
        }
        let Some(queue) = &member.queue else {
            self.outbox[member.shard].push((Target::Sub(member.id), message.clone()));
            self.outboxed += 1;
            return;
        };
        match queue.offer(message.clone()) {
            Offer::Queued => {
                if !self.touched.iter().any(|q| Arc::ptr_eq(q, queue)) {
                    self.touched.push(queue.clone());
                }
            }
            // Direct subscriptions drop the newest: `Overflow` cannot happen.
            Offer::Dropped | Offer::Overflow => self.stats.dropped_slow += 1,
            Offer::Closed => self.stats.unknown_target += 1,
        }
    }
}

fn build_route(matched: Vec<Interest>) -> Route {
    let mut route = Route::default();
    for interest in matched {
        let member = Member {
            id: interest.id,
            shard: interest.shard,
            queue: interest.queue,
            pressure: interest.pressure,
        };
        match interest.group {
            None => route.plain.push(member),
            Some(name) => match route.groups.iter().position(|g| g.name == name) {
                Some(i) => route.groups[i].members.push(member),
                None => {
                    route.groups.push(Group {
                        name,
                        members: vec![member],
                        next: Cell::new(0),
                    });
                }
            },
        }
    }
    route
}

/// `_INBOX.rb.<shard>.<seq>` → (shard, seq), if `subject` is one of ours.
pub(crate) fn parse_inbox(subject: &str, shards: usize) -> Option<(usize, u64)> {
    let rest = subject.strip_prefix(INBOX_PREFIX)?;
    let (shard, seq) = rest.split_once('.')?;
    let shard: usize = shard.parse().ok()?;
    let seq: u64 = seq.parse().ok()?;
    (shard < shards).then_some((shard, seq))
}

/// Runs on the receiving shard: hands a batch to its subscriptions and requests.
fn deliver(ctx: &mut ShardCtx, batch: Vec<Delivery>) {
    let pubsub = ShardPubSub::get(ctx);
    deliver_batch(&pubsub, ctx, batch);
}

fn deliver_batch(pubsub: &ShardPubSub, ctx: &mut ShardCtx, mut batch: Vec<Delivery>) {
    let _delivering = Delivering::enter(pubsub);
    let mut handlers = std::mem::take(&mut pubsub.state.borrow_mut().spare_handlers);
    let mut replies: Vec<(ReplyCallback, Message)> = Vec::new();
    let mut touched: Vec<Arc<SubQueue>> = Vec::new();
    let mut finished: Vec<SubId> = Vec::new();
    {
        let mut st = pubsub.state.borrow_mut();
        for (target, message) in batch.drain(..) {
            let id = match target {
                Target::Reply(seq) => {
                    if let Some(done) = st.requests.take(seq) {
                        replies.push((done, message));
                    }
                    continue;
                }
                Target::Sub(id) => id,
            };
            let Some(sub) = st.subs.get_mut(&id) else {
                st.stats.unknown_target += 1;
                continue;
            };
            let mut done = false;
            match &sub.sink {
                Sink::Queue(queue) => match queue.offer(message) {
                    Offer::Queued => {
                        sub.received += 1;
                        if !touched.last().is_some_and(|q| Arc::ptr_eq(q, queue)) {
                            touched.push(queue.clone());
                        }
                    }
                    Offer::Dropped => st.stats.dropped_slow += 1,
                    Offer::Overflow => {
                        st.stats.dropped_slow += 1;
                        done = true;
                    }
                    Offer::Closed => st.stats.unknown_target += 1,
                },
                Sink::Handler(handler) => {
                    sub.received += 1;
                    handlers.push((handler.clone(), message));
                }
            }
            if let Some(sub) = st.subs.get(&id) {
                done |= sub.max.is_some_and(|max| sub.received >= max);
            }
            if done {
                if let Some(LocalSub {
                    sink: Sink::Queue(queue),
                    ..
                }) = st.forget(id)
                {
                    queue.close();
                }
                finished.push(id);
            }
        }
    }
    for queue in touched {
        queue.notify();
    }
    for (handler, message) in handlers.drain(..) {
        (handler.borrow_mut())(ctx, message);
    }
    pubsub.state.borrow_mut().keep_spares(batch, handlers);
    for (done, message) in replies {
        done(ctx, Ok(message));
    }
    for id in finished {
        broadcast_removal(ctx, id);
    }
}

/// Removes subscription `id`'s interest on every shard (this one at once).
pub(crate) fn broadcast_removal(ctx: &mut ShardCtx, id: SubId) {
    ShardPubSub::get(ctx).remove_interest(id);
    let own = ctx.shard_id();
    for shard in (0..ctx.shard_count()).filter(|&s| s != own) {
        let task = move |ctx: &mut ShardCtx| ShardPubSub::get(ctx).remove_interest(id);
        if let Err(SendError::Full(task)) = ctx.send(shard, task) {
            // The interest stays a little longer; deliveries to it are dropped on
            // arrival (the owner no longer has the subscription).
            let retry = move |ctx: &mut ShardCtx| {
                if ctx.send(shard, task).is_err() {
                    tracing::warn!(shard, id, "could not remove stale interest");
                }
            };
            if ctx.after(RETRY_DELAY, retry).is_err() {
                tracing::warn!(shard, id, "could not remove stale interest");
            }
        }
    }
}

/// The runtime's direct-delivery state, shared by its shards and its `PubSub`s.
pub(crate) fn direct_state(runtime: &RuntimeHandle) -> Arc<Direct> {
    let shards = runtime.shard_count();
    runtime.singleton(|| Direct::new(shards))
}
