//! Session frames: the handshake (`HELLO` and its reply), `ERROR`, `PING`/`PONG`.
//!
//! Owns: their bodies. Never: decides policy (which versions, which token); the server
//! does.

use bytes::{BufMut, Bytes, BytesMut};

use super::error::{ErrorCode, ProtocolError};
use super::wire::{Reader, Writer};

/// The most bytes of an auth token or client name accepted in a `HELLO`.
pub const HELLO_FIELD_BYTES_MAX: usize = 4096;
/// The most bytes of an error message a server sends.
pub const ERROR_MESSAGE_BYTES_MAX: usize = 4096;

/// `HELLO` (client → server): the first frame of every connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    /// Oldest protocol version the client speaks.
    pub version_min: u16,
    /// Newest protocol version the client speaks.
    pub version_max: u16,
    /// The auth token (empty when the client has none).
    pub token: String,
    /// A name for logs.
    pub client_name: String,
}

impl Hello {
    /// Appends the body.
    pub fn encode(&self, out: &mut BytesMut) {
        out.put_u16_le(self.version_min);
        out.put_u16_le(self.version_max);
        Writer::str(out, &self.token);
        Writer::str(out, &self.client_name);
    }

    /// Reads a body.
    pub fn decode(body: Bytes) -> Result<Self, ProtocolError> {
        let mut r = Reader::new(body, "HELLO");
        let version_min = r.u16()?;
        let version_max = r.u16()?;
        let (token, client_name) = (r.str_bytes()?, r.str_bytes()?);
        r.end()?;
        // Checked before anything is copied out of the frame.
        if token.len() > HELLO_FIELD_BYTES_MAX || client_name.len() > HELLO_FIELD_BYTES_MAX {
            return Err(r.malformed("token or client name over 4096 bytes"));
        }
        let (token, client_name) = (
            String::from_utf8_lossy(&token).into_owned(),
            String::from_utf8_lossy(&client_name).into_owned(),
        );
        if version_min > version_max {
            return Err(r.malformed("version_min above version_max"));
        }
        Ok(Self {
            version_min,
            version_max,
            token,
            client_name,
        })
    }
}

/// The reply to `HELLO`: the session is open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Welcome {
    /// The version chosen (the newest both speak).
    pub version: u16,
    /// The largest frame (header included) the server accepts.
    pub max_frame: u32,
    /// The server pings an idle connection this often (ms); a client should too.
    pub heartbeat_ms: u32,
    /// The server closes a connection silent for this long (ms); 0 = never.
    pub idle_timeout_ms: u32,
    /// The connection's id (unique within the server's life), for logs.
    pub connection_id: u64,
    /// The server's name and version, for logs.
    pub server_name: String,
}

impl Welcome {
    /// Appends the body.
    pub fn encode(&self, out: &mut BytesMut) {
        out.put_u16_le(self.version);
        out.put_u32_le(self.max_frame);
        out.put_u32_le(self.heartbeat_ms);
        out.put_u32_le(self.idle_timeout_ms);
        out.put_u64_le(self.connection_id);
        Writer::str(out, &self.server_name);
    }

    /// Reads a body.
    pub fn decode(body: Bytes) -> Result<Self, ProtocolError> {
        let mut r = Reader::new(body, "HELLO reply");
        let out = Self {
            version: r.u16()?,
            max_frame: r.u32()?,
            heartbeat_ms: r.u32()?,
            idle_timeout_ms: r.u32()?,
            connection_id: r.u64()?,
            server_name: r.string()?,
        };
        r.end()?;
        Ok(out)
    }
}

/// `ERROR`: a code and a human-readable message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorBody {
    /// What kind of failure.
    pub code: ErrorCode,
    /// What happened, for people.
    pub message: String,
}

impl ErrorBody {
    /// Appends the body (the message cut to `ERROR_MESSAGE_BYTES_MAX` at a character
    /// boundary).
    pub fn encode(code: ErrorCode, message: &str, out: &mut BytesMut) {
        let mut end = message.len().min(ERROR_MESSAGE_BYTES_MAX);
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        out.put_u16_le(code as u16);
        Writer::str(out, &message[..end]);
    }

    /// Reads a body.
    pub fn decode(body: Bytes) -> Result<Self, ProtocolError> {
        let mut r = Reader::new(body, "ERROR");
        let code = ErrorCode::from_u16(r.u16()?);
        let message = r.string()?;
        r.end()?;
        Ok(Self { code, message })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hello_and_welcome_roundtrip() {
        let hello = Hello {
            version_min: 1,
            version_max: 3,
            token: "s3cret".into(),
            client_name: "test".into(),
        };
        let mut out = BytesMut::new();
        hello.encode(&mut out);
        assert_eq!(Hello::decode(out.freeze()), Ok(hello));
        let welcome = Welcome {
            version: 1,
            max_frame: 1 << 20,
            heartbeat_ms: 5000,
            idle_timeout_ms: 0,
            connection_id: 9,
            server_name: "ringbroker".into(),
        };
        let mut out = BytesMut::new();
        welcome.encode(&mut out);
        assert_eq!(Welcome::decode(out.freeze()), Ok(welcome));
    }

    #[test]
    fn inverted_versions_are_malformed() {
        let hello = Hello {
            version_min: 2,
            version_max: 1,
            token: String::new(),
            client_name: String::new(),
        };
        let mut out = BytesMut::new();
        hello.encode(&mut out);
        assert!(Hello::decode(out.freeze()).is_err());
    }

    #[test]
    fn long_error_messages_are_cut_on_a_character_boundary() {
        let message = "é".repeat(ERROR_MESSAGE_BYTES_MAX);
        let mut out = BytesMut::new();
        ErrorBody::encode(ErrorCode::Invalid, &message, &mut out);
        let body = ErrorBody::decode(out.freeze()).expect("decodes");
        assert_eq!(body.code, ErrorCode::Invalid);
        assert!(body.message.len() <= ERROR_MESSAGE_BYTES_MAX);
        assert!(message.starts_with(&body.message));
    }
}
