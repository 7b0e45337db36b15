//! Storage workloads for the `storage-report` binary: appends through a `ShardLog` on a
//! real shard under each durability policy, the same write pattern run by `fio` as the
//! disk's baseline, and sequential replay of a sealed segment by several read
//! strategies against `memcpy`.
//!
//! Owns: the workloads, their bounds (every loop stops at a deadline and at a count),
//! the check that what a workload appended reads back intact, and a minimal reader of
//! fio's JSON output. Never: asserts on timings (figures are reported, not tested), or
//! writes outside the directory it is given.

use std::path::{Path, PathBuf};
use std::time::Duration;

use ringbroker::storage::codec::{decode_batch, peek_header, BATCH_HEADER_LEN};
use ringbroker::storage::{Durability, FsDir, LogConfig, PartitionLog};

pub mod append;
pub mod fio;
mod json;
pub mod replay;

/// The `Batch` policy's delay, as the report runs it.
pub const BATCH_DELAY: Duration = Duration::from_millis(2);
/// The `Batch` policy's byte bound, as the report runs it.
pub const BATCH_BYTES: usize = 1 << 20;
/// Value patterns repeat with this period of offsets (a prime, so neighbours differ).
const PATTERN_PERIOD: u64 = 251;
/// Bytes one verification read asks the log for.
const VERIFY_READ_BYTES: usize = 1 << 20;

/// A durability policy, by the name the report prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// `Durability::Always`.
    Always,
    /// `Durability::Batch` with `BATCH_DELAY` and `BATCH_BYTES`.
    Batch,
    /// `Durability::None`.
    None,
}

impl Policy {
    /// Every policy, in report order.
    pub const ALL: [Policy; 3] = [Policy::Always, Policy::Batch, Policy::None];

    /// The log's durability setting for this policy.
    pub fn durability(self) -> Durability {
        match self {
            Policy::Always => Durability::Always,
            Policy::Batch => Durability::Batch {
                max_delay: BATCH_DELAY,
                max_bytes: BATCH_BYTES,
            },
            Policy::None => Durability::None,
        }
    }

    /// The name the report prints.
    pub fn name(self) -> &'static str {
        match self {
            Policy::Always => "always",
            Policy::Batch => "batch",
            Policy::None => "none",
        }
    }

    /// Whether every group ends with an `fdatasync`.
    pub fn syncs_groups(self) -> bool {
        self != Policy::None
    }
}

/// The value bytes of the record at `offset`: `record_bytes` bytes of `pattern`,
/// shifted by the offset, so a record read back at the wrong offset does not match.
pub fn value_for(pattern: &[u8], offset: u64, record_bytes: usize) -> &[u8] {
    let shift = (offset % PATTERN_PERIOD) as usize;
    &pattern[shift..shift + record_bytes]
}

/// The pattern `value_for` slices: long enough for every shift.
pub fn value_pattern(record_bytes: usize) -> Vec<u8> {
    let len = record_bytes + PATTERN_PERIOD as usize;
    (0..len).map(|i| (i % 256) as u8).collect()
}

/// What a walk does with each batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WalkMode {
    /// `decode_batch` (header, checksum, every record) and visit every record: what a
    /// reader that checks and uses the records does.
    Decode,
    /// `peek_header` only, to frame the batches: what a broker that sends stored
    /// batches on unchanged does (the consumer checks the checksum).
    Frame,
}

/// The totals of a walk over the whole batches at the start of some bytes.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Walk {
    /// Bytes of whole batches walked.
    pub consumed: usize,
    /// Records decoded.
    pub records: u64,
    /// Sum of the records' value lengths (so the walk cannot be optimised away).
    pub value_bytes: u64,
}

impl Walk {
    /// Decodes the whole batches at the start of `bytes`. An incomplete batch at the
    /// end is left for the caller (`consumed` stops before it); a corrupt one is an
    /// error.
    pub fn over(bytes: &[u8]) -> Result<Walk, String> {
        Self::with(bytes, WalkMode::Decode)
    }

    /// Walks the whole batches at the start of `bytes` in `mode`: framed by their
    /// headers alone, or decoded record by record.
    pub fn with(bytes: &[u8], mode: WalkMode) -> Result<Walk, String> {
        let mut walk = Walk::default();
        while bytes.len() - walk.consumed >= BATCH_HEADER_LEN {
            let rest = &bytes[walk.consumed..];
            let at = |e| format!("at {}: {e}", walk.consumed);
            let header = peek_header(rest).map_err(at)?;
            if header.batch_len_bytes() > rest.len() {
                break;
            }
            match mode {
                WalkMode::Frame => walk.records += u64::from(header.record_count),
                WalkMode::Decode => {
                    for record in decode_batch(rest).map_err(at)?.records() {
                        walk.records += 1;
                        walk.value_bytes += record.value.len() as u64;
                    }
                }
            }
            walk.consumed += header.batch_len_bytes();
        }
        Ok(walk)
    }
}

/// Reopens the log in `path` and checks that it holds exactly `records` records at
/// offsets `0..records`, each with the value `value_for` gives (a workload that loses,
/// reorders or corrupts a record fails here).
pub fn verify_log(path: &Path, records: u64, record_bytes: usize) -> Result<(), String> {
    let dir = FsDir::open(path, false).map_err(|e| format!("open {}: {e}", path.display()))?;
    let (log, report) =
        PartitionLog::open(dir, LogConfig::default()).map_err(|e| format!("reopen: {e}"))?;
    if let Some(cut) = report.truncated {
        return Err(format!("reopen cut the tail: {cut:?}"));
    }
    if log.stored_end() != records {
        let end = log.stored_end();
        return Err(format!(
            "log holds {end} records, {records} were acknowledged"
        ));
    }
    let pattern = value_pattern(record_bytes);
    let mut next = 0u64;
    // Each read returns at least one batch, so this takes at most `records` reads.
    for _ in 0..records {
        if next >= records {
            break;
        }
        let bytes = log
            .read(next, VERIFY_READ_BYTES)
            .map_err(|e| format!("read at {next}: {e}"))?;
        next = verify_batches(&bytes, next, &pattern, record_bytes)?;
    }
    if next != records {
        return Err(format!("read back {next} of {records} records"));
    }
    Ok(())
}

