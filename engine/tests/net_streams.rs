//! Streams over TCP: definitions, keyed and deduplicated publishes, durable consumers
//! whose records are pushed and acknowledged through the client, redelivery after a
//! nak, consumer groups sharing partitions across connections, clear errors,
//! acknowledged records surviving a graceful restart, and asynchronous publishes
//! answered exactly once when the connection goes.

#[path = "support/server.rs"]
mod server;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ringbroker::client::{Client, ClientConfig, ClientError};
use ringbroker::net::ServerConfig;
use ringbroker::protocol::ErrorCode;
use ringbroker::stream::{ConsumerConfig, Publish, StreamConfig};
use server::{Fixture, WAIT};

fn orders(partitions: u32) -> StreamConfig {
    StreamConfig {
        partitions,
        ..StreamConfig::new("orders", &["orders.>"])
    }
}

#[test]
fn stream_lifecycle_and_errors_over_tcp() {
    let fx = Fixture::start(ServerConfig::default());
    let client = fx.client();
    client.create_stream(&orders(3)).expect("create");
    client.create_stream(&orders(3)).expect("idempotent create");
    let clash = client.create_stream(&orders(4));
    assert_eq!(
        clash.err().and_then(|e| e.code()),
        Some(ErrorCode::AlreadyExists)
    );
    assert_eq!(client.streams().expect("list"), vec!["orders".to_owned()]);
    let info = client.stream_info("orders").expect("info");
    assert_eq!(info.partitions.len(), 3);
    assert_eq!(info.config.name, "orders");
    let missing = client.stream_info("nope");
    assert_eq!(
        missing.err().and_then(|e| e.code()),
        Some(ErrorCode::NotFound)
    );
    let nowhere = client.publish_record(Publish::new("invoices.1", &b"x"[..]));
    assert_eq!(
        nowhere.err().and_then(|e| e.code()),
        Some(ErrorCode::NotFound)
    );
    client.delete_stream("orders").expect("delete");
    assert!(client.streams().expect("list").is_empty());
}

#[test]
fn keyed_records_keep_order_and_duplicates_are_acknowledged_once() {
    let fx = Fixture::start(ServerConfig::default());
    let client = fx.client();
    client.create_stream(&orders(4)).expect("create");
    let records: Vec<Publish> = (0..100u32)
        .map(|i| Publish::new("orders.eu", i.to_le_bytes().to_vec()).key(&b"customer-7"[..]))
        .collect();
    let acks = client.publish_records(&records).expect("publish");
    let partitions: BTreeSet<u32> = acks
        .iter()
        .map(|a| a.as_ref().expect("stored").partition)
        .collect();
    assert_eq!(partitions.len(), 1, "one key, one partition");
    let offsets: Vec<u64> = acks
        .iter()
        .map(|a| a.as_ref().expect("ok").offset)
        .collect();
    assert!(
        offsets.windows(2).all(|w| w[1] == w[0] + 1),
        "in order: {offsets:?}"
    );

    let first = client
        .publish_record(Publish::new("orders.us", &b"once"[..]).msg_id(&b"id-1"[..]))
        .expect("first");
    let again = client
        .publish_record(Publish::new("orders.us", &b"once"[..]).msg_id(&b"id-1"[..]))
        .expect("retry");
    assert!(!first.duplicate);
    assert!(again.duplicate);
    assert_eq!(
        (again.partition, again.offset),
        (first.partition, first.offset)
    );
}

#[test]
fn durable_consumer_receives_acks_and_gets_naked_records_again() {
    let fx = Fixture::start(ServerConfig::default());
    let client = fx.client();
    client.create_stream(&orders(2)).expect("create");
    client
        .create_consumer("orders", &ConsumerConfig::durable("billing"))
        .expect("consumer");
    let records: Vec<Publish> = (0..50u32)
        .map(|i| Publish::new("orders.eu", i.to_le_bytes().to_vec()))
        .collect();
    client.publish_records(&records).expect("publish");
    let consumer = client.join("orders", "billing").expect("join");
    let mut seen = BTreeSet::new();
    let mut naked = None;
    while seen.len() < 50 {
        let m = consumer.next_timeout(WAIT).expect("record");
        let value = u32::from_le_bytes(m.record.payload[..4].try_into().expect("4 bytes"));
        if value == 7 && naked.is_none() {
            m.nak(Duration::ZERO).expect("nak");
            naked = Some(m.record.offset);
            continue;
        }
        m.ack().expect("ack");
        seen.insert(value);
    }
    assert_eq!(seen, (0..50).collect::<BTreeSet<_>>());
    assert!(
        naked.is_some(),
        "record 7 was naked, then redelivered and acked"
    );
    let info = client.consumer_info("orders", "billing").expect("info");
    let deadline = std::time::Instant::now() + WAIT;
    let mut pending: usize = info.partitions.iter().map(|p| p.pending).sum();
    while pending > 0 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
        let info = client.consumer_info("orders", "billing").expect("info");
        pending = info.partitions.iter().map(|p| p.pending).sum();
    }
    assert_eq!(pending, 0, "every record acknowledged");
    assert_eq!(
        client.consumers("orders").expect("list"),
        vec!["billing".to_owned()]
    );
}

