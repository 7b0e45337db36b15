//! Streams through the C ABI: definitions, durable and ephemeral consumers, and
//! publishing three ways (blocking until stored, fire and forget, asynchronous with
//! completions).
//!
//! Owns: the C record and header structs and their conversion (bytes copied once into
//! `Bytes`), and the flat info structs. Never: reorders a batch's outcomes.

use std::ffi::c_char;
use std::sync::Arc;

use bytes::Bytes;
use engine::api::PublishOutcomes;
use engine::stream::{Publish, PublishAck};

use crate::arguments::{bytes, items, optional_string, out_param, string};
use crate::config::{self, Config};
use crate::consumer::Consumer;
use crate::copies::Copier;
use crate::handle::{arg as handle_arg, Completion, Completions};
use crate::outcomes;
use crate::status::{guard, Failure, StatusCode, RINGBROKER_OK};

/// A header of a record or message to publish (`ringbroker_header`).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct Header {
    /// The name, NUL-terminated (copied).
    pub name: *const c_char,
    /// The value's bytes (copied; NULL if `value_len` is 0).
    pub value: *const u8,
    /// The value's length.
    pub value_len: usize,
}

/// A record to publish to a stream (`ringbroker_record`). The stream is the one whose
/// subjects capture `subject`. A `Msg-Id` header deduplicates within the stream's
/// window.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct RecordIn {
    /// The subject, NUL-terminated.
    pub subject: *const c_char,
    /// The key (records with one key keep their order in one partition); NULL: none.
    pub key: *const u8,
    /// The key's length.
    pub key_len: usize,
    /// Headers; NULL if `headers_len` is 0.
    pub headers: *const Header,
    /// How many headers.
    pub headers_len: usize,
    /// The payload; NULL if `payload_len` is 0.
    pub payload: *const u8,
    /// The payload's length.
    pub payload_len: usize,
}

/// How one record of a publish went (`ringbroker_publish_result`).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct PublishResult {
    /// `RINGBROKER_OK` if stored (or a duplicate of a stored record).
    pub status: StatusCode,
    /// The partition it is in.
    pub partition: u32,
    /// Its offset there.
    pub offset: u64,
    /// It duplicated a record stored within the dedup window (not stored again).
    pub duplicate: bool,
}

/// A stream's figures (`ringbroker_stream_info`).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct StreamInfo {
    /// Partitions.
    pub partitions: u32,
    /// Records retained, in all partitions.
    pub records: u64,
    /// Bytes of segments, in all partitions.
    pub bytes: u64,
}

/// A durable consumer's figures (`ringbroker_consumer_info`).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct ConsumerInfo {
    /// Partitions of its stream.
    pub partitions: u32,
    /// Records delivered and not yet acknowledged, in all partitions.
    pub pending: u64,
    /// Partitions assigned to a member now.
    pub assigned: u32,
}

/// Headers from C, copied.
///
/// # Safety
/// `headers` NULL or `len` live headers whose pointers are valid for the call.
pub(crate) unsafe fn headers_of(
    headers: *const Header,
    len: usize,
) -> Result<Vec<(Bytes, Bytes)>, Failure> {
    // SAFETY: forwarded from the caller.
    let headers = unsafe { items(headers, len, "headers") }?;
    headers
        .iter()
        .map(|h| {
            // SAFETY: forwarded from the caller.
            let name = unsafe { string(h.name, "header name") }?;
            // SAFETY: forwarded from the caller.
            let value = unsafe { bytes(h.value, h.value_len, "header value") }?;
            Ok((
                Bytes::copy_from_slice(name.as_bytes()),
                Bytes::copy_from_slice(value),
            ))
        })
        .collect()
}

