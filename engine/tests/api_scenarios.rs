//! The same scenarios through `BrokerApi`, once against the embedded `Broker` and once
//! against a `Client` over TCP: subjects (fan-out, queue groups, request-reply and its
//! errors), streams (keys, dedup, a durable consumer with ack and nak, error codes) and
//! queues (topic routing, confirms, mandatory, prefetch 1, requeue). Each scenario
//! must behave the same, error codes included, whichever side it runs on.

#[path = "support/server.rs"]
mod server;

use std::collections::BTreeSet;
use std::time::Duration;

use bytes::Bytes;
use ringbroker::api::BrokerApi;
use ringbroker::net::ServerConfig;
use ringbroker::protocol::ErrorCode;
use ringbroker::pubsub::{Message, Subject};
use ringbroker::queue::{ConsumeOptions, ExchangeConfig, ExchangeKind, QueueConfig};
use ringbroker::stream::{ConsumerConfig, Publish, StreamConfig};
use server::{Fixture, WAIT};

fn message(subject: &str, payload: &[u8]) -> Message {
    Message::new(
        Subject::new(subject.to_owned()).expect("subject"),
        Bytes::copy_from_slice(payload),
    )
}

fn code<T: std::fmt::Debug>(result: ringbroker::api::Result<T>) -> Option<ErrorCode> {
    result.err().map(|e| e.code)
}

fn subjects(api: &dyn BrokerApi) {
    let all = api.subscribe("events.>", None).expect("subscribe");
    let a = api.subscribe("events.*", Some("g")).expect("member a");
    let b = api.subscribe("events.*", Some("g")).expect("member b");
    for i in 0..20u8 {
        api.publish(message("events.x", &[i])).expect("publish");
    }
    for i in 0..20u8 {
        assert_eq!(&all.next(WAIT).expect("fan-out").payload[..], &[i]);
    }
    let mut shared = 0;
    while shared < 20 {
        let got = [&a, &b]
            .iter()
            .filter_map(|s| s.next(Duration::from_millis(20)).ok())
            .count();
        assert!(got > 0, "queue group members stopped receiving at {shared}");
        shared += got;
    }
    assert_eq!(shared, 20, "each message to exactly one member");
    std::thread::scope(|scope| {
        let responder = api.subscribe("svc.echo", None).expect("responder");
        scope.spawn(move || {
            let request = responder.next(WAIT).expect("request");
            let reply = request.reply.expect("reply subject");
            api.publish(Message::new(reply, request.payload))
                .expect("reply");
        });
        let reply = api
            .request("svc.echo", Bytes::from_static(b"hi"), WAIT)
            .expect("reply");
        assert_eq!(&reply.payload[..], b"hi");
    });
    let none = api.request("svc.nobody", Bytes::new(), WAIT);
    assert_eq!(code(none), Some(ErrorCode::NoResponders));
}

fn streams(api: &dyn BrokerApi) {
    let config = StreamConfig {
        partitions: 3,
        ..StreamConfig::new("orders", &["orders.>"])
    };
    api.create_stream(&config).expect("create");
    let other = StreamConfig {
        partitions: 4,
        ..config.clone()
    };
    assert_eq!(
        code(api.create_stream(&other)),
        Some(ErrorCode::AlreadyExists)
    );
    assert_eq!(code(api.stream_info("nope")), Some(ErrorCode::NotFound));
    let records: Vec<Publish> = (0..30u32)
        .map(|i| Publish::new("orders.eu", i.to_le_bytes().to_vec()).key(&b"k"[..]))
        .collect();
    let acks: Vec<_> = api
        .publish_records(&records)
        .expect("publish")
        .into_iter()
        .map(|a| a.expect("stored"))
        .collect();
    assert_eq!(
        acks.iter()
            .map(|a| a.partition)
            .collect::<BTreeSet<_>>()
            .len(),
        1
    );
    let dup = Publish::new("orders.eu", &b"x"[..]).msg_id(&b"m1"[..]);
    let first = api
        .publish_records(std::slice::from_ref(&dup))
        .expect("publish")[0]
        .clone();
    let again = api.publish_records(&[dup]).expect("publish")[0].clone();
    assert!(again.expect("dup").duplicate && !first.expect("first").duplicate);
    let nowhere = api.publish_records(&[Publish::new("invoices.1", &b"x"[..])]);
    assert_eq!(
        code(nowhere.expect("answered").remove(0)),
        Some(ErrorCode::NotFound)
    );

    durable_consumer(api, acks[3].offset);
}

