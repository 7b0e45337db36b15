//! SPSC ring throughput against `crossbeam_queue::ArrayQueue` and `std::sync::mpsc`, in
//! the same run. One producer thread, one consumer thread, pinned to two distinct cores.
//!
//! `cargo bench -p ringbroker-benches --bench ring`

// criterion_group!/criterion_main! generate undocumented functions.
#![allow(missing_docs)]

use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use ringbroker_benches::queues::{array_queue, spsc, std_mpsc};

fn queues(c: &mut Criterion) {
    let mut g = c.benchmark_group("two_thread_queue");
    g.throughput(Throughput::Elements(1));
    g.measurement_time(Duration::from_secs(3));
    g.sample_size(20);
    for batch in [1usize, 64] {
        g.bench_function(format!("spsc_ring/batch_{batch}"), |b| {
            b.iter_custom(|iters| spsc(iters, batch))
        });
        g.bench_function(format!("array_queue/batch_{batch}"), |b| {
            b.iter_custom(|iters| array_queue(iters, batch))
        });
    }
    g.bench_function("std_mpsc_sync_channel/batch_1", |b| b.iter_custom(std_mpsc));
    g.finish();
}

criterion_group!(benches, queues);
criterion_main!(benches);
