//! Appends through a `ShardLog` on a real one-shard runtime: a closed loop that keeps
//! `window` single-record appends outstanding, each callback issuing the next, until a
//! deadline or a record or byte bound. Measures append → `Stored` latency of every
//! append, throughput, and the groups (write, plus sync unless `None`) the log made.
//!
//! Owns: the loop's state on the shard (an `Rc<RefCell<_>>`: callbacks run on the
//! shard, and may run inside `ShardLog::append`, so no borrow is held across it).
//! Never: issues an append past the bounds, or reports a run before every append it
//! issued has its outcome.

use std::cell::RefCell;
use std::path::Path;
use std::rc::Rc;
use std::sync::mpsc::{sync_channel, SyncSender};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use ringbroker::runtime::{Runtime, RuntimeConfig, ShardCtx};
use ringbroker::storage::codec::{encoded_len, Record};
use ringbroker::storage::{AppendOutcome, FsDir, LogConfig, ShardLog};

use super::{value_for, value_pattern, Policy};

/// How long past its deadline a run may take to drain before the report gives up.
const DRAIN_GRACE: Duration = Duration::from_secs(120);
/// The most appends one run keeps outstanding.
pub const WINDOW_MAX: usize = 1 << 16;

/// One append workload.
#[derive(Debug, Clone, Copy)]
pub struct AppendCase {
    /// The log's durability policy.
    pub policy: Policy,
    /// Value bytes of each record (one record per append; no key, no headers).
    pub record_bytes: usize,
    /// Appends kept outstanding (the "concurrent appenders"), 1..=`WINDOW_MAX`.
    pub window: usize,
    /// How long to keep issuing appends.
    pub duration: Duration,
    /// The most records to append.
    pub records_max: u64,
    /// The most log bytes to append.
    pub bytes_max: u64,
    /// The log's `groups_in_flight_max`.
    pub groups_in_flight: usize,
}

/// What one run measured.
#[derive(Debug, Clone)]
pub struct AppendRun {
    /// The case it ran.
    pub case: AppendCase,
    /// Records appended and acknowledged as stored.
    pub records: u64,
    /// Log bytes of one append (batch header and record framing included).
    pub batch_bytes: u64,
    /// Groups the log submitted (one write each; one `fdatasync` each unless `None`).
    pub groups: u64,
    /// First append to last outcome.
    pub elapsed: Duration,
    /// Append → `Stored` callback latency of every append, ns.
    pub latency_ns: Histogram<u64>,
    /// `io_uring_enter` calls the shard made during the run.
    pub uring_enters: u64,
    /// Segment files the run left (more than one: the log rolled, which syncs).
    pub segments: usize,
    /// Which repetition of its case this was, from 0 (set by the caller).
    pub repetition: usize,
}

impl AppendRun {
    /// Log bytes written.
    pub fn log_bytes(&self) -> u64 {
        self.records * self.batch_bytes
    }

    /// Records (= appends) per second.
    pub fn records_per_s(&self) -> f64 {
        self.records as f64 / self.elapsed.as_secs_f64()
    }

    /// Value bytes per second, in MB/s (10^6).
    pub fn payload_mb_per_s(&self) -> f64 {
        self.records_per_s() * self.case.record_bytes as f64 / 1e6
    }

    /// Log bytes per second, in MB/s (10^6): what the disk was asked to take.
    pub fn log_mb_per_s(&self) -> f64 {
        self.log_bytes() as f64 / self.elapsed.as_secs_f64() / 1e6
    }

    /// Appends per group: what group commit folded together.
    pub fn appends_per_group(&self) -> f64 {
        self.records as f64 / self.groups.max(1) as f64
    }

    /// Mean bytes per group: the block size of the equivalent fio job.
    pub fn group_bytes_mean(&self) -> u64 {
        self.log_bytes() / self.groups.max(1)
    }

    /// A latency quantile, µs.
    pub fn latency_us(&self, quantile: f64) -> f64 {
        self.latency_ns.value_at_quantile(quantile) as f64 / 1e3
    }
}

/// The loop's state on the shard.
struct Loop {
    log: Option<ShardLog>,
    pattern: Rc<[u8]>,
    case: AppendCase,
    batch_bytes: u64,
    deadline: Instant,
    started: Instant,
    issued: u64,
    outstanding: usize,
    stopping: bool,
    failure: Option<String>,
    latency_ns: Histogram<u64>,
    done: Option<SyncSender<Result<AppendRun, String>>>,
}

type Shared = Rc<RefCell<Loop>>;

