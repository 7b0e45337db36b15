//! One partition of a stream, on its owning shard: its log, its deduplication window,
//! the cursors of the consumers reading it, and the store of their positions.
//!
//! Owns: appending publishes (dropping duplicates by `Msg-Id`), answering each publish
//! once its record is stored under the stream's durability policy, running the cursors
//! after appends, acks and timers, persisting durable consumers' positions (batched,
//! at most `COMMIT_DELAY` after a change), retention, and rebuilding the dedup window
//! from the log on open. Never: answers a publish before the log reports it stored,
//! or holds its state borrowed while the log runs callbacks.
//!
//! Positions are written (not synced) at once, so they survive a process crash; a
//! power cut may roll one back, which redelivers records (never loses them).

use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::rc::{Rc, Weak};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::config::{DeliverPolicy, ACK_PENDING_LIMIT};
use super::cursor::{decode_position, Assignment, Cursor, CursorConfig, Dead};
use super::dedup::{Dedup, Seen};
use super::error::StreamError;
use super::member::{now_ms, AckKind, Member};
use super::message::{Publish, PublishAck, MSG_ID_HEADER, SUBJECT_HEADER};
use super::shard::{ShardStreams, StreamDef};
use crate::runtime::ShardCtx;
use crate::storage::codec::{decode_batch, peek_header, Record, BATCH_BYTES_MAX};
use crate::storage::meta::{MetaConfig, MetaStore, Op};
use crate::storage::{
    AppendError, AppendOutcome, Durability, FsDir, LogConfig, ShardLog, StorageError,
};

/// A durable consumer's changed position is written at most this long after the change.
const COMMIT_DELAY: Duration = Duration::from_millis(10);

/// Records of one publish are stored in log batches of about this much at most (well
/// inside `BATCH_BYTES_MAX`).
const CHUNK_BYTES_MAX: usize = BATCH_BYTES_MAX / 2;
/// Bytes a record costs in a batch besides its subject, key, headers and payload, at
/// most (varints, the `Rb-Subject` header name, lengths).
const RECORD_OVERHEAD_MAX: usize = 64 + SUBJECT_HEADER.len();

/// A delivery whose read failed is tried again after this long.
const READ_RETRY_DELAY: Duration = Duration::from_millis(100);

/// Answers the publishes of one append, in the order given.
pub(crate) type PublishReply = Box<dyn FnOnce(Vec<Result<PublishAck, StreamError>>) + Send>;

/// The publishes of one append waiting for their outcome.
struct Waiting {
    results: Vec<Option<Result<PublishAck, StreamError>>>,
    left: usize,
    reply: Option<PublishReply>,
}

type WaitingRef = Rc<RefCell<Waiting>>;

impl Drop for Waiting {
    /// Dropped unanswered (the shard stopped with the append pending): the publishes
    /// not answered yet are told so, rather than left waiting forever.
    fn drop(&mut self) {
        if let Some(reply) = self.reply.take() {
            let results = std::mem::take(&mut self.results)
                .into_iter()
                .map(|r| r.unwrap_or(Err(StreamError::ShuttingDown)))
                .collect();
            reply(results);
        }
    }
}

/// A publish waiting for the outcome of an earlier one with the same `Msg-Id`.
struct Waiter {
    waiting: WaitingRef,
    index: usize,
}

fn settle(waiting: &WaitingRef, index: usize, result: Result<PublishAck, StreamError>) {
    let done = {
        let mut w = waiting.borrow_mut();
        if w.results[index].is_some() {
            return;
        }
        w.results[index] = Some(result);
        w.left -= 1;
        (w.left == 0).then(|| (w.reply.take(), std::mem::take(&mut w.results)))
    };
    if let Some((Some(reply), results)) = done {
        let results = results
            .into_iter()
            .map(|r| r.unwrap_or_else(|| Err(StreamError::Task("publish not settled".into()))))
            .collect();
        reply(results);
    }
}

