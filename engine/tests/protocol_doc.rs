//! Proves `docs/protocol.md` cannot drift from the code: its op table is exactly
//! `Op::ALL` and its error-code table exactly `ErrorCode::ALL` (numbers, names, fatal),
//! each op has its section, the flags, header layout and server defaults are the code's,
//! and the worked example's bytes are what the crate's own encoders write.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::BytesMut;
use ringbroker::net::ServerConfig;
use ringbroker::protocol::pubsub::encode_publish;
use ringbroker::protocol::session::{Hello, Welcome};
use ringbroker::protocol::{
    encode_frame, ErrorCode, Op, FLAG_NO_REPLY, FLAG_REPLY, HEADER_BYTES, VERSION,
};
use ringbroker::pubsub::{Message, Subject};

const DOC: &str = include_str!("../../docs/protocol.md");

/// The cells of one Markdown table row, trimmed, without code backticks.
fn cells(line: &str) -> Vec<String> {
    let inner = line.trim().trim_start_matches('|').trim_end_matches('|');
    inner
        .split('|')
        .map(|c| c.trim().trim_matches('`').to_owned())
        .collect()
}

/// The body rows of the one table whose header line is exactly `header`.
fn table(header: &str) -> Vec<Vec<String>> {
    let found = DOC.lines().filter(|l| l.trim() == header).count();
    assert_eq!(found, 1, "tables headed {header:?} in docs/protocol.md");
    let mut lines = DOC.lines().skip_while(|l| l.trim() != header).skip(1);
    let separator = lines.next().expect("a separator row");
    assert!(separator.starts_with("|---"), "{header:?}: {separator:?}");
    let rows: Vec<Vec<String>> = lines
        .take_while(|l| l.starts_with('|'))
        .map(cells)
        .collect();
    let width = cells(header).len();
    for row in &rows {
        assert_eq!(row.len(), width, "{header:?}: row {row:?}");
    }
    rows
}

/// `StreamPublish` → `STREAM_PUBLISH`.
fn screaming_snake(camel: &str) -> String {
    let mut out = String::with_capacity(camel.len() + 4);
    for (i, c) in camel.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(c.to_ascii_uppercase());
    }
    out
}

fn hex_u16(cell: &str) -> u16 {
    let digits = cell.strip_prefix("0x").expect("a 0x number");
    assert_eq!(digits.len(), 4, "four hex digits: {cell:?}");
    u16::from_str_radix(digits, 16).expect("hex")
}

/// What one side has that the other lacks, for a both-ways comparison.
fn difference<T: Ord + Clone>(a: &[T], b: &[T]) -> Vec<T> {
    a.iter().filter(|x| !b.contains(x)).cloned().collect()
}

#[test]
fn op_table_is_exactly_op_all() {
    let rows = table("| op | name | direction | reply |");
    let documented: Vec<(u16, String)> = rows
        .iter()
        .map(|r| (hex_u16(&r[0]), r[1].clone()))
        .collect();
    let code: Vec<(u16, String)> = Op::ALL
        .iter()
        .map(|&op| (op as u16, screaming_snake(op.name())))
        .collect();
    let missing = difference(&code, &documented);
    let extra = difference(&documented, &code);
    assert!(missing.is_empty(), "ops missing from the doc: {missing:?}");
    assert!(
        extra.is_empty(),
        "ops in the doc but not the code: {extra:?}"
    );
    assert_eq!(
        documented, code,
        "the doc lists ops in numeric order, once each"
    );
    for row in &rows {
        let direction = row[2].as_str();
        assert!(
            matches!(direction, "c→s" | "s→c" | "both"),
            "{}: direction {direction:?}",
            row[1]
        );
    }
}

#[test]
fn every_op_has_its_section() {
    for &op in Op::ALL {
        let heading = format!("### 0x{:04X} {}", op as u16, screaming_snake(op.name()));
        let found = DOC.lines().filter(|l| l.trim() == heading).count();
        assert_eq!(found, 1, "sections headed {heading:?}");
    }
}

#[test]
fn error_code_table_is_exactly_error_code_all() {
    let rows = table("| code | name | fatal | meaning |");
    let documented: Vec<(u16, String, bool)> = rows
        .iter()
        .map(|r| {
            let fatal = match r[2].as_str() {
                "yes" => true,
                "no" => false,
                other => panic!("{}: fatal is {other:?}, not yes/no", r[1]),
            };
            (r[0].parse().expect("a decimal code"), r[1].clone(), fatal)
        })
        .collect();
    let code: Vec<(u16, String, bool)> = ErrorCode::ALL
        .iter()
        .map(|&c| (c as u16, c.name().to_owned(), c.is_fatal()))
        .collect();
    let missing = difference(&code, &documented);
    let extra = difference(&documented, &code);
    assert!(
        missing.is_empty(),
        "codes missing or wrong in the doc: {missing:?}"
    );
    assert!(
        extra.is_empty(),
        "codes in the doc but not the code: {extra:?}"
    );
    assert_eq!(
        documented, code,
        "the doc lists codes in numeric order, once each"
    );
}

