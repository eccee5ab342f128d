//! How fast to send when no shared limit is configured, and how long to wait between two tries.
//!
//! [`Pacer`]: one per process. A provider's throttle (a 4xx such as `451 4.7.0`) slows the whole
//! process down, not just the message it hit: the minimum interval between two sends grows by
//! half (once per round of sends: the throttles of sends already under way, or following within
//! four intervals while the provider's window still counts the sends before, are the same news),
//! and each success shortens it by a sixteenth, so throughput settles near the provider's rate
//! instead of every message retrying on its own until Service Bus dead-letters it. (Against a
//! provider counting 10 a second in a sliding window, doubling with an eighth's relaxation
//! reached 0.66 of its rate; these factors, 0.7x and more: docs/BENCHMARKS.md.)
//!
//! [`Backoff`]: one per invocation, for retries inside its send window: exponential with jitter,
//! so invocations that failed together do not retry together.

use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use tokio::time::Instant;

/// The interval after a first throttle.
pub const THROTTLE_FLOOR: Duration = Duration::from_millis(50);
/// The longest interval: one send a minute (an Azure-managed domain on Azure Communication
/// Services allows 5 a minute by default).
pub const MAX_INTERVAL: Duration = Duration::from_secs(60);
/// Each success shortens the interval by this fraction of itself.
pub const RELAX_DIVISOR: u32 = 16;
/// A throttle lengthens the interval by this fraction of itself (half).
pub const RAISE_DIVISOR: u32 = 2;
/// Throttles within this many intervals of the last raise are the same news: the provider's
/// window still holds the sends that caused it.
pub const RAISE_COOLDOWN_INTERVALS: u32 = 4;
/// Below this the interval is dropped altogether (no pacing at all).
pub const NO_PACING_BELOW: Duration = Duration::from_millis(5);

/// When a send may go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Turn {
    /// Reserved: go after waiting this long.
    After(Duration),
    /// The next turn is further ahead than the caller may wait (by this much); nothing reserved.
    TooFar(Duration),
}

#[derive(Debug)]
struct PaceState {
    interval: Duration,
    /// The next free turn while pacing.
    next: Option<Instant>,
    /// When the interval last grew: throttles of sends reserved before it are old news.
    raised_at: Option<Instant>,
}

/// The process-wide adaptive pacer (see the module doc).
#[derive(Debug)]
pub struct Pacer {
    state: Mutex<PaceState>,
}

impl Default for Pacer {
    fn default() -> Self {
        Self {
            state: Mutex::new(PaceState {
                interval: Duration::ZERO,
                next: None,
                raised_at: None,
            }),
        }
    }
}

impl Pacer {
    /// A pacer that does not hold anything back until the first throttle.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, PaceState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The current minimum interval between two sends.
    pub fn interval(&self) -> Duration {
        self.lock().interval
    }

    /// Reserves a turn at most `max_wait` from now.
    pub fn reserve(&self, max_wait: Duration) -> Turn {
        let mut state = self.lock();
        if state.interval.is_zero() {
            return Turn::After(Duration::ZERO);
        }
        let now = Instant::now();
        let turn = state.next.map_or(now, |next| next.max(now));
        let wait = turn - now;
        if wait > max_wait {
            return Turn::TooFar(wait - max_wait);
        }
        state.next = Some(turn + state.interval);
        Turn::After(wait)
    }

    /// The provider throttled a send whose turn was reserved at `reserved_at`.
    pub fn throttled(&self, reserved_at: Instant) {
        let mut state = self.lock();
        let now = Instant::now();
        let cooldown = state.interval * RAISE_COOLDOWN_INTERVALS;
        if state
            .raised_at
            .is_some_and(|raised| reserved_at < raised || now < raised + cooldown)
        {
            return;
        }
        let raised = state.interval + state.interval / RAISE_DIVISOR;
        state.interval = raised.clamp(THROTTLE_FLOOR, MAX_INTERVAL);
        state.raised_at = Some(now);
        let pushed = now + state.interval;
        state.next = Some(state.next.map_or(pushed, |next| next.max(pushed)));
    }

    /// A send went through: shorten the interval a little.
    pub fn succeeded(&self) {
        let mut state = self.lock();
        if state.interval.is_zero() {
            return;
        }
        let relax = state.interval / RELAX_DIVISOR;
        state.interval -= relax;
        if state.interval < NO_PACING_BELOW {
            state.interval = Duration::ZERO;
            state.next = None;
        }
    }
}