/// Where a partition lives under the engine's data directory.
pub(crate) fn partition_dir(root: &Path, stream: &str, index: u32) -> PathBuf {
    root.join("streams").join(stream).join(index.to_string())
}

struct State {
    def: Arc<StreamDef>,
    dedup: Dedup<Waiter>,
    cursors: HashMap<Arc<str>, Cursor>,
    positions: MetaStore<FsDir>,
    pump_scheduled: bool,
    commit_scheduled: bool,
    /// Deadlines of the redelivery timers armed (a new one is armed only when none
    /// armed fires earlier, so naks and acks cannot pile timers up).
    armed: BTreeSet<Instant>,
}

struct Inner {
    stream: Arc<str>,
    index: u32,
    log: ShardLog,
    state: RefCell<State>,
}

impl Drop for Inner {
    /// The shard stops (or the stream goes): write the positions still waiting for
    /// their commit timer.
    fn drop(&mut self) {
        let state = self.state.get_mut();
        commit_positions(state, &self.stream);
    }
}

/// A partition owned by this shard. Cheap to clone (shared).
#[derive(Clone)]
pub(crate) struct Partition {
    inner: Rc<Inner>,
}

/// A partition's figures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionInfo {
    /// The partition's index.
    pub partition: u32,
    /// The shard that owns it.
    pub shard: usize,
    /// The first offset still stored.
    pub first_offset: u64,
    /// The offset the next record will get (the last stored is one less).
    pub next_offset: u64,
    /// Records stored (`next_offset - first_offset`).
    pub records: u64,
    /// Bytes of segments.
    pub bytes: u64,
}

/// One consumer's position in one partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerPartitionInfo {
    /// The partition's index.
    pub partition: u32,
    /// The next offset the consumer reads.
    pub next_offset: u64,
    /// Records delivered and not yet acknowledged.
    pub pending: usize,
    /// The member it is assigned to, if any.
    pub member: Option<u64>,
}

impl Partition {
    /// Opens (recovering) partition `index` of `def` under `root`, and rebuilds its
    /// dedup window from the records stored within it.
    pub(crate) fn open(root: &Path, def: Arc<StreamDef>, index: u32) -> Result<Self, StreamError> {
        let dir = partition_dir(root, &def.config.name, index);
        let log_dir = FsDir::open(dir.join("log"), true)?;
        let config = &def.config;
        let log_config = LogConfig {
            durability: config.durability,
            segment_bytes_max: config.segment_bytes_max,
            retention: config.retention,
            ..LogConfig::default()
        };
        let (log, _report) = ShardLog::open(log_dir, log_config)?;
        let positions_config = MetaConfig {
            log: LogConfig {
                durability: Durability::None,
                segment_bytes_max: 4 << 20,
                ..LogConfig::default()
            },
            snapshot_after_bytes: 1 << 20,
        };
        let (positions, _) =
            MetaStore::open(FsDir::open(dir.join("positions"), true)?, positions_config)?;
        let mut dedup = Dedup::new(config.dedup_window);
        log.with_log(|log| rebuild_dedup(log, &mut dedup))?;
        let state = State {
            def: def.clone(),
            dedup,
            cursors: HashMap::new(),
            positions,
            pump_scheduled: false,
            commit_scheduled: false,
            armed: BTreeSet::new(),
        };
        Ok(Self {
            inner: Rc::new(Inner {
                stream: def.name.clone(),
                index,
                log,
                state: RefCell::new(state),
            }),
        })
    }

    pub(crate) fn set_def(&self, def: Arc<StreamDef>) {
        let mut state = self.inner.state.borrow_mut();
        state.dedup.set_window(def.config.dedup_window);
        let retention = def.config.retention;
        self.inner
            .log
            .with_log_mut(|log| log.set_retention(retention));
        state.def = def;
    }

