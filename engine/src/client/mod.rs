//! A Rust client of the native protocol.
//!
//! Owns: one TCP connection to a `ringbrokerd` (or any `net::Server`), the handshake,
//! correlation of replies to requests (so requests pipeline: many may be in flight),
//! and routing pushed messages to their subscriptions. A reader thread reads frames;
//! callers write frames through the `outbox` (a burst of fire-and-forget frames is
//! written by its flusher thread, many per `write`).
//!
//! Never: waits without a deadline (every request has one), or lets a request hang
//! when the connection drops: every pending request fails with `Disconnected` then,
//! and so does every call made until the client has reconnected. Reconnecting (with
//! exponential backoff, `Reconnect`) re-establishes the subscriptions and consumers:
//! subjects stay at-most-once (messages published while disconnected are lost), and
//! consumers are at-least-once (unacknowledged records and deliveries come again).
//! Subscription buffers are bounded in messages and bytes (the embedded subscription's
//! queue, `pubsub::SubQueue`, with the reader thread as its producer); a subscription
//! that is not read loses messages past its bound (subjects are at-most-once), counted
//! in `dropped`. The reader hands over the subject messages of each read together.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError, SyncSender};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};

use crate::protocol::pubsub::{decode_delivery, decode_reply, encode_publish, Request, Subscribe};
use crate::protocol::session::{ErrorBody, Hello, Welcome};
use crate::protocol::{
    encode_frame, split_frame, ErrorCode, FrameHeader, Op, ProtocolError, FLAG_NO_REPLY,
    FLAG_REPLY, FRAME_MAX_LIMIT, HEADER_BYTES, VERSION,
};
use crate::pubsub::{
    Message, Offer, PendingLimits, PubSubError, SlowConsumerPolicy, SubQueue, Subject,
};

mod outbox;
mod push;
mod queue;
mod stream;

pub use queue::{ClientDelivery, ClientQueueConsumer, ConfirmResults};
pub use stream::{ClientConsumer, ClientStreamMessage, PublishResults};

/// The URL scheme of the native protocol.
pub const URL_SCHEME: &str = "ringbroker://";
/// The port a `ringbroker://host` URL without one means.
pub const DEFAULT_PORT: u16 = 7070;

/// How a client connects.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// `ringbroker://host:port` (or plain `host:port`).
    pub url: String,
    /// Sent in `HELLO` when the server wants one.
    pub auth_token: Option<String>,
    /// Shown in the server's logs.
    pub client_name: String,
    /// How long connecting and the handshake may take. Default 5 s.
    pub connect_timeout: Duration,
    /// How long a request waits for its reply. Default 30 s.
    pub request_timeout: Duration,
    /// Messages a subscription buffers before it drops. Default 65536.
    pub subscription_pending_max: usize,
    /// Bytes (`Message::size`: subject, reply, headers, payload) a subscription
    /// buffers before it drops. Default 64 MiB.
    pub subscription_pending_bytes_max: usize,
    /// Reconnecting after the connection drops; `None`: never (the client is then
    /// closed for good at the first drop).
    pub reconnect: Option<Reconnect>,
}

/// How a client reconnects: waits `initial`, doubling up to `max` between attempts,
/// and gives up (closing the client) after `give_up_after` without a connection.
#[derive(Debug, Clone, Copy)]
pub struct Reconnect {
    /// The first wait. Default 50 ms.
    pub initial: Duration,
    /// The longest wait. Default 2 s.
    pub max: Duration,
    /// How long to keep trying. Default 60 s.
    pub give_up_after: Duration,
}

impl Default for Reconnect {
    fn default() -> Self {
        Self {
            initial: Duration::from_millis(50),
            max: Duration::from_secs(2),
            give_up_after: Duration::from_secs(60),
        }
    }
}

impl ClientConfig {
    /// Defaults for `url`.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            auth_token: None,
            client_name: "ringbroker-rust".into(),
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(30),
            subscription_pending_max: 65536,
            subscription_pending_bytes_max: 64 << 20,
            reconnect: Some(Reconnect::default()),
        }
    }
}

