//! The streams model end to end through the public API, on a real runtime and disk:
//! the scenarios of the field (event log with replay, ordered processing by key with a
//! rebalance, offline catch-up across a restart, CQRS projectors, exactly-once with
//! dedup, redelivery and dead-lettering, retention) and the bad paths.

#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::time::{Duration, Instant};

use ringbroker::runtime::{Runtime, RuntimeConfig};
use ringbroker::storage::{Durability, Retention};
use ringbroker::stream::{
    AckPolicy, Consumer, ConsumerConfig, DeliverPolicy, Publish, StreamConfig, StreamError,
    StreamMessage, Streams, DEAD_DELIVERIES_HEADER, DEAD_OFFSET_HEADER, DEAD_REASON_HEADER,
};

fn runtime(shards: usize) -> Runtime {
    Runtime::start(RuntimeConfig {
        shards: Some(shards),
        ..RuntimeConfig::default()
    })
    .unwrap()
}

fn open(rt: &Runtime, dir: &Path) -> Streams {
    Streams::open(rt.handle(), dir).unwrap()
}

fn stream(name: &str, subjects: &[&str], partitions: u32) -> StreamConfig {
    StreamConfig {
        partitions,
        durability: Durability::None,
        ..StreamConfig::new(name, subjects)
    }
}

fn publish_n(streams: &Streams, subject: &str, range: std::ops::Range<u32>) {
    let batch = range
        .map(|i| Publish::new(subject, format!("{i}")))
        .collect();
    for result in streams.publish_batch(batch).unwrap() {
        result.unwrap();
    }
}

/// Every message that arrives within `quiet` of the previous one, acked.
fn drain(consumer: &Consumer, quiet: Duration) -> Vec<StreamMessage> {
    let mut got = Vec::new();
    while let Ok(message) = consumer.next(quiet) {
        message.ack().unwrap();
        got.push(message);
    }
    got
}

fn payloads(messages: &[StreamMessage]) -> Vec<u32> {
    messages
        .iter()
        .map(|m| std::str::from_utf8(&m.payload).unwrap().parse().unwrap())
        .collect()
}

const QUIET: Duration = Duration::from_millis(300);

#[test]
fn publish_consume_describe_and_list() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(2);
    let streams = open(&rt, dir.path());
    streams.create(stream("orders", &["orders.>"], 3)).unwrap();
    streams.create(stream("orders", &["orders.>"], 3)).unwrap(); // idempotent
    let ack = streams
        .publish(
            Publish::new("orders.eu.new", "hello")
                .key("c1")
                .header("h", "v"),
        )
        .unwrap();
    assert_eq!(
        (&*ack.stream, ack.offset, ack.duplicate),
        ("orders", 0, false)
    );
    let consumer = streams
        .subscribe("orders", ConsumerConfig::default())
        .unwrap();
    let message = consumer.next(Duration::from_secs(5)).unwrap();
    assert_eq!(message.subject_str(), "orders.eu.new");
    assert_eq!(&message.payload[..], b"hello");
    assert_eq!(message.key.as_deref(), Some(&b"c1"[..]));
    assert_eq!(message.header(b"h").map(|v| &v[..]), Some(&b"v"[..]));
    assert_eq!(
        (message.partition, message.delivery_count),
        (ack.partition, 1)
    );
    message.ack_sync().unwrap();
    assert_eq!(streams.list(), vec!["orders".to_owned()]);
    let info = streams.info("orders").unwrap();
    assert_eq!(info.partitions.len(), 3);
    let records: u64 = info.partitions.iter().map(|p| p.records).sum();
    assert_eq!(records, 1);
    assert!(info.partitions.iter().any(|p| p.bytes > 0));
}

