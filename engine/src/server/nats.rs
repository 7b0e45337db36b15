//! NATS client sessions: what each NATS command a client sends does to the broker.
//!
//! Owns: per NATS connection, the options its `CONNECT` chose, its subscriptions (by
//! the client's sid, with their delivered count and `UNSUB` maximum), and whether its
//! input waits for a subscription to be routed everywhere. Running each command on the
//! connection's shard against the subjects model (`ShardPubSub`) and, for subjects a
//! stream captures, the streams model; queueing `MSG`/`HMSG`, `PONG`, `+OK`, `-ERR`.
//!
//! Never: touches sockets (`net` does), holds a borrow of the connection while it calls
//! a model (a delivery may come back at once), or answers a `PING` before every `SUB`
//! ahead of it is routed by every shard and the deliveries of the publishes ahead of
//! it are queued: after a client's `PING`/`PONG`, a publish from anywhere reaches its
//! subscriptions, as nats-server promises.

use std::cell::Cell;
use std::collections::HashMap;
use std::rc::Rc;

use bytes::{Bytes, BytesMut};

use super::ConnRef;
use crate::net::{ConnState, NatsConfig, ShardNetCounters, ShardServer};
use crate::protocol::nats::{
    decode_headers, encode_err, encode_hmsg, encode_info, encode_msg, encode_no_responders,
    encode_ok, encode_pong, encoded_headers_len, parse_command, Command, ConnectOptions, NatsError,
    ServerInfo,
};
use crate::protocol::{ErrorCode, HEADERS_MAX};
use crate::pubsub::{Message, ShardPubSub, SubId, Subject};
use crate::routing::{naive_match, Pattern, Syntax};
use crate::runtime::ShardCtx;
use crate::stream::{PublishAck, StreamError};

/// The most subscriptions one NATS connection holds.
pub(crate) const SUBSCRIPTIONS_MAX: usize = 65536;

/// The nats-server version whose client protocol this front end matches; clients
/// enable headers and no-responders from it.
const NATS_VERSION: &str = "2.10.0";

/// The NATS state of one connection.
pub(crate) struct NatsSession {
    verbose: bool,
    echo: bool,
    headers: bool,
    no_responders: bool,
    /// This connection's id as a message origin (unique across servers).
    origin: u64,
    subs: HashMap<Bytes, Rc<NatsSub>>,
    /// `SUB`s not yet routed by every shard.
    subs_unrouted: u32,
    /// A `PING` waits for its `PONG` (for `subs_unrouted` to reach 0, then for the
    /// deliveries of the publishes before it); the commands behind it wait too.
    paused: bool,
    /// `on_input` is running (a subscription ready at once must not re-enter it).
    in_input: bool,
}

/// One subscription of a NATS connection.
struct NatsSub {
    sid: Bytes,
    pattern: Pattern,
    /// The engine's id; `None` once it ended.
    id: Cell<Option<SubId>>,
    delivered: Cell<u64>,
    /// `UNSUB <sid> <max>`: ends once `delivered` reaches it.
    max: Cell<Option<u64>>,
    /// Every shard routes to it, or it ended first (no longer counted as unrouted).
    routed: Cell<bool>,
}

fn session(conn: &ConnRef) -> std::cell::RefMut<'_, NatsSession> {
    std::cell::RefMut::map(conn.borrow_mut(), |c| {
        // `opened` makes it before the connection's first read; only a bug reaches this.
        c.session
            .nats
            .get_or_insert_with(|| Box::new(NatsSession::new(0)))
            .as_mut()
    })
}

impl NatsSession {
    fn new(origin: u64) -> Self {
        Self {
            verbose: false,
            echo: true,
            headers: false,
            no_responders: false,
            origin,
            subs: HashMap::new(),
            subs_unrouted: 0,
            paused: false,
            in_input: false,
        }
    }
}

fn nats_config(server: &ShardServer) -> &NatsConfig {
    // Only NATS servers reach this module (`server::on_input`, `opened` check).
    server
        .shared()
        .config
        .nats()
        .unwrap_or_else(|| unreachable!("a NATS session on a native server"))
}

