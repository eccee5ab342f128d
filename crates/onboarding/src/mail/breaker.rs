//! A process-wide circuit breaker in front of the SMTP server. While the server is down, the
//! invocations riding the outage out do not each hammer it: after [`TRIP_AFTER`] failures in a
//! row the breaker opens; once its pause is over one invocation probes while the others wait for
//! that probe's outcome; a success closes it (everyone proceeds), a failure reopens it with the
//! pause doubled (with jitter) up to [`MAX_PAUSE`].

use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

/// Consecutive failures that open the breaker.
pub const TRIP_AFTER: u32 = 3;
/// The first pause once open.
pub const FIRST_PAUSE: Duration = Duration::from_millis(500);
/// The longest pause between two probes.
pub const MAX_PAUSE: Duration = Duration::from_secs(15);

#[derive(Debug, Clone, Copy, PartialEq)]
enum State {
    Closed { failures: u32 },
    Open { until: Instant, pause: Duration },
    Probing { pause: Duration },
}

/// The breaker; one per process, shared by every invocation.
#[derive(Debug)]
pub struct Breaker {
    state: Mutex<State>,
    changed: Notify,
}

impl Default for Breaker {
    fn default() -> Self {
        Self {
            state: Mutex::new(State::Closed { failures: 0 }),
            changed: Notify::new(),
        }
    }
}

/// Leave to try one send. Report how it went with [`Pass::healthy`] or [`Pass::down`]; a probe
/// dropped without a report (its invocation was cut) lets the next waiter probe at once.
#[derive(Debug)]
pub struct Pass<'a> {
    breaker: &'a Breaker,
    probe: bool,
    reported: bool,
}

impl Breaker {
    /// A closed breaker.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Each update is one assignment: a panic elsewhere cannot leave it half-written.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits until a send may be tried, or returns `None` at `deadline`.
    pub async fn admit(&self, deadline: Instant) -> Option<Pass<'_>> {
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            // Registered before the state is read, so no change between the two is missed.
            notified.as_mut().enable();
            let wake_at = {
                let mut state = self.lock();
                match *state {
                    State::Closed { .. } => return Some(self.pass(false)),
                    State::Open { until, pause } if Instant::now() >= until => {
                        *state = State::Probing { pause };
                        return Some(self.pass(true));
                    }
                    State::Open { until, .. } => until.min(deadline),
                    State::Probing { .. } => deadline,
                }
            };
            if Instant::now() >= deadline {
                return None;
            }
            tokio::select! {
                () = tokio::time::sleep_until(wake_at) => {}
                () = &mut notified => {}
            }
        }
    }

    fn pass(&self, probe: bool) -> Pass<'_> {
        Pass {
            breaker: self,
            probe,
            reported: false,
        }
    }

    fn set(&self, state: State) {
        *self.lock() = state;
        self.changed.notify_waiters();
    }

    /// True while sends are held back (for logs and tests).
    pub fn is_open(&self) -> bool {
        !matches!(*self.lock(), State::Closed { .. })
    }
}

impl Pass<'_> {
    /// The server answered (sent, refused a recipient, or throttled): it is up.
    pub fn healthy(mut self) {
        self.reported = true;
        self.breaker.set(State::Closed { failures: 0 });
    }

    /// The server could not be reached or refused us as a client.
    pub fn down(mut self) {
        self.reported = true;
        let mut state = self.breaker.lock();
        let next = match (*state, self.probe) {
            (State::Probing { pause }, true) => open_for((pause * 2).min(MAX_PAUSE)),
            (State::Closed { failures }, _) if failures + 1 >= TRIP_AFTER => open_for(FIRST_PAUSE),
            (State::Closed { failures }, _) => State::Closed {
                failures: failures + 1,
            },
            // Already open, or another probe is out: that one decides.
            (other, _) => other,
        };
        *state = next;
        drop(state);
        self.breaker.changed.notify_waiters();
    }
}

impl Drop for Pass<'_> {
    fn drop(&mut self) {
        if self.probe && !self.reported {
            let mut state = self.breaker.lock();
            if let State::Probing { pause } = *state {
                *state = State::Open {
                    until: Instant::now(),
                    pause,
                };
            }
            drop(state);
            self.breaker.changed.notify_waiters();
        }
    }
}

/// Open for `pause`, give or take a quarter (so probes from many instances spread out).
fn open_for(pause: Duration) -> State {
    let jittered = pause.mul_f64(rand::random_range(0.75..=1.25));
    State::Open {
        until: Instant::now() + jittered,
        pause,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    const FAR: Duration = Duration::from_secs(600);

    async fn trip(breaker: &Breaker) {
        for _ in 0..TRIP_AFTER {
            breaker.admit(Instant::now() + FAR).await.unwrap().down();
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_closed_breaker_admits_at_once_and_a_few_failures_open_it() {
        let breaker = Breaker::new();
        assert!(breaker.admit(Instant::now()).await.is_some());
        trip(&breaker).await;
        assert!(breaker.is_open());
        assert!(breaker.admit(Instant::now()).await.is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn after_the_pause_one_probe_goes_and_the_others_wait_for_it() {
        let breaker = Arc::new(Breaker::new());
        trip(&breaker).await;
        let started = Instant::now();
        let probe = breaker.admit(started + FAR).await.unwrap();
        assert!(probe.probe);
        assert!(started.elapsed() >= FIRST_PAUSE.mul_f64(0.75));
        let waiter = {
            let breaker = Arc::clone(&breaker);
            tokio::spawn(async move {
                let pass = breaker.admit(Instant::now() + FAR).await.map(|p| p.probe);
                (pass, Instant::now())
            })
        };
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert!(
            !waiter.is_finished(),
            "the others wait while the probe is out"
        );
        let healed_at = Instant::now();
        probe.healthy();
        let (pass, admitted_at) = waiter.await.unwrap();
        assert_eq!(pass, Some(false), "admitted as an ordinary send");
        assert_eq!(admitted_at, healed_at);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_probe_doubles_the_pause_up_to_the_cap() {
        let breaker = Breaker::new();
        trip(&breaker).await;
        let mut pause = FIRST_PAUSE;
        for _ in 0..8 {
            let probe = breaker.admit(Instant::now() + FAR).await.unwrap();
            probe.down();
            pause = (pause * 2).min(MAX_PAUSE);
            let State::Open { pause: now, .. } = *breaker.lock() else {
                panic!("open after a failed probe")
            };
            assert_eq!(now, pause);
        }
        assert_eq!(pause, MAX_PAUSE);
    }

    #[tokio::test(start_paused = true)]
    async fn a_probe_cut_short_lets_the_next_waiter_probe() {
        let breaker = Breaker::new();
        trip(&breaker).await;
        drop(breaker.admit(Instant::now() + FAR).await.unwrap());
        let started = Instant::now();
        let next = breaker.admit(started + FAR).await.unwrap();
        assert!(next.probe);
        assert_eq!(started.elapsed(), Duration::ZERO);
    }
}
