//! Kill -9 crash test: a child process appends through the production path (a shard's
//! `ShardLog` over `FsDir`, many appends in flight) under `Always` and `Batch`, and
//! reports every acknowledged append through a pipe; the parent kills it with SIGKILL
//! at a random moment, reopens the log, and proves that no acknowledged record is lost,
//! duplicated or corrupt, and that offsets stay contiguous from 0 across generations.
//!
//! The child is this test binary run again with `RINGBROKER_CRASH_CHILD` set, running
//! only `crash_child_appends_until_killed`. Cycles: `RINGBROKER_CRASH_CYCLES` (default
//! 50; the long run is 200+). Seed: `RINGBROKER_CRASH_SEED` replays a run's kill
//! schedule (timing still varies). A killed process keeps the page cache, so this tests
//! recovery and acknowledgement order, not group commit (`storage_power_cut.rs` does).

// In tests an unwrap that fails is a test failure with its message: exactly right.
#![allow(clippy::unwrap_used)]

use std::cell::RefCell;
use std::collections::HashMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::AsFd;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::rc::Rc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use ringbroker::runtime::{Runtime, RuntimeConfig, ShardCtx};
use ringbroker::storage::codec::{decode_batch, Record, RecordView};
use ringbroker::storage::index::parse_index_name;
use ringbroker::storage::sim::SeededRng;
use ringbroker::storage::{
    parse_segment_name, AppendOutcome, Durability, FsDir, LogConfig, PartitionLog, ShardLog,
};

/// Set in a child's environment: `<dir>,<policy>,<generation>`.
const CHILD_ENV: &str = "RINGBROKER_CRASH_CHILD";
const CYCLES_ENV: &str = "RINGBROKER_CRASH_CYCLES";
const SEED_ENV: &str = "RINGBROKER_CRASH_SEED";
const CHILD_TEST: &str = "crash_child_appends_until_killed";
const CYCLES_DEFAULT: usize = 50;
/// Appends a child keeps in flight.
const OUTSTANDING_MAX: usize = 64;
/// Small, so a run rolls many segments and writes many index files.
const SEGMENT_BYTES_MAX: u64 = 64 << 10;
/// Records per append: 1 to this.
const APPEND_RECORDS_MAX: u64 = 3;
/// Filler bytes after a record's id: 0 to this - 1.
const VALUE_FILLER_MAX: u64 = 300;
/// A child that is not killed by then exits on its own (the parent died).
const CHILD_LIFE_MAX: Duration = Duration::from_secs(60);
/// How long the parent waits for a child to report it opened the log.
const READY_WAIT_MAX: Duration = Duration::from_secs(20);
/// Kill delay after the child opened its log, in ms.
const KILL_DELAY_MS_MIN: u64 = 5;
const KILL_DELAY_MS_MAX: u64 = 80;
/// One cycle in this many kills the child while it starts (recovery, runtime start).
const EARLY_KILL_ONE_IN: u64 = 8;
const EARLY_KILL_DELAY_MS_MAX: u64 = 20;
/// Bytes of child stderr kept for a failure message.
const STDERR_KEPT_MAX: usize = 16 << 10;
/// First record timestamp (ms since the epoch); each generation adds a million.
const TIMESTAMP_BASE: i64 = 1_700_000_000_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Policy {
    Always,
    Batch,
}

impl Policy {
    fn name(self) -> &'static str {
        match self {
            Policy::Always => "always",
            Policy::Batch => "batch",
        }
    }

    fn parse(name: &str) -> Option<Self> {
        match name {
            "always" => Some(Policy::Always),
            "batch" => Some(Policy::Batch),
            _ => None,
        }
    }

    fn durability(self) -> Durability {
        match self {
            Policy::Always => Durability::Always,
            Policy::Batch => Durability::Batch {
                max_delay: Duration::from_millis(2),
                max_bytes: 64 << 10,
            },
        }
    }
}

