//! Sequential replay of one segment, by several read strategies, against `memcpy` of
//! the same size: the log's own `PartitionLog::read` (on the segment while active,
//! then sealed), `pread` into a reused or a fresh buffer, a `memmap2` map walked in
//! place, and io_uring reads (`ShardCtx::read_at`) into a reused buffer. Every
//! strategy decodes every batch (checksum included) and visits every record, and must
//! see every record of the segment, or the run fails.
//!
//! Owns: writing the segment (page cache warm: it was just written) and timing passes
//! over it. Never: runs more than `passes_max` passes or past its time budget per
//! strategy.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{sync_channel, SyncSender};
use std::time::{Duration, Instant};

use ringbroker::runtime::{Runtime, RuntimeConfig, ShardCtx};
use ringbroker::storage::codec::{Record, BATCH_HEADER_LEN};
use ringbroker::storage::{
    segment_name, BlockingDriver, Durability, FsDir, LogConfig, PartitionLog,
};

use super::{value_for, value_pattern, Walk, WalkMode};

/// The name of the `memcpy` baseline row.
pub const MEMCPY_ROW: &str = "memcpy of the same bytes (both buffers faulted in): the baseline";

/// Pending bytes at which the writer hands its appends to the driver.
const WRITE_FLUSH_BYTES: usize = 4 << 20;

/// One replay workload.
#[derive(Debug, Clone, Copy)]
pub struct ReplayCase {
    /// Bytes of the segment to replay (it rolls once it holds this many).
    pub segment_bytes: u64,
    /// Value bytes per record.
    pub record_bytes: usize,
    /// Records per batch.
    pub records_per_batch: usize,
    /// Bytes per read (and `max_bytes` of `PartitionLog::read`).
    pub read_bytes: usize,
    /// The most timed passes per strategy (one untimed warm-up pass comes first).
    pub passes_max: usize,
    /// The time budget per strategy; passes stop once it is spent.
    pub budget: Duration,
}

/// One strategy's passes.
#[derive(Debug, Clone)]
pub struct ReplayRow {
    /// What was measured.
    pub name: String,
    /// GB/s (10^9 bytes) of each timed pass.
    pub gb_per_s: Vec<f64>,
}

/// The segment under test: its file and what it holds.
struct Segment {
    path: PathBuf,
    bytes: u64,
    records: u64,
}

/// A pass: its time and the walk's totals (checked against the segment).
type Pass = Result<(Duration, Walk), String>;

/// Writes the segment in `dir` and measures every strategy over it.
pub fn run_replay(dir: &Path, case: ReplayCase) -> Result<Vec<ReplayRow>, String> {
    let fs = FsDir::open(dir, true).map_err(|e| format!("{}: {e}", dir.display()))?;
    let config = LogConfig {
        durability: Durability::None,
        segment_bytes_max: case.segment_bytes,
        ..LogConfig::default()
    };
    let (mut log, _) = PartitionLog::open(fs, config).map_err(|e| e.to_string())?;
    let records = write_segment(&mut log, case)?;
    super::sync_all();
    let path = dir.join(segment_name(0));
    let bytes = std::fs::metadata(&path).map_err(|e| e.to_string())?.len();
    let segment = Segment {
        path,
        bytes,
        records,
    };
    let mut rows = Vec::new();
    let read_log = |log: &PartitionLog<FsDir>| read_with_log(log, &segment, case.read_bytes);
    let name = "PartitionLog::read + decode, active segment";
    rows.push(measure(name, &segment, case, || read_log(&log))?);
    let rolled = log.roll_if_idle().map_err(|e| format!("seal: {e}"))?;
    if !rolled {
        return Err("the segment did not seal".to_owned());
    }
    let name = "PartitionLog::read + decode, sealed segment";
    rows.push(measure(name, &segment, case, || read_log(&log))?);
    for mode in [WalkMode::Decode, WalkMode::Frame] {
        rows.extend(measure_raw(&segment, case, mode)?);
    }
    rows.push(measure_memcpy(&segment, case)?);
    Ok(rows)
}

/// The strategies that read the segment file directly, each walking in `mode`, and
/// the same walk over bytes already in memory.
fn measure_raw(
    segment: &Segment,
    case: ReplayCase,
    mode: WalkMode,
) -> Result<Vec<ReplayRow>, String> {
    let file = File::open(&segment.path).map_err(|e| e.to_string())?;
    let chunk = case.read_bytes;
    let what = match mode {
        WalkMode::Decode => "decode",
        WalkMode::Frame => "frame by headers only",
    };
    let mut rows = Vec::new();
    let mut reused = vec![0u8; chunk];
    let name = format!("pread into a reused buffer + {what}");
    rows.push(measure(&name, segment, case, || {
        read_pread(&file, segment, chunk, Some(&mut reused), mode)
    })?);
    if mode == WalkMode::Decode {
        let name = format!("pread into a fresh Vec per read + {what}");
        rows.push(measure(&name, segment, case, || {
            read_pread(&file, segment, chunk, None, mode)
        })?);
    }
    let name = format!("mmap, new map per pass + {what}");
    rows.push(measure(&name, segment, case, || {
        read_mmap(&file, segment, mode)
    })?);
    // SAFETY: the segment is sealed: nothing writes or truncates it while mapped.
    let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| e.to_string())?;
    let name = format!("mmap, one map reused + {what}");
    rows.push(measure(&name, segment, case, || {
        timed(|| Walk::with(&map[..segment.bytes as usize], mode))
    })?);
    rows.push(measure_uring(&file, segment, case, mode, what)?);
    if mode == WalkMode::Decode {
        let in_memory = map.to_vec();
        let name = format!("{what} only, bytes already in memory (CPU floor)");
        rows.push(measure(&name, segment, case, || {
            timed(|| Walk::with(&in_memory, mode))
        })?);
    }
    Ok(rows)
}

