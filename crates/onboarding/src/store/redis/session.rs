//! What signed-in requests read and sign-out writes, on Redis: a user with their onboarding
//! marker and their sign-out time, all under the user's hash tag (one slot, one round trip), and
//! the lookup by email a sign-in starts with.

use super::RedisStore;
use crate::domain::{UserEmail, UserId};
use crate::store::record::parse_user;
use crate::store::{FoundUser, StoreError, marker};

/// The id looked up when an email is not registered: no user has it (ids are random v4 UUIDs,
/// and this one has no version bits), and reading it costs the round trip a real user costs.
const NOBODY: &str = "00000000-0000-0000-0000-000000000000";

impl RedisStore {
    /// `user:{<id>}:tokens-valid-after` → seconds since the epoch; beside the record, in its
    /// slot, and a key of its own, so a sign-out is one write that races no rewrite of the
    /// record.
    pub(super) fn tokens_valid_after_key(&self, id: UserId) -> String {
        format!("{}user:{{{id}}}:tokens-valid-after", self.prefix)
    }

    /// The record, the marker and the sign-out time in one pipeline (one hash tag, one slot).
    pub(super) async fn found_user(&self, id: UserId) -> Result<Option<FoundUser>, StoreError> {
        let keys = [
            self.user_key(id),
            self.marker_key(id),
            self.tokens_valid_after_key(id),
        ];
        let (record, marker, valid_after): (Option<String>, Option<String>, Option<i64>) = self
            .query_pipeline(redis::pipe().get(&keys[0]).get(&keys[1]).get(&keys[2]))
            .await?;
        let Some(json) = record else {
            return Ok(None);
        };
        Ok(Some(FoundUser {
            user: parse_user(&json)?,
            onboarding: marker::onboarding_of(marker.as_deref()),
            tokens_valid_after: valid_after,
        }))
    }

    /// The email's claim names the user; an unregistered email reads a user nobody is, so both
    /// answers take the same two round trips.
    pub(super) async fn user_by_email(
        &self,
        email: &UserEmail,
    ) -> Result<Option<FoundUser>, StoreError> {
        let owner = self.get(&self.email_key(email)).await?;
        let id = owner
            .and_then(|id| id.parse::<UserId>().ok())
            .unwrap_or_else(|| NOBODY.parse().unwrap_or_default());
        self.found_user(id).await
    }

    /// Writes the sign-out time, confirmed by a replica where there is one.
    pub(super) async fn sign_out(&self, id: UserId, valid_after: i64) -> Result<(), StoreError> {
        let key = self.tokens_valid_after_key(id);
        self.write_replicated::<()>(&key, redis::cmd("SET").arg(&key).arg(valid_after))
            .await
    }
}
