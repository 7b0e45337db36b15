//! The io_uring network layer: listeners, connections, and moving bytes.
//!
//! Owns: on every shard, a `SO_REUSEPORT` listener on the server's address with a
//! multishot accept, a ring of provided buffers that multishot recvs fill, and the
//! connections that shard accepted (a connection lives on its shard for its whole
//! life). Each connection has an input buffer (frames are cut from it without copying)
//! and bounded output, queued in chunks sent one `send` at a time (`output`).
//!
//! Never: interprets bytes (the `server` module parses frames, or NATS commands on a
//! `Protocol::Nats` server, and runs them against the broker; this layer only picks
//! which encoder writes its heartbeat and its errors), blocks, or buffers without
//! bound: past `outbound_bytes_max` of unsent output a connection stops reading (TCP
//! pushes back on the client) and sessions stop feeding it.
//!
//! Byte path: the kernel writes a recv into a provided buffer; its bytes are copied
//! once into the connection's input buffer, and frames (with their payloads) are
//! `Bytes` slices of that from then on, all the way to the log or another shard.

mod buffers;
mod output;
mod shard;
mod socket;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::broker::Broker;
use crate::protocol::{FRAME_MAX_DEFAULT, FRAME_MAX_LIMIT};
use crate::queue::Queues;
use crate::runtime::{CallError, RuntimeHandle, ShardCtx};
use crate::server::ControlLane;
use crate::stream::Streams;

pub(crate) use shard::{Conn, ConnState, ShardServer};

static NEXT_SERVER_ID: AtomicU64 = AtomicU64::new(1);

/// The default `send_zc_min_bytes`.
pub const SEND_ZC_MIN_BYTES_DEFAULT: usize = usize::MAX;

/// How a server listens and what it allows.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Where to listen. Default `127.0.0.1:7070` (loopback: exposing the broker is a
    /// deliberate choice).
    pub listen: SocketAddr,
    /// The largest frame accepted (header included). Default 16 MiB, at most 256 MiB.
    pub max_frame: u32,
    /// When set, a `HELLO` must carry exactly this token.
    pub auth_token: Option<String>,
    /// Connections silent this long (no whole frame received) are closed; zero
    /// disables. Default 60 s. A client that sends half a frame and stalls is closed
    /// by this too.
    pub idle_timeout: Duration,
    /// A connection we have not heard from for this long gets a `PING` (at most one
    /// per heartbeat); a client answers with `PONG`, which keeps a connection that only
    /// receives from reaching the idle timeout. Default 15 s.
    pub heartbeat: Duration,
    /// A connection must complete its `HELLO` within this. Default 10 s.
    pub handshake_timeout: Duration,
    /// A send that makes no progress for this long (the client does not read) closes
    /// the connection with `SlowConsumer`; zero disables. Default 10 s.
    pub write_timeout: Duration,
    /// The most connections one shard holds; more are accepted and closed at once.
    /// Default 65536.
    pub connections_per_shard_max: usize,
    /// Unsent output past which a connection stops being read. Default 4 MiB.
    pub outbound_bytes_max: usize,
    /// Provided buffers per shard (a power of two). Default 256.
    pub recv_buffers: u16,
    /// Bytes of each provided buffer. Default 16 KiB.
    pub recv_buffer_bytes: usize,
    /// Sends of at least this many bytes use `SEND_ZC` (the kernel sends from our
    /// buffer in place instead of copying it). `usize::MAX` turns it off. See
    /// `docs/benchmarks.md` ("SEND_ZC threshold") for how the default was chosen.
    pub send_zc_min_bytes: usize,
    /// The protocol clients speak: the native one (default) or NATS's client protocol.
    pub protocol: Protocol,
}

/// The protocol a server speaks; one server speaks one.
#[derive(Debug, Clone, Default)]
pub enum Protocol {
    /// ringbroker's binary protocol (`docs/protocol.md`).
    #[default]
    Native,
    /// The NATS client protocol (`docs/nats.md`); `auth_token` is NATS's token.
    Nats(NatsConfig),
}

/// Settings of a NATS-protocol server.
#[derive(Clone)]
pub struct NatsConfig {
    /// The largest payload (headers included) accepted and announced in `INFO`.
    /// Default 1 MiB, at most 64 MiB.
    pub max_payload: u32,
    /// When set, a `CONNECT` with this user and password is accepted (as is one with
    /// the server's `auth_token`, if that is set too).
    pub user_password: Option<(String, String)>,
    /// The name `INFO` gives.
    pub server_name: String,
}

