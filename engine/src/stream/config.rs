//! Stream and consumer definitions: what they are, their defaults and limits, how they
//! are checked, and how they are written to the metadata store.
//!
//! Owns: validation (every field bounded, with an error naming it) and the definition
//! encoding (`docs/storage.md`, "Catalog entries"). Never: trusts a length read from
//! the metadata store before checking it against the bytes left.

use std::time::Duration;

use super::error::StreamError;
use crate::routing::{validate_subject, Pattern, Syntax, Token};
pub use crate::storage::meta_value::DecodeError;
use crate::storage::meta_value::{ValueReader, ValueWriter};
use crate::storage::{Durability, Retention};

/// The longest stream or consumer name, in bytes.
pub const NAME_BYTES_MAX: usize = 64;
/// The most partitions a stream may have.
pub const PARTITIONS_MAX: u32 = 1024;
/// The most subject patterns a stream may capture.
pub const STREAM_SUBJECTS_MAX: usize = 256;
/// The largest `max_record_bytes` (a record is one batch of the log at most this big).
pub const RECORD_BYTES_LIMIT: usize = 8 << 20;
/// The longest deduplication window.
pub const DEDUP_WINDOW_MAX: Duration = Duration::from_secs(7 * 24 * 3600);
/// The most records a consumer may have delivered and not yet acknowledged (its
/// persisted position then holds at most 256 KiB of pending offsets).
pub const ACK_PENDING_LIMIT: usize = 32_768;

/// A stream: a named, partitioned, persistent log capturing the subjects it names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamConfig {
    /// `[A-Za-z0-9_-]`, 1 to `NAME_BYTES_MAX` bytes (it names a directory).
    pub name: String,
    /// Subject patterns (`*`, `>`) whose publishes this stream stores. At least one; no
    /// subject may be captured by two streams.
    pub subjects: Vec<String>,
    /// Partitions, 1 to `PARTITIONS_MAX`. Fixed at creation.
    pub partitions: u32,
    /// What each partition keeps (applied in whole segments).
    pub retention: Retention,
    /// When a publish is acknowledged. Fixed at creation.
    pub durability: Durability,
    /// The largest record (key, headers and payload). Default 1 MiB.
    pub max_record_bytes: usize,
    /// How long a `Msg-Id` is remembered to drop duplicates. Default 2 minutes; zero
    /// turns deduplication off.
    pub dedup_window: Duration,
    /// The stream that records exceeding a consumer's `max_deliver` are moved to.
    pub dead_letter: Option<String>,
    /// Each partition rolls to a new segment at this size. Default 64 MiB. Fixed at
    /// creation.
    pub segment_bytes_max: u64,
}

impl StreamConfig {
    /// A stream named `name` capturing `subjects`, with one partition and the defaults.
    pub fn new(name: &str, subjects: &[&str]) -> Self {
        Self {
            name: name.to_owned(),
            subjects: subjects.iter().map(|s| (*s).to_owned()).collect(),
            partitions: 1,
            retention: Retention::default(),
            durability: Durability::Always,
            max_record_bytes: 1 << 20,
            dedup_window: Duration::from_secs(120),
            dead_letter: None,
            segment_bytes_max: 64 << 20,
        }
    }

