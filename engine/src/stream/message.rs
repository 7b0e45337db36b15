//! What goes into a stream (`Publish`), what a publisher is told (`PublishAck`), and
//! what a consumer receives (`StreamMessage`).
//!
//! Owns: the record layout streams use on the log (the subject travels as the first
//! header, `Rb-Subject`), and turning a stored record back into a message without
//! copying its bytes (every field is a slice of the batch read from the log). Never:
//! lets a publisher set a header the engine reserves (`Rb-` names).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use super::error::StreamError;
use super::member::AckRoute;
use crate::storage::codec::RecordView;

/// Header holding a record's subject (the first header of every stream record).
pub const SUBJECT_HEADER: &[u8] = b"Rb-Subject";
/// Header a publisher sets to have retries within the dedup window dropped.
pub const MSG_ID_HEADER: &[u8] = b"Msg-Id";
/// Headers whose name starts with this belong to the engine.
pub const RESERVED_HEADER_PREFIX: &[u8] = b"Rb-";
/// Dead-letter headers: why, and where the record came from.
pub const DEAD_REASON_HEADER: &[u8] = b"Rb-Dead-Reason";
/// The stream a dead-lettered record was stored in.
pub const DEAD_STREAM_HEADER: &[u8] = b"Rb-Dead-Stream";
/// Its partition there (decimal).
pub const DEAD_PARTITION_HEADER: &[u8] = b"Rb-Dead-Partition";
/// Its offset there (decimal).
pub const DEAD_OFFSET_HEADER: &[u8] = b"Rb-Dead-Offset";
/// The consumer that gave up on it.
pub const DEAD_CONSUMER_HEADER: &[u8] = b"Rb-Dead-Consumer";
/// Its `Msg-Id`, if it had one (renamed, so dead letters are never deduplicated).
pub const DEAD_MSG_ID_HEADER: &[u8] = b"Rb-Dead-Msg-Id";
/// How many times it was delivered (decimal).
pub const DEAD_DELIVERIES_HEADER: &[u8] = b"Rb-Dead-Deliveries";

/// A record to publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publish {
    /// The subject; it selects the stream.
    pub subject: String,
    /// Records with a key all go to partition `xxh3(key) % partitions`, in order.
    pub key: Option<Bytes>,
    /// Headers (a `Msg-Id` header turns on deduplication for the record).
    pub headers: Vec<(Bytes, Bytes)>,
    /// The payload.
    pub payload: Bytes,
}

impl Publish {
    /// A record on `subject` with `payload`, no key, no headers.
    pub fn new(subject: &str, payload: impl Into<Bytes>) -> Self {
        Self {
            subject: subject.to_owned(),
            key: None,
            headers: Vec::new(),
            payload: payload.into(),
        }
    }

    /// With a key.
    pub fn key(mut self, key: impl Into<Bytes>) -> Self {
        self.key = Some(key.into());
        self
    }

    /// With a header added.
    pub fn header(mut self, name: impl Into<Bytes>, value: impl Into<Bytes>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// With a `Msg-Id` header (deduplication).
    pub fn msg_id(self, id: impl Into<Bytes>) -> Self {
        self.header(Bytes::from_static(MSG_ID_HEADER), id)
    }

    /// The value of the `Msg-Id` header, if any.
    pub fn id(&self) -> Option<&Bytes> {
        self.headers
            .iter()
            .find(|(n, _)| n.as_ref() == MSG_ID_HEADER)
            .map(|(_, v)| v)
    }

    /// Bytes the record counts against `max_record_bytes`: subject, key, headers and
    /// payload.
    pub fn size(&self) -> usize {
        let headers: usize = self.headers.iter().map(|(n, v)| n.len() + v.len()).sum();
        self.subject.len() + self.key.as_ref().map_or(0, Bytes::len) + headers + self.payload.len()
    }

    /// Refuses headers the engine reserves.
    pub(crate) fn check_headers(&self) -> Result<(), StreamError> {
        if self.headers.len() > crate::protocol::HEADERS_MAX {
            return Err(StreamError::invalid(
                "headers",
                format!(
                    "{}; at most {}",
                    self.headers.len(),
                    crate::protocol::HEADERS_MAX
                ),
            ));
        }
        match self
            .headers
            .iter()
            .find(|(n, _)| n.starts_with(RESERVED_HEADER_PREFIX))
        {
            Some((name, _)) => Err(StreamError::ReservedHeader(
                String::from_utf8_lossy(name).into_owned(),
            )),
            None => Ok(()),
        }
    }
}

/// Where a published record was stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishAck {
    /// The stream that captured it.
    pub stream: Arc<str>,
    /// Its partition.
    pub partition: u32,
    /// Its offset in the partition.
    pub offset: u64,
    /// A record with the same `Msg-Id` was stored within the dedup window: this is that
    /// record's position, and nothing new was stored.
    pub duplicate: bool,
}

