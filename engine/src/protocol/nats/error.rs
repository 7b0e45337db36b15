//! Errors of the NATS codec, each with the `-ERR` text nats-server sends for it.

/// Why a client's input cannot be served. Each maps to the text of the `-ERR` the
/// server answers with (`text`) and to whether the connection then closes (`is_fatal`),
/// as nats-server does.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NatsError {
    /// An unknown verb, a wrong argument count, a bad size, or a payload not followed
    /// by `\r\n`.
    #[error("unknown protocol operation: {0}")]
    UnknownOperation(&'static str),
    /// A control line longer than `CONTROL_LINE_MAX`.
    #[error("control line longer than {max} bytes")]
    ControlLine {
        /// `CONTROL_LINE_MAX`.
        max: usize,
    },
    /// A payload (headers included) larger than the server's `max_payload`.
    #[error("payload of {size} bytes, more than max_payload {max}")]
    MaxPayload {
        /// The size the client announced.
        size: u64,
        /// The server's `max_payload`.
        max: u32,
    },
    /// An `HPUB` whose header size is larger than its total size, or whose header block
    /// is not `NATS/1.0 ...\r\n` lines ending with an empty line.
    #[error("malformed header block: {0}")]
    BadHeaders(&'static str),
    /// `CONNECT` whose argument is not a JSON object of the known option types.
    #[error("malformed CONNECT: {0}")]
    BadConnect(String),
    /// A subscription subject or queue group that is not valid.
    #[error("invalid subject")]
    InvalidSubject,
    /// A publish subject (or reply subject) that is not valid.
    #[error("invalid publish subject")]
    InvalidPublishSubject,
    /// Credentials missing or wrong, or a command before `CONNECT` on a server that
    /// requires them.
    #[error("authorization violation")]
    Authorization,
    /// No `CONNECT` within the handshake timeout on a server that requires one.
    #[error("authentication timeout")]
    AuthenticationTimeout,
    /// The client did not answer the server's pings, or sent nothing for the idle
    /// timeout.
    #[error("stale connection")]
    Stale,
    /// The client does not read what is sent to it.
    #[error("slow consumer")]
    SlowConsumer,
    /// The connection holds `SUBSCRIPTIONS_MAX` subscriptions already.
    #[error("maximum subscriptions exceeded")]
    TooManySubscriptions,
    /// The engine refused a publish or subscribe (backpressure, shutting down).
    #[error("{0}")]
    Engine(String),
}

impl NatsError {
    /// The text of the `-ERR` line, as nats-server words it.
    pub fn text(&self) -> &str {
        match self {
            Self::UnknownOperation(_) | Self::BadHeaders(_) | Self::BadConnect(_) => {
                "Unknown Protocol Operation"
            }
            Self::ControlLine { .. } => "Maximum Control Line Exceeded",
            Self::MaxPayload { .. } => "Maximum Payload Violation",
            Self::InvalidSubject => "Invalid Subject",
            Self::InvalidPublishSubject => "Invalid Publish Subject",
            Self::Authorization => "Authorization Violation",
            Self::AuthenticationTimeout => "Authentication Timeout",
            Self::Stale => "Stale Connection",
            Self::SlowConsumer => "Slow Consumer",
            Self::TooManySubscriptions => "Maximum Subscriptions Exceeded",
            Self::Engine(message) => message,
        }
    }

    /// Whether nats-server closes the connection after this error (it keeps serving a
    /// client after an invalid subject, a subscription limit or a refused publish).
    pub fn is_fatal(&self) -> bool {
        !matches!(
            self,
            Self::InvalidSubject
                | Self::InvalidPublishSubject
                | Self::TooManySubscriptions
                | Self::Engine(_)
        )
    }
}
