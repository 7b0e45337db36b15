//! Recovery and error paths of the partition log on the simulated directory: a flipped
//! bit or a cut anywhere in the tail segment is cut exactly at the last good batch;
//! corruption in a sealed segment refuses to open; a full disk or failed sync fails the
//! append with a typed error, keeps earlier records readable, and appends work again
//! once the cause is gone.

// In tests an unwrap that fails is a test failure with its message: exactly right.
#![allow(clippy::unwrap_used)]

use std::time::Instant;

use ringbroker::storage::codec::{decode_batch, Record};
use ringbroker::storage::sim::{FaultPlan, SimDir};
use ringbroker::storage::{
    segment_name, AppendOutcome, BlockingDriver, Durability, LogConfig, PartitionLog, StorageError,
};

fn config() -> LogConfig {
    LogConfig {
        durability: Durability::Always,
        ..LogConfig::default()
    }
}

/// Appends `n` single-record batches with values `v{i}` and drives them to disk;
/// returns each batch's byte range in the (single) segment.
fn fill(log: &mut PartitionLog<SimDir>, n: usize) -> Vec<(u64, u64)> {
    let mut ranges = Vec::new();
    for i in 0..n {
        let base = append_value(log, i as i64, &format!("v{i}-{}", "x".repeat(i % 7)));
        assert_eq!(base, i as u64);
    }
    let content = log.dir().content(&segment_name(0)).unwrap().to_vec();
    let mut position = 0;
    while position < content.len() {
        let len = decode_batch(&content[position..]).unwrap().bytes().len();
        ranges.push((position as u64, (position + len) as u64));
        position += len;
    }
    ranges
}

/// Appends one record with `value`, drives it to disk, and returns its outcome.
fn try_append(log: &mut PartitionLog<SimDir>, timestamp: i64, value: &[u8]) -> AppendOutcome {
    let record = Record {
        timestamp,
        key: None,
        headers: &[],
        value,
    };
    log.append(&[record], Instant::now()).unwrap();
    BlockingDriver::run(log, Instant::now());
    log.take_outcome().unwrap()
}

/// Appends one record with `value`, which must be stored; returns its offset.
fn append_value(log: &mut PartitionLog<SimDir>, timestamp: i64, value: &str) -> u64 {
    match try_append(log, timestamp, value.as_bytes()) {
        AppendOutcome::Stored { base_offset, .. } => base_offset,
        other => panic!("append of {value:?} not stored: {other:?}"),
    }
}

/// Every value in the log, in offset order, across all segments.
fn values(log: &PartitionLog<SimDir>) -> Vec<String> {
    let mut out = Vec::new();
    let mut offset = log.first_offset();
    while offset < log.stored_end() {
        let bytes = log.read(offset, usize::MAX).unwrap();
        let mut rest = &bytes[..];
        while !rest.is_empty() {
            let batch = decode_batch(rest).unwrap();
            for r in batch.records() {
                if r.offset >= offset {
                    out.push(String::from_utf8(r.value.to_vec()).unwrap());
                    offset = r.offset + 1;
                }
            }
            rest = &rest[batch.bytes().len()..];
        }
    }
    out
}

#[test]
fn recover_cuts_a_flipped_bit_at_the_last_good_batch() {
    for seed in 0..200u64 {
        let (mut log, _) = PartitionLog::open(SimDir::new(seed), config()).unwrap();
        let ranges = fill(&mut log, 20);
        let file_len = ranges.last().unwrap().1;
        let position = (seed * 7919) % file_len;
        let mut dir = log.into_dir();
        dir.corrupt(&segment_name(0), position as usize, (seed % 8) as u8);
        let (log, report) = PartitionLog::open(dir, config()).unwrap();
        let hit = ranges
            .iter()
            .position(|&(s, e)| s <= position && position < e)
            .unwrap();
        assert_eq!(
            log.stored_end(),
            hit as u64,
            "seed {seed}: cut at the wrong batch"
        );
        assert_eq!(
            report.truncated,
            Some((segment_name(0), ranges[hit].0, file_len))
        );
        assert_eq!(values(&log).len(), hit);
    }
}

#[test]
fn recover_cuts_a_truncated_tail_at_the_last_whole_batch() {
    let (mut log, _) = PartitionLog::open(SimDir::new(1), config()).unwrap();
    let file_len = fill(&mut log, 10).last().unwrap().1;
    for cut in (0..file_len).step_by(13) {
        let (mut log, _) = PartitionLog::open(SimDir::new(1), config()).unwrap();
        let ranges = fill(&mut log, 10);
        let mut dir = log.into_dir();
        dir.chop(&segment_name(0), cut as usize);
        let (log, report) = PartitionLog::open(dir, config()).unwrap();
        let whole: Vec<_> = ranges.iter().filter(|&&(_, e)| e <= cut).collect();
        assert_eq!(log.stored_end(), whole.len() as u64, "cut at byte {cut}");
        let kept = whole.last().map_or(0, |&&(_, e)| e);
        let expected_cut = (kept < cut).then(|| (segment_name(0), kept, cut));
        assert_eq!(report.truncated, expected_cut, "cut at byte {cut}");
    }
}

