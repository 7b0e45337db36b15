//! The per-shard half of the exchanges-and-queues model: every shard's copy of the
//! routing table (exchanges, bindings, queue names), and the queues this shard owns,
//! with their logs.
//!
//! Owns: routing a publish where it is made and sending each owner one task with the
//! copies for its queues; enqueueing (after the log stored a persistent message of a
//! durable queue, so a confirm means stored); dispatching to consumers; acks (written
//! to the log as ack records, batched per turn, so a restart knows what is done);
//! dead-lettering with death records; expiry timers; recovering a durable queue from
//! its log; removing fully acknowledged segments. Never: waits, or delivers a
//! persistent message before it is stored.

use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;

use super::config::{ExchangeConfig, QueueConfig};
use super::consumer::Answer;
use super::error::QueueError;
use super::message::{decode_props, encode_props, Death, DeathReason, Properties};
use super::state::{ConsumerSlot, Enqueued, Msg, QueueState};
use crate::routing::{Binding, RoutingTable};
use crate::runtime::ShardCtx;
use crate::storage::codec::{decode_batch, peek_header, Record};
use crate::storage::{AppendOutcome, Durability, FsDir, LogConfig, ShardLog, StorageError};

/// Header of a message record in a queue log: exchange, routing key and properties.
const PROPS_HEADER: &[u8] = b"Rb-Q-Props";
/// Header of an ack record: its value is the acknowledged offsets (u64 LE each).
const ACKS_HEADER: &[u8] = b"Rb-Q-Acks";
/// How long a dead letter waits before its append is tried again after backpressure.
const RESUBMIT_DELAY: Duration = Duration::from_millis(1);
/// How often each shard removes fully acknowledged segments.
const MAINTENANCE_INTERVAL: Duration = Duration::from_secs(1);

/// What a publish reports: the queues it reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Confirm {
    /// Queues the message was stored in (0: unroutable, not `mandatory`).
    pub queues: usize,
}

/// Answers the items of one publish call, in order.
pub(crate) type PublishReply = Box<dyn FnOnce(Vec<Result<Confirm, QueueError>>) + Send>;

/// One message for one queue, as it travels to the queue's owner.
pub(crate) struct Copy {
    pub(crate) item: usize,
    pub(crate) queue: Arc<str>,
    pub(crate) exchange: Arc<str>,
    pub(crate) routing_key: Arc<str>,
    pub(crate) props: Arc<Properties>,
    pub(crate) payload: Bytes,
    /// A dead letter: waits out log backpressure instead of being refused.
    pub(crate) patient: bool,
}

type CopiesReply = Box<dyn FnOnce(Vec<(usize, Result<(), QueueError>)>) + Send>;

/// An item of a publish call.
pub(crate) struct Item {
    pub(crate) exchange: Arc<str>,
    pub(crate) routing_key: Arc<str>,
    pub(crate) props: Arc<Properties>,
    pub(crate) payload: Bytes,
    pub(crate) mandatory: bool,
    /// A dead letter: not routed back into a queue it already died in, unless a
    /// rejection is part of the loop (RabbitMQ's cycle rule).
    pub(crate) dead_letter: bool,
}

/// A queue owned by this shard.
struct Owned {
    name: Arc<str>,
    state: RefCell<QueueState>,
    log: Option<ShardLog>,
    acks: RefCell<Vec<u64>>,
    ack_flush_scheduled: std::cell::Cell<bool>,
    armed: RefCell<BTreeSet<u64>>,
    /// When it was last used (a consumer came or went), for `x-expires`.
    last_used: std::cell::Cell<u64>,
    unused_check_armed: std::cell::Cell<bool>,
    admissions: RefCell<Admissions>,
    /// Log offsets of the stored messages still in the queue (ready or unacked): the
    /// lowest bounds which segments can go.
    live: RefCell<BTreeSet<u64>>,
}

#[derive(Default)]
struct State {
    routes: RoutingTable,
    queues: HashMap<Arc<str>, Arc<QueueConfig>>,
    owned: HashMap<Arc<str>, Rc<Owned>>,
    maintenance_armed: bool,
    /// The API handle, for deletions the engine decides (queue TTL).
    api: Option<super::Queues>,
}

impl Drop for State {
    fn drop(&mut self) {
        // The shard is stopping: consumers on other threads (and event loops watching
        // their fds) must learn it rather than wait forever.
        for owned in self.owned.values() {
            if let Ok(mut queue) = owned.state.try_borrow_mut() {
                queue.close_consumers();
            }
        }
    }
}

/// This shard's exchanges-and-queues state (shared, shard-local).
#[derive(Clone)]
pub(crate) struct ShardQueues {
    state: Rc<RefCell<State>>,
}

use crate::runtime::unix_ms as now_ms;

impl ShardQueues {
    pub(crate) fn get(ctx: &mut ShardCtx) -> Self {
        ctx.local_handle(|| Self {
            state: Rc::new(RefCell::new(State::default())),
        })
    }

    fn owned(&self, queue: &str) -> Option<Rc<Owned>> {
        self.state.borrow().owned.get(queue).cloned()
    }

    pub(crate) fn set_api(&self, api: super::Queues) {
        self.state.borrow_mut().api = Some(api);
    }

    pub(crate) fn add_exchange(&self, config: &ExchangeConfig) {
        self.state
            .borrow_mut()
            .routes
            .add_exchange(&config.name, config.kind);
    }

