//! The one place lock-free code gets its atomics, `Arc` and `UnsafeCell` from.
//!
//! Under `--cfg loom` every item here is loom's model-checked twin, so the ring, the
//! doorbell and the pending bound are checked by the very code that runs in production. Code outside the
//! loom-modelled structures (the runtime's counters) uses `std` directly and is not
//! compiled under loom at all.
//!
//! This module owns no state and never allocates.

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{fence, AtomicBool, AtomicU64, AtomicUsize, Ordering};
#[cfg(loom)]
pub(crate) use loom::sync::Arc;

#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{fence, AtomicBool, AtomicU64, AtomicUsize, Ordering};
#[cfg(not(loom))]
pub(crate) use std::sync::Arc;

/// An `UnsafeCell` with loom's closure-based access API, so the ring's slot accesses are
/// tracked by loom's causality checker and compile to plain pointer accesses otherwise.
#[cfg(loom)]
pub(crate) use loom::cell::UnsafeCell;

/// An `UnsafeCell` with loom's closure-based access API (std build).
#[cfg(not(loom))]
#[derive(Debug)]
pub(crate) struct UnsafeCell<T>(std::cell::UnsafeCell<T>);

#[cfg(not(loom))]
impl<T> UnsafeCell<T> {
    pub(crate) const fn new(value: T) -> Self {
        Self(std::cell::UnsafeCell::new(value))
    }

    /// Gives the closure a mutable raw pointer to the value. The caller of the closure's
    /// dereference upholds exclusivity, as with `std::cell::UnsafeCell::get`.
    #[inline(always)]
    pub(crate) fn with_mut<R>(&self, f: impl FnOnce(*mut T) -> R) -> R {
        f(self.0.get())
    }
}

/// Pads and aligns a value to 128 bytes: two cache lines, because x86's adjacent-line
/// prefetcher pulls pairs of 64-byte lines and would otherwise re-create false sharing
/// between a ring's head and tail.
#[derive(Debug, Default)]
#[repr(align(128))]
pub(crate) struct CachePadded<T>(pub(crate) T);

impl<T> std::ops::Deref for CachePadded<T> {
    type Target = T;

    #[inline(always)]
    fn deref(&self) -> &T {
        &self.0
    }
}
