//! Field primitives of frame bodies: little-endian integers, strings and byte strings
//! as a `u32` length then the bytes, headers as a `u16` count then name/value pairs.
//!
//! Owns: reading fields out of a frame body without copying (strings and byte strings
//! come out as `Bytes` slices of the body) and writing them. Never: trusts a length
//! before checking it against the bytes left, or allocates for a count before checking
//! it against its bound.

use bytes::{BufMut, Bytes, BytesMut};

use super::error::ProtocolError;
use crate::pubsub::Headers;

/// The most headers one message carries on the wire (its count is a `u16`). The
/// models refuse more (streams and queues at publish); a subject message with more is
/// not delivered to remote subscribers (dropped and counted).
pub const HEADERS_MAX: usize = u16::MAX as usize;

/// Reads the fields of one frame body, in order.
#[derive(Debug)]
pub struct Reader {
    body: Bytes,
    pos: usize,
    op: &'static str,
}

impl Reader {
    /// A reader of `body`, the body of an `op` frame (named in errors).
    pub fn new(body: Bytes, op: &'static str) -> Self {
        Self { body, pos: 0, op }
    }

    /// An error naming this frame's op.
    pub fn malformed(&self, what: &'static str) -> ProtocolError {
        ProtocolError::Malformed { op: self.op, what }
    }

    /// Bytes not yet read.
    pub fn remaining(&self) -> usize {
        self.body.len() - self.pos
    }

    fn take(&mut self, n: usize) -> Result<Bytes, ProtocolError> {
        if self.remaining() < n {
            return Err(self.malformed("body ends inside a field"));
        }
        let out = self.body.slice(self.pos..self.pos + n);
        self.pos += n;
        Ok(out)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], ProtocolError> {
        if self.remaining() < N {
            return Err(self.malformed("body ends inside a field"));
        }
        let mut out = [0u8; N];
        out.copy_from_slice(&self.body[self.pos..self.pos + N]);
        self.pos += N;
        Ok(out)
    }

    /// One byte.
    pub fn u8(&mut self) -> Result<u8, ProtocolError> {
        Ok(self.array::<1>()?[0])
    }
    /// A `u16`.
    pub fn u16(&mut self) -> Result<u16, ProtocolError> {
        Ok(u16::from_le_bytes(self.array()?))
    }
    /// A `u32`.
    pub fn u32(&mut self) -> Result<u32, ProtocolError> {
        Ok(u32::from_le_bytes(self.array()?))
    }
    /// A `u64`.
    pub fn u64(&mut self) -> Result<u64, ProtocolError> {
        Ok(u64::from_le_bytes(self.array()?))
    }
    /// A boolean byte: 0 or 1.
    pub fn bool(&mut self) -> Result<bool, ProtocolError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(self.malformed("boolean byte is neither 0 nor 1")),
        }
    }
    /// A count (`u32`) of items each at least `item_bytes_min` long, checked against
    /// the bytes left and `max` before anything is allocated for them.
    pub fn count(&mut self, item_bytes_min: usize, max: usize) -> Result<usize, ProtocolError> {
        let n = self.u32()? as usize;
        if n > max {
            return Err(self.malformed("count over its bound"));
        }
        if n.saturating_mul(item_bytes_min.max(1)) > self.remaining() {
            return Err(self.malformed("count larger than the body holds"));
        }
        Ok(n)
    }
    /// A byte string (`u32` length), as a slice of the body.
    pub fn bytes(&mut self) -> Result<Bytes, ProtocolError> {
        let len = self.u32()? as usize;
        self.take(len)
    }
    /// A UTF-8 string (`u32` length), as a slice of the body.
    pub fn str_bytes(&mut self) -> Result<Bytes, ProtocolError> {
        let raw = self.bytes()?;
        if std::str::from_utf8(&raw).is_err() {
            return Err(self.malformed("string is not UTF-8"));
        }
        Ok(raw)
    }
    /// A UTF-8 string, copied out.
    pub fn string(&mut self) -> Result<String, ProtocolError> {
        let raw = self.str_bytes()?;
        // `str_bytes` checked the bytes are UTF-8.
        Ok(String::from_utf8_lossy(&raw).into_owned())
    }
    /// A string where empty means absent.
    pub fn opt_string(&mut self) -> Result<Option<String>, ProtocolError> {
        let s = self.string()?;
        Ok((!s.is_empty()).then_some(s))
    }
    /// Headers: `u16` count (at most `HEADERS_MAX`), then each name and value as byte
    /// strings. A count of 0 reads as no headers.
    pub fn headers(&mut self) -> Result<Option<Headers>, ProtocolError> {
        let n = usize::from(self.u16()?);
        if n == 0 {
            return Ok(None);
        }
        if n * 8 > self.remaining() {
            return Err(self.malformed("header count over its bound"));
        }
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            out.push((self.bytes()?, self.bytes()?));
        }
        Ok(Some(out.into()))
    }
    /// Checks the whole body was read.
    pub fn end(&self) -> Result<(), ProtocolError> {
        if self.remaining() == 0 {
            Ok(())
        } else {
            Err(self.malformed("trailing bytes after the last field"))
        }
    }
}