/// Why a client call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The URL is not `ringbroker://host[:port]`.
    #[error("invalid url {0:?}: expected ringbroker://host[:port]")]
    InvalidUrl(String),
    /// Could not connect.
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        /// Where.
        addr: String,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The server answered with an error.
    #[error("{code}: {message}")]
    Server {
        /// The error code.
        code: ErrorCode,
        /// The server's message.
        message: String,
    },
    /// The server sent bytes this client cannot decode.
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
    /// The connection dropped before the reply came.
    #[error("connection lost: {0}")]
    Disconnected(String),
    /// No reply within the deadline.
    #[error("no reply within {0:?}")]
    Timeout(Duration),
    /// A subscription's messages were all taken and it has ended.
    #[error("subscription closed")]
    Closed,
    /// The OS refused a resource the client needs (an eventfd for a consumer).
    #[error("out of resources: {0}")]
    Resource(String),
}

impl ClientError {
    /// The wire error code, when the server sent one.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            Self::Server { code, .. } => Some(*code),
            _ => None,
        }
    }
}

/// Parses `ringbroker://host[:port]` (or `host:port`) into addresses.
pub fn resolve_url(url: &str) -> Result<Vec<SocketAddr>, ClientError> {
    let rest = url.strip_prefix(URL_SCHEME).unwrap_or(url);
    let rest = rest.trim_end_matches('/');
    if rest.is_empty() || rest.contains('/') {
        return Err(ClientError::InvalidUrl(url.to_owned()));
    }
    let with_port = if rest
        .rsplit_once(':')
        .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
    {
        rest.to_owned()
    } else {
        format!("{rest}:{DEFAULT_PORT}")
    };
    with_port
        .to_socket_addrs()
        .map(Iterator::collect)
        .map_err(|_| ClientError::InvalidUrl(url.to_owned()))
}

type Reply = Result<(FrameHeader, Bytes), ClientError>;

/// What waits for a request's reply: a blocked caller, or a callback (an asynchronous
/// publish). A callback dropped unanswered (the connection went, the client closed)
/// runs with `Disconnected`, so every request is answered exactly once.
enum Waiter {
    Caller(SyncSender<Reply>),
    Callback(Option<Box<dyn FnOnce(Reply) + Send>>),
}

impl Waiter {
    fn answer(mut self, reply: Reply) {
        match &mut self {
            Self::Caller(tx) => drop(tx.try_send(reply)),
            Self::Callback(done) => {
                if let Some(done) = done.take() {
                    done(reply);
                }
            }
        }
    }
}

impl Waiter {
    /// Drops a callback without running it.
    fn forget(&mut self) {
        if let Self::Callback(done) = self {
            done.take();
        }
    }
}

impl Drop for Waiter {
    fn drop(&mut self) {
        if let Self::Callback(done) = self {
            if let Some(done) = done.take() {
                done(Err(ClientError::Disconnected("connection closed".into())));
            }
        }
    }
}

/// Where a subscription's messages go: the same bounded queue an embedded
/// subscription has (`pubsub::SubQueue`), with the reader thread as its one producer.
struct SubSink {
    /// What to send again after a reconnect.
    request: Subscribe,
    queue: Arc<SubQueue>,
}

impl Drop for SubSink {
    /// No more messages will come: a waiting receiver or event loop wakes to see the
    /// end once it has taken what is queued.
    fn drop(&mut self) {
        self.queue.close();
    }
}

struct Inner {
    outbox: outbox::Outbox,
    pending: Mutex<HashMap<u64, Waiter>>,
    subs: Mutex<HashMap<u64, SubSink>>,
    consumers: push::Sinks<crate::protocol::stream::Attach, crate::protocol::stream::Record>,
    queue_consumers:
        push::Sinks<crate::protocol::queue::Consume, crate::protocol::queue::QueueMessage>,
    next_correlation: AtomicU64,
    next_sub: AtomicU64,
    /// The connection is up (calls go through).
    connected: AtomicBool,
    /// Closed for good: by `close`, or after reconnecting gave up.
    closed: AtomicBool,
    /// Why the connection went, while it is down.
    lost: Mutex<Option<String>>,
    /// The current connection's handshake.
    welcome: Mutex<Welcome>,
    config: ClientConfig,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A connection to a ringbroker server. Share it by reference across threads.
pub struct Client {
    inner: Arc<Inner>,
    reader: Option<JoinHandle<()>>,
    flusher: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("url", &self.inner.config.url)
            .field("connection", &lock(&self.inner.welcome).connection_id)
            .finish()
    }
}

