//! A connection's unsent output, in chunks, and the shard's spare chunks.
//!
//! Output is written into a tail chunk; once the tail holds `CHUNK_BYTES` it is sealed
//! and a new one starts. Each send takes the oldest sealed chunk (or the tail, when
//! none is sealed), so a backlog of many MiB is many chunks, never one buffer grown by
//! doubling: that copied everything queued at each step and, past glibc's mmap
//! threshold, faulted in fresh pages for every buffer (`perf` and `/proc/PID/stat`
//! under `nats bench` pub/sub 256 B: about one page fault per 4 KiB sent). Sent chunks
//! go back to the shard's pool and are written into again while their pages are warm.
//!
//! Owns: `Output` (the chunks of one connection and their byte count) and `OutputPool`
//! (one shard's spare chunks, at most `SPARES_MAX` of `SPARE_BYTES_MIN` to
//! `SPARE_BYTES_MAX` capacity each, so what the pool keeps is bounded whatever the
//! load).
//! Never: keeps a chunk anyone else still refers to (a sent chunk comes back only when
//! the send held its last reference), splits one encoder's write over two chunks (a
//! chunk is sealed only before a write starts), sends chunks out of the order they
//! were written, or lets a connection with nothing to send hold a chunk
//! (`release_idle`).

use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;

use bytes::{Bytes, BytesMut};

/// Bytes a tail chunk collects before it is sealed (one message more may follow).
pub(crate) const CHUNK_BYTES: usize = 256 << 10;
/// The most spare chunks one shard keeps.
const SPARES_MAX: usize = 8;
/// The largest chunk kept: a chunk that one large message grew is freed.
const SPARE_BYTES_MAX: usize = 2 * CHUNK_BYTES;
/// The smallest chunk kept: the few bytes of a connection that only answers `PING`s
/// must not take the place of a warm chunk.
const SPARE_BYTES_MIN: usize = 16 << 10;

/// One shard's spare chunks.
#[derive(Debug, Default)]
pub(crate) struct OutputPool {
    spares: RefCell<Vec<BytesMut>>,
}

impl OutputPool {
    /// An empty chunk: a spare if there is one (with its capacity), else a new one.
    fn take(&self) -> BytesMut {
        self.spares.borrow_mut().pop().unwrap_or_default()
    }

    /// Keeps `chunk`, emptied, if it has capacity worth keeping and there is room.
    fn give(&self, mut chunk: BytesMut) {
        let capacity = chunk.capacity();
        if !(SPARE_BYTES_MIN..=SPARE_BYTES_MAX).contains(&capacity) {
            return;
        }
        let mut spares = self.spares.borrow_mut();
        if spares.len() < SPARES_MAX {
            chunk.clear();
            spares.push(chunk);
        }
    }

    /// Keeps the chunk of a completed send, if the send held its last reference.
    pub(crate) fn recycle(&self, sent: Bytes) {
        if let Ok(chunk) = sent.try_into_mut() {
            self.give(chunk);
        }
    }

    /// Spare chunks kept now, and their capacity in bytes.
    #[cfg(test)]
    fn kept(&self) -> (usize, usize) {
        let spares = self.spares.borrow();
        (spares.len(), spares.iter().map(BytesMut::capacity).sum())
    }
}

/// One connection's unsent output.
#[derive(Debug)]
pub(crate) struct Output {
    /// Written into; no capacity while there is nothing to send.
    tail: BytesMut,
    /// Full chunks, oldest first, waiting for their sends.
    sealed: VecDeque<Bytes>,
    /// Bytes in `sealed`.
    sealed_bytes: usize,
    pool: Rc<OutputPool>,
}

impl Output {
    /// No output, drawing chunks from `pool`.
    pub(crate) fn new(pool: Rc<OutputPool>) -> Self {
        Self {
            tail: BytesMut::new(),
            sealed: VecDeque::new(),
            sealed_bytes: 0,
            pool,
        }
    }

