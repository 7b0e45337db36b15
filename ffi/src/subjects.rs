//! Subjects through the C ABI: publish (one message or a batch), subscribe (with a
//! queue group), request with a timeout (blocking or with a completion), respond.
//!
//! Owns: the conversion of C arguments into subject messages (payloads copied once,
//! into `Bytes` the engine then shares). Never: waits in `ringbroker_publish`.

use std::ffi::c_char;

use bytes::Bytes;
use engine::pubsub::{Message, Subject};

use crate::arguments::{bytes, items, optional_string, out_param, reference, string, timeout};
use crate::consumer::Consumer;
use crate::copies::Copier;
use crate::handle::{arg as handle_arg, Completion, Done, Handle};
use crate::message::Msg;
use crate::outcomes;
use crate::status::{guard, Failure, StatusCode};
use crate::streams::{headers_of, Header};

/// A message to publish on a subject (`ringbroker_subject_msg`).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct SubjectMsgIn {
    /// The subject, NUL-terminated (no wildcards).
    pub subject: *const c_char,
    /// Where a responder answers, NUL-terminated; NULL: none.
    pub reply: *const c_char,
    /// Headers (copied); NULL if `headers_len` is 0.
    pub headers: *const Header,
    /// How many headers.
    pub headers_len: usize,
    /// The payload (copied); NULL if `payload_len` is 0.
    pub payload: *const u8,
    /// The payload's length.
    pub payload_len: usize,
}

fn subject(text: &str, what: &str) -> Result<Subject, Failure> {
    Subject::new(Bytes::copy_from_slice(text.as_bytes()))
        .map_err(|e| Failure::invalid(format!("{what} {text:?}: {e}")))
}

thread_local! {
    /// The subject this thread published on last. Programs publish runs of messages on
    /// one subject; reusing its validated, shared bytes saves a validation and an
    /// allocation per message (and the free on the shard that drops it).
    static LAST_SUBJECT: std::cell::RefCell<Option<Subject>> = const { std::cell::RefCell::new(None) };
}

/// `subject(text, "subject")`, served from this thread's last subject when the text is
/// the same.
fn publish_subject(text: &str) -> Result<Subject, Failure> {
    LAST_SUBJECT.with(|last| {
        let mut last = last.borrow_mut();
        if let Some(cached) = last.as_ref().filter(|s| s.as_str() == text) {
            return Ok(cached.clone());
        }
        let fresh = subject(text, "subject")?;
        *last = Some(fresh.clone());
        Ok(fresh)
    })
}

/// A message from C, copied.
///
/// # Safety
/// `m`'s pointers are NULL or valid for the call, as `SubjectMsgIn` documents.
unsafe fn message_of(m: &SubjectMsgIn, copier: &mut Copier) -> Result<Message, Failure> {
    // SAFETY: forwarded from the caller.
    let subject_text = unsafe { string(m.subject, "subject") }?;
    // SAFETY: forwarded from the caller.
    let reply = unsafe { optional_string(m.reply, "reply") }?;
    // SAFETY: forwarded from the caller.
    let payload = unsafe { bytes(m.payload, m.payload_len, "payload") }?;
    let mut message = Message::new(publish_subject(subject_text)?, copier.copy(payload));
    message.reply = reply.map(|r| subject(r, "reply")).transpose()?;
    // SAFETY: forwarded from the caller.
    let headers = unsafe { headers_of(m.headers, m.headers_len) }?;
    if !headers.is_empty() {
        message.headers = Some(headers.into());
    }
    Ok(message)
}

/// A request's subject, payload (copied) and timeout from C.
///
/// # Safety
/// `subject_text` NULL or NUL-terminated; `payload` NULL or `len` readable bytes.
unsafe fn request_of<'a>(
    subject_text: *const c_char,
    payload: *const u8,
    len: usize,
    timeout_ms: i64,
) -> Result<(&'a str, Bytes, std::time::Duration), Failure> {
    // SAFETY: forwarded from the caller.
    let subject_text = unsafe { string(subject_text, "subject") }?;
    // SAFETY: forwarded from the caller.
    let payload = unsafe { bytes(payload, len, "payload") }?;
    if timeout_ms < 0 {
        return Err(Failure::invalid(
            "a request needs a timeout (timeout_ms >= 0)",
        ));
    }
    Ok((
        subject_text,
        Bytes::copy_from_slice(payload),
        timeout(timeout_ms),
    ))
}