    pub(crate) fn remove_exchange(&self, name: &str) {
        self.state.borrow_mut().routes.remove_exchange(name);
    }

    pub(crate) fn bind(&self, exchange: &str, binding: Binding) -> Result<(), QueueError> {
        Ok(self.state.borrow_mut().routes.bind(exchange, binding)?)
    }

    pub(crate) fn unbind(&self, exchange: &str, binding: &Binding) -> bool {
        self.state.borrow_mut().routes.unbind(exchange, binding)
    }

    /// Installs queue `config` here; opens (and recovers) it if this shard owns it.
    pub(crate) fn add_queue(
        &self,
        ctx: &mut ShardCtx,
        config: Arc<QueueConfig>,
        owner: usize,
        dir: Option<PathBuf>,
    ) -> Result<(), QueueError> {
        let name: Arc<str> = Arc::from(config.name.as_str());
        {
            let mut state = self.state.borrow_mut();
            state.routes.add_queue(&name);
            state.queues.insert(name.clone(), config.clone());
        }
        if owner != ctx.shard_id() || self.owned(&name).is_some() {
            return Ok(());
        }
        let expires = config.args.expires;
        let owned = open_queue(name.clone(), config, dir)?;
        self.state
            .borrow_mut()
            .owned
            .insert(name.clone(), Rc::new(owned));
        self.arm_maintenance(ctx);
        self.dispatch(ctx, &name);
        if let Some(expires) = expires {
            self.arm_unused_check(ctx, &name, expires); // unused from the start
        }
        Ok(())
    }

    /// Removes queue `name` here: routes, and if owned, its consumers are cancelled
    /// and its log closed. Returns the messages it held (ready) if owned.
    pub(crate) fn remove_queue(&self, name: &str) -> u64 {
        let owned = {
            let mut state = self.state.borrow_mut();
            state.routes.remove_queue(name);
            state.queues.remove(name);
            state.owned.remove(name)
        };
        let Some(owned) = owned else { return 0 };
        let ready = {
            let mut state = owned.state.borrow_mut();
            state.close_consumers();
            state.ready()
        };
        // Copies still waiting to enter it are answered: the queue is gone (not the
        // engine), so a publisher does not retry into the queues it already reached.
        let waiting = std::mem::take(&mut *owned.admissions.borrow_mut());
        for admission in waiting.line {
            for (item, _, answer) in admission.entries {
                answer(item, Err(QueueError::no_queue(name)));
            }
        }
        ready
    }

    /// Queue `name`'s figures, if owned here: (ready, unacked, consumers).
    pub(crate) fn figures(&self, name: &str) -> Option<(u64, usize, usize)> {
        let owned = self.owned(name)?;
        let state = owned.state.borrow();
        Some((state.ready(), state.unacked(), state.consumer_count()))
    }

    pub(crate) fn purge(&self, ctx: &mut ShardCtx, name: &str) -> Result<u64, QueueError> {
        let owned = self.owned(name).ok_or_else(|| QueueError::no_queue(name))?;
        let purged = owned.state.borrow_mut().purge();
        let count = purged.len() as u64;
        self.settled(ctx, &owned, &purged);
        Ok(count)
    }

    pub(crate) fn consume(
        &self,
        ctx: &mut ShardCtx,
        name: &Arc<str>,
        slot: ConsumerSlot,
    ) -> Result<(), QueueError> {
        let owned = self.owned(name).ok_or_else(|| QueueError::no_queue(name))?;
        owned.state.borrow_mut().add_consumer(slot);
        owned.last_used.set(now_ms());
        self.dispatch(ctx, name);
        Ok(())
    }

    /// Cancels consumer `id` of `queue`; returns whether the queue should now be
    /// auto-deleted.
    pub(crate) fn cancel(&self, ctx: &mut ShardCtx, queue: &Arc<str>, id: u64) -> bool {
        let Some(owned) = self.owned(queue) else {
            return false;
        };
        let (auto_delete, expires) = {
            let mut state = owned.state.borrow_mut();
            state.cancel(id);
            let idle = state.consumer_count() == 0;
            let auto_delete = state.config.auto_delete && state.had_consumer && idle;
            (auto_delete, state.config.args.expires.filter(|_| idle))
        };
        owned.last_used.set(now_ms());
        self.dispatch(ctx, queue);
        if let Some(expires) = expires {
            self.arm_unused_check(ctx, queue, expires);
        }
        auto_delete
    }

    /// `x-expires`: checks after `after` whether the queue went unused that long, and
    /// deletes it if so (on a thread of its own: deleting waits for every shard).
    fn arm_unused_check(&self, ctx: &mut ShardCtx, queue: &Arc<str>, after: Duration) {
        let Some(owned) = self.owned(queue) else {
            return;
        };
        if owned.unused_check_armed.replace(true) {
            return; // one check at a time; it re-arms itself while needed
        }
        let name = queue.clone();
        let check = move |ctx: &mut ShardCtx| ShardQueues::get(ctx).check_unused(ctx, &name);
        if let Err(error) = ctx.after(after, check) {
            owned.unused_check_armed.set(false);
            tracing::error!(%error, "cannot arm a queue's x-expires check");
        }
    }

