//! The exchanges-and-queues model end to end through the public API, on a real runtime
//! and disk: the patterns of the RabbitMQ tutorials and the field (task queue, fair
//! dispatch, fanout, topic and headers routing, dead-letter queues and a retry loop
//! built from TTL and DLX, max-length overflow, priorities, publisher confirms and
//! mandatory returns, restart with unacknowledged persistent messages).

#![allow(clippy::unwrap_used)]

use std::collections::HashSet;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use ringbroker::queue::{
    ConsumeOptions, DeathReason, Delivery, ExchangeConfig, ExchangeKind, Message, Overflow,
    QueueArgs, QueueConfig, QueueConsumer, QueueError, Queues,
};
use ringbroker::runtime::{Runtime, RuntimeConfig};

fn runtime(shards: usize) -> Runtime {
    Runtime::start(RuntimeConfig {
        shards: Some(shards),
        ..RuntimeConfig::default()
    })
    .unwrap()
}

fn open(rt: &Runtime, dir: &Path) -> Queues {
    Queues::open(rt.handle(), dir).unwrap()
}

fn queue(q: &Queues, name: &str) {
    q.declare_queue(QueueConfig::new(name)).unwrap();
}

fn send(q: &Queues, exchange: &str, key: &str, payload: &str) {
    q.publish(
        exchange,
        key,
        Message::persistent(payload.to_owned()),
        false,
    )
    .unwrap();
}

/// `n` persistent copies of `payload` for `queue`, through the default exchange.
fn copies(queue: &str, payload: &Bytes, n: usize) -> Vec<(String, String, Message)> {
    (0..n)
        .map(|_| {
            (
                String::new(),
                queue.to_owned(),
                Message::persistent(payload.clone()),
            )
        })
        .collect()
}

/// Consumer options with acknowledgements and `prefetch`.
fn acked(prefetch: u32) -> ConsumeOptions {
    ConsumeOptions {
        prefetch,
        no_ack: false,
    }
}

fn text(d: &Delivery) -> String {
    String::from_utf8(d.payload.to_vec()).unwrap()
}

const QUIET: Duration = Duration::from_millis(300);

/// Everything that arrives within `QUIET` of the previous delivery, acked.
fn drain(c: &QueueConsumer) -> Vec<Delivery> {
    let mut got = Vec::new();
    while let Ok(d) = c.next(QUIET) {
        c.ack(d.delivery_tag, false).unwrap();
        got.push(d);
    }
    got
}

#[test]
fn simple_task_queue_each_task_processed_once_by_three_workers() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(2);
    let q = open(&rt, dir.path());
    queue(&q, "tasks");
    // The workers subscribe before the tasks arrive, so each is given its prefetch of
    // 10 at once, however late its thread starts draining.
    let consumers: Vec<_> = (0..3)
        .map(|_| q.consume("tasks", acked(10)).unwrap())
        .collect();
    let batch = (0..1000)
        .map(|i| {
            (
                String::new(),
                "tasks".to_owned(),
                Message::persistent(format!("{i}")),
            )
        })
        .collect();
    for confirm in q.publish_batch(batch, true).unwrap() {
        assert_eq!(confirm.unwrap().queues, 1);
    }
    let seen = Arc::new(Mutex::new(Vec::new()));
    let workers: Vec<_> = consumers
        .into_iter()
        .map(|c| {
            let seen = seen.clone();
            std::thread::spawn(move || {
                let got = drain(&c);
                seen.lock().unwrap().extend(got.iter().map(text));
                got.len()
            })
        })
        .collect();
    let counts: Vec<usize> = workers.into_iter().map(|w| w.join().unwrap()).collect();
    let all = seen.lock().unwrap().clone();
    let unique: HashSet<&String> = all.iter().collect();
    assert_eq!(
        (all.len(), unique.len()),
        (1000, 1000),
        "each task exactly once"
    );
    // How much more each gets depends on how the threads are scheduled (a loaded
    // machine may run one late): the round-robin itself is checked by
    // `competing_consumers_take_turns` without threads.
    assert!(
        counts.iter().all(|&c| c >= 10),
        "every worker got at least its prefetch: {counts:?}"
    );
    let info = q.queue_info("tasks").unwrap();
    assert_eq!((info.messages, info.unacked), (0, 0));
}

