//! `ringbrokerd bench` flags, their bounds and the `Plan` they resolve to.
//!
//! Owns: the flag definitions (and so `bench --help`, including the documented JSON
//! fields), scenario-dependent defaults and every bound a run is held to (a run always
//! stops at a duration and at a message count). Never: starts a broker or a thread.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use ringbroker::storage::Durability;

use super::BenchError;

/// Longest `--duration` accepted.
pub const DURATION_MAX: Duration = Duration::from_secs(3600);
/// The duration of a run when `--duration` is not given.
pub const DURATION_DEFAULT_S: f64 = 10.0;
/// The message count a run stops at when `--count` is not given.
pub const COUNT_DEFAULT: u64 = 10_000_000;
/// Largest `--count` accepted: verification keeps a bit per message in each set it
/// compares (sent, and each destination's), so 10^9 messages cost a few hundred MiB.
pub const COUNT_MAX: u64 = 1_000_000_000;
/// Most producers or consumers.
pub const THREADS_MAX: usize = 64;
/// Largest message (payload) size.
pub const SIZE_MAX: usize = 1 << 20;
/// Largest batch (the protocol's batch bound).
pub const BATCH_MAX: usize = 65_536;
/// Most batches a producer keeps unconfirmed.
pub const IN_FLIGHT_MAX: usize = 1024;
/// Most keys of `ordered-keys`.
pub const KEYS_MAX: usize = 65_536;
/// The `batch` durability policy's delay (as the storage report runs it).
pub const BATCH_DELAY: Duration = Duration::from_millis(2);
/// The `batch` durability policy's byte bound.
pub const BATCH_BYTES: usize = 1 << 20;

/// The `--help` epilogue: exit status and every `--json` field.
pub const JSON_FIELDS: &str = "\
Exit status: 0 when the run passed verification; 1 when it did not (lost, duplicated,
misrouted or reordered messages, a publish error, a timeout) or could not run; 2 for a
bad flag.

--json prints one object on stdout with these fields:
  scenario            the scenario name
  target              \"embedded\" or \"remote\"
  url                 the remote URL, or null
  producers           producer threads (one connection each when remote)
  consumers           consumer threads (subscribers, queue consumers, responders, readers)
  message_bytes       payload size of each message
  batch               messages per publish call
  in_flight           batches a producer keeps unconfirmed (queues and streams)
  prefetch            queue consumer prefetch (work-queue, fanout-exchange, topic-routing)
  partitions          stream partitions (stream scenarios), else null
  keys                keys of ordered-keys, else null
  durability          always | batch | none (streams; queues: none = transient)
  rate_limit          requested messages/s over all producers, or null (as fast as it goes)
  duration_s          the duration bound
  count_max           the message-count bound
  elapsed_s           from the start of the timed phase to its last completion
  sent                messages the broker accepted (confirmed, acknowledged or published)
  refused             messages the broker refused with backpressure (not counted as sent)
  expected            completions the scenario expects from what was sent
  received            completions verified (deliveries, replies, acks or reads)
  lost                expected completions that never came
  duplicates          completions that came more than once
  out_of_order        completions that broke the order the scenario promises
  misrouted           deliveries to a consumer that should not get them, or never sent
  msgs_per_s          completions timed in the run (deliveries; replies for request-reply;
                      acks for stream-publish; reads for stream-replay) / elapsed_s
  sent_per_s          sent / elapsed_s
  mb_per_s            payload bytes of those completions / elapsed_s / 1e6
  latency_kind        what a latency sample is (publish_to_delivery, request_to_reply,
                      publish_to_ack), or null when the scenario has none (stream-replay)
  latency_us          {count, p50, p90, p99, p999, max, mean} in microseconds, or null
  cpu_user_s          user CPU time of the whole process during the run (getrusage)
  cpu_system_s        system CPU time of the whole process during the run
  timeline            [{t_s, msgs_per_s, p50_us, p99_us, max_us}] per interval
  passed              true when verification passed
  failures            why it did not pass (empty when passed)";

