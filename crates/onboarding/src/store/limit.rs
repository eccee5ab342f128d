//! Limits on how often something may happen (sign-ups, failed sign-ins, resends), shared by
//! every handler instance through the store: a GCRA (generic cell rate algorithm) with a burst,
//! one key per limit and subject. Redis runs it as one script timed by the Redis server's clock,
//! so instances with skewed clocks agree; the in-memory store runs the same arithmetic.
//!
//! Unlike the send rate (`send_rate.rs`), which always reserves a slot for a queued email, a
//! limit refuses: a refused event is not charged, so a client that keeps knocking past the limit
//! is let in again as soon as the window allows, not pushed further back with each try.

use std::fmt;
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio::time::Instant;

pub use crate::domain::RateRule;
use crate::domain::{ClientAddress, UserEmail, UserId};

/// The store's verdict on one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Allowance {
    /// The event is within the limit and was counted.
    Allowed,
    /// The event would pass the limit and was not counted; one fits again after `retry_after`.
    Limited { retry_after: Duration },
}

impl Allowance {
    /// `Retry-After` in whole seconds (RFC 9110 §10.2.3), rounded up and at least 1, so a client
    /// that waits as told is let in.
    pub fn retry_after_seconds(retry_after: Duration) -> u64 {
        (retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0)).max(1)
    }
}

/// What a limit counts, and for whom: the store key of one limit. Subjects that are personal
/// data (a mailbox, an address) are hashed, so key listings and slow logs hold none; the hash
/// only keeps them out of sight, it is not a secret (an address space is small enough to try).
#[derive(Debug, Clone, Copy)]
pub enum LimitKey<'a> {
    /// Sign-ups from one client address (an IPv6 client's /64).
    SignUpsPerAddress(&'a ClientAddress),
    /// Sign-ups for one mailbox, normalised (see [`UserEmail::mailbox_key`]).
    SignUpsPerMailbox(&'a UserEmail),
    /// Failed sign-ins from one client address.
    FailedSignInsPerAddress(&'a ClientAddress),
    /// Failed sign-ins for one account's address (whether or not it is registered, so the
    /// answer past the limit reveals nothing either).
    FailedSignInsPerAccount(&'a UserEmail),
    /// Verification emails sent again to one user on their request.
    ResendsPerUser(UserId),
}

impl fmt::Display for LimitKey<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::SignUpsPerAddress(client) => {
                write!(f, "sign-ups:address:{}", digest(&client.limit_subject()))
            }
            Self::SignUpsPerMailbox(email) => {
                write!(f, "sign-ups:mailbox:{}", digest(&email.mailbox_key()))
            }
            Self::FailedSignInsPerAddress(client) => {
                write!(
                    f,
                    "failed-sign-ins:address:{}",
                    digest(&client.limit_subject())
                )
            }
            Self::FailedSignInsPerAccount(email) => {
                write!(f, "failed-sign-ins:account:{}", digest(&email.unique_key()))
            }
            Self::ResendsPerUser(id) => write!(f, "resends:user:{id}"),
        }
    }
}

