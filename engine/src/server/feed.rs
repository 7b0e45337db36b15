//! Pushing a consumer's messages to its connection: the loop both stream and queue
//! consumers use.
//!
//! Owns: per attached consumer, whether a wait on its eventfd is in flight (and that
//! op, to cancel it), and whether it stopped for the connection's output bound. The
//! pump takes what the consumer has buffered (the engine hands out at most its credit:
//! `max_ack_pending` or `prefetch` unacknowledged), queues one frame each, and then
//! waits on the consumer's eventfd with an io_uring read, or for the output to drain,
//! or for its next turn after `PUMP_BATCH_MAX`.
//!
//! Never: blocks, or pushes past the connection's output bound.

use std::collections::HashMap;
use std::os::fd::RawFd;
use std::sync::Arc;
use std::time::Duration;

use io_uring::{opcode, types};

use super::{ConnRef, Session};
use crate::net::{Conn, ShardNetCounters, ShardServer};
use crate::protocol::Op;
use crate::runtime::{OpId, ShardCtx};

/// Messages pushed per consumer per turn before the pump yields to other work.
const PUMP_BATCH_MAX: usize = 256;

/// A consumer the server pushes from.
pub(super) trait Feed: Send + Sync + 'static {
    /// What it hands out.
    type Item;
    /// `stream` or `queue`, for messages.
    const KIND: &'static str;
    /// The next buffered item; `Err(reason)` once the engine ended the consumer.
    fn next_item(&self) -> Result<Option<Self::Item>, String>;
    /// About to wait on `fd`: true if items (or the end) are already there.
    fn arm(&self) -> bool;
    /// The eventfd that becomes readable when items arrive (after `arm`).
    fn fd(&self) -> RawFd;
    /// Tells the engine the consumer is alive.
    fn heartbeat(&self) {}
    /// The session's consumers of this kind.
    fn slots(session: &mut Session) -> &mut HashMap<u64, Slot<Self>>
    where
        Self: Sized;
    /// Queues `item` on `conn` as a pushed frame for consumer `id`, and keeps what the
    /// slot needs to answer its acknowledgement later.
    fn push(item: Self::Item, id: u64, conn: &mut Conn, counters: &ShardNetCounters)
    where
        Self: Sized;
}

/// A consumer attached by a connection.
pub(super) struct Slot<F> {
    pub(super) feed: Arc<F>,
    /// A read of the consumer's eventfd is in flight.
    waiting: bool,
    /// That read, to cancel when the consumer goes (nothing else would end it).
    wait_op: Option<OpId>,
    /// Stopped because the connection's output was over its bound.
    blocked: bool,
}

impl<F> Slot<F> {
    pub(super) fn new(feed: F) -> Self {
        Self {
            feed: Arc::new(feed),
            waiting: false,
            wait_op: None,
            blocked: false,
        }
    }
}

/// Installs `feed` as consumer `id` of connection `conn_id` and starts pushing.
fn install<F: Feed>(ctx: &mut ShardCtx, server_id: u64, conn_id: u64, id: u64, slot: Slot<F>) {
    let Some(server) = ShardServer::get(ctx, server_id) else {
        return;
    };
    let Some(conn) = server.conn(conn_id) else {
        return;
    };
    if !conn.borrow().is_live() {
        return;
    }
    F::slots(&mut conn.borrow_mut().session).insert(id, slot);
    pump::<F>(ctx, &server, &conn, id);
}

/// Where a consumer attached on the control lane goes: its connection's shard.
#[derive(Debug, Clone, Copy)]
pub(super) struct Home {
    pub(super) server: u64,
    pub(super) shard: usize,
    pub(super) conn: u64,
}

impl Home {
    pub(super) fn of(ctx: &ShardCtx, server: &ShardServer, conn: &ConnRef) -> Self {
        Self {
            server: server.shared().id,
            shard: ctx.shard_id(),
            conn: conn.borrow().id,
        }
    }

    /// From the control lane: installs `slot` as consumer `id` on the connection's
    /// shard. The task is queued before the request's reply (which the caller sends
    /// next, to the same shard), so the client never acks a consumer not yet there.
    pub(super) fn install<F: Feed>(
        self,
        runtime: &crate::runtime::RuntimeHandle,
        id: u64,
        slot: Slot<F>,
    ) -> Result<(), super::Failure> {
        let task = move |ctx: &mut ShardCtx| install(ctx, self.server, self.conn, id, slot);
        runtime.spawn(self.shard, task).map_err(|e| {
            super::Failure::new(crate::protocol::ErrorCode::ShuttingDown, e.to_string())
        })
    }
}

/// The answer to a request naming consumer `id` this connection does not have.
pub(super) fn no_consumer<F: Feed>(id: u64) -> super::Failure {
    super::Failure::new(
        crate::protocol::ErrorCode::NotFound,
        format!("no {} consumer {id} on this connection", F::KIND),
    )
}

/// Detaches consumer `id` (`CONSUMER_LEAVE`, `QUEUE_CANCEL`) and answers the request.
pub(super) fn detach<F: Feed>(
    ctx: &mut ShardCtx,
    server: &ShardServer,
    conn: &ConnRef,
    header: &crate::protocol::FrameHeader,
    id: u64,
) -> Result<(), super::Failure> {
    let slot = F::slots(&mut conn.borrow_mut().session).remove(&id);
    release(ctx, slot.ok_or_else(|| no_consumer::<F>(id))?);
    super::reply(ctx, server, conn, header, |_| {});
    Ok(())
}

