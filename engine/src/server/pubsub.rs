//! Subjects over the wire: publish batches, subscriptions whose messages are pushed to
//! the connection, and request-reply with the engine's inboxes.

use std::cell::Cell;
use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;

use super::{defer, reply, ConnRef, Failure};
use crate::net::{ShardNetCounters, ShardServer};
use crate::protocol::pubsub::{
    decode_publish, decode_unsubscribe, encode_delivery, encode_message, Request, Subscribe,
};
use crate::protocol::{ErrorCode, FrameHeader, Op};
use crate::pubsub::{PubSubError, ShardPubSub};
use crate::runtime::ShardCtx;

/// The longest a `REQUEST` may wait.
const REQUEST_TIMEOUT_MAX: Duration = Duration::from_secs(3600);

pub(super) fn publish(
    ctx: &mut ShardCtx,
    server: &ShardServer,
    conn: &ConnRef,
    header: &FrameHeader,
    body: Bytes,
) -> Result<(), Failure> {
    let messages = decode_publish(body)?;
    let pubsub = ShardPubSub::get(ctx);
    let total = messages.len();
    for (i, message) in messages.into_iter().enumerate() {
        if let Err(error) = pubsub.publish(ctx, message) {
            let mut failure = Failure::from(error);
            failure.message = format!("{} (messages {i}..{total} not published)", failure.message);
            return Err(failure);
        }
    }
    reply(ctx, server, conn, header, |_| {});
    Ok(())
}

pub(super) fn subscribe(
    ctx: &mut ShardCtx,
    server: &ShardServer,
    conn: &ConnRef,
    header: &FrameHeader,
    body: Bytes,
) -> Result<(), Failure> {
    let request = Subscribe::decode(body)?;
    if conn.borrow().session.id_in_use(request.sub_id) {
        return Err(super::id_in_use(request.sub_id));
    }
    let conn_id = conn.borrow().id;
    let sub_id = request.sub_id;
    let deliver_to = server.clone();
    let handler = move |ctx: &mut ShardCtx, message: crate::pubsub::Message| {
        deliver(ctx, &deliver_to, conn_id, sub_id, &message);
    };
    // Shared by `ready` and the failure path below: whichever runs answers (a refused
    // subscribe drops `ready` unrun, and must answer with the real reason).
    let answer = Rc::new(Cell::new(Some(defer(ctx, conn, server, header))));
    let ready_answer = answer.clone();
    let ready = move |ctx: &mut ShardCtx| {
        if let Some(answer) = ready_answer.take() {
            answer.answer(ctx, Ok(|_: &mut bytes::BytesMut| {}));
        }
    };
    let max = (request.max_messages > 0).then_some(request.max_messages);
    let pubsub = ShardPubSub::get(ctx);
    let spec = (
        request.pattern.as_str(),
        request.queue_group.as_deref(),
        max,
    );
    let pressure = Some(conn.borrow().pressure());
    match pubsub.subscribe_from(ctx, spec, pressure, handler, ready) {
        Ok(id) => {
            conn.borrow_mut().session.subscriptions.insert(sub_id, id);
            Ok(())
        }
        Err(error) => {
            if let Some(answer) = answer.take() {
                answer.answer(
                    ctx,
                    Err::<fn(&mut bytes::BytesMut), _>(Failure::from(error)),
                );
            }
            Ok(())
        }
    }
}

/// Pushes a subscription's message to its connection, or drops it (counted) when the
/// connection's output is over its bound: subjects are at-most-once, and a client that
/// does not read must not make the server buffer without limit.
fn deliver(
    ctx: &mut ShardCtx,
    server: &ShardServer,
    conn_id: u64,
    sub_id: u64,
    message: &crate::pubsub::Message,
) {
    let Some(conn) = server.conn(conn_id) else {
        return;
    };
    let counters = &server.shared().counters[ctx.shard_id()];
    let headers = message.headers.as_ref().map_or(0, |h| h.len());
    {
        let mut c = conn.borrow_mut();
        if c.output_len() > server.shared().config.outbound_bytes_max
            || headers > crate::protocol::HEADERS_MAX
        {
            ShardNetCounters::add(&counters.deliveries_dropped, 1);
            return;
        }
        c.queue_frame(counters, Op::Message, 0, 0, |out| {
            encode_delivery(out, sub_id, message);
        });
    }
    server.flush(ctx, &conn);
}

pub(super) fn unsubscribe(
    ctx: &mut ShardCtx,
    server: &ShardServer,
    conn: &ConnRef,
    header: &FrameHeader,
    body: Bytes,
) -> Result<(), Failure> {
    let sub_id = decode_unsubscribe(body)?;
    let Some(id) = conn.borrow_mut().session.subscriptions.remove(&sub_id) else {
        return Err(Failure::new(
            ErrorCode::NotFound,
            format!("no subscription {sub_id} on this connection"),
        ));
    };
    ShardPubSub::get(ctx).unsubscribe(ctx, id);
    reply(ctx, server, conn, header, |_| {});
    Ok(())
}

pub(super) fn request(
    ctx: &mut ShardCtx,
    server: &ShardServer,
    conn: &ConnRef,
    header: &FrameHeader,
    body: Bytes,
) -> Result<(), Failure> {
    let request = Request::decode(body)?;
    let timeout = Duration::from_millis(u64::from(request.timeout_ms)).min(REQUEST_TIMEOUT_MAX);
    let answer = defer(ctx, conn, server, header);
    let done = Box::new(
        move |ctx: &mut ShardCtx, result: Result<crate::pubsub::Message, PubSubError>| {
            let result = result
                .map(|message| move |out: &mut bytes::BytesMut| encode_message(out, &message))
                .map_err(Failure::from);
            answer.answer(ctx, result);
        },
    );
    ShardPubSub::get(ctx).request(ctx, request.message, timeout, done);
    Ok(())
}
