//! Record batch codec, format version 1: the byte layout given in `docs/storage.md`.
//!
//! Owns: turning records into one checksummed batch, and a batch's bytes back into
//! borrowed record views, with every check a reader makes on bytes that came from disk or
//! the network. Never: performs I/O, panics on untrusted bytes, trusts a length before
//! checking it against the bytes that remain, or allocates while decoding (keys, headers
//! and values are slices of the caller's buffer). A batch that `decode_batch` accepted
//! has been walked once in full, so iterating its records afterwards cannot fail.
//!
//! ```
//! use ringbroker::storage::codec::{decode_batch, encode_batch, Record};
//!
//! let headers: &[(&[u8], &[u8])] = &[(b"trace", b"7f")];
//! let records = [
//!     Record { timestamp: 1_000, key: Some(b"user-1"), headers, value: b"hello" },
//!     Record { timestamp: 999, key: None, headers: &[], value: b"world" },
//! ];
//! let mut log = Vec::new();
//! let written = encode_batch(40, &records, &mut log)?;
//! let batch = decode_batch(&log)?;
//! assert_eq!(batch.bytes().len(), written);
//! assert_eq!(batch.header().last_offset(), 41);
//! let offsets: Vec<u64> = batch.records().map(|r| r.offset).collect();
//! assert_eq!(offsets, [40, 41]);
//! # Ok::<(), ringbroker::storage::codec::CodecError>(())
//! ```

use std::iter::FusedIterator;

use xxhash_rust::xxh3::{xxh3_64, xxh3_64_with_seed};

/// `magic`: the bytes `R R B 1` read as a little-endian u32.
pub const BATCH_MAGIC: u32 = 0x3142_5252;
/// `version`: the format version this module writes and the only one it reads.
pub const BATCH_VERSION: u16 = 1;
/// The `flags` bits a reader accepts: none, all bits are reserved.
pub const BATCH_FLAGS_KNOWN: u16 = 0;
/// Bytes in the fixed batch header.
pub const BATCH_HEADER_LEN: usize = 64;
/// The largest batch, header included. Bounds what a reader trusts from `batch_len`.
pub const BATCH_BYTES_MAX: usize = 64 << 20;
/// The most records one batch holds. Bounds the per-batch work of decoding.
pub const BATCH_RECORDS_MAX: u32 = 1 << 20;

/// Header offset of `magic` (u32).
pub const OFFSET_MAGIC: usize = 0;
/// Header offset of `version` (u16).
pub const OFFSET_VERSION: usize = OFFSET_MAGIC + size_of::<u32>();
/// Header offset of `flags` (u16).
pub const OFFSET_FLAGS: usize = OFFSET_VERSION + size_of::<u16>();
/// Header offset of `base_offset` (u64).
pub const OFFSET_BASE_OFFSET: usize = OFFSET_FLAGS + size_of::<u16>();
/// Header offset of `batch_len` (u32).
pub const OFFSET_BATCH_LEN: usize = OFFSET_BASE_OFFSET + size_of::<u64>();
/// Header offset of `record_count` (u32).
pub const OFFSET_RECORD_COUNT: usize = OFFSET_BATCH_LEN + size_of::<u32>();
/// Header offset of `first_timestamp` (i64).
pub const OFFSET_FIRST_TIMESTAMP: usize = OFFSET_RECORD_COUNT + size_of::<u32>();
/// Header offset of `max_timestamp` (i64).
pub const OFFSET_MAX_TIMESTAMP: usize = OFFSET_FIRST_TIMESTAMP + size_of::<i64>();
/// Header offset of the `reserved` bytes.
pub const OFFSET_RESERVED: usize = OFFSET_MAX_TIMESTAMP + size_of::<i64>();
/// Bytes in the header's `reserved` field, all zero.
pub const RESERVED_LEN: usize = 16;
/// Header offset of `checksum` (u64); the checksum covers `header[..OFFSET_CHECKSUM]`.
pub const OFFSET_CHECKSUM: usize = OFFSET_RESERVED + RESERVED_LEN;

const _: () = assert!(OFFSET_CHECKSUM + size_of::<u64>() == BATCH_HEADER_LEN);
// `batch_len` is a u32 on disk, and every record length inside a batch fits one too.
const _: () = assert!(BATCH_BYTES_MAX <= u32::MAX as usize);
const _: () = assert!(BATCH_HEADER_LEN <= BATCH_BYTES_MAX);
// u32 lengths read from a batch convert to usize without loss.
const _: () = assert!(usize::BITS >= u32::BITS);

/// The longest LEB128 encoding of a u32.
const VARINT_U32_BYTES_MAX: u32 = 5;
/// The longest LEB128 encoding of a u64.
const VARINT_U64_BYTES_MAX: u32 = 10;
/// The fewest bytes one record header takes: two one-byte lengths, empty name and value.
const RECORD_HEADER_BYTES_MIN: usize = 2;

/// A batch could not be encoded or decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    /// Fewer bytes are available than the header (or its `batch_len`) says the batch needs.
    #[error("batch truncated: {needed} bytes needed, {available} available")]
    Truncated {
        /// Bytes the batch needs.
        needed: usize,
        /// Bytes that were given.
        available: usize,
    },
    /// The header does not start with [`BATCH_MAGIC`].
    #[error("bad batch magic {0:#010x}, expected {magic:#010x}", magic = BATCH_MAGIC)]
    BadMagic(u32),
    /// The header's format version is not [`BATCH_VERSION`].
    #[error("unsupported batch format version {0}, this build reads version {v}", v = BATCH_VERSION)]
    UnsupportedVersion(u16),
    /// The header's flags have bits set that this version does not define.
    #[error("batch flags {0:#06x} set reserved bits")]
    BadFlags(u16),
    /// The header's reserved bytes are not all zero.
    #[error("batch header reserved bytes are not zero")]
    ReservedNotZero,
    /// `batch_len` is below the header size or above [`BATCH_BYTES_MAX`].
    #[error("batch_len {0} is outside {min}..={max}", min = BATCH_HEADER_LEN, max = BATCH_BYTES_MAX)]
    BatchLenOutOfRange(u32),
    /// `record_count` is zero or above [`BATCH_RECORDS_MAX`].
    #[error("record_count {0} is outside 1..={max}", max = BATCH_RECORDS_MAX)]
    RecordCountOutOfRange(u32),
    /// The batch's last offset, `base_offset + record_count - 1`, does not fit a u64.
    #[error("offsets overflow u64: base_offset {base_offset} with {record_count} records")]
    OffsetOverflow {
        /// The first record's offset.
        base_offset: u64,
        /// Records in the batch.
        record_count: u32,
    },
    /// The checksum stored in the header differs from the one the bytes hash to.
    #[error(
        "batch checksum mismatch: header holds {expected:#018x}, bytes hash to {actual:#018x}"
    )]
    ChecksumMismatch {
        /// The checksum stored in the header.
        expected: u64,
        /// The checksum computed over the batch's bytes.
        actual: u64,
    },
    /// A record's fields are inconsistent (a length past its end, a bad varint, ...).
    #[error("record {index} is malformed: {reason}")]
    MalformedRecord {
        /// The record's position in the batch, from 0.
        index: u32,
        /// What is wrong.
        reason: &'static str,
    },
    /// The records end before the body does.
    #[error("records end at body byte {records_len}, but the body is {body_len} bytes")]
    BodyLengthMismatch {
        /// Bytes in the body (`batch_len - 64`).
        body_len: usize,
        /// Bytes the `record_count` records take.
        records_len: usize,
    },
    /// The header's `max_timestamp` is not the largest record timestamp.
    #[error("header max_timestamp {header} differs from the largest record timestamp {records}")]
    MaxTimestampMismatch {
        /// The header's `max_timestamp`.
        header: i64,
        /// The largest timestamp among the records.
        records: i64,
    },
    /// A batch needs at least one record.
    #[error("cannot encode an empty batch: at least one record is needed")]
    EmptyBatch,
    /// More than [`BATCH_RECORDS_MAX`] records were given.
    #[error("{0} records exceed the batch maximum of {max}", max = BATCH_RECORDS_MAX)]
    TooManyRecords(usize),
    /// The encoded batch would exceed [`BATCH_BYTES_MAX`]; holds the size reached when
    /// the limit was passed (a lower bound of the full size).
    #[error("encoded batch needs at least {0} bytes, over the maximum of {max}", max = BATCH_BYTES_MAX)]
    BatchTooLarge(usize),
    /// A key, header name, header value or value length, or a header count, does not fit
    /// its u32 field.
    #[error("a length or count of {0} does not fit its u32 field")]
    FieldTooLong(usize),
    /// A record's timestamp minus the first record's timestamp does not fit an i64.
    #[error("record {index}: timestamp minus the first record's timestamp overflows i64")]
    TimestampDeltaOverflow {
        /// The record's position in the batch, from 0.
        index: u32,
    },
}

