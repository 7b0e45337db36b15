//! The bound on what waits for one consumer: messages and bytes in one atomic word,
//! reserved by any number of producers (shards, publishing threads) and released by the
//! consumer as it takes.
//!
//! Owns: the packing of the two counts, the reservation (a compare-and-swap that
//! reserves only what fits) and the release. Never: holds the messages, waits, or lets
//! either count pass its maximum (so neither can carry into the other).
//!
//! Checked by loom (`--cfg loom`): two producers and a consumer never see more reserved
//! than the bound, and every reservation is released exactly once.

// Under loom only this module's model uses it (the subjects model is not built).
#![cfg_attr(loom, allow(dead_code))]

use crate::sync::{AtomicU64, Ordering};

/// The most messages a bound can hold; larger limits are held to this (8,388,608).
pub const PENDING_MESSAGES_MAX: usize = 1 << 23;
/// The most bytes a bound can hold; larger limits are held to this (512 GiB).
pub const PENDING_BYTES_MAX: usize = 1 << 39;

/// Messages above this bit of the word, bytes below.
const COUNT_SHIFT: u32 = 40;
const BYTES_MASK: u64 = (1 << COUNT_SHIFT) - 1;

/// `messages` and `bytes` as one addend of the word.
fn word(messages: usize, bytes: usize) -> u64 {
    ((messages as u64) << COUNT_SHIFT) | bytes as u64
}

/// The word as (messages, bytes).
fn unpack(word: u64) -> (usize, usize) {
    ((word >> COUNT_SHIFT) as usize, (word & BYTES_MASK) as usize)
}

/// Messages and bytes reserved for one consumer, under its limits.
#[derive(Debug)]
pub(crate) struct PendingBound {
    word: AtomicU64,
    messages_max: usize,
    bytes_max: usize,
}

impl PendingBound {
    /// A bound of `messages` and `bytes` (each at least 1, at most its maximum).
    pub(crate) fn new(messages: usize, bytes: usize) -> Self {
        Self {
            word: AtomicU64::new(0),
            messages_max: messages.clamp(1, PENDING_MESSAGES_MAX),
            bytes_max: bytes.clamp(1, PENDING_BYTES_MAX),
        }
    }

    /// Reserves room for one message of `size` bytes if it fits; false if not (nothing
    /// reserved). Reserve before making the message visible to the consumer, so its
    /// release can never come first.
    pub(crate) fn try_reserve(&self, size: usize) -> bool {
        if size > self.bytes_max {
            return false;
        }
        let add = word(1, size);
        let mut current = self.word.load(Ordering::Acquire);
        loop {
            let (messages, bytes) = unpack(current);
            if messages >= self.messages_max || bytes + size > self.bytes_max {
                return false;
            }
            match self.word.compare_exchange_weak(
                current,
                current + add,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return true,
                Err(now) => current = now,
            }
        }
    }

    /// Gives back what `messages` taken messages of `bytes` in all had reserved.
    pub(crate) fn release(&self, messages: usize, bytes: usize) {
        self.word.fetch_sub(word(messages, bytes), Ordering::AcqRel);
    }

    /// (messages, bytes) reserved now.
    pub(crate) fn pending(&self) -> (usize, usize) {
        unpack(self.word.load(Ordering::Acquire))
    }

    /// (messages, bytes) the bound allows.
    #[cfg(test)]
    pub(crate) fn limits(&self) -> (usize, usize) {
        (self.messages_max, self.bytes_max)
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn reserves_only_what_fits_and_releases_it() {
        let bound = PendingBound::new(3, 100);
        assert!(bound.try_reserve(40));
        assert!(bound.try_reserve(40));
        assert!(!bound.try_reserve(30), "bytes would pass 100");
        assert!(bound.try_reserve(20));
        assert!(!bound.try_reserve(0), "a fourth message");
        assert_eq!(bound.pending(), (3, 100));
        bound.release(2, 80);
        assert_eq!(bound.pending(), (1, 20));
        assert!(!bound.try_reserve(101), "larger than the bound: never fits");
        assert_eq!(bound.pending(), (1, 20));
    }

    #[test]
    fn limits_are_held_to_the_maxima_and_the_fields_stay_apart() {
        let bound = PendingBound::new(usize::MAX, usize::MAX);
        assert_eq!(bound.limits(), (PENDING_MESSAGES_MAX, PENDING_BYTES_MAX));
        assert!(bound.try_reserve(PENDING_BYTES_MAX));
        assert!(!bound.try_reserve(1), "the byte field is full");
        assert_eq!(bound.pending(), (1, PENDING_BYTES_MAX));
        let zero = PendingBound::new(0, 0);
        assert_eq!(zero.limits(), (1, 1));
    }
}

#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;
    use crate::sync::{Arc, AtomicUsize};

    /// Two producers race for a bound of one message while a consumer releases what it
    /// sees reserved: never more than one reserved, and every reservation released once.
    #[test]
    fn loom_two_producers_never_pass_a_bound_of_one() {
        loom::model(|| {
            let bound = Arc::new(PendingBound::new(1, 1 << 20));
            let reserved = Arc::new(AtomicUsize::new(0));
            let producers: Vec<_> = (0..2)
                .map(|_| {
                    let (bound, reserved) = (bound.clone(), reserved.clone());
                    loom::thread::spawn(move || {
                        if bound.try_reserve(10) {
                            assert!(bound.pending().0 <= 1);
                            reserved.fetch_add(1, Ordering::AcqRel);
                        }
                    })
                })
                .collect();
            // The consumer takes (releases) at most once what it finds reserved.
            let (messages, bytes) = bound.pending();
            if messages == 1 {
                assert_eq!(bytes, 10);
                bound.release(1, 10);
            }
            for producer in producers {
                producer.join().unwrap();
            }
            let taken = usize::from(messages == 1);
            let left = bound.pending();
            assert!(left.0 <= 1);
            assert_eq!(
                left,
                (reserved.load(Ordering::Acquire) - taken, left.0 * 10)
            );
        });
    }
}