/// Writes the fields of a frame body.
pub struct Writer;

impl Writer {
    /// A byte string: `u32` length, then the bytes.
    pub fn bytes(out: &mut BytesMut, b: &[u8]) {
        // Bodies are bounded by the frame size (a u32) long before this.
        out.put_u32_le(u32::try_from(b.len()).unwrap_or(u32::MAX));
        out.extend_from_slice(b);
    }
    /// A string: `u32` length, then its UTF-8 bytes.
    pub fn str(out: &mut BytesMut, s: &str) {
        Self::bytes(out, s.as_bytes());
    }
    /// A string where `None` is written as empty.
    pub fn opt_str(out: &mut BytesMut, s: Option<&str>) {
        Self::str(out, s.unwrap_or(""));
    }
    /// A boolean byte.
    pub fn bool(out: &mut BytesMut, v: bool) {
        out.put_u8(u8::from(v));
    }
    /// Headers (`None` and empty are both a count of 0). At most `HEADERS_MAX` are
    /// written; callers check the bound first (the models refuse more at publish).
    pub fn headers(out: &mut BytesMut, headers: Option<&[(Bytes, Bytes)]>) {
        let headers = headers.unwrap_or(&[]);
        let n = headers.len().min(HEADERS_MAX);
        // `n` is at most HEADERS_MAX, which fits a u16.
        out.put_u16_le(n as u16);
        for (name, value) in &headers[..n] {
            Self::bytes(out, name);
            Self::bytes(out, value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_roundtrip_as_slices_of_the_body() {
        let mut out = BytesMut::new();
        out.put_u8(7);
        out.put_u16_le(300);
        out.put_u64_le(u64::MAX);
        Writer::str(&mut out, "orders.eu");
        Writer::bytes(&mut out, b"\x00\xff");
        Writer::headers(&mut out, Some(&[(Bytes::from("k"), Bytes::from("v"))]));
        Writer::opt_str(&mut out, None);
        let body = out.freeze();
        let mut r = Reader::new(body.clone(), "test");
        assert_eq!(r.u8(), Ok(7));
        assert_eq!(r.u16(), Ok(300));
        assert_eq!(r.u64(), Ok(u64::MAX));
        let s = r.str_bytes().expect("str");
        assert_eq!(&s[..], b"orders.eu");
        assert_eq!(s.as_ptr(), body[15..].as_ptr(), "a slice, not a copy");
        assert_eq!(&r.bytes().expect("bytes")[..], b"\x00\xff");
        let headers = r.headers().expect("headers").expect("some");
        assert_eq!(&headers[0].0[..], b"k");
        assert_eq!(r.opt_string(), Ok(None));
        assert_eq!(r.end(), Ok(()));
    }

    #[test]
    fn lengths_past_the_body_are_refused_without_allocating() {
        let mut out = BytesMut::new();
        out.put_u32_le(u32::MAX);
        let mut r = Reader::new(out.freeze(), "test");
        assert!(r.bytes().is_err());
        let mut out = BytesMut::new();
        out.put_u32_le(1_000_000);
        let mut r = Reader::new(out.freeze(), "test");
        assert!(r.count(1, usize::MAX).is_err(), "count beyond the body");
        let mut out = BytesMut::new();
        out.put_u16_le(u16::MAX);
        let mut r = Reader::new(out.freeze(), "test");
        assert!(r.headers().is_err());
    }

    #[test]
    fn bad_utf8_and_bad_booleans_are_malformed() {
        let mut out = BytesMut::new();
        Writer::bytes(&mut out, b"\xff\xfe");
        out.put_u8(2);
        let mut r = Reader::new(out.freeze(), "test");
        assert!(r.str_bytes().is_err());
        assert!(r.bool().is_err());
    }
}
