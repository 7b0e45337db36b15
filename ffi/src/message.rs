//! `ringbroker_msg_t`: one received message of any model, and its accessors.
//!
//! Owns: the message (payload, subject, key, headers as the engine handed them, no
//! copy) until `ringbroker_msg_free`, the view that exposes it to C as pointer +
//! length pairs into that memory, and a small per-thread stock of spare message
//! allocations. Never: copies a payload on the way out.

use std::cell::RefCell;
use std::ffi::c_char;
use std::mem::MaybeUninit;

use bytes::Bytes;
use engine::api::{QueueMessage, Record};
use engine::pubsub::Message;

use crate::arguments::{out_param, reference};
use crate::status::{guard, guard_value, Failure, StatusCode};

/// `ringbroker_msg_view_t.kind` of a subject message (publish/subscribe, request-reply).
pub const RINGBROKER_MSG_SUBJECT: u32 = 1;
/// `ringbroker_msg_view_t.kind` of a stream record.
pub const RINGBROKER_MSG_STREAM: u32 = 2;
/// `ringbroker_msg_view_t.kind` of a queue delivery.
pub const RINGBROKER_MSG_QUEUE: u32 = 3;

/// A received message (`ringbroker_msg_t` in C).
#[derive(Debug)]
pub enum Msg {
    /// From a subscription or a request's reply.
    Subject(Message),
    /// From a stream consumer.
    Stream(Record),
    /// From a queue consumer.
    Queue(QueueMessage),
}

impl Msg {
    /// The message's headers, in order.
    pub fn headers(&self) -> &[(Bytes, Bytes)] {
        match self {
            Self::Subject(m) => m.headers.as_deref().unwrap_or(&[]),
            Self::Stream(r) => &r.headers,
            Self::Queue(q) => &q.properties.headers,
        }
    }

    /// Moves the message to the heap for C, into a spare allocation of this thread's
    /// when there is one.
    pub fn into_raw(self) -> *mut Msg {
        match SPARE
            .try_with(|spare| spare.borrow_mut().pop())
            .ok()
            .flatten()
        {
            Some(mut slot) => {
                slot.write(self);
                Box::into_raw(slot).cast::<Msg>()
            }
            None => Box::into_raw(Box::new(self)),
        }
    }

    /// Drops a message made by `into_raw` and keeps its allocation for this thread's
    /// next one (up to `SPARE_MAX`).
    ///
    /// # Safety
    /// `msg` was returned by `into_raw` and is freed once, here.
    unsafe fn free_raw(msg: *mut Msg) {
        // SAFETY: `into_raw` made it from a `Box<Msg>` or a `Box<MaybeUninit<Msg>>`,
        // which have one layout; it holds an initialised message, dropped once here.
        let mut slot: Box<MaybeUninit<Msg>> = unsafe { Box::from_raw(msg.cast()) };
        // SAFETY: initialised by `into_raw`, not dropped before.
        unsafe { slot.assume_init_drop() };
        let kept = SPARE.try_with(|spare| {
            let mut spare = spare.borrow_mut();
            if spare.len() < SPARE_MAX {
                spare.push(slot);
                None
            } else {
                Some(slot)
            }
        });
        // The stock is full, or this thread is ending: the allocation goes back to
        // the allocator (an uninitialised `MaybeUninit` drops nothing).
        drop(kept);
    }
}

/// Spare message allocations a thread keeps. A fetch hands C a burst of messages and
/// the program frees them in a burst: glibc's per-thread cache holds 7 chunks of a
/// size, so without this each burst went through the arena (`docs/benchmarks.md`,
/// "C ABI"). Bounded: at most `SPARE_MAX` × 192 bytes per thread.
const SPARE_MAX: usize = 256;

thread_local! {
    // Boxes on purpose: each is an allocation handed to C as a `ringbroker_msg_t*`.
    #[allow(clippy::vec_box)]
    static SPARE: RefCell<Vec<Box<MaybeUninit<Msg>>>> = const { RefCell::new(Vec::new()) };
}

