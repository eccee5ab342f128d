//! `root` (`GET /`): the profile for a valid token, otherwise a redirect to the sign-up page.

use crate::helpers::{
    Claims, InvocationAnswer, Stack, TEST_JWT_SECRET, alg_none_token, forge_token, new_user_body,
    spawn_app, spawn_app_with,
};

/// Asserts a 302 to `/createUser`, and whether it carries `WWW-Authenticate: Bearer
/// error="invalid_token"` (only when a token was presented and rejected).
fn assert_redirect_to_sign_up(answer: &InvocationAnswer, token_rejected: bool) {
    let res = answer.res();
    res.assert_status(302);
    assert_eq!(res.header("Location"), Some("/createUser"), "res: {res:#?}");
    let challenge = res.header("WWW-Authenticate");
    if token_rejected {
        let challenge = challenge.unwrap_or_else(|| panic!("no WWW-Authenticate: {res:#?}"));
        assert!(
            challenge.starts_with("Bearer") && challenge.contains(r#"error="invalid_token""#),
            "WWW-Authenticate: {challenge}"
        );
    } else {
        assert_eq!(challenge, None, "no token, so no challenge: {res:#?}");
    }
}

/// Signs up one user and returns the stack and the user's id and token.
async fn stack_with_user() -> (Stack, String, String) {
    let stack = spawn_app().await;
    let user = stack.app.sign_up(&new_user_body()).await;
    (stack, user.id, user.token)
}

/// A valid bearer token gets the user's profile as JSON, onboarding still pending.
#[tokio::test]
async fn root_returns_the_profile_for_a_valid_bearer_token() {
    let stack = spawn_app().await;
    let body = new_user_body();
    let user = stack.app.sign_up(&body).await;

    let answer = stack.app.root_with_token(&user.token).await;

    let res = answer.res();
    res.assert_status(200);
    assert!(
        res.header("Content-Type")
            .is_some_and(|ct| ct.starts_with("application/json")),
        "JSON by default: {res:#?}"
    );
    let profile = res.json();
    assert_eq!(profile["id"], user.id.as_str());
    assert_eq!(profile["name"], body["name"]);
    assert_eq!(profile["email"], body["email"]);
    assert!(profile["createdAt"].is_string(), "profile: {profile}");
    assert_eq!(profile["onboarding"], "pending");
}

/// A client that prefers HTML gets an HTML profile page.
#[tokio::test]
async fn root_returns_an_html_page_to_a_client_that_prefers_html() {
    let (stack, _, token) = stack_with_user().await;
    let authorization = format!("Bearer {token}");

    let answer = stack
        .app
        .root(&[
            ("Authorization", &authorization),
            ("Accept", "text/html,application/xhtml+xml;q=0.9,*/*;q=0.8"),
        ])
        .await;

    let res = answer.res();
    res.assert_status(200);
    assert!(
        res.header("Content-Type")
            .is_some_and(|ct| ct.starts_with("text/html")),
        "an HTML page: {res:#?}"
    );
}

/// Without a token, root redirects to the sign-up page without a challenge.
#[tokio::test]
async fn root_redirects_to_create_user_without_a_token() {
    let stack = spawn_app().await;

    let answer = stack.app.root(&[]).await;

    assert_redirect_to_sign_up(&answer, false);
}

/// A token signed with another key is rejected with a challenge.
#[tokio::test]
async fn root_rejects_a_token_signed_with_another_key() {
    let (stack, id, _) = stack_with_user().await;
    let token = forge_token(
        "another-key-of-the-same-length-0123456789abcdefg",
        &Claims::for_user(&id),
    );

    let answer = stack.app.root_with_token(&token).await;

    assert_redirect_to_sign_up(&answer, true);
}

/// An unsigned token (`alg: none`) is rejected with a challenge.
#[tokio::test]
async fn root_rejects_an_unsigned_alg_none_token() {
    let (stack, id, _) = stack_with_user().await;
    let token = alg_none_token(&Claims::for_user(&id));

    let answer = stack.app.root_with_token(&token).await;

    assert_redirect_to_sign_up(&answer, true);
}

/// An expired token, even correctly signed, is rejected with a challenge.
#[tokio::test]
async fn root_rejects_an_expired_token() {
    let (stack, id, _) = stack_with_user().await;
    let token = forge_token(TEST_JWT_SECRET, &Claims::for_user(&id).expired());

    let answer = stack.app.root_with_token(&token).await;

    assert_redirect_to_sign_up(&answer, true);
}

/// A token whose payload was swapped for another user's keeps a signature that no longer
/// matches, and is rejected.
#[tokio::test]
async fn root_rejects_a_token_with_a_tampered_payload() {
    let stack = spawn_app().await;
    let alice = stack.app.sign_up(&new_user_body()).await;
    let mallory = stack.app.sign_up(&new_user_body()).await;
    let alice_parts: Vec<&str> = alice.token.split('.').collect();
    let mallory_parts: Vec<&str> = mallory.token.split('.').collect();
    assert_eq!(alice_parts.len(), 3, "a JWT has three parts");
    let tampered = format!(
        "{}.{}.{}",
        mallory_parts[0], alice_parts[1], mallory_parts[2]
    );

    let answer = stack.app.root_with_token(&tampered).await;

    assert_redirect_to_sign_up(&answer, true);
}

/// A valid token for a user that does not exist (any more) is rejected with a challenge.
#[tokio::test]
async fn root_rejects_a_valid_token_for_a_user_that_does_not_exist() {
    let stack = spawn_app().await;
    let token = forge_token(
        TEST_JWT_SECRET,
        &Claims::for_user(&uuid::Uuid::new_v4().to_string()),
    );

    let answer = stack.app.root_with_token(&token).await;

    assert_redirect_to_sign_up(&answer, true);
}

/// A garbage Authorization header counts as a rejected token.
#[tokio::test]
async fn root_rejects_a_bearer_value_that_is_not_a_jwt() {
    let stack = spawn_app().await;

    let answer = stack.app.root_with_token("not-a-jwt").await;

    assert_redirect_to_sign_up(&answer, true);
}

/// During key rotation, a token signed with `JWT_SECRET_PREVIOUS` is still accepted.
#[tokio::test]
async fn root_accepts_a_token_signed_with_the_previous_secret() {
    const PREVIOUS: &str = "the-previous-jwt-secret-0123456789abcdefghijklm";
    let stack = spawn_app_with(|app| app.env("JWT_SECRET_PREVIOUS", PREVIOUS)).await;
    let user = stack.app.sign_up(&new_user_body()).await;
    let token = forge_token(PREVIOUS, &Claims::for_user(&user.id));

    let answer = stack.app.root_with_token(&token).await;

    let profile = answer.res().assert_status(200).json();
    assert_eq!(profile["id"], user.id.as_str());
}

/// A token signed with our own forged claims and the current key works (the claims the tests
/// forge match the handler's).
#[tokio::test]
async fn root_accepts_a_token_forged_with_the_current_secret() {
    let (stack, id, _) = stack_with_user().await;
    let token = forge_token(TEST_JWT_SECRET, &Claims::for_user(&id));

    let answer = stack.app.root_with_token(&token).await;

    let profile = answer.res().assert_status(200).json();
    assert_eq!(profile["id"], id.as_str());
}