#[test]
fn bad_definitions_and_publishes_get_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(1);
    let streams = open(&rt, dir.path());
    streams.create(stream("a", &["a.>"], 1)).unwrap();
    let overlap = streams.create(stream("b", &["*.x"], 1));
    assert!(
        matches!(overlap, Err(StreamError::SubjectOverlap { .. })),
        "{overlap:?}"
    );
    let differs = streams.create(stream("a", &["a.>"], 2));
    assert!(
        matches!(differs, Err(StreamError::AlreadyExists { .. })),
        "{differs:?}"
    );
    let grow = streams.update(stream("a", &["a.>"], 2));
    assert!(
        matches!(grow, Err(StreamError::Invalid { what: "update", .. })),
        "{grow:?}"
    );
    let none = streams.publish(Publish::new("nobody.here", "x"));
    assert!(matches!(none, Err(StreamError::NoStream(_))), "{none:?}");
    let wild = streams.publish(Publish::new("a.*", "x"));
    assert!(matches!(wild, Err(StreamError::Subject(_))), "{wild:?}");
    let reserved = streams.publish(Publish::new("a.b", "x").header("Rb-Subject", "y"));
    assert!(
        matches!(reserved, Err(StreamError::ReservedHeader(_))),
        "{reserved:?}"
    );
    let mut small = stream("a", &["a.>"], 1);
    small.max_record_bytes = 16;
    streams.update(small).unwrap();
    let big = streams.publish(Publish::new("a.b", vec![0u8; 64]));
    assert!(
        matches!(big, Err(StreamError::RecordTooLarge { .. })),
        "{big:?}"
    );
    assert!(matches!(
        streams.info("zz"),
        Err(StreamError::NotFound { .. })
    ));
    assert!(matches!(
        streams.join("a", "nobody"),
        Err(StreamError::NotFound { .. })
    ));
    streams.delete("a").unwrap();
    assert!(streams.list().is_empty());
    assert!(!dir.path().join("streams/a").exists());
}

#[test]
fn event_log_replay_three_groups_at_different_offsets() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(2);
    let streams = open(&rt, dir.path());
    streams.create(stream("events", &["events.>"], 1)).unwrap();
    publish_n(&streams, "events.x", 0..100);
    let durable = |name: &str, deliver| ConsumerConfig {
        deliver,
        ..ConsumerConfig::durable(name)
    };
    streams
        .create_consumer("events", durable("live", DeliverPolicy::New))
        .unwrap();
    streams
        .create_consumer("events", durable("catchup", DeliverPolicy::Offset(60)))
        .unwrap();
    streams
        .create_consumer("events", durable("replay", DeliverPolicy::All))
        .unwrap();
    publish_n(&streams, "events.x", 100..150);
    let live = streams.join("events", "live").unwrap();
    let catchup = streams.join("events", "catchup").unwrap();
    let replay = streams.join("events", "replay").unwrap();
    assert_eq!(
        payloads(&drain(&live, QUIET)),
        (100..150).collect::<Vec<_>>()
    );
    assert_eq!(
        payloads(&drain(&catchup, QUIET)),
        (60..150).collect::<Vec<_>>()
    );
    assert_eq!(
        payloads(&drain(&replay, QUIET)),
        (0..150).collect::<Vec<_>>()
    );
    // CQRS: each group keeps its own position.
    let info = streams.consumer_info("events", "catchup").unwrap();
    assert_eq!(
        (info.partitions[0].next_offset, info.partitions[0].pending),
        (150, 0)
    );
}

#[test]
fn ordered_keys_stay_in_order_across_a_rebalance() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(2);
    let streams = open(&rt, dir.path());
    streams.create(stream("orders", &["orders.>"], 3)).unwrap();
    streams
        .create_consumer("orders", ConsumerConfig::durable("billing"))
        .unwrap();
    let keys: Vec<String> = (0..20).map(|k| format!("customer-{k}")).collect();
    let publish_round = |round: u32| {
        let batch = keys
            .iter()
            .map(|k| Publish::new("orders.placed", format!("{round}")).key(k.clone()))
            .collect();
        for r in streams.publish_batch(batch).unwrap() {
            r.unwrap();
        }
    };
    let a = streams.join("orders", "billing").unwrap();
    let b = streams.join("orders", "billing").unwrap();
    for round in 0..20 {
        publish_round(round);
    }
    let mut seen: HashMap<(u64, String), Vec<u32>> = HashMap::new();
    let mut record = |member: &Consumer, messages: Vec<StreamMessage>| {
        for m in messages {
            let key = String::from_utf8(m.key.clone().unwrap().to_vec()).unwrap();
            let round: u32 = std::str::from_utf8(&m.payload).unwrap().parse().unwrap();
            seen.entry((member.member_id(), key))
                .or_default()
                .push(round);
        }
    };
    record(&a, drain(&a, QUIET));
    record(&b, drain(&b, QUIET));
    let c = streams.join("orders", "billing").unwrap();
    for round in 20..40 {
        publish_round(round);
    }
    for member in [&a, &b, &c] {
        record(member, drain(member, QUIET));
    }
    let mut by_key: BTreeMap<String, Vec<u32>> = BTreeMap::new();
    for ((_, key), rounds) in &seen {
        assert!(
            rounds.windows(2).all(|w| w[0] < w[1]),
            "{key} out of order: {rounds:?}"
        );
        by_key.entry(key.clone()).or_default().extend(rounds);
    }
    for key in ["customer-3", "customer-7"] {
        let members = seen.keys().filter(|(_, k)| k == key).count();
        assert!(members <= 2, "{key} read by {members} members");
    }
    for (key, mut rounds) in by_key {
        rounds.sort_unstable();
        rounds.dedup();
        assert_eq!(rounds, (0..40).collect::<Vec<_>>(), "{key} lost records");
    }
    assert!(
        seen.keys().any(|(m, _)| *m == c.member_id()),
        "the new member got no partition"
    );
}

