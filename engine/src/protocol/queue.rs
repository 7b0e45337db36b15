//! Exchanges and queues frames: declarations, bindings, publish batches with their
//! confirms, consumers with prefetch, pushed `QUEUE_MESSAGE`s, acks and nacks.
//!
//! Owns: their bodies. Exchange and queue definitions travel as the byte strings
//! `ExchangeConfig::encode` / `QueueConfig::encode` write (the metadata store's
//! encoding, specified in `docs/storage.md`). Message properties have a wire form of
//! their own (`encode_properties`): the stored form has no persistence flag.

use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};

use super::error::{ErrorCode, ProtocolError};
use super::wire::{Reader, Writer};
use crate::queue::{
    Death, DeathReason, Delivery, ExchangeConfig, Message, Properties, QueueConfig, QueueInfo,
};

/// The most messages one `QUEUE_PUBLISH` frame carries.
pub const PUBLISH_BATCH_MAX: usize = 65536;
/// The most deaths (dead-letter history entries) a message carries on the wire.
pub const DEATHS_MAX: usize = 1024;

/// A message with the exchange and routing key it is published with.
pub type Routed = (String, String, Message);

/// Reads a body that is one definition byte string, decoded by `decode`.
pub fn decode_definition<T>(
    body: Bytes,
    op: &'static str,
    decode: impl FnOnce(&[u8]) -> Result<T, crate::storage::meta_value::DecodeError>,
) -> Result<T, ProtocolError> {
    let mut r = Reader::new(body, op);
    let raw = r.bytes()?;
    r.end()?;
    decode(&raw).map_err(|_| r.malformed("bad definition"))
}

/// `EXCHANGE_DECLARE` body.
pub fn encode_exchange(out: &mut BytesMut, config: &ExchangeConfig) {
    Writer::bytes(out, &config.encode());
}

/// `QUEUE_DECLARE` body.
pub fn encode_queue(out: &mut BytesMut, config: &QueueConfig) {
    Writer::bytes(out, &config.encode());
}

/// `QUEUE_DECLARE` / `QUEUE_INFO` reply: name, ready messages, unacked, consumers.
pub fn encode_queue_info(out: &mut BytesMut, info: &QueueInfo) {
    Writer::str(out, &info.name);
    out.put_u64_le(info.messages);
    out.put_u64_le(info.unacked as u64);
    out.put_u64_le(info.consumers as u64);
}

/// Reads a `QUEUE_DECLARE` / `QUEUE_INFO` reply.
pub fn decode_queue_info(body: Bytes) -> Result<QueueInfo, ProtocolError> {
    let mut r = Reader::new(body, "QUEUE_INFO reply");
    let name = r.string()?;
    let messages = r.u64()?;
    let unacked = usize::try_from(r.u64()?).map_err(|_| r.malformed("unacked"))?;
    let consumers = usize::try_from(r.u64()?).map_err(|_| r.malformed("consumers"))?;
    r.end()?;
    Ok(QueueInfo {
        name,
        messages,
        unacked,
        consumers,
    })
}

/// The most definitions one list reply carries (more are cut; lists are for people).
pub const LIST_DEFINITIONS_MAX: usize = 100_000;

/// `EXCHANGE_LIST` / `QUEUE_LIST` reply: `u32` count, then each definition as a `bytes`
/// (`ExchangeConfig::encode` / `QueueConfig::encode`).
pub fn encode_definitions(out: &mut BytesMut, definitions: impl ExactSizeIterator<Item = Vec<u8>>) {
    let n = definitions.len().min(LIST_DEFINITIONS_MAX);
    out.put_u32_le(n as u32);
    for definition in definitions.take(n) {
        Writer::bytes(out, &definition);
    }
}

/// Reads an `EXCHANGE_LIST` / `QUEUE_LIST` reply, each definition with `decode`.
pub fn decode_definitions<T>(
    body: Bytes,
    op: &'static str,
    decode: impl Fn(&[u8]) -> Result<T, crate::storage::meta_value::DecodeError>,
) -> Result<Vec<T>, ProtocolError> {
    let mut r = Reader::new(body, op);
    let n = r.count(4, LIST_DEFINITIONS_MAX)?;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let raw = r.bytes()?;
        out.push(decode(&raw).map_err(|_| r.malformed("bad definition"))?);
    }
    r.end()?;
    Ok(out)
}

/// `EXCHANGE_DELETE` / `QUEUE_DELETE` / `QUEUE_PURGE` / `QUEUE_INFO` body: a name and
/// two flags (`if_unused`, `if_empty`; ignored by the ops without them).
pub fn encode_target(out: &mut BytesMut, name: &str, if_unused: bool, if_empty: bool) {
    Writer::str(out, name);
    Writer::bool(out, if_unused);
    Writer::bool(out, if_empty);
}

