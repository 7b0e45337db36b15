//! Cross-shard workloads on a real `Runtime`: ping-pong round trips and one-way floods.
//! Both run entirely on shards (the external thread only starts them and waits), so
//! they measure ring + doorbell + loop cost, not the external submission path.

use std::sync::mpsc::{sync_channel, SyncSender};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use ringbroker::runtime::{Runtime, RuntimeConfig, RuntimeHandle, ShardCtx};

/// A two-shard runtime; `busy` makes idle shards spin instead of parking.
pub fn two_shards(busy: bool) -> Runtime {
    let config = RuntimeConfig {
        shards: Some(2),
        idle_spin: if busy {
            Duration::from_secs(3600)
        } else {
            Duration::ZERO
        },
        ..RuntimeConfig::default()
    };
    Runtime::start(config).expect("runtime starts")
}

/// Syscalls the shards (and external wakers) made so far.
pub fn syscalls(handle: &RuntimeHandle) -> u64 {
    handle
        .stats()
        .iter()
        .map(|s| s.syscalls() + s.external_wakeups)
        .sum()
}

struct Ping {
    left: u64,
    sent: Instant,
    hist: Histogram<u64>,
    done: SyncSender<Histogram<u64>>,
}

/// `rounds` round trips shard 0 → shard 1 → shard 0; returns the round-trip times (ns).
pub fn ping_pong(handle: &RuntimeHandle, rounds: u64) -> Histogram<u64> {
    let (tx, rx) = sync_channel(1);
    // Explicit bounds: an auto-resizing histogram starts with a maximum of 2 and
    // saturating_record would clamp every sample to it.
    let hist = Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("valid bounds");
    let ping = Ping {
        left: rounds,
        sent: Instant::now(),
        hist,
        done: tx,
    };
    handle
        .spawn(0, move |ctx| serve(ctx, ping))
        .expect("submit");
    rx.recv().expect("ping-pong finished")
}

fn serve(ctx: &mut ShardCtx, mut ping: Ping) {
    if ping.left == 0 {
        let _ = ping.done.send(ping.hist);
        return;
    }
    ping.left -= 1;
    ping.sent = Instant::now();
    let sent = ctx.send(1, move |remote: &mut ShardCtx| {
        let back = remote.send(0, move |origin: &mut ShardCtx| {
            let rtt = ping.sent.elapsed().as_nanos() as u64;
            ping.hist.saturating_record(rtt);
            serve(origin, ping);
        });
        assert!(back.is_ok(), "pong ring full");
    });
    assert!(sent.is_ok(), "ping ring full");
}

/// Sends `n` small tasks from shard 0 to shard 1 as fast as the ring takes them;
/// returns the time until shard 1 has run the last one.
pub fn one_way(handle: &RuntimeHandle, n: u64) -> Duration {
    let (tx, rx) = sync_channel(1);
    let start = Instant::now();
    handle
        .spawn(0, move |ctx| flood(ctx, n, tx))
        .expect("submit");
    let end = rx.recv().expect("flood finished");
    end.duration_since(start)
}

/// How many tasks a flood step sends before yielding to the shard loop.
const FLOOD_STEP: u64 = 4096;

fn flood(ctx: &mut ShardCtx, mut left: u64, done: SyncSender<Instant>) {
    let mut step = 0;
    // Send until the step is done or `send` pushes back (staged backlog full).
    while left > 1 && step < FLOOD_STEP {
        let v = left;
        if ctx
            .send(1, move |_: &mut ShardCtx| {
                std::hint::black_box(v);
            })
            .is_err()
        {
            break;
        }
        left -= 1;
        step += 1;
    }
    if left <= 1 {
        let last = move |_: &mut ShardCtx| {
            let _ = done.send(Instant::now());
        };
        send_last(ctx, last);
        return;
    }
    // Yield: run again on this shard next turn, after the loop has flushed and rung.
    let again = ctx.send(0, move |c: &mut ShardCtx| flood(c, left, done));
    assert!(again.is_ok(), "local queue full");
}

/// Sends the flood's last task, retrying each turn while shard 1's backlog is full.
fn send_last<F: FnOnce(&mut ShardCtx) + Send + 'static>(ctx: &mut ShardCtx, last: F) {
    if let Err(e) = ctx.send(1, last) {
        let last = e.into_task();
        let again = ctx.send(0, move |c: &mut ShardCtx| send_last(c, last));
        assert!(again.is_ok(), "local queue full");
    }
}

/// The baseline for parked round trips: two threads on distinct cores ping-ponging
/// through blocking `std::sync::mpsc` channels, so each hop is one futex wake-up, the
/// cheapest way the OS offers to wake a sleeping thread. Returns round-trip times (ns).
pub fn thread_ping_pong(rounds: u64) -> Histogram<u64> {
    let cores = core_affinity::get_core_ids().unwrap_or_default();
    let core = |i: usize| cores.get(i % cores.len().max(1)).copied();
    let (c0, c1) = (core(0), core(1));
    let (to_echo, echo_rx) = std::sync::mpsc::channel::<Instant>();
    let (to_origin, origin_rx) = std::sync::mpsc::channel::<Instant>();
    let echo = std::thread::spawn(move || {
        if let Some(c) = c1 {
            core_affinity::set_for_current(c);
        }
        while let Ok(t) = echo_rx.recv() {
            if to_origin.send(t).is_err() {
                break;
            }
        }
    });
    let origin = std::thread::spawn(move || {
        if let Some(c) = c0 {
            core_affinity::set_for_current(c);
        }
        let mut hist = Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("valid bounds");
        for _ in 0..rounds {
            to_echo.send(Instant::now()).expect("echo alive");
            let sent = origin_rx.recv().expect("echo alive");
            hist.saturating_record(sent.elapsed().as_nanos() as u64);
        }
        hist
    });
    let hist = origin.join().expect("origin thread");
    echo.join().expect("echo thread");
    hist
}
