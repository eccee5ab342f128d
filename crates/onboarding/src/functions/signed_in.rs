//! Who a session token signs in: the one check every signed-in request makes (`GET /`,
//! `signOut`, and `verifyEmail`'s request for a new link), so none of them can leave a part out.

use crate::app::App;
use crate::auth::TokenError;
use crate::domain::{Account, UserId};
use crate::store::StoreError;

/// Why a token signs nobody in: the first three are the client's (a 401 or a redirect), the
/// last is ours (a 503).
#[derive(Debug, thiserror::Error)]
pub enum NotSignedIn {
    #[error("token refused: {0}")]
    Refused(#[from] TokenError),
    #[error("the token names user {0}, who no longer exists")]
    Gone(UserId),
    #[error("the token was issued before user {0} signed out everywhere")]
    SignedOut(UserId),
    #[error("the user store failed: {0}")]
    Store(#[from] StoreError),
}

/// The account `token` signs in: a valid session token (checked against the keys, or found in
/// the cache of tokens that were), its user's account (read in one round trip with the user's
/// sign-out time), and a token issued no earlier than that sign-out. The last check runs on
/// every request, for cached tokens too: the cache knows signatures, not sign-outs.
pub async fn signed_in(app: &App, token: &str) -> Result<Account, NotSignedIn> {
    let session = app.tokens.verify_session(token)?;
    let account = app
        .store
        .find_user(session.user)
        .await?
        .ok_or(NotSignedIn::Gone(session.user))?;
    if account.revokes(session.issued_at) {
        return Err(NotSignedIn::SignedOut(session.user));
    }
    Ok(account)
}