impl Client {
    /// Connects and completes the handshake.
    pub fn connect(config: ClientConfig) -> Result<Self, ClientError> {
        let (stream, welcome) = dial(&config)?;
        let reader_stream = stream.try_clone().map_err(|source| ClientError::Connect {
            addr: config.url.clone(),
            source,
        })?;
        let inner = Arc::new(Inner {
            outbox: outbox::Outbox::new(stream, welcome.max_frame),
            pending: Mutex::new(HashMap::new()),
            subs: Mutex::new(HashMap::new()),
            consumers: Mutex::new(HashMap::new()),
            queue_consumers: Mutex::new(HashMap::new()),
            next_correlation: AtomicU64::new(1),
            next_sub: AtomicU64::new(1),
            connected: AtomicBool::new(true),
            closed: AtomicBool::new(false),
            lost: Mutex::new(None),
            welcome: Mutex::new(welcome),
            config,
        });
        let reader_inner = inner.clone();
        let spawn_error = |source| ClientError::Connect {
            addr: inner.config.url.clone(),
            source,
        };
        let reader = std::thread::Builder::new()
            .name("ringbroker-client".into())
            .spawn(move || run_reader(&reader_inner, reader_stream))
            .map_err(spawn_error)?;
        let flusher_inner = inner.clone();
        let flusher = std::thread::Builder::new()
            .name("ringbroker-flush".into())
            .spawn(move || flusher_inner.outbox.run_flusher());
        let flusher = match flusher {
            Ok(flusher) => flusher,
            Err(source) => {
                let mut client = Self {
                    inner: inner.clone(),
                    reader: Some(reader),
                    flusher: None,
                };
                client.shutdown();
                return Err(spawn_error(source));
            }
        };
        Ok(Self {
            inner,
            reader: Some(reader),
            flusher: Some(flusher),
        })
    }

    /// Whether the connection is up now (false while reconnecting, and once closed).
    pub fn is_connected(&self) -> bool {
        self.inner.connected.load(Ordering::Acquire)
    }

    /// What the server said in the current connection's handshake.
    pub fn server_info(&self) -> Welcome {
        lock(&self.inner.welcome).clone()
    }

    /// Publishes `payload` on `subject` without waiting: an error the server reports
    /// later (backpressure) is not seen by this call.
    pub fn publish(&self, subject: &str, payload: impl Into<Bytes>) -> Result<(), ClientError> {
        let message = Message::new(subject_of(subject)?, payload);
        self.inner.fire(Op::Publish, |out| {
            encode_publish(out, std::slice::from_ref(&message));
        })
    }

    /// Publishes a batch in one frame without waiting (as `publish`).
    pub fn publish_batch_nowait(&self, messages: &[Message]) -> Result<(), ClientError> {
        self.inner
            .fire(Op::Publish, |out| encode_publish(out, messages))
    }

    /// Publishes a batch in one frame and waits until the server has routed it.
    pub fn publish_batch(&self, messages: &[Message]) -> Result<(), ClientError> {
        self.call(Op::Publish, |out| encode_publish(out, messages), None)
            .map(drop)
    }

    /// Subscribes to `pattern` (in `queue_group` if given). Returns once every shard of
    /// the server routes to it.
    pub fn subscribe(
        &self,
        pattern: &str,
        queue_group: Option<&str>,
    ) -> Result<ClientSubscription, ClientError> {
        let sub_id = self.inner.next_id();
        let limits = PendingLimits {
            messages: self.inner.config.subscription_pending_max,
            bytes: self.inner.config.subscription_pending_bytes_max,
            policy: SlowConsumerPolicy::DropNewest,
        };
        let queue =
            SubQueue::new(limits).map_err(|e| ClientError::Resource(format!("eventfd: {e}")))?;
        let request = Subscribe {
            sub_id,
            pattern: pattern.to_owned(),
            queue_group: queue_group.map(str::to_owned),
            max_messages: 0,
        };
        lock(&self.inner.subs).insert(
            sub_id,
            SubSink {
                request: request.clone(),
                queue: queue.clone(),
            },
        );
        if let Err(error) = self.call(Op::Subscribe, |out| request.encode(out), None) {
            lock(&self.inner.subs).remove(&sub_id);
            return Err(error);
        }
        Ok(ClientSubscription {
            sub_id,
            queue,
            inner: self.inner.clone(),
            active: true,
        })
    }

