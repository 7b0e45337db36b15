//! Prints the exchanges-and-queues model's figures as markdown: work-queue throughput on
//! an embedded runtime (one producer thread pipelining `publish_with` batches through
//! the default exchange, 1 or 4 consumer threads on the same queue acknowledging what
//! they get), persistent messages in a durable queue and transient ones in a transient
//! queue, at prefetch 1, 100 and 1000; and the cost of routing one message through a
//! topic exchange with 10,000 and 100,000 bindings, against a naive scan of every
//! binding in the same run.
//!
//! Every run is checked: each message the producer was told is confirmed must reach a
//! consumer exactly once, nothing refused or never published may arrive, and with one
//! consumer the messages never redelivered must arrive in publish order (by a sequence
//! number in the payload); afterwards the queue must hold no ready and no unacknowledged
//! message. The routing table's answer for every key the naive scan routes must equal
//! the scan's. A lost, duplicated or reordered message, or a wrong route, makes the
//! binary exit with status 1.
//!
//! ```sh
//! cargo run --release -p ringbroker-benches --bin queue-report -- \
//!     [--seconds 2] [--repeat 3] [--messages-max 20000000] [--dir PATH] \
//!     [--filter NAME] [--quick]
//! ```
//!
//! `--quick`: 0.2 s per case, one repetition, fewer routing passes and naive keys; the
//! CI smoke run.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::{BufMut, BytesMut};
use ringbroker::queue::{
    Confirm, ConsumeOptions, Delivery, Message, QueueConfig, QueueConsumer, QueueError, Queues,
};
use ringbroker::routing::{
    naive_match, Binding, Destination, ExchangeKind, Matcher, Pattern, RoutingTable, Syntax,
    MATCH_CACHE_MAX,
};
use ringbroker::runtime::shard_for;
use ringbroker_benches::report;
use ringbroker_benches::storage::median;

const USAGE: &str = "queue-report [--seconds 2] [--repeat 3] [--messages-max 20000000]
    [--dir PATH] [--filter NAME] [--quick]

  --seconds       load per work-queue case
  --repeat        repetitions (medians are shown)
  --messages-max  messages per work-queue case at most
  --dir           where the queues are stored (default: the system temp dir)
  --filter        run only the cases whose name contains NAME (queue-persistent-c4-p100,
                  queue-transient, route-10000, route-100000, route)
  --quick         0.2 s per case, one repetition, fewer routing passes: the CI smoke run";

/// The queue every work-queue case declares, or its name with `-1`, `-2`, ... appended
/// until it is owned by the shard the case asks for.
const QUEUE: &str = "work";
/// The publishing thread's home shard: `Queues` gives threads their home in turn from
/// shard 0, and the producer is the only thread that publishes.
const PRODUCER_HOME: usize = 0;
/// Shards of every work-queue case.
const SHARDS: usize = 2;
/// Payload of every message: its sequence number (u64 LE), then filler.
const PAYLOAD: usize = 256;
/// Bytes at the head of every payload: the producer's sequence number, little endian.
const SEQ_BYTES: usize = 8;
/// The filler byte after the sequence number.
const FILLER: u8 = 0xA5;
/// Messages per `publish_with` batch.
const BATCH_MESSAGES: usize = 500;
/// Batches the producer keeps unconfirmed at most.
const BATCHES_IN_FLIGHT: usize = 8;
/// Messages published and not yet received at most: what the consumers took in the
/// last `BACKLOG_SPAN` at their average rate so far, within `BACKLOG_MIN..=BACKLOG_MAX`.
/// The producer waits above it, so a slow setting (prefetch 1) is measured in steady
/// state and does not leave seconds of backlog to drain.
const BACKLOG_SPAN: Duration = Duration::from_millis(200);
/// The backlog allowed at the start and at the slowest.
const BACKLOG_MIN: u64 = 10_000;
/// The backlog allowed at the fastest.
const BACKLOG_MAX: u64 = 200_000;
/// Deliveries one `fetch` takes at most (and never more than the prefetch).
const FETCH_MAX: usize = 1000;
/// No confirm, or no delivery while some are due, for this long: the engine stalled.
const STALL: Duration = Duration::from_secs(20);
/// No delivery for this long while every message due is confirmed: they are lost.
const DRAIN_QUIET: Duration = Duration::from_secs(5);
/// The consumers give up this long after the load ended, whatever their progress.
const DRAIN_MAX: Duration = Duration::from_secs(60);
/// How long the queue may take to show every acknowledgement applied.
const SETTLE_MAX: Duration = Duration::from_secs(5);
/// How long each consumer looks for a delivery beyond the confirmed ones at the end.
const EXTRA_LOOK: Duration = Duration::from_millis(50);
/// A case still running this long after it started (beyond `--seconds`) is hung in an
/// engine call that has no timeout (declare, consume, cancel, shutdown): the watchdog
/// ends the report with status 1.
const CASE_MAX: Duration = Duration::from_secs(150);
/// The issue's goal: 10 × the ~99k msgs/s RabbitMQ publishes to a classic durable queue.
const GOAL_PER_S: f64 = 990_000.0;
/// RabbitMQ's figure the goal is derived from.
const RABBITMQ_PER_S: f64 = 99_000.0;

/// The topic exchange of the routing part.
const EXCHANGE: &str = "bench";
/// Keys routed per "hot" pass (repeated, so after the first pass all from the cache).
const HOT_KEYS: usize = 1_000;
/// Distinct keys routed per "cold" pass (more than the cache holds, so all misses).
const COLD_KEYS: usize = 10_000;
/// A routing pass repeats its keys until it took at least this long.
const PASS_MIN: Duration = Duration::from_millis(30);
/// ... or routed this many keys.
const PASS_ROUTES_MAX: u64 = 50_000_000;
/// Coprime with 10,000 and 100,000: `k * KEY_STEP % n` walks distinct key numbers.
const KEY_STEP: usize = 7_919;

const _: () = assert!(HOT_KEYS < MATCH_CACHE_MAX && COLD_KEYS > MATCH_CACHE_MAX);
const _: () = assert!(BACKLOG_MIN > (BATCH_MESSAGES * BATCHES_IN_FLIGHT) as u64);

#[derive(Debug, Clone)]
struct Options {
    seconds: f64,
    repeat: usize,
    messages_max: u64,
    dir: Option<PathBuf>,
    /// Run only the cases whose name contains this.
    filter: String,
    /// Timed passes per routing figure (the median is shown).
    route_passes: usize,
    /// Keys the naive scan routes per pass: (10,000 bindings, 100,000 bindings).
    naive_keys: (usize, usize),
    /// Build the 100,000-binding table (not in `--quick`: building it takes ~20 s).
    route_large: bool,
}