#[test]
fn competing_consumers_take_turns() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(2);
    let q = open(&rt, dir.path());
    queue(&q, "turns");
    let consumers: Vec<_> = (0..3)
        .map(|_| q.consume("turns", acked(100)).unwrap())
        .collect();
    for i in 0..30 {
        send(&q, "", "turns", &i.to_string());
    }
    let got: Vec<Vec<String>> = consumers
        .iter()
        .map(|c| drain(c).iter().map(text).collect())
        .collect();
    let sizes: Vec<usize> = got.iter().map(Vec::len).collect();
    assert_eq!(sizes, [10, 10, 10], "an equal share each: {got:?}");
    // In turn: the first consumer takes every third message from where it started.
    for share in &got {
        let numbers: Vec<u32> = share.iter().map(|t| t.parse().unwrap()).collect();
        assert!(
            numbers.windows(2).all(|w| w[1] == w[0] + 3),
            "turns of three: {numbers:?}"
        );
    }
}

#[test]
fn fair_dispatch_with_prefetch_one_favours_the_fast_worker() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(2);
    let q = open(&rt, dir.path());
    queue(&q, "work");
    let slow = q.consume("work", acked(1)).unwrap();
    let fast = q.consume("work", acked(1)).unwrap();
    send(&q, "", "work", "0"); // the first consumer's turn
    let first_slow = slow.next(Duration::from_secs(5)).unwrap(); // held: the slow one is busy
    for i in 1..40 {
        send(&q, "", "work", &format!("{i}"));
    }
    let fast_got = drain(&fast);
    slow.ack(first_slow.delivery_tag, false).unwrap();
    let slow_rest = drain(&slow);
    assert_eq!(fast_got.len() + slow_rest.len() + 1, 40);
    assert_eq!(
        fast_got.len(),
        39,
        "the busy worker got nothing until it acked"
    );
}

#[test]
fn fanout_reaches_every_bound_queue_with_its_own_acks() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(2);
    let q = open(&rt, dir.path());
    q.declare_exchange(ExchangeConfig::new("logs", ExchangeKind::Fanout))
        .unwrap();
    for name in ["a", "b", "c"] {
        queue(&q, name);
        q.bind_queue(name, "logs", "", Vec::new()).unwrap();
    }
    assert_eq!(
        q.publish("logs", "whatever", Message::new("x"), true)
            .unwrap()
            .queues,
        3
    );
    let a = q.consume("a", ConsumeOptions::default()).unwrap();
    let b = q.consume("b", ConsumeOptions::default()).unwrap();
    assert_eq!(drain(&a).len(), 1);
    let held = b.next(Duration::from_secs(5)).unwrap();
    assert_eq!(q.queue_info("a").unwrap().unacked, 0);
    assert_eq!(q.queue_info("b").unwrap().unacked, 1);
    assert_eq!(q.queue_info("c").unwrap().messages, 1);
    b.ack(held.delivery_tag, false).unwrap();
}

#[test]
fn topic_routing_counts_as_in_the_tutorial() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(2);
    let q = open(&rt, dir.path());
    q.declare_exchange(ExchangeConfig::new("events", ExchangeKind::Topic))
        .unwrap();
    for (name, key) in [
        ("all", "#"),
        ("orders", "order.*"),
        ("payments", "payment.processed.*"),
        ("us", "user.*.us"),
    ] {
        queue(&q, name);
        q.bind_queue(name, "events", key, Vec::new()).unwrap();
    }
    for key in [
        "order.placed",
        "order.shipped",
        "payment.processed.high",
        "user.registered",
        "user.registered.us",
    ] {
        q.publish("events", key, Message::new(key.to_owned()), false)
            .unwrap();
    }
    let count = |name: &str| q.queue_info(name).unwrap().messages;
    assert_eq!(
        (
            count("all"),
            count("orders"),
            count("payments"),
            count("us")
        ),
        (5, 2, 1, 1)
    );
    queue(&q, "zero");
    q.bind_queue("zero", "events", "order.#", Vec::new())
        .unwrap();
    q.publish("events", "order", Message::new("bare"), false)
        .unwrap();
    assert_eq!(count("zero"), 1, "# matches zero words");
}