/// A record delivered to a consumer. Every byte field shares the batch read from the
/// log (no copy); the batch stays in memory while any message of it is alive.
#[derive(Debug, Clone)]
pub struct StreamMessage {
    /// The stream.
    pub stream: Arc<str>,
    /// The partition.
    pub partition: u32,
    /// The record's offset in the partition.
    pub offset: u64,
    /// Milliseconds since the Unix epoch, set when the record was stored.
    pub timestamp: i64,
    /// The subject it was published on.
    pub subject: Bytes,
    /// Its key.
    pub key: Option<Bytes>,
    /// Its headers, in order (without the engine's `Rb-Subject`).
    pub headers: Vec<(Bytes, Bytes)>,
    /// The payload.
    pub payload: Bytes,
    /// 1 on the first delivery, more on redeliveries.
    pub delivery_count: u32,
    /// Set on the first message after records were skipped because retention removed
    /// them before this consumer read them: the offsets skipped, `start..end`.
    pub skipped: Option<std::ops::Range<u64>>,
    pub(crate) generation: u64,
    pub(crate) route: Option<Arc<AckRoute>>,
    /// (shard, number) of the push that put it in the member's buffer.
    pub(crate) pushed_by: (usize, u64),
}

impl StreamMessage {
    /// A message from `record` of `batch` (`batch` holds the bytes `record` borrows).
    pub(crate) fn from_record(
        stream: &Arc<str>,
        partition: u32,
        batch: &Bytes,
        record: &RecordView<'_>,
    ) -> Self {
        let mut subject = Bytes::new();
        let mut headers = Vec::with_capacity(record.header_count().saturating_sub(1) as usize);
        for (name, value) in record.headers() {
            if name == SUBJECT_HEADER && subject.is_empty() {
                subject = batch.slice_ref(value);
            } else {
                headers.push((batch.slice_ref(name), batch.slice_ref(value)));
            }
        }
        Self {
            stream: stream.clone(),
            partition,
            offset: record.offset,
            timestamp: record.timestamp,
            subject,
            key: record.key.map(|k| batch.slice_ref(k)),
            headers,
            payload: batch.slice_ref(record.value),
            delivery_count: 1,
            skipped: None,
            generation: 0,
            route: None,
            pushed_by: (0, 0),
        }
    }

    /// The subject as text (subjects are validated UTF-8 when published).
    pub fn subject_str(&self) -> &str {
        std::str::from_utf8(&self.subject).unwrap_or("")
    }

    /// The value of the first header named `name`.
    pub fn header(&self, name: &[u8]) -> Option<&Bytes> {
        self.headers
            .iter()
            .find(|(n, _)| n.as_ref() == name)
            .map(|(_, v)| v)
    }

    /// Acknowledges the record: it will not be delivered again to this consumer, and
    /// the consumer's position moves past it. Returns once the request is queued for
    /// the partition's shard. A no-op under `AckPolicy::None`.
    pub fn ack(&self) -> Result<(), StreamError> {
        match &self.route {
            Some(route) => route.send(self, super::member::AckKind::Ack),
            None => Ok(()),
        }
    }

    /// Asks for the record to be delivered again after `delay` (zero: at once), counting
    /// towards `max_deliver`.
    pub fn nak(&self, delay: Duration) -> Result<(), StreamError> {
        match &self.route {
            Some(route) => route.send(self, super::member::AckKind::Nak(delay)),
            None => Ok(()),
        }
    }

    /// Like `ack`, but waits for the partition's shard to apply it: `Stale` if the
    /// partition was reassigned since the delivery (the new member gets the record).
    pub fn ack_sync(&self) -> Result<(), StreamError> {
        match &self.route {
            Some(route) => route.call(self),
            None => Ok(()),
        }
    }
}
