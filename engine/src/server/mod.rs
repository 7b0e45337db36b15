//! The native protocol's sessions: what each frame a client sends does to the broker
//! (`nats` does the same for the NATS client protocol, sharing the input loop).
//!
//! Owns: per connection, the handshake state, the subscriptions it made (by the
//! client's ids), and the count of requests whose answers are still to come. Cutting
//! frames out of a connection's input, running each against the models on the
//! connection's shard, and queueing the replies and pushed messages.
//!
//! Never: touches sockets (`net` does) or holds a borrow of the connection while it
//! calls a model (a model may call back, e.g. a local delivery or `NoResponders`).

mod control;
mod feed;
pub(crate) mod nats;
mod pubsub;
mod queue;
mod session;
mod stream;

pub(crate) use control::ControlLane;

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use bytes::{Bytes, BytesMut};

use crate::net::{Conn, ConnState, ShardServer};
use crate::protocol::{split_frame, ErrorCode, FrameHeader, Op, FLAG_NO_REPLY, FLAG_REPLY};
use crate::pubsub::ShardPubSub;
use crate::runtime::{RuntimeHandle, ShardCtx};

/// The protocol state of one connection.
#[derive(Default)]
pub(crate) struct Session {
    /// Subscriptions by the client's id → the engine's.
    subscriptions: HashMap<u64, crate::pubsub::SubId>,
    /// Stream consumers by the client's id.
    consumers: HashMap<u64, feed::Slot<stream::StreamFeed>>,
    /// Queue consumers by the client's id.
    queue_consumers: HashMap<u64, feed::Slot<queue::QueueFeed>>,
    /// What this connection's exclusive queues belong to (made on first use).
    amqp: Option<std::sync::Arc<crate::queue::Connection>>,
    /// Requests accepted whose answer has not been queued yet.
    pending: u32,
    /// `ERROR ShuttingDown` was queued.
    told_stop: bool,
    /// Consumer ids claimed by requests still on the control lane (so two pipelined
    /// requests cannot both take one id).
    reserved: std::collections::HashSet<u64>,
    /// The NATS protocol state, on a NATS server's connections.
    nats: Option<Box<nats::NatsSession>>,
}

impl Session {
    /// Whether the client already uses `id` for a subscription or consumer.
    fn id_in_use(&self, id: u64) -> bool {
        self.subscriptions.contains_key(&id)
            || self.consumers.contains_key(&id)
            || self.queue_consumers.contains_key(&id)
            || self.reserved.contains(&id)
    }
}

fn id_in_use(id: u64) -> Failure {
    Failure::new(
        ErrorCode::IdInUse,
        format!("id {id} is in use on this connection"),
    )
}

type ConnRef = Rc<RefCell<Conn>>;

/// Runs every whole frame (or NATS command) in `conn`'s input, stopping early if the
/// connection starts closing or its output goes over its bound (the rest waits for
/// `resume_reading`).
pub(crate) fn on_input(ctx: &mut ShardCtx, server: &ShardServer, conn: &ConnRef) {
    if server.shared().config.nats().is_some() {
        return nats::on_input(ctx, server, conn);
    }
    let max_frame = server.shared().config.max_frame;
    let cut = |c: &mut Conn| match split_frame(c.input_mut(), max_frame) {
        Ok(Some((header, total))) => {
            let frame = c.input_mut().split_to(total).freeze();
            Ok(Some((header, frame.slice(crate::protocol::HEADER_BYTES..))))
        }
        Ok(None) => Ok(None),
        Err(error) => Err(error),
    };
    let run = |ctx: &mut ShardCtx, conn: &ConnRef, (header, body)| {
        dispatch(ctx, server, conn, header, body);
    };
    let fail = |ctx: &mut ShardCtx, conn: &ConnRef, error: crate::protocol::ProtocolError| {
        server.fail(ctx, conn, 0, error.code(), &error.to_string());
    };
    drain_input(ctx, server, conn, cut, run, fail);
}

