//! The metadata store on the simulated directory: changes round-trip through the log and
//! snapshots and survive reopening; the map reflects only stored changes; a torn or
//! corrupt snapshot falls back to the previous one or to the log alone (and is
//! reported), a gap between snapshot and log refuses to open; and under random power
//! cuts (also in the middle of a snapshot) every acknowledged change survives, in
//! order, nothing of a failed group does, and unacknowledged groups are all or nothing.
//!
//! Seeds of the power-cut test: `RINGBROKER_META_SEEDS` (default 400), first seed
//! `RINGBROKER_META_SEED` (default 0): a failure prints its seed to replay it.

// In tests an unwrap that fails is a test failure with its message: exactly right.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::os::fd::RawFd;
use std::path::Path;
use std::time::{Duration, Instant};

use ringbroker::storage::codec::{decode_batch, peek_header};
use ringbroker::storage::meta::{
    parse_snapshot_name, snapshot_name, MetaAppendError, MetaConfig, MetaRecoveryReport, MetaStore,
    Op, SnapshotOutcome, ENTRY_BYTES_MAX, SNAPSHOT_BATCH_BYTES_MAX, SNAPSHOT_TRAILER_LEN,
};
use ringbroker::storage::sim::{random_synced_durability, FaultPlan, SeededRng, SimDir};
use ringbroker::storage::{
    parse_segment_name, AppendOutcome, AppendTicket, BlockingDriver, Durability, FileId, IoRequest,
    LogConfig, StorageDir, StorageError,
};

type Map = BTreeMap<Vec<u8>, Vec<u8>>;

/// What the test directory does with one mutating call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    /// Carry it out.
    Pass,
    /// Fail it with EIO; the process lives on.
    Fail,
    /// The process dies before it: this call and every later one do nothing.
    Die,
}

/// Decides each mutating call's fate from its kind (`create`, `remove`, `write`,
/// `sync`, `truncate`) and file name.
type Judge = Box<dyn FnMut(&str, &str) -> Fate>;

/// A `SimDir` that can kill the process at any chosen mutating call (so a power cut
/// can fall inside a snapshot, between its sync and the removals after it, ...), or
/// fail chosen calls.
struct TestDir {
    sim: SimDir,
    names: HashMap<FileId, String>,
    judge: Option<Judge>,
    dead: bool,
}

impl TestDir {
    fn new(seed: u64) -> Self {
        Self {
            sim: SimDir::new(seed),
            names: HashMap::new(),
            judge: None,
            dead: false,
        }
    }

    fn gate(&mut self, op: &str, name: &str) -> io::Result<()> {
        let fate = match (&mut self.judge, self.dead) {
            (_, true) => Fate::Die,
            (Some(judge), false) => judge(op, name),
            (None, false) => Fate::Pass,
        };
        match fate {
            Fate::Pass => Ok(()),
            Fate::Fail => Err(io::Error::from_raw_os_error(libc::EIO)),
            Fate::Die => {
                self.dead = true;
                Err(io::Error::from_raw_os_error(libc::EIO))
            }
        }
    }

    fn name(&self, file: FileId) -> String {
        self.names.get(&file).cloned().unwrap_or_default()
    }

    /// Power cut and restart: unsynced bytes are lost or torn, the process lives again.
    fn power_cut(&mut self) {
        self.dead = false;
        self.judge = None;
        self.names.clear();
        self.sim.power_cut();
    }

    fn names_with(&self, suffix: &str) -> Vec<String> {
        let mut names = self.sim.list().unwrap();
        names.retain(|n| n.ends_with(suffix));
        names
    }
}

impl StorageDir for TestDir {
    fn path(&self) -> &Path {
        self.sim.path()
    }
    fn list(&self) -> io::Result<Vec<String>> {
        self.sim.list()
    }
    fn create(&mut self, name: &str) -> io::Result<FileId> {
        self.gate("create", name)?;
        let file = self.sim.create(name)?;
        self.names.insert(file, name.to_owned());
        Ok(file)
    }
    fn open(&mut self, name: &str) -> io::Result<FileId> {
        let file = self.sim.open(name)?;
        self.names.insert(file, name.to_owned());
        Ok(file)
    }
    fn close(&mut self, file: FileId) {
        self.names.remove(&file);
        self.sim.close(file);
    }
    fn remove(&mut self, name: &str) -> io::Result<()> {
        self.gate("remove", name)?;
        self.sim.remove(name)
    }
    fn len(&self, file: FileId) -> io::Result<u64> {
        self.sim.len(file)
    }
    fn read_at(&self, file: FileId, pos: u64, buf: &mut [u8]) -> io::Result<usize> {
        self.sim.read_at(file, pos, buf)
    }
    fn write_at(&mut self, file: FileId, pos: u64, data: &[u8]) -> io::Result<()> {
        self.gate("write", &self.name(file))?;
        self.sim.write_at(file, pos, data)
    }
    fn sync_data(&mut self, file: FileId) -> io::Result<()> {
        self.gate("sync", &self.name(file))?;
        self.sim.sync_data(file)
    }
    fn truncate(&mut self, file: FileId, len: u64) -> io::Result<()> {
        self.gate("truncate", &self.name(file))?;
        self.sim.truncate(file, len)
    }
    fn raw_fd(&self, _file: FileId) -> Option<RawFd> {
        None
    }
}

