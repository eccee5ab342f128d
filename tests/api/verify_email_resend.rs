//! `POST /verifyEmail` without a link token: a signed-in person asks for a new link. One queue
//! message per request, with its own id, and one email per message however often it is
//! delivered; refused without a session, for a cookie without the page's form token, and once
//! the address is verified.

use serde_json::Value;

use crate::helpers::{InvocationAnswer, Stack, TEST_PASSWORD, form_token, new_user_body};
use crate::verify_email::{link_token_in_mail, spawn_linked_app};

const BROWSER: &str = "text/html,application/xhtml+xml,*/*;q=0.8";
const FORM: &str = "application/x-www-form-urlencoded";

async fn resend_with_bearer(stack: &Stack, session: &str) -> InvocationAnswer {
    let authorization = format!("Bearer {session}");
    stack
        .app
        .verify_email("POST", "", &[("Authorization", &authorization)], None)
        .await
}

async fn resend_from_form(stack: &Stack, session: &str, form: &str) -> InvocationAnswer {
    let cookie = format!("session={session}");
    let headers = [
        ("Cookie", cookie.as_str()),
        ("Content-Type", FORM),
        ("Accept", BROWSER),
    ];
    stack
        .app
        .verify_email("POST", "", &headers, Some(form))
        .await
}

/// The welcome page as a browser with the session cookie gets it.
async fn welcome_page(stack: &Stack, session: &str) -> String {
    let cookie = format!("session={session}");
    let answer = stack
        .app
        .root(&[("Cookie", &cookie), ("Accept", BROWSER)])
        .await;
    answer.res().assert_status(200).body.clone()
}

/// A bearer client asks twice: two messages with their own request ids; each sends one email,
/// even when delivered again, and each email's link confirms the address.
#[tokio::test]
async fn each_request_queues_one_message_that_sends_one_email_however_often_delivered() {
    let stack = spawn_linked_app().await;
    let user = stack.app.sign_up(&new_user_body()).await;

    let first = resend_with_bearer(&stack, &user.token).await;
    first.res().assert_status(202);
    assert_eq!(first.res().json()["status"], "queued");
    let message: Value = first.outputs["verificationMessage"].clone();
    assert_eq!(message["type"], "email.verification");
    assert_eq!(message["userId"], user.id.as_str());
    assert!(message["requestId"].is_string(), "{message}");
    let second = resend_with_bearer(&stack, &user.token).await;
    let other: Value = second.outputs["verificationMessage"].clone();
    assert_ne!(message["requestId"], other["requestId"]);

    for delivery in 1..=3 {
        stack
            .app
            .send_onboarding(&message, delivery)
            .await
            .assert_host_ok();
    }
    let link = link_token_in_mail(&stack, 1).await;
    stack.app.send_onboarding(&other, 1).await.assert_host_ok();
    link_token_in_mail(&stack, 2).await;
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let mails = stack.smtp.messages();
    assert_eq!(mails.len(), 2, "one email per request");
    assert_eq!(
        mails[0].header("Subject").as_deref(),
        Some("Confirm your email address")
    );

    let body = serde_json::json!({ "token": link }).to_string();
    stack
        .app
        .verify_email(
            "POST",
            "",
            &[("Content-Type", "application/json")],
            Some(&body),
        )
        .await
        .res()
        .assert_status(200);
    assert_eq!(stack.app.profile(&user.token).await["emailVerified"], true);
    resend_with_bearer(&stack, &user.token)
        .await
        .res()
        .assert_problem(409);
}