/// Runs `case` on a fresh log in `path` (created; must not hold a log yet). Returns
/// once every issued append has its outcome.
pub fn run_append(path: &Path, case: AppendCase) -> Result<AppendRun, String> {
    if !(1..=WINDOW_MAX).contains(&case.window) {
        return Err(format!("window {} outside 1..={WINDOW_MAX}", case.window));
    }
    let pattern = value_pattern(case.record_bytes);
    let probe = Record {
        timestamp: 0,
        key: None,
        headers: &[],
        value: &pattern[..case.record_bytes],
    };
    let batch_bytes = encoded_len(&[probe]).map_err(|e| e.to_string())? as u64;
    let dir = FsDir::open(path, true).map_err(|e| format!("{}: {e}", path.display()))?;
    let runtime = Runtime::start(RuntimeConfig {
        shards: Some(1),
        ..RuntimeConfig::default()
    })
    .map_err(|e| format!("runtime: {e}"))?;
    let handle = runtime.handle();
    let enters_before = handle.stats()[0].uring_enters;
    let (tx, rx) = sync_channel(1);
    let spawned = handle.spawn(0, move |ctx: &mut ShardCtx| {
        start_loop(ctx, dir, case, batch_bytes, pattern, tx);
    });
    spawned.map_err(|e| format!("spawn: {e}"))?;
    let result = rx
        .recv_timeout(case.duration + DRAIN_GRACE)
        .map_err(|e| format!("append run did not finish: {e}"))?;
    let enters_after = handle.stats()[0].uring_enters;
    if let Err(error) = runtime.shutdown() {
        eprintln!("runtime shutdown: {error}");
    }
    let mut run = result?;
    run.uring_enters = enters_after.saturating_sub(enters_before);
    run.segments = count_segments(path);
    Ok(run)
}

/// On the shard: opens the log and issues the first `window` appends.
fn start_loop(
    ctx: &mut ShardCtx,
    dir: FsDir,
    case: AppendCase,
    batch_bytes: u64,
    pattern: Vec<u8>,
    done: SyncSender<Result<AppendRun, String>>,
) {
    let log = match ShardLog::open(
        dir,
        LogConfig {
            durability: case.policy.durability(),
            groups_in_flight_max: case.groups_in_flight,
            ..LogConfig::default()
        },
    ) {
        Ok((log, _)) => log,
        Err(error) => {
            let _ = done.send(Err(format!("open log: {error}")));
            return;
        }
    };
    let now = Instant::now();
    let shared: Shared = Rc::new(RefCell::new(Loop {
        log: Some(log),
        pattern: pattern.into(),
        case,
        batch_bytes,
        deadline: now + case.duration,
        started: now,
        issued: 0,
        outstanding: 0,
        stopping: false,
        failure: None,
        latency_ns: Histogram::new_with_bounds(1, 600_000_000_000, 3).expect("valid bounds"),
        done: Some(done),
    }));
    for _ in 0..case.window {
        issue(ctx, &shared);
    }
    finish_if_done(&shared);
}

/// Issues one append unless the loop is stopping or a bound is reached.
fn issue(ctx: &mut ShardCtx, shared: &Shared) {
    let (log, pattern, record_bytes) = {
        let mut s = shared.borrow_mut();
        let over = s.issued >= s.case.records_max
            || s.issued * s.batch_bytes >= s.case.bytes_max
            || Instant::now() >= s.deadline;
        s.stopping |= over;
        let Some(log) = s.log.clone() else { return };
        if s.stopping {
            return;
        }
        s.issued += 1;
        s.outstanding += 1;
        (log, s.pattern.clone(), s.case.record_bytes)
    };
    let offset = log.with_log(|l| l.next_offset());
    let record = Record {
        timestamp: offset as i64,
        key: None,
        headers: &[],
        value: value_for(&pattern, offset, record_bytes),
    };
    let me = shared.clone();
    let sent = Instant::now();
    let appended = log.append(ctx, &[record], move |ctx, outcome| {
        on_outcome(ctx, &me, sent, outcome);
    });
    if let Err(error) = appended {
        let mut s = shared.borrow_mut();
        s.outstanding -= 1;
        s.failure.get_or_insert(format!("append refused: {error}"));
        s.stopping = true;
    }
}

/// An append's outcome: record its latency, issue the next append, finish if done.
fn on_outcome(ctx: &mut ShardCtx, shared: &Shared, sent: Instant, outcome: AppendOutcome) {
    let latency = sent.elapsed().as_nanos() as u64;
    {
        let mut s = shared.borrow_mut();
        s.outstanding -= 1;
        s.latency_ns.saturating_record(latency.max(1));
        if let AppendOutcome::Failed { error, .. } = outcome {
            s.failure.get_or_insert(format!("append failed: {error}"));
            s.stopping = true;
        }
    }
    issue(ctx, shared);
    finish_if_done(shared);
}

/// Once stopping with nothing outstanding: sends the run and drops the log.
fn finish_if_done(shared: &Shared) {
    let mut s = shared.borrow_mut();
    if !s.stopping || s.outstanding > 0 {
        return;
    }
    let Some(done) = s.done.take() else { return };
    let elapsed = s.started.elapsed();
    let log = s.log.take();
    let result = match s.failure.take() {
        Some(failure) => Err(failure),
        None => Ok(AppendRun {
            case: s.case,
            records: s.issued,
            batch_bytes: s.batch_bytes,
            groups: log.as_ref().map_or(0, ShardLog::groups),
            elapsed,
            latency_ns: std::mem::replace(&mut s.latency_ns, Histogram::new(1).expect("valid")),
            uring_enters: 0,
            segments: 0,
            repetition: 0,
        }),
    };
    let _ = done.send(result);
}

fn count_segments(path: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(path) else {
        return 0;
    };
    entries
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().ends_with(".log"))
        .count()
}
