//! Op codes: the `op` field of the frame header. Numbers are fixed forever; a retired
//! op stays reserved.

macro_rules! ops {
    ($($(#[$doc:meta])* $name:ident = $value:literal,)*) => {
        /// What a frame is. A reply carries its request's op with `FLAG_REPLY` set.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[repr(u16)]
        pub enum Op {
            $($(#[$doc])* $name = $value,)*
        }

        impl Op {
            /// Every op, in numeric order.
            pub const ALL: &'static [Op] = &[$(Op::$name,)*];

            /// The op numbered `value`.
            pub fn from_u16(value: u16) -> Option<Self> {
                match value {
                    $($value => Some(Self::$name),)*
                    _ => None,
                }
            }

            /// The op's name as the spec writes it.
            pub fn name(self) -> &'static str {
                match self {
                    $(Self::$name => stringify!($name),)*
                }
            }
        }
    };
}

ops! {
    /// Client → server, first frame: versions spoken, auth token, client name.
    Hello = 0x0001,
    /// Either way: are you there? Answered with `Pong`, same correlation id.
    Ping = 0x0002,
    /// The answer to `Ping`.
    Pong = 0x0003,
    /// Server → client: a request failed (its correlation id), or the connection is
    /// being closed (correlation id 0).
    Error = 0x0004,
    /// Client → server: publish a batch of messages on subjects.
    Publish = 0x0010,
    /// Client → server: subscribe to a subject pattern.
    Subscribe = 0x0011,
    /// Client → server: end a subscription.
    Unsubscribe = 0x0012,
    /// Client → server: publish with a fresh inbox and answer with the first reply.
    Request = 0x0013,
    /// Server → client: a message for a subscription (correlation id 0).
    Message = 0x0014,
}
