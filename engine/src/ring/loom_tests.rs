//! Loom models of the SPSC ring: every interleaving of one producer and one consumer
//! thread, with a ring small enough that full, empty and wrap-around all happen.
//! Run with `RUSTFLAGS="--cfg loom" cargo test -p ringbroker --lib --release ring::`.

use super::channel;
use loom::sync::atomic::{AtomicUsize, Ordering};
use loom::sync::Arc;

/// Items arrive in order, none lost or duplicated, across full and wrap-around (capacity
/// 2, three items: the third push needs a slot the consumer released).
#[test]
fn loom_ring_order_full_and_wrap() {
    loom::model(|| {
        let (mut p, mut c) = channel::<u32>(2).unwrap();
        let producer = loom::thread::spawn(move || {
            for i in 0..3 {
                let mut item = i;
                loop {
                    match p.push(item) {
                        Ok(()) => break,
                        Err(super::Full(back)) => {
                            item = back;
                            loom::thread::yield_now();
                        }
                    }
                }
            }
        });
        let mut next = 0;
        while next < 3 {
            match c.pop() {
                Some(v) => {
                    assert_eq!(v, next);
                    next += 1;
                }
                None => loom::thread::yield_now(),
            }
        }
        producer.join().unwrap();
        assert_eq!(c.pop(), None);
    });
}

/// Batch push and batch pop publish many slots with one store each and still deliver
/// every item once, in order.
#[test]
fn loom_ring_batches() {
    loom::model(|| {
        let (mut p, mut c) = channel::<u32>(2).unwrap();
        let producer = loom::thread::spawn(move || {
            let mut next = 0;
            while next < 3 {
                next += p.push_iter(next..3) as u32;
                if next < 3 {
                    loom::thread::yield_now();
                }
            }
        });
        let mut seen = Vec::new();
        while seen.len() < 3 {
            if c.pop_batch(2, |v| seen.push(v)) == 0 {
                loom::thread::yield_now();
            }
        }
        producer.join().unwrap();
        assert_eq!(seen, vec![0, 1, 2]);
    });
}

struct Counted(Arc<AtomicUsize>);

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}

/// Items never popped are dropped exactly once when both endpoints are gone, whichever
/// endpoint goes last and whatever the consumer managed to pop.
#[test]
fn loom_ring_drops_unread_items() {
    loom::model(|| {
        let drops = Arc::new(AtomicUsize::new(0));
        let (mut p, mut c) = channel::<Counted>(2).unwrap();
        let d = drops.clone();
        let producer = loom::thread::spawn(move || {
            let _ = p.push(Counted(d.clone()));
            let _ = p.push(Counted(d));
        });
        drop(c.pop());
        drop(c);
        producer.join().unwrap();
        assert_eq!(drops.load(Ordering::Relaxed), 2);
    });
}
