//! The per-shard half of the streams model: every shard's copy of the stream
//! definitions and their subject routes, the partitions this shard owns, and the
//! consumer groups it coordinates.
//!
//! Owns: routing a publish on the shard it is made on (match the subject, pick the
//! partition: `xxh3(key) % partitions` for keyed records, `xxh3(Msg-Id)` for keyless
//! records with an id so retries meet their first copy, else in turn), forwarding each
//! partition's records to its owner as one task, and group membership: which member
//! reads which partition (`partition p → members[p % n]`, members in join order) and
//! evicting members that stop heartbeating. Never: waits, or keeps a group's
//! assignment anywhere but on its coordinator and the partitions' owners.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use xxhash_rust::xxh3::xxh3_64;

use super::config::{DeliverPolicy, StreamConfig};
use super::cursor::CursorConfig;
use super::error::StreamError;
use super::member::{AckKind, CloseReason, Member, MemberId};
use super::message::{
    Publish, PublishAck, DEAD_CONSUMER_HEADER, DEAD_DELIVERIES_HEADER, DEAD_MSG_ID_HEADER,
    DEAD_OFFSET_HEADER, DEAD_PARTITION_HEADER, DEAD_REASON_HEADER, DEAD_STREAM_HEADER,
    MSG_ID_HEADER,
};
use super::partition::{ConsumerPartitionInfo, Partition, PartitionInfo, PublishReply};
use crate::routing::{Matcher, Pattern};
use crate::runtime::ShardCtx;

/// A stream's definition as every shard holds it.
#[derive(Debug)]
pub(crate) struct StreamDef {
    pub(crate) name: Arc<str>,
    pub(crate) config: StreamConfig,
    pub(crate) patterns: Vec<Pattern>,
    /// The owner shard of each partition.
    pub(crate) owners: Vec<usize>,
    pub(crate) root: Arc<PathBuf>,
}

impl StreamDef {
    pub(crate) fn new(
        config: StreamConfig,
        root: Arc<PathBuf>,
        shards: usize,
    ) -> Result<Self, StreamError> {
        let patterns = config.validate()?;
        let base = xxh3_64(config.name.as_bytes());
        let owners = (0..u64::from(config.partitions))
            .map(|p| (base.wrapping_add(p) % shards as u64) as usize)
            .collect();
        Ok(Self {
            name: Arc::from(config.name.as_str()),
            config,
            patterns,
            owners,
            root,
        })
    }

    /// The partition a record goes to; `spread` picks keyless records without an id.
    fn partition_for(&self, record: &Publish, spread: &mut u64) -> u32 {
        let partitions = u64::from(self.config.partitions);
        let hash = match (&record.key, record.id()) {
            (Some(key), _) => xxh3_64(key),
            (None, Some(id)) => xxh3_64(id),
            (None, None) => {
                *spread = spread.wrapping_add(1);
                *spread
            }
        };
        (hash % partitions) as u32
    }
}

/// The records of a publish bound for one partition, with their places in the publish.
type PartitionPart = (Vec<usize>, Vec<Publish>);

/// A publish split by (stream, partition), cheap per record for the usual batch: runs
/// of one subject are matched once, and parts are found by partition index.
#[derive(Default)]
struct Split {
    parts: Vec<(Arc<StreamDef>, u32, PartitionPart)>,
    /// The last subject matched and its stream.
    last: Option<(String, Arc<StreamDef>)>,
    /// For the last stream: the index in `parts` of each partition's part.
    slots: Vec<Option<usize>>,
}

impl Split {
    fn stream_for(&mut self, state: &mut State, subject: &str) -> Option<Arc<StreamDef>> {
        if let Some((last, def)) = &self.last {
            if last == subject {
                return Some(def.clone());
            }
        }
        let matched = state.routes.matches(subject);
        let def = matched
            .first()
            .and_then(|name| state.streams.get(name))?
            .clone();
        let same_stream = self
            .last
            .as_ref()
            .is_some_and(|(_, d)| Arc::ptr_eq(d, &def));
        if !same_stream {
            self.slots = vec![None; def.owners.len()];
            for (index, (d, p, _)) in self.parts.iter().enumerate() {
                if Arc::ptr_eq(d, &def) {
                    self.slots[*p as usize] = Some(index);
                }
            }
        }
        self.last = Some((subject.to_owned(), def.clone()));
        Some(def)
    }