impl Options {
    fn parse() -> Result<Self, String> {
        let mut o = Options {
            seconds: 2.0,
            repeat: 3,
            messages_max: 20_000_000,
            dir: None,
            filter: String::new(),
            route_passes: 5,
            naive_keys: (300, 30),
            route_large: true,
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
            o.route_passes = 2;
            o.naive_keys = (50, 5);
            o.route_large = false;
        }
        o.repeat = o.repeat.clamp(1, 100);
        o.seconds = o.seconds.clamp(0.01, 600.0);
        o.messages_max = o.messages_max.max(1);
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
}

/// The case running now and the instant it must have ended by, for the watchdog.
static RUNNING: Mutex<Option<(String, Instant)>> = Mutex::new(None);

/// Ends the process with status 1 when a case outlives its limit (see `CASE_MAX`).
fn start_watchdog() {
    let watch = || loop {
        std::thread::sleep(Duration::from_millis(500));
        let late = match &*RUNNING.lock().unwrap_or_else(PoisonError::into_inner) {
            Some((what, by)) if Instant::now() > *by => Some(what.clone()),
            _ => None,
        };
        if let Some(what) = late {
            eprintln!(
                "queue-report FAILED: {what} did not end in time (engine hung; its data \
                 is left in place); exiting"
            );
            std::process::exit(1);
        }
    };
    if let Err(error) = std::thread::Builder::new()
        .name("watchdog".into())
        .spawn(watch)
    {
        eprintln!("queue-report: no watchdog ({error}); a hang will not be cut short");
    }
}

impl Setup {
    /// Announces the case `what` and gives it `limit` (the watchdog's).
    fn progress(&self, what: &str, limit: Duration) {
        eprintln!(
            "running {what} at {:.1} s",
            self.started.elapsed().as_secs_f64()
        );
        let by = Instant::now() + limit;
        *RUNNING.lock().unwrap_or_else(PoisonError::into_inner) = Some((what.to_owned(), by));
    }

    fn fail(&mut self, tag: &str, error: &str) {
        eprintln!("  {tag} FAILED: {error}");
        self.failures.push(format!("{tag}: {error}"));
    }
}

fn main() {
    let options = match Options::parse() {
        Ok(o) => o,
        Err(error) => {
            eprintln!("queue-report: {error}\n\n{USAGE}");
            std::process::exit(2);
        }
    };
    let mut setup = match prepare(&options) {
        Ok(s) => s,
        Err(error) => {
            eprintln!("queue-report: {error}");
            std::process::exit(2);
        }
    };
    start_watchdog();
    work_queue_section(&options, &mut setup);
    routing_section(&options, &mut setup);
    report::finish("queue-report", &setup.root, setup.started, &setup.failures);
}

/// Creates the run directory and prints the machine and the settings.
fn prepare(options: &Options) -> Result<Setup, String> {
    let root = report::run_dir(options.dir.as_deref(), "queue-report")?;
    println!("# Queue report\n");
    report::print_machine(&root);
    println!(
        "- work queue, per case: {} s of publishing or {} messages, whichever comes first, \
         then the consumers drain; {} repetition(s), medians shown",
        options.seconds, options.messages_max, options.repeat
    );
    println!(
        "- engine: embedded `Runtime` with {SHARDS} shards (pinned to cores), one `Queues`; \
         each case gets a fresh runtime, data directory and queue `{}` (owned by shard \
         {PRODUCER_HOME}, the producer's home shard) or `{}` (owned by shard {}: each \
         publish crosses shards), removed after the case",
        queue_name(PRODUCER_HOME),
        queue_name(remote_shard()),
        remote_shard()
    );
    Ok(Setup {
        root,
        failures: Vec::new(),
        started: Instant::now(),
    })
}

/// The shard that is not the producer's home.
fn remote_shard() -> usize {
    (PRODUCER_HOME + 1) % SHARDS
}

/// `QUEUE`, or `QUEUE-k` for the least k that makes it owned by shard `owner`.
fn queue_name(owner: usize) -> String {
    (0..1000)
        .map(|k| match k {
            0 => QUEUE.to_owned(),
            k => format!("{QUEUE}-{k}"),
        })
        .find(|name| shard_for(name.as_bytes(), SHARDS) == owner)
        .unwrap_or_else(|| QUEUE.to_owned())
}

// ---------------------------------------------------------------------------------
// The engine as every work-queue case sets it up.

/// Runs `work` on a fresh engine over `dir`, stops the engine and removes `dir`.
fn with_engine<T>(
    dir: &Path,
    work: impl FnOnce(&Queues) -> Result<T, String>,
) -> Result<T, String> {
    let engine = report::Engine::start(SHARDS, "queues", |rt| Queues::open(rt, dir))?;
    let result = work(&engine.model);
    let stopped = engine.stop();
    let _ = std::fs::remove_dir_all(dir);
    let value = result?;
    stopped?;
    Ok(value)
}

// ---------------------------------------------------------------------------------
// Verification: sets of sequence numbers.

/// A growable set of sequence numbers, one bit each.
#[derive(Debug, Clone, Default)]
struct Bits {
    words: Vec<u64>,
    count: u64,
}

impl Bits {
    /// Adds `seq`; false if it was there already.
    fn insert(&mut self, seq: u64) -> bool {
        let Ok(word) = usize::try_from(seq / 64) else {
            return false;
        };
        if self.words.len() <= word {
            self.words.resize(word + 1, 0);
        }
        let bit = 1u64 << (seq % 64);
        if self.words[word] & bit != 0 {
            return false;
        }
        self.words[word] |= bit;
        self.count += 1;
        true
    }

    /// Adds every member of `other`; the first member both hold, if any (then nothing
    /// after that word is added).
    fn merge(&mut self, other: &Bits) -> Result<(), u64> {
        if self.words.len() < other.words.len() {
            self.words.resize(other.words.len(), 0);
        }
        for (i, (mine, theirs)) in self.words.iter_mut().zip(&other.words).enumerate() {
            let both = *mine & *theirs;
            if both != 0 {
                return Err(i as u64 * 64 + u64::from(both.trailing_zeros()));
            }
            *mine |= *theirs;
            self.count += u64::from(theirs.count_ones());
        }
        Ok(())
    }