    /// Sends `payload` to `subject` and waits for the first reply: `NoResponders` at
    /// once if nothing subscribes to it, `Timeout` if no reply comes within `timeout`.
    pub fn request(
        &self,
        subject: &str,
        payload: impl Into<Bytes>,
        timeout: Duration,
    ) -> Result<Message, ClientError> {
        let request = request_frame(subject, payload, timeout)?;
        // The server times the request out; the margin covers the round trip.
        let wait = timeout + Duration::from_secs(5);
        let (_, body) = self.call(Op::Request, |out| request.encode(out), Some(wait))?;
        Ok(decode_reply(body)?)
    }

    /// Sends a request without waiting: `done` gets the first reply or the error
    /// (`NoResponders`, `Timeout` from the server, `Disconnected` if the connection
    /// goes first) exactly once, on the client's reader thread (keep it short). If this
    /// returns an error, `done` is never called.
    pub fn request_with<F>(
        &self,
        subject: &str,
        payload: impl Into<Bytes>,
        timeout: Duration,
        done: F,
    ) -> Result<(), ClientError>
    where
        F: FnOnce(Result<Message, ClientError>) + Send + 'static,
    {
        let request = request_frame(subject, payload, timeout)?;
        self.call_with(
            Op::Request,
            |out| request.encode(out),
            Box::new(move |reply| done(reply.and_then(|(_, body)| Ok(decode_reply(body)?)))),
        )
    }

    /// Round-trips a `PING`.
    pub fn ping(&self) -> Result<Duration, ClientError> {
        let started = Instant::now();
        self.call(Op::Ping, |_| {}, None)?;
        Ok(started.elapsed())
    }

    /// Sends a request frame and waits for its reply (or error).
    pub(crate) fn call(
        &self,
        op: Op,
        body: impl FnOnce(&mut BytesMut),
        wait: Option<Duration>,
    ) -> Result<(FrameHeader, Bytes), ClientError> {
        let correlation = self.inner.next_correlation.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::sync_channel(1);
        lock(&self.inner.pending).insert(correlation, Waiter::Caller(tx));
        if let Err(error) = self.send(op, 0, correlation, body) {
            lock(&self.inner.pending).remove(&correlation);
            return Err(error);
        }
        let wait = wait.unwrap_or(self.inner.config.request_timeout);
        match rx.recv_timeout(wait) {
            Ok(reply) => reply,
            Err(RecvTimeoutError::Timeout) => {
                lock(&self.inner.pending).remove(&correlation);
                Err(ClientError::Timeout(wait))
            }
            Err(RecvTimeoutError::Disconnected) => Err(self.inner.lost_error()),
        }
    }

    /// Sends a request frame; `done` runs with its reply (or error) on the reader
    /// thread, or with `Disconnected` if the connection goes first. When this returns
    /// `Err`, `done` is not called. There is no client-side deadline: the server
    /// answers every request, and a lost connection answers the rest.
    pub(crate) fn call_with(
        &self,
        op: Op,
        body: impl FnOnce(&mut BytesMut),
        done: Box<dyn FnOnce(Reply) + Send>,
    ) -> Result<(), ClientError> {
        let correlation = self.inner.next_correlation.fetch_add(1, Ordering::Relaxed);
        lock(&self.inner.pending).insert(correlation, Waiter::Callback(Some(done)));
        if let Err(error) = self.send(op, 0, correlation, body) {
            let unsent = lock(&self.inner.pending).remove(&correlation);
            if let Some(mut waiter) = unsent {
                // Not sent: the caller gets the error instead of the callback.
                waiter.forget();
                return Err(error);
            }
            // The reader lost the connection meanwhile and already answered the
            // callback (Disconnected): it was answered once, so this call succeeded
            // in the only sense that matters to the caller.
        }
        Ok(())
    }

    fn send(
        &self,
        op: Op,
        flags: u16,
        correlation: u64,
        body: impl FnOnce(&mut BytesMut),
    ) -> Result<(), ClientError> {
        self.inner.send(op, flags, correlation, body)
    }

