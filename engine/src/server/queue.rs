//! Exchanges and queues over the wire: declarations and bindings on the control lane
//! (as the connection, so exclusive queues belong to it), publishes routed from the
//! connection's shard with their confirms, and queue consumers whose deliveries are
//! pushed within their prefetch.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};

use super::feed::{self, Feed, Home, Slot};
use super::{control_request, control_request_claiming, defer, reply, ConnRef, Failure, Session};
use crate::net::{Conn, ServerShared, ShardNetCounters, ShardServer};
use crate::protocol::queue::{
    decode_answer, decode_definition, decode_publish, decode_target, encode_confirms,
    encode_definitions, encode_delivery, encode_queue_info, Bind, Confirmed, Consume,
};
use crate::protocol::stream::decode_id;
use crate::protocol::{ErrorCode, FrameHeader, Op};
use crate::queue::{
    Connection, ConsumeOptions, Delivery, ExchangeConfig, QueueConfig, QueueConsumer, QueueError,
};
use crate::runtime::ShardCtx;

/// The session's AMQP-style connection (what its exclusive queues belong to), made on
/// first use.
fn connection(server: &ShardServer, conn: &ConnRef) -> Arc<Connection> {
    let mut c = conn.borrow_mut();
    c.session
        .amqp
        .get_or_insert_with(|| Arc::new(server.shared().queues.connection()))
        .clone()
}

/// Hands the session's connection to the control lane to drop: dropping it deletes
/// its exclusive queues, which waits for their shards.
pub(super) fn release_connection(shared: &ServerShared, connection: Arc<Connection>) {
    shared.control.release(move || drop(connection));
}

fn counted(n: u64) -> Bytes {
    let mut out = BytesMut::new();
    bytes::BufMut::put_u64_le(&mut out, n);
    out.freeze()
}

/// A management request's work, run on the control lane as the connection.
type Job = Box<dyn FnOnce(&ServerShared, &Connection) -> Result<Bytes, QueueError> + Send>;

fn info_body(info: &crate::queue::QueueInfo) -> Bytes {
    let mut out = BytesMut::new();
    encode_queue_info(&mut out, info);
    out.freeze()
}

/// Declarations, deletions, listings, bindings: each runs on the control lane.
pub(super) fn manage(
    ctx: &mut ShardCtx,
    server: &ShardServer,
    conn: &ConnRef,
    header: &FrameHeader,
    body: Bytes,
) -> Result<(), Failure> {
    let name = header.op.name();
    let job: Job = match header.op {
        Op::ExchangeDeclare => {
            let config = decode_definition(body, name, ExchangeConfig::decode)?;
            Box::new(move |s, _| s.queues.declare_exchange(config).map(|()| Bytes::new()))
        }
        Op::ExchangeDelete => {
            let (exchange, if_unused, _) = decode_target(body, name)?;
            Box::new(move |s, _| {
                s.queues
                    .delete_exchange(&exchange, if_unused)
                    .map(|()| Bytes::new())
            })
        }
        Op::QueueDeclare => {
            let config = decode_definition(body, name, QueueConfig::decode)?;
            Box::new(move |_, c| c.declare_queue(config).map(|info| info_body(&info)))
        }
        Op::QueueDelete => {
            let (queue, if_unused, if_empty) = decode_target(body, name)?;
            Box::new(move |_, c| c.delete_queue(&queue, if_unused, if_empty).map(counted))
        }
        Op::QueuePurge => {
            let (queue, _, _) = decode_target(body, name)?;
            Box::new(move |_, c| c.purge_queue(&queue).map(counted))
        }
        Op::QueueInfo => {
            let (queue, _, _) = decode_target(body, name)?;
            Box::new(move |s, _| s.queues.queue_info(&queue).map(|info| info_body(&info)))
        }
        Op::ExchangeList | Op::QueueList => listing(header.op, body)?,
        Op::QueueBind | Op::QueueUnbind | Op::ExchangeBind | Op::ExchangeUnbind => {
            binding(header.op, body)?
        }
        op => unreachable!("{} is not a queues management op", op.name()),
    };
    let connection = connection(server, conn);
    control_request(ctx, server, conn, header, move |shared| {
        job(shared, &connection).map_err(Failure::from)
    })
}

/// `EXCHANGE_LIST` / `QUEUE_LIST`: every definition.
fn listing(op: Op, body: Bytes) -> Result<Job, Failure> {
    crate::protocol::Reader::new(body, op.name()).end()?;
    Ok(Box::new(move |s, _| {
        let mut out = BytesMut::new();
        if op == Op::ExchangeList {
            let all = s.queues.exchanges();
            encode_definitions(&mut out, all.iter().map(ExchangeConfig::encode));
        } else {
            let all = s.queues.queues();
            encode_definitions(&mut out, all.iter().map(QueueConfig::encode));
        }
        Ok(out.freeze())
    }))
}

/// `QUEUE_BIND` (as the connection), `QUEUE_UNBIND`, `EXCHANGE_BIND`, `EXCHANGE_UNBIND`.
fn binding(op: Op, body: Bytes) -> Result<Job, Failure> {
    let bind = Bind::decode(body, op.name())?;
    Ok(Box::new(move |s, c| {
        let Bind {
            destination,
            source,
            routing_key,
            arguments,
        } = bind;
        match op {
            Op::QueueBind => c.bind_queue(&destination, &source, &routing_key, arguments),
            Op::QueueUnbind => {
                s.queues
                    .unbind_queue(&destination, &source, &routing_key, arguments)
            }
            Op::ExchangeUnbind => {
                s.queues
                    .unbind_exchange(&destination, &source, &routing_key, arguments)
            }
            _ => s
                .queues
                .bind_exchange(&destination, &source, &routing_key, arguments),
        }
        .map(|()| Bytes::new())
    }))
}

