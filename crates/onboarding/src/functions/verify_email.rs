//! `GET|POST /verifyEmail`: confirming an address from the link in an email, and asking for a
//! new link. `GET ?token=…` only shows a page with a Confirm button: mail scanners open links, so
//! opening one must change nothing. `POST` with the token confirms; `POST` without one, from a
//! signed-in person, queues a new link (`resend.rs`).

mod body;
mod resend;

use url::Url;

use super::declaration::HTTP_REQUEST;
use super::{InvocationError, Outputs, http};
use crate::app::App;
use crate::auth::TokenError;
use crate::domain::User;
use crate::pages::{self, VerifyPage};
use crate::protocol::{HttpRequest, HttpResponse, Invocation};
use body::{BodyError, VerifyBody};

pub use resend::FORM_PURPOSE as RESEND_PURPOSE;

/// The function's route, as links and forms name it.
pub const ROUTE: &str = "verifyEmail";

/// The confirmation link for this user's current address, when the public URL is known (it is
/// in Azure, and `handler dev` points it at itself).
pub fn confirm_link(app: &App, user: &User) -> Option<Url> {
    let base = app.public_url.as_ref()?;
    let token = match app.email_tokens.issue(user.id, user.email.as_str()) {
        Ok(token) => token,
        Err(e) => {
            tracing::error!(error = %e, "a verification token could not be signed");
            return None;
        }
    };
    let mut url = route_url(base, ROUTE)?;
    url.query_pairs_mut().append_pair("token", &token);
    Some(url)
}

/// `base` + `route`, keeping any path `base` has (`https://x/api` + `r` is `https://x/api/r`).
fn route_url(base: &Url, route: &str) -> Option<Url> {
    let mut base = base.clone();
    if !base.path().ends_with('/') {
        let path = format!("{}/", base.path());
        base.set_path(&path);
    }
    base.join(route).ok()
}

/// How a confirmation ended, for the page or the JSON answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Confirmed {
    Now,
    Already,
}

/// Why a link confirms nothing; every one is the client's (or the link's) fault.
#[derive(Debug, thiserror::Error)]
enum LinkError {
    #[error("no token")]
    Missing,
    #[error("the link has expired")]
    Expired,
    #[error("the link is not valid: {0}")]
    Invalid(TokenError),
    #[error("the link is for an address the account no longer has")]
    OtherAddress,
    #[error("the account no longer exists")]
    NoAccount,
    #[error("the store failed: {0}")]
    Store(#[from] crate::store::StoreError),
}

impl LinkError {
    /// A link that is not ours (forged, altered, for another audience or address) is a 403:
    /// it grants nothing. A request without one is malformed: 400.
    fn status(&self) -> u16 {
        match self {
            Self::Missing => 400,
            Self::Invalid(_) | Self::OtherAddress => 403,
            Self::NoAccount => 404,
            Self::Expired => 410,
            Self::Store(_) => 503,
        }
    }

