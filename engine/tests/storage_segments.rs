//! The segment lifecycle of the partition log on the simulated directory: index files
//! written at seal, trusted on open only when valid and rebuilt otherwise; reads by
//! timestamp against a brute-force model; rolling by age; retention by records, bytes
//! and age with a controlled clock; removal below an offset.

// In tests an unwrap that fails is a test failure with its message: exactly right.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use ringbroker::storage::codec::{decode_batch, Record};
use ringbroker::storage::index::{encode_offsets, encode_times, index_name, time_index_name};
use ringbroker::storage::sim::SimDir;
use ringbroker::storage::{
    segment_name, AppendOutcome, BlockingDriver, Durability, LogConfig, PartitionLog, Retention,
    StorageDir,
};

fn small_segments() -> LogConfig {
    LogConfig {
        durability: Durability::Always,
        segment_bytes_max: 2048,
        index_interval_bytes: 256,
        ..LogConfig::default()
    }
}

/// Appends one batch of `count` records with the given timestamps and drives it to
/// disk; returns its base offset.
fn append(log: &mut PartitionLog<SimDir>, timestamps: &[i64]) -> u64 {
    let values: Vec<String> = timestamps.iter().map(|t| format!("value-at-{t}")).collect();
    let records: Vec<Record<'_>> = timestamps
        .iter()
        .zip(&values)
        .map(|(&timestamp, v)| Record {
            timestamp,
            key: None,
            headers: &[],
            value: v.as_bytes(),
        })
        .collect();
    log.append(&records, Instant::now()).unwrap();
    BlockingDriver::run(log, Instant::now());
    match log.take_outcome().unwrap() {
        AppendOutcome::Stored { base_offset, .. } => base_offset,
        other => panic!("not stored: {other:?}"),
    }
}

/// Every stored record as (offset, timestamp, value), read batch by batch.
fn read_all(log: &PartitionLog<SimDir>) -> Vec<(u64, i64, Vec<u8>)> {
    let mut out = Vec::new();
    let mut offset = log.first_offset();
    while offset < log.stored_end() {
        let bytes = log.read(offset, 700).unwrap();
        assert!(!bytes.is_empty(), "nothing read at {offset}");
        let mut rest = &bytes[..];
        while !rest.is_empty() {
            let batch = decode_batch(rest).unwrap();
            for r in batch.records().filter(|r| r.offset >= offset) {
                out.push((r.offset, r.timestamp, r.value.to_vec()));
            }
            rest = &rest[batch.bytes().len()..];
        }
        offset = out.last().unwrap().0 + 1;
    }
    out
}

/// 200 batches of 1–3 records, timestamps jittering around a rising clock.
fn fill(log: &mut PartitionLog<SimDir>) -> Vec<(u64, i64, Vec<u8>)> {
    for i in 0..200i64 {
        let n = 1 + (i % 3);
        let ts: Vec<i64> = (0..n)
            .map(|j| i * 10 + ((i * 7 + j * 13) % 25) - 12)
            .collect();
        append(log, &ts);
    }
    read_all(log)
}

fn reopen(log: PartitionLog<SimDir>, config: LogConfig) -> PartitionLog<SimDir> {
    let mut dir = log.into_dir();
    dir.power_cut();
    let (log, report) = PartitionLog::open(dir, config).unwrap();
    assert!(report.truncated.is_none(), "{report:?}");
    log
}

#[test]
fn sealed_segments_get_index_files_that_reopen_trusts() {
    let mut log = PartitionLog::open(SimDir::new(1), small_segments())
        .unwrap()
        .0;
    let before = fill(&mut log);
    let segments = log.dir().list_segments();
    assert!(segments > 5, "{segments} segments");
    let active = segment_base(log.dir(), segments - 1);
    for i in 0..segments {
        let base = segment_base(log.dir(), i);
        let has = log.dir().content(&index_name(base)).is_some();
        let has_time = log.dir().content(&time_index_name(base)).is_some();
        assert_eq!(
            (has, has_time),
            (base != active, base != active),
            "segment {base}"
        );
    }
    let mut dir = log.into_dir();
    dir.power_cut();
    let (log, report) = PartitionLog::open(dir, small_segments()).unwrap();
    assert!(report.indexes_rebuilt.is_empty(), "{report:?}");
    assert_eq!(read_all(&log), before);
}

