//! The partition log on a real shard: appends go through the shard's io_uring as
//! linked write + fdatasync chains on real files, group commit folds every append that
//! arrives during a sync into the next group, each durability policy reports the
//! assigned offsets, and what was acknowledged reads back after a reopen.

// In tests an unwrap that fails is a test failure with its message: exactly right.
#![allow(clippy::unwrap_used)]

use std::sync::mpsc;
use std::time::Duration;

use ringbroker::runtime::{Runtime, RuntimeConfig, ShardCtx};
use ringbroker::storage::codec::{decode_batch, Record};
use ringbroker::storage::{AppendOutcome, Durability, FsDir, LogConfig, PartitionLog, ShardLog};

fn runtime() -> Runtime {
    Runtime::start(RuntimeConfig {
        shards: Some(1),
        ..RuntimeConfig::default()
    })
    .unwrap()
}

/// On shard 0: opens the log in `path`, appends `n` single-record batches in one turn
/// (value `record-{i}`), and returns every outcome (in callback order) and the number
/// of groups the log submitted.
fn append_burst(
    path: &std::path::Path,
    config: LogConfig,
    n: usize,
) -> (Vec<(usize, AppendOutcome)>, u64) {
    let rt = runtime();
    let (tx, rx) = mpsc::channel();
    let dir = FsDir::open(path, true).unwrap();
    rt.handle()
        .spawn(0, move |ctx: &mut ShardCtx| {
            let (log, _) = ShardLog::open(dir, config).unwrap();
            for i in 0..n {
                let value = format!("record-{i}");
                let record = Record {
                    timestamp: i as i64,
                    key: Some(b"k"),
                    headers: &[(b"h", b"v")],
                    value: value.as_bytes(),
                };
                let tx = tx.clone();
                let groups = log.clone();
                log.append(ctx, &[record], move |_, outcome| {
                    tx.send((i, outcome, groups.groups())).unwrap();
                })
                .unwrap();
            }
            // Keep the log alive until the last callback (it holds clones).
            log.flush(ctx);
        })
        .unwrap();
    let mut outcomes = Vec::new();
    let mut groups = 0;
    for _ in 0..n {
        let (i, outcome, g) = rx.recv_timeout(Duration::from_secs(30)).unwrap();
        outcomes.push((i, outcome));
        groups = g;
    }
    rt.shutdown().unwrap();
    (outcomes, groups)
}

/// Reopens the log at `path` and returns every value, in offset order.
fn read_back(path: &std::path::Path) -> Vec<String> {
    let dir = FsDir::open(path, false).unwrap();
    let (log, report) = PartitionLog::open(dir, LogConfig::default()).unwrap();
    assert!(report.truncated.is_none(), "{report:?}");
    let mut values = Vec::new();
    // Each read returns batches of one segment; read on from where it ended.
    while (values.len() as u64) < log.stored_end() {
        let bytes = log.read(values.len() as u64, usize::MAX).unwrap();
        let mut rest = &bytes[..];
        while !rest.is_empty() {
            let batch = decode_batch(rest).unwrap();
            for r in batch.records() {
                assert_eq!(r.offset as usize, values.len());
                assert_eq!(r.key, Some(&b"k"[..]));
                values.push(String::from_utf8(r.value.to_vec()).unwrap());
            }
            rest = &rest[batch.bytes().len()..];
        }
    }
    values
}

fn assert_stored_in_order(outcomes: &[(usize, AppendOutcome)]) {
    for (n, (i, outcome)) in outcomes.iter().enumerate() {
        assert_eq!(*i, n, "callbacks run in append order");
        match outcome {
            AppendOutcome::Stored {
                base_offset,
                last_offset,
                ..
            } => assert_eq!((*base_offset, *last_offset), (n as u64, n as u64)),
            AppendOutcome::Failed { error, .. } => panic!("append {i} failed: {error}"),
        }
    }
}

