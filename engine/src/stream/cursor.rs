//! One consumer's position in one partition, on the partition's shard: what it read
//! next, what it delivered and waits to hear about, and which member it delivers to.
//!
//! Owns: reading records for the consumer (new ones in offset order, then the ones
//! due again), the filter, credits taken from the member, `ack_wait` and `nak` delays,
//! `max_deliver`, the consumer's position as persisted (`encode_position`), and the
//! hand-over when the partition moves to another member. Never: delivers a record
//! without a credit, or to a member whose assignment is stale; moves its position past
//! a record that is delivered and not yet acknowledged (it stays pending, and is
//! persisted as such).

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound;
use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::config::AckPolicy;
use super::error::StreamError;
use super::member::{AckKind, AckRoute, Member};
use super::message::{StreamMessage, SUBJECT_HEADER};
use crate::routing::{naive_match, Pattern};
use crate::storage::codec::{decode_batch, peek_header, RecordView};
use crate::storage::{PartitionLog, StorageDir, StorageError};

/// Bytes read from the log per step of a delivery.
const READ_BYTES: usize = 256 << 10;
/// Records delivered per cursor per turn, so one consumer cannot hold the shard.
const DELIVER_PER_TURN: usize = 4096;

/// What a cursor needs from its consumer's definition.
#[derive(Debug)]
pub(crate) struct CursorConfig {
    pub(crate) ack: AckPolicy,
    pub(crate) ack_wait: Duration,
    pub(crate) max_deliver: Option<u32>,
    pub(crate) filter: Option<Pattern>,
    pub(crate) durable: bool,
}

/// The member a partition is assigned to.
pub(crate) struct Assignment {
    pub(crate) member: Arc<Member>,
    pub(crate) generation: u64,
    pub(crate) route: Arc<AckRoute>,
}

#[derive(Debug, Clone, Copy)]
struct Pending {
    deliveries: u32,
    due: Instant,
    /// Holds one of the member's credits (false after a revoke or a restart).
    credit: bool,
    /// The number of its last push into the assigned member's buffer (this shard's
    /// pushes there), 0 if none: while the application has not taken that copy, it is
    /// not pushed again.
    seq: u64,
}

impl Pending {
    fn new(deliveries: u32, due: Instant, credit: bool) -> Self {
        Self {
            deliveries,
            due,
            credit,
            seq: 0,
        }
    }
}

/// A record the consumer gave up on (`max_deliver` reached).
pub(crate) struct Dead {
    pub(crate) message: StreamMessage,
    pub(crate) deliveries: u32,
}

/// What one delivery pass did.
#[derive(Default)]
pub(crate) struct Pass {
    pub(crate) dead: Vec<Dead>,
    /// More records are there but the pass stopped (turn budget): run again.
    pub(crate) more: bool,
}

pub(crate) struct Cursor {
    pub(crate) config: Arc<CursorConfig>,
    /// The next offset to read.
    next: u64,
    pending: BTreeMap<u64, Pending>,
    due: BTreeSet<(Instant, u64)>,
    assigned: Option<Assignment>,
    /// The newest assignment generation applied (older ones arriving late are ignored).
    generation: u64,
    /// The position changed since it was last persisted.
    pub(crate) dirty: bool,
    skipped: Option<Range<u64>>,
}

impl Cursor {
    /// A cursor at `next` with `pending` delivered before (a restart: each is due at
    /// once and counted as delivered once).
    pub(crate) fn new(config: Arc<CursorConfig>, next: u64, pending: &[u64]) -> Self {
        let now = Instant::now();
        let mut cursor = Self {
            config,
            next,
            pending: BTreeMap::new(),
            due: BTreeSet::new(),
            assigned: None,
            generation: 0,
            dirty: false,
            skipped: None,
        };
        for &offset in pending.iter().filter(|&&o| o < next) {
            cursor.set_pending(offset, Pending::new(1, now, false));
        }
        cursor
    }

    pub(crate) fn next_offset(&self) -> u64 {
        self.next
    }

    pub(crate) fn pending_count(&self) -> usize {
        self.pending.len()
    }

