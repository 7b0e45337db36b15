//! What a run sent and what came back, message by message, and the verdict.
//!
//! Owns: `SeqSet` (one bit per (lane, sequence): what the broker accepted, or what a
//! consumer got), `Tracker` (a consumer's receipts, checked as they come: duplicates,
//! order within a lane, routing), and `Tally` (a destination's trackers merged and
//! compared with what it should have got). Never: measures time or decides when a run
//! stops; a tracker only counts and compares.

use super::payload::LANES_MAX;

/// One bit per sequence number, per lane.
#[derive(Debug, Clone, Default)]
pub struct SeqSet {
    lanes: Vec<Vec<u64>>,
    count: u64,
}

impl SeqSet {
    /// Adds `seq` to `lane`; false if it was there already.
    pub fn insert(&mut self, lane: u16, seq: u64) -> bool {
        let lane = usize::from(lane);
        debug_assert!(lane < LANES_MAX);
        if self.lanes.len() <= lane {
            self.lanes.resize_with(lane + 1, Vec::new);
        }
        let bits = &mut self.lanes[lane];
        // Bounded: a sequence number is below `options::COUNT_MAX`.
        let word = (seq / 64) as usize;
        if bits.len() <= word {
            bits.resize(word + 1, 0);
        }
        let bit = 1u64 << (seq % 64);
        let fresh = bits[word] & bit == 0;
        bits[word] |= bit;
        self.count += u64::from(fresh);
        fresh
    }

    /// Sequence numbers held, all lanes.
    pub fn len(&self) -> u64 {
        self.count
    }

    /// The set `0..counts[lane]` in every lane.
    pub fn ranges(counts: &[u64]) -> SeqSet {
        let mut set = SeqSet::default();
        for (lane, &n) in counts.iter().enumerate() {
            for seq in 0..n {
                set.insert(lane as u16, seq);
            }
        }
        set
    }

    /// Members per lane.
    pub fn lane_lens(&self) -> Vec<u64> {
        self.lanes
            .iter()
            .map(|bits| bits.iter().map(|w| u64::from(w.count_ones())).sum())
            .collect()
    }

    /// Adds every member of `other`; returns how many were here already.
    pub fn merge(&mut self, other: &SeqSet) -> u64 {
        let mut overlap = 0;
        if self.lanes.len() < other.lanes.len() {
            self.lanes.resize_with(other.lanes.len(), Vec::new);
        }
        for (mine, theirs) in self.lanes.iter_mut().zip(&other.lanes) {
            if mine.len() < theirs.len() {
                mine.resize(theirs.len(), 0);
            }
            for (a, b) in mine.iter_mut().zip(theirs) {
                overlap += u64::from((*a & *b).count_ones());
                self.count += u64::from((*b & !*a).count_ones());
                *a |= *b;
            }
        }
        overlap
    }

    /// The members of `self` matching `keep`, per (lane, seq).
    pub fn filtered(&self, keep: impl Fn(u16, u64) -> bool) -> SeqSet {
        let mut out = SeqSet::default();
        for (lane, bits) in self.lanes.iter().enumerate() {
            let lane = lane as u16;
            for (w, word) in bits.iter().enumerate() {
                let mut rest = *word;
                while rest != 0 {
                    let seq = w as u64 * 64 + u64::from(rest.trailing_zeros());
                    rest &= rest - 1;
                    if keep(lane, seq) {
                        out.insert(lane, seq);
                    }
                }
            }
        }
        out
    }

    /// (members of `self` missing from `got`, members of `got` not in `self`).
    pub fn compare(&self, got: &SeqSet) -> (u64, u64) {
        let lanes = self.lanes.len().max(got.lanes.len());
        let empty = Vec::new();
        let (mut missing, mut extra) = (0, 0);
        for lane in 0..lanes {
            let want = self.lanes.get(lane).unwrap_or(&empty);
            let have = got.lanes.get(lane).unwrap_or(&empty);
            for w in 0..want.len().max(have.len()) {
                let a = want.get(w).copied().unwrap_or(0);
                let b = have.get(w).copied().unwrap_or(0);
                missing += u64::from((a & !b).count_ones());
                extra += u64::from((b & !a).count_ones());
            }
        }
        (missing, extra)
    }
}

/// One consumer's receipts, checked as they come.
#[derive(Debug, Clone)]
pub struct Tracker {
    got: SeqSet,
    /// Per lane: the last sequence number received, when order is checked.
    last: Option<Vec<Option<u64>>>,
    /// Duplicates that the broker flagged as redeliveries (allowed: at least once).
    pub redelivered: u64,
    /// Duplicates not flagged as redeliveries.
    pub duplicates: u64,
    /// Receipts that came before an earlier-sent one of their lane.
    pub out_of_order: u64,
    /// Receipts this consumer should not have got.
    pub misrouted: u64,
    /// The first problem seen, for the report.
    pub first_problem: Option<String>,
}

impl Tracker {
    /// A tracker; `ordered`: each lane must arrive in sequence order.
    pub fn new(ordered: bool) -> Self {
        Self {
            got: SeqSet::default(),
            last: ordered.then(Vec::new),
            redelivered: 0,
            duplicates: 0,
            out_of_order: 0,
            misrouted: 0,
            first_problem: None,
        }
    }

    fn problem(&mut self, what: impl FnOnce() -> String) {
        if self.first_problem.is_none() {
            self.first_problem = Some(what());
        }
    }

