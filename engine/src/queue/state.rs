//! One queue's contents on its owner shard, sans I/O: ready messages by priority,
//! consumers in turn with their prefetch windows, unacknowledged deliveries, TTL and
//! length limits.
//!
//! Owns: the order messages are delivered in (highest priority first, FIFO within one;
//! a requeued message goes back to the head of its level), round-robin among consumers
//! with room, acknowledgements (single and multiple), requeue and expiry. Never:
//! delivers an expired message, gives a consumer more unacknowledged deliveries than
//! its prefetch, or pushes into a consumer buffer that has no room. Storage, routing
//! and dead-lettering are the caller's: this hands back the messages that leave.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use bytes::Bytes;

use super::config::{Overflow, QueueConfig};
use super::consumer::ConsumerBuffer;
use super::error::QueueError;
use super::message::{Delivery, Properties};

/// A message in a queue.
#[derive(Debug, Clone)]
pub(crate) struct Msg {
    /// Its number in this queue (increasing in enqueue order).
    pub(crate) id: u64,
    /// Its offset in the queue's log, if it is stored there.
    pub(crate) offset: Option<u64>,
    pub(crate) exchange: Arc<str>,
    pub(crate) routing_key: Arc<str>,
    pub(crate) props: Arc<Properties>,
    pub(crate) payload: Bytes,
    pub(crate) redelivered: bool,
    /// When it expires, ms since the Unix epoch.
    pub(crate) expires_at: Option<u64>,
}

impl Msg {
    fn size(&self) -> u64 {
        self.payload.len() as u64
    }
}

/// A consumer attached to a queue.
pub(crate) struct ConsumerSlot {
    pub(crate) id: u64,
    prefetch: u32,
    no_ack: bool,
    pub(crate) sink: Arc<ConsumerBuffer>,
    unacked: BTreeMap<u64, Msg>,
    next_tag: u64,
}

impl ConsumerSlot {
    pub(crate) fn new(id: u64, prefetch: u32, no_ack: bool, sink: Arc<ConsumerBuffer>) -> Self {
        Self {
            id,
            prefetch,
            no_ack,
            sink,
            unacked: BTreeMap::new(),
            next_tag: 1,
        }
    }

    fn window_open(&self) -> bool {
        self.no_ack || self.prefetch == 0 || self.unacked.len() < self.prefetch as usize
    }
}

/// What a dispatch handed back.
pub(crate) struct Dispatched {
    /// Expired messages (dead-letter them).
    pub(crate) expired: Vec<Msg>,
    /// Persistent messages delivered without acknowledgement (settle them).
    pub(crate) auto_acked: Vec<Msg>,
}

/// What became of an enqueue.
pub(crate) enum Enqueued {
    /// In the queue; `dropped` were pushed out of its head to make room.
    Accepted { dropped: Vec<Msg> },
    /// Refused: the queue is full under `reject-publish`.
    Refused,
}

pub(crate) struct QueueState {
    pub(crate) name: Arc<str>,
    pub(crate) config: QueueConfig,
    /// Ready messages by priority level (index = level).
    levels: Vec<VecDeque<Msg>>,
    ready_bytes: u64,
    ready_count: u64,
    consumers: Vec<ConsumerSlot>,
    /// The consumer to offer the next message to first.
    turn: usize,
    next_id: u64,
    /// Whether it ever had a consumer (auto-delete waits for the first).
    pub(crate) had_consumer: bool,
}

impl QueueState {
    pub(crate) fn new(name: Arc<str>, config: QueueConfig) -> Self {
        let levels = usize::from(config.args.max_priority.unwrap_or(0)) + 1;
        Self {
            name,
            config,
            levels: (0..levels).map(|_| VecDeque::new()).collect(),
            ready_bytes: 0,
            ready_count: 0,
            consumers: Vec::new(),
            turn: 0,
            next_id: 1,
            had_consumer: false,
        }
    }

    pub(crate) fn next_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    fn level(&self, msg: &Msg) -> usize {
        usize::from(msg.props.priority).min(self.levels.len() - 1)
    }

    fn push_back(&mut self, msg: Msg) {
        let level = self.level(&msg);
        self.ready_count += 1;
        self.ready_bytes += msg.size();
        self.levels[level].push_back(msg);
    }

    fn push_front(&mut self, msg: Msg) {
        let level = self.level(&msg);
        self.ready_count += 1;
        self.ready_bytes += msg.size();
        self.levels[level].push_front(msg);
    }