/// Reads what `encode_target` wrote.
pub fn decode_target(body: Bytes, op: &'static str) -> Result<(String, bool, bool), ProtocolError> {
    let mut r = Reader::new(body, op);
    let out = (r.string()?, r.bool()?, r.bool()?);
    r.end()?;
    Ok(out)
}

/// A binding: `QUEUE_BIND`, `QUEUE_UNBIND` (destination a queue) and `EXCHANGE_BIND`
/// (destination an exchange).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bind {
    /// The queue or exchange messages go to.
    pub destination: String,
    /// The exchange they come from.
    pub source: String,
    /// The binding key.
    pub routing_key: String,
    /// Arguments (`x-match` and the values for headers exchanges).
    pub arguments: Vec<(Bytes, Bytes)>,
}

impl Bind {
    /// Appends the body.
    pub fn encode(&self, out: &mut BytesMut) {
        Writer::str(out, &self.destination);
        Writer::str(out, &self.source);
        Writer::str(out, &self.routing_key);
        Writer::headers(out, Some(&self.arguments));
    }

    /// Reads a body.
    pub fn decode(body: Bytes, op: &'static str) -> Result<Self, ProtocolError> {
        let mut r = Reader::new(body, op);
        let out = Self {
            destination: r.string()?,
            source: r.string()?,
            routing_key: r.string()?,
            arguments: r.headers()?.map(|h| h.to_vec()).unwrap_or_default(),
        };
        r.end()?;
        Ok(out)
    }
}

/// Message properties on the wire: priority `u8`, expiration ms `u64` (`u64::MAX` =
/// none), persistent `bool`, headers, then a `u16` count of deaths, each queue, reason
/// `u8` (0 rejected, 1 expired, 2 max-length), count, time ms, exchange, and a `u16`
/// count of routing keys.
pub fn encode_properties(out: &mut BytesMut, props: &Properties) {
    out.put_u8(props.priority);
    let expiration = props.expiration.map_or(u64::MAX, |d| {
        u64::try_from(d.as_millis()).unwrap_or(u64::MAX - 1)
    });
    out.put_u64_le(expiration);
    Writer::bool(out, props.persistent);
    Writer::headers(out, Some(&props.headers));
    let deaths = &props.deaths[..props.deaths.len().min(DEATHS_MAX)];
    out.put_u16_le(deaths.len() as u16);
    for death in deaths {
        Writer::str(out, &death.queue);
        out.put_u8(match death.reason {
            DeathReason::Rejected => 0,
            DeathReason::Expired => 1,
            DeathReason::MaxLen => 2,
        });
        out.put_u64_le(death.count);
        out.put_u64_le(death.time_ms);
        Writer::str(out, &death.exchange);
        let keys = &death.routing_keys[..death.routing_keys.len().min(DEATHS_MAX)];
        out.put_u16_le(keys.len() as u16);
        for key in keys {
            Writer::str(out, key);
        }
    }
}

/// Reads what `encode_properties` wrote.
pub fn decode_properties(r: &mut Reader) -> Result<Properties, ProtocolError> {
    let priority = r.u8()?;
    let expiration = match r.u64()? {
        u64::MAX => None,
        ms => Some(Duration::from_millis(ms)),
    };
    let persistent = r.bool()?;
    let headers = r.headers()?.map(|h| h.to_vec()).unwrap_or_default();
    let n = usize::from(r.u16()?);
    // The smallest death: queue (4), reason (1), count (8), time (8), exchange (4),
    // key count (2).
    if n > DEATHS_MAX || n * 27 > r.remaining() {
        return Err(r.malformed("death count over its bound"));
    }
    let mut deaths = Vec::with_capacity(n);
    for _ in 0..n {
        let queue = r.string()?;
        let reason = match r.u8()? {
            0 => DeathReason::Rejected,
            1 => DeathReason::Expired,
            2 => DeathReason::MaxLen,
            _ => return Err(r.malformed("unknown death reason")),
        };
        let (count, time_ms, exchange) = (r.u64()?, r.u64()?, r.string()?);
        let keys = usize::from(r.u16()?);
        if keys > DEATHS_MAX || keys * 4 > r.remaining() {
            return Err(r.malformed("routing key count over its bound"));
        }
        let routing_keys = (0..keys).map(|_| r.string()).collect::<Result<_, _>>()?;
        deaths.push(Death {
            queue,
            reason,
            count,
            time_ms,
            exchange,
            routing_keys,
        });
    }
    Ok(Properties {
        headers,
        priority,
        expiration,
        persistent,
        deaths,
    })
}

