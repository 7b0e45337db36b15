//! Exchanges, bindings and work queues (the RabbitMQ / AMQP 0-9-1 model).
//!
//! Owns: the API for threads that are not shards (`Queues`, `QueueConsumer`), the
//! catalog of durable exchanges, queues and bindings (a metadata store under
//! `<data>/amqp`, read on open), and installing definitions on every shard. Never:
//! confirms a persistent message to a durable queue before it is stored, or routes on
//! anything but the publishing shard's copy of the routing table.
//!
//! How it works (`docs/architecture.md`, "Exchanges and queues"):
//! - Every shard holds the whole routing table (`routing::RoutingTable`): exchanges,
//!   bindings, queue names. A publish is routed on the publishing thread's home shard;
//!   the copies for the queues of each owner shard (`xxh3(queue) % shards`) travel as
//!   one task; payloads are shared `Bytes`.
//! - The owner keeps the queue (`state::QueueState`): ready messages by priority,
//!   consumers in turn with their prefetch windows, unacknowledged deliveries. A durable
//!   queue has a log: persistent messages are appended before they are enqueued (the
//!   publish is confirmed when stored), acknowledgements are appended as ack records,
//!   and on open the log is replayed (unacknowledged messages come back, flagged
//!   redelivered). Segments whose messages are all acknowledged are removed.
//! - Dead letters (rejected, expired, pushed out by `max_length`) are re-published on
//!   the owner to the queue's dead-letter exchange with a death record.

mod config;
mod consumer;
mod error;
mod message;
mod shard;
mod state;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex, MutexGuard};

use bytes::Bytes;

pub use config::{
    validate_name, ExchangeConfig, Overflow, QueueArgs, QueueConfig, NAME_BYTES_MAX, PRIORITY_LIMIT,
};
pub use consumer::QueueConsumer;
pub use error::QueueError;
pub use message::{Death, DeathReason, Delivery, Message, Properties};
pub use shard::Confirm;

use consumer::ConsumerBuffer;
use shard::{owner_of, Item, PublishReply, ShardQueues};
use state::ConsumerSlot;

pub use crate::routing::ExchangeKind;
use crate::routing::{Binding, Destination, RoutingTable, DEFAULT_EXCHANGE};
use crate::runtime::{RuntimeHandle, ShardCtx};
use crate::storage::meta::{MetaConfig, MetaStore, Op};
use crate::storage::meta_value::{ValueReader, ValueWriter};
use crate::storage::{FsDir, StorageError};

const EXCHANGE_KEY: &str = "x/";
const QUEUE_KEY: &str = "q/";
const BINDING_KEY: &str = "b/";
/// The largest message payload (one message is one record of a queue's log).
pub const MESSAGE_BYTES_MAX: usize = 32 << 20;
/// A consumer's buffer when its prefetch is 0 (unlimited) or it does not ack.
const BUFFER_DEFAULT: usize = 1000;

/// How a consumer receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConsumeOptions {
    /// Unacknowledged deliveries at most (0: no limit; the buffer is then 1000).
    pub prefetch: u32,
    /// Deliveries count as acknowledged when sent (no `ack`; at most once).
    pub no_ack: bool,
}

impl Default for ConsumeOptions {
    fn default() -> Self {
        Self {
            prefetch: 100,
            no_ack: false,
        }
    }
}

/// A queue's figures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueInfo {
    /// Its name (generated for an empty declared name).
    pub name: String,
    /// Ready messages.
    pub messages: u64,
    /// Delivered and not yet acknowledged.
    pub unacked: usize,
    /// Consumers.
    pub consumers: usize,
}

struct Catalog {
    store: MetaStore<FsDir>,
    exchanges: BTreeMap<String, ExchangeConfig>,
    queues: BTreeMap<String, QueueConfig>,
    /// Durable bindings: (source exchange, binding).
    bindings: Vec<(String, Binding)>,
    /// Every binding, to check `if_unused` and to rebuild nothing on the API side.
    table: RoutingTable,
    /// Exclusive queues and the connection that owns each.
    owners: std::collections::HashMap<String, u64>,
}

