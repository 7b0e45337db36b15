//! Streams: persistent, partitioned, replayable logs with consumer groups (the Kafka /
//! JetStream model), on the durable log.
//!
//! Owns: the streams API for threads that are not shards (`Streams`, `Consumer`), the
//! catalog of definitions (a metadata store under `<data>/meta`, read on open), and
//! installing definitions on every shard. Never: acknowledges a publish before the
//! stream's durability policy is met, or delivers a record of a partition to two
//! members of a group under the same assignment.
//!
//! How it works (`docs/architecture.md`, "Streams"):
//! - Every shard holds every stream's definition and subject routes. A publish is
//!   routed on the shard it is made on (one per publishing thread, so a thread's
//!   publishes stay in order), to partition `xxh3(key) % partitions` (keyed),
//!   `xxh3(Msg-Id) % partitions` (keyless with an id), or the next in turn; each
//!   partition's records go to its owner shard as one task and one log append.
//! - Partition `p` of stream `s` is owned by shard `(xxh3(s) + p) % shards`. The owner
//!   keeps the log, the dedup window, and one cursor per consumer.
//! - A consumer is a group: its coordinator shard (`xxh3(stream/name) % shards`) gives
//!   each partition to one member (`p → members[p % n]`, members in join order) and
//!   tells the partitions' owners; owners push records into the member's bounded
//!   buffer, each for one of the member's `max_ack_pending` credits.
//! - Acks go straight to the partition's owner. Durable consumers' positions (next
//!   offset and the offsets delivered but not acked) are written per partition, next
//!   to its log; a restarted consumer redelivers the unacked ones and goes on.

mod config;
mod cursor;
mod dedup;
mod error;
mod member;
mod message;
mod partition;
mod shard;

use std::cell::Cell;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex, MutexGuard};

pub use config::{
    patterns_overlap, validate_name, AckPolicy, ConsumerConfig, DecodeError, DeliverPolicy,
    StreamConfig, ACK_PENDING_LIMIT, DEDUP_WINDOW_MAX, NAME_BYTES_MAX, PARTITIONS_MAX,
    RECORD_BYTES_LIMIT, STREAM_SUBJECTS_MAX,
};
pub use error::StreamError;
pub(crate) use member::ack_all;

pub use member::{Consumer, MemberId};
pub use message::{
    Publish, PublishAck, StreamMessage, DEAD_CONSUMER_HEADER, DEAD_DELIVERIES_HEADER,
    DEAD_MSG_ID_HEADER, DEAD_OFFSET_HEADER, DEAD_PARTITION_HEADER, DEAD_REASON_HEADER,
    DEAD_STREAM_HEADER, MSG_ID_HEADER, RESERVED_HEADER_PREFIX, SUBJECT_HEADER,
};
pub use partition::{ConsumerPartitionInfo, PartitionInfo};

use cursor::CursorConfig;
use member::Member;
use partition::write_ops;
use partition::PublishReply;
pub(crate) use shard::ShardStreams;
use shard::StreamDef;

use crate::runtime::{shard_for, RuntimeHandle, ShardCtx};
use crate::storage::meta::{MetaConfig, MetaStore, Op};
use crate::storage::FsDir;

const STREAM_KEY: &str = "s/";
const CONSUMER_KEY: &str = "c/";

/// A stream's definition and its partitions' figures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamInfo {
    /// The definition.
    pub config: StreamConfig,
    /// Each partition, in order.
    pub partitions: Vec<PartitionInfo>,
}

/// A durable consumer's definition and its position in each partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerInfo {
    /// The definition.
    pub config: ConsumerConfig,
    /// Each partition, in order.
    pub partitions: Vec<ConsumerPartitionInfo>,
}

struct Catalog {
    store: MetaStore<FsDir>,
    streams: BTreeMap<String, StreamConfig>,
    consumers: BTreeMap<(String, String), ConsumerConfig>,
}

struct Inner {
    runtime: RuntimeHandle,
    root: Arc<PathBuf>,
    catalog: Mutex<Catalog>,
    next_member: AtomicU64,
    next_home: AtomicUsize,
}

