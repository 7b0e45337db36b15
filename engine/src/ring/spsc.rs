//! Lamport's single-producer single-consumer ring buffer, with each side caching its last
//! view of the opposite index (as in Rigtorp's SPSCQueue and the FastForward queue).
//!
//! `head` is written only by the consumer and `tail` only by the producer; both count
//! items ever popped/pushed and wrap at `usize::MAX`, so `tail - head` (wrapping) is the
//! length and a slot is `index & mask`. The producer reads `head` only when its cached
//! copy says the ring is full, and the consumer reads `tail` only when its cached copy
//! says the ring is empty, so in steady state each side touches only its own cache line.
//!
//! Memory ordering, pairwise:
//! - producer `tail.store(Release)` ↔ consumer `tail.load(Acquire)`: the consumer sees the
//!   slot contents written before the producer published the new tail.
//! - consumer `head.store(Release)` ↔ producer `head.load(Acquire)`: the producer
//!   overwrites a slot only after the consumer has finished moving its item out.

use std::mem::MaybeUninit;

use crate::sync::{Arc, AtomicUsize, CachePadded, Ordering, UnsafeCell};

/// The largest ring capacity `channel` accepts (items). Bounds the up-front allocation.
pub const RING_CAPACITY_MAX: usize = 1 << 24;

/// A ring could not be built.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RingError {
    /// The requested capacity is zero or above [`RING_CAPACITY_MAX`].
    #[error("ring capacity {requested} is outside 1..={max}")]
    CapacityOutOfRange {
        /// What was asked for.
        requested: usize,
        /// [`RING_CAPACITY_MAX`].
        max: usize,
    },
}

/// The ring was full; the item is handed back untouched.
#[derive(Debug, PartialEq, Eq)]
pub struct Full<T>(pub T);

struct Shared<T> {
    /// Items popped so far. Written by the consumer only.
    head: CachePadded<AtomicUsize>,
    /// Items pushed so far. Written by the producer only.
    tail: CachePadded<AtomicUsize>,
    slots: Box<[UnsafeCell<MaybeUninit<T>>]>,
    mask: usize,
}

// SAFETY: `Shared` hands each slot to exactly one side at a time: slots in
// `[head, tail)` belong to the consumer, the rest to the producer, and ownership moves
// only through the Release/Acquire index pairs documented above. Items move between
// threads, so `T: Send` is required; no `&T` is ever shared, so `T: Sync` is not.
unsafe impl<T: Send> Send for Shared<T> {}
// SAFETY: as above; the two endpoints are the only users and each is single-threaded.
unsafe impl<T: Send> Sync for Shared<T> {}

impl<T> Shared<T> {
    fn capacity(&self) -> usize {
        self.slots.len()
    }

    fn slot(&self, index: usize) -> &UnsafeCell<MaybeUninit<T>> {
        let i = index & self.mask;
        debug_assert!(i < self.slots.len());
        &self.slots[i]
    }
}

impl<T> Drop for Shared<T> {
    fn drop(&mut self) {
        // Both endpoints are gone (this is the last Arc), so nobody races us. Every item
        // in [head, tail) was pushed and never popped: drop each exactly once.
        let mut head = self.head.load(Ordering::Acquire);
        let tail = self.tail.load(Ordering::Acquire);
        while head != tail {
            // SAFETY: slots in [head, tail) hold initialised items that no endpoint will
            // touch again; each is read out once and the index moves past it.
            self.slot(head)
                .with_mut(|p| unsafe { std::ptr::drop_in_place((*p).as_mut_ptr()) });
            head = head.wrapping_add(1);
        }
    }
}

/// The sending end of a ring. Exactly one exists per ring; it is `Send` but not `Clone`.
pub struct Producer<T> {
    shared: Arc<Shared<T>>,
    /// Our own copy of `shared.tail` (we are its only writer).
    tail: usize,
    /// The last `shared.head` we loaded; a lower bound of the true head.
    head_cache: usize,
}