    /// Adds record `index` to its part (`def` is the stream `stream_for` just gave).
    fn add(&mut self, def: &Arc<StreamDef>, partition: u32, index: usize, record: Publish) {
        let slot = match self.slots[partition as usize] {
            Some(slot) => slot,
            None => {
                self.parts
                    .push((def.clone(), partition, (Vec::new(), Vec::new())));
                self.slots[partition as usize] = Some(self.parts.len() - 1);
                self.parts.len() - 1
            }
        };
        let (indices, records) = &mut self.parts[slot].2;
        indices.push(index);
        records.push(record);
    }
}

/// A consumer group, on its coordinator shard.
struct Group {
    def: Arc<StreamDef>,
    members: BTreeMap<MemberId, Arc<Member>>,
    assignment: Vec<Option<MemberId>>,
    heartbeat: Duration,
    timer_armed: bool,
}

impl Drop for Group {
    fn drop(&mut self) {
        for member in self.members.values() {
            member.close(CloseReason::Closed);
        }
    }
}

#[derive(Default)]
struct State {
    routes: Matcher<Arc<str>>,
    streams: HashMap<Arc<str>, Arc<StreamDef>>,
    partitions: HashMap<(Arc<str>, u32), Partition>,
    groups: HashMap<(Arc<str>, Arc<str>), Group>,
    spread: u64,
    maintenance_armed: bool,
}

/// Assignment generations, increasing across every group of the process: a group that
/// emptied and formed again must not reuse numbers its partitions already saw (they
/// would ignore its assignments as stale).
static GENERATIONS: AtomicU64 = AtomicU64::new(0);

/// How often each shard applies retention and expires dedup ids.
const MAINTENANCE_INTERVAL: Duration = Duration::from_secs(1);

/// This shard's streams state. Cheap to clone (shared, shard-local).
#[derive(Clone)]
pub(crate) struct ShardStreams {
    state: Rc<RefCell<State>>,
}

impl ShardStreams {
    pub(crate) fn get(ctx: &mut ShardCtx) -> Self {
        ctx.local_handle(|| Self {
            state: Rc::new(RefCell::new(State::default())),
        })
    }

    pub(crate) fn partition(&self, stream: &Arc<str>, index: u32) -> Option<Partition> {
        self.state
            .borrow()
            .partitions
            .get(&(stream.clone(), index))
            .cloned()
    }

    /// Installs (or replaces) `def` here: its routes, and the partitions this shard
    /// owns (opened and recovered on first install).
    pub(crate) fn install(
        &self,
        ctx: &mut ShardCtx,
        def: Arc<StreamDef>,
    ) -> Result<(), StreamError> {
        let shard = ctx.shard_id();
        let old = self
            .state
            .borrow_mut()
            .streams
            .insert(def.name.clone(), def.clone());
        {
            let mut state = self.state.borrow_mut();
            if let Some(old) = &old {
                for p in &old.patterns {
                    state.routes.remove(p, &old.name);
                }
            }
            for p in &def.patterns {
                state.routes.insert(p, def.name.clone());
            }
        }
        for (index, _) in def.owners.iter().enumerate().filter(|(_, o)| **o == shard) {
            let index = index as u32;
            match self.partition(&def.name, index) {
                Some(partition) => partition.set_def(def.clone()),
                None => {
                    let partition = Partition::open(&def.root, def.clone(), index)?;
                    self.state
                        .borrow_mut()
                        .partitions
                        .insert((def.name.clone(), index), partition);
                }
            }
        }
        self.arm_maintenance(ctx);
        Ok(())
    }