/// Records from C, copied.
///
/// # Safety
/// `records` NULL or `count` live records whose pointers are valid for the call.
unsafe fn records_of(records: *const RecordIn, count: usize) -> Result<Vec<Publish>, Failure> {
    // SAFETY: forwarded from the caller.
    let records = unsafe { items(records, count, "records") }?;
    let mut copier = Copier::new(records.iter().fold(0usize, |n, r| {
        n.saturating_add(r.payload_len)
            .saturating_add(if r.key.is_null() { 0 } else { r.key_len })
    }));
    records
        .iter()
        .map(|r| {
            // SAFETY: each forwarded from the caller.
            unsafe {
                let subject = string(r.subject, "record subject")?;
                let payload = bytes(r.payload, r.payload_len, "record payload")?;
                let mut publish = Publish::new(subject, copier.copy(payload));
                if !r.key.is_null() {
                    publish = publish.key(copier.copy(bytes(r.key, r.key_len, "key")?));
                }
                publish.headers = headers_of(r.headers, r.headers_len)?;
                Ok(publish)
            }
        })
        .collect()
}

fn result_of(outcome: &engine::api::Result<PublishAck>) -> PublishResult {
    match outcome {
        Ok(ack) => PublishResult {
            status: RINGBROKER_OK,
            partition: ack.partition,
            offset: ack.offset,
            duplicate: ack.duplicate,
        },
        Err(e) => PublishResult {
            status: outcomes::status_of(e),
            partition: 0,
            offset: 0,
            duplicate: false,
        },
    }
}

/// What a stored record's completion reports.
fn fill(ack: &PublishAck, completion: &mut Completion) {
    completion.partition = ack.partition;
    completion.offset = ack.offset;
    completion.duplicate = ack.duplicate;
}

/// Creates a stream from `config` (keys in docs/c-api.md: `name`, `subjects`,
/// `partitions`, `durability`, retention, ...). Idempotent for the same definition.
/// Returns `RINGBROKER_ALREADY_EXISTS` for a different one with that name or a
/// subject another stream captures, `RINGBROKER_INVALID_ARGUMENT` for a bad key or
/// definition. Any thread.
///
/// # Safety
/// `handle` and `config` NULL or live.
#[no_mangle]
pub unsafe extern "C" fn ringbroker_stream_create(
    handle: *const crate::handle::Handle,
    config: *const Config,
) -> StatusCode {
    guard(|| {
        let h = handle_arg(handle)?;
        // SAFETY: forwarded from the caller.
        let stream = config::stream(Some(unsafe { config::required(config) }?))?;
        Ok(h.api().create_stream(&stream)?)
    })
}

/// Changes a stream's retention, record size limit, dedup window or dead-letter
/// stream (`config` holds the whole definition). Returns `RINGBROKER_NOT_FOUND`,
/// `RINGBROKER_INVALID_ARGUMENT` (bad key, or a change of what is fixed at creation).
///
/// # Safety
/// `handle` and `config` NULL or live.
#[no_mangle]
pub unsafe extern "C" fn ringbroker_stream_update(
    handle: *const crate::handle::Handle,
    config: *const Config,
) -> StatusCode {
    guard(|| {
        let h = handle_arg(handle)?;
        // SAFETY: forwarded from the caller.
        let stream = config::stream(Some(unsafe { config::required(config) }?))?;
        Ok(h.api().update_stream(&stream)?)
    })
}

/// Deletes stream `name`, its records and consumers. Returns `RINGBROKER_NOT_FOUND`.
///
/// # Safety
/// `handle` NULL or live; `name` NULL or NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn ringbroker_stream_delete(
    handle: *const crate::handle::Handle,
    name: *const c_char,
) -> StatusCode {
    guard(|| {
        let h = handle_arg(handle)?;
        // SAFETY: forwarded from the caller.
        let name = unsafe { string(name, "name") }?;
        Ok(h.api().delete_stream(name)?)
    })
}

/// Fills `*info` with stream `name`'s figures. Returns `RINGBROKER_NOT_FOUND`.
///
/// # Safety
/// `handle` NULL or live; `name` NULL or NUL-terminated; `info` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn ringbroker_stream_info(
    handle: *const crate::handle::Handle,
    name: *const c_char,
    info: *mut StreamInfo,
) -> StatusCode {
    guard(|| {
        let h = handle_arg(handle)?;
        // SAFETY: forwarded from the caller.
        let name = unsafe { string(name, "name") }?;
        // SAFETY: forwarded from the caller.
        let slot = unsafe { out_param(info, "info") }?;
        let described = h.api().stream_info(name)?;
        *slot = StreamInfo {
            partitions: described.config.partitions,
            records: described.partitions.iter().map(|p| p.records).sum(),
            bytes: described.partitions.iter().map(|p| p.bytes).sum(),
        };
        Ok(())
    })
}

