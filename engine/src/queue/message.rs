//! What is published to an exchange (`Message`, `Properties`), what a consumer gets
//! (`Delivery`), and the death records dead-lettered messages carry.
//!
//! Owns: the message properties the broker acts on (priority, expiration, persistence,
//! death records) and their stored form in a durable queue's log. Never: copies a
//! payload (it is `Bytes`, shared by every queue a message reaches).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use crate::storage::meta_value::{DecodeError, ValueReader, ValueWriter};

/// Why a message was dead-lettered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeathReason {
    /// Rejected or nacked without requeue.
    Rejected,
    /// Its TTL (queue `message_ttl` or its own `expiration`) passed.
    Expired,
    /// Dropped from the head of a full queue (`max_length`, `drop-head`).
    MaxLen,
}

impl DeathReason {
    /// RabbitMQ's name for it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Rejected => "rejected",
            Self::Expired => "expired",
            Self::MaxLen => "maxlen",
        }
    }
}

/// One entry of a message's death history (RabbitMQ's `x-death`): the newest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Death {
    /// The queue it died in.
    pub queue: String,
    /// Why.
    pub reason: DeathReason,
    /// How many times it died in that queue for that reason.
    pub count: u64,
    /// When it last did (ms since the Unix epoch).
    pub time_ms: u64,
    /// The exchange it had been published to.
    pub exchange: String,
    /// The routing keys it had been published with.
    pub routing_keys: Vec<String>,
}

/// Message properties.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Properties {
    /// Application headers (also what a headers exchange matches).
    pub headers: Vec<(Bytes, Bytes)>,
    /// 0 (default) to 255; used by queues with `max_priority` (capped at it).
    pub priority: u8,
    /// Per-message TTL: the message expires this long after it is enqueued.
    pub expiration: Option<Duration>,
    /// Stored on disk in durable queues (AMQP delivery mode 2), confirmed after sync.
    pub persistent: bool,
    /// Death history, newest first (set by the broker when it dead-letters).
    pub deaths: Vec<Death>,
}

/// A message to publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Its properties.
    pub properties: Properties,
    /// The payload.
    pub payload: Bytes,
}

impl Message {
    /// A transient message with no properties.
    pub fn new(payload: impl Into<Bytes>) -> Self {
        Self {
            properties: Properties::default(),
            payload: payload.into(),
        }
    }

    /// A persistent message.
    pub fn persistent(payload: impl Into<Bytes>) -> Self {
        let mut message = Self::new(payload);
        message.properties.persistent = true;
        message
    }

    /// With priority `priority`.
    pub fn priority(mut self, priority: u8) -> Self {
        self.properties.priority = priority;
        self
    }

    /// With a per-message TTL.
    pub fn expiration(mut self, ttl: Duration) -> Self {
        self.properties.expiration = Some(ttl);
        self
    }

    /// With a header.
    pub fn header(mut self, name: impl Into<Bytes>, value: impl Into<Bytes>) -> Self {
        self.properties.headers.push((name.into(), value.into()));
        self
    }
}

/// A message delivered to a consumer.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// Identifies it on its consumer for `ack`, `nack` and `reject`; increasing.
    pub delivery_tag: u64,
    /// It may have been delivered before (requeued, or recovered after a restart).
    pub redelivered: bool,
    /// The queue it came from.
    pub queue: Arc<str>,
    /// The exchange it was published to.
    pub exchange: Arc<str>,
    /// Its routing key.
    pub routing_key: Arc<str>,
    /// Its properties.
    pub properties: Arc<Properties>,
    /// The payload.
    pub payload: Bytes,
}

impl Delivery {
    /// The value of the first header named `name`.
    pub fn header(&self, name: &[u8]) -> Option<&Bytes> {
        self.properties
            .headers
            .iter()
            .find(|(n, _)| n.as_ref() == name)
            .map(|(_, v)| v)
    }
}

const PROPS_VERSION: u8 = 1;