    /// Checks every field; returns the parsed subject patterns.
    pub fn validate(&self) -> Result<Vec<Pattern>, StreamError> {
        validate_name("stream name", &self.name)?;
        if self.subjects.is_empty() || self.subjects.len() > STREAM_SUBJECTS_MAX {
            let why = format!(
                "{} patterns; 1 to {STREAM_SUBJECTS_MAX}",
                self.subjects.len()
            );
            return Err(StreamError::invalid("subjects", why));
        }
        if !(1..=PARTITIONS_MAX).contains(&self.partitions) {
            let why = format!("{}; 1 to {PARTITIONS_MAX}", self.partitions);
            return Err(StreamError::invalid("partitions", why));
        }
        if !(1..=RECORD_BYTES_LIMIT).contains(&self.max_record_bytes) {
            let why = format!("{}; 1 to {RECORD_BYTES_LIMIT}", self.max_record_bytes);
            return Err(StreamError::invalid("max_record_bytes", why));
        }
        if self.dedup_window > DEDUP_WINDOW_MAX {
            let why = format!("{:?}; at most {DEDUP_WINDOW_MAX:?}", self.dedup_window);
            return Err(StreamError::invalid("dedup_window", why));
        }
        if self.segment_bytes_max < 4096 || self.segment_bytes_max > (1 << 30) {
            let why = format!("{}; 4 KiB to 1 GiB", self.segment_bytes_max);
            return Err(StreamError::invalid("segment_bytes_max", why));
        }
        if let Durability::Batch { max_delay, .. } = self.durability {
            if max_delay > Duration::from_secs(1) {
                let why = format!("batch delay {max_delay:?}; at most 1 s");
                return Err(StreamError::invalid("durability", why));
            }
        }
        if let Some(dead) = &self.dead_letter {
            validate_name("dead_letter", dead)?;
            if *dead == self.name {
                return Err(StreamError::invalid(
                    "dead_letter",
                    "a stream cannot be its own",
                ));
            }
        }
        let mut patterns: Vec<Pattern> = Vec::with_capacity(self.subjects.len());
        for text in &self.subjects {
            let pattern = Pattern::parse(text, Syntax::Subjects)?;
            if let Some(other) = patterns.iter().position(|p| patterns_overlap(p, &pattern)) {
                let why = format!("{text:?} overlaps {:?}", self.subjects[other]);
                return Err(StreamError::invalid("subjects", why));
            }
            patterns.push(pattern);
        }
        Ok(patterns)
    }

    /// Whether `other` differs only in what `Streams::update` may change (retention,
    /// record size, dedup window, dead-letter stream).
    pub(crate) fn same_shape(&self, other: &Self) -> bool {
        self.name == other.name
            && self.subjects == other.subjects
            && self.partitions == other.partitions
            && self.durability == other.durability
            && self.segment_bytes_max == other.segment_bytes_max
    }
}

/// Checks a stream or consumer name: `[A-Za-z0-9_-]`, 1 to `NAME_BYTES_MAX` bytes.
pub fn validate_name(what: &'static str, name: &str) -> Result<(), StreamError> {
    if name.is_empty() || name.len() > NAME_BYTES_MAX {
        let why = format!("{} bytes; 1 to {NAME_BYTES_MAX}", name.len());
        return Err(StreamError::invalid(what, why));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '_' || *c == '-'))
    {
        let why = format!("{name:?} holds {c:?}; only A-Z, a-z, 0-9, '_' and '-'");
        return Err(StreamError::invalid(what, why));
    }
    Ok(())
}

/// Whether some subject matches both `a` and `b` (`*` and `>` syntax).
pub fn patterns_overlap(a: &Pattern, b: &Pattern) -> bool {
    overlap(a.tokens(), b.tokens())
}

fn overlap(a: &[Token], b: &[Token]) -> bool {
    match (a.split_first(), b.split_first()) {
        (None, None) => true,
        (Some((Token::OneOrMore, _)), Some(_)) | (Some(_), Some((Token::OneOrMore, _))) => true,
        (Some((x, a_rest)), Some((y, b_rest))) => {
            let compatible = match (x, y) {
                (Token::Literal(x), Token::Literal(y)) => x == y,
                _ => true,
            };
            compatible && overlap(a_rest, b_rest)
        }
        _ => false,
    }
}

/// Where a new consumer starts reading, in every partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeliverPolicy {
    /// From the first retained record.
    #[default]
    All,
    /// Only records stored after the consumer is created.
    New,
    /// From this offset (or the first retained record, if later) in every partition.
    Offset(u64),
    /// From the first record whose timestamp (milliseconds since the Unix epoch) is at
    /// or after this.
    Time(i64),
}

/// Whether deliveries must be acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AckPolicy {
    /// A record counts as processed once the application takes it (at most once).
    None,
    /// A record is delivered again after `ack_wait` until it is acked (at least once).
    #[default]
    Explicit,
}

/// A consumer: a position in every partition of a stream, shared by the members of its
/// group (each partition is read by one member at a time).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerConfig {
    /// `Some`: durable, its definition and positions persisted, members join it by name.
    /// `None`: ephemeral, one member, forgotten when it is dropped.
    pub durable: Option<String>,
    /// Where it starts, when created.
    pub deliver: DeliverPolicy,
    /// Only records whose subject matches this pattern are delivered (the others are
    /// skipped and count as processed).
    pub filter: Option<String>,
    /// Acknowledgement policy.
    pub ack: AckPolicy,
    /// How long a delivery may stay unacknowledged before it is delivered again.
    /// Default 30 s.
    pub ack_wait: Duration,
    /// Deliveries of one record before it is moved to the stream's dead-letter stream
    /// (or dropped, without one) and never delivered again. `None`: no limit.
    pub max_deliver: Option<u32>,
    /// The most records delivered to a member and not yet acknowledged, in all its
    /// partitions together (under `AckPolicy::None`: not yet taken by the application).
    /// Also bounds the member's buffer. Default 1,000; 1 to `ACK_PENDING_LIMIT`.
    pub max_ack_pending: usize,
    /// A member that neither takes messages nor calls `heartbeat` for this long is
    /// removed from the group and its partitions given to the others. Default 10 s.
    pub heartbeat_timeout: Duration,
}