#[test]
fn headers_exchange_all_and_any() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(2);
    let q = open(&rt, dir.path());
    q.declare_exchange(ExchangeConfig::new("h", ExchangeKind::Headers))
        .unwrap();
    let args = |m: &'static str| {
        vec![
            (
                Bytes::from_static(b"x-match"),
                Bytes::from_static(m.as_bytes()),
            ),
            (Bytes::from_static(b"format"), Bytes::from_static(b"pdf")),
            (Bytes::from_static(b"type"), Bytes::from_static(b"report")),
        ]
    };
    queue(&q, "all");
    queue(&q, "any");
    q.bind_queue("all", "h", "", args("all")).unwrap();
    q.bind_queue("any", "h", "", args("any")).unwrap();
    let both = Message::new("1")
        .header("format", "pdf")
        .header("type", "report");
    let one = Message::new("2")
        .header("format", "pdf")
        .header("type", "log");
    assert_eq!(q.publish("h", "", both, false).unwrap().queues, 2);
    assert_eq!(q.publish("h", "", one, false).unwrap().queues, 1);
    assert!(matches!(
        q.publish("h", "", Message::new("3"), true),
        Err(QueueError::Unroutable)
    ));
}

fn dlx_setup(q: &Queues) {
    q.declare_exchange(ExchangeConfig::new("dlx", ExchangeKind::Fanout))
        .unwrap();
    queue(q, "dead");
    q.bind_queue("dead", "dlx", "", Vec::new()).unwrap();
}

#[test]
fn nack_without_requeue_dead_letters_with_a_death_record() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(2);
    let q = open(&rt, dir.path());
    dlx_setup(&q);
    let mut work = QueueConfig::new("work");
    work.args.dead_letter_exchange = Some("dlx".into());
    q.declare_queue(work).unwrap();
    send(&q, "", "work", "bad job");
    let c = q.consume("work", ConsumeOptions::default()).unwrap();
    let d = c.next(Duration::from_secs(5)).unwrap();
    c.nack(d.delivery_tag, false, false).unwrap();
    let dead = q.consume("dead", ConsumeOptions::default()).unwrap();
    let letter = dead.next(Duration::from_secs(5)).unwrap();
    assert_eq!(text(&letter), "bad job");
    let death = &letter.properties.deaths[0];
    assert_eq!(
        (death.queue.as_str(), death.reason, death.count),
        ("work", DeathReason::Rejected, 1)
    );
    assert_eq!(death.routing_keys, vec!["work".to_owned()]);
}

#[test]
fn a_retry_loop_from_a_ttl_wait_queue_redelivers_after_the_ttl() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(2);
    let q = open(&rt, dir.path());
    q.declare_exchange(ExchangeConfig::new("retry", ExchangeKind::Direct))
        .unwrap();
    q.declare_exchange(ExchangeConfig::new("work-x", ExchangeKind::Direct))
        .unwrap();
    let mut work = QueueConfig::new("work");
    work.args.dead_letter_exchange = Some("retry".into());
    q.declare_queue(work).unwrap();
    q.bind_queue("work", "work-x", "job", Vec::new()).unwrap();
    let mut wait = QueueConfig::new("wait");
    wait.args.message_ttl = Some(Duration::from_millis(300));
    wait.args.dead_letter_exchange = Some("work-x".into());
    q.declare_queue(wait).unwrap();
    q.bind_queue("wait", "retry", "job", Vec::new()).unwrap();
    q.publish("work-x", "job", Message::persistent("flaky"), true)
        .unwrap();
    let c = q.consume("work", ConsumeOptions::default()).unwrap();
    let first = c.next(Duration::from_secs(5)).unwrap();
    let failed_at = std::time::Instant::now();
    c.reject(first.delivery_tag, false).unwrap(); // to the wait queue, no consumer there
    let again = c.next(Duration::from_secs(5)).unwrap();
    assert!(
        failed_at.elapsed() >= Duration::from_millis(250),
        "back after {:?}",
        failed_at.elapsed()
    );
    assert_eq!(text(&again), "flaky");
    let reasons: Vec<(String, DeathReason)> = again
        .properties
        .deaths
        .iter()
        .map(|d| (d.queue.clone(), d.reason))
        .collect();
    assert_eq!(
        reasons,
        vec![
            ("wait".into(), DeathReason::Expired),
            ("work".into(), DeathReason::Rejected)
        ]
    );
    c.ack(again.delivery_tag, false).unwrap();
}

