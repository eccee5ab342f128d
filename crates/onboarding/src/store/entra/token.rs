//! One Entra ID token for Redis, from the App Service / Azure Functions managed identity
//! endpoint, in its documented REST form:
//! `GET $IDENTITY_ENDPOINT?resource=…&api-version=2019-08-01&client_id=…` with the header
//! `X-IDENTITY-HEADER: $IDENTITY_HEADER`, answered with `access_token` and `expires_on` (Unix
//! seconds, as a string).
//! <https://learn.microsoft.com/en-us/azure/app-service/overview-managed-identity#rest-endpoint-reference>

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use secrecy::SecretString;
use serde::Deserialize;

use crate::config::{ManagedIdentity, expose};

/// The resource Azure Managed Redis (and Azure Cache for Redis) accepts tokens for. The docs
/// give the scope `https://redis.azure.com/.default`; the App Service endpoint takes the
/// resource, which is the scope without `/.default`.
/// <https://learn.microsoft.com/en-us/azure/redis/entra-for-authentication>
pub(super) const RESOURCE: &str = "https://redis.azure.com";
/// The endpoint's API version (the older 2017-09-01 form is only for Linux Consumption).
pub(super) const API_VERSION: &str = "2019-08-01";
/// Bound on one request to the endpoint (it is local to the instance).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How much of an error answer's body is kept for the log.
const MAX_DETAIL: usize = 200;

/// Why no token came: the endpoint is down, refused, or answered something unusable. None of
/// them carries a token or the identity header.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// At start: the HTTP client (its TLS setup) could not be made; the handler cannot run.
    #[error("the HTTP client for the managed identity endpoint could not be built: {0}")]
    Setup(String),
    /// No answer (refused, reset, timed out): retried, the current token stays in use.
    #[error("the managed identity endpoint could not be reached: {0}")]
    Unreachable(String),
    /// A non-2xx answer, with the start of its body (an identity not assigned to the app, a
    /// wrong client id, a platform hiccup): retried likewise.
    #[error("the managed identity endpoint answered HTTP {status}: {detail}")]
    Refused { status: u16, detail: String },
    /// A 2xx answer without a usable token (no `oid`, no expiry, already expired).
    #[error("the managed identity endpoint's answer is unusable: {0}")]
    Malformed(String),
}

/// A token as Redis takes it: the user name (the identity's object id) and the password (the
/// token itself), with how long it stays valid.
pub(super) struct AccessToken {
    pub(super) user: String,
    pub(super) secret: SecretString,
    /// From when it arrived until `expires_on`.
    pub(super) life: Duration,
}

/// Fetches tokens for one user-assigned identity.
pub(super) struct TokenSource {
    client: reqwest::Client,
    identity: ManagedIdentity,
}

impl TokenSource {
    /// Prepares the HTTP client (no request yet).
    pub(super) fn new(identity: ManagedIdentity) -> Result<Self, TokenError> {
        let client = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            // The endpoint is on the instance itself; an app-wide proxy setting must not apply.
            .no_proxy()
            .build()
            .map_err(|e| TokenError::Setup(error_chain(&e)))?;
        Ok(Self { client, identity })
    }

    /// Asks the endpoint for a new token.
    pub(super) async fn fetch(&self) -> Result<AccessToken, TokenError> {
        let response = self
            .client
            .get(self.identity.endpoint.clone())
            .query(&[
                ("resource", RESOURCE),
                ("api-version", API_VERSION),
                ("client_id", self.identity.client_id.as_str()),
            ])
            .header("X-IDENTITY-HEADER", expose(&self.identity.header))
            .send()
            .await
            .map_err(|e| TokenError::Unreachable(error_chain(&e.without_url())))?;
        let status = response.status();
        let body = response
            .bytes()
            .await
            .map_err(|e| TokenError::Unreachable(error_chain(&e.without_url())))?;
        if !status.is_success() {
            return Err(TokenError::Refused {
                status: status.as_u16(),
                detail: detail_of(&body),
            });
        }
        parse_answer(&body, SystemTime::now())
    }
}

/// The endpoint's JSON answer; only what is used.
#[derive(Deserialize)]
struct Answer {
    access_token: String,
    /// Unix seconds, documented as a string; a number is accepted too.
    #[serde(default)]
    expires_on: Option<serde_json::Value>,
}

/// The claims read from the token. It is not verified: it comes from the platform, and Redis
/// verifies it.
#[derive(Deserialize)]
struct Claims {
    #[serde(default)]
    oid: Option<String>,
    #[serde(default)]
    exp: Option<u64>,
}

/// Reads an answer received at `now`: the token, its `oid` (the Redis user: "the user is the
/// object ID of the managed identity", per the Entra ID page above) and its remaining life.
pub(super) fn parse_answer(body: &[u8], now: SystemTime) -> Result<AccessToken, TokenError> {
    let answer: Answer = serde_json::from_slice(body).map_err(|e| {
        TokenError::Malformed(format!("not the expected JSON ({})", json_error_kind(&e)))
    })?;
    let claims = claims_of(&answer.access_token)?;
    let user = claims
        .oid
        .filter(|oid| !oid.is_empty())
        .ok_or_else(|| TokenError::Malformed("the token has no oid claim".to_owned()))?;
    let expires_on = match answer.expires_on.as_ref().and_then(unix_seconds) {
        Some(seconds) => seconds,
        None => claims.exp.ok_or_else(|| {
            TokenError::Malformed(
                "neither expires_on nor the token's exp says when it expires".to_owned(),
            )
        })?,
    };
    let now = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    let life = Duration::from_secs(expires_on).saturating_sub(now);
    if life.is_zero() {
        return Err(TokenError::Malformed(
            "the token has already expired".to_owned(),
        ));
    }
    Ok(AccessToken {
        user,
        secret: SecretString::from(answer.access_token),
        life,
    })
}

