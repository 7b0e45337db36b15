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
    /// Create a stream (idempotent for the same definition).
    StreamCreate = 0x0020,
    /// Change a stream's limits.
    StreamUpdate = 0x0021,
    /// Delete a stream and its records.
    StreamDelete = 0x0022,
    /// A stream's definition and partitions.
    StreamInfo = 0x0023,
    /// The names of every stream.
    StreamList = 0x0024,
    /// Publish a batch of records; the reply says where each was stored.
    StreamPublish = 0x0025,
    /// Create a durable consumer.
    ConsumerCreate = 0x0026,
    /// Delete a durable consumer.
    ConsumerDelete = 0x0027,
    /// A durable consumer's definition and positions.
    ConsumerInfo = 0x0028,
    /// The names of a stream's durable consumers.
    ConsumerList = 0x0029,
    /// Join a durable consumer (its group) as a member; records are pushed.
    ConsumerJoin = 0x002A,
    /// Start an ephemeral consumer from a definition (`durable` must be unset; durable
    /// consumers are created with `CONSUMER_CREATE` and joined with `CONSUMER_JOIN`).
    ConsumerSubscribe = 0x002B,
    /// Leave: the member's unacknowledged records go to the group's other members.
    ConsumerLeave = 0x002C,
    /// Server → client: a record for a consumer (correlation id 0).
    StreamMessage = 0x002D,
    /// Acknowledge records.
    StreamAck = 0x002E,
    /// Ask for a record to be delivered again after a delay.
    StreamNak = 0x002F,
    /// Server → client: a stream or queue consumer ended on the server's side (deleted,
    /// its stream or queue deleted, evicted, cancelled); nothing more comes for it
    /// (correlation id 0).
    ConsumerClosed = 0x0030,
    /// Declare an exchange (idempotent for the same definition).
    ExchangeDeclare = 0x0040,
    /// Delete an exchange (optionally only if unused).
    ExchangeDelete = 0x0041,
    /// Declare a queue; the reply describes it (with its generated name, if any).
    QueueDeclare = 0x0042,
    /// Delete a queue (optionally only if unused / empty); the reply counts messages.
    QueueDelete = 0x0043,
    /// Remove a queue's ready messages; the reply counts them.
    QueuePurge = 0x0044,
    /// A queue's counters.
    QueueInfo = 0x0045,
    /// Bind a queue to an exchange.
    QueueBind = 0x0046,
    /// Remove a queue's binding.
    QueueUnbind = 0x0047,
    /// Bind an exchange to an exchange.
    ExchangeBind = 0x0048,
    /// Publish a batch to exchanges; the reply confirms each message.
    QueuePublish = 0x0049,
    /// Start consuming a queue; deliveries are pushed within the prefetch.
    QueueConsume = 0x004A,
    /// Stop consuming: unacknowledged deliveries go back to the queue.
    QueueCancel = 0x004B,
    /// Server → client: a delivery for a queue consumer (correlation id 0).
    QueueMessage = 0x004C,
    /// Acknowledge a delivery (or every one up to it).
    QueueAck = 0x004D,
    /// Reject a delivery (or every one up to it): requeue or dead-letter.
    QueueNack = 0x004E,
    /// Every declared exchange's definition.
    ExchangeList = 0x004F,
    /// Every declared queue's definition.
    QueueList = 0x0050,
    /// Remove an exchange-to-exchange binding.
    ExchangeUnbind = 0x0051,
}