fn auth_required(server: &ShardServer) -> bool {
    server.shared().config.auth_token.is_some() || nats_config(server).user_password.is_some()
}

/// A new connection: its session, and `INFO`.
pub(crate) fn opened(ctx: &mut ShardCtx, server: &ShardServer, conn: &ConnRef) {
    let nats = nats_config(server);
    let addr = server.local_addr();
    let id = conn.borrow().id;
    let info = ServerInfo {
        server_id: format!("RINGBROKER{:08X}", server.shared().id),
        server_name: nats.server_name.clone(),
        version: NATS_VERSION.to_owned(),
        proto: 1,
        host: addr.ip().to_string(),
        port: addr.port(),
        headers: true,
        auth_required: auth_required(server),
        max_payload: nats.max_payload,
        client_id: id,
    };
    let origin = (server.shared().id << 40) | (id & ((1 << 40) - 1));
    let counters = &server.shared().counters[ctx.shard_id()];
    let open = !auth_required(server);
    let mut c = conn.borrow_mut();
    c.session.nats = Some(Box::new(NatsSession::new(origin)));
    if open {
        // No credentials to wait for: commands may come before (or without) CONNECT,
        // and the handshake timeout does not apply.
        c.state = ConnState::Open;
    }
    c.queue_raw(counters, |out| encode_info(out, &info));
    drop(c);
    server.flush(ctx, conn);
}

/// Runs every whole command in `conn`'s input (see `server::drain_input`).
pub(crate) fn on_input(ctx: &mut ShardCtx, server: &ShardServer, conn: &ConnRef) {
    let max_payload = nats_config(server).max_payload;
    session(conn).in_input = true;
    let cut = |c: &mut crate::net::Conn| {
        if c.session.nats.as_ref().is_some_and(|s| s.paused) {
            return Ok(None);
        }
        parse_command(c.input_mut(), max_payload)
    };
    // The models' shard handles, fetched once per read rather than per command.
    let models = Models {
        pubsub: ShardPubSub::get(ctx),
        streams: crate::stream::ShardStreams::get(ctx),
    };
    let run =
        |ctx: &mut ShardCtx, conn: &ConnRef, command| run(ctx, server, conn, &models, command);
    let fail = |ctx: &mut ShardCtx, conn: &ConnRef, error| fail(ctx, server, conn, &error);
    super::drain_input(ctx, server, conn, cut, run, fail);
    let paused = {
        let mut s = session(conn);
        s.in_input = false;
        s.paused
    };
    // Input piling up behind a PING waiting for its PONG: stop reading until then
    // (`resume` reads again), so the input stays bounded.
    if paused && server.over_bound(&conn.borrow()) {
        server.pause_reading(ctx, conn);
    }
}

/// Sends `-ERR '<text>'`; closes the connection after it when nats-server would.
fn fail(ctx: &mut ShardCtx, server: &ShardServer, conn: &ConnRef, error: &NatsError) {
    tracing::debug!(conn = conn.borrow().id, %error, "NATS client error");
    server.report(ctx, conn, error.is_fatal(), |out| {
        encode_err(out, error.text())
    });
}

/// The `-ERR` for a failure the network layer reports (`ShardServer::fail`), or
/// `None` to close without one (a stopping server, as nats-server does).
pub(crate) fn error_for(code: ErrorCode, state: ConnState, message: &str) -> Option<NatsError> {
    Some(match code {
        ErrorCode::ShuttingDown => return None,
        ErrorCode::IdleTimeout if state == ConnState::Handshake => NatsError::AuthenticationTimeout,
        ErrorCode::IdleTimeout => NatsError::Stale,
        ErrorCode::SlowConsumer => NatsError::SlowConsumer,
        _ => NatsError::Engine(message.to_owned()),
    })
}

/// This shard's handles of the models commands use.
struct Models {
    pubsub: ShardPubSub,
    streams: crate::stream::ShardStreams,
}

