//! Fuzz target: structured records (from `arbitrary`) through `encode_batch` and back
//! through `decode_batch`, then one flipped bit and one cut.
//!
//! What it asserts:
//!
//! - `encode_batch` returns exactly the outcome the inputs predict: `EmptyBatch` for no
//!   records, `TimestampDeltaOverflow { index }` for the first record whose timestamp
//!   minus the first one's overflows i64, then `OffsetOverflow` when `base_offset +
//!   count - 1` does; otherwise success. `encoded_len` agrees (it returns the same
//!   errors, `OffsetOverflow` aside, which depends on the base offset it does not take).
//!   On error the output buffer is untouched; on success the bytes already in it (a
//!   fuzzer-chosen prefix) are untouched and exactly `encoded_len` bytes were appended.
//! - Decoding gives back the header the inputs imply (base offset, `batch_len`, count,
//!   first and largest timestamp) and the same records: offsets `base..`, timestamps,
//!   keys (`None` and `Some(&[])` distinct), headers in order, values. Garbage after the
//!   batch changes nothing.
//! - The checksum covers everything: one flipped bit anywhere in the batch makes decoding
//!   fail, and with the error that names the field at fault (`BadMagic` in the magic,
//!   `ReservedNotZero` in the reserved bytes, `ChecksumMismatch` in the timestamps,
//!   checksum and body, ...). Any cut of the batch is `Truncated`, with the exact counts.

#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use ringbroker::storage::codec::{
    decode_batch, encode_batch, encoded_len, with_records, BatchHeader, CodecError, Record,
    RecordBuf, BATCH_HEADER_LEN,
};

#[derive(Debug, Arbitrary)]
struct Input {
    base_offset: BaseOffset,
    /// Bytes already in the output buffer before the batch is appended.
    prefix: Vec<u8>,
    /// The timestamp `Timestamp::Near` is relative to.
    timestamp_base: i64,
    records: Vec<ArbRecord>,
    /// Which bit of the encoded batch to flip (taken modulo its bit count).
    flip: u32,
    /// Where to cut the encoded batch (taken modulo its length).
    cut: u32,
    /// Bytes appended after the batch, which decoding must ignore.
    trailing: Vec<u8>,
}

/// Most base offsets are small; near `u64::MAX` the offset checks come into play.
#[derive(Debug, Arbitrary)]
enum BaseOffset {
    Small(u16),
    NearMax(u8),
    Any(u64),
}

/// Timestamps mostly near each other (so batches encode); any i64 tests the overflow.
#[derive(Debug, Arbitrary)]
enum Timestamp {
    Near(i32),
    Any(i64),
}

#[derive(Debug, Arbitrary)]
struct ArbRecord {
    timestamp: Timestamp,
    key: Option<Vec<u8>>,
    headers: Vec<(Vec<u8>, Vec<u8>)>,
    value: Vec<u8>,
}

fuzz_target!(|input: Input| {
    let base_offset = match input.base_offset {
        BaseOffset::Small(n) => u64::from(n),
        BaseOffset::NearMax(n) => u64::MAX - u64::from(n),
        BaseOffset::Any(n) => n,
    };
    let timestamps: Vec<i64> = input
        .records
        .iter()
        .map(|r| match r.timestamp {
            Timestamp::Near(delta) => input.timestamp_base.saturating_add(i64::from(delta)),
            Timestamp::Any(t) => t,
        })
        .collect();
    let owned: Vec<RecordBuf> = input
        .records
        .iter()
        .zip(&timestamps)
        .map(|(r, &timestamp)| RecordBuf {
            timestamp,
            key: r.key.clone(),
            headers: r.headers.clone(),
            value: r.value.clone(),
        })
        .collect();
    with_records(&owned, |records| {
        round_trip(&input, base_offset, &timestamps, records);
    });
});