    /// Appends `records` (dropping duplicates by `Msg-Id`); `reply` runs on this shard
    /// once every record is stored or refused.
    pub(crate) fn append(&self, ctx: &mut ShardCtx, records: Vec<Publish>, reply: PublishReply) {
        let n = records.len();
        let waiting = Rc::new(RefCell::new(Waiting {
            results: (0..n).map(|_| None).collect(),
            left: n,
            reply: Some(reply),
        }));
        if n == 0 {
            settle_empty(&waiting);
            return;
        }
        let now = now_ms() as i64;
        let mut early = Vec::new();
        let mut store = Vec::with_capacity(n);
        {
            let mut state = self.inner.state.borrow_mut();
            let max = state.def.config.max_record_bytes;
            for (i, record) in records.iter().enumerate() {
                if record.size() > max {
                    let bytes = record.size();
                    early.push((i, Err(StreamError::RecordTooLarge { bytes, max })));
                    continue;
                }
                let id = record.id().filter(|_| state.dedup.enabled());
                let seen = id.map(|id| {
                    let waiter = Waiter {
                        waiting: waiting.clone(),
                        index: i,
                    };
                    state.dedup.check(id, now, waiter)
                });
                match seen {
                    None | Some(Seen::New) => store.push(i),
                    Some(Seen::Stored(offset)) => {
                        early.push((i, Ok(self.publish_ack(offset, true))))
                    }
                    Some(Seen::InFlight) => {}
                }
            }
        }
        for (i, result) in early {
            settle(&waiting, i, result);
        }
        // One log batch per chunk: a batch is at most `BATCH_BYTES_MAX` encoded.
        let mut chunk = Vec::new();
        let mut chunk_bytes = 0;
        for i in store {
            let bytes = records[i].size() + RECORD_OVERHEAD_MAX;
            if !chunk.is_empty() && chunk_bytes + bytes > CHUNK_BYTES_MAX {
                self.store(
                    ctx,
                    &records,
                    std::mem::take(&mut chunk),
                    waiting.clone(),
                    now,
                );
                chunk_bytes = 0;
            }
            chunk.push(i);
            chunk_bytes += bytes;
        }
        if !chunk.is_empty() {
            self.store(ctx, &records, chunk, waiting, now);
        }
    }

    fn publish_ack(&self, offset: u64, duplicate: bool) -> PublishAck {
        PublishAck {
            stream: self.inner.stream.clone(),
            partition: self.inner.index,
            offset,
            duplicate,
        }
    }

    /// Appends the records at `store` (indices into `records`) as one batch.
    fn store(
        &self,
        ctx: &mut ShardCtx,
        records: &[Publish],
        store: Vec<usize>,
        waiting: WaitingRef,
        now: i64,
    ) {
        // Every record's headers (`Rb-Subject` first) in one vector, sliced per record:
        // one allocation per append instead of one per record.
        let mut headers: Vec<(&[u8], &[u8])> =
            Vec::with_capacity(store.iter().map(|&i| records[i].headers.len() + 1).sum());
        let mut spans = Vec::with_capacity(store.len());
        for &i in &store {
            let r = &records[i];
            let start = headers.len();
            headers.push((SUBJECT_HEADER, r.subject.as_bytes()));
            headers.extend(r.headers.iter().map(|(n, v)| (n.as_ref(), v.as_ref())));
            spans.push(start..headers.len());
        }
        let batch: Vec<Record<'_>> = store
            .iter()
            .zip(spans)
            .map(|(&i, span)| Record {
                timestamp: now,
                key: records[i].key.as_deref(),
                headers: &headers[span],
                value: &records[i].payload,
            })
            .collect();
        let ids: Vec<(usize, Option<Bytes>)> = store
            .iter()
            .map(|&i| (i, records[i].id().cloned()))
            .collect();
        // Weak: the log keeps this callback, and the partition keeps the log.
        let this: Weak<Inner> = Rc::downgrade(&self.inner);
        let waiting_done = waiting.clone();
        let appended = self.inner.log.append(ctx, &batch, move |ctx, outcome| {
            if let Some(inner) = this.upgrade() {
                let partition = Partition { inner };
                partition.stored(ctx, &waiting_done, &ids, outcome, now);
            }
        });
        if let Err(error) = appended {
            // Refused before it was queued (the callback went with it): same ids again.
            let ids: Vec<(usize, Option<Bytes>)> = store
                .iter()
                .map(|&i| (i, records[i].id().cloned()))
                .collect();
            let error = match error {
                AppendError::Backpressure { .. } => StreamError::Backpressure,
                AppendError::Storage(e) => StreamError::StoreFailed(e.to_string()),
            };
            let failure = error.to_string();
            self.fail(&waiting, &ids, &error, &failure);
        }
    }

