//! The segment lifecycle of a partition log: rolling (sealing the active segment and
//! writing its index files), and removing whole segments by retention policy or below
//! a caller's offset.
//!
//! Owns: when a segment is sealed or removed. Never: removes the active segment, or
//! removes part of a segment (limits are enforced in whole segments, so a log may hold
//! up to one segment more than its limits).

use std::time::Duration;

use super::PartitionLog;
use crate::storage::dir::StorageDir;
use crate::storage::error::StorageError;
use crate::storage::index::{encode_offsets, encode_times, index_name, time_index_name};
use crate::storage::segment::{segment_name, Segment};

/// How much of a log to keep. Each limit removes the oldest sealed segments while the
/// log still holds at least the limit without them (Kafka's rule): `max_records`
/// records, `max_bytes` bytes; `max_age` removes a segment once its newest record is
/// older than that. `None` is no limit. The active segment is never removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Retention {
    /// Keep about this many records.
    pub max_records: Option<u64>,
    /// Keep about this many bytes of segments.
    pub max_bytes: Option<u64>,
    /// Remove segments whose records are all older than this.
    pub max_age: Option<Duration>,
}

/// What a retention pass removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetentionReport {
    /// Segments removed.
    pub segments_removed: usize,
    /// Records removed.
    pub records_removed: u64,
    /// Bytes removed.
    pub bytes_removed: u64,
    /// The first offset still in the log.
    pub first_offset: u64,
}

/// Writes a sealed segment's index files (replacing any left from an earlier seal that
/// was interrupted), synced.
pub(super) fn write_index_files<D: StorageDir>(
    dir: &mut D,
    segment: &Segment,
) -> Result<(), StorageError> {
    let base = segment.base_offset;
    let files = [
        (
            index_name(base),
            encode_offsets(base, &segment.indexes.offsets),
        ),
        (
            time_index_name(base),
            encode_times(base, &segment.indexes.times),
        ),
    ];
    for (name, bytes) in files {
        let path = dir.file_path(&name);
        let io = |what| {
            let path = path.clone();
            move |e| StorageError::from_io(what, path, e)
        };
        let file = dir.create_replacing(&name).map_err(io("create index"))?;
        let written = dir
            .write_at(file, 0, &bytes)
            .and_then(|()| dir.sync_data(file));
        dir.close(file);
        written.map_err(io("write index"))?;
    }
    Ok(())
}

impl<D: StorageDir> PartitionLog<D> {
    /// Seals the active segment (syncing it: under `None` it may hold unsynced bytes,
    /// and writing its index files) and starts a new one at the next offset.
    pub(super) fn roll(&mut self) -> Result<(), StorageError> {
        let (file, base) = self
            .segments
            .last()
            .map(|s| (s.file, s.next_offset))
            .ok_or(StorageError::Closed)?;
        self.dir
            .sync_data(file)
            .map_err(|e| StorageError::from_io("sync sealed segment", self.active_path(), e))?;
        if let Some(active) = self.segments.last() {
            write_index_files(&mut self.dir, active)?;
        }
        let name = segment_name(base);
        let new_file = self
            .dir
            .create(&name)
            .map_err(|e| StorageError::from_io("create segment", self.dir.file_path(&name), e))?;
        self.segments.push(Segment::new(base, name, new_file));
        Ok(())
    }

    /// Seals the active segment now if it holds records and nothing is pending or in
    /// flight; returns whether it did. (The metadata store rolls after a snapshot so
    /// the records it covers can be removed.)
    pub fn roll_if_idle(&mut self) -> Result<bool, StorageError> {
        let has_records = self.segments.last().is_some_and(|s| s.len > 0);
        if self.is_busy() || !has_records || self.needs_truncate {
            return Ok(false);
        }
        self.roll()?;
        Ok(true)
    }

    /// Applies `retention` (`LogConfig::retention`) with `now_ms` as the current time
    /// in milliseconds since the Unix epoch (passed in, so tests control the clock).
    pub fn apply_retention(&mut self, now_ms: i64) -> Result<RetentionReport, StorageError> {
        let limits = self.config.retention;
        let cutoff = limits.max_age.map(|age| {
            let age_ms = i64::try_from(age.as_millis()).unwrap_or(i64::MAX);
            now_ms.saturating_sub(age_ms)
        });
        let mut records: u64 = self.segments.iter().map(Segment::records).sum();
        let mut bytes: u64 = self.segments.iter().map(|s| s.len).sum();
        self.remove_oldest_while(|s| {
            let by_records = limits
                .max_records
                .is_some_and(|m| records - s.records() >= m);
            let by_bytes = limits.max_bytes.is_some_and(|m| bytes - s.len >= m);
            let by_age = cutoff.is_some_and(|c| s.max_timestamp < c);
            let remove = by_records || by_bytes || by_age;
            if remove {
                records -= s.records();
                bytes -= s.len;
            }
            remove
        })
    }

    /// Removes every sealed segment whose records all lie below `offset`.
    pub fn remove_segments_before(&mut self, offset: u64) -> Result<RetentionReport, StorageError> {
        self.remove_oldest_while(|s| s.next_offset <= offset)
    }

    /// Removes sealed segments from the oldest while `remove` says so: the data file
    /// first (so a crash leaves at worst orphan index files, removed on open).
    fn remove_oldest_while(
        &mut self,
        mut remove: impl FnMut(&Segment) -> bool,
    ) -> Result<RetentionReport, StorageError> {
        let mut report = RetentionReport::default();
        while self.segments.len() > 1 && remove(&self.segments[0]) {
            let segment = self.segments.remove(0);
            self.dir.close(segment.file);
            let result = self.remove_segment_files(&segment);
            if let Err(error) = result {
                // Reopen so the log stays whole; the next pass tries again.
                if let Ok(file) = self.dir.open(&segment.name) {
                    let mut segment = segment;
                    segment.file = file;
                    self.segments.insert(0, segment);
                }
                return Err(error);
            }
            report.segments_removed += 1;
            report.records_removed += segment.records();
            report.bytes_removed += segment.len;
            tracing::info!(segment = %segment.name, records = segment.records(), "removed segment");
        }
        report.first_offset = self.first_offset();
        Ok(report)
    }

    fn remove_segment_files(&mut self, segment: &Segment) -> Result<(), StorageError> {
        let base = segment.base_offset;
        let path = self.dir.file_path(&segment.name);
        self.dir
            .remove(&segment.name)
            .map_err(|e| StorageError::from_io("remove segment", path, e))?;
        for name in [index_name(base), time_index_name(base)] {
            // Already gone is fine (an earlier pass or a crash got that far).
            if let Err(e) = self.dir.remove(&name) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    return Err(StorageError::from_io(
                        "remove index",
                        self.dir.file_path(&name),
                        e,
                    ));
                }
            }
        }
        Ok(())
    }
}
