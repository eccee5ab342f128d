//! Session tokens: HS256 JWTs naming the user by id. The algorithm is pinned (no `none`, no
//! key confusion), every time claim is checked, and a previous key still verifies during a
//! rotation. A token that passed all of that is remembered, with its subject and expiry, so the
//! next request carrying it costs a lookup instead of a base64 decode, two JSON parses and an
//! HMAC; only its expiry is checked again (every other check gives the same answer later).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation, errors::ErrorKind};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::config::{JwtSettings, expose};
use crate::domain::UserId;

/// Who issues the tokens and for whom: both checked, so a token minted for another service with
/// a shared key is refused.
pub const ISSUER: &str = "onboarding";
pub const AUDIENCE: &str = "onboarding";
/// Clock skew tolerated between instances, for every kind of token.
const LEEWAY_SECONDS: u64 = 30;
/// Tokens of any kind longer than this are refused before any parsing (a cookie or header bomb).
const MAX_TOKEN_LEN: usize = 4096;
/// How many verified tokens are remembered (about 300 KiB at most); when full, the memory is
/// emptied and refills with the tokens in use.
const REMEMBERED_TOKENS: usize = 1024;

/// Why a token was refused; all variants look the same to the client.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("token is too long")]
    TooLong,
    #[error("token has expired")]
    Expired,
    #[error("token is invalid: {0}")]
    Invalid(InvalidToken),
    #[error("token could not be signed: {0}")]
    Signing(String),
}

/// Why a token was refused, beyond its expiry: each is a reason to send the client back to
/// sign-up, and each is its own kind so the tests (and a log line) say which rule held.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum InvalidToken {
    #[error("its signature matches no key")]
    Signature,
    #[error("it is not signed with HS256")]
    Algorithm,
    #[error("it is not valid yet (nbf)")]
    NotYetValid,
    #[error("it was issued in the future")]
    IssuedInTheFuture,
    #[error("it is for another audience")]
    Audience,
    #[error("it is from another issuer")]
    Issuer,
    #[error("it lacks a required claim")]
    MissingClaim,
    #[error("its subject is not a user id")]
    Subject,
    #[error("it is not a well-formed JWT")]
    Malformed,
}

impl InvalidToken {
    /// The kind of refusal behind one of jsonwebtoken's errors (expiry is told apart earlier).
    pub(super) fn of(kind: &ErrorKind) -> Self {
        match kind {
            ErrorKind::InvalidSignature => Self::Signature,
            ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => Self::Algorithm,
            ErrorKind::ImmatureSignature => Self::NotYetValid,
            ErrorKind::InvalidAudience => Self::Audience,
            ErrorKind::InvalidIssuer => Self::Issuer,
            ErrorKind::MissingRequiredClaim(_) => Self::MissingClaim,
            ErrorKind::InvalidSubject => Self::Subject,
            _ => Self::Malformed,
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    sub: String,
    iat: i64,
    exp: i64,
    iss: String,
    aud: String,
}

/// A freshly signed token and its lifetime in seconds.
#[derive(Debug)]
pub struct IssuedToken {
    pub token: String,
    pub expires_in: u64,
}

/// The signing key, the keys that verify, and the rules a token must meet.
pub struct TokenKeys {
    keys: Hs256Keys,
    ttl: Duration,
    verified: VerifiedTokens,
}

/// What a fully verified token said: whose it is and until when it holds.
#[derive(Debug, Clone, Copy)]
struct Verified {
    user: UserId,
    issued_at: i64,
    expires_at: i64,
}

/// Who a verified token names, and when it was issued: a sign-out everywhere refuses the
/// tokens issued before it (see [`UserStore::sign_out_everywhere`](crate::store::UserStore)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Session {
    pub user: UserId,
    /// `iat`, in seconds since the epoch.
    pub issued_at: i64,
}

impl Verified {
    fn session(&self) -> Session {
        Session {
            user: self.user,
            issued_at: self.issued_at,
        }
    }
}

/// Tokens that passed every check, by their exact text. Only a token that verified gets in, so
/// nothing a client sends can put an entry here; the keys never change while the process runs.
#[derive(Default)]
struct VerifiedTokens(Mutex<HashMap<Box<str>, Verified>>);

impl VerifiedTokens {
    fn lookup(&self, token: &str) -> Option<Verified> {
        self.lock().get(token).copied()
    }