fn config() -> MetaConfig {
    MetaConfig {
        log: LogConfig {
            durability: Durability::Always,
            segment_bytes_max: 4096,
            ..LogConfig::default()
        },
        snapshot_after_bytes: 4 << 20,
    }
}

fn open(dir: TestDir, config: MetaConfig) -> (MetaStore<TestDir>, MetaRecoveryReport) {
    MetaStore::open(dir, config).unwrap()
}

/// Carries out every request and returns the outcomes, in order.
fn drive(store: &mut MetaStore<TestDir>) -> Vec<AppendOutcome> {
    let mut outcomes = Vec::new();
    for _ in 0..100 {
        BlockingDriver::run(store.log_mut(), Instant::now());
        while let Some(outcome) = store.take_outcome() {
            outcomes.push(outcome);
        }
        if !store.log().is_busy() {
            return outcomes;
        }
    }
    panic!("the log stays busy");
}

fn assert_all_stored(outcomes: &[AppendOutcome]) {
    for outcome in outcomes {
        assert!(
            matches!(outcome, AppendOutcome::Stored { .. }),
            "{outcome:?}"
        );
    }
}

fn put(key: &[u8], value: &[u8]) -> Op {
    Op::Put {
        key: key.to_vec(),
        value: value.to_vec(),
    }
}

fn apply_ops(map: &mut Map, ops: &[Op]) {
    for op in ops {
        match op {
            Op::Put { key, value } => {
                map.insert(key.clone(), value.clone());
            }
            Op::Delete { key } => {
                map.remove(key);
            }
        }
    }
}

/// Writes `n` puts (and a delete every 5th) as separate groups, drives them (a few at
/// a time, so the log writes several groups and rolls), and applies them to `model`.
fn fill(store: &mut MetaStore<TestDir>, model: &mut Map, from: usize, n: usize) {
    for i in from..from + n {
        let key = format!("key/{:03}", i % 37).into_bytes();
        let value = format!("value {i} {}", "x".repeat(i % 13)).into_bytes();
        let op = if i % 5 == 4 {
            Op::Delete { key }
        } else {
            Op::Put { key, value }
        };
        store
            .apply(std::slice::from_ref(&op), Instant::now())
            .unwrap();
        apply_ops(model, &[op]);
        if i % 4 == 3 {
            assert_all_stored(&drive(store));
        }
    }
    assert_all_stored(&drive(store));
    assert_eq!(store.as_map(), model);
}

/// Changes reach the map only once stored, in ticket order, and a reopen replays them.
#[test]
fn put_delete_apply_round_trip_and_survive_reopen() {
    let (mut store, report) = open(TestDir::new(1), config());
    assert_eq!(report.snapshot, None);
    assert!(store.is_empty());
    let now = Instant::now();
    let t1 = store.put(b"stream/a", b"1", now).unwrap();
    let t2 = store.put(b"stream/b", b"2", now).unwrap();
    let t3 = store.delete(b"stream/a", now).unwrap();
    let group = [
        put(b"queue/x", b"q"),
        put(b"stream/b", b"22"),
        put(b"", b"empty key"),
    ];
    let t4 = store.apply(&group, now).unwrap();
    // Nothing is visible before it is stored.
    assert_eq!(store.get(b"stream/a"), None);
    assert_eq!(store.len(), 0);
    let outcomes = drive(&mut store);
    let tickets: Vec<AppendTicket> = outcomes
        .iter()
        .map(|o| match o {
            AppendOutcome::Stored { ticket, .. } => *ticket,
            AppendOutcome::Failed { error, .. } => panic!("{error}"),
        })
        .collect();
    assert_eq!(tickets, [t1, t2, t3, t4]);
    assert_eq!(store.get(b"stream/a"), None);
    assert_eq!(store.get(b"stream/b"), Some(&b"22"[..]));
    assert_eq!(store.get(b""), Some(&b"empty key"[..]));
    assert_eq!(store.len(), 3);
    let before = store.as_map().clone();
    let (store, report) = open(store.into_dir(), config());
    assert_eq!(store.as_map(), &before);
    assert_eq!(report.records_replayed, 6);
    assert_eq!(report.entries, 3);
}