    /// Removes stream `name` here: routes, groups (their members closed), partitions
    /// (closed; their directory is removed by the caller once every shard closed).
    pub(crate) fn uninstall(&self, ctx: &mut ShardCtx, name: &str) {
        let (partitions, groups) = {
            let mut state = self.state.borrow_mut();
            let Some(def) = state.streams.remove(name) else {
                return;
            };
            for p in &def.patterns {
                state.routes.remove(p, &def.name);
            }
            let keys: Vec<_> = state
                .partitions
                .keys()
                .filter(|(s, _)| &**s == name)
                .cloned()
                .collect();
            let partitions: Vec<Partition> = keys
                .iter()
                .filter_map(|k| state.partitions.remove(k))
                .collect();
            let gkeys: Vec<_> = state
                .groups
                .keys()
                .filter(|(s, _)| &**s == name)
                .cloned()
                .collect();
            let groups: Vec<Group> = gkeys
                .iter()
                .filter_map(|k| state.groups.remove(k))
                .collect();
            (partitions, groups)
        };
        drop(groups); // closes their members
        for partition in partitions {
            partition.close(ctx);
        }
    }

    /// Whether a stream on this shard's copy of the definitions captures `subject`
    /// (cheap: a cached matcher lookup, nothing at all when no stream exists).
    pub(crate) fn captures(&self, subject: &str) -> bool {
        let mut state = self.state.borrow_mut();
        !state.routes.is_empty() && !state.routes.matches(subject).is_empty()
    }

    /// Routes `records` (published on this shard) to their partitions; `reply` gets one
    /// result per record, in order.
    pub(crate) fn publish(&self, ctx: &mut ShardCtx, records: Vec<Publish>, reply: PublishReply) {
        let n = records.len();
        let mut results: Vec<Option<Result<PublishAck, StreamError>>> =
            (0..n).map(|_| None).collect();
        let parts = {
            let mut state = self.state.borrow_mut();
            let mut split = Split::default();
            for (i, record) in records.into_iter().enumerate() {
                match split.stream_for(&mut state, &record.subject) {
                    Some(def) => {
                        let partition = def.partition_for(&record, &mut state.spread);
                        split.add(&def, partition, i, record);
                    }
                    None => results[i] = Some(Err(StreamError::NoStream(record.subject))),
                }
            }
            split.parts
        };
        let join = Join::new(results, reply);
        for (def, partition, (indices, records)) in parts {
            let owner = def.owners[partition as usize];
            let join = join.clone();
            let part_reply: PublishReply = Box::new(move |results| join.fill(&indices, results));
            self.send_append(ctx, owner, def.name.clone(), partition, records, part_reply);
        }
        join.check_done();
    }

    /// Publishes `records` straight to stream `stream`'s partitions (dead letters).
    fn publish_to(&self, ctx: &mut ShardCtx, stream: &str, records: Vec<Publish>) {
        let def = self.state.borrow().streams.get(stream).cloned();
        let Some(def) = def else {
            tracing::warn!(stream, "dead-letter stream does not exist: records dropped");
            return;
        };
        let mut spread = 0;
        for record in records {
            let partition = def.partition_for(&record, &mut spread);
            let owner = def.owners[partition as usize];
            let reply: PublishReply = Box::new(|results| {
                for error in results.into_iter().filter_map(Result::err) {
                    tracing::error!(%error, "dead letter not stored");
                }
            });
            self.send_append(ctx, owner, def.name.clone(), partition, vec![record], reply);
        }
    }

    fn send_append(
        &self,
        ctx: &mut ShardCtx,
        owner: usize,
        stream: Arc<str>,
        partition: u32,
        records: Vec<Publish>,
        reply: PublishReply,
    ) {
        if owner == ctx.shard_id() {
            self.append_local(ctx, &stream, partition, records, reply);
            return;
        }
        if !ctx.can_send(owner) {
            // Backpressure: the records are refused, not dropped silently.
            reply(
                records
                    .iter()
                    .map(|_| Err(StreamError::Backpressure))
                    .collect(),
            );
            return;
        }
        let task = move |ctx: &mut ShardCtx| {
            ShardStreams::get(ctx).append_local(ctx, &stream, partition, records, reply);
        };
        if ctx.send(owner, task).is_err() {
            tracing::error!(owner, "append lost although the ring had room");
        }
    }

    fn append_local(
        &self,
        ctx: &mut ShardCtx,
        stream: &Arc<str>,
        partition: u32,
        records: Vec<Publish>,
        reply: PublishReply,
    ) {
        match self.partition(stream, partition) {
            Some(p) => p.append(ctx, records, reply),
            None => reply(
                records
                    .iter()
                    .map(|_| Err(StreamError::stream_not_found(stream)))
                    .collect(),
            ),
        }
    }