    pub(crate) fn assigned_member(&self) -> Option<&Arc<Member>> {
        self.assigned.as_ref().map(|a| &a.member)
    }

    /// The earliest time after `now` a pending record is due again, if the partition
    /// is assigned. (Records due already wait for credit, whose release wakes the
    /// shard, or for the next turn; a timer for them would only spin.)
    pub(crate) fn next_due(&self, now: Instant) -> Option<Instant> {
        self.assigned.as_ref()?;
        let after = (Bound::Excluded((now, u64::MAX)), Bound::Unbounded);
        self.due.range(after).next().map(|(at, _)| *at)
    }

    fn set_pending(&mut self, offset: u64, entry: Pending) {
        if let Some(old) = self.pending.insert(offset, entry) {
            self.due.remove(&(old.due, offset));
        }
        self.due.insert((entry.due, offset));
    }

    fn remove_pending(&mut self, offset: u64) -> Option<Pending> {
        let entry = self.pending.remove(&offset)?;
        self.due.remove(&(entry.due, offset));
        if entry.credit {
            if let Some(a) = &self.assigned {
                a.member.release(1);
            }
        }
        self.dirty = true;
        Some(entry)
    }

    /// Gives the partition to `next` (or to nobody) under `generation`; returns false
    /// for an assignment older than the one in force. What the old member had in
    /// flight is due again at once, for the new member, and its credit released.
    pub(crate) fn assign(
        &mut self,
        partition: u32,
        next: Option<Assignment>,
        generation: u64,
    ) -> bool {
        if generation <= self.generation {
            return false;
        }
        self.generation = generation;
        if let Some(old) = self.assigned.take() {
            old.member.revoke(partition, old.generation);
            let now = Instant::now();
            let held: Vec<(u64, Pending)> = self.pending.iter().map(|(o, p)| (*o, *p)).collect();
            let mut released = 0;
            for (offset, entry) in held {
                released += usize::from(entry.credit);
                self.set_pending(offset, Pending::new(entry.deliveries, now, false));
            }
            old.member.release(released);
        }
        if let Some(new) = &next {
            new.member.set_generation(partition, new.generation);
        }
        self.assigned = next;
        true
    }

    /// Applies an acknowledgement of `offset` delivered under `generation`.
    pub(crate) fn ack(
        &mut self,
        offset: u64,
        generation: u64,
        kind: AckKind,
    ) -> Result<(), StreamError> {
        match &self.assigned {
            Some(a) if a.generation == generation => {}
            _ => return Err(StreamError::Stale),
        }
        match kind {
            AckKind::Ack => {
                self.remove_pending(offset);
            }
            AckKind::Nak(delay) => {
                // It keeps its credit: a nak'd record still counts against
                // `max_ack_pending` until it is acked, so naks cannot grow the pending
                // set past the bound.
                let Some(entry) = self.pending.get(&offset).copied() else {
                    return Ok(());
                };
                let due = Instant::now() + delay.min(Duration::from_secs(365 * 24 * 3600));
                self.set_pending(offset, Pending { due, ..entry });
            }
        }
        Ok(())
    }

    /// Delivers what it can to the assigned member: records due again first, then new
    /// ones, each for a credit. `shard` is this shard (to be woken when credit frees).
    pub(crate) fn deliver<D: StorageDir>(
        &mut self,
        log: &PartitionLog<D>,
        stream: &Arc<str>,
        partition: u32,
        shard: usize,
    ) -> Result<Pass, StorageError> {
        let mut pass = Pass::default();
        let Some(member) = self.assigned.as_ref().map(|a| a.member.clone()) else {
            return Ok(pass);
        };
        self.skip_removed(log);
        let mut budget = DELIVER_PER_TURN;
        let delivered_before = budget;
        self.redeliver(log, stream, partition, shard, &mut budget, &mut pass)?;
        while budget > 0 && self.next < log.stored_end() {
            let bytes = log.read(self.next, READ_BYTES)?;
            if bytes.is_empty() {
                break;
            }
            if !self.deliver_batches(&bytes, stream, partition, shard, &mut budget)? {
                break; // out of credit
            }
        }
        pass.more = budget == 0;
        if budget != delivered_before {
            member.notify();
        }
        Ok(pass)
    }