#[test]
fn max_length_drop_head_dead_letters_the_oldest_and_reject_publish_refuses() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(2);
    let q = open(&rt, dir.path());
    dlx_setup(&q);
    let mut capped = QueueConfig::new("capped");
    capped.args = QueueArgs {
        max_length: Some(3),
        dead_letter_exchange: Some("dlx".into()),
        ..QueueArgs::default()
    };
    q.declare_queue(capped).unwrap();
    for i in 0..5 {
        send(&q, "", "capped", &format!("{i}"));
    }
    let c = q.consume("capped", ConsumeOptions::default()).unwrap();
    assert_eq!(
        drain(&c).iter().map(text).collect::<Vec<_>>(),
        ["2", "3", "4"]
    );
    let dead = q.consume("dead", ConsumeOptions::default()).unwrap();
    let letters = drain(&dead);
    assert_eq!(letters.iter().map(text).collect::<Vec<_>>(), ["0", "1"]);
    assert_eq!(letters[0].properties.deaths[0].reason, DeathReason::MaxLen);
    let mut strict = QueueConfig::new("strict");
    strict.args = QueueArgs {
        max_length: Some(2),
        overflow: Overflow::RejectPublish,
        ..QueueArgs::default()
    };
    q.declare_queue(strict).unwrap();
    send(&q, "", "strict", "a");
    send(&q, "", "strict", "b");
    let refused = q.publish("", "strict", Message::persistent("c"), false);
    assert!(
        matches!(refused, Err(QueueError::Refused(_))),
        "{refused:?}"
    );
    assert_eq!(q.queue_info("strict").unwrap().messages, 2);
}

#[test]
fn priorities_consume_a_backlog_highest_first() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(1);
    let q = open(&rt, dir.path());
    let mut config = QueueConfig::new("prio");
    config.args.max_priority = Some(10);
    q.declare_queue(config).unwrap();
    for (i, p) in [1u8, 5, 3, 10, 5, 0].iter().enumerate() {
        q.publish("", "prio", Message::new(format!("{i}")).priority(*p), false)
            .unwrap();
    }
    let c = q.consume("prio", ConsumeOptions::default()).unwrap();
    let order: Vec<String> = drain(&c).iter().map(text).collect();
    assert_eq!(
        order,
        ["3", "1", "4", "2", "0", "5"],
        "highest first, FIFO within a priority"
    );
}

#[test]
fn per_message_and_queue_ttl_expire_before_delivery() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(1);
    let q = open(&rt, dir.path());
    let mut config = QueueConfig::new("ttl");
    config.args.message_ttl = Some(Duration::from_millis(200));
    q.declare_queue(config).unwrap();
    queue(&q, "plain");
    q.publish("", "ttl", Message::new("old"), false).unwrap();
    q.publish(
        "",
        "plain",
        Message::new("short").expiration(Duration::from_millis(100)),
        false,
    )
    .unwrap();
    q.publish("", "plain", Message::new("kept"), false).unwrap();
    std::thread::sleep(Duration::from_millis(400));
    let c = q.consume("ttl", ConsumeOptions::default()).unwrap();
    assert!(
        matches!(c.next(QUIET), Err(QueueError::Timeout)),
        "an expired message was delivered"
    );
    let p = q.consume("plain", ConsumeOptions::default()).unwrap();
    assert_eq!(drain(&p).iter().map(text).collect::<Vec<_>>(), ["kept"]);
}

#[test]
fn requeue_and_cancel_return_messages_in_order_flagged_redelivered() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(2);
    let q = open(&rt, dir.path());
    queue(&q, "r");
    for i in 0..5 {
        send(&q, "", "r", &format!("{i}"));
    }
    let c = q.consume("r", acked(3)).unwrap();
    let got: Vec<Delivery> = (0..3)
        .map(|_| c.next(Duration::from_secs(5)).unwrap())
        .collect();
    c.nack(got[1].delivery_tag, false, true).unwrap(); // back to the head
    let again = c.next(Duration::from_secs(5)).unwrap();
    assert_eq!((text(&again).as_str(), again.redelivered), ("1", true));
    drop(c); // 0, 2 and the redelivered 1 go back, in delivery order
    let c2 = q.consume("r", ConsumeOptions::default()).unwrap();
    let order: Vec<(String, bool)> = drain(&c2)
        .iter()
        .map(|d| (text(d), d.redelivered))
        .collect();
    let want = [
        ("0", true),
        ("2", true),
        ("1", true),
        ("3", false),
        ("4", false),
    ];
    assert_eq!(order, want.map(|(t, r)| (t.to_owned(), r)));
}