/// `QUEUE_PUBLISH` body: mandatory `bool`, `u32` count, then per message exchange,
/// routing key, properties, payload.
pub fn encode_publish(out: &mut BytesMut, mandatory: bool, messages: &[Routed]) {
    Writer::bool(out, mandatory);
    out.put_u32_le(messages.len() as u32);
    for (exchange, key, message) in messages {
        Writer::str(out, exchange);
        Writer::str(out, key);
        encode_properties(out, &message.properties);
        Writer::bytes(out, &message.payload);
    }
}

/// Reads a `QUEUE_PUBLISH` body: (mandatory, messages).
pub fn decode_publish(body: Bytes) -> Result<(bool, Vec<Routed>), ProtocolError> {
    let mut r = Reader::new(body, "QUEUE_PUBLISH");
    let mandatory = r.bool()?;
    let n = r.count(4 + 4 + 12 + 4, PUBLISH_BATCH_MAX)?;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let exchange = r.string()?;
        let key = r.string()?;
        let properties = decode_properties(&mut r)?;
        let payload = r.bytes()?;
        out.push((
            exchange,
            key,
            Message {
                properties,
                payload,
            },
        ));
    }
    r.end()?;
    Ok((mandatory, out))
}

/// One message's confirm in a `QUEUE_PUBLISH` reply: the queues it reached, or why it
/// was refused.
pub type Confirmed = Result<u32, (ErrorCode, String)>;

/// `QUEUE_PUBLISH` reply: `u32` count, then per message a status (`u16`: 0 confirmed,
/// else an error code) and either the number of queues reached (`u32`) or a message.
pub fn encode_confirms(out: &mut BytesMut, confirms: &[Confirmed]) {
    out.put_u32_le(confirms.len() as u32);
    for confirm in confirms {
        match confirm {
            Ok(queues) => {
                out.put_u16_le(0);
                out.put_u32_le(*queues);
            }
            Err((code, message)) => {
                out.put_u16_le(*code as u16);
                Writer::str(out, message);
            }
        }
    }
}

/// Reads a `QUEUE_PUBLISH` reply.
pub fn decode_confirms(body: Bytes) -> Result<Vec<Confirmed>, ProtocolError> {
    let mut r = Reader::new(body, "QUEUE_PUBLISH reply");
    let n = r.count(6, PUBLISH_BATCH_MAX)?;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(match r.u16()? {
            0 => Ok(r.u32()?),
            code => Err((ErrorCode::from_u16(code), r.string()?)),
        });
    }
    r.end()?;
    Ok(out)
}

/// `QUEUE_CONSUME` body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Consume {
    /// The client's id for this consumer on its connection; pushed messages carry it.
    pub consumer_id: u64,
    /// The queue.
    pub queue: String,
    /// Unacknowledged deliveries at most (0: no limit).
    pub prefetch: u32,
    /// Deliveries count as acknowledged when sent.
    pub no_ack: bool,
}

impl Consume {
    /// Appends the body.
    pub fn encode(&self, out: &mut BytesMut) {
        out.put_u64_le(self.consumer_id);
        Writer::str(out, &self.queue);
        out.put_u32_le(self.prefetch);
        Writer::bool(out, self.no_ack);
    }

    /// Reads a body.
    pub fn decode(body: Bytes) -> Result<Self, ProtocolError> {
        let mut r = Reader::new(body, "QUEUE_CONSUME");
        let out = Self {
            consumer_id: r.u64()?,
            queue: r.string()?,
            prefetch: r.u32()?,
            no_ack: r.bool()?,
        };
        r.end()?;
        Ok(out)
    }
}

/// A queue delivery as a consumer receives it (the body of `QUEUE_MESSAGE` after the
/// consumer id).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueMessage {
    /// For `ack` and `nack`.
    pub delivery_tag: u64,
    /// It may have been delivered before.
    pub redelivered: bool,
    /// The queue.
    pub queue: String,
    /// The exchange it was published to.
    pub exchange: String,
    /// Its routing key.
    pub routing_key: String,
    /// Its properties.
    pub properties: Properties,
    /// The payload.
    pub payload: Bytes,
}

/// `QUEUE_MESSAGE` body: consumer id, delivery tag, redelivered, queue, exchange,
/// routing key, properties, payload.
pub fn encode_delivery(out: &mut BytesMut, consumer_id: u64, d: &Delivery) {
    out.put_u64_le(consumer_id);
    out.put_u64_le(d.delivery_tag);
    Writer::bool(out, d.redelivered);
    Writer::str(out, &d.queue);
    Writer::str(out, &d.exchange);
    Writer::str(out, &d.routing_key);
    encode_properties(out, &d.properties);
    Writer::bytes(out, &d.payload);
}

