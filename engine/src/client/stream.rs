//! Streams through a `Client`: definitions, consumers, publishes, and consumers whose
//! records the server pushes (within the consumer's credit).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use super::{lock, push, Client, ClientError, Inner};
use crate::protocol::stream::{
    decode_consumer_closed, decode_consumer_info, decode_message, decode_names,
    decode_publish_reply, decode_stream_info, encode_ack, encode_consumer_create, encode_nak,
    encode_publish, encode_stream_config, Attach, AttachTarget, PublishOutcome, Record,
};
use crate::protocol::{Op, Reader, Writer};
use crate::stream::{ConsumerConfig, ConsumerInfo, Publish, PublishAck, StreamConfig, StreamInfo};

/// After a reconnect: attaches every consumer again (the group redelivers what was
/// unacknowledged).
pub(super) fn resubscribe(inner: &Inner) {
    for request in push::requests(&inner.consumers) {
        let op = match request.target {
            AttachTarget::Join(_) => Op::ConsumerJoin,
            AttachTarget::Subscribe(_) => Op::ConsumerSubscribe,
        };
        let correlation = inner.next_correlation.fetch_add(1, Ordering::Relaxed);
        let _ = inner.send(op, 0, correlation, |out| request.encode(out));
    }
}

/// Routes a pushed `STREAM_MESSAGE` or `CONSUMER_CLOSED` to its consumer.
pub(super) fn on_push(inner: &Inner, op: Op, body: Bytes) -> Result<(), String> {
    if op == Op::ConsumerClosed {
        let (id, why) = decode_consumer_closed(body).map_err(|e| e.to_string())?;
        if !push::close(&inner.consumers, id, why.clone()) {
            push::close(&inner.queue_consumers, id, why);
        }
        return Ok(());
    }
    let (consumer_id, record) = decode_message(body).map_err(|e| e.to_string())?;
    push::route(&inner.consumers, consumer_id, record);
    Ok(())
}

/// Each record's outcome, or why the whole publish failed.
pub type PublishResults = Result<Vec<Result<PublishAck, ClientError>>, ClientError>;

/// A `STREAM_PUBLISH` reply: one result per record.
fn publish_results(body: Bytes, records: usize) -> PublishResults {
    let outcomes = super::one_answer_each(decode_publish_reply(body)?, records, "records")?;
    Ok(outcomes
        .into_iter()
        .map(|outcome| match outcome {
            PublishOutcome::Stored {
                stream,
                partition,
                offset,
                duplicate,
            } => Ok(PublishAck {
                stream,
                partition,
                offset,
                duplicate,
            }),
            PublishOutcome::Failed { code, message } => Err(ClientError::Server { code, message }),
        })
        .collect())
}

fn empty(
    result: Result<(crate::protocol::FrameHeader, Bytes), ClientError>,
) -> Result<(), ClientError> {
    result.map(drop)
}

impl Client {
    /// Creates a stream (idempotent for the same definition).
    pub fn create_stream(&self, config: &StreamConfig) -> Result<(), ClientError> {
        empty(self.call(
            Op::StreamCreate,
            |out| encode_stream_config(out, config),
            None,
        ))
    }

    /// Changes a stream's limits.
    pub fn update_stream(&self, config: &StreamConfig) -> Result<(), ClientError> {
        empty(self.call(
            Op::StreamUpdate,
            |out| encode_stream_config(out, config),
            None,
        ))
    }

    /// Deletes a stream and its records.
    pub fn delete_stream(&self, name: &str) -> Result<(), ClientError> {
        empty(self.call(Op::StreamDelete, |out| Writer::str(out, name), None))
    }

    /// A stream's definition and partitions.
    pub fn stream_info(&self, name: &str) -> Result<StreamInfo, ClientError> {
        let (_, body) = self.call(Op::StreamInfo, |out| Writer::str(out, name), None)?;
        Ok(decode_stream_info(body)?)
    }

    /// Every stream's name.
    pub fn streams(&self) -> Result<Vec<String>, ClientError> {
        let (_, body) = self.call(Op::StreamList, |_| {}, None)?;
        Ok(decode_names(body, "STREAM_LIST reply")?)
    }

    /// Publishes `records` in one frame and waits until each is stored under its
    /// stream's durability policy: one result per record, in order.
    pub fn publish_records(
        &self,
        records: &[Publish],
    ) -> Result<Vec<Result<PublishAck, ClientError>>, ClientError> {
        let (_, body) = self.call(Op::StreamPublish, |out| encode_publish(out, records), None)?;
        publish_results(body, records.len())
    }