/// Appends single-batch appends of `records_per_batch` records until the log has
/// `segment_bytes`; returns the records written (all in segment 0: the roll only
/// happens on the next group).
fn write_segment(log: &mut PartitionLog<FsDir>, case: ReplayCase) -> Result<u64, String> {
    let pattern = value_pattern(case.record_bytes);
    let mut pending = 0usize;
    let mut written = 0u64;
    // Each batch adds at least one record's bytes, so this bound is never the one hit.
    let batches_max = case.segment_bytes / case.record_bytes.max(1) as u64 + 1;
    for _ in 0..batches_max {
        if written >= case.segment_bytes {
            break;
        }
        let offset = log.next_offset();
        let records: Vec<Record<'_>> = (0..case.records_per_batch as u64)
            .map(|i| Record {
                timestamp: (offset + i) as i64,
                key: None,
                headers: &[],
                value: value_for(&pattern, offset + i, case.record_bytes),
            })
            .collect();
        log.append(&records, Instant::now())
            .map_err(|e| e.to_string())?;
        let added = ringbroker::storage::codec::encoded_len(&records).map_err(|e| e.to_string())?;
        pending += added;
        written += added as u64;
        if pending >= WRITE_FLUSH_BYTES {
            BlockingDriver::run(log, Instant::now());
            pending = 0;
        }
    }
    BlockingDriver::run(log, Instant::now());
    take_outcomes(log)?;
    Ok(log.stored_end())
}

/// Drains the log's outcomes; fails on the first failed append.
fn take_outcomes(log: &mut PartitionLog<FsDir>) -> Result<(), String> {
    while let Some(outcome) = log.take_outcome() {
        if let ringbroker::storage::AppendOutcome::Failed { error, .. } = outcome {
            return Err(format!("writing the segment: {error}"));
        }
    }
    Ok(())
}

/// Times `f`.
fn timed(f: impl FnOnce() -> Result<Walk, String>) -> Pass {
    let start = Instant::now();
    let walk = f()?;
    Ok((start.elapsed(), walk))
}

/// One warm-up pass, then up to `passes_max` timed passes within the budget; every
/// pass must walk the whole segment.
fn measure(
    name: &str,
    segment: &Segment,
    case: ReplayCase,
    mut pass: impl FnMut() -> Pass,
) -> Result<ReplayRow, String> {
    let check = |walk: Walk| {
        if walk.records != segment.records || walk.consumed as u64 != segment.bytes {
            return Err(format!(
                "{name}: walked {} records, {} bytes; the segment holds {}, {}",
                walk.records, walk.consumed, segment.records, segment.bytes
            ));
        }
        Ok(())
    };
    check(pass()?.1)?;
    let started = Instant::now();
    let mut gb_per_s = Vec::new();
    for _ in 0..case.passes_max {
        let (elapsed, walk) = pass()?;
        check(walk)?;
        gb_per_s.push(segment.bytes as f64 / elapsed.as_secs_f64() / 1e9);
        if started.elapsed() >= case.budget {
            break;
        }
    }
    Ok(ReplayRow {
        name: name.to_owned(),
        gb_per_s,
    })
}

/// A pass through `PartitionLog::read`, `read_bytes` at a time, from offset 0 to the
/// end of segment 0.
fn read_with_log(log: &PartitionLog<FsDir>, segment: &Segment, read_bytes: usize) -> Pass {
    timed(|| {
        let mut total = Walk::default();
        // Each read returns at least one batch of at least one record.
        for _ in 0..segment.records {
            if total.records >= segment.records {
                break;
            }
            let bytes = log
                .read(total.records, read_bytes)
                .map_err(|e| e.to_string())?;
            let walk = Walk::over(&bytes)?;
            if walk.consumed != bytes.len() || walk.records == 0 {
                return Err("PartitionLog::read returned a partial batch".to_owned());
            }
            add(&mut total, walk);
        }
        Ok(total)
    })
}

fn add(total: &mut Walk, walk: Walk) {
    total.consumed += walk.consumed;
    total.records += walk.records;
    total.value_bytes += walk.value_bytes;
}

