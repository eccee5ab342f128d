//! When to read the cluster's nodes again to keep their TLS names ([`NodeNames`]) current: a
//! failover, a new node or a node's new IP shows up in `CLUSTER SLOTS`, and a connection to an
//! address the table does not name fails verification. The cluster client follows the new
//! topology by itself, but its name table is fixed when it is built, so the link is rebuilt
//! with a new table. Checks run every [`CHECK_EVERY`] while the link is used, and sooner (at
//! most one per [`MIN_GAP`]) after a store operation failed, one at a time.

use std::sync::{Mutex, TryLockError};
use std::time::{Duration, Instant};

use super::node_names::NodeNames;

/// How often the nodes are read while the link is in use (one `CLUSTER SLOTS` per instance).
pub(super) const CHECK_EVERY: Duration = Duration::from_secs(10);
/// The shortest time between two checks, however many operations fail.
pub(super) const MIN_GAP: Duration = Duration::from_secs(1);

/// The names in use and the check schedule; shared by every request of the store.
#[derive(Default)]
pub(super) struct NamesWatch {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// `None` when the link needs no names (not TLS, an IP seed, or a single server).
    names: Option<NodeNames>,
    next_check: Option<Instant>,
    last_finished: Option<Instant>,
    running: bool,
}

impl NamesWatch {
    /// Records the names the current link was built with, and schedules the next check.
    pub(super) fn set(&self, names: NodeNames) {
        let mut state = self.lock();
        state.names = Some(names);
        state.next_check = Some(Instant::now() + CHECK_EVERY);
    }

    /// True when `advertised` needs no new names (or no names are kept at all).
    pub(super) fn covers(&self, advertised: &[(String, u16)]) -> bool {
        self.lock()
            .names
            .as_ref()
            .is_none_or(|names| names.covers(advertised))
    }

    /// True (and the check is then the caller's to run, then [`finished`](Self::finished))
    /// when names are kept, a check is due and none is running.
    pub(super) fn start_if_due(&self, now: Instant) -> bool {
        // Asked on every request: a lock another request holds means that one is looking.
        let mut state = match self.state.try_lock() {
            Ok(state) => state,
            Err(TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
            Err(TryLockError::WouldBlock) => return false,
        };
        let due = state.next_check.is_some_and(|at| now >= at);
        if state.names.is_none() || state.running || !due {
            return false;
        }
        state.running = true;
        state.next_check = Some(now + CHECK_EVERY);
        true
    }

    /// Ends a check started by [`start_if_due`](Self::start_if_due).
    pub(super) fn finished(&self, now: Instant) {
        let mut state = self.lock();
        state.running = false;
        state.last_finished = Some(now);
    }

    /// Brings the next check forward after a failed operation: a node the table does not name
    /// may be why.
    pub(super) fn hurry(&self, now: Instant) {
        let mut state = self.lock();
        if state.names.is_none() {
            return;
        }
        let earliest = state.last_finished.map_or(now, |at| at + MIN_GAP);
        state.next_check = Some(state.next_check.map_or(earliest, |at| at.min(earliest)));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding this lock leaves only a schedule behind: keep using it.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names() -> NodeNames {
        NodeNames::plan("cache.example", &[("10.0.0.5".to_owned(), 8501)]).expect("names")
    }

    #[test]
    fn nothing_is_checked_without_names() {
        let watch = NamesWatch::default();
        let now = Instant::now();
        watch.hurry(now);
        assert!(!watch.start_if_due(now + CHECK_EVERY * 2));
        assert!(watch.covers(&[("10.0.0.9".to_owned(), 1)]));
    }

    #[test]
    fn checks_come_every_period_one_at_a_time() {
        let watch = NamesWatch::default();
        let start = Instant::now();
        watch.set(names());
        assert!(!watch.start_if_due(start), "not due yet");
        let later = start + CHECK_EVERY + Duration::from_millis(1);
        assert!(watch.start_if_due(later));
        assert!(!watch.start_if_due(later), "one at a time");
        watch.finished(later);
        assert!(!watch.start_if_due(later + MIN_GAP));
        assert!(watch.start_if_due(later + CHECK_EVERY));
    }

    #[test]
    fn a_failure_brings_the_check_forward_but_not_closer_than_the_gap() {
        let watch = NamesWatch::default();
        let start = Instant::now();
        watch.set(names());
        watch.hurry(start);
        assert!(watch.start_if_due(start));
        watch.finished(start);
        watch.hurry(start);
        assert!(!watch.start_if_due(start), "a gap after the last check");
        assert!(watch.start_if_due(start + MIN_GAP));
    }

    #[test]
    fn new_addresses_are_not_covered() {
        let watch = NamesWatch::default();
        watch.set(names());
        assert!(watch.covers(&[("10.0.0.5".to_owned(), 8501)]));
        assert!(!watch.covers(&[("10.0.0.6".to_owned(), 8502)]));
    }
}
