//! What one admin request reads from the engine: shard and pub/sub counters, every
//! stream's partitions and every durable consumer's positions.
//!
//! Owns: the `Sources` (cloned model handles) and gathering them into plain `Snapshot`
//! values, and the one figure derived from two engine reads (consumer lag). Never:
//! renders (`metrics` and `api` do), holds the `Broker` itself (its shutdown needs it
//! by value), or changes engine state: every call it makes is a read.

use ringbroker::broker::Broker;
use ringbroker::net::{NetStats, NetStatsReader};
use ringbroker::pubsub::{PubSub, PubSubError, PubSubStats};
use ringbroker::queue::{ExchangeConfig, QueueConfig, QueueError, QueueInfo, Queues};
use ringbroker::runtime::{RuntimeHandle, ShardStats};
use ringbroker::stream::{ConsumerInfo, StreamError, StreamInfo, Streams};

/// The model handles the admin endpoint reads through. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Sources {
    runtime: RuntimeHandle,
    pubsub: PubSub,
    streams: Streams,
    queues: Queues,
    /// The native-protocol server's counters, once it runs.
    /// The servers whose network counters `/metrics` adds up per shard (the native
    /// one, and the NATS one when it runs).
    net: Vec<NetStatsReader>,
}

/// Why a snapshot could not be taken (the engine is shutting down, or a shard failed).
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// Reading pub/sub counters failed.
    #[error("pub/sub stats: {0}")]
    PubSub(#[from] PubSubError),
    /// Reading a stream or consumer failed.
    #[error("streams: {0}")]
    Streams(#[from] StreamError),
    /// Reading a queue failed.
    #[error("queues: {0}")]
    Queues(#[from] QueueError),
}

/// Every stream and durable consumer, read one after the other (not atomically: a
/// stream created or deleted meanwhile may be missing or partly present).
#[derive(Debug, Clone, Default)]
pub struct StreamsSnapshot {
    /// Each stream, by name.
    pub streams: Vec<StreamInfo>,
    /// Each durable consumer, by stream then name.
    pub consumers: Vec<ConsumerSnapshot>,
}

/// One durable consumer.
#[derive(Debug, Clone)]
pub struct ConsumerSnapshot {
    /// Its stream.
    pub stream: String,
    /// Its name.
    pub name: String,
    /// Its definition and positions.
    pub info: ConsumerInfo,
}

/// Everything `/metrics` shows.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Each shard's runtime counters, in shard order.
    pub shards: Vec<ShardStats>,
    /// Each shard's pub/sub counters, in shard order.
    pub pubsub: Vec<PubSubStats>,
    /// Streams and consumers.
    pub streams: StreamsSnapshot,
    /// Each shard's network counters, in shard order (empty without a server).
    pub net: Vec<NetStats>,
    /// Every queue's figures.
    pub queues: Vec<QueueInfo>,
}

impl Sources {
    /// The handles of `broker`'s runtime and models.
    pub fn of(broker: &Broker) -> Self {
        Self {
            runtime: broker.runtime().clone(),
            pubsub: broker.pubsub().clone(),
            streams: broker.streams().clone(),
            queues: broker.queues().clone(),
            net: Vec::new(),
        }
    }

    /// These sources plus a server's network counters (added to those of the servers
    /// given before, shard by shard).
    pub fn with_net(mut self, net: NetStatsReader) -> Self {
        self.net.push(net);
        self
    }

    /// Everything `/metrics` shows.
    pub fn snapshot(&self) -> Result<Snapshot, SnapshotError> {
        Ok(Snapshot {
            shards: self.runtime.stats(),
            pubsub: self.pubsub.stats()?,
            streams: self.streams()?,
            net: self.net_stats(),
            queues: self.queues()?.into_iter().map(|(_, info)| info).collect(),
        })
    }

    /// Each shard's network counters, summed over the servers.
    fn net_stats(&self) -> Vec<NetStats> {
        let mut sum: Vec<NetStats> = Vec::new();
        for server in &self.net {
            for (shard, stats) in server.stats().into_iter().enumerate() {
                match sum.get_mut(shard) {
                    Some(total) => *total += stats,
                    None => sum.push(stats),
                }
            }
        }
        sum
    }

    /// Every stream and durable consumer. One deleted between listing and reading is
    /// left out rather than failing the whole read.
    pub fn streams(&self) -> Result<StreamsSnapshot, SnapshotError> {
        let mut snapshot = StreamsSnapshot::default();
        for stream in self.streams.list() {
            match self.streams.info(&stream) {
                Ok(info) => snapshot.streams.push(info),
                Err(StreamError::NotFound { .. }) => continue,
                Err(error) => return Err(error.into()),
            }
            for name in self.streams.consumers(&stream) {
                match self.streams.consumer_info(&stream, &name) {
                    Ok(info) => snapshot.consumers.push(ConsumerSnapshot {
                        stream: stream.clone(),
                        name,
                        info,
                    }),
                    Err(StreamError::NotFound { .. }) => continue,
                    Err(error) => return Err(error.into()),
                }
            }
        }
        Ok(snapshot)
    }

    /// One queue's figures.
    pub fn queue(&self, name: &str) -> Result<QueueInfo, QueueError> {
        self.queues.queue_info(name)
    }

    /// Every declared queue with its figures. One deleted between listing and reading
    /// is left out.
    pub fn queues(&self) -> Result<Vec<(QueueConfig, QueueInfo)>, SnapshotError> {
        let mut out = Vec::new();
        for config in self.queues.queues() {
            match self.queues.queue_info(&config.name) {
                Ok(info) => out.push((config, info)),
                Err(QueueError::NotFound { .. }) => continue,
                Err(error) => return Err(error.into()),
            }
        }
        Ok(out)
    }

    /// Every declared exchange.
    pub fn exchanges(&self) -> Vec<ExchangeConfig> {
        self.queues.exchanges()
    }
}

impl StreamsSnapshot {
    /// Records of `partition` of `consumer`'s stream not yet delivered to it: the
    /// partition's next offset less the consumer's. `None` when the stream's figures
    /// for that partition are not in this snapshot.
    pub fn lag(&self, consumer: &ConsumerSnapshot, partition: u32) -> Option<u64> {
        let stream = self
            .streams
            .iter()
            .find(|s| s.config.name == consumer.stream)?;
        let stored = stream
            .partitions
            .iter()
            .find(|p| p.partition == partition)?;
        let position = consumer
            .info
            .partitions
            .iter()
            .find(|p| p.partition == partition)?;
        Some(stored.next_offset.saturating_sub(position.next_offset))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use ringbroker::stream::{ConsumerConfig, ConsumerPartitionInfo, PartitionInfo, StreamConfig};

    /// A stream `orders` with two partitions and a consumer `billing` behind on one.
    pub(crate) fn orders_and_billing() -> StreamsSnapshot {
        let partition = |partition, shard, first, next, bytes| PartitionInfo {
            partition,
            shard,
            first_offset: first,
            next_offset: next,
            records: next - first,
            bytes,
        };
        let position = |partition, next_offset, pending, member| ConsumerPartitionInfo {
            partition,
            next_offset,
            pending,
            member,
        };
        StreamsSnapshot {
            streams: vec![StreamInfo {
                config: StreamConfig {
                    partitions: 2,
                    ..StreamConfig::new("orders", &["orders.>"])
                },
                partitions: vec![partition(0, 1, 0, 10, 4096), partition(1, 0, 2, 7, 2048)],
            }],
            consumers: vec![ConsumerSnapshot {
                stream: "orders".to_owned(),
                name: "billing".to_owned(),
                info: ConsumerInfo {
                    config: ConsumerConfig::durable("billing"),
                    partitions: vec![position(0, 4, 2, Some(3)), position(1, 7, 0, None)],
                },
            }],
        }
    }

    #[test]
    fn a_real_broker_gives_stream_figures_consumer_lag_and_queue_figures() {
        use ringbroker::broker::BrokerConfig;
        use ringbroker::queue::QueueConfig;
        use ringbroker::stream::Publish;

        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = BrokerConfig::new(dir.path());
        config.runtime.shards = Some(1);
        config.runtime.pin_to_cores = false;
        let broker = Broker::open(config).expect("open");
        let streams = broker.streams();
        streams
            .create(StreamConfig::new("orders", &["orders.>"]))
            .expect("create stream");
        streams
            .create_consumer("orders", ConsumerConfig::durable("billing"))
            .expect("create consumer");
        for i in 0..3 {
            streams
                .publish(Publish::new("orders.eu", format!("order {i}")))
                .expect("publish");
        }
        broker
            .queues()
            .declare_queue(QueueConfig::new("jobs"))
            .expect("declare queue");

        let sources = Sources::of(&broker);
        let snapshot = sources.snapshot().expect("snapshot");
        assert_eq!(snapshot.shards.len(), 1);
        assert_eq!(snapshot.pubsub.len(), 1);
        let orders = &snapshot.streams.streams[0];
        assert_eq!(
            (
                orders.partitions[0].records,
                orders.partitions[0].next_offset
            ),
            (3, 3)
        );
        let billing = &snapshot.streams.consumers[0];
        assert_eq!(
            (billing.stream.as_str(), billing.name.as_str()),
            ("orders", "billing")
        );
        assert_eq!(snapshot.streams.lag(billing, 0), Some(3));
        let text = crate::metrics::render(&snapshot);
        assert!(text.contains(
            "\nringbroker_stream_partition_records{stream=\"orders\",partition=\"0\",shard=\"0\"} 3\n"
        ));
        assert!(text.contains(
            "\nringbroker_consumer_partition_lag{stream=\"orders\",consumer=\"billing\",partition=\"0\"} 3\n"
        ));
        let jobs = sources.queue("jobs").expect("queue info");
        assert_eq!((jobs.messages, jobs.unacked, jobs.consumers), (0, 0, 0));
        assert!(matches!(
            sources.queue("nope"),
            Err(QueueError::NotFound { .. })
        ));
        broker.shutdown().expect("shutdown");
    }

    #[test]
    fn lag_is_stored_next_offset_less_consumer_next_offset() {
        let snapshot = orders_and_billing();
        let billing = &snapshot.consumers[0];
        assert_eq!(snapshot.lag(billing, 0), Some(6));
        assert_eq!(snapshot.lag(billing, 1), Some(0));
        assert_eq!(snapshot.lag(billing, 2), None);
    }
}
