//! The metadata store: a small durable ordered map of byte keys to byte values (stream,
//! queue and exchange definitions, consumers' committed offsets), recovered before any
//! partition opens. Format and crash behaviour: `docs/storage.md`, "Metadata store".
//!
//! Owns: the in-memory map, the change log (a `PartitionLog` of change records) and the
//! snapshot files `{offset:020}.snapshot` in the same directory, and the order in which
//! they are written and removed. Never: applies a change to the map before the log
//! reports it stored, removes an old snapshot or a log segment before the snapshot that
//! replaces it is durable, loses a stored change silently on open (a gap between the
//! snapshot and the log is `StorageError::Corrupt`), touches a file whose name it does
//! not own, or trusts a length read from disk before checking it against its bound.
//!
//! Sans-I/O for changes, like the log: `put`, `delete` and `apply` queue one batch each
//! and return its ticket; a driver carries out the log's requests through `log_mut()`
//! (`BlockingDriver::run(store.log_mut(), now)`); `take_outcome` then applies each
//! stored group to the map, in log order, and returns the outcome. Snapshots are written
//! with the directory's blocking calls (`snapshot`, or `maintain` once
//! `MetaConfig::snapshot_after_bytes` of log were stored since the last one): they are
//! rare and small, and run only while the log is idle.
//!
//! A failed group: its ops are never applied, and the log cuts its bytes (durably)
//! before it reports the failure, so recovery never applies it either. Only if that cut
//! fails too (`has_uncut_failure()`) could a power cut bring it back; snapshots wait
//! until the log has cut it.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use xxhash_rust::xxh3::{xxh3_64, Xxh3Default};

use super::codec::{decode_batch, encoded_len, peek_header, Record, RecordView, BATCH_HEADER_LEN};
use super::dir::{offset_file_name, parse_offset_file_name, FileId, StorageDir};
use super::error::StorageError;
use super::log::{
    AppendError, AppendOutcome, AppendTicket, BlockingDriver, LogConfig, PartitionLog,
    RecoveryReport, RetentionReport,
};

/// File name suffix of snapshot files.
pub const SNAPSHOT_SUFFIX: &str = ".snapshot";
/// Name of the one header of a change record.
pub const OP_HEADER: &[u8] = b"op";
/// `op` value of a change record that sets its key to its value.
pub const OP_PUT: &[u8] = b"put";
/// `op` value of a change record that removes its key (the value is empty).
pub const OP_DELETE: &[u8] = b"del";
/// The largest entry, key plus value, so that every entry fits a snapshot batch.
pub const ENTRY_BYTES_MAX: usize = 512 << 10;
/// The largest snapshot batch, header included. Bounds what a reader loads at once.
pub const SNAPSHOT_BATCH_BYTES_MAX: usize = 1 << 20;
/// Bytes a record takes besides its key and value bytes, at most (length, attributes,
/// timestamp delta, offset delta, key length, header count, value length varints) for
/// a snapshot record, which has no headers.
const SNAPSHOT_RECORD_OVERHEAD_MAX: usize = 5 + 1 + 10 + 5 + 5 + 1 + 5;
// Any entry fits one snapshot batch on its own.
const _: () = assert!(
    BATCH_HEADER_LEN + ENTRY_BYTES_MAX + SNAPSHOT_RECORD_OVERHEAD_MAX <= SNAPSHOT_BATCH_BYTES_MAX
);

/// Snapshot trailer `magic`: the bytes `R B M S` read as a little-endian u32.
pub const SNAPSHOT_MAGIC: u32 = 0x534D_4252;
/// Snapshot trailer `version`: the format version this module writes and reads.
pub const SNAPSHOT_VERSION: u16 = 1;
/// Trailer offset of `magic` (u32).
pub const TRAILER_MAGIC: usize = 0;
/// Trailer offset of `version` (u16).
pub const TRAILER_VERSION: usize = TRAILER_MAGIC + size_of::<u32>();
/// Trailer offset of `flags` (u16, zero).
pub const TRAILER_FLAGS: usize = TRAILER_VERSION + size_of::<u16>();
/// Trailer offset of `offset` (u64): the log offset the snapshot covers up to.
pub const TRAILER_OFFSET: usize = TRAILER_FLAGS + size_of::<u16>();
/// Trailer offset of `entry_count` (u64).
pub const TRAILER_ENTRY_COUNT: usize = TRAILER_OFFSET + size_of::<u64>();
/// Trailer offset of `body_len` (u64): bytes of batches before the trailer.
pub const TRAILER_BODY_LEN: usize = TRAILER_ENTRY_COUNT + size_of::<u64>();
/// Trailer offset of `body_checksum` (u64): xxh3-64 of the body.
pub const TRAILER_BODY_CHECKSUM: usize = TRAILER_BODY_LEN + size_of::<u64>();
/// Trailer offset of `checksum` (u64): xxh3-64 of the trailer's bytes before it.
pub const TRAILER_CHECKSUM: usize = TRAILER_BODY_CHECKSUM + size_of::<u64>();
/// Bytes in the snapshot trailer, the last bytes of the file.
pub const SNAPSHOT_TRAILER_LEN: usize = TRAILER_CHECKSUM + size_of::<u64>();
const _: () = assert!(SNAPSHOT_TRAILER_LEN == 48);