impl Catalog {
    /// Writes `ops` to the catalog store (one atomic batch).
    fn write(&mut self, ops: &[Op]) -> Result<(), QueueError> {
        self.store
            .write_blocking(ops)
            .map_err(|e| QueueError::StoreFailed(e.to_string()))
    }

    /// Deletes definition `key` and the durable bindings `doomed` selects, in one write.
    fn delete_with_bindings(
        &mut self,
        key: Vec<u8>,
        doomed: impl Fn(&str, &Binding) -> bool,
    ) -> Result<(), QueueError> {
        let mut ops = vec![Op::Delete { key }];
        ops.extend(
            self.bindings
                .iter()
                .filter(|(s, b)| doomed(s, b))
                .map(|(s, b)| Op::Delete {
                    key: binding_key(s, b),
                }),
        );
        self.write(&ops)?;
        self.bindings.retain(|(s, b)| !doomed(s, b));
        Ok(())
    }

    /// Whether connection `conn` (None: the plain `Queues` handle) may use `queue`.
    fn check_access(&self, queue: &str, conn: Option<u64>) -> Result<(), QueueError> {
        match self.owners.get(queue) {
            Some(owner) if Some(*owner) != conn => Err(QueueError::Locked(queue.to_owned())),
            _ => Ok(()),
        }
    }
}

struct Inner {
    runtime: RuntimeHandle,
    root: PathBuf,
    catalog: Mutex<Catalog>,
    next_id: AtomicU64,
    next_home: AtomicUsize,
}

/// The exchanges and queues of one runtime, for threads that are not shards. Cheap to
/// clone. Open one per runtime.
#[derive(Clone)]
pub struct Queues {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Queues {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Queues")
            .field("root", &self.inner.root)
            .finish()
    }
}

thread_local! {
    static HOME: std::cell::Cell<Option<usize>> = const { std::cell::Cell::new(None) };
}