#[test]
fn offline_consumer_resumes_after_its_last_ack_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    {
        let rt = runtime(2);
        let streams = open(&rt, dir.path());
        let mut config = stream("log", &["log.>"], 2);
        config.durability = Durability::Always;
        streams.create(config).unwrap();
        streams
            .create_consumer("log", ConsumerConfig::durable("worker"))
            .unwrap();
        publish_n(&streams, "log.a", 0..50);
        let worker = streams.join("log", "worker").unwrap();
        let got = drain(&worker, QUIET);
        assert_eq!(got.len(), 50);
        // One delivered but never acked: it must come back after the restart.
        publish_n(&streams, "log.a", 50..51);
        let unacked = worker.next(Duration::from_secs(5)).unwrap();
        assert_eq!(payloads(&[unacked]), vec![50]);
        drop(worker);
        publish_n(&streams, "log.a", 51..80);
        rt.shutdown().unwrap(); // positions still waiting for their timer are written
    }
    let rt = runtime(2);
    let streams = open(&rt, dir.path());
    assert_eq!(streams.consumers("log"), vec!["worker".to_owned()]);
    let worker = streams.join("log", "worker").unwrap();
    let mut got = payloads(&drain(&worker, QUIET));
    got.sort_unstable();
    assert_eq!(got, (50..80).collect::<Vec<_>>());
}

#[test]
fn exactly_once_with_dedup_also_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let first = {
        let rt = runtime(2);
        let streams = open(&rt, dir.path());
        streams.create(stream("pay", &["pay.>"], 4)).unwrap();
        let send = || streams.publish(Publish::new("pay.in", "100 EUR").msg_id("tx-1"));
        let first = send().unwrap();
        let retry = send().unwrap();
        assert!(!first.duplicate && retry.duplicate);
        assert_eq!(
            (retry.partition, retry.offset),
            (first.partition, first.offset)
        );
        // Duplicates inside one batch are stored once too.
        let batch = vec![
            Publish::new("pay.in", "a").msg_id("tx-2"),
            Publish::new("pay.in", "a").msg_id("tx-2"),
        ];
        let acks: Vec<_> = streams
            .publish_batch(batch)
            .unwrap()
            .into_iter()
            .map(Result::unwrap)
            .collect();
        assert_eq!(acks[0].offset, acks[1].offset);
        assert!(acks[1].duplicate);
        rt.shutdown().unwrap();
        first
    };
    let rt = runtime(2);
    let streams = open(&rt, dir.path());
    let again = streams
        .publish(Publish::new("pay.in", "100 EUR").msg_id("tx-1"))
        .unwrap();
    assert!(again.duplicate);
    assert_eq!(
        (again.partition, again.offset),
        (first.partition, first.offset)
    );
    let consumer = streams.subscribe("pay", ConsumerConfig::default()).unwrap();
    let got = drain(&consumer, QUIET);
    assert_eq!(got.len(), 2, "one copy of each id");
}

