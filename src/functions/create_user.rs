//! `GET|POST /createUser`: registers a user, answers at once with a token, and queues the
//! onboarding email.

use serde_json::{Value, json};
use time::OffsetDateTime;

use super::declaration::{HTTP_REQUEST, ONBOARDING_MESSAGE};
use super::{InvocationError, Outputs, http};
use crate::app::App;
use crate::auth::HashError;
use crate::domain::{
    OnboardingMessage, OnboardingStatus, RawField, SignUp, SignUpRejection, User, UserId,
};
use crate::protocol::{HttpRequest, HttpResponse, Invocation};
use crate::store::{Insert, StoreError};

/// Largest sign-up body accepted.
pub const MAX_BODY_BYTES: usize = 16 * 1024;

/// Why a sign-up did not succeed: client faults become 4xx, the rest 5xx.
#[derive(Debug, thiserror::Error)]
enum SignUpError {
    #[error("the request body is too large")]
    TooLarge,
    #[error("unsupported media type {0:?}")]
    UnsupportedMediaType(Option<String>),
    #[error("the body is not valid JSON: {0}")]
    MalformedJson(String),
    #[error("the sign-up has invalid fields")]
    Invalid(SignUpRejection),
    #[error("the email is registered with another password")]
    EmailTaken,
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Hash(#[from] HashError),
    #[error("a token could not be issued: {0}")]
    Token(#[from] crate::auth::TokenError),
}

impl SignUpError {
    fn into_response(self) -> HttpResponse {
        match self {
            Self::TooLarge => http::problem(
                413,
                "about:blank",
                "Content Too Large",
                &format!("The body must be at most {MAX_BODY_BYTES} bytes."),
                None,
            ),
            Self::UnsupportedMediaType(got) => http::problem(
                415,
                "about:blank",
                "Unsupported Media Type",
                &format!(
                    "Send the sign-up as application/json (got {}).",
                    got.as_deref().unwrap_or("no Content-Type")
                ),
                None,
            )
            .header("Accept-Post", "application/json"),
            Self::MalformedJson(why) => http::problem(
                400,
                "urn:onboarding:problem:malformed-body",
                "Malformed request body",
                &format!("The body must be a JSON object with name, email and password: {why}."),
                None,
            ),
            Self::Invalid(rejection) => {
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
                    "Invalid sign-up",
                    &format!("Check these fields: {}.", fields.join(", ")),
                    Some(json!({ "errors": errors })),
                )
            }
            Self::EmailTaken => http::problem(
                409,
                "urn:onboarding:problem:email-taken",
                "Email already registered",
                "This email is already registered with another password.",
                None,
            ),
            Self::Store(e) => {
                tracing::error!(error = %e, "sign-up could not reach the store");
                http::unavailable(
                    "The user store is not answering; nothing was saved. Try again shortly.",
                )
            }
            Self::Hash(e) => {
                tracing::error!(error = %e, "password hashing failed");
                http::internal_error()
            }
            Self::Token(e) => {
                tracing::error!(error = %e, "token signing failed");
                http::internal_error()
            }
        }
    }
}

/// A sign-up that went through: who, whether it is new, and whether to queue the email.
struct Registered {
    user: User,
    created: bool,
    queue_email: bool,
}

/// GET describes the sign-up; POST registers.
pub async fn run(app: &App, invocation: &Invocation) -> Result<Outputs, InvocationError> {
    let request = invocation.http_request(HTTP_REQUEST)?;
    if request.method != "POST" {
        return Ok(Outputs::http(describe()));
    }
    match register(app, &request).await {
        Ok(registered) => answer(app, registered).or_else(|e| Ok(Outputs::http(e.into_response()))),
        Err(e) => {
            if !matches!(e, SignUpError::Store(_) | SignUpError::Hash(_)) {
                tracing::info!(outcome = %e, "sign-up refused");
            }
            Ok(Outputs::http(e.into_response()))
        }
    }
}

async fn register(app: &App, request: &HttpRequest) -> Result<Registered, SignUpError> {
    let sign_up = parse_body(request)?;
    let user = User {
        id: UserId::new(),
        name: sign_up.name,
        email: sign_up.email,
        created_at: OffsetDateTime::now_utc(),
        password_hash: app.hasher.hash(&sign_up.password).await?,
    };
    match app.store.insert_user(&user).await? {
        Insert::Created => {
            tracing::info!(user_id = %user.id, "user created");
            Ok(Registered {
                user,
                created: true,
                queue_email: true,
            })
        }
        Insert::EmailTaken(Some(existing))
            if app
                .hasher
                .verify(&sign_up.password, &existing.password_hash)
                .await? =>
        {
            // A retry of the same sign-up (a lost answer, a double click): sign in again, and
            // queue the email again only if it has not gone out.
            let pending =
                app.store.onboarding_status(existing.id).await? == OnboardingStatus::Pending;
            tracing::info!(user_id = %existing.id, resend = pending, "sign-up repeated");
            Ok(Registered {
                user: existing,
                created: false,
                queue_email: pending,
            })
        }
        Insert::EmailTaken(_) => Err(SignUpError::EmailTaken),
    }
}

fn parse_body(request: &HttpRequest) -> Result<SignUp, SignUpError> {
    let body = request.body.as_deref().unwrap_or("");
    if body.len() > MAX_BODY_BYTES {
        return Err(SignUpError::TooLarge);
    }
    let media_type = http::media_type(request);
    if !media_type.as_deref().is_some_and(http::is_json) {
        return Err(SignUpError::UnsupportedMediaType(media_type));
    }
    let value: Value =
        serde_json::from_str(body).map_err(|e| SignUpError::MalformedJson(e.to_string()))?;
    let Value::Object(fields) = value else {
        return Err(SignUpError::MalformedJson("it is not an object".to_owned()));
    };
    let raw = |name: &str| match fields.get(name) {
        None | Some(Value::Null) => RawField::Missing,
        Some(Value::String(text)) => RawField::Text(text),
        Some(_) => RawField::WrongType,
    };
    SignUp::parse(raw("name"), raw("email"), raw("password")).map_err(SignUpError::Invalid)
}

fn answer(app: &App, registered: Registered) -> Result<Outputs, SignUpError> {
    let Registered {
        user,
        created,
        queue_email,
    } = registered;
    let token = app.tokens.issue(user.id)?;
    let body = json!({
        "id": user.id,
        "name": user.name.as_str(),
        "email": user.email.as_str(),
        "createdAt": user.created_at_rfc3339(),
        "token": token.token,
        "tokenType": "Bearer",
        "expiresIn": token.expires_in,
    });
    let response = if created {
        http::json(201, &body).header("Location", "/")
    } else {
        http::json(200, &body)
    };
    let mut outputs = Outputs::http(response);
    if queue_email {
        let message = serde_json::to_value(OnboardingMessage::for_user(&user)).unwrap_or_default();
        outputs = outputs.with_message(ONBOARDING_MESSAGE, message);
    }
    Ok(outputs)
}

/// What `GET /createUser` answers to API clients: how to sign up.
fn describe() -> HttpResponse {
    use crate::domain::{MAX_EMAIL_LEN, MAX_NAME_CHARS, MAX_PASSWORD_CHARS, MIN_PASSWORD_CHARS};
    http::json(
        200,
        &json!({
            "description": "Create an account: POST a JSON object to this URL.",
            "method": "POST",
            "contentType": "application/json",
            "fields": {
                "name": {"type": "string", "minLength": 1, "maxLength": MAX_NAME_CHARS},
                "email": {"type": "string", "format": "email", "maxLength": MAX_EMAIL_LEN},
                "password": {"type": "string", "minLength": MIN_PASSWORD_CHARS, "maxLength": MAX_PASSWORD_CHARS},
            },
            "example": {"name": "Ada Lovelace", "email": "ada@example.com", "password": "correct horse battery"},
        }),
    )
}