fn run(
    ctx: &mut ShardCtx,
    server: &ShardServer,
    conn: &ConnRef,
    models: &Models,
    command: Command,
) {
    let state = conn.borrow().state;
    tracing::trace!(
        conn = conn.borrow().id,
        shard = ctx.shard_id(),
        ?command,
        "NATS command"
    );
    // Only a server that requires credentials leaves connections in the handshake.
    if state == ConnState::Handshake && !matches!(command, Command::Connect(_)) {
        return fail(ctx, server, conn, &NatsError::Authorization);
    }
    let acknowledged = !matches!(command, Command::Ping | Command::Pong | Command::Info);
    let result = match command {
        Command::Connect(json) => connect(server, conn, &json),
        Command::Pub {
            subject,
            reply,
            payload,
        } => publish(ctx, server, conn, models, (subject, reply, None, payload)),
        Command::HPub {
            subject,
            reply,
            headers,
            payload,
        } => publish(
            ctx,
            server,
            conn,
            models,
            (subject, reply, Some(headers), payload),
        ),
        Command::Sub {
            subject,
            queue,
            sid,
        } => subscribe(ctx, server, conn, &subject, queue.as_ref(), sid),
        Command::Unsub { sid, max } => {
            unsubscribe(ctx, server, conn, &sid, max);
            Ok(())
        }
        Command::Ping => {
            ping(ctx, server, conn);
            Ok(())
        }
        Command::Pong | Command::Info => Ok(()),
    };
    match result {
        Err(error) => fail(ctx, server, conn, &error),
        Ok(()) if acknowledged && session(conn).verbose => queue(ctx, server, conn, encode_ok),
        Ok(()) => {}
    }
}

fn queue(ctx: &ShardCtx, server: &ShardServer, conn: &ConnRef, body: impl FnOnce(&mut BytesMut)) {
    let counters = &server.shared().counters[ctx.shard_id()];
    conn.borrow_mut().queue_raw(counters, body);
}

fn connect(server: &ShardServer, conn: &ConnRef, json: &Bytes) -> Result<(), NatsError> {
    let options = ConnectOptions::decode(json)?;
    let handshake = conn.borrow().state == ConnState::Handshake;
    if handshake && !authorized(server, &options) {
        return Err(NatsError::Authorization);
    }
    {
        let mut s = session(conn);
        s.verbose = options.verbose;
        s.echo = options.echo;
        s.headers = options.headers;
        s.no_responders = options.no_responders && options.headers;
    }
    conn.borrow_mut().state = ConnState::Open;
    tracing::debug!(conn = conn.borrow().id, client = ?options.name, "NATS session open");
    Ok(())
}

/// Whether `options` carry the credentials the server requires (any, when it
/// requires none): its token, or its user and password.
fn authorized(server: &ShardServer, options: &ConnectOptions) -> bool {
    let token = server.shared().config.auth_token.as_deref();
    let user = nats_config(server).user_password.as_ref();
    if token.is_none() && user.is_none() {
        return true;
    }
    let eq = |want: &str, got: &Option<String>| {
        got.as_deref()
            .is_some_and(|got| super::session::constant_time_eq(want.as_bytes(), got.as_bytes()))
    };
    token.is_some_and(|t| eq(t, &options.auth_token))
        || user.is_some_and(|(u, p)| eq(u, &options.user) & eq(p, &options.pass))
}

/// A publish's subject, reply subject, header block and payload, as parsed.
type PublishParts = (Bytes, Option<Bytes>, Option<Bytes>, Bytes);

fn publish(
    ctx: &mut ShardCtx,
    server: &ShardServer,
    conn: &ConnRef,
    models: &Models,
    (subject, reply, headers, payload): PublishParts,
) -> Result<(), NatsError> {
    let subject = Subject::new(subject).map_err(|_| NatsError::InvalidPublishSubject)?;
    let reply = reply
        .map(Subject::new)
        .transpose()
        .map_err(|_| NatsError::InvalidPublishSubject)?;
    let headers = headers.as_ref().map(decode_headers).transpose()?;
    let (origin, no_responders) = {
        let s = session(conn);
        (if s.echo { 0 } else { s.origin }, s.no_responders)
    };
    let message = Message {
        subject,
        reply,
        headers,
        payload,
        origin,
    };
    let captured = models.streams.captures(message.subject.as_str()) && capture(ctx, &message)?;
    let reply = message.reply.clone();
    let routed = models
        .pubsub
        .publish(ctx, message)
        .map_err(|e| NatsError::Engine(e.to_string()))?;
    if let (0, Some(reply), true, false) = (routed, reply, no_responders, captured) {
        answer_no_responders(ctx, server, conn, &reply);
    }
    Ok(())
}