/// The map's type: keys and values are arbitrary bytes.
type Map = BTreeMap<Vec<u8>, Vec<u8>>;

/// Bytes of log asked for per read while replaying.
const REPLAY_READ_BYTES: usize = 1 << 20;

const PUT_HEADERS: &[(&[u8], &[u8])] = &[(OP_HEADER, OP_PUT)];
const DELETE_HEADERS: &[(&[u8], &[u8])] = &[(OP_HEADER, OP_DELETE)];

/// The file name of the snapshot covering offsets below `offset`.
pub fn snapshot_name(offset: u64) -> String {
    offset_file_name(offset, SNAPSHOT_SUFFIX)
}

/// The offset a snapshot file name encodes, if it is one.
pub fn parse_snapshot_name(name: &str) -> Option<u64> {
    parse_offset_file_name(name, SNAPSHOT_SUFFIX)
}

/// One change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Set `key` to `value`.
    Put {
        /// The key.
        key: Vec<u8>,
        /// The value.
        value: Vec<u8>,
    },
    /// Remove `key` (nothing if absent).
    Delete {
        /// The key.
        key: Vec<u8>,
    },
}

impl Op {
    fn record(&self, timestamp: i64) -> Record<'_> {
        match self {
            Op::Put { key, value } => Record {
                timestamp,
                key: Some(key),
                headers: PUT_HEADERS,
                value,
            },
            Op::Delete { key } => Record {
                timestamp,
                key: Some(key),
                headers: DELETE_HEADERS,
                value: &[],
            },
        }
    }

    fn entry_bytes(&self) -> usize {
        match self {
            Op::Put { key, value } => key.len().saturating_add(value.len()),
            Op::Delete { key } => key.len(),
        }
    }

    fn apply_to(self, map: &mut Map) {
        match self {
            Op::Put { key, value } => {
                map.insert(key, value);
            }
            Op::Delete { key } => {
                map.remove(&key);
            }
        }
    }
}

/// How a metadata store is shaped.
#[derive(Debug, Clone)]
pub struct MetaConfig {
    /// The change log's shape (durability, segment size, ...). Its `retention` is not
    /// applied: the store removes segments itself once a snapshot covers them.
    pub log: LogConfig,
    /// `maintain` writes a snapshot once this many bytes of log were stored since the
    /// last one. Default 4 MiB.
    pub snapshot_after_bytes: u64,
}

impl Default for MetaConfig {
    fn default() -> Self {
        Self {
            log: LogConfig::default(),
            snapshot_after_bytes: 4 << 20,
        }
    }
}

/// Why a change was refused before being queued.
#[derive(Debug, thiserror::Error)]
pub enum MetaAppendError {
    /// A key plus its value exceeds [`ENTRY_BYTES_MAX`].
    #[error("entry of {bytes} bytes (key + value) exceeds the maximum of {max}")]
    EntryTooLarge {
        /// Bytes of the key and value.
        bytes: usize,
        /// The limit.
        max: usize,
    },
    /// The log refused the batch (backpressure, an empty or too large group).
    #[error(transparent)]
    Append(#[from] AppendError),
}

/// Why `MetaStore::write_blocking` did not store its changes.
#[derive(Debug, thiserror::Error)]
pub enum MetaWriteError {
    /// Refused before it was queued.
    #[error(transparent)]
    Refused(#[from] MetaAppendError),
    /// The write or sync failed; nothing of it is applied.
    #[error("metadata write failed: {0}")]
    Failed(Arc<StorageError>),
}

/// What `MetaStore::open` found and did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MetaRecoveryReport {
    /// The change log's own recovery.
    pub log: RecoveryReport,
    /// The offset of the snapshot loaded, if any.
    pub snapshot: Option<u64>,
    /// Entries the snapshot held.
    pub snapshot_entries: u64,
    /// Snapshots that failed their checks (torn by a crash, corrupt), with the reason:
    /// ignored, then removed.
    pub snapshots_rejected: Vec<(String, String)>,
    /// Snapshots older than the one loaded (a crash came before their removal),
    /// removed.
    pub snapshots_removed: usize,
    /// Log segments the loaded snapshot covers, removed.
    pub segments_removed: usize,
    /// Change records replayed from the log after the snapshot.
    pub records_replayed: u64,
    /// Entries in the map after recovery.
    pub entries: usize,
}

/// A snapshot that was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotReport {
    /// It covers log offsets below this.
    pub offset: u64,
    /// Entries written.
    pub entries: u64,
    /// Bytes of the file.
    pub bytes: u64,
    /// Older snapshot files removed.
    pub snapshots_removed: usize,
    /// Log segments removed (their records are all below `offset`).
    pub segments: RetentionReport,
}

/// What `MetaStore::snapshot` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SnapshotOutcome {
    /// A snapshot was written, made durable, and what it replaces removed.
    Written(SnapshotReport),
    /// The newest snapshot already covers every stored change; nothing was written
    /// (leftovers of an interrupted cleanup were removed).
    UpToDate {
        /// The newest snapshot's offset.
        offset: u64,
    },
    /// Nothing was written: the log has appends pending or in flight, or a failed
    /// group is not yet cut from it. Drive the log, take the outcomes, and retry.
    Busy,
}

