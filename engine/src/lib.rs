//! ringbroker: a thread-per-core, shared-nothing message broker engine.
//!
//! The crate is layered, and dependencies point one way:
//!
//! - `hash`: the hasher of the engine's hot maps (subjects, tokens, ids): seeded `xxh3`.
//! - [`ring`]: bounded lock-free SPSC rings, the only channel between shards.
//! - [`doorbell`]: the park/wake protocol that lets a shard sleep in `io_uring_enter`
//!   without ever losing a wake-up, and without a syscall per message.
//! - [`runtime`]: shards pinned to cores, each with its own io_uring, running tasks and
//!   I/O; cross-shard calls; external submission with eventfd completions; placement.
//! - [`storage`]: the on-disk record batch format, partition logs with group commit
//!   over io_uring, recovery, retention.
//! - [`routing`]: subjects, patterns and the matcher the models route with.
//! - [`pubsub`]: subjects: fire-and-forget publish/subscribe, queue groups and
//!   request-reply (the NATS core model), at most once.
//! - [`queue`]: exchanges (direct, fanout, topic, headers), bindings and work queues with
//!   acks, prefetch, dead-lettering, TTL, max-length and priorities (the RabbitMQ model).
//! - [`stream`]: streams: persistent partitioned logs with deduplication, consumer
//!   groups, acknowledgements, redelivery and replay (the Kafka / JetStream model).
//! - [`protocol`]: the native wire protocol's frames and bodies (pure codecs).
//! - [`broker`]: the embedded broker: one runtime and the three models over one data
//!   directory.
//! - [`net`]: the io_uring network layer (listeners, connections, bytes) and the
//!   `Server` that serves a broker over the native protocol (sessions in `server`).
//! - [`client`]: a Rust client of the native protocol.
//! - [`api`]: one API (`BrokerApi`) over both: the embedded `Broker` and a remote
//!   `Client` implement it, so code written against it runs against either.
//!
//! See `docs/architecture.md` for the picture.

pub mod doorbell;
pub(crate) mod hash;
pub(crate) mod pending;
pub mod ring;
pub mod routing;
pub mod storage;
mod sync;

#[cfg(not(loom))]
pub mod api;
#[cfg(not(loom))]
pub mod broker;
#[cfg(not(loom))]
pub mod client;
#[cfg(not(loom))]
pub mod net;
#[cfg(not(loom))]
pub mod protocol;
#[cfg(not(loom))]
pub mod pubsub;
#[cfg(not(loom))]
pub mod queue;
#[cfg(not(loom))]
pub mod runtime;
#[cfg(not(loom))]
mod server;
#[cfg(not(loom))]
pub mod stream;

/// The README's examples, compiled and run as doc tests so they stay true.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
struct ReadmeExamples;