pub(super) fn publish(
    ctx: &mut ShardCtx,
    server: &ShardServer,
    conn: &ConnRef,
    header: &FrameHeader,
    body: Bytes,
) -> Result<(), Failure> {
    let (mandatory, messages) = decode_publish(body)?;
    // Refusals of the whole frame answer here, before the answer is deferred.
    crate::queue::check_messages(&messages)?;
    let answer = defer(ctx, conn, server, header);
    let runtime = ctx.runtime();
    let done = move |results: Vec<Result<crate::queue::Confirm, QueueError>>| {
        let confirms: Vec<Confirmed> = results
            .into_iter()
            .map(|r| {
                r.map(|c| u32::try_from(c.queues).unwrap_or(u32::MAX))
                    .map_err(|e| {
                        let f = Failure::from(e);
                        (f.code, f.message)
                    })
            })
            .collect();
        let mut out = BytesMut::new();
        encode_confirms(&mut out, &confirms);
        answer.answer_from_afar(&runtime, Ok(out.freeze()));
    };
    crate::queue::Queues::publish_on_shard(ctx, messages, mandatory, done).map_err(Failure::from)
}

/// A queue consumer as the server pushes from it. Its last reference may drop on a
/// shard; the consumer itself is then dropped on the control lane (cancelling waits
/// for the queue's shard to take its unacknowledged deliveries back).
pub(crate) struct QueueFeed {
    consumer: Option<QueueConsumer>,
    shared: Arc<ServerShared>,
}

impl Drop for QueueFeed {
    fn drop(&mut self) {
        if let Some(consumer) = self.consumer.take() {
            self.shared.control.release(move || drop(consumer));
        }
    }
}

impl QueueFeed {
    fn consumer(&self) -> Result<&QueueConsumer, String> {
        self.consumer
            .as_ref()
            .ok_or_else(|| "consumer released".to_owned())
    }
}

impl Feed for QueueFeed {
    const KIND: &'static str = "queue";
    type Item = Delivery;

    fn next_item(&self) -> Result<Option<Delivery>, String> {
        self.consumer()?.try_next().map_err(|e| e.to_string())
    }
    fn arm(&self) -> bool {
        self.consumer.as_ref().is_none_or(QueueConsumer::arm)
    }
    fn fd(&self) -> std::os::fd::RawFd {
        self.consumer.as_ref().map_or(-1, QueueConsumer::fd)
    }
    fn slots(session: &mut Session) -> &mut HashMap<u64, Slot<Self>> {
        &mut session.queue_consumers
    }
    fn push(delivery: Delivery, id: u64, conn: &mut Conn, counters: &ShardNetCounters) {
        conn.queue_frame(counters, Op::QueueMessage, 0, 0, |out| {
            encode_delivery(out, id, &delivery);
        });
    }
}

pub(super) fn consume(
    ctx: &mut ShardCtx,
    server: &ShardServer,
    conn: &ConnRef,
    header: &FrameHeader,
    body: Bytes,
) -> Result<(), Failure> {
    let request = Consume::decode(body)?;
    let id = request.consumer_id;
    if conn.borrow().session.id_in_use(id) {
        return Err(super::id_in_use(id));
    }
    let connection = connection(server, conn);
    let home = Home::of(ctx, server, conn);
    control_request_claiming(ctx, server, conn, header, Some(id), move |shared| {
        let options = ConsumeOptions {
            prefetch: request.prefetch,
            no_ack: request.no_ack,
        };
        let consumer = connection
            .consume(&request.queue, options)
            .map_err(Failure::from)?;
        let slot = Slot::new(QueueFeed {
            consumer: Some(consumer),
            shared: shared.clone(),
        });
        home.install(&shared.runtime, id, slot)?;
        Ok(Bytes::new())
    })
}

pub(super) fn cancel(
    ctx: &mut ShardCtx,
    server: &ShardServer,
    conn: &ConnRef,
    header: &FrameHeader,
    body: Bytes,
) -> Result<(), Failure> {
    let id = decode_id(body, "QUEUE_CANCEL")?;
    feed::detach::<QueueFeed>(ctx, server, conn, header, id)
}

pub(super) fn answer(
    ctx: &mut ShardCtx,
    server: &ShardServer,
    conn: &ConnRef,
    header: &FrameHeader,
    body: Bytes,
) -> Result<(), Failure> {
    let (id, tag, multiple, requeue) = decode_answer(body, header.op.name())?;
    let feed = conn
        .borrow_mut()
        .session
        .queue_consumers
        .get(&id)
        .map(|slot| slot.feed.clone())
        .ok_or_else(|| feed::no_consumer::<QueueFeed>(id))?;
    let consumer = feed
        .consumer()
        .map_err(|why| Failure::new(ErrorCode::NotFound, why))?;
    let result = if header.op == Op::QueueAck {
        consumer.ack(tag, multiple)
    } else {
        consumer.nack(tag, multiple, requeue)
    };
    result.map_err(Failure::from)?;
    reply(ctx, server, conn, header, |_| {});
    Ok(())
}