impl Queues {
    /// Opens the exchanges and queues stored under `data_dir` (created if missing):
    /// durable definitions are installed on every shard, durable queues recover their
    /// persistent messages.
    pub fn open(runtime: RuntimeHandle, data_dir: impl AsRef<Path>) -> Result<Self, QueueError> {
        let root = data_dir.as_ref().to_path_buf();
        let (store, _) = MetaStore::open(
            FsDir::open(root.join("amqp").join("meta"), true)?,
            MetaConfig::default(),
        )?;
        let mut catalog = Catalog {
            store,
            exchanges: BTreeMap::new(),
            queues: BTreeMap::new(),
            bindings: Vec::new(),
            table: RoutingTable::new(),
            owners: std::collections::HashMap::new(),
        };
        load(&mut catalog)?;
        let queues = Self {
            inner: Arc::new(Inner {
                runtime,
                root,
                catalog: Mutex::new(catalog),
                next_id: AtomicU64::new(1),
                next_home: AtomicUsize::new(0),
            }),
        };
        let api = queues.clone();
        queues.on_every_shard(move |ctx| ShardQueues::get(ctx).set_api(api.clone()))?;
        let catalog = queues.catalog();
        for exchange in catalog.exchanges.values() {
            queues.install_exchange(exchange.clone())?;
        }
        for queue in catalog.queues.values() {
            queues.install_queue(queue.clone())?;
        }
        for (source, binding) in &catalog.bindings {
            queues.install_binding(source, binding.clone())?;
        }
        drop(catalog);
        Ok(queues)
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

    fn on_every_shard<F, R>(&self, f: F) -> Result<Vec<R>, QueueError>
    where
        F: Fn(&mut ShardCtx) -> R + Clone + Send + 'static,
        R: Send + 'static,
    {
        (0..self.shards())
            .map(|shard| Ok(self.inner.runtime.call(shard, f.clone())?))
            .collect()
    }

    fn install_exchange(&self, config: ExchangeConfig) -> Result<(), QueueError> {
        self.on_every_shard(move |ctx| ShardQueues::get(ctx).add_exchange(&config))?;
        Ok(())
    }

    fn queue_dir(&self, name: &str) -> PathBuf {
        let hash = xxhash_rust::xxh3::xxh3_64(name.as_bytes());
        self.inner
            .root
            .join("amqp")
            .join("queues")
            .join(format!("q-{hash:016x}"))
    }

    fn install_queue(&self, config: QueueConfig) -> Result<(), QueueError> {
        let owner = owner_of(&config.name, self.shards());
        let dir = (config.durable && !config.exclusive).then(|| self.queue_dir(&config.name));
        let config = Arc::new(config);
        for result in self.on_every_shard(move |ctx| {
            ShardQueues::get(ctx).add_queue(ctx, config.clone(), owner, dir.clone())
        })? {
            result?;
        }
        Ok(())
    }

    fn install_binding(&self, source: &str, binding: Binding) -> Result<(), QueueError> {
        let source = source.to_owned();
        for result in
            self.on_every_shard(move |ctx| ShardQueues::get(ctx).bind(&source, binding.clone()))?
        {
            result?;
        }
        Ok(())
    }

    /// Declares an exchange: created if missing; `Ok` if it exists with the same kind
    /// and durability; `Mismatch` if it differs.
    pub fn declare_exchange(&self, config: ExchangeConfig) -> Result<(), QueueError> {
        config.validate()?;
        let mut catalog = self.catalog();
        if let Some(existing) = catalog.exchanges.get(&config.name) {
            return match *existing == config {
                true => Ok(()),
                false => Err(QueueError::Mismatch {
                    kind: "exchange",
                    name: config.name,
                }),
            };
        }
        if config.durable {
            let op = Op::Put {
                key: format!("{EXCHANGE_KEY}{}", config.name).into_bytes(),
                value: config.encode(),
            };
            catalog.write(&[op])?;
        }
        catalog.table.add_exchange(&config.name, config.kind);
        catalog
            .exchanges
            .insert(config.name.clone(), config.clone());
        self.install_exchange(config)
    }

    /// Deletes an exchange and its bindings; with `if_unused`, `InUse` while it has
    /// bindings.
    pub fn delete_exchange(&self, name: &str, if_unused: bool) -> Result<(), QueueError> {
        let mut catalog = self.catalog();
        if !catalog.exchanges.contains_key(name) {
            return Err(QueueError::no_exchange(name));
        }
        let has_bindings = !catalog.table.bindings(name).is_empty();
        if if_unused && has_bindings {
            return Err(QueueError::InUse {
                kind: "exchange",
                name: name.to_owned(),
            });
        }
        let dest = Destination::Exchange(Arc::from(name));
        let key = format!("{EXCHANGE_KEY}{name}").into_bytes();
        catalog.delete_with_bindings(key, |s, b| s == name || b.destination == dest)?;
        catalog.exchanges.remove(name);
        catalog.table.remove_exchange(name);
        let name = name.to_owned();
        self.on_every_shard(move |ctx| ShardQueues::get(ctx).remove_exchange(&name))?;
        Ok(())
    }

    /// Declares a queue: created if missing (an empty name gets a generated one);
    /// `Ok` with its figures if it exists with the same definition; `Mismatch` if not.
    pub fn declare_queue(&self, config: QueueConfig) -> Result<QueueInfo, QueueError> {
        self.declare_queue_as(None, config)
    }

    fn declare_queue_as(
        &self,
        conn: Option<u64>,
        mut config: QueueConfig,
    ) -> Result<QueueInfo, QueueError> {
        if config.name.is_empty() {
            let n = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
            config.name = format!("amq.gen-{:016x}-{n}", crate::runtime::unix_ms());
        }
        config.validate()?;
        if config.exclusive && conn.is_none() {
            let why = "an exclusive queue is declared through a Connection (Queues::connection)";
            return Err(QueueError::invalid("exclusive", why));
        }
        let mut catalog = self.catalog();
        catalog.check_access(&config.name, conn)?;
        if let Some(existing) = catalog.queues.get(&config.name) {
            if *existing != config {
                return Err(QueueError::Mismatch {
                    kind: "queue",
                    name: config.name,
                });
            }
            drop(catalog);
            return self.queue_info(&config.name);
        }
        // Exclusive queues end with their connection: never persisted.
        if config.durable && !config.exclusive {
            let op = Op::Put {
                key: format!("{QUEUE_KEY}{}", config.name).into_bytes(),
                value: config.encode(),
            };
            catalog.write(&[op])?;
        }
        if let (true, Some(conn)) = (config.exclusive, conn) {
            catalog.owners.insert(config.name.clone(), conn);
        }
        catalog.table.add_queue(&config.name);
        catalog.queues.insert(config.name.clone(), config.clone());
        let name = config.name.clone();
        self.install_queue(config)?;
        drop(catalog);
        self.queue_info(&name)
    }

    /// Deletes a queue, its bindings and its messages; returns how many messages were
    /// ready. `if_unused`: `InUse` while it has consumers; `if_empty`: while it holds
    /// messages.
    pub fn delete_queue(
        &self,
        name: &str,
        if_unused: bool,
        if_empty: bool,
    ) -> Result<u64, QueueError> {
        self.delete_queue_as(Access::As(None), name, if_unused, if_empty)
    }

    pub(crate) fn delete_queue_as(
        &self,
        access: Access,
        name: &str,
        if_unused: bool,
        if_empty: bool,
    ) -> Result<u64, QueueError> {
        let mut catalog = self.catalog();
        if !catalog.queues.contains_key(name) {
            return Err(QueueError::no_queue(name));
        }
        if let Access::As(conn) = access {
            catalog.check_access(name, conn)?;
        }
        let info = self.queue_info(name)?;
        if (if_unused && info.consumers > 0)
            || (if_empty && info.messages + info.unacked as u64 > 0)
        {
            return Err(QueueError::InUse {
                kind: "queue",
                name: name.to_owned(),
            });
        }
        let dest = Destination::Queue(Arc::from(name));
        let key = format!("{QUEUE_KEY}{name}").into_bytes();
        catalog.delete_with_bindings(key, |_, b| b.destination == dest)?;
        catalog.queues.remove(name);
        catalog.owners.remove(name);
        catalog.table.remove_queue(name);
        let queue = name.to_owned();
        let removed =
            self.on_every_shard(move |_ctx| ShardQueues::get(_ctx).remove_queue(&queue))?;
        let dir = self.queue_dir(name);
        if let Err(e) = std::fs::remove_dir_all(&dir) {
            if e.kind() != std::io::ErrorKind::NotFound {
                return Err(StorageError::from_io("remove queue", dir, e).into());
            }
        }
        Ok(removed.into_iter().sum())
    }

    /// Removes every ready message of a queue; returns how many.
    pub fn purge_queue(&self, name: &str) -> Result<u64, QueueError> {
        self.purge_queue_as(None, name)
    }

    fn purge_queue_as(&self, conn: Option<u64>, name: &str) -> Result<u64, QueueError> {
        self.catalog().check_access(name, conn)?;
        let queue = name.to_owned();
        self.inner
            .runtime
            .call(owner_of(name, self.shards()), move |ctx: &mut ShardCtx| {
                ShardQueues::get(ctx).purge(ctx, &queue)
            })?
    }

    /// Every declared exchange (durable or not), by name. The default exchange (`""`)
    /// is built in and not listed.
    pub fn exchanges(&self) -> Vec<ExchangeConfig> {
        self.catalog().exchanges.values().cloned().collect()
    }

    /// Every declared queue (durable or not, exclusive ones included), by name.
    pub fn queues(&self) -> Vec<QueueConfig> {
        self.catalog().queues.values().cloned().collect()
    }

    /// A queue's figures.
    pub fn queue_info(&self, name: &str) -> Result<QueueInfo, QueueError> {
        let queue = name.to_owned();
        let figures = self
            .inner
            .runtime
            .call(owner_of(name, self.shards()), move |ctx: &mut ShardCtx| {
                ShardQueues::get(ctx).figures(&queue)
            })?
            .ok_or_else(|| QueueError::no_queue(name))?;
        Ok(QueueInfo {
            name: name.to_owned(),
            messages: figures.0,
            unacked: figures.1,
            consumers: figures.2,
        })
    }

    /// Binds queue `queue` to `exchange` with `routing_key` (and, for a headers
    /// exchange, `arguments` with `x-match`). Binding twice is a no-op.
    pub fn bind_queue(
        &self,
        queue: &str,
        exchange: &str,
        routing_key: &str,
        arguments: Vec<(Bytes, Bytes)>,
    ) -> Result<(), QueueError> {
        let binding = Binding::new(Destination::Queue(Arc::from(queue)), routing_key, arguments);
        self.bind(exchange, binding)
    }

    /// Binds exchange `destination` to exchange `source` (exchange-to-exchange).
    pub fn bind_exchange(
        &self,
        destination: &str,
        source: &str,
        routing_key: &str,
        arguments: Vec<(Bytes, Bytes)>,
    ) -> Result<(), QueueError> {
        let binding = Binding::new(
            Destination::Exchange(Arc::from(destination)),
            routing_key,
            arguments,
        );
        self.bind(source, binding)
    }

    fn bind(&self, source: &str, binding: Binding) -> Result<(), QueueError> {
        self.bind_as(None, source, binding)
    }

    fn bind_as(&self, conn: Option<u64>, source: &str, binding: Binding) -> Result<(), QueueError> {
        let mut catalog = self.catalog();
        if let Destination::Queue(queue) = &binding.destination {
            catalog.check_access(queue, conn)?;
        }
        let durable_dest = match &binding.destination {
            Destination::Queue(q) => catalog
                .queues
                .get(&**q)
                .map(|c| c.durable)
                .ok_or_else(|| QueueError::no_queue(q))?,
            Destination::Exchange(e) => catalog
                .exchanges
                .get(&**e)
                .map(|c| c.durable)
                .ok_or_else(|| QueueError::no_exchange(e))?,
        };
        let durable_source = catalog.exchanges.get(source).map(|c| c.durable);
        if source == DEFAULT_EXCHANGE {
            return Err(crate::routing::RouteError::DefaultExchange.into());
        }
        let durable_source = durable_source.ok_or_else(|| QueueError::no_exchange(source))?;
        if catalog.table.has_binding(source, &binding) {
            return Ok(());
        }
        catalog.table.bind(source, binding.clone())?;
        if durable_source && durable_dest {
            let op = Op::Put {
                key: binding_key(source, &binding),
                value: Vec::new(),
            };
            if let Err(error) = catalog.write(&[op]) {
                catalog.table.unbind(source, &binding);
                return Err(error);
            }
            catalog.bindings.push((source.to_owned(), binding.clone()));
        }
        self.install_binding(source, binding)
    }

    /// Removes a queue binding; `NotFound` if there was none.
    pub fn unbind_queue(
        &self,
        queue: &str,
        exchange: &str,
        routing_key: &str,
        arguments: Vec<(Bytes, Bytes)>,
    ) -> Result<(), QueueError> {
        let binding = Binding::new(Destination::Queue(Arc::from(queue)), routing_key, arguments);
        self.unbind(exchange, binding)
    }

    /// Removes the binding of exchange `destination` to exchange `source`; `NotFound`
    /// if there was none.
    pub fn unbind_exchange(
        &self,
        destination: &str,
        source: &str,
        routing_key: &str,
        arguments: Vec<(Bytes, Bytes)>,
    ) -> Result<(), QueueError> {
        let binding = Binding::new(
            Destination::Exchange(Arc::from(destination)),
            routing_key,
            arguments,
        );
        self.unbind(source, binding)
    }

    /// Removes `binding` of exchange `exchange` everywhere: the catalog, the store (if
    /// it was durable) and every shard's routing table.
    fn unbind(&self, exchange: &str, binding: Binding) -> Result<(), QueueError> {
        let mut catalog = self.catalog();
        if !catalog.table.unbind(exchange, &binding) {
            let to = match &binding.destination {
                Destination::Queue(name) | Destination::Exchange(name) => name.clone(),
            };
            return Err(QueueError::NotFound {
                kind: "binding",
                name: format!("{exchange} -> {to}"),
            });
        }
        if let Some(i) = catalog
            .bindings
            .iter()
            .position(|(s, b)| s == exchange && *b == binding)
        {
            let op = Op::Delete {
                key: binding_key(exchange, &binding),
            };
            catalog.write(&[op])?;
            catalog.bindings.remove(i);
        }
        let exchange = exchange.to_owned();
        self.on_every_shard(move |ctx| ShardQueues::get(ctx).unbind(&exchange, &binding))?;
        Ok(())
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

    /// Publishes `message` to `exchange` with `routing_key` and waits for the confirm:
    /// the queues it reached (every persistent copy in a durable queue stored). An
    /// unroutable message is `Unroutable` if `mandatory` (returned), else confirmed
    /// with 0 queues; a full `reject-publish` queue answers `Refused`.
    pub fn publish(
        &self,
        exchange: &str,
        routing_key: &str,
        message: Message,
        mandatory: bool,
    ) -> Result<Confirm, QueueError> {
        let mut results = self.publish_batch(
            vec![(exchange.to_owned(), routing_key.to_owned(), message)],
            mandatory,
        )?;
        results
            .pop()
            .unwrap_or_else(|| Err(QueueError::Task("publish lost its answer".into())))
    }

    /// Publishes many (exchange, routing key, message) in one task and waits for every
    /// confirm, one result each, in order.
    pub fn publish_batch(
        &self,
        messages: Vec<(String, String, Message)>,
        mandatory: bool,
    ) -> Result<Vec<Result<Confirm, QueueError>>, QueueError> {
        let (tx, rx) = mpsc::sync_channel(1);
        self.publish_with(messages, mandatory, move |results| {
            let _ = tx.send(results);
        })?;
        rx.recv().map_err(|_| QueueError::ShuttingDown)
    }

    /// Publishes without waiting: `done` runs on a shard with the confirms, in order.
    pub fn publish_with<F>(
        &self,
        messages: Vec<(String, String, Message)>,
        mandatory: bool,
        done: F,
    ) -> Result<(), QueueError>
    where
        F: FnOnce(Vec<Result<Confirm, QueueError>>) + Send + 'static,
    {
        let items = items_of(messages, mandatory)?;
        let reply: PublishReply = Box::new(done);
        self.inner
            .runtime
            .spawn(self.home(), move |ctx: &mut ShardCtx| {
                ShardQueues::get(ctx).publish(ctx, items, reply);
            })?;
        Ok(())
    }

    /// `publish_with` for code running on a shard (the network server): routed from
    /// this shard, without a hop through a home shard.
    pub(crate) fn publish_on_shard<F>(
        ctx: &mut ShardCtx,
        messages: Vec<(String, String, Message)>,
        mandatory: bool,
        done: F,
    ) -> Result<(), QueueError>
    where
        F: FnOnce(Vec<Result<Confirm, QueueError>>) + Send + 'static,
    {
        let items = items_of(messages, mandatory)?;
        ShardQueues::get(ctx).publish(ctx, items, Box::new(done));
        Ok(())
    }

    /// Starts consuming `queue`: deliveries come round-robin with the queue's other
    /// consumers, at most `prefetch` unacknowledged.
    pub fn consume(
        &self,
        queue: &str,
        options: ConsumeOptions,
    ) -> Result<QueueConsumer, QueueError> {
        self.consume_as(None, queue, options)
    }

    fn consume_as(
        &self,
        conn: Option<u64>,
        queue: &str,
        options: ConsumeOptions,
    ) -> Result<QueueConsumer, QueueError> {
        self.catalog().check_access(queue, conn)?;
        let owner = owner_of(queue, self.shards());
        let capacity = match (options.no_ack, options.prefetch) {
            (false, p) if p > 0 => p as usize,
            _ => BUFFER_DEFAULT,
        };
        let name: Arc<str> = Arc::from(queue);
        let buffer = ConsumerBuffer::new(capacity, self.inner.runtime.clone(), owner, name.clone())
            .map_err(QueueError::Wait)?;
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let slot_buffer = buffer.clone();
        let queue_name = name.clone();
        self.inner.runtime.call(owner, move |ctx: &mut ShardCtx| {
            let slot = ConsumerSlot::new(id, options.prefetch, options.no_ack, slot_buffer);
            ShardQueues::get(ctx).consume(ctx, &queue_name, slot)
        })??;
        Ok(QueueConsumer {
            buffer,
            id,
            queue: name,
            cancelled: false,
            queues: self.clone(),
        })
    }
}

/// The checks every publish passes before it is routed: properties a durable queue can
/// read back, payloads within `MESSAGE_BYTES_MAX`.
pub(crate) fn check_messages(messages: &[(String, String, Message)]) -> Result<(), QueueError> {
    for (_, _, message) in messages {
        message.properties.check()?;
        if message.payload.len() > MESSAGE_BYTES_MAX {
            let why = format!(
                "{} bytes; at most {MESSAGE_BYTES_MAX}",
                message.payload.len()
            );
            return Err(QueueError::invalid("message size", why));
        }
    }
    Ok(())
}

/// Checks messages and turns them into routing items, sharing the exchange and key
/// strings of consecutive messages that repeat them.
fn items_of(
    messages: Vec<(String, String, Message)>,
    mandatory: bool,
) -> Result<Vec<Item>, QueueError> {
    check_messages(&messages)?;
    let mut last: Option<(Arc<str>, Arc<str>)> = None;
    Ok(messages
        .into_iter()
        .map(|(exchange, key, message)| {
            let (exchange, key) = match &last {
                Some((e, k)) if **e == *exchange && **k == *key => (e.clone(), k.clone()),
                _ => {
                    let pair: (Arc<str>, Arc<str>) =
                        (Arc::from(exchange.as_str()), Arc::from(key.as_str()));
                    last = Some(pair.clone());
                    pair
                }
            };
            Item {
                exchange,
                routing_key: key,
                props: Arc::new(message.properties),
                payload: message.payload,
                mandatory,
                dead_letter: false,
            }
        })
        .collect())
}

/// Who asks, for exclusive queues.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Access {
    /// The engine itself (auto-delete, expiry, a connection closing).
    Internal,
    /// A connection (`Some`) or the plain `Queues` handle (`None`).
    As(Option<u64>),
}

/// A connection: what exclusive queues belong to. Its exclusive queues are deleted
/// when it is dropped; other connections (and the plain `Queues` handle) get `Locked`
/// when they use them.
pub struct Connection {
    queues: Queues,
    id: u64,
    exclusive: Mutex<Vec<String>>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection").field("id", &self.id).finish()
    }
}

