//! The Redis key of each thing the store keeps (see the list in `mod.rs`), under the prefix.

use super::RedisStore;
use crate::domain::{UserEmail, UserId};
use crate::store::Mail;

impl RedisStore {
    pub(super) fn email_key(&self, email: &UserEmail) -> String {
        format!("{}email:{}", self.prefix, email.unique_key())
    }

    pub(super) fn user_key(&self, id: UserId) -> String {
        format!("{}user:{{{id}}}", self.prefix)
    }

    /// The marker of one email; under the user's hash tag, so it shares the record's slot.
    pub(in crate::store) fn marker_key(&self, mail: Mail) -> String {
        match mail {
            Mail::Welcome(id) => format!("{}user:{{{id}}}:onboarding", self.prefix),
            Mail::Verification { user, request } => format!(
                "{}user:{{{user}}}:verify-mail:{}",
                self.prefix,
                request.simple()
            ),
        }
    }

    /// Present once the user's address is verified.
    pub(super) fn verified_key(&self, id: UserId) -> String {
        format!("{}user:{{{id}}}:verified", self.prefix)
    }

    /// Seconds since the epoch: tokens issued before it are refused (a sign-out everywhere). A
    /// key of its own beside the record, so a sign-out is one write that races no rewrite of
    /// the record.
    pub(super) fn tokens_valid_after_key(&self, id: UserId) -> String {
        format!("{}user:{{{id}}}:tokens-valid-after", self.prefix)
    }
}