#[test]
fn recovered_log_accepts_appends_at_the_next_offset() {
    let (mut log, _) = PartitionLog::open(SimDir::new(2), config()).unwrap();
    fill(&mut log, 5);
    let mut dir = log.into_dir();
    dir.corrupt(&segment_name(0), 200, 3);
    let (mut log, _) = PartitionLog::open(dir, config()).unwrap();
    let next = log.next_offset();
    let record = Record {
        timestamp: 9,
        key: Some(b"k"),
        headers: &[],
        value: b"after",
    };
    log.append(&[record], Instant::now()).unwrap();
    BlockingDriver::run(&mut log, Instant::now());
    assert!(
        matches!(log.take_outcome(), Some(AppendOutcome::Stored { base_offset, .. }) if base_offset == next)
    );
    assert_eq!(values(&log).last().map(String::as_str), Some("after"));
}

#[test]
fn corruption_in_a_sealed_segment_refuses_to_open() {
    let cfg = LogConfig {
        segment_bytes_max: 200,
        ..config()
    };
    let (mut log, _) = PartitionLog::open(SimDir::new(3), cfg.clone()).unwrap();
    for i in 0..30 {
        append_value(&mut log, i, &format!("value {i}"));
    }
    let mut dir = log.into_dir();
    dir.corrupt(&segment_name(0), 10, 0);
    match PartitionLog::open(dir, cfg) {
        Err(StorageError::Corrupt { position, .. }) => assert_eq!(position, 0),
        other => panic!("expected Corrupt, got {other:?}"),
    }
}

#[test]
fn segments_roll_and_reads_cross_them() {
    let cfg = LogConfig {
        segment_bytes_max: 300,
        index_interval_bytes: 64,
        ..config()
    };
    let (mut log, _) = PartitionLog::open(SimDir::new(4), cfg.clone()).unwrap();
    for i in 0..100 {
        append_value(&mut log, i, &format!("value {i}"));
    }
    let segments = log.dir().list_segments();
    assert!(segments > 5, "only {segments} segments");
    let (log, report) = PartitionLog::open(log.into_dir(), cfg).unwrap();
    assert_eq!(report.segments, segments);
    assert_eq!(report.truncated, None);
    let all = values(&log);
    assert_eq!(all.len(), 100);
    for (i, v) in all.iter().enumerate() {
        assert_eq!(v, &format!("value {i}"));
    }
    // A read starting in the middle of a segment begins with the batch holding it.
    let from_57 = decode_batch(&log.read(57, 1).unwrap())
        .unwrap()
        .records()
        .next()
        .unwrap()
        .offset;
    assert_eq!(from_57, 57);
}

#[test]
fn disk_full_fails_the_append_and_recovers_when_space_is_freed() {
    let (mut log, _) = PartitionLog::open(SimDir::new(5), config()).unwrap();
    fill(&mut log, 3);
    let used = log.dir().content(&segment_name(0)).unwrap().len() as u64;
    log.dir_mut().set_faults(FaultPlan {
        capacity_bytes: Some(used + 10),
        ..FaultPlan::default()
    });
    let big = vec![7u8; 500];
    match try_append(&mut log, 1, &big) {
        AppendOutcome::Failed { error, .. } => {
            assert!(matches!(*error, StorageError::NoSpace { .. }), "{error}");
            assert!(error.to_string().contains("no space left"), "{error}");
        }
        other => panic!("expected a NoSpace failure, got {other:?}"),
    }
    assert_eq!(values(&log).len(), 3, "earlier records stay readable");
    log.dir_mut().set_faults(FaultPlan::default());
    assert!(matches!(
        try_append(&mut log, 1, &big),
        AppendOutcome::Stored { base_offset: 3, .. }
    ));
    assert_eq!(values(&log).len(), 4);
}

#[test]
fn failed_sync_fails_the_group_and_the_next_append_reuses_its_offsets() {
    let (mut log, _) = PartitionLog::open(SimDir::new(6), config()).unwrap();
    fill(&mut log, 2);
    log.dir_mut().set_faults(FaultPlan {
        fail_sync: Some((1, libc::EIO)),
        ..FaultPlan::default()
    });
    let t = log
        .append(
            &[Record {
                timestamp: 1,
                key: None,
                headers: &[],
                value: b"lost",
            }],
            Instant::now(),
        )
        .unwrap();
    BlockingDriver::run(&mut log, Instant::now());
    assert!(
        matches!(log.take_outcome(), Some(AppendOutcome::Failed { ticket, .. }) if ticket == t)
    );
    log.append(
        &[Record {
            timestamp: 1,
            key: None,
            headers: &[],
            value: b"kept",
        }],
        Instant::now(),
    )
    .unwrap();
    BlockingDriver::run(&mut log, Instant::now());
    assert!(matches!(
        log.take_outcome(),
        Some(AppendOutcome::Stored { base_offset: 2, .. })
    ));
    assert_eq!(
        values(&log),
        vec!["v0-".to_owned(), "v1-x".to_owned(), "kept".to_owned()]
    );
}