/// A change group waiting for its outcome.
#[derive(Debug)]
struct Pending {
    /// The group's ops, in order.
    ops: Vec<Op>,
    /// Bytes of the encoded batch.
    bytes: u64,
}

/// A durable ordered map over a `StorageDir`: a change log plus snapshots.
#[derive(Debug)]
pub struct MetaStore<D: StorageDir> {
    log: PartitionLog<D>,
    snapshot_after_bytes: u64,
    /// Holds exactly the stored changes (log offsets below `log.stored_end()`), once
    /// every outcome is absorbed.
    map: Map,
    pending: BTreeMap<AppendTicket, Pending>,
    /// Outcomes absorbed from the log and not yet taken by the caller.
    ready: VecDeque<AppendOutcome>,
    snapshot_offset: Option<u64>,
    log_bytes_since_snapshot: u64,
}

impl<D: StorageDir> MetaStore<D> {
    /// Opens the store in `dir`: opens the log (its recovery cuts a torn tail), loads
    /// the newest snapshot that passes its checks (rejecting torn or corrupt newer
    /// ones), replays the log from the snapshot's offset to its stored end, then
    /// removes what the loaded snapshot makes redundant (rejected and older snapshots,
    /// covered segments). A log that starts above the snapshot's offset (or above 0
    /// without a snapshot), or ends below it, is `StorageError::Corrupt`, and nothing
    /// is removed. Files the store does not own are left alone.
    pub fn open(dir: D, config: MetaConfig) -> Result<(Self, MetaRecoveryReport), StorageError> {
        let (mut log, log_report) = PartitionLog::open(dir, config.log)?;
        let mut report = MetaRecoveryReport {
            log: log_report,
            ..MetaRecoveryReport::default()
        };
        let (snapshot, mut map) = match find_snapshot(log.dir_mut(), &mut report)? {
            Some((offset, map)) => (Some(offset), map),
            None => (None, BTreeMap::new()),
        };
        report.snapshot = snapshot;
        report.snapshot_entries = map.len() as u64;
        check_coverage(&log, snapshot)?;
        let (records, bytes) = replay(&log, snapshot.unwrap_or(0), &mut map)?;
        report.records_replayed = records;
        report.entries = map.len();
        let mut store = Self {
            log,
            snapshot_after_bytes: config.snapshot_after_bytes,
            map,
            pending: BTreeMap::new(),
            ready: VecDeque::new(),
            snapshot_offset: snapshot,
            log_bytes_since_snapshot: bytes,
        };
        store.open_cleanup(&mut report)?;
        Ok((store, report))
    }

    /// After a successful open: removes the rejected snapshots, and everything the
    /// loaded snapshot supersedes (a crash interrupted the cleanup after it).
    fn open_cleanup(&mut self, report: &mut MetaRecoveryReport) -> Result<(), StorageError> {
        for (name, _) in &report.snapshots_rejected {
            remove_file(self.log.dir_mut(), name, "remove rejected snapshot")?;
        }
        if let Some(offset) = self.snapshot_offset {
            let (removed, segments) = self.remove_superseded(offset)?;
            report.snapshots_removed = removed;
            report.segments_removed = segments.segments_removed;
        }
        Ok(())
    }

    /// Queues setting `key` to `value`; applied to the map once stored.
    pub fn put(
        &mut self,
        key: &[u8],
        value: &[u8],
        now: Instant,
    ) -> Result<AppendTicket, MetaAppendError> {
        let op = Op::Put {
            key: key.to_vec(),
            value: value.to_vec(),
        };
        self.append_ops(vec![op], now)
    }

    /// Queues removing `key`; applied to the map once stored.
    pub fn delete(&mut self, key: &[u8], now: Instant) -> Result<AppendTicket, MetaAppendError> {
        self.append_ops(vec![Op::Delete { key: key.to_vec() }], now)
    }

    /// Queues `ops` as one atomic group (one batch): once stored they are applied
    /// together, in order; after a crash either all of them or none are recovered.
    pub fn apply(&mut self, ops: &[Op], now: Instant) -> Result<AppendTicket, MetaAppendError> {
        self.append_ops(ops.to_vec(), now)
    }

    fn append_ops(&mut self, ops: Vec<Op>, now: Instant) -> Result<AppendTicket, MetaAppendError> {
        if let Some(bytes) = ops
            .iter()
            .map(Op::entry_bytes)
            .find(|&b| b > ENTRY_BYTES_MAX)
        {
            return Err(MetaAppendError::EntryTooLarge {
                bytes,
                max: ENTRY_BYTES_MAX,
            });
        }
        let timestamp = wall_clock_ms();
        let records: Vec<Record<'_>> = ops.iter().map(|op| op.record(timestamp)).collect();
        let bytes = encoded_len(&records).map_err(|e| AppendError::from(StorageError::from(e)))?;
        let ticket = self.log.append(&records, now)?;
        drop(records);
        let bytes = bytes as u64;
        self.pending.insert(ticket, Pending { ops, bytes });
        Ok(ticket)
    }

