//! A shard's provided-buffer ring: the buffers multishot recv picks from.
//!
//! Owns: the ring of `io_uring_buf` entries (page-aligned, mapped anonymously) and the
//! buffers it publishes, both allocated once when the server starts on the shard.
//!
//! Never: frees either while the kernel may select from them (the owner unregisters the
//! group first, or the shard has stopped with no recv in flight), or hands a buffer back
//! twice: a buffer id returned by a completion goes back exactly once, after its bytes
//! were copied out.
//!
//! The protocol (io_uring_register_buf_ring(3)): the kernel consumes entries from the
//! head; we publish entries at `tail` and make them visible with a release store of
//! the tail, which lives in the `resv` field of entry 0.

use std::ptr::NonNull;
use std::sync::atomic::{AtomicU16, Ordering};

use crate::runtime::{OpError, ShardCtx};

/// Bytes of one `io_uring_buf` entry: addr u64, len u32, bid u16, resv u16.
const ENTRY_BYTES: usize = 16;
/// Offset of the tail (entry 0's `resv`) in the ring.
const TAIL_OFFSET: usize = 14;

/// The ring and its buffers.
pub(crate) struct BufRing {
    ring: NonNull<u8>,
    ring_bytes: usize,
    entries: u16,
    buffers: Box<[u8]>,
    buffer_bytes: usize,
    group: u16,
    /// Our copy of the tail (the kernel only reads it).
    tail: u16,
    registered: bool,
}

impl BufRing {
    /// Allocates `entries` (a power of two, at most 32768) buffers of `buffer_bytes`
    /// each, registers them with this shard's io_uring as `group` and publishes all.
    pub(crate) fn new(
        ctx: &mut ShardCtx,
        group: u16,
        entries: u16,
        buffer_bytes: usize,
    ) -> Result<Self, OpError> {
        assert!(
            entries.is_power_of_two(),
            "buffer ring size must be a power of two"
        );
        assert!(
            u32::try_from(buffer_bytes).is_ok(),
            "a provided buffer's length is a u32"
        );
        let ring_bytes = usize::from(entries) * ENTRY_BYTES;
        // SAFETY: an anonymous private mapping with no address hint has no
        // preconditions; the result is checked for MAP_FAILED below.
        let raw = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                ring_bytes,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if raw == libc::MAP_FAILED {
            return Err(OpError::Register(std::io::Error::last_os_error()));
        }
        let Some(ring) = NonNull::new(raw.cast::<u8>()) else {
            return Err(OpError::Register(std::io::Error::other(
                "mmap returned null",
            )));
        };
        let mut this = Self {
            ring,
            ring_bytes,
            entries,
            buffers: vec![0u8; usize::from(entries) * buffer_bytes].into_boxed_slice(),
            buffer_bytes,
            group,
            tail: 0,
            registered: false,
        };
        // SAFETY: the mapping is page-aligned and `entries` entries long; it and the
        // buffers live in `self`, which unregisters the group before freeing them.
        unsafe { ctx.register_buf_ring(this.ring.as_ptr() as u64, entries, group) }?;
        this.registered = true;
        for bid in 0..entries {
            this.stage(bid);
        }
        this.publish();
        Ok(this)
    }

    /// The buffer group id recv ops select from.
    pub(crate) fn group(&self) -> u16 {
        self.group
    }

    /// The first `len` bytes of buffer `bid`, as the kernel filled them.
    pub(crate) fn filled(&self, bid: u16, len: usize) -> &[u8] {
        let start = usize::from(bid) * self.buffer_bytes;
        &self.buffers[start..start + len.min(self.buffer_bytes)]
    }

    /// Gives buffer `bid` back to the kernel.
    pub(crate) fn recycle(&mut self, bid: u16) {
        debug_assert!(bid < self.entries);
        self.stage(bid);
        self.publish();
    }

    /// Writes the entry for `bid` at our tail (not yet visible to the kernel).
    fn stage(&mut self, bid: u16) {
        let index = usize::from(self.tail & (self.entries - 1));
        let addr = self.buffers.as_ptr() as u64 + (usize::from(bid) * self.buffer_bytes) as u64;
        let entry = index * ENTRY_BYTES;
        // SAFETY: `entry` indexes an entry inside the mapping (index < entries). The
        // kernel does not read entries between its head and our published tail, and
        // this one is past the published tail. The tail field (entry 0's `resv`) is
        // not touched here: we write addr, len and bid only.
        unsafe {
            let base = self.ring.as_ptr().add(entry);
            base.cast::<u64>().write(addr);
            base.add(8).cast::<u32>().write(self.buffer_bytes as u32);
            base.add(12).cast::<u16>().write(bid);
        }
        self.tail = self.tail.wrapping_add(1);
    }

    /// Makes the staged entries visible: a release store of the tail, so the kernel
    /// (which loads it with acquire) sees every entry written before it.
    fn publish(&self) {
        // SAFETY: the tail is a 2-byte-aligned u16 inside the mapping; the kernel reads
        // it concurrently, so it is only ever accessed atomically from this side.
        let tail = unsafe { &*self.ring.as_ptr().add(TAIL_OFFSET).cast::<AtomicU16>() };
        tail.store(self.tail, Ordering::Release);
    }

    /// Unregisters the group (the kernel stops selecting from it), so the memory can
    /// go. Called when the server stops on this shard; a failure leaks the memory.
    pub(crate) fn unregister(&mut self, ctx: &mut ShardCtx) {
        if self.registered && ctx.unregister_buf_ring(self.group).is_ok() {
            self.registered = false;
        }
    }
}

impl Drop for BufRing {
    fn drop(&mut self) {
        if self.registered {
            // The kernel may still select from the ring (the shard stopped without the
            // server unregistering it): leak both rather than free memory it may write.
            std::mem::forget(std::mem::take(&mut self.buffers));
            return;
        }
        // SAFETY: unregistered, so the kernel no longer reads the mapping; it was
        // mapped by `new` with exactly `ring_bytes`.
        unsafe {
            libc::munmap(self.ring.as_ptr().cast(), self.ring_bytes);
        }
    }
}
