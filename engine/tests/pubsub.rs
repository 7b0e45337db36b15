//! The subjects model end to end on a real runtime: wildcard delivery, queue groups
//! spreading evenly with exactly-once delivery, unsubscribe and auto-unsubscribe,
//! request-reply (round trip, `NoResponders`, `Timeout`, many concurrent requests), and
//! slow consumers held to their pending bound.

// In tests an unwrap that fails is a test failure with its message: exactly right.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use ringbroker::pubsub::{
    Message, PendingLimits, PubSub, PubSubError, ShardPubSub, SlowConsumerPolicy, Subject,
    SubscribeOptions, Subscription, BATCH_DELIVERIES_MAX, OUTBOX_MESSAGES_MAX,
};
use ringbroker::runtime::{Runtime, RuntimeConfig, ShardCtx};

#[path = "support/pubsub.rs"]
mod support;
use support::{handler_on, hold, numbered, runtime};

fn subscribe(pubsub: &PubSub, pattern: &str) -> Subscription {
    pubsub
        .subscribe(pattern, SubscribeOptions::default())
        .unwrap()
}

/// Every message the subscription receives within `quiet` of the previous one.
fn drain(sub: &mut Subscription, quiet: Duration) -> Vec<Message> {
    let mut got = Vec::new();
    while let Ok(message) = sub.next_timeout(quiet) {
        got.push(message);
    }
    got
}

fn subjects(messages: &[Message]) -> Vec<String> {
    messages.iter().map(|m| m.subject.to_string()).collect()
}

#[test]
fn wildcards_deliver_what_they_match_and_nothing_else() {
    let rt = runtime(2);
    let pubsub = PubSub::new(rt.handle());
    let mut users = subscribe(&pubsub, "user.>");
    let mut shipped = subscribe(&pubsub, "orders.*.shipped");
    let mut exact = subscribe(&pubsub, "user.updated");
    for subject in [
        "user",
        "user.registered",
        "user.updated",
        "orders.123.shipped",
        "orders.1.2.shipped",
        "orders.123.paid",
        "users.registered",
    ] {
        pubsub.publish(subject, Bytes::from_static(b"x")).unwrap();
    }
    let quiet = Duration::from_millis(200);
    assert_eq!(
        subjects(&drain(&mut users, quiet)),
        ["user.registered", "user.updated"]
    );
    assert_eq!(
        subjects(&drain(&mut shipped, quiet)),
        ["orders.123.shipped"]
    );
    assert_eq!(subjects(&drain(&mut exact, quiet)), ["user.updated"]);
    drop((users, shipped, exact));
    rt.shutdown().unwrap();
}

#[test]
fn invalid_subjects_and_patterns_are_refused_with_the_reason() {
    let rt = runtime(1);
    let pubsub = PubSub::new(rt.handle());
    let refused = |r: Result<(), PubSubError>| match r {
        Err(PubSubError::Subject(e)) => e.to_string(),
        other => panic!("accepted: {other:?}"),
    };
    assert!(refused(pubsub.publish("a..b", Bytes::new())).contains("empty token"));
    assert!(refused(pubsub.publish("a.*", Bytes::new())).contains("wildcard"));
    assert!(refused(pubsub.publish("a b", Bytes::new())).contains("whitespace"));
    assert!(refused(pubsub.publish(&"a".repeat(2000), Bytes::new())).contains("limit"));
    let bad_pattern = pubsub.subscribe("a.>.b", SubscribeOptions::default());
    assert!(matches!(bad_pattern, Err(PubSubError::Subject(_))));
    rt.shutdown().unwrap();
}

#[test]
fn plain_subscribers_each_get_every_message_in_order() {
    let rt = runtime(2);
    let pubsub = PubSub::new(rt.handle());
    let mut subs: Vec<Subscription> = (0..5).map(|_| subscribe(&pubsub, "fan.out")).collect();
    for i in 0..1000u32 {
        pubsub
            .publish("fan.out", Bytes::from(i.to_be_bytes().to_vec()))
            .unwrap();
    }
    for sub in &mut subs {
        let got = drain(sub, Duration::from_millis(300));
        let values: Vec<u32> = got
            .iter()
            .map(|m| u32::from_be_bytes(m.payload[..4].try_into().unwrap()))
            .collect();
        assert_eq!(values, (0..1000).collect::<Vec<_>>());
    }
    drop(subs);
    rt.shutdown().unwrap();
}