    /// Counts one receipt; true if it is new (the first receipt of this message).
    pub fn take(&mut self, lane: u16, seq: u64, redelivered: bool) -> bool {
        if !self.got.insert(lane, seq) {
            match redelivered {
                true => self.redelivered += 1,
                false => {
                    self.duplicates += 1;
                    self.problem(|| format!("lane {lane} seq {seq} received twice"));
                }
            }
            return false;
        }
        if let Some(last) = &mut self.last {
            let lane = usize::from(lane);
            if last.len() <= lane {
                last.resize(lane + 1, None);
            }
            let before = last[lane];
            last[lane] = Some(seq);
            if let Some(before) = before.filter(|&b| seq < b) {
                self.out_of_order += 1;
                self.problem(|| format!("lane {lane} seq {seq} received after seq {before}"));
            }
        }
        true
    }

    /// A receipt that should not have come here at all.
    pub fn misroute(&mut self, what: impl FnOnce() -> String) {
        self.misrouted += 1;
        self.problem(what);
    }
}

/// The verdict's figures, summed over destinations.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tally {
    /// Completions expected.
    pub expected: u64,
    /// Distinct completions received.
    pub received: u64,
    /// Expected and never received.
    pub lost: u64,
    /// Received more than once without a redelivery flag (or by two consumers).
    pub duplicates: u64,
    /// Received out of the promised order.
    pub out_of_order: u64,
    /// Received where it should not go, or never sent.
    pub misrouted: u64,
    /// Messages subscriptions dropped (at most once).
    pub dropped: u64,
    /// At-most-once loss is reported, not failed (`--allow-loss`).
    pub loss_allowed: bool,
    /// Why it failed, one line per problem.
    pub failures: Vec<String>,
}

impl Tally {
    /// Adds destination `name`: its consumers' trackers against `expected`.
    pub fn destination(&mut self, name: &str, expected: &SeqSet, trackers: &[Tracker]) {
        let mut got = SeqSet::default();
        let mut shared = 0;
        for tracker in trackers {
            shared += got.merge(&tracker.got);
            self.duplicates += tracker.duplicates;
            self.out_of_order += tracker.out_of_order;
            self.misrouted += tracker.misrouted;
            if let Some(problem) = &tracker.first_problem {
                self.failures.push(format!("{name}: {problem}"));
            }
        }
        let (lost, extra) = expected.compare(&got);
        self.expected += expected.len();
        self.received += got.len();
        self.lost += lost;
        self.misrouted += extra;
        self.duplicates += shared;
        if shared > 0 {
            self.failures.push(format!(
                "{name}: {shared} messages delivered to two consumers"
            ));
        }
        if lost > 0 && !self.loss_allowed {
            let of = expected.len();
            self.failures.push(format!("{name}: {lost} of {of} lost"));
        }
        if extra > 0 {
            self.failures.push(format!(
                "{name}: {extra} received that were never sent here"
            ));
        }
    }

    /// Adds a failure found outside the trackers.
    pub fn fail(&mut self, why: String) {
        self.failures.push(why);
    }

    /// Whether everything that was expected came, once, in order, where it belonged.
    pub fn passed(&self) -> bool {
        self.failures.is_empty()
            && (self.lost == 0 || self.loss_allowed)
            && self.duplicates == 0
            && self.out_of_order == 0
            && self.misrouted == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sent(lanes: u16, per_lane: u64) -> SeqSet {
        let mut set = SeqSet::default();
        for lane in 0..lanes {
            for seq in 0..per_lane {
                set.insert(lane, seq);
            }
        }
        set
    }

    #[test]
    fn complete_ordered_receipt_passes() {
        let mut tracker = Tracker::new(true);
        for seq in 0..100 {
            assert!(tracker.take(0, seq, false));
        }
        let mut tally = Tally::default();
        tally.destination("q", &sent(1, 100), &[tracker]);
        assert!(tally.passed(), "{tally:?}");
        assert_eq!(tally.received, 100);
    }

    #[test]
    fn a_lost_message_fails() {
        let mut tracker = Tracker::new(false);
        for seq in (0..100).filter(|s| *s != 42) {
            tracker.take(0, seq, false);
        }
        let mut tally = Tally::default();
        tally.destination("q", &sent(1, 100), &[tracker]);
        assert!(!tally.passed());
        assert_eq!(tally.lost, 1);
    }

    #[test]
    fn reorder_duplicate_and_double_delivery_fail() {
        let mut a = Tracker::new(true);
        a.take(0, 1, false);
        a.take(0, 0, false);
        a.take(0, 1, false);
        let mut b = Tracker::new(true);
        b.take(0, 1, false);
        let mut tally = Tally::default();
        tally.destination("q", &sent(1, 2), &[a, b]);
        assert_eq!((tally.out_of_order, tally.duplicates), (1, 2));
        assert!(!tally.passed());
    }

    #[test]
    fn redeliveries_are_allowed_and_unsent_messages_are_not() {
        let mut tracker = Tracker::new(false);
        tracker.take(0, 0, false);
        tracker.take(0, 0, true);
        tracker.take(3, 7, false);
        let mut tally = Tally::default();
        tally.destination("q", &sent(1, 1), &[tracker]);
        assert_eq!((tally.duplicates, tally.misrouted), (0, 1));
        assert!(!tally.passed());
    }

    #[test]
    fn filtered_keeps_the_matching_members() {
        let every = sent(2, 10);
        let even = every.filtered(|_, seq| seq % 2 == 0);
        assert_eq!(even.len(), 10);
        assert_eq!(every.compare(&even), (10, 0));
    }
}
