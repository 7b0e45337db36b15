//! One shard's half of a server: its listener, its provided buffers, its connections.
//!
//! Owns: accepting (multishot), reading (multishot recv into provided buffers, bytes
//! copied once into the connection's input buffer), sending (one `send` of everything
//! queued, the next only after it completes), pausing reads while output is over its
//! bound, the heartbeat/idle sweep, and closing: a connection's descriptor is closed
//! only once no op in flight refers to it (so a recycled descriptor number can never
//! receive another connection's op).
//!
//! Never: holds a `RefCell` borrow of a connection while calling into the session (the
//! session calls models, which may call back into the connection).

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::os::fd::RawFd;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use io_uring::{cqueue, opcode, types};

use super::buffers::BufRing;
use super::output::{Output, OutputPool};
use super::socket;
use super::{NetError, ServerShared, ShardNetCounters};
use crate::hash::FastMap;
use crate::protocol::{encode_frame, ErrorCode, Op};
use crate::pubsub::Pressure;
use crate::runtime::{OpId, ShardCtx};
use crate::server::Session;

/// How often the sweep looks for idle connections and due heartbeats, at most.
const SWEEP_INTERVAL_MAX: Duration = Duration::from_secs(1);
/// How long to wait before re-arming an accept the kernel ended with an error (EMFILE).
const ACCEPT_RETRY: Duration = Duration::from_millis(100);
/// Input bytes a connection buffers beyond one frame before it stops reading: a frame
/// never needs more than `max_frame` bytes of input.
const INPUT_SLACK_BYTES: usize = 64 << 10;

/// How often a stalled publisher looks whether the connection it waits for is still
/// backlogged (`ShardServer::stall`).
const STALL_CHECK: Duration = Duration::from_millis(2);
/// The longest one stall lasts: a subscriber that stops reading slows its publishers
/// to one read per this, until its write timeout closes it.
const STALL_MAX: Duration = Duration::from_millis(100);

/// Where a connection is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ConnState {
    /// Accepted; waiting for `HELLO`.
    Handshake,
    /// `HELLO` done.
    Open,
    /// Draining: no more input is read; closes once output is sent (after in-flight
    /// requests are answered, when the server is stopping).
    Closing,
    /// Shut down; the descriptor closes when the last op ends.
    Closed,
}

/// One connection.
pub(crate) struct Conn {
    pub(crate) id: u64,
    fd: RawFd,
    pub(crate) state: ConnState,
    input: BytesMut,
    /// Queued, unsent output, in chunks (`net::output`).
    output: Output,
    /// The bytes of the send in flight (still needed: the kernel reads them).
    sending: bool,
    /// How many bytes the send in flight still has to send.
    in_flight: usize,
    /// Set while more than `pressure_at` bytes are unsent (in flight and queued): the
    /// subscriptions of this connection carry it, and publishers whose messages reach
    /// them are stalled a moment (`ShardPubSub::take_pressed`).
    pressure: Pressure,
    /// Half the output bound.
    pressure_at: usize,
    recv_op: Option<OpId>,
    /// Ops in flight that refer to `fd`.
    ops: u32,
    /// Reading is wanted (false while paused for backpressure or closing).
    reading: bool,
    /// Stalled (`ShardServer::stall`): what was read already waits in `input` too.
    stalled: bool,
    pub(crate) accepted_at: Instant,
    pub(crate) last_frame_in: Instant,
    last_output: Instant,
    /// When the sweep last sent this connection a PING.
    last_ping: Instant,
    /// When the send in flight (or its latest part) was submitted.
    send_started: Instant,
    /// The protocol state of the connection.
    pub(crate) session: Session,
}

impl Conn {
    /// Queues a frame for sending (the caller then calls `ShardServer::flush`).
    pub(crate) fn queue_frame(
        &mut self,
        counters: &ShardNetCounters,
        op: Op,
        flags: u16,
        correlation: u64,
        body: impl FnOnce(&mut BytesMut),
    ) {
        if self.state == ConnState::Closed {
            return;
        }
        encode_frame(self.output.buffer(), op, flags, correlation, body);
        ShardNetCounters::add(&counters.frames_out, 1);
        self.note_pressure();
    }