impl Default for NatsConfig {
    fn default() -> Self {
        Self {
            max_payload: crate::protocol::nats::MAX_PAYLOAD_DEFAULT,
            user_password: None,
            server_name: "ringbroker".to_owned(),
        }
    }
}

impl std::fmt::Debug for NatsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsConfig")
            .field("max_payload", &self.max_payload)
            .field("user", &self.user_password.as_ref().map(|(user, _)| user))
            .field("server_name", &self.server_name)
            .finish()
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 7070)),
            max_frame: FRAME_MAX_DEFAULT,
            auth_token: None,
            idle_timeout: Duration::from_secs(60),
            heartbeat: Duration::from_secs(15),
            handshake_timeout: Duration::from_secs(10),
            write_timeout: Duration::from_secs(10),
            connections_per_shard_max: 65536,
            outbound_bytes_max: 4 << 20,
            recv_buffers: 256,
            recv_buffer_bytes: 16 << 10,
            send_zc_min_bytes: SEND_ZC_MIN_BYTES_DEFAULT,
            protocol: Protocol::Native,
        }
    }
}

impl ServerConfig {
    fn validate(&self) -> Result<(), NetError> {
        let invalid = |what: &'static str, why: String| Err(NetError::Invalid { what, why });
        if self.max_frame < 1024 || self.max_frame > FRAME_MAX_LIMIT {
            return invalid(
                "max_frame",
                format!(
                    "{} bytes; between 1024 and {FRAME_MAX_LIMIT}",
                    self.max_frame
                ),
            );
        }
        if !self.recv_buffers.is_power_of_two() || self.recv_buffers > 32768 {
            return invalid(
                "recv_buffers",
                format!("{}; a power of two up to 32768", self.recv_buffers),
            );
        }
        if !(1024..=1 << 20).contains(&self.recv_buffer_bytes) {
            return invalid(
                "recv_buffer_bytes",
                format!("{}; between 1 KiB and 1 MiB", self.recv_buffer_bytes),
            );
        }
        if self.heartbeat.is_zero() {
            return invalid("heartbeat", "must be above zero".into());
        }
        if self.connections_per_shard_max == 0 || self.outbound_bytes_max == 0 {
            return invalid(
                "connections_per_shard_max / outbound_bytes_max",
                "must be above zero".into(),
            );
        }
        if let Protocol::Nats(nats) = &self.protocol {
            let limit = crate::protocol::nats::MAX_PAYLOAD_LIMIT;
            if !(1024..=limit).contains(&nats.max_payload) {
                return invalid(
                    "max_payload",
                    format!("{} bytes; between 1024 and {limit}", nats.max_payload),
                );
            }
        }
        Ok(())
    }

    /// The NATS settings, when this server speaks NATS.
    pub(crate) fn nats(&self) -> Option<&NatsConfig> {
        match &self.protocol {
            Protocol::Native => None,
            Protocol::Nats(nats) => Some(nats),
        }
    }

    /// The most input one command (or frame) can need.
    pub(crate) fn input_max(&self) -> usize {
        match &self.protocol {
            Protocol::Native => self.max_frame as usize,
            Protocol::Nats(nats) => {
                nats.max_payload as usize + crate::protocol::nats::CONTROL_LINE_MAX + 4
            }
        }
    }
}