/// A durable consumer of `orders`: everything once, a nak'ed record (at `nak_offset`)
/// again, nothing pending at the end; then the consumer and the stream are deleted.
fn durable_consumer(api: &dyn BrokerApi, nak_offset: u64) {
    api.create_consumer("orders", &ConsumerConfig::durable("billing"))
        .expect("consumer");
    assert_eq!(
        api.consumers("orders").expect("list"),
        vec!["billing".to_owned()]
    );
    let consumer = api.join("orders", "billing").expect("join");
    assert_eq!(consumer.name(), "billing");
    let mut seen = BTreeSet::new();
    let mut naked = false;
    while seen.len() < 31 {
        let record = consumer.next(WAIT).expect("record");
        if !naked && record.delivery_count == 1 && record.offset == nak_offset {
            consumer
                .nak(record.partition, record.offset, Duration::ZERO)
                .expect("nak");
            naked = true;
            continue;
        }
        consumer
            .ack(&[(record.partition, record.offset)])
            .expect("ack");
        seen.insert((record.partition, record.offset));
    }
    assert!(naked);
    let (p, o) = *seen.first().expect("a record");
    consumer
        .nak(p, o, Duration::ZERO)
        .expect("a nak after the ack is ignored, both ways");
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let info = api.consumer_info("orders", "billing").expect("info");
        if info.partitions.iter().all(|p| p.pending == 0) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{info:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
    drop(consumer);
    api.delete_consumer("orders", "billing")
        .expect("delete consumer");
    api.delete_stream("orders").expect("delete");
    assert!(api.streams().expect("list").is_empty());
}

fn queues(api: &dyn BrokerApi) {
    api.declare_exchange(&ExchangeConfig::new("events", ExchangeKind::Topic))
        .expect("exchange");
    let clash = api.declare_exchange(&ExchangeConfig::new("events", ExchangeKind::Direct));
    assert_eq!(code(clash), Some(ErrorCode::AlreadyExists));
    api.declare_queue(&QueueConfig::new("eu")).expect("queue");
    let bind = ringbroker::api::Bind {
        destination: "eu".into(),
        source: "events".into(),
        routing_key: "orders.eu.#".into(),
        arguments: vec![],
    };
    api.bind_queue(&bind).expect("bind");
    let routed = |key: &str, payload: &[u8]| {
        (
            "events".to_owned(),
            key.to_owned(),
            ringbroker::queue::Message::persistent(Bytes::copy_from_slice(payload)),
        )
    };
    let confirms = api
        .publish_messages(
            &[routed("orders.eu.new", b"1"), routed("orders.us.new", b"2")],
            false,
        )
        .expect("publish");
    assert_eq!(confirms[0].clone().expect("routed"), 1);
    assert_eq!(confirms[1].clone().expect("confirmed"), 0);
    let lost = api
        .publish_messages(&[routed("orders.us.new", b"3")], true)
        .expect("publish");
    assert_eq!(code(lost[0].clone()), Some(ErrorCode::Unroutable));
    api.publish_messages(&[routed("orders.eu.x", b"4")], true)
        .expect("publish");
    let consumer = api
        .consume(
            "eu",
            ConsumeOptions {
                prefetch: 1,
                no_ack: false,
            },
        )
        .expect("consume");
    let first = consumer.next(WAIT).expect("first");
    assert_eq!(&first.payload[..], b"1");
    assert_eq!(first.exchange, "events");
    assert!(
        consumer.next(Duration::from_millis(100)).is_err(),
        "prefetch 1"
    );
    consumer
        .nack(first.delivery_tag, false, true)
        .expect("requeue");
    let again = consumer.next(WAIT).expect("redelivered");
    assert!(again.redelivered);
    consumer.ack(again.delivery_tag, false).expect("ack");
    let second = consumer.next(WAIT).expect("second");
    assert_eq!(&second.payload[..], b"4");
    consumer.ack(second.delivery_tag, false).expect("ack");
    assert_eq!(code(api.queue_info("nope")), Some(ErrorCode::NotFound));
    exchange_to_exchange(api);
    listings(api);
}

/// An exchange bound to `events` gets what matches its key until it is unbound.
fn exchange_to_exchange(api: &dyn BrokerApi) {
    api.declare_exchange(&ExchangeConfig::new("audit", ExchangeKind::Fanout))
        .expect("exchange");
    api.declare_queue(&QueueConfig::new("audit-log"))
        .expect("queue");
    let to_queue = ringbroker::api::Bind {
        destination: "audit-log".into(),
        source: "audit".into(),
        routing_key: String::new(),
        arguments: vec![],
    };
    api.bind_queue(&to_queue).expect("bind queue");
    let e2e = ringbroker::api::Bind {
        destination: "audit".into(),
        source: "events".into(),
        routing_key: "orders.#".into(),
        arguments: vec![],
    };
    api.bind_exchange(&e2e).expect("bind exchange");
    let message = || {
        (
            "events".to_owned(),
            "orders.us.paid".to_owned(),
            ringbroker::queue::Message::new(Bytes::from_static(b"e2e")),
        )
    };
    let reached = api.publish_messages(&[message()], true).expect("publish");
    assert_eq!(reached[0].clone().expect("routed through audit"), 1);
    api.unbind_exchange(&e2e).expect("unbind exchange");
    let reached = api.publish_messages(&[message()], true).expect("publish");
    assert_eq!(code(reached[0].clone()), Some(ErrorCode::Unroutable));
    assert_eq!(
        code(api.unbind_exchange(&e2e)),
        Some(ErrorCode::NotFound),
        "the binding is gone"
    );
    assert_eq!(api.queue_info("audit-log").expect("info").messages, 1);
}

/// What `queues` declared, listed back.
fn listings(api: &dyn BrokerApi) {
    let exchanges: Vec<String> = api
        .exchanges()
        .expect("list")
        .into_iter()
        .map(|e| e.name)
        .collect();
    assert_eq!(exchanges, vec!["audit".to_owned(), "events".to_owned()]);
    let queues: Vec<String> = api
        .queues()
        .expect("list")
        .into_iter()
        .map(|q| q.name)
        .collect();
    assert_eq!(queues, vec!["audit-log".to_owned(), "eu".to_owned()]);
}

/// Whether `fd` becomes readable within `WAIT`.
fn readable(fd: std::os::fd::RawFd) -> bool {
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    let ms = i32::try_from(WAIT.as_millis()).unwrap_or(i32::MAX);
    // SAFETY: one valid pollfd on the stack, for the length given.
    let n = unsafe { libc::poll(&mut pfd, 1, ms) };
    n == 1 && pfd.revents & libc::POLLIN != 0
}

/// The event-loop protocol every consumer follows: nothing buffered, `arm` says wait,
/// the fd turns readable when `publish` delivers, and `take` then finds the message.
fn waits_on_fd<T>(
    what: &str,
    fd: std::os::fd::RawFd,
    arm: impl Fn() -> bool,
    clear: impl Fn(),
    take: impl Fn() -> Option<T>,
    publish: impl FnOnce(),
) -> T {
    assert!(take().is_none(), "{what}: nothing buffered yet");
    assert!(!arm(), "{what}: arm with nothing buffered says wait");
    publish();
    assert!(readable(fd), "{what}: fd readable after a delivery");
    clear();
    let mut tries = 0;
    loop {
        if let Some(got) = take() {
            return got;
        }
        tries += 1;
        assert!(tries < 1000, "{what}: readable, yet nothing to take");
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn event_loop_waiting(api: &dyn BrokerApi) {
    let sub = api.subscribe("ticks.*", None).expect("subscribe");
    let got = waits_on_fd(
        "subscription",
        sub.fd(),
        || sub.arm(),
        || sub.clear_notification().expect("clear"),
        || sub.try_next().expect("open"),
        || api.publish(message("ticks.a", b"t")).expect("publish"),
    );
    assert_eq!(&got.payload[..], b"t");

    api.create_stream(&StreamConfig::new("ticks", &["stored.>"]))
        .expect("stream");
    let consumer = api
        .subscribe_stream("ticks", &ConsumerConfig::default())
        .expect("consumer");
    let record = waits_on_fd(
        "stream consumer",
        consumer.fd(),
        || consumer.arm(),
        || consumer.clear_notification().expect("clear"),
        || consumer.try_next().expect("open"),
        || {
            let publish = Publish::new("stored.a", Bytes::from_static(b"r"));
            api.publish_records(&[publish]).expect("publish");
        },
    );
    assert_eq!(&record.payload[..], b"r");
    consumer
        .ack(&[(record.partition, record.offset)])
        .expect("ack");

    api.declare_queue(&QueueConfig::new("jobs")).expect("queue");
    let jobs = api
        .consume("jobs", ConsumeOptions::default())
        .expect("consume");
    let job = waits_on_fd(
        "queue consumer",
        jobs.fd(),
        || jobs.arm(),
        || jobs.clear_notification().expect("clear"),
        || jobs.try_next().expect("open"),
        || {
            let m = ringbroker::queue::Message::new(Bytes::from_static(b"j"));
            let routed = (String::new(), "jobs".to_owned(), m);
            api.publish_messages(&[routed], true).expect("publish");
        },
    );
    assert_eq!(&job.payload[..], b"j");
    jobs.ack(job.delivery_tag, false).expect("ack");
}

fn asynchronous_publishes(api: &dyn BrokerApi) {
    api.create_stream(&StreamConfig::new("audit", &["audit.>"]))
        .expect("stream");
    let (tx, rx) = std::sync::mpsc::channel();
    let records: Vec<Publish> = (0..5u8)
        .map(|i| Publish::new("audit.x", Bytes::from(vec![i])))
        .chain([Publish::new("elsewhere", Bytes::new())])
        .collect();
    let stream_done = tx.clone();
    api.publish_records_with(
        records,
        Box::new(move |r| drop(stream_done.send(format!("{r:?}")))),
    )
    .expect("queued");
    let outcome = rx.recv_timeout(WAIT).expect("stream publish answered");
    assert_eq!(outcome.matches("offset").count(), 5, "{outcome}");
    assert!(
        outcome.contains("NotFound"),
        "the unstored subject: {outcome}"
    );

    api.declare_exchange(&ExchangeConfig::new("fan", ExchangeKind::Fanout))
        .expect("exchange");
    let m = || ringbroker::queue::Message::new(Bytes::from_static(b"m"));
    let routed = vec![
        ("fan".to_owned(), String::new(), m()),
        ("fan".to_owned(), String::new(), m()),
    ];
    api.publish_messages_with(
        routed,
        true,
        Box::new(move |r| drop(tx.send(format!("{r:?}")))),
    )
    .expect("queued");
    let confirms = rx.recv_timeout(WAIT).expect("exchange publish answered");
    assert_eq!(confirms.matches("Unroutable").count(), 2, "{confirms}");
}

fn batches_and_asynchronous_requests(api: &dyn BrokerApi) {
    let sub = api.subscribe("batch.>", None).expect("subscribe");
    let batch: Vec<Message> = (0..100u8)
        .map(|i| message(&format!("batch.{i}"), &[i]))
        .collect();
    api.publish_batch(batch).expect("batch queued");
    for i in 0..100u8 {
        let m = sub
            .next(WAIT)
            .expect("every message of the batch, in order");
        assert_eq!(m.payload.as_ref(), &[i]);
        assert_eq!(m.subject.as_str(), format!("batch.{i}"));
    }

    let responder = api.subscribe("svc.async", None).expect("responder");
    let (tx, rx) = std::sync::mpsc::channel();
    let answered = tx.clone();
    api.request_with(
        "svc.async",
        Bytes::from_static(b"ping"),
        WAIT,
        Box::new(move |r| drop(answered.send(r))),
    )
    .expect("request sent");
    let request = responder.next(WAIT).expect("the request arrives");
    let reply_to = request.reply.expect("a reply subject");
    api.publish(Message::new(reply_to, Bytes::from_static(b"pong")))
        .expect("reply");
    let reply = rx.recv_timeout(WAIT).expect("answered").expect("a reply");
    assert_eq!(reply.payload.as_ref(), b"pong");

    let nobody = tx.clone();
    api.request_with(
        "svc.nobody",
        Bytes::new(),
        WAIT,
        Box::new(move |r| drop(nobody.send(r))),
    )
    .expect("request sent");
    let answer = rx.recv_timeout(WAIT).expect("answered at once");
    assert_eq!(code(answer), Some(ErrorCode::NoResponders));

    api.request_with(
        "svc.async",
        Bytes::new(),
        Duration::from_millis(100),
        Box::new(move |r| drop(tx.send(r))),
    )
    .expect("request sent");
    let answer = rx.recv_timeout(WAIT).expect("answered at the timeout");
    assert_eq!(code(answer), Some(ErrorCode::Timeout));
    assert!(
        api.request_with("bad subject", Bytes::new(), WAIT, Box::new(drop))
            .is_err(),
        "an invalid subject is refused before sending"
    );
}

macro_rules! both_ways {
    ($($scenario:ident),*) => {
        mod embedded {
            use super::*;
            $(
                #[test]
                fn $scenario() {
                    let fx = Fixture::start(ServerConfig::default());
                    super::$scenario(fx.broker.as_ref().expect("broker"));
                }
            )*
        }
        mod remote {
            use super::*;
            $(
                #[test]
                fn $scenario() {
                    let fx = Fixture::start(ServerConfig::default());
                    let client = fx.client();
                    super::$scenario(&client);
                }
            )*
        }
    };
}

both_ways!(
    subjects,
    streams,
    queues,
    event_loop_waiting,
    asynchronous_publishes,
    batches_and_asynchronous_requests
);