/// The streams of one runtime, for threads that are not shards. Cheap to clone. Open
/// one `Streams` per runtime.
#[derive(Clone)]
pub struct Streams {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Streams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Streams")
            .field("root", &self.inner.root)
            .finish()
    }
}

thread_local! {
    /// The shard this thread publishes through (keeps its publishes in order).
    static HOME: Cell<Option<usize>> = const { Cell::new(None) };
}

impl Streams {
    /// Opens the streams stored under `data_dir` (created if missing) on `runtime`:
    /// reads the catalog, opens and recovers every partition on its owner shard, and
    /// restores durable consumers' positions.
    pub fn open(runtime: RuntimeHandle, data_dir: impl AsRef<Path>) -> Result<Self, StreamError> {
        let root = data_dir.as_ref().to_path_buf();
        let meta_dir = FsDir::open(root.join("meta"), true)?;
        let (store, _) = MetaStore::open(meta_dir, MetaConfig::default())?;
        let mut catalog = Catalog {
            store,
            streams: BTreeMap::new(),
            consumers: BTreeMap::new(),
        };
        load_catalog(&mut catalog)?;
        let streams = Self {
            inner: Arc::new(Inner {
                runtime,
                root: Arc::new(root),
                catalog: Mutex::new(catalog),
                next_member: AtomicU64::new(1),
                next_home: AtomicUsize::new(0),
            }),
        };
        let catalog = streams.catalog();
        for config in catalog.streams.values() {
            streams.install(config.clone())?;
        }
        for ((stream, _), config) in &catalog.consumers {
            streams.install_consumer(stream, config)?;
        }
        drop(catalog);
        Ok(streams)
    }

    fn catalog(&self) -> MutexGuard<'_, Catalog> {
        match self.inner.catalog.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    fn shards(&self) -> usize {
        self.inner.runtime.shard_count()
    }

    fn home(&self) -> usize {
        let shards = self.shards();
        HOME.with(|home| match home.get() {
            Some(shard) if shard < shards => shard,
            _ => {
                let shard = self.inner.next_home.fetch_add(1, Ordering::Relaxed) % shards;
                home.set(Some(shard));
                shard
            }
        })
    }

    /// Installs `config` on every shard.
    fn install(&self, config: StreamConfig) -> Result<(), StreamError> {
        let def = Arc::new(StreamDef::new(
            config,
            self.inner.root.clone(),
            self.shards(),
        )?);
        for shard in 0..self.shards() {
            let def = def.clone();
            self.inner.runtime.call(shard, move |ctx: &mut ShardCtx| {
                ShardStreams::get(ctx).install(ctx, def)
            })??;
        }
        Ok(())
    }

    fn install_consumer(&self, stream: &str, config: &ConsumerConfig) -> Result<(), StreamError> {
        let name = config.durable.clone().unwrap_or_default();
        self.add_cursors(stream, &name, config)
    }

    fn add_cursors(
        &self,
        stream: &str,
        group: &str,
        config: &ConsumerConfig,
    ) -> Result<(), StreamError> {
        let cursor = Arc::new(CursorConfig {
            ack: config.ack,
            ack_wait: config.ack_wait,
            max_deliver: config.max_deliver,
            filter: config.validate()?,
            durable: config.durable.is_some(),
        });
        let (stream, group): (Arc<str>, Arc<str>) = (stream.into(), group.into());
        for shard in 0..self.shards() {
            let (stream, group, cursor, deliver) = (
                stream.clone(),
                group.clone(),
                cursor.clone(),
                config.deliver,
            );
            self.inner.runtime.call(shard, move |ctx: &mut ShardCtx| {
                ShardStreams::get(ctx).add_cursors(ctx, &stream, &group, &cursor, deliver)
            })??;
        }
        Ok(())
    }

    fn remove_cursors(&self, stream: &str, group: &str) -> Result<(), StreamError> {
        let (stream, group): (Arc<str>, Arc<str>) = (stream.into(), group.into());
        for shard in 0..self.shards() {
            let (stream, group) = (stream.clone(), group.clone());
            self.inner.runtime.call(shard, move |ctx: &mut ShardCtx| {
                ShardStreams::get(ctx).remove_cursors(&stream, &group);
            })?;
        }
        Ok(())
    }