/// Why a server could not start or stop.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// A configuration value is out of range.
    #[error("invalid {what}: {why}")]
    Invalid {
        /// The field.
        what: &'static str,
        /// Why.
        why: String,
    },
    /// A shard could not listen (address in use, permission, ...).
    #[error("shard {shard} cannot listen on {addr}: {source}")]
    Listen {
        /// The shard.
        shard: usize,
        /// The address.
        addr: SocketAddr,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The io_uring refused a setup step (buffer ring registration, first accept).
    #[error("shard {shard}: {what}: {source}")]
    Uring {
        /// The shard.
        shard: usize,
        /// The step.
        what: &'static str,
        /// What the ring said.
        source: crate::runtime::OpError,
    },
    /// The runtime could not run the setup on a shard.
    #[error(transparent)]
    Runtime(#[from] CallError),
    /// The control lane's threads could not start.
    #[error("cannot start the control lane: {0}")]
    Control(std::io::Error),
}

/// One shard's network counters, written only by that shard.
#[derive(Debug, Default)]
pub(crate) struct ShardNetCounters {
    pub(crate) accepted: AtomicU64,
    pub(crate) refused: AtomicU64,
    pub(crate) closed: AtomicU64,
    pub(crate) open: AtomicUsize,
    pub(crate) frames_in: AtomicU64,
    pub(crate) frames_out: AtomicU64,
    pub(crate) bytes_in: AtomicU64,
    pub(crate) bytes_out: AtomicU64,
    pub(crate) errors_sent: AtomicU64,
    pub(crate) reads_paused: AtomicU64,
    pub(crate) deliveries_dropped: AtomicU64,
    pub(crate) publishers_stalled: AtomicU64,
}

impl ShardNetCounters {
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        // Only the owning shard writes; Relaxed is enough for statistics.
        counter.fetch_add(n, Ordering::Relaxed);
    }

    fn snapshot(&self) -> NetStats {
        let r = |c: &AtomicU64| c.load(Ordering::Relaxed);
        NetStats {
            connections_open: self.open.load(Ordering::Relaxed) as u64,
            connections_accepted: r(&self.accepted),
            connections_refused: r(&self.refused),
            connections_closed: r(&self.closed),
            frames_in: r(&self.frames_in),
            frames_out: r(&self.frames_out),
            bytes_in: r(&self.bytes_in),
            bytes_out: r(&self.bytes_out),
            errors_sent: r(&self.errors_sent),
            reads_paused: r(&self.reads_paused),
            deliveries_dropped: r(&self.deliveries_dropped),
            publishers_stalled: r(&self.publishers_stalled),
        }
    }
}

/// A shard's network counters at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NetStats {
    /// Connections open now.
    pub connections_open: u64,
    /// Connections accepted since start.
    pub connections_accepted: u64,
    /// Connections closed at once because the shard held `connections_per_shard_max`.
    pub connections_refused: u64,
    /// Connections closed since start.
    pub connections_closed: u64,
    /// Whole frames received.
    pub frames_in: u64,
    /// Frames queued for sending.
    pub frames_out: u64,
    /// Bytes received.
    pub bytes_in: u64,
    /// Bytes sent.
    pub bytes_out: u64,
    /// `ERROR` frames sent.
    pub errors_sent: u64,
    /// Times a connection stopped being read because its output was over the bound.
    pub reads_paused: u64,
    /// Subject messages dropped for connections whose output was over the bound.
    pub deliveries_dropped: u64,
    /// Times a publishing connection stopped being read (until the backlog cleared,
    /// at most 100 ms) because its messages reached a connection with more than half
    /// its output bound unsent.
    pub publishers_stalled: u64,
}

impl std::ops::AddAssign for NetStats {
    /// Adds another server's counters of the same shard.
    fn add_assign(&mut self, other: Self) {
        let Self {
            connections_open,
            connections_accepted,
            connections_refused,
            connections_closed,
            frames_in,
            frames_out,
            bytes_in,
            bytes_out,
            errors_sent,
            reads_paused,
            deliveries_dropped,
            publishers_stalled,
        } = other;
        self.connections_open += connections_open;
        self.connections_accepted += connections_accepted;
        self.connections_refused += connections_refused;
        self.connections_closed += connections_closed;
        self.frames_in += frames_in;
        self.frames_out += frames_out;
        self.bytes_in += bytes_in;
        self.bytes_out += bytes_out;
        self.errors_sent += errors_sent;
        self.reads_paused += reads_paused;
        self.deliveries_dropped += deliveries_dropped;
        self.publishers_stalled += publishers_stalled;
    }
}

/// Reads a server's per-shard counters from any thread. Cheap to clone.
#[derive(Clone)]
pub struct NetStatsReader(Arc<ServerShared>);

impl std::fmt::Debug for NetStatsReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NetStatsReader")
            .field("server", &self.0.id)
            .finish()
    }
}

impl NetStatsReader {
    /// Each shard's counters, in shard order.
    pub fn stats(&self) -> Vec<NetStats> {
        self.0
            .counters
            .iter()
            .map(ShardNetCounters::snapshot)
            .collect()
    }
}

