//! The native protocol's sessions: what each frame a client sends does to the broker.
//!
//! Owns: per connection, the handshake state, the subscriptions it made (by the
//! client's ids), and the count of requests whose answers are still to come. Cutting
//! frames out of a connection's input, running each against the models on the
//! connection's shard, and queueing the replies and pushed messages.
//!
//! Never: touches sockets (`net` does) or holds a borrow of the connection while it
//! calls a model (a model may call back, e.g. a local delivery or `NoResponders`).

mod pubsub;
mod session;

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use bytes::Bytes;

use crate::net::{Conn, ConnState, ShardServer};
use crate::protocol::{split_frame, ErrorCode, FrameHeader, Op, FLAG_NO_REPLY, FLAG_REPLY};
use crate::runtime::ShardCtx;

/// The protocol state of one connection.
#[derive(Default)]
pub(crate) struct Session {
    /// Subscriptions by the client's id → the engine's.
    subscriptions: HashMap<u64, crate::pubsub::SubId>,
    /// Requests accepted whose answer has not been queued yet.
    pending: u32,
    /// `ERROR ShuttingDown` was queued.
    told_stop: bool,
}

type ConnRef = Rc<RefCell<Conn>>;

/// Runs every whole frame in `conn`'s input, stopping early if the connection starts
/// closing or its output goes over its bound (the rest waits for `resume_reading`).
pub(crate) fn on_input(ctx: &mut ShardCtx, server: &ShardServer, conn: &ConnRef) {
    let max_frame = server.shared().config.max_frame;
    loop {
        let next = {
            let mut c = conn.borrow_mut();
            if !matches!(c.state, ConnState::Handshake | ConnState::Open) {
                return;
            }
            if server.over_bound(&c) && c.output_len() > 0 {
                drop(c);
                server.pause_reading(ctx, conn);
                break;
            }
            match split_frame(c.input_mut(), max_frame) {
                Ok(Some((header, total))) => {
                    let frame = c.input_mut().split_to(total).freeze();
                    c.last_frame_in = std::time::Instant::now();
                    Ok(Some((header, frame.slice(crate::protocol::HEADER_BYTES..))))
                }
                Ok(None) => Ok(None),
                Err(error) => Err(error),
            }
        };
        match next {
            Ok(Some((header, body))) => {
                let counters = &server.shared().counters[ctx.shard_id()];
                crate::net::ShardNetCounters::add(&counters.frames_in, 1);
                dispatch(ctx, server, conn, header, body);
            }
            Ok(None) => break,
            Err(error) => {
                server.fail(ctx, conn, 0, error.code(), &error.to_string());
                break;
            }
        }
    }
    server.flush(ctx, conn);
}

fn dispatch(
    ctx: &mut ShardCtx,
    server: &ShardServer,
    conn: &ConnRef,
    header: FrameHeader,
    body: Bytes,
) {
    let state = conn.borrow().state;
    if header.has(FLAG_REPLY) && header.op != Op::Pong {
        let why = format!("{} with the reply flag from a client", header.op.name());
        return server.fail(ctx, conn, header.correlation, ErrorCode::OutOfState, &why);
    }
    let result = match (state, header.op) {
        (ConnState::Handshake, Op::Hello) => session::hello(ctx, server, conn, &header, body),
        (ConnState::Handshake, op) => Err(Failure::fatal(
            ErrorCode::OutOfState,
            format!("{} before HELLO", op.name()),
        )),
        (_, Op::Ping) => {
            reply(ctx, server, conn, &header, |_| {});
            Ok(())
        }
        (_, Op::Pong) => Ok(()),
        (_, Op::Publish) => pubsub::publish(ctx, server, conn, &header, body),
        (_, Op::Subscribe) => pubsub::subscribe(ctx, server, conn, &header, body),
        (_, Op::Unsubscribe) => pubsub::unsubscribe(ctx, server, conn, &header, body),
        (_, Op::Request) => pubsub::request(ctx, server, conn, &header, body),
        (_, op @ (Op::Hello | Op::Error | Op::Message)) => Err(Failure::fatal(
            ErrorCode::OutOfState,
            format!("{} is not valid from a client here", op.name()),
        )),
    };
    if let Err(failure) = result {
        server.fail(
            ctx,
            conn,
            header.correlation,
            failure.code,
            &failure.message,
        );
    }
}

