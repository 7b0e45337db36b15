//! A short write on the production path (`ShardLog` over the shard's io_uring). With
//! `RLIMIT_FSIZE` below the end of a group, the kernel writes the group only up to the
//! limit and reports a short count without an error; `ShardLog` must write the rest
//! (which then fails with `EFBIG`, since the limit still holds) instead of treating
//! the short count as done, and the failed group must be cut and reported, after which
//! the log takes appends again.
//!
//! Its own test binary: the file-size limit is per process, and no other test may run
//! under it.

// In tests an unwrap that fails is a test failure with its message: exactly right.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::sync::mpsc;
use std::time::Duration;

use ringbroker::runtime::{Runtime, RuntimeConfig, ShardCtx};
use ringbroker::storage::codec::{decode_batch, Record};
use ringbroker::storage::{AppendOutcome, Durability, FsDir, LogConfig, PartitionLog, ShardLog};

const LIMIT: u64 = 64 << 10;

fn set_file_size_limit(soft: u64) {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `limit` is a valid, writable rlimit for the call's duration.
    let got = unsafe { libc::getrlimit(libc::RLIMIT_FSIZE, &mut limit) };
    assert_eq!(got, 0);
    limit.rlim_cur = soft.min(limit.rlim_max);
    // SAFETY: `limit` is a valid rlimit; lowering or restoring the soft limit within
    // the hard one is always allowed.
    let set = unsafe { libc::setrlimit(libc::RLIMIT_FSIZE, &limit) };
    assert_eq!(set, 0);
}

/// The shard's log, kept in shard-local state (a `ShardLog` is not `Send`).
#[derive(Default)]
struct Slot(Option<ShardLog>);

/// Opens the log in `path` on shard 0 and keeps it there.
fn open_on_shard(rt: &Runtime, path: &Path, config: LogConfig) {
    let path = path.to_path_buf();
    rt.handle()
        .call(0, move |ctx: &mut ShardCtx| {
            let dir = FsDir::open(&path, true).unwrap();
            let (log, _) = ShardLog::open(dir, config).unwrap();
            ctx.with_local(Slot::default, |slot, _| slot.0 = Some(log));
        })
        .unwrap();
}

/// Appends one record holding `value` on shard 0 and waits for its outcome.
fn append_on_shard(rt: &Runtime, value: Vec<u8>) -> AppendOutcome {
    let (tx, rx) = mpsc::channel();
    rt.handle()
        .spawn(0, move |ctx: &mut ShardCtx| {
            let log = ctx
                .with_local(Slot::default, |slot, _| slot.0.clone())
                .unwrap();
            let record = Record {
                timestamp: 1,
                key: None,
                headers: &[],
                value: &value,
            };
            log.append(ctx, &[record], move |_, outcome| {
                tx.send(outcome).unwrap();
            })
            .unwrap();
        })
        .unwrap();
    rx.recv_timeout(Duration::from_secs(30)).unwrap()
}

/// Every value in the log at `path`, after a reopen that must cut nothing.
fn read_back(path: &Path, config: LogConfig) -> Vec<Vec<u8>> {
    let dir = FsDir::open(path, false).unwrap();
    let (log, report) = PartitionLog::open(dir, config).unwrap();
    assert!(report.truncated.is_none(), "{report:?}");
    let bytes = log.read(0, usize::MAX).unwrap();
    let mut rest = &bytes[..];
    let mut values = Vec::new();
    while !rest.is_empty() {
        let batch = decode_batch(rest).unwrap();
        values.extend(batch.records().map(|r| r.value.to_vec()));
        rest = &rest[batch.bytes().len()..];
    }
    values
}

#[test]
fn a_short_write_is_continued_and_a_failed_rest_is_cut() {
    // SAFETY: ignoring SIGXFSZ (sent by a write past RLIMIT_FSIZE) touches no Rust
    // state; the write then fails with EFBIG instead of killing the process.
    unsafe { libc::signal(libc::SIGXFSZ, libc::SIG_IGN) };
    let tmp = tempfile::tempdir().unwrap();
    let rt = Runtime::start(RuntimeConfig {
        shards: Some(1),
        ..RuntimeConfig::default()
    })
    .unwrap();
    let config = LogConfig {
        durability: Durability::Always,
        ..LogConfig::default()
    };
    open_on_shard(&rt, tmp.path(), config.clone());
    let small = vec![7u8; 1000];
    let big = vec![9u8; 2 * LIMIT as usize];

    let first = append_on_shard(&rt, small.clone());
    assert!(matches!(
        first,
        AppendOutcome::Stored { base_offset: 0, .. }
    ));
    set_file_size_limit(LIMIT);
    let failed = append_on_shard(&rt, big.clone());
    set_file_size_limit(u64::MAX);
    match failed {
        AppendOutcome::Failed { error, .. } => {
            // The first write stopped at the limit without an error (and a short
            // write cancels the linked sync); only writing the rest can hit EFBIG.
            let text = error.to_string();
            assert!(text.contains("too large"), "{text}");
        }
        other => panic!("a group past RLIMIT_FSIZE was not failed: {other:?}"),
    }
    // The failed bytes were cut; the next append reuses the offset and stores in full.
    let again = append_on_shard(&rt, big.clone());
    assert!(matches!(
        again,
        AppendOutcome::Stored { base_offset: 1, .. }
    ));
    rt.shutdown().unwrap();
    assert_eq!(read_back(tmp.path(), config), vec![small, big]);
}
