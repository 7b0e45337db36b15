//! Subjects through the C ABI: publish, subscribe (with a queue group), request with
//! a timeout, respond.
//!
//! Owns: the conversion of C arguments into subject messages (payloads copied once,
//! into `Bytes` the engine then shares). Never: waits in `ringbroker_publish`.

use std::ffi::c_char;

use bytes::Bytes;
use engine::pubsub::{Message, Subject};

use crate::arguments::{bytes, optional_string, out_param, reference, string, timeout};
use crate::consumer::Consumer;
use crate::handle::{arg as handle_arg, Handle};
use crate::message::Msg;
use crate::status::{guard, Failure, StatusCode};

fn subject(text: &str, what: &str) -> Result<Subject, Failure> {
    Subject::new(Bytes::copy_from_slice(text.as_bytes()))
        .map_err(|e| Failure::invalid(format!("{what} {text:?}: {e}")))
}

/// Publishes `payload` (`len` bytes, copied) on `subject`, with `reply` (NULL: none)
/// as the subject a responder answers to. Fire and forget: returns once queued.
/// Returns `RINGBROKER_INVALID_ARGUMENT` for a NULL handle or subject or an invalid
/// subject, `RINGBROKER_BACKPRESSURE` if the engine is saturated,
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
        // SAFETY: forwarded from the caller.
        let subject_text = unsafe { string(subject_text, "subject") }?;
        // SAFETY: forwarded from the caller.
        let reply = unsafe { optional_string(reply, "reply") }?;
        // SAFETY: forwarded from the caller.
        let payload = unsafe { bytes(payload, len, "payload") }?;
        let mut message = Message::new(
            subject(subject_text, "subject")?,
            Bytes::copy_from_slice(payload),
        );
        message.reply = reply.map(|r| subject(r, "reply")).transpose()?;
        Ok(h.api().publish(message)?)
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
/// NULL or invalid argument. Any thread.
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
        let subject_text = unsafe { string(subject_text, "subject") }?;
        // SAFETY: forwarded from the caller.
        let payload = unsafe { bytes(payload, len, "payload") }?;
        if timeout_ms < 0 {
            return Err(Failure::invalid(
                "a request needs a timeout (timeout_ms >= 0)",
            ));
        }
        let answer = h.api().request(
            subject_text,
            Bytes::copy_from_slice(payload),
            timeout(timeout_ms),
        )?;
        *slot = Msg::Subject(answer).into_raw();
        Ok(())
    })
}