    fn check_unused(&self, ctx: &mut ShardCtx, queue: &Arc<str>) {
        let Some(owned) = self.owned(queue) else {
            return;
        };
        owned.unused_check_armed.set(false);
        let (busy, expires) = {
            let state = owned.state.borrow();
            (state.consumer_count() > 0, state.config.args.expires)
        };
        let Some(expires) = expires else { return };
        if busy {
            return; // the last consumer's cancel arms the next check
        }
        let idle_ms = now_ms().saturating_sub(owned.last_used.get());
        let expires_ms = u64::try_from(expires.as_millis()).unwrap_or(u64::MAX);
        if idle_ms < expires_ms {
            self.arm_unused_check(ctx, queue, Duration::from_millis(expires_ms - idle_ms));
            return;
        }
        let Some(api) = self.state.borrow().api.clone() else {
            return;
        };
        let name = queue.to_string();
        let spawned = std::thread::Builder::new()
            .name("ringbroker-queue-expiry".into())
            .spawn(move || {
                if let Err(error) = api.delete_queue_as(super::Access::Internal, &name, true, false)
                {
                    tracing::debug!(%error, queue = name, "unused queue not deleted");
                }
            });
        if let Err(error) = spawned {
            tracing::error!(%error, "cannot start the thread deleting an unused queue");
        }
    }

    /// Routes `items` published on this shard; `reply` gets one result per item.
    pub(crate) fn publish(&self, ctx: &mut ShardCtx, items: Vec<Item>, reply: PublishReply) {
        let mut results: Vec<Option<Result<Confirm, QueueError>>> = Vec::with_capacity(items.len());
        let mut expected = vec![0usize; items.len()];
        let mut by_owner: HashMap<usize, Vec<Copy>> = HashMap::new();
        // Dead letters are not refused for backpressure: they wait in the external
        // queue instead (the message already left its queue).
        let patient = items.iter().any(|i| i.dead_letter);
        {
            let mut state = self.state.borrow_mut();
            for (index, item) in items.into_iter().enumerate() {
                let routed =
                    state
                        .routes
                        .route(&item.exchange, &item.routing_key, &item.props.headers);
                let queues = match routed {
                    Ok(queues) if item.dead_letter => without_cycles(queues, &item.props),
                    Ok(queues) => queues,
                    Err(_) => {
                        results.push(Some(Err(QueueError::no_exchange(&item.exchange))));
                        continue;
                    }
                };
                if queues.is_empty() {
                    let result = match item.mandatory {
                        true => Err(QueueError::Unroutable),
                        false => Ok(Confirm { queues: 0 }),
                    };
                    results.push(Some(result));
                    continue;
                }
                results.push(None);
                expected[index] = queues.len();
                for queue in queues {
                    let owner = owner_of(&queue, ctx.shard_count());
                    by_owner.entry(owner).or_default().push(Copy {
                        item: index,
                        queue,
                        exchange: item.exchange.clone(),
                        routing_key: item.routing_key.clone(),
                        props: item.props.clone(),
                        payload: item.payload.clone(),
                        patient: item.dead_letter,
                    });
                }
            }
        }
        let join = ConfirmJoin::new(results, expected, reply);
        for (owner, copies) in by_owner {
            let join = join.clone();
            let done: CopiesReply = Box::new(move |answers| join.fill(answers));
            self.send_copies(ctx, owner, copies, done, patient);
        }
        join.check_done();
    }

    fn send_copies(
        &self,
        ctx: &mut ShardCtx,
        owner: usize,
        copies: Vec<Copy>,
        done: CopiesReply,
        patient: bool,
    ) {
        if owner == ctx.shard_id() {
            self.enqueue(ctx, copies, done);
            return;
        }
        if patient {
            let task = move |ctx: &mut ShardCtx| ShardQueues::get(ctx).enqueue(ctx, copies, done);
            if let Err(error) = ctx.send_or_spawn(owner, task) {
                tracing::error!(%error, "task lost: the engine's queues are full");
            }
            return;
        }
        if !ctx.can_send(owner) {
            done(
                copies
                    .iter()
                    .map(|c| (c.item, Err(QueueError::Backpressure)))
                    .collect(),
            );
            return;
        }
        let task = move |ctx: &mut ShardCtx| ShardQueues::get(ctx).enqueue(ctx, copies, done);
        if ctx.send(owner, task).is_err() {
            tracing::error!(owner, "copies lost although the ring had room");
        }
    }

    /// Enqueues copies for queues owned here; `done` gets one answer per copy once
    /// every persistent one is stored. Each queue admits in arrival order: a transient
    /// copy that arrives while a persistent one is being stored waits behind it.
    fn enqueue(&self, ctx: &mut ShardCtx, copies: Vec<Copy>, done: CopiesReply) {
        let slot: Rc<RefCell<AnswerSlot>> = Rc::new(RefCell::new((
            Vec::with_capacity(copies.len()),
            copies.len(),
            Some(done),
        )));
        let answer: Answerer = Rc::new(move |item, result| {
            let finished = {
                let mut a = slot.borrow_mut();
                a.0.push((item, result));
                a.1 -= 1;
                (a.1 == 0).then(|| (a.2.take(), std::mem::take(&mut a.0)))
            };
            if let Some((Some(done), all)) = finished {
                done(all);
            }
        });
        let mut touched: Vec<Rc<Owned>> = Vec::new();
        for copy in copies {
            let Some(owned) = self.owned(&copy.queue) else {
                answer(copy.item, Err(QueueError::no_queue(&copy.queue)));
                continue;
            };
            let msg = new_msg(&owned, &copy);
            let persist = copy.props.persistent && owned.log.is_some();
            if owned.admissions.borrow().is_full() {
                answer(copy.item, Err(QueueError::Backpressure));
                continue;
            }
            if persist && owned.state.borrow().would_refuse(copy.payload.len() as u64) {
                // Refused before it is written: nothing to take back after a crash.
                answer(copy.item, Err(QueueError::Refused(owned.name.to_string())));
                continue;
            }
            owned
                .admissions
                .borrow_mut()
                .add(copy.item, msg, persist, copy.patient, &answer);
            if !touched.iter().any(|o| Rc::ptr_eq(o, &owned)) {
                touched.push(owned);
            }
        }
        for owned in touched {
            let batches = owned.admissions.borrow_mut().unsubmitted();
            for (seq, msgs) in batches {
                self.store(ctx, &owned, seq, &msgs);
            }
            self.drain_admissions(ctx, &owned);
        }
    }

