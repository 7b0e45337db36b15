//! Requests waiting for their reply, and the expiry timers that end them: one table,
//! kept by each shard for the requests made there and by direct delivery for the
//! requests threads make (`direct.rs`).
//!
//! Owns: request numbers, each waiting request's callback and deadline, and which
//! expiry timers are armed. Never: arms a timer itself (it says when one is needed: the
//! owner arms it on a shard), or calls a callback (it hands them back to be called
//! outside whatever lock or borrow holds the table).
//!
//! One timer at a time covers the earliest deadline: a request arms one only when its
//! deadline comes before every armed one, and a timer that fires arms the next only if
//! no armed timer fires by then. Timers cannot be cancelled, so steady traffic with one
//! timeout arms about one timer per timeout, not one per request.

use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap, HashMap};
use std::time::{Duration, Instant};

/// The longest a request waits: a timeout past what `Instant` can hold means "no
/// timeout", a year.
const TIMEOUT_MAX: Duration = Duration::from_secs(365 * 24 * 3600);

/// The requests of one owner that wait for a reply; `D` is what runs when one ends.
pub(crate) struct Waiting<D> {
    next: u64,
    callbacks: HashMap<u64, D>,
    /// Deadlines, earliest first; entries of answered requests are skipped (and
    /// compacted away once they outnumber the waiting ones).
    deadlines: BinaryHeap<Reverse<(Instant, u64)>>,
    /// Deadlines of the expiry timers armed now.
    armed: BTreeSet<Instant>,
}

impl<D> Default for Waiting<D> {
    fn default() -> Self {
        Self {
            next: 0,
            callbacks: HashMap::new(),
            deadlines: BinaryHeap::new(),
            armed: BTreeSet::new(),
        }
    }
}

impl<D> Waiting<D> {
    /// A fresh request number (from 1).
    pub(crate) fn next_seq(&mut self) -> u64 {
        self.next += 1;
        self.next
    }

    /// Lets request `seq` wait `timeout` from now for `done`. Returns the deadline to
    /// arm an expiry timer for, when no armed one fires by then (it is recorded as
    /// armed: if arming fails, call `drain`).
    pub(crate) fn insert(&mut self, seq: u64, timeout: Duration, done: D) -> Option<Instant> {
        let deadline = Instant::now() + timeout.min(TIMEOUT_MAX);
        self.callbacks.insert(seq, done);
        self.deadlines.push(Reverse((deadline, seq)));
        if self.deadlines.len() > 2 * self.callbacks.len() + 64 {
            let callbacks = &self.callbacks;
            self.deadlines
                .retain(|Reverse((_, seq))| callbacks.contains_key(seq));
        }
        self.arm_if_first(deadline)
    }

    /// Undoes `insert` when the expiry timer it asked for (`armed`) could not be armed:
    /// the request's callback, taken out, and that timer no longer counted.
    pub(crate) fn withdraw(&mut self, seq: u64, armed: Option<Instant>) -> Option<D> {
        if let Some(deadline) = armed {
            self.armed.remove(&deadline);
        }
        self.callbacks.remove(&seq)
    }

    /// Request `seq`'s callback, taken out, if it still waits.
    pub(crate) fn take(&mut self, seq: u64) -> Option<D> {
        self.callbacks.remove(&seq)
    }

    /// The timer armed for `armed_at` fired: returns the callbacks of the requests due
    /// now, and the deadline to arm the next timer for, if one is needed (recorded as
    /// armed, as `insert` does).
    pub(crate) fn expire(&mut self, armed_at: Instant) -> (Vec<D>, Option<Instant>) {
        let now = Instant::now();
        self.armed.remove(&armed_at);
        let mut due = Vec::new();
        while let Some(Reverse((deadline, seq))) = self.deadlines.peek().copied() {
            if deadline > now {
                break;
            }
            self.deadlines.pop();
            if let Some(done) = self.callbacks.remove(&seq) {
                due.push(done);
            }
        }
        let earliest = self
            .deadlines
            .peek()
            .map(|Reverse((deadline, _))| *deadline);
        let next = earliest.and_then(|deadline| self.arm_if_first(deadline));
        (due, next)
    }

    /// Every waiting callback, taken out, and no timer counted as armed: for when no
    /// timer can be armed (shutdown) and nothing may wait forever.
    pub(crate) fn drain(&mut self) -> Vec<D> {
        self.armed.clear();
        self.deadlines.clear();
        self.callbacks.drain().map(|(_, done)| done).collect()
    }

    fn arm_if_first(&mut self, deadline: Instant) -> Option<Instant> {
        let first = self.armed.first().is_none_or(|armed| deadline < *armed);
        if first {
            self.armed.insert(deadline);
        }
        first.then_some(deadline)
    }

    /// Expiry timers armed now (tests: they must not pile up).
    #[cfg(test)]
    fn armed(&self) -> usize {
        self.armed.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_timer_covers_later_deadlines_and_an_earlier_one_arms_its_own() {
        let mut waiting = Waiting::default();
        let long = waiting.next_seq();
        assert!(waiting
            .insert(long, Duration::from_secs(60), "long")
            .is_some());
        let later = waiting.next_seq();
        assert_eq!(
            waiting.insert(later, Duration::from_secs(120), "later"),
            None
        );
        let short = waiting.next_seq();
        let armed = waiting.insert(short, Duration::ZERO, "short").unwrap();
        assert_eq!(waiting.armed(), 2);
        // The short one's timer fires: it is due, and the long one's timer still
        // covers the rest, so nothing new is armed.
        let (due, next) = waiting.expire(armed);
        assert_eq!((due, next), (vec!["short"], None));
        assert_eq!(waiting.take(later), Some("later"));
        assert_eq!(waiting.take(later), None, "taken once");
        assert_eq!(waiting.drain(), vec!["long"]);
        assert_eq!(waiting.armed(), 0);
    }

    #[test]
    fn a_withdrawn_request_leaves_no_timer_counted_so_the_next_one_arms() {
        let mut waiting = Waiting::default();
        let first = waiting.next_seq();
        let armed = waiting.insert(first, Duration::from_secs(60), "first");
        assert_eq!(waiting.withdraw(first, armed), Some("first"));
        assert_eq!(waiting.armed(), 0);
        let second = waiting.next_seq();
        assert!(waiting
            .insert(second, Duration::from_secs(60), "second")
            .is_some());
    }

    #[test]
    fn a_timer_that_fires_before_anything_is_due_is_armed_again() {
        let mut waiting = Waiting::default();
        let seq = waiting.next_seq();
        let deadline = waiting.insert(seq, Duration::from_secs(60), ()).unwrap();
        // Fired with nothing due yet (the clock has not reached the deadline): the
        // request keeps waiting and a timer is armed for it again.
        let (due, next) = waiting.expire(deadline);
        assert!(due.is_empty());
        assert_eq!(next, Some(deadline));
        assert_eq!(waiting.armed(), 1);
    }

    #[test]
    fn answered_requests_do_not_pile_up_deadlines() {
        let mut waiting = Waiting::default();
        for _ in 0..10_000 {
            let seq = waiting.next_seq();
            waiting.insert(seq, Duration::from_secs(60), ());
            waiting.take(seq);
        }
        assert!(
            waiting.deadlines.len() <= 64 + 2,
            "{}",
            waiting.deadlines.len()
        );
        assert_eq!(waiting.armed(), 1);
    }
}
