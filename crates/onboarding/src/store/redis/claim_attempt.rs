//! One try at claiming an email's send on Redis, as a pipeline on its marker key
//! (one key, so one hash slot).

use std::time::Duration;

use super::RedisStore;
use crate::store::{Claim, Mail, StoreError, marker};

/// One try at claiming a user's onboarding send: `SET marker sending:<token> NX PX lease`, then
/// `GET marker` in the same pipeline, so a refused claim tells at once who holds the marker.
/// (Redis 7's `SET … NX GET` would do both in one command, but Azure Cache for Redis, whose
/// connection-string form `REDIS_URL` accepts, runs Redis 6; the pipeline works on any version
/// and costs the same single round trip.)
pub(super) struct ClaimAttempt {
    key: String,
    value: String,
    lease_ms: u64,
}

impl ClaimAttempt {
    pub(super) fn new(store: &RedisStore, mail: Mail, token: &str, lease: Duration) -> Self {
        Self {
            key: store.marker_key(mail),
            value: marker::sending(token),
            lease_ms: lease.as_millis().max(1) as u64,
        }
    }

    /// Appends the two commands, whose replies [`outcome`](Self::outcome) reads.
    pub(super) fn add_to(&self, pipe: &mut redis::Pipeline) {
        pipe.cmd("SET")
            .arg(&self.key)
            .arg(&self.value)
            .arg("NX")
            .arg("PX")
            .arg(self.lease_ms)
            .get(&self.key);
    }

    /// The claim, from the replies to SET NX and GET; `None` when another claim expired between
    /// the two, so the caller should try again.
    pub(super) fn outcome(&self, set: Option<String>, marker: Option<String>) -> Option<Claim> {
        // Our own token: an earlier try whose reply timed out after Redis had taken the claim.
        // It is ours to use (and to renew before sending); waiting for it to lapse would spend
        // the window, and the delivery, on nothing.
        if set.is_some() || marker.as_deref() == Some(self.value.as_str()) {
            return Some(Claim::Claimed);
        }
        marker.map(|m| marker::claim_of_other(&m))
    }

    /// Gives this attempt's claim back, if it still holds the marker.
    pub(super) async fn release(&self, store: &RedisStore) -> Result<(), StoreError> {
        store.delete_if(&self.key, &self.value).await
    }
}
