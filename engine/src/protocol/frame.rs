//! The frame header and splitting a byte stream into frames.
//!
//! ```text
//! offset  size  field
//! 0       4     length        u32 LE: bytes after this field (12 + body)
//! 4       2     op            u16 LE (`Op`)
//! 6       2     flags         u16 LE (`FLAG_*`; unknown bits are ignored)
//! 8       8     correlation   u64 LE: chosen by the requester, echoed by the reply
//! 16      ...   body          op-specific (`docs/protocol.md`)
//! ```

use bytes::{BufMut, BytesMut};

use super::error::ProtocolError;
use super::op::Op;

/// Bytes of the frame header (length prefix included).
pub const HEADER_BYTES: usize = 16;
/// The smallest valid value of the length field (a header with an empty body).
pub const FRAME_BYTES_MIN: u32 = (HEADER_BYTES - LENGTH_BYTES) as u32;
/// The default maximum frame size (header included): 16 MiB.
pub const FRAME_MAX_DEFAULT: u32 = 16 << 20;
/// The largest maximum frame size a server may be configured with: 256 MiB.
pub const FRAME_MAX_LIMIT: u32 = 256 << 20;
/// The frame is the reply to the request with the same correlation id.
pub const FLAG_REPLY: u16 = 1 << 0;
/// Request flag: answer only if it fails (fire-and-forget publishes and acks).
pub const FLAG_NO_REPLY: u16 = 1 << 1;

const LENGTH_BYTES: usize = 4;
const OP_OFFSET: usize = LENGTH_BYTES;
const FLAGS_OFFSET: usize = OP_OFFSET + 2;
const CORRELATION_OFFSET: usize = FLAGS_OFFSET + 2;
const _: () = assert!(CORRELATION_OFFSET + 8 == HEADER_BYTES);

/// A decoded frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// What the frame is.
    pub op: Op,
    /// `FLAG_*` bits.
    pub flags: u16,
    /// The requester's correlation id (0 for server pushes).
    pub correlation: u64,
    /// Bytes of body after the header.
    pub body_len: usize,
}

impl FrameHeader {
    /// Whether `flag` is set.
    pub fn has(&self, flag: u16) -> bool {
        self.flags & flag != 0
    }
}

/// Looks for one whole frame at the start of `buf`. `Ok(None)`: more bytes are needed
/// (only the header, at most, has been looked at). `Ok(Some((header, total)))`: the
/// frame is `buf[..total]`, its body `buf[HEADER_BYTES..total]`. Errors (oversized or
/// undersized length, unknown op) are detected as soon as the header is in, before the
/// body arrives or anything is allocated for it.
pub fn split_frame(
    buf: &[u8],
    max_frame: u32,
) -> Result<Option<(FrameHeader, usize)>, ProtocolError> {
    if buf.len() < LENGTH_BYTES {
        return Ok(None);
    }
    let len = u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]);
    let total = u64::from(len) + LENGTH_BYTES as u64;
    if total > u64::from(max_frame) {
        return Err(ProtocolError::FrameTooLarge {
            len: total,
            max: max_frame,
        });
    }
    if len < FRAME_BYTES_MIN {
        return Err(ProtocolError::FrameTooShort {
            len,
            min: FRAME_BYTES_MIN,
        });
    }
    if buf.len() < HEADER_BYTES {
        return Ok(None);
    }
    let raw_op = u16::from_le_bytes([buf[OP_OFFSET], buf[OP_OFFSET + 1]]);
    let op = Op::from_u16(raw_op).ok_or(ProtocolError::UnknownOp(raw_op))?;
    let flags = u16::from_le_bytes([buf[FLAGS_OFFSET], buf[FLAGS_OFFSET + 1]]);
    let mut corr = [0u8; 8];
    corr.copy_from_slice(&buf[CORRELATION_OFFSET..HEADER_BYTES]);
    // `total` is at most `max_frame` (a u32), so it fits a usize.
    let total = total as usize;
    if buf.len() < total {
        return Ok(None);
    }
    Ok(Some((
        FrameHeader {
            op,
            flags,
            correlation: u64::from_le_bytes(corr),
            body_len: total - HEADER_BYTES,
        },
        total,
    )))
}

/// Appends a frame to `out`: the header, then whatever `body` writes, then patches the
/// length. Returns the frame's total length.
pub fn encode_frame(
    out: &mut BytesMut,
    op: Op,
    flags: u16,
    correlation: u64,
    body: impl FnOnce(&mut BytesMut),
) -> usize {
    let start = out.len();
    out.put_u32_le(0);
    out.put_u16_le(op as u16);
    out.put_u16_le(flags);
    out.put_u64_le(correlation);
    body(out);
    let total = out.len() - start;
    // A body over 4 GiB cannot be sent; callers bound bodies by the max frame size
    // long before, and the receiver rejects the frame by its length anyway.
    let len = u32::try_from(total - LENGTH_BYTES).unwrap_or(u32::MAX);
    out[start..start + LENGTH_BYTES].copy_from_slice(&len.to_le_bytes());
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(op: Op, corr: u64, body: &[u8]) -> BytesMut {
        let mut out = BytesMut::new();
        encode_frame(&mut out, op, FLAG_REPLY, corr, |b| {
            b.extend_from_slice(body)
        });
        out
    }

    #[test]
    fn frame_roundtrips_and_waits_for_every_byte() {
        let bytes = frame(Op::Ping, 42, b"abc");
        for cut in 0..bytes.len() {
            assert_eq!(split_frame(&bytes[..cut], 1024), Ok(None), "cut at {cut}");
        }
        let (header, total) = split_frame(&bytes, 1024).expect("valid").expect("whole");
        assert_eq!(total, bytes.len());
        assert_eq!(header.op, Op::Ping);
        assert_eq!(header.correlation, 42);
        assert_eq!(header.body_len, 3);
        assert!(header.has(FLAG_REPLY));
        assert!(!header.has(FLAG_NO_REPLY));
    }

    #[test]
    fn oversized_length_is_refused_from_the_prefix_alone() {
        let huge = u32::MAX.to_le_bytes();
        assert!(matches!(
            split_frame(&huge, FRAME_MAX_DEFAULT),
            Err(ProtocolError::FrameTooLarge { .. })
        ));
        let just_over = (1024u32 - 3).to_le_bytes();
        assert!(split_frame(&just_over, 1024).is_err());
        let at_limit = (1024u32 - 4).to_le_bytes();
        assert_eq!(split_frame(&at_limit, 1024), Ok(None));
    }

    #[test]
    fn undersized_length_and_unknown_op_are_refused() {
        assert!(matches!(
            split_frame(&11u32.to_le_bytes(), 1024),
            Err(ProtocolError::FrameTooShort { .. })
        ));
        let mut bytes = frame(Op::Ping, 1, b"");
        bytes[4] = 0xEE;
        bytes[5] = 0xEE;
        assert_eq!(
            split_frame(&bytes, 1024),
            Err(ProtocolError::UnknownOp(0xEEEE))
        );
    }

    #[test]
    fn op_numbers_roundtrip() {
        for &op in Op::ALL {
            assert_eq!(Op::from_u16(op as u16), Some(op));
        }
    }
}