/// Explicit and automatic snapshots keep one snapshot file and a short log, and every
/// reopen rebuilds the same map.
#[test]
fn reopen_after_many_snapshots_gives_the_same_map() {
    let config = MetaConfig {
        snapshot_after_bytes: 2048,
        ..config()
    };
    let (mut store, _) = open(TestDir::new(2), config.clone());
    let mut model = Map::new();
    let mut written = 0;
    for round in 0..30 {
        fill(&mut store, &mut model, round * 20, 20);
        if round % 3 == 0 {
            assert!(matches!(
                store.snapshot().unwrap(),
                SnapshotOutcome::Written(_)
            ));
            assert!(matches!(
                store.snapshot().unwrap(),
                SnapshotOutcome::UpToDate { .. }
            ));
            written += 1;
        } else if store.maintain().unwrap().is_some() {
            written += 1;
        }
        if round % 7 == 6 {
            let (reopened, report) = open(store.into_dir(), config.clone());
            assert_eq!(reopened.as_map(), &model, "round {round}");
            assert_eq!(report.snapshot, reopened.snapshot_offset());
            store = reopened;
        }
    }
    assert!(written > 15, "only {written} snapshots");
    // Only the newest snapshot is kept, and the log holds only what follows it.
    let dir = store.log().dir();
    assert_eq!(dir.names_with(".snapshot").len(), 1);
    let snapshot = store.snapshot_offset().unwrap();
    assert_eq!(store.log().first_offset(), snapshot);
    let (store, report) = open(store.into_dir(), config);
    assert_eq!(store.as_map(), &model);
    assert_eq!(report.snapshot, Some(snapshot));
    assert!(report.snapshots_rejected.is_empty());
}

/// `iter_prefix` returns exactly the keys starting with the prefix, sorted, up to 0xFF bytes.
#[test]
fn prefix_iteration_returns_the_matching_keys_in_order() {
    let (mut store, _) = open(TestDir::new(3), config());
    let keys: [&[u8]; 8] = [
        b"stream/b",
        b"stream/a",
        b"stream",
        b"streams",
        b"queue/a",
        b"stream/\xff",
        b"\xff\xff",
        b"\xff\xff\x00",
    ];
    let ops: Vec<Op> = keys.iter().map(|k| put(k, k)).collect();
    store.apply(&ops, Instant::now()).unwrap();
    assert_all_stored(&drive(&mut store));
    let collect = |prefix: &[u8]| -> Vec<Vec<u8>> {
        store.iter_prefix(prefix).map(|(k, _)| k.to_vec()).collect()
    };
    let want: Vec<Vec<u8>> = vec![
        b"stream/a".to_vec(),
        b"stream/b".to_vec(),
        b"stream/\xff".to_vec(),
    ];
    assert_eq!(collect(b"stream/"), want);
    assert_eq!(collect(b"stream").len(), 5);
    assert_eq!(collect(b"\xff\xff").len(), 2);
    assert_eq!(collect(b"topic/"), Vec::<Vec<u8>>::new());
    assert_eq!(collect(b"").len(), keys.len());
    assert!(store.iter().map(|(k, _)| k).is_sorted());
    for (k, v) in store.iter_prefix(b"queue/") {
        assert_eq!(k, v);
    }
}

/// A 5 MiB map is written as codec batches of at most 1 MiB, numbered by entry, and loads back.
#[test]
fn large_snapshot_is_written_in_bounded_batches() {
    let (mut store, _) = open(TestDir::new(4), config());
    let mut model = Map::new();
    // About 5 MiB, with a few entries at the size limit.
    for chunk in 0..50 {
        let ops: Vec<Op> = (0..50)
            .map(|i| {
                let n = chunk * 50 + i;
                let len = if n % 500 == 7 {
                    ENTRY_BYTES_MAX - 20
                } else {
                    1500
                };
                put(format!("big/{n:06}").as_bytes(), &vec![n as u8; len])
            })
            .collect();
        store.apply(&ops, Instant::now()).unwrap();
        apply_ops(&mut model, &ops);
        assert_all_stored(&drive(&mut store));
    }
    let SnapshotOutcome::Written(report) = store.snapshot().unwrap() else {
        panic!("no snapshot written");
    };
    assert_eq!(report.entries, model.len() as u64);
    let content = store
        .log()
        .dir()
        .sim
        .content(&snapshot_name(report.offset))
        .unwrap()
        .to_vec();
    assert_eq!(content.len() as u64, report.bytes);
    let body = &content[..content.len() - SNAPSHOT_TRAILER_LEN];
    let (mut position, mut batches, mut entries) = (0, 0, 0);
    while position < body.len() {
        let batch = decode_batch(&body[position..]).unwrap();
        assert!(batch.bytes().len() <= SNAPSHOT_BATCH_BYTES_MAX);
        assert_eq!(batch.header().base_offset, entries);
        entries += u64::from(batch.header().record_count);
        position += batch.bytes().len();
        batches += 1;
    }
    assert_eq!(entries, model.len() as u64);
    assert!(batches >= 5, "{batches} batches");
    let (store, report) = open(store.into_dir(), config());
    assert_eq!(store.as_map(), &model);
    assert_eq!(report.records_replayed, 0);
}