/// What a run exercises.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Scenario {
    /// Subjects, fire and forget: N publishers, M subscribers each getting every
    /// message (1→1, or 1→M fan-out). At most once: a subscriber that falls behind
    /// drops, which fails the run unless --allow-loss.
    Pubsub,
    /// Subjects: N requesters sending one request at a time, M responders in a queue
    /// group echoing the payload; latency is the round trip.
    RequestReply,
    /// One queue, K competing consumers with --prefetch, acknowledging; publishes
    /// confirmed through the default exchange.
    WorkQueue,
    /// A fanout exchange bound to M queues, one consumer each: every queue gets every
    /// message.
    FanoutExchange,
    /// A topic exchange with M queues bound to `bench.<i>.*`; message n goes to
    /// `bench.<n mod M>.evt`, so each queue gets exactly its share.
    TopicRouting,
    /// Durable stream appends acknowledged per --durability; afterwards every record
    /// is read back and checked.
    StreamPublish,
    /// Fills a stream (not timed), then M readers each catch up from offset 0.
    StreamReplay,
    /// Keyed records over --partitions partitions read by a consumer group of M
    /// members; each key's records must arrive in publish order.
    OrderedKeys,
}

impl Scenario {
    /// The name on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Self::Pubsub => "pubsub",
            Self::RequestReply => "request-reply",
            Self::WorkQueue => "work-queue",
            Self::FanoutExchange => "fanout-exchange",
            Self::TopicRouting => "topic-routing",
            Self::StreamPublish => "stream-publish",
            Self::StreamReplay => "stream-replay",
            Self::OrderedKeys => "ordered-keys",
        }
    }

    fn default_consumers(self) -> usize {
        match self {
            Self::FanoutExchange => 3,
            Self::TopicRouting => 4,
            _ => 1,
        }
    }

    fn default_partitions(self) -> u32 {
        match self {
            Self::OrderedKeys => 4,
            _ => 1,
        }
    }

    /// Whether it uses streams (and so --partitions and --durability).
    pub fn uses_streams(self) -> bool {
        matches!(
            self,
            Self::StreamPublish | Self::StreamReplay | Self::OrderedKeys
        )
    }
}

/// When a stream append is acknowledged (and whether queues persist).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DurabilityArg {
    /// After the fdatasync covering it (group commit).
    Always,
    /// After a group sync held back up to 2 ms or 1 MiB.
    Batch,
    /// After the write (the OS flushes later); queues: transient.
    None,
}

impl DurabilityArg {
    /// The name in reports.
    pub fn name(self) -> &'static str {
        match self {
            Self::Always => "always",
            Self::Batch => "batch",
            Self::None => "none",
        }
    }

    /// The stream policy.
    pub fn durability(self) -> Durability {
        match self {
            Self::Always => Durability::Always,
            Self::Batch => Durability::Batch {
                max_delay: BATCH_DELAY,
                max_bytes: BATCH_BYTES,
            },
            Self::None => Durability::None,
        }
    }
}