#[test]
fn group_members_on_two_connections_share_partitions() {
    let fx = Fixture::start(ServerConfig::default());
    let admin = fx.client();
    admin.create_stream(&orders(4)).expect("create");
    admin
        .create_consumer("orders", &ConsumerConfig::durable("workers"))
        .expect("consumer");
    let (a, b) = (fx.client(), fx.client());
    let member_a = a.join("orders", "workers").expect("a joins");
    let member_b = b.join("orders", "workers").expect("b joins");
    let records: Vec<Publish> = (0..200u32)
        .map(|i| Publish::new("orders.eu", i.to_le_bytes().to_vec()).key(i.to_le_bytes().to_vec()))
        .collect();
    admin.publish_records(&records).expect("publish");
    let mut got = BTreeSet::new();
    let deadline = std::time::Instant::now() + WAIT;
    while got.len() < 200 && std::time::Instant::now() < deadline {
        for member in [&member_a, &member_b] {
            if let Ok(m) = member.next_timeout(Duration::from_millis(10)) {
                m.ack().expect("ack");
                assert!(
                    got.insert(u32::from_le_bytes(
                        m.record.payload[..4].try_into().expect("4")
                    )),
                    "a record went to two members"
                );
            }
        }
    }
    assert_eq!(got.len(), 200);
}

#[test]
fn acknowledged_publishes_survive_a_graceful_restart() {
    let mut fx = Fixture::start(ServerConfig::default());
    {
        let client = fx.client();
        client.create_stream(&orders(2)).expect("create");
        let records: Vec<Publish> = (0..500u32)
            .map(|i| Publish::new("orders.eu", i.to_le_bytes().to_vec()))
            .collect();
        for chunk in records.chunks(50) {
            for ack in client.publish_records(chunk).expect("publish") {
                ack.expect("stored");
            }
        }
    }
    fx.restart();
    let client = fx.client();
    let info = client.stream_info("orders").expect("info");
    let stored: u64 = info.partitions.iter().map(|p| p.records).sum();
    assert_eq!(stored, 500);
    let replay = client
        .subscribe_stream("orders", ConsumerConfig::default())
        .expect("ephemeral consumer");
    let mut values = BTreeSet::new();
    while values.len() < 500 {
        let m = replay.next_timeout(WAIT).expect("replayed record");
        m.ack().expect("ack");
        values.insert(u32::from_le_bytes(
            m.record.payload[..4].try_into().expect("4"),
        ));
    }
    assert_eq!(values, (0..500).collect::<BTreeSet<_>>());
}

