//! Exchanges, queues and bindings through the C ABI: declare, delete, bind, purge,
//! publish with properties (confirmed, fire and forget, or asynchronous), consume with
//! a prefetch.
//!
//! Owns: the C message struct for exchange publishes and its conversion. Never:
//! reorders a batch's confirms.

use std::ffi::{c_char, c_int};
use std::sync::Arc;
use std::time::Duration;

use engine::api::{Bind, ConfirmOutcomes, Routed};
use engine::queue::{Message, Properties};

use crate::arguments::{bytes, items, optional_string, out_param, string};
use crate::config::{self, Config};
use crate::consumer::Consumer;
use crate::copies::Copier;
use crate::handle::{arg as handle_arg, Completion, Completions, Handle};
use crate::outcomes;
use crate::status::{guard, Failure, StatusCode, RINGBROKER_OK};
use crate::streams::{headers_of, Header};

/// A message to publish to an exchange (`ringbroker_queue_msg`).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct QueueMsgIn {
    /// The exchange, NUL-terminated; "" is the default exchange (routes to the queue
    /// named by the routing key).
    pub exchange: *const c_char,
    /// The routing key, NUL-terminated.
    pub routing_key: *const c_char,
    /// Headers (what a headers exchange matches); NULL if `headers_len` is 0.
    pub headers: *const Header,
    /// How many headers.
    pub headers_len: usize,
    /// The payload; NULL if `payload_len` is 0.
    pub payload: *const u8,
    /// Its length.
    pub payload_len: usize,
    /// 0 to 255, for queues with `max_priority`.
    pub priority: u8,
    /// Stored on disk in durable queues (confirmed once synced).
    pub persistent: bool,
    /// Per-message TTL in milliseconds; 0: none.
    pub expiration_ms: u64,
}

/// How one message of a publish went (`ringbroker_confirm`).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct Confirm {
    /// `RINGBROKER_OK` once every queue it reached has it (persistent copies synced).
    pub status: StatusCode,
    /// How many queues it reached (0: unroutable, not mandatory).
    pub queues: u32,
}

/// A queue's figures (`ringbroker_queue_info`).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct QueueInfo {
    /// Messages ready for delivery.
    pub messages: u64,
    /// Delivered and not yet acknowledged.
    pub unacked: u64,
    /// Consumers now.
    pub consumers: u64,
}

/// Messages from C, copied.
///
/// # Safety
/// `messages` NULL or `count` live messages whose pointers are valid for the call.
unsafe fn messages_of(messages: *const QueueMsgIn, count: usize) -> Result<Vec<Routed>, Failure> {
    // SAFETY: forwarded from the caller.
    let messages = unsafe { items(messages, count, "messages") }?;
    let mut copier = Copier::new(
        messages
            .iter()
            .fold(0usize, |n, m| n.saturating_add(m.payload_len)),
    );
    messages
        .iter()
        .map(|m| {
            // SAFETY: each forwarded from the caller.
            unsafe {
                let exchange = string(m.exchange, "exchange")?;
                let key = string(m.routing_key, "routing_key")?;
                let payload = bytes(m.payload, m.payload_len, "payload")?;
                let properties = Properties {
                    headers: headers_of(m.headers, m.headers_len)?,
                    priority: m.priority,
                    expiration: (m.expiration_ms > 0)
                        .then(|| Duration::from_millis(m.expiration_ms)),
                    persistent: m.persistent,
                    deaths: Vec::new(),
                };
                let message = Message {
                    properties,
                    payload: copier.copy(payload),
                };
                Ok((exchange.to_owned(), key.to_owned(), message))
            }
        })
        .collect()
}

fn confirm_of(outcome: &engine::api::Result<u32>) -> Confirm {
    match outcome {
        Ok(queues) => Confirm {
            status: RINGBROKER_OK,
            queues: *queues,
        },
        Err(e) => Confirm {
            status: outcomes::status_of(e),
            queues: 0,
        },
    }
}

/// What a routed message's completion reports.
fn fill(queues: &u32, completion: &mut Completion) {
    completion.queues = *queues;
}

