//! Reading a partition log: whole batches from an offset, and the first offset at or
//! after a timestamp.
//!
//! Owns: finding batches through the sparse indexes and handing them out as shared
//! `Bytes`: slices of a read-only map for sealed segments (no copy), or of one buffer
//! filled with as few `pread`s as the sizes allow (one, usually) for the active
//! segment, which is still being written. Never: serves a byte past the stored
//! (acknowledged) end, or a batch it did not frame by its header.

use std::ops::Range;

use bytes::Bytes;

use super::{corrupt, PartitionLog};
use crate::storage::codec::{decode_batch, peek_header, BatchHeader, BATCH_HEADER_LEN};
use crate::storage::dir::StorageDir;
use crate::storage::error::StorageError;
use crate::storage::segment::Segment;

/// A window of one segment's bytes: the whole map of a sealed segment, or bytes read
/// on demand (`bytes` holds the segment's bytes from `start`).
struct Window<'a, D: StorageDir> {
    dir: &'a D,
    segment: &'a Segment,
    start: u64,
    bytes: Vec<u8>,
    mapped: Option<Bytes>,
}

impl<'a, D: StorageDir> Window<'a, D> {
    /// A window from `start`; over the segment's map if `sealed` and the directory can
    /// map it (the map is made on the first read and kept).
    fn new(dir: &'a D, segment: &'a Segment, start: u64, sealed: bool) -> Self {
        let mapped = sealed.then(|| segment_map(dir, segment)).flatten();
        Self {
            dir,
            segment,
            start: if mapped.is_some() { 0 } else { start },
            bytes: Vec::new(),
            mapped,
        }
    }

    /// Makes `range` (segment positions, within the stored length) available, reading
    /// `ahead` more bytes than needed when the window must grow.
    fn ensure(&mut self, range: Range<u64>, ahead: u64) -> Result<&[u8], StorageError> {
        if let Some(map) = &self.mapped {
            return map
                .get(range.start as usize..range.end as usize)
                .ok_or_else(|| {
                    corrupt(
                        self.path(),
                        range.start,
                        "segment shorter than its index".into(),
                    )
                });
        }
        let have_end = self.start + self.bytes.len() as u64;
        if range.end > have_end {
            let want_end = range.end.saturating_add(ahead).min(self.segment.len);
            let old = self.bytes.len();
            self.bytes.resize((want_end - self.start) as usize, 0);
            let n = self
                .dir
                .read_at(self.segment.file, have_end, &mut self.bytes[old..])
                .map_err(|e| StorageError::from_io("read", self.path(), e))?;
            self.bytes.truncate(old + n);
            if self.start + (self.bytes.len() as u64) < range.end {
                let reason = "segment shorter than its stored length".to_owned();
                return Err(corrupt(self.path(), have_end + n as u64, reason));
            }
        }
        let from = (range.start - self.start) as usize;
        let to = (range.end - self.start) as usize;
        Ok(&self.bytes[from..to])
    }

    /// `range`, made available, as shared bytes: a slice of the map (no copy) or of the
    /// read buffer (taken over, no copy).
    fn take(mut self, range: Range<u64>) -> Result<Bytes, StorageError> {
        self.ensure(range.clone(), 0)?;
        if let Some(map) = self.mapped {
            return Ok(map.slice(range.start as usize..range.end as usize));
        }
        let from = (range.start - self.start) as usize;
        let to = (range.end - self.start) as usize;
        Ok(Bytes::from(self.bytes).slice(from..to))
    }

    /// The header of the batch at `position`.
    fn header(&mut self, position: u64, ahead: u64) -> Result<BatchHeader, StorageError> {
        let bytes = self.ensure(position..position + BATCH_HEADER_LEN as u64, ahead)?;
        peek_header(bytes).map_err(|e| corrupt(self.path(), position, e.to_string()))
    }

    fn path(&self) -> std::path::PathBuf {
        self.dir.file_path(&self.segment.name)
    }
}

/// The map of a sealed segment, made on first use; `None` if the directory cannot map
/// (then reads use `pread`). A failed map is logged and not retried.
fn segment_map<D: StorageDir>(dir: &D, segment: &Segment) -> Option<Bytes> {
    segment
        .mapped
        .get_or_init(|| match dir.map_readonly(segment.file) {
            Ok(Some(map)) if map.len() as u64 >= segment.len => Some(Bytes::from_owner(map)),
            Ok(_) => None,
            Err(error) => {
                tracing::warn!(segment = %segment.name, %error, "cannot map sealed segment; reading it with pread");
                None
            }
        })
        .clone()
}

impl<D: StorageDir> PartitionLog<D> {
    /// Reads whole stored batches, starting with the one holding `offset`, up to about
    /// `max_bytes` (at least one batch). Returns the raw batch bytes (decode them with
    /// `codec::decode_batch`, which checks each checksum); empty past the stored end
    /// or before the first retained offset.
    pub fn read(&self, offset: u64, max_bytes: usize) -> Result<Bytes, StorageError> {
        if offset >= self.stored_end() || offset < self.first_offset() {
            return Ok(Bytes::new());
        }
        let i = self
            .segments
            .partition_point(|s| s.base_offset <= offset)
            .saturating_sub(1);
        let Some(segment) = self.segments.get(i) else {
            return Ok(Bytes::new());
        };
        let sealed = i + 1 < self.segments.len();
        // One read covers the walk from the indexed batch and the batches wanted.
        let ahead = (max_bytes as u64).saturating_add(self.config.index_interval_bytes);
        let mut window = Window::new(&self.dir, segment, segment.scan_start(offset), sealed);
        let mut position = segment.scan_start(offset);
        while position < segment.len {
            let h = window.header(position, ahead)?;
            if h.last_offset() >= offset {
                break;
            }
            position += u64::from(h.batch_len);
        }
        let first = position;
        let mut end = position;
        while end < segment.len {
            let h = window.header(end, max_bytes as u64)?;
            let next = end + u64::from(h.batch_len);
            if next - first > max_bytes as u64 && end > first {
                break;
            }
            end = next;
        }
        window.take(first..end)
    }

    /// The offset of the first stored record whose timestamp is at or after
    /// `timestamp` (milliseconds since the Unix epoch), or `None` if there is none.
    /// Timestamps need not be monotonic: batches are chosen by their largest
    /// timestamp, then the records of the first such batch are checked in order.
    pub fn offset_for_timestamp(&self, timestamp: i64) -> Result<Option<u64>, StorageError> {
        let sealed_count = self.segments.len() - 1;
        for (i, segment) in self.segments.iter().enumerate() {
            if segment.len == 0 || segment.max_timestamp < timestamp {
                continue;
            }
            let ahead = self.config.index_interval_bytes;
            let start = segment.scan_start_for_time(timestamp);
            let mut window = Window::new(&self.dir, segment, start, i < sealed_count);
            let mut position = start;
            while position < segment.len {
                let h = window.header(position, ahead)?;
                let end = position + u64::from(h.batch_len);
                if h.max_timestamp >= timestamp {
                    let bytes = window.ensure(position..end, ahead)?;
                    let path = || self.dir.file_path(&segment.name);
                    let batch = decode_batch(bytes)
                        .map_err(|e| corrupt(path(), position, e.to_string()))?;
                    let hit = batch.records().find(|r| r.timestamp >= timestamp);
                    return Ok(hit.map(|r| r.offset));
                }
                position = end;
            }
        }
        Ok(None)
    }
}
