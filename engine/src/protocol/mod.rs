//! The native wire protocol: length-prefixed binary frames with correlation ids,
//! specified byte by byte in `docs/protocol.md`.
//!
//! Owns: the frame header, the op codes, the error codes, and the encoding of every
//! frame body (`wire` has the field primitives; `session` and `pubsub` the bodies).
//!
//! Never: touches a socket, a shard or a model. Decoding is pure: it checks every
//! length against the bytes actually present (and the frame against `max_frame`)
//! before it allocates, and hands payloads out as `Bytes` slices of the frame (no
//! copy). Encoding appends to a caller's `BytesMut`.

mod error;
mod frame;
pub mod nats;
mod op;
pub mod pubsub;
pub mod queue;
pub mod session;
pub mod stream;
mod wire;

pub use error::{ErrorCode, ProtocolError};
pub use frame::{
    encode_frame, split_frame, FrameHeader, FLAG_NO_REPLY, FLAG_REPLY, FRAME_BYTES_MIN,
    FRAME_MAX_DEFAULT, FRAME_MAX_LIMIT, HEADER_BYTES,
};
pub use op::Op;
pub use wire::{Reader, Writer, HEADERS_MAX};

/// The protocol version this build speaks (the only one so far).
pub const VERSION: u16 = 1;