/// Entries over `ENTRY_BYTES_MAX` and empty groups are refused before anything is queued.
#[test]
fn oversized_entries_and_empty_groups_are_refused() {
    let (mut store, _) = open(TestDir::new(5), config());
    let big = vec![0u8; ENTRY_BYTES_MAX];
    let refused = store.put(b"k", &big, Instant::now());
    assert!(matches!(
        refused,
        Err(MetaAppendError::EntryTooLarge { bytes, .. }) if bytes == ENTRY_BYTES_MAX + 1
    ));
    assert!(store.put(b"", &big, Instant::now()).is_ok());
    assert!(matches!(
        store.apply(&[], Instant::now()),
        Err(MetaAppendError::Append(_))
    ));
    assert_all_stored(&drive(&mut store));
    assert_eq!(store.len(), 1);
}

/// A snapshot is refused while appends are pending, so it never misses a stored change.
#[test]
fn snapshot_waits_while_the_log_is_busy() {
    let (mut store, _) = open(TestDir::new(6), config());
    store.put(b"a", b"1", Instant::now()).unwrap();
    assert_eq!(store.snapshot().unwrap(), SnapshotOutcome::Busy);
    assert_all_stored(&drive(&mut store));
    assert!(matches!(
        store.snapshot().unwrap(),
        SnapshotOutcome::Written(_)
    ));
}

/// A failed group is not applied, and the log cut it before reporting the failure: a
/// power cut right after cannot bring it back.
#[test]
fn failed_group_is_never_applied_nor_recovered() {
    let (mut store, _) = open(TestDir::new(7), config());
    store.put(b"a", b"1", Instant::now()).unwrap();
    assert_all_stored(&drive(&mut store));
    store.log_mut().dir_mut().sim.set_faults(FaultPlan {
        fail_sync: Some((1, libc::EIO)),
        ..FaultPlan::default()
    });
    store.put(b"b", b"2", Instant::now()).unwrap();
    BlockingDriver::run(store.log_mut(), Instant::now());
    let outcome = store.take_outcome().unwrap();
    assert!(
        matches!(outcome, AppendOutcome::Failed { .. }),
        "{outcome:?}"
    );
    assert_eq!(store.get(b"b"), None);
    assert!(!store.has_uncut_failure());
    assert!(!store.log().is_busy());
    let mut dir = store.into_dir();
    dir.power_cut();
    let (store, _) = open(dir, config());
    assert_eq!(store.get(b"b"), None);
    assert_eq!(store.get(b"a"), Some(&b"1"[..]));
}

/// Writes a store with snapshots, returning the store and the map it must hold.
fn store_with_snapshot(seed: u64) -> (MetaStore<TestDir>, Map) {
    let (mut store, _) = open(TestDir::new(seed), config());
    let mut model = Map::new();
    fill(&mut store, &mut model, 0, 60);
    assert!(matches!(
        store.snapshot().unwrap(),
        SnapshotOutcome::Written(_)
    ));
    fill(&mut store, &mut model, 60, 60);
    (store, model)
}

/// Takes a snapshot while removals fail, as if the process died right after the
/// snapshot became durable: the older snapshot and the segments stay.
fn snapshot_without_cleanup(store: &mut MetaStore<TestDir>) -> u64 {
    store.log_mut().dir_mut().judge = Some(Box::new(|op, _| {
        if op == "remove" {
            Fate::Fail
        } else {
            Fate::Pass
        }
    }));
    assert!(store.snapshot().is_err());
    store.log_mut().dir_mut().judge = None;
    store.snapshot_offset().unwrap()
}

/// Flips a bit in the middle of a snapshot file.
fn corrupt_snapshot(dir: &mut TestDir, offset: u64) {
    let name = snapshot_name(offset);
    let len = dir.sim.content(&name).unwrap().len();
    dir.sim.corrupt(&name, len / 2, 3);
}

/// A bit flip in the newest snapshot falls back to the previous snapshot plus the log,
/// reported and removed.
#[test]
fn corrupt_snapshot_falls_back_to_the_previous_one() {
    let (mut store, mut model) = store_with_snapshot(8);
    let previous = store.snapshot_offset().unwrap();
    let newest = snapshot_without_cleanup(&mut store);
    assert_eq!(store.snapshot_offset(), Some(newest));
    fill(&mut store, &mut model, 120, 30);
    let mut dir = store.into_dir();
    dir.power_cut();
    corrupt_snapshot(&mut dir, newest);
    let (store, report) = open(dir, config());
    assert_eq!(store.as_map(), &model);
    assert_eq!(report.snapshot, Some(previous));
    assert_eq!(report.snapshots_rejected.len(), 1);
    assert_eq!(report.snapshots_rejected[0].0, snapshot_name(newest));
    // The rejected snapshot is gone; the good one stays.
    let names = store.log().dir().names_with(".snapshot");
    assert_eq!(names, [snapshot_name(previous)]);
}