    /// Applies `ops` as one group and carries the write out at once with the
    /// directory's blocking calls (`BlockingDriver`), then snapshots if due: for
    /// callers that own the store outright and change it rarely (catalogs, consumer
    /// positions). Any outcome waiting from earlier changes is drained too.
    pub fn write_blocking(&mut self, ops: &[Op]) -> Result<(), MetaWriteError> {
        if ops.is_empty() {
            return Ok(());
        }
        let now = Instant::now();
        self.apply(ops, now)?;
        BlockingDriver::run(self.log_mut(), now);
        let mut result = Ok(());
        while let Some(outcome) = self.take_outcome() {
            if let AppendOutcome::Failed { error, .. } = outcome {
                result = Err(MetaWriteError::Failed(error));
            }
        }
        if let Err(error) = self.maintain() {
            tracing::warn!(%error, "metadata snapshot failed");
        }
        result
    }

    /// The next outcome of a `put`, `delete` or `apply`, oldest first. A `Stored` group
    /// has been applied to the map when it is returned; a `Failed` one never will be
    /// (see the module doc for a crash before the failure is settled).
    pub fn take_outcome(&mut self) -> Option<AppendOutcome> {
        self.absorb();
        self.ready.pop_front()
    }

    /// Takes every outcome the log has and applies the stored groups to the map, in
    /// log order.
    fn absorb(&mut self) {
        while let Some(outcome) = self.log.take_outcome() {
            let ticket = match &outcome {
                AppendOutcome::Stored { ticket, .. } | AppendOutcome::Failed { ticket, .. } => {
                    *ticket
                }
            };
            let pending = self.pending.remove(&ticket);
            debug_assert!(pending.is_some(), "outcome for an unknown ticket");
            if let (AppendOutcome::Stored { .. }, Some(group)) = (&outcome, pending) {
                self.log_bytes_since_snapshot += group.bytes;
                for op in group.ops {
                    op.apply_to(&mut self.map);
                }
            }
            self.ready.push_back(outcome);
        }
    }

    /// Writes a snapshot of the map if the log is idle and something was stored since
    /// the last one: seals the log's active segment (syncing it), writes
    /// `{offset:020}.snapshot` (`offset = log.stored_end()`) in batches of at most
    /// [`SNAPSHOT_BATCH_BYTES_MAX`] with a checksummed trailer, syncs it, and only then
    /// removes older snapshots and the segments it covers. On an error before the sync
    /// the partial file is removed (if that fails too, open rejects it: it has no valid
    /// trailer). An error after it (removing what the snapshot supersedes) leaves the
    /// new snapshot in force; the next snapshot or open finishes the cleanup.
    pub fn snapshot(&mut self) -> Result<SnapshotOutcome, StorageError> {
        self.absorb();
        if self.log.is_busy() || self.log.has_uncut_failure() {
            return Ok(SnapshotOutcome::Busy);
        }
        let offset = self.log.stored_end();
        if self.snapshot_offset == Some(offset) {
            self.remove_superseded(offset)?;
            return Ok(SnapshotOutcome::UpToDate { offset });
        }
        // Seal first: everything below `offset` is then synced in sealed segments, and
        // the new active segment starts at `offset`, so the log can never end below a
        // snapshot (under `Durability::None` too).
        self.log.roll_if_idle()?;
        let (entries, bytes) = write_snapshot(self.log.dir_mut(), offset, &self.map)?;
        self.snapshot_offset = Some(offset);
        self.log_bytes_since_snapshot = 0;
        let (snapshots_removed, segments) = self.remove_superseded(offset)?;
        tracing::info!(offset, entries, bytes, "metadata snapshot written");
        Ok(SnapshotOutcome::Written(SnapshotReport {
            offset,
            entries,
            bytes,
            snapshots_removed,
            segments,
        }))
    }

    /// Writes a snapshot if `MetaConfig::snapshot_after_bytes` of log were stored since
    /// the last one and the log is idle; returns it if one was written. Call it when
    /// convenient (after draining outcomes): it does blocking I/O on the directory.
    pub fn maintain(&mut self) -> Result<Option<SnapshotReport>, StorageError> {
        self.absorb();
        if self.log_bytes_since_snapshot < self.snapshot_after_bytes {
            return Ok(None);
        }
        match self.snapshot()? {
            SnapshotOutcome::Written(report) => Ok(Some(report)),
            SnapshotOutcome::UpToDate { .. } | SnapshotOutcome::Busy => Ok(None),
        }
    }

    /// Removes snapshot files older than `offset`, then the log segments below it.
    fn remove_superseded(&mut self, offset: u64) -> Result<(usize, RetentionReport), StorageError> {
        let dir = self.log.dir_mut();
        let names = dir
            .list()
            .map_err(|e| StorageError::from_io("list", dir.path().to_path_buf(), e))?;
        let mut removed = 0;
        for name in names {
            if parse_snapshot_name(&name).is_some_and(|o| o < offset) {
                remove_file(dir, &name, "remove old snapshot")?;
                removed += 1;
            }
        }
        let segments = self.log.remove_segments_before(offset)?;
        Ok((removed, segments))
    }

    /// The value of `key`, as stored.
    pub fn get(&self, key: &[u8]) -> Option<&[u8]> {
        self.map.get(key).map(Vec::as_slice)
    }