/// Everything about a message, as pointers into it and numbers (`ringbroker_msg_view_t`).
/// Pointers stay valid until the message is freed; strings are not NUL-terminated
/// (use the lengths). A field that does not apply to the message's kind is NULL / 0.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct MsgView {
    /// Which model it came from: `RINGBROKER_MSG_SUBJECT`, `_STREAM` or `_QUEUE`.
    pub kind: u32,
    /// The payload.
    pub payload: *const u8,
    /// Its length in bytes.
    pub payload_len: usize,
    /// Subject messages and stream records: the subject. Queue deliveries: the
    /// routing key.
    pub subject: *const c_char,
    /// Its length in bytes.
    pub subject_len: usize,
    /// Subject messages: where a reply goes (NULL if none; see `ringbroker_respond`).
    pub reply: *const c_char,
    /// Its length in bytes.
    pub reply_len: usize,
    /// Stream records: the key (NULL if none).
    pub key: *const u8,
    /// Its length in bytes.
    pub key_len: usize,
    /// Queue deliveries: the exchange it was published to.
    pub exchange: *const c_char,
    /// Its length in bytes.
    pub exchange_len: usize,
    /// Queue deliveries: the queue.
    pub queue: *const c_char,
    /// Its length in bytes.
    pub queue_len: usize,
    /// How many headers `ringbroker_msg_header` can read.
    pub header_count: usize,
    /// Stream records: the partition.
    pub partition: u32,
    /// Stream records: the offset in the partition.
    pub offset: u64,
    /// Stream records: milliseconds since the Unix epoch, when stored.
    pub timestamp_ms: i64,
    /// Stream records: 1 on the first delivery.
    pub delivery_count: u32,
    /// Queue deliveries: the tag `ringbroker_queue_ack` takes.
    pub delivery_tag: u64,
    /// Queue deliveries: it may have been delivered before.
    pub redelivered: bool,
    /// Queue deliveries: the priority (0 to 255).
    pub priority: u8,
    /// Queue deliveries: stored on disk in durable queues.
    pub persistent: bool,
}

fn parts(bytes: &[u8]) -> (*const u8, usize) {
    (bytes.as_ptr(), bytes.len())
}

fn text(bytes: &[u8]) -> (*const c_char, usize) {
    (bytes.as_ptr().cast(), bytes.len())
}

const NONE: (*const c_char, usize) = (std::ptr::null(), 0);

impl MsgView {
    /// The view of `msg`.
    pub fn of(msg: &Msg) -> Self {
        let mut view = Self {
            kind: RINGBROKER_MSG_SUBJECT,
            payload: std::ptr::null(),
            payload_len: 0,
            subject: std::ptr::null(),
            subject_len: 0,
            reply: std::ptr::null(),
            reply_len: 0,
            key: std::ptr::null(),
            key_len: 0,
            exchange: std::ptr::null(),
            exchange_len: 0,
            queue: std::ptr::null(),
            queue_len: 0,
            header_count: msg.headers().len(),
            partition: 0,
            offset: 0,
            timestamp_ms: 0,
            delivery_count: 0,
            delivery_tag: 0,
            redelivered: false,
            priority: 0,
            persistent: false,
        };
        match msg {
            Msg::Subject(m) => {
                (view.payload, view.payload_len) = parts(&m.payload);
                (view.subject, view.subject_len) = text(m.subject.as_str().as_bytes());
                (view.reply, view.reply_len) = m
                    .reply
                    .as_ref()
                    .map_or(NONE, |r| text(r.as_str().as_bytes()));
            }
            Msg::Stream(r) => {
                view.kind = RINGBROKER_MSG_STREAM;
                (view.payload, view.payload_len) = parts(&r.payload);
                (view.subject, view.subject_len) = text(&r.subject);
                if let Some(key) = &r.key {
                    (view.key, view.key_len) = parts(key);
                }
                view.partition = r.partition;
                view.offset = r.offset;
                view.timestamp_ms = r.timestamp;
                view.delivery_count = r.delivery_count;
            }
            Msg::Queue(q) => {
                view.kind = RINGBROKER_MSG_QUEUE;
                (view.payload, view.payload_len) = parts(&q.payload);
                (view.subject, view.subject_len) = text(q.routing_key.as_bytes());
                (view.exchange, view.exchange_len) = text(q.exchange.as_bytes());
                (view.queue, view.queue_len) = text(q.queue.as_bytes());
                view.delivery_tag = q.delivery_tag;
                view.redelivered = q.redelivered;
                view.priority = q.properties.priority;
                view.persistent = q.properties.persistent;
            }
        }
        view
    }
}

/// Fills `*out` with pointers into `msg` and its numbers. The pointers stay valid
/// until `ringbroker_msg_free(msg)`. Returns `RINGBROKER_INVALID_ARGUMENT` for a NULL
/// argument. Any thread may call this; a message is not shared between threads by the
/// library.
///
/// # Safety
/// `msg` must be NULL or a live message; `out` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn ringbroker_msg_view(msg: *const Msg, out: *mut MsgView) -> StatusCode {
    guard(|| {
        // SAFETY: forwarded from the caller.
        let msg = unsafe { reference(msg, "msg") }?;
        // SAFETY: forwarded from the caller.
        *unsafe { out_param(out, "out") }? = MsgView::of(msg);
        Ok(())
    })
}