impl Default for ConsumerConfig {
    fn default() -> Self {
        Self {
            durable: None,
            deliver: DeliverPolicy::All,
            filter: None,
            ack: AckPolicy::Explicit,
            ack_wait: Duration::from_secs(30),
            max_deliver: None,
            max_ack_pending: 1000,
            heartbeat_timeout: Duration::from_secs(10),
        }
    }
}

impl ConsumerConfig {
    /// A durable consumer named `name`, with the defaults.
    pub fn durable(name: &str) -> Self {
        Self {
            durable: Some(name.to_owned()),
            ..Self::default()
        }
    }

    /// Checks every field; returns the parsed filter.
    pub fn validate(&self) -> Result<Option<Pattern>, StreamError> {
        if let Some(name) = &self.durable {
            validate_name("consumer name", name)?;
        }
        if !(1..=ACK_PENDING_LIMIT).contains(&self.max_ack_pending) {
            let why = format!("{}; 1 to {ACK_PENDING_LIMIT}", self.max_ack_pending);
            return Err(StreamError::invalid("max_ack_pending", why));
        }
        let year = Duration::from_secs(365 * 24 * 3600);
        if self.ack_wait < Duration::from_millis(1) || self.ack_wait > year {
            let why = format!("{:?}; 1 ms to a year", self.ack_wait);
            return Err(StreamError::invalid("ack_wait", why));
        }
        if self.heartbeat_timeout < Duration::from_millis(10) || self.heartbeat_timeout > year {
            let why = format!("{:?}; 10 ms to a year", self.heartbeat_timeout);
            return Err(StreamError::invalid("heartbeat_timeout", why));
        }
        if self.max_deliver == Some(0) {
            return Err(StreamError::invalid("max_deliver", "0; at least 1"));
        }
        self.filter
            .as_deref()
            .map(|f| Pattern::parse(f, Syntax::Subjects).map_err(StreamError::from))
            .transpose()
    }
}

/// Checks a subject to publish to a stream.
pub(crate) fn check_subject(subject: &str) -> Result<(), StreamError> {
    Ok(validate_subject(subject)?)
}

/// Definition encoding version this module writes and reads.
const ENCODING_VERSION: u8 = 1;

impl StreamConfig {
    /// The definition as stored in the metadata store.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = ValueWriter::new(ENCODING_VERSION);
        out.str(&self.name);
        out.u64(self.subjects.len() as u64);
        for s in &self.subjects {
            out.str(s);
        }
        out.u64(u64::from(self.partitions));
        out.opt_u64(self.retention.max_records);
        out.opt_u64(self.retention.max_bytes);
        out.opt_u64(self.retention.max_age.map(duration_ms));
        match self.durability {
            Durability::Always => out.u8(0),
            Durability::None => out.u8(1),
            Durability::Batch {
                max_delay,
                max_bytes,
            } => {
                out.u8(2);
                out.u64(duration_us(max_delay));
                out.u64(max_bytes as u64);
            }
        }
        out.u64(self.max_record_bytes as u64);
        out.u64(duration_ms(self.dedup_window));
        out.opt_str(self.dead_letter.as_deref());
        out.u64(self.segment_bytes_max);
        out.finish()
    }

    /// Reads a definition written by `encode` (not validated: call `validate`).
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut d = ValueReader::new(bytes, ENCODING_VERSION)?;
        let name = d.string()?;
        let count = d.len(STREAM_SUBJECTS_MAX)?;
        let subjects = (0..count).map(|_| d.string()).collect::<Result<_, _>>()?;
        let partitions = u32::try_from(d.u64()?).map_err(|_| DecodeError::new("partitions"))?;
        let retention = Retention {
            max_records: d.opt_u64()?,
            max_bytes: d.opt_u64()?,
            max_age: d.opt_u64()?.map(Duration::from_millis),
        };
        let durability = match d.u8()? {
            0 => Durability::Always,
            1 => Durability::None,
            2 => Durability::Batch {
                max_delay: Duration::from_micros(d.u64()?),
                max_bytes: d.usize()?,
            },
            _ => return Err(DecodeError::new("durability")),
        };
        let config = Self {
            name,
            subjects,
            partitions,
            retention,
            durability,
            max_record_bytes: d.usize()?,
            dedup_window: Duration::from_millis(d.u64()?),
            dead_letter: d.opt_string()?,
            segment_bytes_max: d.u64()?,
        };
        d.end()?;
        Ok(config)
    }
}

