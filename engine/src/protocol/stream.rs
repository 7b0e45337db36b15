//! Streams frames: definitions (create, update, delete, info, list), consumers
//! (create, delete, info, list, join, subscribe, leave), publish batches and their
//! acknowledgements, pushed `STREAM_MESSAGE`s, `STREAM_ACK` and `STREAM_NAK`.
//!
//! Owns: their bodies. Stream and consumer definitions travel as the byte strings
//! `StreamConfig::encode` / `ConsumerConfig::encode` write (the same encoding the
//! metadata store keeps, specified in `docs/storage.md`): one codec for disk and wire.

use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};

use super::error::{ErrorCode, ProtocolError};
use super::wire::{Reader, Writer};
use crate::stream::{
    ConsumerConfig, ConsumerInfo, ConsumerPartitionInfo, PartitionInfo, Publish, StreamConfig,
    StreamInfo, StreamMessage,
};

/// The most records one `STREAM_PUBLISH` frame carries.
pub const PUBLISH_BATCH_MAX: usize = 65536;
/// The most (partition, offset) pairs one `STREAM_ACK` carries.
pub const ACK_BATCH_MAX: usize = 65536;
/// The most names a list reply carries (more are cut; lists are for people).
pub const LIST_NAMES_MAX: usize = 100_000;

/// Reads a body that is one string (a name).
pub fn decode_name(body: Bytes, op: &'static str) -> Result<String, ProtocolError> {
    let mut r = Reader::new(body, op);
    let name = r.string()?;
    r.end()?;
    Ok(name)
}

/// Reads a body of two strings (stream, consumer).
pub fn decode_two_names(body: Bytes, op: &'static str) -> Result<(String, String), ProtocolError> {
    let mut r = Reader::new(body, op);
    let names = (r.string()?, r.string()?);
    r.end()?;
    Ok(names)
}

/// A list of names: `u32` count, then strings.
pub fn encode_names(out: &mut BytesMut, names: &[String]) {
    let n = names.len().min(LIST_NAMES_MAX);
    out.put_u32_le(n as u32);
    for name in &names[..n] {
        Writer::str(out, name);
    }
}

/// Reads a list of names.
pub fn decode_names(body: Bytes, op: &'static str) -> Result<Vec<String>, ProtocolError> {
    let mut r = Reader::new(body, op);
    let n = r.count(4, LIST_NAMES_MAX)?;
    let names = (0..n).map(|_| r.string()).collect::<Result<_, _>>()?;
    r.end()?;
    Ok(names)
}

/// A stream definition body (`STREAM_CREATE`, `STREAM_UPDATE`).
pub fn encode_stream_config(out: &mut BytesMut, config: &StreamConfig) {
    Writer::bytes(out, &config.encode());
}

/// Reads a stream definition body (not validated: the engine validates).
pub fn decode_stream_config(body: Bytes, op: &'static str) -> Result<StreamConfig, ProtocolError> {
    let mut r = Reader::new(body, op);
    let raw = r.bytes()?;
    r.end()?;
    StreamConfig::decode(&raw).map_err(|_| r.malformed("bad stream definition"))
}

/// `STREAM_INFO` reply: the definition, then per partition first offset, next offset,
/// records, bytes, owner shard.
pub fn encode_stream_info(out: &mut BytesMut, info: &StreamInfo) {
    Writer::bytes(out, &info.config.encode());
    out.put_u32_le(info.partitions.len() as u32);
    for p in &info.partitions {
        out.put_u32_le(p.partition);
        out.put_u64_le(p.first_offset);
        out.put_u64_le(p.next_offset);
        out.put_u64_le(p.records);
        out.put_u64_le(p.bytes);
        out.put_u32_le(p.shard as u32);
    }
}

