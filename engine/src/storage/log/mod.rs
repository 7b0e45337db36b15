//! A partition log: segments of record batches, appended with group commit, recovered
//! on open. Written sans-I/O: the log decides what to write and when to sync, emits
//! `IoRequest`s, and is told their outcomes; a driver carries them out (the shard's
//! io_uring in production, `BlockingDriver` over any `StorageDir` in tests and tools).
//!
//! Owns: offsets, the segment list, the bytes waiting to be written, the groups in
//! flight, and the acknowledgements. Never: acknowledges an append before the write
//! (policy `None`) or the sync (`Always`, `Batch`) covering it has completed, nor before
//! every earlier group is stored; serves bytes not yet acknowledged; has more than
//! `groups_in_flight_max` groups in flight, or any while it rolls or cuts a segment.
//!
//! Group commit: appends are encoded at once into the pending buffer. When fewer than
//! `groups_in_flight_max` groups are in flight (and, under `Batch`, the delay or byte
//! bound is reached), everything pending becomes one group: one write of all its bytes,
//! linked to one `fdatasync`. Appends arriving meanwhile wait for the next group, so one
//! sync covers them all. With two groups in flight, the next group's write runs while
//! the previous group's sync does, instead of after it.
//!
//! Groups settle in order. A group whose write and sync completed before an earlier
//! group's waits for it (its own sync need not cover the earlier bytes: the earlier
//! group's sync does, and neither is acknowledged before both are done). A failed group
//! fails every group after it too, once all of them have completed (so no write lands
//! after the cut), then the bytes from the failed group on are cut.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::codec::{encode_batch, peek_header, BatchHeader, Record, BATCH_RECORDS_MAX};
use super::dir::{FileId, StorageDir};
use super::error::StorageError;
use super::segment::Segment;

mod read;
mod recovery;
mod retention;

use retention::write_index_files;
pub use retention::{Retention, RetentionReport};

/// The largest segment: index entries store positions as u32, and a segment may pass
/// `segment_bytes_max` by one group (at most `pending_bytes_max`).
pub const SEGMENT_BYTES_LIMIT: u64 = 2 << 30;

/// The most groups a log lets its driver have in flight at once.
pub const GROUPS_IN_FLIGHT_LIMIT: usize = 8;

/// Group buffers larger than this are freed after their write instead of reused, so an
/// idle log keeps at most `(groups_in_flight_max + 1) × 16 MiB` of spare buffers.
const SPARE_BUFFER_BYTES_MAX: usize = 16 << 20;

/// When an append is acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// After the `fdatasync` covering it (group commit: one sync per group).
    Always,
    /// After the group's `fdatasync`, but a group is held back until `max_delay` has
    /// passed since its first append or it holds `max_bytes`, so fewer, larger syncs.
    Batch {
        /// Longest an append waits for its group to start.
        max_delay: Duration,
        /// A group this large starts at once.
        max_bytes: usize,
    },
    /// After the write; the OS flushes when it likes. A power cut may lose acknowledged
    /// records.
    None,
}

/// How a partition log is shaped.
#[derive(Debug, Clone)]
pub struct LogConfig {
    /// Acknowledgement policy.
    pub durability: Durability,
    /// Roll to a new segment once the active one holds this many bytes. Default 256 MiB;
    /// at most `SEGMENT_BYTES_LIMIT`.
    pub segment_bytes_max: u64,
    /// Roll to a new segment before appending a batch whose first timestamp is this much
    /// later than the active segment's first (record time, so it holds across restarts
    /// and lets retention by age free space in whole segments). `None`: size only.
    pub segment_age_max: Option<Duration>,
    /// Bytes of log between two entries of the sparse offset index. Default 4 KiB.
    pub index_interval_bytes: u64,
    /// The most bytes waiting to be written; appends past it get `Backpressure`.
    /// Default 64 MiB, at most 1 GiB.
    pub pending_bytes_max: usize,
    /// What `apply_retention` removes. Default: keep everything.
    pub retention: Retention,
    /// Groups written (and synced) at once: with 2, the next group's write overlaps the
    /// previous group's sync. Default 1; 1 to `GROUPS_IN_FLIGHT_LIMIT`. With more than
    /// one, a failed sync fails every group not yet acknowledged, earlier ones too:
    /// Linux reports a writeback error to the first `fdatasync` that checks the file,
    /// which may be a later group's.
    pub groups_in_flight_max: usize,
}

