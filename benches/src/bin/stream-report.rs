//! Prints the streams model's figures as markdown: publish → consume throughput on an
//! embedded runtime (one producer thread pipelining `publish_with` batches, one
//! consumer thread draining an ephemeral consumer with `fetch`), publish → deliver
//! latency (one record at a time, the send time carried in the payload), and replay of
//! a one-partition stream from disk, page cache warm and cold, against `memcpy` of the
//! same bytes.
//!
//! Every run is checked: each record the producer was told is stored must reach the
//! consumer exactly once, in offset order per partition (and in publish order, by a
//! stamp in the payload), and nothing else may arrive. A lost, duplicated or reordered
//! record makes the binary exit with status 1.
//!
//! ```sh
//! cargo run --release -p ringbroker-benches --bin stream-report -- \
//!     [--seconds 2] [--repeat 3] [--messages-max 20000000] [--bytes-max 1073741824] \
//!     [--replay-mib 512] [--dir PATH] [--filter NAME] [--quick]
//! ```
//!
//! `--quick`: 0.2 s per case, one repetition, a 16 MiB replay; the CI smoke run.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use bytes::{BufMut, BytesMut};
use hdrhistogram::Histogram;
use ringbroker::stream::{
    AckPolicy, Consumer, ConsumerConfig, DeliverPolicy, Publish, PublishAck, StreamConfig,
    StreamError, StreamMessage, Streams, ACK_PENDING_LIMIT,
};
use ringbroker_benches::report;
use ringbroker_benches::storage::{median, Policy};

const USAGE: &str = "stream-report [--seconds 2] [--repeat 3] [--messages-max 20000000]
    [--bytes-max 1073741824] [--replay-mib 512] [--dir PATH] [--filter NAME] [--quick]

  --seconds       load per throughput and latency case
  --repeat        repetitions (medians are shown)
  --messages-max  records per case at most; --bytes-max: payload bytes per case at most
  --replay-mib    payload of the replay stream (1 KiB records)
  --dir           where the streams are stored (default: the system temp dir)
  --filter        run only the cases whose name contains NAME (throughput-2sh-64B-none,
                  latency-always, replay)
  --quick         0.2 s per case, one repetition, 16 MiB replay: the CI smoke run";

/// The stream every case creates (one per engine, so one name is enough).
const STREAM: &str = "bench";
/// The subject the producer publishes on.
const SUBJECT: &str = "bench.x";
/// Records per `publish_with` batch.
const BATCH_RECORDS: usize = 1000;
/// Batches the producer keeps unanswered at most.
const BATCHES_IN_FLIGHT: usize = 8;
/// Records one `fetch` takes at most.
const FETCH_MAX: usize = 4096;
/// The consumer's `max_ack_pending` (its buffer): 65,536, or the engine's limit if lower.
const ACK_PENDING: usize = if ACK_PENDING_LIMIT < 65_536 {
    ACK_PENDING_LIMIT
} else {
    65_536
};
/// No answer to a publish, or no record while some are due, for this long: the engine
/// stalled and the run fails.
const STALL: Duration = Duration::from_secs(20);
/// No record for this long while every record due is acknowledged (stored): they are
/// lost, and the run fails.
const DRAIN_QUIET: Duration = Duration::from_secs(5);
/// Bytes at the head of every payload: the producer's sequence number, or its send
/// time (ns since the report's origin) in the latency cases. Little endian.
const STAMP_BYTES: usize = 8;
/// Payload of the replay stream's records.
const REPLAY_RECORD: usize = 1024;
/// The replay stream's segment size.
const REPLAY_SEGMENT: u64 = 64 << 20;
/// Longest the replay stream's fill may take.
const FILL_MAX: Duration = Duration::from_secs(120);
/// Chunk of the `memcpy` baseline.
const MEMCPY_CHUNK: usize = 1 << 20;
/// Runs of the `memcpy` baseline (the median is shown).
const MEMCPY_RUNS: usize = 3;

#[derive(Debug, Clone)]
struct Options {
    seconds: f64,
    repeat: usize,
    messages_max: u64,
    bytes_max: u64,
    latency_max: u64,
    replay_bytes: u64,
    dir: Option<PathBuf>,
    /// Run only the cases whose name contains this.
    filter: String,
}

impl Options {
    fn parse() -> Result<Self, String> {
        let mut o = Options {
            seconds: 2.0,
            repeat: 3,
            messages_max: 20_000_000,
            bytes_max: 1 << 30,
            latency_max: 1_000_000,
            replay_bytes: 512 << 20,
            dir: None,
            filter: String::new(),
        };
        let mut quick = false;
        let mut args = std::env::args().skip(1);
        while let Some(flag) = args.next() {
            let mut value = || args.next().ok_or(format!("{flag} needs a value"));
            let num = |v: String| v.parse::<f64>().map_err(|e| format!("{flag} {v}: {e}"));
            match flag.as_str() {
                "--seconds" => o.seconds = num(value()?)?,
                "--repeat" => o.repeat = num(value()?)? as usize,
                "--messages-max" => o.messages_max = num(value()?)? as u64,
                "--bytes-max" => o.bytes_max = num(value()?)? as u64,
                "--replay-mib" => o.replay_bytes = (num(value()?)? * 1048576.0) as u64,
                "--dir" => o.dir = Some(PathBuf::from(value()?)),
                "--filter" => o.filter = value()?,
                "--quick" => quick = true,
                "--help" | "-h" => {
                    println!("{USAGE}");
                    std::process::exit(0);
                }
                other => return Err(format!("unknown argument {other}")),
            }
        }
        if quick {
            o.seconds = 0.2;
            o.repeat = 1;
            o.messages_max = o.messages_max.min(400_000);
            o.bytes_max = o.bytes_max.min(64 << 20);
            o.latency_max = 20_000;
            o.replay_bytes = o.replay_bytes.min(16 << 20);
        }
        o.repeat = o.repeat.clamp(1, 100);
        o.seconds = o.seconds.clamp(0.01, 600.0);
        o.replay_bytes = o.replay_bytes.clamp(REPLAY_RECORD as u64, 64 << 30);
        Ok(o)
    }

    fn wants(&self, case: &str) -> bool {
        case.contains(&self.filter)
    }

    fn duration(&self) -> Duration {
        Duration::from_secs_f64(self.seconds)
    }
}

/// Where the report runs and what went wrong so far.
struct Setup {
    root: PathBuf,
    failures: Vec<String>,
    started: Instant,
    /// Zero of the latency cases' clock (both threads read it).
    origin: Instant,
}