#[test]
fn flags_and_header_layout_are_the_code_s() {
    let flags: BTreeMap<String, u16> = table("| flag | value | meaning |")
        .iter()
        .map(|r| (r[0].clone(), hex_u16(&r[1])))
        .collect();
    let code = BTreeMap::from([
        ("FLAG_NO_REPLY".to_owned(), FLAG_NO_REPLY),
        ("FLAG_REPLY".to_owned(), FLAG_REPLY),
    ]);
    assert_eq!(flags, code);

    let rows = table("| offset | size | field | encoding |");
    let (body, fixed) = rows.split_last().expect("header rows");
    let mut offset = 0usize;
    for row in fixed {
        assert_eq!(row[0].parse::<usize>().expect("offset"), offset, "{row:?}");
        offset += row[1].parse::<usize>().expect("size");
    }
    assert_eq!(offset, HEADER_BYTES, "the fixed fields make the header");
    assert_eq!(body[2], "body");
    assert_eq!(body[0].parse::<usize>().expect("offset"), HEADER_BYTES);
}

fn duration_of(cell: &str) -> Duration {
    let secs = cell.strip_suffix(" s").expect("`<n> s`");
    Duration::from_secs(secs.parse().expect("seconds"))
}

fn bytes_of(cell: &str) -> usize {
    let mib = cell.strip_suffix(" MiB").expect("`<n> MiB`");
    mib.parse::<usize>().expect("MiB") << 20
}

#[test]
fn server_defaults_are_server_config_s() {
    let defaults = ServerConfig::default();
    let documented: BTreeMap<String, String> = table("| setting | default | what it does |")
        .into_iter()
        .map(|r| (r[0].clone(), r[1].clone()))
        .collect();
    let get = |name: &str| documented.get(name).map(String::as_str).expect(name);
    assert_eq!(get("listen"), defaults.listen.to_string());
    assert_eq!(bytes_of(get("max_frame")), defaults.max_frame as usize);
    assert_eq!(get("auth_token"), "none");
    assert!(defaults.auth_token.is_none());
    assert_eq!(duration_of(get("idle_timeout")), defaults.idle_timeout);
    assert_eq!(duration_of(get("heartbeat")), defaults.heartbeat);
    assert_eq!(
        duration_of(get("handshake_timeout")),
        defaults.handshake_timeout
    );
    assert_eq!(
        get("connections_per_shard_max")
            .parse::<usize>()
            .expect("n"),
        defaults.connections_per_shard_max
    );
    assert_eq!(
        bytes_of(get("outbound_bytes_max")),
        defaults.outbound_bytes_max
    );
    assert_eq!(duration_of(get("write_timeout")), defaults.write_timeout);
    assert_eq!(documented.len(), 9, "{:?}", documented.keys());
}

/// The bytes of the worked example marked `<!-- protocol_doc: name -->`: hex pairs,
/// with everything after a `;` on a line being a comment.
fn example(name: &str) -> Vec<u8> {
    let marker = format!("<!-- protocol_doc: {name} -->");
    let mut lines = DOC.lines().skip_while(|l| l.trim() != marker).skip(1);
    assert_eq!(lines.next(), Some("```text"), "a text block after {marker}");
    let mut out = Vec::new();
    for line in lines.take_while(|l| *l != "```") {
        let hex = line.split(';').next().unwrap_or("");
        for pair in hex.split_whitespace() {
            assert_eq!(pair.len(), 2, "{name}: {pair:?} in {line:?}");
            out.push(u8::from_str_radix(pair, 16).expect("a hex byte"));
        }
    }
    assert!(!out.is_empty(), "no bytes in example {name}");
    out
}

fn frame(op: Op, flags: u16, correlation: u64, body: impl FnOnce(&mut BytesMut)) -> Vec<u8> {
    let mut out = BytesMut::new();
    encode_frame(&mut out, op, flags, correlation, body);
    out.to_vec()
}

fn millis(d: Duration) -> u32 {
    u32::try_from(d.as_millis()).expect("fits")
}

#[test]
fn worked_example_is_what_the_encoders_write() {
    let hello = Hello {
        version_min: 1,
        version_max: 1,
        token: "pw".into(),
        client_name: "demo".into(),
    };
    let encoded = frame(Op::Hello, 0, 1, |b| hello.encode(b));
    assert_eq!(example("hello"), encoded, "HELLO");

    let defaults = ServerConfig::default();
    let welcome = Welcome {
        version: VERSION,
        max_frame: defaults.max_frame,
        heartbeat_ms: millis(defaults.heartbeat),
        idle_timeout_ms: millis(defaults.idle_timeout),
        connection_id: 1,
        server_name: format!("ringbroker {}", env!("CARGO_PKG_VERSION")),
    };
    let encoded = frame(Op::Hello, FLAG_REPLY, 1, |b| welcome.encode(b));
    assert_eq!(example("hello_reply"), encoded, "HELLO reply");

    let subject = Subject::new("orders.new").expect("a subject");
    let message = Message::new(subject, &b"hi"[..]);
    let encoded = frame(Op::Publish, 0, 2, |b| encode_publish(b, &[message]));
    assert_eq!(example("publish"), encoded, "PUBLISH");

    let encoded = frame(Op::Publish, FLAG_REPLY, 2, |_| {});
    assert_eq!(example("publish_reply"), encoded, "PUBLISH reply");
}