    /// Queues bytes written by `body` as they are (a text protocol's output), counted
    /// as one frame.
    pub(crate) fn queue_raw(
        &mut self,
        counters: &ShardNetCounters,
        body: impl FnOnce(&mut BytesMut),
    ) {
        if self.state == ConnState::Closed {
            return;
        }
        body(self.output.buffer());
        ShardNetCounters::add(&counters.frames_out, 1);
        self.note_pressure();
    }

    /// Sets or clears the backlog flag from what is unsent now; writes the shared flag
    /// only when it changes (other shards read it for every delivery).
    fn note_pressure(&self) {
        let high = self.in_flight + self.output.len() > self.pressure_at;
        if high != self.pressure.load(Ordering::Relaxed) {
            self.pressure.store(high, Ordering::Relaxed);
        }
    }

    /// Whether its input waits out a stall (`ShardServer::stall`).
    pub(crate) fn is_stalled(&self) -> bool {
        self.stalled
    }

    /// This connection's backlog flag, for its subscriptions.
    pub(crate) fn pressure(&self) -> Pressure {
        self.pressure.clone()
    }

    /// Unsent output bytes.
    pub(crate) fn output_len(&self) -> usize {
        self.output.len()
    }

    /// Whether the connection is still being served (not closing or closed).
    pub(crate) fn is_live(&self) -> bool {
        matches!(self.state, ConnState::Handshake | ConnState::Open)
    }

    /// Lets go of the input buffer's memory once every frame in it was taken, so an
    /// idle connection holds none (the frames keep their own slices alive).
    pub(crate) fn release_empty_input(&mut self) {
        if self.input.is_empty() && self.input.capacity() > 0 {
            self.input = BytesMut::new();
        }
    }

    /// Whole frames waiting in the input buffer are cut off by the session with this.
    pub(crate) fn input_mut(&mut self) -> &mut BytesMut {
        &mut self.input
    }
}

type ConnRef = Rc<RefCell<Conn>>;

struct Inner {
    shared: Arc<ServerShared>,
    /// The address this shard listens on (the real port when the config had 0).
    addr: SocketAddr,
    conns: RefCell<FastMap<u64, ConnRef>>,
    buffers: RefCell<Option<BufRing>>,
    /// Spare output chunks, shared with every connection of this shard.
    outputs: Rc<OutputPool>,
    listener: Cell<Option<RawFd>>,
    accept_op: Cell<Option<OpId>>,
    stopping: Cell<bool>,
}

/// One shard's state of one server. Cheap to clone (an `Rc`).
#[derive(Clone)]
pub(crate) struct ShardServer(Rc<Inner>);

/// The servers running on a shard, by server id.
#[derive(Clone, Default)]
struct Registry(Rc<RefCell<HashMap<u64, ShardServer>>>);

impl ShardServer {
    /// This shard's state of server `id`, if it runs here.
    pub(crate) fn get(ctx: &mut ShardCtx, id: u64) -> Option<ShardServer> {
        let registry = ctx.local_handle(Registry::default);
        let found = registry.0.borrow().get(&id).cloned();
        found
    }

    /// Starts server `shared` on this shard: buffers, listener, first accept. Returns
    /// the address bound (the real port when `addr` has port 0).
    pub(crate) fn start(
        ctx: &mut ShardCtx,
        shared: Arc<ServerShared>,
        addr: SocketAddr,
    ) -> Result<SocketAddr, NetError> {
        let shard = ctx.shard_id();
        let config = &shared.config;
        let group = u16::try_from(shared.id % u64::from(u16::MAX)).unwrap_or(0);
        let buffers = BufRing::new(ctx, group, config.recv_buffers, config.recv_buffer_bytes)
            .map_err(|source| NetError::Uring {
                shard,
                what: "register provided buffers",
                source,
            })?;
        let listen_err = |source| NetError::Listen {
            shard,
            addr,
            source,
        };
        let fd = socket::listen_reuseport(&addr).map_err(listen_err)?;
        let bound = socket::local_addr(fd).map_err(listen_err)?;
        let server = ShardServer(Rc::new(Inner {
            shared: shared.clone(),
            addr: bound,
            conns: RefCell::new(FastMap::default()),
            buffers: RefCell::new(Some(buffers)),
            outputs: Rc::default(),
            listener: Cell::new(Some(fd)),
            accept_op: Cell::new(None),
            stopping: Cell::new(false),
        }));
        if let Err(source) = server.arm_accept(ctx) {
            server.release(ctx);
            return Err(NetError::Uring {
                shard,
                what: "arm multishot accept",
                source,
            });
        }
        ctx.local_handle(Registry::default)
            .0
            .borrow_mut()
            .insert(shared.id, server.clone());
        server.schedule_sweep(ctx);
        Ok(bound)
    }

