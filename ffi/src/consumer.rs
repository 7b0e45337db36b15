//! `ringbroker_consumer_t`: one receiving object for all three models (a subject
//! subscription, a stream consumer, a queue consumer): blocking and non-blocking
//! receive, batch fetch into a caller's array, the eventfd, acknowledgements, free.
//!
//! Owns: the model's consumer behind the handle, and (for stream consumers) the
//! positions handed out and not yet acknowledged, so `ringbroker_commit` can
//! acknowledge everything up to a record. Never: blocks in a `try_` call.

use std::collections::BTreeSet;
use std::ffi::c_int;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use engine::api::{self, QueueConsumerApi, StreamConsumerApi, SubscriptionApi};
use engine::protocol::ErrorCode;
use engine::stream::ACK_PENDING_LIMIT;

use crate::arguments::{items, out_param, reference, timeout};
use crate::message::Msg;
use crate::status::{guard, guard_value, Failure, Outcome, Status, StatusCode};

/// The most subject messages `take_buffered` moves in one batch.
const FETCH_BATCH_MAX: usize = 256;

/// Stream positions handed out and not yet acknowledged.
type Outstanding = Mutex<BTreeSet<(u32, u64)>>;

/// What a consumer receives from.
enum Source {
    Subject(Box<dyn SubscriptionApi>),
    Stream {
        consumer: Box<dyn StreamConsumerApi>,
        /// (partition, offset) handed out and not acknowledged, at most
        /// `ACK_PENDING_LIMIT` (the oldest are forgotten past it: under `ack = none`
        /// nothing needs acknowledging).
        outstanding: Outstanding,
    },
    Queue(Box<dyn QueueConsumerApi>),
}

