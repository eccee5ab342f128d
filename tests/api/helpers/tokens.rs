//! Tokens made by the tests themselves: well-formed, forged, expired and unsigned ones.

use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::Serialize;

/// The claims the handler issues: `sub` is the user id, `iss` and `aud` are "onboarding".
#[derive(Clone, Debug, Serialize)]
pub struct Claims {
    pub sub: String,
    pub iat: i64,
    pub exp: i64,
    pub iss: String,
    pub aud: String,
}

impl Claims {
    /// Claims for `user_id`, issued now and valid for an hour.
    pub fn for_user(user_id: &str) -> Self {
        let now = now();
        Self {
            sub: user_id.to_owned(),
            iat: now,
            exp: now + 3600,
            iss: "onboarding".to_owned(),
            aud: "onboarding".to_owned(),
        }
    }

    /// The same claims, but expired an hour ago (well past any leeway).
    pub fn expired(mut self) -> Self {
        let now = now();
        self.iat = now - 7200;
        self.exp = now - 3600;
        self
    }
}

/// The claims of an email verification link: the session's plus the address and an id, for
/// their own audience.
#[derive(Clone, Debug, Serialize)]
pub struct LinkClaims {
    #[serde(flatten)]
    pub base: Claims,
    pub email: String,
    pub jti: String,
}

impl LinkClaims {
    /// A link for `user_id` at `email`, issued now and valid for a day.
    pub fn for_user(user_id: &str, email: &str) -> Self {
        let mut base = Claims::for_user(user_id);
        base.aud = "onboarding:verify-email".to_owned();
        base.exp = base.iat + 24 * 3600;
        Self {
            base,
            email: email.to_owned(),
            jti: uuid::Uuid::new_v4().simple().to_string(),
        }
    }
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs() as i64
}

/// An HS256 token over `claims`, signed with `secret`'s bytes.
pub fn forge_token(secret: &str, claims: &impl Serialize) -> String {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("encode a test token")
}

/// An unsigned token (`alg: none`) over `claims`, written by hand: header, payload, empty
/// signature.
pub fn alg_none_token(claims: &impl Serialize) -> String {
    let header = base64url(br#"{"alg":"none","typ":"JWT"}"#);
    let payload = base64url(&serde_json::to_vec(claims).expect("serialize claims"));
    format!("{header}.{payload}.")
}

/// Base64url without padding, as JWTs use it.
fn base64url(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}