#[test]
fn missing_or_damaged_index_files_are_rebuilt() {
    let mut log = PartitionLog::open(SimDir::new(2), small_segments())
        .unwrap()
        .0;
    let before = fill(&mut log);
    let mut dir = log.into_dir();
    let bases: Vec<u64> = dir
        .list()
        .unwrap()
        .iter()
        .filter_map(|n| ringbroker::storage::index::parse_index_name(n))
        .collect();
    // Remove one offset index, flip a bit in a time index, cut another short, and
    // leave an index file whose segment does not exist.
    dir.remove(&index_name(bases[0])).unwrap();
    dir.corrupt(&time_index_name(bases[2]), 30, 3);
    dir.chop(&index_name(bases[4]), 20);
    let orphan = dir.create(&index_name(999_999)).unwrap();
    dir.write_at(orphan, 0, b"not an index").unwrap();
    dir.power_cut();
    let (log, report) = PartitionLog::open(dir, small_segments()).unwrap();
    let rebuilt: Vec<String> = [bases[0], bases[2], bases[4]]
        .iter()
        .map(|&b| segment_name(b))
        .collect();
    assert_eq!(report.indexes_rebuilt, rebuilt);
    assert!(log.dir().content(&index_name(999_999)).is_none());
    assert_eq!(read_all(&log), before);
    // Rebuilt files are valid: the next open trusts them all.
    let log = reopen(log, small_segments());
    assert_eq!(read_all(&log), before);
}

#[test]
fn an_index_that_disagrees_with_its_segment_is_not_trusted() {
    let mut log = PartitionLog::open(SimDir::new(3), small_segments())
        .unwrap()
        .0;
    let before = fill(&mut log);
    let mut dir = log.into_dir();
    // A valid index of a different segment, copied over the first one's.
    let other = dir
        .content(&index_name(segment_base(&dir, 1)))
        .unwrap()
        .to_vec();
    let first = segment_base(&dir, 0);
    dir.remove(&index_name(first)).unwrap();
    let f = dir.create(&index_name(first)).unwrap();
    dir.write_at(f, 0, &other).unwrap();
    dir.power_cut();
    let (log, report) = PartitionLog::open(dir, small_segments()).unwrap();
    assert_eq!(report.indexes_rebuilt, vec![segment_name(first)]);
    assert_eq!(read_all(&log), before);

    // Subtler: an index of the right segment that passes every check of its own
    // (checksum, base, order, bounds) but whose last entry does not point at a batch
    // header (as if the segment had been rewritten under it). The header walk from that
    // entry catches it.
    let mut dir = log.into_dir();
    let second = segment_base(&dir, 1);
    let segment_len = dir.content(&segment_name(second)).unwrap().len() as u64;
    let forged = encode_offsets(second, &[(second, 0), (second + 1, segment_len / 2 + 1)]);
    let times = encode_times(second, &[(i64::MIN, second), (i64::MIN, second + 1)]);
    for (name, bytes) in [
        (index_name(second), forged),
        (time_index_name(second), times),
    ] {
        let f = dir.create_replacing(&name).unwrap();
        dir.write_at(f, 0, &bytes).unwrap();
        dir.sync_data(f).unwrap();
    }
    dir.power_cut();
    let (log, report) = PartitionLog::open(dir, small_segments()).unwrap();
    assert_eq!(report.indexes_rebuilt, vec![segment_name(second)]);
    assert_eq!(read_all(&log), before);
}

fn segment_base(dir: &SimDir, i: usize) -> u64 {
    let mut bases: Vec<u64> = dir
        .list()
        .unwrap()
        .iter()
        .filter_map(|n| ringbroker::storage::parse_segment_name(n))
        .collect();
    bases.sort_unstable();
    bases[i]
}

#[test]
fn offset_for_timestamp_matches_a_brute_force_search() {
    let mut log = PartitionLog::open(SimDir::new(4), small_segments())
        .unwrap()
        .0;
    let all = fill(&mut log);
    let check = |log: &PartitionLog<SimDir>| {
        for t in -30..2030 {
            let want = all.iter().find(|r| r.1 >= t).map(|r| r.0);
            assert_eq!(log.offset_for_timestamp(t).unwrap(), want, "timestamp {t}");
        }
    };
    check(&log);
    let log = reopen(log, small_segments());
    check(&log);
}