/// A crash between a snapshot's sync and its removals leaves extra files that open removes.
#[test]
fn interrupted_cleanup_is_finished_on_open() {
    let (mut store, model) = store_with_snapshot(16);
    let newest = snapshot_without_cleanup(&mut store);
    let mut dir = store.into_dir();
    dir.power_cut();
    assert_eq!(dir.names_with(".snapshot").len(), 2);
    let (store, report) = open(dir, config());
    assert_eq!(store.as_map(), &model);
    assert_eq!(report.snapshot, Some(newest));
    assert_eq!(report.snapshots_removed, 1);
    assert!(report.segments_removed >= 1, "{report:?}");
    assert_eq!(store.log().first_offset(), newest);
    assert_eq!(
        store.log().dir().names_with(".snapshot"),
        [snapshot_name(newest)]
    );
}

/// Under `Durability::None` a snapshot syncs the log first, so the log never ends below it.
#[test]
fn snapshot_under_durability_none_never_leaves_the_log_behind() {
    // Under `None` stored records may be unsynced; the snapshot seals (syncs) the
    // log's active segment first, so after a power cut the log still reaches the
    // snapshot's offset and new changes get offsets above it.
    let config = MetaConfig {
        log: LogConfig {
            durability: Durability::None,
            ..config().log
        },
        ..config()
    };
    let (mut store, _) = open(TestDir::new(17), config.clone());
    let mut model = Map::new();
    for round in 0..3 {
        fill(&mut store, &mut model, round * 50, 50);
        let SnapshotOutcome::Written(report) = store.snapshot().unwrap() else {
            panic!("no snapshot");
        };
        let mut dir = store.into_dir();
        dir.power_cut();
        let reopened = MetaStore::open(dir, config.clone());
        let (reopened, recovery) = reopened.unwrap_or_else(|e| panic!("round {round}: {e}"));
        assert_eq!(reopened.as_map(), &model, "round {round}");
        assert_eq!(recovery.snapshot, Some(report.offset));
        assert_eq!(reopened.log().next_offset(), report.offset);
        store = reopened;
    }
}

/// A corrupt only snapshot whose segments are still there falls back to the whole log.
#[test]
fn corrupt_first_snapshot_falls_back_to_the_log_alone() {
    let (mut store, _) = open(TestDir::new(9), config());
    let mut model = Map::new();
    fill(&mut store, &mut model, 0, 80);
    let offset = snapshot_without_cleanup(&mut store);
    fill(&mut store, &mut model, 80, 10);
    let mut dir = store.into_dir();
    dir.power_cut();
    corrupt_snapshot(&mut dir, offset);
    let (store, report) = open(dir, config());
    assert_eq!(store.as_map(), &model);
    assert_eq!(report.snapshot, None);
    assert_eq!(report.snapshots_rejected.len(), 1);
    assert!(store.log().dir().names_with(".snapshot").is_empty());
}

/// A corrupt snapshot whose segments are gone refuses to open, and is kept for repair.
#[test]
fn corrupt_snapshot_with_no_fallback_is_corrupt_and_kept() {
    let (store, _) = store_with_snapshot(10);
    let offset = store.snapshot_offset().unwrap();
    assert!(offset > 0);
    let mut dir = store.into_dir();
    dir.power_cut();
    corrupt_snapshot(&mut dir, offset);
    let error = MetaStore::open(dir, config()).err().unwrap();
    assert!(matches!(error, StorageError::Corrupt { .. }), "{error}");
}

/// A log starting above the snapshot's offset (or above 0 without one) refuses to open.
#[test]
fn gap_between_snapshot_and_log_is_corrupt() {
    // The log's first segment after the snapshot is gone.
    let (store, _) = store_with_snapshot(11);
    let snapshot = store.snapshot_offset().unwrap();
    let mut dir = store.into_dir();
    let first = dir.names_with(".log").into_iter().min().unwrap();
    assert_eq!(parse_segment_name(&first), Some(snapshot));
    assert!(dir.names_with(".log").len() > 1, "need a later segment");
    dir.remove(&first).unwrap();
    let error = MetaStore::open(dir, config()).err().unwrap();
    assert!(matches!(error, StorageError::Corrupt { .. }), "{error}");

    // The snapshot is gone and the log starts above 0.
    let (store, _) = store_with_snapshot(12);
    let snapshot = store.snapshot_offset().unwrap();
    let mut dir = store.into_dir();
    dir.remove(&snapshot_name(snapshot)).unwrap();
    let error = MetaStore::open(dir, config()).err().unwrap();
    assert!(matches!(error, StorageError::Corrupt { .. }), "{error}");
}