/// One record to encode. Borrowed: the caller owns the bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record<'a> {
    /// Milliseconds since the Unix epoch.
    pub timestamp: i64,
    /// The key; `None` and `Some(&[])` are distinct.
    pub key: Option<&'a [u8]>,
    /// Headers as (name, value) pairs of arbitrary bytes, in order.
    pub headers: &'a [(&'a [u8], &'a [u8])],
    /// The payload.
    pub value: &'a [u8],
}

/// A record that owns its bytes: for code that keeps records before encoding them (a
/// retry, a test's model) or after decoding them. `with_records` lends them as the
/// borrowed `Record`s `encode_batch` and the log's `append` take.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordBuf {
    /// Milliseconds since the Unix epoch.
    pub timestamp: i64,
    /// The key; `None` and `Some(vec![])` are distinct.
    pub key: Option<Vec<u8>>,
    /// Headers as (name, value) pairs, in order.
    pub headers: Vec<(Vec<u8>, Vec<u8>)>,
    /// The payload.
    pub value: Vec<u8>,
}

impl RecordBuf {
    /// A copy of a decoded record's bytes.
    pub fn from_view(view: &RecordView<'_>) -> Self {
        Self {
            timestamp: view.timestamp,
            key: view.key.map(<[u8]>::to_vec),
            headers: view
                .headers()
                .map(|(n, v)| (n.to_vec(), v.to_vec()))
                .collect(),
            value: view.value.to_vec(),
        }
    }
}

/// Runs `f` with `records` as borrowed `Record`s (one small allocation for the header
/// slices of each record).
pub fn with_records<R>(records: &[RecordBuf], f: impl FnOnce(&[Record<'_>]) -> R) -> R {
    let headers: Vec<Vec<(&[u8], &[u8])>> = records
        .iter()
        .map(|r| {
            r.headers
                .iter()
                .map(|(n, v)| (n.as_slice(), v.as_slice()))
                .collect()
        })
        .collect();
    let borrowed: Vec<Record<'_>> = records
        .iter()
        .zip(&headers)
        .map(|(r, headers)| Record {
            timestamp: r.timestamp,
            key: r.key.as_deref(),
            headers,
            value: &r.value,
        })
        .collect();
    f(&borrowed)
}

/// A batch header's fields, validated by [`peek_header`] (checksum aside).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    /// The offset of the batch's first record.
    pub base_offset: u64,
    /// Bytes in the whole batch, header included.
    pub batch_len: u32,
    /// Records in the batch, at least 1.
    pub record_count: u32,
    /// The first record's timestamp.
    pub first_timestamp: i64,
    /// The largest record timestamp.
    pub max_timestamp: i64,
}

impl BatchHeader {
    /// The offset of the batch's last record, `base_offset + record_count - 1`. Exact
    /// for any header [`peek_header`] returned, which rejects overflowing offsets.
    pub fn last_offset(&self) -> u64 {
        debug_assert!(self.record_count >= 1);
        let span = u64::from(self.record_count.saturating_sub(1));
        self.base_offset.saturating_add(span)
    }

    /// `batch_len` as a byte count.
    pub fn batch_len_bytes(&self) -> usize {
        to_usize(self.batch_len)
    }
}

/// The exact number of bytes [`encode_batch`] would append for `records`, or the error
/// it would return ([`CodecError::OffsetOverflow`] aside: that depends on the base
/// offset, which this does not take).
pub fn encoded_len(records: &[Record<'_>]) -> Result<usize, CodecError> {
    let first = check_record_count(records.len()).and_then(|_| first_record(records))?;
    let mut total = BATCH_HEADER_LEN;
    for (index, record) in (0u32..).zip(records) {
        let record_len = record_len(record, index, first.timestamp)?;
        total = total
            .saturating_add(varint_len(record_len as u64))
            .saturating_add(record_len);
        // Stop at the limit, so the work is bounded by it and not by the input.
        if total > BATCH_BYTES_MAX {
            return Err(CodecError::BatchTooLarge(total));
        }
    }
    Ok(total)
}

/// Appends one complete batch holding `records` at offsets `base_offset..` to `out`,
/// and returns the number of bytes appended (as [`encoded_len`] predicts). On error
/// `out` is left as it was.
pub fn encode_batch(
    base_offset: u64,
    records: &[Record<'_>],
    out: &mut Vec<u8>,
) -> Result<usize, CodecError> {
    let batch_len = encoded_len(records)?;
    let batch_len_u32 =
        u32::try_from(batch_len).map_err(|_| CodecError::BatchTooLarge(batch_len))?;
    let record_count = check_record_count(records.len())?;
    check_offsets(base_offset, record_count)?;
    let first_timestamp = first_record(records)?.timestamp;
    let start = out.len();
    out.reserve(batch_len);
    out.resize(start + BATCH_HEADER_LEN, 0);
    let mut max_timestamp = i64::MIN;
    for (index, record) in (0u32..).zip(records) {
        if let Err(error) = write_record(out, record, index, first_timestamp) {
            out.truncate(start);
            return Err(error);
        }
        max_timestamp = max_timestamp.max(record.timestamp);
    }
    let header = BatchHeader {
        base_offset,
        batch_len: batch_len_u32,
        record_count,
        first_timestamp,
        max_timestamp,
    };
    let (batch_head, body) = out.split_at_mut(start + BATCH_HEADER_LEN);
    let raw = seal_header(&header, body);
    batch_head[start..].copy_from_slice(&raw);
    debug_assert_eq!(out.len() - start, batch_len);
    debug_assert_eq!(peek_header(&out[start..]), Ok(header));
    Ok(batch_len)
}

/// Parses and validates a batch header: magic, version, flags, reserved bytes, the
/// `batch_len` range, the `record_count` range and offset overflow. Does not check the
/// checksum and needs only the first [`BATCH_HEADER_LEN`] bytes, so recovery can learn
/// how long a batch claims to be before reading all of it.
pub fn peek_header(bytes: &[u8]) -> Result<BatchHeader, CodecError> {
    let raw = header_raw(bytes)?;
    let magic = u32::from_le_bytes(field(raw, OFFSET_MAGIC));
    if magic != BATCH_MAGIC {
        return Err(CodecError::BadMagic(magic));
    }
    let version = u16::from_le_bytes(field(raw, OFFSET_VERSION));
    if version != BATCH_VERSION {
        return Err(CodecError::UnsupportedVersion(version));
    }
    let flags = u16::from_le_bytes(field(raw, OFFSET_FLAGS));
    if flags & !BATCH_FLAGS_KNOWN != 0 {
        return Err(CodecError::BadFlags(flags));
    }
    if field::<RESERVED_LEN>(raw, OFFSET_RESERVED) != [0; RESERVED_LEN] {
        return Err(CodecError::ReservedNotZero);
    }
    let batch_len = u32::from_le_bytes(field(raw, OFFSET_BATCH_LEN));
    if !(BATCH_HEADER_LEN..=BATCH_BYTES_MAX).contains(&to_usize(batch_len)) {
        return Err(CodecError::BatchLenOutOfRange(batch_len));
    }
    let record_count = u32::from_le_bytes(field(raw, OFFSET_RECORD_COUNT));
    if !(1..=BATCH_RECORDS_MAX).contains(&record_count) {
        return Err(CodecError::RecordCountOutOfRange(record_count));
    }
    let base_offset = u64::from_le_bytes(field(raw, OFFSET_BASE_OFFSET));
    check_offsets(base_offset, record_count)?;
    Ok(BatchHeader {
        base_offset,
        batch_len,
        record_count,
        first_timestamp: i64::from_le_bytes(field(raw, OFFSET_FIRST_TIMESTAMP)),
        max_timestamp: i64::from_le_bytes(field(raw, OFFSET_MAX_TIMESTAMP)),
    })
}

/// Decodes the batch that starts at `bytes[0]`; `bytes` may extend past it. Checks the
/// header, that all `batch_len` bytes are present, the checksum, and every record
/// (lengths, varints, offset deltas, timestamps, and that the records fill the body
/// exactly). Allocates nothing; the view borrows `bytes`.
pub fn decode_batch(bytes: &[u8]) -> Result<BatchView<'_>, CodecError> {
    let header = peek_header(bytes)?;
    let batch_len = header.batch_len_bytes();
    let batch = bytes.get(..batch_len).ok_or(CodecError::Truncated {
        needed: batch_len,
        available: bytes.len(),
    })?;
    let (raw, body) = split_batch(batch)?;
    let expected = u64::from_le_bytes(field(raw, OFFSET_CHECKSUM));
    let actual = checksum(raw, body);
    if expected != actual {
        return Err(CodecError::ChecksumMismatch { expected, actual });
    }
    validate_records(body, &header)?;
    Ok(BatchView {
        header,
        bytes: batch,
    })
}

/// A batch that [`decode_batch`] fully validated.
#[derive(Debug, Clone, Copy)]
pub struct BatchView<'a> {
    header: BatchHeader,
    bytes: &'a [u8],
}

impl<'a> BatchView<'a> {
    /// The batch's header.
    pub fn header(&self) -> &BatchHeader {
        &self.header
    }

    /// The batch's bytes: exactly `batch_len` of them, header included.
    pub fn bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// The records, in offset order. Cannot fail: decoding checked every one.
    pub fn records(&self) -> Records<'a> {
        Records {
            rest: self.bytes.get(BATCH_HEADER_LEN..).unwrap_or_default(),
            index: 0,
            header: self.header,
        }
    }
}

