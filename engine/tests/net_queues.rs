//! Exchanges and queues over TCP: routing through direct and topic exchanges with
//! confirms, mandatory publishes that reach no queue, prefetch holding back a busy
//! consumer, nack with requeue flagging redelivery, consumers that disconnect handing
//! their unacknowledged deliveries back, and exclusive queues that belong to one
//! connection and go with it.

#[path = "support/server.rs"]
mod server;

use std::time::{Duration, Instant};

use ringbroker::api::Bind;
use ringbroker::net::ServerConfig;
use ringbroker::protocol::ErrorCode;
use ringbroker::queue::{ConsumeOptions, ExchangeConfig, ExchangeKind, Message, QueueConfig};
use server::{Fixture, WAIT};

fn triple(exchange: &str, key: &str, message: Message) -> (String, String, Message) {
    (exchange.to_owned(), key.to_owned(), message)
}

#[test]
fn topic_routing_confirms_and_mandatory_over_tcp() {
    let fx = Fixture::start(ServerConfig::default());
    let client = fx.client();
    client
        .declare_exchange(&ExchangeConfig::new("events", ExchangeKind::Topic))
        .expect("exchange");
    client
        .declare_queue(&QueueConfig::new("eu"))
        .expect("queue eu");
    client
        .declare_queue(&QueueConfig::new("all"))
        .expect("queue all");
    client
        .bind_queue(&Bind {
            destination: "eu".into(),
            source: "events".into(),
            routing_key: "orders.eu.*".into(),
            arguments: vec![],
        })
        .expect("bind eu");
    client
        .bind_queue(&Bind {
            destination: "all".into(),
            source: "events".into(),
            routing_key: "orders.#".into(),
            arguments: vec![],
        })
        .expect("bind all");
    let confirms = client
        .publish_messages(
            &[
                triple(
                    "events",
                    "orders.eu.created",
                    Message::persistent(&b"a"[..]),
                ),
                triple("events", "orders.us.created", Message::new(&b"b"[..])),
                triple("events", "invoices.x", Message::new(&b"c"[..])),
            ],
            false,
        )
        .expect("publish");
    let reached: Vec<u32> = confirms
        .into_iter()
        .map(|c| c.expect("confirmed"))
        .collect();
    assert_eq!(reached, vec![2, 1, 0]);
    let unroutable = client
        .publish_messages(
            &[triple("events", "invoices.x", Message::new(&b"d"[..]))],
            true,
        )
        .expect("publish");
    assert_eq!(
        unroutable[0].as_ref().err().and_then(|e| e.code()),
        Some(ErrorCode::Unroutable)
    );
    assert_eq!(client.queue_info("eu").expect("info").messages, 1);
    assert_eq!(client.queue_info("all").expect("info").messages, 2);
    assert_eq!(client.purge_queue("all").expect("purge"), 2);
    let missing = client.queue_info("nope");
    assert_eq!(
        missing.err().and_then(|e| e.code()),
        Some(ErrorCode::NotFound)
    );
    let clash = client.declare_exchange(&ExchangeConfig::new("events", ExchangeKind::Fanout));
    assert_eq!(
        clash.err().and_then(|e| e.code()),
        Some(ErrorCode::AlreadyExists)
    );
}

#[test]
fn prefetch_one_holds_back_until_ack_and_nack_requeues() {
    let fx = Fixture::start(ServerConfig::default());
    let client = fx.client();
    client
        .declare_queue(&QueueConfig::new("work"))
        .expect("queue");
    let batch: Vec<_> = (0..3u8)
        .map(|i| triple("", "work", Message::persistent(vec![i])))
        .collect();
    client.publish_messages(&batch, true).expect("publish");
    let consumer = client
        .consume(
            "work",
            ConsumeOptions {
                prefetch: 1,
                no_ack: false,
            },
        )
        .expect("consume");
    let first = consumer.next_timeout(WAIT).expect("first");
    assert_eq!(&first.delivery.payload[..], &[0]);
    assert!(
        consumer.next_timeout(Duration::from_millis(200)).is_err(),
        "prefetch 1: nothing more until the ack"
    );
    first.nack(false, true).expect("nack requeue");
    let again = consumer.next_timeout(WAIT).expect("redelivered");
    assert_eq!(&again.delivery.payload[..], &[0]);
    assert!(again.delivery.redelivered);
    again.ack(false).expect("ack");
    for i in 1..3u8 {
        let d = consumer.next_timeout(WAIT).expect("next");
        assert_eq!(&d.delivery.payload[..], &[i]);
        d.ack(false).expect("ack");
    }
    let deadline = Instant::now() + WAIT;
    loop {
        let info = client.queue_info("work").expect("info");
        if info.messages == 0 && info.unacked == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "{info:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn a_disconnected_consumer_hands_its_deliveries_back() {
    let fx = Fixture::start(ServerConfig::default());
    let admin = fx.client();
    admin
        .declare_queue(&QueueConfig::new("jobs"))
        .expect("queue");
    let batch: Vec<_> = (0..10u8)
        .map(|i| triple("", "jobs", Message::new(vec![i])))
        .collect();
    admin.publish_messages(&batch, true).expect("publish");
    {
        let quitter = fx.client();
        let c = quitter
            .consume(
                "jobs",
                ConsumeOptions {
                    prefetch: 5,
                    no_ack: false,
                },
            )
            .expect("consume");
        let d = c.next_timeout(WAIT).expect("a delivery");
        assert_eq!(&d.delivery.payload[..], &[0]);
        // Dropped without acking: the connection closes.
    }
    let worker = fx.client();
    let c = worker
        .consume("jobs", ConsumeOptions::default())
        .expect("consume");
    let mut got = Vec::new();
    while got.len() < 10 {
        let d = c.next_timeout(WAIT).expect("delivery");
        got.push(d.delivery.payload[0]);
        d.ack(false).expect("ack");
    }
    got.sort_unstable();
    assert_eq!(got, (0..10).collect::<Vec<u8>>());
}

#[test]
fn exclusive_queues_belong_to_their_connection() {
    let fx = Fixture::start(ServerConfig::default());
    let owner = fx.client();
    let other = fx.client();
    let config = QueueConfig {
        exclusive: true,
        ..QueueConfig::new("private")
    };
    owner.declare_queue(&config).expect("declare");
    let locked = other.consume("private", ConsumeOptions::default());
    assert_eq!(locked.err().and_then(|e| e.code()), Some(ErrorCode::Locked));
    owner.close();
    let deadline = Instant::now() + WAIT;
    loop {
        match other.queue_info("private") {
            Err(e) if e.code() == Some(ErrorCode::NotFound) => break,
            _ => assert!(
                Instant::now() < deadline,
                "exclusive queue outlived its connection"
            ),
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}