#[test]
fn declare_is_idempotent_and_differences_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(1);
    let q = open(&rt, dir.path());
    queue(&q, "x");
    queue(&q, "x");
    let mut other = QueueConfig::new("x");
    other.durable = false;
    assert!(matches!(
        q.declare_queue(other),
        Err(QueueError::Mismatch { .. })
    ));
    q.declare_exchange(ExchangeConfig::new("e", ExchangeKind::Direct))
        .unwrap();
    let differs = q.declare_exchange(ExchangeConfig::new("e", ExchangeKind::Topic));
    assert!(matches!(differs, Err(QueueError::Mismatch { .. })));
    q.bind_queue("x", "e", "k", Vec::new()).unwrap();
    assert!(matches!(
        q.delete_exchange("e", true),
        Err(QueueError::InUse { .. })
    ));
    q.delete_exchange("e", false).unwrap();
    assert!(matches!(
        q.publish("e", "k", Message::new("x"), false),
        Err(QueueError::NotFound { .. })
    ));
    let named = q.declare_queue(QueueConfig::new("")).unwrap();
    assert!(named.name.starts_with("amq.gen-"));
    assert!(matches!(
        q.publish("", "nowhere", Message::new("x"), true),
        Err(QueueError::Unroutable)
    ));
    assert_eq!(
        q.publish("", "nowhere", Message::new("x"), false)
            .unwrap()
            .queues,
        0
    );
}

#[test]
fn after_a_restart_exactly_the_unacked_persistent_messages_come_back_redelivered() {
    let dir = tempfile::tempdir().unwrap();
    {
        let rt = runtime(2);
        let q = open(&rt, dir.path());
        q.declare_exchange(ExchangeConfig::new("jobs", ExchangeKind::Direct))
            .unwrap();
        queue(&q, "durable");
        q.bind_queue("durable", "jobs", "j", Vec::new()).unwrap();
        let mut transient = QueueConfig::new("transient");
        transient.durable = false;
        q.declare_queue(transient).unwrap();
        for i in 0..10 {
            q.publish("jobs", "j", Message::persistent(format!("{i}")), false)
                .unwrap();
        }
        q.publish("jobs", "j", Message::new("not persistent"), false)
            .unwrap();
        q.publish(
            "",
            "transient",
            Message::persistent("in a transient queue"),
            false,
        )
        .unwrap();
        let c = q.consume("durable", acked(100)).unwrap();
        let got: Vec<Delivery> = (0..11)
            .map(|_| c.next(Duration::from_secs(5)).unwrap())
            .collect();
        for d in got
            .iter()
            .filter(|d| text(d).parse::<u32>().is_ok_and(|i| i % 2 == 0))
        {
            c.ack(d.delivery_tag, false).unwrap();
        }
        std::thread::sleep(Duration::from_millis(100)); // ack records are written per turn
        std::mem::forget(c); // the process "dies" with them unacked
        rt.shutdown().unwrap();
    }
    let rt = runtime(2);
    let q = open(&rt, dir.path());
    assert!(matches!(
        q.queue_info("transient"),
        Err(QueueError::NotFound { .. })
    ));
    let c = q.consume("durable", ConsumeOptions::default()).unwrap();
    let back: Vec<(String, bool)> = drain(&c).iter().map(|d| (text(d), d.redelivered)).collect();
    let want: Vec<(String, bool)> = [1, 3, 5, 7, 9]
        .iter()
        .map(|i| (format!("{i}"), true))
        .collect();
    assert_eq!(back, want);
    assert_eq!(
        q.publish("jobs", "j", Message::new("binding survived"), false)
            .unwrap()
            .queues,
        1
    );
}

#[test]
fn exclusive_queues_belong_to_their_connection_and_go_with_it() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(2);
    let q = open(&rt, dir.path());
    let mine = q.connection();
    let other = q.connection();
    let config = QueueConfig {
        exclusive: true,
        ..QueueConfig::new("private")
    };
    assert!(matches!(
        q.declare_queue(config.clone()),
        Err(QueueError::Invalid { .. })
    ));
    mine.declare_queue(config.clone()).unwrap();
    assert!(matches!(
        other.consume("private", ConsumeOptions::default()),
        Err(QueueError::Locked(_))
    ));
    assert!(matches!(
        other.declare_queue(config),
        Err(QueueError::Locked(_))
    ));
    assert!(matches!(
        q.delete_queue("private", false, false),
        Err(QueueError::Locked(_))
    ));
    let c = mine.consume("private", ConsumeOptions::default()).unwrap();
    q.publish("", "private", Message::new("hi"), true).unwrap();
    assert_eq!(text(&c.next(Duration::from_secs(5)).unwrap()), "hi");
    drop(c);
    drop(mine);
    assert!(matches!(
        q.queue_info("private"),
        Err(QueueError::NotFound { .. })
    ));
}

