//! The NATS header block: `NATS/1.0[ status]\r\n` then `Name: value\r\n` lines, then an
//! empty line. The engine keeps headers as name/value pairs (`pubsub::Headers`), so a
//! block is split into pairs on `HPUB` and written again for `HMSG`; pairs share the
//! input's memory.
//!
//! Owns: that grammar. Never: keeps a status line a client sent (only the server sends
//! statuses; see `encode_no_responders`).

use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};

use super::NatsError;
use crate::protocol::HEADERS_MAX;
use crate::pubsub::Headers;

/// The version line every header block starts with.
pub const HEADER_LINE: &[u8] = b"NATS/1.0";

/// Splits a header block into name/value pairs (values trimmed of surrounding spaces
/// and tabs, as clients read them).
pub fn decode_headers(block: &Bytes) -> Result<Headers, NatsError> {
    if !block.starts_with(HEADER_LINE) {
        return Err(NatsError::BadHeaders("does not start with NATS/1.0"));
    }
    if !block.ends_with(b"\r\n\r\n") {
        return Err(NatsError::BadHeaders("does not end with an empty line"));
    }
    let first_end = find_crlf(block, 0).ok_or(NatsError::BadHeaders("no version line"))?;
    let mut pairs = Vec::new();
    let mut at = first_end + 2;
    while at < block.len() - 2 {
        let end = find_crlf(block, at).ok_or(NatsError::BadHeaders("unterminated line"))?;
        let line = &block[at..end];
        let colon = line
            .iter()
            .position(|&b| b == b':')
            .ok_or(NatsError::BadHeaders("a header line without ':'"))?;
        if colon == 0 || line[..colon].iter().any(|b| b.is_ascii_whitespace()) {
            return Err(NatsError::BadHeaders("bad header name"));
        }
        if pairs.len() == HEADERS_MAX {
            return Err(NatsError::BadHeaders("too many headers"));
        }
        let value = trim(line, colon + 1);
        pairs.push((
            block.slice(at..at + colon),
            block.slice(at + value.0..at + value.1),
        ));
        at = end + 2;
    }
    Ok(Arc::from(pairs))
}

fn find_crlf(block: &[u8], from: usize) -> Option<usize> {
    block[from..]
        .windows(2)
        .position(|w| w == b"\r\n")
        .map(|at| from + at)
}

/// The span of `line[from..]` without leading and trailing spaces and tabs.
fn trim(line: &[u8], from: usize) -> (usize, usize) {
    let blank = |b: &u8| *b == b' ' || *b == b'\t';
    let start = from + line[from..].iter().take_while(|b| blank(b)).count();
    let end = line.len() - line[start..].iter().rev().take_while(|b| blank(b)).count();
    (start, end.max(start))
}

/// The bytes `encode_headers` writes for `pairs`.
pub fn encoded_headers_len(pairs: &[(Bytes, Bytes)]) -> usize {
    HEADER_LINE.len()
        + 2
        + pairs
            .iter()
            .map(|(name, value)| name.len() + 2 + value.len() + 2)
            .sum::<usize>()
        + 2
}

/// Writes the header block of `pairs`.
pub fn encode_headers(out: &mut BytesMut, pairs: &[(Bytes, Bytes)]) {
    out.put_slice(HEADER_LINE);
    out.put_slice(b"\r\n");
    for (name, value) in pairs {
        out.put_slice(name);
        out.put_slice(b": ");
        out.put_slice(value);
        out.put_slice(b"\r\n");
    }
    out.put_slice(b"\r\n");
}
