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
    /// A slot is ours to use now: send after waiting this long.
    Reserved { wait: Duration },
    /// Our slot lies further ahead than the caller may wait. It stays reserved for this user
    /// (a ticket), so the message's next delivery finds it instead of queuing again behind
    /// everyone who asked meanwhile. `wait` is how far ahead it is now.
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

/// A slot this user was given earlier and has not used, as a ticket: usable when it is at
/// most `max_wait` away (the ticket is then spent), kept otherwise; dropped when it lies more
/// than one interval in the past, since sending on it now would crowd the slots handed out
/// after it.
pub fn take_ticket(
    ticket: &mut Option<Instant>,
    now: Instant,
    interval: Duration,
    max_wait: Duration,
) -> Option<SendSlot> {
    let slot = (*ticket)?;
    if slot + interval < now {
        *ticket = None;
        return None;
    }
    let wait = slot.saturating_duration_since(now);
    if wait > max_wait {
        return Some(SendSlot::TooFar { wait });
    }
    *ticket = None;
    Some(SendSlot::Reserved { wait })
}

/// One GCRA step: `tat` is the theoretical arrival time of the next free slot (`None` before the
/// first send). Always reserves the slot at `max(now, tat)` and moves `tat` one interval past
/// it; a slot more than `max_wait` away becomes the user's ticket (see [`SendSlot::TooFar`]).
pub fn reserve(
    tat: &mut Option<Instant>,
    ticket: &mut Option<Instant>,
    now: Instant,
    interval: Duration,
    max_wait: Duration,
) -> SendSlot {
    if let Some(slot) = take_ticket(ticket, now, interval, max_wait) {
        return slot;
    }
    let slot = tat.map_or(now, |t| t.max(now));
    *tat = Some(slot + interval);
    let wait = slot - now;
    if wait > max_wait {
        *ticket = Some(slot);
        return SendSlot::TooFar { wait };
    }
    SendSlot::Reserved { wait }
}

/// How long an unused ticket outlives its slot in Redis: a message dead-lettered or deleted
/// meanwhile leaves nothing behind for long.
pub const TICKET_GRACE: Duration = Duration::from_secs(600);

/// [`take_ticket`] in Redis, atomic, on the user's ticket key, timed by Redis `TIME`.
///
/// KEYS[1] the ticket; ARGV[1] the interval, ARGV[2] the longest wait, both in µs.
/// Returns `{-1, 0}` without a usable ticket, `{1, wait_us}` for a slot to use now (the ticket
/// spent), `{0, wait_us}` for one still too far (the ticket kept).
pub const TICKET_SCRIPT: &str = r"
if redis.replicate_commands then redis.replicate_commands() end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local slot = tonumber(redis.call('GET', KEYS[1]) or '')
if not slot then return {-1, 0} end
if slot + tonumber(ARGV[1]) < now then
  redis.call('DEL', KEYS[1])
  return {-1, 0}
end
local wait = slot - now
if wait < 0 then wait = 0 end
if wait > tonumber(ARGV[2]) then return {0, wait} end
redis.call('DEL', KEYS[1])
return {1, wait}
";

/// The GCRA step in Redis, atomic, on one key (cluster-safe). The state is the theoretical
/// arrival time in microseconds of the Redis server's `TIME`, so instances with skewed clocks
/// still agree; the key expires once it no longer constrains anyone. It always reserves; the
/// caller stores a slot too far ahead as the user's ticket (another key, so another command).
///
/// KEYS[1] the limit's key; ARGV[1] the interval, ARGV[2] the longest wait, both in µs.
/// Returns `{1, wait_us, slot_us}` for a slot to use now, `{0, wait_us, slot_us}` for one too
/// far ahead (`slot_us` in Redis time, for the ticket).
pub const GCRA_SCRIPT: &str = r"
if redis.replicate_commands then redis.replicate_commands() end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0') or 0
if tat < now then tat = now end
local wait = tat - now
local next = tat + tonumber(ARGV[1])
local ttl = math.ceil((next - now) / 1000) + 1000
redis.call('SET', KEYS[1], string.format('%.0f', next), 'PX', ttl)
if wait > tonumber(ARGV[2]) then return {0, wait, string.format('%.0f', tat)} end
return {1, wait, string.format('%.0f', tat)}
";

/// Reads either script's reply; `None` for the ticket script's "no ticket".
pub fn from_script_reply(outcome: i64, wait_us: i64) -> Option<SendSlot> {
    let wait = Duration::from_micros(wait_us.max(0) as u64);
    match outcome {
        1 => Some(SendSlot::Reserved { wait }),
        0 => Some(SendSlot::TooFar { wait }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LONG: Duration = Duration::from_secs(3600);

    fn per_minute(n: u32) -> Duration {
        interval(NonZeroU32::new(n).unwrap())
    }

    /// One reservation by a sender without a ticket.
    fn fresh(tat: &mut Option<Instant>, now: Instant, every: Duration, max: Duration) -> SendSlot {
        reserve(tat, &mut None, now, every, max)
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
            .map(|_| fresh(&mut tat, now, per_minute(30), LONG))
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
        fresh(&mut tat, start, per_minute(30), LONG);
        let later = start + Duration::from_secs(60);
        assert_eq!(
            fresh(&mut tat, later, per_minute(30), LONG),
            SendSlot::Reserved {
                wait: Duration::ZERO
            }
        );
        assert_eq!(
            fresh(&mut tat, later, per_minute(30), LONG),
            SendSlot::Reserved {
                wait: per_minute(30)
            }
        );
    }

    #[test]
    fn a_slot_beyond_the_longest_wait_becomes_the_senders_ticket() {
        let now = Instant::now();
        let (mut tat, mut ticket) = (None, None);
        fresh(&mut tat, now, per_minute(6), LONG);
        let answer = reserve(
            &mut tat,
            &mut ticket,
            now,
            per_minute(6),
            Duration::from_secs(5),
        );
        assert_eq!(
            answer,
            SendSlot::TooFar {
                wait: per_minute(6)
            }
        );
        assert_eq!(ticket, Some(now + per_minute(6)), "the slot is kept for us");
        assert_eq!(
            tat,
            Some(now + per_minute(6) * 2),
            "and nobody else gets it"
        );
    }

    #[test]
    fn a_ticket_is_used_once_it_comes_within_reach_and_not_reserved_again() {
        let now = Instant::now();
        let (mut tat, mut ticket) = (None, Some(now + Duration::from_secs(8)));
        let every = per_minute(6);
        assert_eq!(
            reserve(&mut tat, &mut ticket, now, every, Duration::from_secs(5)),
            SendSlot::TooFar {
                wait: Duration::from_secs(8)
            }
        );
        let later = now + Duration::from_secs(4);
        assert_eq!(
            reserve(&mut tat, &mut ticket, later, every, Duration::from_secs(5)),
            SendSlot::Reserved {
                wait: Duration::from_secs(4)
            }
        );
        assert_eq!(ticket, None, "a used ticket is spent");
        assert_eq!(tat, None, "the shared schedule was not touched");
    }

    #[test]
    fn a_ticket_long_past_is_dropped_and_a_fresh_slot_taken() {
        let now = Instant::now();
        let every = per_minute(6);
        let mut ticket = Some(now);
        let mut tat = None;
        let later = now + every * 2;
        assert_eq!(
            reserve(&mut tat, &mut ticket, later, every, LONG),
            SendSlot::Reserved {
                wait: Duration::ZERO
            }
        );
        assert_eq!(
            tat,
            Some(later + every),
            "a fresh slot from the shared schedule"
        );
    }
}