    fn remember(&self, token: &str, verified: Verified) {
        let mut entries = self.lock();
        if entries.len() >= REMEMBERED_TOKENS {
            entries.clear();
        }
        entries.insert(token.into(), verified);
    }

    fn forget(&self, token: &str) {
        self.lock().remove(token);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Box<str>, Verified>> {
        // Entries are inserted whole; a panic elsewhere cannot leave one half-written.
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The HS256 keys and rules every token kind shares: the current secret signs and verifies, the
/// previous one only verifies, every time claim is required. Only the audience differs, so a
/// token of one kind never verifies as another.
pub(super) struct Hs256Keys {
    encoding: EncodingKey,
    decoding: Vec<DecodingKey>,
    validation: Validation,
}

/// The claims the shared check reads from every kind of token, beyond what jsonwebtoken checks.
pub(super) trait SubjectClaims {
    /// `sub`: the user's id, as text.
    fn subject(&self) -> &str;
    /// `iat`, Unix seconds.
    fn issued_at(&self) -> i64;
}

impl SubjectClaims for Claims {
    fn subject(&self) -> &str {
        &self.sub
    }
    fn issued_at(&self) -> i64 {
        self.iat
    }
}

impl Hs256Keys {
    /// Keys from the JWT settings, for tokens meant for `audience`.
    pub(super) fn new(settings: &JwtSettings, audience: &str) -> Self {
        let current = expose(&settings.secret).as_bytes();
        let mut decoding = vec![DecodingKey::from_secret(current)];
        if let Some(previous) = &settings.previous_secret {
            decoding.push(DecodingKey::from_secret(expose(previous).as_bytes()));
        }
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_required_spec_claims(&["exp", "iat", "sub", "iss", "aud"]);
        validation.set_issuer(&[ISSUER]);
        validation.set_audience(&[audience]);
        validation.leeway = LEEWAY_SECONDS;
        validation.validate_nbf = true;
        Self {
            encoding: EncodingKey::from_secret(current),
            decoding,
            validation,
        }
    }

    /// Signs `claims` with the current key.
    pub(super) fn sign(&self, claims: &impl Serialize) -> Result<String, TokenError> {
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &self.encoding)
            .map_err(|e| TokenError::Signing(e.to_string()))
    }

    /// Checks a token at `now` (Unix seconds) with each verifying key in turn: its length, then
    /// signature, algorithm, audience, issuer and times, an `iat` not in the future, and a
    /// subject that is a user id. Returns the user and the claims.
    pub(super) fn verify<C>(&self, token: &str, now: i64) -> Result<(UserId, C), TokenError>
    where
        C: DeserializeOwned + SubjectClaims,
    {
        if token.len() > MAX_TOKEN_LEN {
            return Err(TokenError::TooLong);
        }
        let mut last = TokenError::Invalid(InvalidToken::Signature);
        for key in &self.decoding {
            match jsonwebtoken::decode::<C>(token, key, &self.validation) {
                Ok(data) => {
                    // `iat` in the future means a forged or badly skewed token.
                    if data.claims.issued_at() > now + LEEWAY_SECONDS as i64 {
                        return Err(TokenError::Invalid(InvalidToken::IssuedInTheFuture));
                    }
                    let user = data
                        .claims
                        .subject()
                        .parse()
                        .map_err(|_| TokenError::Invalid(InvalidToken::Subject))?;
                    return Ok((user, data.claims));
                }
                Err(e) => {
                    last = match e.kind() {
                        ErrorKind::ExpiredSignature => return Err(TokenError::Expired),
                        // Only a signature mismatch is worth trying the next key for.
                        ErrorKind::InvalidSignature => TokenError::Invalid(InvalidToken::Signature),
                        other => return Err(TokenError::Invalid(InvalidToken::of(other))),
                    };
                }
            }
        }
        Err(last)
    }
}

impl TokenKeys {
    /// Keys from the settings: the current secret signs and verifies, the previous one verifies.
    pub fn new(settings: &JwtSettings) -> Self {
        Self {
            keys: Hs256Keys::new(settings, AUDIENCE),
            ttl: settings.ttl,
            verified: VerifiedTokens::default(),
        }
    }

    /// The token lifetime (also the session cookie's).
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Signs a token for a user.
    pub fn issue(&self, user: UserId) -> Result<IssuedToken, TokenError> {
        self.issue_not_before(user, None)
    }

    /// Signs a token for a user whose tokens issued before `valid_after` (seconds) are refused:
    /// the token is dated no earlier, so a sign-in in the same second as a sign-out holds. Its
    /// `iat` is then at most a second ahead, well within the leeway.
    pub fn issue_not_before(
        &self,
        user: UserId,
        valid_after: Option<i64>,
    ) -> Result<IssuedToken, TokenError> {
        let now = OffsetDateTime::now_utc().unix_timestamp();
        let issued_at = valid_after.map_or(now, |after| after.clamp(now, now + 1));
        let claims = Claims {
            sub: user.to_string(),
            iat: issued_at,
            exp: now + self.ttl.as_secs() as i64,
            iss: ISSUER.to_owned(),
            aud: AUDIENCE.to_owned(),
        };
        let token = self.keys.sign(&claims)?;
        Ok(IssuedToken {
            token,
            expires_in: self.ttl.as_secs(),
        })
    }

    /// Checks a token with each verifying key in turn and returns its user. Tests only: the
    /// product checks sessions with [`verify_session`](Self::verify_session), whose `iat` a
    /// sign-out everywhere is held against.
    #[cfg(test)]
    pub fn verify(&self, token: &str) -> Result<UserId, TokenError> {
        self.verify_session(token).map(|session| session.user)
    }

    /// Checks a token as [`verify`](Self::verify) does, and says when it was issued, for the
    /// caller to hold against the user's sign-out time.
    pub fn verify_session(&self, token: &str) -> Result<Session, TokenError> {
        let now = OffsetDateTime::now_utc().unix_timestamp();
        if let Some(known) = self.verified.lookup(token) {
            // The same rule as jsonwebtoken's: expired once `exp` is more than the leeway ago.
            if known.expires_at < now - LEEWAY_SECONDS as i64 {
                self.verified.forget(token);
                return Err(TokenError::Expired);
            }
            return Ok(known.session());
        }
        // A token too long to verify is refused there; it can never have been remembered.
        let (user, claims) = self.keys.verify::<Claims>(token, now)?;
        let verified = Verified {
            user,
            issued_at: claims.iat,
            expires_at: claims.exp,
        };
        self.verified.remember(token, verified);
        Ok(verified.session())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::SecretString;

    fn settings(secret: &str, previous: Option<&str>) -> JwtSettings {
        JwtSettings {
            secret: SecretString::from(secret),
            previous_secret: previous.map(SecretString::from),
            ttl: Duration::from_secs(3600),
            generated: false,
        }
    }

    const KEY_A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";

    /// Signs any claims with KEY_A, as a forger holding the key (or another algorithm) would.
    fn forge(claims: &impl Serialize, algorithm: Algorithm) -> String {
        jsonwebtoken::encode(
            &Header::new(algorithm),
            claims,
            &EncodingKey::from_secret(KEY_A.as_bytes()),
        )
        .unwrap()
    }
    const KEY_B: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

    /// Good claims for a token issued now.
    fn valid_claims() -> Claims {
        let now = OffsetDateTime::now_utc().unix_timestamp();
        Claims {
            sub: UserId::new().to_string(),
            iat: now,
            exp: now + 60,
            iss: ISSUER.to_owned(),
            aud: AUDIENCE.to_owned(),
        }
    }

    /// The forging helper makes tokens the keys accept when nothing is wrong with them, so each
    /// refusal below is the one rule its test breaks.
    #[test]
    fn a_forged_token_with_nothing_wrong_verifies() {
        let keys = TokenKeys::new(&settings(KEY_A, None));
        let claims = valid_claims();
        let user: UserId = claims.sub.parse().unwrap();
        assert_eq!(keys.verify(&forge(&claims, Algorithm::HS256)), Ok(user));
    }

    #[test]
    fn an_issued_token_verifies_to_its_user() {
        let keys = TokenKeys::new(&settings(KEY_A, None));
        let user = UserId::new();
        let issued = keys.issue(user).unwrap();
        assert_eq!(keys.verify(&issued.token).unwrap(), user);
        assert_eq!(issued.expires_in, 3600);
    }

    #[test]
    fn a_token_signed_with_the_previous_key_still_verifies() {
        let old = TokenKeys::new(&settings(KEY_A, None));
        let rotated = TokenKeys::new(&settings(KEY_B, Some(KEY_A)));
        let user = UserId::new();
        assert_eq!(
            rotated.verify(&old.issue(user).unwrap().token).unwrap(),
            user
        );
    }

    #[test]
    fn a_token_signed_with_another_key_is_refused() {
        let other = TokenKeys::new(&settings(KEY_B, None));
        let keys = TokenKeys::new(&settings(KEY_A, None));
        assert_eq!(
            keys.verify(&other.issue(UserId::new()).unwrap().token),
            Err(TokenError::Invalid(InvalidToken::Signature))
        );
    }

    #[test]
    fn an_unsigned_token_is_refused() {
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let now = OffsetDateTime::now_utc().unix_timestamp();
        let header = b64.encode(r#"{"alg":"none","typ":"JWT"}"#);
        let claims = b64.encode(format!(
            r#"{{"sub":"{}","iat":{now},"exp":{},"iss":"onboarding","aud":"onboarding"}}"#,
            UserId::new(),
            now + 60
        ));
        let keys = TokenKeys::new(&settings(KEY_A, None));
        assert!(matches!(
            keys.verify(&format!("{header}.{claims}.")),
            Err(TokenError::Invalid(
                InvalidToken::Algorithm | InvalidToken::Malformed
            ))
        ));
    }

    #[test]
    fn an_expired_token_is_refused() {
        let now = OffsetDateTime::now_utc().unix_timestamp();
        let claims = Claims {
            sub: UserId::new().to_string(),
            iat: now - 7200,
            exp: now - 3600,
            iss: ISSUER.to_owned(),
            aud: AUDIENCE.to_owned(),
        };
        let token = forge(&claims, Algorithm::HS256);
        let keys = TokenKeys::new(&settings(KEY_A, None));
        assert!(matches!(keys.verify(&token), Err(TokenError::Expired)));
    }

    #[test]
    fn a_token_without_exp_is_refused() {
        #[derive(Serialize)]
        struct NoExp {
            sub: String,
            iat: i64,
            iss: &'static str,
            aud: &'static str,
        }
        let claims = NoExp {
            sub: UserId::new().to_string(),
            iat: OffsetDateTime::now_utc().unix_timestamp(),
            iss: ISSUER,
            aud: AUDIENCE,
        };
        let token = forge(&claims, Algorithm::HS256);
        let keys = TokenKeys::new(&settings(KEY_A, None));
        assert_eq!(
            keys.verify(&token),
            // Our claims require `exp`, so without it the token does not even read as ours.
            Err(TokenError::Invalid(InvalidToken::Malformed))
        );
    }

    #[test]
    fn a_token_not_yet_valid_is_refused() {
        #[derive(Serialize)]
        struct NotBefore {
            sub: String,
            iat: i64,
            nbf: i64,
            exp: i64,
            iss: &'static str,
            aud: &'static str,
        }
        let now = OffsetDateTime::now_utc().unix_timestamp();
        let claims = NotBefore {
            sub: UserId::new().to_string(),
            iat: now,
            nbf: now + 600,
            exp: now + 3600,
            iss: ISSUER,
            aud: AUDIENCE,
        };
        let token = forge(&claims, Algorithm::HS256);
        let keys = TokenKeys::new(&settings(KEY_A, None));
        assert_eq!(
            keys.verify(&token),
            Err(TokenError::Invalid(InvalidToken::NotYetValid))
        );
    }

    #[test]
    fn a_token_issued_in_the_future_is_refused() {
        let now = OffsetDateTime::now_utc().unix_timestamp();
        let claims = Claims {
            sub: UserId::new().to_string(),
            iat: now + 3600,
            exp: now + 7200,
            iss: ISSUER.to_owned(),
            aud: AUDIENCE.to_owned(),
        };
        let token = forge(&claims, Algorithm::HS256);
        let keys = TokenKeys::new(&settings(KEY_A, None));
        assert_eq!(
            keys.verify(&token),
            Err(TokenError::Invalid(InvalidToken::IssuedInTheFuture))
        );
    }

    #[test]
    fn a_token_for_another_audience_is_refused() {
        let now = OffsetDateTime::now_utc().unix_timestamp();
        let claims = Claims {
            sub: UserId::new().to_string(),
            iat: now,
            exp: now + 60,
            iss: ISSUER.to_owned(),
            aud: "billing".to_owned(),
        };
        let token = forge(&claims, Algorithm::HS256);
        let keys = TokenKeys::new(&settings(KEY_A, None));
        assert_eq!(
            keys.verify(&token),
            Err(TokenError::Invalid(InvalidToken::Audience))
        );
    }

    #[test]
    fn a_token_signed_with_another_algorithm_is_refused() {
        let keys = TokenKeys::new(&settings(KEY_A, None));
        let now = OffsetDateTime::now_utc().unix_timestamp();
        let claims = Claims {
            sub: UserId::new().to_string(),
            iat: now,
            exp: now + 60,
            iss: ISSUER.to_owned(),
            aud: AUDIENCE.to_owned(),
        };
        let token = forge(&claims, Algorithm::HS512);
        assert_eq!(
            keys.verify(&token),
            Err(TokenError::Invalid(InvalidToken::Algorithm))
        );
    }

    #[test]
    fn an_oversized_token_is_refused_before_parsing() {
        let keys = TokenKeys::new(&settings(KEY_A, None));
        let huge = format!("{}.{}.{}", "a".repeat(3000), "b".repeat(3000), "c");
        assert!(matches!(keys.verify(&huge), Err(TokenError::TooLong)));
    }

    #[test]
    fn a_verified_token_is_remembered_and_a_refused_one_is_not() {
        let keys = TokenKeys::new(&settings(KEY_A, None));
        let user = UserId::new();
        let token = keys.issue(user).unwrap().token;
        assert_eq!(keys.verify(&token).unwrap(), user);
        assert!(keys.verified.lookup(&token).is_some());
        assert_eq!(keys.verify(&token).unwrap(), user);
        let forged = TokenKeys::new(&settings(KEY_B, None))
            .issue(user)
            .unwrap()
            .token;
        assert_eq!(
            keys.verify(&forged),
            Err(TokenError::Invalid(InvalidToken::Signature))
        );
        assert!(keys.verified.lookup(&forged).is_none());
    }

    #[test]
    fn a_remembered_token_still_expires() {
        let keys = TokenKeys::new(&settings(KEY_A, None));
        let user = UserId::new();
        let token = keys.issue(user).unwrap().token;
        let now = OffsetDateTime::now_utc().unix_timestamp();
        let lapsed = Verified {
            user,
            issued_at: 0,
            expires_at: now - LEEWAY_SECONDS as i64 - 1,
        };
        keys.verified.remember(&token, lapsed);
        assert!(matches!(keys.verify(&token), Err(TokenError::Expired)));
        assert!(keys.verified.lookup(&token).is_none());
    }

    #[test]
    fn the_memory_of_verified_tokens_is_bounded() {
        let keys = TokenKeys::new(&settings(KEY_A, None));
        let entry = Verified {
            user: UserId::new(),
            issued_at: 0,
            expires_at: i64::MAX,
        };
        for i in 0..REMEMBERED_TOKENS + 10 {
            keys.verified.remember(&format!("t{i}"), entry);
        }
        assert!(keys.verified.lock().len() <= REMEMBERED_TOKENS);
    }

    #[test]
    fn a_tampered_payload_is_refused() {
        let keys = TokenKeys::new(&settings(KEY_A, None));
        let token = keys.issue(UserId::new()).unwrap().token;
        let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
        let other = keys.issue(UserId::new()).unwrap().token;
        parts[1] = other.split('.').nth(1).unwrap().to_owned();
        assert_eq!(
            keys.verify(&parts.join(".")),
            Err(TokenError::Invalid(InvalidToken::Signature))
        );
    }
}
