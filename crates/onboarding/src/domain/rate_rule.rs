//! A rate limit's rule: how many events per period. A value of its own, because settings read it
//! and the store enforces it, and neither should depend on the other.

use std::fmt;
use std::num::NonZeroU32;
use std::time::Duration;

/// A limit: at most `count` events per `period`, shared by every instance through the store.
/// (`count` cannot be zero; a zero `period` would allow everything, and settings refuse it.)
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateRule {
    pub count: NonZeroU32,
    pub period: Duration,
}

impl RateRule {
    /// The GCRA's emission interval: one event's share of the period. `count` events fit into
    /// an empty period at once, and one more each interval after that.
    pub fn interval(&self) -> Duration {
        self.period / self.count.get()
    }
}

impl fmt::Display for RateRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} per {} s", self.count, self.period.as_secs())
    }
}