/// A snapshot torn by a power cut (death before its trailer or its sync) is ignored for
/// the previous one.
#[test]
fn snapshot_torn_by_a_power_cut_is_ignored() {
    let mut rejected = 0;
    for (seed, die_at) in (0..20).flat_map(|seed| [(seed, "write"), (seed, "sync")]) {
        let (mut store, mut model) = store_with_snapshot(100 + seed);
        let previous = store.snapshot_offset().unwrap();
        // More changes, so the new snapshot differs from the previous one.
        fill(&mut store, &mut model, 120, 40);
        // Die at the trailer's write (the second: the map fits one batch), or before
        // the sync: the snapshot is then unsynced, and the power cut tears it.
        let die_on = if die_at == "write" { 2 } else { 1 };
        let mut seen = 0;
        store.log_mut().dir_mut().judge = Some(Box::new(move |op, name| {
            seen += usize::from(op == die_at && parse_snapshot_name(name).is_some());
            if seen == die_on {
                Fate::Die
            } else {
                Fate::Pass
            }
        }));
        assert!(store.snapshot().is_err());
        let mut dir = store.into_dir();
        dir.power_cut();
        let (store, report) = open(dir, config());
        assert_eq!(store.as_map(), &model, "seed {seed}, died at {die_at}");
        if report.snapshot == Some(previous) {
            assert_eq!(report.snapshots_rejected.len(), 1, "seed {seed}");
            rejected += 1;
        } else {
            // The power cut happened to keep every unsynced byte: a whole snapshot.
            assert_eq!(die_at, "sync");
            assert!(report.snapshot > Some(previous));
        }
    }
    assert!(rejected >= 20, "only {rejected} torn snapshots");
}

/// Files with other names, even close ones, survive open, snapshots and cleanup.
#[test]
fn files_the_store_does_not_own_are_left_alone() {
    let mut dir = TestDir::new(14);
    for name in ["README", "00000000000000000001.snapshot.tmp", "7.snapshot"] {
        let file = dir.create(name).unwrap();
        dir.write_at(file, 0, b"not mine").unwrap();
        dir.sync_data(file).unwrap();
        dir.close(file);
    }
    let (mut store, _) = open(dir, config());
    let mut model = Map::new();
    fill(&mut store, &mut model, 0, 50);
    assert!(matches!(
        store.snapshot().unwrap(),
        SnapshotOutcome::Written(_)
    ));
    let (store, _) = open(store.into_dir(), config());
    let names = store.log().dir().sim.list().unwrap();
    for name in ["README", "00000000000000000001.snapshot.tmp", "7.snapshot"] {
        assert!(names.iter().any(|n| n == name), "{name} removed");
    }
}

// ---------------------------------------------------------------------------------
// Power cuts.

type Rng = SeededRng;

/// A key from a small set (so deletes and overwrites hit), sometimes longer.
fn random_key(rng: &mut Rng) -> Vec<u8> {
    let mut key = vec![b'k', rng.below(16) as u8];
    if rng.below(8) == 0 {
        key.extend(rng.bytes(20));
    }
    key
}

/// A put (mostly small values, sometimes 2000 bytes) or a delete.
fn random_op(rng: &mut Rng) -> Op {
    if rng.below(4) == 0 {
        Op::Delete {
            key: random_key(rng),
        }
    } else {
        let max = if rng.below(10) == 0 { 2000 } else { 64 };
        Op::Put {
            key: random_key(rng),
            value: rng.bytes(max),
        }
    }
}

/// One round: from a reopened store to a power cut.
struct Round {
    store: MetaStore<TestDir>,
    rng: Rng,
    now: Instant,
    /// Base state plus every stored group, in the order they were reported.
    acked: Map,
    /// Groups waiting for their outcome.
    waiting: BTreeMap<AppendTicket, Vec<Op>>,
    /// Failed groups not yet settled (a later group stored): a power cut may keep one.
    unsettled: BTreeMap<AppendTicket, Vec<Op>>,
    /// A request taken from the log and not yet carried out (or half carried out).
    inflight: Option<(IoRequest, bool)>,
    last_stored: Option<AppendTicket>,
    stats: Stats,
}

/// What the power-cut runs exercised, so the test cannot pass vacuously.
#[derive(Debug, Default, Clone, Copy)]
struct Stats {
    snapshots_written: u64,
    snapshot_errors: u64,
    failed_groups: u64,
    deaths: u64,
    deaths_in_snapshot: u64,
    snapshots_rejected: u64,
    opened_from_snapshot: u64,
    recovered_unacknowledged: u64,
}

impl Stats {
    fn add(&mut self, o: &Stats) {
        self.snapshots_written += o.snapshots_written;
        self.snapshot_errors += o.snapshot_errors;
        self.failed_groups += o.failed_groups;
        self.deaths += o.deaths;
        self.deaths_in_snapshot += o.deaths_in_snapshot;
        self.snapshots_rejected += o.snapshots_rejected;
        self.opened_from_snapshot += o.opened_from_snapshot;
        self.recovered_unacknowledged += o.recovered_unacknowledged;
    }

    fn note_snapshot(&mut self, written: bool, error: bool, dead: bool) {
        self.snapshots_written += u64::from(written);
        self.snapshot_errors += u64::from(error);
        self.deaths_in_snapshot += u64::from(dead);
    }
}

