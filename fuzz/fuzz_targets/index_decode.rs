//! Fuzz target: arbitrary bytes through the index file decoders `decode_offsets` and
//! `decode_times`, the checks recovery runs on a sealed segment's `.index` and
//! `.timeindex` before trusting them; and valid entries through the encoders and back.
//!
//! Input layout (short inputs are padded with zeros):
//!
//! | bytes | meaning |
//! |---|---|
//! | 0 | flags, see `FLAG_*` |
//! | 1..9 | `segment_len` (u64 LE) passed to `decode_offsets` |
//! | 9..17 | `base` (u64 LE), unless `FLAG_BASE_FROM_FILE` |
//! | 17..19 | `n`: the offset index file is the next `n` bytes (fewer if the input ends) |
//! | then | the offset index file, then the time index file (the rest) |
//!
//! The flags let mutated files get past the checks a fuzzer cannot solve by itself
//! (the xxh3 trailer) or only slowly (the base and count fields), so that the entry
//! checks are what gets fuzzed.
//!
//! What it asserts:
//!
//! - Whatever `decode_offsets` accepts has as many entries as the file's count field and
//!   the file is exactly header + entries + trailer long; the first entry is `(base, 0)`;
//!   offsets and positions are strictly ascending; every position is below
//!   `segment_len`; `encode_offsets(base, entries)` gives back the file byte for byte.
//!   The file is accepted for a segment exactly one byte longer than its last position,
//!   and refused for one ending at that position, and refused under another base.
//! - Whatever `decode_times` accepts (checked against the decoded offset index, or, if
//!   that was refused, against the offsets the offset file's entries name) has as many
//!   entries as its count; timestamps are non-decreasing; offsets strictly ascending and
//!   each one in the offset table; `encode_times(base, entries)` gives back the file
//!   byte for byte; and it is accepted against a table of just its own offsets.
//! - Ascending entries built from the input (offsets anywhere up to `u64::MAX`) encode and
//!   decode back unchanged, for a segment one byte longer than the last position.

#![no_main]

use libfuzzer_sys::fuzz_target;
use ringbroker::storage::index::{decode_offsets, decode_times, encode_offsets, encode_times};
use xxhash_rust::xxh3::xxh3_64;

/// Recompute the offset index file's xxh3 trailer.
const FLAG_RESEAL_OFFSETS: u8 = 1 << 0;
/// Recompute the time index file's xxh3 trailer.
const FLAG_RESEAL_TIMES: u8 = 1 << 1;
/// Use the offset index file's own base field (bytes 8..16) as `base`.
const FLAG_BASE_FROM_FILE: u8 = 1 << 2;
/// Set each file's count field to the number of whole entries its length holds.
const FLAG_FIX_COUNTS: u8 = 1 << 3;

/// The fixed part of the input.
const PREFIX_LEN: usize = 19;
/// Index file layout (engine/src/storage/index.rs, docs/storage.md).
const FILE_HEADER_LEN: usize = 24;
const FILE_TRAILER_LEN: usize = 8;
const OFFSET_ENTRY_LEN: usize = 8;
const TIME_ENTRY_LEN: usize = 12;

fuzz_target!(|data: &[u8]| {
    let mut prefix = [0u8; PREFIX_LEN];
    let given = data.len().min(PREFIX_LEN);
    prefix[..given].copy_from_slice(&data[..given]);
    let rest = &data[given..];
    let flags = prefix[0];
    let segment_len = u64::from_le_bytes(prefix[1..9].try_into().expect("8 bytes"));
    let split = usize::from(u16::from_le_bytes([prefix[17], prefix[18]])).min(rest.len());
    let mut offsets_file = rest[..split].to_vec();
    let mut times_file = rest[split..].to_vec();
    let base = match offsets_file.get(8..16) {
        Some(field) if flags & FLAG_BASE_FROM_FILE != 0 => {
            u64::from_le_bytes(field.try_into().expect("8 bytes"))
        }
        _ => u64::from_le_bytes(prefix[9..17].try_into().expect("8 bytes")),
    };
    if flags & FLAG_FIX_COUNTS != 0 {
        fix_count(&mut offsets_file, OFFSET_ENTRY_LEN);
        fix_count(&mut times_file, TIME_ENTRY_LEN);
    }
    if flags & FLAG_RESEAL_OFFSETS != 0 {
        reseal(&mut offsets_file);
    }
    if flags & FLAG_RESEAL_TIMES != 0 {
        reseal(&mut times_file);
    }

    let offsets = decode_offsets(&offsets_file, base, segment_len);
    if let Some(entries) = &offsets {
        check_offsets(&offsets_file, base, segment_len, entries);
    }
    let table = offsets.unwrap_or_else(|| offsets_named_by(&offsets_file, base));
    if let Some(entries) = decode_times(&times_file, base, &table) {
        check_times(&times_file, base, &table, &entries);
    }
    check_round_trip(&prefix, rest);
});

/// The count field (bytes 16..20) a file of this length and entry size would have.
fn fix_count(file: &mut [u8], entry_len: usize) {
    let Some(entries_len) = file.len().checked_sub(FILE_HEADER_LEN + FILE_TRAILER_LEN) else {
        return;
    };
    let count = u32::try_from(entries_len / entry_len).unwrap_or(u32::MAX);
    file[16..20].copy_from_slice(&count.to_le_bytes());
}

