//! The parser against hand-written inputs and, as properties, against any sequence of
//! commands encoded the way clients encode them and cut at any points.

use bytes::{Bytes, BytesMut};
use proptest::prelude::*;

use super::{parse_command, Command};
use crate::protocol::nats::{
    decode_headers, encode_headers, encode_hmsg, encode_msg, NatsError, CONTROL_LINE_MAX,
};

const MAX: u32 = 1 << 20;

fn parse_all(text: &[u8]) -> Result<Vec<Command>, NatsError> {
    let mut input = BytesMut::from(text);
    let mut out = Vec::new();
    while let Some(command) = parse_command(&mut input, MAX)? {
        out.push(command);
    }
    assert!(input.is_empty(), "left over: {:?}", input);
    Ok(out)
}

fn b(text: &'static str) -> Bytes {
    Bytes::from_static(text.as_bytes())
}

#[test]
fn pipelined_commands_in_one_read_parse_in_order() {
    let commands = parse_all(
        b"CONNECT {\"verbose\":false}\r\nsub foo.* q 1\r\nPUB foo.bar r 5\r\nhello\r\n\
          HPUB a 12 14\r\nNATS/1.0\r\n\r\nhi\r\nUNSUB 1 10\r\nping\r\nPONG\n",
    )
    .expect("valid");
    assert_eq!(
        commands,
        vec![
            Command::Connect(b("{\"verbose\":false}")),
            Command::Sub {
                subject: b("foo.*"),
                queue: Some(b("q")),
                sid: b("1")
            },
            Command::Pub {
                subject: b("foo.bar"),
                reply: Some(b("r")),
                payload: b("hello")
            },
            Command::HPub {
                subject: b("a"),
                reply: None,
                headers: b("NATS/1.0\r\n\r\n"),
                payload: b("hi")
            },
            Command::Unsub {
                sid: b("1"),
                max: Some(10)
            },
            Command::Ping,
            Command::Pong,
        ]
    );
}

#[test]
fn a_command_split_across_reads_waits_for_its_rest() {
    let text = b"PUB foo\t 11\r\nhello world\r\n";
    for cut in 0..text.len() {
        let mut input = BytesMut::from(&text[..cut]);
        assert_eq!(parse_command(&mut input, MAX), Ok(None), "cut at {cut}");
        assert_eq!(input.len(), cut, "nothing taken at {cut}");
        input.extend_from_slice(&text[cut..]);
        let command = parse_command(&mut input, MAX)
            .expect("valid")
            .expect("whole");
        assert!(matches!(command, Command::Pub { ref payload, .. } if payload == "hello world"));
    }
}

#[test]
fn malformed_input_is_a_typed_error() {
    let cases: [(&[u8], &str); 11] = [
        (b"FOO bar\r\n", "Unknown Protocol Operation"),
        (b"PUB foo\r\n", "Unknown Protocol Operation"),
        (b"PUB foo x\r\n", "Unknown Protocol Operation"),
        (b"PUB foo 3\r\nabcXY", "Unknown Protocol Operation"),
        (b"PUB foo -1\r\n", "Unknown Protocol Operation"),
        (
            b"PUB foo 99999999999999999999\r\n",
            "Unknown Protocol Operation",
        ),
        (b"PUB foo 1048577\r\n", "Maximum Payload Violation"),
        (b"HPUB foo 5 3\r\n", "Unknown Protocol Operation"),
        (b"SUB foo\r\n", "Unknown Protocol Operation"),
        (b"PING x\r\n", "Unknown Protocol Operation"),
        (b"\r\n", "Unknown Protocol Operation"),
    ];
    for (input, text) in cases {
        let error = parse_all(input).expect_err(&String::from_utf8_lossy(input));
        assert_eq!(error.text(), text, "{:?}", String::from_utf8_lossy(input));
        assert!(error.is_fatal());
    }
}

#[test]
fn a_control_line_is_bounded_before_its_end_arrives() {
    let mut input = BytesMut::from(&b"PUB "[..]);
    input.extend_from_slice(&vec![b'a'; CONTROL_LINE_MAX - 4]);
    assert_eq!(parse_command(&mut input, MAX), Ok(None));
    input.extend_from_slice(b"xx");
    assert_eq!(
        parse_command(&mut input, MAX),
        Err(NatsError::ControlLine {
            max: CONTROL_LINE_MAX
        })
    );
}

#[test]
fn the_payload_bound_is_checked_before_the_payload_arrives() {
    let mut input = BytesMut::from(&b"PUB foo 2048\r\n"[..]);
    assert!(matches!(
        parse_command(&mut input, 1024),
        Err(NatsError::MaxPayload {
            size: 2048,
            max: 1024
        })
    ));
}

#[test]
fn header_blocks_split_into_trimmed_pairs_and_back() {
    let block = b("NATS/1.0\r\nA: 1\r\nB:two \r\nA:  3\r\n\r\n");
    let pairs = decode_headers(&block).expect("valid");
    let expected = [(b("A"), b("1")), (b("B"), b("two")), (b("A"), b("3"))];
    assert_eq!(&pairs[..], &expected[..]);
    let mut out = BytesMut::new();
    encode_headers(&mut out, &pairs);
    assert_eq!(
        decode_headers(&out.freeze()).expect("again")[..],
        expected[..]
    );
    for bad in [
        "NATS/2.0\r\n\r\n",
        "NATS/1.0\r\nA 1\r\n\r\n",
        "NATS/1.0\r\nA: 1\r\n",
    ] {
        assert!(decode_headers(&Bytes::from(bad)).is_err(), "{bad:?}");
    }
}

