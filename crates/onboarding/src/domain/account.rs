//! What the store knows about one user at once: the record, the state of their address, and
//! since when their tokens hold.

use super::{Onboarding, User};

/// A user as a signed-in request sees them: the record, where the welcome email stands, whether
/// the address is verified, and their last sign-out everywhere (all read in one round trip, so
/// checking a session costs nothing beyond showing the profile).
#[derive(Debug, Clone)]
pub struct Account {
    pub user: User,
    pub onboarding: Onboarding,
    pub email_verified: bool,
    /// Tokens issued (`iat`) before this time, in seconds since the epoch, are refused.
    pub tokens_valid_after: Option<i64>,
}

impl Account {
    /// True when a token issued at `issued_at` (seconds) predates the user's last sign-out
    /// everywhere, so it no longer signs anyone in.
    pub fn revokes(&self, issued_at: i64) -> bool {
        self.tokens_valid_after
            .is_some_and(|valid_after| issued_at < valid_after)
    }
}