#[test]
fn unacked_records_come_back_and_give_up_into_the_dead_letter_stream() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(2);
    let streams = open(&rt, dir.path());
    streams.create(stream("dlq", &["dead.>"], 1)).unwrap();
    let mut jobs = stream("jobs", &["jobs.>"], 1);
    jobs.dead_letter = Some("dlq".into());
    streams.create(jobs).unwrap();
    let config = ConsumerConfig {
        ack_wait: Duration::from_millis(200),
        max_deliver: Some(2),
        ..ConsumerConfig::default()
    };
    let worker = streams.subscribe("jobs", config).unwrap();
    publish_n(&streams, "jobs.resize", 0..1);
    let first = worker.next(Duration::from_secs(5)).unwrap();
    assert_eq!(first.delivery_count, 1);
    let second = worker.next(Duration::from_secs(5)).unwrap(); // not acked: back after ack_wait
    assert_eq!((second.offset, second.delivery_count), (first.offset, 2));
    assert!(
        worker.next(Duration::from_millis(600)).is_err(),
        "max_deliver exceeded"
    );
    let dead = streams.subscribe("dlq", ConsumerConfig::default()).unwrap();
    let letter = dead.next(Duration::from_secs(5)).unwrap();
    assert_eq!(&letter.payload[..], b"0");
    assert_eq!(letter.subject_str(), "jobs.resize");
    assert_eq!(
        letter.header(DEAD_REASON_HEADER).map(|v| &v[..]),
        Some(&b"max_deliver"[..])
    );
    assert_eq!(
        letter.header(DEAD_OFFSET_HEADER).map(|v| &v[..]),
        Some(&b"0"[..])
    );
    assert_eq!(
        letter.header(DEAD_DELIVERIES_HEADER).map(|v| &v[..]),
        Some(&b"2"[..])
    );
}

#[test]
fn nak_with_a_delay_redelivers_after_the_delay() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(1);
    let streams = open(&rt, dir.path());
    streams.create(stream("s", &["s.>"], 1)).unwrap();
    let worker = streams.subscribe("s", ConsumerConfig::default()).unwrap();
    publish_n(&streams, "s.x", 0..1);
    let first = worker.next(Duration::from_secs(5)).unwrap();
    let naked = Instant::now();
    first.nak(Duration::from_secs(5)).unwrap();
    let again = worker.next(Duration::from_secs(10)).unwrap();
    assert!(
        naked.elapsed() >= Duration::from_secs(5),
        "came back after {:?}",
        naked.elapsed()
    );
    assert_eq!((again.offset, again.delivery_count), (first.offset, 2));
}

#[test]
fn max_ack_pending_holds_back_deliveries_until_acks() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(2);
    let streams = open(&rt, dir.path());
    streams.create(stream("s", &["s.>"], 2)).unwrap();
    publish_n(&streams, "s.x", 0..20);
    let config = ConsumerConfig {
        max_ack_pending: 5,
        ..ConsumerConfig::default()
    };
    let worker = streams.subscribe("s", config).unwrap();
    let mut held = Vec::new();
    while let Ok(m) = worker.next(QUIET) {
        held.push(m);
    }
    assert_eq!(held.len(), 5, "five in flight at most");
    worker.ack_all(&held).unwrap();
    let rest = drain(&worker, QUIET);
    assert_eq!(rest.len(), 15);
}

#[test]
fn filters_and_ack_policy_none() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(2);
    let streams = open(&rt, dir.path());
    streams.create(stream("s", &["s.>"], 2)).unwrap();
    for i in 0..40u32 {
        let subject = if i % 2 == 0 { "s.even" } else { "s.odd" };
        streams
            .publish(Publish::new(subject, format!("{i}")).key("k"))
            .unwrap();
    }
    let config = ConsumerConfig {
        filter: Some("s.even".into()),
        ack: AckPolicy::None,
        max_ack_pending: 3,
        ..ConsumerConfig::default()
    };
    let even = streams.subscribe("s", config).unwrap();
    let got = payloads(&drain(&even, QUIET));
    assert_eq!(got, (0..40).step_by(2).collect::<Vec<_>>());
}

