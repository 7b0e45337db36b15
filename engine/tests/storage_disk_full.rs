//! A real full disk: on a tmpfs of a few MiB mounted by the test, appends through the
//! production path (a shard's `ShardLog` over `FsDir`, `Durability::Always`) fill it
//! up. The failing append gets `StorageError::NoSpace` naming the file, every record
//! acknowledged before it stays readable, and appends succeed again once space is
//! freed, at the offsets the failed ones were given. Rolling into a full disk (no
//! blocks for the index files, no inode for the next segment) fails the same way and
//! loses nothing. Needs root to mount; without it each test prints `SKIPPED` and passes.

// In tests an unwrap that fails is a test failure with its message: exactly right.
#![allow(clippy::unwrap_used)]

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

use ringbroker::runtime::{Runtime, RuntimeConfig, ShardCtx};
use ringbroker::storage::codec::{decode_batch, Record};
use ringbroker::storage::index::{index_name, time_index_name};
use ringbroker::storage::{
    segment_name, AppendOutcome, Durability, FsDir, LogConfig, PartitionLog, RecoveryReport,
    ShardLog, StorageError,
};

/// The most appends a test makes while filling the disk (it fills in far fewer).
const FILL_APPENDS_MAX: u64 = 1000;
/// How long an append may take before the test gives up on it.
const APPEND_WAIT_MAX: Duration = Duration::from_secs(10);
/// Chunk in which filler files are written.
const FILLER_CHUNK_BYTES: usize = 64 << 10;
/// Empty files a test may create to use up a tmpfs's inodes.
const INODE_FILLERS_MAX: usize = 1000;

/// A tmpfs mounted for one test; unmounted (lazily, so open files do not block it)
/// when dropped, also when the test panics.
struct Tmpfs {
    path: PathBuf,
}

impl Tmpfs {
    /// Mounts a tmpfs with `options` at `path`, or says visibly why not and returns
    /// `None` (the caller skips).
    fn mount(path: PathBuf, options: &str) -> Option<Self> {
        // SAFETY: geteuid has no preconditions and cannot fail.
        let euid = unsafe { libc::geteuid() };
        if euid != 0 {
            skip(&format!(
                "not root (euid {euid}); mounting a tmpfs needs root"
            ));
            return None;
        }
        std::fs::create_dir_all(&path).unwrap();
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", options, "tmpfs"])
            .arg(&path)
            .output();
        match mounted {
            Ok(out) if out.status.success() => Some(Self { path }),
            Ok(out) => {
                let stderr = String::from_utf8_lossy(&out.stderr);
                skip(&format!(
                    "mount -t tmpfs failed ({}): {}",
                    out.status,
                    stderr.trim()
                ));
                None
            }
            Err(error) => {
                skip(&format!("cannot run mount: {error}"));
                None
            }
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let unmounted = Command::new("umount").arg("-l").arg(&self.path).status();
        if !matches!(unmounted, Ok(status) if status.success()) {
            eprintln!("cannot unmount {}: {unmounted:?}", self.path.display());
        }
    }
}

/// Prints why a test is skipped, past the harness's output capture so it shows.
fn skip(reason: &str) {
    let _ = writeln!(std::io::stderr(), "SKIPPED: {reason}");
}

/// Writes `bytes` bytes (or, with `None`, as much as fits) to a new file at `path`,
/// synced; returns how many it wrote.
fn write_filler(path: &Path, bytes: Option<u64>) -> u64 {
    let mut file = File::create(path).unwrap();
    let chunk = vec![0xa5u8; FILLER_CHUNK_BYTES];
    let mut written = 0u64;
    while bytes.is_none_or(|b| written < b) {
        let want = bytes.map_or(chunk.len() as u64, |b| {
            (b - written).min(chunk.len() as u64)
        });
        match file.write(&chunk[..want as usize]) {
            Ok(0) => break,
            Ok(n) => written += n as u64,
            Err(e) if bytes.is_none() && e.raw_os_error() == Some(libc::ENOSPC) => break,
            Err(e) => panic!("writing filler {}: {e}", path.display()),
        }
    }
    file.sync_all().unwrap();
    written
}

/// Creates empty files until the filesystem has no inode left; returns their paths.
fn use_up_inodes(dir: &Path) -> Vec<PathBuf> {
    let mut created = Vec::new();
    for i in 0..INODE_FILLERS_MAX {
        let path = dir.join(format!("inode-filler-{i}"));
        match File::create(&path) {
            Ok(_) => created.push(path),
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => return created,
            Err(e) => panic!("creating {}: {e}", path.display()),
        }
    }
    panic!("{INODE_FILLERS_MAX} files and still inodes left: mount with nr_inodes");
}

/// The value of record `i`: its index, then a pattern, `len` bytes in all.
fn value(i: u64, len: usize) -> Vec<u8> {
    let mut v = i.to_le_bytes().to_vec();
    v.extend((8..len).map(|j| (i as usize * 31 + j) as u8));
    v
}

fn expected(offsets: std::ops::Range<u64>, len: usize) -> Vec<(u64, Vec<u8>)> {
    offsets.map(|i| (i, value(i, len))).collect()
}

/// Every stored record of `log` from its first offset, as (offset, value).
fn read_values(log: &PartitionLog<FsDir>) -> Vec<(u64, Vec<u8>)> {
    let mut out: Vec<(u64, Vec<u8>)> = Vec::new();
    let mut offset = log.first_offset();
    // Each read returns whole batches of one segment; read on from where it ended.
    while offset < log.stored_end() {
        let bytes = log.read(offset, usize::MAX).unwrap();
        assert!(!bytes.is_empty(), "read at {offset} returned nothing");
        let mut rest = &bytes[..];
        while !rest.is_empty() {
            let batch = decode_batch(rest).unwrap();
            for r in batch.records() {
                assert_eq!(r.offset, offset, "offsets contiguous");
                out.push((r.offset, r.value.to_vec()));
                offset += 1;
            }
            rest = &rest[batch.bytes().len()..];
        }
    }
    out
}

/// The log under test, in shard 0's local state.
#[derive(Default)]
struct Slot(Option<ShardLog>);

fn slot_log(ctx: &mut ShardCtx) -> ShardLog {
    ctx.with_local(Slot::default, |slot, _| slot.0.clone())
        .expect("log open on the shard")
}

/// A one-shard runtime whose shard 0 holds the log under test.
struct Shard {
    rt: Runtime,
    /// Bytes of every record value.
    value_bytes: usize,
}

impl Shard {
    fn start(value_bytes: usize) -> Self {
        let rt = Runtime::start(RuntimeConfig {
            shards: Some(1),
            ..RuntimeConfig::default()
        })
        .unwrap();
        Self { rt, value_bytes }
    }