impl Setup {
    fn progress(&self, what: &str) {
        eprintln!(
            "running {what} at {:.1} s",
            self.started.elapsed().as_secs_f64()
        );
    }
}

fn main() {
    let options = match Options::parse() {
        Ok(o) => o,
        Err(error) => {
            eprintln!("stream-report: {error}\n\n{USAGE}");
            std::process::exit(2);
        }
    };
    let mut setup = match prepare(&options) {
        Ok(s) => s,
        Err(error) => {
            eprintln!("stream-report: {error}");
            std::process::exit(2);
        }
    };
    throughput_section(&options, &mut setup);
    latency_section(&options, &mut setup);
    replay_section(&options, &mut setup);
    report::finish("stream-report", &setup.root, setup.started, &setup.failures);
}

/// Creates the run directory and prints the machine and the settings.
fn prepare(options: &Options) -> Result<Setup, String> {
    let root = report::run_dir(options.dir.as_deref(), "stream-report")?;
    println!("# Stream report\n");
    report::print_machine(&root);
    println!(
        "- per case: {} s or {} records or {} MiB of payload, whichever comes first; {} \
         repetition(s), medians shown",
        options.seconds,
        options.messages_max,
        options.bytes_max >> 20,
        options.repeat
    );
    println!(
        "- engine: embedded `Runtime` (shards pinned to cores), one `Streams`; each case \
         gets a fresh runtime, data directory and stream `{STREAM}` (subjects `bench.>`, \
         dedup off: no record carries a Msg-Id), removed after the case"
    );
    let now = Instant::now();
    Ok(Setup {
        root,
        failures: Vec::new(),
        started: now,
        origin: now,
    })
}

// ---------------------------------------------------------------------------------
// The engine, the stream and the consumer as every case sets them up.

/// Runs `work` on a fresh engine with `shards` shards over `dir`, stops the engine
/// and removes `dir` (unless `keep`).
fn with_engine<T>(
    dir: &Path,
    shards: usize,
    keep: bool,
    work: impl FnOnce(&Streams) -> Result<T, String>,
) -> Result<T, String> {
    let engine = report::Engine::start(shards, "streams", |rt| Streams::open(rt, dir))?;
    let result = work(&engine.model);
    let stopped = engine.stop();
    if !keep {
        let _ = std::fs::remove_dir_all(dir);
    }
    let value = result?;
    stopped?;
    Ok(value)
}

fn stream_config(partitions: u32, policy: Policy) -> StreamConfig {
    StreamConfig {
        partitions,
        durability: policy.durability(),
        dedup_window: Duration::ZERO,
        ..StreamConfig::new(STREAM, &["bench.>"])
    }
}

/// How the consumer acknowledges.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ack {
    /// `AckPolicy::None`: nothing to acknowledge.
    None,
    /// `AckPolicy::Explicit`, `ack()` on every message.
    Each,
    /// `AckPolicy::Explicit`, `Consumer::ack_all` on every fetched batch.
    Batch,
}

impl Ack {
    fn name(self) -> &'static str {
        match self {
            Ack::None => "none",
            Ack::Each => "explicit, ack() each",
            Ack::Batch => "explicit, ack_all() per fetch",
        }
    }

    fn tag(self) -> &'static str {
        match self {
            Ack::None => "none",
            Ack::Each => "each",
            Ack::Batch => "all",
        }
    }
}

fn consumer_config(ack: Ack) -> ConsumerConfig {
    ConsumerConfig {
        ack: match ack {
            Ack::None => AckPolicy::None,
            Ack::Each | Ack::Batch => AckPolicy::Explicit,
        },
        max_ack_pending: ACK_PENDING,
        deliver: DeliverPolicy::All,
        ..ConsumerConfig::default()
    }
}

/// What both sides of a run agree on.
#[derive(Debug, Clone, Copy)]
struct Spec {
    partitions: u32,
    payload: usize,
    /// How the consumer acknowledges.
    ack: Ack,
    /// Latency case: stamps are send times from this origin, recorded on receipt.
    origin: Option<Instant>,
}

// ---------------------------------------------------------------------------------
// Verification: what the producer was told, and what the consumer received.

#[derive(Debug, Clone, Default)]
struct PartAcks {
    count: u64,
    min: u64,
    max: u64,
    /// One bit per offset acknowledged (a second ack of one offset is an error).
    bits: Vec<u64>,
}

/// The acknowledgements the producer got, per partition.
#[derive(Debug, Clone)]
struct Acks {
    parts: Vec<PartAcks>,
    /// Records refused with `Backpressure` (not stored; the consumer must not see them).
    refused: u64,
}

impl Acks {
    fn new(partitions: u32) -> Self {
        Self {
            parts: vec![PartAcks::default(); partitions as usize],
            refused: 0,
        }
    }

    fn add(&mut self, results: Vec<Result<PublishAck, StreamError>>) -> Result<(), String> {
        for result in results {
            match result {
                Ok(ack) if ack.duplicate => {
                    return Err(format!("record acknowledged as a duplicate: {ack:?}"))
                }
                Ok(ack) => self.add_one(ack.partition, ack.offset)?,
                Err(StreamError::Backpressure) => self.refused += 1,
                Err(error) => return Err(format!("publish failed: {error}")),
            }
        }
        Ok(())
    }

    fn add_one(&mut self, partition: u32, offset: u64) -> Result<(), String> {
        let n = self.parts.len();
        let part = self
            .parts
            .get_mut(partition as usize)
            .ok_or_else(|| format!("acknowledged in partition {partition} of {n}"))?;
        let word = usize::try_from(offset / 64).map_err(|_| format!("offset {offset}"))?;
        if part.bits.len() <= word {
            part.bits.resize(word + 1, 0);
        }
        let bit = 1u64 << (offset % 64);
        if part.bits[word] & bit != 0 {
            return Err(format!(
                "partition {partition}: offset {offset} acknowledged twice"
            ));
        }
        part.bits[word] |= bit;
        if part.count == 0 {
            (part.min, part.max) = (offset, offset);
        } else {
            (part.min, part.max) = (part.min.min(offset), part.max.max(offset));
        }
        part.count += 1;
        Ok(())
    }

    fn total(&self) -> u64 {
        self.parts.iter().map(|p| p.count).sum()
    }