    /// `write` calls made on this client's connections so far (each carries one or
    /// more frames): with the messages sent, how well publishes were batched.
    pub fn writes(&self) -> u64 {
        self.inner.outbox.writes()
    }

    /// Writes the publishes (and other fire-and-forget frames) still buffered. They
    /// leave within microseconds anyway (a flusher thread writes each burst); `ping`
    /// after `flush` returns once the server has handled them.
    pub fn flush(&self) -> Result<(), ClientError> {
        if !self.inner.connected.load(Ordering::Acquire) {
            return Err(self.inner.lost_error());
        }
        self.inner.outbox.flush()
    }

    /// Closes the connection after writing what is buffered; pending requests fail
    /// with `Disconnected`.
    pub fn close(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.inner.closed.store(true, Ordering::Release);
        self.inner.outbox.close();
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
        if let Some(flusher) = self.flusher.take() {
            let _ = flusher.join();
        }
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        self.shutdown();
    }
}

impl Inner {
    /// Sends a request that wants no reply (`FLAG_NO_REPLY`). It still gets its own
    /// correlation id, so an `ERROR` the server answers it with is told apart from a
    /// connection-level one (correlation 0) and only logged.
    /// Buffered when it follows another fire within microseconds (see `outbox`).
    fn fire(&self, op: Op, body: impl FnOnce(&mut BytesMut)) -> Result<(), ClientError> {
        if !self.connected.load(Ordering::Acquire) {
            return Err(self.lost_error());
        }
        let correlation = self.next_correlation.fetch_add(1, Ordering::Relaxed);
        self.outbox.fire(op, FLAG_NO_REPLY, correlation, body)
    }

    /// A fresh id for a subscription or consumer on this connection.
    fn next_id(&self) -> u64 {
        self.next_sub.fetch_add(1, Ordering::Relaxed)
    }

    fn send(
        &self,
        op: Op,
        flags: u16,
        correlation: u64,
        body: impl FnOnce(&mut BytesMut),
    ) -> Result<(), ClientError> {
        if !self.connected.load(Ordering::Acquire) {
            return Err(self.lost_error());
        }
        self.outbox.send(op, flags, correlation, body)
    }

    fn lost_error(&self) -> ClientError {
        let why = lock(&self.lost).clone();
        ClientError::Disconnected(why.unwrap_or_else(|| "connection closed".into()))
    }
}

/// A batch reply's answers, refused unless there is one per item sent.
fn one_answer_each<T>(answers: Vec<T>, sent: usize, what: &str) -> Result<Vec<T>, ClientError> {
    if answers.len() != sent {
        return Err(ClientError::Server {
            code: ErrorCode::Malformed,
            message: format!("{} answers for {sent} {what}", answers.len()),
        });
    }
    Ok(answers)
}

/// The request frame for `subject`, timed out by the server at `timeout`.
fn request_frame(
    subject: &str,
    payload: impl Into<Bytes>,
    timeout: Duration,
) -> Result<Request, ClientError> {
    Ok(Request {
        timeout_ms: u32::try_from(timeout.as_millis()).unwrap_or(u32::MAX),
        message: Message::new(subject_of(subject)?, payload),
    })
}

fn subject_of(subject: &str) -> Result<Subject, ClientError> {
    Subject::new(Bytes::copy_from_slice(subject.as_bytes())).map_err(|e| ClientError::Server {
        code: ErrorCode::Invalid,
        message: e.to_string(),
    })
}

/// Sends `HELLO` and reads the reply, with the connect timeout on both.
fn handshake(stream: &mut TcpStream, config: &ClientConfig) -> Result<Welcome, ClientError> {
    let io = |e: std::io::Error| ClientError::Disconnected(e.to_string());
    stream
        .set_read_timeout(Some(config.connect_timeout))
        .map_err(io)?;
    let hello = Hello {
        version_min: VERSION,
        version_max: VERSION,
        token: config.auth_token.clone().unwrap_or_default(),
        client_name: config.client_name.clone(),
    };
    let mut frame = BytesMut::new();
    encode_frame(&mut frame, Op::Hello, 0, 0, |out| hello.encode(out));
    stream.write_all(&frame).map_err(io)?;
    let mut buf = BytesMut::new();
    let (header, body) = loop {
        if let Some((header, total)) = split_frame(&buf, FRAME_MAX_LIMIT)? {
            let frame = buf.split_to(total).freeze();
            break (header, frame.slice(HEADER_BYTES..));
        }
        read_some(stream, &mut buf).map_err(io)?;
    };
    stream.set_read_timeout(None).map_err(io)?;
    match header.op {
        Op::Hello => Ok(Welcome::decode(body)?),
        Op::Error => {
            let error = ErrorBody::decode(body)?;
            Err(ClientError::Server {
                code: error.code,
                message: error.message,
            })
        }
        _ => Err(ClientError::Protocol(ProtocolError::Malformed {
            op: header.op.name(),
            what: "expected the HELLO reply",
        })),
    }
}