/// Checks the batches in `bytes`, whose first record must be `next`; returns the
/// offset after the last one.
fn verify_batches(
    mut bytes: &[u8],
    mut next: u64,
    pattern: &[u8],
    record_bytes: usize,
) -> Result<u64, String> {
    if bytes.is_empty() {
        return Err(format!("empty read at offset {next}"));
    }
    while !bytes.is_empty() {
        let batch = decode_batch(bytes).map_err(|e| format!("decode at {next}: {e}"))?;
        for record in batch.records() {
            if record.offset != next {
                return Err(format!(
                    "offset {} where {next} was expected",
                    record.offset
                ));
            }
            if record.value != value_for(pattern, next, record_bytes) {
                return Err(format!("record {next} reads back with other bytes"));
            }
            next += 1;
        }
        bytes = &bytes[batch.bytes().len()..];
    }
    Ok(next)
}

/// The median of `values` (the mean of the middle two for an even count); NaN if empty.
pub fn median(values: &[f64]) -> f64 {
    let mut sorted: Vec<f64> = values.iter().copied().filter(|v| !v.is_nan()).collect();
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted.sort_by(f64::total_cmp);
    let mid = sorted.len() / 2;
    if sorted.len() % 2 == 1 {
        sorted[mid]
    } else {
        (sorted[mid - 1] + sorted[mid]) / 2.0
    }
}

/// The mount a path lives on, from `/proc/self/mountinfo`: (mount point, filesystem
/// type, device). The longest mount point that is a prefix of `path` wins.
pub fn mount_of(path: &Path) -> Option<(PathBuf, String, String)> {
    let path = path.canonicalize().ok()?;
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let mut best: Option<(PathBuf, String, String)> = None;
    for line in info.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        let Some(dash) = fields.iter().position(|f| *f == "-") else {
            continue;
        };
        let (Some(mount), Some(fs), Some(dev)) =
            (fields.get(4), fields.get(dash + 1), fields.get(dash + 2))
        else {
            continue;
        };
        let mount = PathBuf::from(mount);
        let longer = best
            .as_ref()
            .is_none_or(|(b, _, _)| mount.as_os_str().len() >= b.as_os_str().len());
        if path.starts_with(&mount) && longer {
            best = Some((mount, (*fs).to_owned(), (*dev).to_owned()));
        }
    }
    best
}

/// Asks the kernel to write back every dirty page (the `sync` command), so one case's
/// write-back does not land in the next case's time. Best effort.
pub fn sync_all() {
    if let Err(error) = std::process::Command::new("sync").status() {
        eprintln!("sync: {error}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(median(&[]).is_nan());
    }

    #[test]
    fn walk_stops_before_an_incomplete_batch() {
        let pattern = value_pattern(100);
        let mut bytes = Vec::new();
        for offset in 0..3u64 {
            let record = ringbroker::storage::codec::Record {
                timestamp: 0,
                key: None,
                headers: &[],
                value: value_for(&pattern, offset, 100),
            };
            ringbroker::storage::codec::encode_batch(offset, &[record], &mut bytes)
                .expect("encodes");
        }
        let whole = Walk::over(&bytes).expect("walks");
        assert_eq!((whole.consumed, whole.records), (bytes.len(), 3));
        let cut = Walk::over(&bytes[..bytes.len() - 1]).expect("walks");
        assert_eq!(cut.records, 2);
        assert_eq!(verify_batches(&bytes, 0, &pattern, 100), Ok(3));
        assert!(verify_batches(&bytes, 1, &pattern, 100).is_err());
    }

    /// A log of `n` records written like the append workload writes them.
    fn write_log(path: &Path, n: u64, record_bytes: usize) {
        let dir = FsDir::open(path, true).expect("dir");
        let (mut log, _) = PartitionLog::open(dir, LogConfig::default()).expect("log");
        let pattern = value_pattern(record_bytes);
        for offset in 0..n {
            let record = ringbroker::storage::codec::Record {
                timestamp: 0,
                key: None,
                headers: &[],
                value: value_for(&pattern, offset, record_bytes),
            };
            log.append(&[record], std::time::Instant::now())
                .expect("append");
        }
        ringbroker::storage::BlockingDriver::run(&mut log, std::time::Instant::now());
    }

    #[test]
    fn verification_fails_on_a_lost_or_corrupt_record() {
        let path = std::env::temp_dir().join(format!("rb-verify-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        write_log(&path, 50, 100);
        assert_eq!(verify_log(&path, 50, 100), Ok(()));
        assert!(
            verify_log(&path, 51, 100).is_err(),
            "a missing record passes"
        );
        assert!(verify_log(&path, 50, 99).is_err(), "other values pass");
        // Flip one value byte of the last batch: its checksum no longer matches, and
        // recovery cuts the torn tail, so the count check fails too.
        let segment = path.join(ringbroker::storage::segment_name(0));
        let mut bytes = std::fs::read(&segment).expect("segment");
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        std::fs::write(&segment, bytes).expect("rewrite");
        assert!(
            verify_log(&path, 50, 100).is_err(),
            "a corrupt record passes"
        );
        let _ = std::fs::remove_dir_all(&path);
    }
}
