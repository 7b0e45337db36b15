//! Copies of a caller's bytes (payloads, keys) into engine-owned `Bytes`: the one copy
//! the C ABI makes of what it is given. Small pieces of one batch share a few blocks
//! instead of one allocation each: a batch of 64 small payloads costs a handful of
//! allocations, and the frees on whichever thread drops the messages stay as few.
//!
//! Owns: the packing rule. Never: keeps a pointer into the caller's memory (everything
//! is copied before the entry point returns), or packs a large piece (it would pin a
//! block while one small neighbour lives on).

use bytes::{Bytes, BytesMut};

/// Pieces up to this size are packed; larger ones get an allocation of their own.
const PACKED_BYTES_MAX: usize = 4 << 10;
/// The most a shared block holds: what a message kept alive longest can pin.
const BLOCK_BYTES_MAX: usize = 64 << 10;

/// Copies the pieces of one call.
pub(crate) struct Copier {
    block: BytesMut,
    /// Bytes still to be copied by this call (sizes the next block; a hint).
    remaining: usize,
}

impl Copier {
    /// A copier for a call that will copy about `total` bytes.
    pub(crate) fn new(total: usize) -> Self {
        Self {
            block: BytesMut::new(),
            remaining: total,
        }
    }

    /// `piece` as engine-owned bytes.
    pub(crate) fn copy(&mut self, piece: &[u8]) -> Bytes {
        let len = piece.len();
        self.remaining = self.remaining.saturating_sub(len);
        if len == 0 {
            return Bytes::new();
        }
        let room = self.block.capacity() - self.block.len();
        // A large piece, or a last piece with no room left for it: a block shared by
        // nobody would only add the sharing's own allocation.
        if len > PACKED_BYTES_MAX || (room < len && self.remaining == 0) {
            return Bytes::copy_from_slice(piece);
        }
        if room < len {
            let size = (len + self.remaining).clamp(len, BLOCK_BYTES_MAX.max(len));
            self.block = BytesMut::with_capacity(size);
        }
        self.block.extend_from_slice(piece);
        self.block.split().freeze()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_come_back_intact_whatever_their_sizes() {
        let pieces: Vec<Vec<u8>> = [0usize, 1, 16, 4095, 4096, 4097, 70_000, 3, 64 << 10]
            .iter()
            .enumerate()
            .map(|(i, &n)| (0..n).map(|j| (i * 31 + j) as u8).collect())
            .collect();
        let total = pieces.iter().map(Vec::len).sum();
        let mut copier = Copier::new(total);
        let copies: Vec<Bytes> = pieces.iter().map(|p| copier.copy(p)).collect();
        for (piece, copy) in pieces.iter().zip(&copies) {
            assert_eq!(piece.as_slice(), copy.as_ref());
        }
    }

    #[test]
    fn small_pieces_share_blocks_and_large_ones_do_not() {
        let mut copier = Copier::new(64 * 16 + 10_000);
        let small: Vec<Bytes> = (0..64u8).map(|i| copier.copy(&[i; 16])).collect();
        // Consecutive small pieces are adjacent in one block.
        for pair in small.windows(2) {
            assert_eq!(pair[0].as_ptr().wrapping_add(16), pair[1].as_ptr());
        }
        let large = copier.copy(&[9; 10_000]);
        assert_eq!(large.len(), 10_000);
        let next = copier.copy(&[1; 16]);
        assert_eq!(
            small[63].as_ptr().wrapping_add(16),
            next.as_ptr(),
            "a large piece does not take the block's room"
        );
    }

    #[test]
    fn a_lone_piece_is_a_plain_copy() {
        let mut copier = Copier::new(16);
        let only = copier.copy(&[5; 16]);
        assert_eq!(only.as_ref(), &[5; 16]);
        assert_eq!(
            copier.block.capacity(),
            0,
            "no block was made for one piece"
        );
    }

    #[test]
    fn a_block_never_exceeds_its_bound() {
        let mut copier = Copier::new(1 << 30);
        let first = copier.copy(&[1; 100]);
        let mut last = first.clone();
        let mut blocks = 1;
        for _ in 0..2000 {
            let piece = copier.copy(&[2; 100]);
            if last.as_ptr().wrapping_add(100) != piece.as_ptr() {
                blocks += 1;
            }
            last = piece;
        }
        // 2001 pieces of 100 B = 200 KB: at least 4 blocks of at most 64 KiB.
        assert!(blocks >= 4, "{blocks} blocks");
    }
}