    /// Admits what is at the front of `owned`'s admission line and ready (transient
    /// copies, and persistent ones the log has answered for), in order.
    fn drain_admissions(&self, ctx: &mut ShardCtx, owned: &Rc<Owned>) {
        loop {
            let front = owned.admissions.borrow_mut().pop_ready();
            let Some((entries, outcome)) = front else {
                break;
            };
            for (k, (item, mut msg, answer)) in entries.into_iter().enumerate() {
                let result = match &outcome {
                    Outcome::Ready => self.admit(ctx, owned, msg),
                    Outcome::Stored(base) => {
                        msg.offset = Some(base + k as u64);
                        self.admit(ctx, owned, msg)
                    }
                    Outcome::Failed(error) => Err(error.clone().into_error()),
                };
                answer(item, result);
            }
        }
        self.dispatch(ctx, &owned.name);
    }

    /// Adds `msg` to its queue (its length limits applied): `Refused`, or accepted with
    /// what it pushed out dead-lettered.
    fn admit(&self, ctx: &mut ShardCtx, owned: &Rc<Owned>, msg: Msg) -> Result<(), QueueError> {
        let offset = msg.offset;
        let outcome = owned.state.borrow_mut().enqueue(msg);
        match outcome {
            Enqueued::Refused => {
                if let Some(offset) = offset {
                    owned.acks.borrow_mut().push(offset); // stored, but not in the queue
                    self.schedule_ack_flush(ctx, owned);
                }
                Err(QueueError::Refused(owned.name.to_string()))
            }
            Enqueued::Accepted { dropped } => {
                if let Some(offset) = offset {
                    owned.live.borrow_mut().insert(offset);
                }
                self.leave(ctx, owned, dropped, DeathReason::MaxLen);
                Ok(())
            }
        }
    }

    /// Appends persistent messages (admission `seq` of `owned`) to its log as one
    /// batch; the log's answer settles that admission.
    fn store(&self, ctx: &mut ShardCtx, owned: &Rc<Owned>, seq: u64, msgs: &[RecordParts]) {
        let Some(log) = owned.log.clone() else { return };
        let props: Vec<Vec<u8>> = msgs
            .iter()
            .map(|(exchange, key, props, _)| encode_props(exchange, key, props))
            .collect();
        let headers: Vec<[(&[u8], &[u8]); 1]> = props
            .iter()
            .map(|p| [(PROPS_HEADER, p.as_slice())])
            .collect();
        let now = now_ms() as i64;
        let records: Vec<Record<'_>> = msgs
            .iter()
            .zip(&headers)
            .map(|((_, _, _, payload), h)| Record {
                timestamp: now,
                key: None,
                headers: h,
                value: payload,
            })
            .collect();
        // Weak: a queue deleted (and declared again) meanwhile is not this one.
        let (this, target) = (self.clone(), Rc::downgrade(owned));
        let appended = log.append(ctx, &records, move |ctx, outcome| {
            let Some(owned) = target.upgrade() else {
                return;
            };
            let outcome = match outcome {
                AppendOutcome::Stored { base_offset, .. } => Outcome::Stored(base_offset),
                AppendOutcome::Failed { error, .. } => {
                    Outcome::Failed(Refusal::Store(error.to_string()))
                }
            };
            owned.admissions.borrow_mut().settle(seq, outcome);
            this.drain_admissions(ctx, &owned);
        });
        if let Err(error) = appended {
            let refusal = match error {
                crate::storage::AppendError::Backpressure { .. } => Refusal::Backpressure,
                crate::storage::AppendError::Storage(e) => Refusal::Store(e.to_string()),
            };
            let patient = matches!(refusal, Refusal::Backpressure)
                && owned.admissions.borrow_mut().retry_later(seq);
            if patient {
                // Dead letters wait for the log to drain: their source already let go.
                let queue = owned.name.clone();
                let retry = move |ctx: &mut ShardCtx| ShardQueues::get(ctx).resubmit(ctx, &queue);
                if ctx.after(RESUBMIT_DELAY, retry).is_ok() {
                    return;
                }
            }
            owned
                .admissions
                .borrow_mut()
                .settle(seq, Outcome::Failed(refusal));
        }
    }

    /// Hands the log what waits to be appended again (dead letters after backpressure).
    fn resubmit(&self, ctx: &mut ShardCtx, queue: &Arc<str>) {
        let Some(owned) = self.owned(queue) else {
            return;
        };
        let batches = owned.admissions.borrow_mut().unsubmitted();
        for (seq, msgs) in batches {
            self.store(ctx, &owned, seq, &msgs);
        }
        self.drain_admissions(ctx, &owned);
    }

