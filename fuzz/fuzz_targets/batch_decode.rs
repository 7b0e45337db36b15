//! Fuzz target: arbitrary bytes through `peek_header` and `decode_batch`, the parsers
//! recovery and reads run on bytes from disk.
//!
//! Each input is decoded twice: as given, and (when it is at least a header long) as a
//! *resealed* copy whose `batch_len` is clamped to the input and whose checksum is
//! recomputed, so that mutations of the header fields and the body reach the record
//! walk instead of stopping at the checksum (a fuzzer cannot forge xxh3).
//!
//! What it asserts, for every input:
//!
//! - `peek_header` failing means `decode_batch` fails with the same error (the decoder
//!   checks the header first and nothing else can pass it).
//! - For a batch `decode_batch` accepts:
//!   - `peek_header` returns exactly the view's header, and the view's bytes are the
//!     first `batch_len` input bytes; one byte fewer is `Truncated`.
//!   - iteration yields exactly `record_count` records (and `len()` agrees), at offsets
//!     `base_offset, base_offset + 1, ..., last_offset()`; the first record's timestamp
//!     is `first_timestamp` and the largest is `max_timestamp`; each record's headers
//!     iterate `header_count` times; every key, header and value slice lies inside the
//!     batch body (zero-copy borrows, never the header).
//!   - re-encoding the decoded records with `encode_batch(base_offset, ..)` succeeds,
//!     `encoded_len` predicts its size, and decoding that gives the same header (save
//!     `batch_len`) and the same records.
//!   - canonical form: the decoder accepts non-minimal varints (`0x80 0x00` for 0) and
//!     the encoder never writes them, so the input may be longer than its re-encoding,
//!     never shorter. Every other field is fixed by the content (attributes 0, reserved
//!     0, lengths, the checksum), so a varint's padding is the *only* freedom: when the
//!     re-encoding is exactly as long as the input batch, the bytes must be identical.
//!     A difference at equal length would mean the decoder accepts two spellings of one
//!     batch some other way.

#![no_main]

use libfuzzer_sys::fuzz_target;
use ringbroker::storage::codec::{
    decode_batch, encode_batch, encoded_len, peek_header, BatchHeader, BatchView, CodecError,
    Record, BATCH_BYTES_MAX, BATCH_HEADER_LEN, OFFSET_BATCH_LEN, OFFSET_CHECKSUM,
};
use xxhash_rust::xxh3::{xxh3_64, xxh3_64_with_seed};

fuzz_target!(|data: &[u8]| {
    check(data);
    if let Some(resealed) = reseal(data) {
        if resealed != data {
            check(&resealed);
        }
    }
});

/// A copy of `data` with a valid checksum: `batch_len` kept if the input holds that many
/// bytes, else set to the input's length (trailing bytes stay, as on disk). The checksum
/// is `xxh3_64_with_seed(body, xxh3_64(header[0..56]))` (docs/storage.md).
fn reseal(data: &[u8]) -> Option<Vec<u8>> {
    if data.len() < BATCH_HEADER_LEN || data.len() > BATCH_BYTES_MAX {
        return None;
    }
    let mut bytes = data.to_vec();
    let len_field = OFFSET_BATCH_LEN..OFFSET_BATCH_LEN + 4;
    let claimed = u32::from_le_bytes(bytes[len_field.clone()].try_into().ok()?) as usize;
    let batch_len = if (BATCH_HEADER_LEN..=bytes.len()).contains(&claimed) {
        claimed
    } else {
        bytes.len()
    };
    let batch_len_u32 = u32::try_from(batch_len).ok()?;
    bytes[len_field].copy_from_slice(&batch_len_u32.to_le_bytes());
    let seed = xxh3_64(&bytes[..OFFSET_CHECKSUM]);
    let sum = xxh3_64_with_seed(&bytes[BATCH_HEADER_LEN..batch_len], seed);
    bytes[OFFSET_CHECKSUM..BATCH_HEADER_LEN].copy_from_slice(&sum.to_le_bytes());
    Some(bytes)
}