/// One record of a decoded batch; every slice borrows the batch's bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordView<'a> {
    /// The record's offset in its partition.
    pub offset: u64,
    /// Milliseconds since the Unix epoch.
    pub timestamp: i64,
    /// The key, if the record has one (it may be empty).
    pub key: Option<&'a [u8]>,
    /// The payload.
    pub value: &'a [u8],
    headers_bytes: &'a [u8],
    header_count: u32,
}

impl<'a> RecordView<'a> {
    /// The number of headers.
    pub fn header_count(&self) -> u32 {
        self.header_count
    }

    /// The headers as (name, value) pairs, in order, borrowed from the batch.
    pub fn headers(&self) -> Headers<'a> {
        Headers {
            cursor: Cursor::new(self.headers_bytes),
            remaining: self.header_count,
        }
    }
}

/// Iterator over a decoded batch's records; see [`BatchView::records`].
#[derive(Debug, Clone)]
pub struct Records<'a> {
    /// The body bytes not yet iterated.
    rest: &'a [u8],
    /// The next record's position in the batch.
    index: u32,
    header: BatchHeader,
}

impl<'a> Iterator for Records<'a> {
    type Item = RecordView<'a>;

    fn next(&mut self) -> Option<RecordView<'a>> {
        if self.index >= self.header.record_count {
            return None;
        }
        let parsed = parse_record(self.rest, self.index, &self.header);
        // decode_batch parsed these same bytes successfully, and they are borrowed
        // immutably since, so this cannot fail; if it somehow did, end the iteration.
        debug_assert!(
            parsed.is_ok(),
            "validated record failed to parse: {parsed:?}"
        );
        let Ok((record, rest)) = parsed else {
            self.index = self.header.record_count;
            return None;
        };
        self.rest = rest;
        self.index += 1;
        Some(record)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = to_usize(self.header.record_count.saturating_sub(self.index));
        (left, Some(left))
    }
}

impl ExactSizeIterator for Records<'_> {}
impl FusedIterator for Records<'_> {}

/// Iterator over a record's headers; see [`RecordView::headers`].
#[derive(Debug, Clone)]
pub struct Headers<'a> {
    cursor: Cursor<'a>,
    remaining: u32,
}

impl<'a> Iterator for Headers<'a> {
    type Item = (&'a [u8], &'a [u8]);

    fn next(&mut self) -> Option<(&'a [u8], &'a [u8])> {
        if self.remaining == 0 {
            return None;
        }
        let parsed = read_header(&mut self.cursor);
        // As for records: decode_batch walked these bytes already.
        debug_assert!(
            parsed.is_ok(),
            "validated header failed to parse: {parsed:?}"
        );
        let Ok(pair) = parsed else {
            self.remaining = 0;
            return None;
        };
        self.remaining -= 1;
        Some(pair)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = to_usize(self.remaining);
        (left, Some(left))
    }
}

impl ExactSizeIterator for Headers<'_> {}
impl FusedIterator for Headers<'_> {}

// ---- encoding ----------------------------------------------------------------------

/// `count` as a record count, if it is within `1..=BATCH_RECORDS_MAX`.
fn check_record_count(count: usize) -> Result<u32, CodecError> {
    if count == 0 {
        return Err(CodecError::EmptyBatch);
    }
    match u32::try_from(count) {
        Ok(count) if count <= BATCH_RECORDS_MAX => Ok(count),
        _ => Err(CodecError::TooManyRecords(count)),
    }
}

fn first_record<'r, 'a>(records: &'r [Record<'a>]) -> Result<&'r Record<'a>, CodecError> {
    records.first().ok_or(CodecError::EmptyBatch)
}

/// Checks that `base_offset + record_count - 1` fits a u64.
fn check_offsets(base_offset: u64, record_count: u32) -> Result<(), CodecError> {
    let span = u64::from(record_count.saturating_sub(1));
    match base_offset.checked_add(span) {
        Some(_) => Ok(()),
        None => Err(CodecError::OffsetOverflow {
            base_offset,
            record_count,
        }),
    }
}

fn timestamp_delta(record: &Record<'_>, index: u32, first: i64) -> Result<i64, CodecError> {
    record
        .timestamp
        .checked_sub(first)
        .ok_or(CodecError::TimestampDeltaOverflow { index })
}

/// `len` as the value of a u32 length or count field.
fn length_u32(len: usize) -> Result<u32, CodecError> {
    u32::try_from(len).map_err(|_| CodecError::FieldTooLong(len))
}

/// The key field's `n`: 0 for no key, otherwise the key's length plus one.
fn key_n(key: Option<&[u8]>) -> Result<u32, CodecError> {
    match key {
        None => Ok(0),
        Some(key) => length_u32(key.len())?
            .checked_add(1)
            .ok_or(CodecError::FieldTooLong(key.len())),
    }
}

