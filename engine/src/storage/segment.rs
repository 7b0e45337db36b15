//! One segment of a partition log: its file name, its in-memory sparse offset and time
//! indexes, and the scans that rebuild them on open.
//!
//! Owns: segment naming (`{base_offset:020}.log`), scanning a segment's batches, and
//! finding where to start reading an offset or a timestamp. Never: writes; the log
//! decides what to write, truncate and seal (and writes the index files, `index.rs`).

use std::cell::OnceCell;

use bytes::Bytes;

use super::codec::{decode_batch, peek_header, BatchHeader, BATCH_HEADER_LEN};
use super::dir::{offset_file_name, parse_offset_file_name, FileId, StorageDir};
use super::index::SparseIndexes;

/// File name suffix of segment data files.
pub const SEGMENT_SUFFIX: &str = ".log";

/// The file name of the segment starting at `base_offset`.
pub fn segment_name(base_offset: u64) -> String {
    offset_file_name(base_offset, SEGMENT_SUFFIX)
}

/// The base offset a segment file name encodes, if it is one.
pub fn parse_segment_name(name: &str) -> Option<u64> {
    parse_offset_file_name(name, SEGMENT_SUFFIX)
}

/// A segment as the log tracks it.
#[derive(Debug)]
pub(crate) struct Segment {
    pub(crate) base_offset: u64,
    pub(crate) name: String,
    pub(crate) file: FileId,
    /// Bytes of complete, valid, acknowledged batches (what reads may serve).
    pub(crate) len: u64,
    /// Offset after the last record in `len`.
    pub(crate) next_offset: u64,
    pub(crate) max_timestamp: i64,
    /// The first batch's first timestamp (for rolling by age).
    pub(crate) first_timestamp: Option<i64>,
    /// Sparse offset and time indexes, one entry each per `index_interval_bytes`.
    pub(crate) indexes: SparseIndexes,
    /// A read-only map of the segment once it is sealed and first read (`None` inside
    /// when the directory cannot map).
    pub(crate) mapped: OnceCell<Option<Bytes>>,
    last_indexed: Option<u64>,
}

impl Segment {
    pub(crate) fn new(base_offset: u64, name: String, file: FileId) -> Self {
        Self {
            base_offset,
            name,
            file,
            len: 0,
            next_offset: base_offset,
            max_timestamp: i64::MIN,
            first_timestamp: None,
            indexes: SparseIndexes::default(),
            mapped: OnceCell::new(),
            last_indexed: None,
        }
    }

    /// Takes indexes loaded from a sealed segment's files: the segment is known up to
    /// the last indexed batch, and a scan from there (`scan_from`) finds its end.
    pub(crate) fn adopt_indexes(&mut self, indexes: SparseIndexes) {
        if let (Some(&(offset, position)), Some(&(timestamp, _))) =
            (indexes.offsets.last(), indexes.times.last())
        {
            self.len = position;
            self.next_offset = offset;
            self.max_timestamp = timestamp;
            self.last_indexed = Some(position);
        }
        self.indexes = indexes;
    }

    /// Records in the segment.
    pub(crate) fn records(&self) -> u64 {
        self.next_offset - self.base_offset
    }

    /// Records that a valid batch occupies `[position, position + batch_len)`.
    pub(crate) fn note_batch(&mut self, position: u64, header: &BatchHeader, interval: u64) {
        let due = self
            .last_indexed
            .is_none_or(|last| position >= last + interval);
        self.max_timestamp = self.max_timestamp.max(header.max_timestamp);
        self.first_timestamp.get_or_insert(header.first_timestamp);
        if due {
            self.indexes.offsets.push((header.base_offset, position));
            self.indexes
                .times
                .push((self.max_timestamp, header.base_offset));
            self.last_indexed = Some(position);
        }
        self.len = position + u64::from(header.batch_len);
        self.next_offset = header.last_offset() + 1;
    }

    /// The byte position to start scanning from to find `offset` (an indexed batch at or
    /// before it, or the segment start).
    pub(crate) fn scan_start(&self, offset: u64) -> u64 {
        let offsets = &self.indexes.offsets;
        match offsets.partition_point(|&(base, _)| base <= offset) {
            0 => 0,
            i => offsets[i - 1].1,
        }
    }

    /// The byte position to start scanning from to find the first record with a
    /// timestamp at or after `timestamp`: the last indexed batch up to which every
    /// timestamp is smaller (nothing before it can qualify), or the segment start.
    pub(crate) fn scan_start_for_time(&self, timestamp: i64) -> u64 {
        let times = &self.indexes.times;
        match times.partition_point(|&(max, _)| max < timestamp) {
            0 => 0,
            i => self.scan_start(times[i - 1].1),
        }
    }
}

/// How a segment scan ended.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum ScanEnd {
    /// Every byte of the file is valid batches.
    Clean,
    /// The bytes from this position on are not a valid, contiguous batch.
    Invalid { position: u64, reason: String },
}

/// Reads the batches of `segment` from `segment.len` (0 for a fresh one) to
/// `file_len`, checking each (fully, with its checksum, when `verify`; by header only
/// otherwise) and that offsets are contiguous, and records them in the segment. Stops
/// at the first bad batch.
pub(crate) fn scan<D: StorageDir>(
    dir: &D,
    segment: &mut Segment,
    file_len: u64,
    verify: bool,
    interval: u64,
) -> std::io::Result<ScanEnd> {
    let mut position = segment.len;
    let mut header_buf = [0u8; BATCH_HEADER_LEN];
    let mut batch_buf = Vec::new();
    while position < file_len {
        let n = dir.read_at(segment.file, position, &mut header_buf)?;
        let header = match peek_header(&header_buf[..n]) {
            Ok(h) => h,
            Err(e) => return Ok(invalid(position, e.to_string())),
        };
        if header.base_offset != segment.next_offset {
            let reason = format!(
                "batch base offset {} where {} was expected",
                header.base_offset, segment.next_offset
            );
            return Ok(invalid(position, reason));
        }
        let end = position + u64::from(header.batch_len);
        if end > file_len {
            return Ok(invalid(
                position,
                format!("batch ends at {end}, past the file end {file_len}"),
            ));
        }
        if verify {
            batch_buf.resize(header.batch_len as usize, 0);
            let got = dir.read_at(segment.file, position, &mut batch_buf)?;
            if let Err(e) = decode_batch(&batch_buf[..got]) {
                return Ok(invalid(position, e.to_string()));
            }
        }
        segment.note_batch(position, &header, interval);
        position = end;
    }
    Ok(ScanEnd::Clean)
}

fn invalid(position: u64, reason: String) -> ScanEnd {
    ScanEnd::Invalid { position, reason }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_names_round_trip_and_sort_by_offset() {
        assert_eq!(segment_name(42), "00000000000000000042.log");
        assert_eq!(parse_segment_name(&segment_name(u64::MAX)), Some(u64::MAX));
        assert_eq!(parse_segment_name("42.log"), None);
        assert_eq!(parse_segment_name("0000000000000000004x.log"), None);
        assert_eq!(parse_segment_name("00000000000000000042.index"), None);
        assert!(segment_name(9) < segment_name(10));
    }
}