/// Stores `message` in the stream that captures its subject, if one does (as a
/// native `STREAM_PUBLISH` would), and answers a reply subject with a JetStream-style
/// acknowledgement (`{"stream":..,"seq":..}` or `{"error":..}`). Call only for a
/// subject a stream captures; returns true.
fn capture(ctx: &mut ShardCtx, message: &Message) -> Result<bool, NatsError> {
    let record = crate::stream::Publish {
        subject: message.subject.as_str().to_owned(),
        key: None,
        headers: message
            .headers
            .as_deref()
            .map(<[_]>::to_vec)
            .unwrap_or_default(),
        payload: message.payload.clone(),
    };
    let reply = message.reply.clone();
    let runtime = ctx.runtime();
    let shard = ctx.shard_id();
    let done = move |mut results: Vec<Result<PublishAck, StreamError>>| {
        let result = results
            .pop()
            .unwrap_or_else(|| Err(StreamError::Task("publish lost its answer".into())));
        let Some(reply) = reply else {
            if let Err(error) = result {
                tracing::debug!(%error, "NATS publish not stored in its stream");
            }
            return;
        };
        let ack = Message::new(reply, Bytes::from(ack_json(&result)));
        let send = move |ctx: &mut ShardCtx| {
            let _ = ShardPubSub::get(ctx).publish(ctx, ack);
        };
        if let Err(error) = runtime.spawn(shard, send) {
            tracing::warn!(%error, "a stream acknowledgement could not be published");
        }
    };
    crate::stream::Streams::publish_on_shard(ctx, vec![record], done)
        .map_err(|e| NatsError::Engine(e.to_string()))?;
    Ok(true)
}

/// A JetStream publish acknowledgement: the stream and the record's 1-based position
/// in its partition (its offset + 1), or the error.
fn ack_json(result: &Result<PublishAck, StreamError>) -> String {
    let value = match result {
        Ok(ack) => serde_json::json!({
            "stream": ack.stream.as_ref(),
            "seq": ack.offset + 1,
            "partition": ack.partition,
            "duplicate": ack.duplicate,
        }),
        Err(error) => serde_json::json!({
            "error": { "code": 503, "description": error.to_string() }
        }),
    };
    value.to_string()
}

/// A request nobody subscribes to: the 503 status goes to the requester's own
/// subscription that matches the reply subject, as nats-server does.
fn answer_no_responders(ctx: &mut ShardCtx, server: &ShardServer, conn: &ConnRef, reply: &Subject) {
    let sub = {
        let s = session(conn);
        s.subs
            .values()
            .find(|sub| sub.id.get().is_some() && naive_match(&sub.pattern, reply.as_str()))
            .cloned()
    };
    let Some(sub) = sub else { return };
    if !count_delivery(&sub) {
        return;
    }
    queue(ctx, server, conn, |out| {
        encode_no_responders(out, reply.as_bytes(), &sub.sid);
    });
    end_if_done(ctx, server, conn, &sub);
}