    fn taken(&mut self, msg: &Msg) {
        self.ready_count -= 1;
        self.ready_bytes -= msg.size();
    }

    fn over_limits(&self, extra: u64, extra_bytes: u64) -> bool {
        let a = &self.config.args;
        a.max_length.is_some_and(|m| self.ready_count + extra > m)
            || a.max_length_bytes
                .is_some_and(|m| self.ready_bytes + extra_bytes > m)
    }

    /// Adds `msg` at the tail (of its priority level), applying the length limits.
    pub(crate) fn enqueue(&mut self, msg: Msg) -> Enqueued {
        if self.config.args.overflow == Overflow::RejectPublish && self.over_limits(1, msg.size()) {
            return Enqueued::Refused;
        }
        self.push_back(msg);
        let mut dropped = Vec::new();
        while self.over_limits(0, 0) {
            match self.pop_oldest() {
                Some(old) => dropped.push(old),
                None => break,
            }
        }
        Enqueued::Accepted { dropped }
    }

    /// Puts a recovered message back (after a restart), flagged redelivered.
    pub(crate) fn restore(&mut self, mut msg: Msg) {
        msg.redelivered = true;
        self.next_id = self.next_id.max(msg.id + 1);
        self.push_back(msg);
    }

    /// The oldest ready message (the smallest id among the level heads).
    fn pop_oldest(&mut self) -> Option<Msg> {
        let level = (0..self.levels.len())
            .filter_map(|l| self.levels[l].front().map(|m| (m.id, l)))
            .min()?
            .1;
        let msg = self.levels[level].pop_front()?;
        self.taken(&msg);
        Some(msg)
    }

    /// The next message to deliver: the head of the highest non-empty level.
    fn pop_next(&mut self) -> Option<Msg> {
        let level = (0..self.levels.len())
            .rev()
            .find(|&l| !self.levels[l].is_empty())?;
        let msg = self.levels[level].pop_front()?;
        self.taken(&msg);
        Some(msg)
    }

    /// Removes the expired messages at the heads of the levels (messages behind an
    /// unexpired head wait for it, as in RabbitMQ).
    pub(crate) fn expire(&mut self, now_ms: u64) -> Vec<Msg> {
        let mut expired = Vec::new();
        for level in 0..self.levels.len() {
            while self.levels[level]
                .front()
                .is_some_and(|m| m.expires_at.is_some_and(|at| at <= now_ms))
            {
                if let Some(msg) = self.levels[level].pop_front() {
                    self.taken(&msg);
                    expired.push(msg);
                }
            }
        }
        expired
    }

    /// When the next head expires, ms since the Unix epoch.
    pub(crate) fn next_expiry(&self) -> Option<u64> {
        self.levels
            .iter()
            .filter_map(|l| l.front().and_then(|m| m.expires_at))
            .min()
    }

    /// Delivers ready messages to consumers with room, in turn. Returns the expired
    /// messages met on the way (for dead-lettering; an expired message is never
    /// delivered) and the persistent ones delivered to consumers that do not ack (they
    /// left the queue: the caller settles them).
    pub(crate) fn dispatch(&mut self, now_ms: u64) -> Dispatched {
        let mut out = Dispatched {
            expired: self.expire(now_ms),
            auto_acked: Vec::new(),
        };
        let mut pushed = vec![false; self.consumers.len()];
        while self.ready_count > 0 && !self.consumers.is_empty() {
            let Some(msg) = self.pop_next() else { break };
            if msg.expires_at.is_some_and(|at| at <= now_ms) {
                out.expired.push(msg);
                continue;
            }
            let n = self.consumers.len();
            let Some(pick) = (0..n)
                .map(|i| (self.turn + i) % n)
                .find(|&i| self.consumers[i].window_open() && self.consumers[i].sink.reserve())
            else {
                self.push_front(msg);
                break;
            };
            self.turn = (pick + 1) % n;
            let consumer = &mut self.consumers[pick];
            let tag = consumer.next_tag;
            consumer.next_tag += 1;
            let delivery = Delivery {
                delivery_tag: tag,
                redelivered: msg.redelivered,
                queue: self.name.clone(),
                exchange: msg.exchange.clone(),
                routing_key: msg.routing_key.clone(),
                properties: msg.props.clone(),
                payload: msg.payload.clone(),
            };
            if !consumer.no_ack {
                consumer.unacked.insert(tag, msg);
            } else if msg.offset.is_some() {
                out.auto_acked.push(msg);
            }
            consumer.sink.push(delivery);
            pushed[pick] = true;
        }
        for (consumer, pushed) in self.consumers.iter().zip(pushed) {
            if pushed {
                consumer.sink.notify();
            }
        }
        out
    }