impl Queues {
    /// A new connection.
    pub fn connection(&self) -> Connection {
        Connection {
            queues: self.clone(),
            id: self.inner.next_id.fetch_add(1, Ordering::Relaxed),
            exclusive: Mutex::new(Vec::new()),
        }
    }
}

impl Connection {
    /// Declares a queue as this connection (`exclusive` ones belong to it).
    pub fn declare_queue(&self, config: QueueConfig) -> Result<QueueInfo, QueueError> {
        let exclusive = config.exclusive;
        let info = self.queues.declare_queue_as(Some(self.id), config)?;
        if exclusive {
            let mut mine = match self.exclusive.lock() {
                Ok(guard) => guard,
                Err(poisoned) => poisoned.into_inner(),
            };
            if !mine.contains(&info.name) {
                mine.push(info.name.clone());
            }
        }
        Ok(info)
    }

    /// Consumes a queue as this connection.
    pub fn consume(
        &self,
        queue: &str,
        options: ConsumeOptions,
    ) -> Result<QueueConsumer, QueueError> {
        self.queues.consume_as(Some(self.id), queue, options)
    }

    /// Deletes a queue as this connection.
    pub fn delete_queue(
        &self,
        name: &str,
        if_unused: bool,
        if_empty: bool,
    ) -> Result<u64, QueueError> {
        self.queues
            .delete_queue_as(Access::As(Some(self.id)), name, if_unused, if_empty)
    }

