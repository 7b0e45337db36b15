//! Streams over the wire: definition and consumer management on the control lane,
//! publishes routed from the connection's shard, and consumers whose records are pushed
//! to the connection as the engine hands them out (within the consumer's credit,
//! `max_ack_pending`), paused while the connection's output is over its bound.

use std::collections::HashMap;
use std::time::Duration;

use bytes::{Bytes, BytesMut};

use super::feed::{self, Feed, Home, Slot};
use super::{control_request, control_request_claiming, defer, reply, ConnRef, Failure, Session};
use crate::net::{Conn, ShardNetCounters, ShardServer};
use crate::protocol::stream::{
    decode_ack, decode_consumer_create, decode_id, decode_nak, decode_name, decode_publish,
    decode_stream_config, decode_two_names, encode_consumer_info, encode_message, encode_names,
    encode_publish_reply, encode_stream_info, Attach, AttachTarget, PublishOutcome,
};
use crate::protocol::{ErrorCode, FrameHeader, Op};
use crate::runtime::ShardCtx;
use crate::stream::{Consumer, StreamError, StreamMessage, Streams};

/// A stream consumer as the server pushes from it.
pub(crate) struct StreamFeed {
    consumer: Consumer,
    /// Delivered and not yet acknowledged by the client, by (partition, offset).
    outstanding: std::sync::Mutex<HashMap<(u32, u64), StreamMessage>>,
}

fn outstanding(feed: &StreamFeed) -> std::sync::MutexGuard<'_, HashMap<(u32, u64), StreamMessage>> {
    // Only the connection's shard touches it; the lock is never contended.
    feed.outstanding
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Feed for StreamFeed {
    const KIND: &'static str = "stream";
    type Item = StreamMessage;

    fn next_item(&self) -> Result<Option<StreamMessage>, String> {
        self.consumer.try_next().map_err(|e| e.to_string())
    }
    fn arm(&self) -> bool {
        self.consumer.arm()
    }
    fn fd(&self) -> std::os::fd::RawFd {
        self.consumer.fd()
    }
    fn heartbeat(&self) {
        self.consumer.heartbeat();
    }
    fn slots(session: &mut Session) -> &mut HashMap<u64, Slot<Self>> {
        &mut session.consumers
    }
    fn push(message: StreamMessage, id: u64, conn: &mut Conn, counters: &ShardNetCounters) {
        conn.queue_frame(counters, Op::StreamMessage, 0, 0, |out| {
            encode_message(out, id, &message);
        });
        // Only records that need an ack are kept (`AckPolicy::None` has none).
        if message.route.is_some() {
            if let Some(slot) = Self::slots(&mut conn.session).get(&id) {
                outstanding(&slot.feed).insert((message.partition, message.offset), message);
            }
        }
    }
}

fn encoded(body: impl FnOnce(&mut BytesMut)) -> Bytes {
    let mut out = BytesMut::new();
    body(&mut out);
    out.freeze()
}

/// Streams management ops: each runs on the control lane.
pub(super) fn manage(
    ctx: &mut ShardCtx,
    server: &ShardServer,
    conn: &ConnRef,
    header: &FrameHeader,
    body: Bytes,
) -> Result<(), Failure> {
    type Job = Box<dyn FnOnce(&Streams) -> Result<Bytes, StreamError> + Send>;
    let job: Job = match header.op {
        Op::StreamCreate => {
            let config = decode_stream_config(body, "STREAM_CREATE")?;
            Box::new(move |s| s.create(config).map(|()| Bytes::new()))
        }
        Op::StreamUpdate => {
            let config = decode_stream_config(body, "STREAM_UPDATE")?;
            Box::new(move |s| s.update(config).map(|()| Bytes::new()))
        }
        Op::StreamDelete => {
            let name = decode_name(body, "STREAM_DELETE")?;
            Box::new(move |s| s.delete(&name).map(|()| Bytes::new()))
        }
        Op::StreamInfo => {
            let name = decode_name(body, "STREAM_INFO")?;
            Box::new(move |s| {
                s.info(&name)
                    .map(|info| encoded(|out| encode_stream_info(out, &info)))
            })
        }
        Op::StreamList => {
            crate::protocol::Reader::new(body, "STREAM_LIST").end()?;
            Box::new(|s| Ok(encoded(|out| encode_names(out, &s.list()))))
        }
        Op::ConsumerCreate => {
            let (stream, config) = decode_consumer_create(body, "CONSUMER_CREATE")?;
            Box::new(move |s| s.create_consumer(&stream, config).map(|()| Bytes::new()))
        }
        Op::ConsumerDelete => {
            let (stream, name) = decode_two_names(body, "CONSUMER_DELETE")?;
            Box::new(move |s| s.delete_consumer(&stream, &name).map(|()| Bytes::new()))
        }
        Op::ConsumerInfo => {
            let (stream, name) = decode_two_names(body, "CONSUMER_INFO")?;
            Box::new(move |s| {
                s.consumer_info(&stream, &name)
                    .map(|info| encoded(|out| encode_consumer_info(out, &info)))
            })
        }
        Op::ConsumerList => {
            let stream = decode_name(body, "CONSUMER_LIST")?;
            Box::new(move |s| Ok(encoded(|out| encode_names(out, &s.consumers(&stream)))))
        }
        op => unreachable!("{} is not a streams management op", op.name()),
    };
    control_request(ctx, server, conn, header, move |shared| {
        job(&shared.streams).map_err(Failure::from)
    })
}