fn check(data: &[u8]) {
    let peeked = peek_header(data);
    let decoded = decode_batch(data);
    if let Err(error) = &peeked {
        assert_eq!(
            decoded.as_ref().err(),
            Some(error),
            "peek failed, decode did not"
        );
        return;
    }
    let Ok(view) = decoded else {
        return;
    };
    assert_eq!(peeked, Ok(*view.header()));
    let batch_len = view.header().batch_len_bytes();
    assert_eq!(view.bytes().len(), batch_len);
    assert_eq!(view.bytes(), &data[..batch_len]);
    assert_eq!(
        decode_batch(&data[..batch_len - 1]).err(),
        Some(CodecError::Truncated {
            needed: batch_len,
            available: batch_len - 1
        })
    );
    let records = check_records(&view);
    check_reencoding(&view, &records);
}

/// A decoded record, its headers collected (still borrowed from the batch).
struct Decoded<'a> {
    offset: u64,
    timestamp: i64,
    key: Option<&'a [u8]>,
    headers: Vec<(&'a [u8], &'a [u8])>,
    value: &'a [u8],
}

fn check_records<'a>(view: &BatchView<'a>) -> Vec<Decoded<'a>> {
    let header = view.header();
    let body = &view.bytes()[BATCH_HEADER_LEN..];
    let iter = view.records();
    assert_eq!(iter.len(), header.record_count as usize);
    let mut records = Vec::with_capacity(iter.len());
    // Not `zip(base_offset..)`: that range overflows after yielding u64::MAX.
    for (index, record) in (0u64..).zip(iter) {
        assert_eq!(Some(record.offset), header.base_offset.checked_add(index));
        if let Some(key) = record.key {
            assert_inside(body, key);
        }
        assert_inside(body, record.value);
        let headers_iter = record.headers();
        assert_eq!(headers_iter.len(), record.header_count() as usize);
        let headers: Vec<_> = headers_iter.collect();
        assert_eq!(headers.len(), record.header_count() as usize);
        for (name, value) in &headers {
            assert_inside(body, name);
            assert_inside(body, value);
        }
        records.push(Decoded {
            offset: record.offset,
            timestamp: record.timestamp,
            key: record.key,
            headers,
            value: record.value,
        });
    }
    assert_eq!(records.len(), header.record_count as usize);
    assert_eq!(records.last().map(|r| r.offset), Some(header.last_offset()));
    assert_eq!(records[0].timestamp, header.first_timestamp);
    let max = records.iter().map(|r| r.timestamp).max();
    assert_eq!(max, Some(header.max_timestamp));
    records
}

/// `inner` is a sub-slice of `outer` (by address: the decoder copies nothing).
fn assert_inside(outer: &[u8], inner: &[u8]) {
    let outer = outer.as_ptr_range();
    let inner = inner.as_ptr_range();
    assert!(outer.start <= inner.start, "slice starts before the body");
    assert!(inner.end <= outer.end, "slice ends after the body");
}

fn check_reencoding(view: &BatchView<'_>, decoded: &[Decoded<'_>]) {
    let header = *view.header();
    let records: Vec<Record<'_>> = decoded
        .iter()
        .map(|r| Record {
            timestamp: r.timestamp,
            key: r.key,
            headers: &r.headers,
            value: r.value,
        })
        .collect();
    let mut canonical = Vec::new();
    let written = encode_batch(header.base_offset, &records, &mut canonical)
        .expect("a decoded batch re-encodes");
    assert_eq!(written, canonical.len());
    assert_eq!(encoded_len(&records), Ok(written));
    assert!(
        written <= view.bytes().len(),
        "re-encoding is longer than its input"
    );
    if written == view.bytes().len() {
        assert_eq!(canonical, view.bytes(), "same length, different bytes");
    }
    let again = decode_batch(&canonical).expect("a re-encoded batch decodes");
    let expected_header = BatchHeader {
        batch_len: u32::try_from(written).expect("batch_len fits u32"),
        ..header
    };
    assert_eq!(*again.header(), expected_header);
    assert_eq!(again.records().len(), decoded.len());
    for (record, original) in again.records().zip(decoded) {
        assert_eq!(record.offset, original.offset);
        assert_eq!(record.timestamp, original.timestamp);
        assert_eq!(record.key, original.key);
        assert_eq!(record.value, original.value);
        assert!(record.headers().eq(original.headers.iter().copied()));
    }
}