#[test]
fn auto_delete_and_unused_queues_are_removed() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(2);
    let q = open(&rt, dir.path());
    let auto = QueueConfig {
        auto_delete: true,
        ..QueueConfig::new("auto")
    };
    q.declare_queue(auto).unwrap();
    let c = q.consume("auto", ConsumeOptions::default()).unwrap();
    assert_eq!(q.queue_info("auto").unwrap().consumers, 1);
    c.cancel().unwrap();
    assert!(matches!(
        q.queue_info("auto"),
        Err(QueueError::NotFound { .. })
    ));
    let mut idle = QueueConfig::new("idle");
    idle.args.expires = Some(Duration::from_millis(300));
    q.declare_queue(idle).unwrap();
    let c = q.consume("idle", ConsumeOptions::default()).unwrap();
    std::thread::sleep(Duration::from_millis(500)); // in use: kept
    assert!(q.queue_info("idle").is_ok());
    drop(c);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while q.queue_info("idle").is_ok() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        matches!(q.queue_info("idle"), Err(QueueError::NotFound { .. })),
        "unused queue kept"
    );
}

fn dir_bytes(dir: &Path) -> u64 {
    let mut total = 0;
    let mut pending = vec![dir.to_path_buf()];
    while let Some(path) = pending.pop() {
        for entry in std::fs::read_dir(&path).unwrap() {
            let entry = entry.unwrap();
            let meta = entry.metadata().unwrap();
            if meta.is_dir() {
                pending.push(entry.path());
            } else {
                total += meta.len();
            }
        }
    }
    total
}

#[test]
fn fully_acknowledged_segments_are_removed() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(1);
    let q = open(&rt, dir.path());
    queue(&q, "big");
    let payload = Bytes::from(vec![1u8; 1 << 20]);
    for _ in 0..3 {
        let batch = copies("big", &payload, 40);
        for r in q.publish_batch(batch, true).unwrap() {
            r.unwrap();
        }
    }
    let logs = dir.path().join("amqp/queues");
    assert!(dir_bytes(&logs) > 100 << 20);
    let c = q.consume("big", acked(10)).unwrap();
    assert_eq!(drain(&c).len(), 120);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while dir_bytes(&logs) > 70 << 20 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    // Only the active segment (at most 64 MiB and one group past it) remains.
    assert!(
        dir_bytes(&logs) <= 70 << 20,
        "{} bytes left",
        dir_bytes(&logs)
    );
}

#[test]
fn exchange_to_exchange_bindings_route_through_and_unbind() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(2);
    let q = open(&rt, dir.path());
    q.declare_exchange(ExchangeConfig::new("front", ExchangeKind::Topic))
        .unwrap();
    q.declare_exchange(ExchangeConfig::new("audit", ExchangeKind::Fanout))
        .unwrap();
    q.bind_exchange("audit", "front", "pay.#", Vec::new())
        .unwrap();
    queue(&q, "ledger");
    q.bind_queue("ledger", "audit", "", Vec::new()).unwrap();
    assert_eq!(
        q.publish("front", "pay.card.ok", Message::new("1"), true)
            .unwrap()
            .queues,
        1
    );
    assert!(matches!(
        q.publish("front", "ship.done", Message::new("2"), true),
        Err(QueueError::Unroutable)
    ));
    q.unbind_queue("ledger", "audit", "", Vec::new()).unwrap();
    assert!(matches!(
        q.publish("front", "pay.card.ok", Message::new("3"), true),
        Err(QueueError::Unroutable)
    ));
    assert_eq!(q.queue_info("ledger").unwrap().messages, 1);
}

#[test]
fn dead_letter_cycles_are_dropped_not_looped() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(1);
    let q = open(&rt, dir.path());
    let mut looping = QueueConfig::new("loop");
    looping.durable = false;
    looping.args.message_ttl = Some(Duration::ZERO);
    looping.args.dead_letter_exchange = Some(String::new()); // the default exchange: back to "loop"
    q.declare_queue(looping).unwrap();
    q.publish("", "loop", Message::new("x"), true).unwrap();
    let mut capped = QueueConfig::new("ml");
    capped.args.max_length = Some(1);
    capped.args.dead_letter_exchange = Some(String::new());
    capped.args.dead_letter_routing_key = Some("ml".into());
    q.declare_queue(capped).unwrap();
    q.publish("", "ml", Message::new("a"), true).unwrap();
    q.publish("", "ml", Message::new("b"), true).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    // Still serving, each cycle cut after one turn.
    assert_eq!(q.queue_info("loop").unwrap().messages, 0);
    assert_eq!(q.queue_info("ml").unwrap().messages, 1);
}