/// `ringbrokerd bench <scenario> [options]`.
#[derive(Debug, Parser)]
#[command(
    name = "ringbrokerd bench",
    bin_name = "ringbrokerd bench",
    about = "The load generator: drives an embedded broker (default) or a remote ringbrokerd, \
             verifies every message it measured, and reports throughput, latency and CPU time.",
    after_long_help = JSON_FIELDS
)]
pub struct BenchCli {
    /// The workload.
    #[arg(value_enum)]
    pub scenario: Scenario,
    /// Drive a running daemon at ringbroker://HOST:PORT instead of an embedded broker.
    #[arg(long, value_name = "URL")]
    pub url: Option<String>,
    /// Token for a remote daemon that wants one.
    #[arg(
        long,
        env = "RINGBROKER_AUTH_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    pub auth_token: Option<String>,
    /// Embedded broker: its data directory, which must not exist yet and is removed
    /// afterwards (default: a new directory under the system temp dir).
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Embedded broker: shards (default: one per available core).
    #[arg(long, value_name = "N")]
    pub shards: Option<usize>,
    /// Producer threads (1 to 64).
    #[arg(long, short = 'p', default_value_t = 1, value_name = "N")]
    pub producers: usize,
    /// Consumer threads, 1 to 64 (default 3 for fanout-exchange, 4 for topic-routing,
    /// else 1).
    #[arg(long, short = 'c', value_name = "M")]
    pub consumers: Option<usize>,
    /// Payload bytes per message, 16 (the sequence and time stamp every message carries)
    /// to 1048576.
    #[arg(long, short = 's', default_value_t = 256, value_name = "BYTES")]
    pub size: usize,
    /// Stop publishing after this many seconds (at most 3600).
    #[arg(long, short = 'd', default_value_t = DURATION_DEFAULT_S, value_name = "SECONDS")]
    pub duration: f64,
    /// Stop publishing after this many messages in all (at most 1000000000).
    #[arg(long, short = 'n', default_value_t = COUNT_DEFAULT, value_name = "N")]
    pub count: u64,
    /// Messages per second over all producers (default: as fast as the broker takes them).
    #[arg(long, value_name = "MSGS_PER_S")]
    pub rate: Option<f64>,
    /// Messages per publish call (1 to 65536).
    #[arg(long, short = 'b', default_value_t = 100, value_name = "N")]
    pub batch: usize,
    /// Batches a producer keeps unconfirmed, queues and streams (1 to 1024).
    #[arg(long, default_value_t = 8, value_name = "N")]
    pub in_flight: usize,
    /// Queue consumers' prefetch: unacknowledged deliveries at most (0: no limit).
    #[arg(long, default_value_t = 100, value_name = "N")]
    pub prefetch: u32,
    /// Stream durability policy (queue scenarios: `none` means a transient queue and
    /// transient messages, otherwise durable and persistent).
    #[arg(long, value_enum, default_value_t = DurabilityArg::Always)]
    pub durability: DurabilityArg,
    /// Stream partitions (default 4 for ordered-keys, else 1).
    #[arg(long, value_name = "N")]
    pub partitions: Option<u32>,
    /// Keys of ordered-keys, at least --producers (each key has one producer), at most
    /// 65536.
    #[arg(long, default_value_t = 64, value_name = "N")]
    pub keys: usize,
    /// After publishing stops, the run ends once no completion came for this long (or
    /// ten times this long in all); whatever is still missing then is lost.
    #[arg(long, default_value_t = 10.0, value_name = "SECONDS")]
    pub drain_timeout: f64,
    /// Consumers sleep this long per message (simulates slow processing; a slow
    /// pubsub subscriber drops).
    #[arg(long, default_value_t = 0, value_name = "MICROS")]
    pub consumer_delay_us: u64,
    /// pubsub only: report at-most-once loss (a subscriber that fell behind) instead of
    /// failing on it.
    #[arg(long)]
    pub allow_loss: bool,
    /// Print the report as one JSON object (fields below) instead of the table.
    #[arg(long)]
    pub json: bool,
    /// Also draw throughput and latency percentiles over time into this SVG file.
    #[arg(long, value_name = "FILE.svg")]
    pub plot: Option<PathBuf>,
}

/// A validated run.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The workload.
    pub scenario: Scenario,
    /// Remote URL, if any.
    pub url: Option<String>,
    /// Remote token.
    pub auth_token: Option<String>,
    /// Embedded data directory, if given.
    pub data_dir: Option<PathBuf>,
    /// Embedded shards.
    pub shards: Option<usize>,
    /// Producer threads.
    pub producers: usize,
    /// Consumer threads.
    pub consumers: usize,
    /// Payload bytes.
    pub size: usize,
    /// Publishing stops after this.
    pub duration: Duration,
    /// Publishing stops after this many messages.
    pub count_max: u64,
    /// Messages per second over all producers.
    pub rate: Option<f64>,
    /// Messages per publish.
    pub batch: usize,
    /// Unconfirmed batches per producer.
    pub in_flight: usize,
    /// Queue prefetch.
    pub prefetch: u32,
    /// Durability policy.
    pub durability: DurabilityArg,
    /// Stream partitions.
    pub partitions: u32,
    /// ordered-keys keys.
    pub keys: usize,
    /// Wait for stragglers.
    pub drain_timeout: Duration,
    /// Per-message consumer delay.
    pub consumer_delay: Duration,
    /// Report at-most-once loss instead of failing.
    pub allow_loss: bool,
    /// JSON output.
    pub json: bool,
    /// SVG output.
    pub plot: Option<PathBuf>,
}