fn log_config(policy: Policy) -> LogConfig {
    LogConfig {
        durability: policy.durability(),
        segment_bytes_max: SEGMENT_BYTES_MAX,
        index_interval_bytes: 1024,
        ..LogConfig::default()
    }
}

/// SplitMix64's finalizer: the deterministic content of a record and the parent's
/// kill schedule both come from it.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// A number in `min..=max` from the kill schedule's sequence.
fn in_range(rng: &mut SeededRng, min: u64, max: u64) -> u64 {
    min + rng.below(max - min + 1)
}

/// Identifies a record across the whole run: append `seq` of generation `gen`, record
/// `index` of that append. Its bytes are a function of this alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct RecordId {
    gen: u64,
    seq: u64,
    index: u64,
}

/// Bytes of the id text at the start of every value: `gggggg/sssssssss/i|`.
const ID_LEN: usize = 19;

fn records_in_append(gen: u64, seq: u64) -> u64 {
    1 + mix(gen << 40 ^ seq) % APPEND_RECORDS_MAX
}

/// A record's owned content.
#[derive(Debug, PartialEq, Eq)]
struct Content {
    timestamp: i64,
    key: Option<Vec<u8>>,
    headers: Vec<(Vec<u8>, Vec<u8>)>,
    value: Vec<u8>,
}

impl Content {
    fn of(id: RecordId) -> Self {
        let h = mix(mix(id.gen << 40 ^ id.seq) ^ id.index);
        let key = (h % 5 != 0).then(|| format!("key-{}-{}-{}", id.gen, id.seq, id.index));
        let headers = (0..h % 3)
            .map(|i| {
                let name = format!("h{i}").into_bytes();
                (name, format!("{}:{}:{i}", id.gen, id.seq).into_bytes())
            })
            .collect();
        let mut value = format!("{:06}/{:09}/{}|", id.gen, id.seq, id.index).into_bytes();
        assert_eq!(value.len(), ID_LEN, "id text of fixed width");
        // Eight filler bytes per `mix`: the parent regenerates every record it reads.
        let filler = ((h >> 8) % VALUE_FILLER_MAX) as usize;
        for i in 0..filler.div_ceil(8) as u64 {
            value.extend_from_slice(&mix(h ^ i).to_le_bytes());
        }
        value.truncate(ID_LEN + filler);
        let timestamp = TIMESTAMP_BASE + (id.gen * 1_000_000 + id.seq) as i64;
        Self {
            timestamp,
            key: key.map(String::into_bytes),
            headers,
            value,
        }
    }

    /// Whether `record` holds exactly this content.
    fn matches(&self, record: &RecordView<'_>) -> bool {
        record.timestamp == self.timestamp
            && record.key == self.key.as_deref()
            && record.header_count() as usize == self.headers.len()
            && record
                .headers()
                .zip(&self.headers)
                .all(|((n, v), (en, ev))| n == &en[..] && v == &ev[..])
            && record.value == &self.value[..]
    }
}

/// The id a value starts with, if it has a well-formed one.
fn parse_id(value: &[u8]) -> Option<RecordId> {
    let text = std::str::from_utf8(value.get(..ID_LEN)?).ok()?;
    let text = text.strip_suffix('|')?;
    let mut parts = text.split('/').map(str::parse::<u64>);
    let id = RecordId {
        gen: parts.next()?.ok()?,
        seq: parts.next()?.ok()?,
        index: parts.next()?.ok()?,
    };
    parts.next().is_none().then_some(id)
}

// ---------------------------------------------------------------------------------
// The child.
// ---------------------------------------------------------------------------------

/// The child's shard state: the log, the pipe, and the next append's sequence number.
struct Appender {
    log: ShardLog,
    out: File,
    gen: u64,
    next_seq: u64,
}

/// One line on the pipe, written with one `write` (a pipe write of at most PIPE_BUF
/// bytes is atomic, so a kill never leaves half a line). Exits if the parent is gone.
fn emit(out: &mut File, line: &str) {
    if out.write_all(line.as_bytes()).is_err() {
        std::process::exit(5);
    }
}

