//! A tour of the shard runtime: starts one shard per core, shows where each is pinned,
//! runs a cross-shard request/reply between every pair, floods shard 1 from shard 0
//! for a second of sustained load, prints the counters (including syscalls per
//! message), and shuts down gracefully.
//!
//! `cargo run --release -p ringbroker --example shards`

use std::sync::mpsc::{sync_channel, SyncSender};
use std::time::{Duration, Instant};

use ringbroker::runtime::{shard_for, Runtime, RuntimeConfig, RuntimeHandle, ShardCtx};

type DemoResult = Result<(), Box<dyn std::error::Error>>;

fn main() -> DemoResult {
    let rt = Runtime::start(RuntimeConfig::default())?;
    let h = rt.handle();
    let n = rt.shard_count();
    println!("ringbroker shard runtime: {n} shards, one io_uring each");
    for shard in 0..n {
        let (cpu, thread) = h.call(shard, |_| {
            // SAFETY: sched_getcpu has no preconditions.
            let cpu = unsafe { libc::sched_getcpu() };
            (cpu, std::thread::current().name().unwrap_or("?").to_owned())
        })?;
        println!("  shard {shard}: thread {thread} running on cpu {cpu}");
    }
    request_reply_every_pair(&h)?;
    for name in ["orders", "payments", "user.events"] {
        println!(
            "  \"{name}\" is owned by shard {}",
            shard_for(name.as_bytes(), n)
        );
    }
    if n >= 2 {
        flood(&h, Duration::from_secs(1))?;
    }
    let report = rt.shutdown()?;
    println!("shutdown: {report:?}");
    Ok(())
}

fn request_reply_every_pair(h: &RuntimeHandle) -> DemoResult {
    let n = h.shard_count();
    let started = Instant::now();
    for from in 0..n {
        for to in 0..n {
            let rx = h.call(from, move |ctx: &mut ShardCtx| {
                let (tx, rx) = sync_channel(1);
                let asked = ctx.call(
                    to,
                    |remote| remote.shard_id(),
                    move |_, r| {
                        let _ = tx.send(r);
                    },
                );
                asked.map(|()| rx).map_err(|e| e.to_string())
            })??;
            let answer = rx.recv_timeout(Duration::from_secs(5))??;
            assert_eq!(answer, to);
        }
    }
    println!(
        "  request/reply between all {} ordered pairs in {:?}",
        n * n,
        started.elapsed()
    );
    Ok(())
}

fn flood(h: &RuntimeHandle, length: Duration) -> DemoResult {
    let before: u64 = h.stats().iter().map(|s| s.syscalls()).sum();
    let (tx, rx) = sync_channel(1);
    let deadline = Instant::now() + length;
    h.spawn(0, move |ctx| flood_step(ctx, deadline, 0, tx))?;
    let sent = rx.recv_timeout(length + Duration::from_secs(10))?;
    let after: u64 = h.stats().iter().map(|s| s.syscalls()).sum();
    println!(
        "  shard 0 -> shard 1: {:.1} M tasks/s for {length:?}; {} syscalls for {sent} tasks",
        sent as f64 / length.as_secs_f64() / 1e6,
        after - before
    );
    Ok(())
}

/// Sends tasks to shard 1 until the deadline, yielding to the loop every 4096.
fn flood_step(ctx: &mut ShardCtx, deadline: Instant, mut sent: u64, done: SyncSender<u64>) {
    for _ in 0..4096 {
        if ctx.send(1, |_| {}).is_err() {
            break;
        }
        sent += 1;
    }
    if Instant::now() >= deadline {
        // The last task reports once everything before it (FIFO) has run on shard 1.
        retry_report(ctx, move |_| {
            let _ = done.send(sent);
        });
        return;
    }
    if ctx
        .send(0, move |c| flood_step(c, deadline, sent, done))
        .is_err()
    {
        eprintln!("local queue full; flood stopped early");
    }
}

/// Sends the final report to shard 1, retrying each turn while its backlog is full.
fn retry_report<F>(ctx: &mut ShardCtx, report: F)
where
    F: FnOnce(&mut ShardCtx) + Send + 'static,
{
    if let Err(e) = ctx.send(1, report) {
        let report = e.into_task();
        if ctx.send(0, move |c| retry_report(c, report)).is_err() {
            eprintln!("local queue full; report lost");
        }
    }
}