fn unix_seconds(value: &serde_json::Value) -> Option<u64> {
    match value {
        serde_json::Value::String(text) => text.trim().parse().ok(),
        serde_json::Value::Number(number) => number.as_u64(),
        _ => None,
    }
}

/// Decodes the JWT's payload (its middle part, base64url) without verifying the signature.
fn claims_of(token: &str) -> Result<Claims, TokenError> {
    let malformed = || TokenError::Malformed("the access token is not a JWT".to_owned());
    let payload = token.split('.').nth(1).ok_or_else(malformed)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .map_err(|_| malformed())?;
    serde_json::from_slice(&bytes).map_err(|_| malformed())
}

/// An error answer's text, short, for the log; dropped if it might hold a token.
fn detail_of(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    if text.contains("eyJ") || text.contains("access_token") {
        return "(body withheld: it may hold a token)".to_owned();
    }
    let mut detail: String = text.chars().take(MAX_DETAIL).collect();
    if detail.is_empty() {
        detail.push_str("(empty body)");
    }
    detail
}

/// An error with its causes ("error sending request: … connection refused"), whose first line
/// alone rarely says what went wrong.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// The kind of JSON error only: serde's message could quote part of the body.
fn json_error_kind(error: &serde_json::Error) -> &'static str {
    match error.classify() {
        serde_json::error::Category::Io => "I/O",
        serde_json::error::Category::Syntax => "syntax error",
        serde_json::error::Category::Data => "missing or mistyped field",
        serde_json::error::Category::Eof => "truncated",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OID: &str = "7d3a1f0e-4c0b-4a8e-9f44-2f2b9d6c1a55";

    fn jwt(claims: serde_json::Value) -> String {
        let encode = |v: &serde_json::Value| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
        };
        let header = serde_json::json!({"typ": "JWT", "alg": "RS256"});
        format!("{}.{}.c2lnbmF0dXJl", encode(&header), encode(&claims))
    }

    fn at(unix: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(unix)
    }

    #[test]
    fn the_documented_answer_gives_the_oid_and_the_remaining_life() {
        let token = jwt(serde_json::json!({"oid": OID, "exp": 1_586_984_735u64}));
        let body = serde_json::json!({
            "access_token": token,
            "expires_on": "1586984735",
            "resource": RESOURCE,
            "token_type": "Bearer",
            "client_id": "5E29463D-0000-0000-0000-000000000000",
        });
        let parsed = parse_answer(body.to_string().as_bytes(), at(1_586_984_735 - 3600)).unwrap();
        assert_eq!(parsed.user, OID);
        assert_eq!(parsed.life, Duration::from_secs(3600));
        assert_eq!(expose(&parsed.secret), token);
    }

    #[test]
    fn expires_on_as_a_number_or_only_in_the_token_is_accepted() {
        let token = jwt(serde_json::json!({"oid": OID, "exp": 1_000_020u64}));
        let numeric = serde_json::json!({"access_token": token, "expires_on": 1_000_010u64});
        let parsed = parse_answer(numeric.to_string().as_bytes(), at(1_000_000)).unwrap();
        assert_eq!(parsed.life, Duration::from_secs(10));
        let bare = serde_json::json!({"access_token": token});
        let parsed = parse_answer(bare.to_string().as_bytes(), at(1_000_000)).unwrap();
        assert_eq!(parsed.life, Duration::from_secs(20));
    }

    #[test]
    fn a_token_without_oid_is_refused_rather_than_guessing_a_user() {
        let token = jwt(serde_json::json!({"sub": "someone", "exp": 2_000_000u64}));
        let body = serde_json::json!({"access_token": token, "expires_on": "2000000"});
        let err = parse_answer(body.to_string().as_bytes(), at(1_000_000))
            .err()
            .unwrap();
        assert!(err.to_string().contains("no oid"), "{err}");
    }

    #[test]
    fn an_expired_or_opaque_token_is_refused_without_quoting_it() {
        let token = jwt(serde_json::json!({"oid": OID}));
        let body = serde_json::json!({"access_token": token, "expires_on": "999"});
        let err = parse_answer(body.to_string().as_bytes(), at(1_000))
            .err()
            .unwrap();
        assert!(err.to_string().contains("already expired"), "{err}");
        let body = serde_json::json!({"access_token": "opaque-secret", "expires_on": "2000"});
        let err = parse_answer(body.to_string().as_bytes(), at(1_000))
            .err()
            .unwrap();
        assert!(!err.to_string().contains("opaque-secret"), "{err}");
    }

    #[test]
    fn malformed_json_errors_do_not_quote_the_body() {
        let err = parse_answer(br#"{"access_token": 42, "x": "eyJsecret"}"#, at(0))
            .err()
            .unwrap();
        assert!(!err.to_string().contains("eyJ"), "{err}");
    }

    #[test]
    fn an_error_body_that_might_hold_a_token_is_withheld() {
        assert!(detail_of(br#"{"access_token":"eyJhbGci"}"#).contains("withheld"));
        assert_eq!(
            detail_of(
                br#"{"statusCode":400,"message":"Unable to load the proper Managed Identity."}"#
            ),
            r#"{"statusCode":400,"message":"Unable to load the proper Managed Identity."}"#
        );
    }
}