    /// The first number one set holds and the other does not: (number, in `self`).
    fn first_difference(&self, other: &Bits) -> Option<(u64, bool)> {
        let n = self.words.len().max(other.words.len());
        (0..n).find_map(|i| {
            let a = self.words.get(i).copied().unwrap_or(0);
            let b = other.words.get(i).copied().unwrap_or(0);
            let diff = a ^ b;
            (diff != 0).then(|| {
                let bit = diff.trailing_zeros();
                (i as u64 * 64 + u64::from(bit), a & (1 << bit) != 0)
            })
        })
    }
}

/// Received exactly the confirmed messages: consumer sets disjoint, their union equal
/// to the confirmed set.
fn verify(confirmed: &Bits, sides: &[Side]) -> Result<(), String> {
    let mut union = Bits::default();
    for (i, side) in sides.iter().enumerate() {
        if let Err(seq) = union.merge(&side.seen) {
            return Err(format!(
                "message {seq} delivered to consumer {i} and to another one: duplicated"
            ));
        }
    }
    if let Some((seq, delivered)) = union.first_difference(confirmed) {
        let what = match delivered {
            true => "delivered but never confirmed (refused or never published)",
            false => "confirmed but never delivered: lost",
        };
        return Err(format!(
            "message {seq} {what}; {} delivered, {} confirmed",
            union.count, confirmed.count
        ));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------
// The producer and the consumers.

/// What the producer and the consumers of one run agree on.
#[derive(Debug, Clone)]
struct Spec {
    queue: Arc<str>,
    persistent: bool,
    consumers: usize,
    prefetch: u32,
    /// Messages to publish at most.
    cap: u64,
}

/// What the threads of one run share.
struct Shared {
    /// Deliveries taken by all consumers so far.
    received: AtomicU64,
    /// Messages confirmed in all, once the producer is done (`u64::MAX` until then).
    target: AtomicU64,
    /// A thread failed: everyone stops.
    abort: AtomicBool,
    started: Instant,
    /// When the producer stopped publishing (its deadline).
    load_end: Instant,
}

impl Shared {
    /// Messages the producer may have published and not yet seen received, when the
    /// consumers received `received` so far.
    fn backlog_allowed(&self, received: u64) -> u64 {
        let per_s = received as f64 / self.started.elapsed().as_secs_f64().max(1e-3);
        let allowed = (per_s * BACKLOG_SPAN.as_secs_f64()) as u64;
        allowed.clamp(BACKLOG_MIN, BACKLOG_MAX)
    }
}

/// What the producer did.
struct Produced {
    confirmed: Bits,
    /// Messages refused (`Backpressure` in their confirm): not stored, never delivered.
    refused: u64,
    /// `publish_with` calls refused (the shard's queue was full); retried.
    submits_refused: u64,
    last_confirm: Instant,
}

type Answer = (u64, usize, Vec<Result<Confirm, QueueError>>);

impl Produced {
    /// Waits for one batch's confirms.
    fn answer(&mut self, rx: &mpsc::Receiver<Answer>) -> Result<(), String> {
        let (first, n, results) = rx
            .recv_timeout(STALL)
            .map_err(|_| format!("no confirm of a publish batch within {STALL:?}: stalled"))?;
        self.last_confirm = Instant::now();
        if results.len() != n {
            return Err(format!("{} confirms for a batch of {n}", results.len()));
        }
        for (seq, result) in (first..).zip(results) {
            match result {
                Ok(Confirm { queues: 1 }) => {
                    if !self.confirmed.insert(seq) {
                        return Err(format!("message {seq} confirmed twice"));
                    }
                }
                Ok(confirm) => return Err(format!("message {seq}: {confirm:?}, not 1 queue")),
                Err(QueueError::Backpressure) => self.refused += 1,
                Err(error) => return Err(format!("message {seq}: {error}")),
            }
        }
        Ok(())
    }
}

/// `n` messages numbered `first..first + n` for the default exchange, sharing a buffer.
fn batch(spec: &Spec, first: u64, n: usize) -> Vec<(String, String, Message)> {
    let mut buf = BytesMut::with_capacity(n * PAYLOAD);
    for seq in first..first + n as u64 {
        buf.put_u64_le(seq);
        buf.put_bytes(FILLER, PAYLOAD - SEQ_BYTES);
    }
    let buf = buf.freeze();
    (0..n)
        .map(|i| {
            let payload = buf.slice(i * PAYLOAD..(i + 1) * PAYLOAD);
            let message = match spec.persistent {
                true => Message::persistent(payload),
                false => Message::new(payload),
            };
            (String::new(), spec.queue.to_string(), message)
        })
        .collect()
}

/// Publishes batches of `BATCH_MESSAGES`, at most `BATCHES_IN_FLIGHT` unconfirmed and
/// `BACKLOG_MAX` not yet received, until the load ends or `cap` messages; then waits
/// for every confirm.
fn produce(queues: &Queues, spec: &Spec, shared: &Shared) -> Result<Produced, String> {
    let (tx, rx) = mpsc::channel();
    let mut out = Produced {
        confirmed: Bits::default(),
        refused: 0,
        submits_refused: 0,
        last_confirm: Instant::now(),
    };
    let (mut seq, mut in_flight) = (0u64, 0usize);
    while seq < spec.cap
        && Instant::now() < shared.load_end
        && !shared.abort.load(Ordering::Acquire)
    {
        let received = shared.received.load(Ordering::Acquire);
        let over = seq.saturating_sub(received) >= shared.backlog_allowed(received);
        if in_flight >= BATCHES_IN_FLIGHT || (over && in_flight > 0) {
            out.answer(&rx)?;
            in_flight -= 1;
            continue;
        }
        if over {
            std::thread::sleep(Duration::from_micros(100));
            continue;
        }
        let n = BATCH_MESSAGES.min(usize::try_from(spec.cap - seq).unwrap_or(BATCH_MESSAGES));
        let tx = tx.clone();
        let first = seq;
        let done = move |results| {
            let _ = tx.send((first, n, results));
        };
        match queues.publish_with(batch(spec, seq, n), false, done) {
            Ok(()) => {
                seq += n as u64;
                in_flight += 1;
            }
            Err(QueueError::Backpressure) => {
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
    Ok(out)
}

/// What one consumer received, checked as it came.
struct Side {
    seen: Bits,
    bytes: u64,
    redelivered: u64,
    last_tag: u64,
    /// Check publish order (one consumer): the last sequence number never redelivered.
    fifo: Option<Option<u64>>,
    /// When its last acknowledgement was sent.
    last_at: Instant,
}

impl Side {
    fn new(fifo: bool) -> Self {
        Self {
            seen: Bits::default(),
            bytes: 0,
            redelivered: 0,
            last_tag: 0,
            fifo: fifo.then_some(None),
            last_at: Instant::now(),
        }
    }

    fn take(&mut self, d: &Delivery) -> Result<(), String> {
        let tag = d.delivery_tag;
        let p = &d.payload;
        if p.len() != PAYLOAD || p[SEQ_BYTES..].iter().any(|&b| b != FILLER) {
            return Err(format!(
                "delivery {tag}: payload of {} B, or altered",
                p.len()
            ));
        }
        let mut raw = [0u8; SEQ_BYTES];
        raw.copy_from_slice(&p[..SEQ_BYTES]);
        let seq = u64::from_le_bytes(raw);
        if tag <= self.last_tag {
            return Err(format!("delivery tag {tag} after {}", self.last_tag));
        }
        self.last_tag = tag;
        if !self.seen.insert(seq) {
            return Err(format!("message {seq} delivered twice to one consumer"));
        }
        self.bytes += p.len() as u64;
        if d.redelivered {
            self.redelivered += 1;
        } else if let Some(last) = self.fifo.as_mut() {
            if let Some(before) = last.filter(|&l| seq <= l) {
                return Err(format!(
                    "message {seq} delivered after {before}: out of order"
                ));
            }
            *last = Some(seq);
        }
        Ok(())
    }
}

/// Acknowledges a fetched batch: each delivery with prefetch 1, else all at once.
fn ack_batch(consumer: &QueueConsumer, spec: &Spec, batch: &[Delivery]) -> Result<(), String> {
    let ack = |tag, multiple| {
        consumer
            .ack(tag, multiple)
            .map_err(|e| format!("ack {tag}: {e}"))
    };
    if spec.prefetch == 1 {
        return batch.iter().try_for_each(|d| ack(d.delivery_tag, false));
    }
    match batch.last() {
        Some(last) => ack(last.delivery_tag, true),
        None => Ok(()),
    }
}

/// Takes, checks and acknowledges deliveries until all consumers together received the
/// target; fails when none arrived anywhere for too long, or the drain took too long.
fn consume(consumer: &QueueConsumer, spec: &Spec, shared: &Shared) -> Result<Side, String> {
    let mut side = Side::new(spec.consumers == 1);
    let fetch_max = FETCH_MAX.min(spec.prefetch as usize).max(1);
    let (mut seen_total, mut progress) = (0u64, Instant::now());
    loop {
        let target = shared.target.load(Ordering::Acquire);
        let total = shared.received.load(Ordering::Acquire);
        if total >= target || shared.abort.load(Ordering::Acquire) {
            break;
        }
        if total != seen_total {
            (seen_total, progress) = (total, Instant::now());
        }
        let quiet = if target == u64::MAX {
            STALL
        } else {
            DRAIN_QUIET
        };
        let late = Instant::now() > shared.load_end + DRAIN_MAX;
        if progress.elapsed() > quiet || late {
            let due = if target == u64::MAX {
                "more".to_owned()
            } else {
                target.to_string()
            };
            return Err(format!(
                "received {total} of {due} after {:.1} s, the last {:.1} s without progress \
                 (lost messages or a stall)",
                shared.started.elapsed().as_secs_f64(),
                progress.elapsed().as_secs_f64()
            ));
        }
        let batch = consumer
            .fetch(fetch_max, Duration::from_millis(20))
            .map_err(|e| format!("fetch: {e}"))?;
        if batch.is_empty() {
            continue;
        }
        for d in &batch {
            side.take(d)?;
        }
        ack_batch(consumer, spec, &batch)?;
        side.last_at = Instant::now();
        shared
            .received
            .fetch_add(batch.len() as u64, Ordering::AcqRel);
    }
    Ok(side)
}

/// After the target: nothing more may arrive.
fn look_for_extras(consumer: &QueueConsumer) -> Result<(), String> {
    let extra = consumer
        .fetch(FETCH_MAX, EXTRA_LOOK)
        .map_err(|e| format!("fetch: {e}"))?;
    match extra.first() {
        None => Ok(()),
        Some(d) => Err(format!(
            "{} deliveries beyond the confirmed messages, first: tag {} (redelivered: {})",
            extra.len(),
            d.delivery_tag,
            d.redelivered
        )),
    }
}

/// One consumer thread's work; tells the others to stop if it fails.
fn consumer_thread(consumer: &QueueConsumer, spec: &Spec, shared: &Shared) -> Result<Side, String> {
    let result = consume(consumer, spec, shared).and_then(|side| {
        if !shared.abort.load(Ordering::Acquire) {
            look_for_extras(consumer)?;
        }
        Ok(side)
    });
    if result.is_err() {
        shared.abort.store(true, Ordering::Release);
    }
    result
}

type Threads = (
    Result<Produced, String>,
    Vec<(Result<Side, String>, QueueConsumer)>,
);

/// Runs the producer and one thread per consumer; returns both sides and the consumers
/// (still attached, so the queue's unacknowledged count can be checked).
fn run_threads(
    queues: &Queues,
    spec: &Spec,
    shared: &Shared,
    consumers: Vec<QueueConsumer>,
) -> Threads {
    std::thread::scope(|scope| {
        let readers: Vec<_> = consumers
            .into_iter()
            .map(|c| {
                scope.spawn(move || {
                    let side = consumer_thread(&c, spec, shared);
                    (side, c)
                })
            })
            .collect();
        let produced = scope
            .spawn(|| produce(queues, spec, shared))
            .join()
            .unwrap_or_else(|_| Err("producer panicked".into()));
        match &produced {
            Ok(p) => shared.target.store(p.confirmed.count, Ordering::Release),
            Err(_) => shared.abort.store(true, Ordering::Release),
        }
        let sides = readers
            .into_iter()
            .filter_map(|r| r.join().ok())
            .collect::<Vec<_>>();
        (produced, sides)
    })
}

/// Waits until the queue shows no ready and no unacknowledged message.
fn settle(queues: &Queues, queue: &str) -> Result<(), String> {
    let give_up = Instant::now() + SETTLE_MAX;
    loop {
        let info = queues
            .queue_info(queue)
            .map_err(|e| format!("queue_info: {e}"))?;
        if info.messages == 0 && info.unacked == 0 {
            return Ok(());
        }
        if Instant::now() > give_up {
            return Err(format!(
                "{SETTLE_MAX:?} after the last ack the queue still shows {} ready and {} \
                 unacknowledged messages",
                info.messages, info.unacked
            ));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

// ---------------------------------------------------------------------------------
// 1. Work-queue throughput.

#[derive(Debug, Clone, Copy)]
struct QueueCase {
    persistent: bool,
    consumers: usize,
    prefetch: u32,
    /// The queue is owned by the shard that is not the producer's home.
    remote: bool,
}

impl QueueCase {
    fn kind(&self) -> &'static str {
        match self.persistent {
            true => "persistent",
            false => "transient",
        }
    }

    fn name(&self) -> String {
        let remote = if self.remote { "-remote" } else { "" };
        format!(
            "queue-{}-c{}-p{}{remote}",
            self.kind(),
            self.consumers,
            self.prefetch
        )
    }

    fn owner(&self) -> usize {
        match self.remote {
            true => remote_shard(),
            false => PRODUCER_HOME,
        }
    }
}

#[derive(Debug, Clone)]
struct QueueRun {
    confirmed: u64,
    refused: u64,
    publish_s: f64,
    received: u64,
    consume_s: f64,
    bytes: u64,
    redelivered: u64,
}

impl QueueRun {
    fn published_per_s(&self) -> f64 {
        self.confirmed as f64 / self.publish_s
    }

    fn consumed_per_s(&self) -> f64 {
        self.received as f64 / self.consume_s
    }

    fn mb_per_s(&self) -> f64 {
        self.bytes as f64 / self.consume_s / 1e6
    }
}

fn queue_cases() -> Vec<QueueCase> {
    let mut cases = Vec::new();
    for persistent in [true, false] {
        for consumers in [1, 4] {
            for prefetch in [1, 100, 1000] {
                cases.push(QueueCase {
                    persistent,
                    consumers,
                    prefetch,
                    remote: false,
                });
            }
        }
    }
    // The best setting again with every publish crossing to the other shard.
    for persistent in [true, false] {
        cases.push(QueueCase {
            persistent,
            consumers: 1,
            prefetch: 1000,
            remote: true,
        });
    }
    cases
}

fn declare(queues: &Queues, spec: &Spec) -> Result<Vec<QueueConsumer>, String> {
    let config = QueueConfig {
        durable: spec.persistent,
        ..QueueConfig::new(&spec.queue)
    };
    queues
        .declare_queue(config)
        .map_err(|e| format!("declare: {e}"))?;
    let options = ConsumeOptions {
        prefetch: spec.prefetch,
        no_ack: false,
    };
    (0..spec.consumers)
        .map(|_| {
            queues
                .consume(&spec.queue, options)
                .map_err(|e| format!("consume: {e}"))
        })
        .collect()
}

fn run_queue_case(options: &Options, dir: &Path, case: &QueueCase) -> Result<QueueRun, String> {
    let spec = Spec {
        queue: Arc::from(queue_name(case.owner()).as_str()),
        persistent: case.persistent,
        consumers: case.consumers,
        prefetch: case.prefetch,
        cap: options.messages_max,
    };
    with_engine(dir, |queues| {
        let consumers = declare(queues, &spec)?;
        let started = Instant::now();
        let shared = Shared {
            received: AtomicU64::new(0),
            target: AtomicU64::new(u64::MAX),
            abort: AtomicBool::new(false),
            started,
            load_end: started + options.duration(),
        };
        let (produced, sides) = run_threads(queues, &spec, &shared, consumers);
        let produced = produced?;
        if sides.len() != case.consumers {
            return Err("a consumer thread panicked".into());
        }
        let (sides, consumers): (Vec<_>, Vec<_>) = sides.into_iter().unzip();
        let sides = sides.into_iter().collect::<Result<Vec<Side>, String>>()?;
        verify(&produced.confirmed, &sides)?;
        settle(queues, &spec.queue)?;
        drop(consumers);
        if produced.submits_refused > 0 {
            eprintln!(
                "  {}: publish_with refused {} times (queue full; retried)",
                case.name(),
                produced.submits_refused
            );
        }
        let last = sides.iter().map(|s| s.last_at).max().unwrap_or(started);
        Ok(QueueRun {
            confirmed: produced.confirmed.count,
            refused: produced.refused,
            publish_s: (produced.last_confirm - started).as_secs_f64(),
            received: sides.iter().map(|s| s.seen.count).sum(),
            consume_s: (last - started).as_secs_f64(),
            bytes: sides.iter().map(|s| s.bytes).sum(),
            redelivered: sides.iter().map(|s| s.redelivered).sum(),
        })
    })
}

fn work_queue_section(options: &Options, setup: &mut Setup) {
    let cases = queue_cases();
    if !cases.iter().any(|c| options.wants(&c.name())) {
        return;
    }
    let mut samples: Vec<Vec<QueueRun>> = vec![Vec::new(); cases.len()];
    for rep in 0..options.repeat {
        for (case, runs) in cases.iter().zip(&mut samples) {
            let tag = format!("{}-{rep}", case.name());
            if !options.wants(&tag) {
                continue;
            }
            setup.progress(&tag, options.duration() + CASE_MAX);
            match run_queue_case(options, &setup.root.join(&tag), case) {
                Ok(run) => runs.push(run),
                Err(error) => setup.fail(&tag, &error),
            }
        }
    }
    println!("\n## 1. Work queue: publish → deliver → ack (embedded, {SHARDS} shards, 256 B)\n");
    println!(
        "| messages | consumers | prefetch | delivered + acked msgs/s (min–max) | MB/s | \
         published msgs/s | messages per run | refused (backpressure) | redelivered | \
         ÷ goal (990k) |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for (case, runs) in cases.iter().zip(&samples) {
        print_queue_row(case, runs);
    }
    print_queue_notes(options, &cases, &samples);
}

fn med(runs: &[QueueRun], f: impl Fn(&QueueRun) -> f64) -> f64 {
    median(&runs.iter().map(f).collect::<Vec<_>>())
}

fn print_queue_row(case: &QueueCase, runs: &[QueueRun]) {
    let head = format!(
        "| {}{} | {} | {} |",
        match case.persistent {
            true => "persistent, durable queue",
            false => "transient, transient queue",
        },
        match case.remote {
            true => ", **cross-shard** publish",
            false => "",
        },
        case.consumers,
        case.prefetch
    );
    if runs.is_empty() {
        println!("{head} not run (filtered) or failed: see stderr | | | | | | |");
        return;
    }
    let consumed = med(runs, QueueRun::consumed_per_s);
    println!(
        "{head} {} | {:.0} | {} | {:.0} | {:.0} | {:.0} | {} |",
        spread(runs, QueueRun::consumed_per_s),
        med(runs, QueueRun::mb_per_s),
        thousands(med(runs, QueueRun::published_per_s)),
        med(runs, |r| r.received as f64),
        med(runs, |r| r.refused as f64),
        med(runs, |r| r.redelivered as f64),
        opt(consumed / GOAL_PER_S, 3)
    );
}

/// The best median delivered rate among `cases` (persistent or not), with its case.
fn best(
    cases: &[QueueCase],
    samples: &[Vec<QueueRun>],
    persistent: bool,
) -> Option<(f64, QueueCase)> {
    cases
        .iter()
        .zip(samples)
        .filter(|(c, runs)| c.persistent == persistent && !runs.is_empty())
        .map(|(c, runs)| (med(runs, QueueRun::consumed_per_s), *c))
        .max_by(|a, b| a.0.total_cmp(&b.0))
}

fn print_queue_notes(options: &Options, cases: &[QueueCase], samples: &[Vec<QueueRun>]) {
    println!(
        "\nOne producer thread publishes batches of {BATCH_MESSAGES} messages to the default \
         exchange (routing key = the queue's name) with `publish_with`, at most \
         {BATCHES_IN_FLIGHT} batches unconfirmed and at most what the consumers take in {} ms at \
         their rate so far ({BACKLOG_MIN}–{BACKLOG_MAX} messages) published but not yet received \
         (so a slow setting is measured in steady state, not by draining a backlog), for {} s or \
         its message bound. Each consumer thread has its own `QueueConsumer` on the queue, takes \
         deliveries with `fetch(min(prefetch, {FETCH_MAX}), 20 ms)` and acknowledges them: \
         prefetch 1 with `ack(tag, false)` each, otherwise `ack(last tag, true)` once per fetched \
         batch. Delivered + acked msgs/s: deliveries taken and acknowledged ÷ time from the start \
         of the load to the last ack sent (the consumers drain what is left after the producer \
         stops); published: messages confirmed ÷ time to the last confirm. MB/s counts payload \
         bytes. Persistent: `Message::persistent` into a durable queue, confirmed once stored (the \
         queue log is `fdatasync`ed per write group, acks are logged too); transient: \
         `Message::new` into a non-durable queue. Every run: each confirmed message delivered \
         exactly once over all consumers, nothing unconfirmed delivered, delivery tags increasing, \
         payload intact, with one consumer publish order for the messages never redelivered; \
         afterwards 0 ready and 0 unacknowledged messages.",
        BACKLOG_SPAN.as_millis(),
        options.seconds
    );
    let met = |value: f64| match value.is_nan() {
        true => "not measured",
        false if value >= GOAL_PER_S => "**met**",
        false => "**not met**",
    };
    let describe = |found: Option<(f64, QueueCase)>| match found {
        Some((rate, c)) => format!(
            "{} msgs/s ({} consumer(s), prefetch {}; {}× the goal) → {}",
            thousands(rate),
            c.consumers,
            c.prefetch,
            opt(rate / GOAL_PER_S, 2),
            met(rate)
        ),
        None => "not measured".to_owned(),
    };
    println!(
        "\nGoal (issue): ≥ 10 × the ~{}k msgs/s RabbitMQ publishes to a classic durable \
         queue = {}k msgs/s. Best persistent (durable queue): {}. For comparison, best \
         transient: {}. This machine has {} cores for the {SHARDS} shards, the producer \
         and the consumer threads.",
        RABBITMQ_PER_S / 1e3,
        GOAL_PER_S / 1e3,
        describe(best(cases, samples, true)),
        describe(best(cases, samples, false)),
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
}

// ---------------------------------------------------------------------------------
// 2. Topic routing cost.

/// Binding `i`'s pattern: `svc{i%97}.r{i%13}.e{i}`; every tenth with a `*` (for the
/// middle word, or the last, in turn), every tenth (others) ending in `#` (after the
/// second word, or after all three, in turn).
fn binding_pattern(i: usize) -> String {
    let (svc, r) = (i % 97, i % 13);
    match (i % 10, (i / 10) % 2) {
        (0, 0) => format!("svc{svc}.*.e{i}"),
        (0, _) => format!("svc{svc}.r{r}.*"),
        (1, 0) => format!("svc{svc}.r{r}.#"),
        (1, _) => format!("svc{svc}.r{r}.e{i}.#"),
        _ => format!("svc{svc}.r{r}.e{i}"),
    }
}

/// Key `k` of `count` over a table of `n` bindings: `svc{j%97}.r{j%13}.e{j}` with
/// `j = k * KEY_STEP mod n`, distinct for distinct `k < n`.
fn route_keys(n: usize, count: usize) -> Vec<String> {
    (0..count)
        .map(|k| {
            let j = k * KEY_STEP % n;
            format!("svc{}.r{}.e{j}", j % 97, j % 13)
        })
        .collect()
}

/// The table's bindings, parsed (for the naive scan), with their queues.
type Bound = Vec<(Pattern, Arc<str>)>;

/// A table with one topic exchange and `n` bindings, each to its own queue; the
/// bindings; seconds `bind` took in all.
fn build_table(n: usize) -> Result<(RoutingTable, Bound, f64), String> {
    let mut table = RoutingTable::new();
    table.add_exchange(EXCHANGE, ExchangeKind::Topic);
    let mut bound = Vec::with_capacity(n);
    let mut bind_s = 0.0;
    for i in 0..n {
        let key = binding_pattern(i);
        let queue: Arc<str> = Arc::from(format!("q{i}").as_str());
        let pattern = Pattern::parse(&key, Syntax::Topic).map_err(|e| format!("{key}: {e}"))?;
        let binding = Binding {
            destination: Destination::Queue(queue.clone()),
            routing_key: key.clone(),
            arguments: Vec::new(),
        };
        let at = Instant::now();
        table
            .bind(EXCHANGE, binding)
            .map_err(|e| format!("bind {key}: {e}"))?;
        bind_s += at.elapsed().as_secs_f64();
        bound.push((pattern, queue));
    }
    Ok((table, bound, bind_s))
}

fn route(table: &mut RoutingTable, key: &str) -> Result<Vec<Arc<str>>, String> {
    table
        .route(EXCHANGE, key, &[])
        .map_err(|e| format!("route {key}: {e}"))
}

/// The naive reference: every binding's pattern tried in turn; sorted, deduplicated.
fn naive_route(bound: &Bound, key: &str) -> Vec<Arc<str>> {
    let mut out: Vec<Arc<str>> = bound
        .iter()
        .filter(|(pattern, _)| naive_match(pattern, key))
        .map(|(_, queue)| queue.clone())
        .collect();
    out.sort();
    out.dedup();
    out
}

/// ns per routed message of one pass: `keys` in turn, repeated until `PASS_MIN`.
fn timed_pass(
    mut route_one: impl FnMut(&str) -> Result<usize, String>,
    keys: &[String],
) -> Result<f64, String> {
    let at = Instant::now();
    let mut routed = 0u64;
    let mut matched = 0usize;
    while routed == 0 || (at.elapsed() < PASS_MIN && routed < PASS_ROUTES_MAX) {
        for key in keys {
            matched = matched.wrapping_add(route_one(key)?);
        }
        routed += keys.len() as u64;
    }
    std::hint::black_box(matched);
    Ok(at.elapsed().as_nanos() as f64 / routed.max(1) as f64)
}

/// `passes` timed passes of `route_one` over `keys`, after one untimed warm-up pass.
fn passes(
    mut route_one: impl FnMut(&str) -> Result<usize, String>,
    keys: &[String],
    count: usize,
) -> Result<Vec<f64>, String> {
    for key in keys {
        route_one(key)?;
    }
    (0..count)
        .map(|_| timed_pass(&mut route_one, keys))
        .collect()
}

/// Timed passes of a bare `Matcher` holding `bound`, without its cache.
fn trie_passes(bound: &Bound, keys: &[String], count: usize) -> Result<Vec<f64>, String> {
    let mut matcher = Matcher::new();
    for (pattern, queue) in bound {
        matcher.insert(pattern, queue.clone());
    }
    passes(|key| Ok(matcher.matches_uncached(key).len()), keys, count)
}

/// One routing case's figures.
struct RouteRun {
    bindings: usize,
    bind_s: f64,
    fan_out: f64,
    hot: Vec<f64>,
    cold: Vec<f64>,
    /// The same patterns in a bare `Matcher`, `matches_uncached`, cold keys.
    trie: Vec<f64>,
    naive: Vec<f64>,
    naive_keys: usize,
}

/// The table's answer equals `want` (the naive scan's) for every key of `keys`; the
/// mean number of queues a key reaches.
fn check_routes(
    table: &mut RoutingTable,
    keys: &[String],
    want: &[Vec<Arc<str>>],
) -> Result<f64, String> {
    let mut reached = 0usize;
    for (key, want) in keys.iter().zip(want) {
        let got = route(table, key)?;
        if got != *want {
            return Err(format!(
                "key {key}: the table routes to {} queues ({:?}...), the naive scan to {} \
                 ({:?}...)",
                got.len(),
                got.first(),
                want.len(),
                want.first()
            ));
        }
        reached += got.len();
    }
    Ok(reached as f64 / keys.len().max(1) as f64)
}

fn run_route_case(options: &Options, n: usize) -> Result<RouteRun, String> {
    let (mut table, bound, bind_s) = build_table(n)?;
    let cold_keys = route_keys(n, COLD_KEYS.min(n));
    let hot_keys = route_keys(n, HOT_KEYS.min(n));
    let naive_keys = match n {
        n if n <= 10_000 => options.naive_keys.0,
        _ => options.naive_keys.1,
    };
    let naive_keys = route_keys(n, naive_keys.min(n));
    let want: Vec<_> = naive_keys.iter().map(|k| naive_route(&bound, k)).collect();
    let fan_out = check_routes(&mut table, &naive_keys, &want)?;
    let mut by_table = |key: &str| route(&mut table, key).map(|q| q.len());
    let hot = passes(&mut by_table, &hot_keys, options.route_passes)?;
    let cold = passes(&mut by_table, &cold_keys, options.route_passes)?;
    let trie = trie_passes(&bound, &cold_keys, options.route_passes)?;
    let naive_passes = options.route_passes.min(3);
    let naive = passes(
        |key| Ok(naive_route(&bound, key).len()),
        &naive_keys,
        naive_passes,
    )?;
    // The cache must answer as the trie did. Three rounds over fewer keys than it
    // holds: it empties itself at most once (in the first), so the third round is all
    // hits.
    let cached = naive_keys.len().min(HOT_KEYS);
    for _ in 0..3 {
        check_routes(&mut table, &naive_keys[..cached], &want[..cached])?;
    }
    Ok(RouteRun {
        bindings: n,
        bind_s,
        fan_out,
        hot,
        cold,
        trie,
        naive,
        naive_keys: naive_keys.len(),
    })
}

fn routing_section(options: &Options, setup: &mut Setup) {
    let sizes = [10_000usize, 100_000];
    let name = |n: usize| format!("route-{n}");
    if !sizes.iter().any(|&n| options.wants(&name(n))) {
        return;
    }
    let mut runs = Vec::new();
    let mut skipped = Vec::new();
    for n in sizes {
        if !options.wants(&name(n)) {
            continue;
        }
        if n > 10_000 && !options.route_large {
            skipped.push(n);
            continue;
        }
        setup.progress(&name(n), CASE_MAX);
        match run_route_case(options, n) {
            Ok(run) => runs.push(run),
            Err(error) => setup.fail(&name(n), &error),
        }
    }
    print_routing(options, &runs, &skipped);
}

fn print_routing(options: &Options, runs: &[RouteRun], skipped: &[usize]) {
    println!("\n## 2. Topic routing cost per message (`RoutingTable::route`, one thread)\n");
    println!(
        "| bindings | `bind` µs per binding (build) | queues per key | table, hot: {HOT_KEYS} \
         keys repeated, ns/msg | table, cold: {COLD_KEYS} distinct keys, ns/msg | trie \
         alone, uncached, same keys, ns/msg | naive scan ns/msg (keys) | naive ÷ table \
         cold | naive ÷ table hot |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for run in runs {
        let (hot, cold, naive) = (median(&run.hot), median(&run.cold), median(&run.naive));
        println!(
            "| {} | {:.2} ({:.1} s) | {:.2} | {:.0} | {:.0} | {:.0} | {:.0} ({}) | {}× | {}× |",
            thousands(run.bindings as f64),
            run.bind_s * 1e6 / run.bindings as f64,
            run.bind_s,
            run.fan_out,
            hot,
            cold,
            median(&run.trie),
            naive,
            run.naive_keys,
            opt(naive / cold, 0),
            opt(naive / hot, 0)
        );
    }
    for &n in skipped {
        let n = thousands(n as f64);
        println!("| {n} | not built in `--quick`: the build alone takes ~20 s | | | | | | | |");
    }
    if runs.is_empty() && skipped.is_empty() {
        println!("| not run (filtered) or failed: see stderr | | | | | | | | |");
    }
    println!(
        "\nOne topic exchange; binding i (each to its own queue `q{{i}}`) has the pattern \
         `svc{{i%97}}.r{{i%13}}.e{{i}}`, except every tenth has a `*` (`svc{{i%97}}.*.e{{i}}` \
         or `svc{{i%97}}.r{{i%13}}.*`, in turn) and every tenth more ends in `#` \
         (`svc{{i%97}}.r{{i%13}}.#` or `svc{{i%97}}.r{{i%13}}.e{{i}}.#`). Keys: \
         `svc{{j%97}}.r{{j%13}}.e{{j}}` for distinct j spread over the bindings. \
         `route(exchange, key, &[])` returns the queues sorted and deduplicated; the \
         matcher behind it caches up to {MATCH_CACHE_MAX} keys' results and empties the \
         cache when full. Hot: the same {HOT_KEYS} keys over and over (after a warm-up \
         pass every lookup hits the cache). Cold: {COLD_KEYS} distinct keys in turn, more \
         than the cache holds, so each lookup walks the trie (and the cache is refilled \
         and emptied as it goes). Trie alone: the same patterns in a bare `Matcher`, \
         `matches_uncached` over the cold keys (no key check, cache, sort or dedup: what \
         the table adds is the difference). Naive: every binding's pattern tried with \
         `naive_match` (parsed once in advance), then sorted and deduplicated as the \
         table does; fewer keys, as shown. Each figure is the median of {} passes (naive: \
         {}), a pass repeating its keys for at least {} ms. Checked: for every naive key \
         the table's queues equal the naive scan's, first from the trie and at the end \
         again from the cache. Build: total time in `RoutingTable::bind` ÷ bindings (a \
         binding is looked up in a hash set of the exchange's before it is indexed).",
        options.route_passes,
        options.route_passes.min(3),
        PASS_MIN.as_millis(),
    );
}

// ---------------------------------------------------------------------------------
// Formatting.

/// The median of `f` over `runs` in thousands, with the min–max when there are several.
fn spread(runs: &[QueueRun], f: impl Fn(&QueueRun) -> f64) -> String {
    let values: Vec<f64> = runs.iter().map(f).collect();
    let min = values.iter().copied().fold(f64::INFINITY, f64::min);
    let max = values.iter().copied().fold(0.0, f64::max);
    match values.len() {
        0 | 1 => thousands(median(&values)),
        _ => format!(
            "{} ({}–{})",
            thousands(median(&values)),
            thousands(min),
            thousands(max)
        ),
    }
}

/// `n` with thousands separators, rounded (or `–` if not a number).
fn thousands(n: f64) -> String {
    if !n.is_finite() {
        return "–".to_owned();
    }
    let digits = format!("{:.0}", n.abs());
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    match n < 0.0 {
        true => format!("-{out}"),
        false => out,
    }
}

fn opt(value: f64, decimals: usize) -> String {
    if value.is_finite() {
        format!("{value:.decimals$}")
    } else {
        "–".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn bits(seqs: &[u64]) -> Bits {
        let mut b = Bits::default();
        for &s in seqs {
            assert!(b.insert(s));
        }
        b
    }

    fn side(seqs: &[u64]) -> Side {
        let mut s = Side::new(false);
        s.seen = bits(seqs);
        s
    }

    #[test]
    fn exactly_the_confirmed_messages_pass() {
        let confirmed = bits(&[0, 1, 2, 3, 70, 130]);
        verify(&confirmed, &[side(&[0, 2, 130]), side(&[1, 3, 70])]).unwrap();
    }

    #[test]
    fn lost_duplicated_and_phantom_messages_fail() {
        let confirmed = bits(&[0, 1, 2, 3]);
        let lost = verify(&confirmed, &[side(&[0, 1, 3])]).unwrap_err();
        assert!(
            lost.contains("message 2") && lost.contains("lost"),
            "{lost}"
        );
        let dup = verify(&confirmed, &[side(&[0, 1, 2]), side(&[2, 3])]).unwrap_err();
        assert!(
            dup.contains("message 2") && dup.contains("duplicated"),
            "{dup}"
        );
        let phantom = verify(&confirmed, &[side(&[0, 1, 2, 3, 99])]).unwrap_err();
        assert!(phantom.contains("message 99"), "{phantom}");
        assert!(!bits(&[5]).insert(5));
    }

    fn delivery(tag: u64, seq: u64, redelivered: bool) -> Delivery {
        let mut p = seq.to_le_bytes().to_vec();
        p.resize(PAYLOAD, FILLER);
        Delivery {
            delivery_tag: tag,
            redelivered,
            queue: Arc::from(QUEUE),
            exchange: Arc::from(""),
            routing_key: Arc::from(QUEUE),
            properties: Arc::default(),
            payload: Bytes::from(p),
        }
    }

    #[test]
    fn order_tags_and_payloads_are_checked_as_they_come() {
        let mut s = Side::new(true);
        s.take(&delivery(1, 5, false)).unwrap();
        s.take(&delivery(2, 3, true)).unwrap();
        assert!(s.take(&delivery(3, 4, false)).is_err(), "out of order");
        assert!(s.take(&delivery(3, 5, false)).is_err(), "twice");
        let mut s = Side::new(false);
        s.take(&delivery(2, 5, false)).unwrap();
        assert!(
            s.take(&delivery(2, 6, false)).is_err(),
            "tag not increasing"
        );
        let mut bad = delivery(9, 9, false);
        bad.payload = Bytes::from_static(b"short");
        assert!(s.take(&bad).is_err());
    }

    #[test]
    fn patterns_parse_and_keys_are_distinct() {
        for i in 0..1000 {
            Pattern::parse(&binding_pattern(i), Syntax::Topic).unwrap();
        }
        let keys = route_keys(10_000, 10_000);
        let set: std::collections::HashSet<&String> = keys.iter().collect();
        assert_eq!(set.len(), 10_000);
        assert_eq!(thousands(1234567.0), "1,234,567");
    }
}
