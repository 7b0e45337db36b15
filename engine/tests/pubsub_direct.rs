//! Direct delivery (`pubsub/direct.rs`): a publish from a thread that is not a shard
//! reaches the subscriptions read by threads without a shard hop, and only the rest goes
//! through the home shard. These tests pin what must not change when the two paths
//! meet: one thread's order, a queue group's exactly-once, the pending bound with many
//! publishers, the counters, requests answered by a thread, and a refused publish that
//! delivered nothing (so its retry duplicates nothing).

// In tests an unwrap that fails is a test failure with its message: exactly right.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::sync::{mpsc, Arc, Barrier};
use std::time::{Duration, Instant};

use bytes::Bytes;
use ringbroker::pubsub::{
    Message, PubSub, PubSubError, ShardPubSub, SubscribeOptions, Subscription,
};
use ringbroker::runtime::{Runtime, RuntimeConfig, ShardCtx};

#[path = "support/pubsub.rs"]
mod support;
use support::{at_most, handler_on, hold, number, numbered, runtime};

/// Reads `sub` until `want` messages came or nothing came for a second.
/// Runs `publish` until the home shard takes it: `Backpressure` means nothing was
/// published (the shard's queue was full; a loaded machine gets there), so a retry
/// never duplicates.
fn until_taken(mut publish: impl FnMut() -> Result<(), PubSubError>) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match publish() {
            Ok(()) => return,
            Err(PubSubError::Backpressure) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_micros(200));
            }
            Err(error) => panic!("publish: {error}"),
        }
    }
}

fn read(sub: &mut Subscription, want: usize) -> Vec<Message> {
    let mut got = Vec::new();
    while got.len() < want {
        match sub.next_timeout(Duration::from_secs(1)) {
            Ok(message) => got.push(message),
            Err(_) => break,
        }
    }
    got
}

/// A subscription its shard delivers to (an auto-unsubscribe count it never reaches
/// makes it so), read like any other.
fn shard_served(pubsub: &PubSub, pattern: &str, group: Option<&str>) -> Subscription {
    let options = SubscribeOptions {
        queue_group: group.map(str::to_owned),
        max_messages: Some(u64::MAX),
        ..SubscribeOptions::default()
    };
    pubsub.subscribe(pattern, options).unwrap()
}

#[test]
fn one_threads_publishes_stay_in_order_when_a_shard_serves_some_of_them() {
    let rt = runtime(2);
    let pubsub = PubSub::new(rt.handle());
    let mut direct = pubsub
        .subscribe("ord.>", SubscribeOptions::default())
        .unwrap();
    // A handler on a shard wants every other message: those messages take the shard's
    // path too, and must not fall behind the direct ones for `direct`.
    let handler = handler_on(&rt, 1, "ord.x");
    let total = 20_000u32;
    let subject = |i: u32| if i % 2 == 0 { "ord.x" } else { "ord.y" };
    for i in 0..total / 2 {
        until_taken(|| pubsub.publish_message(numbered(subject(i), i)));
    }
    let batch: Vec<Message> = (total / 2..total)
        .map(|i| numbered(subject(i), i))
        .collect();
    for chunk in batch.chunks(100) {
        until_taken(|| pubsub.publish_batch(chunk.to_vec()));
    }
    let got: Vec<u32> = read(&mut direct, total as usize)
        .iter()
        .map(number)
        .collect();
    assert_eq!(got, (0..total).collect::<Vec<_>>());
    let handled: Vec<u32> = (0..total / 2)
        .map(|_| handler.recv_timeout(Duration::from_secs(5)).unwrap())
        .collect();
    assert_eq!(handled, (0..total).step_by(2).collect::<Vec<_>>());
    drop(direct);
    rt.shutdown().unwrap();
}