    /// Moves past records retention removed before they were read, with a notice on
    /// the next message.
    fn skip_removed<D: StorageDir>(&mut self, log: &PartitionLog<D>) {
        let first = log.first_offset();
        if self.next < first {
            tracing::warn!(
                from = self.next,
                to = first,
                "consumer skips records removed by retention"
            );
            let start = self.skipped.take().map_or(self.next, |r| r.start);
            self.skipped = Some(start..first);
            self.next = first;
            self.dirty = true;
        }
        let gone: Vec<u64> = self.pending.range(..first).map(|(o, _)| *o).collect();
        for offset in gone {
            self.remove_pending(offset);
        }
    }

    /// Delivers the records of `bytes` (whole batches) from `next`; false when the
    /// member has no credit left.
    fn deliver_batches(
        &mut self,
        bytes: &Bytes,
        stream: &Arc<str>,
        partition: u32,
        shard: usize,
        budget: &mut usize,
    ) -> Result<bool, StorageError> {
        let due = Instant::now() + self.config.ack_wait; // one clock read per read
        let mut at = 0;
        while at < bytes.len() {
            let len = peek_header(&bytes[at..])
                .map_err(StorageError::from)?
                .batch_len_bytes();
            let batch = bytes.slice(at..at + len);
            at += len;
            let view = decode_batch(&batch).map_err(StorageError::from)?;
            for record in view.records() {
                if record.offset < self.next {
                    continue;
                }
                if *budget == 0 {
                    return Ok(true);
                }
                if !self.wanted(&record) {
                    self.next = record.offset + 1;
                    self.dirty = true;
                    continue;
                }
                if !self.take_credit(shard) {
                    return Ok(false);
                }
                let message = StreamMessage::from_record(stream, partition, &batch, &record);
                self.push(message, 1, shard, due);
                self.next = record.offset + 1;
                self.dirty = true;
                *budget -= 1;
            }
        }
        Ok(true)
    }

    fn wanted(&self, record: &RecordView<'_>) -> bool {
        let Some(filter) = &self.config.filter else {
            return true;
        };
        let subject = record
            .headers()
            .find(|(name, _)| *name == SUBJECT_HEADER)
            .map(|(_, value)| value);
        subject
            .and_then(|s| std::str::from_utf8(s).ok())
            .is_some_and(|s| naive_match(filter, s))
    }

    fn take_credit(&self, shard: usize) -> bool {
        self.assigned
            .as_ref()
            .is_some_and(|a| a.member.reserve(shard))
    }

    /// Hands `message` (its credit taken) to the member, recording it as pending.
    fn push(&mut self, mut message: StreamMessage, deliveries: u32, shard: usize, due: Instant) {
        let Some(a) = &self.assigned else { return };
        message.delivery_count = deliveries;
        message.generation = a.generation;
        message.skipped = self.skipped.take();
        let explicit = self.config.ack == AckPolicy::Explicit;
        if explicit {
            message.route = Some(a.route.clone());
        }
        let offset = message.offset;
        let seq = a.member.push(shard, message);
        if explicit {
            let entry = Pending {
                seq,
                ..Pending::new(deliveries, due, true)
            };
            self.set_pending(offset, entry);
        }
    }