/// Publishes `payload` (`len` bytes, copied) on `subject`, with `reply` (NULL: none)
/// as the subject a responder answers to. Fire and forget: returns once queued.
/// Embedded, the calling thread puts it straight into the queues of the subscriptions
/// read through `ringbroker_fetch` (at most once: a subscriber whose pending buffer is
/// full drops it and counts it), and hands the rest (subscriptions served on a shard,
/// such as network clients', and requests' inboxes) to its home shard.
/// Returns `RINGBROKER_INVALID_ARGUMENT` for a NULL handle or subject or an invalid
/// subject, `RINGBROKER_BACKPRESSURE` if the engine is saturated (embedded: the
/// message needs the home shard and that shard's queue of calls from other threads
/// holds 4096 not yet run; nothing was delivered: retry after a moment),
/// `RINGBROKER_DISCONNECTED` if the connection is down. Any thread.
///
/// # Safety
/// `handle` NULL or live; strings NULL or NUL-terminated; `payload` NULL or `len`
/// readable bytes.
#[no_mangle]
pub unsafe extern "C" fn ringbroker_publish(
    handle: *const Handle,
    subject_text: *const c_char,
    reply: *const c_char,
    payload: *const u8,
    len: usize,
) -> StatusCode {
    guard(|| {
        let h = handle_arg(handle)?;
        let one = SubjectMsgIn {
            subject: subject_text,
            reply,
            headers: std::ptr::null(),
            headers_len: 0,
            payload,
            payload_len: len,
        };
        // SAFETY: forwarded from the caller.
        let message = unsafe { message_of(&one, &mut Copier::new(len)) }?;
        Ok(h.api().publish(message)?)
    })
}

/// Publishes `count` messages in one go (fire and forget, at most once, as
/// `ringbroker_publish`, and far cheaper per message). Every message is checked
/// before any is sent: a bad one returns `RINGBROKER_INVALID_ARGUMENT` naming it and
/// publishes nothing. A remote batch travels in one frame: over the server's frame
/// limit it is refused whole with `RINGBROKER_FRAME_TOO_LARGE`. If the engine's
/// outbox fills in the middle of a batch, the rest is dropped and counted (a
/// daemon's `/metrics`: `ringbroker_pubsub_dropped_outbox_total`). Other statuses as `ringbroker_publish`. Any thread.
///
/// # Safety
/// `handle` NULL or live; `msgs` NULL or `count` live messages whose pointers are
/// valid for the call.
#[no_mangle]
pub unsafe extern "C" fn ringbroker_publish_batch(
    handle: *const Handle,
    msgs: *const SubjectMsgIn,
    count: usize,
) -> StatusCode {
    guard(|| {
        let h = handle_arg(handle)?;
        // SAFETY: forwarded from the caller.
        let msgs = unsafe { items(msgs, count, "msgs") }?;
        let mut copier = Copier::new(
            msgs.iter()
                .fold(0usize, |n, m| n.saturating_add(m.payload_len)),
        );
        let batch = msgs
            .iter()
            // SAFETY: forwarded from the caller.
            .map(|m| unsafe { message_of(m, &mut copier) })
            .collect::<Result<Vec<_>, Failure>>()?;
        Ok(h.api().publish_batch(batch)?)
    })
}

/// Answers request `msg` (a subject message with a reply subject) with `payload`.
/// Returns `RINGBROKER_INVALID_ARGUMENT` if `msg` has no reply subject, else as
/// `ringbroker_publish`. Any thread.
///
/// # Safety
/// `handle` and `msg` NULL or live; `payload` NULL or `len` readable bytes.
#[no_mangle]
pub unsafe extern "C" fn ringbroker_respond(
    handle: *const Handle,
    msg: *const Msg,
    payload: *const u8,
    len: usize,
) -> StatusCode {
    guard(|| {
        let h = handle_arg(handle)?;
        // SAFETY: forwarded from the caller.
        let msg = unsafe { reference(msg, "msg") }?;
        let reply = match msg {
            Msg::Subject(m) => m.reply.clone(),
            _ => None,
        }
        .ok_or_else(|| Failure::invalid("the message has no reply subject"))?;
        // SAFETY: forwarded from the caller.
        let payload = unsafe { bytes(payload, len, "payload") }?;
        Ok(h.api()
            .publish(Message::new(reply, Bytes::copy_from_slice(payload)))?)
    })
}