/// Encodes `records` after `input.prefix`, checks the outcome against the prediction,
/// then decodes, flips and cuts what was written.
fn round_trip(input: &Input, base_offset: u64, timestamps: &[i64], records: &[Record<'_>]) {
    let mut out = input.prefix.clone();
    let outcome = encode_batch(base_offset, &records, &mut out);
    let predicted = predict(base_offset, timestamps);
    match (&outcome, &predicted) {
        (Ok(_), Ok(())) => {}
        (Err(got), Err(want)) => {
            assert_eq!(got, want);
            assert_eq!(out, input.prefix, "a failed encode changed the buffer");
            let len_outcome = encoded_len(records).err();
            match want {
                CodecError::OffsetOverflow { .. } => assert_eq!(len_outcome, None),
                _ => assert_eq!(len_outcome.as_ref(), Some(want)),
            }
            return;
        }
        _ => panic!("encode returned {outcome:?}, the inputs predict {predicted:?}"),
    }
    let written = outcome.expect("matched Ok above");
    assert_eq!(encoded_len(records), Ok(written));
    assert_eq!(out.len(), input.prefix.len() + written);
    assert_eq!(&out[..input.prefix.len()], input.prefix.as_slice());
    let batch = &out[input.prefix.len()..];

    let expected_header = BatchHeader {
        base_offset,
        batch_len: u32::try_from(written).expect("batch_len fits u32"),
        record_count: u32::try_from(records.len()).expect("count fits u32"),
        first_timestamp: timestamps[0],
        max_timestamp: timestamps.iter().copied().max().expect("not empty"),
    };
    check_decodes_to(batch, base_offset, records, &expected_header);
    let mut with_trailing = batch.to_vec();
    with_trailing.extend_from_slice(&input.trailing);
    check_decodes_to(&with_trailing, base_offset, records, &expected_header);

    check_flip(batch, input.flip);
    check_cut(batch, input.cut);
}

/// What `encode_batch` must return for these timestamps and base offset.
fn predict(base_offset: u64, timestamps: &[i64]) -> Result<(), CodecError> {
    let Some(&first) = timestamps.first() else {
        return Err(CodecError::EmptyBatch);
    };
    for (index, &t) in (0u32..).zip(timestamps) {
        if t.checked_sub(first).is_none() {
            return Err(CodecError::TimestampDeltaOverflow { index });
        }
    }
    let record_count = u32::try_from(timestamps.len()).expect("fuzz inputs are small");
    if base_offset
        .checked_add(u64::from(record_count) - 1)
        .is_none()
    {
        return Err(CodecError::OffsetOverflow {
            base_offset,
            record_count,
        });
    }
    Ok(())
}

fn check_decodes_to(bytes: &[u8], base_offset: u64, records: &[Record<'_>], header: &BatchHeader) {
    let view = decode_batch(bytes).expect("an encoded batch decodes");
    assert_eq!(view.header(), header);
    assert_eq!(view.bytes().len(), header.batch_len_bytes());
    assert_eq!(view.records().len(), records.len());
    // Not `zip(base_offset..)`: that range overflows after yielding u64::MAX.
    for ((got, want), index) in view.records().zip(records).zip(0u64..) {
        assert_eq!(Some(got.offset), base_offset.checked_add(index));
        assert_eq!(got.timestamp, want.timestamp);
        assert_eq!(got.key, want.key);
        assert_eq!(got.value, want.value);
        assert_eq!(got.header_count() as usize, want.headers.len());
        assert!(got.headers().eq(want.headers.iter().copied()));
    }
}

/// Flips one bit and checks decoding fails with the error for the field it hit.
fn check_flip(batch: &[u8], flip: u32) {
    let bit = flip as usize % (batch.len() * 8);
    let (at, mask) = (bit / 8, 1u8 << (bit % 8));
    let mut corrupt = batch.to_vec();
    corrupt[at] ^= mask;
    let error = decode_batch(&corrupt).expect_err("a flipped bit went unnoticed");
    let plausible = match at {
        0..4 => matches!(error, CodecError::BadMagic(_)),
        4..6 => matches!(error, CodecError::UnsupportedVersion(_)),
        6..8 => matches!(error, CodecError::BadFlags(_)),
        8..16 => matches!(
            error,
            CodecError::OffsetOverflow { .. } | CodecError::ChecksumMismatch { .. }
        ),
        16..20 => matches!(
            error,
            CodecError::BatchLenOutOfRange(_)
                | CodecError::Truncated { .. }
                | CodecError::ChecksumMismatch { .. }
        ),
        20..24 => matches!(
            error,
            CodecError::RecordCountOutOfRange(_)
                | CodecError::OffsetOverflow { .. }
                | CodecError::ChecksumMismatch { .. }
        ),
        40..56 => matches!(error, CodecError::ReservedNotZero),
        // Timestamps (24..40), the checksum (56..64) and the body.
        _ => matches!(error, CodecError::ChecksumMismatch { .. }),
    };
    assert!(plausible, "flip at byte {at} gave {error:?}");
}

fn check_cut(batch: &[u8], cut: u32) {
    let cut = cut as usize % batch.len();
    let needed = if cut < BATCH_HEADER_LEN {
        BATCH_HEADER_LEN
    } else {
        batch.len()
    };
    assert_eq!(
        decode_batch(&batch[..cut]).err(),
        Some(CodecError::Truncated {
            needed,
            available: cut
        })
    );
}
