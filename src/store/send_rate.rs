//! The shared send rate (`SMTP_MAX_PER_MINUTE`): a GCRA (generic cell rate algorithm) that
//! hands out send slots spaced evenly, `60 s / limit` apart, with no burst. Redis runs it as one
//! atomic script on one key, timed by the Redis server's clock so every instance agrees; the
//! in-memory store runs the same arithmetic under its lock.
//!
//! Why spaced slots and no burst: Azure Communication Services' SMTP relay allows by default 30
//! emails a minute and 100 an hour with a custom domain, 5 a minute and 10 an hour with an
//! Azure-managed domain, and answers a throttle past that. Even spacing never exceeds a
//! per-minute limit in any minute-long window, whatever window the provider counts in.

use std::num::NonZeroU32;
use std::time::Duration;

use tokio::time::Instant;

/// The answer to a slot request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendSlot {
    /// A slot is ours: send after waiting this long.
    Reserved { wait: Duration },
    /// The next free slot is further ahead than the caller may wait; nothing was reserved.
    /// `wait` is how far ahead it is now.
    TooFar { wait: Duration },
}

/// Spacing added to each interval, in thousandths: 3 %. A slot is handed out at the Redis
/// server's time, but the provider counts our `RCPT TO` after a store round trip, a pooled or new
/// connection and the scheduler's delays, which move each send by a few milliseconds either
/// way. Spaced exactly at the limit, one late send followed by an early one would put `limit + 1`
/// sends inside the provider's window; 3 % of each interval adds up to 3 % of any window (1.8 s of
/// a minute, 30 ms of a second) of slack, for 3 % of the throughput.
const MARGIN_PER_MILLE: u32 = 30;

/// The even spacing between two sends under a per-minute limit, with the margin above.
pub fn interval(per_minute: NonZeroU32) -> Duration {
    Duration::from_secs(60) * (1000 + MARGIN_PER_MILLE) / 1000 / per_minute.get()
}

/// One GCRA step: `tat` is the theoretical arrival time of the next free slot (`None` before the
/// first send). Reserves the slot at `max(now, tat)` if it is at most `max_wait` away and moves
/// `tat` one interval past it.
pub fn reserve(
    tat: &mut Option<Instant>,
    now: Instant,
    interval: Duration,
    max_wait: Duration,
) -> SendSlot {
    let slot = tat.map_or(now, |t| t.max(now));
    let wait = slot - now;
    if wait > max_wait {
        return SendSlot::TooFar { wait };
    }
    *tat = Some(slot + interval);
    SendSlot::Reserved { wait }
}

/// The same step in Redis, atomic, on one key (cluster-safe). The state is the theoretical
/// arrival time in microseconds of the Redis server's `TIME`, so instances with skewed clocks
/// still agree; the key expires once it no longer constrains anyone.
///
/// KEYS[1] the limit's key; ARGV[1] the interval, ARGV[2] the longest wait, both in µs.
/// Returns `{1, wait_us}` for a reserved slot, `{0, wait_us}` when it is too far.
pub const GCRA_SCRIPT: &str = r"
if redis.replicate_commands then redis.replicate_commands() end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0') or 0
if tat < now then tat = now end
local wait = tat - now
if wait > tonumber(ARGV[2]) then return {0, wait} end
local next = tat + tonumber(ARGV[1])
local ttl = math.ceil((next - now) / 1000) + 1000
redis.call('SET', KEYS[1], string.format('%.0f', next), 'PX', ttl)
return {1, wait}
";

/// Reads the script's reply.
pub fn from_script_reply(reserved: i64, wait_us: i64) -> SendSlot {
    let wait = Duration::from_micros(wait_us.max(0) as u64);
    if reserved == 1 {
        SendSlot::Reserved { wait }
    } else {
        SendSlot::TooFar { wait }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LONG: Duration = Duration::from_secs(3600);

    fn per_minute(n: u32) -> Duration {
        interval(NonZeroU32::new(n).unwrap())
    }

    #[test]
    fn thirty_a_minute_means_one_every_two_seconds_and_the_margin() {
        assert_eq!(per_minute(30), Duration::from_millis(2060));
    }

    #[test]
    fn the_first_slot_is_now_and_each_next_one_interval_later() {
        let now = Instant::now();
        let mut tat = None;
        let waits: Vec<_> = (0..3)
            .map(|_| reserve(&mut tat, now, per_minute(30), LONG))
            .collect();
        let after = |n| SendSlot::Reserved {
            wait: per_minute(30) * n,
        };
        assert_eq!(waits, vec![after(0), after(1), after(2)]);
    }

    #[test]
    fn idle_time_is_not_saved_up_into_a_burst() {
        let start = Instant::now();
        let mut tat = None;
        reserve(&mut tat, start, per_minute(30), LONG);
        let later = start + Duration::from_secs(60);
        assert_eq!(
            reserve(&mut tat, later, per_minute(30), LONG),
            SendSlot::Reserved {
                wait: Duration::ZERO
            }
        );
        assert_eq!(
            reserve(&mut tat, later, per_minute(30), LONG),
            SendSlot::Reserved {
                wait: per_minute(30)
            }
        );
    }

    #[test]
    fn a_slot_beyond_the_longest_wait_is_not_reserved() {
        let now = Instant::now();
        let mut tat = None;
        reserve(&mut tat, now, per_minute(6), LONG);
        let before = tat;
        let answer = reserve(&mut tat, now, per_minute(6), Duration::from_secs(5));
        assert_eq!(
            answer,
            SendSlot::TooFar {
                wait: per_minute(6)
            }
        );
        assert_eq!(tat, before, "nothing reserved");
    }
}