    /// Delivers what queue `name` can deliver now, dead-letters what expired, and arms
    /// the expiry timer for its next head.
    pub(crate) fn dispatch(&self, ctx: &mut ShardCtx, name: &Arc<str>) {
        let Some(owned) = self.owned(name) else {
            return;
        };
        let now = now_ms();
        let dispatched = owned.state.borrow_mut().dispatch(now);
        self.settled(ctx, &owned, &dispatched.auto_acked);
        self.leave(ctx, &owned, dispatched.expired, DeathReason::Expired);
        let next = owned.state.borrow().next_expiry();
        if let Some(at) = next {
            self.arm_expiry(ctx, &owned, name, at);
        }
    }

    fn arm_expiry(&self, ctx: &mut ShardCtx, owned: &Rc<Owned>, name: &Arc<str>, at: u64) {
        if owned
            .armed
            .borrow()
            .first()
            .is_some_and(|first| *first <= at)
        {
            return;
        }
        let delay = Duration::from_millis(at.saturating_sub(now_ms()));
        let queue = name.clone();
        let fire = move |ctx: &mut ShardCtx| {
            let queues = ShardQueues::get(ctx);
            if let Some(owned) = queues.owned(&queue) {
                owned.armed.borrow_mut().remove(&at);
            }
            queues.dispatch(ctx, &queue);
        };
        match ctx.after(delay, fire) {
            Ok(()) => {
                owned.armed.borrow_mut().insert(at);
            }
            Err(error) => tracing::error!(%error, "cannot arm a queue's expiry timer"),
        }
    }

    /// A consumer's ack, nack or reject.
    pub(crate) fn answer(
        &self,
        ctx: &mut ShardCtx,
        queue: &Arc<str>,
        consumer: u64,
        tag: u64,
        multiple: bool,
        answer: Answer,
    ) -> Result<(), QueueError> {
        let owned = self
            .owned(queue)
            .ok_or_else(|| QueueError::no_queue(queue))?;
        let result = match answer {
            Answer::Ack => {
                let acked = owned.state.borrow_mut().ack(consumer, tag, multiple);
                acked.map(|done| self.settled(ctx, &owned, &done))
            }
            Answer::Nack { requeue } => {
                let dead = owned
                    .state
                    .borrow_mut()
                    .nack(consumer, tag, multiple, requeue);
                dead.map(|dead| self.leave(ctx, &owned, dead, DeathReason::Rejected))
            }
        };
        self.dispatch(ctx, queue);
        result
    }

    /// Messages that left the queue for good: their log records are acknowledged.
    fn settled(&self, ctx: &mut ShardCtx, owned: &Rc<Owned>, msgs: &[Msg]) {
        let offsets: Vec<u64> = msgs.iter().filter_map(|m| m.offset).collect();
        if offsets.is_empty() {
            return;
        }
        {
            let mut live = owned.live.borrow_mut();
            for offset in &offsets {
                live.remove(offset);
            }
        }
        owned.acks.borrow_mut().extend(offsets);
        self.schedule_ack_flush(ctx, owned);
    }

    /// Messages that leave the queue for `reason`: settled, and dead-lettered if the
    /// queue has a dead-letter exchange.
    fn leave(&self, ctx: &mut ShardCtx, owned: &Rc<Owned>, msgs: Vec<Msg>, reason: DeathReason) {
        if msgs.is_empty() {
            return;
        }
        self.settled(ctx, owned, &msgs);
        let (queue, args) = {
            let state = owned.state.borrow();
            (state.name.clone(), state.config.args.clone())
        };
        let Some(dlx) = args.dead_letter_exchange else {
            return;
        };
        let items = msgs
            .into_iter()
            .map(|m| {
                let props = with_death(&m, &queue, reason);
                let key = args
                    .dead_letter_routing_key
                    .as_deref()
                    .map_or(m.routing_key.clone(), Arc::from);
                Item {
                    exchange: Arc::from(dlx.as_str()),
                    routing_key: key,
                    props: Arc::new(props),
                    payload: m.payload,
                    mandatory: false,
                    dead_letter: true,
                }
            })
            .collect();
        // As a task of its own, never nested: a dead letter that lands back here (and
        // dies again) must not recurse.
        let publish = move |ctx: &mut ShardCtx| {
            let reply: PublishReply = Box::new(|results| {
                for error in results.into_iter().filter_map(Result::err) {
                    tracing::warn!(%error, "dead letter not stored");
                }
            });
            ShardQueues::get(ctx).publish(ctx, items, reply);
        };
        if let Err(error) = ctx.send_or_spawn(ctx.shard_id(), publish) {
            tracing::error!(%error, "task lost: the engine's queues are full");
        }
    }

    fn schedule_ack_flush(&self, ctx: &mut ShardCtx, owned: &Rc<Owned>) {
        if owned.ack_flush_scheduled.replace(true) {
            return;
        }
        let queue = owned.name.clone();
        let flush = move |ctx: &mut ShardCtx| ShardQueues::get(ctx).flush_acks(ctx, &queue);
        if let Err(refused) = ctx.send(ctx.shard_id(), flush) {
            let flush = refused.into_task();
            if ctx.after(Duration::from_micros(50), flush).is_err() {
                owned.ack_flush_scheduled.set(false);
            }
        }
    }

