//! `POST /verifyEmail` without a link token: a signed-in person whose address is not verified
//! asks for a new link. It queues one message with its own request id, so the email goes out
//! once however often Service Bus delivers it (the send is claimed per request, as the welcome
//! email is per user), and at most `LIMIT_VERIFY_RESENDS_PER_USER` (default 3 an hour) per
//! user, counted in the store across every instance.
//!
//! Who asks: a bearer token (an API client; no cookie, so no cross-site form can send it), or
//! the session cookie together with the welcome page's anti-forgery token (a form; SameSite=Lax
//! alone does not stop every cross-site POST).

use serde_json::json;

use crate::app::App;
use crate::domain::{OnboardingMessage, User};
use crate::functions::declaration::VERIFICATION_MESSAGE;
use crate::functions::limits;
use crate::functions::signed_in::{NotSignedIn, signed_in};
use crate::functions::{InvocationError, Outputs, http, session};
use crate::pages::{self, VerifyPage};
use crate::protocol::{HttpRequest, HttpResponse};
use crate::store::{Allowance, LimitKey};

/// What the welcome page's form token is for: only this form accepts it.
pub const FORM_PURPOSE: &str = "verify-email-resend";

/// Why no link is queued.
#[derive(Debug, thiserror::Error)]
enum ResendError {
    #[error("no session")]
    SignedOut,
    #[error("the session cookie came without the form's anti-forgery token")]
    Forged,
    #[error("the address is verified already")]
    AlreadyVerified,
    #[error("the user store failed: {0}")]
    Store(#[from] crate::store::StoreError),
    #[error("PUBLIC_URL is not set, so no link can be written")]
    NoPublicUrl,
    #[error("too many new links asked for")]
    Limited { retry_after: std::time::Duration },
}

impl ResendError {
    fn into_response(self, as_page: bool) -> HttpResponse {
        let (status, kind, title, detail) = match self {
            Self::SignedOut => (
                401,
                "urn:onboarding:problem:signed-out",
                "Sign in first",
                "Sign in to ask for a new confirmation link.",
            ),
            Self::Forged => (
                403,
                "urn:onboarding:problem:forged-form",
                "Form not accepted",
                "This form did not come from your welcome page. Open the page again and retry.",
            ),
            Self::AlreadyVerified => (
                409,
                "urn:onboarding:problem:already-verified",
                "Already confirmed",
                "Your email address is already confirmed.",
            ),
            Self::Store(e) => return super::store_unavailable(&e, as_page),
            Self::Limited { retry_after } => return limited(retry_after, as_page),
            Self::NoPublicUrl => {
                tracing::error!("a verification link was asked for, but PUBLIC_URL is not set");
                return http::internal_error();
            }
        };
        let response = if as_page {
            pages::verify_page(status, &VerifyPage::Problem(title, detail))
        } else {
            http::problem(status, kind, title, detail, None)
        };
        if status == 401 {
            response.header("WWW-Authenticate", "Bearer")
        } else {
            response
        }
    }
}

/// Queues a new link for the signed-in person, or says why not.
pub(super) async fn run(
    app: &App,
    request: &HttpRequest,
    form_token: Option<&str>,
    as_page: bool,
) -> Result<Outputs, InvocationError> {
    let user = match signed_in_user(app, request, form_token).await {
        Ok(user) => user,
        Err(e) => {
            if !matches!(e, ResendError::Store(_)) {
                tracing::info!(outcome = %e, "new verification link refused");
            }
            return Ok(Outputs::http(e.into_response(as_page)));
        }
    };
    let message = OnboardingMessage::verification_for(&user);
    tracing::info!(user_id = %user.id, "new verification link queued");
    let response = if as_page {
        pages::verify_page(202, &VerifyPage::Resent(&user.email))
    } else {
        http::json(202, &json!({"status": "queued"}))
    };
    Ok(Outputs::http(response).with_message(VERIFICATION_MESSAGE, json!(message)))
}

/// The person asking, if they are signed in, not yet verified, and (with a cookie) the form is
/// their own.
async fn signed_in_user(
    app: &App,
    request: &HttpRequest,
    form_token: Option<&str>,
) -> Result<User, ResendError> {
    let (token, from_cookie) = match http::bearer_token(request) {
        Some(token) => (token, false),
        None => (
            session::cookie_token(request).ok_or(ResendError::SignedOut)?,
            true,
        ),
    };
    if from_cookie
        && !form_token.is_some_and(|given| app.form_tokens.check(FORM_PURPOSE, token, given))
    {
        return Err(ResendError::Forged);
    }
    // Signed in as `GET /` checks it: a token from before a sign-out everywhere asks for nothing.
    let account = signed_in(app, token).await.map_err(|why| match why {
        NotSignedIn::Store(e) => ResendError::Store(e),
        why => {
            tracing::info!(%why, "session refused");
            ResendError::SignedOut
        }
    })?;
    let user_id = account.user.id;
    if account.email_verified {
        return Err(ResendError::AlreadyVerified);
    }
    if app.public_url.is_none() {
        return Err(ResendError::NoPublicUrl);
    }
    // Counted last, so only a request that would send is charged.
    let key = LimitKey::ResendsPerUser(user_id).to_string();
    match app
        .store
        .admit(&key, app.limits.verify_resends_per_user)
        .await?
    {
        Allowance::Allowed => Ok(account.user),
        Allowance::Limited { retry_after } => Err(ResendError::Limited { retry_after }),
    }
}

/// 429 with `Retry-After` (whole seconds, rounded up), the same problem as every other limit's,
/// or a page saying so for a browser.
fn limited(retry_after: std::time::Duration, as_page: bool) -> HttpResponse {
    const DETAIL: &str = "You asked for new links too often. Check your inbox for the last one.";
    if !as_page {
        return limits::too_many_requests(retry_after, DETAIL);
    }
    let seconds = Allowance::retry_after_seconds(retry_after);
    let detail = format!("{DETAIL} Try again in {}.", limits::wait_in_words(seconds));
    pages::verify_page(429, &VerifyPage::Problem("Not so fast", &detail))
        .header("Retry-After", seconds.to_string())
}