/// A subscription or consumer (`ringbroker_consumer_t` in C). Receive from one thread
/// at a time; acknowledge and read the fd from any.
pub struct Consumer {
    source: Source,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Consumer {
    /// A subject subscription's.
    pub fn subject(subscription: Box<dyn SubscriptionApi>) -> Self {
        Self {
            source: Source::Subject(subscription),
        }
    }

    /// A stream consumer's.
    pub fn stream(consumer: Box<dyn StreamConsumerApi>) -> Self {
        Self {
            source: Source::Stream {
                consumer,
                outstanding: Mutex::new(BTreeSet::new()),
            },
        }
    }

    /// A queue consumer's.
    pub fn queue(consumer: Box<dyn QueueConsumerApi>) -> Self {
        Self {
            source: Source::Queue(consumer),
        }
    }

    fn handed_out(&self, msg: &Msg) {
        if let (Source::Stream { outstanding, .. }, Msg::Stream(r)) = (&self.source, msg) {
            let mut held = lock(outstanding);
            held.insert((r.partition, r.offset));
            while held.len() > ACK_PENDING_LIMIT {
                held.pop_first();
            }
        }
    }

    /// The next message, waiting up to `wait`.
    pub fn next(&self, wait: Duration) -> api::Result<Msg> {
        let msg = match &self.source {
            Source::Subject(s) => Msg::Subject(s.next(wait)?),
            Source::Stream { consumer, .. } => Msg::Stream(consumer.next(wait)?),
            Source::Queue(q) => Msg::Queue(q.next(wait)?),
        };
        self.handed_out(&msg);
        Ok(msg)
    }

    /// The next message if one is buffered.
    pub fn try_next(&self) -> api::Result<Option<Msg>> {
        let msg = match &self.source {
            Source::Subject(s) => s.try_next()?.map(Msg::Subject),
            Source::Stream { consumer, .. } => consumer.try_next()?.map(Msg::Stream),
            Source::Queue(q) => q.try_next()?.map(Msg::Queue),
        };
        if let Some(msg) = &msg {
            self.handed_out(msg);
        }
        Ok(msg)
    }

    /// Up to `max` buffered messages without waiting, each handed to `put`; returns
    /// how many (0: none buffered). Subject subscriptions take them in one batch (one
    /// update of the queue's shared counters); other consumers one at a time.
    pub fn take_buffered(&self, max: usize, mut put: impl FnMut(Msg)) -> api::Result<usize> {
        match &self.source {
            Source::Subject(s) => {
                let mut batch = Vec::with_capacity(max.min(FETCH_BATCH_MAX));
                let taken = s.try_next_batch(max.min(FETCH_BATCH_MAX), &mut batch)?;
                batch.into_iter().map(Msg::Subject).for_each(put);
                Ok(taken)
            }
            _ => match self.try_next()? {
                Some(msg) => {
                    put(msg);
                    Ok(1)
                }
                None => Ok(0),
            },
        }
    }

    /// The next message if one is buffered; when none is, arms the eventfd so it turns
    /// readable when one comes (and checks once more, so none slips between).
    pub fn poll(&self) -> Result<Option<Msg>, Failure> {
        loop {
            if let Some(msg) = self.try_next()? {
                return Ok(Some(msg));
            }
            self.clear_notification()?;
            if !self.arm() {
                return Ok(None);
            }
            // Something came (or the consumer ended: try_next reports it) between the
            // look and the arm, and `arm` disarmed the doorbell again. Look once more;
            // if that finds nothing after all (a message counted a moment before it
            // can be taken, or a record of a revoked partition skipped), arm again:
            // returning now would leave the fd disarmed and the caller waiting forever.
        }
    }

    fn arm(&self) -> bool {
        match &self.source {
            Source::Subject(s) => s.arm(),
            Source::Stream { consumer, .. } => consumer.arm(),
            Source::Queue(q) => q.arm(),
        }
    }

    fn clear_notification(&self) -> api::Result<()> {
        match &self.source {
            Source::Subject(s) => s.clear_notification(),
            Source::Stream { consumer, .. } => consumer.clear_notification(),
            Source::Queue(q) => q.clear_notification(),
        }
    }

    /// The eventfd.
    pub fn fd(&self) -> c_int {
        match &self.source {
            Source::Subject(s) => s.fd(),
            Source::Stream { consumer, .. } => consumer.fd(),
            Source::Queue(q) => q.fd(),
        }
    }

    fn stream_consumer(&self) -> Result<(&dyn StreamConsumerApi, &Outstanding), Failure> {
        match &self.source {
            Source::Stream {
                consumer,
                outstanding,
            } => Ok((consumer.as_ref(), outstanding)),
            _ => Err(Failure::new(Status::WrongKind, "not a stream consumer")),
        }
    }

    fn queue_consumer(&self) -> Result<&dyn QueueConsumerApi, Failure> {
        match &self.source {
            Source::Queue(q) => Ok(q.as_ref()),
            _ => Err(Failure::new(Status::WrongKind, "not a queue consumer")),
        }
    }

    /// Acknowledges `msgs` (stream records in one frame; queue deliveries one by one).
    pub fn ack(&self, msgs: &[&Msg]) -> Outcome {
        match &self.source {
            Source::Subject(_) => Err(Failure::new(
                Status::WrongKind,
                "subject messages are not acknowledged",
            )),
            Source::Stream { .. } => {
                let positions = msgs
                    .iter()
                    .map(|m| match m {
                        Msg::Stream(r) => Ok((r.partition, r.offset)),
                        _ => Err(Failure::new(Status::WrongKind, "not a stream record")),
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                self.ack_positions(&positions)
            }
            Source::Queue(q) => {
                for m in msgs {
                    match m {
                        Msg::Queue(d) => q.ack(d.delivery_tag, false)?,
                        _ => return Err(Failure::new(Status::WrongKind, "not a queue delivery")),
                    }
                }
                Ok(())
            }
        }
    }

    fn ack_positions(&self, positions: &[(u32, u64)]) -> Outcome {
        let (consumer, outstanding) = self.stream_consumer()?;
        {
            let mut held = lock(outstanding);
            for p in positions {
                held.remove(p);
            }
        }
        Ok(consumer.ack(positions)?)
    }

    /// Acknowledges every record of `partition` handed out by this consumer at or
    /// below `offset` and not yet acknowledged.
    pub fn commit(&self, partition: u32, offset: u64) -> Outcome {
        let (_, outstanding) = self.stream_consumer()?;
        let positions: Vec<(u32, u64)> = lock(outstanding)
            .range((partition, 0)..=(partition, offset))
            .copied()
            .collect();
        if positions.is_empty() {
            return Ok(());
        }
        self.ack_positions(&positions)
    }

    /// Stream: deliver again after `delay`. Queue: back to the queue (`requeue`) or
    /// dead-lettered.
    pub fn nack(&self, msg: &Msg, delay: Duration, requeue: bool) -> Outcome {
        match (&self.source, msg) {
            (
                Source::Stream {
                    consumer,
                    outstanding,
                },
                Msg::Stream(r),
            ) => {
                lock(outstanding).remove(&(r.partition, r.offset));
                Ok(consumer.nak(r.partition, r.offset, delay)?)
            }
            (Source::Queue(q), Msg::Queue(d)) => Ok(q.nack(d.delivery_tag, false, requeue)?),
            _ => Err(Failure::new(
                Status::WrongKind,
                "nack takes a record of this stream consumer or a delivery of this queue consumer",
            )),
        }
    }
}

fn consumer_arg<'a>(ptr: *const Consumer) -> Result<&'a Consumer, Failure> {
    // SAFETY: every entry point's caller promises `ptr` is NULL or live.
    unsafe { reference(ptr, "consumer") }
}

fn msg_arg<'a>(ptr: *const Msg) -> Result<&'a Msg, Failure> {
    // SAFETY: every entry point's caller promises `ptr` is NULL or live.
    unsafe { reference(ptr, "msg") }
}

/// Waits up to `timeout_ms` (negative: no limit) for the next message and puts it in
/// `*out` (free it with `ringbroker_msg_free`). Returns `RINGBROKER_TIMEOUT` if none
/// came, `RINGBROKER_NOT_FOUND` or `RINGBROKER_SHUTTING_DOWN` once the consumer ended
/// (the message says why), `RINGBROKER_DISCONNECTED` if the connection is lost,
/// `RINGBROKER_INVALID_ARGUMENT` for a NULL argument. One receiving thread at a time.
///
/// # Safety
/// `consumer` must be NULL or live; `out` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn ringbroker_next(
    consumer: *const Consumer,
    timeout_ms: i64,
    out: *mut *mut Msg,
) -> StatusCode {
    guard(|| {
        let c = consumer_arg(consumer)?;
        // SAFETY: forwarded from the caller.
        let slot = unsafe { out_param(out, "out") }?;
        *slot = std::ptr::null_mut();
        *slot = c.next(timeout(timeout_ms))?.into_raw();
        Ok(())
    })
}

/// Takes the next message if one is buffered, without blocking. Returns
/// `RINGBROKER_WOULD_BLOCK` (and `*out` = NULL) if none is; the consumer's fd then
/// turns readable when one comes. Other statuses as `ringbroker_next`.
///
/// # Safety
/// `consumer` must be NULL or live; `out` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn ringbroker_try_next(
    consumer: *const Consumer,
    out: *mut *mut Msg,
) -> StatusCode {
    guard(|| {
        let c = consumer_arg(consumer)?;
        // SAFETY: forwarded from the caller.
        let slot = unsafe { out_param(out, "out") }?;
        *slot = std::ptr::null_mut();
        match c.poll()? {
            Some(msg) => {
                *slot = msg.into_raw();
                Ok(())
            }
            None => Err(Failure::new(Status::WouldBlock, "no message ready")),
        }
    })
}

/// Fills `msgs` with up to `capacity` messages: waits up to `timeout_ms` (negative:
/// no limit; 0: never waits) for the first, then takes what is buffered without
/// waiting. `*count` says how many (0 on timeout, with `RINGBROKER_OK`). Each message
/// is the caller's to free. After a fetch that returned fewer than `capacity`, the fd
/// turns readable when more come. Errors as `ringbroker_next`; messages taken before
/// an error are still returned in `msgs` / `*count`.
///
/// # Safety
/// `consumer` must be NULL or live; `msgs` NULL or room for `capacity` pointers;
/// `count` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn ringbroker_fetch(
    consumer: *const Consumer,
    msgs: *mut *mut Msg,
    capacity: usize,
    count: *mut usize,
    timeout_ms: i64,
) -> StatusCode {
    guard(|| {
        let c = consumer_arg(consumer)?;
        // SAFETY: forwarded from the caller.
        let count = unsafe { out_param(count, "count") }?;
        *count = 0;
        if capacity == 0 {
            return Ok(());
        }
        if msgs.is_null() {
            return Err(Failure::invalid("msgs is NULL"));
        }
        let put = |i: usize, m: Msg| {
            // SAFETY: `i < capacity`, room the caller promised at non-NULL `msgs`.
            unsafe { msgs.add(i).write(m.into_raw()) };
        };
        let first = if timeout_ms == 0 {
            c.poll()?
        } else {
            match c.next(timeout(timeout_ms)) {
                Ok(m) => Some(m),
                // Nothing came in time: `poll` arms the fd for the caller's event loop
                // (and takes a message that slipped in after the wait).
                Err(e) if e.code == ErrorCode::Timeout => c.poll()?,
                Err(e) => return Err(e.into()),
            }
        };
        let Some(first) = first else {
            return Ok(());
        };
        put(0, first);
        let mut filled = 1;
        while filled < capacity {
            let taken = c.take_buffered(capacity - filled, |m| {
                put(filled, m);
                filled += 1;
            });
            match taken {
                Ok(0) => {}
                Ok(_) => continue,
                // The messages already taken are returned; the error comes next call.
                Err(_) => break,
            }
            // Nothing buffered: `poll` arms the fd for the caller's event loop (and
            // takes a message that slipped in before the arm).
            match c.poll() {
                Ok(Some(m)) => {
                    put(filled, m);
                    filled += 1;
                }
                Ok(None) | Err(_) => break,
            }
        }
        *count = filled;
        Ok(())
    })
}

