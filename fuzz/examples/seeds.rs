//! Writes the seed corpora in `fuzz/seeds/<target>/`: a few valid inputs per target, so
//! that fuzzing starts past the magic numbers and checksums. Regenerate with
//!
//!     cargo run --manifest-path fuzz/Cargo.toml --example seeds
//!
//! (stable is fine; it does not link libFuzzer). `batch_roundtrip` has no seeds: its
//! input is `arbitrary`'s encoding of records, which libFuzzer finds by itself. Seeds
//! named `regress_*` are inputs that once crashed a target, kept as regression tests.

use std::fs;
use std::path::Path;

use ringbroker::storage::codec::{
    encode_batch, Record, BATCH_HEADER_LEN, OFFSET_BATCH_LEN, OFFSET_CHECKSUM,
};
use ringbroker::storage::index::{encode_offsets, encode_times};
use xxhash_rust::xxh3::{xxh3_64, xxh3_64_with_seed};

fn main() -> std::io::Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("seeds");
    write_all(&root.join("batch_decode"), &batch_seeds())?;
    write_all(&root.join("index_decode"), &index_seeds())?;
    write_all(&root.join("index_decode"), &index_regressions())?;
    Ok(())
}

fn write_all(dir: &Path, seeds: &[(&str, Vec<u8>)]) -> std::io::Result<()> {
    fs::create_dir_all(dir)?;
    for (name, bytes) in seeds {
        fs::write(dir.join(name), bytes)?;
    }
    Ok(())
}