    /// The buffer to write the next piece of output into: the tail, sealed first if it
    /// is full, taken from the pool if it has no capacity.
    pub(crate) fn buffer(&mut self) -> &mut BytesMut {
        if self.tail.len() >= CHUNK_BYTES {
            let full = std::mem::replace(&mut self.tail, self.pool.take());
            self.sealed_bytes += full.len();
            self.sealed.push_back(full.freeze());
        } else if self.tail.capacity() == 0 {
            self.tail = self.pool.take();
        }
        &mut self.tail
    }

    /// Unsent bytes, all chunks.
    pub(crate) fn len(&self) -> usize {
        self.sealed_bytes + self.tail.len()
    }

    /// Whether nothing is waiting to be sent.
    pub(crate) fn is_empty(&self) -> bool {
        self.sealed.is_empty() && self.tail.is_empty()
    }

    /// The bytes for the next send, oldest first: a sealed chunk, or the tail.
    pub(crate) fn next_send(&mut self) -> Option<Bytes> {
        if let Some(chunk) = self.sealed.pop_front() {
            self.sealed_bytes -= chunk.len();
            return Some(chunk);
        }
        if self.tail.is_empty() {
            return None;
        }
        Some(std::mem::take(&mut self.tail).freeze())
    }

    /// With nothing to send, gives the empty tail's capacity back to the pool.
    pub(crate) fn release_idle(&mut self) {
        if self.is_empty() && self.tail.capacity() > 0 {
            self.pool.give(std::mem::take(&mut self.tail));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sent(len: usize) -> Bytes {
        let mut chunk = BytesMut::with_capacity(len);
        chunk.resize(len, b'x');
        chunk.freeze()
    }

    #[test]
    fn a_sent_chunk_comes_back_empty_with_its_capacity() {
        let pool = OutputPool::default();
        pool.recycle(sent(64 << 10));
        let chunk = pool.take();
        assert!(chunk.is_empty());
        assert!(chunk.capacity() >= 64 << 10);
        // Taken: the pool is empty again, and gives new chunks.
        assert_eq!(pool.kept(), (0, 0));
        assert_eq!(pool.take().capacity(), 0);
    }

    #[test]
    fn a_chunk_still_referred_to_is_not_kept() {
        let pool = OutputPool::default();
        let data = sent(4096);
        let still_held = data.slice(10..20);
        pool.recycle(data);
        assert_eq!(pool.kept(), (0, 0));
        assert_eq!(&still_held[..], &[b'x'; 10]);
    }

    #[test]
    fn the_rest_of_a_short_send_recycles_only_when_the_send_is_done_with_it() {
        // A short send resubmits `data.slice(sent..)`; the first part is dropped.
        let pool: Rc<OutputPool> = Rc::default();
        let data = sent(100_000);
        let rest = data.slice(30_000..);
        // The kernel may still read `rest`: a recycle of the first part keeps nothing.
        pool.recycle(data);
        assert_eq!(pool.kept(), (0, 0));
        assert_eq!(rest.len(), 70_000);
        // The rest completes: now it is the last reference, and comes back empty.
        pool.recycle(rest);
        assert_eq!(pool.kept().0, 1);
        let chunk = pool.take();
        assert!(chunk.is_empty() && chunk.capacity() >= SPARE_BYTES_MIN);
    }

    #[test]
    fn what_the_pool_keeps_is_bounded_in_count_and_size() {
        let pool = OutputPool::default();
        pool.recycle(sent(SPARE_BYTES_MAX + 1));
        pool.recycle(sent(64));
        pool.give(BytesMut::new());
        assert_eq!(pool.kept(), (0, 0), "too large, too small or empty: freed");
        for _ in 0..SPARES_MAX + 5 {
            pool.recycle(sent(SPARE_BYTES_MAX));
        }
        let (count, bytes) = pool.kept();
        assert_eq!(count, SPARES_MAX);
        assert!(bytes <= SPARES_MAX * SPARE_BYTES_MAX);
    }

    /// Writes `pieces` pieces of `size` bytes, each a run of one byte value.
    fn write(output: &mut Output, pieces: usize, size: usize, first: u8) {
        for i in 0..pieces {
            let value = first.wrapping_add(i as u8);
            output.buffer().extend_from_slice(&vec![value; size]);
        }
    }

    #[test]
    fn a_backlog_goes_out_in_chunks_in_the_order_written() {
        let mut output = Output::new(Rc::default());
        // 3 MiB in 1000-byte pieces: about 12 chunks, none much over CHUNK_BYTES.
        let pieces = 3 << 10;
        write(&mut output, pieces, 1000, 0);
        assert_eq!(output.len(), pieces * 1000);
        let mut sends = Vec::new();
        while let Some(send) = output.next_send() {
            assert!(send.len() < CHUNK_BYTES + 1000, "a send of {}", send.len());
            sends.push(send);
        }
        assert!(sends.len() >= 12, "{} sends", sends.len());
        assert!(output.is_empty());
        assert_eq!(output.len(), 0);
        let all: Vec<u8> = sends.iter().flat_map(|s| s.iter().copied()).collect();
        assert_eq!(all.len(), pieces * 1000);
        for (i, piece) in all.chunks(1000).enumerate() {
            assert!(piece.iter().all(|&b| b == i as u8), "piece {i} intact");
        }
    }

    proptest::proptest! {
        /// Whatever the writes and however sends interleave with them (sent chunks
        /// going back to the pool to be written into again), the bytes come out whole
        /// and in order, `len` counts what is unsent, and no send is much larger than
        /// a chunk.
        #[test]
        fn writes_come_out_whole_and_in_order(
            steps in proptest::collection::vec((0usize..150_000, 0u8..4), 1..40),
        ) {
            let pool: Rc<OutputPool> = Rc::default();
            let mut output = Output::new(pool.clone());
            let (mut written, mut sent) = (Vec::new(), Vec::new());
            let mut largest_write = 0;
            for (i, (size, send)) in steps.into_iter().enumerate() {
                let piece: Vec<u8> = (0..size).map(|j| (i * 7 + j) as u8).collect();
                output.buffer().extend_from_slice(&piece);
                written.extend_from_slice(&piece);
                largest_write = largest_write.max(size);
                // A send after one write in four: backlogs of several chunks build up.
                if send == 0 {
                    if let Some(chunk) = output.next_send() {
                        proptest::prop_assert!(chunk.len() < CHUNK_BYTES + largest_write + 1);
                        sent.extend_from_slice(&chunk);
                        pool.recycle(chunk);
                    }
                }
                proptest::prop_assert_eq!(output.len(), written.len() - sent.len());
                proptest::prop_assert_eq!(output.is_empty(), written.len() == sent.len());
            }
            while let Some(chunk) = output.next_send() {
                sent.extend_from_slice(&chunk);
                pool.recycle(chunk);
            }
            proptest::prop_assert!(sent == written, "bytes out differ from bytes in");
            output.release_idle();
            proptest::prop_assert!(pool.kept().0 <= SPARES_MAX);
        }
    }

    #[test]
    fn sent_chunks_are_written_into_again_and_an_idle_output_holds_none() {
        let pool: Rc<OutputPool> = Rc::default();
        let mut output = Output::new(pool.clone());
        write(&mut output, 1, 100_000, 7);
        let send = output.next_send().expect("the tail");
        let address = send.as_ptr();
        pool.recycle(send);
        assert_eq!(pool.kept().0, 1);
        write(&mut output, 1, 10, 8);
        assert_eq!(output.buffer().as_ptr(), address, "the same chunk, warm");
        assert_eq!(pool.kept().0, 0);
        let send = output.next_send().expect("the tail");
        assert_eq!(&send[..], &[8; 10]);
        pool.recycle(send);
        // Taken again for a write that did not happen; with nothing to send, the
        // tail's capacity goes back.
        output.buffer();
        assert_eq!(pool.kept().0, 0);
        output.release_idle();
        assert_eq!(pool.kept().0, 1);
        assert_eq!(output.tail.capacity(), 0);
    }
}