    /// Opens (recovering) the log in `dir` on the shard.
    fn open(&self, dir: &Path, config: LogConfig) -> RecoveryReport {
        let dir = dir.to_path_buf();
        self.rt
            .handle()
            .call(0, move |ctx| {
                let fs = FsDir::open(dir, true).map_err(|e| e.to_string())?;
                let (log, report) = ShardLog::open(fs, config).map_err(|e| e.to_string())?;
                ctx.with_local(Slot::default, |slot, _| slot.0 = Some(log));
                Ok::<_, String>(report)
            })
            .unwrap()
            .unwrap()
    }

    /// Appends record `i` (one-record batch) and waits for its outcome.
    fn append(&self, i: u64) -> AppendOutcome {
        let (tx, rx) = mpsc::channel();
        let value = value(i, self.value_bytes);
        self.rt
            .handle()
            .spawn(0, move |ctx: &mut ShardCtx| {
                let record = Record {
                    timestamp: i as i64,
                    key: Some(b"key"),
                    headers: &[],
                    value: &value,
                };
                let appended = slot_log(ctx).append(ctx, &[record], move |_, outcome| {
                    let _ = tx.send(outcome);
                });
                appended.unwrap();
            })
            .unwrap();
        rx.recv_timeout(APPEND_WAIT_MAX).unwrap()
    }

    /// Appends `values` (one-record batches) in one shard turn, then flushes, so under
    /// `Batch` they go as one group; returns their outcomes in order.
    fn append_group(&self, values: Vec<Vec<u8>>) -> Vec<AppendOutcome> {
        let n = values.len();
        let (tx, rx) = mpsc::channel();
        self.rt
            .handle()
            .spawn(0, move |ctx: &mut ShardCtx| {
                let log = slot_log(ctx);
                for (i, value) in values.iter().enumerate() {
                    let record = Record {
                        timestamp: 0,
                        key: None,
                        headers: &[],
                        value,
                    };
                    let tx = tx.clone();
                    let appended = log.append(ctx, &[record], move |_, outcome| {
                        let _ = tx.send((i, outcome));
                    });
                    appended.unwrap();
                }
                log.flush(ctx);
            })
            .unwrap();
        let mut outcomes: Vec<_> = (0..n)
            .map(|_| rx.recv_timeout(APPEND_WAIT_MAX).unwrap())
            .collect();
        outcomes.sort_by_key(|(i, _)| *i);
        outcomes.into_iter().map(|(_, o)| o).collect()
    }

