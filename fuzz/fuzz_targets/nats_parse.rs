//! Fuzz target: arbitrary bytes as the input of a NATS client connection, read the
//! way the server reads it: commands are cut with `parse_command` under a 64 KiB
//! `max_payload` until it needs more bytes or refuses the input; header blocks and
//! `CONNECT` options are decoded as the session would.
//!
//! What it asserts:
//! - nothing panics and nothing is read past the input (every size is checked against
//!   the maximum and the bytes present first);
//! - every command takes at least one byte, and an incomplete one takes none;
//! - a publish's payload (headers included) is at most `max_payload`;
//! - a header block that decodes re-encodes to one that decodes to the same pairs.

#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use ringbroker::protocol::nats::{
    decode_headers, encode_headers, parse_command, Command, ConnectOptions, CONTROL_LINE_MAX,
};

const MAX_PAYLOAD: u32 = 64 << 10;

fuzz_target!(|data: &[u8]| {
    let mut input = BytesMut::from(data);
    // Each command takes at least one byte: the loop ends within data.len() turns.
    for _ in 0..=data.len() {
        let before = input.len();
        match parse_command(&mut input, MAX_PAYLOAD) {
            Ok(Some(command)) => {
                assert!(input.len() < before, "a command took no bytes");
                check(command);
            }
            Ok(None) => {
                assert_eq!(input.len(), before, "an incomplete command took bytes");
                assert!(before < CONTROL_LINE_MAX + 2 + MAX_PAYLOAD as usize + 2);
                break;
            }
            Err(_) => break,
        }
    }
});

fn check(command: Command) {
    match command {
        Command::Pub { payload, .. } => assert!(payload.len() <= MAX_PAYLOAD as usize),
        Command::HPub {
            headers, payload, ..
        } => {
            assert!(headers.len() + payload.len() <= MAX_PAYLOAD as usize);
            if let Ok(pairs) = decode_headers(&headers) {
                let mut again = BytesMut::new();
                encode_headers(&mut again, &pairs);
                let decoded = decode_headers(&again.freeze()).expect("re-encoded headers");
                assert_eq!(decoded, pairs);
            }
        }
        Command::Connect(json) => drop(ConnectOptions::decode(&json)),
        Command::Sub { .. }
        | Command::Unsub { .. }
        | Command::Ping
        | Command::Pong
        | Command::Info => {}
    }
}