impl ConsumerConfig {
    /// The definition as stored in the metadata store.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = ValueWriter::new(ENCODING_VERSION);
        out.opt_str(self.durable.as_deref());
        match self.deliver {
            DeliverPolicy::All => out.u8(0),
            DeliverPolicy::New => out.u8(1),
            DeliverPolicy::Offset(o) => {
                out.u8(2);
                out.u64(o);
            }
            DeliverPolicy::Time(t) => {
                out.u8(3);
                out.u64(t as u64);
            }
        }
        out.opt_str(self.filter.as_deref());
        out.u8(match self.ack {
            AckPolicy::None => 0,
            AckPolicy::Explicit => 1,
        });
        out.u64(duration_ms(self.ack_wait));
        out.opt_u64(self.max_deliver.map(u64::from));
        out.u64(self.max_ack_pending as u64);
        out.u64(duration_ms(self.heartbeat_timeout));
        out.finish()
    }

    /// Reads a definition written by `encode` (not validated: call `validate`).
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut d = ValueReader::new(bytes, ENCODING_VERSION)?;
        let durable = d.opt_string()?;
        let deliver = match d.u8()? {
            0 => DeliverPolicy::All,
            1 => DeliverPolicy::New,
            2 => DeliverPolicy::Offset(d.u64()?),
            3 => DeliverPolicy::Time(d.u64()? as i64),
            _ => return Err(DecodeError::new("deliver policy")),
        };
        let filter = d.opt_string()?;
        let ack = match d.u8()? {
            0 => AckPolicy::None,
            1 => AckPolicy::Explicit,
            _ => return Err(DecodeError::new("ack policy")),
        };
        let config = Self {
            durable,
            deliver,
            filter,
            ack,
            ack_wait: Duration::from_millis(d.u64()?),
            max_deliver: d
                .opt_u64()?
                .map(|n| u32::try_from(n).map_err(|_| DecodeError::new("max_deliver")))
                .transpose()?,
            max_ack_pending: d.usize()?,
            heartbeat_timeout: Duration::from_millis(d.u64()?),
        };
        d.end()?;
        Ok(config)
    }
}

