//! The NATS client protocol (text, line-based: `INFO`, `CONNECT`, `PUB`, `HPUB`, `SUB`,
//! `UNSUB`, `MSG`, `HMSG`, `PING`, `PONG`, `+OK`, `-ERR`), as `nats-server` speaks it to
//! its clients; what ringbroker supports of it is in `docs/nats.md`.
//!
//! Owns: cutting client commands out of a connection's input (`parse`), the options a
//! client sends in `CONNECT` and the server's `INFO` (`connect`), the header block
//! (`headers`), and the encoding of everything the server sends (`encode`).
//!
//! Never: touches a socket, a shard or a model, or copies a payload. Parsing is pure and
//! bounded: a control line is at most `CONTROL_LINE_MAX` bytes, a payload at most the
//! `max_payload` the caller passes, both checked before anything is taken; subjects,
//! sids and payloads are `Bytes` slices of the input.

mod connect;
mod encode;
mod error;
mod headers;
mod parse;

pub use connect::{ConnectOptions, ServerInfo};
pub use encode::{
    encode_err, encode_hmsg, encode_info, encode_msg, encode_no_responders, encode_ok, encode_ping,
    encode_pong,
};
pub use error::NatsError;
pub use headers::{decode_headers, encode_headers, encoded_headers_len, HEADER_LINE};
pub use parse::{parse_command, Command};

/// The longest control line (a command without its payload) accepted, `\r\n` included:
/// nats-server's default `max_control_line`.
pub const CONTROL_LINE_MAX: usize = 4096;
/// The default largest payload (headers included): nats-server's default
/// `max_payload`, announced in `INFO`.
pub const MAX_PAYLOAD_DEFAULT: u32 = 1 << 20;
/// The largest `max_payload` a server may be configured with (nats-server's limit).
pub const MAX_PAYLOAD_LIMIT: u32 = 64 << 20;
/// The most arguments a control line is split into (`HPUB` has the most: four).
pub const ARGS_MAX: usize = 5;
