#![allow(clippy::unwrap_used)]
// Scratch tests for the review. Delete before finishing.

use std::time::{Duration, Instant};

use ringbroker::runtime::{Runtime, RuntimeConfig};
use ringbroker::storage::Durability;
use ringbroker::stream::{AckPolicy, ConsumerConfig, Publish, StreamConfig, Streams};

fn runtime(shards: usize) -> Runtime {
    Runtime::start(RuntimeConfig {
        shards: Some(shards),
        ..RuntimeConfig::default()
    })
    .unwrap()
}

fn stream(name: &str, subjects: &[&str], partitions: u32) -> StreamConfig {
    StreamConfig {
        partitions,
        durability: Durability::None,
        ..StreamConfig::new(name, subjects)
    }
}

fn timers_fired(rt: &Runtime) -> u64 {
    rt.handle().stats().iter().map(|s| s.timers_fired).sum()
}

/// A durable consumer whose last member left with an unacked record: the partition
/// re-arms a zero-delay redelivery timer forever (busy loop).
#[test]
fn scratch_pending_without_member_spins() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(1);
    let streams = Streams::open(rt.handle(), dir.path()).unwrap();
    streams.create(stream("s", &["s.>"], 1)).unwrap();
    streams
        .create_consumer("s", ConsumerConfig::durable("g"))
        .unwrap();
    let c = streams.join("s", "g").unwrap();
    streams.publish(Publish::new("s.x", "a")).unwrap();
    let _m = c.next(Duration::from_secs(5)).unwrap(); // not acked
    drop(c);
    std::thread::sleep(Duration::from_millis(200));
    let before = timers_fired(&rt);
    std::thread::sleep(Duration::from_secs(1));
    let fired = timers_fired(&rt) - before;
    eprintln!("timers fired in 1 s with no member: {fired}");
    assert!(fired < 100, "busy loop: {fired} timers fired in 1 s");
}

/// Same, with a member that has a nak'd record due but no credit.
#[test]
fn scratch_due_without_credit_spins() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(1);
    let streams = Streams::open(rt.handle(), dir.path()).unwrap();
    streams.create(stream("s", &["s.>"], 1)).unwrap();
    let config = ConsumerConfig {
        max_ack_pending: 1,
        ..ConsumerConfig::default()
    };
    let c = streams.subscribe("s", config).unwrap();
    streams.publish(Publish::new("s.x", "a")).unwrap();
    streams.publish(Publish::new("s.x", "b")).unwrap();
    let a = c.next(Duration::from_secs(5)).unwrap();
    a.nak(Duration::ZERO).unwrap(); // releases the credit; "b" takes it or "a" again
    let _b = c.next(Duration::from_secs(5)).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let before = timers_fired(&rt);
    std::thread::sleep(Duration::from_secs(1));
    let fired = timers_fired(&rt) - before;
    eprintln!("timers fired in 1 s while starved: {fired}");
    assert!(fired < 100, "busy loop: {fired} timers fired in 1 s");
}

/// Batch durability: a publish in flight when the runtime shuts down never returns.
#[test]
fn scratch_batch_publish_hangs_at_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(1);
    let streams = Streams::open(rt.handle(), dir.path()).unwrap();
    let mut config = stream("b", &["b.>"], 1);
    config.durability = Durability::Batch {
        max_delay: Duration::from_secs(1),
        max_bytes: 1 << 20,
    };
    streams.create(config).unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let s2 = streams.clone();
    std::thread::spawn(move || {
        let r = s2.publish(Publish::new("b.x", "a"));
        let _ = tx.send(format!("{r:?}"));
    });
    std::thread::sleep(Duration::from_millis(100));
    let report = rt.shutdown();
    eprintln!("shutdown: {report:?}");
    let got = rx.recv_timeout(Duration::from_secs(5));
    eprintln!("publish answer: {got:?}");
    assert!(got.is_ok(), "publish never answered after shutdown");
}

/// ack_wait expiry re-pushes a record whose first copy is still buffered: the buffer
/// grows past max_ack_pending without bound while the app heartbeats.
#[test]
fn scratch_buffer_grows_past_credit() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(1);
    let streams = Streams::open(rt.handle(), dir.path()).unwrap();
    streams.create(stream("s", &["s.>"], 1)).unwrap();
    let config = ConsumerConfig {
        max_ack_pending: 5,
        ack_wait: Duration::from_millis(20),
        ..ConsumerConfig::default()
    };
    let c = streams.subscribe("s", config).unwrap();
    for i in 0..5 {
        streams
            .publish(Publish::new("s.x", format!("{i}")))
            .unwrap();
    }
    let until = Instant::now() + Duration::from_secs(1);
    while Instant::now() < until {
        c.heartbeat();
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut buffered = 0;
    while let Ok(Some(_)) = c.try_next() {
        buffered += 1;
    }
    eprintln!(
        "buffered {buffered} messages with max_ack_pending 5, in_flight {}",
        c.in_flight()
    );
    assert!(buffered <= 5, "buffer holds {buffered} > max_ack_pending");
}

/// AckPolicy::None: records buffered in a member when its partition moves are lost.
#[test]
fn scratch_ack_none_rebalance_loses_buffered_records() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(2);
    let streams = Streams::open(rt.handle(), dir.path()).unwrap();
    streams.create(stream("s", &["s.>"], 2)).unwrap();
    let config = ConsumerConfig {
        ack: AckPolicy::None,
        ..ConsumerConfig::durable("g")
    };
    streams.create_consumer("s", config).unwrap();
    let a = streams.join("s", "g").unwrap();
    let batch = (0..40u32)
        .map(|i| Publish::new("s.x", format!("{i}")).key(format!("k{i}")))
        .collect();
    for r in streams.publish_batch(batch).unwrap() {
        r.unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while a.in_flight() < 40 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    let b = streams.join("s", "g").unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let mut n = 0;
    while a.next(Duration::from_millis(300)).is_ok() {
        n += 1;
    }
    while b.next(Duration::from_millis(300)).is_ok() {
        n += 1;
    }
    eprintln!("delivered {n} of 40");
    assert_eq!(n, 40, "records lost in the rebalance");
}

/// Nak releases the credit, so pending grows past max_ack_pending without bound.
#[test]
fn scratch_nak_grows_pending_past_max_ack_pending() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(1);
    let streams = Streams::open(rt.handle(), dir.path()).unwrap();
    streams.create(stream("s", &["s.>"], 1)).unwrap();
    let config = ConsumerConfig {
        max_ack_pending: 2,
        ..ConsumerConfig::durable("g")
    };
    streams.create_consumer("s", config).unwrap();
    let c = streams.join("s", "g").unwrap();
    for i in 0..50 {
        streams
            .publish(Publish::new("s.x", format!("{i}")))
            .unwrap();
    }
    while let Ok(m) = c.next(Duration::from_millis(300)) {
        m.nak(Duration::from_secs(3600)).unwrap();
    }
    let info = streams.consumer_info("s", "g").unwrap();
    eprintln!(
        "pending {} with max_ack_pending 2",
        info.partitions[0].pending
    );
    assert!(info.partitions[0].pending <= 2);
}