/// Reads what is available (at least one byte, or an error; EOF is an error).
fn read_some(stream: &mut TcpStream, buf: &mut BytesMut) -> std::io::Result<()> {
    let mut chunk = [0u8; 64 << 10];
    let n = stream.read(&mut chunk)?;
    if n == 0 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "server closed the connection",
        ));
    }
    buf.extend_from_slice(&chunk[..n]);
    Ok(())
}

/// The reader thread: reads until the connection drops, fails what was pending,
/// reconnects (if configured) and re-establishes subscriptions and consumers; ends when
/// the client is closed or reconnecting gives up.
fn run_reader(inner: &Inner, mut stream: TcpStream) {
    loop {
        let why = read_loop(inner, &mut stream);
        let _ = stream.shutdown(std::net::Shutdown::Both);
        *lock(&inner.lost) = Some(why.clone());
        inner.connected.store(false, Ordering::Release);
        let unanswered: Vec<Waiter> = lock(&inner.pending).drain().map(|(_, w)| w).collect();
        for waiter in unanswered {
            waiter.answer(Err(ClientError::Disconnected(why.clone())));
        }
        let retriable = !(why.starts_with("AuthFailed") || why.starts_with("VersionUnsupported"));
        let again = match inner.config.reconnect {
            Some(policy) if retriable => reconnect(inner, policy),
            _ => None,
        };
        match again {
            Some(next) => stream = next,
            None => break,
        }
    }
    inner.closed.store(true, Ordering::Release);
    lock(&inner.subs).clear();
    lock(&inner.consumers).clear();
    lock(&inner.queue_consumers).clear();
}

/// Connects and does the handshake.
fn dial(config: &ClientConfig) -> Result<(TcpStream, Welcome), ClientError> {
    let addrs = resolve_url(&config.url)?;
    let connect_err = |source| ClientError::Connect {
        addr: config.url.clone(),
        source,
    };
    let mut last = std::io::Error::other("no address to connect to");
    for addr in &addrs {
        match TcpStream::connect_timeout(addr, config.connect_timeout) {
            Ok(mut stream) => {
                stream.set_nodelay(true).map_err(connect_err)?;
                let welcome = handshake(&mut stream, config)?;
                return Ok((stream, welcome));
            }
            Err(error) => last = error,
        }
    }
    Err(connect_err(last))
}

/// Tries to connect again with backoff; on success installs the connection and sends
/// every subscription and consumer again. `None`: closed meanwhile, or gave up.
fn reconnect(inner: &Inner, policy: Reconnect) -> Option<TcpStream> {
    let give_up = Instant::now() + policy.give_up_after;
    let mut wait = policy.initial;
    while Instant::now() < give_up {
        if !sleep_unless_closed(
            inner,
            wait.min(give_up.saturating_duration_since(Instant::now())),
        ) {
            return None;
        }
        wait = (wait * 2).min(policy.max);
        let Ok((stream, welcome)) = dial(&inner.config) else {
            continue;
        };
        let Ok(reader) = stream.try_clone() else {
            continue;
        };
        inner.outbox.replace_stream(stream, welcome.max_frame);
        *lock(&inner.welcome) = welcome;
        *lock(&inner.lost) = None;
        inner.connected.store(true, Ordering::Release);
        if inner.closed.load(Ordering::Acquire) {
            return None;
        }
        resubscribe(inner);
        return Some(reader);
    }
    None
}

