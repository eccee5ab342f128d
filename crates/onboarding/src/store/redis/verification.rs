//! The writes that settle an email's marker and verify an address.

use time::OffsetDateTime;

use super::RedisStore;
use crate::domain::{UserId, rfc3339};
use crate::store::{Mail, StoreError};

impl RedisStore {
    /// Writes an email's settled marker (sent or undeliverable): forever for the welcome email,
    /// which the profile shows, and for a while for a verification email (see `Mail`).
    pub(super) async fn settle(&self, mail: Mail, value: String) -> Result<(), StoreError> {
        let mut set = redis::cmd("SET");
        set.arg(self.marker_key(mail)).arg(value);
        if let Some(ttl) = mail.settled_ttl() {
            set.arg("EX").arg(ttl.as_secs());
        }
        self.query(&set).await
    }

    /// `SET user:{id}:verified <time> NX`, confirmed by a replica where there is one: an
    /// acknowledged confirmation must survive a failover. `true` when this call set it.
    pub(super) async fn mark_verified(&self, id: UserId) -> Result<bool, StoreError> {
        let key = self.verified_key(id);
        let set: Option<String> = self
            .write_replicated(
                &key,
                redis::cmd("SET")
                    .arg(&key)
                    .arg(rfc3339(OffsetDateTime::now_utc()))
                    .arg("NX"),
            )
            .await?;
        Ok(set.is_some())
    }
}