/// Appends the next sequence number; its callback reports it and appends again.
fn append_next(appender: &Rc<RefCell<Appender>>, ctx: &mut ShardCtx) {
    let (log, gen, seq) = {
        let mut a = appender.borrow_mut();
        a.next_seq += 1;
        (a.log.clone(), a.gen, a.next_seq - 1)
    };
    let contents: Vec<Content> = (0..records_in_append(gen, seq))
        .map(|index| Content::of(RecordId { gen, seq, index }))
        .collect();
    let headers: Vec<Vec<(&[u8], &[u8])>> = contents
        .iter()
        .map(|c| c.headers.iter().map(|(n, v)| (&n[..], &v[..])).collect())
        .collect();
    let records: Vec<Record<'_>> = contents
        .iter()
        .zip(&headers)
        .map(|(c, h)| Record {
            timestamp: c.timestamp,
            key: c.key.as_deref(),
            headers: h,
            value: &c.value,
        })
        .collect();
    let this = appender.clone();
    let appended = log.append(ctx, &records, move |ctx, outcome| {
        on_outcome(&this, ctx, seq, outcome);
    });
    if let Err(error) = appended {
        let mut a = appender.borrow_mut();
        emit(
            &mut a.out,
            &format!("ERROR append {seq} refused: {error}\n"),
        );
        std::process::exit(3);
    }
}

fn on_outcome(
    appender: &Rc<RefCell<Appender>>,
    ctx: &mut ShardCtx,
    seq: u64,
    outcome: AppendOutcome,
) {
    match outcome {
        AppendOutcome::Stored {
            base_offset,
            last_offset,
            ..
        } => {
            let mut a = appender.borrow_mut();
            let gen = a.gen;
            emit(
                &mut a.out,
                &format!("ACK {gen} {seq} {base_offset} {last_offset}\n"),
            );
        }
        // Never acknowledged: no ACK line. The parent fails the run on this line.
        AppendOutcome::Failed { error, .. } => {
            let mut a = appender.borrow_mut();
            emit(&mut a.out, &format!("ERROR append {seq} failed: {error}\n"));
            std::process::exit(3);
        }
    }
    append_next(appender, ctx);
}

/// Opens the log on the shard and starts `OUTSTANDING_MAX` appends.
fn start_appending(ctx: &mut ShardCtx, dir: PathBuf, policy: Policy, gen: u64, mut out: File) {
    let opened = FsDir::open(&dir, true)
        .map_err(|e| e.to_string())
        .and_then(|d| ShardLog::open(d, log_config(policy)).map_err(|e| e.to_string()));
    let (log, report) = match opened {
        Ok(opened) => opened,
        Err(error) => {
            emit(&mut out, &format!("ERROR open: {error}\n"));
            std::process::exit(3);
        }
    };
    let cut = u8::from(report.truncated.is_some());
    emit(
        &mut out,
        &format!("READY {gen} {} {cut}\n", report.next_offset),
    );
    let appender = Rc::new(RefCell::new(Appender {
        log,
        out,
        gen,
        next_seq: 0,
    }));
    for _ in 0..OUTSTANDING_MAX {
        append_next(&appender, ctx);
    }
}

fn run_child(spec: &str) {
    let mut parts = spec.split(',');
    let (Some(dir), Some(policy), Some(gen), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        panic!("bad {CHILD_ENV}: {spec}");
    };
    let dir = PathBuf::from(dir);
    let policy = Policy::parse(policy).unwrap();
    let gen: u64 = gen.parse().unwrap();
    // Acks go out through our own copy of fd 1, one `write` per line, unbuffered and
    // out of reach of the test harness's output capture.
    let out = File::from(std::io::stdout().as_fd().try_clone_to_owned().unwrap());
    let rt = Runtime::start(RuntimeConfig {
        shards: Some(1),
        ..RuntimeConfig::default()
    })
    .unwrap();
    rt.handle()
        .spawn(0, move |ctx: &mut ShardCtx| {
            start_appending(ctx, dir, policy, gen, out);
        })
        .unwrap();
    std::thread::sleep(CHILD_LIFE_MAX);
    std::process::exit(4);
}

