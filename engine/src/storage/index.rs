//! The on-disk sparse offset index and time index of a sealed segment: their file
//! names, byte format, and the checks that decide whether a file found on disk can be
//! trusted or must be rebuilt from the segment.
//!
//! Owns: encoding and validating `{base:020}.index` and `{base:020}.timeindex`.
//! Never: reads or writes files itself (the log does, through its `StorageDir`), or
//! trusts an index it has not checked: a file that fails any check is rebuilt.
//!
//! The active segment's indexes live in memory only; they are written when the
//! segment is sealed (checksummed, synced), so after a crash a file is either whole
//! and valid or detectably bad. Format (all integers little-endian):
//!
//! | bytes | field |
//! |---|---|
//! | 0..8 | magic: `RBOFFIX1` (offset index) or `RBTIMIX1` (time index) |
//! | 8..16 | the segment's base offset |
//! | 16..20 | entry count `n` |
//! | 20..24 | reserved, 0 |
//! | 24..24+n·w | entries (`w` = 8: relative offset u32, position u32; `w` = 12: timestamp i64, relative offset u32) |
//! | last 8 | xxh3-64 of every byte before it |

use xxhash_rust::xxh3::xxh3_64;

use super::dir::{offset_file_name, parse_offset_file_name};

/// Suffix of offset index files.
pub const INDEX_SUFFIX: &str = ".index";
/// Suffix of time index files.
pub const TIME_INDEX_SUFFIX: &str = ".timeindex";

const OFFSET_MAGIC: &[u8; 8] = b"RBOFFIX1";
const TIME_MAGIC: &[u8; 8] = b"RBTIMIX1";
const HEADER_LEN: usize = 24;
const TRAILER_LEN: usize = 8;
const OFFSET_ENTRY_LEN: usize = 8;
const TIME_ENTRY_LEN: usize = 12;

/// The offset index file name of the segment starting at `base_offset`.
pub fn index_name(base_offset: u64) -> String {
    offset_file_name(base_offset, INDEX_SUFFIX)
}

/// The time index file name of the segment starting at `base_offset`.
pub fn time_index_name(base_offset: u64) -> String {
    offset_file_name(base_offset, TIME_INDEX_SUFFIX)
}

/// The base offset an index or time index file name encodes, if it is one.
pub fn parse_index_name(name: &str) -> Option<u64> {
    parse_offset_file_name(name, INDEX_SUFFIX)
        .or_else(|| parse_offset_file_name(name, TIME_INDEX_SUFFIX))
}

/// A segment's sparse indexes, absolute offsets, ascending.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct SparseIndexes {
    /// `(batch base offset, byte position)`.
    pub(crate) offsets: Vec<(u64, u64)>,
    /// `(largest timestamp up to and including the batch, batch base offset)`.
    pub(crate) times: Vec<(i64, u64)>,
}

fn header(magic: &[u8; 8], base: u64, count: usize, entry_len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + count * entry_len + TRAILER_LEN);
    out.extend_from_slice(magic);
    out.extend_from_slice(&base.to_le_bytes());
    out.extend_from_slice(&u32::try_from(count).unwrap_or(u32::MAX).to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    out
}

fn seal(mut out: Vec<u8>) -> Vec<u8> {
    let sum = xxh3_64(&out);
    out.extend_from_slice(&sum.to_le_bytes());
    out
}

/// Relative offsets and positions fit u32: the log keeps segments below 4 GiB and
/// rolls before a segment spans 2^32 offsets.
fn rel(offset: u64, base: u64) -> u32 {
    u32::try_from(offset - base).unwrap_or(u32::MAX)
}

/// The offset index file's bytes.
pub fn encode_offsets(base: u64, entries: &[(u64, u64)]) -> Vec<u8> {
    let mut out = header(OFFSET_MAGIC, base, entries.len(), OFFSET_ENTRY_LEN);
    for &(offset, position) in entries {
        out.extend_from_slice(&rel(offset, base).to_le_bytes());
        out.extend_from_slice(&u32::try_from(position).unwrap_or(u32::MAX).to_le_bytes());
    }
    seal(out)
}

/// The time index file's bytes.
pub fn encode_times(base: u64, entries: &[(i64, u64)]) -> Vec<u8> {
    let mut out = header(TIME_MAGIC, base, entries.len(), TIME_ENTRY_LEN);
    for &(timestamp, offset) in entries {
        out.extend_from_slice(&timestamp.to_le_bytes());
        out.extend_from_slice(&rel(offset, base).to_le_bytes());
    }
    seal(out)
}

/// The entries of a file, after the checks every index shares: length, magic, base,
/// checksum.
fn entries<'a>(bytes: &'a [u8], magic: &[u8; 8], base: u64, entry_len: usize) -> Option<&'a [u8]> {
    if bytes.len() < HEADER_LEN + TRAILER_LEN || &bytes[..8] != magic {
        return None;
    }
    let (body, trailer) = bytes.split_at(bytes.len() - TRAILER_LEN);
    if xxh3_64(body).to_le_bytes() != trailer {
        return None;
    }
    let file_base = u64::from_le_bytes(body[8..16].try_into().ok()?);
    let count = u32::from_le_bytes(body[16..20].try_into().ok()?) as usize;
    if body[20..HEADER_LEN] != [0u8; 4] {
        return None;
    }
    let entries = &body[HEADER_LEN..];
    (file_base == base && entries.len() == count.checked_mul(entry_len)?).then_some(entries)
}