/// Bytes of a length-prefixed byte string.
fn bytes_field_len(bytes: &[u8]) -> Result<usize, CodecError> {
    let n = length_u32(bytes.len())?;
    Ok(varint_len(u64::from(n)).saturating_add(bytes.len()))
}

/// Bytes of a record after its `length` field (the value that field holds).
fn record_len(record: &Record<'_>, index: u32, first: i64) -> Result<usize, CodecError> {
    let delta = timestamp_delta(record, index, first)?;
    let key_n = key_n(record.key)?;
    let key_bytes = record.key.map_or(0, <[u8]>::len);
    let header_count = length_u32(record.headers.len())?;
    let mut len = 1 // attributes
        + varint_len(zigzag(delta))
        + varint_len(u64::from(index))
        + varint_len(u64::from(key_n))
        + key_bytes
        + varint_len(u64::from(header_count));
    for (name, value) in record.headers {
        len = len
            .saturating_add(bytes_field_len(name)?)
            .saturating_add(bytes_field_len(value)?);
    }
    Ok(len.saturating_add(bytes_field_len(record.value)?))
}

fn write_record(
    out: &mut Vec<u8>,
    record: &Record<'_>,
    index: u32,
    first: i64,
) -> Result<(), CodecError> {
    let len = record_len(record, index, first)?;
    let delta = timestamp_delta(record, index, first)?;
    let key_n = key_n(record.key)?;
    put_varint(out, len as u64);
    let start = out.len();
    out.push(0); // attributes: all bits reserved
    put_varint(out, zigzag(delta));
    put_varint(out, u64::from(index));
    put_varint(out, u64::from(key_n));
    out.extend_from_slice(record.key.unwrap_or_default());
    put_varint(out, record.headers.len() as u64);
    for (name, value) in record.headers {
        put_bytes(out, name);
        put_bytes(out, value);
    }
    put_bytes(out, record.value);
    debug_assert_eq!(out.len() - start, len);
    Ok(())
}

/// Writes a length-prefixed byte string; its length was checked by `bytes_field_len`.
fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

/// The 64 header bytes for `header` over `body`, checksum included.
fn seal_header(header: &BatchHeader, body: &[u8]) -> [u8; BATCH_HEADER_LEN] {
    let mut raw = [0u8; BATCH_HEADER_LEN];
    put(&mut raw, OFFSET_MAGIC, &BATCH_MAGIC.to_le_bytes());
    put(&mut raw, OFFSET_VERSION, &BATCH_VERSION.to_le_bytes());
    put(&mut raw, OFFSET_FLAGS, &BATCH_FLAGS_KNOWN.to_le_bytes());
    put(
        &mut raw,
        OFFSET_BASE_OFFSET,
        &header.base_offset.to_le_bytes(),
    );
    put(&mut raw, OFFSET_BATCH_LEN, &header.batch_len.to_le_bytes());
    put(
        &mut raw,
        OFFSET_RECORD_COUNT,
        &header.record_count.to_le_bytes(),
    );
    put(
        &mut raw,
        OFFSET_FIRST_TIMESTAMP,
        &header.first_timestamp.to_le_bytes(),
    );
    put(
        &mut raw,
        OFFSET_MAX_TIMESTAMP,
        &header.max_timestamp.to_le_bytes(),
    );
    // The reserved bytes stay zero.
    let sum = checksum(&raw, body);
    put(&mut raw, OFFSET_CHECKSUM, &sum.to_le_bytes());
    raw
}

/// Copies `bytes` into the header at `at`. Offsets are the constants above.
fn put(raw: &mut [u8; BATCH_HEADER_LEN], at: usize, bytes: &[u8]) {
    raw[at..at + bytes.len()].copy_from_slice(bytes);
}

// ---- decoding ----------------------------------------------------------------------

/// `xxh3_64_with_seed(body, xxh3_64(header[0..56]))`.
fn checksum(raw: &[u8; BATCH_HEADER_LEN], body: &[u8]) -> u64 {
    xxh3_64_with_seed(body, xxh3_64(&raw[..OFFSET_CHECKSUM]))
}

fn header_raw(bytes: &[u8]) -> Result<&[u8; BATCH_HEADER_LEN], CodecError> {
    bytes
        .get(..BATCH_HEADER_LEN)
        .and_then(|head| <&[u8; BATCH_HEADER_LEN]>::try_from(head).ok())
        .ok_or(CodecError::Truncated {
            needed: BATCH_HEADER_LEN,
            available: bytes.len(),
        })
}

/// Splits a whole batch into its header and body.
fn split_batch(batch: &[u8]) -> Result<(&[u8; BATCH_HEADER_LEN], &[u8]), CodecError> {
    let raw = header_raw(batch)?;
    let body = batch.get(BATCH_HEADER_LEN..).unwrap_or_default();
    Ok((raw, body))
}

/// The `N` header bytes at `at`. Offsets are the constants above.
fn field<const N: usize>(raw: &[u8; BATCH_HEADER_LEN], at: usize) -> [u8; N] {
    let mut bytes = [0u8; N];
    bytes.copy_from_slice(&raw[at..at + N]);
    bytes
}

/// Walks every record once, so that iteration afterwards cannot fail. The loop runs at
/// most `record_count` (≤ `BATCH_RECORDS_MAX`) times and each pass consumes bytes.
fn validate_records(body: &[u8], header: &BatchHeader) -> Result<(), CodecError> {
    let mut rest = body;
    let mut max_timestamp = i64::MIN;
    for index in 0..header.record_count {
        let (record, after) = parse_record(rest, index, header)?;
        if index == 0 && record.timestamp != header.first_timestamp {
            return Err(CodecError::MalformedRecord {
                index,
                reason: "first record's timestamp delta is not zero",
            });
        }
        max_timestamp = max_timestamp.max(record.timestamp);
        rest = after;
    }
    if !rest.is_empty() {
        return Err(CodecError::BodyLengthMismatch {
            body_len: body.len(),
            records_len: body.len() - rest.len(),
        });
    }
    if max_timestamp != header.max_timestamp {
        return Err(CodecError::MaxTimestampMismatch {
            header: header.max_timestamp,
            records: max_timestamp,
        });
    }
    Ok(())
}

/// Parses the record at the start of `rest` (the body not yet read), returning it and
/// the bytes after it.
fn parse_record<'a>(
    rest: &'a [u8],
    index: u32,
    header: &BatchHeader,
) -> Result<(RecordView<'a>, &'a [u8]), CodecError> {
    parse_record_fields(rest, index, header)
        .map_err(|reason| CodecError::MalformedRecord { index, reason })
}

fn parse_record_fields<'a>(
    rest: &'a [u8],
    index: u32,
    header: &BatchHeader,
) -> Result<(RecordView<'a>, &'a [u8]), &'static str> {
    if rest.is_empty() {
        return Err("body ends before this record");
    }
    let mut body = Cursor::new(rest);
    let len = body.varint_u32()?;
    let mut record = Cursor::new(body.take(len, "record runs past the end of the body")?);
    if record.byte("record has no attributes byte")? != 0 {
        return Err("attributes has reserved bits set");
    }
    let delta = unzigzag(record.varint_u64()?);
    let timestamp = header
        .first_timestamp
        .checked_add(delta)
        .ok_or("timestamp overflows i64")?;
    if record.varint_u32()? != index {
        return Err("offset delta differs from the record's index");
    }
    let key = match record.varint_u32()? {
        0 => None,
        n => Some(record.take(n - 1, "key runs past the end of the record")?),
    };
    let header_count = record.varint_u32()?;
    let headers_bytes = skip_headers(&mut record, header_count)?;
    let value_len = record.varint_u32()?;
    let value = record.take(value_len, "value runs past the end of the record")?;
    if record.remaining() != 0 {
        return Err("record has bytes after its value");
    }
    let offset = header
        .base_offset
        .checked_add(u64::from(index))
        .ok_or("offset overflows u64")?;
    let view = RecordView {
        offset,
        timestamp,
        key,
        value,
        headers_bytes,
        header_count,
    };
    Ok((view, body.rest()))
}