/// Reads a `QUEUE_MESSAGE` body: the consumer id and the delivery.
pub fn decode_delivery(body: Bytes) -> Result<(u64, QueueMessage), ProtocolError> {
    let mut r = Reader::new(body, "QUEUE_MESSAGE");
    let consumer_id = r.u64()?;
    let out = QueueMessage {
        delivery_tag: r.u64()?,
        redelivered: r.bool()?,
        queue: r.string()?,
        exchange: r.string()?,
        routing_key: r.string()?,
        properties: decode_properties(&mut r)?,
        payload: r.bytes()?,
    };
    r.end()?;
    Ok((consumer_id, out))
}

/// `QUEUE_ACK` / `QUEUE_NACK` body: consumer id, delivery tag, multiple, requeue
/// (ignored by `QUEUE_ACK`).
pub fn encode_answer(
    out: &mut BytesMut,
    consumer_id: u64,
    tag: u64,
    multiple: bool,
    requeue: bool,
) {
    out.put_u64_le(consumer_id);
    out.put_u64_le(tag);
    Writer::bool(out, multiple);
    Writer::bool(out, requeue);
}

/// Reads what `encode_answer` wrote: (consumer id, tag, multiple, requeue).
pub fn decode_answer(
    body: Bytes,
    op: &'static str,
) -> Result<(u64, u64, bool, bool), ProtocolError> {
    let mut r = Reader::new(body, op);
    let out = (r.u64()?, r.u64()?, r.bool()?, r.bool()?);
    r.end()?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn props(
        priority: u8,
        ttl: Option<u64>,
        persistent: bool,
        headers: usize,
        deaths: usize,
    ) -> Properties {
        Properties {
            headers: (0..headers)
                .map(|i| (Bytes::from(format!("h{i}")), Bytes::from(vec![i as u8; i])))
                .collect(),
            priority,
            expiration: ttl.map(Duration::from_millis),
            persistent,
            deaths: (0..deaths)
                .map(|i| Death {
                    queue: format!("q{i}"),
                    reason: DeathReason::Expired,
                    count: i as u64,
                    time_ms: 7,
                    exchange: "x".into(),
                    routing_keys: vec!["a.b".into(); i],
                })
                .collect(),
        }
    }

    proptest! {
        #[test]
        fn publish_batches_roundtrip(
            batch in proptest::collection::vec(
                ("[a-z]{0,8}", "[a-z.]{0,12}", any::<u8>(),
                 proptest::option::of(0u64..1 << 40), any::<bool>(), 0usize..3, 0usize..3,
                 proptest::collection::vec(any::<u8>(), 0..100)),
                0..12),
            mandatory in any::<bool>(),
        ) {
            let messages: Vec<(String, String, Message)> = batch
                .into_iter()
                .map(|(x, k, p, ttl, persistent, h, d, payload)| {
                    (x, k, Message { properties: props(p, ttl, persistent, h, d), payload: Bytes::from(payload) })
                })
                .collect();
            let mut out = BytesMut::new();
            encode_publish(&mut out, mandatory, &messages);
            prop_assert_eq!(decode_publish(out.freeze()).expect("decodes"), (mandatory, messages));
        }

        #[test]
        fn decoders_never_panic_on_arbitrary_bytes(
            body in proptest::collection::vec(any::<u8>(), 0..256)
        ) {
            let body = Bytes::from(body);
            let _ = decode_publish(body.clone());
            let _ = decode_confirms(body.clone());
            let _ = decode_delivery(body.clone());
            let _ = Bind::decode(body.clone(), "test");
            let _ = Consume::decode(body);
        }
    }

    #[test]
    fn the_smallest_deaths_decode() {
        // Three deaths with empty strings and no routing keys (27 bytes each), then an
        // empty payload: the bound on the death count must not refuse them.
        let mut p = props(0, None, false, 0, 0);
        p.deaths = (0..3)
            .map(|_| Death {
                queue: String::new(),
                reason: DeathReason::Rejected,
                count: 1,
                time_ms: 2,
                exchange: String::new(),
                routing_keys: vec![],
            })
            .collect();
        let messages = vec![(
            String::new(),
            String::new(),
            Message {
                properties: p,
                payload: Bytes::new(),
            },
        )];
        let mut out = BytesMut::new();
        encode_publish(&mut out, false, &messages);
        assert_eq!(decode_publish(out.freeze()), Ok((false, messages)));
    }

    #[test]
    fn confirms_roundtrip() {
        let confirms = vec![Ok(2), Err((ErrorCode::Unroutable, "no route".to_owned()))];
        let mut out = BytesMut::new();
        encode_confirms(&mut out, &confirms);
        assert_eq!(decode_confirms(out.freeze()), Ok(confirms));
    }
}