    /// The stored entries whose key starts with `prefix`, in key order.
    pub fn iter_prefix<'a>(
        &'a self,
        prefix: &'a [u8],
    ) -> impl Iterator<Item = (&'a [u8], &'a [u8])> + 'a {
        self.map
            .range::<[u8], _>((
                std::ops::Bound::Included(prefix),
                std::ops::Bound::Unbounded,
            ))
            .take_while(move |(k, _)| k.starts_with(prefix))
            .map(|(k, v)| (k.as_slice(), v.as_slice()))
    }

    /// Every stored entry, in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.map.iter().map(|(k, v)| (k.as_slice(), v.as_slice()))
    }

    /// The stored map.
    pub fn as_map(&self) -> &BTreeMap<Vec<u8>, Vec<u8>> {
        &self.map
    }

    /// Stored entries.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether no entry is stored.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// The offset of the newest snapshot (it covers log offsets below it), if any.
    pub fn snapshot_offset(&self) -> Option<u64> {
        self.snapshot_offset
    }

    /// Bytes of log stored since the newest snapshot (replayed ones included).
    pub fn log_bytes_since_snapshot(&self) -> u64 {
        self.log_bytes_since_snapshot
    }

    /// Whether a failed group's bytes may still be in the log: the log's cut after the
    /// failure failed too (it retries before its next write). A power cut meanwhile
    /// could make recovery apply that group.
    pub fn has_uncut_failure(&self) -> bool {
        self.log.has_uncut_failure()
    }

    /// The change log.
    pub fn log(&self) -> &PartitionLog<D> {
        &self.log
    }

    /// The change log, for a driver to carry out its requests (`next_request`,
    /// `complete`, or `BlockingDriver::run`). Do not append to it or take its
    /// outcomes: the store does both.
    pub fn log_mut(&mut self) -> &mut PartitionLog<D> {
        &mut self.log
    }

    /// Takes the directory back (dropping the store's state).
    pub fn into_dir(self) -> D {
        self.log.into_dir()
    }
}

fn wall_clock_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn remove_file<D: StorageDir>(
    dir: &mut D,
    name: &str,
    op: &'static str,
) -> Result<(), StorageError> {
    match dir.remove(name) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(StorageError::from_io(op, dir.file_path(name), e))
        }
        _ => Ok(()),
    }
}

fn corrupt(path: std::path::PathBuf, reason: String) -> StorageError {
    StorageError::Corrupt {
        path,
        position: 0,
        reason,
    }
}

/// The log must hold every offset from the snapshot's (0 without one) to its end.
fn check_coverage<D: StorageDir>(
    log: &PartitionLog<D>,
    snapshot: Option<u64>,
) -> Result<(), StorageError> {
    let start = snapshot.unwrap_or(0);
    let path = || match snapshot {
        Some(offset) => log.dir().file_path(&snapshot_name(offset)),
        None => log.dir().path().to_path_buf(),
    };
    let first = log.first_offset();
    if first > start {
        let covered = match snapshot {
            Some(offset) => format!("the newest valid snapshot covers offsets below {offset}"),
            None => "there is no valid snapshot".to_owned(),
        };
        let reason = format!(
            "metadata log starts at offset {first} but {covered}: the changes between are lost"
        );
        return Err(corrupt(path(), reason));
    }
    if log.stored_end() < start {
        let reason = format!(
            "metadata log ends at offset {}, below the snapshot's offset {start}",
            log.stored_end()
        );
        return Err(corrupt(path(), reason));
    }
    Ok(())
}

/// Replays the change records from `start` to the log's stored end into `map`; returns
/// the records applied and the bytes of their batches.
fn replay<D: StorageDir>(
    log: &PartitionLog<D>,
    start: u64,
    map: &mut Map,
) -> Result<(u64, u64), StorageError> {
    let end = log.stored_end();
    let path = || log.dir().path().to_path_buf();
    let (mut offset, mut records, mut bytes) = (start, 0u64, 0u64);
    while offset < end {
        let chunk = log.read(offset, REPLAY_READ_BYTES)?;
        let before = offset;
        let mut rest = &chunk[..];
        while !rest.is_empty() {
            let batch = decode_batch(rest)
                .map_err(|e| corrupt(path(), format!("log batch at offset {offset}: {e}")))?;
            let from = offset;
            for record in batch.records().filter(|r| r.offset >= from) {
                apply_change(map, &record).map_err(|reason| {
                    corrupt(path(), format!("offset {}: {reason}", record.offset))
                })?;
                offset = record.offset + 1;
                records += 1;
            }
            bytes += batch.bytes().len() as u64;
            rest = &rest[batch.bytes().len()..];
        }
        if offset == before {
            let reason =
                format!("reading offset {offset} below the stored end {end} made no progress");
            return Err(corrupt(path(), reason));
        }
    }
    Ok((records, bytes))
}

/// Applies one change record, checking its shape.
fn apply_change(map: &mut Map, record: &RecordView<'_>) -> Result<(), String> {
    let mut headers = record.headers();
    let op = match (headers.next(), headers.next()) {
        (Some((OP_HEADER, op)), None) => op,
        _ => return Err("a change record has exactly one header, `op`".to_owned()),
    };
    let entry_bytes = record.key.map_or(0, <[u8]>::len) + record.value.len();
    if entry_bytes > ENTRY_BYTES_MAX {
        return Err(format!(
            "entry of {entry_bytes} bytes exceeds {ENTRY_BYTES_MAX}"
        ));
    }
    match (op, record.key) {
        (OP_PUT, Some(key)) => {
            map.insert(key.to_vec(), record.value.to_vec());
        }
        (OP_DELETE, Some(key)) if record.value.is_empty() => {
            map.remove(key);
        }
        _ => {
            return Err(format!(
                "unknown op {op:?}, or a key or value it does not take"
            ))
        }
    }
    Ok(())
}