/// The child: appends until killed. Without `RINGBROKER_CRASH_CHILD` it does nothing.
#[test]
fn crash_child_appends_until_killed() {
    if let Ok(spec) = std::env::var(CHILD_ENV) {
        run_child(&spec);
    }
}

// ---------------------------------------------------------------------------------
// The parent.
// ---------------------------------------------------------------------------------

/// An acknowledged append, as the child reported it.
#[derive(Debug, Clone, Copy)]
struct Ack {
    gen: u64,
    seq: u64,
    base_offset: u64,
    last_offset: u64,
}

/// What the parent read from one child.
#[derive(Debug, Default)]
struct ChildRun {
    /// The next offset the child's recovery reported, if it got that far.
    ready_next_offset: Option<u64>,
    acks: Vec<Ack>,
    errors: Vec<String>,
}

enum Event {
    Ready(u64),
    Ack(Ack),
    Error(String),
}

/// Parses one line from the child. The harness may print its own text on the same
/// stream, even before one of ours on the same line, so look for our tags anywhere.
fn parse_line(line: &str) -> Option<Event> {
    let numbers = |rest: &str| -> Vec<u64> {
        rest.split_whitespace()
            .map_while(|w| w.parse().ok())
            .collect()
    };
    if let Some(at) = line.find("ACK ") {
        let n = numbers(&line[at + 4..]);
        let [gen, seq, base_offset, last_offset] = n[..] else {
            return Some(Event::Error(format!("bad ack line: {line}")));
        };
        return Some(Event::Ack(Ack {
            gen,
            seq,
            base_offset,
            last_offset,
        }));
    }
    if let Some(at) = line.find("READY ") {
        let n = numbers(&line[at + 6..]);
        return Some(match n[..] {
            [_, next_offset, _] => Event::Ready(next_offset),
            _ => Event::Error(format!("bad ready line: {line}")),
        });
    }
    line.find("ERROR ")
        .map(|at| Event::Error(line[at..].to_owned()))
}

fn spawn_child(dir: &Path, policy: Policy, gen: u64) -> Child {
    let spec = format!("{},{},{gen}", dir.display(), policy.name());
    Command::new(std::env::current_exe().unwrap())
        .args([
            CHILD_TEST,
            "--exact",
            "--nocapture",
            "--test-threads=1",
            "-q",
        ])
        .env(CHILD_ENV, spec)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Spawns a child, kills it after the delay the schedule picks, and returns what it
/// acknowledged.
fn run_cycle(dir: &Path, policy: Policy, gen: u64, rng: &mut SeededRng) -> ChildRun {
    let mut child = spawn_child(dir, policy, gen);
    let (tx, rx) = mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Some(event) = parse_line(&line) {
                if tx.send(event).is_err() {
                    break;
                }
            }
        }
    });
    let mut stderr = child.stderr.take().unwrap();
    let stderr_reader = std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = stderr.read_to_end(&mut bytes);
        let cut = bytes.len().saturating_sub(STDERR_KEPT_MAX);
        String::from_utf8_lossy(&bytes[cut..]).into_owned()
    });
    let mut run = ChildRun::default();
    if in_range(rng, 1, EARLY_KILL_ONE_IN) == 1 {
        std::thread::sleep(Duration::from_millis(in_range(
            rng,
            0,
            EARLY_KILL_DELAY_MS_MAX,
        )));
    } else {
        wait_ready(&rx, &mut run);
        let delay = in_range(rng, KILL_DELAY_MS_MIN, KILL_DELAY_MS_MAX);
        std::thread::sleep(Duration::from_millis(delay));
    }
    child.kill().unwrap();
    let status = child.wait().unwrap();
    reader.join().unwrap();
    for event in rx.try_iter() {
        take_event(&mut run, event);
    }
    let stderr = stderr_reader.join().unwrap();
    if status.signal() != Some(libc::SIGKILL) {
        run.errors.push(format!(
            "child ended with {status}, not SIGKILL; stderr:\n{stderr}"
        ));
    }
    run
}