fn u32_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from(u32::from_le_bytes(
        b.get(at..at + 4)?.try_into().ok()?,
    )))
}

/// Decodes and checks an offset index of a segment of `segment_len` bytes: offsets
/// and positions strictly ascending, positions inside the segment, the first entry at
/// position 0. `None` when anything is off.
pub fn decode_offsets(bytes: &[u8], base: u64, segment_len: u64) -> Option<Vec<(u64, u64)>> {
    let raw = entries(bytes, OFFSET_MAGIC, base, OFFSET_ENTRY_LEN)?;
    let mut out: Vec<(u64, u64)> = Vec::with_capacity(raw.len() / OFFSET_ENTRY_LEN);
    for e in raw.chunks_exact(OFFSET_ENTRY_LEN) {
        let offset = base.checked_add(u32_at(e, 0)?)?;
        let position = u32_at(e, 4)?;
        let ascending = out.last().is_none_or(|&(o, p)| offset > o && position > p);
        if !ascending || position >= segment_len {
            return None;
        }
        out.push((offset, position));
    }
    (out.first().is_none_or(|&(o, p)| o == base && p == 0)).then_some(out)
}

/// Decodes and checks a time index: timestamps non-decreasing, offsets strictly
/// ascending and each one an entry of `offsets` (the two are written together).
pub fn decode_times(bytes: &[u8], base: u64, offsets: &[(u64, u64)]) -> Option<Vec<(i64, u64)>> {
    let raw = entries(bytes, TIME_MAGIC, base, TIME_ENTRY_LEN)?;
    let mut out: Vec<(i64, u64)> = Vec::with_capacity(raw.len() / TIME_ENTRY_LEN);
    for e in raw.chunks_exact(TIME_ENTRY_LEN) {
        let timestamp = i64::from_le_bytes(e[..8].try_into().ok()?);
        let offset = base.checked_add(u32_at(e, 8)?)?;
        let ascending = out
            .last()
            .is_none_or(|&(t, o)| timestamp >= t && offset > o);
        let indexed = offsets.binary_search_by_key(&offset, |&(o, _)| o).is_ok();
        if !ascending || !indexed {
            return None;
        }
        out.push((timestamp, offset));
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        assert_eq!(index_name(7), "00000000000000000007.index");
        assert_eq!(time_index_name(7), "00000000000000000007.timeindex");
        assert_eq!(parse_index_name(&index_name(7)), Some(7));
        assert_eq!(parse_index_name(&time_index_name(u64::MAX)), Some(u64::MAX));
        assert_eq!(parse_index_name("00000000000000000007.log"), None);
    }

    #[test]
    fn indexes_round_trip() {
        let offsets = vec![(100, 0), (140, 4096), (190, 9000)];
        let times = vec![(5, 100), (9, 140), (9, 190)];
        let o = encode_offsets(100, &offsets);
        let t = encode_times(100, &times);
        assert_eq!(decode_offsets(&o, 100, 10_000), Some(offsets.clone()));
        assert_eq!(decode_times(&t, 100, &offsets), Some(times));
        assert_eq!(decode_offsets(&encode_offsets(3, &[]), 3, 0), Some(vec![]));
    }

    /// A file with its checksum recomputed (anyone can: it detects damage, not intent).
    fn reseal(mut file: Vec<u8>) -> Vec<u8> {
        let body = file.len() - TRAILER_LEN;
        let sum = xxh3_64(&file[..body]);
        file[body..].copy_from_slice(&sum.to_le_bytes());
        file
    }

    #[test]
    fn any_damage_is_refused() {
        let offsets = vec![(100, 0), (140, 4096), (190, 9000)];
        let good = encode_offsets(100, &offsets);
        for i in 0..good.len() {
            for bit in 0..8 {
                let mut bad = good.clone();
                bad[i] ^= 1 << bit;
                assert_eq!(
                    decode_offsets(&bad, 100, 10_000),
                    None,
                    "byte {i} bit {bit}"
                );
            }
        }
        for len in 0..good.len() {
            assert_eq!(
                decode_offsets(&good[..len], 100, 10_000),
                None,
                "cut at {len}"
            );
        }
        // Valid checksum, wrong segment: a different base, or positions past its end.
        assert_eq!(decode_offsets(&good, 101, 10_000), None);
        assert_eq!(decode_offsets(&good, 100, 9000), None);
        // Valid checksum, entries out of order.
        let unordered = encode_offsets(100, &[(100, 0), (190, 4096), (140, 9000)]);
        assert_eq!(decode_offsets(&unordered, 100, 10_000), None);
        let not_at_start = encode_offsets(100, &[(140, 4096)]);
        assert_eq!(decode_offsets(&not_at_start, 100, 10_000), None);
        let times = encode_times(100, &[(9, 100), (5, 140)]);
        assert_eq!(decode_times(&times, 100, &offsets), None);
        // Reserved bytes must be zero, and a base near u64::MAX must not overflow.
        let mut reserved = encode_offsets(5, &[]);
        reserved[20] = 1;
        assert_eq!(decode_offsets(&reseal(reserved), 5, 0), None);
        let mut high = encode_offsets(0, &[(1, 0)]);
        high[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
        assert_eq!(decode_offsets(&reseal(high), u64::MAX, 64), None);
        let mut high = encode_times(0, &[(0, 1)]);
        high[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
        assert_eq!(decode_times(&reseal(high), u64::MAX, &[]), None);
        let unindexed = encode_times(100, &[(9, 101)]);
        assert_eq!(decode_times(&unindexed, 100, &offsets), None);
    }
}
