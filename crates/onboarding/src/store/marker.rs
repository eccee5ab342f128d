//! The Redis onboarding marker's text, one key per user (`user:{<id>}:onboarding`):
//! - `sending:<token>`: a delivery's leased claim;
//! - `sent:<RFC 3339 time>`: the email went out;
//! - `undeliverable:<JSON>`: refused for good, the JSON being
//!   `{"at":"<RFC 3339 time>","code":550,"reply":"5.1.1 …"}` (`code` null when no server spoke).
//!
//! And the two scripts that change a claim atomically: release it, or renew it.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::Claim;
use crate::domain::{Onboarding, Refusal, rfc3339};

pub const SENT_PREFIX: &str = "sent:";
pub const SENDING_PREFIX: &str = "sending:";
pub const UNDELIVERABLE_PREFIX: &str = "undeliverable:";

/// The JSON after `undeliverable:`.
#[derive(Serialize, Deserialize)]
struct UndeliverableRecord {
    at: String,
    code: Option<u16>,
    reply: String,
}

/// The marker of a claim held by `token`.
pub fn sending(token: &str) -> String {
    format!("{SENDING_PREFIX}{token}")
}

/// The marker of an email sent at `at`.
pub fn sent(at: OffsetDateTime) -> String {
    format!("{SENT_PREFIX}{}", rfc3339(at))
}

/// The marker of an email refused for good at `at`.
pub fn undeliverable(refusal: &Refusal, at: OffsetDateTime) -> String {
    let record = UndeliverableRecord {
        at: rfc3339(at),
        code: refusal.code,
        reply: refusal.reply.clone(),
    };
    // Serializing three plain fields cannot fail; the fallback still reads as undeliverable.
    let json = serde_json::to_string(&record).unwrap_or_else(|_| "{}".to_owned());
    format!("{UNDELIVERABLE_PREFIX}{json}")
}

/// Where the email stands, from the marker (absent or a claim: still pending).
pub fn onboarding_of(marker: Option<&str>) -> Onboarding {
    match marker {
        Some(m) if m.starts_with(SENT_PREFIX) => Onboarding::Sent,
        Some(m) => match m.strip_prefix(UNDELIVERABLE_PREFIX) {
            Some(json) => Onboarding::Undeliverable(
                serde_json::from_str::<UndeliverableRecord>(json)
                    .map(|r| Refusal::new(r.code, &r.reply))
                    .unwrap_or_else(|_| Refusal::new(None, "")),
            ),
            None => Onboarding::Pending,
        },
        None => Onboarding::Pending,
    }
}

/// What a marker someone else wrote means to a delivery that could not take it.
pub fn claim_of_other(marker: &str) -> Claim {
    if marker.starts_with(SENT_PREFIX) {
        Claim::AlreadySent
    } else if marker.starts_with(UNDELIVERABLE_PREFIX) {
        Claim::Undeliverable
    } else {
        Claim::InProgress
    }
}

/// Deletes a key only if it still holds the given value (releasing a claim we own, not one a
/// later delivery took after ours expired). One key, so cluster-safe.
pub const COMPARE_AND_DELETE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
";

/// Writes a key again with the value it holds, permanently, if it still holds `ARGV[1]`; the
/// write is replicated (so `WAIT` can confirm it) even when nothing changes. One key.
pub const REWRITE_IF_EQUAL: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1])
  return 1
end
return 0
";

/// Extends a claim this delivery holds, or takes a lapsed one back; otherwise returns whoever
/// holds the marker. KEYS[1] the marker, ARGV[1] our `sending:` value, ARGV[2] the lease in ms.
/// Returns 1 when the claim is ours, else the marker's value.
pub const RENEW_CLAIM: &str = r"
local held = redis.call('GET', KEYS[1])
if held == ARGV[1] or not held then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return held
";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_undeliverable_marker_keeps_the_code_and_the_reply() {
        let refusal = Refusal::new(Some(550), "5.1.1 <x@example.com>: no such user");
        let marker = undeliverable(&refusal, OffsetDateTime::UNIX_EPOCH);
        assert!(marker.starts_with("undeliverable:{\"at\":\"1970-01-01T00:00:00Z\""));
        assert_eq!(
            onboarding_of(Some(&marker)),
            Onboarding::Undeliverable(refusal)
        );
        assert_eq!(claim_of_other(&marker), Claim::Undeliverable);
    }

    #[test]
    fn a_claim_or_nothing_is_pending_and_sent_is_sent() {
        assert_eq!(onboarding_of(None), Onboarding::Pending);
        assert_eq!(onboarding_of(Some(&sending("t"))), Onboarding::Pending);
        let sent = sent(OffsetDateTime::UNIX_EPOCH);
        assert_eq!(onboarding_of(Some(&sent)), Onboarding::Sent);
        assert_eq!(claim_of_other(&sent), Claim::AlreadySent);
        assert_eq!(claim_of_other(&sending("t")), Claim::InProgress);
    }
}
