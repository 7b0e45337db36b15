//! Subjects over TCP: a `net::Server` on a real broker, driven by the Rust client and
//! by raw sockets sending bad input. Proves publish/subscribe, queue groups,
//! request-reply (including `NoResponders` and `Timeout`), that malformed, oversized,
//! out-of-state and truncated input closes only the offending connection with an
//! error, that a graceful stop says goodbye, and that a thousand concurrent connections
//! each publish and receive, and that a client reconnects and resubscribes after the
//! server restarts.

#[path = "support/server.rs"]
mod server;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use server::{Fixture, WAIT};

use bytes::{BufMut, BytesMut};
use ringbroker::client::{Client, ClientConfig, ClientError};
use ringbroker::net::ServerConfig;
use ringbroker::protocol::session::{ErrorBody, Hello};
use ringbroker::protocol::{encode_frame, split_frame, ErrorCode, Op, HEADER_BYTES, VERSION};
use ringbroker::pubsub::Subject;

fn hello_frame(token: &str) -> BytesMut {
    let mut out = BytesMut::new();
    let hello = Hello {
        version_min: VERSION,
        version_max: VERSION,
        token: token.into(),
        client_name: "raw".into(),
    };
    encode_frame(&mut out, Op::Hello, 0, 0, |b| hello.encode(b));
    out
}

