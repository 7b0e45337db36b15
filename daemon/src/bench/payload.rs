//! The 16 bytes at the head of every message the load generator sends: which lane
//! (producer, or key) it belongs to, its sequence number in that lane, and when it was
//! sent.
//!
//! Owns: that layout (little endian: `u64` lane << 48 | sequence, `u64` send time in
//! nanoseconds since the run's origin) and the filler after it. Never: allocates per
//! message (a batch's payloads share one buffer).

use bytes::{BufMut, Bytes, BytesMut};

/// Bytes of the stamp at the head of every payload.
pub const HEADER_BYTES: usize = 16;
/// Bits of the sequence number; the lane takes the 16 bits above.
const SEQ_BITS: u32 = 48;
/// Lanes a run may use.
pub const LANES_MAX: usize = 1 << 16;
/// The filler byte after the stamp.
const FILLER: u8 = 0xA5;

/// What a payload says about itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    /// The producer (or key) that sent it.
    pub lane: u16,
    /// Its position in the lane, from 0.
    pub seq: u64,
    /// Send time, nanoseconds since the run's origin.
    pub sent_ns: u64,
}

/// Why a payload is not one the load generator sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PayloadError {
    /// Shorter than the stamp or not the run's size.
    #[error("payload of {len} bytes, expected {expected}")]
    Size {
        /// Its length.
        len: usize,
        /// The run's message size.
        expected: usize,
    },
    /// The filler after the stamp was changed.
    #[error("payload of lane {lane} seq {seq} is corrupt after its stamp")]
    Corrupt {
        /// Its lane.
        lane: u16,
        /// Its sequence number.
        seq: u64,
    },
}

/// Builds payloads of one size, `count` at a time, in one buffer.
pub struct PayloadWriter {
    size: usize,
    buffer: BytesMut,
}

impl PayloadWriter {
    /// Payloads of `size` bytes (at least `HEADER_BYTES`).
    pub fn new(size: usize) -> Self {
        assert!(size >= HEADER_BYTES);
        Self {
            size,
            buffer: BytesMut::new(),
        }
    }

    /// One payload for `stamp`.
    pub fn payload(&mut self, stamp: Stamp) -> Bytes {
        debug_assert!(stamp.seq < 1 << SEQ_BITS);
        if self.buffer.capacity() < self.size {
            // Room for many payloads, so a batch shares one allocation.
            self.buffer.reserve(self.size * 256);
        }
        self.buffer
            .put_u64_le((u64::from(stamp.lane) << SEQ_BITS) | stamp.seq);
        self.buffer.put_u64_le(stamp.sent_ns);
        self.buffer.put_bytes(FILLER, self.size - HEADER_BYTES);
        self.buffer.split().freeze()
    }
}

/// Reads the stamp of a payload of `size` bytes, checking the filler's first and last
/// byte (a full check per message would measure memcmp, not the broker).
pub fn read(payload: &[u8], size: usize) -> Result<Stamp, PayloadError> {
    let size_error = PayloadError::Size {
        len: payload.len(),
        expected: size,
    };
    if payload.len() != size {
        return Err(size_error);
    }
    let word = |at: usize| {
        payload
            .get(at..at + 8)
            .and_then(|b| <[u8; 8]>::try_from(b).ok())
            .map(u64::from_le_bytes)
    };
    let (Some(tagged), Some(sent_ns)) = (word(0), word(8)) else {
        return Err(size_error);
    };
    let stamp = Stamp {
        lane: (tagged >> SEQ_BITS) as u16,
        seq: tagged & ((1 << SEQ_BITS) - 1),
        sent_ns,
    };
    let filler = &payload[HEADER_BYTES..];
    let intact =
        filler.first().is_none_or(|b| *b == FILLER) && filler.last().is_none_or(|b| *b == FILLER);
    match intact {
        true => Ok(stamp),
        false => Err(PayloadError::Corrupt {
            lane: stamp.lane,
            seq: stamp.seq,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamp_round_trips_at_the_smallest_and_a_larger_size() {
        for size in [HEADER_BYTES, 256] {
            let mut writer = PayloadWriter::new(size);
            let stamp = Stamp {
                lane: 65_535,
                seq: (1 << SEQ_BITS) - 1,
                sent_ns: 123_456_789,
            };
            let payload = writer.payload(stamp);
            assert_eq!(payload.len(), size);
            assert_eq!(read(&payload, size), Ok(stamp));
        }
    }

    #[test]
    fn wrong_size_and_corrupt_filler_are_refused() {
        let mut writer = PayloadWriter::new(64);
        let stamp = Stamp {
            lane: 1,
            seq: 2,
            sent_ns: 3,
        };
        let payload = writer.payload(stamp);
        assert!(matches!(read(&payload, 65), Err(PayloadError::Size { .. })));
        let mut bad = payload.to_vec();
        bad[63] = 0;
        assert!(matches!(read(&bad, 64), Err(PayloadError::Corrupt { .. })));
    }
}
