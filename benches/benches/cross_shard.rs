//! Cross-shard round trip (parked and busy) and one-way throughput on a 2-shard runtime.
//! Percentiles and syscalls per message: `cargo run --release -p ringbroker-benches
//! --bin runtime-report`.
//!
//! `cargo bench -p ringbroker-benches --bench cross_shard`

// criterion_group!/criterion_main! generate undocumented functions.
#![allow(missing_docs)]

use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use ringbroker_benches::shards::{one_way, ping_pong, two_shards};

fn cross_shard(c: &mut Criterion) {
    let mut g = c.benchmark_group("cross_shard");
    g.measurement_time(Duration::from_secs(3));
    g.sample_size(20);
    for busy in [false, true] {
        let rt = two_shards(busy);
        let h = rt.handle();
        let name = if busy {
            "ping_pong_rtt/busy"
        } else {
            "ping_pong_rtt/parked"
        };
        g.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let hist = ping_pong(&h, iters);
                Duration::from_nanos((hist.mean() * iters as f64) as u64)
            })
        });
        drop(rt);
    }
    let rt = two_shards(false);
    let h = rt.handle();
    g.throughput(Throughput::Elements(1));
    g.bench_function("one_way/parked", |b| {
        b.iter_custom(|iters| one_way(&h, iters.max(2)))
    });
    drop(rt);
    g.finish();
}

criterion_group!(benches, cross_shard);
criterion_main!(benches);