/// Reads frames until the server closes; returns the last ERROR seen.
fn read_until_closed(stream: &mut TcpStream) -> Option<ErrorBody> {
    let mut buf = BytesMut::new();
    let mut last_error = None;
    let deadline = Instant::now() + WAIT;
    loop {
        while let Ok(Some((header, total))) = split_frame(&buf, u32::MAX) {
            let frame = buf.split_to(total).freeze();
            if header.op == Op::Error {
                last_error = ErrorBody::decode(frame.slice(HEADER_BYTES..)).ok();
            }
        }
        assert!(
            Instant::now() < deadline,
            "server did not close the connection"
        );
        let mut chunk = [0u8; 4096];
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return last_error,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

#[test]
fn publish_reaches_subscribers_on_other_connections() {
    let fx = Fixture::start(ServerConfig::default());
    let (publisher, subscriber) = (fx.client(), fx.client());
    let sub = subscriber.subscribe("orders.>", None).expect("subscribe");
    for i in 0..100u32 {
        publisher
            .publish(&format!("orders.eu.{i}"), i.to_le_bytes().to_vec())
            .expect("publish");
    }
    for i in 0..100u32 {
        let message = sub.next_timeout(WAIT).expect("message");
        assert_eq!(message.subject.as_str(), format!("orders.eu.{i}"));
        assert_eq!(&message.payload[..], &i.to_le_bytes());
    }
    publisher.ping().expect("ping");
    assert!(
        sub.try_next().expect("open").is_none(),
        "nothing else was published"
    );
}

#[test]
fn queue_group_members_share_the_messages() {
    let fx = Fixture::start(ServerConfig::default());
    let (a, b, publisher) = (fx.client(), fx.client(), fx.client());
    let sub_a = a.subscribe("jobs", Some("workers")).expect("a");
    let sub_b = b.subscribe("jobs", Some("workers")).expect("b");
    let batch: Vec<_> = (0..200)
        .map(|i: u32| {
            ringbroker::pubsub::Message::new(
                ringbroker::pubsub::Subject::new("jobs").expect("subject"),
                i.to_le_bytes().to_vec(),
            )
        })
        .collect();
    publisher.publish_batch(&batch).expect("publish batch");
    let mut got = Vec::new();
    let deadline = Instant::now() + WAIT;
    while got.len() < 200 && Instant::now() < deadline {
        for sub in [&sub_a, &sub_b] {
            if let Ok(m) = sub.next_timeout(Duration::from_millis(10)) {
                got.push(u32::from_le_bytes(
                    m.payload[..4].try_into().expect("4 bytes"),
                ));
            }
        }
    }
    got.sort_unstable();
    assert_eq!(
        got,
        (0..200).collect::<Vec<_>>(),
        "each message exactly once"
    );
}

#[test]
fn request_gets_the_first_reply_or_a_clear_error() {
    let fx = Fixture::start(ServerConfig::default());
    let responder = fx.client();
    let requester = fx.client();
    let sub = responder.subscribe("svc.echo", None).expect("subscribe");
    let worker = std::thread::spawn(move || {
        let request = sub.next_timeout(WAIT).expect("request arrives");
        let reply_to = request.reply.expect("reply subject");
        let mut answer = b"echo:".to_vec();
        answer.extend_from_slice(&request.payload);
        responder.publish(reply_to.as_str(), answer).expect("reply");
        responder.ping().expect("reply flushed");
    });
    let reply = requester
        .request("svc.echo", &b"hi"[..], WAIT)
        .expect("reply");
    assert_eq!(&reply.payload[..], b"echo:hi");
    worker.join().expect("responder");
    let none = requester.request("svc.nobody", &b"?"[..], WAIT);
    assert!(
        matches!(&none, Err(e) if e.code() == Some(ErrorCode::NoResponders)),
        "{none:?}"
    );
    let _silent = requester.subscribe("svc.silent", None).expect("subscribe");
    let late = requester.request("svc.silent", &b"?"[..], Duration::from_millis(100));
    assert!(
        matches!(&late, Err(e) if e.code() == Some(ErrorCode::Timeout)),
        "{late:?}"
    );
    requester
        .ping()
        .expect("connection still fine after request errors");
}

#[test]
fn wrong_token_and_missing_hello_are_refused() {
    let fx = Fixture::start(ServerConfig {
        auth_token: Some("s3cret".into()),
        ..ServerConfig::default()
    });
    let mut config = ClientConfig::new(fx.url());
    config.auth_token = Some("wrong".into());
    let refused = Client::connect(config.clone());
    assert!(
        matches!(&refused, Err(e) if e.code() == Some(ErrorCode::AuthFailed)),
        "{refused:?}"
    );
    config.auth_token = Some("s3cret".into());
    Client::connect(config)
        .expect("right token")
        .ping()
        .expect("ping");

    let mut raw = fx.raw();
    let mut ping = BytesMut::new();
    encode_frame(&mut ping, Op::Ping, 0, 1, |_| {});
    raw.write_all(&ping).expect("write");
    let error = read_until_closed(&mut raw).expect("an ERROR before close");
    assert_eq!(error.code, ErrorCode::OutOfState);
}

#[test]
fn bad_input_closes_only_that_connection() {
    let fx = Fixture::start(ServerConfig::default());
    let subscriber = fx.client();
    let sub = subscriber.subscribe("steady", None).expect("subscribe");
    let publisher = fx.client();

    // Random bytes (after a valid HELLO): an unknown op or bad length.
    let mut raw = fx.raw();
    raw.write_all(&hello_frame("")).expect("hello");
    raw.write_all(&[0x0c, 0, 0, 0, 0xee, 0xee, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8])
        .expect("garbage");
    let error = read_until_closed(&mut raw).expect("error");
    assert_eq!(error.code, ErrorCode::UnknownOp);

    // A 4 GiB length prefix: refused from the prefix alone.
    let mut raw = fx.raw();
    raw.write_all(&hello_frame("")).expect("hello");
    raw.write_all(&u32::MAX.to_le_bytes()).expect("prefix");
    let error = read_until_closed(&mut raw).expect("error");
    assert_eq!(error.code, ErrorCode::FrameTooLarge);

    // A malformed body: a PUBLISH whose count promises more than it holds.
    let mut raw = fx.raw();
    raw.write_all(&hello_frame("")).expect("hello");
    let mut bad = BytesMut::new();
    encode_frame(&mut bad, Op::Publish, 0, 9, |b| b.put_u32_le(1000));
    raw.write_all(&bad).expect("bad publish");
    let error = read_until_closed(&mut raw).expect("error");
    assert_eq!(error.code, ErrorCode::Malformed);

    // Half a frame, then close.
    let mut raw = fx.raw();
    raw.write_all(&hello_frame("")[..7]).expect("half");
    drop(raw);

    for i in 0..50u32 {
        publisher
            .publish("steady", i.to_le_bytes().to_vec())
            .expect("publish");
    }
    for i in 0..50u32 {
        let m = sub
            .next_timeout(WAIT)
            .expect("the good connection is unaffected");
        assert_eq!(&m.payload[..], &i.to_le_bytes());
    }
}

#[test]
fn silent_connections_are_closed_at_the_idle_timeout() {
    let fx = Fixture::start(ServerConfig {
        idle_timeout: Duration::from_millis(300),
        heartbeat: Duration::from_millis(100),
        handshake_timeout: Duration::from_millis(300),
        ..ServerConfig::default()
    });
    // A slowloris: trickles a frame's bytes, never finishing it.
    let mut raw = fx.raw();
    raw.write_all(&hello_frame("")).expect("hello");
    let started = Instant::now();
    let trickle = [0x40u8, 0, 0, 0, 0x10];
    for byte in trickle {
        let _ = raw.write_all(&[byte]);
        std::thread::sleep(Duration::from_millis(50));
    }
    let error = read_until_closed(&mut raw).expect("error");
    assert_eq!(error.code, ErrorCode::IdleTimeout);
    assert!(started.elapsed() < WAIT);
    // No HELLO at all.
    let mut raw = fx.raw();
    let error = read_until_closed(&mut raw).expect("error");
    assert_eq!(error.code, ErrorCode::IdleTimeout);
}

#[test]
fn stop_tells_clients_and_pending_requests_fail_fast() {
    let mut fx = Fixture::start(ServerConfig::default());
    let client = fx.client();
    client.ping().expect("ping");
    let report = fx.server.take().expect("server").stop(WAIT);
    assert_eq!(report.forced, 0, "{report:?}");
    assert_eq!(report.closed, 1, "{report:?}");
    let after = client.ping();
    assert!(
        matches!(after, Err(ClientError::Disconnected(ref why)) if why.contains("ShuttingDown")),
        "{after:?}"
    );
}

/// Raises this process's open-file soft limit to its hard limit (the test holds both
/// ends of its connections).
fn raise_fd_limit(needed: u64) {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `limit` is a valid rlimit for the call to fill.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) };
    assert_eq!(rc, 0);
    if limit.rlim_cur < needed {
        limit.rlim_cur = limit.rlim_max.min(needed.max(limit.rlim_cur));
        // SAFETY: as above; raising the soft limit up to the hard one is always allowed.
        assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) }, 0);
    }
}

