//! `GET|POST /createUser`: registers a user, answers at once with a token (or, for a browser's
//! form, a session cookie), and queues the onboarding email.

use serde_json::{Map, Value, json};
use time::OffsetDateTime;

use super::declaration::{HTTP_REQUEST, ONBOARDING_MESSAGE};
use super::{InvocationError, Outputs, http, session};
use crate::app::App;
use crate::auth::HashError;
use crate::domain::{
    FieldError, FieldProblem, OnboardingMessage, OnboardingStatus, RawField, SignUp,
    SignUpRejection, User, UserId,
};
use crate::pages::{self, SignUpForm};
use crate::protocol::{HttpRequest, HttpResponse, Invocation};
use crate::store::{Insert, StoreError};

/// The media type of an HTML form post.
const FORM: &str = "application/x-www-form-urlencoded";

/// Why a sign-up did not succeed: client faults become 4xx, the rest 5xx.
#[derive(Debug, thiserror::Error)]
enum SignUpError {
    #[error("the request body is too large")]
    TooLarge,
    #[error("unsupported media type {0:?}")]
    UnsupportedMediaType(Option<String>),
    #[error("the body is not valid JSON: {0}")]
    MalformedJson(String),
    #[error("a JSON body was sent as a form")]
    JsonSentAsForm,
    #[error("the sign-up has invalid fields")]
    Invalid(SignUpRejection),
    #[error("the email is registered with another password")]
    EmailTaken,
    #[error("another sign-up for this email is being saved")]
    SignUpInProgress,
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
            Self::TooLarge => http::content_too_large(),
            Self::UnsupportedMediaType(got) => unsupported_media_type(&format!(
                "Send the sign-up as application/json or {FORM} (got {}).",
                got.as_deref().unwrap_or("no Content-Type")
            )),
            // `curl -d '{…}'` sends exactly this: say the one thing to change.
            Self::JsonSentAsForm => unsupported_media_type(&format!(
                "The body is JSON but was sent as {FORM}: send it with the header \
                 Content-Type: application/json."
            )),
            Self::MalformedJson(why) => http::problem(
                400,
                "urn:onboarding:problem:malformed-body",
                "Malformed request body",
                &format!("The body must be a JSON object with name, email and password: {why}."),
                None,
            ),
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
    let (fields, result) = match read_fields(&request) {
        Ok(fields) => {
            let result = match parse_fields(&fields) {
                Ok(sign_up) => register(app, sign_up).await,
                Err(e) => Err(e),
            };
            (fields, result)
        }
        Err(e) => (Map::new(), Err(e)),
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

async fn register(app: &App, sign_up: SignUp) -> Result<Registered, SignUpError> {
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

/// Reads the body into named fields: a JSON object as it is, a form as text fields (the first of
/// repeated names wins).
fn read_fields(request: &HttpRequest) -> Result<Map<String, Value>, SignUpError> {
    let body = request.body.as_deref().unwrap_or("");
    if body.len() > http::MAX_BODY_BYTES {
        return Err(SignUpError::TooLarge);
    }
    match http::media_type(request) {
        Some(media) if media == FORM => {
            if looks_like_json_object(body) {
                return Err(SignUpError::JsonSentAsForm);
            }
            let mut fields = Map::new();
            for (name, value) in url::form_urlencoded::parse(body.as_bytes()) {
                fields
                    .entry(name.into_owned())
                    .or_insert(Value::String(value.into_owned()));
            }
            Ok(fields)
        }
        Some(media) if http::is_json(&media) => match serde_json::from_str::<Value>(body) {
            Ok(Value::Object(fields)) => Ok(fields),
            Ok(_) => Err(SignUpError::MalformedJson("it is not an object".to_owned())),
            Err(e) => Err(SignUpError::MalformedJson(e.to_string())),
        },
        other => Err(SignUpError::UnsupportedMediaType(other)),
    }
}

/// A body that is plainly a JSON object, whatever its declared type.
fn looks_like_json_object(body: &str) -> bool {
    body.trim_start().starts_with('{') && serde_json::from_str::<Map<String, Value>>(body).is_ok()
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
/// 415 with the media types a sign-up may use (`Accept-Post`, RFC 9110 § 15.5.16).
fn unsupported_media_type(detail: &str) -> HttpResponse {
    http::problem(415, "about:blank", "Unsupported Media Type", detail, None)
        .header("Accept-Post", format!("application/json, {FORM}"))
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