    /// Delivers again the pending records that are due, lowest offset first; those past
    /// `max_deliver` go to `pass.dead` instead.
    fn redeliver<D: StorageDir>(
        &mut self,
        log: &PartitionLog<D>,
        stream: &Arc<str>,
        partition: u32,
        shard: usize,
        budget: &mut usize,
        pass: &mut Pass,
    ) -> Result<(), StorageError> {
        let now = Instant::now();
        let mut due: Vec<u64> = self
            .due
            .range(..=(now, u64::MAX))
            .map(|(_, offset)| *offset)
            .collect();
        due.sort_unstable();
        for offset in due {
            let Some(entry) = self.pending.get(&offset).copied() else {
                continue;
            };
            if self.still_buffered(&entry, shard) {
                // The application has not even taken the last copy: wait again
                // rather than stack another one behind it.
                let due = now + self.config.ack_wait;
                self.set_pending(offset, Pending { due, ..entry });
                continue;
            }
            let Some(message) = read_one(log, stream, partition, offset)? else {
                self.remove_pending(offset); // removed by retention meanwhile
                continue;
            };
            if self
                .config
                .max_deliver
                .is_some_and(|max| entry.deliveries >= max)
            {
                self.remove_pending(offset);
                let deliveries = entry.deliveries;
                pass.dead.push(Dead {
                    message,
                    deliveries,
                });
                continue;
            }
            if *budget == 0 || (!entry.credit && !self.take_credit(shard)) {
                return Ok(());
            }
            let due = now + self.config.ack_wait;
            self.push(message, entry.deliveries.saturating_add(1), shard, due);
            *budget -= 1;
        }
        Ok(())
    }

    fn still_buffered(&self, entry: &Pending, shard: usize) -> bool {
        entry.seq != 0
            && self
                .assigned
                .as_ref()
                .is_some_and(|a| !a.member.was_taken(shard, entry.seq))
    }

    /// The position as persisted: the next offset and the offsets pending.
    pub(crate) fn encode_position(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(12 + 8 * self.pending.len());
        out.extend_from_slice(&self.next.to_le_bytes());
        out.extend_from_slice(&(self.pending.len() as u32).to_le_bytes());
        for offset in self.pending.keys() {
            out.extend_from_slice(&offset.to_le_bytes());
        }
        out
    }

    /// Releases every credit held (the consumer or its partition goes away).
    pub(crate) fn release_all(&mut self, partition: u32) {
        let held = self.pending.values().filter(|p| p.credit).count();
        if let Some(a) = self.assigned.take() {
            a.member.release(held);
            a.member.revoke(partition, a.generation);
        }
        for entry in self.pending.values_mut() {
            entry.credit = false;
        }
    }
}

/// Reads a position written by `encode_position`, checking every length first.
pub(crate) fn decode_position(bytes: &[u8], pending_max: usize) -> Option<(u64, Vec<u64>)> {
    let next = u64::from_le_bytes(bytes.get(..8)?.try_into().ok()?);
    let count = u32::from_le_bytes(bytes.get(8..12)?.try_into().ok()?) as usize;
    if count > pending_max || bytes.len() != 12 + 8 * count {
        return None;
    }
    let pending = bytes[12..]
        .chunks_exact(8)
        .map(|c| u64::from_le_bytes(c.try_into().unwrap_or([0; 8])))
        .collect();
    Some((next, pending))
}

/// The record at `offset`, read on its own (a redelivery).
fn read_one<D: StorageDir>(
    log: &PartitionLog<D>,
    stream: &Arc<str>,
    partition: u32,
    offset: u64,
) -> Result<Option<StreamMessage>, StorageError> {
    let bytes = log.read(offset, 1)?;
    if bytes.is_empty() {
        return Ok(None);
    }
    let len = peek_header(&bytes)
        .map_err(StorageError::from)?
        .batch_len_bytes();
    let batch = bytes.slice(..len.min(bytes.len()));
    let view = decode_batch(&batch).map_err(StorageError::from)?;
    let found = view
        .records()
        .find(|r| r.offset == offset)
        .map(|r| StreamMessage::from_record(stream, partition, &batch, &r));
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_round_trip_and_bad_lengths_are_refused() {
        let config = Arc::new(CursorConfig {
            ack: AckPolicy::Explicit,
            ack_wait: Duration::from_secs(1),
            max_deliver: None,
            filter: None,
            durable: true,
        });
        let cursor = Cursor::new(config, 10, &[3, 7, 12]);
        let bytes = cursor.encode_position();
        assert_eq!(decode_position(&bytes, 100), Some((10, vec![3, 7])));
        assert_eq!(decode_position(&bytes, 1), None);
        assert_eq!(decode_position(&bytes[..bytes.len() - 1], 100), None);
        assert_eq!(decode_position(&[], 100), None);
    }
}