enum Step {
    Stop,
    Again,
    Wait(Arc<dyn WaitTarget>),
}

/// What a wait holds: the consumer, so its eventfd lives until the read ends.
trait WaitTarget {
    fn fd(&self) -> RawFd;
}

impl<F: Feed> WaitTarget for F {
    fn fd(&self) -> RawFd {
        Feed::fd(self)
    }
}

/// Pushes what consumer `id` has buffered (see the module docs).
pub(super) fn pump<F: Feed>(ctx: &mut ShardCtx, server: &ShardServer, conn: &ConnRef, id: u64) {
    let counters = &server.shared().counters[ctx.shard_id()];
    let mut pushed = 0;
    let step = loop {
        let mut c = conn.borrow_mut();
        let over = server.over_bound(&c);
        let Some(slot) = F::slots(&mut c.session).get_mut(&id) else {
            break Step::Stop;
        };
        if slot.waiting {
            break Step::Stop;
        }
        slot.blocked = over;
        if over {
            break Step::Stop;
        }
        if pushed == PUMP_BATCH_MAX {
            break Step::Again;
        }
        match slot.feed.next_item() {
            Ok(Some(item)) => {
                F::push(item, id, &mut c, counters);
                pushed += 1;
            }
            Ok(None) if slot.feed.arm() => {}
            Ok(None) => {
                slot.waiting = true;
                break Step::Wait(slot.feed.clone());
            }
            Err(why) => {
                F::slots(&mut c.session).remove(&id);
                c.queue_frame(counters, Op::ConsumerClosed, 0, 0, |out| {
                    crate::protocol::stream::encode_consumer_closed(out, id, &why);
                });
                break Step::Stop;
            }
        }
    };
    match step {
        Step::Stop => {}
        Step::Again => {
            let (server, conn) = (server.clone(), conn.clone());
            let again = move |ctx: &mut ShardCtx| pump::<F>(ctx, &server, &conn, id);
            // A zero-delay timer: runs next turn, after other work had its share.
            if ctx.after(Duration::ZERO, again).is_err() {
                tracing::warn!("timers full; a consumer's push waits for the next sweep");
            }
        }
        Step::Wait(target) => wait::<F>(ctx, server, conn, id, target),
    }
    server.flush(ctx, conn);
}

/// Reads the consumer's eventfd through io_uring: completes when items arrive.
fn wait<F: Feed>(
    ctx: &mut ShardCtx,
    server: &ShardServer,
    conn: &ConnRef,
    id: u64,
    target: Arc<dyn WaitTarget>,
) {
    let mut buf = Box::new([0u8; 8]);
    let entry = opcode::Read::new(types::Fd(target.fd()), buf.as_mut_ptr(), 8).build();
    let (server_c, conn_id) = (server.clone(), conn.borrow().id);
    let handler = move |ctx: &mut ShardCtx, _res: i32| {
        // The consumer (and so its eventfd) lives in this closure until the read ends.
        drop((buf, target));
        let Some(conn) = server_c.conn(conn_id) else {
            return;
        };
        if let Some(slot) = F::slots(&mut conn.borrow_mut().session).get_mut(&id) {
            slot.waiting = false;
            slot.wait_op = None;
        }
        pump::<F>(ctx, &server_c, &conn, id);
    };
    // SAFETY: the read writes into `buf`, which the handler owns until the completion;
    // the eventfd belongs to the consumer `target` holds, also owned by the handler.
    let submitted = unsafe { ctx.submit_op_id(entry, handler) };
    let mut c = conn.borrow_mut();
    let Some(slot) = F::slots(&mut c.session).get_mut(&id) else {
        return;
    };
    match submitted {
        Ok(op) => slot.wait_op = Some(op),
        Err(error) => {
            tracing::warn!(%error, "cannot wait on a consumer; it is polled at the next sweep");
            slot.waiting = false;
        }
    }
}

/// Ends a consumer the session no longer holds: a pending wait is cancelled (its
/// handler then drops the last reference to the consumer).
pub(super) fn release<F>(ctx: &mut ShardCtx, slot: Slot<F>) {
    if let Some(op) = slot.wait_op {
        let _ = ctx.cancel_op(op);
    }
}

/// Output drained: resume the consumers that stopped for it (and any whose wait could
/// not be armed).
pub(super) fn unblock<F: Feed>(ctx: &mut ShardCtx, server: &ShardServer, conn: &ConnRef) {
    let ids: Vec<u64> = F::slots(&mut conn.borrow_mut().session)
        .iter()
        .filter(|(_, s)| s.blocked || !s.waiting)
        .map(|(&id, _)| id)
        .collect();
    for id in ids {
        pump::<F>(ctx, server, conn, id);
    }
}

/// The sweep: heartbeats every consumer and pumps those not waiting.
pub(super) fn heartbeat<F: Feed>(ctx: &mut ShardCtx, server: &ShardServer, conn: &ConnRef) {
    for slot in F::slots(&mut conn.borrow_mut().session).values() {
        slot.feed.heartbeat();
    }
    unblock::<F>(ctx, server, conn);
}