    pub(crate) fn shared(&self) -> &Arc<ServerShared> {
        &self.0.shared
    }

    pub(crate) fn counters<'a>(&'a self, ctx: &ShardCtx) -> &'a ShardNetCounters {
        &self.0.shared.counters[ctx.shard_id()]
    }

    /// The address this shard listens on.
    pub(crate) fn local_addr(&self) -> SocketAddr {
        self.0.addr
    }

    pub(crate) fn is_stopping(&self) -> bool {
        self.0.stopping.get()
    }

    /// The connection `id`, if still open on this shard.
    pub(crate) fn conn(&self, id: u64) -> Option<ConnRef> {
        self.0.conns.borrow().get(&id).cloned()
    }

    fn arm_accept(&self, ctx: &mut ShardCtx) -> Result<(), crate::runtime::OpError> {
        let Some(fd) = self.0.listener.get() else {
            return Ok(());
        };
        let entry = opcode::AcceptMulti::new(types::Fd(fd))
            .flags(libc::SOCK_CLOEXEC)
            .build();
        let server = self.clone();
        let handler = move |ctx: &mut ShardCtx, res: i32, flags: u32| {
            server.on_accept(ctx, res, cqueue::more(flags));
        };
        // SAFETY: a multishot accept carries no pointers (no peer address is asked for).
        let op = unsafe { ctx.submit_multishot(entry, handler) }?;
        self.0.accept_op.set(Some(op));
        Ok(())
    }

    fn on_accept(&self, ctx: &mut ShardCtx, res: i32, more: bool) {
        if res >= 0 {
            self.admit(ctx, res);
        } else if res != -libc::ECANCELED {
            tracing::warn!(
                shard = ctx.shard_id(),
                error = %std::io::Error::from_raw_os_error(-res),
                "accept failed"
            );
        }
        if more {
            return;
        }
        self.0.accept_op.set(None);
        if self.is_stopping() {
            if let Some(fd) = self.0.listener.take() {
                socket::close(fd);
            }
            return;
        }
        // The kernel ended the multishot accept (an error such as EMFILE): retry soon.
        let server = self.clone();
        let retry = move |ctx: &mut ShardCtx| {
            if !server.is_stopping() && server.0.accept_op.get().is_none() {
                if let Err(error) = server.arm_accept(ctx) {
                    tracing::error!(%error, "cannot re-arm accept; this shard stops accepting");
                }
            }
        };
        if ctx.after(ACCEPT_RETRY, retry).is_err() {
            tracing::error!("cannot schedule accept retry; this shard stops accepting");
        }
    }

    fn admit(&self, ctx: &mut ShardCtx, fd: RawFd) {
        let counters = self.counters(ctx);
        if self.is_stopping()
            || self.0.conns.borrow().len() >= self.0.shared.config.connections_per_shard_max
        {
            ShardNetCounters::add(&counters.refused, 1);
            socket::close(fd);
            return;
        }
        ShardNetCounters::add(&counters.accepted, 1);
        counters
            .open
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        socket::configure_accepted(fd);
        let id = self
            .0
            .shared
            .next_connection
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let now = Instant::now();
        let conn = Rc::new(RefCell::new(Conn {
            id,
            fd,
            state: ConnState::Handshake,
            input: BytesMut::new(),
            output: Output::new(self.0.outputs.clone()),
            sending: false,
            in_flight: 0,
            pressure: Pressure::default(),
            pressure_at: self.0.shared.config.outbound_bytes_max / 2,
            recv_op: None,
            ops: 0,
            reading: true,
            stalled: false,
            accepted_at: now,
            last_frame_in: now,
            last_output: now,
            last_ping: now,
            send_started: now,
            session: Session::default(),
        }));
        self.0.conns.borrow_mut().insert(id, conn.clone());
        crate::server::opened(ctx, self, &conn);
        self.arm_recv(ctx, &conn);
    }

    fn arm_recv(&self, ctx: &mut ShardCtx, conn: &ConnRef) {
        let Some(group) = self.0.buffers.borrow().as_ref().map(BufRing::group) else {
            return;
        };
        let (fd, id) = {
            let c = conn.borrow();
            if c.recv_op.is_some() || !c.reading || c.state == ConnState::Closed {
                return;
            }
            (c.fd, c.id)
        };
        let entry = opcode::RecvMulti::new(types::Fd(fd), group).build();
        let server = self.clone();
        let handler = move |ctx: &mut ShardCtx, res: i32, flags: u32| {
            server.on_recv(ctx, id, res, flags);
        };
        // SAFETY: the recv writes only into provided buffers of `group`, which stay
        // registered while any connection of this server is open (`release` runs after
        // the last one closed, or the shard stopped and cancelled every op).
        match unsafe { ctx.submit_multishot(entry, handler) } {
            Ok(op) => {
                let mut c = conn.borrow_mut();
                c.recv_op = Some(op);
                c.ops += 1;
            }
            Err(error) => {
                tracing::warn!(%error, conn = id, "cannot arm recv; closing");
                self.close(ctx, conn);
            }
        }
    }

    fn on_recv(&self, ctx: &mut ShardCtx, id: u64, res: i32, flags: u32) {
        let more = cqueue::more(flags);
        let conn = self.conn(id);
        if let Some(bid) = cqueue::buffer_select(flags) {
            if let (Some(conn), Ok(len)) = (&conn, usize::try_from(res)) {
                if let Some(buffers) = self.0.buffers.borrow().as_ref() {
                    conn.borrow_mut()
                        .input
                        .extend_from_slice(buffers.filled(bid, len));
                }
                let counters = self.counters(ctx);
                ShardNetCounters::add(&counters.bytes_in, len as u64);
            }
            if let Some(buffers) = self.0.buffers.borrow_mut().as_mut() {
                buffers.recycle(bid);
            }
        }
        let Some(conn) = conn else { return };
        if !more {
            let mut c = conn.borrow_mut();
            c.recv_op = None;
            c.ops -= 1;
        }
        match res {
            0 => self.close(ctx, &conn),
            r if r > 0 => {
                crate::server::on_input(ctx, self, &conn);
                if !more {
                    self.after_recv_ended(ctx, &conn);
                }
            }
            r if r == -libc::ENOBUFS || r == -libc::ECANCELED => {
                self.after_recv_ended(ctx, &conn);
            }
            _ => self.close(ctx, &conn),
        }
        self.maybe_release(ctx, &conn);
    }

    /// The multishot recv ended without an error: re-arm it if reading is wanted.
    fn after_recv_ended(&self, ctx: &mut ShardCtx, conn: &ConnRef) {
        let wanted = {
            let c = conn.borrow();
            c.reading
                && c.recv_op.is_none()
                && matches!(c.state, ConnState::Handshake | ConnState::Open)
        };
        if wanted {
            self.arm_recv(ctx, conn);
        }
    }

    /// Stops reading `conn` while its output is over the bound (or its input holds more
    /// than a frame's worth); `resume_reading` restarts it.
    pub(crate) fn pause_reading(&self, ctx: &mut ShardCtx, conn: &ConnRef) {
        if self.stop_reading(ctx, conn) {
            ShardNetCounters::add(&self.counters(ctx).reads_paused, 1);
        }
    }

    /// Stops reading `conn` while `pressure` stays set, for at most `STALL_MAX`: its
    /// last read published to a connection whose backlog is over half its bound
    /// (`Conn::pressure`). The client's writes then wait on TCP, so a publisher is
    /// paced to its slowest subscriber instead of having its messages dropped at that
    /// subscriber's bound, as nats-server stalls a fast producer. A connection not
    /// being read is left alone.
    pub(crate) fn stall(&self, ctx: &mut ShardCtx, conn: &ConnRef, pressure: Pressure) {
        if !self.stop_reading(ctx, conn) {
            return;
        }
        conn.borrow_mut().stalled = true;
        ShardNetCounters::add(&self.counters(ctx).publishers_stalled, 1);
        let id = conn.borrow().id;
        self.check_stall(ctx, id, pressure, Instant::now());
    }

    /// Ends the stall of connection `id` once `pressure` is clear or `STALL_MAX` has
    /// passed since `since`; looks again after `STALL_CHECK` until then.
    fn check_stall(&self, ctx: &mut ShardCtx, id: u64, pressure: Pressure, since: Instant) {
        let Some(conn) = self.conn(id) else { return };
        if !pressure.load(Ordering::Relaxed) || since.elapsed() >= STALL_MAX {
            return self.end_stall(ctx, &conn);
        }
        let server = self.clone();
        let again = move |ctx: &mut ShardCtx| server.check_stall(ctx, id, pressure, since);
        if ctx.after(STALL_CHECK, again).is_err() {
            // No timer: read on rather than stop for good.
            self.end_stall(ctx, &conn);
        }
    }

    /// The stall is over: the input that waited runs, and reading restarts, unless the
    /// connection's own output is over its bound (then draining it restarts both).
    /// Input over its bound is what waited: running it is the cure. (Nothing else
    /// restarts reading during a stall: `resume_reading` waits for this.)
    fn end_stall(&self, ctx: &mut ShardCtx, conn: &ConnRef) {
        let over = {
            let mut c = conn.borrow_mut();
            c.stalled = false;
            c.output.len() > self.0.shared.config.outbound_bytes_max
        };
        if !over {
            self.resume_reading(ctx, conn);
        }
    }

    /// Stops reading `conn` (cancels its recv); false if it was not being read.
    fn stop_reading(&self, ctx: &mut ShardCtx, conn: &ConnRef) -> bool {
        let op = {
            let mut c = conn.borrow_mut();
            if !c.reading {
                return false;
            }
            c.reading = false;
            c.recv_op
        };
        if let Some(op) = op {
            let _ = ctx.cancel_op(op);
        }
        true
    }

    /// Restarts reading `conn` (after `pause_reading`), running what its input holds
    /// first.
    pub(crate) fn resume_reading(&self, ctx: &mut ShardCtx, conn: &ConnRef) {
        {
            let mut c = conn.borrow_mut();
            // A stall restarts reading when it ends (`end_stall`).
            if c.reading || c.stalled || !matches!(c.state, ConnState::Handshake | ConnState::Open)
            {
                return;
            }
            c.reading = true;
        }
        // Frames left in the input buffer when reading paused run first.
        crate::server::on_input(ctx, self, conn);
        self.after_recv_ended(ctx, conn);
    }

    /// Whether `conn` should stop reading: output over its bound, or more input
    /// buffered than one frame can need.
    pub(crate) fn over_bound(&self, conn: &Conn) -> bool {
        let config = &self.0.shared.config;
        conn.output.len() > config.outbound_bytes_max
            || conn.input.len() > config.input_max() + INPUT_SLACK_BYTES
    }

    /// Sends what `conn` has queued, if no send is in flight.
    pub(crate) fn flush(&self, ctx: &mut ShardCtx, conn: &ConnRef) {
        let (fd, data, id) = {
            let mut c = conn.borrow_mut();
            if c.sending || c.state == ConnState::Closed {
                return;
            }
            // The oldest chunk goes; the next waits for this send to complete.
            let Some(data) = c.output.next_send() else {
                // Nothing to send (a write that wrote nothing): hold no chunk.
                c.output.release_idle();
                return;
            };
            c.sending = true;
            c.ops += 1;
            c.in_flight = data.len();
            (c.fd, data, c.id)
        };
        self.submit_send(ctx, conn, fd, id, data);
    }

    fn submit_send(&self, ctx: &mut ShardCtx, conn: &ConnRef, fd: RawFd, id: u64, data: Bytes) {
        conn.borrow_mut().send_started = Instant::now();
        let submitted = if data.len() >= self.0.shared.config.send_zc_min_bytes {
            self.submit_send_zc(ctx, fd, id, data)
        } else {
            let len = u32::try_from(data.len()).unwrap_or(u32::MAX);
            let entry = opcode::Send::new(types::Fd(fd), data.as_ptr(), len)
                .flags(libc::MSG_NOSIGNAL)
                .build();
            let server = self.clone();
            let handler = move |ctx: &mut ShardCtx, res: i32| server.on_sent(ctx, id, res, data);
            // SAFETY: the send reads `data`'s bytes, which the handler owns (a `Bytes`
            // keeps its buffer alive and unmoved) until the completion.
            unsafe { ctx.submit_op(entry, handler) }
        };
        if let Err(error) = submitted {
            tracing::warn!(%error, conn = id, "cannot submit send; closing");
            {
                let mut c = conn.borrow_mut();
                c.sending = false;
                c.ops -= 1;
            }
            self.close(ctx, conn);
        }
    }

    /// A zero-copy send (`IORING_OP_SEND_ZC`): the kernel sends from `data` in place and
    /// posts two completions, the result (with `F_MORE`) and, once it no longer needs
    /// the pages, a notification. `data` is held, and the send counts as in flight,
    /// until the notification; then it completes like a plain send.
    fn submit_send_zc(
        &self,
        ctx: &mut ShardCtx,
        fd: RawFd,
        id: u64,
        data: Bytes,
    ) -> Result<(), crate::runtime::OpError> {
        let len = u32::try_from(data.len()).unwrap_or(u32::MAX);
        let entry = opcode::SendZc::new(types::Fd(fd), data.as_ptr(), len)
            .flags(libc::MSG_NOSIGNAL)
            .build();
        let server = self.clone();
        let mut held = Some(data);
        let mut result: Option<i32> = None;
        let handler = move |ctx: &mut ShardCtx, res: i32, flags: u32| {
            if !cqueue::notif(flags) {
                result = Some(res);
            }
            if cqueue::more(flags) {
                return;
            }
            // The last completion: the notification, or the result when none follows.
            if let (Some(res), Some(data)) = (result, held.take()) {
                server.on_sent(ctx, id, res, data);
            }
        };
        // SAFETY: the kernel reads `data`'s bytes until the notification; the handler
        // owns `data` (in `held`) and runs for every completion, dropping it only at
        // the last one.
        unsafe { ctx.submit_multishot(entry, handler) }.map(drop)
    }

    fn on_sent(&self, ctx: &mut ShardCtx, id: u64, res: i32, data: Bytes) {
        let Some(conn) = self.conn(id) else { return };
        let Ok(sent) = usize::try_from(res) else {
            {
                let mut c = conn.borrow_mut();
                c.sending = false;
                c.ops -= 1;
            }
            self.close(ctx, &conn);
            self.maybe_release(ctx, &conn);
            return;
        };
        ShardNetCounters::add(&self.counters(ctx).bytes_out, sent as u64);
        if sent < data.len() && conn.borrow().state != ConnState::Closed {
            // A short send: the rest goes first, before anything queued since.
            let fd = {
                let mut c = conn.borrow_mut();
                c.in_flight = data.len() - sent;
                c.note_pressure();
                c.fd
            };
            self.submit_send(ctx, &conn, fd, id, data.slice(sent..));
            return;
        }
        self.0.outputs.recycle(data);
        {
            let mut c = conn.borrow_mut();
            c.sending = false;
            c.ops -= 1;
            c.last_output = Instant::now();
            c.in_flight = 0;
            c.note_pressure();
        }
        self.after_output_drained(ctx, &conn);
        {
            // Nothing left to send: an idle connection keeps no output buffer.
            let mut c = conn.borrow_mut();
            if !c.sending {
                c.output.release_idle();
            }
        }
        self.maybe_release(ctx, &conn);
    }

    fn after_output_drained(&self, ctx: &mut ShardCtx, conn: &ConnRef) {
        let (state, empty, reading, over) = {
            let c = conn.borrow();
            (c.state, c.output.is_empty(), c.reading, self.over_bound(&c))
        };
        match state {
            ConnState::Closing if empty && crate::server::may_close(conn) => self.close(ctx, conn),
            ConnState::Handshake | ConnState::Open if !reading && !over => {
                self.resume_reading(ctx, conn);
            }
            _ => {}
        }
        if !empty {
            self.flush(ctx, conn);
        }
        crate::server::output_drained(ctx, self, conn);
    }

    /// Sends `ERROR code` (correlation `correlation`), stops reading, and closes once
    /// it is sent, if the code is fatal. A NATS connection gets the `-ERR` that stands
    /// for `code` instead (or, for `ShuttingDown`, nothing: it is just closed).
    pub(crate) fn fail(
        &self,
        ctx: &mut ShardCtx,
        conn: &ConnRef,
        correlation: u64,
        code: ErrorCode,
        message: &str,
    ) {
        if self.0.shared.config.nats().is_some() {
            let state = conn.borrow().state;
            let error = crate::server::nats::error_for(code, state, message);
            let encode = |out: &mut BytesMut| {
                if let Some(error) = &error {
                    crate::protocol::nats::encode_err(out, error.text());
                }
            };
            return self.report(ctx, conn, code.is_fatal(), encode);
        }
        // An ERROR answers a request only when it carries one's correlation id.
        let flags = if correlation == 0 {
            0
        } else {
            crate::protocol::FLAG_REPLY
        };
        let encode = |out: &mut BytesMut| {
            encode_frame(out, Op::Error, flags, correlation, |out| {
                crate::protocol::session::ErrorBody::encode(code, message, out);
            });
        };
        self.report(ctx, conn, code.is_fatal(), encode);
    }

    /// Queues an error `encode` writes; when `fatal`, stops reading and closes once it
    /// is sent.
    pub(crate) fn report(
        &self,
        ctx: &mut ShardCtx,
        conn: &ConnRef,
        fatal: bool,
        encode: impl FnOnce(&mut BytesMut),
    ) {
        {
            let mut c = conn.borrow_mut();
            if matches!(c.state, ConnState::Closed) {
                return;
            }
            let counters = &self.0.shared.counters[ctx.shard_id()];
            c.queue_raw(counters, encode);
            ShardNetCounters::add(&counters.errors_sent, 1);
            if fatal {
                c.state = ConnState::Closing;
            }
        }
        if fatal {
            self.pause_reading(ctx, conn);
        }
        self.flush(ctx, conn);
    }

    /// Closes `conn` now: shuts the socket down (ending its ops), tears the session
    /// down, and closes the descriptor once no op refers to it.
    pub(crate) fn close(&self, ctx: &mut ShardCtx, conn: &ConnRef) {
        let fd = {
            let mut c = conn.borrow_mut();
            if c.state == ConnState::Closed {
                return;
            }
            c.state = ConnState::Closed;
            c.reading = false;
            // Nothing more is delivered to it: no publisher waits for it.
            c.pressure.store(false, Ordering::Relaxed);
            c.fd
        };
        socket::shutdown(fd);
        crate::server::closed(ctx, self, conn);
        self.maybe_release(ctx, conn);
    }

    /// Closes the descriptor and forgets `conn` once it is closed and idle.
    fn maybe_release(&self, ctx: &mut ShardCtx, conn: &ConnRef) {
        let (id, fd) = {
            let c = conn.borrow();
            if c.state != ConnState::Closed || c.ops > 0 {
                return;
            }
            (c.id, c.fd)
        };
        if self.0.conns.borrow_mut().remove(&id).is_none() {
            return;
        }
        socket::close(fd);
        let counters = self.counters(ctx);
        ShardNetCounters::add(&counters.closed, 1);
        counters
            .open
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        if self.is_stopping() && self.0.conns.borrow().is_empty() {
            self.release(ctx);
        }
    }

    /// Frees the listener and the buffers (no connection left to use them).
    fn release(&self, ctx: &mut ShardCtx) {
        if let Some(op) = self.0.accept_op.get() {
            let _ = ctx.cancel_op(op);
        } else if let Some(fd) = self.0.listener.take() {
            socket::close(fd);
        }
        if !self.0.conns.borrow().is_empty() {
            return;
        }
        if let Some(mut buffers) = self.0.buffers.borrow_mut().take() {
            buffers.unregister(ctx);
        }
        ctx.local_handle(Registry::default)
            .0
            .borrow_mut()
            .remove(&self.0.shared.id);
    }

    /// Graceful stop on this shard: no more accepts; every connection stops reading and
    /// closes once its in-flight requests are answered and its output is sent.
    pub(crate) fn begin_stop(ctx: &mut ShardCtx, id: u64) {
        let Some(server) = Self::get(ctx, id) else {
            return;
        };
        server.0.stopping.set(true);
        if let Some(op) = server.0.accept_op.get() {
            let _ = ctx.cancel_op(op);
        }
        let conns: Vec<ConnRef> = server.0.conns.borrow().values().cloned().collect();
        for conn in &conns {
            server.pause_reading(ctx, conn);
            let mut c = conn.borrow_mut();
            if matches!(c.state, ConnState::Handshake | ConnState::Open) {
                c.state = ConnState::Closing;
            }
        }
        for conn in &conns {
            crate::server::stopping(ctx, &server, conn);
            let idle = {
                let c = conn.borrow();
                c.output.is_empty() && !c.sending
            };
            if idle && crate::server::may_close(conn) {
                server.close(ctx, conn);
            }
        }
        if server.0.conns.borrow().is_empty() {
            server.release(ctx);
        }
    }

    /// Closes whatever `begin_stop` left open.
    pub(crate) fn force_stop(ctx: &mut ShardCtx, id: u64) {
        let Some(server) = Self::get(ctx, id) else {
            return;
        };
        server.0.stopping.set(true);
        let conns: Vec<ConnRef> = server.0.conns.borrow().values().cloned().collect();
        for conn in &conns {
            server.close(ctx, conn);
        }
        if server.0.conns.borrow().is_empty() {
            server.release(ctx);
        }
    }

    /// Whether `conn`'s send has made no progress for `write_timeout` while its output
    /// is over the bound: the client stopped reading.
    fn stuck(&self, conn: &Conn, now: Instant) -> bool {
        let timeout = self.0.shared.config.write_timeout;
        conn.sending
            && conn.state != ConnState::Closed
            && !timeout.is_zero()
            && now.saturating_duration_since(conn.send_started) > timeout
            && conn.output.len() > self.0.shared.config.outbound_bytes_max
    }

    fn sweep_interval(&self) -> Duration {
        let config = &self.0.shared.config;
        let mut every = (config.heartbeat / 2).min(SWEEP_INTERVAL_MAX);
        if !config.idle_timeout.is_zero() {
            every = every.min(config.idle_timeout / 2);
        }
        every.max(Duration::from_millis(10))
    }

    fn schedule_sweep(&self, ctx: &mut ShardCtx) {
        let server = self.clone();
        let every = self.sweep_interval();
        let sweep = move |ctx: &mut ShardCtx| {
            if server.is_stopping() {
                return;
            }
            server.sweep(ctx);
            server.schedule_sweep(ctx);
        };
        if ctx.after(every, sweep).is_err() {
            tracing::warn!("cannot schedule the heartbeat sweep");
        }
    }

    /// Closes idle connections and pings quiet ones.
    fn sweep(&self, ctx: &mut ShardCtx) {
        let config = &self.0.shared.config;
        let now = Instant::now();
        let conns: Vec<ConnRef> = self.0.conns.borrow().values().cloned().collect();
        for conn in conns {
            let (state, since_frame, since_ping, since_accept) = {
                let c = conn.borrow();
                (
                    c.state,
                    now.saturating_duration_since(c.last_frame_in),
                    now.saturating_duration_since(c.last_ping),
                    now.saturating_duration_since(c.accepted_at),
                )
            };
            if self.stuck(&conn.borrow(), now) {
                // The ERROR is queued behind the stuck send and may never arrive; the
                // connection is closed either way.
                self.fail(
                    ctx,
                    &conn,
                    0,
                    ErrorCode::SlowConsumer,
                    "the client does not read",
                );
                self.close(ctx, &conn);
                continue;
            }
            match state {
                ConnState::Handshake if since_accept > config.handshake_timeout => {
                    self.fail(ctx, &conn, 0, ErrorCode::IdleTimeout, "no HELLO in time");
                }
                ConnState::Open
                    if !config.idle_timeout.is_zero() && since_frame > config.idle_timeout =>
                {
                    self.fail(ctx, &conn, 0, ErrorCode::IdleTimeout, "idle timeout");
                }
                // Not heard from for a heartbeat: ask (its PONG counts as a frame), so
                // a client that only receives is not taken for idle.
                ConnState::Open
                    if since_frame >= config.heartbeat && since_ping >= config.heartbeat =>
                {
                    let counters = &self.0.shared.counters[ctx.shard_id()];
                    {
                        let mut c = conn.borrow_mut();
                        c.last_ping = now;
                        if config.nats().is_some() {
                            c.queue_raw(counters, crate::protocol::nats::encode_ping);
                        } else {
                            c.queue_frame(counters, Op::Ping, 0, 0, |_| {});
                        }
                    }
                    self.flush(ctx, &conn);
                    crate::server::tick(ctx, self, &conn);
                }
                ConnState::Open => crate::server::tick(ctx, self, &conn),
                ConnState::Closing
                    if since_frame > config.handshake_timeout.max(config.heartbeat) =>
                {
                    // The peer does not read what we must send before closing.
                    self.close(ctx, &conn);
                }
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    /// `docs/architecture.md` gives an idle connection's cost from this size (472 bytes
    /// on x86-64 with rustc 1.95); a growth past the bound must update the doc.
    #[test]
    fn connection_struct_stays_small() {
        let size = std::mem::size_of::<super::Conn>();
        assert!(size <= 472, "Conn is {size} bytes");
    }
}