/// The input loop both protocols share: `cut` takes the next whole unit off the
/// connection's input (`None`: incomplete, or not to be read now), `run` runs it, and
/// `fail` reports input that cannot be cut (and ends the loop). Stops when the
/// connection leaves `Handshake`/`Open`, and pauses reading while its output is over
/// its bound. Then releases an emptied input buffer and sends what was queued. A unit
/// that published to a backlogged connection ends the loop too, and the connection is
/// stalled with the rest of its input waiting (`ShardServer::stall`): one unit past
/// the backlog threshold, not a whole read's worth.
pub(crate) fn drain_input<T, E>(
    ctx: &mut ShardCtx,
    server: &ShardServer,
    conn: &ConnRef,
    mut cut: impl FnMut(&mut Conn) -> Result<Option<T>, E>,
    mut run: impl FnMut(&mut ShardCtx, &ConnRef, T),
    fail: impl FnOnce(&mut ShardCtx, &ConnRef, E),
) {
    // Counted and time-stamped once per call, not per unit: a recv brings many.
    let mut units = 0u64;
    // Whatever was routed before this connection's commands is not its doing. (It may
    // be another connection's, whose input loop is further up the stack when this one
    // runs from a delivery: that one gets it back below.)
    let pubsub = ShardPubSub::get(ctx);
    let outer = pubsub.take_pressed();
    let mut pressed = None;
    loop {
        let next = {
            let mut c = conn.borrow_mut();
            if !matches!(c.state, ConnState::Handshake | ConnState::Open) || c.is_stalled() {
                break;
            }
            if server.over_bound(&c) && c.output_len() > 0 {
                drop(c);
                server.pause_reading(ctx, conn);
                break;
            }
            let next = cut(&mut c);
            if units == 0 && matches!(next, Ok(Some(_))) {
                c.last_frame_in = std::time::Instant::now();
            }
            next
        };
        match next {
            Ok(Some(unit)) => {
                units += 1;
                run(ctx, conn, unit);
                pressed = pubsub.take_pressed();
                if pressed.is_some() {
                    break;
                }
            }
            Ok(None) => break,
            Err(error) => {
                fail(ctx, conn, error);
                break;
            }
        }
    }
    pubsub.restore_pressed(outer);
    let counters = &server.shared().counters[ctx.shard_id()];
    crate::net::ShardNetCounters::add(&counters.frames_in, units);
    if !conn.borrow().is_live() {
        return;
    }
    conn.borrow_mut().release_empty_input();
    server.flush(ctx, conn);
    if let Some(pressure) = pressed {
        server.stall(ctx, conn, pressure);
    }
}

