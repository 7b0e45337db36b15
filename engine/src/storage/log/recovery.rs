//! Opening a partition log: listing its segments, checking each, loading or rebuilding
//! the index files of sealed segments, and cutting a torn or corrupt tail.
//!
//! Owns: `PartitionLog::open` and what it finds (`RecoveryReport`). Never: cuts a
//! sealed segment (corruption there refuses to open: cutting would silently drop the
//! acknowledged records behind it) or serves anything it has not checked.

use super::{corrupt, LogConfig, PartitionLog, RecoveryReport};
use crate::storage::codec::BATCH_HEADER_LEN;
use crate::storage::dir::StorageDir;
use crate::storage::error::StorageError;
use crate::storage::index::{
    decode_offsets, decode_times, index_name, parse_index_name, time_index_name, SparseIndexes,
};
use crate::storage::segment::{parse_segment_name, scan, segment_name, ScanEnd, Segment};

impl<D: StorageDir> PartitionLog<D> {
    /// Opens the log in `dir`, recovering it. Sealed segments with valid index files
    /// are checked from their last indexed batch to their end (header by header, offset
    /// continuity); without valid index files they are scanned from the start by
    /// header and their index files rewritten. The active (last) segment is verified
    /// fully, checksums included, and a torn or corrupt tail is cut at the last good
    /// batch. Index files without a segment are removed. An empty directory gets a
    /// first segment at offset 0.
    pub fn open(mut dir: D, config: LogConfig) -> Result<(Self, RecoveryReport), StorageError> {
        let config = config.bounded();
        let mut report = RecoveryReport::default();
        let names = list_or_err(&dir)?;
        let mut bases: Vec<u64> = names.iter().filter_map(|n| parse_segment_name(n)).collect();
        bases.sort_unstable();
        remove_orphan_indexes(&mut dir, &names, &bases)?;
        let mut segments = Vec::with_capacity(bases.len().max(1));
        for (i, &base) in bases.iter().enumerate() {
            let is_tail = i + 1 == bases.len();
            let expected = segments.last().map_or(base, |s: &Segment| s.next_offset);
            let segment = open_segment(&mut dir, base, expected, is_tail, &config, &mut report)?;
            segments.push(segment);
        }
        if segments.is_empty() {
            let name = segment_name(0);
            let file = dir
                .create(&name)
                .map_err(|e| StorageError::from_io("create segment", dir.file_path(&name), e))?;
            segments.push(Segment::new(0, name, file));
        }
        let next_offset = segments.last().map_or(0, |s| s.next_offset);
        report.segments = segments.len();
        report.next_offset = next_offset;
        Ok((Self::from_parts(dir, config, segments, next_offset), report))
    }
}

pub(super) fn list_or_err<D: StorageDir>(dir: &D) -> Result<Vec<String>, StorageError> {
    dir.list()
        .map_err(|e| StorageError::from_io("list", dir.path().to_path_buf(), e))
}

/// Removes index files whose segment is gone (retention removes the segment first).
fn remove_orphan_indexes<D: StorageDir>(
    dir: &mut D,
    names: &[String],
    bases: &[u64],
) -> Result<(), StorageError> {
    for name in names {
        let Some(base) = parse_index_name(name) else {
            continue;
        };
        if bases.binary_search(&base).is_err() {
            dir.remove(name).map_err(|e| {
                StorageError::from_io("remove orphan index", dir.file_path(name), e)
            })?;
        }
    }
    Ok(())
}

/// Opens and checks one segment during recovery. The tail is verified fully and cut at
/// its last good batch; any other segment must be entirely valid.
fn open_segment<D: StorageDir>(
    dir: &mut D,
    base: u64,
    expected: u64,
    is_tail: bool,
    config: &LogConfig,
    report: &mut RecoveryReport,
) -> Result<Segment, StorageError> {
    let name = segment_name(base);
    let path = dir.file_path(&name);
    if base != expected {
        let reason = format!("segment starts at offset {base}, previous ends at {expected}");
        return Err(corrupt(path, 0, reason));
    }
    let file = dir
        .open(&name)
        .map_err(|e| StorageError::from_io("open segment", path.clone(), e))?;
    let file_len = dir
        .len(file)
        .map_err(|e| StorageError::from_io("stat segment", path.clone(), e))?;
    let mut segment = Segment::new(base, name, file);
    let interval = config.index_interval_bytes;
    if !is_tail {
        if let Some(indexes) = load_indexes(dir, base, file_len) {
            segment.adopt_indexes(indexes);
            let end = scan(dir, &mut segment, file_len, false, interval)
                .map_err(|e| StorageError::from_io("read segment", path.clone(), e))?;
            if end == ScanEnd::Clean {
                return Ok(segment);
            }
            // The index disagrees with the segment: trust neither, scan from the start.
            segment = Segment::new(base, segment.name, file);
        }
    }
    let end = scan(dir, &mut segment, file_len, is_tail, interval)
        .map_err(|e| StorageError::from_io("read segment", path.clone(), e))?;
    if let ScanEnd::Invalid { position, reason } = end {
        if !is_tail {
            return Err(corrupt(path, position, reason));
        }
        tracing::warn!(path = %path.display(), from = position, to = file_len, %reason, "cutting torn or corrupt log tail");
        dir.truncate(file, position)
            .map_err(|e| StorageError::from_io("truncate torn tail", path.clone(), e))?;
        report.truncated = Some((segment.name.clone(), position, file_len));
    }
    if !is_tail {
        tracing::info!(segment = %segment.name, "rebuilt missing or inconsistent index files");
        super::write_index_files(dir, &segment)?;
        report.indexes_rebuilt.push(segment.name.clone());
    }
    Ok(segment)
}

/// A sealed segment's index files, if both exist and pass their checks.
fn load_indexes<D: StorageDir>(dir: &mut D, base: u64, segment_len: u64) -> Option<SparseIndexes> {
    // At most one entry per batch, and a batch is more than a header: a longer file is
    // not an index of this segment, and is not read into memory.
    let entries_max = segment_len / BATCH_HEADER_LEN as u64 + 1;
    let len_max = 32 + entries_max * 12;
    let offsets = read_whole(dir, &index_name(base), len_max)?;
    let offsets = decode_offsets(&offsets, base, segment_len)?;
    let times = read_whole(dir, &time_index_name(base), len_max)?;
    let times = decode_times(&times, base, &offsets)?;
    (offsets.len() == times.len()).then_some(SparseIndexes { offsets, times })
}

/// A small file's whole content (index files are a few KiB to a few MiB); `None` if
/// it is missing, unreadable or longer than `len_max` (it is then rebuilt).
fn read_whole<D: StorageDir>(dir: &mut D, name: &str, len_max: u64) -> Option<Vec<u8>> {
    let file = dir.open(name).ok()?;
    let content = dir
        .len(file)
        .ok()
        .filter(|&len| len <= len_max)
        .and_then(|len| {
            let mut buf = vec![0u8; usize::try_from(len).ok()?];
            let n = dir.read_at(file, 0, &mut buf).ok()?;
            (n == buf.len()).then_some(buf)
        });
    dir.close(file);
    content
}