/// The receiving end of a ring. Exactly one exists per ring; it is `Send` but not `Clone`.
pub struct Consumer<T> {
    shared: Arc<Shared<T>>,
    /// Our own copy of `shared.head` (we are its only writer).
    head: usize,
    /// The last `shared.tail` we loaded; a lower bound of the true tail.
    tail_cache: usize,
}

/// Builds a ring holding up to `capacity` items, rounded up to a power of two.
pub fn channel<T>(capacity: usize) -> Result<(Producer<T>, Consumer<T>), RingError> {
    if capacity == 0 || capacity > RING_CAPACITY_MAX {
        return Err(RingError::CapacityOutOfRange {
            requested: capacity,
            max: RING_CAPACITY_MAX,
        });
    }
    let capacity = capacity.next_power_of_two();
    let slots: Box<[_]> = (0..capacity)
        .map(|_| UnsafeCell::new(MaybeUninit::uninit()))
        .collect();
    let shared = Arc::new(Shared {
        head: CachePadded(AtomicUsize::new(0)),
        tail: CachePadded(AtomicUsize::new(0)),
        slots,
        mask: capacity - 1,
    });
    let producer = Producer {
        shared: shared.clone(),
        tail: 0,
        head_cache: 0,
    };
    let consumer = Consumer {
        shared,
        head: 0,
        tail_cache: 0,
    };
    Ok((producer, consumer))
}

impl<T> Producer<T> {
    /// The number of items the ring holds when full.
    pub fn capacity(&self) -> usize {
        self.shared.capacity()
    }

    /// How many items can be pushed right now without failing.
    #[inline]
    pub fn free_space(&mut self) -> usize {
        self.free_space_for(1)
    }

    /// Free slots, refreshing the cached head only when the cache shows fewer than
    /// `wanted` (so the common case reads nothing shared).
    #[inline]
    fn free_space_for(&mut self, wanted: usize) -> usize {
        let cap = self.shared.capacity();
        let mut free = cap - self.tail.wrapping_sub(self.head_cache);
        if free < wanted {
            // Acquire pairs with the consumer's Release store of `head`: slots it has
            // released are done being read, so we may overwrite them.
            self.head_cache = self.shared.head.load(Ordering::Acquire);
            free = cap - self.tail.wrapping_sub(self.head_cache);
        }
        debug_assert!(free <= cap);
        free
    }

    /// Pushes one item, or hands it back when the ring is full.
    #[inline]
    pub fn push(&mut self, item: T) -> Result<(), Full<T>> {
        if self.free_space() == 0 {
            return Err(Full(item));
        }
        self.write_slot(self.tail, item);
        self.tail = self.tail.wrapping_add(1);
        // Release pairs with the consumer's Acquire load of `tail`: publishes the slot.
        self.shared.tail.store(self.tail, Ordering::Release);
        Ok(())
    }

    /// Pushes items from `items` while there is room, publishing them all with one store.
    /// `next()` is called only when a slot is free, so no item is taken and then lost.
    /// Returns how many were pushed.
    #[inline]
    pub fn push_iter<I: Iterator<Item = T>>(&mut self, items: I) -> usize {
        let (hint, _) = items.size_hint();
        let free = self.free_space_for(hint.max(1));
        let mut pushed = 0;
        let mut items = items;
        while pushed < free {
            let Some(item) = items.next() else { break };
            self.write_slot(self.tail.wrapping_add(pushed), item);
            pushed += 1;
        }
        if pushed > 0 {
            self.tail = self.tail.wrapping_add(pushed);
            // Release pairs with the consumer's Acquire load of `tail` (one per batch).
            self.shared.tail.store(self.tail, Ordering::Release);
        }
        pushed
    }

    /// Moves as many items as fit from the front of `queue` into the ring, in order.
    /// Returns how many moved; the rest stay in `queue`.
    pub fn push_from_deque(&mut self, queue: &mut std::collections::VecDeque<T>) -> usize {
        let n = self.free_space_for(queue.len()).min(queue.len());
        let pushed = self.push_iter(queue.drain(..n));
        debug_assert_eq!(pushed, n);
        pushed
    }