/// Reads a `STREAM_INFO` reply.
pub fn decode_stream_info(body: Bytes) -> Result<StreamInfo, ProtocolError> {
    let mut r = Reader::new(body, "STREAM_INFO reply");
    let raw = r.bytes()?;
    let config = StreamConfig::decode(&raw).map_err(|_| r.malformed("bad stream definition"))?;
    let n = r.count(40, u32::MAX as usize)?;
    let mut partitions = Vec::with_capacity(n);
    for _ in 0..n {
        partitions.push(PartitionInfo {
            partition: r.u32()?,
            first_offset: r.u64()?,
            next_offset: r.u64()?,
            records: r.u64()?,
            bytes: r.u64()?,
            shard: r.u32()? as usize,
        });
    }
    r.end()?;
    Ok(StreamInfo { config, partitions })
}

/// `CONSUMER_CREATE` body: the stream, then the consumer definition.
pub fn encode_consumer_create(out: &mut BytesMut, stream: &str, config: &ConsumerConfig) {
    Writer::str(out, stream);
    Writer::bytes(out, &config.encode());
}

/// Reads a `CONSUMER_CREATE` body.
pub fn decode_consumer_create(
    body: Bytes,
    op: &'static str,
) -> Result<(String, ConsumerConfig), ProtocolError> {
    let mut r = Reader::new(body, op);
    let stream = r.string()?;
    let raw = r.bytes()?;
    r.end()?;
    let config =
        ConsumerConfig::decode(&raw).map_err(|_| r.malformed("bad consumer definition"))?;
    Ok((stream, config))
}

/// `CONSUMER_INFO` reply: the definition, then per partition next offset, pending
/// count, assigned member (0 = none).
pub fn encode_consumer_info(out: &mut BytesMut, info: &ConsumerInfo) {
    Writer::bytes(out, &info.config.encode());
    out.put_u32_le(info.partitions.len() as u32);
    for p in &info.partitions {
        out.put_u32_le(p.partition);
        out.put_u64_le(p.next_offset);
        out.put_u64_le(p.pending as u64);
        out.put_u64_le(p.member.unwrap_or(0));
    }
}

/// Reads a `CONSUMER_INFO` reply.
pub fn decode_consumer_info(body: Bytes) -> Result<ConsumerInfo, ProtocolError> {
    let mut r = Reader::new(body, "CONSUMER_INFO reply");
    let raw = r.bytes()?;
    let config =
        ConsumerConfig::decode(&raw).map_err(|_| r.malformed("bad consumer definition"))?;
    let n = r.count(28, u32::MAX as usize)?;
    let mut partitions = Vec::with_capacity(n);
    for _ in 0..n {
        partitions.push(ConsumerPartitionInfo {
            partition: r.u32()?,
            next_offset: r.u64()?,
            pending: usize::try_from(r.u64()?).map_err(|_| r.malformed("pending"))?,
            member: Some(r.u64()?).filter(|&m| m != 0),
        });
    }
    r.end()?;
    Ok(ConsumerInfo { config, partitions })
}

/// `CONSUMER_JOIN` body: the client's consumer id, the stream, the durable name.
/// `CONSUMER_SUBSCRIBE` body: the client's consumer id, the stream, a definition.
#[derive(Debug, Clone, PartialEq)]
pub struct Attach {
    /// The client's id for this consumer on its connection; pushed messages carry it.
    pub consumer_id: u64,
    /// The stream.
    pub stream: String,
    /// Join a durable consumer by name, or subscribe with a definition.
    pub target: AttachTarget,
}

/// What `Attach` attaches to.
#[derive(Debug, Clone, PartialEq)]
pub enum AttachTarget {
    /// `CONSUMER_JOIN`: a durable consumer's name.
    Join(String),
    /// `CONSUMER_SUBSCRIBE`: an ephemeral consumer's definition.
    Subscribe(ConsumerConfig),
}

impl Attach {
    /// Appends the body.
    pub fn encode(&self, out: &mut BytesMut) {
        out.put_u64_le(self.consumer_id);
        Writer::str(out, &self.stream);
        match &self.target {
            AttachTarget::Join(name) => Writer::str(out, name),
            AttachTarget::Subscribe(config) => Writer::bytes(out, &config.encode()),
        }
    }