impl LogConfig {
    /// The config with its sizes clamped to what the formats can hold.
    fn bounded(mut self) -> Self {
        self.segment_bytes_max = self.segment_bytes_max.clamp(1, SEGMENT_BYTES_LIMIT);
        self.pending_bytes_max = self.pending_bytes_max.clamp(1, 1 << 30);
        self.index_interval_bytes = self.index_interval_bytes.max(1);
        self.groups_in_flight_max = self.groups_in_flight_max.clamp(1, GROUPS_IN_FLIGHT_LIMIT);
        self
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            durability: Durability::Always,
            segment_bytes_max: 256 << 20,
            segment_age_max: None,
            index_interval_bytes: 4096,
            pending_bytes_max: 64 << 20,
            retention: Retention::default(),
            groups_in_flight_max: 1,
        }
    }
}

/// Identifies one append until its outcome is reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AppendTicket(pub u64);

/// The outcome of an append.
#[derive(Debug, Clone)]
pub enum AppendOutcome {
    /// Stored (under the log's durability policy) at these offsets.
    Stored {
        /// The append's ticket.
        ticket: AppendTicket,
        /// Offset of its first record.
        base_offset: u64,
        /// Offset of its last record.
        last_offset: u64,
    },
    /// Not stored, and its bytes were cut from the segment (durably) before this was
    /// reported, so nothing of it will be served, after a restart either; appending
    /// again is safe. (If even that cut fails, the log cuts again before its next
    /// write and refuses to write until it can; a power cut in between could bring
    /// the failed bytes back: `PartitionLog::has_uncut_failure` tells.)
    Failed {
        /// The append's ticket.
        ticket: AppendTicket,
        /// Why (shared by every append of the failed group).
        error: Arc<StorageError>,
    },
}

/// An I/O request for the driver.
#[derive(Debug)]
pub struct IoRequest {
    /// Pass back to `PartitionLog::complete`.
    pub id: u64,
    /// The file.
    pub file: FileId,
    /// Where to write.
    pub position: u64,
    /// What to write (may be empty for a pure sync).
    pub data: Vec<u8>,
    /// Follow the write with `fdatasync`, which must not start before the write has
    /// completed in full (io_uring: linked SQEs; a short write cancels the sync).
    pub sync: bool,
}

/// Why an append was refused before being queued.
#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    /// `pending_bytes_max` bytes are already waiting to be written.
    #[error("{pending} bytes already waiting to be written (limit {max})")]
    Backpressure {
        /// Bytes waiting.
        pending: usize,
        /// The limit.
        max: usize,
    },
    /// The records cannot be encoded.
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// What recovery found and did when the log was opened.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Segments found (including a newly created first one).
    pub segments: usize,
    /// The offset the next append gets.
    pub next_offset: u64,
    /// A cut tail: the segment, and the byte range removed.
    pub truncated: Option<(String, u64, u64)>,
    /// Sealed segments whose index files were missing or inconsistent and rebuilt.
    pub indexes_rebuilt: Vec<String>,
}

#[derive(Debug)]
struct Waiter {
    ticket: AppendTicket,
    base_offset: u64,
    last_offset: u64,
}

#[derive(Debug)]
struct Inflight {
    id: u64,
    waiters: Vec<Waiter>,
    /// Where the group starts in the active segment.
    position: u64,
    /// The group's bytes.
    len: u64,
    /// The group's batches: position relative to the group start, and header (to
    /// index them once stored; the driver owns the bytes).
    batches: Vec<(u64, BatchHeader)>,
    /// The driver's report, once it came (a group settles only after the ones before).
    result: Option<std::io::Result<()>>,
}

/// A partition log over a `StorageDir`.
#[derive(Debug)]
pub struct PartitionLog<D: StorageDir> {
    dir: D,
    config: LogConfig,
    /// Oldest first; the last is the active segment.
    segments: Vec<Segment>,
    next_offset: u64,
    pending: Vec<u8>,
    pending_waiters: Vec<Waiter>,
    pending_since: Option<Instant>,
    /// Oldest first.
    inflight: VecDeque<Inflight>,
    /// A group failed: no new group starts until every group in flight has completed
    /// and the failed bytes are cut.
    failing: bool,
    /// Group buffers back from the driver, cleared, for the next groups.
    spare_buffers: Vec<Vec<u8>>,
    /// A previous failure left bytes past the active segment's valid end.
    needs_truncate: bool,
    outcomes: VecDeque<AppendOutcome>,
    next_ticket: u64,
    next_io: u64,
    /// The batches in the pending buffer: position relative to its start, and header.
    pending_batches: Vec<(u64, BatchHeader)>,
    /// `flush_pending` asked for the pending appends to go now.
    flush_requested: bool,
}