/// Publishes `count` records and waits until each is stored under its stream's
/// durability policy. `results` (NULL, or room for `count`) gets each record's outcome
/// in order. Returns `RINGBROKER_OK` when every record was stored; otherwise the status
/// of the first that was not (the others may have been stored: see `results`), or the
/// status that failed the whole batch (`RINGBROKER_INVALID_ARGUMENT`,
/// `RINGBROKER_DISCONNECTED`, ...). Any thread.
///
/// # Safety
/// `handle` NULL or live; `records` NULL or `count` live records; `results` NULL or
/// room for `count` results.
#[no_mangle]
pub unsafe extern "C" fn ringbroker_stream_publish(
    handle: *const crate::handle::Handle,
    records: *const RecordIn,
    count: usize,
    results: *mut PublishResult,
) -> StatusCode {
    guard(|| {
        let h = handle_arg(handle)?;
        // SAFETY: forwarded from the caller.
        let batch = unsafe { records_of(records, count) }?;
        let each = h.api().publish_records(&batch)?;
        // SAFETY: one outcome per record, and `results` has room for `count`.
        unsafe { outcomes::write_each(&each, results, count, result_of) }
    })
}

/// Publishes `count` records without waiting (fire and forget): returns once they are
/// queued. Outcomes are not reported; a record a stream refuses is lost silently. Use
/// `ringbroker_stream_publish_async` to learn them without waiting. Any thread.
///
/// # Safety
/// As `ringbroker_stream_publish`, without `results`.
#[no_mangle]
pub unsafe extern "C" fn ringbroker_stream_publish_nowait(
    handle: *const crate::handle::Handle,
    records: *const RecordIn,
    count: usize,
) -> StatusCode {
    guard(|| {
        let h = handle_arg(handle)?;
        // SAFETY: forwarded from the caller.
        let batch = unsafe { records_of(records, count) }?;
        Ok(h.api().publish_records_with(batch, Box::new(drop))?)
    })
}

/// Publishes `count` records without waiting; once the engine answers, one completion
/// per record (tagged `token`, `index` = its position in `records`) is queued on the
/// handle: the handle's fd turns readable and `ringbroker_completions_poll` returns
/// them. If this call returns an error, no completion comes. Any thread.
///
/// # Safety
/// As `ringbroker_stream_publish`, without `results`.
#[no_mangle]
pub unsafe extern "C" fn ringbroker_stream_publish_async(
    handle: *const crate::handle::Handle,
    records: *const RecordIn,
    count: usize,
    token: u64,
) -> StatusCode {
    guard(|| {
        let h = handle_arg(handle)?;
        // SAFETY: forwarded from the caller.
        let batch = unsafe { records_of(records, count) }?;
        let completions: Arc<Completions> = h.completions.clone();
        let n = batch.len();
        let done = Box::new(move |each: PublishOutcomes| {
            completions.push(outcomes::completions(token, each, n, fill));
        });
        Ok(h.api().publish_records_with(batch, done)?)
    })
}

/// Creates a durable consumer on `stream` from `config` (`durable` names it; keys in
/// docs/c-api.md). Returns `RINGBROKER_NOT_FOUND` (no stream),
/// `RINGBROKER_ALREADY_EXISTS` (a different definition), `RINGBROKER_INVALID_ARGUMENT`.
///
/// # Safety
/// `handle` and `config` NULL or live; `stream` NULL or NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn ringbroker_consumer_create(
    handle: *const crate::handle::Handle,
    stream: *const c_char,
    config: *const Config,
) -> StatusCode {
    guard(|| {
        let h = handle_arg(handle)?;
        // SAFETY: forwarded from the caller.
        let stream = unsafe { string(stream, "stream") }?;
        // SAFETY: forwarded from the caller.
        let consumer = config::consumer(Some(unsafe { config::required(config) }?))?;
        if consumer.durable.is_none() {
            return Err(Failure::invalid(
                "consumer config: durable (its name) is required",
            ));
        }
        Ok(h.api().create_consumer(stream, &consumer)?)
    })
}