    #[inline(always)]
    fn write_slot(&self, index: usize, item: T) {
        // SAFETY: `index` is in [tail, head_cache + capacity), a range the consumer has
        // released (Acquire above) and will not read until we publish a tail past it.
        // The slot holds no live item, so writing does not leak or double-drop.
        self.shared
            .slot(index)
            .with_mut(|p| unsafe { (*p).write(item) });
    }
}

impl<T> Consumer<T> {
    /// The number of items the ring holds when full.
    pub fn capacity(&self) -> usize {
        self.shared.capacity()
    }

    /// How many items are ready to pop.
    #[inline]
    pub fn ready(&mut self) -> usize {
        self.ready_for(1)
    }

    /// Ready items, refreshing the cached tail only when the cache shows fewer than
    /// `wanted` (so the common case reads nothing shared).
    #[inline]
    fn ready_for(&mut self, wanted: usize) -> usize {
        let mut ready = self.tail_cache.wrapping_sub(self.head);
        if ready < wanted {
            // Acquire pairs with the producer's Release store of `tail`: the slots below
            // it hold initialised items.
            self.tail_cache = self.shared.tail.load(Ordering::Acquire);
            ready = self.tail_cache.wrapping_sub(self.head);
        }
        debug_assert!(ready <= self.shared.capacity());
        ready
    }

    /// Whether the ring is empty, read fresh from the shared tail (never from the cache).
    /// This is the check a consumer makes after announcing that it is about to park.
    #[inline]
    pub fn is_empty_now(&self) -> bool {
        self.shared.tail.load(Ordering::Acquire) == self.head
    }

    /// Pops one item, or `None` when the ring is empty.
    #[inline]
    pub fn pop(&mut self) -> Option<T> {
        if self.ready() == 0 {
            return None;
        }
        let item = self.read_slot(self.head);
        self.head = self.head.wrapping_add(1);
        // Release pairs with the producer's Acquire load of `head`: the slot is free.
        self.shared.head.store(self.head, Ordering::Release);
        Some(item)
    }

    /// Pops up to `max` items, passing each to `sink` in order, and releases their slots
    /// with one store. Returns how many were popped. If `sink` panics, the items it was
    /// already given (including the one it panicked on) count as popped: none is
    /// delivered or dropped twice.
    #[inline]
    pub fn pop_batch(&mut self, max: usize, mut sink: impl FnMut(T)) -> usize {
        let n = self.ready_for(max).min(max);
        let mut batch = PopGuard {
            consumer: self,
            taken: 0,
        };
        while batch.taken < n {
            let item = batch
                .consumer
                .read_slot(batch.consumer.head.wrapping_add(batch.taken));
            // Counted before `sink` runs: from here the item belongs to the sink.
            batch.taken += 1;
            sink(item);
        }
        n
    }

    #[inline(always)]
    fn read_slot(&self, index: usize) -> T {
        // SAFETY: `index` is in [head, tail_cache), published by the producer's Release
        // store of tail and observed by our Acquire load, so the slot is initialised.
        // Every caller advances `head` past it (`pop` at once, `pop_batch` through
        // `PopGuard`, on unwind too) before anyone could read it again, so the item is
        // moved out exactly once.
        self.shared
            .slot(index)
            .with_mut(|p| unsafe { (*p).assume_init_read() })
    }
}

/// Releases the slots a `pop_batch` has moved items out of, on return or on unwind.
struct PopGuard<'a, T> {
    consumer: &'a mut Consumer<T>,
    taken: usize,
}

impl<T> Drop for PopGuard<'_, T> {
    fn drop(&mut self) {
        if self.taken > 0 {
            let c = &mut *self.consumer;
            c.head = c.head.wrapping_add(self.taken);
            // Release pairs with the producer's Acquire load of `head` (one per batch).
            c.shared.head.store(c.head, Ordering::Release);
        }
    }
}

impl<T> std::fmt::Debug for Producer<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Producer")
            .field("capacity", &self.capacity())
            .field("tail", &self.tail)
            .finish()
    }
}

