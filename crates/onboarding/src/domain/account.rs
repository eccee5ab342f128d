//! What the store knows about one user at once: the record and the state of their address.

use super::{Onboarding, User};

/// A user as `GET /` shows them: the record, where the welcome email stands, and whether the
/// address is verified.
#[derive(Debug, Clone)]
pub struct Account {
    pub user: User,
    pub onboarding: Onboarding,
    pub email_verified: bool,
}