/// `ringbroker_fetch` that never waits.
///
/// # Safety
/// As `ringbroker_fetch`.
#[no_mangle]
pub unsafe extern "C" fn ringbroker_try_fetch(
    consumer: *const Consumer,
    msgs: *mut *mut Msg,
    capacity: usize,
    count: *mut usize,
) -> StatusCode {
    // SAFETY: forwarded from the caller.
    unsafe { ringbroker_fetch(consumer, msgs, capacity, count, 0) }
}

/// The consumer's file descriptor (an eventfd): readable when messages may be ready
/// after a `try_` call or fetch found none. It belongs to the consumer (do not close
/// or read it); the `try_` calls clear it. Returns `RINGBROKER_INVALID_ARGUMENT` for a
/// NULL argument. Any thread.
///
/// # Safety
/// `consumer` must be NULL or live; `fd` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn ringbroker_consumer_fd(
    consumer: *const Consumer,
    fd: *mut c_int,
) -> StatusCode {
    guard(|| {
        let c = consumer_arg(consumer)?;
        // SAFETY: forwarded from the caller.
        *unsafe { out_param(fd, "fd") }? = c.fd();
        Ok(())
    })
}

/// Acknowledges one message this consumer received (a stream record, or a queue
/// delivery). Returns `RINGBROKER_WRONG_KIND` for a subject subscription or a message
/// of another kind. Any thread.
///
/// # Safety
/// `consumer` and `msg` must be NULL or live.
#[no_mangle]
pub unsafe extern "C" fn ringbroker_ack(consumer: *const Consumer, msg: *const Msg) -> StatusCode {
    guard(|| consumer_arg(consumer)?.ack(&[msg_arg(msg)?]))
}