    /// Publishes `records` in one frame without waiting: `done` runs on the client's
    /// reader thread with one result per record, in order (or with the error that
    /// failed the whole frame, `Disconnected` if the connection went first). Keep it
    /// short: the reader handles nothing else meanwhile. When this returns `Err`,
    /// `done` is not called.
    pub fn publish_records_with<F>(&self, records: &[Publish], done: F) -> Result<(), ClientError>
    where
        F: FnOnce(PublishResults) + Send + 'static,
    {
        let n = records.len();
        self.call_with(
            Op::StreamPublish,
            |out| encode_publish(out, records),
            Box::new(move |reply| done(reply.and_then(|(_, body)| publish_results(body, n)))),
        )
    }

    /// Publishes one record and waits until it is stored.
    pub fn publish_record(&self, record: Publish) -> Result<PublishAck, ClientError> {
        self.publish_records(std::slice::from_ref(&record))?
            .pop()
            .unwrap_or_else(|| Err(ClientError::Disconnected("no answer".into())))
    }

    /// Creates a durable consumer.
    pub fn create_consumer(
        &self,
        stream: &str,
        config: &ConsumerConfig,
    ) -> Result<(), ClientError> {
        empty(self.call(
            Op::ConsumerCreate,
            |out| encode_consumer_create(out, stream, config),
            None,
        ))
    }

    /// Deletes a durable consumer.
    pub fn delete_consumer(&self, stream: &str, name: &str) -> Result<(), ClientError> {
        empty(self.call(
            Op::ConsumerDelete,
            |out| {
                Writer::str(out, stream);
                Writer::str(out, name);
            },
            None,
        ))
    }

    /// A durable consumer's definition and positions.
    pub fn consumer_info(&self, stream: &str, name: &str) -> Result<ConsumerInfo, ClientError> {
        let (_, body) = self.call(
            Op::ConsumerInfo,
            |out| {
                Writer::str(out, stream);
                Writer::str(out, name);
            },
            None,
        )?;
        Ok(decode_consumer_info(body)?)
    }

    /// The names of `stream`'s durable consumers.
    pub fn consumers(&self, stream: &str) -> Result<Vec<String>, ClientError> {
        let (_, body) = self.call(Op::ConsumerList, |out| Writer::str(out, stream), None)?;
        Ok(decode_names(body, "CONSUMER_LIST reply")?)
    }

    /// Joins durable consumer `name` of `stream` as a member of its group.
    pub fn join(&self, stream: &str, name: &str) -> Result<ClientConsumer, ClientError> {
        self.attach(stream, AttachTarget::Join(name.to_owned()))
    }

    /// Starts an ephemeral consumer from `config` (`durable` must be `None`; create a
    /// durable one with `create_consumer` and `join` it).
    pub fn subscribe_stream(
        &self,
        stream: &str,
        config: ConsumerConfig,
    ) -> Result<ClientConsumer, ClientError> {
        self.attach(stream, AttachTarget::Subscribe(config))
    }

    fn attach(&self, stream: &str, target: AttachTarget) -> Result<ClientConsumer, ClientError> {
        let id = self.inner.next_id();
        let request = Attach {
            consumer_id: id,
            stream: stream.to_owned(),
            target,
        };
        let source = push::open(&self.inner.consumers, id, request.clone())?;
        let op = match request.target {
            AttachTarget::Join(_) => Op::ConsumerJoin,
            AttachTarget::Subscribe(_) => Op::ConsumerSubscribe,
        };
        let name = match self.call(op, |out| request.encode(out), None) {
            Ok((_, body)) => {
                let mut r = Reader::new(body, "CONSUMER_JOIN reply");
                r.string()?
            }
            Err(error) => {
                lock(&self.inner.consumers).remove(&id);
                return Err(error);
            }
        };
        Ok(ClientConsumer {
            shared: Arc::new(ConsumerShared {
                id,
                inner: self.inner.clone(),
                left: AtomicBool::new(false),
            }),
            name,
            source,
        })
    }
}

struct ConsumerShared {
    id: u64,
    inner: Arc<Inner>,
    left: AtomicBool,
}

/// A stream consumer attached through a `Client`. Dropping it leaves the group.
pub struct ClientConsumer {
    shared: Arc<ConsumerShared>,
    name: String,
    source: push::Source<Record>,
}

impl std::fmt::Debug for ClientConsumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientConsumer")
            .field("name", &self.name)
            .field("id", &self.shared.id)
            .finish()
    }
}