#[test]
fn always_appends_share_syncs_and_read_back() {
    // The first appends start groups at once, one per slot (`groups_in_flight_max`);
    // the rest arrive while those run and share the next group.
    for in_flight in [1, 2, 4] {
        let tmp = tempfile::tempdir().unwrap();
        let config = LogConfig {
            durability: Durability::Always,
            groups_in_flight_max: in_flight,
            ..LogConfig::default()
        };
        let (outcomes, groups) = append_burst(tmp.path(), config, 1000);
        assert_stored_in_order(&outcomes);
        assert_eq!(
            groups,
            in_flight as u64 + 1,
            "1000 appends in one turn, {in_flight} groups in flight at most"
        );
        let expected: Vec<String> = (0..1000).map(|i| format!("record-{i}")).collect();
        assert_eq!(read_back(tmp.path()), expected);
    }
}

#[test]
fn batch_policy_holds_a_group_until_its_delay_or_size() {
    let tmp = tempfile::tempdir().unwrap();
    let config = LogConfig {
        durability: Durability::Batch {
            max_delay: Duration::from_millis(20),
            max_bytes: 1 << 20,
        },
        ..LogConfig::default()
    };
    let (outcomes, groups) = append_burst(tmp.path(), config, 300);
    assert_stored_in_order(&outcomes);
    assert_eq!(groups, 1, "all 300 appends fit one delayed group");
    assert_eq!(read_back(tmp.path()).len(), 300);

    // A small byte bound starts groups before the delay.
    let tmp = tempfile::tempdir().unwrap();
    let config = LogConfig {
        durability: Durability::Batch {
            max_delay: Duration::from_secs(3600),
            max_bytes: 4096,
        },
        ..LogConfig::default()
    };
    let (outcomes, groups) = append_burst(tmp.path(), config, 300);
    assert_stored_in_order(&outcomes);
    assert!(groups > 1, "{groups} groups");
    assert_eq!(read_back(tmp.path()).len(), 300);
}

#[test]
fn none_policy_acknowledges_after_the_write() {
    let tmp = tempfile::tempdir().unwrap();
    let config = LogConfig {
        durability: Durability::None,
        ..LogConfig::default()
    };
    let (outcomes, _) = append_burst(tmp.path(), config, 500);
    assert_stored_in_order(&outcomes);
    assert_eq!(read_back(tmp.path()).len(), 500);
}

#[test]
fn appends_roll_segments_and_continue_after_reopen() {
    let tmp = tempfile::tempdir().unwrap();
    let config = LogConfig {
        durability: Durability::Always,
        segment_bytes_max: 8192,
        ..LogConfig::default()
    };
    let (outcomes, _) = append_burst(tmp.path(), config.clone(), 400);
    assert_stored_in_order(&outcomes);
    // A group may pass the size bound; the next one rolls. A second run appends after
    // the first one's records, in a new segment.
    let (outcomes, _) = append_burst(tmp.path(), config, 10);
    match &outcomes[0].1 {
        AppendOutcome::Stored { base_offset, .. } => assert_eq!(*base_offset, 400),
        other => panic!("{other:?}"),
    }
    let segments = std::fs::read_dir(tmp.path())
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .ends_with(".log")
        })
        .count();
    assert!(segments > 1, "{segments} segments");
    assert_eq!(read_back(tmp.path()).len(), 410);
    // Sealed segments are read from one shared map: two reads of the same batch are
    // the same bytes in memory, not copies. The active segment's reads are copies.
    let dir = FsDir::open(tmp.path(), false).unwrap();
    let (log, _) = PartitionLog::open(dir, LogConfig::default()).unwrap();
    let (a, b) = (log.read(0, 100).unwrap(), log.read(0, 100).unwrap());
    assert_eq!(a.as_ptr(), b.as_ptr(), "sealed segment reads share the map");
    let last = log.stored_end() - 1;
    let (a, b) = (log.read(last, 100).unwrap(), log.read(last, 100).unwrap());
    assert_eq!(a, b);
    assert_ne!(
        a.as_ptr(),
        b.as_ptr(),
        "active segment reads are buffers of their own"
    );
}