/// Why a snapshot could not be loaded.
enum LoadError {
    /// Reading failed: opening fails (never remove a snapshot because of an EIO).
    Io(StorageError),
    /// The content fails a check: the snapshot is rejected.
    Invalid(String),
}

/// The snapshot offset and map of the newest snapshot that loads; rejected ones are
/// listed in `report` (removed by the caller once opening succeeded).
fn find_snapshot<D: StorageDir>(
    dir: &mut D,
    report: &mut MetaRecoveryReport,
) -> Result<Option<(u64, Map)>, StorageError> {
    let names = dir
        .list()
        .map_err(|e| StorageError::from_io("list", dir.path().to_path_buf(), e))?;
    let mut offsets: Vec<u64> = names
        .iter()
        .filter_map(|n| parse_snapshot_name(n))
        .collect();
    offsets.sort_unstable_by(|a, b| b.cmp(a));
    for offset in offsets {
        let name = snapshot_name(offset);
        match load_snapshot(dir, &name, offset) {
            Ok(map) => return Ok(Some((offset, map))),
            Err(LoadError::Io(error)) => return Err(error),
            Err(LoadError::Invalid(reason)) => {
                tracing::warn!(snapshot = %name, %reason, "ignoring invalid metadata snapshot");
                report.snapshots_rejected.push((name, reason));
            }
        }
    }
    Ok(None)
}

fn load_snapshot<D: StorageDir>(dir: &mut D, name: &str, offset: u64) -> Result<Map, LoadError> {
    let path = dir.file_path(name);
    let file = dir
        .open(name)
        .map_err(|e| LoadError::Io(StorageError::from_io("open snapshot", path.clone(), e)))?;
    let result = read_snapshot(dir, file, offset, &path);
    dir.close(file);
    result
}

/// The fields of a snapshot trailer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Trailer {
    offset: u64,
    entry_count: u64,
    body_len: u64,
    body_checksum: u64,
}

fn encode_trailer(t: &Trailer) -> [u8; SNAPSHOT_TRAILER_LEN] {
    let mut out = [0u8; SNAPSHOT_TRAILER_LEN];
    out[TRAILER_MAGIC..TRAILER_VERSION].copy_from_slice(&SNAPSHOT_MAGIC.to_le_bytes());
    out[TRAILER_VERSION..TRAILER_FLAGS].copy_from_slice(&SNAPSHOT_VERSION.to_le_bytes());
    out[TRAILER_FLAGS..TRAILER_OFFSET].copy_from_slice(&0u16.to_le_bytes());
    out[TRAILER_OFFSET..TRAILER_ENTRY_COUNT].copy_from_slice(&t.offset.to_le_bytes());
    out[TRAILER_ENTRY_COUNT..TRAILER_BODY_LEN].copy_from_slice(&t.entry_count.to_le_bytes());
    out[TRAILER_BODY_LEN..TRAILER_BODY_CHECKSUM].copy_from_slice(&t.body_len.to_le_bytes());
    out[TRAILER_BODY_CHECKSUM..TRAILER_CHECKSUM].copy_from_slice(&t.body_checksum.to_le_bytes());
    let checksum = xxh3_64(&out[..TRAILER_CHECKSUM]);
    out[TRAILER_CHECKSUM..].copy_from_slice(&checksum.to_le_bytes());
    out
}

fn decode_trailer(bytes: &[u8; SNAPSHOT_TRAILER_LEN]) -> Result<Trailer, String> {
    let u16_at = |at: usize| u16::from_le_bytes([bytes[at], bytes[at + 1]]);
    let u64_at = |at: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&bytes[at..at + 8]);
        u64::from_le_bytes(b)
    };
    let mut magic = [0u8; 4];
    magic.copy_from_slice(&bytes[TRAILER_MAGIC..TRAILER_VERSION]);
    if u32::from_le_bytes(magic) != SNAPSHOT_MAGIC {
        return Err("no snapshot trailer at the end of the file (torn or not a snapshot)".into());
    }
    if u64_at(TRAILER_CHECKSUM) != xxh3_64(&bytes[..TRAILER_CHECKSUM]) {
        return Err("snapshot trailer checksum mismatch".into());
    }
    if u16_at(TRAILER_VERSION) != SNAPSHOT_VERSION {
        return Err(format!(
            "unsupported snapshot version {}",
            u16_at(TRAILER_VERSION)
        ));
    }
    if u16_at(TRAILER_FLAGS) != 0 {
        return Err("snapshot trailer flags set reserved bits".into());
    }
    Ok(Trailer {
        offset: u64_at(TRAILER_OFFSET),
        entry_count: u64_at(TRAILER_ENTRY_COUNT),
        body_len: u64_at(TRAILER_BODY_LEN),
        body_checksum: u64_at(TRAILER_BODY_CHECKSUM),
    })
}

