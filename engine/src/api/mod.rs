//! One API over an embedded broker and a remote one.
//!
//! Owns: the `BrokerApi` trait (every operation of the three models, with one error
//! type, `Error`), the consumer and subscription handles it returns, and the owned
//! message types those hand out. `Broker` (in process) and `client::Client` (over the
//! native protocol) both implement it, so the C ABI, the bindings and the tests can be
//! written once and run against either.
//!
//! Never: adds behaviour of its own. Each method is a thin mapping onto the model's
//! (or the client's) own method of the same name; the typed model APIs stay the fast
//! path for Rust programs that embed the engine.

mod embedded;
mod error;
mod remote;

use std::os::fd::RawFd;
use std::time::Duration;

use bytes::Bytes;

pub use error::Error;

use crate::pubsub::Message;
use crate::queue::{ConsumeOptions, ExchangeConfig, QueueConfig, QueueInfo};
use crate::stream::{ConsumerConfig, ConsumerInfo, Publish, PublishAck, StreamConfig, StreamInfo};

/// A result with the API's error.
pub type Result<T> = std::result::Result<T, Error>;

pub use crate::protocol::queue::{Bind, QueueMessage, Routed};
pub use crate::protocol::stream::Record;

/// A subscription to subjects. Dropping it unsubscribes.
///
/// Receive from one thread at a time (a blocking `next` holds the receiving end); the
/// other methods may be called from any thread.
///
/// Waiting from an event loop: take messages with `try_next` until `Ok(None)`, then
/// `arm`; if it returns true take again, else wait for `fd` to be readable, call
/// `clear_notification`, and take again.
pub trait SubscriptionApi: Send + Sync {
    /// The next message, waiting up to `timeout` (`Timeout` if none came).
    fn next(&self, timeout: Duration) -> Result<Message>;
    /// The next message if one is buffered.
    fn try_next(&self) -> Result<Option<Message>>;
    /// Moves up to `max` buffered messages to the end of `out` without waiting and
    /// returns how many (0: none buffered). Cheaper per message than `try_next`. `Err`
    /// as `try_next`, only when nothing was taken.
    fn try_next_batch(&self, max: usize, out: &mut Vec<Message>) -> Result<usize>;
    /// Messages dropped because the subscriber fell behind (subjects are at most once).
    fn dropped(&self) -> u64;
    /// The eventfd that becomes readable when messages arrive (after `arm`).
    fn fd(&self) -> RawFd;
    /// Announces the caller is about to wait on `fd`; true if messages (or the end)
    /// are already there.
    fn arm(&self) -> bool;
    /// Clears the eventfd after it was readable.
    fn clear_notification(&self) -> Result<()>;
}

/// A stream consumer (a member of its group). Dropping it leaves the group.
///
/// Receive from one thread at a time; acknowledge from any. Event-loop waiting works as
/// for `SubscriptionApi`.
pub trait StreamConsumerApi: Send + Sync {
    /// The consumer's (group's) name.
    fn name(&self) -> &str;
    /// The next record, waiting up to `timeout` (`Timeout` if none came).
    fn next(&self, timeout: Duration) -> Result<Record>;
    /// The next record if one is buffered.
    fn try_next(&self) -> Result<Option<Record>>;
    /// Acknowledges records this consumer received, by (partition, offset).
    fn ack(&self, positions: &[(u32, u64)]) -> Result<()>;
    /// Asks for the record at (partition, offset) again after `delay`. A record not
    /// outstanding on this consumer (already acknowledged or committed) is ignored.
    fn nak(&self, partition: u32, offset: u64, delay: Duration) -> Result<()>;
    /// The eventfd that becomes readable when records arrive (after `arm`).
    fn fd(&self) -> RawFd;
    /// Announces the caller is about to wait on `fd`; true if records (or the end) are
    /// already there.
    fn arm(&self) -> bool;
    /// Clears the eventfd after it was readable.
    fn clear_notification(&self) -> Result<()>;
}

/// A queue consumer. Dropping it cancels it (unacknowledged deliveries go back).
///
/// Receive from one thread at a time; acknowledge from any. Event-loop waiting works as
/// for `SubscriptionApi`.
pub trait QueueConsumerApi: Send + Sync {
    /// The next delivery, waiting up to `timeout` (`Timeout` if none came).
    fn next(&self, timeout: Duration) -> Result<QueueMessage>;
    /// The next delivery if one is buffered.
    fn try_next(&self) -> Result<Option<QueueMessage>>;
    /// Acknowledges `delivery_tag` (and every earlier one, if `multiple`).
    fn ack(&self, delivery_tag: u64, multiple: bool) -> Result<()>;
    /// Rejects: back to the queue (`requeue`) or dead-lettered / dropped.
    fn nack(&self, delivery_tag: u64, multiple: bool, requeue: bool) -> Result<()>;
    /// The eventfd that becomes readable when deliveries arrive (after `arm`).
    fn fd(&self) -> RawFd;
    /// Announces the caller is about to wait on `fd`; true if deliveries (or the end)
    /// are already there.
    fn arm(&self) -> bool;
    /// Clears the eventfd after it was readable.
    fn clear_notification(&self) -> Result<()>;
}

/// Each record's outcome, or why the whole publish failed.
pub type PublishOutcomes = Result<Vec<Result<PublishAck>>>;
/// Each message's confirm (the number of queues it reached), or why the whole publish
/// failed.
pub type ConfirmOutcomes = Result<Vec<Result<u32>>>;
/// What an asynchronous stream publish calls with its outcomes, exactly once, on an
/// engine or client thread (keep it short; never block in it).
pub type PublishDone = Box<dyn FnOnce(PublishOutcomes) + Send>;
/// What an asynchronous exchange publish calls with its confirms, exactly once, on an
/// engine or client thread (keep it short; never block in it).
pub type ConfirmDone = Box<dyn FnOnce(ConfirmOutcomes) + Send>;

