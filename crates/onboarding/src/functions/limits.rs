//! Checking the limits against abuse before any expensive work, and the 429 past one.

use std::time::Duration;

use super::http;
use crate::app::App;
use crate::domain::RateRule;
use crate::protocol::HttpResponse;
use crate::store::{Allowance, LimitKey, StoreError};

/// A request one of its limits refused.
#[derive(Debug, thiserror::Error)]
pub enum LimitError {
    #[error("a limit was reached; retry after {retry_after:?}")]
    Limited { retry_after: Duration },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Charges one event to each limit in turn, stopping at the first that refuses (whose key is
/// then charged nothing, and the ones after it are not asked). Ordered cheapest-to-abuse first.
pub async fn admit_each(app: &App, limits: &[(LimitKey<'_>, RateRule)]) -> Result<(), LimitError> {
    for (key, rule) in limits {
        if let Allowance::Limited { retry_after } = app.store.admit(&key.to_string(), *rule).await?
        {
            return Err(LimitError::Limited { retry_after });
        }
    }
    Ok(())
}

/// Gives back one event to each limit (best effort: a failure only leaves a limit stricter).
pub async fn refund_each(app: &App, limits: &[(LimitKey<'_>, RateRule)]) {
    for (key, rule) in limits {
        if let Err(e) = app.store.refund(&key.to_string(), *rule).await {
            tracing::warn!(error = %e, "a limit could not be refunded");
        }
    }
}

/// 429 with `Retry-After` in whole seconds (RFC 6585 §4, RFC 9110 §10.2.3) and a problem body.
pub fn too_many_requests(retry_after: Duration, detail: &str) -> HttpResponse {
    let seconds = Allowance::retry_after_seconds(retry_after);
    http::problem(
        429,
        "urn:onboarding:problem:too-many-requests",
        "Too many requests",
        &format!("{detail} Try again in {}.", wait_in_words(seconds)),
        Some(serde_json::json!({ "retryAfter": seconds })),
    )
    .header("Retry-After", seconds.to_string())
}

/// A wait as a person reads it: "45 seconds", "12 minutes".
pub fn wait_in_words(seconds: u64) -> String {
    match seconds {
        1 => "1 second".to_owned(),
        s if s < 120 => format!("{s} seconds"),
        s => format!("{} minutes", s.div_ceil(60)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_429_says_when_to_come_back_in_seconds_rounded_up() {
        let res = too_many_requests(Duration::from_millis(89_001), "Too many sign-ups.");
        assert_eq!(res.status_code, 429);
        assert_eq!(res.headers["Retry-After"], "90");
        let body: serde_json::Value = serde_json::from_str(&res.body).unwrap();
        assert_eq!(body["retryAfter"], 90);
        assert_eq!(
            body["detail"],
            "Too many sign-ups. Try again in 90 seconds."
        );
    }

    #[test]
    fn long_waits_are_told_in_minutes() {
        assert_eq!(wait_in_words(1), "1 second");
        assert_eq!(wait_in_words(119), "119 seconds");
        assert_eq!(wait_in_words(721), "13 minutes");
    }
}