#[test]
fn a_member_that_stops_heartbeating_loses_its_partitions() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(2);
    let streams = open(&rt, dir.path());
    streams.create(stream("s", &["s.>"], 2)).unwrap();
    let config = ConsumerConfig {
        heartbeat_timeout: Duration::from_millis(300),
        ..ConsumerConfig::durable("g")
    };
    streams.create_consumer("s", config).unwrap();
    let silent = streams.join("s", "g").unwrap();
    let alive = streams.join("s", "g").unwrap();
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut got = Vec::new();
    publish_n(&streams, "s.x", 0..40);
    while Instant::now() < deadline && got.len() < 40 {
        got.extend(drain(&alive, Duration::from_millis(100)));
    }
    assert!(silent.was_evicted(), "the silent member was not evicted");
    let mut all = payloads(&got);
    all.sort_unstable();
    assert_eq!(all, (0..40).collect::<Vec<_>>());
}

#[test]
fn retention_removes_old_segments_and_consumers_skip_with_a_notice() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(1);
    let streams = open(&rt, dir.path());
    let mut config = stream("r", &["r.>"], 1);
    config.segment_bytes_max = 4096;
    config.retention = Retention {
        max_records: Some(100),
        ..Retention::default()
    };
    streams.create(config).unwrap();
    streams
        .create_consumer("r", ConsumerConfig::durable("slow"))
        .unwrap();
    for chunk in 0..10 {
        let batch = (chunk * 100..chunk * 100 + 100)
            .map(|i| Publish::new("r.x", vec![b'x'; 100 + (i % 2) as usize]))
            .collect();
        for r in streams.publish_batch(batch).unwrap() {
            r.unwrap();
        }
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    let first = loop {
        let first = streams.info("r").unwrap().partitions[0].first_offset;
        if first > 0 || Instant::now() > deadline {
            break first;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(first >= 800, "retention kept from {first}");
    let slow = streams.join("r", "slow").unwrap();
    let got = drain(&slow, QUIET);
    assert_eq!(got[0].offset, first);
    assert_eq!(got[0].skipped, Some(0..first));
    assert_eq!(got.len() as u64, 1000 - first);
}

#[test]
fn a_revoked_partition_is_not_handed_out_by_its_old_member() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(2);
    let streams = open(&rt, dir.path());
    streams.create(stream("s", &["s.>"], 2)).unwrap();
    streams
        .create_consumer("s", ConsumerConfig::durable("g"))
        .unwrap();
    let a = streams.join("s", "g").unwrap();
    let batch = (0..40u32)
        .map(|i| Publish::new("s.x", format!("{i}")).key(format!("k{i}")))
        .collect();
    for r in streams.publish_batch(batch).unwrap() {
        r.unwrap();
    }
    // Let `a` buffer records of both partitions without taking them.
    let deadline = Instant::now() + Duration::from_secs(5);
    while a.in_flight() < 40 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(a.in_flight(), 40);
    let b = streams.join("s", "g").unwrap(); // partition 1 moves to b
    std::thread::sleep(Duration::from_millis(200));
    let from_a = drain(&a, QUIET);
    let from_b = drain(&b, QUIET);
    assert!(
        from_a.iter().all(|m| m.partition == 0),
        "a handed out a revoked record"
    );
    assert!(from_b.iter().all(|m| m.partition == 1));
    assert!(
        from_b.iter().all(|m| m.delivery_count == 2),
        "b's records are redeliveries"
    );
    assert_eq!(from_a.len() + from_b.len(), 40);
}

#[test]
fn a_durable_group_that_emptied_serves_a_member_that_rejoins() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(2);
    let streams = open(&rt, dir.path());
    streams.create(stream("s", &["s.>"], 2)).unwrap();
    streams
        .create_consumer("s", ConsumerConfig::durable("g"))
        .unwrap();
    let a = streams.join("s", "g").unwrap();
    publish_n(&streams, "s.x", 0..10);
    assert_eq!(drain(&a, QUIET).len(), 10);
    drop(a);
    std::thread::sleep(Duration::from_millis(100));
    let b = streams.join("s", "g").unwrap();
    publish_n(&streams, "s.x", 10..20);
    let mut got = payloads(&drain(&b, QUIET));
    got.sort_unstable();
    assert_eq!(got, (10..20).collect::<Vec<_>>());
}