    /// The log's answer to an append.
    fn stored(
        &self,
        ctx: &mut ShardCtx,
        waiting: &WaitingRef,
        ids: &[(usize, Option<Bytes>)],
        outcome: AppendOutcome,
        now: i64,
    ) {
        match outcome {
            AppendOutcome::Stored { base_offset, .. } => {
                let mut answers = Vec::new();
                {
                    let mut state = self.inner.state.borrow_mut();
                    for (k, (i, id)) in ids.iter().enumerate() {
                        let offset = base_offset + k as u64;
                        answers.push((waiting.clone(), *i, offset, false));
                        let Some(id) = id else { continue };
                        for w in state.dedup.stored(id, offset, now) {
                            answers.push((w.waiting, w.index, offset, true));
                        }
                    }
                }
                for (waiting, i, offset, duplicate) in answers {
                    settle(&waiting, i, Ok(self.publish_ack(offset, duplicate)));
                }
                self.schedule_pump(ctx);
            }
            AppendOutcome::Failed { error, .. } => {
                let failure = error.to_string();
                self.fail(
                    waiting,
                    ids,
                    &StreamError::StoreFailed(failure.clone()),
                    &failure,
                );
            }
        }
    }

    fn fail(
        &self,
        waiting: &WaitingRef,
        ids: &[(usize, Option<Bytes>)],
        error: &StreamError,
        failure: &str,
    ) {
        let mut answers = Vec::new();
        {
            let mut state = self.inner.state.borrow_mut();
            for (i, id) in ids {
                answers.push((waiting.clone(), *i));
                let Some(id) = id else { continue };
                for w in state.dedup.failed(id) {
                    answers.push((w.waiting, w.index));
                }
            }
        }
        for (waiting, i) in answers {
            let error = match error {
                StreamError::Backpressure => StreamError::Backpressure,
                _ => StreamError::StoreFailed(failure.to_owned()),
            };
            settle(&waiting, i, Err(error));
        }
    }

    /// Runs the cursors once this turn ends (appends in one turn share one pass).
    pub(crate) fn schedule_pump(&self, ctx: &mut ShardCtx) {
        {
            let mut state = self.inner.state.borrow_mut();
            if state.pump_scheduled {
                return;
            }
            state.pump_scheduled = true;
        }
        let (stream, index) = (self.inner.stream.clone(), self.inner.index);
        let task = move |ctx: &mut ShardCtx| ShardStreams::get(ctx).pump(ctx, &stream, index);
        if let Err(error) = ctx.send(ctx.shard_id(), task) {
            // The ring to ourselves is full: run it after a moment instead.
            let task = error.into_task();
            if ctx.after(Duration::from_micros(50), task).is_err() {
                self.inner.state.borrow_mut().pump_scheduled = false;
                tracing::error!("cannot schedule a partition's delivery");
            }
        }
    }