/// What an asynchronous request calls with the first reply, or why none came
/// (`NoResponders`, `Timeout`, `Disconnected`), exactly once, on an engine or client
/// thread (keep it short; never block in it).
pub type ReplyDone = Box<dyn FnOnce(Result<Message>) + Send>;

/// Every operation of the three models. See the models' own docs for the semantics;
/// each method here behaves as the method of the same name there.
pub trait BrokerApi: Send + Sync {
    /// Publishes a message on a subject (fire and forget).
    fn publish(&self, message: Message) -> Result<()>;
    /// Subscribes to a subject pattern, in a queue group if given.
    fn subscribe(
        &self,
        pattern: &str,
        queue_group: Option<&str>,
    ) -> Result<Box<dyn SubscriptionApi>>;
    /// Publishes messages on subjects in one go (fire and forget; far cheaper per
    /// message than `publish`). At most once, as every subject publish.
    fn publish_batch(&self, messages: Vec<Message>) -> Result<()>;
    /// Sends a request and waits for the first reply.
    fn request(&self, subject: &str, payload: Bytes, timeout: Duration) -> Result<Message>;
    /// Sends a request without waiting; `done` gets the first reply or the error. If
    /// this returns an error, `done` is never called.
    fn request_with(
        &self,
        subject: &str,
        payload: Bytes,
        timeout: Duration,
        done: ReplyDone,
    ) -> Result<()>;

    /// Creates a stream (idempotent for the same definition).
    fn create_stream(&self, config: &StreamConfig) -> Result<()>;
    /// Changes a stream's limits.
    fn update_stream(&self, config: &StreamConfig) -> Result<()>;
    /// Deletes a stream.
    fn delete_stream(&self, name: &str) -> Result<()>;
    /// A stream's definition and partitions.
    fn stream_info(&self, name: &str) -> Result<StreamInfo>;
    /// Every stream's name.
    fn streams(&self) -> Result<Vec<String>>;
    /// Publishes records and waits until each is stored under its stream's policy.
    fn publish_records(&self, records: &[Publish]) -> Result<Vec<Result<PublishAck>>>;
    /// Publishes records without waiting: `done` gets one outcome per record, in
    /// order. When this returns `Err`, `done` is not called.
    fn publish_records_with(&self, records: Vec<Publish>, done: PublishDone) -> Result<()>;
    /// Creates a durable consumer.
    fn create_consumer(&self, stream: &str, config: &ConsumerConfig) -> Result<()>;
    /// Deletes a durable consumer.
    fn delete_consumer(&self, stream: &str, name: &str) -> Result<()>;
    /// A durable consumer's definition and positions.
    fn consumer_info(&self, stream: &str, name: &str) -> Result<ConsumerInfo>;
    /// The names of a stream's durable consumers.
    fn consumers(&self, stream: &str) -> Result<Vec<String>>;
    /// Joins a durable consumer's group.
    fn join(&self, stream: &str, name: &str) -> Result<Box<dyn StreamConsumerApi>>;
    /// Starts an ephemeral consumer from a definition (`durable` must be `None`).
    fn subscribe_stream(
        &self,
        stream: &str,
        config: &ConsumerConfig,
    ) -> Result<Box<dyn StreamConsumerApi>>;

    /// Declares an exchange.
    fn declare_exchange(&self, config: &ExchangeConfig) -> Result<()>;
    /// Deletes an exchange.
    fn delete_exchange(&self, name: &str, if_unused: bool) -> Result<()>;
    /// Every declared exchange's definition (the default exchange is built in).
    fn exchanges(&self) -> Result<Vec<ExchangeConfig>>;
    /// Every declared queue's definition.
    fn queues(&self) -> Result<Vec<QueueConfig>>;
    /// Declares a queue.
    fn declare_queue(&self, config: &QueueConfig) -> Result<QueueInfo>;
    /// Deletes a queue; returns how many messages were ready.
    fn delete_queue(&self, name: &str, if_unused: bool, if_empty: bool) -> Result<u64>;
    /// Removes a queue's ready messages; returns how many.
    fn purge_queue(&self, name: &str) -> Result<u64>;
    /// A queue's counters.
    fn queue_info(&self, name: &str) -> Result<QueueInfo>;
    /// Binds queue `bind.destination` to exchange `bind.source`.
    fn bind_queue(&self, bind: &Bind) -> Result<()>;
    /// Removes that binding.
    fn unbind_queue(&self, bind: &Bind) -> Result<()>;
    /// Binds exchange `bind.destination` to exchange `bind.source`.
    fn bind_exchange(&self, bind: &Bind) -> Result<()>;
    /// Removes that exchange-to-exchange binding (`NotFound` if there is none).
    fn unbind_exchange(&self, bind: &Bind) -> Result<()>;
    /// Publishes messages to exchanges and waits for each confirm (queues reached).
    fn publish_messages(&self, messages: &[Routed], mandatory: bool) -> Result<Vec<Result<u32>>>;
    /// Publishes to exchanges without waiting: `done` gets one confirm per message, in
    /// order. When this returns `Err`, `done` is not called.
    fn publish_messages_with(
        &self,
        messages: Vec<Routed>,
        mandatory: bool,
        done: ConfirmDone,
    ) -> Result<()>;
    /// Starts consuming a queue.
    fn consume(&self, queue: &str, options: ConsumeOptions) -> Result<Box<dyn QueueConsumerApi>>;
}