/// Declares an exchange from `config` (`name`, `kind`, `durable`). Idempotent for the
/// same definition; `RINGBROKER_ALREADY_EXISTS` for a different one.
///
/// # Safety
/// `handle` and `config` NULL or live.
#[no_mangle]
pub unsafe extern "C" fn ringbroker_exchange_declare(
    handle: *const Handle,
    config: *const Config,
) -> StatusCode {
    guard(|| {
        let h = handle_arg(handle)?;
        // SAFETY: forwarded from the caller.
        let exchange = config::exchange(Some(unsafe { config::required(config) }?))?;
        Ok(h.api().declare_exchange(&exchange)?)
    })
}

/// Deletes exchange `name`; with `if_unused` non-zero, only if nothing is bound to
/// it (`RINGBROKER_REFUSED` otherwise). Returns `RINGBROKER_NOT_FOUND`.
///
/// # Safety
/// `handle` NULL or live; `name` NULL or NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn ringbroker_exchange_delete(
    handle: *const Handle,
    name: *const c_char,
    if_unused: c_int,
) -> StatusCode {
    guard(|| {
        let h = handle_arg(handle)?;
        // SAFETY: forwarded from the caller.
        let name = unsafe { string(name, "name") }?;
        Ok(h.api().delete_exchange(name, if_unused != 0)?)
    })
}

/// Declares a queue from `config` (keys in docs/c-api.md); `*info` (may be NULL) gets
/// its figures. Idempotent for the same definition.
///
/// # Safety
/// `handle` and `config` NULL or live; `info` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn ringbroker_queue_declare(
    handle: *const Handle,
    config: *const Config,
    info: *mut QueueInfo,
) -> StatusCode {
    guard(|| {
        let h = handle_arg(handle)?;
        // SAFETY: forwarded from the caller.
        let queue = config::queue(Some(unsafe { config::required(config) }?))?;
        let declared = h.api().declare_queue(&queue)?;
        // SAFETY: forwarded from the caller.
        if let Some(slot) = unsafe { info.as_mut() } {
            *slot = info_of(&declared);
        }
        Ok(())
    })
}

fn info_of(info: &engine::queue::QueueInfo) -> QueueInfo {
    QueueInfo {
        messages: info.messages,
        unacked: info.unacked as u64,
        consumers: info.consumers as u64,
    }
}

/// Deletes queue `name` (only if no consumer, with `if_unused`; only if empty, with
/// `if_empty`: `RINGBROKER_REFUSED` otherwise); `*ready` (may be NULL) gets how many
/// messages it held.
///
/// # Safety
/// `handle` NULL or live; `name` NULL or NUL-terminated; `ready` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn ringbroker_queue_delete(
    handle: *const Handle,
    name: *const c_char,
    if_unused: c_int,
    if_empty: c_int,
    ready: *mut u64,
) -> StatusCode {
    guard(|| {
        let h = handle_arg(handle)?;
        // SAFETY: forwarded from the caller.
        let name = unsafe { string(name, "name") }?;
        let n = h.api().delete_queue(name, if_unused != 0, if_empty != 0)?;
        // SAFETY: forwarded from the caller.
        if let Some(slot) = unsafe { ready.as_mut() } {
            *slot = n;
        }
        Ok(())
    })
}

/// Removes queue `name`'s ready messages; `*purged` (may be NULL) gets how many.
///
/// # Safety
/// `handle` NULL or live; `name` NULL or NUL-terminated; `purged` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn ringbroker_queue_purge(
    handle: *const Handle,
    name: *const c_char,
    purged: *mut u64,
) -> StatusCode {
    guard(|| {
        let h = handle_arg(handle)?;
        // SAFETY: forwarded from the caller.
        let name = unsafe { string(name, "name") }?;
        let n = h.api().purge_queue(name)?;
        // SAFETY: forwarded from the caller.
        if let Some(slot) = unsafe { purged.as_mut() } {
            *slot = n;
        }
        Ok(())
    })
}

/// Fills `*info` with queue `name`'s figures. Returns `RINGBROKER_NOT_FOUND`.
///
/// # Safety
/// `handle` NULL or live; `name` NULL or NUL-terminated; `info` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn ringbroker_queue_info(
    handle: *const Handle,
    name: *const c_char,
    info: *mut QueueInfo,
) -> StatusCode {
    guard(|| {
        let h = handle_arg(handle)?;
        // SAFETY: forwarded from the caller.
        let name = unsafe { string(name, "name") }?;
        // SAFETY: forwarded from the caller.
        let slot = unsafe { out_param(info, "info") }?;
        *slot = info_of(&h.api().queue_info(name)?);
        Ok(())
    })
}