/// Overwrites the last 8 bytes with the xxh3-64 of the bytes before them.
fn reseal(file: &mut [u8]) {
    let Some(body_len) = file.len().checked_sub(FILE_TRAILER_LEN) else {
        return;
    };
    let sum = xxh3_64(&file[..body_len]);
    file[body_len..].copy_from_slice(&sum.to_le_bytes());
}

fn count_field(file: &[u8]) -> usize {
    u32::from_le_bytes(file[16..20].try_into().expect("4 bytes")) as usize
}

fn check_offsets(file: &[u8], base: u64, segment_len: u64, entries: &[(u64, u64)]) {
    assert_eq!(entries.len(), count_field(file));
    let entries_len = entries.len() * OFFSET_ENTRY_LEN;
    assert_eq!(file.len(), FILE_HEADER_LEN + entries_len + FILE_TRAILER_LEN);
    if let Some(&first) = entries.first() {
        assert_eq!(first, (base, 0));
    }
    for pair in entries.windows(2) {
        assert!(pair[0].0 < pair[1].0, "offsets not strictly ascending");
        assert!(pair[0].1 < pair[1].1, "positions not strictly ascending");
    }
    for &(offset, position) in entries {
        assert!(position < segment_len, "position outside the segment");
        assert!(
            offset - base <= u64::from(u32::MAX),
            "offset too far from the base"
        );
    }
    assert_eq!(encode_offsets(base, entries), file, "re-encoding differs");
    let tight = entries.last().map_or(0, |&(_, p)| p + 1);
    assert_eq!(decode_offsets(file, base, tight).as_deref(), Some(entries));
    if tight > 0 {
        assert_eq!(decode_offsets(file, base, tight - 1), None);
    }
    assert_eq!(decode_offsets(file, base ^ 1, segment_len), None);
}

/// The absolute offsets an offset index file's entries name, ascending, whether or
/// not the file passes its checks: a table for `decode_times` when it does not.
fn offsets_named_by(file: &[u8], base: u64) -> Vec<(u64, u64)> {
    let entries = file
        .get(FILE_HEADER_LEN..file.len().saturating_sub(FILE_TRAILER_LEN))
        .unwrap_or_default();
    let mut table: Vec<(u64, u64)> = entries
        .chunks_exact(OFFSET_ENTRY_LEN)
        .filter_map(|e| {
            let rel = u32::from_le_bytes(e[..4].try_into().expect("4 bytes"));
            Some((base.checked_add(u64::from(rel))?, 0))
        })
        .collect();
    table.sort_unstable();
    table.dedup_by_key(|e| e.0);
    table
}

fn check_times(file: &[u8], base: u64, table: &[(u64, u64)], entries: &[(i64, u64)]) {
    assert_eq!(entries.len(), count_field(file));
    let entries_len = entries.len() * TIME_ENTRY_LEN;
    assert_eq!(file.len(), FILE_HEADER_LEN + entries_len + FILE_TRAILER_LEN);
    for pair in entries.windows(2) {
        assert!(pair[0].0 <= pair[1].0, "timestamps decrease");
        assert!(pair[0].1 < pair[1].1, "offsets not strictly ascending");
    }
    for &(_, offset) in entries {
        let indexed = table.binary_search_by_key(&offset, |e| e.0).is_ok();
        assert!(indexed, "time entry names an offset the offset index lacks");
    }
    assert_eq!(encode_times(base, entries), file, "re-encoding differs");
    let own: Vec<(u64, u64)> = entries.iter().map(|&(_, o)| (o, 0)).collect();
    assert_eq!(decode_times(file, base, &own).as_deref(), Some(entries));
}

/// Builds ascending entries from `bytes` (5 bytes each: offset step, position step,
/// timestamp step), starting at `(base, 0)` and stopping before any value overflows.
fn check_round_trip(prefix: &[u8; PREFIX_LEN], bytes: &[u8]) {
    let base = u64::from_le_bytes(prefix[9..17].try_into().expect("8 bytes"));
    let first_timestamp = i64::from_le_bytes(prefix[1..9].try_into().expect("8 bytes"));
    let mut offsets = vec![(base, 0u64)];
    let mut times = vec![(first_timestamp, base)];
    for step in bytes.chunks_exact(5) {
        let (last_offset, last_position) = offsets[offsets.len() - 1];
        let last_timestamp = times[times.len() - 1].0;
        let offset_step = u64::from(u16::from_le_bytes([step[0], step[1]])) + 1;
        let position_step = u64::from(u16::from_le_bytes([step[2], step[3]])) + 1;
        let next = (
            last_offset.checked_add(offset_step),
            last_position + position_step,
            last_timestamp.checked_add(i64::from(step[4])),
        );
        let (Some(offset), position, Some(timestamp)) = next else {
            break;
        };
        // Relative offsets and positions are u32 in the file (the log rolls first).
        if offset - base > u64::from(u32::MAX) || position > u64::from(u32::MAX) {
            break;
        }
        offsets.push((offset, position));
        times.push((timestamp, offset));
    }
    let segment_len = offsets[offsets.len() - 1].1 + 1;
    let offsets_file = encode_offsets(base, &offsets);
    let decoded = decode_offsets(&offsets_file, base, segment_len);
    assert_eq!(decoded.as_ref(), Some(&offsets), "offset index round trip");
    let times_file = encode_times(base, &times);
    let decoded = decode_times(&times_file, base, &offsets);
    assert_eq!(decoded.as_ref(), Some(&times), "time index round trip");
}