fn take_event(run: &mut ChildRun, event: Event) {
    match event {
        Event::Ready(next_offset) => run.ready_next_offset = Some(next_offset),
        Event::Ack(ack) => run.acks.push(ack),
        Event::Error(error) => run.errors.push(error),
    }
}

/// Takes events until the child reports it opened the log (or gives up).
fn wait_ready(rx: &mpsc::Receiver<Event>, run: &mut ChildRun) {
    let deadline = Instant::now() + READY_WAIT_MAX;
    while run.ready_next_offset.is_none() && run.errors.is_empty() {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(event) => take_event(run, event),
            Err(_) => {
                run.errors
                    .push(format!("child not ready within {READY_WAIT_MAX:?}"));
            }
        }
    }
}

/// Checks one child's acks among themselves: in sequence order from 0, offsets
/// contiguous from where its recovery said the log ends, each append's record count.
fn check_acks(run: &ChildRun, gen: u64) -> Result<(), String> {
    if let Some(e) = run.errors.first() {
        return Err(format!("child error: {e}"));
    }
    let mut next_offset = run.ready_next_offset;
    for (i, ack) in run.acks.iter().enumerate() {
        let n = records_in_append(ack.gen, ack.seq);
        let ok = ack.gen == gen
            && ack.seq == i as u64
            && next_offset.is_none_or(|o| o == ack.base_offset)
            && ack.last_offset == ack.base_offset + n - 1;
        if !ok {
            return Err(format!(
                "ack {i} of generation {gen} is {ack:?} ({n} records, expected base {next_offset:?})"
            ));
        }
        next_offset = Some(ack.last_offset + 1);
    }
    Ok(())
}

/// What one reopen found.
#[derive(Debug)]
struct Verified {
    tail_cut: bool,
    /// The kill came during a roll: the last segment already had its index files.
    mid_roll: bool,
    indexes_rebuilt: usize,
    records: u64,
    segments: usize,
}

/// Whether `id` may come right after `prev` in the log: the next record of the same
/// append, the first of the next append of the same generation, or the first append
/// of a later generation. That order makes ids strictly increasing, so no record is
/// duplicated, and leaves no hole inside a generation.
fn follows(prev: Option<RecordId>, id: RecordId) -> bool {
    match prev {
        None => id.seq == 0 && id.index == 0,
        Some(p) if p.gen == id.gen => {
            let n = records_in_append(p.gen, p.seq);
            (p.index + 1 < n && id.seq == p.seq && id.index == p.index + 1)
                || (p.index + 1 == n && id.seq == p.seq + 1 && id.index == 0)
        }
        Some(p) => p.gen < id.gen && id.seq == 0 && id.index == 0,
    }
}

/// Checks one record, at `offset`, batch record `in_batch`, after `prev`: it must be
/// well formed, byte-identical to its id's content, and follow `prev`.
fn check_record(
    record: &RecordView<'_>,
    offset: u64,
    in_batch: u64,
    prev: Option<RecordId>,
) -> Result<RecordId, String> {
    let id = parse_id(record.value).ok_or_else(|| format!("offset {offset}: no record id"))?;
    if record.offset != offset || id.index != in_batch {
        return Err(format!(
            "offset {offset}: record says offset {} and is {id:?}, at batch index {in_batch}",
            record.offset
        ));
    }
    if !Content::of(id).matches(record) {
        return Err(format!("offset {offset}: {id:?} is not byte-identical"));
    }
    if !follows(prev, id) {
        return Err(format!("offset {offset}: {id:?} does not follow {prev:?}"));
    }
    Ok(id)
}