impl<D: StorageDir> PartitionLog<D> {
    fn from_parts(dir: D, config: LogConfig, segments: Vec<Segment>, next_offset: u64) -> Self {
        Self {
            dir,
            config,
            segments,
            next_offset,
            pending: Vec::new(),
            pending_waiters: Vec::new(),
            pending_since: None,
            inflight: VecDeque::new(),
            failing: false,
            spare_buffers: Vec::new(),
            needs_truncate: false,
            outcomes: VecDeque::new(),
            next_ticket: 0,
            next_io: 0,
            pending_batches: Vec::new(),
            flush_requested: false,
        }
    }

    /// Encodes `records` as one batch and queues it; its outcome arrives later from
    /// `take_outcome`, after the group holding it was written (and synced).
    pub fn append(
        &mut self,
        records: &[Record<'_>],
        now: Instant,
    ) -> Result<AppendTicket, AppendError> {
        if self.pending.len() >= self.config.pending_bytes_max {
            return Err(AppendError::Backpressure {
                pending: self.pending.len(),
                max: self.config.pending_bytes_max,
            });
        }
        let start = self.pending.len();
        encode_batch(self.next_offset, records, &mut self.pending).map_err(StorageError::from)?;
        let header = peek_header(&self.pending[start..]).map_err(StorageError::from)?;
        self.pending_batches.push((start as u64, header));
        let ticket = AppendTicket(self.next_ticket);
        self.next_ticket += 1;
        self.pending_waiters.push(Waiter {
            ticket,
            base_offset: header.base_offset,
            last_offset: header.last_offset(),
        });
        self.next_offset = header.last_offset() + 1;
        self.pending_since.get_or_insert(now);
        Ok(ticket)
    }

    /// The next I/O to carry out, if one is due: at most `groups_in_flight_max` are in
    /// flight at a time, and none while a failure is being settled. A group that must
    /// roll the segment or cut a failed tail first waits until none is in flight.
    pub fn next_request(&mut self, now: Instant) -> Option<IoRequest> {
        if self.inflight.len() >= self.config.groups_in_flight_max
            || self.failing
            || self.pending.is_empty()
            || !self.group_due(now)
        {
            return None;
        }
        if !self.inflight.is_empty() && (self.needs_truncate || self.active_is_full()) {
            return None; // asked again when the groups in flight complete
        }
        if let Err(error) = self.prepare_active_segment() {
            self.fail_pending(Arc::new(error));
            return None;
        }
        let position = self.write_end();
        let file = self.segments.last()?.file;
        let id = self.next_io;
        self.next_io += 1;
        let spare = self.spare_buffers.pop().unwrap_or_default();
        let data = std::mem::replace(&mut self.pending, spare);
        self.inflight.push_back(Inflight {
            id,
            waiters: std::mem::take(&mut self.pending_waiters),
            position,
            len: data.len() as u64,
            batches: std::mem::take(&mut self.pending_batches),
            result: None,
        });
        self.pending_since = None;
        self.flush_requested = false;
        Some(IoRequest {
            id,
            file,
            position,
            data,
            sync: self.config.durability != Durability::None,
        })
    }

    /// Where the next group goes in the active segment: after its stored bytes and the
    /// groups in flight.
    fn write_end(&self) -> u64 {
        match self.inflight.back() {
            Some(last) => last.position + last.len,
            None => self.segments.last().map_or(0, |s| s.len),
        }
    }

    /// Hands a request's buffer back once the driver is done with it, so the next
    /// groups reuse its memory (already faulted in) instead of growing a new one.
    pub fn recycle_buffer(&mut self, mut buffer: Vec<u8>) {
        if self.spare_buffers.len() <= self.config.groups_in_flight_max
            && buffer.capacity() <= SPARE_BUFFER_BYTES_MAX
        {
            buffer.clear();
            self.spare_buffers.push(buffer);
        }
    }

    /// When `next_request` should be asked again although nothing completed (the end of
    /// a `Batch` delay), if ever.
    pub fn next_deadline(&self) -> Option<Instant> {
        if self.inflight.len() >= self.config.groups_in_flight_max || self.failing {
            return None;
        }
        match (self.config.durability, self.pending_since) {
            (Durability::Batch { max_delay, .. }, Some(since)) => Some(since + max_delay),
            _ => None,
        }
    }

    /// Makes the pending appends due now, whatever the `Batch` delay (before a
    /// shutdown, so none waits on a timer that will not fire).
    pub fn flush_pending(&mut self) {
        if !self.pending.is_empty() {
            self.flush_requested = true;
        }
    }

    fn group_due(&self, now: Instant) -> bool {
        if self.flush_requested {
            return true;
        }
        match self.config.durability {
            Durability::Batch {
                max_delay,
                max_bytes,
            } => {
                self.pending.len() >= max_bytes
                    || self
                        .pending_since
                        .is_some_and(|since| now >= since + max_delay)
            }
            Durability::Always | Durability::None => true,
        }
    }

    /// Reports the outcome of request `id`. Groups settle in order: once every group
    /// before it has been stored, a group that succeeded is stored; on failure every
    /// append not yet stored fails (their offsets are given out again), and the bytes
    /// past the last stored batch are cut, after every group in flight has completed.
    pub fn complete(&mut self, id: u64, result: std::io::Result<()>) {
        let Some(group) = self.inflight.iter_mut().find(|g| g.id == id) else {
            return;
        };
        if result.is_err() {
            self.failing = true;
        }
        group.result = Some(result);
        self.settle();
    }

    /// Stores the completed groups at the head, in order; at a failed one, waits for
    /// every group in flight, then fails them all.
    fn settle(&mut self) {
        while let Some(head) = self.inflight.front() {
            match &head.result {
                None => return,
                Some(Ok(())) if !self.failing => {
                    if let Some(group) = self.inflight.pop_front() {
                        self.store_group(group);
                    }
                }
                Some(_) => {
                    if self.inflight.iter().any(|g| g.result.is_none()) {
                        return; // a later write could land after the cut
                    }
                    self.fail_inflight();
                    return;
                }
            }
        }
    }

    fn store_group(&mut self, group: Inflight) {
        let interval = self.config.index_interval_bytes;
        if let Some(active) = self.segments.last_mut() {
            for (relative, header) in &group.batches {
                active.note_batch(group.position + relative, header, interval);
            }
        }
        for w in group.waiters {
            self.outcomes.push_back(AppendOutcome::Stored {
                ticket: w.ticket,
                base_offset: w.base_offset,
                last_offset: w.last_offset,
            });
        }
    }

    /// Fails every group in flight (all completed, the first failed) and every pending
    /// append, after cutting their bytes.
    fn fail_inflight(&mut self) {
        let failed = self
            .inflight
            .iter_mut()
            .find_map(|g| match g.result.take() {
                Some(Err(source)) => Some(source),
                _ => None,
            });
        let source = failed.unwrap_or_else(|| std::io::Error::other("a group in flight failed"));
        let error = Arc::new(StorageError::from_io("append", self.active_path(), source));
        tracing::warn!(%error, "log append failed; unstored appends fail and are cut");
        // Cut the failed bytes now, before anyone hears "failed": left in the page
        // cache, a later flush could make them durable and a restart serve them.
        self.needs_truncate = true;
        if let Err(cut) = self.cut_failed_tail() {
            tracing::error!(%cut, "cannot cut a failed group; retrying before the next write");
        }
        for group in std::mem::take(&mut self.inflight) {
            for w in group.waiters {
                self.outcomes.push_back(AppendOutcome::Failed {
                    ticket: w.ticket,
                    error: error.clone(),
                });
            }
        }
        self.failing = false;
        self.fail_pending(error);
    }

    /// Truncates the active segment back to its last stored byte, if a failure left
    /// bytes after it.
    fn cut_failed_tail(&mut self) -> Result<(), StorageError> {
        if !self.needs_truncate {
            return Ok(());
        }
        let (file, len) = self
            .segments
            .last()
            .map(|s| (s.file, s.len))
            .ok_or(StorageError::Closed)?;
        self.dir.truncate(file, len).map_err(|e| {
            StorageError::from_io("truncate after failed append", self.active_path(), e)
        })?;
        self.needs_truncate = false;
        Ok(())
    }

    /// Whether a failed group's bytes may still be in the segment (the cut after the
    /// failure failed too, and has not succeeded since).
    pub fn has_uncut_failure(&self) -> bool {
        self.needs_truncate
    }

    /// Fails every pending append and gives their offsets out again.
    fn fail_pending(&mut self, error: Arc<StorageError>) {
        for w in self.pending_waiters.drain(..) {
            self.outcomes.push_back(AppendOutcome::Failed {
                ticket: w.ticket,
                error: error.clone(),
            });
        }
        self.pending.clear();
        self.pending_batches.clear();
        self.pending_since = None;
        self.next_offset = match self.inflight.back().and_then(|g| g.waiters.last()) {
            Some(w) => w.last_offset + 1,
            None => self.segments.last().map_or(0, |s| s.next_offset),
        };
    }

    /// Before a group is written: cut leftovers of a failed group, and roll to a new
    /// segment if the active one is full.
    fn prepare_active_segment(&mut self) -> Result<(), StorageError> {
        self.cut_failed_tail()?;
        if self.active_is_full() {
            self.roll()?;
        }
        Ok(())
    }

    /// Whether the next group must go to a new segment: the active one is at its size
    /// bound, the group's first record is `segment_age_max` newer than the segment's
    /// first, or its offsets would no longer fit the index format.
    fn active_is_full(&self) -> bool {
        let Some(active) = self.segments.last() else {
            return false;
        };
        let end = self.write_end();
        if end == 0 {
            return false;
        }
        let by_size = end >= self.config.segment_bytes_max;
        let next_first = self.pending_batches.first().map(|(_, h)| h.first_timestamp);
        let by_age = match (
            self.config.segment_age_max,
            active.first_timestamp,
            next_first,
        ) {
            (Some(age), Some(first), Some(next)) => {
                let age_ms = i64::try_from(age.as_millis()).unwrap_or(i64::MAX);
                next.saturating_sub(first) >= age_ms
            }
            _ => false,
        };
        let offsets_left =
            u64::from(u32::MAX) - (self.next_offset - active.base_offset).min(u64::from(u32::MAX));
        let by_offsets = offsets_left < 2 * u64::from(BATCH_RECORDS_MAX);
        by_size || by_age || by_offsets
    }

    fn active_path(&self) -> std::path::PathBuf {
        let name = self.segments.last().map_or("", |s| s.name.as_str());
        self.dir.file_path(name)
    }

    /// Whether outcomes wait to be taken.
    pub fn has_outcomes(&self) -> bool {
        !self.outcomes.is_empty()
    }

    /// The next outcome, oldest first.
    pub fn take_outcome(&mut self) -> Option<AppendOutcome> {
        self.outcomes.pop_front()
    }

    /// The offset the next append will get.
    pub fn next_offset(&self) -> u64 {
        self.next_offset
    }

    /// The first offset still in the log.
    pub fn first_offset(&self) -> u64 {
        self.segments.first().map_or(0, |s| s.base_offset)
    }

    /// The offset after the last stored record: reads see offsets below it.
    pub fn stored_end(&self) -> u64 {
        self.segments.last().map_or(0, |s| s.next_offset)
    }

    /// Bytes of stored segments (what retention by bytes counts).
    pub fn stored_bytes(&self) -> u64 {
        self.segments.iter().map(|s| s.len).sum()
    }

    /// Replaces the retention policy (applied by the next `apply_retention`).
    pub fn set_retention(&mut self, retention: Retention) {
        self.config.retention = retention;
    }

    /// Whether a request is in flight or appends wait for one.
    pub fn is_busy(&self) -> bool {
        !self.inflight.is_empty() || !self.pending.is_empty()
    }

    /// The directory (for drivers that need file descriptors).
    pub fn dir(&self) -> &D {
        &self.dir
    }

    /// The directory, mutably (for drivers that carry out requests through it).
    pub fn dir_mut(&mut self) -> &mut D {
        &mut self.dir
    }

    /// Takes the directory back (dropping the log's state).
    pub fn into_dir(self) -> D {
        self.dir
    }
}

fn corrupt(path: std::path::PathBuf, position: u64, reason: String) -> StorageError {
    StorageError::Corrupt {
        path,
        position,
        reason,
    }
}

/// Carries out a log's requests one at a time with the directory's blocking calls: the
/// driver for tests (over `SimDir`) and for tools. Shards use their io_uring instead.
#[derive(Debug, Default)]
pub struct BlockingDriver;

impl BlockingDriver {
    /// Executes every request that is due now; returns how many ran.
    pub fn run<D: StorageDir>(log: &mut PartitionLog<D>, now: Instant) -> usize {
        let mut ran = 0;
        while let Some(req) = log.next_request(now) {
            let mut result = log.dir.write_at(req.file, req.position, &req.data);
            if result.is_ok() && req.sync {
                result = log.dir.sync_data(req.file);
            }
            log.complete(req.id, result);
            log.recycle_buffer(req.data);
            ran += 1;
        }
        ran
    }
}