#[test]
fn a_refused_publish_frame_gets_exactly_one_error() {
    use bytes::BytesMut;
    use ringbroker::protocol::session::{ErrorBody, Hello};
    use ringbroker::protocol::{encode_frame, split_frame, Op, HEADER_BYTES, VERSION};
    use std::io::{Read, Write};

    let fx = Fixture::start(ServerConfig::default());
    let mut raw = fx.raw();
    let mut out = BytesMut::new();
    let hello = Hello {
        version_min: VERSION,
        version_max: VERSION,
        token: String::new(),
        client_name: "raw".into(),
    };
    encode_frame(&mut out, Op::Hello, 0, 1, |b| hello.encode(b));
    // An invalid subject refuses the whole frame (before anything is routed).
    let bad = [Publish::new("orders..x", &b"x"[..])];
    encode_frame(&mut out, Op::StreamPublish, 0, 2, |b| {
        ringbroker::protocol::stream::encode_publish(b, &bad);
    });
    encode_frame(&mut out, Op::Ping, 0, 3, |_| {});
    raw.write_all(&out).expect("write");
    let mut buf = BytesMut::new();
    let mut errors = Vec::new();
    // Read to the PONG, wait, then ping again: a second answer to the refused frame
    // (one sent later, from elsewhere) would arrive before the second PONG.
    for ping in [3u64, 4] {
        if ping == 4 {
            std::thread::sleep(Duration::from_millis(200));
            let mut again = BytesMut::new();
            encode_frame(&mut again, Op::Ping, 0, 4, |_| {});
            raw.write_all(&again).expect("write");
        }
        let deadline = std::time::Instant::now() + WAIT;
        'read: loop {
            while let Ok(Some((header, total))) = split_frame(&buf, u32::MAX) {
                let frame = buf.split_to(total).freeze();
                match header.op {
                    Op::Error => errors
                        .push(ErrorBody::decode(frame.slice(HEADER_BYTES..)).expect("error body")),
                    Op::Pong if header.correlation == ping => break 'read,
                    _ => {}
                }
            }
            assert!(std::time::Instant::now() < deadline, "no PONG");
            let mut chunk = [0u8; 4096];
            let n = raw.read(&mut chunk).expect("read");
            assert!(n > 0, "closed");
            buf.extend_from_slice(&chunk[..n]);
        }
    }
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0].code, ErrorCode::Invalid);
}

#[test]
fn a_failed_fire_and_forget_frame_does_not_cost_the_connection() {
    let fx = Fixture::start(ServerConfig::default());
    let client = fx.client();
    client.create_stream(&orders(1)).expect("create");
    let consumer = client
        .subscribe_stream("orders", ConsumerConfig::default())
        .expect("consumer");
    // A NAK of a record never delivered: the server answers NotFound (non-fatal).
    consumer
        .nak_position(0, 12345, Duration::ZERO)
        .expect("sent");
    client
        .ping()
        .expect("still connected after the refused NAK");
    assert!(client.is_connected());
}

#[test]
fn asynchronous_publishes_are_answered_once_even_when_the_connection_goes() {
    let mut fx = Fixture::start(ServerConfig::default());
    let client = Client::connect(ClientConfig {
        reconnect: None,
        ..ClientConfig::new(fx.url())
    })
    .expect("connect");
    client.create_stream(&orders(2)).expect("create");
    let consumer = client
        .subscribe_stream("orders", ConsumerConfig::default())
        .expect("consumer");
    let answers = Arc::new(AtomicUsize::new(0));
    let lost = Arc::new(AtomicUsize::new(0));
    let mut queued = 0;
    for i in 0..200u32 {
        let (answers, lost) = (answers.clone(), lost.clone());
        let batch = [Publish::new("orders.eu", i.to_le_bytes().to_vec())];
        let sent = client.publish_records_with(&batch, move |outcome| {
            if matches!(outcome, Err(ClientError::Disconnected(_))) {
                lost.fetch_add(1, Ordering::SeqCst);
            }
            answers.fetch_add(1, Ordering::SeqCst);
        });
        if sent.is_ok() {
            queued += 1;
        }
        if i == 100 {
            fx.server.take().expect("server").stop(Duration::ZERO);
        }
    }
    let deadline = std::time::Instant::now() + WAIT;
    while answers.load(Ordering::SeqCst) < queued && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(
        answers.load(Ordering::SeqCst),
        queued,
        "each queued publish answered once"
    );
    assert!(queued >= 101, "publishes before the stop were sent");
    assert!(
        queued < 200,
        "publishes after the disconnect are refused at once"
    );
    // The consumer's end: its fd turns readable and `try_next` reports the loss once
    // the records it got are taken.
    let mut ended = false;
    for _ in 0..1000 {
        match consumer.try_next() {
            Ok(Some(_)) => continue,
            Ok(None) => std::thread::sleep(Duration::from_millis(1)),
            Err(_) => {
                ended = true;
                break;
            }
        }
    }
    assert!(ended, "the consumer reports the lost connection");
    assert!(consumer.arm(), "an ended consumer is always ready");
    assert!(
        lost.load(Ordering::SeqCst) + 101 >= queued,
        "publishes queued when the connection went are answered Disconnected"
    );
}
