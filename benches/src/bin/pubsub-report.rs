//! Prints the subjects model's throughput and request-reply latency in process.
//!
//! ```sh
//! cargo run --release -p ringbroker-benches --bin pubsub-report -- [--seconds 2] [--quick]
//! ```
//!
//! Throughput: a publisher task on shard 0 publishes as fast as the engine takes
//! messages (it yields when its outbox is full and resumes next turn); N handler
//! subscriptions on the last shard count what they receive. A run stops at its
//! duration or message bound, then waits for every routed message to arrive: the
//! report fails unless received = published × fan-out (handlers never drop). Request-
//! reply: one requester on shard 0, one responder on the last shard, sequential
//! requests, round trip in an HDR histogram. `--quick`: a CI smoke run.

use std::cell::Cell;
use std::rc::Rc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use ringbroker::pubsub::{Message, PubSubError, ShardPubSub, Subject};
use ringbroker::runtime::{Runtime, RuntimeConfig, RuntimeHandle, ShardCtx};

/// Messages a publisher task publishes before it yields to the shard's loop.
const PUBLISH_TURN: usize = 4096;

struct Options {
    seconds: f64,
    messages_max: u64,
    requests_max: u64,
}

fn main() {
    let mut options = Options {
        seconds: 2.0,
        messages_max: 200_000_000,
        requests_max: 1_000_000,
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        match flag.as_str() {
            "--seconds" => {
                options.seconds = args.next().and_then(|v| v.parse().ok()).unwrap_or(2.0);
            }
            "--quick" => {
                options.seconds = 0.2;
                options.messages_max = 2_000_000;
                options.requests_max = 20_000;
            }
            other => {
                eprintln!("pubsub-report: unknown argument {other}");
                std::process::exit(2);
            }
        }
    }
    let mut failed = false;
    println!("## Subjects: publish → subscribe throughput (in process)\n");
    println!("| shards | payload | fan-out | published msgs/s | delivered msgs/s | delivered MB/s | published | verified |");
    println!("|---|---|---|---|---|---|---|---|");
    for shards in [1, 2] {
        for size in [16, 256] {
            for fanout in [1, 5] {
                match throughput(&options, shards, size, fanout) {
                    Ok(row) => println!(
                        "| {shards} | {size} B | 1→{fanout} | {:.2} M | {:.2} M | {:.0} | {} | yes |",
                        row.published as f64 / row.seconds / 1e6,
                        row.delivered as f64 / row.seconds / 1e6,
                        row.delivered as f64 * size as f64 / row.seconds / 1e6,
                        row.published,
                    ),
                    Err(error) => {
                        failed = true;
                        println!("| {shards} | {size} B | 1→{fanout} | FAILED: {error} |");
                    }
                }
            }
        }
    }
    println!("\n## Subjects: request → reply round trip (in process, sequential)\n");
    println!("| shards | requests | p50 µs | p99 µs | p999 µs | max µs |");
    println!("|---|---|---|---|---|---|");
    for shards in [1, 2] {
        match request_reply(&options, shards) {
            Ok(h) => println!(
                "| {shards} | {} | {:.1} | {:.1} | {:.1} | {:.1} |",
                h.len(),
                h.value_at_quantile(0.5) as f64 / 1e3,
                h.value_at_quantile(0.99) as f64 / 1e3,
                h.value_at_quantile(0.999) as f64 / 1e3,
                h.max() as f64 / 1e3,
            ),
            Err(error) => {
                failed = true;
                println!("| {shards} | FAILED: {error} |");
            }
        }
    }
    if failed {
        eprintln!("pubsub-report FAILED");
        std::process::exit(1);
    }
}

struct Row {
    published: u64,
    delivered: u64,
    seconds: f64,
}

fn start(shards: usize) -> Result<Runtime, String> {
    Runtime::start(RuntimeConfig {
        shards: Some(shards),
        ..RuntimeConfig::default()
    })
    .map_err(|e| e.to_string())
}

