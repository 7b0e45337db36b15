//! Two-thread queue throughput: one producer thread, one consumer thread, `n` `u64`s.
//! Each function returns the wall time from the first push to the last pop.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_queue::ArrayQueue;
use ringbroker::ring::channel;

/// Ring capacity used by every queue in these workloads.
pub const CAPACITY: usize = 4096;

fn pin(core: usize) {
    if let Some(ids) = core_affinity::get_core_ids() {
        if let Some(id) = ids.get(core % ids.len().max(1)) {
            core_affinity::set_for_current(*id);
        }
    }
}

/// ringbroker's SPSC ring, pushing and popping `batch` items at a time.
pub fn spsc(n: u64, batch: usize) -> Duration {
    let (mut tx, mut rx) = channel::<u64>(CAPACITY).expect("capacity in range");
    let consumer = std::thread::spawn(move || {
        pin(1);
        let mut seen = 0u64;
        let mut sum = 0u64;
        while seen < n {
            let got = rx.pop_batch(batch, |v| sum = sum.wrapping_add(v));
            if got == 0 {
                std::hint::spin_loop();
            }
            seen += got as u64;
        }
        sum
    });
    pin(0);
    let start = Instant::now();
    let mut next = 0u64;
    while next < n {
        let end = (next + batch as u64).min(n);
        let pushed = tx.push_iter(next..end) as u64;
        if pushed == 0 {
            std::hint::spin_loop();
        }
        next += pushed;
    }
    let sum = consumer.join().expect("consumer thread");
    let elapsed = start.elapsed();
    assert_eq!(sum, n.wrapping_sub(1).wrapping_mul(n) / 2, "items lost or duplicated");
    elapsed
}

/// `crossbeam_queue::ArrayQueue` (an MPMC queue) used one item at a time: it has no
/// batch operations, so `batch` is a loop of single pushes and pops.
pub fn array_queue(n: u64, batch: usize) -> Duration {
    let q = Arc::new(ArrayQueue::<u64>::new(CAPACITY));
    let rq = q.clone();
    let consumer = std::thread::spawn(move || {
        pin(1);
        let mut seen = 0u64;
        let mut sum = 0u64;
        while seen < n {
            let mut got = 0;
            while got < batch {
                match rq.pop() {
                    Some(v) => {
                        sum = sum.wrapping_add(v);
                        got += 1;
                    }
                    None => break,
                }
            }
            if got == 0 {
                std::hint::spin_loop();
            }
            seen += got as u64;
        }
        sum
    });
    pin(0);
    let start = Instant::now();
    let mut next = 0u64;
    while next < n {
        match q.push(next) {
            Ok(()) => next += 1,
            Err(_) => std::hint::spin_loop(),
        }
    }
    let sum = consumer.join().expect("consumer thread");
    let elapsed = start.elapsed();
    assert_eq!(sum, n.wrapping_sub(1).wrapping_mul(n) / 2, "items lost or duplicated");
    elapsed
}

/// `std::sync::mpsc::sync_channel` (bounded, blocking), one item at a time.
pub fn std_mpsc(n: u64) -> Duration {
    let (tx, rx) = std::sync::mpsc::sync_channel::<u64>(CAPACITY);
    let consumer = std::thread::spawn(move || {
        pin(1);
        let mut sum = 0u64;
        for _ in 0..n {
            sum = sum.wrapping_add(rx.recv().expect("producer alive"));
        }
        sum
    });
    pin(0);
    let start = Instant::now();
    for i in 0..n {
        tx.send(i).expect("consumer alive");
    }
    let sum = consumer.join().expect("consumer thread");
    let elapsed = start.elapsed();
    assert_eq!(sum, n.wrapping_sub(1).wrapping_mul(n) / 2, "items lost or duplicated");
    elapsed
}
