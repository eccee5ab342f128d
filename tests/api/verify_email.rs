//! `verifyEmail` (`GET|POST /verifyEmail`): the link in the welcome email, the Confirm page a GET
//! shows without spending anything, the POST that confirms once, and every way a link is refused.

use std::time::Duration;

use serde_json::Value;

use crate::helpers::{
    Claims, InvocationAnswer, LinkClaims, Stack, TEST_JWT_SECRET, alg_none_token, forge_token,
    new_user_body, spawn_app_with,
};

const MAIL_TIMEOUT: Duration = Duration::from_secs(30);
const FORM: &str = "application/x-www-form-urlencoded";
const BROWSER: &str = "text/html,application/xhtml+xml,*/*;q=0.8";

/// A stack whose emails link to the tests' public origin.
pub async fn spawn_linked_app() -> Stack {
    spawn_app_with(|b| b.env("PUBLIC_URL", crate::helpers::PUBLIC_ORIGIN)).await
}

/// The link token in the text part of the `n`th email the sink received (counting from 1).
pub async fn link_token_in_mail(stack: &Stack, n: usize) -> String {
    let mails = stack.smtp.wait_for(n, MAIL_TIMEOUT).await;
    let text = mails[n - 1].part("text/plain").expect("a text part");
    let start = text
        .find("/verifyEmail?token=")
        .unwrap_or_else(|| panic!("no verifyEmail link in:\n{text}"))
        + "/verifyEmail?token=".len();
    text[start..]
        .split_whitespace()
        .next()
        .expect("a token after the link")
        .to_owned()
}

/// Signs a user up, delivers the welcome email, and returns (id, email, session, link token).
async fn signed_up_with_link(stack: &Stack) -> (String, String, String, String) {
    let user = stack.app.sign_up(&new_user_body()).await;
    stack
        .app
        .send_onboarding(&user.message, 1)
        .await
        .assert_host_ok();
    let link = link_token_in_mail(stack, 1).await;
    (user.id, user.email, user.token, link)
}

async fn open_link(stack: &Stack, token: &str) -> InvocationAnswer {
    let query = format!("token={token}");
    stack
        .app
        .verify_email("GET", &query, &[("Accept", BROWSER)], None)
        .await
}

async fn confirm_json(stack: &Stack, token: &str) -> InvocationAnswer {
    let body = serde_json::json!({ "token": token }).to_string();
    let headers = [("Content-Type", "application/json")];
    stack
        .app
        .verify_email("POST", "", &headers, Some(&body))
        .await
}

async fn email_verified(stack: &Stack, session: &str) -> Value {
    stack.app.profile(session).await["emailVerified"].clone()
}