/// Acknowledges `count` messages (stream records go in one request). Returns as
/// `ringbroker_ack`; NULL entries are `RINGBROKER_INVALID_ARGUMENT`.
///
/// # Safety
/// `consumer` must be NULL or live; `msgs` NULL or `count` pointers to live messages.
#[no_mangle]
pub unsafe extern "C" fn ringbroker_ack_batch(
    consumer: *const Consumer,
    msgs: *const *const Msg,
    count: usize,
) -> StatusCode {
    guard(|| {
        let c = consumer_arg(consumer)?;
        // SAFETY: forwarded from the caller.
        let ptrs = unsafe { items(msgs, count, "msgs") }?;
        let refs = ptrs
            .iter()
            .map(|p| msg_arg(*p))
            .collect::<Result<Vec<_>, _>>()?;
        c.ack(&refs)
    })
}

/// Stream consumers: acknowledges every record of `msg`'s partition this consumer
/// received up to and including `msg` and has not acknowledged (a cumulative commit).
/// Returns `RINGBROKER_WRONG_KIND` for other consumers. Any thread.
///
/// # Safety
/// `consumer` and `msg` must be NULL or live.
#[no_mangle]
pub unsafe extern "C" fn ringbroker_commit(
    consumer: *const Consumer,
    msg: *const Msg,
) -> StatusCode {
    guard(|| {
        let c = consumer_arg(consumer)?;
        match msg_arg(msg)? {
            Msg::Stream(r) => c.commit(r.partition, r.offset),
            _ => Err(Failure::new(Status::WrongKind, "not a stream record")),
        }
    })
}