    /// Creates a stream. Idempotent when a stream of that name exists with the same
    /// definition; `AlreadyExists` when it differs; `SubjectOverlap` when another
    /// stream captures some of its subjects.
    pub fn create(&self, config: StreamConfig) -> Result<(), StreamError> {
        let patterns = config.validate()?;
        let mut catalog = self.catalog();
        if let Some(existing) = catalog.streams.get(&config.name) {
            return match *existing == config {
                true => Ok(()),
                false => Err(StreamError::AlreadyExists {
                    kind: "stream",
                    name: config.name.clone(),
                }),
            };
        }
        check_overlap(&catalog, &config, &patterns)?;
        let key = format!("{STREAM_KEY}{}", config.name).into_bytes();
        let op = Op::Put {
            key: key.clone(),
            value: config.encode(),
        };
        write_ops(&mut catalog.store, &[op])?;
        catalog.streams.insert(config.name.clone(), config.clone());
        if let Err(error) = self.install(config.clone()) {
            self.uninstall(&config.name);
            catalog.streams.remove(&config.name);
            let _ = write_ops(&mut catalog.store, &[Op::Delete { key }]);
            return Err(error);
        }
        Ok(())
    }

    /// Changes a stream's limits: retention, `max_record_bytes`, `dedup_window` and
    /// `dead_letter`. Anything else differing is `Invalid`.
    pub fn update(&self, config: StreamConfig) -> Result<(), StreamError> {
        config.validate()?;
        let mut catalog = self.catalog();
        let existing = catalog
            .streams
            .get(&config.name)
            .ok_or_else(|| StreamError::stream_not_found(&config.name))?;
        if !existing.same_shape(&config) {
            let why = "only retention, max_record_bytes, dedup_window and dead_letter may change";
            return Err(StreamError::invalid("update", why));
        }
        let op = Op::Put {
            key: format!("{STREAM_KEY}{}", config.name).into_bytes(),
            value: config.encode(),
        };
        write_ops(&mut catalog.store, &[op])?;
        catalog.streams.insert(config.name.clone(), config.clone());
        self.install(config)
    }

