//! The field encoding of metadata values (definitions kept in a `MetaStore`): a version
//! byte, then fields in a fixed order. Integers are little-endian `u64` (or `u8`);
//! strings and byte strings a `u32` length then the bytes; options a `0`/`1` byte then
//! the value. `docs/storage.md` lists each definition's fields.
//!
//! Owns: writing and reading those fields. Never: trusts a length before checking it
//! against the bytes left (nothing is allocated for bytes that are not there).

/// Why stored value bytes could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad stored definition: {0}")]
pub struct DecodeError(&'static str);

impl DecodeError {
    /// An error saying what was wrong.
    pub fn new(what: &'static str) -> Self {
        Self(what)
    }
}

/// Little-endian fixed-width integers, strings as a u32 length then UTF-8 bytes,
/// options as a 0/1 byte then the value.
/// Writes the fields of a value.
pub struct ValueWriter(Vec<u8>);

impl ValueWriter {
    /// A value starting with its format `version` byte.
    pub fn new(version: u8) -> Self {
        Self(vec![version])
    }

    /// The bytes written.
    pub fn finish(self) -> Vec<u8> {
        self.0
    }

    /// One byte.
    pub fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    /// A little-endian `u64`.
    pub fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    /// A string: `u32` length, then its UTF-8 bytes.
    pub fn str(&mut self, s: &str) {
        let len = u32::try_from(s.len()).unwrap_or(u32::MAX);
        self.0.extend_from_slice(&len.to_le_bytes());
        self.0.extend_from_slice(&s.as_bytes()[..len as usize]);
    }
    /// An optional `u64`.
    pub fn opt_u64(&mut self, v: Option<u64>) {
        match v {
            Some(v) => {
                self.u8(1);
                self.u64(v);
            }
            None => self.u8(0),
        }
    }
    /// An optional string.
    pub fn opt_str(&mut self, v: Option<&str>) {
        match v {
            Some(v) => {
                self.u8(1);
                self.str(v);
            }
            None => self.u8(0),
        }
    }
}

/// Reads the fields of a value, in the order written.
pub struct ValueReader<'a> {
    rest: &'a [u8],
}

impl<'a> ValueReader<'a> {
    /// A reader of `bytes`, which must start with the `version` byte.
    pub fn new(bytes: &'a [u8], version: u8) -> Result<Self, DecodeError> {
        let mut d = Self { rest: bytes };
        match d.u8()? {
            v if v == version => Ok(d),
            _ => Err(DecodeError("unknown version")),
        }
    }
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.rest.len() < n {
            return Err(DecodeError("truncated"));
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }
    /// One byte.
    pub fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }
    /// A little-endian `u64`.
    pub fn u64(&mut self) -> Result<u64, DecodeError> {
        let mut raw = [0u8; 8];
        raw.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(raw))
    }
    /// A `u64` that must fit a `usize`.
    pub fn usize(&mut self) -> Result<usize, DecodeError> {
        usize::try_from(self.u64()?).map_err(|_| DecodeError("size out of range"))
    }
    /// A count, checked against `max` before anything is allocated for it.
    pub fn len(&mut self, max: usize) -> Result<usize, DecodeError> {
        match self.usize()? {
            n if n <= max => Ok(n),
            _ => Err(DecodeError("count over its bound")),
        }
    }
    /// A string (UTF-8 checked).
    pub fn string(&mut self) -> Result<String, DecodeError> {
        let mut raw = [0u8; 4];
        raw.copy_from_slice(self.take(4)?);
        let len = u32::from_le_bytes(raw) as usize;
        // `take` checks the length against the bytes left before anything is copied.
        let bytes = self.take(len)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| DecodeError("string not UTF-8"))
    }
    /// An option's `0`/`1` byte.
    pub fn flag(&mut self) -> Result<bool, DecodeError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(DecodeError("bad option flag")),
        }
    }
    /// An optional `u64`.
    pub fn opt_u64(&mut self) -> Result<Option<u64>, DecodeError> {
        Ok(if self.flag()? {
            Some(self.u64()?)
        } else {
            None
        })
    }
    /// An optional string.
    pub fn opt_string(&mut self) -> Result<Option<String>, DecodeError> {
        Ok(if self.flag()? {
            Some(self.string()?)
        } else {
            None
        })
    }
    /// Checks every byte was read.
    pub fn end(&self) -> Result<(), DecodeError> {
        match self.rest.is_empty() {
            true => Ok(()),
            false => Err(DecodeError("trailing bytes")),
        }
    }
}

impl ValueWriter {
    /// A byte string: `u32` length, then the bytes.
    pub fn bytes(&mut self, b: &[u8]) {
        let len = u32::try_from(b.len()).unwrap_or(u32::MAX);
        self.0.extend_from_slice(&len.to_le_bytes());
        self.0.extend_from_slice(&b[..len as usize]);
    }
}

impl ValueReader<'_> {
    /// A byte string written by `ValueWriter::bytes`.
    pub fn byte_string(&mut self) -> Result<Vec<u8>, DecodeError> {
        let mut raw = [0u8; 4];
        raw.copy_from_slice(self.take(4)?);
        let len = u32::from_le_bytes(raw) as usize;
        Ok(self.take(len)?.to_vec())
    }
}