/// Stream consumers: asks for `msg` again after `delay_ms` (a record already
/// acknowledged or committed is ignored, returning OK). Queue consumers: rejects
/// the delivery, back to the queue if `requeue` is non-zero, else dead-lettered (or
/// dropped); `delay_ms` must be 0. Returns `RINGBROKER_WRONG_KIND` for a subject
/// subscription. Any thread.
///
/// # Safety
/// `consumer` and `msg` must be NULL or live.
#[no_mangle]
pub unsafe extern "C" fn ringbroker_nack(
    consumer: *const Consumer,
    msg: *const Msg,
    delay_ms: u32,
    requeue: c_int,
) -> StatusCode {
    guard(|| {
        let c = consumer_arg(consumer)?;
        let m = msg_arg(msg)?;
        if matches!(m, Msg::Queue(_)) && delay_ms != 0 {
            return Err(Failure::invalid("a queue nack takes no delay"));
        }
        c.nack(m, Duration::from_millis(u64::from(delay_ms)), requeue != 0)
    })
}

/// Queue consumers: acknowledges `delivery_tag`, and every earlier one if `multiple`
/// is non-zero. Returns `RINGBROKER_WRONG_KIND` for other consumers. Any thread.
///
/// # Safety
/// `consumer` must be NULL or live.
#[no_mangle]
pub unsafe extern "C" fn ringbroker_queue_ack(
    consumer: *const Consumer,
    delivery_tag: u64,
    multiple: c_int,
) -> StatusCode {
    guard(|| {
        let q = consumer_arg(consumer)?.queue_consumer()?;
        Ok(q.ack(delivery_tag, multiple != 0)?)
    })
}

/// Queue consumers: rejects `delivery_tag` (and every earlier one if `multiple`):
/// back to the queue if `requeue`, else dead-lettered or dropped. Any thread.
///
/// # Safety
/// `consumer` must be NULL or live.
#[no_mangle]
pub unsafe extern "C" fn ringbroker_queue_nack(
    consumer: *const Consumer,
    delivery_tag: u64,
    multiple: c_int,
    requeue: c_int,
) -> StatusCode {
    guard(|| {
        let q = consumer_arg(consumer)?.queue_consumer()?;
        Ok(q.nack(delivery_tag, multiple != 0, requeue != 0)?)
    })
}

/// Frees a consumer: a subscription unsubscribes, a stream consumer leaves its group
/// (its unacknowledged records go to other members), a queue consumer is cancelled
/// (its unacknowledged deliveries go back to the queue). Messages it returned stay
/// valid. NULL is a no-op; freeing twice, or while another thread uses it, is
/// undefined.
///
/// # Safety
/// `consumer` must be NULL or a consumer this library returned, not yet freed.
#[no_mangle]
pub unsafe extern "C" fn ringbroker_consumer_free(consumer: *mut Consumer) {
    guard_value((), || {
        if !consumer.is_null() {
            // SAFETY: made by Box::into_raw in a subscribe/consume call, freed once.
            drop(unsafe { Box::from_raw(consumer) });
        }
    });
}