/// Publishes `range` on `jobs` and returns how often each number reached a member.
fn spread(
    pubsub: &PubSub,
    members: &mut [Subscription],
    range: std::ops::Range<u32>,
) -> Vec<usize> {
    let total = range.len();
    let batch: Vec<Message> = range.clone().map(|i| numbered("jobs", i)).collect();
    for chunk in batch.chunks(500) {
        until_taken(|| pubsub.publish_batch(chunk.to_vec()));
    }
    let mut seen: HashMap<u32, usize> = HashMap::new();
    let mut per_member = vec![0usize; members.len()];
    let deadline = Instant::now() + Duration::from_secs(20);
    while per_member.iter().sum::<usize>() < total && Instant::now() < deadline {
        for (i, member) in members.iter_mut().enumerate() {
            while let Some(m) = member.try_next().unwrap() {
                per_member[i] += 1;
                *seen.entry(number(&m)).or_default() += 1;
            }
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    // Anything more would be a second delivery.
    std::thread::sleep(Duration::from_millis(100));
    for member in members.iter_mut() {
        assert!(
            member.try_next().unwrap().is_none(),
            "a message delivered twice"
        );
    }
    assert_eq!(seen.len(), total, "every message delivered: {per_member:?}");
    assert!(seen.values().all(|&n| n == 1), "no message delivered twice");
    assert!(seen.keys().all(|n| range.contains(n)));
    per_member
}

#[test]
fn a_queue_group_gets_each_message_once_whether_a_shard_serves_it_or_not() {
    let rt = runtime(2);
    let pubsub = PubSub::new(rt.handle());
    let group = || support::group("workers");
    let mut members = vec![
        pubsub.subscribe("jobs", group()).unwrap(),
        pubsub.subscribe("jobs", group()).unwrap(),
        shard_served(&pubsub, "jobs", Some("workers")),
    ];
    // A member the shard serves: the shard picks for the whole group.
    let mixed = spread(&pubsub, &mut members, 0..9_000);
    assert!(mixed.iter().all(|&n| n > 0), "{mixed:?}");
    // Without it, the publishing thread picks, and spreads evenly.
    members.pop().unwrap().unsubscribe().unwrap();
    let direct = spread(&pubsub, &mut members, 9_000..19_000);
    assert_eq!(direct, vec![5_000, 5_000]);
    // A plain subscription the shard serves sends every message to the shard as well:
    // the thread still serves the group, and the shard must leave the group alone.
    let mut watcher = shard_served(&pubsub, "jobs", None);
    let both = spread(&pubsub, &mut members, 19_000..29_000);
    assert_eq!(both, vec![5_000, 5_000]);
    assert_eq!(read(&mut watcher, 10_000).len(), 10_000);
    drop((members, watcher));
    rt.shutdown().unwrap();
}

#[test]
fn a_queue_group_only_shards_serve_still_gets_a_threads_publishes() {
    let rt = runtime(2);
    let pubsub = PubSub::new(rt.handle());
    // No plain subscription a shard serves: only the group's members send the
    // thread's publishes to a shard.
    let mut members = vec![
        shard_served(&pubsub, "jobs", Some("shards")),
        shard_served(&pubsub, "jobs", Some("shards")),
    ];
    let per_member = spread(&pubsub, &mut members, 0..4_000);
    assert!(per_member.iter().all(|&n| n > 0), "{per_member:?}");
    drop(members);
    rt.shutdown().unwrap();
}

#[test]
fn the_pending_bound_holds_with_many_publishing_threads() {
    let rt = runtime(2);
    let pubsub = PubSub::new(rt.handle());
    let mut sub = pubsub.subscribe("crowd", at_most(50)).unwrap();
    let (threads, each) = (4, 2_000u32);
    let start = Arc::new(Barrier::new(threads));
    let publishers: Vec<_> = (0..threads)
        .map(|_| {
            let (pubsub, start) = (pubsub.clone(), start.clone());
            std::thread::spawn(move || {
                start.wait();
                for i in 0..each {
                    pubsub.publish_message(numbered("crowd", i)).unwrap();
                }
            })
        })
        .collect();
    for publisher in publishers {
        publisher.join().unwrap();
    }
    assert_eq!(sub.pending(), 50);
    assert_eq!(sub.dropped(), u64::from(each) * threads as u64 - 50);
    let stats = pubsub.stats().unwrap();
    assert_eq!(
        stats.iter().map(|s| s.dropped_slow).sum::<u64>(),
        sub.dropped()
    );
    assert_eq!(read(&mut sub, 50).len(), 50);
    assert!(sub.try_next().unwrap().is_none());
    drop(sub);
    rt.shutdown().unwrap();
}

#[test]
fn direct_publishes_are_counted_like_routed_ones() {
    let rt = runtime(2);
    let pubsub = PubSub::new(rt.handle());
    let mut a = pubsub
        .subscribe("count.a", SubscribeOptions::default())
        .unwrap();
    let mut any = pubsub
        .subscribe("count.*", SubscribeOptions::default())
        .unwrap();
    for i in 0..10 {
        pubsub.publish_message(numbered("count.a", i)).unwrap();
    }
    let batch: Vec<Message> = (0..5).map(|i| numbered("count.b", i)).collect();
    pubsub.publish_batch(batch).unwrap();
    for i in 0..3 {
        pubsub.publish_message(numbered("nobody", i)).unwrap();
    }
    assert_eq!(read(&mut a, 10).len(), 10);
    assert_eq!(read(&mut any, 15).len(), 15);
    let stats = pubsub.stats().unwrap();
    let sum = |f: fn(&ringbroker::pubsub::PubSubStats) -> u64| stats.iter().map(f).sum::<u64>();
    assert_eq!(sum(|s| s.published), 18, "{stats:?}");
    assert_eq!(sum(|s| s.routed), 25, "{stats:?}");
    assert_eq!(sum(|s| s.no_interest), 3, "{stats:?}");
    assert_eq!(sum(|s| s.dropped_slow), 0, "{stats:?}");
    drop((a, any));
    rt.shutdown().unwrap();
}

#[test]
fn a_thread_answers_requests_and_the_reply_finds_its_inbox() {
    let rt = runtime(2);
    let pubsub = PubSub::new(rt.handle());
    let mut service = pubsub
        .subscribe("svc.echo", SubscribeOptions::default())
        .unwrap();
    let responder = {
        let pubsub = pubsub.clone();
        std::thread::spawn(move || {
            for _ in 0..100 {
                let request = service.next_timeout(Duration::from_secs(5)).unwrap();
                let reply = request.reply.clone().unwrap();
                let answer = Message::new(reply, request.payload.clone());
                pubsub.publish_message(answer).unwrap();
            }
        })
    };
    for i in 0..100u32 {
        let reply = pubsub
            .request(
                "svc.echo",
                Bytes::from(i.to_be_bytes().to_vec()),
                Duration::from_secs(5),
            )
            .unwrap();
        assert_eq!(number(&reply), i);
    }
    responder.join().unwrap();
    rt.shutdown().unwrap();
}

/// One shard whose queue of calls from other threads holds 4: easy to fill.
fn one_shard_with_a_small_queue() -> Runtime {
    Runtime::start(RuntimeConfig {
        shards: Some(1),
        external_queue_capacity: 4,
        ..RuntimeConfig::default()
    })
    .unwrap()
}

#[test]
fn a_publish_its_home_shard_refuses_delivers_nothing() {
    let rt = one_shard_with_a_small_queue();
    let pubsub = PubSub::new(rt.handle());
    let mut direct = pubsub
        .subscribe("busy", SubscribeOptions::default())
        .unwrap();
    // A subscription the shard serves: every publish on `busy` needs the shard.
    let mut served = shard_served(&pubsub, "busy", None);
    let release_tx = hold(&rt, 0);
    let mut accepted = 0u32;
    let refused = loop {
        match pubsub.publish_message(numbered("busy", accepted)) {
            Ok(()) => accepted += 1,
            Err(error) => break error,
        }
        assert!(accepted < 100, "the shard's queue never filled");
    };
    assert!(matches!(refused, PubSubError::Backpressure), "{refused:?}");
    // The refused publish reached nobody, the direct subscription included.
    let direct_got: Vec<u32> = read(&mut direct, accepted as usize + 1)
        .iter()
        .map(number)
        .collect();
    assert_eq!(direct_got, (0..accepted).collect::<Vec<_>>());
    release_tx.send(()).unwrap();
    let served_got: Vec<u32> = read(&mut served, accepted as usize + 1)
        .iter()
        .map(number)
        .collect();
    assert_eq!(served_got, (0..accepted).collect::<Vec<_>>());
    drop((direct, served));
    rt.shutdown().unwrap();
}

#[test]
fn a_shard_publishing_reaches_a_direct_subscription_without_its_owner() {
    let rt = runtime(2);
    let pubsub = PubSub::new(rt.handle());
    let mut sub = pubsub
        .subscribe("from.shard", SubscribeOptions::default())
        .unwrap();
    // Subscriptions made through `PubSub` are owned by shard `id % shards`.
    let owner = (sub.id() % 2) as usize;
    let other = 1 - owner;
    let release_tx = hold(&rt, owner);
    // The owner is busy: a publish routed on the other shard must not wait for it.
    rt.handle()
        .spawn(other, |ctx: &mut ShardCtx| {
            let pubsub = ShardPubSub::get(ctx);
            for i in 0..10 {
                pubsub.publish(ctx, numbered("from.shard", i)).unwrap();
            }
        })
        .unwrap();
    let got: Vec<u32> = read(&mut sub, 10).iter().map(number).collect();
    release_tx.send(()).unwrap();
    assert_eq!(got, (0..10).collect::<Vec<_>>());
    drop(sub);
    rt.shutdown().unwrap();
}

/// A thread answering `count` requests on `subject` with "re:" + payload; `via_shard`:
/// each reply is published by a task on shard 0 instead of by the thread.
fn answer_from_thread(
    rt: &Runtime,
    pubsub: &PubSub,
    subject: &str,
    count: usize,
    via_shard: bool,
) -> std::thread::JoinHandle<Vec<String>> {
    let mut service = pubsub
        .subscribe(subject, SubscribeOptions::default())
        .unwrap();
    let (pubsub, handle) = (pubsub.clone(), rt.handle());
    std::thread::spawn(move || {
        let mut inboxes = Vec::new();
        for _ in 0..count {
            let Ok(request) = service.next_timeout(Duration::from_secs(10)) else {
                break;
            };
            let inbox = request.reply.clone().unwrap();
            inboxes.push(inbox.as_str().to_owned());
            let mut payload = b"re:".to_vec();
            payload.extend_from_slice(&request.payload);
            let reply = Message::new(inbox, Bytes::from(payload));
            if via_shard {
                handle
                    .spawn(0, move |ctx: &mut ShardCtx| {
                        ShardPubSub::get(ctx).publish(ctx, reply).unwrap();
                    })
                    .unwrap();
            } else {
                pubsub.publish_message(reply).unwrap();
            }
        }
        inboxes
    })
}

#[test]
fn a_request_between_threads_needs_no_shard_and_its_reply_finds_it_either_way() {
    let rt = runtime(2);
    let pubsub = PubSub::new(rt.handle());
    for via_shard in [false, true] {
        let responder = answer_from_thread(&rt, &pubsub, "svc.direct", 20, via_shard);
        for i in 0..20u32 {
            let reply = pubsub
                .request(
                    "svc.direct",
                    Bytes::from(i.to_string()),
                    Duration::from_secs(5),
                )
                .unwrap();
            assert_eq!(reply.payload, Bytes::from(format!("re:{i}")));
        }
        let inboxes = responder.join().unwrap();
        assert_eq!(inboxes.len(), 20);
        // Threads' requests are answered on their own inboxes.
        assert!(
            inboxes.iter().all(|i| i.starts_with("_INBOX.rb.t.")),
            "{inboxes:?}"
        );
    }
    let stats = pubsub.stats().unwrap();
    assert_eq!(stats.iter().map(|s| s.unknown_target).sum::<u64>(), 0);
    rt.shutdown().unwrap();
}

#[test]
fn a_threads_request_gets_no_responders_at_once_and_times_out_on_time() {
    let rt = runtime(2);
    let pubsub = PubSub::new(rt.handle());
    let started = Instant::now();
    let none = pubsub.request("svc.nobody", Bytes::new(), Duration::from_secs(5));
    assert!(matches!(none, Err(PubSubError::NoResponders)), "{none:?}");
    assert!(started.elapsed() < Duration::from_secs(1));
    // A responder that never answers: a long timeout first, then a short one, which
    // must not wait for the long one's timer.
    let _silent = pubsub
        .subscribe("svc.silent", SubscribeOptions::default())
        .unwrap();
    let (tx, rx) = mpsc::channel();
    for (tag, timeout) in [("long", 3_000u64), ("short", 100)] {
        let tx = tx.clone();
        let sent = Instant::now();
        pubsub
            .request_with(
                "svc.silent",
                Bytes::new(),
                Duration::from_millis(timeout),
                move |r| {
                    let _ = tx.send((tag, sent.elapsed(), r.map(drop)));
                },
            )
            .unwrap();
    }
    let (tag, waited, result) = rx.recv_timeout(Duration::from_secs(10)).unwrap();
    assert_eq!(tag, "short");
    assert!(matches!(result, Err(PubSubError::Timeout)), "{result:?}");
    assert!(
        waited >= Duration::from_millis(100) && waited < Duration::from_millis(2_000),
        "{waited:?}"
    );
    let (tag, waited, result) = rx.recv_timeout(Duration::from_secs(10)).unwrap();
    assert_eq!(tag, "long");
    assert!(matches!(result, Err(PubSubError::Timeout)), "{result:?}");
    assert!(waited >= Duration::from_millis(3_000), "{waited:?}");
    rt.shutdown().unwrap();
}

#[test]
fn many_requests_in_flight_from_threads_each_get_their_own_reply() {
    let rt = runtime(2);
    let pubsub = PubSub::new(rt.handle());
    let group = || support::group("echo");
    let responders: Vec<_> = (0..2)
        .map(|_| {
            let mut service = pubsub.subscribe("svc.many", group()).unwrap();
            let pubsub = pubsub.clone();
            std::thread::spawn(move || {
                let mut answered = 0;
                while let Ok(request) = service.next_timeout(Duration::from_millis(500)) {
                    let reply = Message::new(request.reply.clone().unwrap(), request.payload);
                    pubsub.publish_message(reply).unwrap();
                    answered += 1;
                }
                answered
            })
        })
        .collect();
    let (tx, rx) = mpsc::channel();
    let total = 2_000u32;
    for i in 0..total {
        let tx = tx.clone();
        pubsub
            .request_with(
                "svc.many",
                Bytes::from(i.to_be_bytes().to_vec()),
                Duration::from_secs(10),
                move |r| {
                    let _ = tx.send((i, r.map(|m| number(&m))));
                },
            )
            .unwrap();
    }
    for _ in 0..total {
        let (i, reply) = rx.recv_timeout(Duration::from_secs(10)).unwrap();
        assert_eq!(reply.unwrap(), i);
    }
    let answered: Vec<usize> = responders.into_iter().map(|r| r.join().unwrap()).collect();
    assert_eq!(answered.iter().sum::<usize>(), total as usize);
    assert_eq!(
        answered,
        vec![1_000, 1_000],
        "the group spreads them in turn"
    );
    rt.shutdown().unwrap();
}

#[test]
fn waiting_thread_requests_end_with_shutting_down_when_the_runtime_stops() {
    let rt = runtime(2);
    let pubsub = PubSub::new(rt.handle());
    let _silent = pubsub
        .subscribe("svc.silent", SubscribeOptions::default())
        .unwrap();
    let (tx, rx) = mpsc::channel();
    pubsub
        .request_with(
            "svc.silent",
            Bytes::new(),
            Duration::from_secs(60),
            move |r| {
                let _ = tx.send(r.map(drop));
            },
        )
        .unwrap();
    rt.shutdown().unwrap();
    let result = rx.recv_timeout(Duration::from_secs(10)).unwrap();
    assert!(
        matches!(result, Err(PubSubError::ShuttingDown)),
        "{result:?}"
    );
    let after = pubsub.request("svc.silent", Bytes::new(), Duration::from_secs(1));
    assert!(matches!(after, Err(PubSubError::ShuttingDown)), "{after:?}");
}

fn in_group(pubsub: &PubSub, pattern: &str, group: &str, max: Option<u64>) -> Subscription {
    let options = SubscribeOptions {
        max_messages: max,
        ..support::group(group)
    };
    pubsub.subscribe(pattern, options).unwrap()
}

#[test]
fn a_group_member_keeps_one_threads_order_when_its_group_stops_needing_a_shard() {
    let rt = runtime(2);
    let pubsub = PubSub::new(rt.handle());
    // This thread's first publish fixes its home shard; the direct path counts it there.
    pubsub.publish_message(numbered("nobody", 0)).unwrap();
    let home = pubsub
        .stats()
        .unwrap()
        .iter()
        .position(|s| s.published > 0)
        .unwrap();
    let mut direct = in_group(&pubsub, "ord.g", "g", None);
    // A member its shard serves sends the group's messages through the home shard. Its
    // owner (`id % 2`) must not be the home shard, which is about to be held busy.
    let served = loop {
        let candidate = in_group(&pubsub, "ord.g", "g", Some(u64::MAX));
        if (candidate.id() % 2) as usize != home {
            break candidate;
        }
    };
    let release_tx = hold(&rt, home);
    for i in 0..10 {
        pubsub.publish_message(numbered("ord.g", i)).unwrap();
    }
    // The group is all direct now, but the older messages still wait on the home shard.
    served.unsubscribe().unwrap();
    pubsub.publish_message(numbered("ord.g", 10)).unwrap();
    release_tx.send(()).unwrap();
    let got: Vec<u32> = read(&mut direct, 11).iter().map(number).collect();
    let mut sorted = got.clone();
    sorted.sort_unstable();
    assert_eq!(got, sorted, "one thread's publishes out of order");
    assert_eq!(got.last(), Some(&10), "{got:?}");
    drop(direct);
    rt.shutdown().unwrap();
}

#[test]
fn a_direct_delivery_dropped_by_a_full_buffer_is_not_counted_as_no_interest() {
    let rt = runtime(1);
    let pubsub = PubSub::new(rt.handle());
    let _full = pubsub.subscribe("cnt", at_most(1)).unwrap();
    // A shard-served plain subscription makes every publish go to the shard as well.
    let _other = shard_served(&pubsub, "other", None);
    for i in 0..3 {
        pubsub.publish_message(numbered("cnt", i)).unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    let stats = loop {
        let stats = pubsub.stats().unwrap()[0];
        if stats.routed >= 3 || Instant::now() > deadline {
            break stats;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    assert_eq!(
        (
            stats.published,
            stats.routed,
            stats.no_interest,
            stats.dropped_slow
        ),
        (3, 3, 0, 2),
        "{stats:?}"
    );
    rt.shutdown().unwrap();
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

#[test]
fn an_idle_threads_cache_does_not_keep_unsubscribed_queues_open() {
    let rt = runtime(1);
    let pubsub = PubSub::new(rt.handle());
    let before = open_fds();
    let subs: Vec<Subscription> = (0..100)
        .map(|_| {
            pubsub
                .subscribe("keep.>", SubscribeOptions::default())
                .unwrap()
        })
        .collect();
    let (published_tx, published_rx) = mpsc::channel::<()>();
    let (finish_tx, finish_rx) = mpsc::channel::<()>();
    let publisher = {
        let pubsub = pubsub.clone();
        std::thread::spawn(move || {
            pubsub.publish("keep.x", Bytes::from_static(b"x")).unwrap();
            published_tx.send(()).unwrap();
            // Idle from here on: its cache still holds the table with all 100.
            let _ = finish_rx.recv();
        })
    };
    published_rx.recv_timeout(Duration::from_secs(5)).unwrap();
    assert!(open_fds() >= before + 100);
    drop(subs);
    // Other tests in this binary open and close fds too: allow a little slack.
    let after = open_fds();
    finish_tx.send(()).unwrap();
    publisher.join().unwrap();
    assert!(after < before + 20, "{after} fds open, {before} before");
    rt.shutdown().unwrap();
}

#[test]
fn a_group_takes_turns_when_its_thread_alternates_runtimes_and_the_table_changes() {
    let (rt1, rt2) = (runtime(1), runtime(1));
    let (p1, p2) = (PubSub::new(rt1.handle()), PubSub::new(rt2.handle()));
    let mut members: Vec<Subscription> = (0..2).map(|_| in_group(&p1, "work", "g", None)).collect();
    for i in 0..100 {
        p1.publish_message(numbered("work", i)).unwrap();
        p2.publish_message(numbered("elsewhere", i)).unwrap();
        // A change of the table every ten messages rebuilds every route.
        if i % 10 == 0 {
            drop(p1.subscribe("churn", SubscribeOptions::default()).unwrap());
        }
    }
    let counts: Vec<usize> = members.iter_mut().map(|m| read(m, 100).len()).collect();
    assert_eq!(counts, vec![50, 50]);
    drop(members);
    rt1.shutdown().unwrap();
    rt2.shutdown().unwrap();
}

#[test]
fn two_pubsubs_on_one_runtime_never_share_a_subscription_id() {
    let rt = runtime(1);
    let (p1, p2) = (PubSub::new(rt.handle()), PubSub::new(rt.handle()));
    let a = p1.subscribe("x", SubscribeOptions::default()).unwrap();
    let b = p2.subscribe("y", SubscribeOptions::default()).unwrap();
    assert_ne!(a.id(), b.id());
    drop((a, b));
    for i in 0..5 {
        p1.publish_message(numbered("x", i)).unwrap();
    }
    let stats = p1.stats().unwrap()[0];
    assert_eq!((stats.routed, stats.no_interest), (0, 5), "{stats:?}");
    rt.shutdown().unwrap();
}

#[test]
fn a_threads_request_its_home_shard_refuses_reaches_nobody_and_arms_no_timer() {
    let rt = one_shard_with_a_small_queue();
    let pubsub = PubSub::new(rt.handle());
    let mut silent = pubsub
        .subscribe("svc.silent", SubscribeOptions::default())
        .unwrap();
    let release = hold(&rt, 0);
    // Fill the held shard's queue: the expiry timer the request needs cannot be armed.
    while rt.handle().spawn(0, |_: &mut ShardCtx| {}).is_ok() {}
    let (tx, rx) = mpsc::channel();
    let refused_tx = tx.clone();
    let refused = pubsub.request_with(
        "svc.silent",
        Bytes::new(),
        Duration::from_millis(100),
        move |r| {
            let _ = refused_tx.send(("refused", r.map(drop)));
        },
    );
    assert!(
        matches!(refused, Err(PubSubError::Backpressure)),
        "{refused:?}"
    );
    release.send(()).unwrap();
    // A later request with a later deadline arms its own timer (the refused one's timer
    // is not counted as armed) and times out. (Retried while the shard drains its queue.)
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let tx = tx.clone();
        let later = pubsub.request_with(
            "svc.silent",
            Bytes::new(),
            Duration::from_secs(1),
            move |r| {
                let _ = tx.send(("later", r.map(drop)));
            },
        );
        match later {
            Ok(()) => break,
            Err(PubSubError::Backpressure) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(error) => panic!("{error:?}"),
        }
    }
    let (tag, result) = rx.recv_timeout(Duration::from_secs(10)).unwrap();
    assert_eq!(tag, "later", "the refused request's callback never runs");
    assert!(matches!(result, Err(PubSubError::Timeout)), "{result:?}");
    // The refused request reached nobody; the later one did.
    assert_eq!(read(&mut silent, 2).len(), 1);
    drop(silent);
    rt.shutdown().unwrap();
}