fn throughput(options: &Options, shards: usize, size: usize, fanout: usize) -> Result<Row, String> {
    let rt = start(shards)?;
    let h = rt.handle();
    let sub_shard = shards - 1;
    counting_subscribers(&h, sub_shard, fanout)?;
    // The publisher: a task that publishes a turn's worth and sends itself again.
    let (done_tx, done_rx) = mpsc::channel();
    let deadline = Instant::now() + Duration::from_secs_f64(options.seconds);
    let limit = options.messages_max;
    let subject = Subject::new(Bytes::from_static(b"bench.data")).map_err(|e| e.to_string())?;
    let payload = Bytes::from(vec![0xA5u8; size]);
    let started = Instant::now();
    h.spawn(0, move |ctx: &mut ShardCtx| {
        publish_turn(ctx, subject, payload, 0, deadline, limit, done_tx);
    })
    .map_err(|e| e.to_string())?;
    let published: u64 = done_rx
        .recv_timeout(Duration::from_secs_f64(options.seconds) + Duration::from_secs(60))
        .map_err(|_| "publisher did not finish".to_string())?;
    let expected = published * fanout as u64;
    let delivered = wait_delivered(&h, sub_shard, expected)?;
    let seconds = started.elapsed().as_secs_f64();
    rt.shutdown().map_err(|e| e.to_string())?;
    if delivered != expected {
        return Err(format!("delivered {delivered} of {expected}"));
    }
    Ok(Row {
        published,
        delivered,
        seconds,
    })
}

/// Starts `fanout` handler subscriptions on `shard` counting what they receive; returns
/// once every shard routes to them.
fn counting_subscribers(h: &RuntimeHandle, shard: usize, fanout: usize) -> Result<(), String> {
    // Subscribers: handlers on the last shard counting into one shared cell.
    let (ready_tx, ready_rx) = mpsc::channel();
    h.spawn(shard, move |ctx: &mut ShardCtx| {
        let pubsub = ShardPubSub::get(ctx);
        let received = Rc::new(Cell::new(0u64));
        for _ in 0..fanout {
            let (received, ready_tx) = (received.clone(), ready_tx.clone());
            let subscribed = pubsub.subscribe(
                ctx,
                "bench.data",
                None,
                None,
                move |_, _| received.set(received.get() + 1),
                move |_| {
                    let _ = ready_tx.send(());
                },
            );
            if let Err(error) = subscribed {
                eprintln!("subscribe: {error}");
            }
        }
        ctx.with_local(Counter::default, |c, _| c.0 = Some(received));
    })
    .map_err(|e| e.to_string())?;
    for _ in 0..fanout {
        ready_rx
            .recv_timeout(Duration::from_secs(10))
            .map_err(|_| "subscribers not ready".to_string())?;
    }
    Ok(())
}

/// Waits until the subscribers on `shard` counted `expected` messages (or a minute
/// passed); returns their count.
fn wait_delivered(h: &RuntimeHandle, shard: usize, expected: u64) -> Result<u64, String> {
    let (count_tx, count_rx) = mpsc::channel::<u64>();
    // Wait for the deliveries in flight.
    let wait_until = Instant::now() + Duration::from_secs(60);
    let delivered = loop {
        let tx = count_tx.clone();
        h.spawn(shard, move |ctx: &mut ShardCtx| {
            let n = ctx.with_local(Counter::default, |c, _| c.0.as_ref().map_or(0, |r| r.get()));
            let _ = tx.send(n);
        })
        .map_err(|e| e.to_string())?;
        let n = count_rx
            .recv_timeout(Duration::from_secs(10))
            .map_err(|_| "no count".to_string())?;
        if n >= expected || Instant::now() > wait_until {
            break n;
        }
        std::thread::sleep(Duration::from_micros(200));
    };
    Ok(delivered)
}

#[derive(Default)]
struct Counter(Option<Rc<Cell<u64>>>);