/// Deletes durable consumer `name` of `stream`. Returns `RINGBROKER_NOT_FOUND`.
///
/// # Safety
/// `handle` NULL or live; strings NULL or NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn ringbroker_consumer_delete(
    handle: *const crate::handle::Handle,
    stream: *const c_char,
    name: *const c_char,
) -> StatusCode {
    guard(|| {
        let h = handle_arg(handle)?;
        // SAFETY: forwarded from the caller.
        let (stream, name) = unsafe { (string(stream, "stream")?, string(name, "name")?) };
        Ok(h.api().delete_consumer(stream, name)?)
    })
}

/// Fills `*info` with durable consumer `name`'s figures. Returns
/// `RINGBROKER_NOT_FOUND`.
///
/// # Safety
/// `handle` NULL or live; strings NULL or NUL-terminated; `info` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn ringbroker_consumer_info(
    handle: *const crate::handle::Handle,
    stream: *const c_char,
    name: *const c_char,
    info: *mut ConsumerInfo,
) -> StatusCode {
    guard(|| {
        let h = handle_arg(handle)?;
        // SAFETY: forwarded from the caller.
        let (stream, name) = unsafe { (string(stream, "stream")?, string(name, "name")?) };
        // SAFETY: forwarded from the caller.
        let slot = unsafe { out_param(info, "info") }?;
        let described = h.api().consumer_info(stream, name)?;
        *slot = ConsumerInfo {
            partitions: u32::try_from(described.partitions.len()).unwrap_or(u32::MAX),
            pending: described.partitions.iter().map(|p| p.pending as u64).sum(),
            assigned: u32::try_from(
                described
                    .partitions
                    .iter()
                    .filter(|p| p.member.is_some())
                    .count(),
            )
            .unwrap_or(u32::MAX),
        };
        Ok(())
    })
}

/// Joins durable consumer `name` of `stream` as a new member of its group (the group
/// shares the partitions among its members) and puts it in `*out`. With `config` NULL
/// (`name` non-NULL) it joins; with `name` NULL it starts an ephemeral consumer from
/// `config` (no `durable` key), which is forgotten when freed. Receive with
/// `ringbroker_next` / `ringbroker_fetch`; acknowledge with `ringbroker_ack`,
/// `ringbroker_commit`, `ringbroker_nack`. Returns `RINGBROKER_NOT_FOUND`,
/// `RINGBROKER_INVALID_ARGUMENT`. Any thread.
///
/// # Safety
/// `handle` and `config` NULL or live; strings NULL or NUL-terminated; `out` NULL or
/// writable.
#[no_mangle]
pub unsafe extern "C" fn ringbroker_stream_consume(
    handle: *const crate::handle::Handle,
    stream: *const c_char,
    name: *const c_char,
    config: *const Config,
    out: *mut *mut Consumer,
) -> StatusCode {
    guard(|| {
        let h = handle_arg(handle)?;
        // SAFETY: forwarded from the caller.
        let slot = unsafe { out_param(out, "out") }?;
        // SAFETY: forwarded from the caller.
        let stream = unsafe { string(stream, "stream") }?;
        // SAFETY: forwarded from the caller.
        let name = unsafe { optional_string(name, "name") }?;
        // SAFETY: forwarded from the caller.
        let config = unsafe { config::optional(config) };
        let consumer = match (name, config) {
            (Some(name), None) => h.api().join(stream, name)?,
            (None, Some(config)) => {
                let definition = config::consumer(Some(config))?;
                if definition.durable.is_some() {
                    return Err(Failure::invalid(
                        "an ephemeral consumer has no durable key: create the durable one \
                         with ringbroker_consumer_create and join it by name",
                    ));
                }
                h.api().subscribe_stream(stream, &definition)?
            }
            _ => {
                return Err(Failure::invalid(
                    "give exactly one of name (join a durable consumer) and config (an \
                     ephemeral one)",
                ))
            }
        };
        *slot = Box::into_raw(Box::new(Consumer::stream(consumer)));
        Ok(())
    })
}