/// The first 16 bytes of SHA-256, in hex: short, and collisions are out of reach.
fn digest(subject: &str) -> String {
    Sha256::digest(subject.as_bytes())[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// One GCRA step on `tat`, the limit's theoretical arrival time (`None`: nothing counted, or
/// all of it long past). The event is allowed when, charged, `tat` would lie at most one period
/// ahead of `now`; then `tat` moves on one interval. A refusal leaves `tat` as it was.
pub fn admit(tat: &mut Option<Instant>, now: Instant, rule: RateRule) -> Allowance {
    let next = tat.map_or(now, |t| t.max(now)) + rule.interval();
    let ahead = next - now;
    if ahead > rule.period {
        return Allowance::Limited {
            retry_after: ahead - rule.period,
        };
    }
    *tat = Some(next);
    Allowance::Allowed
}

/// Takes one charged event back (a sign-in that turned out right): `tat` moves back one
/// interval, never before `now`, where it means "nothing counted".
pub fn refund(tat: &mut Option<Instant>, now: Instant, rule: RateRule) {
    *tat = tat
        .and_then(|t| t.checked_sub(rule.interval()))
        .filter(|t| *t > now);
}

/// [`admit`] in Redis, atomic on the limit's one key, in µs of Redis `TIME`; the key expires
/// when its `tat` is reached, as nothing is counted any more by then.
///
/// KEYS[1] the limit; ARGV[1] the interval, ARGV[2] the period, both in µs.
/// Returns `{1, 0}` when allowed (and charged), `{0, retry_after_us}` when refused (nothing
/// written).
pub const ADMIT_SCRIPT: &str = r"
if redis.replicate_commands then redis.replicate_commands() end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0') or 0
if tat < now then tat = now end
local next = tat + tonumber(ARGV[1])
local ahead = next - now
local period = tonumber(ARGV[2])
if ahead > period then return {0, ahead - period} end
redis.call('SET', KEYS[1], string.format('%.0f', next), 'PX', math.max(1, math.ceil(ahead / 1000)))
return {1, 0}
";

/// [`refund`] in Redis, atomic on the limit's one key.
///
/// KEYS[1] the limit; ARGV[1] the interval in µs. Returns 1 when something was given back.
pub const REFUND_SCRIPT: &str = r"
if redis.replicate_commands then redis.replicate_commands() end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or '')
if not tat then return 0 end
local back = tat - tonumber(ARGV[1])
if back <= now then
  redis.call('DEL', KEYS[1])
  return 1
end
redis.call('SET', KEYS[1], string.format('%.0f', back), 'PX', math.max(1, math.ceil((back - now) / 1000)))
return 1
";

/// Reads [`ADMIT_SCRIPT`]'s reply.
pub fn from_admit_reply(allowed: i64, retry_after_us: i64) -> Allowance {
    if allowed == 1 {
        Allowance::Allowed
    } else {
        Allowance::Limited {
            retry_after: Duration::from_micros(retry_after_us.max(1) as u64),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::num::NonZeroU32;

    use super::*;

    fn rule(count: u32, secs: u64) -> RateRule {
        RateRule {
            count: NonZeroU32::new(count).unwrap(),
            period: Duration::from_secs(secs),
        }
    }

    fn run(
        tat: &mut Option<Instant>,
        now: Instant,
        rule: RateRule,
        times: usize,
    ) -> Vec<Allowance> {
        (0..times).map(|_| admit(tat, now, rule)).collect()
    }

    #[test]
    fn an_empty_limit_lets_count_events_through_at_once_and_refuses_the_next() {
        let now = Instant::now();
        let mut tat = None;
        let answers = run(&mut tat, now, rule(10, 900), 10);
        assert!(
            answers.iter().all(|a| *a == Allowance::Allowed),
            "{answers:?}"
        );
        assert_eq!(
            admit(&mut tat, now, rule(10, 900)),
            Allowance::Limited {
                retry_after: Duration::from_secs(90)
            },
            "one more fits after one interval (900 s / 10)"
        );
    }

    #[test]
    fn a_refused_event_is_not_charged() {
        let now = Instant::now();
        let mut tat = None;
        run(&mut tat, now, rule(2, 60), 2);
        let full = tat;
        for _ in 0..5 {
            assert!(matches!(
                admit(&mut tat, now, rule(2, 60)),
                Allowance::Limited { .. }
            ));
        }
        assert_eq!(tat, full, "knocking past the limit pushes nothing back");
    }

    #[test]
    fn one_event_fits_again_once_the_retry_after_has_passed() {
        let now = Instant::now();
        let mut tat = None;
        run(&mut tat, now, rule(5, 3600), 5);
        let Allowance::Limited { retry_after } = admit(&mut tat, now, rule(5, 3600)) else {
            panic!("the sixth must be refused");
        };
        assert_eq!(retry_after, Duration::from_secs(720));
        let later = now + retry_after;
        assert_eq!(admit(&mut tat, later, rule(5, 3600)), Allowance::Allowed);
        assert!(matches!(
            admit(&mut tat, later, rule(5, 3600)),
            Allowance::Limited { .. }
        ));
    }

    #[test]
    fn a_steady_rate_at_the_limit_is_never_refused() {
        let start = Instant::now();
        let mut tat = None;
        let every = rule(20, 3600).interval();
        for i in 0..100 {
            assert_eq!(
                admit(&mut tat, start + every * i, rule(20, 3600)),
                Allowance::Allowed
            );
        }
    }

    #[test]
    fn idle_time_refills_the_burst_but_no_further() {
        let start = Instant::now();
        let mut tat = None;
        run(&mut tat, start, rule(3, 60), 3);
        let much_later = start + Duration::from_secs(3600);
        let answers = run(&mut tat, much_later, rule(3, 60), 4);
        assert_eq!(&answers[..3], &[Allowance::Allowed; 3]);
        assert!(matches!(answers[3], Allowance::Limited { .. }));
    }

    #[test]
    fn a_refund_gives_one_event_back_and_never_more_than_was_charged() {
        let now = Instant::now();
        let mut tat = None;
        run(&mut tat, now, rule(3, 60), 3);
        refund(&mut tat, now, rule(3, 60));
        assert_eq!(admit(&mut tat, now, rule(3, 60)), Allowance::Allowed);
        assert!(matches!(
            admit(&mut tat, now, rule(3, 60)),
            Allowance::Limited { .. }
        ));
        let mut empty = None;
        refund(&mut empty, now, rule(3, 60));
        assert_eq!(empty, None);
        let mut one = None;
        admit(&mut one, now, rule(3, 60));
        refund(&mut one, now, rule(3, 60));
        refund(&mut one, now, rule(3, 60));
        assert_eq!(one, None, "back to nothing counted, not below");
    }

    #[test]
    fn retry_after_is_whole_seconds_rounded_up_and_at_least_one() {
        let secs = |ms| Allowance::retry_after_seconds(Duration::from_millis(ms));
        assert_eq!(secs(1), 1);
        assert_eq!(secs(0), 1);
        assert_eq!(secs(1000), 1);
        assert_eq!(secs(1001), 2);
        assert_eq!(secs(90_000), 90);
    }

    #[test]
    fn keys_hide_mailboxes_and_addresses_and_tell_limits_apart() {
        let email = UserEmail::parse("Ada+news@Example.com").unwrap();
        let plain = UserEmail::parse("ada@example.com").unwrap();
        let client = ClientAddress::from_header_values(&["203.0.113.7:5123"]);
        let keys = [
            LimitKey::SignUpsPerMailbox(&email).to_string(),
            LimitKey::FailedSignInsPerAccount(&email).to_string(),
            LimitKey::SignUpsPerAddress(&client).to_string(),
            LimitKey::FailedSignInsPerAddress(&client).to_string(),
        ];
        for key in &keys {
            assert!(!key.contains("ada") && !key.contains("203.0"), "{key}");
        }
        assert_eq!(keys[0], LimitKey::SignUpsPerMailbox(&plain).to_string());
        assert_ne!(
            keys[1],
            LimitKey::FailedSignInsPerAccount(&plain).to_string()
        );
        assert_ne!(keys[2], keys[3]);
    }
}