    /// Deletes a stream, its consumers and its records.
    pub fn delete(&self, name: &str) -> Result<(), StreamError> {
        let mut catalog = self.catalog();
        if !catalog.streams.contains_key(name) {
            return Err(StreamError::stream_not_found(name));
        }
        let consumers: Vec<(String, String)> = catalog
            .consumers
            .keys()
            .filter(|(s, _)| s == name)
            .cloned()
            .collect();
        let mut ops = vec![Op::Delete {
            key: format!("{STREAM_KEY}{name}").into_bytes(),
        }];
        ops.extend(consumers.iter().map(|(s, c)| Op::Delete {
            key: format!("{CONSUMER_KEY}{s}/{c}").into_bytes(),
        }));
        write_ops(&mut catalog.store, &ops)?;
        catalog.streams.remove(name);
        for key in &consumers {
            catalog.consumers.remove(key);
        }
        self.uninstall(name);
        let dir = self.inner.root.join("streams").join(name);
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(crate::storage::StorageError::from_io("remove stream", dir, e).into()),
        }
    }

    fn uninstall(&self, name: &str) {
        for shard in 0..self.shards() {
            let name = name.to_owned();
            let removed = self.inner.runtime.call(shard, move |ctx: &mut ShardCtx| {
                ShardStreams::get(ctx).uninstall(ctx, &name);
            });
            if let Err(error) = removed {
                tracing::error!(%error, shard, "cannot remove a stream from a shard");
            }
        }
    }

    /// The names of the streams, sorted.
    pub fn list(&self) -> Vec<String> {
        self.catalog().streams.keys().cloned().collect()
    }

    /// A stream's definition and each partition's first and next offset, records and
    /// bytes.
    pub fn info(&self, name: &str) -> Result<StreamInfo, StreamError> {
        let config = self
            .catalog()
            .streams
            .get(name)
            .cloned()
            .ok_or_else(|| StreamError::stream_not_found(name))?;
        let stream: Arc<str> = name.into();
        let mut partitions = Vec::new();
        for shard in 0..self.shards() {
            let stream = stream.clone();
            partitions.extend(self.inner.runtime.call(shard, move |ctx: &mut ShardCtx| {
                ShardStreams::get(ctx).infos(ctx, &stream)
            })?);
        }
        partitions.sort_by_key(|p| p.partition);
        Ok(StreamInfo { config, partitions })
    }

    /// Creates a durable consumer (`config.durable` names it) on `stream`, positioned
    /// by `config.deliver` in every partition. Idempotent when it exists with the same
    /// definition.
    pub fn create_consumer(&self, stream: &str, config: ConsumerConfig) -> Result<(), StreamError> {
        config.validate()?;
        let Some(name) = config.durable.clone() else {
            return Err(StreamError::invalid(
                "durable",
                "a created consumer needs a name; use subscribe for an ephemeral one",
            ));
        };
        let mut catalog = self.catalog();
        if !catalog.streams.contains_key(stream) {
            return Err(StreamError::stream_not_found(stream));
        }
        let key = (stream.to_owned(), name.clone());
        if let Some(existing) = catalog.consumers.get(&key) {
            return match *existing == config {
                true => Ok(()),
                false => Err(StreamError::AlreadyExists {
                    kind: "consumer",
                    name,
                }),
            };
        }
        let op = Op::Put {
            key: format!("{CONSUMER_KEY}{stream}/{name}").into_bytes(),
            value: config.encode(),
        };
        write_ops(&mut catalog.store, &[op])?;
        catalog.consumers.insert(key, config.clone());
        self.install_consumer(stream, &config)
    }

    /// Deletes a durable consumer: its members are closed and its positions removed.
    pub fn delete_consumer(&self, stream: &str, name: &str) -> Result<(), StreamError> {
        let mut catalog = self.catalog();
        let key = (stream.to_owned(), name.to_owned());
        if !catalog.consumers.contains_key(&key) {
            return Err(StreamError::consumer_not_found(name));
        }
        let op = Op::Delete {
            key: format!("{CONSUMER_KEY}{stream}/{name}").into_bytes(),
        };
        write_ops(&mut catalog.store, &[op])?;
        catalog.consumers.remove(&key);
        let (s, g): (Arc<str>, Arc<str>) = (stream.into(), name.into());
        let coordinator = self.coordinator(stream, name);
        self.inner
            .runtime
            .call(coordinator, move |ctx: &mut ShardCtx| {
                ShardStreams::get(ctx).drop_group(&s, &g);
            })?;
        self.remove_cursors(stream, name)
    }

    /// The durable consumers of `stream`, sorted.
    pub fn consumers(&self, stream: &str) -> Vec<String> {
        self.catalog()
            .consumers
            .keys()
            .filter(|(s, _)| s == stream)
            .map(|(_, c)| c.clone())
            .collect()
    }

    /// A durable consumer's definition and position in each partition.
    pub fn consumer_info(&self, stream: &str, name: &str) -> Result<ConsumerInfo, StreamError> {
        let config = self
            .catalog()
            .consumers
            .get(&(stream.to_owned(), name.to_owned()))
            .cloned()
            .ok_or_else(|| StreamError::consumer_not_found(name))?;
        let (s, g): (Arc<str>, Arc<str>) = (stream.into(), name.into());
        let mut partitions = Vec::new();
        for shard in 0..self.shards() {
            let (s, g) = (s.clone(), g.clone());
            partitions.extend(self.inner.runtime.call(shard, move |ctx: &mut ShardCtx| {
                ShardStreams::get(ctx).consumer_infos(&s, &g)
            })?);
        }
        partitions.sort_by_key(|p| p.partition);
        Ok(ConsumerInfo { config, partitions })
    }

    fn coordinator(&self, stream: &str, group: &str) -> usize {
        shard_for(format!("{stream}/{group}").as_bytes(), self.shards())
    }

    /// Joins durable consumer `name` of `stream` as a new member: the group's
    /// partitions are rebalanced over its members.
    pub fn join(&self, stream: &str, name: &str) -> Result<Consumer, StreamError> {
        // Held while joining, so a concurrent delete cannot leave a member in a group
        // without cursors.
        let catalog = self.catalog();
        let config = catalog
            .consumers
            .get(&(stream.to_owned(), name.to_owned()))
            .cloned()
            .ok_or_else(|| StreamError::consumer_not_found(name))?;
        let partitions = partitions_of(&catalog, stream)?;
        self.add_member(stream, name, &config, partitions, false)
    }

    /// An ephemeral consumer of `stream` (`config.durable` must be `None`): one member,
    /// not persisted, deleted when dropped.
    pub fn subscribe(&self, stream: &str, config: ConsumerConfig) -> Result<Consumer, StreamError> {
        if config.durable.is_some() {
            return Err(StreamError::invalid(
                "durable",
                "use create_consumer and join for a durable consumer",
            ));
        }
        config.validate()?;
        let catalog = self.catalog();
        let partitions = partitions_of(&catalog, stream)?;
        let n = self.inner.next_member.fetch_add(1, Ordering::Relaxed);
        // '.' cannot appear in a consumer name: no clash with a durable one.
        let group = format!("_eph.{n}");
        self.add_cursors(stream, &group, &config)?;
        self.add_member(stream, &group, &config, partitions, true)
            .inspect_err(|_| {
                let _ = self.remove_cursors(stream, &group);
            })
    }

    fn add_member(
        &self,
        stream: &str,
        group: &str,
        config: &ConsumerConfig,
        partitions: u32,
        ephemeral: bool,
    ) -> Result<Consumer, StreamError> {
        let id = self.inner.next_member.fetch_add(1, Ordering::Relaxed);
        let member = Member::new(
            id,
            partitions,
            config.max_ack_pending,
            config.ack == AckPolicy::None,
            self.inner.runtime.clone(),
        )
        .map_err(StreamError::Wait)?;
        let (s, g): (Arc<str>, Arc<str>) = (stream.into(), group.into());
        let heartbeat = config.heartbeat_timeout;
        let joined = member.clone();
        self.inner.runtime.call(
            self.coordinator(stream, group),
            move |ctx: &mut ShardCtx| ShardStreams::get(ctx).join(ctx, &s, &g, joined, heartbeat),
        )??;
        Ok(Consumer {
            member,
            streams: self.clone(),
            stream: stream.into(),
            group: group.into(),
            ephemeral,
            heartbeat_timeout: heartbeat,
        })
    }

    /// A member leaves (its `Consumer` was dropped); an ephemeral group goes with it.
    pub(crate) fn leave(&self, stream: &Arc<str>, group: &Arc<str>, id: MemberId, ephemeral: bool) {
        let (s, g) = (stream.clone(), group.clone());
        let runtime = self.inner.runtime.clone();
        let leave = move |ctx: &mut ShardCtx| {
            let empty = ShardStreams::get(ctx).leave(ctx, &s, &g, id);
            if !(ephemeral && empty) {
                return;
            }
            for shard in 0..runtime.shard_count() {
                let (s, g) = (s.clone(), g.clone());
                let remove =
                    move |ctx: &mut ShardCtx| ShardStreams::get(ctx).remove_cursors(&s, &g);
                if let Err(error) = ctx.send_or_spawn(shard, remove) {
                    tracing::error!(%error, "cursor removal lost: the engine's queues are full");
                }
            }
        };
        if let Err(error) = self
            .inner
            .runtime
            .spawn(self.coordinator(stream, group), leave)
        {
            tracing::warn!(%error, "consumer could not leave its group (engine stopping?)");
        }
    }

    /// Publishes one record and waits until it is stored under its stream's durability
    /// policy (or refused).
    pub fn publish(&self, record: Publish) -> Result<PublishAck, StreamError> {
        let mut results = self.publish_batch(vec![record])?;
        results
            .pop()
            .unwrap_or_else(|| Err(StreamError::Task("publish lost its answer".into())))
    }

    /// Publishes `records` (one task per batch, one log append per partition) and waits
    /// for every answer: one result per record, in order.
    pub fn publish_batch(
        &self,
        records: Vec<Publish>,
    ) -> Result<Vec<Result<PublishAck, StreamError>>, StreamError> {
        let (tx, rx) = mpsc::sync_channel(1);
        self.publish_with(records, move |results| {
            let _ = tx.send(results);
        })?;
        rx.recv().map_err(|_| StreamError::ShuttingDown)
    }

    /// Publishes `records` without waiting: `done` runs on a shard with one result per
    /// record, in order, once all are answered. Returns once the batch is queued.
    pub fn publish_with<F>(&self, records: Vec<Publish>, done: F) -> Result<(), StreamError>
    where
        F: FnOnce(Vec<Result<PublishAck, StreamError>>) + Send + 'static,
    {
        check_records(&records)?;
        let reply: PublishReply = Box::new(done);
        self.inner
            .runtime
            .spawn(self.home(), move |ctx: &mut ShardCtx| {
                ShardStreams::get(ctx).publish(ctx, records, reply);
            })?;
        Ok(())
    }

    /// `publish_with` for code running on a shard (the network server): the records
    /// are routed from this shard, without a hop through a home shard.
    pub(crate) fn publish_on_shard<F>(
        ctx: &mut ShardCtx,
        records: Vec<Publish>,
        done: F,
    ) -> Result<(), StreamError>
    where
        F: FnOnce(Vec<Result<PublishAck, StreamError>>) + Send + 'static,
    {
        check_records(&records)?;
        ShardStreams::get(ctx).publish(ctx, records, Box::new(done));
        Ok(())
    }
}