#[test]
fn a_thousand_connections_each_publish_and_receive() {
    const CONNECTIONS: usize = 1000;
    raise_fd_limit(4 * CONNECTIONS as u64 + 256);
    let fx = Fixture::start(ServerConfig::default());
    let clients: Vec<Client> = (0..CONNECTIONS).map(|_| fx.client()).collect();
    let subs: Vec<_> = clients
        .iter()
        .enumerate()
        .map(|(i, c)| c.subscribe(&format!("conn.{i}"), None).expect("subscribe"))
        .collect();
    for (i, client) in clients.iter().enumerate() {
        let next = (i + 1) % CONNECTIONS;
        client
            .publish(&format!("conn.{next}"), (i as u32).to_le_bytes().to_vec())
            .expect("publish");
    }
    for (i, sub) in subs.iter().enumerate() {
        let from = (i + CONNECTIONS - 1) % CONNECTIONS;
        let m = sub.next_timeout(WAIT).expect("each connection receives");
        assert_eq!(&m.payload[..], &(from as u32).to_le_bytes());
    }
    let open: u64 = fx
        .server
        .as_ref()
        .expect("server")
        .stats()
        .iter()
        .map(|s| s.connections_open)
        .sum();
    assert_eq!(open, CONNECTIONS as u64);
}