    /// Whether a message of `bytes` would be refused now (`reject-publish` and full).
    pub(crate) fn would_refuse(&self, bytes: u64) -> bool {
        self.config.args.overflow == Overflow::RejectPublish && self.over_limits(1, bytes)
    }

    pub(crate) fn add_consumer(&mut self, slot: ConsumerSlot) {
        self.had_consumer = true;
        self.consumers.push(slot);
    }

    /// Removes consumer `id`: its unacknowledged messages go back to the head of the
    /// queue in delivery order, flagged redelivered. Returns whether it existed.
    pub(crate) fn cancel(&mut self, id: u64) -> bool {
        let Some(index) = self.consumers.iter().position(|c| c.id == id) else {
            return false;
        };
        let consumer = self.consumers.remove(index);
        consumer.sink.close();
        self.requeue(consumer.unacked.into_values().collect());
        if self.turn >= self.consumers.len() {
            self.turn = 0;
        }
        true
    }

    /// Puts `msgs` (in delivery order) back at the head of their levels.
    fn requeue(&mut self, msgs: Vec<Msg>) {
        for mut msg in msgs.into_iter().rev() {
            msg.redelivered = true;
            self.push_front(msg);
        }
    }

    fn take_unacked(
        &mut self,
        consumer: u64,
        tag: u64,
        multiple: bool,
    ) -> Result<Vec<Msg>, QueueError> {
        let slot = self
            .consumers
            .iter_mut()
            .find(|c| c.id == consumer)
            .ok_or(QueueError::Cancelled)?;
        if multiple {
            // Tag 0 with `multiple` means every outstanding delivery (AMQP).
            let upto = if tag == 0 { u64::MAX } else { tag };
            let keep = slot.unacked.split_off(&upto.saturating_add(1));
            if upto == u64::MAX {
                return Ok(std::mem::take(&mut slot.unacked)
                    .into_values()
                    .chain(keep.into_values())
                    .collect());
            }
            let taken = std::mem::replace(&mut slot.unacked, keep);
            Ok(taken.into_values().collect())
        } else {
            let msg = slot
                .unacked
                .remove(&tag)
                .ok_or(QueueError::UnknownTag(tag))?;
            Ok(vec![msg])
        }
    }

    /// Acknowledges `tag` (and every earlier one, if `multiple`) of `consumer`;
    /// returns the messages acknowledged (their log records can go).
    pub(crate) fn ack(
        &mut self,
        consumer: u64,
        tag: u64,
        multiple: bool,
    ) -> Result<Vec<Msg>, QueueError> {
        self.take_unacked(consumer, tag, multiple)
    }

    /// Negative acknowledgement: requeued at the head (flagged redelivered), or handed
    /// back for dead-lettering.
    pub(crate) fn nack(
        &mut self,
        consumer: u64,
        tag: u64,
        multiple: bool,
        requeue: bool,
    ) -> Result<Vec<Msg>, QueueError> {
        let msgs = self.take_unacked(consumer, tag, multiple)?;
        if requeue {
            self.requeue(msgs);
            return Ok(Vec::new());
        }
        Ok(msgs)
    }

    /// Removes every ready message; returns them.
    pub(crate) fn purge(&mut self) -> Vec<Msg> {
        let mut all = Vec::new();
        for level in &mut self.levels {
            all.extend(level.drain(..));
        }
        self.ready_count = 0;
        self.ready_bytes = 0;
        all
    }

    /// Closes every consumer (the queue is deleted).
    pub(crate) fn close_consumers(&mut self) {
        for consumer in self.consumers.drain(..) {
            consumer.sink.close();
        }
    }

    pub(crate) fn ready(&self) -> u64 {
        self.ready_count
    }

    pub(crate) fn unacked(&self) -> usize {
        self.consumers.iter().map(|c| c.unacked.len()).sum()
    }

    pub(crate) fn consumer_count(&self) -> usize {
        self.consumers.len()
    }

    /// Log offsets of every stored message in the queue (ready or unacknowledged): a
    /// full walk, done once when a queue is recovered.
    pub(crate) fn stored_offsets(&self) -> std::collections::BTreeSet<u64> {
        let ready = self.levels.iter().flatten().filter_map(|m| m.offset);
        let unacked = self
            .consumers
            .iter()
            .flat_map(|c| c.unacked.values())
            .filter_map(|m| m.offset);
        ready.chain(unacked).collect()
    }
}