fn publish_turn(
    ctx: &mut ShardCtx,
    subject: Subject,
    payload: Bytes,
    mut published: u64,
    deadline: Instant,
    limit: u64,
    done: mpsc::Sender<u64>,
) {
    let pubsub = ShardPubSub::get(ctx);
    for _ in 0..PUBLISH_TURN {
        if published >= limit {
            break;
        }
        match pubsub.publish(ctx, Message::new(subject.clone(), payload.clone())) {
            Ok(_) => published += 1,
            Err(PubSubError::Backpressure) => break,
            Err(error) => {
                eprintln!("publish: {error}");
                let _ = done.send(published);
                return;
            }
        }
    }
    if published >= limit || Instant::now() >= deadline {
        let _ = done.send(published);
        return;
    }
    let me = ctx.shard_id();
    let again = move |ctx: &mut ShardCtx| {
        publish_turn(ctx, subject, payload, published, deadline, limit, done);
    };
    if let Err(error) = ctx.send(me, again) {
        let task = error.into_task();
        if ctx.after(Duration::from_micros(10), task).is_err() {
            eprintln!("publisher cannot continue");
        }
    }
}

fn request_reply(options: &Options, shards: usize) -> Result<Histogram<u64>, String> {
    let rt = start(shards)?;
    let h = rt.handle();
    let (ready_tx, ready_rx) = mpsc::channel();
    h.spawn(shards - 1, move |ctx: &mut ShardCtx| {
        let pubsub = ShardPubSub::get(ctx);
        let answer = pubsub.clone();
        let subscribed = pubsub.subscribe(
            ctx,
            "bench.echo",
            None,
            None,
            move |ctx, request: Message| {
                if let Some(reply) = request.reply {
                    let _ = answer.publish(ctx, Message::new(reply, request.payload));
                }
            },
            move |_| {
                let _ = ready_tx.send(());
            },
        );
        if let Err(error) = subscribed {
            eprintln!("subscribe: {error}");
        }
    })
    .map_err(|e| e.to_string())?;
    ready_rx
        .recv_timeout(Duration::from_secs(10))
        .map_err(|_| "responder not ready".to_string())?;
    let (done_tx, done_rx) = mpsc::channel();
    let deadline = Instant::now() + Duration::from_secs_f64(options.seconds);
    let limit = options.requests_max;
    h.spawn(0, move |ctx: &mut ShardCtx| {
        let hist = Histogram::<u64>::new(3).expect("3 significant digits is valid");
        next_request(ctx, hist, deadline, limit, done_tx);
    })
    .map_err(|e| e.to_string())?;
    let result = done_rx
        .recv_timeout(Duration::from_secs_f64(options.seconds) + Duration::from_secs(60))
        .map_err(|_| "requester did not finish".to_string())?;
    rt.shutdown().map_err(|e| e.to_string())?;
    result
}

fn next_request(
    ctx: &mut ShardCtx,
    mut hist: Histogram<u64>,
    deadline: Instant,
    limit: u64,
    done: mpsc::Sender<Result<Histogram<u64>, String>>,
) {
    if hist.len() >= limit || Instant::now() >= deadline {
        let _ = done.send(Ok(hist));
        return;
    }
    let subject = match Subject::new(Bytes::from_static(b"bench.echo")) {
        Ok(s) => s,
        Err(error) => {
            let _ = done.send(Err(error.to_string()));
            return;
        }
    };
    let sent = Instant::now();
    let message = Message::new(subject, Bytes::from_static(b"ping"));
    ShardPubSub::get(ctx).request(
        ctx,
        message,
        Duration::from_secs(5),
        Box::new(move |ctx, reply| match reply {
            Ok(_) => {
                let _ = hist.record(sent.elapsed().as_nanos() as u64);
                next_request(ctx, hist, deadline, limit, done);
            }
            Err(error) => {
                let _ = done.send(Err(format!("request: {error}")));
            }
        }),
    );
}
