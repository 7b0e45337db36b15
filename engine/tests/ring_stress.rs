//! Two real threads move 10 million items through one small SPSC ring with batch sizes
//! that vary from call to call: every item arrives once, in order, and items left in
//! the ring when both ends drop are dropped exactly once.

// In tests an unwrap that fails is a test failure with its message: exactly right.
#![allow(clippy::unwrap_used)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use ringbroker::ring::channel;

const ITEMS: u64 = 10_000_000;

/// A tiny xorshift so batch sizes vary without a dependency; seeded per thread.
fn next_batch(state: &mut u64) -> usize {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    1 + (*state % 97) as usize
}

#[test]
fn ten_million_items_arrive_once_in_order() {
    let (mut tx, mut rx) = channel::<u64>(256).unwrap();
    let consumer = std::thread::spawn(move || {
        let mut expected = 0u64;
        let mut seed = 0x9E37_79B9_7F4A_7C15u64;
        while expected < ITEMS {
            let max = next_batch(&mut seed);
            let got = rx.pop_batch(max, |v| {
                assert_eq!(v, expected, "out of order or lost");
                expected += 1;
            });
            assert!(got <= max);
            if got == 0 {
                std::hint::spin_loop();
            }
        }
        assert_eq!(rx.pop(), None, "an item beyond the last was delivered");
        expected
    });
    let mut next = 0u64;
    let mut seed = 0xD1B5_4A32_D192_ED03u64;
    while next < ITEMS {
        let end = (next + next_batch(&mut seed) as u64).min(ITEMS);
        let pushed = tx.push_iter(next..end) as u64;
        if pushed == 0 {
            std::hint::spin_loop();
        }
        next += pushed;
    }
    assert_eq!(consumer.join().unwrap(), ITEMS);
}

struct Counted(Arc<AtomicUsize>);

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}

#[test]
fn items_in_flight_when_both_ends_drop_are_dropped_once() {
    let drops = Arc::new(AtomicUsize::new(0));
    let (mut tx, mut rx) = channel::<Counted>(64).unwrap();
    let d = drops.clone();
    let producer = std::thread::spawn(move || {
        let mut pushed = 0;
        for _ in 0..10_000 {
            if tx.push(Counted(d.clone())).is_ok() {
                pushed += 1;
            }
        }
        pushed
    });
    let mut popped = 0;
    for _ in 0..5_000 {
        if rx.pop().is_some() {
            popped += 1;
        }
    }
    let pushed = producer.join().unwrap();
    let refused = 10_000 - pushed;
    drop(rx);
    // Every Counted ever built is dropped exactly once: popped ones, refused ones (handed
    // back and dropped by the producer), and the ones left in the ring.
    assert_eq!(
        drops.load(Ordering::Relaxed),
        10_000,
        "pushed {pushed} popped {popped} refused {refused}"
    );
}