#[test]
fn an_idle_consumer_with_records_due_does_not_spin_timers() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(2);
    let streams = open(&rt, dir.path());
    streams.create(stream("s", &["s.>"], 2)).unwrap();
    streams
        .create_consumer("s", ConsumerConfig::durable("g"))
        .unwrap();
    let config = ConsumerConfig {
        max_ack_pending: 1,
        ..ConsumerConfig::default()
    };
    let starved = streams.subscribe("s", config).unwrap();
    let member = streams.join("s", "g").unwrap();
    publish_n(&streams, "s.x", 0..10);
    let held = member.next(Duration::from_secs(5)).unwrap(); // never acked
    drop(member); // its pending record is due at once, for nobody
    let first = starved.next(Duration::from_secs(5)).unwrap();
    first.nak(Duration::from_millis(100)).unwrap(); // due again soon; no other credit
    let fired = |rt: &Runtime| -> u64 { rt.handle().stats().iter().map(|s| s.timers_fired).sum() };
    let before = fired(&rt);
    std::thread::sleep(Duration::from_secs(1));
    let during = fired(&rt) - before;
    assert!(during < 50, "{during} timers fired in a second of idling");
    drop(held);
}

#[test]
fn a_publish_pending_at_shutdown_is_answered() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(2);
    let streams = open(&rt, dir.path());
    let mut config = stream("slow", &["slow.>"], 2);
    config.durability = Durability::Batch {
        max_delay: Duration::from_secs(1),
        max_bytes: 1 << 30,
    };
    streams.create(config).unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let publisher = streams.clone();
    std::thread::spawn(move || {
        let _ = tx.send(publisher.publish_batch(vec![Publish::new("slow.x", "a"); 4]));
    });
    std::thread::sleep(Duration::from_millis(100));
    rt.shutdown().unwrap();
    let answer = rx
        .recv_timeout(Duration::from_secs(5))
        .expect("publish hung at shutdown");
    // Not stored (the group never started): every record says so.
    match answer {
        Ok(results) => assert!(results
            .iter()
            .all(|r| matches!(r, Err(StreamError::ShuttingDown)))),
        Err(error) => assert!(matches!(error, StreamError::ShuttingDown), "{error:?}"),
    }
}

#[test]
fn ack_policy_none_loses_nothing_when_a_partition_moves() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(2);
    let streams = open(&rt, dir.path());
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
    let mut got = payloads(&drain(&a, QUIET));
    got.extend(payloads(&drain(&b, QUIET)));
    got.sort_unstable();
    assert_eq!(
        got,
        (0..40).collect::<Vec<_>>(),
        "at most once, but nothing lost"
    );
}

#[test]
fn ack_wait_does_not_stack_copies_the_application_has_not_taken() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(1);
    let streams = open(&rt, dir.path());
    streams.create(stream("s", &["s.>"], 1)).unwrap();
    let config = ConsumerConfig {
        max_ack_pending: 5,
        ack_wait: Duration::from_millis(20),
        ..ConsumerConfig::default()
    };
    let slow = streams.subscribe("s", config).unwrap();
    publish_n(&streams, "s.x", 0..20);
    for _ in 0..10 {
        slow.heartbeat();
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut buffered = Vec::new();
    while let Ok(Some(m)) = slow.try_next() {
        buffered.push(m);
    }
    assert_eq!(payloads(&buffered), vec![0, 1, 2, 3, 4]);
    assert!(buffered.iter().all(|m| m.delivery_count == 1));
}

#[test]
fn naks_keep_their_credit_so_pending_stays_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(1);
    let streams = open(&rt, dir.path());
    streams.create(stream("s", &["s.>"], 1)).unwrap();
    let config = ConsumerConfig {
        max_ack_pending: 2,
        ..ConsumerConfig::durable("g")
    };
    streams.create_consumer("s", config).unwrap();
    let worker = streams.join("s", "g").unwrap();
    publish_n(&streams, "s.x", 0..50);
    while let Ok(m) = worker.next(Duration::from_millis(200)) {
        m.nak(Duration::from_secs(3600)).unwrap();
    }
    let info = streams.consumer_info("s", "g").unwrap();
    assert_eq!(info.partitions[0].pending, 2);
}

#[test]
fn a_batch_larger_than_one_log_batch_is_stored_in_several() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(1);
    let streams = open(&rt, dir.path());
    streams.create(stream("big", &["big.>"], 1)).unwrap();
    let payload = bytes::Bytes::from(vec![7u8; (1 << 20) - 64]);
    let batch = vec![Publish::new("big.x", payload); 100]; // ~100 MiB, one partition
    let results = streams.publish_batch(batch).unwrap();
    let offsets: Vec<u64> = results.into_iter().map(|r| r.unwrap().offset).collect();
    assert_eq!(offsets, (0..100).collect::<Vec<_>>());
}

