//! Protocol errors: why bytes could not be decoded (`ProtocolError`, local) and the
//! codes an `ERROR` frame carries (`ErrorCode`, on the wire).
//!
//! Owns: the fixed numbers of the error codes. Never: renumbers one; a retired code
//! stays reserved.

/// Why a frame could not be decoded. Every variant closes the connection that sent it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    /// The length prefix exceeds the negotiated maximum frame size.
    #[error("frame of {len} bytes exceeds the maximum of {max}")]
    FrameTooLarge {
        /// The announced frame length (header included).
        len: u64,
        /// The limit.
        max: u32,
    },
    /// The length prefix is smaller than a frame header.
    #[error("frame length {len} is shorter than the {min}-byte header")]
    FrameTooShort {
        /// The announced length.
        len: u32,
        /// The smallest valid frame.
        min: u32,
    },
    /// No such op code.
    #[error("unknown op {0:#06x}")]
    UnknownOp(u16),
    /// A body ended before a field, or a field is invalid.
    #[error("malformed {op} frame: {what}")]
    Malformed {
        /// The frame's op name.
        op: &'static str,
        /// What was wrong.
        what: &'static str,
    },
}

impl ProtocolError {
    /// The code an `ERROR` frame reporting this carries.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::FrameTooLarge { .. } => ErrorCode::FrameTooLarge,
            Self::FrameTooShort { .. } | Self::Malformed { .. } => ErrorCode::Malformed,
            Self::UnknownOp(_) => ErrorCode::UnknownOp,
        }
    }
}

macro_rules! error_codes {
    ($($(#[$doc:meta])* $name:ident = $value:literal,)*) => {
        /// The code of an `ERROR` frame. Numbers are fixed forever.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[repr(u16)]
        pub enum ErrorCode {
            $($(#[$doc])* $name = $value,)*
        }

        impl ErrorCode {
            /// Every code, in numeric order.
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$name,)*];

            /// The code numbered `value`; unknown numbers read as `Internal` (a newer
            /// server's code an older client does not know is still an error).
            pub fn from_u16(value: u16) -> Self {
                match value {
                    $($value => Self::$name,)*
                    _ => Self::Internal,
                }
            }

            /// The code's name as the spec writes it.
            pub fn name(self) -> &'static str {
                match self {
                    $(Self::$name => stringify!($name),)*
                }
            }
        }
    };
}

error_codes! {
    /// A frame could not be decoded (truncated body, bad UTF-8, bad field). Fatal.
    Malformed = 1,
    /// A frame's length exceeds the maximum frame size. Fatal.
    FrameTooLarge = 2,
    /// No such op. Fatal.
    UnknownOp = 3,
    /// An op not valid in the connection's state (anything before `HELLO`, a second
    /// `HELLO`, a frame a client may not send). Fatal.
    OutOfState = 4,
    /// No protocol version both sides speak. Fatal.
    VersionUnsupported = 5,
    /// The auth token is missing or wrong. Fatal.
    AuthFailed = 6,
    /// The stream, consumer, exchange, queue or subscription does not exist.
    NotFound = 7,
    /// It exists with a different definition.
    AlreadyExists = 8,
    /// An argument or definition is invalid (the message says which and why).
    Invalid = 9,
    /// A request matched no subscription.
    NoResponders = 10,
    /// Nothing answered in time.
    Timeout = 11,
    /// The engine is saturated; retry later.
    Backpressure = 12,
    /// The server is stopping. Sent with correlation id 0 before it closes.
    ShuttingDown = 13,
    /// The engine refused the operation (a full queue that rejects publishes, a
    /// record over the stream's size limit, a delete of something in use).
    Refused = 14,
    /// An exclusive queue belongs to another connection.
    Locked = 15,
    /// A mandatory publish reached no queue.
    Unroutable = 16,
    /// A send made no progress for the write timeout while the connection's output was
    /// over its bound: the client does not read. Fatal (the server closes the
    /// connection; this ERROR, queued behind the stuck send, may never arrive).
    SlowConsumer = 17,
    /// The connection was idle past the idle timeout. Fatal.
    IdleTimeout = 18,
    /// A bug or an I/O failure on the server.
    Internal = 19,
    /// A subscription or consumer id the connection already uses.
    IdInUse = 20,
    /// The connection to the server dropped (or could not be made). Reported by
    /// clients; a server never sends it.
    Disconnected = 21,
}

impl ErrorCode {
    /// Whether the server closes the connection after sending this code.
    pub fn is_fatal(self) -> bool {
        matches!(
            self,
            Self::Malformed
                | Self::FrameTooLarge
                | Self::UnknownOp
                | Self::OutOfState
                | Self::VersionUnsupported
                | Self::AuthFailed
                | Self::SlowConsumer
                | Self::IdleTimeout
        )
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}