    /// Binds a queue as this connection (its exclusive queues included).
    pub fn bind_queue(
        &self,
        queue: &str,
        exchange: &str,
        routing_key: &str,
        arguments: Vec<(Bytes, Bytes)>,
    ) -> Result<(), QueueError> {
        let binding = Binding::new(Destination::Queue(Arc::from(queue)), routing_key, arguments);
        self.queues.bind_as(Some(self.id), exchange, binding)
    }

    /// Removes every ready message of a queue, as this connection.
    pub fn purge_queue(&self, name: &str) -> Result<u64, QueueError> {
        self.queues.purge_queue_as(Some(self.id), name)
    }

    /// The plain handle (for exchanges, bindings and publishing).
    pub fn queues(&self) -> &Queues {
        &self.queues
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        let mine = match self.exclusive.get_mut() {
            Ok(mine) => std::mem::take(mine),
            Err(poisoned) => std::mem::take(poisoned.into_inner()),
        };
        for name in mine {
            match self
                .queues
                .delete_queue_as(Access::Internal, &name, false, false)
            {
                Ok(_) | Err(QueueError::NotFound { .. }) => {}
                Err(error) => tracing::warn!(%error, queue = name, "exclusive queue not deleted"),
            }
        }
    }
}

/// The catalog key of a durable binding: `b/`, then the source, destination kind and
/// name, routing key and arguments in the value encoding (unique per binding).
fn binding_key(source: &str, binding: &Binding) -> Vec<u8> {
    let mut out = ValueWriter::new(1);
    out.str(source);
    match &binding.destination {
        Destination::Queue(q) => {
            out.u8(0);
            out.str(q);
        }
        Destination::Exchange(e) => {
            out.u8(1);
            out.str(e);
        }
    }
    out.str(&binding.routing_key);
    out.u64(binding.arguments.len() as u64);
    for (name, value) in &binding.arguments {
        out.bytes(name);
        out.bytes(value);
    }
    let mut key = BINDING_KEY.as_bytes().to_vec();
    key.extend(out.finish());
    key
}