#[test]
fn no_ack_deliveries_of_persistent_messages_do_not_come_back_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    {
        let rt = runtime(1);
        let q = open(&rt, dir.path());
        queue(&q, "fire");
        send(&q, "", "fire", "once");
        let c = q
            .consume(
                "fire",
                ConsumeOptions {
                    prefetch: 0,
                    no_ack: true,
                },
            )
            .unwrap();
        assert_eq!(text(&c.next(Duration::from_secs(5)).unwrap()), "once");
        std::thread::sleep(Duration::from_millis(100));
        std::mem::forget(c);
        rt.shutdown().unwrap();
    }
    let rt = runtime(1);
    let q = open(&rt, dir.path());
    assert_eq!(q.queue_info("fire").unwrap().messages, 0);
}

#[test]
fn persistent_and_transient_messages_keep_their_publish_order() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(2);
    let q = open(&rt, dir.path());
    queue(&q, "mixed");
    let batch = (0..20)
        .map(|i| {
            let m = if i % 3 == 0 {
                Message::persistent(format!("{i}"))
            } else {
                Message::new(format!("{i}"))
            };
            (String::new(), "mixed".to_owned(), m)
        })
        .collect();
    for r in q.publish_batch(batch, true).unwrap() {
        r.unwrap();
    }
    let c = q.consume("mixed", ConsumeOptions::default()).unwrap();
    let got: Vec<String> = drain(&c).iter().map(text).collect();
    assert_eq!(got, (0..20).map(|i| i.to_string()).collect::<Vec<_>>());
}

#[test]
fn an_expired_message_behind_the_head_is_not_delivered() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(1);
    let q = open(&rt, dir.path());
    queue(&q, "t");
    q.publish("", "t", Message::new("head"), false).unwrap();
    q.publish(
        "",
        "t",
        Message::new("short").expiration(Duration::from_millis(50)),
        false,
    )
    .unwrap();
    q.publish("", "t", Message::new("tail"), false).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let c = q.consume("t", ConsumeOptions::default()).unwrap();
    assert_eq!(
        drain(&c).iter().map(text).collect::<Vec<_>>(),
        ["head", "tail"]
    );
}

#[test]
fn a_queue_that_never_had_a_consumer_expires_and_acks_all_with_tag_zero() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(2);
    let q = open(&rt, dir.path());
    let mut idle = QueueConfig::new("never-used");
    idle.args.expires = Some(Duration::from_millis(100));
    q.declare_queue(idle).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while q.queue_info("never-used").is_ok() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        q.queue_info("never-used").is_err(),
        "an unused queue was kept"
    );
    queue(&q, "many");
    for i in 0..5 {
        send(&q, "", "many", &format!("{i}"));
    }
    let c = q.consume("many", ConsumeOptions::default()).unwrap();
    for _ in 0..5 {
        c.next(Duration::from_secs(5)).unwrap();
    }
    c.ack(0, true).unwrap(); // every outstanding delivery
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(q.queue_info("many").unwrap().unacked, 0);
}

#[test]
fn an_exclusive_queue_is_bound_through_its_connection() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(2);
    let q = open(&rt, dir.path());
    q.declare_exchange(ExchangeConfig::new("logs", ExchangeKind::Fanout))
        .unwrap();
    let conn = q.connection();
    let temp = conn
        .declare_queue(QueueConfig {
            exclusive: true,
            durable: false,
            ..QueueConfig::new("")
        })
        .unwrap();
    assert!(matches!(
        q.bind_queue(&temp.name, "logs", "", Vec::new()),
        Err(QueueError::Locked(_))
    ));
    conn.bind_queue(&temp.name, "logs", "", Vec::new()).unwrap();
    assert_eq!(
        q.publish("logs", "", Message::new("hello"), true)
            .unwrap()
            .queues,
        1
    );
    assert_eq!(conn.purge_queue(&temp.name).unwrap(), 1);
}