    /// Runs partition `index` of `stream`'s cursors and dead-letters what they gave up.
    pub(crate) fn pump(&self, ctx: &mut ShardCtx, stream: &Arc<str>, index: u32) {
        let Some(partition) = self.partition(stream, index) else {
            return;
        };
        let dead = partition.pump(ctx);
        if dead.is_empty() {
            return;
        }
        let def = partition.def();
        let Some(target) = def.config.dead_letter.clone() else {
            return; // dropped: no dead-letter stream
        };
        let records = dead
            .into_iter()
            .map(|(group, d)| {
                let m = d.message;
                // The id moves to `Rb-Dead-Msg-Id`: another consumer giving up on the
                // same record must not be dropped as a duplicate.
                let headers = m
                    .headers
                    .iter()
                    .map(|(n, v)| match n.as_ref() == MSG_ID_HEADER {
                        true => (Bytes::from_static(DEAD_MSG_ID_HEADER), v.clone()),
                        false => (n.clone(), v.clone()),
                    })
                    .collect();
                let mut record = Publish {
                    subject: m.subject_str().to_owned(),
                    key: m.key.clone(),
                    headers,
                    payload: m.payload.clone(),
                };
                for (name, value) in [
                    (DEAD_REASON_HEADER, "max_deliver".to_owned()),
                    (DEAD_STREAM_HEADER, stream.to_string()),
                    (DEAD_PARTITION_HEADER, index.to_string()),
                    (DEAD_OFFSET_HEADER, m.offset.to_string()),
                    (DEAD_DELIVERIES_HEADER, d.deliveries.to_string()),
                    (DEAD_CONSUMER_HEADER, group.to_string()),
                ] {
                    record
                        .headers
                        .push((bytes::Bytes::from_static(name), value.into()));
                }
                record
            })
            .collect();
        self.publish_to(ctx, &target, records);
    }

    pub(crate) fn timer_fired(
        &self,
        ctx: &mut ShardCtx,
        stream: &Arc<str>,
        index: u32,
        deadline: Instant,
    ) {
        if let Some(partition) = self.partition(stream, index) {
            partition.timer_fired(ctx, deadline);
        }
    }

    /// Runs the partitions here that deliver to `member` (it has credit again).
    pub(crate) fn resume(&self, ctx: &mut ShardCtx, member: &Arc<Member>) {
        let partitions: Vec<Partition> = self.state.borrow().partitions.values().cloned().collect();
        for partition in partitions.into_iter().filter(|p| p.serves(member)) {
            partition.schedule_pump(ctx);
        }
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) fn ack(
        &self,
        ctx: &mut ShardCtx,
        stream: &Arc<str>,
        partition: u32,
        group: &str,
        offset: u64,
        generation: u64,
        kind: AckKind,
    ) -> Result<(), StreamError> {
        let p = self
            .partition(stream, partition)
            .ok_or_else(|| StreamError::stream_not_found(stream))?;
        p.ack(ctx, group, offset, generation, kind)
    }

    /// Adds consumer `group`'s cursors to the partitions of `stream` owned here.
    pub(crate) fn add_cursors(
        &self,
        ctx: &mut ShardCtx,
        stream: &Arc<str>,
        group: &Arc<str>,
        config: &Arc<CursorConfig>,
        deliver: DeliverPolicy,
    ) -> Result<(), StreamError> {
        for partition in self.owned(stream) {
            partition.add_cursor(ctx, group.clone(), config.clone(), deliver)?;
        }
        Ok(())
    }

    pub(crate) fn remove_cursors(&self, stream: &Arc<str>, group: &str) {
        for partition in self.owned(stream) {
            partition.remove_cursor(group);
        }
    }

    fn owned(&self, stream: &Arc<str>) -> Vec<Partition> {
        let state = self.state.borrow();
        let mut owned: Vec<(u32, Partition)> = state
            .partitions
            .iter()
            .filter(|((s, _), _)| s == stream)
            .map(|((_, i), p)| (*i, p.clone()))
            .collect();
        owned.sort_by_key(|(i, _)| *i);
        owned.into_iter().map(|(_, p)| p).collect()
    }