/// Sleeps `wait` in short steps; false if the client was closed meanwhile.
fn sleep_unless_closed(inner: &Inner, wait: Duration) -> bool {
    let until = Instant::now() + wait;
    while Instant::now() < until {
        if inner.closed.load(Ordering::Acquire) {
            return false;
        }
        std::thread::sleep(
            Duration::from_millis(10).min(until.saturating_duration_since(Instant::now())),
        );
    }
    !inner.closed.load(Ordering::Acquire)
}

/// Sends every subscription and consumer again on a new connection. Their replies
/// are not waited for; a consumer whose definition is gone gets `CONSUMER_CLOSED`
/// from the server (or an `ERROR`, logged).
fn resubscribe(inner: &Inner) {
    let subs: Vec<Subscribe> = lock(&inner.subs)
        .values()
        .map(|s| s.request.clone())
        .collect();
    for request in subs {
        let correlation = inner.next_correlation.fetch_add(1, Ordering::Relaxed);
        let _ = inner.send(Op::Subscribe, 0, correlation, |out| request.encode(out));
    }
    stream::resubscribe(inner);
    queue::resubscribe(inner);
}

/// Subject messages decoded from what one read brought, handed to their
/// subscriptions together (one lock of the table, one wake-up per subscription) before
/// the reader blocks again or handles any other frame, so a reply that follows a
/// message on the wire never overtakes it.
const DELIVERIES_MAX: usize = 1024;

fn read_loop(inner: &Inner, stream: &mut TcpStream) -> String {
    let mut buf = BytesMut::with_capacity(64 << 10);
    let mut deliveries: Vec<(u64, Message)> = Vec::with_capacity(DELIVERIES_MAX);
    // The handshake of this connection is done: its frame limit holds until it drops.
    let max_frame = lock(&inner.welcome).max_frame.max(FRAME_MAX_LIMIT);
    loop {
        match split_frame(&buf, max_frame) {
            Ok(Some((header, total))) => {
                let mut frame = buf.split_to(total);
                frame.advance(HEADER_BYTES);
                let body = frame.freeze();
                if header.op == Op::Message {
                    match decode_delivery(body) {
                        Ok(delivery) => deliveries.push(delivery),
                        Err(e) => return e.to_string(),
                    }
                    if deliveries.len() >= DELIVERIES_MAX {
                        deliver(inner, &mut deliveries);
                    }
                    continue;
                }
                deliver(inner, &mut deliveries);
                if let Err(why) = on_frame(inner, header, body) {
                    return why;
                }
            }
            Ok(None) => {
                deliver(inner, &mut deliveries);
                if let Err(e) = read_some(stream, &mut buf) {
                    return e.to_string();
                }
            }
            Err(e) => return e.to_string(),
        }
    }
}

/// Queues each decoded subject message on its subscription (dropped and counted past
/// the subscription's bound; ignored if it is gone), then wakes each subscription that
/// got any, once.
fn deliver(inner: &Inner, deliveries: &mut Vec<(u64, Message)>) {
    if deliveries.is_empty() {
        return;
    }
    let mut touched: Vec<Arc<SubQueue>> = Vec::new();
    {
        let subs = lock(&inner.subs);
        let mut last: Option<(u64, Option<&SubSink>)> = None;
        for (sub_id, message) in deliveries.drain(..) {
            let sink = match last {
                Some((id, sink)) if id == sub_id => sink,
                _ => subs.get(&sub_id),
            };
            last = Some((sub_id, sink));
            let Some(sink) = sink else {
                continue;
            };
            // Past the bound the queue counts the drop itself (subjects are at most
            // once); what it took needs a wake-up.
            if sink.queue.offer(message) == Offer::Queued
                && !touched.last().is_some_and(|q| Arc::ptr_eq(q, &sink.queue))
            {
                touched.push(sink.queue.clone());
            }
        }
    }
    for queue in touched {
        queue.notify();
    }
}