/// The welcome email links to verifyEmail; the GET shows a Confirm form carrying the token and
/// changes nothing; the form's POST confirms; a second POST says it was confirmed already.
#[tokio::test]
async fn the_link_in_the_welcome_email_shows_a_confirm_button_and_only_the_post_confirms() {
    let stack = spawn_linked_app().await;
    let (_, email, session, link) = signed_up_with_link(&stack).await;
    assert_eq!(email_verified(&stack, &session).await, false);

    for _ in 0..2 {
        let answer = open_link(&stack, &link).await;
        let res = answer.res();
        res.assert_status(200);
        assert!(
            res.body
                .contains(r#"<form method="post" action="verifyEmail">"#)
        );
        assert!(
            res.body
                .contains(&format!(r#"name="token" value="{link}""#))
        );
        assert!(res.body.contains(&email), "the page names the address");
    }
    assert_eq!(
        email_verified(&stack, &session).await,
        false,
        "opening the link (twice, as a mail scanner might) spent nothing"
    );

    let form = format!("token={link}");
    let headers = [("Content-Type", FORM), ("Accept", BROWSER)];
    let confirmed = stack
        .app
        .verify_email("POST", "", &headers, Some(&form))
        .await;
    confirmed.res().assert_status(200);
    assert!(
        confirmed
            .res()
            .body
            .contains("your email address is confirmed")
    );
    assert_eq!(email_verified(&stack, &session).await, true);

    let again = stack
        .app
        .verify_email("POST", "", &headers, Some(&form))
        .await;
    again.res().assert_status(200);
    assert!(again.res().body.contains("was already confirmed"));
    let reopened = open_link(&stack, &link).await;
    assert!(reopened.res().body.contains("was already confirmed"));
    assert!(!reopened.res().body.contains("<form"));
}

/// A JSON client confirms with `{"token"}`: 200 `verified`, then 200 `alreadyVerified`.
#[tokio::test]
async fn a_json_confirmation_says_verified_then_already_verified() {
    let stack = spawn_linked_app().await;
    let (_, _, session, link) = signed_up_with_link(&stack).await;

    let first = confirm_json(&stack, &link).await;
    let body = first.res().assert_status(200).json();
    assert_eq!(body["status"], "verified");
    assert_eq!(body["emailVerified"], true);
    let second = confirm_json(&stack, &link).await;
    assert_eq!(
        second.res().assert_status(200).json()["status"],
        "alreadyVerified"
    );
    assert_eq!(email_verified(&stack, &session).await, true);
}

/// Every forged, altered, expired or misdirected token is refused by both GET (a page) and POST
/// (a problem), and confirms nothing; a link token is no session either.
#[tokio::test]
async fn forged_expired_and_misdirected_tokens_are_refused_and_confirm_nothing() {
    let stack = spawn_linked_app().await;
    let (id, email, session, link) = signed_up_with_link(&stack).await;
    let claims = LinkClaims::for_user(&id, &email);
    let mut expired = claims.clone();
    expired.base = expired.base.expired();
    let mut tampered: Vec<String> = link.split('.').map(str::to_owned).collect();
    // Another user's id in the payload, under the original signature.
    let other = LinkClaims::for_user(&uuid::Uuid::new_v4().to_string(), &email);
    tampered[1] = forge_token(TEST_JWT_SECRET, &other)
        .split('.')
        .nth(1)
        .unwrap()
        .to_owned();
    let cases: Vec<(&str, String, u16)> = vec![
        (
            "another key",
            forge_token("another-key-of-the-same-length-0123456789abcdefg", &claims),
            403,
        ),
        (
            "the session audience",
            forge_token(TEST_JWT_SECRET, &Claims::for_user(&id)),
            403,
        ),
        ("a session token", session.clone(), 403),
        ("expired", forge_token(TEST_JWT_SECRET, &expired), 410),
        ("alg none", alg_none_token(&claims), 403),
        ("tampered", tampered.join("."), 403),
        ("garbage", "not-a-token".to_owned(), 403),
    ];
    for (what, token, status) in &cases {
        let page = open_link(&stack, token).await;
        page.res().assert_status(*status);
        assert!(
            page.res()
                .header("Content-Type")
                .is_some_and(|ct| ct.starts_with("text/html")),
            "{what}: a page"
        );
        let problem = confirm_json(&stack, token)
            .await
            .res()
            .assert_problem(*status);
        let kind = if *status == 410 {
            "link-expired"
        } else {
            "invalid-link"
        };
        assert_eq!(
            problem["type"],
            format!("urn:onboarding:problem:{kind}"),
            "{what}"
        );
    }
    assert_eq!(email_verified(&stack, &session).await, false);

    let as_session = stack.app.root_with_token(&link).await;
    as_session.res().assert_status(302);
    assert!(as_session.res().header("WWW-Authenticate").is_some());
    assert!(
        !stack.app.stdout().contains(&link) && !stack.app.stderr().contains(&link),
        "no log line holds a link token"
    );
}

/// A GET without a token is a 400 page; a link for an account that no longer exists is a 404.
#[tokio::test]
async fn a_missing_token_is_a_400_and_a_link_for_no_account_is_a_404() {
    let stack = spawn_linked_app().await;
    let missing = stack
        .app
        .verify_email("GET", "", &[("Accept", BROWSER)], None)
        .await;
    missing.res().assert_status(400);
    let nobody = LinkClaims::for_user(&uuid::Uuid::new_v4().to_string(), "x@example.com");
    let token = forge_token(TEST_JWT_SECRET, &nobody);
    confirm_json(&stack, &token).await.res().assert_problem(404);
    open_link(&stack, &token).await.res().assert_status(404);
}

/// A link naming another address than the account's is refused (403); the same address in
/// another case confirms.
#[tokio::test]
async fn a_link_for_another_address_confirms_nothing() {
    let stack = spawn_linked_app().await;
    let user = stack.app.sign_up(&new_user_body()).await;
    let token = forge_token(
        TEST_JWT_SECRET,
        &LinkClaims::for_user(&user.id, "someone-else@example.com"),
    );
    confirm_json(&stack, &token).await.res().assert_problem(403);
    let upper = forge_token(
        TEST_JWT_SECRET,
        &LinkClaims::for_user(&user.id, &user.email.to_uppercase()),
    );
    confirm_json(&stack, &upper).await.res().assert_status(200);
}

/// Bodies it cannot read: 400 for JSON that is not an object with a string token, 415 for
/// another media type, 413 past the size limit.
#[tokio::test]
async fn unreadable_bodies_get_400_415_and_413() {
    let stack = spawn_linked_app().await;
    const JSON: &[(&str, &str)] = &[("Content-Type", "application/json")];
    let post = |headers: &'static [(&'static str, &'static str)], body: String| {
        let app = &stack.app;
        async move { app.verify_email("POST", "", headers, Some(&body)).await }
    };
    post(JSON, r#"{"token": 5}"#.to_owned())
        .await
        .res()
        .assert_problem(400);
    post(JSON, "{".to_owned()).await.res().assert_problem(400);
    post(&[("Content-Type", "text/plain")], "token=x".to_owned())
        .await
        .res()
        .assert_problem(415);
    let big = format!(r#"{{"token":"{}"}}"#, "x".repeat(20 * 1024));
    post(JSON, big).await.res().assert_problem(413);
}