/// Checks every record of `bytes` (whole batches read at offset `ids.len()`), appending
/// their ids to `ids`.
fn check_batches(bytes: &[u8], ids: &mut Vec<RecordId>) -> Result<(), String> {
    let mut rest = bytes;
    while !rest.is_empty() {
        let batch = decode_batch(rest).map_err(|e| format!("batch at {}: {e}", ids.len()))?;
        for (i, record) in batch.records().enumerate() {
            let id = check_record(&record, ids.len() as u64, i as u64, ids.last().copied())?;
            ids.push(id);
        }
        let last = ids.last().copied().ok_or("empty batch")?;
        if last.index + 1 != records_in_append(last.gen, last.seq) {
            let at = ids.len();
            return Err(format!("batch ending at {at} holds part of an append"));
        }
        rest = &rest[batch.bytes().len()..];
    }
    Ok(())
}

/// Reads already checked record by record, by the offset they started at: their bytes
/// and the ids they hold. A later pass reading the very same bytes at that offset
/// compares them (a memcmp) instead of decoding and checking them again, so every
/// cycle still reads the whole log but stays cheap as it grows.
type Checked = HashMap<u64, (Vec<u8>, Vec<RecordId>)>;

/// Reads every record from offset 0 through `PartitionLog::read`, checking each;
/// returns the id at every offset.
fn read_all(log: &PartitionLog<FsDir>, checked: &mut Checked) -> Result<Vec<RecordId>, String> {
    if log.first_offset() != 0 {
        return Err(format!("log starts at {}, not 0", log.first_offset()));
    }
    let mut ids: Vec<RecordId> = Vec::new();
    // Each read returns whole batches of one segment; read on from where it ended.
    while (ids.len() as u64) < log.stored_end() {
        let offset = ids.len() as u64;
        let bytes = log.read(offset, 1 << 20).map_err(|e| e.to_string())?;
        if bytes.is_empty() {
            return Err(format!("read at {offset} returned nothing"));
        }
        match checked.get(&offset) {
            Some((same, known)) if same[..] == bytes[..] => {
                if !follows(ids.last().copied(), known[0]) {
                    return Err(format!(
                        "offset {offset}: {:?} follows {:?}",
                        known[0],
                        ids.last()
                    ));
                }
                ids.extend_from_slice(known);
            }
            _ => {
                check_batches(&bytes, &mut ids)?;
                let known = ids[offset as usize..].to_vec();
                checked.insert(offset, (bytes.to_vec(), known));
            }
        }
    }
    Ok(ids)
}

/// Whether the last segment has index files (written when a roll seals it, before
/// the next segment is created): the child was killed in the middle of a roll.
fn tail_has_index_files(dir: &Path) -> bool {
    let names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    let tail = names.iter().filter_map(|n| parse_segment_name(n)).max();
    tail.is_some_and(|base| names.iter().any(|n| parse_index_name(n) == Some(base)))
}

/// Reopens the log and checks every record and every acknowledgement so far.
fn verify(dir: &Path, acks: &[Ack], checked: &mut Checked) -> Result<Verified, String> {
    let mid_roll = tail_has_index_files(dir);
    let fs = FsDir::open(dir, false).map_err(|e| e.to_string())?;
    let (log, report) =
        PartitionLog::open(fs, log_config(Policy::Always)).map_err(|e| e.to_string())?;
    if report.next_offset != log.stored_end() {
        return Err(format!(
            "report {report:?} but stored end {}",
            log.stored_end()
        ));
    }
    let ids = read_all(&log, checked)?;
    for ack in acks {
        let first = ids.get(ack.base_offset as usize);
        let last = ids.get(ack.last_offset as usize);
        let expected = |index| RecordId {
            gen: ack.gen,
            seq: ack.seq,
            index,
        };
        let n = ack.last_offset - ack.base_offset;
        if first != Some(&expected(0)) || last != Some(&expected(n)) {
            return Err(format!(
                "acknowledged {ack:?} lost: log holds {first:?} .. {last:?} there"
            ));
        }
    }
    Ok(Verified {
        tail_cut: report.truncated.is_some(),
        mid_roll,
        indexes_rebuilt: report.indexes_rebuilt.len(),
        records: ids.len() as u64,
        segments: report.segments,
    })
}