/// Reads exactly `buf.len()` bytes at `pos`; a short read is `Invalid`.
fn read_exact<D: StorageDir>(
    dir: &D,
    file: FileId,
    pos: u64,
    buf: &mut [u8],
    path: &std::path::Path,
) -> Result<(), LoadError> {
    let n = dir
        .read_at(file, pos, buf)
        .map_err(|e| LoadError::Io(StorageError::from_io("read snapshot", path, e)))?;
    if n < buf.len() {
        return Err(LoadError::Invalid(format!(
            "file ends at byte {}",
            pos + n as u64
        )));
    }
    Ok(())
}

/// Reads and checks a whole snapshot: its trailer first (so a torn file is rejected
/// before its body is trusted), then each batch, bounded by [`SNAPSHOT_BATCH_BYTES_MAX`].
fn read_snapshot<D: StorageDir>(
    dir: &D,
    file: FileId,
    offset: u64,
    path: &std::path::Path,
) -> Result<Map, LoadError> {
    let io = |e| LoadError::Io(StorageError::from_io("stat snapshot", path, e));
    let file_len = dir.len(file).map_err(io)?;
    let trailer_len = SNAPSHOT_TRAILER_LEN as u64;
    if file_len < trailer_len {
        return Err(LoadError::Invalid(format!(
            "{file_len} bytes: shorter than a trailer"
        )));
    }
    let mut bytes = [0u8; SNAPSHOT_TRAILER_LEN];
    read_exact(dir, file, file_len - trailer_len, &mut bytes, path)?;
    let trailer = decode_trailer(&bytes).map_err(LoadError::Invalid)?;
    if trailer.offset != offset {
        let reason = format!("trailer says offset {}, the name {offset}", trailer.offset);
        return Err(LoadError::Invalid(reason));
    }
    if trailer.body_len != file_len - trailer_len {
        let reason = format!(
            "trailer says {} body bytes, the file has {}",
            trailer.body_len,
            file_len - trailer_len
        );
        return Err(LoadError::Invalid(reason));
    }
    read_body(dir, file, &trailer, path)
}

/// Reads the batches of a snapshot body described by `trailer`.
fn read_body<D: StorageDir>(
    dir: &D,
    file: FileId,
    trailer: &Trailer,
    path: &std::path::Path,
) -> Result<Map, LoadError> {
    let invalid = |position: u64, reason: String| {
        LoadError::Invalid(format!("batch at byte {position}: {reason}"))
    };
    let mut map = BTreeMap::new();
    let mut hasher = Xxh3Default::new();
    let mut buf = Vec::new();
    let mut position = 0u64;
    while position < trailer.body_len {
        let mut header = [0u8; BATCH_HEADER_LEN];
        read_exact(dir, file, position, &mut header, path)?;
        let h = peek_header(&header).map_err(|e| invalid(position, e.to_string()))?;
        let batch_len = h.batch_len_bytes();
        if batch_len > SNAPSHOT_BATCH_BYTES_MAX || position + batch_len as u64 > trailer.body_len {
            return Err(invalid(
                position,
                format!("batch_len {batch_len} out of bounds"),
            ));
        }
        if h.base_offset != map.len() as u64 {
            let reason = format!("starts at entry {}, expected {}", h.base_offset, map.len());
            return Err(invalid(position, reason));
        }
        buf.resize(batch_len, 0);
        read_exact(dir, file, position, &mut buf, path)?;
        let batch = decode_batch(&buf).map_err(|e| invalid(position, e.to_string()))?;
        hasher.update(batch.bytes());
        for record in batch.records() {
            insert_entry(&mut map, &record).map_err(|reason| invalid(position, reason))?;
        }
        if map.len() as u64 > trailer.entry_count {
            return Err(invalid(
                position,
                "more entries than the trailer says".into(),
            ));
        }
        position += batch_len as u64;
    }
    if hasher.digest() != trailer.body_checksum {
        return Err(LoadError::Invalid("body checksum mismatch".into()));
    }
    if map.len() as u64 != trailer.entry_count {
        return Err(LoadError::Invalid(
            "fewer entries than the trailer says".into(),
        ));
    }
    Ok(map)
}

/// Adds one snapshot record: a key (in strictly increasing order), a value, no headers.
fn insert_entry(map: &mut Map, record: &RecordView<'_>) -> Result<(), String> {
    let Some(key) = record.key else {
        return Err(format!("entry {} has no key", record.offset));
    };
    if record.header_count() != 0 {
        return Err(format!("entry {} has headers", record.offset));
    }
    if key.len() + record.value.len() > ENTRY_BYTES_MAX {
        return Err(format!(
            "entry {} exceeds {ENTRY_BYTES_MAX} bytes",
            record.offset
        ));
    }
    if map
        .last_key_value()
        .is_some_and(|(last, _): (&Vec<u8>, _)| last.as_slice() >= key)
    {
        return Err(format!(
            "entry {} is not in increasing key order",
            record.offset
        ));
    }
    map.insert(key.to_vec(), record.value.to_vec());
    Ok(())
}

