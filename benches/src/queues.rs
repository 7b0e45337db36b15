//! Two-thread queue throughput: one producer thread, one consumer thread, `n` `u64`s.
//! Each function returns the wall time from the first push to the last pop.

use std::sync::mpsc::{Receiver, SyncSender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_queue::ArrayQueue;
use ringbroker::ring::channel;

/// Ring capacity used by every queue in these workloads.
pub const CAPACITY: usize = 4096;

/// Runs `producer` and `consumer` on two new threads pinned to distinct cores, and
/// returns the producer's result (its elapsed time) after both finish.
///
/// The calling thread is never pinned: `core_affinity::get_core_ids` lists the *calling*
/// thread's allowed CPUs, so pinning the caller would shrink the set every later run
/// sees (an early version of this file ran producer and consumer on one core that way).
fn run_pair<P, C>(producer: P, consumer: C) -> Duration
where
    P: FnOnce() -> Duration + Send + 'static,
    C: FnOnce() + Send + 'static,
{
    let cores = core_affinity::get_core_ids().unwrap_or_default();
    let core = |i: usize| cores.get(i % cores.len().max(1)).copied();
    let (c0, c1) = (core(0), core(1));
    let consumer = std::thread::spawn(move || {
        if let Some(c) = c1 {
            core_affinity::set_for_current(c);
        }
        consumer();
    });
    let producer = std::thread::spawn(move || {
        if let Some(c) = c0 {
            core_affinity::set_for_current(c);
        }
        producer()
    });
    let elapsed = producer.join().expect("producer thread");
    consumer.join().expect("consumer thread");
    elapsed
}

/// The producer side of every workload: calls `push(next)` (which pushes items from
/// `next` on and returns how many it pushed) until `0..n` are in, then waits for the
/// consumer's last pop. Returns the time from the first push to that last pop.
fn fill(n: u64, done: Receiver<Instant>, mut push: impl FnMut(u64) -> u64) -> Duration {
    let start = Instant::now();
    let mut next = 0u64;
    while next < n {
        let pushed = push(next);
        if pushed == 0 {
            std::hint::spin_loop();
        }
        next += pushed;
    }
    done.recv().expect("consumer finished") - start
}

/// The consumer side of every workload: calls `pop` (which adds what it popped to the
/// sum and returns how many) until `n` items arrived, checks that they were exactly
/// `0..n`, and reports the time of the last pop.
fn drain(n: u64, done: SyncSender<Instant>, mut pop: impl FnMut(&mut u64) -> usize) {
    let (mut seen, mut sum) = (0u64, 0u64);
    while seen < n {
        let got = pop(&mut sum);
        if got == 0 {
            std::hint::spin_loop();
        }
        seen += got as u64;
    }
    let end = Instant::now();
    assert_eq!(
        sum,
        n.wrapping_sub(1).wrapping_mul(n) / 2,
        "items lost or duplicated"
    );
    let _ = done.send(end);
}

/// ringbroker's SPSC ring, pushing and popping `batch` items at a time. The time runs
/// from the first push until the consumer has popped the last item.
pub fn spsc(n: u64, batch: usize) -> Duration {
    let (mut tx, mut rx) = channel::<u64>(CAPACITY).expect("capacity in range");
    let (done_tx, done_rx) = std::sync::mpsc::sync_channel::<Instant>(1);
    run_pair(
        move || {
            fill(n, done_rx, |next| {
                tx.push_iter(next..(next + batch as u64).min(n)) as u64
            })
        },
        move || {
            drain(n, done_tx, |sum| {
                rx.pop_batch(batch, |v| *sum = sum.wrapping_add(v))
            })
        },
    )
}

/// `crossbeam_queue::ArrayQueue` (an MPMC queue) used one item at a time: it has no
/// batch operations, so `batch` is a loop of single pops on the consumer side.
pub fn array_queue(n: u64, batch: usize) -> Duration {
    let q = Arc::new(ArrayQueue::<u64>::new(CAPACITY));
    let rq = q.clone();
    let (done_tx, done_rx) = std::sync::mpsc::sync_channel::<Instant>(1);
    run_pair(
        move || fill(n, done_rx, |next| u64::from(q.push(next).is_ok())),
        move || {
            drain(n, done_tx, |sum| {
                let mut got = 0;
                while got < batch {
                    let Some(v) = rq.pop() else { break };
                    *sum = sum.wrapping_add(v);
                    got += 1;
                }
                got
            })
        },
    )
}

/// `std::sync::mpsc::sync_channel` (bounded, blocking), one item at a time.
pub fn std_mpsc(n: u64) -> Duration {
    let (tx, rx) = std::sync::mpsc::sync_channel::<u64>(CAPACITY);
    let (done_tx, done_rx) = std::sync::mpsc::sync_channel::<Instant>(1);
    run_pair(
        move || {
            fill(n, done_rx, |next| {
                tx.send(next).expect("consumer alive");
                1
            })
        },
        move || {
            drain(n, done_tx, |sum| {
                *sum = sum.wrapping_add(rx.recv().expect("producer alive"));
                1
            })
        },
    )
}