#[test]
fn a_queue_group_delivers_each_message_once_spread_evenly() {
    let rt = runtime(2);
    let pubsub = PubSub::new(rt.handle());
    let group = || support::group("workers");
    let mut members: Vec<Subscription> = (0..3)
        .map(|_| pubsub.subscribe("jobs.*", group()).unwrap())
        .collect();
    let mut watcher = subscribe(&pubsub, "jobs.>");
    let total = 30_000u32;
    let batch: Vec<Message> = (0..total)
        .map(|i| {
            let subject = format!("jobs.{}", i % 7).try_into().unwrap();
            Message::new(subject, Bytes::from(i.to_be_bytes().to_vec()))
        })
        .collect();
    for chunk in batch.chunks(1000) {
        pubsub.publish_batch(chunk.to_vec()).unwrap();
    }
    let mut seen: HashMap<u32, usize> = HashMap::new();
    let mut per_member = vec![0usize; members.len()];
    let deadline = Instant::now() + Duration::from_secs(20);
    while per_member.iter().sum::<usize>() < total as usize && Instant::now() < deadline {
        for (i, member) in members.iter_mut().enumerate() {
            while let Some(m) = member.try_next().unwrap() {
                per_member[i] += 1;
                *seen
                    .entry(u32::from_be_bytes(m.payload[..4].try_into().unwrap()))
                    .or_default() += 1;
            }
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(
        seen.len(),
        total as usize,
        "every message delivered: {per_member:?}"
    );
    assert!(seen.values().all(|&n| n == 1), "no message delivered twice");
    // Nothing more arrives after all were counted.
    std::thread::sleep(Duration::from_millis(50));
    for member in &mut members {
        assert!(
            member.try_next().unwrap().is_none(),
            "a message delivered twice"
        );
    }
    let even = f64::from(total) / 3.0;
    for n in &per_member {
        let off = (*n as f64 - even).abs() / even;
        assert!(off <= 0.2, "members got {per_member:?}, not within 20%");
    }
    // A plain subscriber next to the group still gets everything.
    assert_eq!(
        drain(&mut watcher, Duration::from_millis(300)).len(),
        total as usize
    );
    drop((members, watcher));
    rt.shutdown().unwrap();
}

#[test]
fn unsubscribe_stops_delivery_and_auto_unsubscribe_stops_after_n() {
    let rt = runtime(2);
    let pubsub = PubSub::new(rt.handle());
    let mut limited = pubsub
        .subscribe(
            "count",
            SubscribeOptions {
                max_messages: Some(5),
                ..SubscribeOptions::default()
            },
        )
        .unwrap();
    let gone = subscribe(&pubsub, "count");
    let id = gone.id();
    gone.unsubscribe().unwrap();
    for i in 0..20u8 {
        pubsub.publish("count", Bytes::from(vec![i])).unwrap();
    }
    let got = drain(&mut limited, Duration::from_millis(300));
    assert_eq!(got.len(), 5, "auto-unsubscribe after 5");
    assert!(matches!(limited.try_next(), Err(PubSubError::Closed)));
    assert!(id > 0);
    // Nobody is left: once the removal reached every shard, a publish matches nothing.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        pubsub
            .publish("count", Bytes::from_static(b"late"))
            .unwrap();
        std::thread::sleep(Duration::from_millis(20));
        let stats = pubsub.stats().unwrap();
        if stats.iter().map(|s| s.no_interest).sum::<u64>() > 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "interest never removed: {stats:?}"
        );
    }
    let unknown: u64 = pubsub
        .stats()
        .unwrap()
        .iter()
        .map(|s| s.unknown_target)
        .sum();
    assert!(unknown <= 20, "{unknown}");
    drop(limited);
    rt.shutdown().unwrap();
}

