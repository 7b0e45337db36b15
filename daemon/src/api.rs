//! The `/v1` JSON documents: streams, durable consumers, queues (all, or one by name)
//! and exchanges.
//!
//! Owns: the JSON shape of each listing (field names, units in the name: `_ms`,
//! `_bytes`). Never: reads the engine (it is handed snapshots).

use std::time::Duration;

use ringbroker::queue::{ExchangeConfig, QueueConfig, QueueInfo};
use ringbroker::storage::Durability;
use ringbroker::stream::{AckPolicy, ConsumerConfig, DeliverPolicy, StreamInfo};
use serde::Serialize;

use crate::snapshot::{ConsumerSnapshot, StreamsSnapshot};

/// The `Content-Type` of every document.
pub const CONTENT_TYPE: &str = "application/json";

#[derive(Debug, Serialize)]
struct StreamView<'a> {
    name: &'a str,
    subjects: &'a [String],
    durability: DurabilityView,
    retention: RetentionView,
    max_record_bytes: usize,
    dedup_window_ms: u128,
    dead_letter: Option<&'a str>,
    segment_bytes_max: u64,
    partitions: Vec<PartitionView>,
}

#[derive(Debug, Serialize)]
#[serde(tag = "policy", rename_all = "lowercase")]
enum DurabilityView {
    Always,
    Batch {
        max_delay_ms: u128,
        max_bytes: usize,
    },
    None,
}

#[derive(Debug, Serialize)]
struct RetentionView {
    max_records: Option<u64>,
    max_bytes: Option<u64>,
    max_age_ms: Option<u128>,
}

#[derive(Debug, Serialize)]
struct PartitionView {
    partition: u32,
    shard: usize,
    first_offset: u64,
    next_offset: u64,
    records: u64,
    bytes: u64,
}

#[derive(Debug, Serialize)]
struct ConsumerView<'a> {
    stream: &'a str,
    name: &'a str,
    deliver: DeliverView,
    filter: Option<&'a str>,
    ack: &'static str,
    ack_wait_ms: u128,
    max_deliver: Option<u32>,
    max_ack_pending: usize,
    heartbeat_timeout_ms: u128,
    partitions: Vec<ConsumerPartitionView>,
}

#[derive(Debug, Serialize)]
#[serde(tag = "policy", rename_all = "lowercase")]
enum DeliverView {
    All,
    New,
    Offset { offset: u64 },
    Time { unix_ms: i64 },
}

#[derive(Debug, Serialize)]
struct ConsumerPartitionView {
    partition: u32,
    next_offset: u64,
    pending: usize,
    member: Option<u64>,
    /// `None` when the stream's figures were not in the same snapshot.
    lag: Option<u64>,
}

#[derive(Debug, Serialize)]
struct QueueView<'a> {
    name: &'a str,
    messages: u64,
    unacked: usize,
    consumers: usize,
}

/// `GET /v1/streams`: every stream's definition and partitions.
pub fn streams(snapshot: &StreamsSnapshot) -> serde_json::Result<Vec<u8>> {
    let views: Vec<StreamView<'_>> = snapshot.streams.iter().map(stream_view).collect();
    serde_json::to_vec_pretty(&serde_json::json!({ "streams": views }))
}

/// `GET /v1/consumers`: every durable consumer's definition and positions.
pub fn consumers(snapshot: &StreamsSnapshot) -> serde_json::Result<Vec<u8>> {
    let views: Vec<ConsumerView<'_>> = snapshot
        .consumers
        .iter()
        .map(|c| consumer_view(snapshot, c))
        .collect();
    serde_json::to_vec_pretty(&serde_json::json!({ "consumers": views }))
}

#[derive(Debug, Serialize)]
struct QueueListed<'a> {
    name: &'a str,
    durable: bool,
    exclusive: bool,
    auto_delete: bool,
    messages: u64,
    unacked: usize,
    consumers: usize,
}

#[derive(Debug, Serialize)]
struct ExchangeView<'a> {
    name: &'a str,
    kind: &'static str,
    durable: bool,
}

/// `GET /v1/queues`: every declared queue, its flags and figures.
pub fn queues(all: &[(QueueConfig, QueueInfo)]) -> serde_json::Result<Vec<u8>> {
    let views: Vec<QueueListed<'_>> = all
        .iter()
        .map(|(config, info)| QueueListed {
            name: &config.name,
            durable: config.durable,
            exclusive: config.exclusive,
            auto_delete: config.auto_delete,
            messages: info.messages,
            unacked: info.unacked,
            consumers: info.consumers,
        })
        .collect();
    serde_json::to_vec_pretty(&serde_json::json!({ "queues": views }))
}