    /// Every partition's acknowledged offsets are distinct (checked as they came) and
    /// without a gap, from 0: exactly `0..count`.
    fn check(&self) -> Result<(), String> {
        for (p, part) in self.parts.iter().enumerate() {
            if part.count > 0 && (part.min != 0 || part.max - part.min + 1 != part.count) {
                return Err(format!(
                    "partition {p}: {} offsets acknowledged, from {} to {}: a gap",
                    part.count, part.min, part.max
                ));
            }
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Default)]
struct PartGot {
    count: u64,
    first: Option<u64>,
    last: Option<u64>,
    stamp: Option<u64>,
}

/// What the consumer received, per partition, checked as it came.
#[derive(Debug, Clone)]
struct Received {
    parts: Vec<PartGot>,
    payload: usize,
    count: u64,
    bytes: u64,
}

impl Received {
    fn new(spec: &Spec) -> Self {
        Self {
            parts: vec![PartGot::default(); spec.partitions as usize],
            payload: spec.payload,
            count: 0,
            bytes: 0,
        }
    }

    /// Checks and counts one message; returns its stamp.
    fn take(&mut self, p: u32, offset: u64, payload: &[u8]) -> Result<u64, String> {
        let n = self.parts.len();
        let part = self
            .parts
            .get_mut(p as usize)
            .ok_or_else(|| format!("received from partition {p} of {n}"))?;
        if payload.len() != self.payload {
            let len = payload.len();
            return Err(format!("partition {p} offset {offset}: payload of {len} B"));
        }
        let stamp = payload
            .get(..STAMP_BYTES)
            .and_then(|b| <[u8; STAMP_BYTES]>::try_from(b).ok())
            .map(u64::from_le_bytes)
            .ok_or_else(|| format!("partition {p} offset {offset}: no stamp"))?;
        if let Some(last) = part.last.filter(|&l| offset <= l) {
            return Err(format!(
                "partition {p}: offset {offset} received after {last} (duplicate or out of order)"
            ));
        }
        if let Some(before) = part.stamp.filter(|&s| stamp <= s) {
            return Err(format!(
                "partition {p} offset {offset}: payload stamp {stamp} after {before} (out of publish order)"
            ));
        }
        part.first.get_or_insert(offset);
        (part.last, part.stamp) = (Some(offset), Some(stamp));
        part.count += 1;
        self.count += 1;
        self.bytes += payload.len() as u64;
        Ok(stamp)
    }

