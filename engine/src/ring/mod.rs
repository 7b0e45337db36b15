//! Bounded lock-free single-producer single-consumer rings: the only way shards talk.
//!
//! Owns: the ring buffer, its two indices and the items in flight between one producer
//! and one consumer. Each endpoint (`Producer`, `Consumer`) is a unique, non-`Clone`
//! value, so the type system keeps each side single-threaded.
//!
//! Never: blocks, spins, allocates after construction, or drops an item. A full ring
//! hands the item back to the caller (`Full`), who decides what backpressure means.
//! Waking a parked consumer is not this module's business: see `runtime::doorbell`.

mod spsc;

#[cfg(all(test, loom))]
mod loom_tests;

pub use spsc::{channel, Consumer, Full, Producer, RingError, RING_CAPACITY_MAX};