#[test]
fn a_batch_past_the_outbox_bound_counts_what_it_drops() {
    let rt = runtime(1);
    let pubsub = PubSub::new(rt.handle());
    // An auto-unsubscribe count makes the subscription one its shard delivers to
    // (not direct), so the batch is routed by one task on the shard.
    let options = SubscribeOptions {
        max_messages: Some(u64::MAX),
        ..SubscribeOptions::default()
    };
    let _sub = pubsub.subscribe("flood", options).unwrap();
    let subject = Subject::new("flood").unwrap();
    let payload = Bytes::from_static(b"x");
    // The task's deliveries leave only when it yields, so past OUTBOX_MESSAGES_MAX the
    // rest is refused: counted, not silently lost.
    let total = (OUTBOX_MESSAGES_MAX + 10) as u64;
    let batch: Vec<Message> = (0..total)
        .map(|_| Message::new(subject.clone(), payload.clone()))
        .collect();
    pubsub.publish_batch(batch).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let stats = pubsub.stats().unwrap();
        let routed: u64 = stats.iter().map(|s| s.routed).sum();
        let refused: u64 = stats.iter().map(|s| s.dropped_outbox).sum();
        if routed + refused == total {
            assert_eq!(refused, 10, "{stats:?}");
            assert_eq!(stats.iter().map(|s| s.published).sum::<u64>(), total);
            break;
        }
        assert!(Instant::now() < deadline, "batch not done: {stats:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
    rt.shutdown().unwrap();
}

/// Starts a responder on shard `shard` answering requests on `subject` with
/// "re:" + payload; returns once every shard routes to it.
fn respond_on(rt: &Runtime, shard: usize, subject: &'static str) {
    let (tx, rx) = mpsc::channel();
    rt.handle()
        .spawn(shard, move |ctx: &mut ShardCtx| {
            let pubsub = ShardPubSub::get(ctx);
            let answer = pubsub.clone();
            pubsub
                .subscribe(
                    ctx,
                    subject,
                    None,
                    None,
                    move |ctx, request: Message| {
                        let Some(reply) = request.reply else { return };
                        let mut body = b"re:".to_vec();
                        body.extend_from_slice(&request.payload);
                        answer.publish(ctx, Message::new(reply, body)).unwrap();
                    },
                    move |_| tx.send(()).unwrap(),
                )
                .unwrap();
        })
        .unwrap();
    rx.recv_timeout(Duration::from_secs(10)).unwrap();
}

#[test]
fn request_reply_round_trip_no_responders_and_timeout() {
    let rt = runtime(2);
    let pubsub = PubSub::new(rt.handle());
    respond_on(&rt, 1, "echo");
    let reply = pubsub
        .request("echo", &b"hi"[..], Duration::from_secs(5))
        .unwrap();
    assert_eq!(&reply.payload[..], b"re:hi");

    let started = std::time::Instant::now();
    let none = pubsub.request("nobody.home", &b"?"[..], Duration::from_secs(5));
    assert!(matches!(none, Err(PubSubError::NoResponders)), "{none:?}");
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "NoResponders is immediate"
    );

    // A subscriber that never answers: the request times out, after the timeout.
    let _silent = subscribe(&pubsub, "silent");
    let started = std::time::Instant::now();
    let timed_out = pubsub.request("silent", &b"?"[..], Duration::from_millis(100));
    assert!(
        matches!(timed_out, Err(PubSubError::Timeout)),
        "{timed_out:?}"
    );
    assert!(started.elapsed() >= Duration::from_millis(100));
    // "Forever" is a valid timeout, not a panic.
    let reply = pubsub.request("echo", &b"max"[..], Duration::MAX).unwrap();
    assert_eq!(&reply.payload[..], b"re:max");
    drop(_silent);
    rt.shutdown().unwrap();
}

#[test]
fn concurrent_requests_get_their_own_replies() {
    let rt = runtime(2);
    respond_on(&rt, 0, "svc.echo");
    respond_on(&rt, 1, "svc.echo");
    let pubsub = PubSub::new(rt.handle());
    std::thread::scope(|scope| {
        for t in 0..4 {
            let pubsub = pubsub.clone();
            scope.spawn(move || {
                for i in 0..250 {
                    let body = format!("{t}-{i}");
                    let reply = pubsub
                        .request("svc.echo", body.clone(), Duration::from_secs(5))
                        .unwrap();
                    assert_eq!(reply.payload, Bytes::from(format!("re:{body}")));
                }
            });
        }
    });
    rt.shutdown().unwrap();
}

