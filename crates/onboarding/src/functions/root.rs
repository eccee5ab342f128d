//! `GET /`: the signed-in user's profile (JSON, or the welcome page for browsers), or a redirect
//! to sign-up.

use serde::Serialize;

use super::body::FORM_TOKEN_FIELD;
use super::declaration::HTTP_REQUEST;
use super::signed_in::{NotSignedIn, signed_in};
use super::{InvocationError, Outputs, http, session, sign_out, verify_email};
use crate::app::App;
use crate::domain::{Account, OnboardingStatus, Refusal, UserId};
use crate::pages;
use crate::protocol::{HttpRequest, HttpResponse, Invocation};

/// Where anyone without a valid session is sent.
const SIGN_UP_PATH: &str = "/createUser";

/// Answers the profile for a valid token (an `Authorization: Bearer` header first, else the
/// session cookie); otherwise 302 to sign-up, with `WWW-Authenticate` when a token was presented
/// and refused (RFC 6750), so API clients can tell the two apart.
pub async fn run(app: &App, invocation: &Invocation) -> Result<Outputs, InvocationError> {
    let request = invocation.http_request(HTTP_REQUEST)?;
    let from_cookie = http::bearer_token(&request).is_none();
    let Some(token) = http::bearer_token(&request).or_else(|| session::cookie_token(&request))
    else {
        return Ok(Outputs::http(http::redirect(302, SIGN_UP_PATH)));
    };
    let response = match signed_in(app, token).await {
        Ok(account) if pages::prefers_html(&request) => welcome(app, token, &account),
        Ok(account) => http::json(200, &Profile::of(&account)),
        Err(NotSignedIn::Store(e)) => {
            tracing::error!(error = %e, "profile lookup failed");
            http::unavailable("The user store is not answering; try again shortly.")
        }
        // A sign-out everywhere refuses every token issued before it, cached or not.
        Err(why) => {
            tracing::info!(%why, "session refused");
            rejected(&request, from_cookie)
        }
    };
    Ok(Outputs::http(response))
}

/// The welcome page, its two forms each with this session's token for their purpose.
fn welcome(app: &App, token: &str, account: &Account) -> HttpResponse {
    let resend = app.form_tokens.issue(verify_email::RESEND_PURPOSE, token);
    let sign_out = app.form_tokens.issue(sign_out::FORM_PURPOSE, token);
    let forms = pages::WelcomeForms {
        field: FORM_TOKEN_FIELD,
        resend: &resend,
        sign_out: &sign_out,
    };
    pages::welcome_page(account, &forms)
}

/// The profile as API clients get it (docs/openapi.json, `Profile`).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Profile<'a> {
    id: UserId,
    name: &'a str,
    email: &'a str,
    created_at: String,
    onboarding: OnboardingStatus,
    /// Only when `undeliverable`: the receiving server's reply code and text, so the person (or
    /// support) can see why, e.g. `550` `5.1.1 mailbox unknown`.
    #[serde(skip_serializing_if = "Option::is_none")]
    onboarding_detail: Option<&'a Refusal>,
    /// Whether the person confirmed, from a link sent there, that the address is theirs.
    email_verified: bool,
}

impl<'a> Profile<'a> {
    fn of(account: &'a Account) -> Self {
        let (user, onboarding) = (&account.user, &account.onboarding);
        Self {
            id: user.id,
            name: user.name.as_str(),
            email: user.email.as_str(),
            created_at: user.created_at_rfc3339(),
            onboarding: onboarding.status(),
            onboarding_detail: onboarding.refusal(),
            email_verified: account.email_verified,
        }
    }
}

/// The redirect for a refused token; a refused cookie is also cleared, so the browser stops
/// sending it.
fn rejected(request: &HttpRequest, from_cookie: bool) -> HttpResponse {
    let response = http::redirect(302, SIGN_UP_PATH)
        .header("WWW-Authenticate", r#"Bearer error="invalid_token""#);
    if from_cookie {
        response.header(
            "Set-Cookie",
            session::clear_cookie(session::is_https(request)),
        )
    } else {
        response
    }
}