/// Which binding call.
#[derive(Clone, Copy)]
enum BindOp {
    Queue,
    Unqueue,
    Exchange,
    Unexchange,
}

/// # Safety
/// As the binding entry points.
unsafe fn bind(
    handle: *const Handle,
    destination: *const c_char,
    source: *const c_char,
    routing_key: *const c_char,
    arguments: *const Header,
    arguments_len: usize,
    op: BindOp,
) -> StatusCode {
    guard(|| {
        let h = handle_arg(handle)?;
        // SAFETY: each forwarded from the caller.
        let bind = unsafe {
            Bind {
                destination: string(destination, "destination")?.to_owned(),
                source: string(source, "source")?.to_owned(),
                routing_key: optional_string(routing_key, "routing_key")?
                    .unwrap_or_default()
                    .to_owned(),
                arguments: headers_of(arguments, arguments_len)?,
            }
        };
        match op {
            BindOp::Queue => h.api().bind_queue(&bind)?,
            BindOp::Unqueue => h.api().unbind_queue(&bind)?,
            BindOp::Exchange => h.api().bind_exchange(&bind)?,
            BindOp::Unexchange => h.api().unbind_exchange(&bind)?,
        }
        Ok(())
    })
}

/// Binds `queue` to `exchange` with `routing_key` (NULL: ""); `arguments` are what a
/// headers exchange matches (`x-match` = `all` or `any`, then the headers). Returns
/// `RINGBROKER_NOT_FOUND` if either is missing.
///
/// # Safety
/// `handle` NULL or live; strings NULL or NUL-terminated; `arguments` NULL or
/// `arguments_len` live headers.
#[no_mangle]
pub unsafe extern "C" fn ringbroker_queue_bind(
    handle: *const Handle,
    queue: *const c_char,
    exchange: *const c_char,
    routing_key: *const c_char,
    arguments: *const Header,
    arguments_len: usize,
) -> StatusCode {
    // SAFETY: forwarded from the caller.
    unsafe {
        bind(
            handle,
            queue,
            exchange,
            routing_key,
            arguments,
            arguments_len,
            BindOp::Queue,
        )
    }
}

/// Removes the binding `ringbroker_queue_bind` made with the same arguments.
///
/// # Safety
/// As `ringbroker_queue_bind`.
#[no_mangle]
pub unsafe extern "C" fn ringbroker_queue_unbind(
    handle: *const Handle,
    queue: *const c_char,
    exchange: *const c_char,
    routing_key: *const c_char,
    arguments: *const Header,
    arguments_len: usize,
) -> StatusCode {
    // SAFETY: forwarded from the caller.
    unsafe {
        bind(
            handle,
            queue,
            exchange,
            routing_key,
            arguments,
            arguments_len,
            BindOp::Unqueue,
        )
    }
}

/// Binds exchange `destination` to exchange `source`: what `source` routes with
/// `routing_key` also goes through `destination`.
///
/// # Safety
/// As `ringbroker_queue_bind`.
#[no_mangle]
pub unsafe extern "C" fn ringbroker_exchange_bind(
    handle: *const Handle,
    destination: *const c_char,
    source: *const c_char,
    routing_key: *const c_char,
    arguments: *const Header,
    arguments_len: usize,
) -> StatusCode {
    // SAFETY: forwarded from the caller.
    unsafe {
        bind(
            handle,
            destination,
            source,
            routing_key,
            arguments,
            arguments_len,
            BindOp::Exchange,
        )
    }
}

/// Removes the binding of exchange `destination` to exchange `source` made with the
/// same `routing_key` and arguments. Returns `RINGBROKER_NOT_FOUND` if there is none.
///
/// # Safety
/// As `ringbroker_queue_bind`.
#[no_mangle]
pub unsafe extern "C" fn ringbroker_exchange_unbind(
    handle: *const Handle,
    destination: *const c_char,
    source: *const c_char,
    routing_key: *const c_char,
    arguments: *const Header,
    arguments_len: usize,
) -> StatusCode {
    // SAFETY: forwarded from the caller.
    unsafe {
        bind(
            handle,
            destination,
            source,
            routing_key,
            arguments,
            arguments_len,
            BindOp::Unexchange,
        )
    }
}