/// A subscription to "firehose" holding at most 100 messages and 64 KiB.
fn firehose(pubsub: &PubSub, policy: SlowConsumerPolicy) -> Subscription {
    let pending = PendingLimits {
        messages: 100,
        bytes: 64 << 10,
        policy,
    };
    let options = SubscribeOptions {
        pending,
        ..SubscribeOptions::default()
    };
    pubsub.subscribe("firehose", options).unwrap()
}

#[test]
fn a_slow_consumer_stays_within_its_bound() {
    let rt = runtime(2);
    let pubsub = PubSub::new(rt.handle());
    let mut slow = firehose(&pubsub, SlowConsumerPolicy::DropNewest);
    let payload = Bytes::from(vec![0u8; 1024]);
    let mut max_pending = (0, 0);
    for _ in 0..50 {
        let batch: Vec<Message> = (0..200)
            .map(|_| Message::new("firehose".try_into().unwrap(), payload.clone()))
            .collect();
        pubsub.publish_batch(batch).unwrap();
        max_pending.0 = max_pending.0.max(slow.pending());
        max_pending.1 = max_pending.1.max(slow.pending_bytes());
    }
    std::thread::sleep(Duration::from_millis(200));
    assert!(slow.pending() <= 100, "{} messages pending", slow.pending());
    assert!(
        slow.pending_bytes() <= 64 << 10,
        "{} bytes pending",
        slow.pending_bytes()
    );
    assert!(
        max_pending.0 <= 100 && max_pending.1 <= 64 << 10,
        "{max_pending:?}"
    );
    // 64 KiB holds 62 messages of 1024 + subject bytes: the byte bound binds first.
    let kept = slow.pending() as u64;
    assert_eq!(
        kept + slow.dropped(),
        10_000,
        "every message kept or counted"
    );
    assert!(slow.dropped() > 0);
    // Draining makes room again.
    let drained = drain(&mut slow, Duration::from_millis(50)).len();
    assert_eq!(drained as u64, kept);
    pubsub.publish("firehose", payload.clone()).unwrap();
    assert!(slow.next_timeout(Duration::from_secs(5)).is_ok());
    drop(slow);
    rt.shutdown().unwrap();
}

#[test]
fn a_slow_consumer_under_close_is_closed_with_slow_consumer() {
    let rt = runtime(2);
    let pubsub = PubSub::new(rt.handle());
    let payload = Bytes::from(vec![0u8; 1024]);
    let mut closing = firehose(&pubsub, SlowConsumerPolicy::Close);
    let batch: Vec<Message> = (0..500)
        .map(|_| Message::new("firehose".try_into().unwrap(), payload.clone()))
        .collect();
    pubsub.publish_batch(batch).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let got = drain(&mut closing, Duration::from_millis(50)).len();
    assert!(got <= 100);
    assert!(matches!(closing.try_next(), Err(PubSubError::SlowConsumer)));
    drop(closing);
    rt.shutdown().unwrap();
}

#[test]
fn consumers_see_closed_when_the_runtime_stops() {
    let rt = runtime(2);
    let pubsub = PubSub::new(rt.handle());
    let mut sub = subscribe(&pubsub, "bye");
    rt.shutdown().unwrap();
    assert!(matches!(
        sub.next_timeout(Duration::from_secs(5)),
        Err(PubSubError::Closed)
    ));
}

#[test]
fn answered_requests_leave_no_timers_behind() {
    // A timer per request would fill this shard's 64-slot timer table in 64 requests
    // (each timer outliving its answered request by the whole timeout).
    let rt = Runtime::start(RuntimeConfig {
        shards: Some(1),
        timers_max: 64,
        ..RuntimeConfig::default()
    })
    .unwrap();
    respond_on(&rt, 0, "svc.fast");
    let pubsub = PubSub::new(rt.handle());
    for i in 0..1000 {
        let reply = pubsub
            .request("svc.fast", format!("{i}"), Duration::from_secs(30))
            .unwrap();
        assert_eq!(reply.payload, Bytes::from(format!("re:{i}")));
    }
    rt.shutdown().unwrap();
}