    pub(crate) fn infos(&self, ctx: &mut ShardCtx, stream: &Arc<str>) -> Vec<PartitionInfo> {
        let shard = ctx.shard_id();
        self.owned(stream).iter().map(|p| p.info(shard)).collect()
    }

    pub(crate) fn consumer_infos(
        &self,
        stream: &Arc<str>,
        group: &str,
    ) -> Vec<ConsumerPartitionInfo> {
        self.owned(stream)
            .iter()
            .filter_map(|p| p.consumer_info(group))
            .collect()
    }

    /// Coordinator: adds `member` to `group` of `stream` and rebalances.
    pub(crate) fn join(
        &self,
        ctx: &mut ShardCtx,
        stream: &Arc<str>,
        group: &Arc<str>,
        member: Arc<Member>,
        heartbeat: Duration,
    ) -> Result<(), StreamError> {
        {
            let mut state = self.state.borrow_mut();
            let def = state
                .streams
                .get(stream)
                .cloned()
                .ok_or_else(|| StreamError::stream_not_found(stream))?;
            let partitions = def.config.partitions as usize;
            let entry = state
                .groups
                .entry((stream.clone(), group.clone()))
                .or_insert_with(|| Group {
                    def,
                    members: BTreeMap::new(),
                    assignment: vec![None; partitions],
                    heartbeat,
                    timer_armed: false,
                });
            entry.heartbeat = entry.heartbeat.min(heartbeat);
            entry.members.insert(member.id, member);
        }
        self.rebalance(ctx, stream, group);
        self.arm_heartbeat(ctx, stream, group);
        Ok(())
    }

    /// Coordinator: removes member `id` from `group`; true if the group is now empty.
    pub(crate) fn leave(
        &self,
        ctx: &mut ShardCtx,
        stream: &Arc<str>,
        group: &Arc<str>,
        id: MemberId,
    ) -> bool {
        let key = (stream.clone(), group.clone());
        let (removed, empty) = {
            let mut state = self.state.borrow_mut();
            let Some(g) = state.groups.get_mut(&key) else {
                return true;
            };
            let removed = g.members.remove(&id);
            (removed, g.members.is_empty())
        };
        if let Some(member) = removed {
            member.close(CloseReason::Closed);
        }
        self.rebalance(ctx, stream, group);
        if empty {
            self.state.borrow_mut().groups.remove(&key);
        }
        empty
    }

    /// Coordinator: closes every member of `group` and forgets it.
    pub(crate) fn drop_group(&self, stream: &Arc<str>, group: &Arc<str>) {
        let key = (stream.clone(), group.clone());
        let removed = self.state.borrow_mut().groups.remove(&key);
        drop(removed); // `Group`'s drop closes its members
    }

    /// Gives each partition of `group` to `members[p % n]` (members in id order), and
    /// tells the owners of the partitions whose member changed.
    fn rebalance(&self, ctx: &mut ShardCtx, stream: &Arc<str>, group: &Arc<str>) {
        let mut moves = Vec::new();
        {
            let mut state = self.state.borrow_mut();
            let Some(g) = state.groups.get_mut(&(stream.clone(), group.clone())) else {
                return;
            };
            let ids: Vec<MemberId> = g.members.keys().copied().collect();
            for p in 0..g.assignment.len() {
                let want = (!ids.is_empty()).then(|| ids[p % ids.len()]);
                if g.assignment[p] != want {
                    g.assignment[p] = want;
                    let generation = GENERATIONS.fetch_add(1, Ordering::Relaxed) + 1;
                    let member = want.and_then(|id| g.members.get(&id).cloned());
                    moves.push((g.def.owners[p], p as u32, member, generation));
                }
            }
        }
        for (owner, partition, member, generation) in moves {
            let (stream, group) = (stream.clone(), group.clone());
            let task = move |ctx: &mut ShardCtx| {
                if let Some(p) = ShardStreams::get(ctx).partition(&stream, partition) {
                    p.assign(ctx, &group, member, generation);
                }
            };
            if let Err(error) = ctx.send_or_spawn(owner, task) {
                tracing::error!(%error, "task lost: the engine's queues are full");
            }
        }
    }

