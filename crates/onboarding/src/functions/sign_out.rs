//! `POST /signOut`: signs the user out everywhere. Every token issued to them until now is
//! refused from now on (a per-user "valid after" time, checked on every signed-in request: see
//! `signed_in.rs`), and the browser's session cookie is cleared.
//!
//! A browser posts the welcome page's form with its cookie, and the form's anti-forgery token
//! must match the session (another site can make a browser post the form, cookie included, but
//! cannot read the token). An API client signs out with its bearer token alone: a cross-site
//! form cannot set `Authorization`, so no form token is needed.

use serde_json::Value;
use time::OffsetDateTime;

use super::body::{FORM_TOKEN_FIELD, read_fields};
use super::declaration::HTTP_REQUEST;
use super::signed_in::{NotSignedIn, signed_in};
use super::{InvocationError, Outputs, http, session};
use crate::app::App;
use crate::pages;
use crate::protocol::{HttpRequest, HttpResponse, Invocation};

/// Where a signed-out browser goes.
const SIGN_IN_PATH: &str = "/signIn";

/// What the welcome page's sign-out form token is for: only this form accepts it.
pub const FORM_PURPOSE: &str = "sign-out";

/// Signs out the holder of the bearer token, or of the session cookie with its form token.
pub async fn run(app: &App, invocation: &Invocation) -> Result<Outputs, InvocationError> {
    let request = invocation.http_request(HTTP_REQUEST)?;
    if let Err(refusal) = check_body(&request) {
        return Ok(Outputs::http(refusal));
    }
    let cookie = session::cookie_token(&request);
    let token = match (http::bearer_token(&request), cookie) {
        (Some(bearer), _) => bearer,
        (None, Some(cookie)) => {
            if let Err(refusal) = check_form_token(app, &request, cookie) {
                return Ok(Outputs::http(refusal));
            }
            cookie
        }
        (None, None) => return Ok(Outputs::http(not_signed_in(&request, false))),
    };
    let user_id = match signed_in(app, token).await {
        Ok(account) => account.user.id,
        Err(NotSignedIn::Store(e)) => {
            tracing::error!(error = %e, "sign-out could not reach the store");
            return Ok(Outputs::http(http::unavailable(
                "The user store is not answering; you are still signed in. Try again shortly.",
            )));
        }
        Err(why) => {
            tracing::info!(%why, "sign-out with a refused session");
            return Ok(Outputs::http(not_signed_in(&request, true)));
        }
    };
    // Every token issued up to this second is refused: `iat` has whole seconds, so the time
    // is the next second; a sign-in after this dates its token no earlier.
    let valid_after = OffsetDateTime::now_utc().unix_timestamp() + 1;
    if let Err(e) = app.store.sign_out_everywhere(user_id, valid_after).await {
        tracing::error!(error = %e, "sign-out could not be saved");
        return Ok(Outputs::http(http::unavailable(
            "The sign-out could not be saved; you are still signed in. Try again shortly.",
        )));
    }
    tracing::info!(%user_id, "signed out everywhere");
    Ok(Outputs::http(signed_out(&request, cookie.is_some())))
}

/// A body, when there is one, must be a form (or a JSON object) whose `csrf` is text, whether
/// or not it is needed: a sign-out never ignores a malformed request.
fn check_body(request: &HttpRequest) -> Result<(), HttpResponse> {
    if request.body.as_deref().is_none_or(str::is_empty) {
        return Ok(());
    }
    let fields = read_fields(request)
        .map_err(|e| e.into_response("the sign-out", "an optional csrf field"))?;
    match fields.get(FORM_TOKEN_FIELD) {
        None | Some(Value::String(_)) => Ok(()),
        Some(_) => Err(http::problem(
            400,
            "urn:onboarding:problem:invalid-fields",
            "Invalid sign-out",
            "Check these fields: csrf.",
            Some(
                serde_json::json!({"errors": [{"field": "csrf", "detail": "csrf must be a string"}]}),
            ),
        )),
    }
}

/// Refuses a cookie-carried sign-out whose form token is missing or not this session's, or
/// that a browser says came from another site (`Sec-Fetch-Site`, defence in depth).
fn check_form_token(app: &App, request: &HttpRequest, cookie: &str) -> Result<(), HttpResponse> {
    let cross_site = request
        .headers
        .get("sec-fetch-site")
        .is_some_and(|site| site.trim().eq_ignore_ascii_case("cross-site"));
    let given = read_fields(request).ok().and_then(|fields| {
        fields
            .get(FORM_TOKEN_FIELD)
            .and_then(Value::as_str)
            .map(str::to_owned)
    });
    match given {
        Some(given) if !cross_site && app.form_tokens.check(FORM_PURPOSE, cookie, &given) => Ok(()),
        _ => {
            tracing::info!(
                cross_site,
                "sign-out refused: its form token does not match"
            );
            Err(forged(request))
        }
    }
}

/// 403 for a sign-out the session's own page did not send.
fn forged(request: &HttpRequest) -> HttpResponse {
    const DETAIL: &str = "This sign-out did not come from your own page (its form token does \
                          not match your session). Nothing was changed.";
    if pages::prefers_html(request) {
        return pages::page(
            403,
            "Sign-out refused",
            &format!(
                "<h1>Sign-out refused</h1>\n<p class=\"banner\" role=\"alert\">{DETAIL}</p>\n\
                 <p class=\"hint\"><a href=\"/\">Back to your account</a>, and sign out from \
                 there.</p>\n"
            ),
        );
    }
    http::problem(
        403,
        "urn:onboarding:problem:forged-request",
        "Forged request",
        DETAIL,
        None,
    )
}

/// No valid session: a browser goes to sign-in (its cookie cleared), an API client gets 401.
fn not_signed_in(request: &HttpRequest, token_presented: bool) -> HttpResponse {
    let secure = session::is_https(request);
    if pages::prefers_html(request) {
        let response = http::redirect(303, SIGN_IN_PATH);
        return match session::cookie_token(request) {
            Some(_) => response.header("Set-Cookie", session::clear_cookie(secure)),
            None => response,
        };
    }
    let challenge = if token_presented {
        r#"Bearer error="invalid_token""#
    } else {
        r#"Bearer realm="onboarding""#
    };
    http::problem(
        401,
        "urn:onboarding:problem:not-signed-in",
        "Not signed in",
        "Send the bearer token to sign out (Authorization: Bearer <token>).",
        None,
    )
    .header("WWW-Authenticate", challenge)
}

/// The answer once signed out: 303 to sign-in for a browser, 204 for an API client; the cookie
/// cleared whenever one was sent (the only `Set-Cookie` of the answer).
fn signed_out(request: &HttpRequest, had_cookie: bool) -> HttpResponse {
    let response = if pages::prefers_html(request) {
        http::redirect(303, SIGN_IN_PATH)
    } else {
        HttpResponse::new(204, "").header("Cache-Control", "no-store")
    };
    if had_cookie {
        response.header(
            "Set-Cookie",
            session::clear_cookie(session::is_https(request)),
        )
    } else {
        response
    }
}