    /// Appends the acknowledgements gathered this turn as one ack record.
    fn flush_acks(&self, ctx: &mut ShardCtx, queue: &Arc<str>) {
        let Some(owned) = self.owned(queue) else {
            return;
        };
        owned.ack_flush_scheduled.set(false);
        let offsets = std::mem::take(&mut *owned.acks.borrow_mut());
        let Some(log) = &owned.log else { return };
        if offsets.is_empty() {
            return;
        }
        let value: Vec<u8> = offsets.iter().flat_map(|o| o.to_le_bytes()).collect();
        let headers: [(&[u8], &[u8]); 1] = [(ACKS_HEADER, &[])];
        let record = Record {
            timestamp: now_ms() as i64,
            key: None,
            headers: &headers,
            value: &value,
        };
        let appended = log.append(ctx, &[record], |_, outcome| {
            if let AppendOutcome::Failed { error, .. } = outcome {
                tracing::warn!(%error, "ack record not stored: those messages come back after a restart");
            }
        });
        if let Err(error) = appended {
            tracing::warn!(%error, "ack record refused: those messages come back after a restart");
        }
    }

    fn arm_maintenance(&self, ctx: &mut ShardCtx) {
        if std::mem::replace(&mut self.state.borrow_mut().maintenance_armed, true) {
            return;
        }
        let run = |ctx: &mut ShardCtx| ShardQueues::get(ctx).maintain(ctx);
        if ctx.after(MAINTENANCE_INTERVAL, run).is_err() {
            self.state.borrow_mut().maintenance_armed = false;
        }
    }

    /// Removes the segments of durable queues whose messages are all acknowledged.
    fn maintain(&self, ctx: &mut ShardCtx) {
        let owned: Vec<Rc<Owned>> = {
            let mut state = self.state.borrow_mut();
            state.maintenance_armed = false;
            state.owned.values().cloned().collect()
        };
        for queue in &owned {
            let Some(log) = &queue.log else { continue };
            let live = queue.live.borrow().first().copied();
            let removed = log.with_log_mut(|l| {
                let below = live.unwrap_or_else(|| l.stored_end());
                l.remove_segments_before(below)
            });
            if let Err(error) = removed {
                tracing::warn!(%error, "cannot remove acknowledged segments");
            }
        }
        if !owned.is_empty() {
            self.arm_maintenance(ctx);
        }
    }
}

type AnswerSlot = (
    Vec<(usize, Result<(), QueueError>)>,
    usize,
    Option<CopiesReply>,
);

/// Answers one copy of a publish (on the owner shard).
type Answerer = Rc<dyn Fn(usize, Result<(), QueueError>)>;

/// What a persistent record needs: exchange, routing key, properties, payload.
type RecordParts = (Arc<str>, Arc<str>, Arc<Properties>, Bytes);

/// Why a persistent copy was not stored (cloneable: shared by a batch).
#[derive(Debug, Clone)]
enum Refusal {
    Backpressure,
    Store(String),
}

impl Refusal {
    fn into_error(self) -> QueueError {
        match self {
            Self::Backpressure => QueueError::Backpressure,
            Self::Store(why) => QueueError::StoreFailed(why),
        }
    }
}

/// Where an admission stands.
#[derive(Debug, Clone)]
enum Outcome {
    /// Transient: admit as soon as it is at the front.
    Ready,
    /// Persistent, stored from this offset.
    Stored(u64),
    /// Persistent, not stored.
    Failed(Refusal),
}

/// One copy waiting to enter a queue: its item in the publish, the message, and who to
/// answer.
type Entry = (usize, Msg, Answerer);

/// Copies waiting to enter a queue, in arrival order.
struct Admission {
    seq: u64,
    entries: Vec<Entry>,
    /// Payload bytes of `entries`.
    bytes: usize,
    /// Dead letters: appended again after backpressure rather than refused.
    patient: bool,
    persistent: bool,
    submitted: bool,
    outcome: Option<Outcome>,
}

/// A queue's admission line: copies enter the queue in the order they arrived, a
/// persistent run only once its log append is answered.
#[derive(Default)]
struct Admissions {
    line: std::collections::VecDeque<Admission>,
    next_seq: u64,
    /// Copies in the line.
    waiting: usize,
}

/// Payload bytes of persistent copies appended as one log batch, at most.
const ADMISSION_BYTES_MAX: usize = 16 << 20;
/// Copies appended as one log batch, at most.
const ADMISSION_RECORDS_MAX: usize = 65_536;
/// Copies waiting in a queue's admission line, at most.
const ADMISSION_LINE_MAX: usize = 1 << 20;

impl Admissions {
    /// Queues a copy, joining the last admission when it is of the same kind and not
    /// yet submitted to the log.
    fn add(&mut self, item: usize, msg: Msg, persistent: bool, patient: bool, answer: &Answerer) {
        let bytes = msg.payload.len();
        self.waiting += 1;
        if let Some(last) = self.line.back_mut() {
            let open = !last.submitted && (!persistent || last.outcome.is_none());
            // One log batch per admission: keep it well inside `BATCH_BYTES_MAX`.
            let fits = !persistent
                || (last.bytes + bytes <= ADMISSION_BYTES_MAX
                    && last.entries.len() < ADMISSION_RECORDS_MAX);
            if last.persistent == persistent && last.patient == patient && open && fits {
                last.entries.push((item, msg, answer.clone()));
                last.bytes += bytes;
                return;
            }
        }
        self.next_seq += 1;
        self.line.push_back(Admission {
            seq: self.next_seq,
            entries: vec![(item, msg, answer.clone())],
            bytes,
            persistent,
            patient,
            submitted: false,
            outcome: (!persistent).then_some(Outcome::Ready),
        });
    }

