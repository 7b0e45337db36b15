//! Fuzz target: arbitrary bytes as a native-protocol byte stream, the way a server
//! reads a connection: frames are split off with `split_frame` under a 64 KiB maximum,
//! and each body is decoded with the decoder of its op (requests and replies alike).
//!
//! What it asserts:
//! - nothing panics and nothing allocates past the input (every length is checked
//!   against the bytes present before use);
//! - a frame `split_frame` accepts lies within the input and is at most the maximum;
//! - a `PUBLISH` body that decodes re-encodes to a body that decodes to the same
//!   messages.

#![no_main]

use bytes::{Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;
use ringbroker::protocol::pubsub::{
    decode_delivery, decode_publish, decode_reply, decode_unsubscribe, encode_publish, Request,
    Subscribe,
};
use ringbroker::protocol::session::{ErrorBody, Hello, Welcome};
use ringbroker::protocol::{split_frame, Op, FLAG_REPLY, HEADER_BYTES};

const MAX_FRAME: u32 = 64 << 10;

fuzz_target!(|data: &[u8]| {
    let mut rest = Bytes::copy_from_slice(data);
    while let Ok(Some((header, total))) = split_frame(&rest, MAX_FRAME) {
        assert!(total <= rest.len());
        assert!(total <= MAX_FRAME as usize);
        assert_eq!(total, HEADER_BYTES + header.body_len);
        let frame = rest.split_to(total);
        let body = frame.slice(HEADER_BYTES..);
        let reply = header.has(FLAG_REPLY);
        match header.op {
            Op::Hello if reply => drop(Welcome::decode(body)),
            Op::Hello => drop(Hello::decode(body)),
            Op::Error => drop(ErrorBody::decode(body)),
            Op::Publish => {
                if let Ok(messages) = decode_publish(body) {
                    let mut again = BytesMut::new();
                    encode_publish(&mut again, &messages);
                    let decoded = decode_publish(again.freeze()).expect("re-encoded body");
                    assert_eq!(decoded, messages);
                }
            }
            Op::Subscribe => drop(Subscribe::decode(body)),
            Op::Unsubscribe => drop(decode_unsubscribe(body)),
            Op::Request if reply => drop(decode_reply(body)),
            Op::Request => drop(Request::decode(body)),
            Op::Message => drop(decode_delivery(body)),
            Op::Ping | Op::Pong => {}
        }
    }
});