fn parse_binding(bytes: &[u8]) -> Option<(String, Binding)> {
    let mut d = ValueReader::new(bytes, 1).ok()?;
    let source = d.string().ok()?;
    let destination = match d.u8().ok()? {
        0 => Destination::Queue(Arc::from(d.string().ok()?.as_str())),
        1 => Destination::Exchange(Arc::from(d.string().ok()?.as_str())),
        _ => return None,
    };
    let routing_key = d.string().ok()?;
    let mut arguments = Vec::new();
    for _ in 0..d.len(65_536).ok()? {
        arguments.push((
            Bytes::from(d.byte_string().ok()?),
            Bytes::from(d.byte_string().ok()?),
        ));
    }
    d.end().ok()?;
    Some((
        source,
        Binding {
            destination,
            routing_key,
            arguments,
        },
    ))
}

fn load(catalog: &mut Catalog) -> Result<(), QueueError> {
    let corrupt = |key: &[u8], why: String| {
        QueueError::Storage(StorageError::Corrupt {
            path: PathBuf::from(String::from_utf8_lossy(key).into_owned()),
            position: 0,
            reason: why,
        })
    };
    for (key, value) in catalog.store.iter() {
        if key.starts_with(EXCHANGE_KEY.as_bytes()) {
            let config = ExchangeConfig::decode(value).map_err(|e| corrupt(key, e.to_string()))?;
            catalog.table.add_exchange(&config.name, config.kind);
            catalog.exchanges.insert(config.name.clone(), config);
        } else if key.starts_with(QUEUE_KEY.as_bytes()) {
            let config = QueueConfig::decode(value).map_err(|e| corrupt(key, e.to_string()))?;
            catalog.table.add_queue(&config.name);
            catalog.queues.insert(config.name.clone(), config);
        } else if let Some(rest) = key.strip_prefix(BINDING_KEY.as_bytes()) {
            let parsed = parse_binding(rest).ok_or_else(|| corrupt(key, "bad binding".into()))?;
            catalog.bindings.push(parsed);
        }
    }
    for (source, binding) in catalog.bindings.clone() {
        catalog
            .table
            .bind(&source, binding)
            .map_err(QueueError::from)?;
    }
    Ok(())
}