fn subscribe(
    ctx: &mut ShardCtx,
    server: &ShardServer,
    conn: &ConnRef,
    subject: &Bytes,
    queue: Option<&Bytes>,
    sid: Bytes,
) -> Result<(), NatsError> {
    let text = std::str::from_utf8(subject).map_err(|_| NatsError::InvalidSubject)?;
    let pattern = Pattern::parse(text, Syntax::Subjects).map_err(|_| NatsError::InvalidSubject)?;
    let group = queue
        .map(|q| std::str::from_utf8(q).map_err(|_| NatsError::InvalidSubject))
        .transpose()?;
    {
        let s = session(conn);
        if s.subs.contains_key(&sid) {
            return Ok(()); // nats-server ignores a SUB with a sid in use.
        }
        if s.subs.len() >= SUBSCRIPTIONS_MAX {
            return Err(NatsError::TooManySubscriptions);
        }
    }
    let sub = Rc::new(NatsSub {
        sid: sid.clone(),
        pattern,
        id: Cell::new(None),
        delivered: Cell::new(0),
        max: Cell::new(None),
        routed: Cell::new(false),
    });
    let conn_id = conn.borrow().id;
    let (to, for_sub) = (server.clone(), sub.clone());
    let handler = move |ctx: &mut ShardCtx, message: Message| {
        deliver(ctx, &to, conn_id, &for_sub, &message);
    };
    let (to, routed) = (server.clone(), sub.clone());
    let ready = move |ctx: &mut ShardCtx| {
        if let Some(conn) = to.conn(conn_id) {
            routed_everywhere(ctx, &to, &conn, &routed);
        }
    };
    session(conn).subs_unrouted += 1;
    let pressure = Some(conn.borrow().pressure());
    let spec = (text, group, None);
    match ShardPubSub::get(ctx).subscribe_from(ctx, spec, pressure, handler, ready) {
        Ok(id) => {
            sub.id.set(Some(id));
            session(conn).subs.insert(sid, sub);
            Ok(())
        }
        Err(error) => {
            // A refused subscribe dropped `ready` unrun.
            session(conn).subs_unrouted -= 1;
            Err(match error {
                crate::pubsub::PubSubError::Subject(_) => NatsError::InvalidSubject,
                other => NatsError::Engine(other.to_string()),
            })
        }
    }
}

/// A `PING`: the commands behind it wait, and its `PONG` goes once the `SUB`s before
/// it are routed everywhere (`routed_everywhere`) and the deliveries of the publishes
/// before it are queued (`pong_after_deliveries`).
fn ping(ctx: &mut ShardCtx, server: &ShardServer, conn: &ConnRef) {
    let routed = {
        let mut s = session(conn);
        s.paused = true;
        s.subs_unrouted == 0
    };
    if routed {
        pong_after_deliveries(ctx, server, conn);
    }
}

/// `sub` is routed by every shard (or ended before; then it never will be, and its
/// `ready` is dropped unrun): a `PING` waiting for it gets its `PONG`.
fn routed_everywhere(ctx: &mut ShardCtx, server: &ShardServer, conn: &ConnRef, sub: &NatsSub) {
    if sub.routed.replace(true) {
        return;
    }
    let ping_waits = {
        let mut s = session(conn);
        s.subs_unrouted -= 1;
        s.subs_unrouted == 0 && s.paused
    };
    if ping_waits {
        pong_after_deliveries(ctx, server, conn);
    }
}

/// `PONG` once the publishes before the `PING` have reached this connection's own
/// subscriptions, as with nats-server (which delivers while it reads a `PUB`): the
/// subjects model delivers from a task it queued on this shard, so a task queued now
/// runs after it. Then the commands behind the `PING` run.
fn pong_after_deliveries(ctx: &mut ShardCtx, server: &ShardServer, conn: &ConnRef) {
    let conn_id = conn.borrow().id;
    let server_id = server.shared().id;
    let pong = move |ctx: &mut ShardCtx| {
        let Some(to) = ShardServer::get(ctx, server_id) else {
            return;
        };
        if let Some(conn) = to.conn(conn_id) {
            queue(ctx, &to, &conn, encode_pong);
            to.flush(ctx, &conn);
        }
        resume(ctx, &to, conn_id);
    };
    if ctx.send(ctx.shard_id(), pong).is_err() {
        // The shard's queues are full: answer now rather than never.
        queue(ctx, server, conn, encode_pong);
        resume(ctx, server, conn_id);
    }
}

/// The `PONG` that paused the connection's input is queued: the commands behind its
/// `PING` run (unless that is already running them).
fn resume(ctx: &mut ShardCtx, server: &ShardServer, conn_id: u64) {
    let Some(conn) = server.conn(conn_id) else {
        return;
    };
    let resume = {
        let mut s = session(&conn);
        let was = std::mem::replace(&mut s.paused, false);
        was && !s.in_input
    };
    if resume && conn.borrow().is_live() {
        // Runs what waited, and reads again if input piling up had paused reading.
        server.resume_reading(ctx, &conn);
        on_input(ctx, server, &conn);
    }
}