/// A pass of `pread`s of `chunk` bytes into `buf`, or into a fresh zeroed `Vec` per
/// read if `buf` is `None` (what a read path that allocates its result does).
fn read_pread(
    file: &File,
    segment: &Segment,
    chunk: usize,
    mut buf: Option<&mut [u8]>,
    mode: WalkMode,
) -> Pass {
    timed(|| {
        let mut total = Walk::default();
        let mut position = 0u64;
        // Each read consumes at least one batch of at least `BATCH_HEADER_LEN` bytes.
        let reads_max = segment.bytes / BATCH_HEADER_LEN as u64 + 1;
        for _ in 0..reads_max {
            if position >= segment.bytes {
                break;
            }
            let want = chunk.min((segment.bytes - position) as usize);
            let mut owned;
            let target: &mut [u8] = match buf.as_deref_mut() {
                Some(reused) => &mut reused[..want],
                None => {
                    owned = vec![0u8; want];
                    &mut owned
                }
            };
            let n = file.read_at(target, position).map_err(|e| e.to_string())?;
            let walk = Walk::with(&target[..n], mode)?;
            if walk.consumed == 0 {
                return Err(format!("no whole batch in {n} bytes at {position}"));
            }
            position += walk.consumed as u64;
            add(&mut total, walk);
        }
        Ok(total)
    })
}

/// A pass over a map made for it (so the pass pays for `mmap` and the page faults).
fn read_mmap(file: &File, segment: &Segment, mode: WalkMode) -> Pass {
    timed(|| {
        // SAFETY: the segment is sealed: nothing writes or truncates it while mapped.
        let map = unsafe { memmap2::Mmap::map(file) }.map_err(|e| e.to_string())?;
        Walk::with(&map[..segment.bytes as usize], mode)
    })
}

/// `memcpy` of the segment's bytes between two buffers already faulted in.
fn measure_memcpy(segment: &Segment, case: ReplayCase) -> Result<ReplayRow, String> {
    let source = std::fs::read(&segment.path).map_err(|e| e.to_string())?;
    let mut target = vec![1u8; source.len()];
    let mut gb_per_s = Vec::new();
    target.copy_from_slice(&source);
    let started = Instant::now();
    for _ in 0..case.passes_max {
        let start = Instant::now();
        target.copy_from_slice(std::hint::black_box(&source));
        std::hint::black_box(&mut target);
        gb_per_s.push(segment.bytes as f64 / start.elapsed().as_secs_f64() / 1e9);
        if started.elapsed() >= case.budget {
            break;
        }
    }
    Ok(ReplayRow {
        name: MEMCPY_ROW.to_owned(),
        gb_per_s,
    })
}

/// Passes of io_uring reads on a one-shard runtime: one read in flight into one
/// reused buffer, walking in `mode` between reads.
fn measure_uring(
    file: &File,
    segment: &Segment,
    case: ReplayCase,
    mode: WalkMode,
    what: &str,
) -> Result<ReplayRow, String> {
    let runtime = Runtime::start(RuntimeConfig {
        shards: Some(1),
        ..RuntimeConfig::default()
    })
    .map_err(|e| format!("runtime: {e}"))?;
    let handle = runtime.handle();
    let fd = file.as_raw_fd();
    let (bytes, read_bytes) = (segment.bytes, case.read_bytes);
    let name = format!("io_uring read_at into a reused buffer + {what}");
    let row = measure(&name, segment, case, || {
        let (tx, rx) = sync_channel(1);
        let pass = move |ctx: &mut ShardCtx| {
            let state = UringPass {
                fd,
                bytes,
                mode,
                position: 0,
                total: Walk::default(),
                started: Instant::now(),
                done: tx,
            };
            uring_read(ctx, state, vec![0u8; read_bytes]);
        };
        handle.spawn(0, pass).map_err(|e| e.to_string())?;
        rx.recv_timeout(case.budget + Duration::from_secs(60))
            .map_err(|e| format!("io_uring pass did not finish: {e}"))?
    });
    if let Err(error) = runtime.shutdown() {
        eprintln!("runtime shutdown: {error}");
    }
    row
}

struct UringPass {
    fd: std::os::fd::RawFd,
    bytes: u64,
    mode: WalkMode,
    position: u64,
    total: Walk,
    started: Instant,
    done: SyncSender<Pass>,
}

/// Reads the next chunk, walks its whole batches, and continues from the first
/// incomplete one (re-read with the next chunk) until the segment's end.
fn uring_read(ctx: &mut ShardCtx, mut state: UringPass, buf: Vec<u8>) {
    if state.position >= state.bytes {
        let _ = state.done.send(Ok((state.started.elapsed(), state.total)));
        return;
    }
    let position = state.position;
    let submitted = ctx.read_at(state.fd, buf, position, move |ctx, read, buf| {
        let walk = read
            .map_err(|e| e.to_string())
            .and_then(|n| Walk::with(&buf[..n.min((state.bytes - position) as usize)], state.mode));
        match walk {
            Ok(walk) if walk.consumed > 0 => {
                state.position += walk.consumed as u64;
                add(&mut state.total, walk);
                uring_read(ctx, state, buf);
            }
            Ok(_) => {
                let _ = state
                    .done
                    .send(Err(format!("no whole batch at {position}")));
            }
            Err(error) => {
                let _ = state.done.send(Err(error));
            }
        }
    });
    if let Err(error) = submitted {
        eprintln!("io_uring read: {error}");
    }
}