/// The payload of `msg`: `*data` points into the message (valid until it is freed),
/// `*len` is its length. Returns `RINGBROKER_INVALID_ARGUMENT` for a NULL argument.
///
/// # Safety
/// `msg` must be NULL or a live message; `data` and `len` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn ringbroker_msg_payload(
    msg: *const Msg,
    data: *mut *const u8,
    len: *mut usize,
) -> StatusCode {
    guard(|| {
        // SAFETY: forwarded from the caller.
        let msg = unsafe { reference(msg, "msg") }?;
        let payload = match msg {
            Msg::Subject(m) => &m.payload,
            Msg::Stream(r) => &r.payload,
            Msg::Queue(q) => &q.payload,
        };
        // SAFETY: forwarded from the caller.
        *unsafe { out_param(data, "data") }? = payload.as_ptr();
        // SAFETY: forwarded from the caller.
        *unsafe { out_param(len, "len") }? = payload.len();
        Ok(())
    })
}

/// Header `index` (0 to `header_count - 1`) of `msg`: name and value as pointers
/// into the message (valid until it is freed) and lengths. Returns
/// `RINGBROKER_INVALID_ARGUMENT` for a NULL argument or an index out of range.
///
/// # Safety
/// `msg` must be NULL or a live message; every out-pointer NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn ringbroker_msg_header(
    msg: *const Msg,
    index: usize,
    name: *mut *const u8,
    name_len: *mut usize,
    value: *mut *const u8,
    value_len: *mut usize,
) -> StatusCode {
    guard(|| {
        // SAFETY: forwarded from the caller.
        let msg = unsafe { reference(msg, "msg") }?;
        let headers = msg.headers();
        let (n, v) = headers.get(index).ok_or_else(|| {
            Failure::invalid(format!(
                "header {index} of a message with {}",
                headers.len()
            ))
        })?;
        // SAFETY: each forwarded from the caller.
        unsafe {
            *out_param(name, "name")? = n.as_ptr();
            *out_param(name_len, "name_len")? = n.len();
            *out_param(value, "value")? = v.as_ptr();
            *out_param(value_len, "value_len")? = v.len();
        }
        Ok(())
    })
}

/// Frees a message and the memory its views point into. NULL is a no-op; freeing
/// twice is undefined. Any thread may free a message.
///
/// # Safety
/// `msg` must be NULL or a message this library returned, not yet freed.
#[no_mangle]
pub unsafe extern "C" fn ringbroker_msg_free(msg: *mut Msg) {
    guard_value((), || {
        if !msg.is_null() {
            // SAFETY: every message is made by Msg::into_raw and freed once.
            unsafe { Msg::free_raw(msg) };
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use engine::pubsub::Subject;

    fn message(text: &'static str) -> Msg {
        let subject = Subject::try_from("spare.test").expect("valid subject");
        Msg::Subject(Message::new(subject, Bytes::from_static(text.as_bytes())))
    }

    fn payload(msg: *mut Msg) -> Vec<u8> {
        // SAFETY: a live message made by `into_raw` in this test.
        match unsafe { &*msg } {
            Msg::Subject(m) => m.payload.to_vec(),
            _ => Vec::new(),
        }
    }

    #[test]
    fn a_freed_message_allocation_is_reused_with_the_new_contents() {
        let first = message("one").into_raw();
        assert_eq!(payload(first), b"one");
        // SAFETY: made by `into_raw` above, freed once.
        unsafe { Msg::free_raw(first) };
        let second = message("two").into_raw();
        assert_eq!(second, first, "the spare allocation was used again");
        assert_eq!(payload(second), b"two");
        // SAFETY: as above.
        unsafe { Msg::free_raw(second) };
    }

    #[test]
    fn the_stock_of_spares_is_bounded() {
        let many: Vec<*mut Msg> = (0..SPARE_MAX + 50)
            .map(|_| message("x").into_raw())
            .collect();
        for msg in many {
            // SAFETY: each made by `into_raw` above, freed once.
            unsafe { Msg::free_raw(msg) };
        }
        assert_eq!(SPARE.with(|s| s.borrow().len()), SPARE_MAX);
    }
}