    /// Received exactly what was acknowledged: per partition the same count, first and
    /// last offset (offsets strictly increase as received, and the acknowledged ones
    /// have no gap, so the sets are equal).
    fn verify(&self, acks: &Acks) -> Result<(), String> {
        acks.check()?;
        for (p, (got, acked)) in self.parts.iter().zip(&acks.parts).enumerate() {
            let span = (acked.count > 0).then_some((acked.min, acked.max));
            let seen = got.first.zip(got.last);
            if got.count != acked.count || seen != span {
                return Err(format!(
                    "partition {p}: received {} records (offsets {seen:?}), {} acknowledged \
                     (offsets {span:?}): records lost or duplicated",
                    got.count, acked.count
                ));
            }
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------
// The producer and the consumer.

/// What the producer did.
struct Produced {
    acks: Acks,
    last_ack: Instant,
    /// `publish_with` calls refused (the shard's queue was full); retried.
    submits_refused: u64,
    /// `publish()` call → its answer (latency cases).
    publish_ns: Option<Histogram<u64>>,
}

impl Produced {
    fn new(partitions: u32) -> Self {
        Self {
            acks: Acks::new(partitions),
            last_ack: Instant::now(),
            submits_refused: 0,
            publish_ns: None,
        }
    }

    /// Waits for one batch's answers.
    fn answer(&mut self, rx: &mpsc::Receiver<Vec<PublishResult>>) -> Result<(), String> {
        let results = rx
            .recv_timeout(STALL)
            .map_err(|_| format!("no answer to a publish batch within {STALL:?}: stalled"))?;
        self.last_ack = Instant::now();
        self.acks.add(results)
    }
}

type PublishResult = Result<PublishAck, StreamError>;

/// `n` records stamped `first..first + n`, sharing one buffer.
fn batch(first: u64, n: usize, payload: usize) -> Vec<Publish> {
    let mut buf = BytesMut::with_capacity(n * payload);
    for seq in first..first + n as u64 {
        buf.put_u64_le(seq);
        buf.put_bytes(0xA5, payload - STAMP_BYTES);
    }
    let buf = buf.freeze();
    (0..n)
        .map(|i| Publish::new(SUBJECT, buf.slice(i * payload..(i + 1) * payload)))
        .collect()
}

/// Publishes batches of `BATCH_RECORDS`, at most `BATCHES_IN_FLIGHT` unanswered, until
/// `deadline` or `cap` records; then waits for every answer.
fn produce_pipelined(
    streams: &Streams,
    spec: &Spec,
    deadline: Instant,
    cap: u64,
) -> Result<Produced, String> {
    let (tx, rx) = mpsc::channel();
    let mut out = Produced::new(spec.partitions);
    let (mut seq, mut in_flight) = (0u64, 0usize);
    while seq < cap && Instant::now() < deadline {
        while in_flight >= BATCHES_IN_FLIGHT {
            out.answer(&rx)?;
            in_flight -= 1;
        }
        let n = BATCH_RECORDS.min(usize::try_from(cap - seq).unwrap_or(BATCH_RECORDS));
        let tx = tx.clone();
        let done = move |results| {
            let _ = tx.send(results);
        };
        match streams.publish_with(batch(seq, n, spec.payload), done) {
            Ok(()) => {
                seq += n as u64;
                in_flight += 1;
            }
            Err(StreamError::Backpressure) => {
                out.submits_refused += 1;
                std::thread::sleep(Duration::from_micros(50));
            }
            Err(error) => return Err(format!("publish_with: {error}")),
        }
    }
    while in_flight > 0 {
        out.answer(&rx)?;
        in_flight -= 1;
    }
    out.acks.check()?;
    Ok(out)
}

/// Publishes one record at a time with `publish()`, its send time as the stamp, until
/// `deadline` or `cap` records.
fn produce_one_by_one(
    streams: &Streams,
    spec: &Spec,
    deadline: Instant,
    cap: u64,
) -> Result<Produced, String> {
    let origin = spec.origin.ok_or("latency case without an origin")?;
    let mut out = Produced::new(spec.partitions);
    let mut publish_ns = latency_histogram()?;
    let mut sent = 0u64;
    let filler = vec![0xA5u8; spec.payload - STAMP_BYTES];
    while sent < cap && Instant::now() < deadline {
        let mut payload = BytesMut::with_capacity(spec.payload);
        payload.put_u64_le(nanos(origin.elapsed()));
        payload.put_slice(&filler);
        let at = Instant::now();
        let result = streams.publish(Publish::new(SUBJECT, payload.freeze()));
        publish_ns.saturating_record(nanos(at.elapsed()));
        out.last_ack = Instant::now();
        if matches!(result, Err(StreamError::Backpressure)) {
            std::thread::sleep(Duration::from_micros(50));
        }
        out.acks.add(vec![result])?;
        sent += 1;
    }
    out.acks.check()?;
    out.publish_ns = Some(publish_ns);
    Ok(out)
}

/// 1 ns to 100 s at 3 significant digits (`saturating_record` clamps above; it does
/// not grow an auto-resizing histogram).
fn latency_histogram() -> Result<Histogram<u64>, String> {
    Histogram::<u64>::new_with_bounds(1, 100_000_000_000, 3).map_err(|e| e.to_string())
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// What the consumer did.
struct Consumed {
    received: Received,
    last_at: Instant,
    /// Publish → deliver, ns (latency cases).
    latency_ns: Option<Histogram<u64>>,
    /// `ack()` calls refused (the shard's queue was full); retried.
    acks_refused: u64,
}

/// Drains `consumer` until it received `target` records (the producer sets it once it
/// knows; `u64::MAX` until then), checking each; then looks briefly for extras. Fails
/// when no record came for `STALL` while some were due.
fn consume(consumer: &Consumer, spec: &Spec, target: &AtomicU64) -> Result<Consumed, String> {
    let mut out = Consumed {
        received: Received::new(spec),
        last_at: Instant::now(),
        latency_ns: None,
        acks_refused: 0,
    };
    if spec.origin.is_some() {
        out.latency_ns = Some(latency_histogram()?);
    }
    let mut progress = Instant::now();
    while out.received.count < target.load(Ordering::Acquire) {
        // Once every record is acknowledged (the target is known), the rest are stored
        // and due at once: a shorter silence means lost records.
        let due = target.load(Ordering::Acquire);
        let quiet = if due == u64::MAX { STALL } else { DRAIN_QUIET };
        if progress.elapsed() > quiet {
            let due = if due == u64::MAX {
                "more".to_owned()
            } else {
                due.to_string()
            };
            return Err(format!(
                "no record for {quiet:?}: received {} of {due} (lost records or a stall)",
                out.received.count
            ));
        }
        let messages = consumer
            .fetch(FETCH_MAX, Duration::from_millis(20))
            .map_err(|e| format!("fetch: {e}"))?;
        if messages.is_empty() {
            continue;
        }
        (out.last_at, progress) = (Instant::now(), Instant::now());
        for m in &messages {
            out.take(m, spec)?;
        }
        if spec.ack == Ack::Batch {
            out.ack_retrying(|| consumer.ack_all(&messages))?;
        }
    }
    let extra = consumer
        .fetch(FETCH_MAX, Duration::from_millis(50))
        .map_err(|e| format!("fetch: {e}"))?;
    if let Some(m) = extra.first() {
        return Err(format!(
            "{} record(s) beyond the {} acknowledged, first: partition {} offset {}",
            extra.len(),
            out.received.count,
            m.partition,
            m.offset
        ));
    }
    Ok(out)
}

impl Consumed {
    fn take(&mut self, m: &StreamMessage, spec: &Spec) -> Result<(), String> {
        let stamp = self.received.take(m.partition, m.offset, &m.payload)?;
        if let (Some(origin), Some(h)) = (spec.origin, self.latency_ns.as_mut()) {
            h.saturating_record(nanos(origin.elapsed()).saturating_sub(stamp));
        }
        if spec.ack != Ack::Each {
            return Ok(());
        }
        self.ack_retrying(|| m.ack())
    }

    /// Acks with `ack`, retrying while the engine refuses with `Backpressure`.
    fn ack_retrying(&mut self, ack: impl Fn() -> Result<(), StreamError>) -> Result<(), String> {
        let give_up = Instant::now() + STALL;
        loop {
            match ack() {
                Ok(()) => return Ok(()),
                Err(StreamError::Backpressure) if Instant::now() < give_up => {
                    self.acks_refused += 1;
                    std::thread::yield_now();
                }
                Err(error) => return Err(format!("ack: {error}")),
            }
        }
    }
}

/// Subscribes, then runs `produce` on one thread and the consumer on another; waits for
/// both and checks the consumer got exactly what the producer was told is stored.
/// Returns both sides and the instant the load started.
fn drive<P>(
    streams: &Streams,
    spec: &Spec,
    produce: P,
) -> Result<(Produced, Consumed, Instant), String>
where
    P: FnOnce(&Streams, Instant) -> Result<Produced, String> + Send,
{
    let consumer = streams
        .subscribe(STREAM, consumer_config(spec.ack))
        .map_err(|e| format!("subscribe: {e}"))?;
    let target = AtomicU64::new(u64::MAX);
    let started = Instant::now();
    let (produced, consumed) = std::thread::scope(|scope| {
        let target = &target;
        let reader = scope.spawn(move || {
            let consumed = consume(&consumer, spec, target);
            drop(consumer);
            consumed
        });
        let writer = scope.spawn(|| produce(streams, started));
        let produced = writer
            .join()
            .unwrap_or_else(|_| Err("producer panicked".into()));
        // On a producer failure, tell the consumer to stop at once.
        let total = produced.as_ref().map_or(0, |p| p.acks.total());
        target.store(total, Ordering::Release);
        let consumed = reader
            .join()
            .unwrap_or_else(|_| Err("consumer panicked".into()));
        (produced, consumed)
    });
    let produced = produced?;
    let consumed = consumed?;
    consumed.received.verify(&produced.acks)?;
    Ok((produced, consumed, started))
}

// ---------------------------------------------------------------------------------
// 1. Throughput.

#[derive(Debug, Clone, Copy)]
struct ThroughputCase {
    shards: usize,
    payload: usize,
    policy: Policy,
    ack: Ack,
}

impl ThroughputCase {
    fn partitions(&self) -> u32 {
        u32::try_from(self.shards * 2).unwrap_or(u32::MAX)
    }

    fn name(&self) -> String {
        format!(
            "throughput-{}sh-{}B-{}-ack-{}",
            self.shards,
            self.payload,
            self.policy.name(),
            self.ack.tag()
        )
    }
}

#[derive(Debug, Clone)]
struct ThroughputRun {
    published: u64,
    refused: u64,
    publish_s: f64,
    consumed: u64,
    consume_s: f64,
    bytes: u64,
}

impl ThroughputRun {
    fn published_per_s(&self) -> f64 {
        self.published as f64 / self.publish_s
    }

    fn consumed_per_s(&self) -> f64 {
        self.consumed as f64 / self.consume_s
    }

    fn mb_per_s(&self) -> f64 {
        self.bytes as f64 / self.consume_s / 1e6
    }
}

fn throughput_cases() -> Vec<ThroughputCase> {
    let mut cases = Vec::new();
    for shards in [1, 2] {
        for payload in [64, 1024] {
            for policy in [Policy::None, Policy::Batch] {
                cases.push(ThroughputCase {
                    shards,
                    payload,
                    policy,
                    ack: Ack::None,
                });
            }
        }
    }
    for ack in [Ack::Each, Ack::Batch] {
        cases.push(ThroughputCase {
            shards: 2,
            payload: 64,
            policy: Policy::None,
            ack,
        });
    }
    cases
}

fn run_throughput(
    options: &Options,
    dir: &Path,
    case: &ThroughputCase,
) -> Result<ThroughputRun, String> {
    let spec = Spec {
        partitions: case.partitions(),
        payload: case.payload,
        ack: case.ack,
        origin: None,
    };
    let cap = options
        .messages_max
        .min(options.bytes_max / case.payload as u64)
        .max(1);
    with_engine(dir, case.shards, false, |streams| {
        streams
            .create(stream_config(spec.partitions, case.policy))
            .map_err(|e| format!("create: {e}"))?;
        let produce = |streams: &Streams, started: Instant| {
            produce_pipelined(streams, &spec, started + options.duration(), cap)
        };
        let (produced, consumed, started) = drive(streams, &spec, produce)?;
        if produced.submits_refused > 0 || consumed.acks_refused > 0 {
            eprintln!(
                "  {}: publish_with refused {} times, ack refused {} times (queues full; retried)",
                case.name(),
                produced.submits_refused,
                consumed.acks_refused
            );
        }
        Ok(ThroughputRun {
            published: produced.acks.total(),
            refused: produced.acks.refused,
            publish_s: (produced.last_ack - started).as_secs_f64(),
            consumed: consumed.received.count,
            consume_s: (consumed.last_at - started).as_secs_f64(),
            bytes: consumed.received.bytes,
        })
    })
}

fn throughput_section(options: &Options, setup: &mut Setup) {
    let cases = throughput_cases();
    if !cases.iter().any(|c| options.wants(&c.name())) {
        return;
    }
    let mut samples: Vec<Vec<ThroughputRun>> = vec![Vec::new(); cases.len()];
    for rep in 0..options.repeat {
        for (case, runs) in cases.iter().zip(&mut samples) {
            let tag = format!("{}-{rep}", case.name());
            if !options.wants(&tag) {
                continue;
            }
            setup.progress(&tag);
            match run_throughput(options, &setup.root.join(&tag), case) {
                Ok(run) => runs.push(run),
                Err(error) => {
                    eprintln!("  {tag} FAILED: {error}");
                    setup.failures.push(format!("{tag}: {error}"));
                }
            }
        }
    }
    println!("\n## 1. Publish → consume throughput (embedded)\n");
    println!(
        "| shards | partitions | payload | durability | consumer acks | published msgs/s | \
         consumed msgs/s (min–max) | consumed MB/s | records per run | refused (backpressure) | \
         2 shards ÷ 1 shard (consumed) |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    for (case, runs) in cases.iter().zip(&samples) {
        print_throughput_row(case, runs, &cases, &samples);
    }
    print_throughput_notes(options, &cases, &samples);
}

fn med(runs: &[ThroughputRun], f: impl Fn(&ThroughputRun) -> f64) -> f64 {
    median(&runs.iter().map(f).collect::<Vec<_>>())
}

/// The runs of the case like `case` but with `shards` shards and acks `ack`.
fn runs_of<'a>(
    case: &ThroughputCase,
    shards: usize,
    ack: Ack,
    cases: &[ThroughputCase],
    samples: &'a [Vec<ThroughputRun>],
) -> &'a [ThroughputRun] {
    cases
        .iter()
        .zip(samples)
        .find(|(c, _)| {
            c.shards == shards
                && c.payload == case.payload
                && c.policy == case.policy
                && c.ack == ack
        })
        .map_or(&[], |(_, runs)| runs.as_slice())
}

fn print_throughput_row(
    case: &ThroughputCase,
    runs: &[ThroughputRun],
    cases: &[ThroughputCase],
    samples: &[Vec<ThroughputRun>],
) {
    let head = format!(
        "| {} | {} | {} | {} | {} |",
        case.shards,
        case.partitions(),
        bytes(case.payload as f64),
        case.policy.name(),
        case.ack.name()
    );
    if runs.is_empty() {
        println!("{head} not run (filtered) or failed: see stderr |");
        return;
    }
    let consumed = med(runs, ThroughputRun::consumed_per_s);
    let ratio = if case.ack != Ack::None {
        let plain = med(runs_of(case, case.shards, Ack::None, cases, samples), |r| {
            r.consumed_per_s()
        });
        format!("÷ same with acks none: {}", opt(consumed / plain, 2))
    } else if case.shards == 2 {
        let one = med(runs_of(case, 1, Ack::None, cases, samples), |r| {
            r.consumed_per_s()
        });
        format!("**{}×**", opt(consumed / one, 2))
    } else {
        "(baseline)".to_owned()
    };
    println!(
        "{head} {} | {} | {:.0} | {:.0} | {:.0} | {ratio} |",
        millions(med(runs, ThroughputRun::published_per_s)),
        spread(runs, ThroughputRun::consumed_per_s),
        med(runs, ThroughputRun::mb_per_s),
        med(runs, |r| r.consumed as f64),
        med(runs, |r| r.refused as f64),
    );
}

fn print_throughput_notes(
    options: &Options,
    cases: &[ThroughputCase],
    samples: &[Vec<ThroughputRun>],
) {
    println!(
        "\nOne producer thread publishes batches of {BATCH_RECORDS} keyless records with \
         `publish_with` (spread over the partitions in turn), at most {BATCHES_IN_FLIGHT} \
         batches unanswered, for {} s or its record/byte bound; one consumer thread (an \
         ephemeral consumer from offset 0, `max_ack_pending` {ACK_PENDING}) drains with \
         `fetch({FETCH_MAX}, 20 ms)`. Partitions = 2 × shards. Published msgs/s: records \
         acknowledged ÷ time to the last answer; consumed: records received ÷ time to the \
         last one (both from the start of the load). MB/s counts payload bytes. `batch` = \
         group commit with max_delay 2 ms, max_bytes 1 MiB. Every run: each acknowledged \
         record received exactly once, offsets strictly increasing per partition, payload \
         stamps in publish order; nothing else received. The explicit-ack rows ack every \
         message, one `ack()` call each, or all of a `fetch` with one `ack_all()`.",
        options.seconds
    );
    let goal = ThroughputCase {
        shards: 2,
        payload: 64,
        policy: Policy::None,
        ack: Ack::None,
    };
    let two = med(runs_of(&goal, 2, Ack::None, cases, samples), |r| {
        r.consumed_per_s()
    });
    let one = med(runs_of(&goal, 1, Ack::None, cases, samples), |r| {
        r.consumed_per_s()
    });
    let met = |value: f64, goal: f64| match value.is_nan() {
        true => "not measured",
        false if value >= goal => "met",
        false => "**not met**",
    };
    println!(
        "\nGoals (issue): ≥ 5M msgs/s at 64 B, durability none, 2 shards: consumed {} msgs/s \
         → {}. 1 → 2 shards ≥ 1.8× (same case): {}× → {}. This machine has {} cores for \
         the 2 shards plus the producer and consumer threads.",
        millions(two),
        met(two, 5e6),
        opt(two / one, 2),
        met(two / one, 1.8),
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
}

// ---------------------------------------------------------------------------------
// 2. Latency.

const LATENCY_QUANTILES: [f64; 4] = [0.5, 0.9, 0.99, 0.999];

#[derive(Debug, Clone, Copy)]
struct LatencyCase {
    shards: usize,
    payload: usize,
    policy: Policy,
}

struct LatencyRun {
    deliver_ns: Histogram<u64>,
    publish_ns: Histogram<u64>,
}

fn run_latency(
    options: &Options,
    setup: &Setup,
    dir: &Path,
    case: &LatencyCase,
) -> Result<LatencyRun, String> {
    let spec = Spec {
        partitions: u32::try_from(case.shards * 2).unwrap_or(u32::MAX),
        payload: case.payload,
        ack: Ack::None,
        origin: Some(setup.origin),
    };
    let cap = options.latency_max;
    with_engine(dir, case.shards, false, |streams| {
        streams
            .create(stream_config(spec.partitions, case.policy))
            .map_err(|e| format!("create: {e}"))?;
        let produce = |streams: &Streams, started: Instant| {
            produce_one_by_one(streams, &spec, started + options.duration(), cap)
        };
        let (produced, consumed, _) = drive(streams, &spec, produce)?;
        match (consumed.latency_ns, produced.publish_ns) {
            (Some(deliver_ns), Some(publish_ns)) => Ok(LatencyRun {
                deliver_ns,
                publish_ns,
            }),
            _ => Err("latency histograms missing".into()),
        }
    })
}

fn latency_section(options: &Options, setup: &mut Setup) {
    let cases = [Policy::None, Policy::Always].map(|policy| LatencyCase {
        shards: 2,
        payload: 64,
        policy,
    });
    if !cases
        .iter()
        .any(|c| options.wants(&format!("latency-{}", c.policy.name())))
    {
        return;
    }
    let mut samples: Vec<Vec<LatencyRun>> = cases.iter().map(|_| Vec::new()).collect();
    for rep in 0..options.repeat {
        for (case, runs) in cases.iter().zip(&mut samples) {
            let tag = format!("latency-{}-{rep}", case.policy.name());
            if !options.wants(&tag) {
                continue;
            }
            setup.progress(&tag);
            match run_latency(options, setup, &setup.root.join(&tag), case) {
                Ok(run) => runs.push(run),
                Err(error) => {
                    eprintln!("  {tag} FAILED: {error}");
                    setup.failures.push(format!("{tag}: {error}"));
                }
            }
        }
    }
    println!("\n## 2. Publish → deliver latency (one record at a time)\n");
    println!(
        "| shards | partitions | payload | durability | records | p50 µs | p90 µs | p99 µs | \
         p99.9 µs | max µs | `publish()` → ack p50 / p99 µs |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    for (case, runs) in cases.iter().zip(&samples) {
        print_latency_row(case, runs);
    }
    println!(
        "\nOne producer thread calls `publish()` (which waits for the answer) for one \
         record after another, each carrying its send time (ns since a shared `Instant`) \
         in its first 8 bytes; the consumer thread (`fetch`, acks none) records receipt \
         time − send time in an HDR histogram. {} s or {} records per run; each \
         percentile is the median over the repetitions, max the largest. The last column \
         is the producer's own wait in `publish()` (stored under the durability policy \
         and answered).",
        options.seconds, options.latency_max
    );
}

fn print_latency_row(case: &LatencyCase, runs: &[LatencyRun]) {
    let head = format!(
        "| {} | {} | {} | {} |",
        case.shards,
        case.shards * 2,
        bytes(case.payload as f64),
        case.policy.name()
    );
    if runs.is_empty() {
        println!("{head} not run (filtered) or failed: see stderr |");
        return;
    }
    let us = |h: &Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1e3;
    let quantile = |q: f64| {
        median(
            &runs
                .iter()
                .map(|r| us(&r.deliver_ns, q))
                .collect::<Vec<_>>(),
        )
    };
    let cells: Vec<String> = LATENCY_QUANTILES
        .iter()
        .map(|&q| format!("{:.1}", quantile(q)))
        .collect();
    let max = runs
        .iter()
        .map(|r| r.deliver_ns.max() as f64 / 1e3)
        .fold(0.0, f64::max);
    let publish = |q: f64| {
        median(
            &runs
                .iter()
                .map(|r| us(&r.publish_ns, q))
                .collect::<Vec<_>>(),
        )
    };
    let records: u64 = runs.iter().map(|r| r.deliver_ns.len()).sum();
    println!(
        "{head} {records} | {} | {max:.1} | {:.1} / {:.1} |",
        cells.join(" | "),
        publish(0.5),
        publish(0.99)
    );
}

// ---------------------------------------------------------------------------------
// 3. Replay.

/// One replay repetition: seconds to read everything, cold (if the cache could be
/// dropped) and warm.
struct ReplayPass {
    cold_s: Result<f64, String>,
    warm_s: f64,
    /// `Cached` (from /proc/meminfo) before and after dropping the page cache, MiB.
    cached_mib: (u64, u64),
}

fn replay_spec() -> Spec {
    Spec {
        partitions: 1,
        payload: REPLAY_RECORD,
        ack: Ack::None,
        origin: None,
    }
}

/// Fills the replay stream (one partition, durability none) with `bytes` of 1 KiB
/// records; returns the acknowledgements and the partition's bytes on disk.
fn fill_replay(dir: &Path, bytes: u64) -> Result<(Acks, u64), String> {
    let spec = replay_spec();
    with_engine(dir, 1, true, |streams| {
        let config = StreamConfig {
            segment_bytes_max: REPLAY_SEGMENT,
            ..stream_config(1, Policy::None)
        };
        streams.create(config).map_err(|e| format!("create: {e}"))?;
        let cap = bytes / REPLAY_RECORD as u64;
        let produced = produce_pipelined(streams, &spec, Instant::now() + FILL_MAX, cap)?;
        if produced.acks.refused > 0 {
            return Err(format!("{} records refused", produced.acks.refused));
        }
        let info = streams.info(STREAM).map_err(|e| format!("info: {e}"))?;
        let on_disk = info.partitions.iter().map(|p| p.bytes).sum();
        Ok((produced.acks, on_disk))
    })
}

/// Reads the whole stream from offset 0 with a new consumer; seconds from `subscribe`
/// to the last record.
fn read_all(streams: &Streams, acks: &Acks) -> Result<f64, String> {
    let spec = replay_spec();
    let started = Instant::now();
    let consumer = streams
        .subscribe(STREAM, consumer_config(Ack::None))
        .map_err(|e| format!("subscribe: {e}"))?;
    let target = AtomicU64::new(acks.total());
    let consumed = consume(&consumer, &spec, &target)?;
    drop(consumer);
    consumed.received.verify(acks)?;
    Ok((consumed.last_at - started).as_secs_f64())
}

/// Restarts the engine over the filled stream (no segment mapped or read yet), drops
/// the stream's pages from the cache, reads all (cold), then reads all again (warm).
fn replay_pass(dir: &Path, acks: &Acks) -> Result<ReplayPass, String> {
    with_engine(dir, 1, true, |streams| {
        let before = cached_mib();
        let dropped = drop_page_cache(&dir.join("streams").join(STREAM));
        let after = cached_mib();
        let cold_s = match dropped {
            Ok(()) => Ok(read_all(streams, acks)?),
            Err(error) => Err(error),
        };
        let warm_s = read_all(streams, acks)?;
        Ok(ReplayPass {
            cold_s,
            warm_s,
            cached_mib: (before, after),
        })
    })
}

/// Writes the files under `dir` back (`fsync`: only clean pages can be dropped), then
/// drops the clean page cache of the whole machine (`/proc/sys/vm/drop_caches`; the
/// benches crate has no `libc` for a per-file `posix_fadvise`).
fn drop_page_cache(dir: &Path) -> Result<(), String> {
    let mut pending = vec![dir.to_path_buf()];
    while let Some(path) = pending.pop() {
        let entries = std::fs::read_dir(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        for entry in entries {
            let entry = entry.map_err(|e| format!("{}: {e}", path.display()))?;
            let kind = entry.file_type().map_err(|e| e.to_string())?;
            if kind.is_dir() {
                pending.push(entry.path());
            } else if kind.is_file() {
                std::fs::File::open(entry.path())
                    .and_then(|f| f.sync_all())
                    .map_err(|e| format!("fsync {}: {e}", entry.path().display()))?;
            }
        }
    }
    std::fs::write("/proc/sys/vm/drop_caches", "1")
        .map_err(|e| format!("cannot drop the page cache (/proc/sys/vm/drop_caches): {e}"))
}

/// `Cached` of /proc/meminfo, MiB (0 if unreadable).
fn cached_mib() -> u64 {
    report::first_line_with("/proc/meminfo", "Cached")
        .and_then(|v| v.trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kib| kib >> 10)
}

/// `memcpy` of `bytes` (both buffers faulted in first) in 1 MiB chunks; MB/s per run.
fn memcpy_mb_s(bytes: usize) -> Vec<f64> {
    let src = vec![0x5Au8; bytes];
    let mut dst = vec![0xA5u8; bytes];
    (0..MEMCPY_RUNS)
        .map(|_| {
            let at = Instant::now();
            for (d, s) in dst.chunks_mut(MEMCPY_CHUNK).zip(src.chunks(MEMCPY_CHUNK)) {
                d.copy_from_slice(s);
            }
            std::hint::black_box(&mut dst);
            bytes as f64 / at.elapsed().as_secs_f64() / 1e6
        })
        .collect()
}

fn replay_section(options: &Options, setup: &mut Setup) {
    if !options.wants("replay") {
        return;
    }
    let dir = setup.root.join("replay");
    setup.progress("replay fill");
    let filled = fill_replay(&dir, options.replay_bytes);
    let (acks, on_disk) = match filled {
        Ok(filled) => filled,
        Err(error) => {
            eprintln!("  replay fill FAILED: {error}");
            setup.failures.push(format!("replay fill: {error}"));
            let _ = std::fs::remove_dir_all(&dir);
            return;
        }
    };
    let payload = acks.total() * REPLAY_RECORD as u64;
    setup.progress("memcpy baseline");
    let memcpy = memcpy_mb_s(usize::try_from(payload).unwrap_or(0));
    let mut passes = Vec::new();
    for rep in 0..options.repeat {
        setup.progress(&format!("replay-{rep}"));
        match replay_pass(&dir, &acks) {
            Ok(pass) => passes.push(pass),
            Err(error) => {
                eprintln!("  replay-{rep} FAILED: {error}");
                setup.failures.push(format!("replay-{rep}: {error}"));
            }
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    print_replay(&acks, on_disk, &memcpy, &passes);
}

fn print_replay(acks: &Acks, on_disk: u64, memcpy: &[f64], passes: &[ReplayPass]) {
    let records = acks.total();
    let payload = (records * REPLAY_RECORD as u64) as f64;
    println!(
        "\n## 3. Replay from disk: one partition, {records} records of 1 KiB ({} of \
         payload, {} on disk in {} MiB segments)\n",
        bytes(payload),
        bytes(on_disk as f64),
        REPLAY_SEGMENT >> 20
    );
    println!("| read | MB/s (median) | min–max | runs | ÷ memcpy |");
    println!("|---|---|---|---|---|");
    let base = median(memcpy);
    let row = |name: &str, mb_s: &[f64]| {
        let min = mb_s.iter().copied().fold(f64::INFINITY, f64::min);
        let max = mb_s.iter().copied().fold(0.0, f64::max);
        println!(
            "| {name} | {:.0} | {min:.0}–{max:.0} | {} | {} |",
            median(mb_s),
            mb_s.len(),
            opt(median(mb_s) / base, 3)
        );
    };
    row("memcpy of the same bytes, 1 MiB chunks (baseline)", memcpy);
    let cold: Vec<f64> = passes
        .iter()
        .filter_map(|p| p.cold_s.as_ref().ok())
        .map(|s| payload / s / 1e6)
        .collect();
    let warm: Vec<f64> = passes.iter().map(|p| payload / p.warm_s / 1e6).collect();
    match passes.iter().find_map(|p| p.cold_s.as_ref().err()) {
        Some(error) => println!("| cold: page cache dropped first | not measured: {error} | | | |"),
        None => row("cold: page cache dropped first", &cold),
    }
    row("warm: right after the cold read", &warm);
    let cached: Vec<String> = passes
        .iter()
        .map(|p| format!("{} → {}", p.cached_mib.0, p.cached_mib.1))
        .collect();
    println!(
        "\nEach repetition restarts the runtime and reopens the streams over the same \
         directory (so no segment is mapped or read yet), fsyncs the stream's files and \
         drops the page cache by writing 1 to `/proc/sys/vm/drop_caches` (the whole \
         machine's clean cache: the benches crate has no `libc` for a per-file \
         `posix_fadvise(DONTNEED)`); `Cached` in /proc/meminfo went {} MiB. Then a new \
         ephemeral consumer (acks none, `fetch({FETCH_MAX})`) reads every record from \
         offset 0 (cold), and another one again (warm). Time runs from `subscribe` to \
         the last record; every record is checked (count, offsets in order, payload \
         stamps). MB/s counts payload bytes; memcpy copies the same number of bytes.",
        cached.join(", ")
    );
}

// ---------------------------------------------------------------------------------
// Formatting.

/// The median of `f` over `runs` in millions, with the min–max when there are several.
fn spread(runs: &[ThroughputRun], f: impl Fn(&ThroughputRun) -> f64) -> String {
    let values: Vec<f64> = runs.iter().map(f).collect();
    let min = values.iter().copied().fold(f64::INFINITY, f64::min);
    let max = values.iter().copied().fold(0.0, f64::max);
    match values.len() {
        0 | 1 => millions(median(&values)),
        _ => format!(
            "{} ({:.2}–{:.2})",
            millions(median(&values)),
            min / 1e6,
            max / 1e6
        ),
    }
}

fn millions(per_s: f64) -> String {
    if per_s.is_nan() {
        "–".to_owned()
    } else {
        format!("{:.2} M", per_s / 1e6)
    }
}

fn opt(value: f64, decimals: usize) -> String {
    if value.is_finite() {
        format!("{value:.decimals$}")
    } else {
        "–".to_owned()
    }
}

fn bytes(n: f64) -> String {
    if n >= 1048576.0 {
        format!("{:.1} MiB", n / 1048576.0)
    } else if n >= 1024.0 {
        format!("{:.0} KiB", n / 1024.0)
    } else {
        format!("{n:.0} B")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> Spec {
        Spec {
            partitions: 2,
            payload: 16,
            ack: Ack::None,
            origin: None,
        }
    }

    fn payload(stamp: u64) -> Vec<u8> {
        let mut p = stamp.to_le_bytes().to_vec();
        p.resize(16, 0);
        p
    }

    /// Acks for offsets 0..n of both partitions, and what a faithful consumer gets.
    fn faithful(n: u64) -> (Acks, Received) {
        let mut acks = Acks::new(2);
        let mut got = Received::new(&spec());
        for offset in 0..n {
            for p in 0..2 {
                acks.add_one(p, offset).unwrap();
                got.take(p, offset, &payload(offset * 2 + u64::from(p)))
                    .unwrap();
            }
        }
        (acks, got)
    }

    #[test]
    fn exactly_the_acknowledged_records_pass() {
        let (acks, got) = faithful(100);
        assert_eq!(acks.total(), 200);
        got.verify(&acks).unwrap();
    }

    #[test]
    fn a_lost_record_fails() {
        let (mut acks, got) = faithful(100);
        acks.add_one(1, 100).unwrap();
        assert!(got.verify(&acks).is_err());
        // Lost in the middle: the received offsets skip one.
        let mut acks = Acks::new(2);
        let mut got = Received::new(&spec());
        for offset in 0..10 {
            acks.add_one(0, offset).unwrap();
            if offset != 4 {
                got.take(0, offset, &payload(offset)).unwrap();
            }
        }
        assert!(got.verify(&acks).is_err());
    }

    #[test]
    fn duplicates_and_reordering_fail_as_they_arrive() {
        let mut got = Received::new(&spec());
        got.take(0, 0, &payload(1)).unwrap();
        assert!(got.take(0, 0, &payload(2)).is_err(), "same offset twice");
        let mut got = Received::new(&spec());
        got.take(0, 5, &payload(5)).unwrap();
        assert!(got.take(0, 4, &payload(6)).is_err(), "offset back");
        let mut got = Received::new(&spec());
        got.take(0, 0, &payload(5)).unwrap();
        assert!(got.take(0, 1, &payload(5)).is_err(), "stamp not after");
        assert!(got.take(2, 0, &payload(9)).is_err(), "no such partition");
        assert!(got.take(0, 9, &[0; 3]).is_err(), "wrong size");
    }

    #[test]
    fn acks_twice_or_with_a_gap_fail() {
        let mut acks = Acks::new(1);
        acks.add_one(0, 0).unwrap();
        assert!(acks.add_one(0, 0).is_err());
        acks.add_one(0, 2).unwrap();
        assert!(acks.check().is_err());
        acks.add_one(0, 1).unwrap();
        acks.check().unwrap();
        assert!(acks.add_one(1, 0).is_err());
    }
}