/// The welcome page of an unverified person has a badge and the form; the form, posted with
/// the session cookie and its own token, queues a link; without it, with another session's, or
/// with the sign-out form's token, it is refused with 403 and queues nothing.
#[tokio::test]
async fn a_cookie_needs_the_welcome_pages_form_token() {
    let stack = spawn_linked_app().await;
    let user = stack.app.sign_up(&new_user_body()).await;
    let stranger = stack.app.sign_up(&new_user_body()).await;
    let page = welcome_page(&stack, &user.token).await;
    assert!(page.contains(r#"id="email-verified" class="status unverified""#));
    let token = form_token(&page, "verifyEmail");
    let sign_out_token = form_token(&page, "/signOut");
    let strangers_token = form_token(&welcome_page(&stack, &stranger.token).await, "verifyEmail");

    for form in [
        String::new(),
        "csrf=".to_owned(),
        format!("csrf={strangers_token}"),
        format!("csrf={sign_out_token}"),
    ] {
        let refused = resend_from_form(&stack, &user.token, &form).await;
        refused.res().assert_status(403);
        assert!(!refused.has_output("verificationMessage"), "{form}");
    }
    let accepted = resend_from_form(&stack, &user.token, &format!("csrf={token}")).await;
    accepted.res().assert_status(202);
    assert!(accepted.res().body.contains("on its way"));
    assert!(accepted.has_output("verificationMessage"));
}

/// Without a session, or with a refused one, the answer is 401 with a challenge.
#[tokio::test]
async fn without_a_valid_session_the_answer_is_401() {
    let stack = spawn_linked_app().await;
    let none = stack.app.verify_email("POST", "", &[], None).await;
    none.res().assert_problem(401);
    assert!(none.res().header("WWW-Authenticate").is_some());
    assert!(!none.has_output("verificationMessage"));
    let forged = resend_with_bearer(&stack, "a.b.c").await;
    forged.res().assert_problem(401);
}

/// A sign-out everywhere holds here too: a token issued before it cannot ask for a new link,
/// neither as a bearer token nor as the cookie with the welcome page's form token (taken before
/// the sign-out), and nothing is queued; a fresh sign-in can.
#[tokio::test]
async fn a_token_issued_before_a_sign_out_cannot_ask_for_a_new_link() {
    let stack = spawn_linked_app().await;
    let user = stack.app.sign_up(&new_user_body()).await;
    let page = welcome_page(&stack, &user.token).await;
    let token = form_token(&page, "verifyEmail");
    let authorization = format!("Bearer {}", user.token);
    stack
        .app
        .http(
            "signOut",
            "POST",
            &[("Authorization", &authorization)],
            None,
        )
        .await
        .res()
        .assert_status(204);

    let bearer = resend_with_bearer(&stack, &user.token).await;
    bearer.res().assert_problem(401);
    assert!(!bearer.has_output("verificationMessage"));
    let form = resend_from_form(&stack, &user.token, &format!("csrf={token}")).await;
    form.res().assert_status(401);
    assert!(!form.has_output("verificationMessage"));

    let signed_in = stack
        .app
        .sign_in(&user.email, TEST_PASSWORD, "198.51.100.31:40000")
        .await;
    let fresh = signed_in.res().assert_status(200).json()["token"]
        .as_str()
        .expect("a token")
        .to_owned();
    resend_with_bearer(&stack, &fresh)
        .await
        .res()
        .assert_status(202);
}

/// The profile's `emailVerified` starts false, and the badge on the page says so.
#[tokio::test]
async fn a_new_profile_is_not_verified() {
    let stack = spawn_linked_app().await;
    let user = stack.app.sign_up(&new_user_body()).await;
    assert_eq!(stack.app.profile(&user.token).await["emailVerified"], false);
}

/// Past `LIMIT_VERIFY_RESENDS_PER_USER` (default 3 an hour) the answer is 429 with
/// `Retry-After` and a problem, and nothing is queued; the limit is per user.
#[tokio::test]
async fn a_fourth_request_within_the_hour_is_a_429_with_retry_after() {
    let stack = spawn_linked_app().await;
    let user = stack.app.sign_up(&new_user_body()).await;
    let other = stack.app.sign_up(&new_user_body()).await;
    for _ in 0..3 {
        resend_with_bearer(&stack, &user.token)
            .await
            .res()
            .assert_status(202);
    }
    let limited = resend_with_bearer(&stack, &user.token).await;
    let problem = limited.res().assert_problem(429);
    assert_eq!(problem["type"], "urn:onboarding:problem:too-many-requests");
    let retry_after: u64 = limited
        .res()
        .header("Retry-After")
        .expect("a Retry-After header")
        .parse()
        .expect("whole seconds");
    assert!(
        (1..=3600).contains(&retry_after),
        "Retry-After {retry_after}"
    );
    assert_eq!(problem["retryAfter"], retry_after);
    assert!(!limited.has_output("verificationMessage"));
    resend_with_bearer(&stack, &other.token)
        .await
        .res()
        .assert_status(202);
}

/// The setting changes the limit: with `1/1h`, the second request is refused.
#[tokio::test]
async fn the_resend_limit_is_a_setting() {
    let stack = crate::helpers::spawn_app_with(|b| {
        b.env("PUBLIC_URL", crate::helpers::PUBLIC_ORIGIN)
            .env("LIMIT_VERIFY_RESENDS_PER_USER", "1/1h")
    })
    .await;
    let user = stack.app.sign_up(&new_user_body()).await;
    resend_with_bearer(&stack, &user.token)
        .await
        .res()
        .assert_status(202);
    resend_with_bearer(&stack, &user.token)
        .await
        .res()
        .assert_problem(429);
}