    /// Appends record `i` and asserts it is stored at offset `i`.
    fn append_stored(&self, i: u64) {
        match self.append(i) {
            AppendOutcome::Stored {
                base_offset,
                last_offset,
                ..
            } => assert_eq!((base_offset, last_offset), (i, i), "record {i}"),
            AppendOutcome::Failed { error, .. } => panic!("append {i} failed: {error}"),
        }
    }

    /// Appends records from 0 until one fails; returns how many were stored and the
    /// error.
    fn fill(&self) -> (u64, Arc<StorageError>) {
        for i in 0..FILL_APPENDS_MAX {
            match self.append(i) {
                AppendOutcome::Stored { base_offset, .. } => assert_eq!(base_offset, i),
                AppendOutcome::Failed { error, .. } => return (i, error),
            }
        }
        panic!("{FILL_APPENDS_MAX} appends and the disk is not full");
    }

    /// Every stored record, read through the live log on the shard.
    fn values(&self) -> Vec<(u64, Vec<u8>)> {
        self.rt
            .handle()
            .call(0, |ctx| slot_log(ctx).with_log(read_values))
            .unwrap()
    }

    /// Closes the log (nothing may be in flight) and stops the runtime.
    fn shutdown(self) {
        self.rt
            .handle()
            .call(0, |ctx| {
                let log = ctx.with_local(Slot::default, |slot, _| slot.0.take());
                assert_eq!(log.map_or(0, |l| l.waiting()), 0, "appends in flight");
            })
            .unwrap();
        self.rt.shutdown().unwrap();
    }
}

/// Asserts `error` is `NoSpace` from `op` on `path`, and its message names the path.
fn assert_no_space(error: &StorageError, op: &str, path: &Path) {
    match error {
        StorageError::NoSpace { op: o, path: p } => {
            assert_eq!((*o, p.as_path()), (op, path), "{error}");
        }
        other => panic!(
            "expected NoSpace from {op} on {}, got {other:?}",
            path.display()
        ),
    }
    let message = error.to_string();
    assert!(message.contains(&path.display().to_string()), "{message}");
}

/// Every durability policy: each scenario runs under each, on a fresh tmpfs.
const POLICIES: [Durability; 3] = [
    Durability::Always,
    Durability::Batch {
        max_delay: Duration::from_millis(2),
        max_bytes: 64 << 10,
    },
    Durability::None,
];

fn config(segment_bytes_max: u64, durability: Durability) -> LogConfig {
    LogConfig {
        durability,
        segment_bytes_max,
        index_interval_bytes: 1024,
        ..LogConfig::default()
    }
}

/// Reopens the log in `dir` (after the shard closed it) and returns what it reads.
fn reopen(dir: &Path, config: LogConfig) -> (RecoveryReport, Vec<(u64, Vec<u8>)>) {
    let (log, report) = PartitionLog::open(FsDir::open(dir, false).unwrap(), config).unwrap();
    (report, read_values(&log))
}

const MOUNT_OPTIONS: &str = "size=2m,nr_inodes=64";
/// Leaves about 320 KiB of the 2 MiB for the log.
const FILLER_BYTES: u64 = (2 << 20) - (320 << 10);

#[test]
fn append_on_a_full_disk_fails_with_no_space_and_resumes_once_space_is_freed() {
    for durability in POLICIES {
        let tmp = tempfile::tempdir().unwrap();
        let Some(mnt) = Tmpfs::mount(tmp.path().join("mnt"), MOUNT_OPTIONS) else {
            return;
        };
        fill_free_and_resume(&mnt, config(1 << 20, durability));
    }
}

/// Appends until the disk is full, checks the failure and what is readable, frees
/// space, appends on, and reopens.
fn fill_free_and_resume(mnt: &Tmpfs, config: LogConfig) {
    let filler = mnt.path.join("filler");
    write_filler(&filler, Some(FILLER_BYTES));
    let dir = mnt.path.join("log");
    let segment = dir.join(segment_name(0));
    let shard = Shard::start(8 << 10);
    shard.open(&dir, config.clone());

    let (acked, error) = shard.fill();
    assert!(acked > 0, "some appends fit before the disk is full");
    assert_no_space(&error, "append", &segment);
    // Still full: the retry fails the same way, at the same offset.
    match shard.append(acked) {
        AppendOutcome::Failed { error, .. } => assert_no_space(&error, "append", &segment),
        other => panic!("append on a still full disk: {other:?}"),
    }
    assert_eq!(
        shard.values(),
        expected(0..acked, 8 << 10),
        "acknowledged records read"
    );

    std::fs::remove_file(&filler).unwrap();
    for i in acked..acked + 5 {
        shard.append_stored(i);
    }
    assert_eq!(shard.values(), expected(0..acked + 5, 8 << 10));
    shard.shutdown();

    let (report, values) = reopen(&dir, config.clone());
    assert_eq!(
        report.truncated, None,
        "the failed bytes were cut before the next group"
    );
    assert_eq!(values, expected(0..acked + 5, 8 << 10));
}

#[test]
fn reopen_on_a_full_disk_cuts_the_failed_tail_and_keeps_every_acknowledged_record() {
    for durability in POLICIES {
        let tmp = tempfile::tempdir().unwrap();
        let Some(mnt) = Tmpfs::mount(tmp.path().join("mnt"), MOUNT_OPTIONS) else {
            return;
        };
        fill_stop_and_reopen(&mnt, config(1 << 20, durability));
    }
}

/// Appends until the disk is full, stops with the failed bytes on disk, reopens on
/// the still full disk, then frees space and appends on.
fn fill_stop_and_reopen(mnt: &Tmpfs, config: LogConfig) {
    let filler = mnt.path.join("filler");
    write_filler(&filler, Some(FILLER_BYTES));
    let dir = mnt.path.join("log");
    let shard = Shard::start(8 << 10);
    shard.open(&dir, config.clone());
    let (acked, error) = shard.fill();
    assert_no_space(&error, "append", &dir.join(segment_name(0)));
    // Stop with the failed group's bytes still on disk, and reopen on the full disk.
    shard.shutdown();

    let shard = Shard::start(8 << 10);
    let report = shard.open(&dir, config.clone());
    assert_eq!(report.next_offset, acked, "{report:?}");
    if let Some((_, from, to)) = &report.truncated {
        assert!(from < to, "{report:?}");
    }
    assert_eq!(shard.values(), expected(0..acked, 8 << 10));
    std::fs::remove_file(&filler).unwrap();
    shard.append_stored(acked);
    shard.shutdown();
    let (_, values) = reopen(&dir, config.clone());
    assert_eq!(values, expected(0..acked + 1, 8 << 10));
}

/// Records of 4 KiB in segments of 32 KiB: the ninth append rolls.
const ROLL_VALUE_BYTES: usize = 4 << 10;
const ROLL_SEGMENT_BYTES: u64 = 32 << 10;
const ROLL_RECORDS: u64 = 8;

/// Fills segment 0 to its size bound on a fresh tmpfs; the next append rolls.
fn start_full_segment(mnt: &Tmpfs, durability: Durability) -> (Shard, PathBuf) {
    let dir = mnt.path.join("log");
    let shard = Shard::start(ROLL_VALUE_BYTES);
    shard.open(&dir, config(ROLL_SEGMENT_BYTES, durability));
    for i in 0..ROLL_RECORDS {
        shard.append_stored(i);
    }
    let len = std::fs::metadata(dir.join(segment_name(0))).unwrap().len();
    assert!(len >= ROLL_SEGMENT_BYTES, "segment 0 holds {len} bytes");
    (shard, dir)
}

/// After a failed roll: frees the space, appends again (the roll succeeds), and checks
/// the two segments and every record on the shard and after a reopen.
fn finish_after_freeing(shard: Shard, dir: &Path, free: impl FnOnce()) {
    // Recovery checks every segment whatever the policy.
    let config = config(ROLL_SEGMENT_BYTES, Durability::Always);
    assert_eq!(shard.values(), expected(0..ROLL_RECORDS, ROLL_VALUE_BYTES));
    free();
    shard.append_stored(ROLL_RECORDS);
    shard.append_stored(ROLL_RECORDS + 1);
    shard.shutdown();
    assert!(dir.join(segment_name(ROLL_RECORDS)).exists(), "rolled");
    let (report, values) = reopen(dir, config);
    assert_eq!(report.segments, 2, "{report:?}");
    assert!(report.indexes_rebuilt.is_empty(), "{report:?}");
    assert_eq!(values, expected(0..ROLL_RECORDS + 2, ROLL_VALUE_BYTES));
}

#[test]
fn roll_into_a_full_disk_fails_writing_the_index_with_no_space_and_loses_nothing() {
    for durability in POLICIES {
        let tmp = tempfile::tempdir().unwrap();
        let Some(mnt) = Tmpfs::mount(tmp.path().join("mnt"), MOUNT_OPTIONS) else {
            return;
        };
        roll_into_full_blocks(&mnt, durability);
    }
}

fn roll_into_full_blocks(mnt: &Tmpfs, durability: Durability) {
    let (shard, dir) = start_full_segment(mnt, durability);
    let filler = mnt.path.join("filler");
    write_filler(&filler, None);
    match shard.append(ROLL_RECORDS) {
        AppendOutcome::Failed { error, .. } => {
            assert_no_space(&error, "write index", &dir.join(index_name(0)));
        }
        other => panic!("roll on a full disk: {other:?}"),
    }
    // Nothing was written for the failed append: the retry gets the same offset.
    assert!(!dir.join(segment_name(ROLL_RECORDS)).exists());
    finish_after_freeing(shard, &dir, || std::fs::remove_file(&filler).unwrap());
    assert!(dir.join(time_index_name(0)).exists());
}

#[test]
fn roll_without_a_free_inode_fails_creating_the_segment_with_no_space_and_loses_nothing() {
    for durability in POLICIES {
        let tmp = tempfile::tempdir().unwrap();
        let Some(mnt) = Tmpfs::mount(tmp.path().join("mnt"), MOUNT_OPTIONS) else {
            return;
        };
        roll_without_inodes(&mnt, durability);
    }
}

fn roll_without_inodes(mnt: &Tmpfs, durability: Durability) {
    let (shard, dir) = start_full_segment(mnt, durability);
    let mut fillers = use_up_inodes(&mnt.path);
    // Room for the two index files of the sealed segment, none for the next segment.
    for path in fillers.drain(..2) {
        std::fs::remove_file(path).unwrap();
    }
    match shard.append(ROLL_RECORDS) {
        AppendOutcome::Failed { error, .. } => {
            assert_no_space(
                &error,
                "create segment",
                &dir.join(segment_name(ROLL_RECORDS)),
            );
        }
        other => panic!("roll without an inode: {other:?}"),
    }
    finish_after_freeing(shard, &dir, || {
        for path in fillers {
            std::fs::remove_file(path).unwrap();
        }
    });
}

/// A group of several batches fails on a full disk after its first batch was written
/// whole. Every append of it is reported `Failed` ("nothing of it will be served, after
/// a restart either"), so its bytes must be cut before that is reported: a cut left
/// for the next group never happens if the broker stops first, and recovery then keeps
/// the whole batch, serving a failed record (twice, once its producer retried).
#[test]
fn failed_appends_stay_gone_after_a_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let Some(mnt) = Tmpfs::mount(tmp.path().join("mnt"), MOUNT_OPTIONS) else {
        return;
    };
    let dir = mnt.path.join("log");
    let batch = LogConfig {
        durability: Durability::Batch {
            max_delay: Duration::from_secs(3600),
            max_bytes: 1 << 20,
        },
        ..config(1 << 20, Durability::Always)
    };
    let shard = Shard::start(100);
    shard.open(&dir, batch.clone());
    let stored = shard.append_group(vec![value(0, 100)]);
    assert!(matches!(
        stored[0],
        AppendOutcome::Stored { base_offset: 0, .. }
    ));
    // No free page left: a write fits only in the rest of the segment's last page.
    write_filler(&mnt.path.join("filler"), None);
    // One group: a batch that fits whole, then one that does not.
    let outcomes = shard.append_group(vec![value(1, 500), value(2, 16 << 10)]);
    for outcome in &outcomes {
        match outcome {
            AppendOutcome::Failed { error, .. } => {
                assert_no_space(error, "append", &dir.join(segment_name(0)));
            }
            other => panic!("expected the whole group to fail: {other:?}"),
        }
    }
    assert_eq!(
        shard.values(),
        vec![(0, value(0, 100))],
        "served before the restart"
    );
    shard.shutdown();

    let (report, values) = reopen(&dir, batch);
    let offsets: Vec<u64> = values.iter().map(|(offset, _)| *offset).collect();
    assert_eq!(
        offsets,
        [0],
        "a failed append is served after a restart: {report:?}"
    );
    assert_eq!(values, vec![(0, value(0, 100))]);
}