/// Appends from callbacks: `appenders` appends stay outstanding, each completion
/// appends again, until `total` were stored. Returns the groups the log submitted.
fn closed_loop(path: &std::path::Path, appenders: usize, total: usize) -> u64 {
    fn again(
        log: ShardLog,
        ctx: &mut ShardCtx,
        left: std::rc::Rc<std::cell::Cell<usize>>,
        tx: mpsc::Sender<u64>,
    ) {
        if left.get() == 0 {
            return;
        }
        left.set(left.get() - 1);
        let record = Record {
            timestamp: 0,
            key: Some(b"k"),
            headers: &[],
            value: b"closed-loop",
        };
        let next = log.clone();
        log.append(ctx, &[record], move |ctx, outcome| {
            assert!(
                matches!(outcome, AppendOutcome::Stored { .. }),
                "{outcome:?}"
            );
            if left.get() == 0 {
                let _ = tx.send(next.groups());
            }
            again(next, ctx, left, tx);
        })
        .unwrap();
    }
    let rt = runtime();
    let (tx, rx) = mpsc::channel();
    let dir = FsDir::open(path, true).unwrap();
    rt.handle()
        .spawn(0, move |ctx: &mut ShardCtx| {
            let (log, _) = ShardLog::open(dir, LogConfig::default()).unwrap();
            let left = std::rc::Rc::new(std::cell::Cell::new(total));
            for _ in 0..appenders {
                again(log.clone(), ctx, left.clone(), tx.clone());
            }
        })
        .unwrap();
    let groups = rx.recv_timeout(Duration::from_secs(60)).unwrap();
    rt.shutdown().unwrap();
    groups
}

#[test]
fn appends_made_by_callbacks_join_one_group() {
    // Each completion appends again. The callbacks of a group all run before the next
    // group is submitted, so it holds every appender: about `appenders` appends per
    // group, not the half that submitting from the first callback would give.
    let tmp = tempfile::tempdir().unwrap();
    let (appenders, total) = (32, 3200);
    let groups = closed_loop(tmp.path(), appenders, total);
    let per_group = total as f64 / groups as f64;
    assert!(
        per_group >= 0.8 * appenders as f64,
        "{per_group:.1} appends per group with {appenders} appenders ({groups} groups)"
    );
}

#[test]
fn logs_wait_for_free_op_slots_instead_of_failing() {
    // With 16 op slots, 12 logs appending at once need 24 (a write and a sync each).
    // The groups that do not fit wait for slots and go out later; none fails.
    let tmp = tempfile::tempdir().unwrap();
    let rt = Runtime::start(RuntimeConfig {
        shards: Some(1),
        uring_entries: 8,
        io_ops_max: 16,
        ..RuntimeConfig::default()
    })
    .unwrap();
    assert_eq!(rt.handle().call(0, |ctx| ctx.ops_available()).unwrap(), 16);
    let (tx, rx) = mpsc::channel();
    let dirs: Vec<FsDir> = (0..12)
        .map(|i| FsDir::open(tmp.path().join(format!("log-{i}")), true).unwrap())
        .collect();
    rt.handle()
        .spawn(0, move |ctx: &mut ShardCtx| {
            for (i, dir) in dirs.into_iter().enumerate() {
                let (log, _) = ShardLog::open(dir, LogConfig::default()).unwrap();
                let tx = tx.clone();
                let record = Record {
                    timestamp: 0,
                    key: Some(b"k"),
                    headers: &[],
                    value: b"slot",
                };
                let keep = log.clone();
                log.append(ctx, &[record], move |_, outcome| {
                    drop(keep);
                    tx.send((i, outcome)).unwrap();
                })
                .unwrap();
            }
        })
        .unwrap();
    let mut stored = Vec::new();
    for _ in 0..12 {
        let (i, outcome) = rx.recv_timeout(Duration::from_secs(30)).unwrap();
        assert!(
            matches!(outcome, AppendOutcome::Stored { base_offset: 0, .. }),
            "log {i}: {outcome:?}"
        );
        stored.push(i);
    }
    stored.sort_unstable();
    assert_eq!(stored, (0..12).collect::<Vec<_>>());
    rt.shutdown().unwrap();
    for i in 0..12 {
        assert_eq!(
            read_back(&tmp.path().join(format!("log-{i}"))),
            vec!["slot"]
        );
    }
}