/// What every shard of one server shares: its settings, the broker's models, counters.
pub(crate) struct ServerShared {
    pub(crate) id: u64,
    pub(crate) config: ServerConfig,
    pub(crate) counters: Vec<ShardNetCounters>,
    pub(crate) next_connection: AtomicU64,
    pub(crate) runtime: RuntimeHandle,
    pub(crate) streams: Streams,
    pub(crate) queues: Queues,
    /// Runs the broker calls that wait, off the shards.
    pub(crate) control: ControlLane,
}

/// A server over a broker's shards, speaking the native protocol or NATS's (one
/// `Protocol` per server; start two for both). Stop it before the broker.
pub struct Server {
    shared: Arc<ServerShared>,
    runtime: RuntimeHandle,
    addr: SocketAddr,
    stopped: bool,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server").field("addr", &self.addr).finish()
    }
}

/// What stopping found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StopReport {
    /// Connections closed gracefully (every request answered first).
    pub closed: u64,
    /// Connections still open at the grace deadline, closed without waiting.
    pub forced: u64,
}

impl Server {
    /// Starts listening on every shard of `broker`. With port 0 in `config.listen`, the
    /// first shard's port is used by all (see `local_addr`).
    pub fn start(broker: &Broker, config: ServerConfig) -> Result<Self, NetError> {
        config.validate()?;
        let runtime = broker.runtime().clone();
        let shards = runtime.shard_count();
        let shared = Arc::new(ServerShared {
            id: NEXT_SERVER_ID.fetch_add(1, Ordering::Relaxed),
            config,
            counters: (0..shards).map(|_| ShardNetCounters::default()).collect(),
            next_connection: AtomicU64::new(1),
            runtime: runtime.clone(),
            streams: broker.streams().clone(),
            queues: broker.queues().clone(),
            control: ControlLane::start().map_err(NetError::Control)?,
        });
        let mut addr = shared.config.listen;
        let mut server = Self {
            shared: shared.clone(),
            runtime: runtime.clone(),
            addr,
            stopped: false,
        };
        for shard in 0..shards {
            let shared = shared.clone();
            let bound = runtime.call(shard, move |ctx: &mut ShardCtx| {
                ShardServer::start(ctx, shared, addr)
            })?;
            // On error, `server`'s drop stops the shards that did start.
            addr = bound?;
            server.addr = addr;
        }
        Ok(server)
    }

    /// The address every shard listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Each shard's counters, in shard order.
    pub fn stats(&self) -> Vec<NetStats> {
        self.stats_reader().stats()
    }

    /// A handle that reads the counters from any thread (an admin endpoint), valid
    /// after the server stopped too (the counters then stay as they were).
    pub fn stats_reader(&self) -> NetStatsReader {
        NetStatsReader(self.shared.clone())
    }

    /// Stops gracefully: listeners close, connections stop being read, each gets
    /// `ERROR ShuttingDown` once its in-flight requests are answered and is closed when
    /// its output is sent. Connections still open after `grace` are closed anyway.
    pub fn stop(mut self, grace: Duration) -> StopReport {
        self.stop_inner(grace)
    }

    fn stop_inner(&mut self, grace: Duration) -> StopReport {
        if self.stopped {
            return StopReport::default();
        }
        self.stopped = true;
        let before: u64 = self.stats().iter().map(|s| s.connections_open).sum();
        let id = self.shared.id;
        self.on_every_shard(move |ctx| ShardServer::begin_stop(ctx, id));
        let deadline = Instant::now() + grace;
        while self.open_connections() > 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        let forced = self.open_connections();
        self.on_every_shard(move |ctx| ShardServer::force_stop(ctx, id));
        let deadline = Instant::now() + Duration::from_secs(1);
        while self.open_connections() > 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        // Sessions hand what they held to the lane as they close; it drains, then stops.
        self.shared.control.stop();
        StopReport {
            closed: before.saturating_sub(forced),
            forced,
        }
    }

    fn open_connections(&self) -> u64 {
        self.stats().iter().map(|s| s.connections_open).sum()
    }

    fn on_every_shard(&self, task: impl Fn(&mut ShardCtx) + Send + Clone + 'static) {
        for shard in 0..self.runtime.shard_count() {
            let task = task.clone();
            if let Err(error) =
                self.runtime
                    .spawn_patiently(shard, Duration::from_secs(1), move |ctx| task(ctx))
            {
                tracing::warn!(shard, %error, "server stop step not delivered (engine stopping?)");
            }
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop_inner(Duration::from_secs(5));
    }
}
