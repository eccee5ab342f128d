//! When to fetch the next Entra ID token, and how long to wait after a failed fetch. Pure
//! arithmetic on durations, so the rules are tested without a clock.

use std::time::Duration;

/// Azure asks for a new token "at least 3 minutes before token expiry to avoid connection
/// disruption" (<https://learn.microsoft.com/en-us/azure/redis/entra-for-authentication>).
pub(super) const EXPIRY_MARGIN: Duration = Duration::from_secs(180);
/// Upper bound on the random head start, so instances started together (a deployment, a scale
/// out) spread their calls to the endpoint, and every connection's re-`AUTH` with them.
const MAX_JITTER: Duration = Duration::from_secs(300);
/// Never refresh sooner than this after a token arrived: a token with a tiny life must not
/// turn the refresh into a busy loop.
const MIN_REFRESH: Duration = Duration::from_secs(1);
/// First wait after a failed fetch; it doubles with each failure up to [`MAX_RETRY`].
const FIRST_RETRY: Duration = Duration::from_secs(1);
/// Longest wait between two tries once the endpoint has failed for a while.
const MAX_RETRY: Duration = Duration::from_secs(30);
/// Shortest wait between two tries, however little life the current token has left.
const MIN_RETRY: Duration = Duration::from_millis(250);

/// How long after a token arrived to fetch the next one, for a token valid for `life` from
/// now: at the earlier of 3 minutes before expiry and three quarters of its life (issue 17),
/// brought forward by `jitter` (0 to 1) times a tenth of its life, at most 5 minutes.
///
/// A token living less than the 3-minute margin (a test's 20 s token) cannot meet it; it is
/// renewed at three quarters of its life instead. Long tokens (App Service hands out tokens
/// valid for hours) are renewed at three quarters, leaving hours to ride out an endpoint outage.
pub(super) fn refresh_after(life: Duration, jitter: f64) -> Duration {
    let three_quarters = life.mul_f64(0.75);
    let due = match life.checked_sub(EXPIRY_MARGIN) {
        Some(before_margin) if !before_margin.is_zero() => before_margin.min(three_quarters),
        _ => three_quarters,
    };
    let spread = (life / 10).min(MAX_JITTER);
    let floor = MIN_REFRESH.min(life / 2);
    due.saturating_sub(spread.mul_f64(jitter.clamp(0.0, 1.0)))
        .max(floor)
}

/// How long to wait before try number `failures + 1` after `failures` failed fetches in a row:
/// 1 s doubling to 30 s, but while a token is still valid (`time_left`) at most a quarter of
/// what it has left, so several tries fit before it expires. `jitter` (0 to 1) picks a point
/// between half and all of that, so instances retrying together drift apart.
pub(super) fn retry_after(failures: u32, time_left: Option<Duration>, jitter: f64) -> Duration {
    let backoff = FIRST_RETRY
        .saturating_mul(1 << failures.min(5))
        .min(MAX_RETRY);
    let capped = match time_left {
        Some(left) if !left.is_zero() => backoff.min((left / 4).max(MIN_RETRY)),
        _ => backoff,
    };
    capped.mul_f64(0.5 + 0.5 * jitter.clamp(0.0, 1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: Duration = Duration::from_secs(3600);
    const MINUTE: Duration = Duration::from_secs(60);

    fn secs(s: f64) -> Duration {
        Duration::from_secs_f64(s)
    }

    #[test]
    fn a_20_second_token_is_renewed_at_about_15_seconds() {
        assert_eq!(refresh_after(secs(20.0), 0.0), secs(15.0));
        assert_eq!(refresh_after(secs(20.0), 1.0), secs(13.0));
        for jitter in [0.0, 0.25, 0.5, 0.99] {
            let at = refresh_after(secs(20.0), jitter);
            assert!(at > secs(13.0) - secs(0.001) && at <= secs(15.0), "{at:?}");
        }
    }

    #[test]
    fn a_24_hour_token_is_renewed_at_three_quarters_well_before_the_3_minute_margin() {
        let life = 24 * HOUR;
        assert_eq!(refresh_after(life, 0.0), 18 * HOUR);
        // At most 5 minutes of head start, however long the token.
        assert_eq!(refresh_after(life, 1.0), 18 * HOUR - 5 * MINUTE);
        assert!(refresh_after(life, 1.0) < life - EXPIRY_MARGIN);
    }

    #[test]
    fn a_token_for_which_the_margin_comes_first_is_renewed_3_minutes_before_expiry() {
        // 10 minutes: 3 minutes before expiry (7 min) is earlier than three quarters (7.5 min).
        let life = 10 * MINUTE;
        assert_eq!(refresh_after(life, 0.0), life - EXPIRY_MARGIN);
        assert_eq!(refresh_after(life, 1.0), life - EXPIRY_MARGIN - MINUTE);
    }

    #[test]
    fn every_token_is_renewed_before_it_expires_and_never_in_a_busy_loop() {
        for life_ms in [
            10, 500, 1_000, 2_000, 20_000, 180_000, 181_000, 720_000, 86_400_000,
        ] {
            let life = Duration::from_millis(life_ms);
            for jitter in [0.0, 0.5, 1.0] {
                let at = refresh_after(life, jitter);
                assert!(at < life, "{life:?} renewed at {at:?}");
                assert!(
                    at >= MIN_REFRESH.min(life / 2),
                    "{life:?} renewed at {at:?}"
                );
            }
        }
    }

    #[test]
    fn retries_back_off_from_1_to_30_seconds_without_a_valid_token() {
        let waits: Vec<Duration> = (0..8).map(|n| retry_after(n, None, 1.0)).collect();
        assert_eq!(waits[0], secs(1.0));
        assert_eq!(waits[1], secs(2.0));
        assert_eq!(waits[4], secs(16.0));
        assert_eq!(waits[5], secs(30.0));
        assert_eq!(waits[7], secs(30.0));
        assert_eq!(retry_after(0, None, 0.0), secs(0.5));
    }

    #[test]
    fn retries_fit_several_tries_into_the_current_tokens_remaining_life() {
        assert_eq!(retry_after(5, Some(secs(6.0)), 1.0), secs(1.5));
        assert_eq!(retry_after(5, Some(secs(0.1)), 1.0), MIN_RETRY);
        assert_eq!(retry_after(5, Some(6 * HOUR), 1.0), MAX_RETRY);
    }
}