/// Steps over `count` headers and returns the bytes they occupy. The count is checked
/// against the bytes left before looping, so a huge count read from disk costs nothing.
fn skip_headers<'a>(record: &mut Cursor<'a>, count: u32) -> Result<&'a [u8], &'static str> {
    if to_usize(count) > record.remaining() / RECORD_HEADER_BYTES_MIN {
        return Err("header count exceeds what the record can hold");
    }
    let start = record.rest();
    for _ in 0..count {
        read_header(record)?;
    }
    let used = start.len() - record.remaining();
    start.get(..used).ok_or("header bytes out of range")
}

fn read_header<'a>(cursor: &mut Cursor<'a>) -> Result<(&'a [u8], &'a [u8]), &'static str> {
    let name_len = cursor.varint_u32()?;
    let name = cursor.take(name_len, "header name runs past the end of the record")?;
    let value_len = cursor.varint_u32()?;
    let value = cursor.take(value_len, "header value runs past the end of the record")?;
    Ok((name, value))
}

/// A read position in bytes whose extent is already bounded; every read checks the
/// bytes left first.
#[derive(Debug, Clone, Copy)]
struct Cursor<'a> {
    /// The bytes not yet read.
    rest: &'a [u8],
}

impl<'a> Cursor<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Cursor { rest: bytes }
    }

    fn rest(&self) -> &'a [u8] {
        self.rest
    }

    fn remaining(&self) -> usize {
        self.rest.len()
    }

    fn byte(&mut self, missing: &'static str) -> Result<u8, &'static str> {
        let (&byte, rest) = self.rest.split_first().ok_or(missing)?;
        self.rest = rest;
        Ok(byte)
    }

    /// The next `len` bytes, after checking that many remain.
    fn take(&mut self, len: u32, missing: &'static str) -> Result<&'a [u8], &'static str> {
        let (taken, rest) = self.rest.split_at_checked(to_usize(len)).ok_or(missing)?;
        self.rest = rest;
        Ok(taken)
    }

    fn varint_u32(&mut self) -> Result<u32, &'static str> {
        let value = self.varint(VARINT_U32_BYTES_MAX, u32::BITS)?;
        u32::try_from(value).map_err(|_| "varint overflows u32")
    }

    fn varint_u64(&mut self) -> Result<u64, &'static str> {
        self.varint(VARINT_U64_BYTES_MAX, u64::BITS)
    }

    /// LEB128: 7 bits per byte, low group first, high bit set on all but the last byte.
    /// Rejects encodings longer than `bytes_max` and any bit at or above `bits`.
    fn varint(&mut self, bytes_max: u32, bits: u32) -> Result<u64, &'static str> {
        let mut value = 0u64;
        for i in 0..bytes_max {
            let byte = self.byte("varint runs past the end of its record")?;
            let group = u64::from(byte & 0x7f);
            let shift = 7 * i;
            // The last allowed byte may only carry the bits that are left.
            if shift + 7 > bits && group >> (bits - shift) != 0 {
                return Err("varint overflows its type");
            }
            value |= group << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err("varint is longer than its type allows")
    }
}

// ---- integers ----------------------------------------------------------------------

/// A u32 read from a batch as a byte count (lossless: see the const assertion above).
fn to_usize(n: u32) -> usize {
    n as usize
}

/// Bytes in the LEB128 encoding of `value`.
fn varint_len(value: u64) -> usize {
    let bits = u64::BITS - value.leading_zeros();
    to_usize(bits.div_ceil(7).max(1))
}

fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value & 0x7f) as u8 | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// Zigzag: 0, -1, 1, -2, ... map to 0, 1, 2, 3, ...
fn zigzag(n: i64) -> u64 {
    ((n << 1) ^ (n >> 63)) as u64
}