/// A record received through a `ClientConsumer`.
#[derive(Clone)]
pub struct ClientStreamMessage {
    /// What the server pushed.
    pub record: Record,
    consumer: Arc<ConsumerShared>,
}

impl std::fmt::Debug for ClientStreamMessage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.record.fmt(f)
    }
}

impl ClientStreamMessage {
    /// Acknowledges the record (returns once sent).
    pub fn ack(&self) -> Result<(), ClientError> {
        let (id, position) = (
            self.consumer.id,
            (self.record.partition, self.record.offset),
        );
        self.consumer.inner.fire(Op::StreamAck, |out| {
            encode_ack(out, id, &[position]);
        })
    }

    /// Asks for the record again after `delay`.
    pub fn nak(&self, delay: Duration) -> Result<(), ClientError> {
        let id = self.consumer.id;
        let (partition, offset) = (self.record.partition, self.record.offset);
        let delay_ms = u32::try_from(delay.as_millis()).unwrap_or(u32::MAX);
        self.consumer.inner.fire(Op::StreamNak, |out| {
            encode_nak(out, id, partition, offset, delay_ms);
        })
    }
}

impl ClientConsumer {
    /// The consumer's (group's) name; generated for ephemeral consumers.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The next record, waiting up to `timeout`. `Closed` when the server ended the
    /// consumer (the message says why).
    pub fn next_timeout(&self, timeout: Duration) -> Result<ClientStreamMessage, ClientError> {
        let record = self.source.next(timeout, &self.shared.inner)?;
        Ok(self.wrap(record))
    }

    /// The next record if one is buffered; `Err` once the consumer ended (the server's
    /// reason) or the client closed, and every record was taken.
    pub fn try_next(&self) -> Result<Option<ClientStreamMessage>, ClientError> {
        let record = self.source.try_next(&self.shared.inner)?;
        Ok(record.map(|r| self.wrap(r)))
    }

    /// The eventfd that becomes readable when records arrive (after `arm`).
    pub fn fd(&self) -> std::os::fd::RawFd {
        self.source.ready.fd()
    }

    /// Announces the caller is about to wait on `fd()`; true if records (or the end of
    /// the consumer) are already there.
    pub fn arm(&self) -> bool {
        self.source.ready.arm()
    }

    /// Clears the eventfd after it was readable.
    pub fn clear_notification(&self) -> Result<(), ClientError> {
        self.source.ready.clear_notification()
    }

    /// Acknowledges many records in one frame.
    pub fn ack_all(&self, messages: &[ClientStreamMessage]) -> Result<(), ClientError> {
        let positions: Vec<(u32, u64)> = messages
            .iter()
            .map(|m| (m.record.partition, m.record.offset))
            .collect();
        let id = self.shared.id;
        self.shared
            .inner
            .fire(Op::StreamAck, |out| encode_ack(out, id, &positions))
    }

    /// Acknowledges records by position (partition, offset), in one frame.
    pub fn ack_positions(&self, positions: &[(u32, u64)]) -> Result<(), ClientError> {
        let id = self.shared.id;
        self.shared
            .inner
            .fire(Op::StreamAck, |out| encode_ack(out, id, positions))
    }

    /// Asks for the record at (partition, offset) again after `delay`.
    pub fn nak_position(
        &self,
        partition: u32,
        offset: u64,
        delay: Duration,
    ) -> Result<(), ClientError> {
        let id = self.shared.id;
        let delay_ms = u32::try_from(delay.as_millis()).unwrap_or(u32::MAX);
        self.shared.inner.fire(Op::StreamNak, |out| {
            encode_nak(out, id, partition, offset, delay_ms);
        })
    }

    fn wrap(&self, record: Record) -> ClientStreamMessage {
        ClientStreamMessage {
            record,
            consumer: self.shared.clone(),
        }
    }

    /// Leaves the group: unacknowledged records go to its other members.
    pub fn leave(self) -> Result<(), ClientError> {
        self.shared.leave()
    }
}

impl ConsumerShared {
    fn leave(&self) -> Result<(), ClientError> {
        if self.left.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        lock(&self.inner.consumers).remove(&self.id);
        let id = self.id;
        self.inner.fire(Op::ConsumerLeave, |out| {
            bytes::BufMut::put_u64_le(out, id);
        })
    }
}

impl Drop for ClientConsumer {
    fn drop(&mut self) {
        let _ = self.shared.leave();
    }
}