/// `GET /v1/exchanges`: every declared exchange (the default one is built in).
pub fn exchanges(all: &[ExchangeConfig]) -> serde_json::Result<Vec<u8>> {
    let views: Vec<ExchangeView<'_>> = all
        .iter()
        .map(|e| ExchangeView {
            name: &e.name,
            kind: e.kind.name(),
            durable: e.durable,
        })
        .collect();
    serde_json::to_vec_pretty(&serde_json::json!({ "exchanges": views }))
}

/// `GET /v1/queues/{name}`: one queue's figures.
pub fn queue(info: &QueueInfo) -> serde_json::Result<Vec<u8>> {
    serde_json::to_vec_pretty(&QueueView {
        name: &info.name,
        messages: info.messages,
        unacked: info.unacked,
        consumers: info.consumers,
    })
}

fn stream_view(info: &StreamInfo) -> StreamView<'_> {
    let config = &info.config;
    StreamView {
        name: &config.name,
        subjects: &config.subjects,
        durability: match config.durability {
            Durability::Always => DurabilityView::Always,
            Durability::Batch {
                max_delay,
                max_bytes,
            } => DurabilityView::Batch {
                max_delay_ms: max_delay.as_millis(),
                max_bytes,
            },
            Durability::None => DurabilityView::None,
        },
        retention: RetentionView {
            max_records: config.retention.max_records,
            max_bytes: config.retention.max_bytes,
            max_age_ms: config.retention.max_age.map(|d| d.as_millis()),
        },
        max_record_bytes: config.max_record_bytes,
        dedup_window_ms: config.dedup_window.as_millis(),
        dead_letter: config.dead_letter.as_deref(),
        segment_bytes_max: config.segment_bytes_max,
        partitions: info
            .partitions
            .iter()
            .map(|p| PartitionView {
                partition: p.partition,
                shard: p.shard,
                first_offset: p.first_offset,
                next_offset: p.next_offset,
                records: p.records,
                bytes: p.bytes,
            })
            .collect(),
    }
}

fn consumer_view<'a>(
    snapshot: &StreamsSnapshot,
    consumer: &'a ConsumerSnapshot,
) -> ConsumerView<'a> {
    let config: &ConsumerConfig = &consumer.info.config;
    let ms = |d: Duration| d.as_millis();
    ConsumerView {
        stream: &consumer.stream,
        name: &consumer.name,
        deliver: match config.deliver {
            DeliverPolicy::All => DeliverView::All,
            DeliverPolicy::New => DeliverView::New,
            DeliverPolicy::Offset(offset) => DeliverView::Offset { offset },
            DeliverPolicy::Time(unix_ms) => DeliverView::Time { unix_ms },
        },
        filter: config.filter.as_deref(),
        ack: match config.ack {
            AckPolicy::None => "none",
            AckPolicy::Explicit => "explicit",
        },
        ack_wait_ms: ms(config.ack_wait),
        max_deliver: config.max_deliver,
        max_ack_pending: config.max_ack_pending,
        heartbeat_timeout_ms: ms(config.heartbeat_timeout),
        partitions: consumer
            .info
            .partitions
            .iter()
            .map(|p| ConsumerPartitionView {
                partition: p.partition,
                next_offset: p.next_offset,
                pending: p.pending,
                member: p.member,
                lag: snapshot.lag(consumer, p.partition),
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::tests::orders_and_billing;

    fn parse(bytes: &[u8]) -> serde_json::Value {
        serde_json::from_slice(bytes).expect("valid JSON")
    }

    #[test]
    fn streams_listing_has_definition_and_partitions() {
        let doc = parse(&streams(&orders_and_billing()).expect("render"));
        let orders = &doc["streams"][0];
        assert_eq!(orders["name"], "orders");
        assert_eq!(orders["subjects"][0], "orders.>");
        assert_eq!(orders["durability"]["policy"], "always");
        assert_eq!(orders["partitions"][0]["records"], 10);
        assert_eq!(orders["partitions"][1]["bytes"], 2048);
    }

    #[test]
    fn consumers_listing_has_positions_and_lag() {
        let doc = parse(&consumers(&orders_and_billing()).expect("render"));
        let billing = &doc["consumers"][0];
        assert_eq!(billing["stream"], "orders");
        assert_eq!(billing["name"], "billing");
        assert_eq!(billing["ack"], "explicit");
        assert_eq!(billing["deliver"]["policy"], "all");
        assert_eq!(billing["partitions"][0]["lag"], 6);
        assert_eq!(billing["partitions"][0]["member"], 3);
        assert_eq!(billing["partitions"][1]["member"], serde_json::Value::Null);
    }
}
