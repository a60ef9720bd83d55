//! Bounded memory of the message ids a [`Listener`](crate::Listener) handed out.
//!
//! The daemon redelivers every message the app has not acked whenever the app
//! (re)connects, and after a daemon crash it may redeliver one whose ack it
//! never committed. The listener therefore remembers what it already gave the
//! app and whether the app acked it, so the app sees each message once.
//!
//! Memory is bounded: the oldest ids are forgotten first (FIFO). The default of
//! 100,000 ids is far more than can be pending at once (the daemon redelivers
//! only unacked messages), at a few MiB worst case.

use std::collections::{HashMap, VecDeque};

/// What the listener knows about an id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Seen {
    /// Never handed out (or forgotten).
    New,
    /// Handed to the app, not acked yet.
    HandedOut,
    /// Handed out and acked by the app.
    Acked,
}

/// FIFO-bounded map of id -> acked.
#[derive(Debug)]
pub(crate) struct SeenIds {
    acked: HashMap<String, bool>,
    order: VecDeque<String>,
    capacity: usize,
}

impl SeenIds {
    /// Remembers at most `capacity` ids (at least 1).
    pub(crate) fn new(capacity: usize) -> Self {
        SeenIds {
            acked: HashMap::new(),
            order: VecDeque::new(),
            capacity: capacity.max(1),
        }
    }

    /// What is known about `id`.
    pub(crate) fn get(&self, id: &str) -> Seen {
        match self.acked.get(id) {
            None => Seen::New,
            Some(false) => Seen::HandedOut,
            Some(true) => Seen::Acked,
        }
    }

    /// Records that `id` was handed to the app.
    pub(crate) fn handed_out(&mut self, id: &str) {
        self.insert(id, false);
    }

    /// Records that the app acked `id` (also for ids it got some other way: a
    /// redelivery of it must then be re-acked, not shown).
    pub(crate) fn acked(&mut self, id: &str) {
        self.insert(id, true);
    }

    fn insert(&mut self, id: &str, acked: bool) {
        if let Some(v) = self.acked.get_mut(id) {
            // Only ever moves forward: an acked id stays acked.
            *v |= acked;
            return;
        }
        while self.order.len() >= self.capacity {
            if let Some(old) = self.order.pop_front() {
                self.acked.remove(&old);
            }
        }
        self.order.push_back(id.to_owned());
        self.acked.insert(id.to_owned(), acked);
    }

    /// Number of ids remembered.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.order.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_move_forward() {
        let mut s = SeenIds::new(10);
        assert_eq!(s.get("a"), Seen::New);
        s.handed_out("a");
        assert_eq!(s.get("a"), Seen::HandedOut);
        s.acked("a");
        assert_eq!(s.get("a"), Seen::Acked);
        s.handed_out("a");
        assert_eq!(s.get("a"), Seen::Acked);
        s.acked("b");
        assert_eq!(s.get("b"), Seen::Acked);
        assert_eq!(s.len(), 2);
    }

    #[test]
    fn forgets_oldest_beyond_capacity() {
        let mut s = SeenIds::new(3);
        for id in ["a", "b", "c", "d"] {
            s.handed_out(id);
        }
        assert_eq!(s.len(), 3);
        assert_eq!(s.get("a"), Seen::New);
        assert_eq!(s.get("d"), Seen::HandedOut);
    }
}