#[test]
fn the_client_reconnects_and_resubscribes_after_the_server_restarts() {
    let mut fx = Fixture::start(ServerConfig::default());
    let addr = fx.server.as_ref().expect("server").local_addr();
    let client = fx.client();
    let sub = client.subscribe("after.restart", None).expect("subscribe");
    fx.server.take().expect("server").stop(WAIT);
    let down = client.ping();
    assert!(
        matches!(down, Err(ClientError::Disconnected(_))),
        "calls fail fast while disconnected: {down:?}"
    );
    let broker = fx.broker.as_ref().expect("broker");
    let config = ServerConfig {
        listen: addr,
        ..ServerConfig::default()
    };
    fx.server = Some(ringbroker::net::Server::start(broker, config).expect("restart"));
    let deadline = Instant::now() + WAIT;
    while !client.is_connected() {
        assert!(Instant::now() < deadline, "the client did not reconnect");
        std::thread::sleep(Duration::from_millis(10));
    }
    client.ping().expect("ping after reconnecting");
    let publisher = fx.client();
    loop {
        publisher
            .publish("after.restart", &b"again"[..])
            .expect("publish");
        if let Ok(m) = sub.next_timeout(Duration::from_millis(50)) {
            assert_eq!(&m.payload[..], b"again");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the subscription was not re-established"
        );
    }
}

#[test]
fn zero_copy_sends_deliver_every_byte_intact() {
    // Every send goes through SEND_ZC (threshold 0): payloads from 1 B to 1 MiB arrive
    // whole and in order, so the buffer is held until the kernel's notification.
    let fx = Fixture::start(ServerConfig {
        send_zc_min_bytes: 0,
        ..ServerConfig::default()
    });
    let (publisher, subscriber) = (fx.client(), fx.client());
    let sub = subscriber.subscribe("zc", None).expect("subscribe");
    let sizes = [1usize, 100, 4096, 65_536, 300_000, 1 << 20];
    for (i, &size) in sizes.iter().enumerate() {
        let payload: Vec<u8> = (0..size).map(|b| (b as u8) ^ (i as u8)).collect();
        publisher.publish("zc", payload).expect("publish");
    }
    for (i, &size) in sizes.iter().enumerate() {
        let m = sub.next_timeout(WAIT).expect("message");
        assert_eq!(m.payload.len(), size);
        assert!(
            m.payload
                .iter()
                .enumerate()
                .all(|(b, &v)| v == (b as u8) ^ (i as u8)),
            "payload {i} corrupted"
        );
    }
}

#[test]
fn a_refused_subscribe_is_answered_once_and_the_connection_lives_on() {
    let fx = Fixture::start(ServerConfig::default());
    let client = fx.client();
    let refused = client.subscribe("orders..eu", None);
    assert!(
        matches!(&refused, Err(e) if e.code() == Some(ErrorCode::Invalid)),
        "{refused:?}"
    );
    client.ping().expect("the connection is still open");
    let ok = client
        .subscribe("orders.eu", None)
        .expect("a valid subscribe works");
    client.publish("orders.eu", &b"x"[..]).expect("publish");
    ok.next_timeout(WAIT).expect("delivered");
}

#[test]
fn a_client_that_only_receives_is_not_closed_as_idle() {
    // The idle timeout counts frames received from the client; the server PINGs a
    // connection it has not heard from, and the client's PONG keeps it alive even while
    // the server's own output never goes quiet.
    let fx = Fixture::start(ServerConfig {
        idle_timeout: Duration::from_millis(400),
        heartbeat: Duration::from_millis(100),
        ..ServerConfig::default()
    });
    let publisher = fx.client();
    // No reconnecting: a close would show as a dead connection, not be papered over.
    let mut config = ClientConfig::new(fx.url());
    config.reconnect = None;
    let subscriber = Client::connect(config).expect("connect");
    let sub = subscriber.subscribe("flow", None).expect("subscribe");
    let until = Instant::now() + Duration::from_millis(1500);
    let mut received = 0;
    while Instant::now() < until {
        publisher.publish("flow", &b"tick"[..]).expect("publish");
        if sub.next_timeout(Duration::from_millis(50)).is_ok() {
            received += 1;
        }
    }
    assert!(received > 10, "{received}");
    assert!(subscriber.is_connected());
    subscriber
        .ping()
        .expect("the receiving connection was never closed");
}