/// Writes `map` as the snapshot at `offset`, synced; returns (entries, file bytes).
/// A leftover file of that name (an earlier attempt) is replaced; on an error the
/// partial file is removed, best effort.
fn write_snapshot<D: StorageDir>(
    dir: &mut D,
    offset: u64,
    map: &Map,
) -> Result<(u64, u64), StorageError> {
    let name = snapshot_name(offset);
    let path = dir.file_path(&name);
    let io = |what| {
        let path = path.clone();
        move |e| StorageError::from_io(what, path, e)
    };
    let file = dir.create_replacing(&name).map_err(io("create snapshot"))?;
    let mut writer = SnapshotWriter {
        dir: &mut *dir,
        file,
        position: 0,
        entries: 0,
        hasher: Xxh3Default::new(),
        buf: Vec::new(),
    };
    let result = writer.write_all(offset, map).map_err(io("write snapshot"));
    dir.close(file);
    if result.is_err() {
        if let Err(error) = dir.remove(&name) {
            tracing::warn!(%error, snapshot = %name, "cannot remove partial snapshot; open will reject it");
        }
    }
    result
}

/// Streams a map into a snapshot file, batch by batch.
struct SnapshotWriter<'d, D: StorageDir> {
    dir: &'d mut D,
    file: FileId,
    /// Bytes written so far.
    position: u64,
    /// Entries written so far (the next batch's base offset).
    entries: u64,
    /// Over every byte written before the trailer.
    hasher: Xxh3Default,
    buf: Vec<u8>,
}

impl<D: StorageDir> SnapshotWriter<'_, D> {
    /// Writes every entry, then the trailer, then syncs.
    fn write_all(&mut self, offset: u64, map: &Map) -> std::io::Result<(u64, u64)> {
        let mut records: Vec<Record<'_>> = Vec::new();
        let mut batch_bytes = BATCH_HEADER_LEN;
        for (key, value) in map {
            // An upper bound of the record's encoded size: the batch stays in bounds.
            let size = key.len() + value.len() + SNAPSHOT_RECORD_OVERHEAD_MAX;
            if !records.is_empty() && batch_bytes + size > SNAPSHOT_BATCH_BYTES_MAX {
                self.write_batch(&records)?;
                records.clear();
                batch_bytes = BATCH_HEADER_LEN;
            }
            records.push(Record {
                timestamp: 0,
                key: Some(key),
                headers: &[],
                value,
            });
            batch_bytes += size;
        }
        if !records.is_empty() {
            self.write_batch(&records)?;
        }
        let trailer = encode_trailer(&Trailer {
            offset,
            entry_count: self.entries,
            body_len: self.position,
            body_checksum: self.hasher.digest(),
        });
        self.dir.write_at(self.file, self.position, &trailer)?;
        self.dir.sync_data(self.file)?;
        Ok((self.entries, self.position + trailer.len() as u64))
    }

    fn write_batch(&mut self, records: &[Record<'_>]) -> std::io::Result<()> {
        self.buf.clear();
        super::codec::encode_batch(self.entries, records, &mut self.buf)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
        debug_assert!(self.buf.len() <= SNAPSHOT_BATCH_BYTES_MAX);
        self.hasher.update(&self.buf);
        self.dir.write_at(self.file, self.position, &self.buf)?;
        self.position += self.buf.len() as u64;
        self.entries += records.len() as u64;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trailer_offsets_match_the_table_in_docs() {
        assert_eq!(TRAILER_MAGIC, 0);
        assert_eq!(TRAILER_VERSION, 4);
        assert_eq!(TRAILER_FLAGS, 6);
        assert_eq!(TRAILER_OFFSET, 8);
        assert_eq!(TRAILER_ENTRY_COUNT, 16);
        assert_eq!(TRAILER_BODY_LEN, 24);
        assert_eq!(TRAILER_BODY_CHECKSUM, 32);
        assert_eq!(TRAILER_CHECKSUM, 40);
        assert_eq!(SNAPSHOT_TRAILER_LEN, 48);
        assert_eq!(SNAPSHOT_MAGIC.to_le_bytes(), *b"RBMS");
        assert_eq!(SNAPSHOT_VERSION, 1);
        assert_eq!(ENTRY_BYTES_MAX, 512 * 1024);
        assert_eq!(SNAPSHOT_BATCH_BYTES_MAX, 1024 * 1024);
    }

    #[test]
    fn trailer_round_trips_and_rejects_any_bit_flip() {
        let t = Trailer {
            offset: 42,
            entry_count: 7,
            body_len: 1234,
            body_checksum: 0xDEAD_BEEF,
        };
        let bytes = encode_trailer(&t);
        assert_eq!(decode_trailer(&bytes), Ok(t));
        for bit in 0..SNAPSHOT_TRAILER_LEN * 8 {
            let mut flipped = bytes;
            flipped[bit / 8] ^= 1 << (bit % 8);
            assert!(decode_trailer(&flipped).is_err(), "bit {bit}");
        }
    }

    #[test]
    fn snapshot_names_round_trip_and_reject_others() {
        assert_eq!(snapshot_name(7), "00000000000000000007.snapshot");
        assert_eq!(
            parse_snapshot_name(&snapshot_name(u64::MAX)),
            Some(u64::MAX)
        );
        for other in [
            "7.snapshot",
            "00000000000000000007.log",
            "0000000000000000000x.snapshot",
            "99999999999999999999.snapshot",
            "00000000000000000007.snapshot.tmp",
        ] {
            assert_eq!(parse_snapshot_name(other), None, "{other}");
        }
    }
}
