//! What the server sends: `INFO`, `MSG`, `HMSG`, `PING`, `PONG`, `+OK`, `-ERR`, each
//! appended to a connection's output buffer.

use bytes::{BufMut, Bytes, BytesMut};

use super::headers::{encode_headers, encoded_headers_len};
use super::ServerInfo;

/// `INFO {json}\r\n`.
pub fn encode_info(out: &mut BytesMut, info: &ServerInfo) {
    out.put_slice(b"INFO ");
    out.put_slice(info.to_json().as_bytes());
    out.put_slice(b"\r\n");
}

/// `MSG <subject> <sid> [reply] <size>\r\n<payload>\r\n`.
pub fn encode_msg(
    out: &mut BytesMut,
    subject: &[u8],
    sid: &[u8],
    reply: Option<&[u8]>,
    payload: &[u8],
) {
    out.reserve(subject.len() + sid.len() + payload.len() + 48);
    out.put_slice(b"MSG ");
    put_target(out, subject, sid, reply);
    put_decimal(out, payload.len());
    out.put_slice(b"\r\n");
    out.put_slice(payload);
    out.put_slice(b"\r\n");
}

/// `HMSG <subject> <sid> [reply] <header size> <total size>\r\n<headers><payload>\r\n`.
pub fn encode_hmsg(
    out: &mut BytesMut,
    subject: &[u8],
    sid: &[u8],
    reply: Option<&[u8]>,
    headers: &[(Bytes, Bytes)],
    payload: &[u8],
) {
    let header_len = encoded_headers_len(headers);
    out.reserve(subject.len() + sid.len() + header_len + payload.len() + 64);
    out.put_slice(b"HMSG ");
    put_target(out, subject, sid, reply);
    put_decimal(out, header_len);
    out.put_u8(b' ');
    put_decimal(out, header_len + payload.len());
    out.put_slice(b"\r\n");
    encode_headers(out, headers);
    out.put_slice(payload);
    out.put_slice(b"\r\n");
}

/// The no-responders status for a request on `reply`, delivered to the requester's
/// subscription `sid`: `HMSG <reply> <sid> 16 16\r\nNATS/1.0 503\r\n\r\n\r\n`.
pub fn encode_no_responders(out: &mut BytesMut, reply: &[u8], sid: &[u8]) {
    const STATUS: &[u8] = b"NATS/1.0 503\r\n\r\n";
    out.put_slice(b"HMSG ");
    put_target(out, reply, sid, None);
    put_decimal(out, STATUS.len());
    out.put_u8(b' ');
    put_decimal(out, STATUS.len());
    out.put_slice(b"\r\n");
    out.put_slice(STATUS);
    out.put_slice(b"\r\n");
}

fn put_target(out: &mut BytesMut, subject: &[u8], sid: &[u8], reply: Option<&[u8]>) {
    out.put_slice(subject);
    out.put_u8(b' ');
    out.put_slice(sid);
    out.put_u8(b' ');
    if let Some(reply) = reply {
        out.put_slice(reply);
        out.put_u8(b' ');
    }
}

fn put_decimal(out: &mut BytesMut, mut n: usize) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        // n % 10 < 10: the cast keeps the digit.
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.put_slice(&digits[at..]);
}

/// `PING\r\n`.
pub fn encode_ping(out: &mut BytesMut) {
    out.put_slice(b"PING\r\n");
}

/// `PONG\r\n`.
pub fn encode_pong(out: &mut BytesMut) {
    out.put_slice(b"PONG\r\n");
}

/// `+OK\r\n` (verbose mode).
pub fn encode_ok(out: &mut BytesMut) {
    out.put_slice(b"+OK\r\n");
}

/// `-ERR '<text>'\r\n`; quotes and line breaks in `text` become spaces so the line
/// stays one line.
pub fn encode_err(out: &mut BytesMut, text: &str) {
    out.put_slice(b"-ERR '");
    for b in text.bytes() {
        out.put_u8(if matches!(b, b'\'' | b'\r' | b'\n') {
            b' '
        } else {
            b
        });
    }
    out.put_slice(b"'\r\n");
}
