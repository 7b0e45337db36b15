//! Exchange and queue definitions: arguments, defaults, limits, checks, and how durable
//! ones are written to the metadata store.
//!
//! Owns: what a valid exchange or queue declaration is (names, kinds, arguments) and
//! when two declarations are "the same" (declare is idempotent only then). Never:
//! trusts stored bytes (decoding checks every length first).

use std::time::Duration;

use super::error::QueueError;
use crate::routing::ExchangeKind;
use crate::storage::meta_value::{DecodeError, ValueReader, ValueWriter};

/// The longest exchange or queue name, in bytes (AMQP's short string).
pub const NAME_BYTES_MAX: usize = 255;
/// The highest `max_priority` (AMQP's octet); 10 or less is recommended: each level
/// is a list the dispatcher looks at.
pub const PRIORITY_LIMIT: u8 = 255;

const ENCODING_VERSION: u8 = 1;

/// An exchange.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExchangeConfig {
    /// 1 to 255 bytes of printable characters; not starting with `amq.` (reserved).
    pub name: String,
    /// How it routes.
    pub kind: ExchangeKind,
    /// Survives a restart (with its bindings to durable queues and exchanges).
    pub durable: bool,
}

impl ExchangeConfig {
    /// A durable exchange.
    pub fn new(name: &str, kind: ExchangeKind) -> Self {
        Self {
            name: name.to_owned(),
            kind,
            durable: true,
        }
    }

    /// Checks the name.
    pub fn validate(&self) -> Result<(), QueueError> {
        validate_name("exchange name", &self.name)?;
        if self.name.starts_with("amq.") {
            return Err(QueueError::invalid(
                "exchange name",
                "names starting with \"amq.\" are reserved",
            ));
        }
        Ok(())
    }

    /// The definition as stored.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = ValueWriter::new(ENCODING_VERSION);
        out.str(&self.name);
        out.u8(kind_tag(self.kind));
        out.u8(u8::from(self.durable));
        out.finish()
    }

    /// Reads a definition written by `encode`.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut d = ValueReader::new(bytes, ENCODING_VERSION)?;
        let config = Self {
            name: d.string()?,
            kind: kind_of(d.u8()?)?,
            durable: d.flag()?,
        };
        d.end()?;
        Ok(config)
    }
}

fn kind_tag(kind: ExchangeKind) -> u8 {
    match kind {
        ExchangeKind::Direct => 0,
        ExchangeKind::Fanout => 1,
        ExchangeKind::Topic => 2,
        ExchangeKind::Headers => 3,
    }
}

fn kind_of(tag: u8) -> Result<ExchangeKind, DecodeError> {
    Ok(match tag {
        0 => ExchangeKind::Direct,
        1 => ExchangeKind::Fanout,
        2 => ExchangeKind::Topic,
        3 => ExchangeKind::Headers,
        _ => return Err(DecodeError::new("exchange kind")),
    })
}

/// What happens to a publish that would take a queue past `max_length` or
/// `max_length_bytes`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Overflow {
    /// The oldest ready messages are dropped (dead-lettered, reason `maxlen`, if the
    /// queue has a dead-letter exchange) to make room.
    #[default]
    DropHead,
    /// The new message is refused: the publisher gets `QueueError::Refused`.
    RejectPublish,
}

/// A queue's arguments (RabbitMQ's `x-` arguments).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct QueueArgs {
    /// `x-message-ttl`: a message expires this long after it was enqueued.
    pub message_ttl: Option<Duration>,
    /// `x-expires`: the queue is deleted once it had no consumer for this long.
    pub expires: Option<Duration>,
    /// `x-max-length`: ready messages at most.
    pub max_length: Option<u64>,
    /// `x-max-length-bytes`: bytes of ready message payloads at most.
    pub max_length_bytes: Option<u64>,
    /// `x-overflow`.
    pub overflow: Overflow,
    /// `x-dead-letter-exchange`: where rejected, expired and dropped messages go.
    pub dead_letter_exchange: Option<String>,
    /// `x-dead-letter-routing-key`: their routing key there (default: their own).
    pub dead_letter_routing_key: Option<String>,
    /// `x-max-priority`: 1 to 255 turns priorities on (higher first, FIFO within one).
    pub max_priority: Option<u8>,
}

/// A queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueConfig {
    /// 1 to 255 bytes of printable characters (empty: a name is generated).
    pub name: String,
    /// Survives a restart, with its persistent messages.
    pub durable: bool,
    /// Only the connection that declared it may use it; deleted when it closes.
    pub exclusive: bool,
    /// Deleted when its last consumer is cancelled (after having had one).
    pub auto_delete: bool,
    /// Arguments.
    pub args: QueueArgs,
}