    /// Delivers what every cursor can, dead-letters what exceeded `max_deliver`, and
    /// arms the timer for the next redelivery.
    pub(crate) fn pump(&self, ctx: &mut ShardCtx) -> Vec<(Arc<str>, Dead)> {
        let shard = ctx.shard_id();
        let now = Instant::now();
        let (mut dead, mut more, mut dirty, mut next_due) = (Vec::new(), false, false, None);
        {
            let mut state = self.inner.state.borrow_mut();
            state.pump_scheduled = false;
            for (group, cursor) in state.cursors.iter_mut() {
                let pass = self.inner.log.with_log(|log| {
                    cursor.deliver(log, &self.inner.stream, self.inner.index, shard)
                });
                match pass {
                    Ok(pass) => {
                        dead.extend(pass.dead.into_iter().map(|d| (group.clone(), d)));
                        more |= pass.more;
                    }
                    Err(error) => {
                        tracing::error!(%error, "delivery read failed; retrying in 100 ms");
                        next_due = earliest(next_due, Some(now + READ_RETRY_DELAY));
                    }
                }
                dirty |= cursor.dirty && cursor.config.durable;
                next_due = earliest(next_due, cursor.next_due(now));
            }
        }
        if more {
            self.schedule_pump(ctx);
        }
        if dirty {
            self.schedule_commit(ctx);
        }
        if let Some(due) = next_due {
            self.arm_timer(ctx, due);
        }
        dead
    }

    fn arm_timer(&self, ctx: &mut ShardCtx, due: Instant) {
        if self
            .inner
            .state
            .borrow()
            .armed
            .first()
            .is_some_and(|first| *first <= due)
        {
            return;
        }
        let (stream, index) = (self.inner.stream.clone(), self.inner.index);
        let delay = due.saturating_duration_since(Instant::now());
        let fire = move |ctx: &mut ShardCtx| {
            let streams = ShardStreams::get(ctx);
            streams.timer_fired(ctx, &stream, index, due);
        };
        match ctx.after(delay, fire) {
            Ok(()) => {
                self.inner.state.borrow_mut().armed.insert(due);
            }
            Err(error) => tracing::error!(%error, "cannot arm a redelivery timer"),
        }
    }

    pub(crate) fn timer_fired(&self, ctx: &mut ShardCtx, deadline: Instant) {
        self.inner.state.borrow_mut().armed.remove(&deadline);
        self.schedule_pump(ctx);
    }

    fn schedule_commit(&self, ctx: &mut ShardCtx) {
        {
            let mut state = self.inner.state.borrow_mut();
            if state.commit_scheduled {
                return;
            }
            state.commit_scheduled = true;
        }
        let (stream, index) = (self.inner.stream.clone(), self.inner.index);
        let commit = move |ctx: &mut ShardCtx| {
            if let Some(partition) = ShardStreams::get(ctx).partition(&stream, index) {
                partition.commit();
            }
        };
        if let Err(error) = ctx.after(COMMIT_DELAY, commit) {
            self.inner.state.borrow_mut().commit_scheduled = false;
            tracing::error!(%error, "cannot schedule writing consumer positions");
        }
    }

    /// Writes the changed positions of durable consumers (one batch, written at once).
    pub(crate) fn commit(&self) {
        let mut state = self.inner.state.borrow_mut();
        commit_positions(&mut state, &self.inner.stream);
    }
}

fn commit_positions(state: &mut State, stream: &str) {
    {
        state.commit_scheduled = false;
        let ops: Vec<Op> = state
            .cursors
            .iter_mut()
            .filter(|(_, c)| c.dirty && c.config.durable)
            .map(|(group, c)| {
                c.dirty = false;
                Op::Put {
                    key: group.as_bytes().to_vec(),
                    value: c.encode_position(),
                }
            })
            .collect();
        if let Err(error) = write_ops(&mut state.positions, &ops) {
            tracing::error!(%error, stream, "cannot write consumer positions");
            for (_, c) in state.cursors.iter_mut().filter(|(_, c)| c.config.durable) {
                c.dirty = true; // retried with the next change
            }
        }
    }
}