/// The stored form of a message's exchange, routing key and properties (the one header
/// of its log record; the payload is the record's value).
pub(crate) fn encode_props(exchange: &str, routing_key: &str, props: &Properties) -> Vec<u8> {
    let mut out = ValueWriter::new(PROPS_VERSION);
    out.str(exchange);
    out.str(routing_key);
    out.u8(props.priority);
    out.opt_u64(
        props
            .expiration
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
    );
    out.u64(props.headers.len() as u64);
    for (name, value) in &props.headers {
        out.bytes(name);
        out.bytes(value);
    }
    out.u64(props.deaths.len() as u64);
    for death in &props.deaths {
        out.str(&death.queue);
        out.u8(match death.reason {
            DeathReason::Rejected => 0,
            DeathReason::Expired => 1,
            DeathReason::MaxLen => 2,
        });
        out.u64(death.count);
        out.u64(death.time_ms);
        out.str(&death.exchange);
        out.u64(death.routing_keys.len() as u64);
        for key in &death.routing_keys {
            out.str(key);
        }
    }
    out.finish()
}

/// Bounds on stored lists, checked before anything is allocated for them.
pub(crate) const HEADERS_MAX: usize = crate::protocol::HEADERS_MAX;
pub(crate) const DEATHS_MAX: usize = 1024;

impl Properties {
    /// Refuses properties a durable queue could not read back.
    pub(crate) fn check(&self) -> Result<(), super::error::QueueError> {
        let too_many = |what: &'static str, n: usize, max: usize| {
            super::error::QueueError::invalid(what, format!("{n}; at most {max}"))
        };
        if self.headers.len() > HEADERS_MAX {
            return Err(too_many("headers", self.headers.len(), HEADERS_MAX));
        }
        if self.deaths.len() > DEATHS_MAX {
            return Err(too_many("deaths", self.deaths.len(), DEATHS_MAX));
        }
        match self
            .deaths
            .iter()
            .find(|d| d.routing_keys.len() > DEATHS_MAX)
        {
            Some(d) => Err(too_many(
                "death routing keys",
                d.routing_keys.len(),
                DEATHS_MAX,
            )),
            None => Ok(()),
        }
    }
}

/// Reads what `encode_props` wrote: (exchange, routing key, properties).
pub(crate) fn decode_props(bytes: &[u8]) -> Result<(String, String, Properties), DecodeError> {
    let mut d = ValueReader::new(bytes, PROPS_VERSION)?;
    let exchange = d.string()?;
    let routing_key = d.string()?;
    let mut props = Properties {
        priority: d.u8()?,
        expiration: d.opt_u64()?.map(Duration::from_millis),
        persistent: true,
        ..Properties::default()
    };
    for _ in 0..d.len(HEADERS_MAX)? {
        let (name, value) = (d.byte_string()?, d.byte_string()?);
        props.headers.push((name.into(), value.into()));
    }
    for _ in 0..d.len(DEATHS_MAX)? {
        let queue = d.string()?;
        let reason = match d.u8()? {
            0 => DeathReason::Rejected,
            1 => DeathReason::Expired,
            2 => DeathReason::MaxLen,
            _ => return Err(DecodeError::new("death reason")),
        };
        let (count, time_ms, exchange) = (d.u64()?, d.u64()?, d.string()?);
        let keys = (0..d.len(DEATHS_MAX)?)
            .map(|_| d.string())
            .collect::<Result<_, _>>()?;
        props.deaths.push(Death {
            queue,
            reason,
            count,
            time_ms,
            exchange,
            routing_keys: keys,
        });
    }
    d.end()?;
    Ok((exchange, routing_key, props))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_properties_round_trip_and_garbage_is_refused() {
        let props = Properties {
            headers: vec![(Bytes::from_static(b"a"), Bytes::from_static(b"\x00\xff"))],
            priority: 7,
            expiration: Some(Duration::from_millis(1500)),
            persistent: true,
            deaths: vec![Death {
                queue: "work".into(),
                reason: DeathReason::Rejected,
                count: 2,
                time_ms: 99,
                exchange: "ex".into(),
                routing_keys: vec!["k".into()],
            }],
        };
        let bytes = encode_props("ex", "k", &props);
        assert_eq!(decode_props(&bytes), Ok(("ex".into(), "k".into(), props)));
        for cut in 0..bytes.len() {
            assert!(decode_props(&bytes[..cut]).is_err());
        }
    }
}