impl QueueConfig {
    /// A durable queue with no arguments.
    pub fn new(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            durable: true,
            exclusive: false,
            auto_delete: false,
            args: QueueArgs::default(),
        }
    }

    /// Checks the name and arguments.
    pub fn validate(&self) -> Result<(), QueueError> {
        validate_name("queue name", &self.name)?;
        if self.args.max_priority == Some(0) {
            return Err(QueueError::invalid("x-max-priority", "0; 1 to 255"));
        }
        if self.args.expires.is_some_and(|e| e.is_zero()) {
            return Err(QueueError::invalid("x-expires", "0; at least 1 ms"));
        }
        if let Some(dlx) = &self.args.dead_letter_exchange {
            if !dlx.is_empty() {
                validate_name("x-dead-letter-exchange", dlx)?;
            }
        }
        Ok(())
    }

    /// The definition as stored.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = ValueWriter::new(ENCODING_VERSION);
        out.str(&self.name);
        out.u8(u8::from(self.durable));
        out.u8(u8::from(self.exclusive));
        out.u8(u8::from(self.auto_delete));
        let a = &self.args;
        out.opt_u64(a.message_ttl.map(ms));
        out.opt_u64(a.expires.map(ms));
        out.opt_u64(a.max_length);
        out.opt_u64(a.max_length_bytes);
        out.u8(match a.overflow {
            Overflow::DropHead => 0,
            Overflow::RejectPublish => 1,
        });
        out.opt_str(a.dead_letter_exchange.as_deref());
        out.opt_str(a.dead_letter_routing_key.as_deref());
        out.opt_u64(a.max_priority.map(u64::from));
        out.finish()
    }

    /// Reads a definition written by `encode`.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut d = ValueReader::new(bytes, ENCODING_VERSION)?;
        let (name, durable, exclusive, auto_delete) =
            (d.string()?, d.flag()?, d.flag()?, d.flag()?);
        let args = QueueArgs {
            message_ttl: d.opt_u64()?.map(Duration::from_millis),
            expires: d.opt_u64()?.map(Duration::from_millis),
            max_length: d.opt_u64()?,
            max_length_bytes: d.opt_u64()?,
            overflow: match d.u8()? {
                0 => Overflow::DropHead,
                1 => Overflow::RejectPublish,
                _ => return Err(DecodeError::new("overflow")),
            },
            dead_letter_exchange: d.opt_string()?,
            dead_letter_routing_key: d.opt_string()?,
            max_priority: d
                .opt_u64()?
                .map(|p| u8::try_from(p).map_err(|_| DecodeError::new("max priority")))
                .transpose()?,
        };
        d.end()?;
        Ok(Self {
            name,
            durable,
            exclusive,
            auto_delete,
            args,
        })
    }
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Checks an exchange or queue name: 1 to 255 bytes, no control characters.
pub fn validate_name(what: &'static str, name: &str) -> Result<(), QueueError> {
    if name.is_empty() || name.len() > NAME_BYTES_MAX {
        let why = format!("{} bytes; 1 to {NAME_BYTES_MAX}", name.len());
        return Err(QueueError::invalid(what, why));
    }
    if name.chars().any(char::is_control) {
        return Err(QueueError::invalid(
            what,
            format!("{name:?} holds a control character"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn queue_definitions_round_trip(
            name in "[a-z.]{1,20}", durable in any::<bool>(), ttl in proptest::option::of(0u64..1 << 40),
            max_len in proptest::option::of(any::<u64>()), reject in any::<bool>(),
            dlx in proptest::option::of("[a-z]{0,8}"), priority in proptest::option::of(1u8..=255),
        ) {
            let config = QueueConfig {
                name,
                durable,
                exclusive: !durable,
                auto_delete: reject,
                args: QueueArgs {
                    message_ttl: ttl.map(Duration::from_millis),
                    expires: ttl.map(|t| Duration::from_millis(t + 1)),
                    max_length: max_len,
                    max_length_bytes: max_len.map(|m| m / 2),
                    overflow: if reject { Overflow::RejectPublish } else { Overflow::DropHead },
                    dead_letter_exchange: dlx.clone(),
                    dead_letter_routing_key: dlx,
                    max_priority: priority,
                },
            };
            prop_assert_eq!(QueueConfig::decode(&config.encode()), Ok(config));
        }

        #[test]
        fn decoding_garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..128)) {
            let _ = QueueConfig::decode(&bytes);
            let _ = ExchangeConfig::decode(&bytes);
        }
    }

    #[test]
    fn exchanges_round_trip_and_amq_names_are_reserved() {
        for kind in [
            ExchangeKind::Direct,
            ExchangeKind::Fanout,
            ExchangeKind::Topic,
            ExchangeKind::Headers,
        ] {
            let config = ExchangeConfig::new("logs", kind);
            assert_eq!(ExchangeConfig::decode(&config.encode()), Ok(config));
        }
        assert!(ExchangeConfig::new("amq.direct", ExchangeKind::Direct)
            .validate()
            .is_err());
        assert!(QueueConfig::new("").validate().is_err());
    }
}