/// Handles one frame from the server other than a subject `MESSAGE` (`read_loop`
/// queues those in batches); `Err` ends the connection with that reason.
fn on_frame(inner: &Inner, header: FrameHeader, body: Bytes) -> Result<(), String> {
    match header.op {
        Op::StreamMessage | Op::ConsumerClosed => stream::on_push(inner, header.op, body),
        Op::QueueMessage => queue::on_push(inner, body),
        Op::Ping if !header.has(FLAG_REPLY) => inner
            .send(Op::Pong, FLAG_REPLY, header.correlation, |_| {})
            .map_err(|e| e.to_string()),
        Op::Error => {
            let error = ErrorBody::decode(body).map_err(|e| e.to_string())?;
            let reply = Err(ClientError::Server {
                code: error.code,
                message: error.message.clone(),
            });
            let waiter = lock(&inner.pending).remove(&header.correlation);
            match waiter {
                Some(waiter) => waiter.answer(reply),
                None if header.correlation != 0 => {
                    tracing::debug!(code = %error.code, message = %error.message, "unawaited request failed");
                }
                None => {}
            }
            // A connection-level ERROR (correlation 0) ends the connection only when it
            // is fatal (the server closes it) or the server is stopping.
            if error.code.is_fatal() || error.code == ErrorCode::ShuttingDown {
                return Err(format!("{}: {}", error.code, error.message));
            }
            Ok(())
        }
        _ => {
            let waiter = lock(&inner.pending).remove(&header.correlation);
            if let Some(waiter) = waiter {
                waiter.answer(Ok((header, body)));
            }
            Ok(())
        }
    }
}

/// A subscription made through a `Client`. Dropping it unsubscribes. One thread
/// receives at a time.
pub struct ClientSubscription {
    sub_id: u64,
    queue: Arc<SubQueue>,
    inner: Arc<Inner>,
    active: bool,
}

impl std::fmt::Debug for ClientSubscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientSubscription")
            .field("id", &self.sub_id)
            .finish()
    }
}

impl ClientSubscription {
    /// The next message, waiting up to `timeout`.
    pub fn next_timeout(&self, timeout: Duration) -> Result<Message, ClientError> {
        self.queue
            .next_timeout(timeout)
            .map_err(|e| self.receive_error(e, timeout))
    }

    /// The next message if one is buffered; `Err` once the subscription ended (the
    /// client closed) and every message was taken.
    pub fn try_next(&self) -> Result<Option<Message>, ClientError> {
        self.queue
            .try_next()
            .map_err(|e| self.receive_error(e, Duration::ZERO))
    }

    /// Moves up to `max` buffered messages to the end of `out` without waiting and
    /// returns how many (0: none buffered); `Err` as `try_next`, only when nothing was
    /// taken.
    pub fn try_next_batch(&self, max: usize, out: &mut Vec<Message>) -> Result<usize, ClientError> {
        self.queue
            .try_next_batch(max, out)
            .map_err(|e| self.receive_error(e, Duration::ZERO))
    }

    /// The queue's errors in the client's terms: it closes only when the client is gone.
    fn receive_error(&self, error: PubSubError, timeout: Duration) -> ClientError {
        match error {
            PubSubError::Timeout => ClientError::Timeout(timeout),
            PubSubError::Wait(e) => ClientError::Resource(format!("eventfd: {e}")),
            _ => self.inner.lost_error(),
        }
    }

    /// The eventfd that becomes readable when messages arrive (after `arm`).
    pub fn fd(&self) -> std::os::fd::RawFd {
        self.queue.fd()
    }

    /// Announces the caller is about to wait on `fd()`; true if messages (or the end
    /// of the subscription) are already there.
    pub fn arm(&self) -> bool {
        self.queue.arm()
    }

    /// Clears the eventfd after it was readable.
    pub fn clear_notification(&self) -> Result<(), ClientError> {
        self.queue
            .clear_notification()
            .map_err(|e| ClientError::Resource(format!("eventfd: {e}")))
    }

    /// Messages dropped because this subscription's buffer was full.
    pub fn dropped(&self) -> u64 {
        self.queue.dropped()
    }

    /// Ends the subscription (messages already buffered are discarded).
    pub fn unsubscribe(mut self) -> Result<(), ClientError> {
        self.end()
    }

    fn end(&mut self) -> Result<(), ClientError> {
        if !self.active {
            return Ok(());
        }
        self.active = false;
        lock(&self.inner.subs).remove(&self.sub_id);
        let sub_id = self.sub_id;
        self.inner.fire(Op::Unsubscribe, |out| {
            bytes::BufMut::put_u64_le(out, sub_id);
        })
    }
}

impl Drop for ClientSubscription {
    fn drop(&mut self) {
        let _ = self.end();
    }
}