fn encode(base_offset: u64, records: &[Record<'_>]) -> Vec<u8> {
    let mut out = Vec::new();
    encode_batch(base_offset, records, &mut out).expect("seed records encode");
    out
}

fn batch_seeds() -> Vec<(&'static str, Vec<u8>)> {
    let empty = Record {
        timestamp: 0,
        key: None,
        headers: &[],
        value: b"",
    };
    let headers: &[(&[u8], &[u8])] = &[(b"trace", b"7f"), (b"", b"x")];
    let full = Record {
        timestamp: 1_700_000_000_000,
        key: Some(b"user-1"),
        headers,
        value: b"hello",
    };
    let several = [
        Record {
            timestamp: 1_000,
            key: Some(b""),
            headers: &[],
            value: b"a",
        },
        Record {
            timestamp: 1_500,
            key: None,
            headers,
            value: &[0xFF; 40],
        },
        Record {
            timestamp: 900,
            key: Some(b"k"),
            headers: &[],
            value: b"",
        },
    ];
    let minimal = encode(0, &[empty]);
    let mut two_batches = encode(7, &[full]);
    two_batches.extend_from_slice(&encode(8, &several));
    vec![
        ("minimal", minimal.clone()),
        ("one_record", encode(40, &[full])),
        ("three_records", encode(1 << 40, &several)),
        ("near_max_offset", encode(u64::MAX - 2, &several)),
        ("two_batches", two_batches),
        ("padded_varint", pad_value_len(&minimal)),
    ]
}

/// The minimal batch with its value length written as `0x80 0x00` instead of `0x00`:
/// non-minimal, accepted by the decoder, never written by the encoder.
fn pad_value_len(minimal: &[u8]) -> Vec<u8> {
    // Body: [len 6][attributes][delta][offset delta][key n][header count][value len 0].
    let mut bytes = minimal.to_vec();
    assert_eq!(&bytes[BATCH_HEADER_LEN..], [6, 0, 0, 0, 0, 0, 0]);
    bytes[BATCH_HEADER_LEN] = 7;
    bytes.truncate(bytes.len() - 1);
    bytes.extend_from_slice(&[0x80, 0x00]);
    let batch_len = u32::try_from(bytes.len()).expect("small");
    bytes[OFFSET_BATCH_LEN..OFFSET_BATCH_LEN + 4].copy_from_slice(&batch_len.to_le_bytes());
    let seed = xxh3_64(&bytes[..OFFSET_CHECKSUM]);
    let sum = xxh3_64_with_seed(&bytes[BATCH_HEADER_LEN..], seed);
    bytes[OFFSET_CHECKSUM..BATCH_HEADER_LEN].copy_from_slice(&sum.to_le_bytes());
    bytes
}

/// One `index_decode` input: flags, segment_len, base, then both files (layout in
/// fuzz_targets/index_decode.rs).
fn index_input(
    segment_len: u64,
    base: u64,
    offsets: &[(u64, u64)],
    times: &[(i64, u64)],
) -> Vec<u8> {
    let offsets_file = encode_offsets(base, offsets);
    let times_file = encode_times(base, times);
    let mut input = vec![0u8];
    input.extend_from_slice(&segment_len.to_le_bytes());
    input.extend_from_slice(&base.to_le_bytes());
    input.extend_from_slice(
        &u16::try_from(offsets_file.len())
            .expect("small")
            .to_le_bytes(),
    );
    input.extend_from_slice(&offsets_file);
    input.extend_from_slice(&times_file);
    input
}

/// An index file encoded for base 0 with its base field set to `u64::MAX` and its
/// trailer recomputed: entries whose relative offset is not 0 then name offsets past
/// `u64::MAX`.
fn rebased_to_max(mut file: Vec<u8>) -> Vec<u8> {
    file[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
    reseal_index(file)
}

fn reseal_index(mut file: Vec<u8>) -> Vec<u8> {
    let body_len = file.len() - 8;
    let sum = xxh3_64(&file[..body_len]);
    file[body_len..].copy_from_slice(&sum.to_le_bytes());
    file
}

/// `index_decode` inputs for the bugs it found: they crash the target until the engine
/// is fixed, and guard the fix afterwards. `decode_offsets` and `decode_times` compute
/// `base + relative offset` unchecked (an overflow panic under overflow checks, for a
/// file whose checksummed base is near `u64::MAX`), and accept non-zero reserved
/// bytes 20..24 (so two files decode to the same index and re-encoding differs).
fn index_regressions() -> Vec<(&'static str, Vec<u8>)> {
    let with_files = |segment_len: u64, base: u64, offsets: &[u8], times: &[u8]| {
        let mut input = vec![0u8];
        input.extend_from_slice(&segment_len.to_le_bytes());
        input.extend_from_slice(&base.to_le_bytes());
        input.extend_from_slice(&u16::try_from(offsets.len()).expect("small").to_le_bytes());
        input.extend_from_slice(offsets);
        input.extend_from_slice(times);
        input
    };
    let offsets_past_max = rebased_to_max(encode_offsets(0, &[(1, 0)]));
    let times_past_max = rebased_to_max(encode_times(0, &[(0, 1)]));
    let mut reserved = encode_offsets(5, &[]);
    reserved[20] = 1;
    let reserved = reseal_index(reserved);
    vec![
        (
            "regress_offset_overflow",
            with_files(64, u64::MAX, &offsets_past_max, &[]),
        ),
        (
            "regress_time_offset_overflow",
            with_files(0, u64::MAX, &[], &times_past_max),
        ),
        (
            "regress_reserved_not_zero",
            with_files(0, 5, &reserved, &[]),
        ),
    ]
}

fn index_seeds() -> Vec<(&'static str, Vec<u8>)> {
    let offsets = [(100, 0), (140, 4096), (190, 9000)];
    let times = [(5, 100), (9, 140), (9, 190)];
    let top = u64::MAX - 200;
    vec![
        ("three_entries", index_input(10_000, 100, &offsets, &times)),
        ("empty", index_input(0, 3, &[], &[])),
        ("one_entry", index_input(1, 0, &[(0, 0)], &[(-7, 0)])),
        (
            "near_max_base",
            index_input(
                70,
                top,
                &[(top, 0), (top + 200, 64)],
                &[(1, top), (1, top + 200)],
            ),
        ),
    ]
}