    /// Reads a `CONSUMER_JOIN` (`join`) or `CONSUMER_SUBSCRIBE` body.
    pub fn decode(body: Bytes, join: bool) -> Result<Self, ProtocolError> {
        let op = if join {
            "CONSUMER_JOIN"
        } else {
            "CONSUMER_SUBSCRIBE"
        };
        let mut r = Reader::new(body, op);
        let consumer_id = r.u64()?;
        let stream = r.string()?;
        let target = if join {
            AttachTarget::Join(r.string()?)
        } else {
            let raw = r.bytes()?;
            AttachTarget::Subscribe(
                ConsumerConfig::decode(&raw).map_err(|_| r.malformed("bad consumer definition"))?,
            )
        };
        r.end()?;
        Ok(Self {
            consumer_id,
            stream,
            target,
        })
    }
}

/// Reads a body that is one `u64` (a consumer or subscription id).
pub fn decode_id(body: Bytes, op: &'static str) -> Result<u64, ProtocolError> {
    let mut r = Reader::new(body, op);
    let id = r.u64()?;
    r.end()?;
    Ok(id)
}

fn put_opt_bytes(out: &mut BytesMut, value: Option<&Bytes>) {
    Writer::bool(out, value.is_some());
    if let Some(v) = value {
        Writer::bytes(out, v);
    }
}

fn opt_bytes(r: &mut Reader) -> Result<Option<Bytes>, ProtocolError> {
    Ok(if r.bool()? { Some(r.bytes()?) } else { None })
}

/// `STREAM_PUBLISH` body: `u32` count, then per record subject, key (a presence byte
/// then bytes), headers, payload.
pub fn encode_publish(out: &mut BytesMut, records: &[Publish]) {
    out.put_u32_le(records.len() as u32);
    for record in records {
        Writer::str(out, &record.subject);
        put_opt_bytes(out, record.key.as_ref());
        Writer::headers(out, Some(&record.headers));
        Writer::bytes(out, &record.payload);
    }
}

/// Reads a `STREAM_PUBLISH` body.
pub fn decode_publish(body: Bytes) -> Result<Vec<Publish>, ProtocolError> {
    let mut r = Reader::new(body, "STREAM_PUBLISH");
    let n = r.count(4 + 1 + 2 + 4, PUBLISH_BATCH_MAX)?;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let subject = r.string()?;
        let key = opt_bytes(&mut r)?;
        let headers = r.headers()?.map(|h| h.to_vec()).unwrap_or_default();
        let payload = r.bytes()?;
        out.push(Publish {
            subject,
            key,
            headers,
            payload,
        });
    }
    r.end()?;
    Ok(out)
}

/// One record's answer in a `STREAM_PUBLISH` reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PublishOutcome {
    /// Stored (or a duplicate of a record stored within the dedup window).
    Stored {
        /// The stream that captured it (shared with the engine's answer: no copy per
        /// record on the server).
        stream: Arc<str>,
        /// Its partition.
        partition: u32,
        /// Its offset there.
        offset: u64,
        /// Nothing new was stored: this is the original's position.
        duplicate: bool,
    },
    /// Refused.
    Failed {
        /// Why, as a code.
        code: ErrorCode,
        /// Why, for people.
        message: String,
    },
}

/// `STREAM_PUBLISH` reply: `u32` count, then per record a status (`u16`: 0 stored,
/// else an error code) and either stream string, partition `u32`, offset `u64`,
/// duplicate `bool`, or a message string.
pub fn encode_publish_reply(out: &mut BytesMut, outcomes: &[PublishOutcome]) {
    out.put_u32_le(outcomes.len() as u32);
    for outcome in outcomes {
        match outcome {
            PublishOutcome::Stored {
                stream,
                partition,
                offset,
                duplicate,
            } => {
                out.put_u16_le(0);
                Writer::str(out, stream);
                out.put_u32_le(*partition);
                out.put_u64_le(*offset);
                Writer::bool(out, *duplicate);
            }
            PublishOutcome::Failed { code, message } => {
                out.put_u16_le(*code as u16);
                Writer::str(out, message);
            }
        }
    }
}