#[test]
fn a_subscriber_that_stops_reading_is_closed_as_a_slow_consumer() {
    let fx = Fixture::start(ServerConfig {
        write_timeout: Duration::from_millis(300),
        outbound_bytes_max: 1 << 20,
        ..ServerConfig::default()
    });
    let open = || -> u64 {
        let stats = fx.server.as_ref().expect("server").stats();
        stats.iter().map(|s| s.connections_open).sum()
    };
    // A raw subscriber that never reads another byte.
    let mut stuck = fx.raw();
    let mut out = hello_frame("");
    let sub = ringbroker::protocol::pubsub::Subscribe {
        sub_id: 1,
        pattern: "flood".into(),
        queue_group: None,
        max_messages: 0,
    };
    encode_frame(&mut out, Op::Subscribe, 0, 2, |b| sub.encode(b));
    stuck.write_all(&out).expect("subscribe");
    let publisher = fx.client();
    publisher.ping().expect("ping");
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(open(), 2);
    let chunk = vec![7u8; 64 << 10];
    let deadline = Instant::now() + WAIT;
    while open() > 1 {
        assert!(
            Instant::now() < deadline,
            "the stuck subscriber was never closed"
        );
        for _ in 0..16 {
            publisher
                .publish("flood", chunk.clone())
                .expect("publishing goes on");
        }
        publisher.ping().expect("the publisher is unaffected");
    }
    publisher.ping().expect("still fine");
    drop(stuck);
}

#[test]
fn connections_share_one_receive_buffer_without_losing_bytes() {
    // One 1 KiB provided buffer per shard for every connection: recvs regularly find
    // none free (ENOBUFS ends the multishot recv) and must be re-armed, and every
    // byte must still arrive once, in order.
    let fx = Fixture::start(ServerConfig {
        recv_buffers: 1,
        recv_buffer_bytes: 1024,
        ..ServerConfig::default()
    });
    let subscriber = fx.client();
    let sub = subscriber.subscribe("shared.>", None).expect("subscribe");
    std::thread::scope(|scope| {
        for p in 0..8u8 {
            let client = fx.client();
            scope.spawn(move || {
                for i in 0..50u8 {
                    let payload = vec![p ^ i; 10_000];
                    client
                        .publish(&format!("shared.{p}"), payload)
                        .expect("publish");
                }
                client.ping().expect("all sent and routed");
            });
        }
    });
    let mut next = [0u8; 8];
    for _ in 0..400 {
        let m = sub.next_timeout(WAIT).expect("every message arrives");
        let p: usize = m.subject.as_str()["shared.".len()..]
            .parse()
            .expect("publisher");
        assert_eq!(m.payload.len(), 10_000);
        assert!(
            m.payload.iter().all(|&b| b == (p as u8) ^ next[p]),
            "in order, intact"
        );
        next[p] += 1;
    }
}

