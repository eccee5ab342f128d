//! What signed-in requests read and sign-out writes, on Redis: a user's account (record, welcome
//! marker, verified key and sign-out time, all under the user's hash tag: one slot, one round
//! trip), and the lookup by email a sign-in starts with.

use super::RedisStore;
use crate::domain::{Account, UserEmail, UserId};
use crate::store::record::parse_user;
use crate::store::{Mail, StoreError, marker};

/// The id looked up when an email is not registered: no user has it (ids are random v4 UUIDs,
/// and this one has no version bits), and reading it costs the round trip a real user costs.
const NOBODY: &str = "00000000-0000-0000-0000-000000000000";

impl RedisStore {
    /// The record, the welcome marker, the verified key and the sign-out time in one pipeline
    /// (one hash tag, one slot; still one key per command).
    pub(super) async fn account(&self, id: UserId) -> Result<Option<Account>, StoreError> {
        let keys = [
            self.user_key(id),
            self.marker_key(Mail::Welcome(id)),
            self.verified_key(id),
            self.tokens_valid_after_key(id),
        ];
        let (record, marker, verified, valid_after): (
            Option<String>,
            Option<String>,
            bool,
            Option<i64>,
        ) = self
            .query_pipeline(
                redis::pipe()
                    .get(&keys[0])
                    .get(&keys[1])
                    .exists(&keys[2])
                    .get(&keys[3]),
            )
            .await?;
        let Some(json) = record else {
            return Ok(None);
        };
        Ok(Some(Account {
            user: parse_user(&json)?,
            onboarding: marker::onboarding_of(marker.as_deref()),
            email_verified: verified,
            tokens_valid_after: valid_after,
        }))
    }

    /// The email's claim names the user; an unregistered email reads a user nobody is, so both
    /// answers take the same two round trips.
    pub(super) async fn account_by_email(
        &self,
        email: &UserEmail,
    ) -> Result<Option<Account>, StoreError> {
        let owner = self.get(&self.email_key(email)).await?;
        let id = owner
            .and_then(|id| id.parse::<UserId>().ok())
            .unwrap_or_else(|| NOBODY.parse().unwrap_or_default());
        self.account(id).await
    }

    /// Writes the sign-out time, confirmed by a replica where there is one.
    pub(super) async fn sign_out(&self, id: UserId, valid_after: i64) -> Result<(), StoreError> {
        let key = self.tokens_valid_after_key(id);
        self.write_replicated::<()>(&key, redis::cmd("SET").arg(&key).arg(valid_after))
            .await
    }
}