impl Round {
    fn drain(&mut self) {
        while let Some(outcome) = self.store.take_outcome() {
            match outcome {
                AppendOutcome::Stored { ticket, .. } => {
                    assert!(self.last_stored < Some(ticket), "stored out of order");
                    self.last_stored = Some(ticket);
                    let ops = self.waiting.remove(&ticket).unwrap();
                    apply_ops(&mut self.acked, &ops);
                }
                AppendOutcome::Failed { ticket, .. } => {
                    self.stats.failed_groups += 1;
                    let ops = self.waiting.remove(&ticket).unwrap();
                    self.unsettled.insert(ticket, ops);
                }
            }
        }
        if !self.store.has_uncut_failure() {
            self.unsettled.clear();
        }
        assert_eq!(
            self.store.as_map(),
            &self.acked,
            "map differs from the stored changes"
        );
    }

    /// One random step. Returns false when the power is cut.
    fn step(&mut self) -> bool {
        match self.rng.below(20) {
            0..=7 => self.change(),
            8 => self.now += Duration::from_millis(self.rng.below(5)),
            9..=15 => self.advance_io(),
            16 => {
                let result = self.store.snapshot();
                let written = matches!(result, Ok(SnapshotOutcome::Written(_)));
                let dead = self.store.log().dir().dead;
                self.stats.note_snapshot(written, result.is_err(), dead);
            }
            17 => {
                let result = self.store.maintain();
                let written = matches!(result, Ok(Some(_)));
                let dead = self.store.log().dir().dead;
                self.stats.note_snapshot(written, result.is_err(), dead);
            }
            18 => {
                let key = random_key(&mut self.rng);
                assert_eq!(
                    self.store.get(&key),
                    self.acked.get(&key).map(Vec::as_slice)
                );
            }
            _ => return self.rng.below(25) != 0,
        }
        self.drain();
        !self.store.log().dir().dead
    }

    fn change(&mut self) {
        let ops: Vec<Op> = match self.rng.below(5) {
            0 => (0..1 + self.rng.below(5))
                .map(|_| random_op(&mut self.rng))
                .collect(),
            _ => vec![random_op(&mut self.rng)],
        };
        if let Ok(ticket) = self.store.apply(&ops, self.now) {
            self.waiting.insert(ticket, ops);
        }
    }

    /// Takes a request, or does its write, or its sync: one at a time, so a power cut
    /// can fall between any two.
    fn advance_io(&mut self) {
        let log = self.store.log_mut();
        match self.inflight.take() {
            None => self.inflight = log.next_request(self.now).map(|r| (r, false)),
            Some((req, false)) => {
                let result = log.dir_mut().write_at(req.file, req.position, &req.data);
                match result {
                    Ok(()) if req.sync => self.inflight = Some((req, true)),
                    other => log.complete(req.id, other),
                }
            }
            Some((req, true)) => {
                let result = log.dir_mut().sync_data(req.file);
                log.complete(req.id, result);
            }
        }
    }

    /// The groups a power cut may or may not keep, in ticket (= log) order.
    fn maybe(&self) -> Vec<Vec<Op>> {
        let mut maybe: Vec<(AppendTicket, Vec<Op>)> = self
            .unsettled
            .iter()
            .chain(&self.waiting)
            .map(|(t, ops)| (*t, ops.clone()))
            .collect();
        maybe.sort_by_key(|(t, _)| *t);
        maybe.into_iter().map(|(_, ops)| ops).collect()
    }
}

/// Whether `recovered` is `acked` plus a contiguous run of `maybe` (whole groups: the
/// log keeps at most a prefix of the one write that was not synced).
fn is_acked_plus_whole_groups(recovered: &Map, acked: &Map, maybe: &[Vec<Op>]) -> bool {
    for start in 0..=maybe.len() {
        let mut state = acked.clone();
        if &state == recovered {
            return true;
        }
        for group in &maybe[start..] {
            apply_ops(&mut state, group);
            if &state == recovered {
                return true;
            }
        }
    }
    false
}

/// Kills the process at the `n`th mutating call, or at the `n`th one from the creation
/// of a snapshot file on (so inside a snapshot, or between it and its removals).
fn killer(rng: &mut Rng) -> Option<Judge> {
    let mut n = rng.below(8);
    match rng.below(3) {
        0 => None,
        1 => {
            let mut left = 1 + rng.below(300);
            Some(Box::new(move |_, _| {
                left -= 1;
                if left == 0 {
                    Fate::Die
                } else {
                    Fate::Pass
                }
            }))
        }
        _ => {
            let mut armed = false;
            Some(Box::new(move |op, name| {
                armed |= op == "create" && parse_snapshot_name(name).is_some();
                if !armed {
                    return Fate::Pass;
                }
                if n == 0 {
                    return Fate::Die;
                }
                n -= 1;
                Fate::Pass
            }))
        }
    }
}