#[test]
fn big_persistent_batches_are_stored_and_a_deleted_queue_answers_its_waiting_publishes() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(1);
    let q = open(&rt, dir.path());
    queue(&q, "big");
    let payload = Bytes::from(vec![3u8; 24 << 20]);
    let batch = copies("big", &payload, 3);
    for r in q.publish_batch(batch, true).unwrap() {
        assert_eq!(r.unwrap().queues, 1, "each 24 MiB message stored");
    }
    let too_big = Message::persistent(vec![0u8; (32 << 20) + 1]);
    assert!(matches!(
        q.publish("", "big", too_big, false),
        Err(QueueError::Invalid { .. })
    ));
    let (tx, rx) = std::sync::mpsc::channel();
    let batch = copies("big", &payload, 2);
    q.publish_with(batch, false, move |results| {
        let _ = tx.send(results);
    })
    .unwrap();
    q.delete_queue("big", false, false).unwrap();
    let results = rx.recv_timeout(Duration::from_secs(10)).unwrap();
    for r in results {
        assert!(!matches!(r, Err(QueueError::ShuttingDown)), "{r:?}");
    }
}

#[test]
fn a_cycle_after_an_old_rejection_is_still_cut() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(1);
    let q = open(&rt, dir.path());
    q.declare_exchange(ExchangeConfig::new("to-a", ExchangeKind::Fanout))
        .unwrap();
    q.declare_exchange(ExchangeConfig::new("to-b", ExchangeKind::Fanout))
        .unwrap();
    q.declare_exchange(ExchangeConfig::new("back", ExchangeKind::Fanout))
        .unwrap();
    let mut work = QueueConfig::new("work");
    work.args.dead_letter_exchange = Some("to-a".into());
    q.declare_queue(work).unwrap();
    for (name, dlx) in [("a", "to-b"), ("b", "back")] {
        let mut config = QueueConfig::new(name);
        config.args.message_ttl = Some(Duration::ZERO);
        config.args.dead_letter_exchange = Some(dlx.into());
        q.declare_queue(config).unwrap();
    }
    queue(&q, "tap");
    q.bind_queue("a", "to-a", "", Vec::new()).unwrap();
    q.bind_queue("b", "to-b", "", Vec::new()).unwrap();
    q.bind_queue("a", "back", "", Vec::new()).unwrap();
    q.bind_queue("tap", "back", "", Vec::new()).unwrap();
    send(&q, "", "work", "m");
    let c = q.consume("work", ConsumeOptions::default()).unwrap();
    let d = c.next(Duration::from_secs(5)).unwrap();
    c.reject(d.delivery_tag, false).unwrap(); // work -> a -> b -> {a (cycle), tap}
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(q.queue_info("tap").unwrap().messages, 1);
}

#[test]
fn dead_letters_wait_out_a_full_log_instead_of_being_lost() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(1);
    let q = open(&rt, dir.path());
    dlx_setup(&q);
    let mut work = QueueConfig::new("work");
    work.args.dead_letter_exchange = Some("dlx".into());
    q.declare_queue(work).unwrap();
    let payload = Bytes::from(vec![9u8; 1 << 20]);
    for _ in 0..4 {
        let batch = copies("work", &payload, 40);
        for r in q.publish_batch(batch, true).unwrap() {
            r.unwrap();
        }
    }
    let c = q.consume("work", acked(200)).unwrap();
    let mut last = 0;
    for _ in 0..160 {
        last = c.next(Duration::from_secs(5)).unwrap().delivery_tag;
    }
    c.nack(last, true, false).unwrap(); // 160 MiB of dead letters at once: past the log's 64 MiB bound
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while q.queue_info("dead").unwrap().messages < 160 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(q.queue_info("dead").unwrap().messages, 160);
}

#[test]
fn a_segment_holding_an_unacked_message_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    let payload = Bytes::from(vec![5u8; 1 << 20]);
    {
        let rt = runtime(1);
        let q = open(&rt, dir.path());
        queue(&q, "held");
        for _ in 0..2 {
            let batch = copies("held", &payload, 40);
            for r in q.publish_batch(batch, true).unwrap() {
                r.unwrap();
            }
        }
        let c = q.consume("held", acked(100)).unwrap();
        let first = c.next(Duration::from_secs(5)).unwrap(); // held, never acked
        for _ in 1..80 {
            let d = c.next(Duration::from_secs(5)).unwrap();
            c.ack(d.delivery_tag, false).unwrap();
        }
        std::thread::sleep(Duration::from_millis(1500)); // a maintenance pass
        assert!(!first.redelivered);
        std::mem::forget(c);
        rt.shutdown().unwrap();
    }
    let rt = runtime(1);
    let q = open(&rt, dir.path());
    let c = q.consume("held", ConsumeOptions::default()).unwrap();
    let back = drain(&c);
    assert_eq!(
        back.len(),
        1,
        "the unacked message survives its segment's neighbours"
    );
    assert!(back[0].redelivered);
}
