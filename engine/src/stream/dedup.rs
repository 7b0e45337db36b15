//! The deduplication window of one partition: which `Msg-Id`s were stored recently, at
//! which offset, and which are being stored right now.
//!
//! Owns: the id → offset map, its expiry in arrival order, and the publishes that wait
//! for an id in flight. Never: answers "duplicate" with an offset that was not stored
//! (a duplicate of an id in flight waits for the first append's outcome).

use std::collections::hash_map::Entry;
use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use bytes::Bytes;

/// What the window says about an id.
#[derive(Debug)]
pub(crate) enum Seen {
    /// First time: the caller stores the record and must `stored` or `failed` it.
    New,
    /// Stored within the window, at this offset.
    Stored(u64),
    /// Being stored by an earlier publish: the waiter is kept until it settles.
    InFlight,
}

enum State<W> {
    InFlight(Vec<W>),
    Stored(u64),
}

struct Remembered<W> {
    state: State<W>,
    at_ms: i64,
}

/// A partition's recent ids. `W` is what waits for an id in flight.
pub(crate) struct Dedup<W> {
    window_ms: i64,
    ids: HashMap<Bytes, Remembered<W>>,
    /// Stored ids in the order they were stored, for expiry.
    order: VecDeque<(i64, Bytes)>,
}

impl<W> Dedup<W> {
    pub(crate) fn new(window: Duration) -> Self {
        Self {
            window_ms: i64::try_from(window.as_millis()).unwrap_or(i64::MAX),
            ids: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    pub(crate) fn enabled(&self) -> bool {
        self.window_ms > 0
    }

    pub(crate) fn set_window(&mut self, window: Duration) {
        self.window_ms = i64::try_from(window.as_millis()).unwrap_or(i64::MAX);
    }

    /// The window in milliseconds.
    pub(crate) fn window_ms(&self) -> i64 {
        self.window_ms
    }

    /// Looks `id` up; `New` marks it in flight, `InFlight` keeps `waiter`.
    pub(crate) fn check(&mut self, id: &Bytes, now_ms: i64, waiter: W) -> Seen {
        match self.ids.entry(id.clone()) {
            Entry::Vacant(slot) => {
                slot.insert(Remembered {
                    state: State::InFlight(Vec::new()),
                    at_ms: now_ms,
                });
                Seen::New
            }
            Entry::Occupied(mut slot) => match &mut slot.get_mut().state {
                State::Stored(offset) => Seen::Stored(*offset),
                State::InFlight(waiters) => {
                    waiters.push(waiter);
                    Seen::InFlight
                }
            },
        }
    }

    /// `id` was stored at `offset` at `at_ms`: returns the waiters to answer with it.
    pub(crate) fn stored(&mut self, id: &Bytes, offset: u64, at_ms: i64) -> Vec<W> {
        let Some(entry) = self.ids.get_mut(id) else {
            return Vec::new();
        };
        let state = std::mem::replace(&mut entry.state, State::Stored(offset));
        entry.at_ms = at_ms;
        self.order.push_back((at_ms, id.clone()));
        match state {
            State::InFlight(waiters) => waiters,
            State::Stored(_) => Vec::new(),
        }
    }

    /// Storing `id` failed: forgets it and returns its waiters (they failed too).
    pub(crate) fn failed(&mut self, id: &Bytes) -> Vec<W> {
        match self.ids.remove(id) {
            Some(Remembered {
                state: State::InFlight(waiters),
                ..
            }) => waiters,
            Some(stored) => {
                self.ids.insert(id.clone(), stored);
                Vec::new()
            }
            None => Vec::new(),
        }
    }

    /// Remembers a stored id found while rebuilding the window from the log.
    pub(crate) fn remember(&mut self, id: Bytes, offset: u64, at_ms: i64) {
        self.order.push_back((at_ms, id.clone()));
        self.ids.insert(
            id,
            Remembered {
                state: State::Stored(offset),
                at_ms,
            },
        );
    }

    /// Forgets ids stored before the window (`now_ms - window`).
    pub(crate) fn expire(&mut self, now_ms: i64) {
        let cutoff = now_ms.saturating_sub(self.window_ms);
        while let Some((at, _)) = self.order.front() {
            if *at >= cutoff {
                break;
            }
            if let Some((at, id)) = self.order.pop_front() {
                // Only if this is still the entry's time (ids are not reused, but an
                // id that failed and was stored again has a later one).
                if self
                    .ids
                    .get(&id)
                    .is_some_and(|e| e.at_ms == at && matches!(e.state, State::Stored(_)))
                {
                    self.ids.remove(&id);
                }
            }
        }
    }

    /// Ids remembered (stored or in flight).
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.ids.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicates_wait_for_the_first_and_expire_after_the_window() {
        let mut d: Dedup<u32> = Dedup::new(Duration::from_millis(100));
        let id = Bytes::from_static(b"a");
        assert!(matches!(d.check(&id, 0, 1), Seen::New));
        assert!(matches!(d.check(&id, 1, 2), Seen::InFlight));
        assert_eq!(d.stored(&id, 7, 5), vec![2]);
        assert!(matches!(d.check(&id, 50, 3), Seen::Stored(7)));
        d.expire(104);
        assert!(matches!(d.check(&id, 104, 3), Seen::Stored(7)));
        d.expire(106);
        assert!(matches!(d.check(&id, 106, 4), Seen::New));
        assert_eq!(d.failed(&id), Vec::<u32>::new());
        assert_eq!(d.len(), 0);
    }
}