/// Reads a `STREAM_PUBLISH` reply.
pub fn decode_publish_reply(body: Bytes) -> Result<Vec<PublishOutcome>, ProtocolError> {
    let mut r = Reader::new(body, "STREAM_PUBLISH reply");
    let n = r.count(6, PUBLISH_BATCH_MAX)?;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(match r.u16()? {
            0 => PublishOutcome::Stored {
                stream: Arc::from(r.string()?),
                partition: r.u32()?,
                offset: r.u64()?,
                duplicate: r.bool()?,
            },
            code => PublishOutcome::Failed {
                code: ErrorCode::from_u16(code),
                message: r.string()?,
            },
        });
    }
    r.end()?;
    Ok(out)
}

/// A stream record as a consumer receives it (the body of `STREAM_MESSAGE` after the
/// consumer id).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The partition.
    pub partition: u32,
    /// The offset in the partition.
    pub offset: u64,
    /// Milliseconds since the Unix epoch, when stored.
    pub timestamp: i64,
    /// 1 on the first delivery.
    pub delivery_count: u32,
    /// Offsets skipped (retention removed them unread) before this one, if any.
    pub skipped: Option<std::ops::Range<u64>>,
    /// The subject it was published on.
    pub subject: Bytes,
    /// Its key.
    pub key: Option<Bytes>,
    /// Its headers.
    pub headers: Vec<(Bytes, Bytes)>,
    /// The payload.
    pub payload: Bytes,
}

/// `STREAM_MESSAGE` body: consumer id, partition, offset, timestamp, delivery count,
/// skipped range (`0,0` = none), subject, key, headers, payload.
pub fn encode_message(out: &mut BytesMut, consumer_id: u64, m: &StreamMessage) {
    out.put_u64_le(consumer_id);
    out.put_u32_le(m.partition);
    out.put_u64_le(m.offset);
    out.put_i64_le(m.timestamp);
    out.put_u32_le(m.delivery_count);
    let skipped = m.skipped.clone().unwrap_or(0..0);
    out.put_u64_le(skipped.start);
    out.put_u64_le(skipped.end);
    Writer::bytes(out, &m.subject);
    put_opt_bytes(out, m.key.as_ref());
    Writer::headers(out, Some(&m.headers));
    Writer::bytes(out, &m.payload);
}

/// Reads a `STREAM_MESSAGE` body: the consumer id and the record.
pub fn decode_message(body: Bytes) -> Result<(u64, Record), ProtocolError> {
    let mut r = Reader::new(body, "STREAM_MESSAGE");
    let consumer_id = r.u64()?;
    let partition = r.u32()?;
    let offset = r.u64()?;
    let timestamp = r.u64()? as i64;
    let delivery_count = r.u32()?;
    let skipped = r.u64()?..r.u64()?;
    let record = Record {
        partition,
        offset,
        timestamp,
        delivery_count,
        skipped: (!skipped.is_empty()).then_some(skipped),
        subject: r.str_bytes()?,
        key: opt_bytes(&mut r)?,
        headers: r.headers()?.map(|h| h.to_vec()).unwrap_or_default(),
        payload: r.bytes()?,
    };
    r.end()?;
    Ok((consumer_id, record))
}

/// `CONSUMER_CLOSED` body (stream and queue consumers alike): the client's consumer
/// id, then why it ended.
pub fn encode_consumer_closed(out: &mut BytesMut, consumer_id: u64, why: &str) {
    out.put_u64_le(consumer_id);
    Writer::str(out, why);
}

/// Reads a `CONSUMER_CLOSED` body: (consumer id, why).
pub fn decode_consumer_closed(body: Bytes) -> Result<(u64, String), ProtocolError> {
    let mut r = Reader::new(body, "CONSUMER_CLOSED");
    let out = (r.u64()?, r.string()?);
    r.end()?;
    Ok(out)
}