impl Partition {
    /// Adds consumer `group`'s cursor: at its persisted position if it has one, else
    /// where `deliver` says.
    pub(crate) fn add_cursor(
        &self,
        ctx: &mut ShardCtx,
        group: Arc<str>,
        config: Arc<CursorConfig>,
        deliver: DeliverPolicy,
    ) -> Result<(), StreamError> {
        let mut state = self.inner.state.borrow_mut();
        if state.cursors.contains_key(&group) {
            return Ok(());
        }
        let saved = match config
            .durable
            .then(|| state.positions.get(group.as_bytes()))
        {
            Some(Some(bytes)) => {
                Some(decode_position(bytes, ACK_PENDING_LIMIT).ok_or_else(|| {
                    StreamError::Storage(StorageError::Corrupt {
                        path: partition_dir(&state.def.root, &self.inner.stream, self.inner.index)
                            .join("positions"),
                        position: 0,
                        reason: format!("position of consumer {group:?} does not decode"),
                    })
                })?)
            }
            _ => None,
        };
        let mut cursor = match saved {
            Some((next, pending)) => {
                // A power cut under `Durability::None` can leave the log shorter than
                // a position written before it: offsets past the end will be reused.
                let end = self.inner.log.with_log(|log| log.next_offset());
                let pending: Vec<u64> = pending.into_iter().filter(|&o| o < end).collect();
                Cursor::new(config, next.min(end), &pending)
            }
            None => {
                let start = self
                    .inner
                    .log
                    .with_log(|log| -> Result<u64, StorageError> {
                        Ok(match deliver {
                            DeliverPolicy::All => log.first_offset(),
                            DeliverPolicy::New => log.next_offset(),
                            DeliverPolicy::Offset(o) => o.max(log.first_offset()),
                            DeliverPolicy::Time(t) => {
                                log.offset_for_timestamp(t)?.unwrap_or(log.next_offset())
                            }
                        })
                    })?;
                let mut cursor = Cursor::new(config, start, &[]);
                cursor.dirty = true;
                cursor
            }
        };
        let durable = cursor.config.durable;
        if !durable {
            cursor.dirty = false;
        }
        state.cursors.insert(group, cursor);
        drop(state);
        if durable {
            self.schedule_commit(ctx);
        }
        Ok(())
    }

    /// Removes consumer `group`'s cursor (and its persisted position).
    pub(crate) fn remove_cursor(&self, group: &str) {
        let mut state = self.inner.state.borrow_mut();
        if let Some(mut cursor) = state.cursors.remove(group) {
            cursor.release_all(self.inner.index);
            if cursor.config.durable {
                let op = Op::Delete {
                    key: group.as_bytes().to_vec(),
                };
                if let Err(error) = write_ops(&mut state.positions, &[op]) {
                    tracing::error!(%error, "cannot remove a consumer position");
                }
            }
        }
    }

    /// Gives this partition of consumer `group` to `member` (or to nobody).
    pub(crate) fn assign(
        &self,
        ctx: &mut ShardCtx,
        group: &Arc<str>,
        member: Option<Arc<Member>>,
        generation: u64,
    ) {
        let applied = {
            let mut state = self.inner.state.borrow_mut();
            let Some(cursor) = state.cursors.get_mut(group) else {
                return;
            };
            let assignment = member.map(|member| Assignment {
                member,
                generation,
                route: Arc::new(super::member::AckRoute {
                    runtime: ctx.runtime(),
                    owner: ctx.shard_id(),
                    group: group.clone(),
                }),
            });
            cursor.assign(self.inner.index, assignment, generation)
        };
        if applied {
            self.schedule_pump(ctx);
        }
    }

