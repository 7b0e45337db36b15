//! Kill -9 crash test of durable queues: a child process publishes persistent messages
//! to a durable queue (printing each confirmed one) and consumes and acks them
//! (printing each ack it sent); the parent kills it with SIGKILL at a random moment,
//! again and again, then opens the data directory in process and proves that every
//! confirmed message is either still in the queue or was acknowledged by a child, and
//! that no message is in the queue twice.
//!
//! The child is this test binary run again with `RINGBROKER_QUEUES_CRASH_CHILD` set.
//! Cycles: `RINGBROKER_QUEUES_CRASH_CYCLES` (default 10).

#![allow(clippy::unwrap_used)]

#[path = "support/killed_child.rs"]
mod killed_child;

use std::collections::HashSet;
use std::path::Path;
use std::time::{Duration, Instant};

use ringbroker::queue::{ConsumeOptions, Message, QueueConfig, Queues};
use ringbroker::runtime::{Runtime, RuntimeConfig};

const CHILD_ENV: &str = "RINGBROKER_QUEUES_CRASH_CHILD";
const CYCLES_ENV: &str = "RINGBROKER_QUEUES_CRASH_CYCLES";
const CHILD_TEST: &str = "queues_crash_child_until_killed";

fn runtime() -> Runtime {
    Runtime::start(RuntimeConfig {
        shards: Some(2),
        ..RuntimeConfig::default()
    })
    .unwrap()
}

/// The child: publishes `g<gen>-<n>` in batches of 8 (printing `P <id>` per confirm)
/// while a consumer acks every other message it gets (printing `A <id>`).
fn run_child(spec: &str) {
    let (dir, gen) = spec.split_once(',').unwrap();
    let rt = runtime();
    let q = Queues::open(rt.handle(), dir).unwrap();
    q.declare_queue(QueueConfig::new("jobs")).unwrap();
    let consumer = q.clone();
    std::thread::spawn(move || {
        let c = consumer
            .consume(
                "jobs",
                ConsumeOptions {
                    prefetch: 50,
                    no_ack: false,
                },
            )
            .unwrap();
        let mut n = 0u64;
        while let Ok(d) = c.next(Duration::from_secs(30)) {
            n += 1;
            if n % 2 == 0 && c.ack(d.delivery_tag, false).is_ok() {
                println!("A {}", String::from_utf8_lossy(&d.payload));
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut n = 0u64;
    while Instant::now() < deadline {
        let batch = (n..n + 8)
            .map(|i| {
                (
                    String::new(),
                    "jobs".to_owned(),
                    Message::persistent(format!("g{gen}-{i}")),
                )
            })
            .collect();
        for (i, result) in (n..n + 8).zip(q.publish_batch(batch, true).unwrap()) {
            result.unwrap();
            println!("P g{gen}-{i}");
        }
        n += 8;
    }
}

#[test]
fn queues_crash_child_until_killed() {
    if let Ok(spec) = std::env::var(CHILD_ENV) {
        run_child(&spec);
    }
}

fn run_cycle(
    dir: &Path,
    gen: u64,
    kill_after: Duration,
    confirmed: &mut HashSet<String>,
    acked: &mut HashSet<String>,
) {
    let spec = format!("{},{gen}", dir.display());
    for line in killed_child::run_killed(CHILD_TEST, CHILD_ENV, &spec, kill_after) {
        match line.split_once(' ') {
            Some(("P", id)) => {
                confirmed.insert(id.to_owned());
            }
            Some(("A", id)) => {
                acked.insert(id.to_owned());
            }
            _ => {}
        }
    }
}

#[test]
fn confirmed_messages_survive_kill_9_once() {
    if std::env::var(CHILD_ENV).is_ok() {
        return;
    }
    let cycles: u64 = std::env::var(CYCLES_ENV)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let dir = tempfile::tempdir().unwrap();
    let (mut confirmed, mut acked) = (HashSet::new(), HashSet::new());
    for gen in 0..cycles {
        let kill_after = Duration::from_millis(150 + (gen * 7919) % 400);
        run_cycle(dir.path(), gen, kill_after, &mut confirmed, &mut acked);
    }
    assert!(
        confirmed.len() > 100,
        "children confirmed only {} messages",
        confirmed.len()
    );
    let rt = runtime();
    let q = Queues::open(rt.handle(), dir.path()).unwrap();
    let c = q
        .consume(
            "jobs",
            ConsumeOptions {
                prefetch: 1000,
                no_ack: false,
            },
        )
        .unwrap();
    let mut left = HashSet::new();
    while let Ok(d) = c.next(Duration::from_millis(500)) {
        let id = String::from_utf8(d.payload.to_vec()).unwrap();
        assert!(
            d.redelivered,
            "a recovered message must be flagged redelivered"
        );
        assert!(left.insert(id.clone()), "{id} is in the queue twice");
        c.ack(d.delivery_tag, false).unwrap();
    }
    let lost: Vec<&String> = confirmed
        .iter()
        .filter(|id| !left.contains(*id) && !acked.contains(*id))
        .collect();
    assert!(
        lost.is_empty(),
        "{} confirmed messages lost, e.g. {:?}",
        lost.len(),
        lost.first()
    );
}