fn check(ok: bool, flag: &'static str, why: String) -> Result<(), BenchError> {
    match ok {
        true => Ok(()),
        false => Err(BenchError::Usage { flag, why }),
    }
}

fn seconds(flag: &'static str, value: f64, max: Duration) -> Result<Duration, BenchError> {
    check(
        value.is_finite() && value > 0.0 && value <= max.as_secs_f64(),
        flag,
        format!("{value}; more than 0 and at most {} s", max.as_secs()),
    )?;
    Ok(Duration::from_secs_f64(value))
}

fn in_range<T: PartialOrd + std::fmt::Display>(
    flag: &'static str,
    value: T,
    range: std::ops::RangeInclusive<T>,
) -> Result<(), BenchError> {
    let why = format!("{value}; {} to {}", range.start(), range.end());
    check(range.contains(&value), flag, why)
}

impl BenchCli {
    /// Every count-like flag within its bounds.
    fn check_counts(&self, consumers: usize, partitions: u32) -> Result<(), BenchError> {
        in_range("--producers", self.producers, 1..=THREADS_MAX)?;
        in_range("--consumers", consumers, 1..=THREADS_MAX)?;
        in_range("--size", self.size, super::payload::HEADER_BYTES..=SIZE_MAX)?;
        in_range("--count", self.count, 1..=COUNT_MAX)?;
        in_range("--batch", self.batch, 1..=BATCH_MAX)?;
        in_range("--in-flight", self.in_flight, 1..=IN_FLIGHT_MAX)?;
        let parts_max = ringbroker::stream::PARTITIONS_MAX;
        in_range("--partitions", partitions, 1..=parts_max)?;
        // Each key has one producer, so every producer needs a key.
        in_range("--keys", self.keys, self.producers..=KEYS_MAX)?;
        if let Some(rate) = self.rate {
            let why = format!("{rate}; more than 0");
            check(rate.is_finite() && rate > 0.0, "--rate", why)?;
        }
        Ok(())
    }

    /// Checks every bound and fills the scenario's defaults.
    pub fn plan(self) -> Result<Plan, BenchError> {
        let consumers = self.consumers.unwrap_or(self.scenario.default_consumers());
        let partitions = self
            .partitions
            .unwrap_or(self.scenario.default_partitions());
        self.check_counts(consumers, partitions)?;
        let duration = seconds("--duration", self.duration, DURATION_MAX)?;
        let drain_timeout = seconds("--drain-timeout", self.drain_timeout, DURATION_MAX)?;
        let local_only = self.url.is_some() && (self.data_dir.is_some() || self.shards.is_some());
        let why = "--data-dir and --shards shape the embedded broker; not with --url".to_owned();
        check(!local_only, "--url", why)?;
        Ok(Plan {
            scenario: self.scenario,
            url: self.url,
            auth_token: self.auth_token,
            data_dir: self.data_dir,
            shards: self.shards,
            producers: self.producers,
            consumers,
            size: self.size,
            duration,
            count_max: self.count,
            rate: self.rate,
            batch: self.batch,
            in_flight: self.in_flight,
            prefetch: self.prefetch,
            durability: self.durability,
            partitions,
            keys: self.keys,
            drain_timeout,
            consumer_delay: Duration::from_micros(self.consumer_delay_us),
            allow_loss: self.allow_loss,
            json: self.json,
            plot: self.plot,
        })
    }
}
