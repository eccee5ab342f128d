//! Email verification tokens: HS256 JWTs under the session keys but for their own audience, so a
//! session token is never accepted as a verification token, nor the reverse (each side's
//! `Validation` names only its own audience). A token names the user and the address it was sent
//! to, and lasts 7 days. It is spent by the user's verified state (see `functions/verify_email`):
//! once the address is verified, every token for it reads "already confirmed".

use std::time::Duration;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::token::{Hs256Keys, ISSUER, SubjectClaims, TokenError};
use crate::config::JwtSettings;
use crate::domain::UserId;

/// The audience of verification tokens, which session tokens (audience `onboarding`) never carry.
pub const VERIFY_EMAIL_AUDIENCE: &str = "onboarding:verify-email";
/// How long a verification link works (issue 18: 7 days).
pub const VERIFY_EMAIL_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    sub: String,
    /// The address the link was sent to: a link for an older address confirms nothing.
    email: String,
    /// Unique per link, so two links never read the same and a log can tell them apart.
    jti: String,
    iat: i64,
    exp: i64,
    iss: String,
    aud: String,
}

impl SubjectClaims for Claims {
    fn subject(&self) -> &str {
        &self.sub
    }
    fn issued_at(&self) -> i64 {
        self.iat
    }
}

/// What a valid verification token says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmailClaim {
    pub user: UserId,
    /// The address as it was when the link was sent.
    pub email: String,
}

/// Signs and checks verification tokens with the same keys as sessions (rotation included).
pub struct EmailTokens {
    keys: Hs256Keys,
}

impl EmailTokens {
    /// Keys from the JWT settings: the current secret signs and verifies, the previous verifies.
    pub fn new(settings: &JwtSettings) -> Self {
        Self {
            keys: Hs256Keys::new(settings, VERIFY_EMAIL_AUDIENCE),
        }
    }

    /// Signs a link token for `user` at `email`, valid for [`VERIFY_EMAIL_TTL`].
    pub fn issue(&self, user: UserId, email: &str) -> Result<String, TokenError> {
        let now = OffsetDateTime::now_utc().unix_timestamp();
        let claims = Claims {
            sub: user.to_string(),
            email: email.to_owned(),
            jti: uuid::Uuid::new_v4().simple().to_string(),
            iat: now,
            exp: now + VERIFY_EMAIL_TTL.as_secs() as i64,
            iss: ISSUER.to_owned(),
            aud: VERIFY_EMAIL_AUDIENCE.to_owned(),
        };
        self.keys.sign(&claims)
    }

    /// Checks a link token with each verifying key in turn: signature, algorithm, audience,
    /// issuer and times, exactly as for sessions.
    pub fn verify(&self, token: &str) -> Result<EmailClaim, TokenError> {
        let now = OffsetDateTime::now_utc().unix_timestamp();
        let (user, claims) = self.keys.verify::<Claims>(token, now)?;
        Ok(EmailClaim {
            user,
            email: claims.email,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::{InvalidToken, TokenKeys};
    use secrecy::SecretString;

    const KEY_A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const KEY_B: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

    fn settings(secret: &str, previous: Option<&str>) -> JwtSettings {
        JwtSettings {
            secret: SecretString::from(secret),
            previous_secret: previous.map(SecretString::from),
            ttl: Duration::from_secs(3600),
            generated: false,
        }
    }

    #[test]
    fn an_issued_link_token_verifies_to_its_user_and_address() {
        let tokens = EmailTokens::new(&settings(KEY_A, None));
        let user = UserId::new();
        let token = tokens.issue(user, "ada@example.com").unwrap();
        assert_eq!(
            tokens.verify(&token).unwrap(),
            EmailClaim {
                user,
                email: "ada@example.com".to_owned()
            }
        );
    }

    #[test]
    fn two_links_for_the_same_user_differ() {
        let tokens = EmailTokens::new(&settings(KEY_A, None));
        let user = UserId::new();
        assert_ne!(
            tokens.issue(user, "a@example.com").unwrap(),
            tokens.issue(user, "a@example.com").unwrap()
        );
    }

    #[test]
    fn a_session_token_is_not_a_link_token() {
        let sessions = TokenKeys::new(&settings(KEY_A, None));
        let tokens = EmailTokens::new(&settings(KEY_A, None));
        let session = sessions.issue(UserId::new()).unwrap().token;
        // Refused twice over: the audience, and the claims (no `email`, no `jti`), whichever
        // the library reads first.
        assert!(matches!(
            tokens.verify(&session),
            Err(TokenError::Invalid(
                InvalidToken::Audience | InvalidToken::Malformed
            ))
        ));
    }

    #[test]
    fn a_link_token_is_not_a_session_token() {
        let sessions = TokenKeys::new(&settings(KEY_A, None));
        let tokens = EmailTokens::new(&settings(KEY_A, None));
        let link = tokens.issue(UserId::new(), "a@example.com").unwrap();
        assert_eq!(
            sessions.verify(&link),
            Err(TokenError::Invalid(InvalidToken::Audience))
        );
    }

    #[test]
    fn a_link_signed_with_the_previous_key_still_verifies_and_another_key_does_not() {
        let old = EmailTokens::new(&settings(KEY_A, None));
        let rotated = EmailTokens::new(&settings(KEY_B, Some(KEY_A)));
        let other = EmailTokens::new(&settings(KEY_B, None));
        let token = old.issue(UserId::new(), "a@example.com").unwrap();
        assert!(rotated.verify(&token).is_ok());
        assert_eq!(
            other.verify(&token),
            Err(TokenError::Invalid(InvalidToken::Signature))
        );
    }

    #[test]
    fn a_link_lasts_seven_days() {
        assert_eq!(VERIFY_EMAIL_TTL.as_secs(), 604_800);
    }
}