/// A connection was accepted: a NATS server greets it with `INFO`.
pub(crate) fn opened(ctx: &mut ShardCtx, server: &ShardServer, conn: &ConnRef) {
    if server.shared().config.nats().is_some() {
        nats::opened(ctx, server, conn);
    }
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
        (_, op) => match handler(op) {
            Some(handle) => handle(ctx, server, conn, &header, body),
            None => Err(Failure::fatal(
                ErrorCode::OutOfState,
                format!("{} is not valid from a client here", op.name()),
            )),
        },
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

/// What runs a request frame on an open session.
type Handler =
    fn(&mut ShardCtx, &ShardServer, &ConnRef, &FrameHeader, Bytes) -> Result<(), Failure>;

/// The handler of each op a client may send once the session is open (`None`: the op
/// is the server's to send, or `HELLO` again).
fn handler(op: Op) -> Option<Handler> {
    Some(match op {
        Op::Ping => |ctx, server, conn, header, _| {
            // The answer to a PING is a PONG with its correlation id.
            let counters = &server.shared().counters[ctx.shard_id()];
            conn.borrow_mut().queue_frame(
                counters,
                Op::Pong,
                FLAG_REPLY,
                header.correlation,
                |_| {},
            );
            Ok(())
        },
        Op::Pong => |_, _, _, _, _| Ok(()),
        Op::Publish => pubsub::publish,
        Op::Subscribe => pubsub::subscribe,
        Op::Unsubscribe => pubsub::unsubscribe,
        Op::Request => pubsub::request,
        Op::StreamCreate
        | Op::StreamUpdate
        | Op::StreamDelete
        | Op::StreamInfo
        | Op::StreamList
        | Op::ConsumerCreate
        | Op::ConsumerDelete
        | Op::ConsumerInfo
        | Op::ConsumerList => stream::manage,
        Op::StreamPublish => stream::publish,
        Op::ConsumerJoin | Op::ConsumerSubscribe => stream::attach,
        Op::ConsumerLeave => stream::leave,
        Op::StreamAck => stream::ack,
        Op::StreamNak => stream::nak,
        Op::ExchangeDeclare
        | Op::ExchangeDelete
        | Op::QueueDeclare
        | Op::QueueDelete
        | Op::QueuePurge
        | Op::QueueInfo
        | Op::QueueBind
        | Op::QueueUnbind
        | Op::ExchangeBind
        | Op::ExchangeUnbind
        | Op::ExchangeList
        | Op::QueueList => queue::manage,
        Op::QueuePublish => queue::publish,
        Op::QueueConsume => queue::consume,
        Op::QueueCancel => queue::cancel,
        Op::QueueAck | Op::QueueNack => queue::answer,
        Op::Hello
        | Op::Error
        | Op::Message
        | Op::StreamMessage
        | Op::ConsumerClosed
        | Op::QueueMessage => return None,
    })
}

/// Why a request failed: the code and message of its `ERROR` reply.
pub(crate) use crate::api::Error as Failure;

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

/// A request answered later: marks it pending on `conn` and returns the handle its
/// answer comes back through (from this shard, or from any thread via the runtime).
fn defer(ctx: &ShardCtx, conn: &ConnRef, server: &ShardServer, header: &FrameHeader) -> Deferred {
    conn.borrow_mut().session.pending += 1;
    Deferred {
        runtime: Some(ctx.runtime()),
        server: server.shared().id,
        shard: ctx.shard_id(),
        conn: conn.borrow().id,
        op: header.op,
        correlation: header.correlation,
        quiet: header.has(FLAG_NO_REPLY),
        reserved: None,
    }
}

/// The way back to a connection for a request answered later. `Send`: a control-lane
/// worker or another shard may hold it.
pub(crate) struct Deferred {
    /// `None` once answered; a `Deferred` dropped unanswered (a job that panicked)
    /// answers `Internal` through it, so the request never hangs.
    runtime: Option<RuntimeHandle>,
    server: u64,
    shard: usize,
    conn: u64,
    op: Op,
    correlation: u64,
    quiet: bool,
    /// A consumer id this request claimed; released when it is answered.
    reserved: Option<u64>,
}

impl Deferred {
    /// Queues the answer (`Ok` with a body, or an `ERROR`) on the connection's shard,
    /// which must be this one, if the connection is still there, and sends it.
    fn answer(mut self, ctx: &mut ShardCtx, result: Result<impl FnOnce(&mut BytesMut), Failure>) {
        debug_assert_eq!(ctx.shard_id(), self.shard);
        self.runtime = None;
        let Some(server) = ShardServer::get(ctx, self.server) else {
            return;
        };
        let Some(conn) = server.conn(self.conn) else {
            return;
        };
        {
            let mut c = conn.borrow_mut();
            c.session.pending -= 1;
            if let Some(id) = self.reserved {
                c.session.reserved.remove(&id);
            }
        }
        match result {
            Ok(body) if !self.quiet => {
                let counters = &server.shared().counters[ctx.shard_id()];
                conn.borrow_mut().queue_frame(
                    counters,
                    self.op,
                    FLAG_REPLY,
                    self.correlation,
                    body,
                );
                server.flush(ctx, &conn);
            }
            Ok(_) => {}
            Err(failure) => {
                server.fail(ctx, &conn, self.correlation, failure.code, &failure.message);
            }
        }
        let closing = conn.borrow().state == ConnState::Closing;
        if closing {
            stopping(ctx, &server, &conn);
        }
    }

    /// `answer`, from any thread: the (already encoded) body travels to the
    /// connection's shard.
    fn answer_from_afar(mut self, runtime: &RuntimeHandle, result: Result<Bytes, Failure>) {
        let shard = self.shard;
        self.runtime = None;
        let me = Deferred {
            runtime: None,
            ..self
        };
        let task = move |ctx: &mut ShardCtx| {
            me.answer(
                ctx,
                result.map(|body| move |out: &mut BytesMut| out.extend_from_slice(&body)),
            );
        };
        if let Err(error) = runtime.spawn(shard, task) {
            // The engine is stopping or saturated: the connection is being torn down
            // with it, or its client sees the request time out.
            tracing::warn!(%error, shard, "a reply could not reach its connection");
        }
    }
}

impl Drop for Deferred {
    fn drop(&mut self) {
        let Some(runtime) = self.runtime.take() else {
            return;
        };
        let me = Deferred {
            runtime: None,
            ..*self
        };
        let failure = Failure::new(ErrorCode::Internal, "the request's handler failed");
        me.answer_from_afar(&runtime, Err(failure));
    }
}

/// Runs `job` on the control lane; its result (an encoded reply body, or a failure)
/// is the answer to `header`'s request.
fn control_request<F>(
    ctx: &mut ShardCtx,
    server: &ShardServer,
    conn: &ConnRef,
    header: &FrameHeader,
    job: F,
) -> Result<(), Failure>
where
    F: FnOnce(&std::sync::Arc<crate::net::ServerShared>) -> Result<Bytes, Failure> + Send + 'static,
{
    control_request_claiming(ctx, server, conn, header, None, job)
}

/// `control_request` for a request that takes consumer id `claim` (if any): the id is
/// in use from now until the request is answered (then its consumer holds it, if it
/// succeeded).
fn control_request_claiming<F>(
    ctx: &mut ShardCtx,
    server: &ShardServer,
    conn: &ConnRef,
    header: &FrameHeader,
    claim: Option<u64>,
    job: F,
) -> Result<(), Failure>
where
    F: FnOnce(&std::sync::Arc<crate::net::ServerShared>) -> Result<Bytes, Failure> + Send + 'static,
{
    let shared = server.shared().clone();
    let permit = shared.control.permit()?;
    let mut answer = defer(ctx, conn, server, header);
    if let Some(id) = claim {
        conn.borrow_mut().session.reserved.insert(id);
        answer.reserved = Some(id);
    }
    let runtime = ctx.runtime();
    let job_shared = shared.clone();
    permit.submit(move || {
        let result = job(&job_shared);
        answer.answer_from_afar(&runtime, result);
    });
    Ok(())
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

/// The connection's output was sent: consumers stopped by its bound resume.
pub(crate) fn output_drained(ctx: &mut ShardCtx, server: &ShardServer, conn: &ConnRef) {
    if conn.borrow().is_live() {
        feed::unblock::<stream::StreamFeed>(ctx, server, conn);
        feed::unblock::<queue::QueueFeed>(ctx, server, conn);
    }
}

/// The periodic sweep: keeps the session's consumers alive in their groups.
pub(crate) fn tick(ctx: &mut ShardCtx, server: &ShardServer, conn: &ConnRef) {
    feed::heartbeat::<stream::StreamFeed>(ctx, server, conn);
    feed::heartbeat::<queue::QueueFeed>(ctx, server, conn);
}

/// The connection closed: end everything its session holds.
pub(crate) fn closed(ctx: &mut ShardCtx, server: &ShardServer, conn: &ConnRef) {
    let (subscriptions, consumers, queue_consumers, amqp) = {
        let mut c = conn.borrow_mut();
        let subs: Vec<_> = c.session.subscriptions.drain().map(|(_, id)| id).collect();
        let consumers: Vec<_> = c.session.consumers.drain().collect();
        let queue_consumers: Vec<_> = c.session.queue_consumers.drain().collect();
        (subs, consumers, queue_consumers, c.session.amqp.take())
    };
    // Queue consumers are cancelled (their unacknowledged deliveries requeued) and the
    // connection's exclusive queues deleted on the control lane.
    for (_, slot) in queue_consumers {
        feed::release(ctx, slot);
    }
    if let Some(amqp) = amqp {
        queue::release_connection(server.shared(), amqp);
    }
    // Stream consumers leave their groups as they drop (a task to the coordinator);
    // their unacknowledged records go to the group's other members.
    for (_, slot) in consumers {
        feed::release(ctx, slot);
    }
    let pubsub = crate::pubsub::ShardPubSub::get(ctx);
    for id in subscriptions {
        pubsub.unsubscribe(ctx, id);
    }
    nats::closed(ctx, conn);
}
