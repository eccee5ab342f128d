//! `GET|POST /createUser`: registers a user, answers at once with a token (or, for a browser's
//! form, a session cookie), and queues the onboarding email.

use serde_json::{Map, Value, json};
use time::OffsetDateTime;

use super::body::{BodyError, FORM, read_fields};
use super::declaration::{HTTP_REQUEST, ONBOARDING_MESSAGE};
use super::limits::{self, LimitError};
use super::{InvocationError, Outputs, client_ip, http, session};
use crate::app::App;
use crate::auth::HashError;
use crate::domain::{
    ClientAddress, FieldError, FieldProblem, OnboardingMessage, OnboardingStatus, RawField, SignUp,
    SignUpRejection, User, UserId,
};
use crate::pages::{self, SignUpForm};
use crate::protocol::{HttpRequest, HttpResponse, Invocation};
use crate::store::{Insert, LimitKey, StoreError};

/// Why a sign-up did not succeed: client faults become 4xx, the rest 5xx.
#[derive(Debug, thiserror::Error)]
enum SignUpError {
    #[error(transparent)]
    Body(#[from] BodyError),
    #[error("the sign-up has invalid fields")]
    Invalid(SignUpRejection),
    #[error("the email is registered with another password")]
    EmailTaken,
    #[error("another sign-up for this email is being saved")]
    SignUpInProgress,
    #[error("too many sign-ups from this address or for this mailbox")]
    Limited(std::time::Duration),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Hash(#[from] HashError),
    #[error("a token could not be issued: {0}")]
    Token(#[from] crate::auth::TokenError),
}

impl From<LimitError> for SignUpError {
    fn from(error: LimitError) -> Self {
        match error {
            LimitError::Limited { retry_after } => Self::Limited(retry_after),
            LimitError::Store(e) => Self::Store(e),
        }
    }
}

impl SignUpError {
    fn into_response(self) -> HttpResponse {
        match self {
            Self::Body(e) => e.into_response("the sign-up", "name, email and password"),
            Self::Invalid(rejection) => invalid_fields(&rejection),
            Self::EmailTaken => http::problem(
                409,
                "urn:onboarding:problem:email-taken",
                "Email already registered",
                "This email is already registered with another password.",
                None,
            ),
            Self::SignUpInProgress => http::problem(
                503,
                "urn:onboarding:problem:sign-up-in-progress",
                "Sign-up in progress",
                "Another sign-up for this email is being saved. Try again in a few seconds.",
                None,
            )
            .header("Retry-After", "2"),
            Self::Limited(retry_after) => limits::too_many_requests(
                retry_after,
                "Too many sign-ups from your network or for this email address.",
            ),
            Self::Store(e) => store_failure(&e),
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

    /// The same failure as the sign-up page shows it: messages beside fields, typed values kept
    /// (never the password).
    fn into_page(self, fields: &Map<String, Value>) -> HttpResponse {
        let text = |name: &str| fields.get(name).and_then(Value::as_str).unwrap_or("");
        let mut form = SignUpForm {
            name: text("name"),
            email: text("email"),
            ..SignUpForm::default()
        };
        let status = match self {
            Self::Invalid(rejection) => {
                form.errors = rejection
                    .errors
                    .iter()
                    .map(|e| (e.field, page_message(e)))
                    .collect();
                if rejection.is_malformed() { 400 } else { 422 }
            }
            Self::EmailTaken => {
                form.errors = vec![(
                    "email",
                    "This email is already registered. If it is yours, enter the password you \
                     signed up with."
                        .to_owned(),
                )];
                409
            }
            Self::Limited(retry_after) => {
                let seconds = crate::store::Allowance::retry_after_seconds(retry_after);
                form.banner = Some(format!(
                    "Too many accounts were created from your network or for this email \
                     address just now. Please try again in {}.",
                    limits::wait_in_words(seconds)
                ));
                return pages::sign_up_page(429, &form).header("Retry-After", seconds.to_string());
            }
            other => {
                let status = other.into_response().status_code;
                form.banner = Some(
                    match status {
                        413 => "That was too much data for a sign-up.",
                        415 | 400 => "The form could not be read; please try again.",
                        503 => "We cannot save accounts right now. Nothing was saved; please try again shortly.",
                        _ => "Something went wrong on our side. Please try again.",
                    }
                    .to_owned(),
                );
                status
            }
        };
        pages::sign_up_page(status, &form)
    }
}

/// A field's message as the form shows it: a sentence telling the person what to do.
fn page_message(error: &FieldError) -> String {
    let noun = match error.field {
        "email" => "an email address",
        "password" => "a password",
        _ => "your name",
    };
    match &error.problem {
        FieldProblem::Missing | FieldProblem::WrongType => format!("Enter {noun}."),
        FieldProblem::Invalid(_)
            if error.field == "email" && !error.detail().contains("at most") =>
        {
            "Enter an email address such as name@example.com.".to_owned()
        }
        FieldProblem::Invalid(why) => {
            let mut field = error.field.to_owned();
            field[..1].make_ascii_uppercase();
            format!("{field} {why}.")
        }
    }
}

/// A sign-up that went through: who, whether it is new, and whether to queue the email.
struct Registered {
    user: User,
    created: bool,
    queue_email: bool,
}

/// GET shows the form (browsers) or describes the API; POST registers.
pub async fn run(app: &App, invocation: &Invocation) -> Result<Outputs, InvocationError> {
    let request = invocation.http_request(HTTP_REQUEST)?;
    let is_form = http::media_type(&request).as_deref() == Some(FORM);
    // The page for a browser (it asks for text/html), problem JSON for everyone else: curl's
    // `-d` posts a form too, but asks for `*/*`.
    let as_page = pages::prefers_html(&request);
    if request.method != "POST" {
        return Ok(Outputs::http(if as_page {
            pages::sign_up_page(200, &SignUpForm::default())
        } else {
            describe()
        }));
    }
    let client = client_ip::client_address(&request);
    let (fields, result) = match read_fields(&request) {
        Ok(fields) => {
            let result = match parse_fields(&fields) {
                Ok(sign_up) => register(app, sign_up, &client).await,
                Err(e) => Err(e),
            };
            (fields, result)
        }
        Err(e) => (Map::new(), Err(e.into())),
    };
    let result =
        result.and_then(|registered| answer(app, registered, &request, is_form && as_page));
    match result {
        Ok(outputs) => Ok(outputs),
        Err(e) => {
            if !matches!(
                e,
                SignUpError::Store(_) | SignUpError::Hash(_) | SignUpError::Token(_)
            ) {
                tracing::info!(outcome = %e, "sign-up refused");
            }
            let response = if as_page {
                e.into_page(&fields)
            } else {
                e.into_response()
            };
            Ok(Outputs::http(response))
        }
    }
}

async fn register(
    app: &App,
    sign_up: SignUp,
    client: &ClientAddress,
) -> Result<Registered, SignUpError> {
    // Before the hash, so a request past a limit costs one store round trip per limit, no CPU.
    limits::admit_each(
        app,
        &[
            (
                LimitKey::SignUpsPerAddress(client),
                app.limits.sign_ups_per_address,
            ),
            (
                LimitKey::SignUpsPerMailbox(&sign_up.email),
                app.limits.sign_ups_per_mailbox,
            ),
        ],
    )
    .await?;
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
            app.store.confirm_replicated(&existing).await?;
            let pending =
                app.store.onboarding_status(existing.id).await? == OnboardingStatus::Pending;
            tracing::info!(user_id = %existing.id, resend = pending, "sign-up repeated");
            Ok(Registered {
                user: existing,
                created: false,
                queue_email: pending,
            })
        }
        Insert::EmailTaken(Some(_)) => Err(SignUpError::EmailTaken),
        // The first sign-up is between its claim and its record (or crashed there, and its
        // claim is running out): neither a conflict nor a success yet.
        Insert::EmailTaken(None) => Err(SignUpError::SignUpInProgress),
    }
}

fn parse_fields(fields: &Map<String, Value>) -> Result<SignUp, SignUpError> {
    let raw = |name: &str| match fields.get(name) {
        None | Some(Value::Null) => RawField::Missing,
        Some(Value::String(text)) => RawField::Text(text),
        Some(_) => RawField::WrongType,
    };
    SignUp::parse(raw("name"), raw("email"), raw("password")).map_err(SignUpError::Invalid)
}

/// The success answer: JSON with the token for API clients (201 new, 200 repeated), or a session
/// cookie and a 303 to the welcome page for a browser's form; plus the queue message when due.
fn answer(
    app: &App,
    registered: Registered,
    request: &HttpRequest,
    browser_form: bool,
) -> Result<Outputs, SignUpError> {
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
    let response = if browser_form {
        let cookie =
            session::set_cookie(&token.token, app.tokens.ttl(), session::is_https(request));
        http::redirect(303, "/").header("Set-Cookie", cookie)
    } else if created {
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
/// 400 for fields that are not even text, 422 for values that break a rule; each field with
/// what to change.
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
        "Invalid sign-up",
        &format!("Check these fields: {}.", fields.join(", ")),
        Some(json!({ "errors": errors })),
    )
}

/// 503 when the store failed: a write no replica confirmed may be sent again and succeeds; any
/// other failure saved nothing.
fn store_failure(error: &StoreError) -> HttpResponse {
    if let StoreError::NotReplicated(waited) = error {
        tracing::warn!(?waited, "sign-up saved but not confirmed by a replica");
        return http::problem(
            503,
            "urn:onboarding:problem:not-replicated",
            "Sign-up not yet safe",
            "The account was saved but no replica confirmed it in time, so it is not \
             acknowledged. Send the same sign-up again: with the same password it succeeds.",
            None,
        )
        .header("Retry-After", "2");
    }
    tracing::error!(%error, "sign-up could not reach the store");
    http::unavailable("The user store is not answering; nothing was saved. Try again shortly.")
}