fn env_u64(name: &str) -> Option<u64> {
    let value = std::env::var(name).ok()?;
    Some(
        value
            .parse()
            .unwrap_or_else(|_| panic!("{name}={value} is not a number")),
    )
}

#[derive(Debug, Default)]
struct Summary {
    cycles: usize,
    appends_acked: u64,
    records_acked: u64,
    tails_cut: usize,
    mid_rolls: usize,
    indexes_rebuilt: usize,
    early_kills: usize,
    verify_time: Duration,
}

impl Summary {
    fn print(&self, seed: u64, records: u64, segments: usize, elapsed: Duration) {
        eprintln!(
            "storage_crash: seed {seed}: {} cycles, {} appends ({} records) acknowledged, \
             {} torn tails cut, {} kills mid-roll, {} index files rebuilt, \
             {} kills during start; log of {records} records in {segments} segments; \
             {elapsed:.1?} ({:.1?} verifying)",
            self.cycles,
            self.appends_acked,
            self.records_acked,
            self.tails_cut,
            self.mid_rolls,
            self.indexes_rebuilt,
            self.early_kills,
            self.verify_time
        );
    }
}

#[test]
fn kill_9_never_loses_duplicates_or_corrupts_an_acknowledged_record() {
    if std::env::var_os(CHILD_ENV).is_some() {
        return;
    }
    let cycles = env_u64(CYCLES_ENV).map_or(CYCLES_DEFAULT, |c| c as usize);
    let seed = env_u64(SEED_ENV).unwrap_or_else(|| {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
        now.unwrap().as_nanos() as u64
    });
    eprintln!("storage_crash: seed {seed} (replay: {SEED_ENV}={seed}), {cycles} cycles");
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("log");
    // A child killed before it opened the log must leave a directory to reopen.
    std::fs::create_dir(&dir).unwrap();
    let mut rng = SeededRng::new(mix(seed));
    let mut acks: Vec<Ack> = Vec::new();
    let mut checked = Checked::new();
    let mut summary = Summary::default();
    let mut stored_end = 0;
    let mut segments = 0;
    let started = Instant::now();
    for cycle in 0..cycles {
        let fail = |e: String| -> ! { panic!("seed {seed}, cycle {cycle}: {e}") };
        let policy = if cycle % 2 == 0 {
            Policy::Always
        } else {
            Policy::Batch
        };
        let gen = cycle as u64;
        let run = run_cycle(&dir, policy, gen, &mut rng);
        check_acks(&run, gen).unwrap_or_else(|e| fail(e));
        match run.ready_next_offset {
            Some(next) if next != stored_end => fail(format!(
                "child recovered to {next}, the parent's reopen to {stored_end}"
            )),
            Some(_) => {}
            None => summary.early_kills += 1,
        }
        summary.appends_acked += run.acks.len() as u64;
        summary.records_acked += run
            .acks
            .iter()
            .map(|a| a.last_offset - a.base_offset + 1)
            .sum::<u64>();
        acks.extend(run.acks);
        let verify_started = Instant::now();
        let verified = verify(&dir, &acks, &mut checked).unwrap_or_else(|e| fail(e));
        summary.verify_time += verify_started.elapsed();
        summary.tails_cut += usize::from(verified.tail_cut);
        summary.indexes_rebuilt += verified.indexes_rebuilt;
        summary.mid_rolls += usize::from(verified.mid_roll);
        summary.cycles += 1;
        stored_end = verified.records;
        segments = verified.segments;
    }
    summary.print(seed, stored_end, segments, started.elapsed());
}