    /// Whether the line is full (copies wait for a slow disk): new ones are refused
    /// with `Backpressure` rather than held without bound.
    fn is_full(&self) -> bool {
        self.waiting >= ADMISSION_LINE_MAX
    }

    /// The persistent admissions not yet handed to the log (marked handed now), with
    /// what their records need.
    fn unsubmitted(&mut self) -> Vec<(u64, Vec<RecordParts>)> {
        let mut out = Vec::new();
        for admission in self
            .line
            .iter_mut()
            .filter(|a| a.persistent && !a.submitted)
        {
            admission.submitted = true;
            let parts = admission
                .entries
                .iter()
                .map(|(_, m, _)| {
                    (
                        m.exchange.clone(),
                        m.routing_key.clone(),
                        m.props.clone(),
                        m.payload.clone(),
                    )
                })
                .collect();
            out.push((admission.seq, parts));
        }
        out
    }

    /// Marks admission `seq` for another append if it is patient; returns whether.
    fn retry_later(&mut self, seq: u64) -> bool {
        match self.line.iter_mut().find(|a| a.seq == seq) {
            Some(admission) if admission.patient => {
                admission.submitted = false;
                true
            }
            _ => false,
        }
    }

    fn settle(&mut self, seq: u64, outcome: Outcome) {
        if let Some(admission) = self.line.iter_mut().find(|a| a.seq == seq) {
            admission.outcome = Some(outcome);
        }
    }

    /// The front admission if its outcome is known.
    fn pop_ready(&mut self) -> Option<(Vec<Entry>, Outcome)> {
        self.line.front()?.outcome.as_ref()?;
        let admission = self.line.pop_front()?;
        let outcome = admission.outcome?;
        self.waiting -= admission.entries.len();
        Some((admission.entries, outcome))
    }
}

/// The queues a dead letter may go to: not one it already died in, unless one of its
/// deaths is a rejection (a loop a consumer drives on purpose, like a retry queue).
fn without_cycles(mut queues: Vec<Arc<str>>, props: &Properties) -> Vec<Arc<str>> {
    // RabbitMQ's rule: find the newest death in the target queue; the copy is a cycle
    // unless a rejection happened since (deaths are newest first).
    queues.retain(
        |q| match props.deaths.iter().position(|d| *d.queue == **q) {
            None => true,
            Some(i) => {
                let rejected = props.deaths[..=i]
                    .iter()
                    .any(|d| d.reason == DeathReason::Rejected);
                if !rejected {
                    tracing::warn!(queue = %q, "dead-letter cycle: message dropped");
                }
                rejected
            }
        },
    );
    queues
}

/// The shard that owns queue `name`.
pub(crate) fn owner_of(name: &str, shards: usize) -> usize {
    crate::runtime::shard_for(name.as_bytes(), shards)
}

fn new_msg(owned: &Owned, copy: &Copy) -> Msg {
    let mut state = owned.state.borrow_mut();
    let now = now_ms();
    let ttl = [state.config.args.message_ttl, copy.props.expiration]
        .into_iter()
        .flatten()
        .min();
    Msg {
        id: state.next_id(),
        offset: None,
        exchange: copy.exchange.clone(),
        routing_key: copy.routing_key.clone(),
        props: copy.props.clone(),
        payload: copy.payload.clone(),
        redelivered: false,
        expires_at: ttl
            .map(|t| now.saturating_add(u64::try_from(t.as_millis()).unwrap_or(u64::MAX))),
    }
}

/// `m`'s properties with a death in `queue` for `reason` recorded (newest first; a
/// repeat of the same queue and reason counts up).
fn with_death(m: &Msg, queue: &str, reason: DeathReason) -> Properties {
    let mut props = (*m.props).clone();
    let now = now_ms();
    match props
        .deaths
        .iter()
        .position(|d| d.queue == queue && d.reason == reason)
    {
        Some(i) => {
            let mut death = props.deaths.remove(i);
            death.count += 1;
            death.time_ms = now;
            props.deaths.insert(0, death);
        }
        None => props.deaths.insert(
            0,
            Death {
                queue: queue.to_owned(),
                reason,
                count: 1,
                time_ms: now,
                exchange: m.exchange.to_string(),
                routing_keys: vec![m.routing_key.to_string()],
            },
        ),
    }
    props.deaths.truncate(super::message::DEATHS_MAX);
    // A dead letter's TTL was this queue's business; it does not follow it.
    props.expiration = None;
    props
}