    fn arm_heartbeat(&self, ctx: &mut ShardCtx, stream: &Arc<str>, group: &Arc<str>) {
        let interval = {
            let mut state = self.state.borrow_mut();
            let Some(g) = state.groups.get_mut(&(stream.clone(), group.clone())) else {
                return;
            };
            if g.timer_armed || g.members.is_empty() {
                return;
            }
            g.timer_armed = true;
            g.heartbeat / 2
        };
        let (s, gname) = (stream.clone(), group.clone());
        let check =
            move |ctx: &mut ShardCtx| ShardStreams::get(ctx).check_heartbeats(ctx, &s, &gname);
        if let Err(error) = ctx.after(interval, check) {
            tracing::error!(%error, "cannot arm a group's heartbeat check");
        }
    }

    /// Evicts members silent for longer than the group's heartbeat timeout.
    fn check_heartbeats(&self, ctx: &mut ShardCtx, stream: &Arc<str>, group: &Arc<str>) {
        let evicted: Vec<Arc<Member>> = {
            let mut state = self.state.borrow_mut();
            let Some(g) = state.groups.get_mut(&(stream.clone(), group.clone())) else {
                return;
            };
            g.timer_armed = false;
            let timeout = g.heartbeat;
            let silent: Vec<MemberId> = g
                .members
                .iter()
                .filter(|(_, m)| m.silent_for() > timeout)
                .map(|(id, _)| *id)
                .collect();
            silent
                .iter()
                .filter_map(|id| g.members.remove(id))
                .collect()
        };
        for member in &evicted {
            tracing::warn!(member = member.id, %group, "member missed its heartbeat: evicted");
            member.close(CloseReason::Evicted);
        }
        if !evicted.is_empty() {
            self.rebalance(ctx, stream, group);
        }
        self.arm_heartbeat(ctx, stream, group);
    }

    fn arm_maintenance(&self, ctx: &mut ShardCtx) {
        {
            let mut state = self.state.borrow_mut();
            if state.maintenance_armed {
                return;
            }
            state.maintenance_armed = true;
        }
        let run = |ctx: &mut ShardCtx| ShardStreams::get(ctx).maintain(ctx);
        if ctx.after(MAINTENANCE_INTERVAL, run).is_err() {
            self.state.borrow_mut().maintenance_armed = false;
        }
    }

    /// Retention and dedup expiry for the partitions here, every second while any.
    pub(crate) fn maintain(&self, ctx: &mut ShardCtx) {
        let partitions: Vec<Partition> = {
            let mut state = self.state.borrow_mut();
            state.maintenance_armed = false;
            state.partitions.values().cloned().collect()
        };
        for partition in &partitions {
            partition.maintain(ctx);
        }
        if !partitions.is_empty() {
            self.arm_maintenance(ctx);
        }
    }
}

/// Gathers the results of a publish split across partitions, and answers once all are
/// in. Parts never answered (their task dropped at shutdown) are answered
/// `ShuttingDown` when the last reference goes.
#[derive(Clone)]
struct Join {
    inner: Arc<Mutex<JoinState>>,
}

struct JoinState {
    results: Vec<Option<Result<PublishAck, StreamError>>>,
    reply: Option<PublishReply>,
}

impl Drop for JoinState {
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

impl Join {
    fn new(results: Vec<Option<Result<PublishAck, StreamError>>>, reply: PublishReply) -> Self {
        Self {
            inner: Arc::new(Mutex::new(JoinState {
                results,
                reply: Some(reply),
            })),
        }
    }

    fn fill(&self, indices: &[usize], results: Vec<Result<PublishAck, StreamError>>) {
        {
            let mut state = match self.inner.lock() {
                Ok(state) => state,
                Err(poisoned) => poisoned.into_inner(),
            };
            for (&i, result) in indices.iter().zip(results) {
                state.results[i] = Some(result);
            }
        }
        self.check_done();
    }

    fn check_done(&self) {
        let done = {
            let mut state = match self.inner.lock() {
                Ok(state) => state,
                Err(poisoned) => poisoned.into_inner(),
            };
            if state.results.iter().any(Option::is_none) {
                return;
            }
            state
                .reply
                .take()
                .map(|reply| (reply, std::mem::take(&mut state.results)))
        };
        if let Some((reply, results)) = done {
            let results = results.into_iter().flatten().collect();
            reply(results);
        }
    }
}
