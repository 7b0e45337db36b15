//! Prints the runtime figures criterion does not: ping-pong latency percentiles (parked
//! and busy) and syscalls per message under sustained one-way load.
//!
//! `cargo run --release -p ringbroker-benches --bin runtime-report [rounds] [messages]`

use hdrhistogram::Histogram;
use ringbroker_benches::shards::{one_way, ping_pong, syscalls, thread_ping_pong, two_shards};

fn main() {
    let mut args = std::env::args().skip(1);
    let rounds: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(200_000);
    let messages: u64 = args
        .next()
        .and_then(|a| a.parse().ok())
        .unwrap_or(20_000_000);

    println!("| workload | p50 | p99 | p999 | syscalls/msg |");
    println!("|---|---|---|---|---|");
    let _ = thread_ping_pong(rounds / 10); // warm-up
    row(
        "baseline: 2 threads, blocking std mpsc (futex)",
        &thread_ping_pong(rounds),
        "2 wake-ups/round",
    );
    for busy in [false, true] {
        let rt = two_shards(busy);
        let h = rt.handle();
        let _ = ping_pong(&h, rounds / 10); // warm-up
        let before = syscalls(&h);
        let hist = ping_pong(&h, rounds);
        let per_msg = (syscalls(&h) - before) as f64 / (2 * rounds) as f64;
        let name = format!(
            "shard ping-pong RTT, {}",
            if busy { "busy (spinning)" } else { "parked" }
        );
        row(&name, &hist, &format!("{per_msg:.3}"));
        if let Err(err) = rt.shutdown() {
            eprintln!("shutdown: {err}");
        }
    }
    let rt = two_shards(false);
    let h = rt.handle();
    let _ = one_way(&h, messages / 10);
    let before = syscalls(&h);
    let elapsed = one_way(&h, messages);
    let per_msg = (syscalls(&h) - before) as f64 / messages as f64;
    let rate = messages as f64 / elapsed.as_secs_f64();
    println!(
        "| one-way shard 0 → 1, {messages} tasks | {:.1} M tasks/s | | | {per_msg:.5} |",
        rate / 1e6
    );
    if let Err(err) = rt.shutdown() {
        eprintln!("shutdown: {err}");
    }
}

fn row(name: &str, hist: &Histogram<u64>, syscalls: &str) {
    let us = |q: f64| hist.value_at_quantile(q) as f64 / 1e3;
    println!(
        "| {name} ({} rounds) | {:.2} µs | {:.2} µs | {:.2} µs | {syscalls} |",
        hist.len(),
        us(0.50),
        us(0.99),
        us(0.999)
    );
}