fn unzigzag(z: u64) -> i64 {
    ((z >> 1) as i64) ^ -((z & 1) as i64)
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A record that owns its bytes, to build inputs and compare decoded output.
    type OwnedRecord = RecordBuf;

    fn owned(
        timestamp: i64,
        key: Option<&[u8]>,
        headers: &[(&[u8], &[u8])],
        value: &[u8],
    ) -> OwnedRecord {
        OwnedRecord {
            timestamp,
            key: key.map(<[u8]>::to_vec),
            headers: headers
                .iter()
                .map(|(n, v)| (n.to_vec(), v.to_vec()))
                .collect(),
            value: value.to_vec(),
        }
    }

    /// Encodes `records` onto `out`, returning what `encode_batch` returned.
    fn encode_owned(
        base_offset: u64,
        records: &[OwnedRecord],
        out: &mut Vec<u8>,
    ) -> Result<usize, CodecError> {
        let (predicted, appended, before) = with_records(records, |borrowed| {
            let before = out.len();
            (
                encoded_len(borrowed),
                encode_batch(base_offset, borrowed, out),
                before,
            )
        });
        // encoded_len does not see the base offset, so cannot report its overflow.
        if !matches!(appended, Err(CodecError::OffsetOverflow { .. })) {
            assert_eq!(
                predicted, appended,
                "encoded_len disagrees with encode_batch"
            );
        }
        if appended.is_err() {
            assert_eq!(
                out.len(),
                before,
                "a failed encode must leave `out` as it was"
            );
        }
        appended
    }

    fn encode_vec(base_offset: u64, records: &[OwnedRecord]) -> Vec<u8> {
        let mut out = Vec::new();
        let n = encode_owned(base_offset, records, &mut out).expect("records encode");
        assert_eq!(n, out.len());
        out
    }

    fn decode_owned(view: &BatchView<'_>) -> Vec<OwnedRecord> {
        view.records().map(|r| RecordBuf::from_view(&r)).collect()
    }

    /// Checks that `bytes` decode to exactly `records` at offsets `base_offset..`.
    fn assert_round_trip(base_offset: u64, records: &[OwnedRecord], bytes: &[u8]) {
        let view = decode_batch(bytes).expect("batch decodes");
        let header = view.header();
        assert_eq!(header.base_offset, base_offset);
        assert_eq!(header.record_count as usize, records.len());
        assert_eq!(header.batch_len_bytes(), view.bytes().len());
        assert_eq!(header.first_timestamp, records[0].timestamp);
        assert_eq!(
            header.max_timestamp,
            records.iter().map(|r| r.timestamp).max().expect("records")
        );
        assert_eq!(
            header.last_offset(),
            base_offset + (records.len() as u64 - 1)
        );
        assert_eq!(peek_header(bytes).as_ref(), Ok(header));
        let offsets: Vec<u64> = view.records().map(|r| r.offset).collect();
        let want: Vec<u64> = (0..records.len() as u64).map(|i| base_offset + i).collect();
        assert_eq!(offsets, want);
        assert_eq!(view.records().len(), records.len());
        assert_eq!(decode_owned(&view), records);
    }

    /// Rewrites the checksum of the batch at the start of `batch` to match its bytes, so
    /// tests can reach the record checks behind it.
    fn reseal(batch: &mut [u8]) {
        let mut raw = [0u8; BATCH_HEADER_LEN];
        raw.copy_from_slice(&batch[..BATCH_HEADER_LEN]);
        let len = u32::from_le_bytes(field(&raw, OFFSET_BATCH_LEN)) as usize;
        let len = len.clamp(BATCH_HEADER_LEN, batch.len());
        let sum = checksum(&raw, &batch[BATCH_HEADER_LEN..len]);
        batch[OFFSET_CHECKSUM..BATCH_HEADER_LEN].copy_from_slice(&sum.to_le_bytes());
    }

    /// A whole batch from a hand-written body and header fields, correctly checksummed.
    fn hand_batch(
        record_count: u32,
        first_timestamp: i64,
        max_timestamp: i64,
        body: &[u8],
    ) -> Vec<u8> {
        let header = BatchHeader {
            base_offset: 100,
            batch_len: (BATCH_HEADER_LEN + body.len()) as u32,
            record_count,
            first_timestamp,
            max_timestamp,
        };
        let mut batch = seal_header(&header, body).to_vec();
        batch.extend_from_slice(body);
        batch
    }

    fn sample_records() -> Vec<OwnedRecord> {
        let big = vec![0xA5u8; 100_000];
        vec![
            owned(1_700_000_000_000, None, &[], b"no key, no headers"),
            owned(1_699_999_999_000, Some(b""), &[(b"trace", b"abc")], b""),
            owned(
                1_700_000_000_500,
                Some(&[0x00, 0xFF, 0x00, 0x80, 0x7F]),
                &[
                    (b"", b""),
                    (&[0xFF, 0x00], &[0x00]),
                    (b"content-type", b"bytes"),
                ],
                &[0x00, 0xFF],
            ),
            owned(-5, Some(b"k"), &[], &big),
            owned(1_700_000_000_400, None, &[(b"h", &big[..300])], b"tail"),
        ]
    }

    #[test]
    fn header_offsets_match_the_table_in_docs_storage_md() {
        assert_eq!(OFFSET_MAGIC, 0);
        assert_eq!(OFFSET_VERSION, 4);
        assert_eq!(OFFSET_FLAGS, 6);
        assert_eq!(OFFSET_BASE_OFFSET, 8);
        assert_eq!(OFFSET_BATCH_LEN, 16);
        assert_eq!(OFFSET_RECORD_COUNT, 20);
        assert_eq!(OFFSET_FIRST_TIMESTAMP, 24);
        assert_eq!(OFFSET_MAX_TIMESTAMP, 32);
        assert_eq!(OFFSET_RESERVED, 40);
        assert_eq!(OFFSET_CHECKSUM, 56);
        assert_eq!(BATCH_HEADER_LEN, 64);
        assert_eq!(BATCH_MAGIC.to_le_bytes(), *b"RRB1");
        assert_eq!(BATCH_VERSION, 1);
        assert_eq!(BATCH_BYTES_MAX, 64 * 1024 * 1024);
        assert_eq!(BATCH_RECORDS_MAX, 1_048_576);
    }

    #[test]
    fn one_record_batch_has_the_documented_bytes() {
        let record = owned(1000, Some(b"k"), &[(b"h", b"v")], b"hi");
        let bytes = encode_vec(7, &[record]);
        #[rustfmt::skip]
        let body: &[u8] = &[
            13,                 // length: bytes after this field
            0,                  // attributes
            0,                  // timestamp_delta: zigzag(0)
            0,                  // offset_delta
            2, b'k',            // key: n = len + 1
            1,                  // header_count
            1, b'h', 1, b'v',   // header name, value
            2, b'h', b'i',      // value
        ];
        let mut header = Vec::new();
        header.extend_from_slice(b"RRB1");
        header.extend_from_slice(&1u16.to_le_bytes());
        header.extend_from_slice(&0u16.to_le_bytes());
        header.extend_from_slice(&7u64.to_le_bytes());
        header.extend_from_slice(&(64 + body.len() as u32).to_le_bytes());
        header.extend_from_slice(&1u32.to_le_bytes());
        header.extend_from_slice(&1000i64.to_le_bytes());
        header.extend_from_slice(&1000i64.to_le_bytes());
        header.extend_from_slice(&[0; 16]);
        let sum = xxh3_64_with_seed(body, xxh3_64(&header));
        header.extend_from_slice(&sum.to_le_bytes());
        assert_eq!(&bytes[..64], &header[..]);
        assert_eq!(&bytes[64..], body);
    }

    #[test]
    fn mixed_records_round_trip() {
        let records = sample_records();
        let bytes = encode_vec(42, &records);
        assert_round_trip(42, &records, &bytes);
        let view = decode_batch(&bytes).unwrap();
        assert_eq!(view.header().max_timestamp, 1_700_000_000_500);
        let third = view.records().nth(2).unwrap();
        assert_eq!(third.header_count(), 3);
        assert_eq!(third.headers().len(), 3);
        // Zero copies: the decoded slices point into the batch.
        let range = bytes.as_ptr_range();
        assert!(range.contains(&third.key.unwrap().as_ptr()));
        assert!(range.contains(&third.value.as_ptr()));
    }

    #[test]
    fn extreme_timestamps_and_offsets() {
        let records = vec![
            owned(i64::MIN, None, &[], b"a"),
            owned(i64::MIN + 1, None, &[], b"b"),
        ];
        assert_round_trip(u64::MAX - 1, &records, &encode_vec(u64::MAX - 1, &records));
        let records = vec![owned(i64::MAX, None, &[], b"a"), owned(-1, None, &[], b"b")];
        assert_round_trip(0, &records, &encode_vec(0, &records));
        let records = vec![
            owned(i64::MIN, None, &[], b"a"),
            owned(i64::MAX, None, &[], b"b"),
        ];
        let mut out = vec![9];
        assert_eq!(
            encode_owned(0, &records, &mut out),
            Err(CodecError::TimestampDeltaOverflow { index: 1 })
        );
        let records = vec![owned(0, None, &[], b"a"), owned(0, None, &[], b"b")];
        assert_eq!(
            encode_owned(u64::MAX, &records, &mut out),
            Err(CodecError::OffsetOverflow {
                base_offset: u64::MAX,
                record_count: 2
            })
        );
        assert_eq!(out, [9]);
    }

    #[test]
    fn trailing_bytes_and_back_to_back_batches() {
        let first = sample_records();
        let second = vec![owned(5, Some(b"x"), &[], b"second")];
        let mut log = Vec::new();
        let a = encode_owned(0, &first, &mut log).unwrap();
        let b = encode_owned(first.len() as u64, &second, &mut log).unwrap();
        log.extend_from_slice(b"garbage after the last batch");
        let view = decode_batch(&log).unwrap();
        assert_eq!(view.bytes().len(), a);
        assert_eq!(view.bytes().len(), view.header().batch_len_bytes());
        assert_eq!(decode_owned(&view), first);
        let next = decode_batch(&log[a..]).unwrap();
        assert_eq!(next.bytes().len(), b);
        assert_eq!(next.header().base_offset, view.header().last_offset() + 1);
        assert_eq!(decode_owned(&next), second);
        assert!(decode_batch(&log[a + b..]).is_err());
    }

    #[test]
    fn encode_rejects_empty_and_too_many_records() {
        let mut out = vec![1, 2, 3];
        assert_eq!(encode_batch(0, &[], &mut out), Err(CodecError::EmptyBatch));
        assert_eq!(encoded_len(&[]), Err(CodecError::EmptyBatch));
        assert_eq!(check_record_count(0), Err(CodecError::EmptyBatch));
        assert_eq!(check_record_count(1), Ok(1));
        assert_eq!(
            check_record_count(BATCH_RECORDS_MAX as usize),
            Ok(BATCH_RECORDS_MAX)
        );
        let over = BATCH_RECORDS_MAX as usize + 1;
        assert_eq!(
            check_record_count(over),
            Err(CodecError::TooManyRecords(over))
        );
        assert_eq!(
            check_record_count(usize::MAX),
            Err(CodecError::TooManyRecords(usize::MAX))
        );
        let empty = Record {
            timestamp: 0,
            key: None,
            headers: &[],
            value: &[],
        };
        let many = vec![empty; over];
        assert_eq!(
            encode_batch(0, &many, &mut out),
            Err(CodecError::TooManyRecords(over))
        );
        assert_eq!(out, [1, 2, 3]);
    }

    #[test]
    fn encode_accepts_exactly_the_record_maximum() {
        let empty = Record {
            timestamp: 0,
            key: None,
            headers: &[],
            value: &[],
        };
        let many = vec![empty; BATCH_RECORDS_MAX as usize];
        let mut out = Vec::new();
        let n = encode_batch(0, &many, &mut out).unwrap();
        let view = decode_batch(&out).unwrap();
        assert_eq!(view.header().record_count, BATCH_RECORDS_MAX);
        assert_eq!(view.records().count(), BATCH_RECORDS_MAX as usize);
        assert_eq!(
            view.records().last().unwrap().offset,
            u64::from(BATCH_RECORDS_MAX) - 1
        );
        assert_eq!(n, out.len());
    }

    #[test]
    fn encode_rejects_a_batch_over_the_byte_maximum_and_accepts_one_at_it() {
        let huge = vec![0x5Au8; BATCH_BYTES_MAX + 1];
        let record = Record {
            timestamp: 0,
            key: None,
            headers: &[],
            value: &huge,
        };
        let mut out = vec![7];
        assert!(
            matches!(encode_batch(0, &[record], &mut out), Err(CodecError::BatchTooLarge(n)) if n > BATCH_BYTES_MAX)
        );
        assert_eq!(out, [7]);
        // Header 64, record length varint 4, attributes/delta/offset/key/count 5, value
        // length varint 4: the rest is payload.
        let fits = BATCH_BYTES_MAX - 64 - 4 - 5 - 4;
        let record = Record {
            timestamp: 0,
            key: None,
            headers: &[],
            value: &huge[..fits],
        };
        assert_eq!(encoded_len(&[record]), Ok(BATCH_BYTES_MAX));
        let one_more = Record {
            value: &huge[..fits + 1],
            ..record
        };
        assert_eq!(
            encoded_len(&[one_more]),
            Err(CodecError::BatchTooLarge(BATCH_BYTES_MAX + 1))
        );
        out.clear();
        assert_eq!(encode_batch(0, &[record], &mut out), Ok(BATCH_BYTES_MAX));
        let view = decode_batch(&out).unwrap();
        assert_eq!(view.records().next().unwrap().value.len(), fits);
    }

    #[test]
    fn field_lengths_over_u32_are_rejected() {
        let over = u32::MAX as usize + 1;
        assert_eq!(length_u32(u32::MAX as usize), Ok(u32::MAX));
        assert_eq!(length_u32(over), Err(CodecError::FieldTooLong(over)));
        assert_eq!(key_n(None), Ok(0));
        assert_eq!(key_n(Some(b"")), Ok(1));
    }

    #[test]
    fn every_bit_flip_in_a_batch_is_detected() {
        let records = vec![
            owned(10, Some(b"key"), &[(b"n", b"v"), (b"", b"x")], b"value"),
            owned(3, None, &[], b""),
            owned(12, Some(b""), &[], &[0xFF; 40]),
        ];
        let bytes = encode_vec(1 << 40, &records);
        for position in 0..bytes.len() {
            for bit in 0..8 {
                let mut corrupt = bytes.clone();
                corrupt[position] ^= 1 << bit;
                assert!(
                    decode_batch(&corrupt).is_err(),
                    "flip of bit {bit} at byte {position} went unnoticed"
                );
            }
        }
        for cut in 0..bytes.len() {
            assert!(
                decode_batch(&bytes[..cut]).is_err(),
                "cut at {cut} went unnoticed"
            );
        }
    }

    #[test]
    fn header_checks_name_the_field_at_fault() {
        let good = encode_vec(0, &[owned(0, None, &[], b"v")]);
        let with = |at: usize, bytes: &[u8]| {
            let mut b = good.clone();
            b[at..at + bytes.len()].copy_from_slice(bytes);
            b
        };
        assert_eq!(
            peek_header(&good[..63]),
            Err(CodecError::Truncated {
                needed: 64,
                available: 63
            })
        );
        assert_eq!(
            peek_header(&with(0, b"RRB2")),
            Err(CodecError::BadMagic(0x3242_5252))
        );
        assert_eq!(
            peek_header(&with(4, &[2, 0])),
            Err(CodecError::UnsupportedVersion(2))
        );
        assert_eq!(
            peek_header(&with(6, &[0, 0x80])),
            Err(CodecError::BadFlags(0x8000))
        );
        assert_eq!(
            peek_header(&with(55, &[1])),
            Err(CodecError::ReservedNotZero)
        );
        assert_eq!(
            peek_header(&with(16, &63u32.to_le_bytes())),
            Err(CodecError::BatchLenOutOfRange(63))
        );
        let over = BATCH_BYTES_MAX as u32 + 1;
        assert_eq!(
            peek_header(&with(16, &over.to_le_bytes())),
            Err(CodecError::BatchLenOutOfRange(over))
        );
        assert_eq!(
            peek_header(&with(20, &[0; 4])),
            Err(CodecError::RecordCountOutOfRange(0))
        );
        let over = BATCH_RECORDS_MAX + 1;
        assert_eq!(
            peek_header(&with(20, &over.to_le_bytes())),
            Err(CodecError::RecordCountOutOfRange(over))
        );
        // peek_header ignores the checksum; decode_batch does not.
        let bad_sum = with(56, &[0; 8]);
        assert!(peek_header(&bad_sum).is_ok());
        assert!(matches!(
            decode_batch(&bad_sum),
            Err(CodecError::ChecksumMismatch { expected: 0, .. })
        ));
        // A batch longer than the bytes given: peek_header is content, decode is not.
        let long = with(16, &(good.len() as u32 + 1).to_le_bytes());
        assert!(peek_header(&long).is_ok());
        assert_eq!(
            decode_batch(&long).err(),
            Some(CodecError::Truncated {
                needed: good.len() + 1,
                available: good.len()
            })
        );
    }

    #[test]
    fn record_checks_name_the_fault() {
        let malformed = |index, reason| Err(CodecError::MalformedRecord { index, reason });
        // (record_count, first_timestamp, max_timestamp, body, outcome)
        type Case = (u32, i64, i64, &'static [u8], Result<(), CodecError>);
        #[rustfmt::skip]
        let cases: &[Case] = &[
            // The smallest record: no key, no headers, empty value.
            (1, 0, 0, &[6, 0, 0, 0, 0, 0, 0], Ok(())),
            (1, 0, 0, &[6, 1, 0, 0, 0, 0, 0], malformed(0, "attributes has reserved bits set")),
            (1, 0, 0, &[6, 0, 0, 1, 0, 0, 0], malformed(0, "offset delta differs from the record's index")),
            (1, 0, 0, &[7, 0, 0, 0, 0, 0, 0], malformed(0, "record runs past the end of the body")),
            (1, 0, 0, &[7, 0, 0, 0, 0, 0, 0, 9], malformed(0, "record has bytes after its value")),
            (1, 0, 0, &[6, 0, 0, 0, 5, 0, 0], malformed(0, "key runs past the end of the record")),
            (1, 0, 0, &[6, 0, 0, 0, 0, 3, 0], malformed(0, "header count exceeds what the record can hold")),
            (1, 0, 0, &[7, 0, 0, 0, 0, 1, 0, 5], malformed(0, "header value runs past the end of the record")),
            (1, 0, 0, &[6, 0, 0, 0, 0, 0, 1], malformed(0, "value runs past the end of the record")),
            (1, 0, 0, &[6, 0, 2, 0, 0, 0, 0], malformed(0, "first record's timestamp delta is not zero")),
            (1, i64::MAX, i64::MAX, &[6, 0, 2, 0, 0, 0, 0], malformed(0, "timestamp overflows i64")),
            (1, 0, 5, &[6, 0, 0, 0, 0, 0, 0], Err(CodecError::MaxTimestampMismatch { header: 5, records: 0 })),
            (1, 0, 0, &[6, 0, 0, 0, 0, 0, 0, 6], Err(CodecError::BodyLengthMismatch { body_len: 8, records_len: 7 })),
            (2, 0, 0, &[6, 0, 0, 0, 0, 0, 0], malformed(1, "body ends before this record")),
            (2, 0, 0, &[6, 0, 0, 0, 0, 0, 0, 6, 0, 0, 0, 0, 0, 0], malformed(1, "offset delta differs from the record's index")),
            (1, 0, 0, &[10, 0, 0, 0x80, 0x80, 0x80, 0x80, 0x80, 0, 0, 0], malformed(0, "varint is longer than its type allows")),
            (1, 0, 0, &[10, 0, 0, 0xFF, 0xFF, 0xFF, 0xFF, 0x1F, 0, 0, 0], malformed(0, "varint overflows its type")),
        ];
        for (count, first, max, body, outcome) in cases {
            let batch = hand_batch(*count, *first, *max, body);
            assert_eq!(&decode_batch(&batch).map(|_| ()), outcome, "body {body:?}");
        }
    }

    #[test]
    fn varints_follow_leb128() {
        let cases: &[(u64, &[u8])] = &[
            (0, &[0]),
            (1, &[1]),
            (127, &[0x7F]),
            (128, &[0x80, 0x01]),
            (300, &[0xAC, 0x02]),
            (u64::from(u32::MAX), &[0xFF, 0xFF, 0xFF, 0xFF, 0x0F]),
            (
                u64::MAX,
                &[0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x01],
            ),
        ];
        for &(value, bytes) in cases {
            let mut out = Vec::new();
            put_varint(&mut out, value);
            assert_eq!(out, bytes);
            assert_eq!(varint_len(value), bytes.len());
            assert_eq!(Cursor::new(bytes).varint_u64(), Ok(value));
        }
        assert_eq!(
            Cursor::new(&[0xFF, 0xFF, 0xFF, 0xFF, 0x0F]).varint_u32(),
            Ok(u32::MAX)
        );
        assert!(Cursor::new(&[0xFF, 0xFF, 0xFF, 0xFF, 0x10])
            .varint_u32()
            .is_err());
        assert!(Cursor::new(&[0x80, 0x80, 0x80, 0x80, 0x80, 0x00])
            .varint_u32()
            .is_err());
        assert!(
            Cursor::new(&[0xFF; 9].iter().copied().chain([0x02]).collect::<Vec<_>>())
                .varint_u64()
                .is_err()
        );
        assert!(
            Cursor::new(&[0x80; 10].iter().copied().chain([0x00]).collect::<Vec<_>>())
                .varint_u64()
                .is_err()
        );
        assert!(Cursor::new(&[0x80]).varint_u64().is_err());
        assert!(Cursor::new(&[]).varint_u32().is_err());
    }

    #[test]
    fn zigzag_maps_small_magnitudes_to_small_numbers() {
        let cases = [
            (0i64, 0u64),
            (-1, 1),
            (1, 2),
            (-2, 3),
            (i64::MAX, u64::MAX - 1),
            (i64::MIN, u64::MAX),
        ];
        for (n, z) in cases {
            assert_eq!(zigzag(n), z);
            assert_eq!(unzigzag(z), n);
        }
    }

    #[test]
    fn errors_read_clearly() {
        assert_eq!(
            CodecError::BadMagic(0).to_string(),
            "bad batch magic 0x00000000, expected 0x31425252"
        );
        assert_eq!(
            CodecError::Truncated {
                needed: 64,
                available: 3
            }
            .to_string(),
            "batch truncated: 64 bytes needed, 3 available"
        );
        assert_eq!(
            CodecError::MalformedRecord {
                index: 4,
                reason: "key runs past the end of the record"
            }
            .to_string(),
            "record 4 is malformed: key runs past the end of the record"
        );
    }

    fn small_bytes(len_max: usize) -> impl Strategy<Value = Vec<u8>> {
        prop::collection::vec(any::<u8>(), 0..len_max)
    }

    /// Records whose timestamps lie within ±2^40 of a base anywhere in ±2^62, so that
    /// every delta fits an i64.
    fn arbitrary_records(
        count_max: usize,
        value_max: usize,
    ) -> impl Strategy<Value = Vec<OwnedRecord>> {
        (-(1i64 << 62)..(1i64 << 62)).prop_flat_map(move |base| {
            let record = (
                -(1i64 << 40)..(1i64 << 40),
                prop::option::of(small_bytes(20)),
                prop::collection::vec((small_bytes(10), small_bytes(10)), 0..5),
                small_bytes(value_max),
            )
                .prop_map(move |(delta, key, headers, value)| OwnedRecord {
                    timestamp: base + delta,
                    key,
                    headers,
                    value,
                });
            prop::collection::vec(record, 1..count_max)
        })
    }

    proptest! {
        #[test]
        fn arbitrary_records_round_trip(base_offset in 0u64..u64::MAX - 64, records in arbitrary_records(50, 300)) {
            let mut out = vec![0xEE; 3];
            let n = encode_owned(base_offset, &records, &mut out).unwrap();
            prop_assert_eq!(n, out.len() - 3);
            assert_round_trip(base_offset, &records, &out[3..]);
        }

        #[test]
        fn any_bit_flip_or_cut_is_detected(
            records in arbitrary_records(8, 40),
            position in any::<prop::sample::Index>(),
            bit in 0u8..8,
            cut in any::<prop::sample::Index>(),
        ) {
            let bytes = encode_vec(9, &records);
            let mut corrupt = bytes.clone();
            corrupt[position.index(bytes.len())] ^= 1 << bit;
            prop_assert!(decode_batch(&corrupt).is_err());
            let cut = cut.index(bytes.len());
            prop_assert!(decode_batch(&bytes[..cut]).is_err());
        }

        #[test]
        fn random_bytes_never_panic(bytes in small_bytes(2000)) {
            let _ = peek_header(&bytes);
            if let Ok(view) = decode_batch(&bytes) {
                for record in view.records() {
                    prop_assert_eq!(record.headers().count(), record.header_count() as usize);
                }
            }
        }

        /// A correctly sealed header over a random body reaches the record walk.
        #[test]
        fn random_body_behind_a_valid_header_never_panics(
            record_count in 1u32..64,
            first in any::<i64>(),
            max in any::<i64>(),
            body in small_bytes(2000),
            tail in small_bytes(100),
        ) {
            let mut bytes = hand_batch(record_count, first, max, &body);
            bytes.extend_from_slice(&tail);
            prop_assert!(peek_header(&bytes).is_ok());
            if let Ok(view) = decode_batch(&bytes) {
                prop_assert_eq!(view.records().count(), record_count as usize);
            }
        }

        /// Corrupting a real batch's body, then fixing its checksum, gives bytes that the
        /// record walk must reject or accept without panicking; accepted ones iterate.
        #[test]
        fn resealed_mutations_never_panic(
            records in arbitrary_records(8, 40),
            edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
        ) {
            let mut bytes = encode_vec(3, &records);
            let body_len = bytes.len() - BATCH_HEADER_LEN;
            for (at, byte) in edits {
                bytes[BATCH_HEADER_LEN + at.index(body_len)] = byte;
            }
            reseal(&mut bytes);
            if let Ok(view) = decode_batch(&bytes) {
                let mut count = 0;
                for record in view.records() {
                    prop_assert_eq!(record.headers().count(), record.header_count() as usize);
                    count += 1;
                }
                prop_assert_eq!(count, view.header().record_count as usize);
            }
        }
    }
}