fn duration_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn duration_us(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn p(text: &str) -> Pattern {
        Pattern::parse(text, Syntax::Subjects).expect("pattern")
    }

    #[test]
    fn overlap_follows_the_wildcards() {
        let cases = [
            ("orders.*", "orders.new", true),
            ("orders.>", "orders.eu.new", true),
            ("orders.>", "orders", false),
            ("orders.*", "orders.eu.new", false),
            ("*.new", "orders.*", true),
            ("a.b", "a.c", false),
            (">", "x.y.z", true),
            ("a.*.c", "a.b.>", true),
            ("a.*", "a.*.c", false),
        ];
        for (a, b, want) in cases {
            assert_eq!(patterns_overlap(&p(a), &p(b)), want, "{a} vs {b}");
            assert_eq!(patterns_overlap(&p(b), &p(a)), want, "{b} vs {a}");
        }
    }

    #[test]
    fn validation_names_the_field() {
        let mut c = StreamConfig::new("orders", &["orders.>"]);
        assert!(c.validate().is_ok());
        c.partitions = 0;
        assert!(matches!(
            c.validate(),
            Err(StreamError::Invalid {
                what: "partitions",
                ..
            })
        ));
        let mut c = StreamConfig::new("bad name", &["x"]);
        assert!(matches!(
            c.validate(),
            Err(StreamError::Invalid {
                what: "stream name",
                ..
            })
        ));
        c.name = "ok".into();
        c.subjects = vec!["a.*".into(), "a.b".into()];
        assert!(matches!(
            c.validate(),
            Err(StreamError::Invalid {
                what: "subjects",
                ..
            })
        ));
        let c = ConsumerConfig {
            max_ack_pending: 0,
            ..ConsumerConfig::default()
        };
        assert!(matches!(
            c.validate(),
            Err(StreamError::Invalid {
                what: "max_ack_pending",
                ..
            })
        ));
    }

    /// The fuzz seeds were written by hand from the tables in docs/storage.md: they
    /// decode to what the tables say, so the documented encoding is the real one.
    #[test]
    fn the_documented_encoding_is_the_one_read() {
        let stream = include_bytes!("../../../fuzz/seeds/stream_definition_decode/stream");
        let config = StreamConfig::decode(stream).expect("documented stream encoding");
        assert_eq!(
            config.subjects,
            vec!["orders.>".to_owned(), "billing.*".to_owned()]
        );
        assert_eq!(config.partitions, 3);
        assert_eq!(config.retention.max_age, Some(Duration::from_secs(60)));
        let batch = Durability::Batch {
            max_delay: Duration::from_millis(2),
            max_bytes: 1 << 20,
        };
        assert_eq!(config.durability, batch);
        assert_eq!(config.dead_letter.as_deref(), Some("dlq"));
        assert_eq!(config.encode(), stream.to_vec());
        let consumer = include_bytes!("../../../fuzz/seeds/stream_definition_decode/consumer");
        let config = ConsumerConfig::decode(consumer).expect("documented consumer encoding");
        assert_eq!(config.deliver, DeliverPolicy::Offset(42));
        assert_eq!(config.max_deliver, Some(5));
        assert_eq!(config.filter.as_deref(), Some("orders.eu.>"));
    }

    fn arb_stream() -> impl Strategy<Value = StreamConfig> {
        (
            "[a-z]{1,8}",
            proptest::collection::vec("[a-z]{1,5}(\\.[a-z*]{1,3}){0,3}", 1..4),
            1u32..64,
            proptest::option::of(any::<u64>()),
            proptest::option::of(0u64..1 << 40),
            0u8..3,
            proptest::option::of("[a-z]{1,8}"),
        )
            .prop_map(|(name, subjects, partitions, max_records, age, d, dead)| {
                StreamConfig {
                    name,
                    subjects,
                    partitions,
                    retention: Retention {
                        max_records,
                        max_bytes: max_records.map(|r| r / 3),
                        max_age: age.map(Duration::from_millis),
                    },
                    durability: match d {
                        0 => Durability::Always,
                        1 => Durability::None,
                        _ => Durability::Batch {
                            max_delay: Duration::from_micros(u64::from(partitions) * 17),
                            max_bytes: partitions as usize * 1000,
                        },
                    },
                    max_record_bytes: partitions as usize * 99,
                    dedup_window: Duration::from_millis(u64::from(partitions) * 1000),
                    dead_letter: dead,
                    segment_bytes_max: u64::from(partitions) << 20,
                }
            })
    }

    proptest! {
        #[test]
        fn stream_definitions_round_trip(config in arb_stream()) {
            prop_assert_eq!(StreamConfig::decode(&config.encode()), Ok(config));
        }

        #[test]
        fn consumer_definitions_round_trip(
            durable in proptest::option::of("[a-z]{1,8}"),
            deliver in 0u8..4, at in any::<i64>(),
            filter in proptest::option::of("[a-z]{1,4}\\.>"),
            explicit in any::<bool>(), wait in 1u64..1 << 30,
            max_deliver in proptest::option::of(1u32..100), pending in 1usize..1 << 20,
        ) {
            let config = ConsumerConfig {
                durable,
                deliver: match deliver {
                    0 => DeliverPolicy::All,
                    1 => DeliverPolicy::New,
                    2 => DeliverPolicy::Offset(at as u64),
                    _ => DeliverPolicy::Time(at),
                },
                filter,
                ack: if explicit { AckPolicy::Explicit } else { AckPolicy::None },
                ack_wait: Duration::from_millis(wait),
                max_deliver,
                max_ack_pending: pending,
                heartbeat_timeout: Duration::from_millis(wait / 2 + 10),
            };
            prop_assert_eq!(ConsumerConfig::decode(&config.encode()), Ok(config));
        }

        #[test]
        fn decoding_garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = StreamConfig::decode(&bytes);
            let _ = ConsumerConfig::decode(&bytes);
        }

        #[test]
        fn every_truncation_is_refused(config in arb_stream()) {
            let bytes = config.encode();
            for cut in 0..bytes.len() {
                prop_assert!(StreamConfig::decode(&bytes[..cut]).is_err());
            }
        }
    }
}
