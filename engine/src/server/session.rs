//! The handshake: `HELLO` → version chosen, token checked, session open.

use bytes::Bytes;

use super::{ConnRef, Failure};
use crate::net::{ConnState, ShardServer};
use crate::protocol::session::{Hello, Welcome};
use crate::protocol::{ErrorCode, FrameHeader, Op, FLAG_REPLY, VERSION};
use crate::runtime::ShardCtx;

/// The server's name in `HELLO` replies.
const SERVER_NAME: &str = concat!("ringbroker ", env!("CARGO_PKG_VERSION"));

pub(super) fn hello(
    ctx: &mut ShardCtx,
    server: &ShardServer,
    conn: &ConnRef,
    header: &FrameHeader,
    body: Bytes,
) -> Result<(), Failure> {
    let hello = Hello::decode(body)?;
    if hello.version_min > VERSION || hello.version_max < VERSION {
        return Err(Failure::fatal(
            ErrorCode::VersionUnsupported,
            format!(
                "client speaks versions {}..={}, server speaks {VERSION}",
                hello.version_min, hello.version_max
            ),
        ));
    }
    let config = &server.shared().config;
    if let Some(token) = &config.auth_token {
        if !constant_time_eq(token.as_bytes(), hello.token.as_bytes()) {
            return Err(Failure::fatal(
                ErrorCode::AuthFailed,
                "auth token missing or wrong".into(),
            ));
        }
    }
    let welcome = Welcome {
        version: VERSION,
        max_frame: config.max_frame,
        heartbeat_ms: millis(config.heartbeat),
        idle_timeout_ms: millis(config.idle_timeout),
        connection_id: conn.borrow().id,
        server_name: SERVER_NAME.into(),
    };
    conn.borrow_mut().state = ConnState::Open;
    tracing::debug!(
        conn = welcome.connection_id,
        client = %hello.client_name,
        "session open"
    );
    // Always answered (a HELLO with FLAG_NO_REPLY still gets its reply).
    let counters = &server.shared().counters[ctx.shard_id()];
    conn.borrow_mut()
        .queue_frame(counters, Op::Hello, FLAG_REPLY, header.correlation, |out| {
            welcome.encode(out)
        });
    Ok(())
}

fn millis(d: std::time::Duration) -> u32 {
    u32::try_from(d.as_millis()).unwrap_or(u32::MAX)
}

/// Compares two secrets in time that depends only on their lengths, so a wrong token
/// reveals nothing about how much of it matched.
pub(super) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::constant_time_eq;

    #[test]
    fn tokens_compare_by_every_byte() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret!"));
        assert!(!constant_time_eq(b"", b"x"));
    }
}