#[test]
fn msg_and_hmsg_have_the_documented_shape() {
    let mut out = BytesMut::new();
    encode_msg(&mut out, b"a.b", b"7", Some(b"_INBOX.x"), b"hey");
    assert_eq!(&out[..], b"MSG a.b 7 _INBOX.x 3\r\nhey\r\n");
    out.clear();
    encode_hmsg(&mut out, b"a", b"1", None, &[(b("K"), b("V"))], b"xy");
    assert_eq!(
        &out[..],
        b"HMSG a 1 18 20\r\nNATS/1.0\r\nK: V\r\n\r\nxy\r\n"
    );
}

/// A client command as a client library writes it.
fn encode_client(command: &Command, out: &mut Vec<u8>) {
    let mut line = |parts: &[&[u8]]| {
        out.extend_from_slice(&parts.join(&b' '));
        out.extend_from_slice(b"\r\n");
    };
    match command {
        Command::Connect(json) => line(&[b"CONNECT", json]),
        Command::Pub {
            subject,
            reply,
            payload,
        } => {
            let size = payload.len().to_string();
            match reply {
                Some(r) => line(&[b"PUB", subject, r, size.as_bytes()]),
                None => line(&[b"PUB", subject, size.as_bytes()]),
            }
            out.extend_from_slice(payload);
            out.extend_from_slice(b"\r\n");
        }
        Command::HPub {
            subject,
            reply,
            headers,
            payload,
        } => {
            let (h, t) = (
                headers.len().to_string(),
                (headers.len() + payload.len()).to_string(),
            );
            match reply {
                Some(r) => line(&[b"HPUB", subject, r, h.as_bytes(), t.as_bytes()]),
                None => line(&[b"HPUB", subject, h.as_bytes(), t.as_bytes()]),
            }
            out.extend_from_slice(headers);
            out.extend_from_slice(payload);
            out.extend_from_slice(b"\r\n");
        }
        Command::Sub {
            subject,
            queue,
            sid,
        } => match queue {
            Some(q) => line(&[b"SUB", subject, q, sid]),
            None => line(&[b"SUB", subject, sid]),
        },
        Command::Unsub { sid, max } => match max {
            Some(m) => line(&[b"UNSUB", sid, m.to_string().as_bytes()]),
            None => line(&[b"UNSUB", sid]),
        },
        Command::Ping => line(&[b"PING"]),
        Command::Pong => line(&[b"PONG"]),
        Command::Info => line(&[b"INFO", b"{}"]),
    }
}

fn token() -> impl Strategy<Value = Bytes> {
    "[a-zA-Z0-9_.>*-]{1,12}".prop_map(Bytes::from)
}

fn command() -> impl Strategy<Value = Command> {
    let payload = proptest::collection::vec(any::<u8>(), 0..64).prop_map(Bytes::from);
    let headers =
        proptest::collection::vec(("[A-Za-z-]{1,8}", "[ -~]{0,8}"), 0..3).prop_map(|pairs| {
            let pairs: Vec<(Bytes, Bytes)> = pairs
                .into_iter()
                .map(|(k, v)| (Bytes::from(k), Bytes::from(v.trim().to_owned())))
                .collect();
            let mut out = BytesMut::new();
            encode_headers(&mut out, &pairs);
            out.freeze()
        });
    prop_oneof![
        (token(), proptest::option::of(token()), payload.clone()).prop_map(
            |(subject, reply, payload)| Command::Pub {
                subject,
                reply,
                payload
            }
        ),
        (token(), proptest::option::of(token()), headers, payload).prop_map(
            |(subject, reply, headers, payload)| Command::HPub {
                subject,
                reply,
                headers,
                payload
            }
        ),
        (token(), proptest::option::of(token()), token()).prop_map(|(subject, queue, sid)| {
            Command::Sub {
                subject,
                queue,
                sid,
            }
        }),
        (token(), proptest::option::of(0u64..1_000_000))
            .prop_map(|(sid, max)| Command::Unsub { sid, max }),
        Just(Command::Ping),
        Just(Command::Pong),
        Just(Command::Connect(Bytes::from_static(
            b"{\"echo\": true, \"name\": \"a b\"}"
        ))),
    ]
}

proptest! {
    /// Any sequence of commands, delivered in reads cut at any points, parses back to
    /// the same commands in order, and the parser never takes an incomplete command.
    #[test]
    fn commands_roundtrip_across_any_read_boundaries(
        commands in proptest::collection::vec(command(), 1..12),
        cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..6),
    ) {
        let mut wire = Vec::new();
        for command in &commands {
            encode_client(command, &mut wire);
        }
        let mut points: Vec<usize> = cuts.iter().map(|i| i.index(wire.len() + 1)).collect();
        points.push(wire.len());
        points.sort_unstable();
        let mut input = BytesMut::new();
        let mut parsed = Vec::new();
        let mut from = 0;
        for point in points {
            input.extend_from_slice(&wire[from..point]);
            from = point;
            while let Some(command) = parse_command(&mut input, MAX).expect("valid input") {
                parsed.push(command);
            }
        }
        prop_assert!(input.is_empty());
        prop_assert_eq!(parsed, commands);
    }

    /// Arbitrary bytes never panic the parser, and a command it returns took bytes.
    #[test]
    fn arbitrary_bytes_give_commands_or_errors(data in proptest::collection::vec(any::<u8>(), 0..256)) {
        let mut input = BytesMut::from(&data[..]);
        for _ in 0..=data.len() {
            let before = input.len();
            match parse_command(&mut input, 64) {
                Ok(Some(_)) => prop_assert!(input.len() < before),
                Ok(None) | Err(_) => break,
            }
        }
    }
}