#[test]
fn segments_roll_by_record_age() {
    let config = LogConfig {
        segment_age_max: Some(Duration::from_millis(100)),
        ..LogConfig::default()
    };
    let mut log = PartitionLog::open(SimDir::new(5), config.clone())
        .unwrap()
        .0;
    for t in [0, 50, 99, 100, 150, 230, 1000, 1001] {
        append(&mut log, &[t]);
    }
    // Segments start at t = 0, 100, 230, 1000.
    assert_eq!(log.dir().list_segments(), 4);
    for base in [0, 3, 5, 6] {
        assert!(log.dir().content(&segment_name(base)).is_some(), "{base}");
    }
    let log = reopen(log, config);
    assert_eq!(read_all(&log).len(), 8);
}

#[test]
fn retention_by_records_keeps_at_least_the_limit_in_whole_segments() {
    let mut config = small_segments();
    config.retention = Retention {
        max_records: Some(100),
        ..Retention::default()
    };
    let mut log = PartitionLog::open(SimDir::new(6), config.clone())
        .unwrap()
        .0;
    let all = fill(&mut log);
    let report = log.apply_retention(0).unwrap();
    assert!(report.segments_removed > 0);
    let kept = read_all(&log);
    assert!(kept.len() >= 100, "{} kept", kept.len());
    assert_eq!(kept[..], all[all.len() - kept.len()..]);
    assert_eq!(report.first_offset, log.first_offset());
    assert_eq!(kept[0].0, log.first_offset());
    // Removing one more segment would go below the limit.
    let first_segment_records = segment_base(log.dir(), 1) - segment_base(log.dir(), 0);
    assert!((kept.len() as u64) - first_segment_records < 100);
    // Reads below the first offset find nothing; a second pass removes nothing.
    assert!(log.read(0, 1 << 20).unwrap().is_empty());
    assert_eq!(log.apply_retention(0).unwrap().segments_removed, 0);
    let log = reopen(log, config);
    assert_eq!(read_all(&log), kept);
}

#[test]
fn retention_by_bytes_and_by_age() {
    let mut config = small_segments();
    config.retention = Retention {
        max_bytes: Some(6000),
        ..Retention::default()
    };
    let mut log = PartitionLog::open(SimDir::new(7), config.clone())
        .unwrap()
        .0;
    fill(&mut log);
    log.apply_retention(0).unwrap();
    let bytes: u64 = log
        .dir()
        .list()
        .unwrap()
        .iter()
        .filter(|n| ringbroker::storage::parse_segment_name(n).is_some())
        .map(|n| log.dir().content(n).unwrap().len() as u64)
        .sum();
    assert!(
        (6000..6000 + 2048 + 700).contains(&bytes),
        "{bytes} bytes kept"
    );

    let mut config = small_segments();
    config.retention = Retention {
        max_age: Some(Duration::from_millis(500)),
        ..Retention::default()
    };
    let mut log = PartitionLog::open(SimDir::new(8), config).unwrap().0;
    let all = fill(&mut log);
    // Records run up to t ≈ 2000: at now = 1200 everything older than 700 may go, in
    // whole segments: every record kept is newer, or shares a segment with one that is.
    assert_eq!(log.apply_retention(100).unwrap().segments_removed, 0);
    let report = log.apply_retention(1200).unwrap();
    assert!(report.segments_removed > 0);
    let kept = read_all(&log);
    assert_eq!(kept[..], all[all.len() - kept.len()..]);
    let removed_newest = all[..all.len() - kept.len()]
        .iter()
        .map(|r| r.1)
        .max()
        .unwrap();
    assert!(removed_newest < 700, "removed a record at {removed_newest}");
    // Far in the future every sealed segment goes; the active one stays.
    log.apply_retention(1_000_000).unwrap();
    assert_eq!(log.dir().list_segments(), 1);
    assert!(!read_all(&log).is_empty());
}

#[test]
fn remove_segments_before_an_offset_and_roll_if_idle() {
    let mut log = PartitionLog::open(SimDir::new(9), small_segments())
        .unwrap()
        .0;
    let all = fill(&mut log);
    let end = log.stored_end();
    assert!(log.roll_if_idle().unwrap());
    assert!(
        !log.roll_if_idle().unwrap(),
        "an empty active segment is not rolled"
    );
    let report = log.remove_segments_before(end).unwrap();
    assert_eq!(report.records_removed, all.len() as u64);
    assert_eq!(log.first_offset(), end);
    assert_eq!(log.dir().list_segments(), 1);
    assert_eq!(append(&mut log, &[5000]), end);
    let log = reopen(log, small_segments());
    assert_eq!(read_all(&log), vec![(end, 5000, b"value-at-5000".to_vec())]);
}