/// Opens queue `name`: a durable one recovers its messages from its log (each flagged
/// redelivered), skipping the acknowledged ones.
fn open_queue(
    name: Arc<str>,
    config: Arc<QueueConfig>,
    dir: Option<PathBuf>,
) -> Result<Owned, QueueError> {
    let mut state = QueueState::new(name.clone(), (*config).clone());
    let log = match (&dir, config.durable) {
        (Some(dir), true) => {
            let log_config = LogConfig {
                durability: Durability::Always,
                segment_bytes_max: 64 << 20,
                groups_in_flight_max: 2,
                ..LogConfig::default()
            };
            let (log, _) = ShardLog::open(FsDir::open(dir, true)?, log_config)?;
            log.with_log(|l| recover(l, &name, &mut state))?;
            Some(log)
        }
        _ => None,
    };
    let live = state.stored_offsets();
    Ok(Owned {
        name,
        state: RefCell::new(state),
        log,
        acks: RefCell::new(Vec::new()),
        ack_flush_scheduled: std::cell::Cell::new(false),
        armed: RefCell::new(BTreeSet::new()),
        last_used: std::cell::Cell::new(now_ms()),
        unused_check_armed: std::cell::Cell::new(false),
        admissions: RefCell::new(Admissions::default()),
        live: RefCell::new(live),
    })
}

/// Replays a queue log: message records become ready messages unless an ack record
/// names them.
fn recover(
    log: &crate::storage::PartitionLog<FsDir>,
    name: &Arc<str>,
    state: &mut QueueState,
) -> Result<(), StorageError> {
    let mut messages: std::collections::BTreeMap<u64, Msg> = std::collections::BTreeMap::new();
    let mut offset = log.first_offset();
    while offset < log.stored_end() {
        let bytes = log.read(offset, 4 << 20)?;
        if bytes.is_empty() {
            break;
        }
        let mut at = 0;
        while at < bytes.len() {
            let len = peek_header(&bytes[at..])?.batch_len_bytes();
            let batch = bytes.slice(at..at + len);
            at += len;
            for record in decode_batch(&batch)?.records() {
                offset = record.offset + 1;
                let mut headers = record.headers();
                match headers.next() {
                    Some((ACKS_HEADER, _)) => {
                        for chunk in record.value.chunks_exact(8) {
                            let mut raw = [0u8; 8];
                            raw.copy_from_slice(chunk);
                            messages.remove(&u64::from_le_bytes(raw));
                        }
                    }
                    Some((PROPS_HEADER, props)) => {
                        let Ok((exchange, key, props)) = decode_props(props) else {
                            tracing::error!(queue = %name, offset = record.offset, "undecodable message properties: skipped");
                            continue;
                        };
                        let ttl = [state.config.args.message_ttl, props.expiration]
                            .into_iter()
                            .flatten()
                            .min();
                        let at = u64::try_from(record.timestamp).unwrap_or(0);
                        messages.insert(
                            record.offset,
                            Msg {
                                id: record.offset + 1,
                                offset: Some(record.offset),
                                exchange: Arc::from(exchange.as_str()),
                                routing_key: Arc::from(key.as_str()),
                                props: Arc::new(props),
                                payload: batch.slice_ref(record.value),
                                redelivered: true,
                                expires_at: ttl.map(|t| {
                                    at.saturating_add(
                                        u64::try_from(t.as_millis()).unwrap_or(u64::MAX),
                                    )
                                }),
                            },
                        );
                    }
                    _ => {}
                }
            }
        }
    }
    for msg in messages.into_values() {
        state.restore(msg);
    }
    Ok(())
}

/// Gathers the per-queue answers of a publish call and answers once all are in: an
/// item is confirmed when every queue it reached stored it, or fails with the first
/// refusal. Answers never given (a task dropped at shutdown) become `ShuttingDown`.
#[derive(Clone)]
struct ConfirmJoin {
    inner: Arc<Mutex<JoinState>>,
}

struct JoinState {
    results: Vec<Option<Result<Confirm, QueueError>>>,
    /// Per item: answers still expected, and queues confirmed.
    expected: Vec<usize>,
    confirmed: Vec<usize>,
    reply: Option<PublishReply>,
}

impl Drop for JoinState {
    fn drop(&mut self) {
        if let Some(reply) = self.reply.take() {
            let results = std::mem::take(&mut self.results)
                .into_iter()
                .map(|r| r.unwrap_or(Err(QueueError::ShuttingDown)))
                .collect();
            reply(results);
        }
    }
}

impl ConfirmJoin {
    fn new(
        results: Vec<Option<Result<Confirm, QueueError>>>,
        expected: Vec<usize>,
        reply: PublishReply,
    ) -> Self {
        let confirmed = vec![0; expected.len()];
        Self {
            inner: Arc::new(Mutex::new(JoinState {
                results,
                expected,
                confirmed,
                reply: Some(reply),
            })),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, JoinState> {
        match self.inner.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    fn fill(&self, answers: Vec<(usize, Result<(), QueueError>)>) {
        {
            let mut s = self.lock();
            for (item, answer) in answers {
                s.expected[item] = s.expected[item].saturating_sub(1);
                match answer {
                    Ok(()) => s.confirmed[item] += 1,
                    Err(error) => {
                        if s.results[item].is_none() {
                            s.results[item] = Some(Err(error));
                        }
                    }
                }
                if s.expected[item] == 0 && s.results[item].is_none() {
                    let queues = s.confirmed[item];
                    s.results[item] = Some(Ok(Confirm { queues }));
                }
            }
        }
        self.check_done();
    }

    fn check_done(&self) {
        let done = {
            let mut s = self.lock();
            let all = s.results.iter().all(Option::is_some) && s.expected.iter().all(|&e| e == 0);
            if !all {
                return;
            }
            s.reply
                .take()
                .map(|reply| (reply, std::mem::take(&mut s.results)))
        };
        if let Some((reply, results)) = done {
            reply(results.into_iter().flatten().collect());
        }
    }
}