    pub(crate) fn ack(
        &self,
        ctx: &mut ShardCtx,
        group: &str,
        offset: u64,
        generation: u64,
        kind: AckKind,
    ) -> Result<(), StreamError> {
        let result = {
            let mut state = self.inner.state.borrow_mut();
            let cursor = state
                .cursors
                .get_mut(group)
                .ok_or_else(|| StreamError::consumer_not_found(group))?;
            cursor.ack(offset, generation, kind)
        };
        if result.is_ok() {
            self.schedule_pump(ctx);
        }
        result
    }

    /// Whether a cursor here delivers to `member` (it may have been waiting for credit).
    pub(crate) fn serves(&self, member: &Arc<Member>) -> bool {
        let state = self.inner.state.borrow();
        state
            .cursors
            .values()
            .any(|c| c.assigned_member().is_some_and(|m| Arc::ptr_eq(m, member)))
    }

    /// Applies retention and expires old dedup ids.
    pub(crate) fn maintain(&self, ctx: &mut ShardCtx) {
        let now = now_ms() as i64;
        self.inner.state.borrow_mut().dedup.expire(now);
        match self.inner.log.with_log_mut(|log| log.apply_retention(now)) {
            Ok(report) if report.segments_removed > 0 => self.schedule_pump(ctx),
            Ok(_) => {}
            Err(error) => tracing::error!(%error, "retention failed"),
        }
    }

    /// Flushes what waits for a group and writes every dirty position (before close).
    pub(crate) fn close(&self, ctx: &mut ShardCtx) {
        self.inner.log.flush(ctx);
        self.commit();
        let mut state = self.inner.state.borrow_mut();
        for cursor in state.cursors.values_mut() {
            cursor.release_all(self.inner.index);
        }
        state.cursors.clear();
    }

    pub(crate) fn info(&self, shard: usize) -> PartitionInfo {
        self.inner.log.with_log(|log| PartitionInfo {
            partition: self.inner.index,
            shard,
            first_offset: log.first_offset(),
            next_offset: log.stored_end(),
            records: log.stored_end() - log.first_offset(),
            bytes: log.stored_bytes(),
        })
    }

    pub(crate) fn consumer_info(&self, group: &str) -> Option<ConsumerPartitionInfo> {
        let state = self.inner.state.borrow();
        state.cursors.get(group).map(|c| ConsumerPartitionInfo {
            partition: self.inner.index,
            next_offset: c.next_offset(),
            pending: c.pending_count(),
            member: c.assigned_member().map(|m| m.id),
        })
    }

    pub(crate) fn def(&self) -> Arc<StreamDef> {
        self.inner.state.borrow().def.clone()
    }
}

fn settle_empty(waiting: &WaitingRef) {
    let reply = waiting.borrow_mut().reply.take();
    if let Some(reply) = reply {
        reply(Vec::new());
    }
}

fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Applies `ops` to `store` at once (`MetaStore::write_blocking`).
pub(crate) fn write_ops(store: &mut MetaStore<FsDir>, ops: &[Op]) -> Result<(), StreamError> {
    store
        .write_blocking(ops)
        .map_err(|e| StreamError::StoreFailed(e.to_string()))
}

/// Remembers the `Msg-Id`s of the records stored within the window.
fn rebuild_dedup(
    log: &crate::storage::PartitionLog<FsDir>,
    dedup: &mut Dedup<Waiter>,
) -> Result<(), StorageError> {
    if !dedup.enabled() {
        return Ok(());
    }
    let since = (now_ms() as i64).saturating_sub(dedup.window_ms());
    let Some(mut offset) = log.offset_for_timestamp(since)? else {
        return Ok(());
    };
    while offset < log.stored_end() {
        let bytes = log.read(offset, 1 << 20)?;
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
                let id = record.headers().find(|(n, _)| *n == MSG_ID_HEADER);
                if let Some((_, id)) = id {
                    dedup.remember(Bytes::copy_from_slice(id), record.offset, record.timestamp);
                }
            }
        }
    }
    Ok(())
}
