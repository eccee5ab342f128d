//! Limits on Redis: one script per step on the limit's one key, hash-tagged whole so the key
//! names its own cluster slot (see `store/limit.rs` for the arithmetic).

use super::RedisStore;
use crate::store::StoreError;
use crate::store::limit::{self, ADMIT_SCRIPT, Allowance, REFUND_SCRIPT, RateRule};

/// The limit scripts, loaded once (EVALSHA, with EVAL when the server lost them).
#[derive(Clone)]
pub(super) struct Scripts {
    admit: redis::Script,
    refund: redis::Script,
}

impl Scripts {
    pub(super) fn new() -> Self {
        Self {
            admit: redis::Script::new(ADMIT_SCRIPT),
            refund: redis::Script::new(REFUND_SCRIPT),
        }
    }
}

impl RedisStore {
    /// `limit:{<key>}`: the braces make the whole key its hash tag.
    fn limit_key(&self, key: &str) -> String {
        format!("{}limit:{{{key}}}", self.prefix)
    }

    /// [`UserStore::admit`](crate::store::UserStore::admit) on Redis: one round trip.
    pub(super) async fn admit_event(
        &self,
        key: &str,
        rule: RateRule,
    ) -> Result<Allowance, StoreError> {
        let mut connection = self.link().await?;
        let mut invocation = self.limits.admit.key(self.limit_key(key));
        invocation
            .arg(rule.interval().as_micros() as u64)
            .arg(rule.period.as_micros() as u64);
        let (allowed, retry_after_us): (i64, i64) = self
            .bounded(invocation.invoke_async(&mut connection))
            .await?;
        Ok(limit::from_admit_reply(allowed, retry_after_us))
    }

    /// [`UserStore::refund`](crate::store::UserStore::refund) on Redis: one round trip.
    pub(super) async fn refund_event(&self, key: &str, rule: RateRule) -> Result<(), StoreError> {
        let mut connection = self.link().await?;
        let mut invocation = self.limits.refund.key(self.limit_key(key));
        invocation.arg(rule.interval().as_micros() as u64);
        self.bounded(invocation.invoke_async::<i64>(&mut connection))
            .await
            .map(drop)
    }
}