/// `STREAM_ACK` body: consumer id, `u32` count, then (partition `u32`, offset `u64`).
pub fn encode_ack(out: &mut BytesMut, consumer_id: u64, positions: &[(u32, u64)]) {
    out.put_u64_le(consumer_id);
    out.put_u32_le(positions.len() as u32);
    for &(partition, offset) in positions {
        out.put_u32_le(partition);
        out.put_u64_le(offset);
    }
}

/// Reads a `STREAM_ACK` body.
pub fn decode_ack(body: Bytes) -> Result<(u64, Vec<(u32, u64)>), ProtocolError> {
    let mut r = Reader::new(body, "STREAM_ACK");
    let consumer_id = r.u64()?;
    let n = r.count(12, ACK_BATCH_MAX)?;
    let positions = (0..n)
        .map(|_| Ok((r.u32()?, r.u64()?)))
        .collect::<Result<_, ProtocolError>>()?;
    r.end()?;
    Ok((consumer_id, positions))
}

/// `STREAM_NAK` body: consumer id, partition, offset, redelivery delay in ms.
pub fn encode_nak(
    out: &mut BytesMut,
    consumer_id: u64,
    partition: u32,
    offset: u64,
    delay_ms: u32,
) {
    out.put_u64_le(consumer_id);
    out.put_u32_le(partition);
    out.put_u64_le(offset);
    out.put_u32_le(delay_ms);
}

/// Reads a `STREAM_NAK` body: (consumer id, partition, offset, delay ms).
pub fn decode_nak(body: Bytes) -> Result<(u64, u32, u64, u32), ProtocolError> {
    let mut r = Reader::new(body, "STREAM_NAK");
    let out = (r.u64()?, r.u32()?, r.u64()?, r.u32()?);
    r.end()?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #[test]
        fn publish_batches_roundtrip(
            batch in proptest::collection::vec(
                ("[a-z]{1,8}(\\.[a-z0-9]{1,8}){0,3}",
                 proptest::option::of(proptest::collection::vec(any::<u8>(), 0..16)),
                 proptest::collection::vec(any::<u8>(), 0..200),
                 0usize..3),
                0..16)
        ) {
            let records: Vec<Publish> = batch
                .into_iter()
                .map(|(subject, key, payload, headers)| Publish {
                    subject,
                    key: key.map(Bytes::from),
                    headers: (0..headers)
                        .map(|i| (Bytes::from(format!("h{i}")), Bytes::from(vec![i as u8; i])))
                        .collect(),
                    payload: Bytes::from(payload),
                })
                .collect();
            let mut out = BytesMut::new();
            encode_publish(&mut out, &records);
            prop_assert_eq!(decode_publish(out.freeze()).expect("decodes"), records);
        }

        #[test]
        fn decoders_never_panic_on_arbitrary_bytes(
            body in proptest::collection::vec(any::<u8>(), 0..256)
        ) {
            let body = Bytes::from(body);
            let _ = decode_publish(body.clone());
            let _ = decode_publish_reply(body.clone());
            let _ = decode_message(body.clone());
            let _ = decode_ack(body.clone());
            let _ = Attach::decode(body.clone(), false);
            let _ = decode_stream_info(body);
        }
    }

    #[test]
    fn publish_replies_roundtrip() {
        let outcomes = vec![
            PublishOutcome::Stored {
                stream: "orders".into(),
                partition: 3,
                offset: 99,
                duplicate: true,
            },
            PublishOutcome::Failed {
                code: ErrorCode::Refused,
                message: "record too large".into(),
            },
        ];
        let mut out = BytesMut::new();
        encode_publish_reply(&mut out, &outcomes);
        assert_eq!(decode_publish_reply(out.freeze()), Ok(outcomes));
    }

    #[test]
    fn acks_roundtrip() {
        let mut out = BytesMut::new();
        encode_ack(&mut out, 5, &[(0, 1), (2, 3)]);
        assert_eq!(decode_ack(out.freeze()), Ok((5, vec![(0, 1), (2, 3)])));
    }
}