#[test]
fn a_client_subscription_is_bounded_in_bytes_and_taken_in_batches() {
    let fx = Fixture::start(ServerConfig::default());
    let publisher = fx.client();
    let mut config = ClientConfig::new(fx.url());
    config.reconnect = None;
    // 16 KiB: sixteen messages of 1000 B payload + the 4 B subject (1004 B each).
    config.subscription_pending_bytes_max = 16 << 10;
    let subscriber = Client::connect(config).expect("connect");
    let sub = subscriber.subscribe("bulk", None).expect("subscribe");
    let batch: Vec<ringbroker::pubsub::Message> = (0..200u32)
        .map(|i| {
            let mut payload = vec![0u8; 1000];
            payload[..4].copy_from_slice(&i.to_le_bytes());
            ringbroker::pubsub::Message::new(Subject::new("bulk").expect("subject"), payload)
        })
        .collect();
    publisher.publish_batch(&batch).expect("publish");
    let deadline = Instant::now() + WAIT;
    while sub.dropped() < 184 {
        assert!(
            Instant::now() < deadline,
            "dropped {} of 200, expected 184 past the byte bound",
            sub.dropped()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let mut taken = Vec::new();
    assert_eq!(sub.try_next_batch(10, &mut taken).expect("batch"), 10);
    assert_eq!(sub.try_next_batch(100, &mut taken).expect("batch"), 6);
    assert_eq!(sub.try_next_batch(100, &mut taken).expect("batch"), 0);
    let firsts: Vec<u32> = taken
        .iter()
        .map(|m| u32::from_le_bytes(m.payload[..4].try_into().expect("4 bytes")))
        .collect();
    assert_eq!(firsts, (0..16).collect::<Vec<u32>>(), "the oldest are kept");
    assert_eq!(sub.dropped(), 184);
    // Room again: the next message is taken in.
    publisher.publish("bulk", vec![1u8; 1000]).expect("publish");
    let next = sub.next_timeout(WAIT).expect("room after taking");
    assert_eq!(next.payload.len(), 1000);
}

/// A server of one connection, written by hand: answers the handshake and SUBSCRIBE,
/// then answers a PING with `messages` MESSAGE frames for subscription 1 and the PONG
/// in one write, so the client reads them in one go.
fn one_write_server(messages: u32) -> (String, std::thread::JoinHandle<()>) {
    use ringbroker::protocol::pubsub::encode_delivery;
    use ringbroker::protocol::session::Welcome;
    use ringbroker::protocol::FLAG_REPLY;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("ringbroker://{}", listener.local_addr().expect("addr"));
    let server = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().expect("accept");
        stream.set_read_timeout(Some(WAIT)).expect("timeout");
        let mut buf = BytesMut::new();
        loop {
            let Some((header, total)) = split_frame(&buf, u32::MAX).expect("frame") else {
                let mut chunk = [0u8; 4096];
                match stream.read(&mut chunk) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
                continue;
            };
            let _ = buf.split_to(total);
            let mut out = BytesMut::new();
            match header.op {
                Op::Hello => {
                    let welcome = Welcome {
                        version: VERSION,
                        max_frame: 1 << 20,
                        heartbeat_ms: 60_000,
                        idle_timeout_ms: 0,
                        connection_id: 1,
                        server_name: "one-write".into(),
                    };
                    encode_frame(&mut out, Op::Hello, FLAG_REPLY, header.correlation, |b| {
                        welcome.encode(b)
                    });
                }
                Op::Subscribe => {
                    encode_frame(
                        &mut out,
                        Op::Subscribe,
                        FLAG_REPLY,
                        header.correlation,
                        |_| {},
                    );
                }
                Op::Ping => {
                    for i in 0..messages {
                        let message = ringbroker::pubsub::Message::new(
                            Subject::new("early").expect("subject"),
                            i.to_le_bytes().to_vec(),
                        );
                        encode_frame(&mut out, Op::Message, 0, 0, |b| {
                            encode_delivery(b, 1, &message)
                        });
                    }
                    encode_frame(&mut out, Op::Pong, FLAG_REPLY, header.correlation, |_| {});
                }
                _ => {}
            }
            stream.write_all(&out).expect("write");
        }
    });
    (url, server)
}

#[test]
fn messages_read_before_a_reply_are_queued_before_the_reply_returns() {
    let (url, server) = one_write_server(300);
    let mut config = ClientConfig::new(url);
    config.reconnect = None;
    let client = Client::connect(config).expect("connect");
    let sub = client.subscribe("early", None).expect("subscribe");
    client.ping().expect("ping");
    // No waiting: the reader queued the 300 messages before it answered the PING.
    let mut taken = Vec::new();
    while sub.try_next_batch(64, &mut taken).expect("open") > 0 {}
    assert_eq!(taken.len(), 300);
    for (i, message) in taken.iter().enumerate() {
        assert_eq!(&message.payload[..], &(i as u32).to_le_bytes());
    }
    client.close();
    server.join().expect("server thread");
}

#[test]
fn single_publishes_in_a_burst_arrive_complete_and_in_order_and_close_flushes() {
    let fx = Fixture::start(ServerConfig::default());
    let subscriber = fx.client();
    let sub = subscriber.subscribe("burst", None).expect("subscribe");
    let publisher = fx.client();
    // Buffered publishes and calls interleave: a call writes everything before it.
    for i in 0..20_000u32 {
        publisher
            .publish("burst", i.to_le_bytes().to_vec())
            .expect("publish");
        if i % 1000 == 999 {
            publisher.ping().expect("ping");
        }
    }
    // The last burst is still buffered (or being written): close writes it first.
    for i in 20_000..20_500u32 {
        publisher
            .publish("burst", i.to_le_bytes().to_vec())
            .expect("publish");
    }
    publisher.close();
    for i in 0..20_500u32 {
        let message = sub.next_timeout(WAIT).expect("message");
        assert_eq!(&message.payload[..], &i.to_le_bytes(), "message {i}");
    }
    assert_eq!(sub.dropped(), 0);
}