/// Publishes `count` messages to their exchanges and waits for each confirm;
/// `confirms` (NULL, or room for `count`) gets them in order. With `mandatory`
/// non-zero, a message no queue takes is `RINGBROKER_UNROUTABLE`. Returns
/// `RINGBROKER_OK` when every message was confirmed; otherwise the status of the first
/// that was not, or the status that failed the whole batch. Any thread.
///
/// # Safety
/// `handle` NULL or live; `messages` NULL or `count` live messages; `confirms` NULL or
/// room for `count`.
#[no_mangle]
pub unsafe extern "C" fn ringbroker_exchange_publish(
    handle: *const Handle,
    messages: *const QueueMsgIn,
    count: usize,
    mandatory: c_int,
    confirms: *mut Confirm,
) -> StatusCode {
    guard(|| {
        let h = handle_arg(handle)?;
        // SAFETY: forwarded from the caller.
        let batch = unsafe { messages_of(messages, count) }?;
        let each = h.api().publish_messages(&batch, mandatory != 0)?;
        // SAFETY: one confirm per message, and `confirms` has room for `count`.
        unsafe { outcomes::write_each(&each, confirms, count, confirm_of) }
    })
}

/// Publishes without waiting (fire and forget); confirms are not reported.
///
/// # Safety
/// As `ringbroker_exchange_publish`, without `confirms`.
#[no_mangle]
pub unsafe extern "C" fn ringbroker_exchange_publish_nowait(
    handle: *const Handle,
    messages: *const QueueMsgIn,
    count: usize,
    mandatory: c_int,
) -> StatusCode {
    guard(|| {
        let h = handle_arg(handle)?;
        // SAFETY: forwarded from the caller.
        let batch = unsafe { messages_of(messages, count) }?;
        Ok(h.api()
            .publish_messages_with(batch, mandatory != 0, Box::new(drop))?)
    })
}

/// Publishes without waiting; one completion per message (tagged `token`, with
/// `queues` set) is queued on the handle once confirmed, as for
/// `ringbroker_stream_publish_async`.
///
/// # Safety
/// As `ringbroker_exchange_publish`, without `confirms`.
#[no_mangle]
pub unsafe extern "C" fn ringbroker_exchange_publish_async(
    handle: *const Handle,
    messages: *const QueueMsgIn,
    count: usize,
    mandatory: c_int,
    token: u64,
) -> StatusCode {
    guard(|| {
        let h = handle_arg(handle)?;
        // SAFETY: forwarded from the caller.
        let batch = unsafe { messages_of(messages, count) }?;
        let completions: Arc<Completions> = h.completions.clone();
        let n = batch.len();
        let done = Box::new(move |each: ConfirmOutcomes| {
            completions.push(outcomes::completions(token, each, n, fill));
        });
        Ok(h.api().publish_messages_with(batch, mandatory != 0, done)?)
    })
}

/// Starts consuming `queue` and puts the consumer in `*out`. `config` may be NULL;
/// keys: `prefetch` (default 100 unacknowledged deliveries), `no_ack`. Acknowledge
/// with `ringbroker_ack` / `ringbroker_queue_ack`, reject with `ringbroker_nack` /
/// `ringbroker_queue_nack`. Returns `RINGBROKER_NOT_FOUND`, `RINGBROKER_LOCKED` (an
/// exclusive queue of another connection).
///
/// # Safety
/// `handle` and `config` NULL or live; `queue` NULL or NUL-terminated; `out` NULL or
/// writable.
#[no_mangle]
pub unsafe extern "C" fn ringbroker_queue_consume(
    handle: *const Handle,
    queue: *const c_char,
    config: *const Config,
    out: *mut *mut Consumer,
) -> StatusCode {
    guard(|| {
        let h = handle_arg(handle)?;
        // SAFETY: forwarded from the caller.
        let slot = unsafe { out_param(out, "out") }?;
        // SAFETY: forwarded from the caller.
        let queue = unsafe { string(queue, "queue") }?;
        // SAFETY: forwarded from the caller.
        let options = config::consume(unsafe { config::optional(config) })?;
        let consumer = h.api().consume(queue, options)?;
        *slot = Box::into_raw(Box::new(Consumer::queue(consumer)));
        Ok(())
    })
}