#[test]
fn mixed_request_timeouts_leave_no_timers_behind() {
    // Short requests after long ones: each short one arms an earlier expiry timer than
    // the armed one. Timers cannot be cancelled, so a timer per supersession kept alive
    // would fill the 64-slot table within 64 rounds.
    let rt = Runtime::start(RuntimeConfig {
        shards: Some(1),
        timers_max: 64,
        ..RuntimeConfig::default()
    })
    .unwrap();
    respond_on(&rt, 0, "svc.mixed");
    let pubsub = PubSub::new(rt.handle());
    for i in 0..150 {
        for timeout in [Duration::from_secs(30), Duration::from_millis(2)] {
            let reply = pubsub.request("svc.mixed", format!("{i}"), timeout);
            assert!(reply.is_ok(), "round {i}: {reply:?}");
        }
        std::thread::sleep(Duration::from_millis(3));
    }
    rt.shutdown().unwrap();
}

/// Publishes `count` messages on shard 0, `per_turn` per task (the task sends itself
/// again in between), payload = the message's number; reports how many were taken and
/// the first refusal.
fn publish_in_turns(
    rt: &Runtime,
    subject: &'static str,
    count: u32,
    per_turn: u32,
) -> (u32, Option<String>) {
    fn turn(
        ctx: &mut ShardCtx,
        subject: &'static str,
        next: u32,
        count: u32,
        per_turn: u32,
        done: mpsc::Sender<(u32, Option<String>)>,
    ) {
        let pubsub = ShardPubSub::get(ctx);
        let mut i = next;
        while i < count && i < next + per_turn {
            let message = Message::new(
                subject.try_into().unwrap(),
                Bytes::from(i.to_be_bytes().to_vec()),
            );
            if let Err(error) = pubsub.publish(ctx, message) {
                done.send((i, Some(error.to_string()))).unwrap();
                return;
            }
            i += 1;
        }
        if i == count {
            done.send((i, None)).unwrap();
            return;
        }
        let again = move |ctx: &mut ShardCtx| turn(ctx, subject, i, count, per_turn, done);
        ctx.send(0, again).map_err(|_| "self-send refused").unwrap();
    }
    let (tx, rx) = mpsc::channel();
    rt.handle()
        .spawn(0, move |ctx: &mut ShardCtx| {
            turn(ctx, subject, 0, count, per_turn, tx)
        })
        .unwrap();
    rx.recv_timeout(Duration::from_secs(60)).unwrap()
}

/// Two shards whose rings hold 2 tasks and whose backlogs hold 2 more: batches for a
/// shard that is busy are refused at once.
fn tiny_rings() -> Runtime {
    Runtime::start(RuntimeConfig {
        shards: Some(2),
        ring_capacity: 2,
        outbound_backlog_max: 2,
        ..RuntimeConfig::default()
    })
    .unwrap()
}

#[test]
fn full_rings_hold_batches_back_in_order_and_lose_none() {
    // Tiny rings and backlogs, and a subscriber shard that sleeps: the publisher's
    // batches are refused and must wait, then arrive complete and in order.
    let rt = tiny_rings();
    let received = handler_on(&rt, 1, "ordered");
    rt.handle()
        .spawn(1, |_: &mut ShardCtx| {
            std::thread::sleep(Duration::from_millis(200))
        })
        .unwrap();
    let (published, refused) = publish_in_turns(&rt, "ordered", 2000, 10);
    assert_eq!((published, refused), (2000, None));
    let got: Vec<u32> = (0..2000)
        .map(|_| received.recv_timeout(Duration::from_secs(10)).unwrap())
        .collect();
    assert_eq!(got, (0..2000).collect::<Vec<_>>());
    rt.shutdown().unwrap();
}