impl<T> std::fmt::Debug for Consumer<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Consumer")
            .field("capacity", &self.capacity())
            .field("head", &self.head)
            .finish()
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::VecDeque;

    #[test]
    fn capacity_rounds_up_and_is_bounded() {
        let (p, _c) = channel::<u8>(5).unwrap();
        assert_eq!(p.capacity(), 8);
        assert!(matches!(
            channel::<u8>(0),
            Err(RingError::CapacityOutOfRange { .. })
        ));
        assert!(channel::<u8>(RING_CAPACITY_MAX + 1).is_err());
    }

    #[test]
    fn full_ring_hands_the_item_back() {
        let (mut p, mut c) = channel(2).unwrap();
        p.push(1).unwrap();
        p.push(2).unwrap();
        assert_eq!(p.push(3), Err(Full(3)));
        assert_eq!(c.pop(), Some(1));
        p.push(3).unwrap();
        assert_eq!(c.pop(), Some(2));
        assert_eq!(c.pop(), Some(3));
        assert_eq!(c.pop(), None);
    }

    #[test]
    fn unread_items_are_dropped_exactly_once() {
        let marker = std::sync::Arc::new(());
        {
            let (mut p, mut c) = channel(8).unwrap();
            for _ in 0..6 {
                p.push(marker.clone()).unwrap();
            }
            drop(c.pop());
            assert_eq!(std::sync::Arc::strong_count(&marker), 6);
            drop(p);
            assert_eq!(std::sync::Arc::strong_count(&marker), 6);
        }
        assert_eq!(std::sync::Arc::strong_count(&marker), 1);
    }

    #[test]
    fn panicking_sink_neither_redelivers_nor_double_drops() {
        let marker = std::sync::Arc::new(());
        let (mut p, mut c) = channel(8).unwrap();
        for _ in 0..4 {
            p.push(marker.clone()).unwrap();
        }
        let mut seen = 0;
        let unwound = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            c.pop_batch(4, |item| {
                seen += 1;
                drop(item);
                if seen == 2 {
                    panic!("sink fails on the second item");
                }
            })
        }));
        assert!(unwound.is_err());
        // Items 1 and 2 went to the sink; 3 and 4 are still in the ring, once each.
        assert_eq!(std::sync::Arc::strong_count(&marker), 3);
        assert_eq!(c.pop_batch(8, drop), 2);
        assert_eq!(std::sync::Arc::strong_count(&marker), 1);
        assert!(c.pop().is_none());
    }

    #[test]
    fn push_iter_takes_nothing_it_cannot_store() {
        let (mut p, _c) = channel(4).unwrap();
        let mut source = 0..10;
        assert_eq!(p.push_iter(&mut source), 4);
        assert_eq!(source.next(), Some(4), "item 4 must not have been consumed");
    }

    #[derive(Debug, Clone)]
    enum Op {
        Push(usize),
        Pop(usize),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0usize..40).prop_map(Op::Push),
            (0usize..40).prop_map(Op::Pop)
        ]
    }

    proptest! {
        /// The ring behaves as a bounded VecDeque under any sequence of batch pushes and
        /// pops, including wrap-around of the slot index.
        #[test]
        fn behaves_as_a_bounded_vecdeque(cap_log in 0u32..6, ops in prop::collection::vec(op(), 0..200)) {
            let cap = 1usize << cap_log;
            let (mut p, mut c) = channel(cap).unwrap();
            let mut model: VecDeque<u64> = VecDeque::new();
            let mut next = 0u64;
            for op in ops {
                match op {
                    Op::Push(n) => {
                        let mut batch: VecDeque<u64> = (next..next + n as u64).collect();
                        let pushed = p.push_from_deque(&mut batch);
                        prop_assert_eq!(pushed, n.min(cap - model.len()));
                        model.extend(next..next + pushed as u64);
                        next += pushed as u64;
                    }
                    Op::Pop(n) => {
                        let mut got = Vec::new();
                        let popped = c.pop_batch(n, |x| got.push(x));
                        let want: Vec<u64> = model.drain(..n.min(model.len())).collect();
                        prop_assert_eq!(popped, want.len());
                        prop_assert_eq!(got, want);
                    }
                }
                prop_assert_eq!(c.is_empty_now(), model.is_empty());
            }
        }
    }
}