/// The first retry pause of an invocation.
pub const FIRST_BACKOFF: Duration = Duration::from_millis(100);
/// The longest retry pause.
pub const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Exponential backoff with jitter: each pause is drawn between half and all of a bound that
/// doubles from [`FIRST_BACKOFF`] up to [`MAX_BACKOFF`].
#[derive(Debug, Clone)]
pub struct Backoff {
    bound: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            bound: FIRST_BACKOFF,
        }
    }
}

impl Backoff {
    /// A fresh backoff.
    pub fn new() -> Self {
        Self::default()
    }

    /// The next pause.
    pub fn next_pause(&mut self) -> Duration {
        let pause = self.bound.mul_f64(rand::random_range(0.5..=1.0));
        self.bound = (self.bound * 2).min(MAX_BACKOFF);
        pause
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FAR: Duration = Duration::from_secs(3600);

    #[tokio::test(start_paused = true)]
    async fn without_throttles_nothing_waits() {
        let pacer = Pacer::new();
        for _ in 0..100 {
            assert_eq!(pacer.reserve(FAR), Turn::After(Duration::ZERO));
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_throttle_spaces_every_later_send() {
        let pacer = Pacer::new();
        pacer.throttled(Instant::now());
        assert_eq!(pacer.interval(), THROTTLE_FLOOR);
        let waits: Vec<_> = (0..3).map(|_| pacer.reserve(FAR)).collect();
        assert_eq!(
            waits,
            vec![
                Turn::After(THROTTLE_FLOOR),
                Turn::After(THROTTLE_FLOOR * 2),
                Turn::After(THROTTLE_FLOOR * 3)
            ]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn throttles_of_sends_already_under_way_count_once() {
        let pacer = Pacer::new();
        let burst = Instant::now();
        tokio::time::advance(Duration::from_millis(1)).await;
        for _ in 0..10 {
            pacer.throttled(burst);
        }
        assert_eq!(pacer.interval(), THROTTLE_FLOOR);
        // Within four intervals of the raise, the provider's window still holds the burst.
        tokio::time::advance(THROTTLE_FLOOR * 2).await;
        pacer.throttled(Instant::now());
        assert_eq!(pacer.interval(), THROTTLE_FLOOR);
        tokio::time::advance(THROTTLE_FLOOR * 3).await;
        pacer.throttled(Instant::now());
        assert_eq!(pacer.interval(), THROTTLE_FLOOR * 3 / 2);
    }

    #[tokio::test(start_paused = true)]
    async fn successes_relax_the_interval_until_pacing_stops() {
        let pacer = Pacer::new();
        pacer.throttled(Instant::now());
        let mut successes = 0;
        while !pacer.interval().is_zero() {
            pacer.succeeded();
            successes += 1;
        }
        assert!((10..40).contains(&successes), "{successes}");
        assert_eq!(pacer.reserve(FAR), Turn::After(Duration::ZERO));
    }

    #[tokio::test(start_paused = true)]
    async fn a_turn_beyond_the_longest_wait_is_not_reserved() {
        let pacer = Pacer::new();
        while pacer.interval() < MAX_INTERVAL {
            tokio::time::advance(pacer.interval() * RAISE_COOLDOWN_INTERVALS).await;
            pacer.throttled(Instant::now());
        }
        assert_eq!(pacer.interval(), MAX_INTERVAL);
        assert!(matches!(
            pacer.reserve(Duration::from_secs(1)),
            Turn::TooFar(_)
        ));
    }

    /// Against a provider that takes one send per 200 ms and throttles the rest, the interval
    /// settles near 200 ms: within a factor of two either way after a while.
    #[tokio::test(start_paused = true)]
    async fn the_interval_settles_near_the_providers_rate() {
        let provider = Duration::from_millis(200);
        let pacer = Pacer::new();
        let mut last_accepted: Option<Instant> = None;
        for _ in 0..400 {
            let Turn::After(wait) = pacer.reserve(FAR) else {
                panic!("no turn")
            };
            let reserved = Instant::now();
            tokio::time::advance(wait.max(Duration::from_millis(1))).await;
            let now = Instant::now();
            if last_accepted.is_some_and(|t| now - t < provider) {
                pacer.throttled(reserved);
            } else {
                last_accepted = Some(now);
                pacer.succeeded();
            }
        }
        let interval = pacer.interval();
        assert!(
            interval >= provider / 2 && interval <= provider * 2,
            "{interval:?}"
        );
    }

    #[test]
    fn backoff_doubles_with_jitter_up_to_the_cap() {
        let mut backoff = Backoff::new();
        let first = backoff.next_pause();
        assert!(first >= FIRST_BACKOFF / 2 && first <= FIRST_BACKOFF);
        for _ in 0..20 {
            assert!(backoff.next_pause() <= MAX_BACKOFF);
        }
        assert!(backoff.next_pause() >= MAX_BACKOFF / 2);
    }
}