#[test]
fn a_full_outbox_refuses_with_backpressure_then_delivers_what_it_took() {
    // Tiny rings, and the subscriber's shard held busy: full batches cannot leave, so
    // one task publishing without yielding fills the outbox; the next publish is
    // refused, and everything taken before it is delivered once the shard is free.
    let rt = tiny_rings();
    let received = handler_on(&rt, 1, "flood");
    let release = hold(&rt, 1);
    let max = ringbroker::pubsub::OUTBOX_MESSAGES_MAX as u32;
    let most = max + 100_000;
    let (published, refused) = publish_in_turns(&rt, "flood", most, most);
    drop(release);
    // The outbox holds `max` waiting; the few full batches the rings took before the
    // shard stopped taking any are not waiting.
    assert!(
        published >= max && published < most,
        "{published} published"
    );
    assert!(refused.unwrap().contains("backpressure"));
    let mut count = 0u32;
    while received.recv_timeout(Duration::from_secs(10)).is_ok() {
        count += 1;
        if count == published {
            break;
        }
    }
    assert_eq!(count, published);
    assert!(received.recv_timeout(Duration::from_millis(100)).is_err());
    rt.shutdown().unwrap();
}

#[test]
fn batch_receive_takes_in_order_frees_the_bound_and_reports_the_close() {
    let rt = runtime(2);
    let pubsub = PubSub::new(rt.handle());
    let mut sub = pubsub
        .subscribe(
            "batch",
            SubscribeOptions {
                max_messages: Some(50),
                ..SubscribeOptions::default()
            },
        )
        .unwrap();
    for i in 0..50u8 {
        pubsub.publish("batch", Bytes::from(vec![i; 10])).unwrap();
    }
    // Auto-unsubscribe after 50: the queue closes after its last push.
    let deadline = Instant::now() + Duration::from_secs(5);
    while sub.delivered() < 50 {
        assert!(Instant::now() < deadline, "{} delivered", sub.delivered());
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(sub.pending(), 50);
    assert_eq!(sub.pending_bytes(), 50 * (10 + "batch".len()));
    let mut got = Vec::new();
    assert_eq!(sub.try_next_batch(0, &mut got).unwrap(), 0);
    assert_eq!(sub.try_next_batch(20, &mut got).unwrap(), 20);
    assert_eq!(sub.pending(), 30, "one counter update for the batch");
    assert_eq!(sub.pending_bytes(), 30 * 15);
    assert_eq!(sub.try_next_batch(100, &mut got).unwrap(), 30);
    assert_eq!((sub.pending(), sub.pending_bytes()), (0, 0));
    let firsts: Vec<u8> = got.iter().map(|m| m.payload[0]).collect();
    assert_eq!(firsts, (0..50).collect::<Vec<u8>>());
    assert!(matches!(
        sub.try_next_batch(10, &mut got),
        Err(PubSubError::Closed)
    ));
    assert_eq!(got.len(), 50, "a failed call adds nothing");
    drop(sub);
    rt.shutdown().unwrap();
}

#[test]
fn batch_receive_returns_zero_while_open_and_empty() {
    let rt = runtime(1);
    let pubsub = PubSub::new(rt.handle());
    let mut sub = subscribe(&pubsub, "quiet");
    let mut got = Vec::new();
    assert_eq!(sub.try_next_batch(64, &mut got).unwrap(), 0);
    pubsub.publish("quiet", Bytes::from_static(b"x")).unwrap();
    let message = sub.next_timeout(Duration::from_secs(5)).unwrap();
    assert_eq!(&message.payload[..], b"x");
    assert_eq!(sub.try_next_batch(64, &mut got).unwrap(), 0);
    drop(sub);
    rt.shutdown().unwrap();
}

#[test]
fn a_task_that_publishes_a_great_many_delivers_them_in_full_batches_as_it_goes() {
    let rt = runtime(2);
    let received = handler_on(&rt, 0, "many");
    let extra = 10;
    let (seen_tx, seen_rx) = mpsc::channel();
    rt.handle()
        .spawn(0, move |ctx: &mut ShardCtx| {
            let pubsub = ShardPubSub::get(ctx);
            let mut seen_at_full = None;
            for n in 0..(BATCH_DELIVERIES_MAX + extra) as u32 {
                pubsub.publish(ctx, numbered("many", n)).unwrap();
                if n as usize + 1 == BATCH_DELIVERIES_MAX {
                    // Still inside the task: a full outbox was delivered at once.
                    seen_at_full = Some(received.try_iter().collect::<Vec<u32>>());
                }
            }
            // The rest waits for the task to yield.
            let before_yield = received.try_iter().count();
            seen_tx
                .send((seen_at_full, before_yield, received))
                .unwrap();
        })
        .unwrap();
    let (seen_at_full, before_yield, received) =
        seen_rx.recv_timeout(Duration::from_secs(10)).unwrap();
    let first = seen_at_full.expect("a full outbox");
    assert_eq!(
        first.len(),
        BATCH_DELIVERIES_MAX,
        "delivered inside the task"
    );
    assert!(
        first.iter().copied().eq(0..BATCH_DELIVERIES_MAX as u32),
        "in order"
    );
    assert_eq!(before_yield, 0);
    let rest: Vec<u32> = (0..extra)
        .map(|_| received.recv_timeout(Duration::from_secs(10)).unwrap())
        .collect();
    let from = BATCH_DELIVERIES_MAX as u32;
    assert_eq!(rest, (from..from + extra as u32).collect::<Vec<_>>());
    rt.shutdown().unwrap();
}

#[test]
fn a_handler_that_publishes_to_itself_past_a_full_outbox_gets_everything() {
    // Its own publishes fill the outbox while it is being delivered to: they must wait
    // for the scheduled flush, not re-enter it.
    let rt = runtime(2);
    let (tx, rx) = mpsc::channel();
    let (ready_tx, ready_rx) = mpsc::channel();
    rt.handle()
        .spawn(0, move |ctx: &mut ShardCtx| {
            let pubsub = ShardPubSub::get(ctx);
            let echo = pubsub.clone();
            let on_message = move |ctx: &mut ShardCtx, m: Message| {
                let n = support::number(&m);
                if m.subject.as_str() == "loop.in" {
                    echo.publish(ctx, numbered("loop.out", n)).unwrap();
                }
                let _ = tx.send((m.subject.as_str().to_owned(), n));
            };
            let ready = move |_: &mut ShardCtx| ready_tx.send(()).unwrap();
            pubsub
                .subscribe(ctx, "loop.>", None, None, on_message, ready)
                .unwrap();
        })
        .unwrap();
    ready_rx.recv_timeout(Duration::from_secs(10)).unwrap();
    let count = 2 * BATCH_DELIVERIES_MAX as u32 + 100;
    rt.handle()
        .spawn(0, move |ctx: &mut ShardCtx| {
            let pubsub = ShardPubSub::get(ctx);
            for n in 0..count {
                pubsub.publish(ctx, numbered("loop.in", n)).unwrap();
            }
        })
        .unwrap();
    let (mut ins, mut outs) = (Vec::new(), Vec::new());
    while ins.len() + outs.len() < 2 * count as usize {
        let (subject, n) = rx.recv_timeout(Duration::from_secs(10)).unwrap();
        match subject.as_str() {
            "loop.in" => ins.push(n),
            _ => outs.push(n),
        }
    }
    assert!(ins.iter().copied().eq(0..count), "every loop.in, in order");
    assert!(
        outs.iter().copied().eq(0..count),
        "every loop.out, in order"
    );
    rt.shutdown().unwrap();
}

#[test]
fn requests_past_a_full_outbox_to_a_responder_on_the_same_shard_all_get_replies() {
    // The responder answers while the requests' own publishes are being flushed: no
    // reply may reach a request before `request` has recorded it.
    let rt = runtime(2);
    respond_on(&rt, 0, "svc.same");
    let count = BATCH_DELIVERIES_MAX as u32 + 100;
    let (tx, rx) = mpsc::channel();
    rt.handle()
        .spawn(0, move |ctx: &mut ShardCtx| {
            let pubsub = ShardPubSub::get(ctx);
            for n in 0..count {
                let tx = tx.clone();
                let done = Box::new(
                    move |_: &mut ShardCtx, reply: Result<Message, PubSubError>| {
                        let _ = tx.send(reply.map(|m| m.payload.len()).map_err(|e| e.to_string()));
                    },
                );
                pubsub.request(ctx, numbered("svc.same", n), Duration::from_secs(5), done);
            }
        })
        .unwrap();
    for _ in 0..count {
        let reply = rx.recv_timeout(Duration::from_secs(10)).unwrap();
        assert_eq!(reply, Ok(7), "a reply to every request (\"re:\" + 4 bytes)");
    }
    rt.shutdown().unwrap();
}