/// The checks every publish passes before it is routed: valid subjects, no reserved
/// headers.
pub(crate) fn check_records(records: &[Publish]) -> Result<(), StreamError> {
    let mut checked: Option<&str> = None;
    for record in records {
        if checked != Some(record.subject.as_str()) {
            config::check_subject(&record.subject)?;
            checked = Some(&record.subject);
        }
        record.check_headers()?;
    }
    Ok(())
}

fn partitions_of(catalog: &Catalog, stream: &str) -> Result<u32, StreamError> {
    catalog
        .streams
        .get(stream)
        .map(|s| s.partitions)
        .ok_or_else(|| StreamError::stream_not_found(stream))
}

fn check_overlap(
    catalog: &Catalog,
    config: &StreamConfig,
    patterns: &[crate::routing::Pattern],
) -> Result<(), StreamError> {
    for other in catalog.streams.values() {
        for text in &other.subjects {
            let Ok(theirs) = crate::routing::Pattern::parse(text, crate::routing::Syntax::Subjects)
            else {
                continue;
            };
            if let Some(i) = patterns.iter().position(|p| patterns_overlap(p, &theirs)) {
                return Err(StreamError::SubjectOverlap {
                    subject: config.subjects[i].clone(),
                    stream: other.name.clone(),
                    pattern: text.clone(),
                });
            }
        }
    }
    Ok(())
}

fn load_catalog(catalog: &mut Catalog) -> Result<(), StreamError> {
    let bad = |key: &[u8], e: DecodeError| {
        StreamError::Storage(crate::storage::StorageError::Corrupt {
            path: PathBuf::from(String::from_utf8_lossy(key).into_owned()),
            position: 0,
            reason: e.to_string(),
        })
    };
    for (key, value) in catalog.store.iter() {
        if let Some(name) = key.strip_prefix(STREAM_KEY.as_bytes()) {
            let config = StreamConfig::decode(value).map_err(|e| bad(key, e))?;
            catalog
                .streams
                .insert(String::from_utf8_lossy(name).into_owned(), config);
        } else if let Some(rest) = key.strip_prefix(CONSUMER_KEY.as_bytes()) {
            let config = ConsumerConfig::decode(value).map_err(|e| bad(key, e))?;
            let rest = String::from_utf8_lossy(rest).into_owned();
            if let Some((stream, name)) = rest.split_once('/') {
                catalog
                    .consumers
                    .insert((stream.to_owned(), name.to_owned()), config);
            }
        }
    }
    Ok(())
}
