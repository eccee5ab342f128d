//! `GET|POST /signIn`: checks an email and password and answers a token (API clients) or a
//! session cookie (a browser's form). A wrong password and an unknown email get the same 401 in
//! the same time (an unknown email is checked against a dummy hash), and failed sign-ins are
//! limited per client address and per account before any hash is computed.

use std::time::Duration;

use serde_json::{Map, Value, json};

use super::body::{BodyError, FORM, read_fields};
use super::declaration::HTTP_REQUEST;
use super::limits::{self, LimitError};
use super::{InvocationError, Outputs, client_ip, http, session};
use crate::app::App;
use crate::auth::{DUMMY_HASH, HashError, TokenError};
use crate::domain::{Account, ClientAddress, RawField, SignIn, SignUpRejection};
use crate::pages::{self, SignInForm};
use crate::protocol::{HttpRequest, HttpResponse, Invocation};
use crate::store::{Allowance, LimitKey, StoreError};

/// What a refused sign-in says, whichever of the two was wrong.
const REFUSED: &str = "The email or the password is wrong.";

/// Why a sign-in did not succeed: client faults become 4xx, the rest 5xx.
#[derive(Debug, thiserror::Error)]
enum SignInError {
    #[error(transparent)]
    Body(#[from] BodyError),
    #[error("the sign-in has invalid fields")]
    Invalid(SignUpRejection),
    #[error("wrong email or password")]
    Refused,
    #[error("too many failed sign-ins")]
    Limited(Duration),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Hash(#[from] HashError),
    #[error("a token could not be issued: {0}")]
    Token(#[from] TokenError),
}

impl From<LimitError> for SignInError {
    fn from(error: LimitError) -> Self {
        match error {
            LimitError::Limited { retry_after } => Self::Limited(retry_after),
            LimitError::Store(e) => Self::Store(e),
        }
    }
}

impl SignInError {
    fn into_response(self) -> HttpResponse {
        match self {
            Self::Body(e) => e.into_response("the sign-in", "email and password"),
            Self::Invalid(rejection) => invalid_fields(&rejection),
            Self::Refused => http::problem(
                401,
                "urn:onboarding:problem:sign-in-refused",
                "Sign-in refused",
                REFUSED,
                None,
            )
            .header("WWW-Authenticate", r#"Bearer realm="onboarding""#),
            Self::Limited(retry_after) => limits::too_many_requests(
                retry_after,
                "Too many failed sign-ins from your network or for this account.",
            ),
            Self::Store(e) => {
                tracing::error!(error = %e, "sign-in could not reach the store");
                http::unavailable("The user store is not answering; try again shortly.")
            }
            Self::Hash(e) => {
                tracing::error!(error = %e, "password check failed");
                http::internal_error()
            }
            Self::Token(e) => {
                tracing::error!(error = %e, "token signing failed");
                http::internal_error()
            }
        }
    }

    /// The same failure as the sign-in page shows it: one sentence, the email kept.
    fn into_page(self, email: &str) -> HttpResponse {
        let (status, banner, retry_after) = match self {
            Self::Refused => (401, REFUSED.to_owned(), None),
            Self::Invalid(rejection) => (
                if rejection.is_malformed() { 400 } else { 422 },
                "Enter the email address and password you signed up with.".to_owned(),
                None,
            ),
            Self::Limited(wait) => {
                let seconds = Allowance::retry_after_seconds(wait);
                let text = format!(
                    "Too many failed sign-ins from your network or for this account. Please \
                     try again in {}.",
                    limits::wait_in_words(seconds)
                );
                (429, text, Some(seconds))
            }
            other => {
                let status = other.into_response().status_code;
                let text = match status {
                    503 => "We cannot sign you in right now; please try again shortly.",
                    415 | 413 | 400 => "The form could not be read; please try again.",
                    _ => "Something went wrong on our side. Please try again.",
                };
                (status, text.to_owned(), None)
            }
        };
        let form = SignInForm {
            email,
            banner: Some(banner),
        };
        let page = pages::sign_in_page(status, &form);
        match retry_after {
            Some(seconds) => page.header("Retry-After", seconds.to_string()),
            None => page,
        }
    }
}

/// GET shows the form (browsers) or describes the API; POST signs in.
pub async fn run(app: &App, invocation: &Invocation) -> Result<Outputs, InvocationError> {
    let request = invocation.http_request(HTTP_REQUEST)?;
    let as_page = pages::prefers_html(&request);
    if request.method != "POST" {
        return Ok(Outputs::http(if as_page {
            pages::sign_in_page(200, &SignInForm::default())
        } else {
            describe()
        }));
    }
    let browser_form = as_page && http::media_type(&request).as_deref() == Some(FORM);
    let client = client_ip::client_address(&request);
    let (fields, result) = match read_fields(&request) {
        Ok(fields) => {
            let result = match parse_fields(&fields) {
                Ok(attempt) => sign_in(app, attempt, &client).await,
                Err(e) => Err(e),
            };
            (fields, result)
        }
        Err(e) => (Map::new(), Err(e.into())),
    };
    let response = result.and_then(|found| answer(app, &found, &request, browser_form));
    Ok(Outputs::http(match response {
        Ok(response) => response,
        Err(e) => {
            if !matches!(
                e,
                SignInError::Store(_) | SignInError::Hash(_) | SignInError::Token(_)
            ) {
                tracing::info!(outcome = %e, "sign-in refused");
            }
            if as_page {
                e.into_page(fields.get("email").and_then(Value::as_str).unwrap_or(""))
            } else {
                e.into_response()
            }
        }
    }))
}

fn parse_fields(fields: &Map<String, Value>) -> Result<SignIn, SignInError> {
    let raw = |name: &str| match fields.get(name) {
        None | Some(Value::Null) => RawField::Missing,
        Some(Value::String(text)) => RawField::Text(text),
        Some(_) => RawField::WrongType,
    };
    SignIn::parse(raw("email"), raw("password")).map_err(SignInError::Invalid)
}

/// Charges the attempt as a failure to both limits before the hash (so a request past a limit
/// costs no hash), checks the password (against a dummy hash for an unknown email), and gives
/// the charge back when the password was right.
async fn sign_in(
    app: &App,
    attempt: SignIn,
    client: &ClientAddress,
) -> Result<Account, SignInError> {
    let charged = [
        (
            LimitKey::FailedSignInsPerAddress(client),
            app.limits.failed_sign_ins_per_address,
        ),
        (
            LimitKey::FailedSignInsPerAccount(&attempt.email),
            app.limits.failed_sign_ins_per_account,
        ),
    ];
    limits::admit_each(app, &charged).await?;
    let found = app.store.find_user_by_email(&attempt.email).await?;
    let stored = found
        .as_ref()
        .map_or(DUMMY_HASH, |found| found.user.password_hash.as_str());
    let matches = app.hasher.verify(&attempt.password, stored).await?;
    match found {
        Some(found) if matches => {
            limits::refund_each(app, &charged).await;
            tracing::info!(user_id = %found.user.id, "signed in");
            Ok(found)
        }
        _ => Err(SignInError::Refused),
    }
}

/// 200 with the token for API clients; the session cookie and a 303 to `/` for a browser's form.
fn answer(
    app: &App,
    account: &Account,
    request: &HttpRequest,
    browser_form: bool,
) -> Result<HttpResponse, SignInError> {
    let token = app
        .tokens
        .issue_not_before(account.user.id, account.tokens_valid_after)?;
    if browser_form {
        let cookie =
            session::set_cookie(&token.token, app.tokens.ttl(), session::is_https(request));
        return Ok(http::redirect(303, "/").header("Set-Cookie", cookie));
    }
    Ok(http::json(
        200,
        &json!({"token": token.token, "tokenType": "Bearer", "expiresIn": token.expires_in}),
    ))
}

/// What `GET /signIn` answers to API clients: how to sign in.
fn describe() -> HttpResponse {
    use crate::domain::{MAX_EMAIL_LEN, MAX_PASSWORD_CHARS, MIN_PASSWORD_CHARS};
    http::json(
        200,
        &json!({
            "description": "Sign in: POST a JSON object to this URL; the answer holds a bearer token.",
            "method": "POST",
            "contentType": "application/json",
            "fields": {
                "email": {"type": "string", "format": "email", "maxLength": MAX_EMAIL_LEN},
                "password": {"type": "string", "minLength": MIN_PASSWORD_CHARS, "maxLength": MAX_PASSWORD_CHARS},
            },
            "example": {"email": "ada@example.com", "password": "correct horse battery"},
        }),
    )
}

/// 400 for fields that are not even text, 422 for values that break a rule.
fn invalid_fields(rejection: &SignUpRejection) -> HttpResponse {
    let status = if rejection.is_malformed() { 400 } else { 422 };
    let errors: Vec<Value> = rejection
        .errors
        .iter()
        .map(|e| json!({"field": e.field, "detail": e.detail()}))
        .collect();
    let fields: Vec<&str> = rejection.errors.iter().map(|e| e.field).collect();
    http::problem(
        status,
        "urn:onboarding:problem:invalid-fields",
        "Invalid sign-in",
        &format!("Check these fields: {}.", fields.join(", ")),
        Some(json!({ "errors": errors })),
    )
}