/// Subscribes to `pattern` (`*` matches one token, `>` the rest), in `queue_group`
/// if not NULL (each message goes to one member of the group), and puts the
/// subscription in `*out`: receive with `ringbroker_next` / `ringbroker_fetch`, free
/// with `ringbroker_consumer_free`. Returns `RINGBROKER_INVALID_ARGUMENT` for a NULL
/// or invalid argument, `RINGBROKER_DISCONNECTED` if the connection is down. Any
/// thread.
///
/// # Safety
/// `handle` NULL or live; strings NULL or NUL-terminated; `out` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn ringbroker_subscribe(
    handle: *const Handle,
    pattern: *const c_char,
    queue_group: *const c_char,
    out: *mut *mut Consumer,
) -> StatusCode {
    guard(|| {
        let h = handle_arg(handle)?;
        // SAFETY: forwarded from the caller.
        let slot = unsafe { out_param(out, "out") }?;
        // SAFETY: forwarded from the caller.
        let pattern = unsafe { string(pattern, "pattern") }?;
        // SAFETY: forwarded from the caller.
        let group = unsafe { optional_string(queue_group, "queue_group") }?;
        let subscription = h.api().subscribe(pattern, group)?;
        *slot = Box::into_raw(Box::new(Consumer::subject(subscription)));
        Ok(())
    })
}

/// Sends `payload` to `subject` and waits up to `timeout_ms` for the first reply,
/// put in `*reply` (free with `ringbroker_msg_free`). Returns
/// `RINGBROKER_NO_RESPONDERS` at once if nothing subscribes to `subject`,
/// `RINGBROKER_TIMEOUT` if no reply came in time, `RINGBROKER_INVALID_ARGUMENT` for a
/// NULL or invalid argument or a negative `timeout_ms` (a request always has a
/// deadline, unlike a receive). Any thread.
///
/// # Safety
/// `handle` NULL or live; `subject` NULL or NUL-terminated; `payload` NULL or `len`
/// readable bytes; `reply` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn ringbroker_request(
    handle: *const Handle,
    subject_text: *const c_char,
    payload: *const u8,
    len: usize,
    timeout_ms: i64,
    reply: *mut *mut Msg,
) -> StatusCode {
    guard(|| {
        let h = handle_arg(handle)?;
        // SAFETY: forwarded from the caller.
        let slot = unsafe { out_param(reply, "reply") }?;
        *slot = std::ptr::null_mut();
        // SAFETY: forwarded from the caller.
        let (subject_text, payload, wait) =
            unsafe { request_of(subject_text, payload, len, timeout_ms) }?;
        let answer = h.api().request(subject_text, payload, wait)?;
        *slot = Msg::Subject(answer).into_raw();
        Ok(())
    })
}

/// Sends `payload` to `subject` without waiting for the reply: once it comes (or
/// `timeout_ms` passes, or nothing subscribes to `subject`), one completion tagged
/// `token` (index 0) is queued on the handle: status `RINGBROKER_OK` with `reply` set
/// (the caller's to free), or `RINGBROKER_NO_RESPONDERS`, `RINGBROKER_TIMEOUT`,
/// `RINGBROKER_DISCONNECTED` with `reply` NULL. The handle's fd turns readable;
/// `ringbroker_completions_poll` returns it. If this call returns an error
/// (`RINGBROKER_INVALID_ARGUMENT` for a NULL or invalid argument or a negative
/// timeout), no completion comes. Any thread.
///
/// # Safety
/// `handle` NULL or live; `subject` NULL or NUL-terminated; `payload` NULL or `len`
/// readable bytes.
#[no_mangle]
pub unsafe extern "C" fn ringbroker_request_async(
    handle: *const Handle,
    subject_text: *const c_char,
    payload: *const u8,
    len: usize,
    timeout_ms: i64,
    token: u64,
) -> StatusCode {
    guard(|| {
        let h = handle_arg(handle)?;
        // SAFETY: forwarded from the caller.
        let (subject_text, payload, wait) =
            unsafe { request_of(subject_text, payload, len, timeout_ms) }?;
        let completions = h.completions.clone();
        let done = Box::new(move |reply: engine::api::Result<Message>| {
            let completion = Completion::ok(token, 0);
            completions.push([match reply {
                Ok(message) => Done {
                    completion,
                    message: None,
                    reply: Some(Msg::Subject(message)),
                },
                Err(e) => outcomes::failed(completion, &e),
            }]);
        });
        Ok(h.api().request_with(subject_text, payload, wait, done)?)
    })
}