    fn into_response(self, as_page: bool) -> HttpResponse {
        let status = self.status();
        let (kind, title, detail) = match self {
            Self::Expired => (
                "urn:onboarding:problem:link-expired",
                "Link expired",
                "This confirmation link has expired. Sign in and ask for a new one.",
            ),
            Self::NoAccount => (
                "urn:onboarding:problem:no-account",
                "No such account",
                "The account this link was sent for no longer exists.",
            ),
            Self::Store(e) => return store_unavailable(&e, as_page),
            Self::Missing | Self::Invalid(_) | Self::OtherAddress => (
                "urn:onboarding:problem:invalid-link",
                "Invalid link",
                "This confirmation link is not valid. Open the link from the email exactly as \
                 it was sent, or sign in and ask for a new one.",
            ),
        };
        if as_page {
            pages::verify_page(status, &VerifyPage::Problem(title, detail))
        } else {
            http::problem(status, kind, title, detail, None)
        }
    }
}

/// GET shows the Confirm button; POST confirms or asks for a new link.
pub async fn run(app: &App, invocation: &Invocation) -> Result<Outputs, InvocationError> {
    let request = invocation.http_request(HTTP_REQUEST)?;
    if request.method != "POST" {
        return Ok(Outputs::http(show(app, &request).await));
    }
    let as_page = pages::prefers_html(&request);
    let response = match VerifyBody::read(&request) {
        Err(e) => e.into_response(as_page),
        Ok(VerifyBody {
            token: Some(token), ..
        }) => match confirm(app, &token).await {
            Ok(confirmed) => confirmed_answer(confirmed, as_page),
            Err(e) => refused(e, as_page),
        },
        Ok(VerifyBody {
            token: None,
            form_token,
        }) => return resend::run(app, &request, form_token.as_deref(), as_page).await,
    };
    Ok(Outputs::http(response))
}

/// The page a link opens: the Confirm button (a form that POSTs the token back), or what is
/// wrong with the link. Reads the store, never writes it.
async fn show(app: &App, request: &HttpRequest) -> HttpResponse {
    let Some(token) = request.query.get("token").filter(|t| !t.is_empty()) else {
        return refused(LinkError::Missing, true);
    };
    match check(app, token).await {
        Ok(Some(user)) => pages::verify_page(200, &VerifyPage::Confirm { token, user: &user }),
        Ok(None) => confirmed_answer(Confirmed::Already, true),
        Err(e) => refused(e, true),
    }
}

/// Checks a link against the account: `Some(user)` while the address awaits confirmation,
/// `None` once it is confirmed.
async fn check(app: &App, token: &str) -> Result<Option<User>, LinkError> {
    let claim = app.email_tokens.verify(token).map_err(|e| match e {
        TokenError::Expired => LinkError::Expired,
        other => LinkError::Invalid(other),
    })?;
    let account = app
        .store
        .find_user(claim.user)
        .await?
        .ok_or(LinkError::NoAccount)?;
    if !account
        .user
        .email
        .as_str()
        .eq_ignore_ascii_case(&claim.email)
    {
        return Err(LinkError::OtherAddress);
    }
    Ok((!account.email_verified).then_some(account.user))
}

/// Spends the link: marks the address verified, once.
async fn confirm(app: &App, token: &str) -> Result<Confirmed, LinkError> {
    let Some(user) = check(app, token).await? else {
        return Ok(Confirmed::Already);
    };
    if app.store.mark_email_verified(user.id).await? {
        tracing::info!(user_id = %user.id, "email address verified");
        Ok(Confirmed::Now)
    } else {
        Ok(Confirmed::Already)
    }
}

/// A refused link, logged without the token.
fn refused(e: LinkError, as_page: bool) -> HttpResponse {
    if !matches!(e, LinkError::Store(_)) {
        tracing::info!(outcome = %e, "verification link refused");
    }
    e.into_response(as_page)
}

/// 200 for a confirmation, first or repeated: the page, or `{emailVerified, status}`.
fn confirmed_answer(confirmed: Confirmed, as_page: bool) -> HttpResponse {
    if as_page {
        return pages::verify_page(200, &VerifyPage::Confirmed(confirmed == Confirmed::Already));
    }
    let status = match confirmed {
        Confirmed::Now => "verified",
        Confirmed::Already => "alreadyVerified",
    };
    http::json(
        200,
        &serde_json::json!({"emailVerified": true, "status": status}),
    )
}

impl BodyError {
    fn into_response(self, as_page: bool) -> HttpResponse {
        let response = match self {
            Self::TooLarge => http::content_too_large(),
            Self::UnsupportedMediaType(got) => http::problem(
                415,
                "about:blank",
                "Unsupported Media Type",
                &format!(
                    "Send application/json or application/x-www-form-urlencoded (got {}).",
                    got.as_deref().unwrap_or("no Content-Type")
                ),
                None,
            ),
            Self::Malformed(why) => http::problem(
                400,
                "urn:onboarding:problem:malformed-body",
                "Malformed request body",
                &format!("The body must be a JSON object whose token is a string: {why}."),
                None,
            ),
        };
        if as_page {
            let text = "The form could not be read; please try again.";
            pages::verify_page(
                response.status_code,
                &VerifyPage::Problem("Something went wrong", text),
            )
        } else {
            response
        }
    }
}

/// 503 when the store failed: a page for browsers, a problem for API clients; the cause is
/// logged, never shown.
fn store_unavailable(error: &dyn std::fmt::Display, as_page: bool) -> HttpResponse {
    tracing::error!(%error, "verifyEmail: the store failed");
    let detail = "The user store is not answering; try again shortly.";
    if as_page {
        pages::verify_page(503, &VerifyPage::Problem("Try again shortly", detail))
            .header("Retry-After", "5")
    } else {
        http::unavailable(detail)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_route_is_added_to_the_public_urls_path() {
        let at = |base: &str| {
            route_url(&Url::parse(base).unwrap(), ROUTE)
                .unwrap()
                .to_string()
        };
        assert_eq!(at("https://x.example/"), "https://x.example/verifyEmail");
        assert_eq!(at("https://x.example"), "https://x.example/verifyEmail");
        assert_eq!(
            at("https://x.example/api"),
            "https://x.example/api/verifyEmail"
        );
        assert_eq!(
            at("http://127.0.0.1:7071/"),
            "http://127.0.0.1:7071/verifyEmail"
        );
    }
}