pub(super) fn publish(
    ctx: &mut ShardCtx,
    server: &ShardServer,
    conn: &ConnRef,
    header: &FrameHeader,
    body: Bytes,
) -> Result<(), Failure> {
    let records = decode_publish(body)?;
    // Refusals of the whole frame answer here, before the answer is deferred.
    crate::stream::check_records(&records)?;
    let answer = defer(ctx, conn, server, header);
    let runtime = ctx.runtime();
    let done = move |results: Vec<Result<crate::stream::PublishAck, StreamError>>| {
        let outcomes: Vec<PublishOutcome> = results
            .into_iter()
            .map(|r| match r {
                Ok(ack) => PublishOutcome::Stored {
                    stream: ack.stream,
                    partition: ack.partition,
                    offset: ack.offset,
                    duplicate: ack.duplicate,
                },
                Err(error) => {
                    let f = Failure::from(error);
                    PublishOutcome::Failed {
                        code: f.code,
                        message: f.message,
                    }
                }
            })
            .collect();
        let body = encoded(|out| encode_publish_reply(out, &outcomes));
        answer.answer_from_afar(&runtime, Ok(body));
    };
    Streams::publish_on_shard(ctx, records, done).map_err(Failure::from)
}

/// `CONSUMER_JOIN` / `CONSUMER_SUBSCRIBE`: attach on the control lane, then install the
/// consumer in the session (on this shard) and start pushing its records.
pub(super) fn attach(
    ctx: &mut ShardCtx,
    server: &ShardServer,
    conn: &ConnRef,
    header: &FrameHeader,
    body: Bytes,
) -> Result<(), Failure> {
    let request = Attach::decode(body, header.op == Op::ConsumerJoin)?;
    let id = request.consumer_id;
    if conn.borrow().session.id_in_use(id) {
        return Err(super::id_in_use(id));
    }
    let home = Home::of(ctx, server, conn);
    control_request_claiming(ctx, server, conn, header, Some(id), move |shared| {
        let consumer = match &request.target {
            AttachTarget::Join(name) => shared.streams.join(&request.stream, name),
            AttachTarget::Subscribe(config) => {
                shared.streams.subscribe(&request.stream, config.clone())
            }
        }
        .map_err(Failure::from)?;
        let name = consumer.name().to_owned();
        let slot = Slot::new(StreamFeed {
            consumer,
            outstanding: std::sync::Mutex::new(HashMap::new()),
        });
        home.install(&shared.runtime, id, slot)?;
        Ok(encoded(|out| crate::protocol::Writer::str(out, &name)))
    })
}

pub(super) fn leave(
    ctx: &mut ShardCtx,
    server: &ShardServer,
    conn: &ConnRef,
    header: &FrameHeader,
    body: Bytes,
) -> Result<(), Failure> {
    let id = decode_id(body, "CONSUMER_LEAVE")?;
    feed::detach::<StreamFeed>(ctx, server, conn, header, id)
}

pub(super) fn ack(
    ctx: &mut ShardCtx,
    server: &ShardServer,
    conn: &ConnRef,
    header: &FrameHeader,
    body: Bytes,
) -> Result<(), Failure> {
    let (id, positions) = decode_ack(body)?;
    let messages: Vec<StreamMessage> = {
        let mut c = conn.borrow_mut();
        let slot = c
            .session
            .consumers
            .get_mut(&id)
            .ok_or_else(|| feed::no_consumer::<StreamFeed>(id))?;
        let mut held = outstanding(&slot.feed);
        positions.iter().filter_map(|p| held.remove(p)).collect()
    };
    if messages.len() < positions.len() {
        tracing::debug!(consumer = id, "ack of records not outstanding (ignored)");
    }
    if !messages.is_empty() {
        crate::stream::ack_all(&messages).map_err(Failure::from)?;
    }
    reply(ctx, server, conn, header, |_| {});
    Ok(())
}

pub(super) fn nak(
    ctx: &mut ShardCtx,
    server: &ShardServer,
    conn: &ConnRef,
    header: &FrameHeader,
    body: Bytes,
) -> Result<(), Failure> {
    let (id, partition, offset, delay_ms) = decode_nak(body)?;
    let message = {
        let mut c = conn.borrow_mut();
        let slot = c
            .session
            .consumers
            .get_mut(&id)
            .ok_or_else(|| feed::no_consumer::<StreamFeed>(id))?;
        let removed = outstanding(&slot.feed).remove(&(partition, offset));
        removed
    };
    let Some(message) = message else {
        return Err(Failure::new(
            ErrorCode::NotFound,
            format!("record {partition}/{offset} is not outstanding on consumer {id}"),
        ));
    };
    message
        .nak(Duration::from_millis(u64::from(delay_ms)))
        .map_err(Failure::from)?;
    reply(ctx, server, conn, header, |_| {});
    Ok(())
}