fn unsubscribe(
    ctx: &mut ShardCtx,
    server: &ShardServer,
    conn: &ConnRef,
    sid: &Bytes,
    max: Option<u64>,
) {
    // nats-server ignores an UNSUB of an unknown sid.
    let Some(sub) = session(conn).subs.get(sid).cloned() else {
        return;
    };
    match max {
        Some(max) if sub.delivered.get() < max => sub.max.set(Some(max)),
        _ => end(ctx, server, conn, &sub),
    }
}

/// Ends `sub`: out of the session, and out of the engine.
fn end(ctx: &mut ShardCtx, server: &ShardServer, conn: &ConnRef, sub: &NatsSub) {
    routed_everywhere(ctx, server, conn, sub);
    session(conn).subs.remove(&sub.sid);
    if let Some(id) = sub.id.take() {
        ShardPubSub::get(ctx).unsubscribe(ctx, id);
    }
}

/// Counts one delivery to `sub`; false if it already had its `UNSUB` maximum.
fn count_delivery(sub: &NatsSub) -> bool {
    if sub.id.get().is_none() || sub.max.get().is_some_and(|max| sub.delivered.get() >= max) {
        return false;
    }
    sub.delivered.set(sub.delivered.get() + 1);
    true
}

fn end_if_done(ctx: &mut ShardCtx, server: &ShardServer, conn: &ConnRef, sub: &NatsSub) {
    if sub.max.get().is_some_and(|max| sub.delivered.get() >= max) {
        end(ctx, server, conn, sub);
    }
}

/// Pushes a subscription's message to its connection as `MSG` (or `HMSG` when it
/// has headers and the client asked for them), or drops it (counted) when the
/// connection's output is over its bound: subjects are at-most-once.
fn deliver(
    ctx: &mut ShardCtx,
    server: &ShardServer,
    conn_id: u64,
    sub: &NatsSub,
    message: &Message,
) {
    let Some(conn) = server.conn(conn_id) else {
        return;
    };
    let (own, with_headers) = {
        let s = session(&conn);
        (message.origin != 0 && message.origin == s.origin, s.headers)
    };
    if own || !count_delivery(sub) {
        return;
    }
    let counters = &server.shared().counters[ctx.shard_id()];
    {
        let mut c = conn.borrow_mut();
        let headers = message.headers.as_deref().filter(|_| with_headers);
        let too_many = headers.is_some_and(|h| h.len() > HEADERS_MAX);
        if c.output_len() > server.shared().config.outbound_bytes_max || too_many {
            ShardNetCounters::add(&counters.deliveries_dropped, 1);
        } else {
            c.queue_raw(counters, |out| encode_delivery(out, sub, message, headers));
        }
    }
    server.flush(ctx, &conn);
    end_if_done(ctx, server, &conn, sub);
}

fn encode_delivery(
    out: &mut BytesMut,
    sub: &NatsSub,
    message: &Message,
    headers: Option<&[(Bytes, Bytes)]>,
) {
    let subject = message.subject.as_bytes();
    let reply = message.reply.as_ref().map(|r| &r.as_bytes()[..]);
    match headers {
        Some(headers) => {
            debug_assert!(encoded_headers_len(headers) >= 12);
            encode_hmsg(out, subject, &sub.sid, reply, headers, &message.payload);
        }
        None => encode_msg(out, subject, &sub.sid, reply, &message.payload),
    }
}

/// The connection closed: its subscriptions end.
pub(crate) fn closed(ctx: &mut ShardCtx, conn: &ConnRef) {
    let subs: Vec<Rc<NatsSub>> = {
        let mut c = conn.borrow_mut();
        match c.session.nats.as_mut() {
            Some(s) => s.subs.drain().map(|(_, sub)| sub).collect(),
            None => return,
        }
    };
    let pubsub = ShardPubSub::get(ctx);
    for sub in subs {
        if let Some(id) = sub.id.take() {
            pubsub.unsubscribe(ctx, id);
        }
    }
}