fn run_seed(seed: u64) -> Stats {
    let mut rng = Rng::new(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let durability = random_synced_durability(&mut rng);
    let config = MetaConfig {
        log: LogConfig {
            durability,
            segment_bytes_max: 512 + rng.below(4096),
            ..LogConfig::default()
        },
        snapshot_after_bytes: 256 + rng.below(8192),
    };
    let mut dir = TestDir::new(seed);
    let mut acked = Map::new();
    let mut maybe: Vec<Vec<Op>> = Vec::new();
    let mut stats = Stats::default();
    for _round in 0..3 {
        let (mut store, report) = open(dir, config.clone());
        check_recovered(&store, &report, &acked, &maybe, &mut stats);
        store
            .log_mut()
            .dir_mut()
            .sim
            .set_faults(FaultPlan::random(&mut rng, 30));
        store.log_mut().dir_mut().judge = killer(&mut rng);
        let mut round = Round {
            acked: store.as_map().clone(),
            store,
            rng: Rng::new(rng.next_u64() | 1),
            now: Instant::now(),
            waiting: BTreeMap::new(),
            unsettled: BTreeMap::new(),
            inflight: None,
            last_stored: None,
            stats: Stats::default(),
        };
        for _ in 0..400 {
            if !round.step() {
                break;
            }
        }
        maybe = round.maybe();
        acked = round.acked;
        stats.add(&round.stats);
        dir = round.store.into_dir();
        stats.deaths += u64::from(dir.dead);
        dir.power_cut();
    }
    let (store, report) = open(dir, config);
    check_recovered(&store, &report, &acked, &maybe, &mut stats);
    stats
}

fn check_recovered(
    store: &MetaStore<TestDir>,
    report: &MetaRecoveryReport,
    acked: &Map,
    maybe: &[Vec<Op>],
    stats: &mut Stats,
) {
    stats.snapshots_rejected += report.snapshots_rejected.len() as u64;
    stats.opened_from_snapshot += u64::from(report.snapshot.is_some());
    stats.recovered_unacknowledged += u64::from(store.as_map() != acked);
    assert!(
        is_acked_plus_whole_groups(store.as_map(), acked, maybe),
        "recovered map is not the acknowledged changes plus whole unacknowledged groups \
         ({} maybe groups; report {report:?})",
        maybe.len()
    );
    for (name, _) in &report.snapshots_rejected {
        let offset = parse_snapshot_name(name).unwrap();
        assert!(
            Some(offset) > report.snapshot,
            "an older snapshot was examined"
        );
    }
    assert!(store.log().dir().names_with(".snapshot").len() <= 1);
}

/// Random changes, snapshots, faults and deaths, then power cuts: see the module doc.
#[test]
fn acknowledged_changes_survive_power_cuts() {
    let first: u64 = std::env::var("RINGBROKER_META_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let seeds: u64 = std::env::var("RINGBROKER_META_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(400);
    let mut stats = Stats::default();
    for seed in first..first + seeds {
        match std::panic::catch_unwind(|| run_seed(seed)) {
            Ok(seed_stats) => stats.add(&seed_stats),
            Err(_) => panic!("metadata power-cut check failed; replay with RINGBROKER_META_SEED={seed} RINGBROKER_META_SEEDS=1"),
        }
    }
    println!("{seeds} seeds: {stats:?}");
    if seeds >= 100 {
        // Each kind of event happens in a good share of the runs.
        let floor = seeds / 10;
        assert!(stats.snapshots_written >= floor, "{stats:?}");
        assert!(stats.snapshot_errors >= floor, "{stats:?}");
        assert!(stats.failed_groups >= floor, "{stats:?}");
        assert!(stats.deaths >= floor, "{stats:?}");
        assert!(stats.deaths_in_snapshot >= floor, "{stats:?}");
        assert!(stats.snapshots_rejected >= floor, "{stats:?}");
        assert!(stats.opened_from_snapshot >= floor, "{stats:?}");
        assert!(stats.recovered_unacknowledged >= floor, "{stats:?}");
    }
}

/// A one-entry snapshot is one codec batch at entry 0 followed by the trailer.
#[test]
fn snapshot_header_bytes_are_codec_batches() {
    // The first bytes of a non-empty snapshot are a codec batch at entry 0.
    let (mut store, _) = open(TestDir::new(15), config());
    store.put(b"k", b"v", Instant::now()).unwrap();
    assert_all_stored(&drive(&mut store));
    let SnapshotOutcome::Written(report) = store.snapshot().unwrap() else {
        panic!("no snapshot");
    };
    let content = store
        .log()
        .dir()
        .sim
        .content(&snapshot_name(report.offset))
        .unwrap();
    let header = peek_header(content).unwrap();
    assert_eq!(header.base_offset, 0);
    assert_eq!(header.record_count, 1);
    assert_eq!(
        content.len(),
        header.batch_len_bytes() + SNAPSHOT_TRAILER_LEN
    );
}