#[test]
fn a_member_joining_mid_stream_takes_partitions_without_loss_or_reordering() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(2);
    let streams = open(&rt, dir.path());
    streams.create(stream("orders", &["orders.>"], 3)).unwrap();
    streams
        .create_consumer("orders", ConsumerConfig::durable("billing"))
        .unwrap();
    let run = |name: &'static str, delay: Duration| {
        let streams = streams.clone();
        std::thread::spawn(move || {
            std::thread::sleep(delay);
            let member = streams.join("orders", "billing").unwrap();
            let mut seen: Vec<(String, u32)> = Vec::new();
            while let Ok(m) = member.next(Duration::from_millis(500)) {
                let key = String::from_utf8(m.key.clone().unwrap().to_vec()).unwrap();
                seen.push((
                    key,
                    std::str::from_utf8(&m.payload).unwrap().parse().unwrap(),
                ));
                std::thread::sleep(Duration::from_millis(1)); // a consumer that works
                m.ack().unwrap();
            }
            (name, seen)
        })
    };
    let members = [
        run("a", Duration::ZERO),
        run("b", Duration::ZERO),
        run("c", Duration::from_millis(150)),
    ];
    for round in 0..60u32 {
        let batch = (0..10)
            .map(|k| Publish::new("orders.placed", format!("{round}")).key(format!("customer-{k}")))
            .collect();
        for r in streams.publish_batch(batch).unwrap() {
            r.unwrap();
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let mut union: BTreeMap<String, Vec<u32>> = BTreeMap::new();
    let mut joined_late_got = 0;
    for handle in members {
        let (name, seen) = handle.join().unwrap();
        let mut per_key: BTreeMap<String, Vec<u32>> = BTreeMap::new();
        for (key, round) in seen {
            per_key.entry(key).or_default().push(round);
        }
        for (key, rounds) in per_key {
            // Redeliveries may repeat what came before; what is new to a member comes
            // in publish order.
            let first_seen: Vec<u32> = {
                let mut s = std::collections::BTreeSet::new();
                rounds.iter().copied().filter(|r| s.insert(*r)).collect()
            };
            assert!(
                first_seen.windows(2).all(|w| w[0] < w[1]),
                "{name}/{key} reordered: {rounds:?}"
            );
            if name == "c" {
                joined_late_got += rounds.len();
            }
            union.entry(key).or_default().extend(rounds);
        }
    }
    assert!(joined_late_got > 0, "the member that joined got nothing");
    for (key, mut rounds) in union {
        rounds.sort_unstable();
        rounds.dedup();
        assert_eq!(rounds, (0..60).collect::<Vec<_>>(), "{key} lost records");
    }
}

#[test]
fn deliver_by_time_and_deletes_persist_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    {
        let rt = runtime(1);
        let streams = open(&rt, dir.path());
        streams.create(stream("t", &["t.>"], 1)).unwrap();
        streams.create(stream("gone", &["gone.>"], 1)).unwrap();
        publish_n(&streams, "t.x", 0..10);
        std::thread::sleep(Duration::from_millis(20));
        let since = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64;
        std::thread::sleep(Duration::from_millis(20));
        publish_n(&streams, "t.x", 10..15);
        let config = ConsumerConfig {
            deliver: DeliverPolicy::Time(since),
            ..ConsumerConfig::default()
        };
        let recent = streams.subscribe("t", config).unwrap();
        assert_eq!(
            payloads(&drain(&recent, QUIET)),
            (10..15).collect::<Vec<_>>()
        );
        streams.delete("gone").unwrap();
        rt.shutdown().unwrap();
    }
    let rt = runtime(1);
    let streams = open(&rt, dir.path());
    assert_eq!(streams.list(), vec!["t".to_owned()]);
    assert_eq!(streams.info("t").unwrap().partitions[0].records, 15);
    assert!(matches!(
        streams.publish(Publish::new("gone.x", "x")),
        Err(StreamError::NoStream(_))
    ));
}