/// Why a request failed: the code and message of its `ERROR` reply.
pub(crate) struct Failure {
    code: ErrorCode,
    message: String,
}

impl Failure {
    fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    fn fatal(code: ErrorCode, message: String) -> Self {
        debug_assert!(code.is_fatal());
        Self { code, message }
    }
}

impl From<crate::protocol::ProtocolError> for Failure {
    fn from(error: crate::protocol::ProtocolError) -> Self {
        Self::new(error.code(), error.to_string())
    }
}

/// Queues the reply to `header`'s request (unless it asked for none) with `body`.
fn reply(
    ctx: &mut ShardCtx,
    server: &ShardServer,
    conn: &ConnRef,
    header: &FrameHeader,
    body: impl FnOnce(&mut bytes::BytesMut),
) {
    if header.has(FLAG_NO_REPLY) {
        return;
    }
    let counters = &server.shared().counters[ctx.shard_id()];
    conn.borrow_mut()
        .queue_frame(counters, header.op, FLAG_REPLY, header.correlation, body);
}

/// A request answered later (on this shard): marks it pending on `conn` and returns the
/// handle its answer comes back through.
fn defer(conn: &ConnRef, server: &ShardServer, header: &FrameHeader) -> Deferred {
    conn.borrow_mut().session.pending += 1;
    Deferred {
        server: server.clone(),
        conn: conn.borrow().id,
        op: header.op,
        correlation: header.correlation,
        quiet: header.has(FLAG_NO_REPLY),
    }
}

/// Writes a reply's body.
type BodyWriter = Box<dyn FnOnce(&mut bytes::BytesMut)>;

/// The way back to a connection for a request answered later.
pub(crate) struct Deferred {
    server: ShardServer,
    conn: u64,
    op: Op,
    correlation: u64,
    quiet: bool,
}

impl Deferred {
    /// Queues the answer (`Ok` with a body, or an `ERROR`), if the connection is still
    /// there, and sends it.
    fn answer(self, ctx: &mut ShardCtx, result: Result<BodyWriter, Failure>) {
        let Some(conn) = self.server.conn(self.conn) else {
            return;
        };
        conn.borrow_mut().session.pending -= 1;
        match result {
            Ok(body) if !self.quiet => {
                let counters = &self.server.shared().counters[ctx.shard_id()];
                conn.borrow_mut().queue_frame(
                    counters,
                    self.op,
                    FLAG_REPLY,
                    self.correlation,
                    body,
                );
                self.server.flush(ctx, &conn);
            }
            Ok(_) => {}
            Err(failure) => {
                self.server
                    .fail(ctx, &conn, self.correlation, failure.code, &failure.message);
            }
        }
        let closing = conn.borrow().state == ConnState::Closing;
        if closing {
            stopping(ctx, &self.server, &conn);
        }
    }
}

/// Whether `conn` may close: no request is waiting for its answer.
pub(crate) fn may_close(conn: &ConnRef) -> bool {
    conn.borrow().session.pending == 0
}

/// The server is stopping (or `conn` is closing): once its requests are answered it
/// gets `ERROR ShuttingDown` and closes when that is sent.
pub(crate) fn stopping(ctx: &mut ShardCtx, server: &ShardServer, conn: &ConnRef) {
    if !server.is_stopping() || !may_close(conn) {
        return;
    }
    let told = {
        let mut c = conn.borrow_mut();
        let told = c.session.told_stop;
        c.session.told_stop = true;
        told
    };
    if !told {
        server.fail(ctx, conn, 0, ErrorCode::ShuttingDown, "server stopping");
    }
}

/// The connection closed: end everything its session holds.
pub(crate) fn closed(ctx: &mut ShardCtx, _server: &ShardServer, conn: &ConnRef) {
    let subscriptions: Vec<_> = conn
        .borrow_mut()
        .session
        .subscriptions
        .drain()
        .map(|(_, id)| id)
        .collect();
    let pubsub = crate::pubsub::ShardPubSub::get(ctx);
    for id in subscriptions {
        pubsub.unsubscribe(ctx, id);
    }
}
