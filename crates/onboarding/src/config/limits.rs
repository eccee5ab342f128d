//! The limits against abuse (sign-ups, failed sign-ins, new confirmation links), each one
//! setting of the form `<count>/<period>`, e.g. `10/15m`: at most `count` events per `period`, counted across every
//! instance through the store.

use std::num::NonZeroU32;
use std::time::Duration;

use super::reader::Reader;
use crate::domain::RateRule;

/// Accepted counts (a test or a benchmark lifts a limit out of the way with a large one).
pub const LIMIT_COUNTS: std::ops::RangeInclusive<u32> = 1..=1_000_000;
/// Accepted periods, in seconds: a second to a day.
pub const LIMIT_PERIOD_SECONDS: std::ops::RangeInclusive<u64> = 1..=86_400;

/// One limit's setting, its default and what it counts, for the README and error messages.
pub struct LimitSetting {
    pub name: &'static str,
    pub default: RateRule,
}

const fn rule(count: u32, period_secs: u64) -> RateRule {
    RateRule {
        count: match NonZeroU32::new(count) {
            Some(count) => count,
            None => NonZeroU32::MIN,
        },
        period: Duration::from_secs(period_secs),
    }
}

/// Sign-ups from one client address: 10 in 15 minutes lets a family or an office behind one
/// address through, and stops a script (each sign-up costs an argon2id hash, ~16 ms of CPU).
pub const SIGN_UPS_PER_ADDRESS: LimitSetting = LimitSetting {
    name: "LIMIT_SIGN_UPS_PER_ADDRESS",
    default: rule(10, 15 * 60),
};
/// Sign-ups for one mailbox (lower-cased, `+tag` removed): 5 an hour stops "subscription
/// bombing" a victim with welcome emails through `victim+1@`, `victim+2@`, ….
pub const SIGN_UPS_PER_MAILBOX: LimitSetting = LimitSetting {
    name: "LIMIT_SIGN_UPS_PER_MAILBOX",
    default: rule(5, 3600),
};
/// Failed sign-ins from one client address: 10 in 15 minutes, so someone mistyping is never
/// refused, and guessing from one address is slow.
pub const FAILED_SIGN_INS_PER_ADDRESS: LimitSetting = LimitSetting {
    name: "LIMIT_FAILED_SIGN_INS_PER_ADDRESS",
    default: rule(10, 15 * 60),
};
/// Failed sign-ins for one account, from anywhere: 20 an hour bounds guessing one password
/// from many addresses (Auth0 locks at 10 per user and address; Keycloak allows 30 per 12 h).
pub const FAILED_SIGN_INS_PER_ACCOUNT: LimitSetting = LimitSetting {
    name: "LIMIT_FAILED_SIGN_INS_PER_ACCOUNT",
    default: rule(20, 3600),
};

/// New confirmation links one user asks for: 3 an hour covers a lost or expired email, and
/// keeps anyone with a session from mailing the address (or the provider's quota) in a loop.
pub const VERIFY_RESENDS_PER_USER: LimitSetting = LimitSetting {
    name: "LIMIT_VERIFY_RESENDS_PER_USER",
    default: rule(3, 3600),
};

/// The limits of one run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub sign_ups_per_address: RateRule,
    pub sign_ups_per_mailbox: RateRule,
    pub failed_sign_ins_per_address: RateRule,
    pub failed_sign_ins_per_account: RateRule,
    pub verify_resends_per_user: RateRule,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            sign_ups_per_address: SIGN_UPS_PER_ADDRESS.default,
            sign_ups_per_mailbox: SIGN_UPS_PER_MAILBOX.default,
            failed_sign_ins_per_address: FAILED_SIGN_INS_PER_ADDRESS.default,
            failed_sign_ins_per_account: FAILED_SIGN_INS_PER_ACCOUNT.default,
            verify_resends_per_user: VERIFY_RESENDS_PER_USER.default,
        }
    }
}

/// Reads every limit; each bad one is a problem of its own, reported with the others.
pub(super) fn read_limits(read: &mut Reader<'_>) -> Limits {
    let mut one = |setting: &LimitSetting| {
        read.optional(setting.name, |raw| parse_rate(setting.name, raw))
            .unwrap_or(setting.default)
    };
    Limits {
        sign_ups_per_address: one(&SIGN_UPS_PER_ADDRESS),
        sign_ups_per_mailbox: one(&SIGN_UPS_PER_MAILBOX),
        failed_sign_ins_per_address: one(&FAILED_SIGN_INS_PER_ADDRESS),
        failed_sign_ins_per_account: one(&FAILED_SIGN_INS_PER_ACCOUNT),
        verify_resends_per_user: one(&VERIFY_RESENDS_PER_USER),
    }
}

/// `<count>/<period>`: a whole count and a period in seconds, or with a unit (`s`, `m`, `h`):
/// `10/15m`, `5/1h`, `20/3600`.
pub(super) fn parse_rate(name: &str, raw: &str) -> Result<RateRule, String> {
    let refused = || {
        format!(
            "{name} must be <count>/<period>, e.g. 10/15m or 5/1h (a count from {} to {}, a \
             period from 1s to 24h in s, m or h), got {raw:?}",
            LIMIT_COUNTS.start(),
            LIMIT_COUNTS.end()
        )
    };
    let (count, period) = raw.trim().split_once('/').ok_or_else(refused)?;
    let count = count
        .trim()
        .parse::<u32>()
        .ok()
        .filter(|n| LIMIT_COUNTS.contains(n))
        .and_then(NonZeroU32::new)
        .ok_or_else(refused)?;
    let period = period.trim();
    let (number, unit) = match period.find(|c: char| !c.is_ascii_digit()) {
        Some(at) => period.split_at(at),
        None => (period, "s"),
    };
    let scale = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        _ => return Err(refused()),
    };
    let seconds = number
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(scale))
        .filter(|s| LIMIT_PERIOD_SECONDS.contains(s))
        .ok_or_else(refused)?;
    Ok(RateRule {
        count,
        period: Duration::from_secs(seconds),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(raw: &str) -> (u32, u64) {
        let rule = parse_rate("X", raw).unwrap();
        (rule.count.get(), rule.period.as_secs())
    }

    #[test]
    fn counts_and_periods_with_or_without_a_unit_are_read() {
        assert_eq!(ok("10/15m"), (10, 900));
        assert_eq!(ok(" 5 / 1h "), (5, 3600));
        assert_eq!(ok("20/3600"), (20, 3600));
        assert_eq!(ok("3/30s"), (3, 30));
    }

    #[test]
    fn malformed_or_out_of_range_rates_are_refused_naming_the_setting() {
        for raw in [
            "10", "0/1m", "10/0s", "10/25h", "10/1d", "ten/1m", "10/m", "-1/1m",
        ] {
            let err = parse_rate("LIMIT_X", raw).unwrap_err();
            assert!(err.starts_with("LIMIT_X must be"), "{raw}: {err}");
        }
    }

    #[test]
    fn the_defaults_let_a_person_through_and_stop_a_script() {
        let limits = Limits::default();
        assert_eq!(limits.sign_ups_per_address, rule(10, 900));
        assert_eq!(limits.failed_sign_ins_per_address, rule(10, 900));
        assert_eq!(limits.sign_ups_per_mailbox, rule(5, 3600));
        assert_eq!(limits.failed_sign_ins_per_account, rule(20, 3600));
        assert_eq!(limits.verify_resends_per_user, rule(3, 3600));
    }
}
