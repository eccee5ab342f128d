//! `signIn` through host-shaped envelopes against a real Redis: tokens and sessions for the
//! right password, one indistinguishable 401 otherwise, the form and its links, and attacks on
//! the tokens it issues.

use base64::Engine as _;
use serde_json::Value;

use crate::helpers::{
    Claims, InvocationAnswer, TEST_PASSWORD, alg_none_token, forge_token, new_user_body, spawn_app,
};

const CLIENT: &str = "198.51.100.20:40000";
const BROWSER: &str = "text/html,application/xhtml+xml,*/*;q=0.8";

fn assert_refused(answer: &InvocationAnswer) -> Value {
    let res = answer.res();
    let body = res.assert_problem(401);
    assert_eq!(body["type"], "urn:onboarding:problem:sign-in-refused");
    assert_eq!(
        res.header("WWW-Authenticate"),
        Some(r#"Bearer realm="onboarding""#)
    );
    body
}

/// The right password answers 200 with a bearer token that opens the profile.
#[tokio::test]
async fn the_right_password_gets_a_token_that_opens_the_profile() {
    let stack = spawn_app().await;
    let user = stack.app.sign_up(&new_user_body()).await;

    let answer = stack
        .app
        .sign_in(&user.email.to_uppercase(), TEST_PASSWORD, CLIENT)
        .await;

    let body = answer.res().assert_status(200).json();
    assert_eq!(body["tokenType"], "Bearer");
    assert_eq!(body["expiresIn"], 3600);
    assert!(!answer.has_output("onboardingMessage"));
    let token = body["token"].as_str().expect("a token");
    assert_eq!(stack.app.profile(token).await["id"], user.id.as_str());
}

/// A wrong password and an unknown email get the same 401 problem, word for word.
#[tokio::test]
async fn a_wrong_password_and_an_unknown_email_get_the_same_401() {
    let stack = spawn_app().await;
    let user = stack.app.sign_up(&new_user_body()).await;

    let wrong = stack
        .app
        .sign_in(&user.email, "not-the-password", CLIENT)
        .await;
    let unknown = stack
        .app
        .sign_in("nobody-here@example.com", TEST_PASSWORD, CLIENT)
        .await;

    assert_eq!(assert_refused(&wrong), assert_refused(&unknown));
    assert!(!stack.app.stdout().contains(TEST_PASSWORD));
}

/// A browser's form post gets the session cookie and a 303 to `/`; a wrong password gets the
/// form again with one sentence, the email kept and the password not.
#[tokio::test]
async fn a_browser_form_gets_a_session_or_the_form_again() {
    let stack = spawn_app().await;
    let user = stack.app.sign_up(&new_user_body()).await;
    let headers = [
        ("Content-Type", "application/x-www-form-urlencoded"),
        ("Accept", BROWSER),
        ("Client-IP", CLIENT),
    ];
    let form = |password: &str| {
        url::form_urlencoded::Serializer::new(String::new())
            .append_pair("email", &user.email)
            .append_pair("password", password)
            .finish()
    };

    let answer = stack
        .app
        .http("signIn", "POST", &headers, Some(&form(TEST_PASSWORD)))
        .await;
    let res = answer.res();
    res.assert_status(303);
    assert_eq!(res.header("Location"), Some("/"));
    let cookie = res.header("Set-Cookie").expect("a session cookie");
    assert!(cookie.starts_with("session=") && cookie.contains("HttpOnly"));
    assert!(cookie.contains("SameSite=Lax") && cookie.contains("Secure"));

    let answer = stack
        .app
        .http("signIn", "POST", &headers, Some(&form("wrong-password")))
        .await;
    let res = answer.res().assert_status(401);
    assert!(res.body.contains("The email or the password is wrong."));
    assert!(res.body.contains(&format!("value=\"{}\"", user.email)));
    assert!(!res.body.contains("wrong-password"));
    assert_eq!(res.header("Set-Cookie"), None);
}

/// `GET /signIn` serves the form, linking to sign-up; the sign-up page links back; an API
/// client gets a description.
#[tokio::test]
async fn the_form_and_the_sign_up_page_link_to_each_other() {
    let stack = spawn_app().await;

    let page = stack
        .app
        .http("signIn", "GET", &[("Accept", "text/html")], None)
        .await;
    let res = page.res().assert_status(200);
    assert!(res.body.contains("action=\"/signIn\""));
    assert!(res.body.contains("href=\"/createUser\""));
    assert!(
        stack
            .app
            .create_user_page()
            .await
            .res()
            .body
            .contains("href=\"/signIn\"")
    );
    let described = stack.app.http("signIn", "GET", &[], None).await;
    assert_eq!(described.res().assert_status(200).json()["method"], "POST");
}

/// Malformed or invalid sign-ins are the client's fault, named as such.
#[tokio::test]
async fn malformed_and_invalid_sign_ins_are_4xx() {
    let stack = spawn_app().await;
    let json = [("Content-Type", "application/json")];

    let missing = stack.app.http("signIn", "POST", &json, Some("{}")).await;
    let body = missing.res().assert_problem(400);
    assert_eq!(body["errors"].as_array().map(Vec::len), Some(2));

    let invalid = stack
        .app
        .http(
            "signIn",
            "POST",
            &json,
            Some(r#"{"email":"not-an-address","password":"long enough"}"#),
        )
        .await;
    assert_eq!(
        invalid.res().assert_problem(422)["errors"][0]["field"],
        "email"
    );

    let broken = stack.app.http("signIn", "POST", &json, Some("{")).await;
    broken.res().assert_problem(400);
    let text = [("Content-Type", "text/plain")];
    let other = stack.app.http("signIn", "POST", &text, Some("hi")).await;
    other.res().assert_problem(415);
}

/// The token attacks of `tests/api/root.rs`, on a token `signIn` issued: its claims re-signed
/// with another key or with `alg: none`, its payload swapped for another user's, its signature
/// cut off. None opens a profile; the untouched token does.
#[tokio::test]
async fn attacks_on_a_sign_in_token_all_fail() {
    let stack = spawn_app().await;
    let alice = stack.app.sign_up(&new_user_body()).await;
    let mallory = stack.app.sign_up(&new_user_body()).await;
    let token_of = |answer: InvocationAnswer| {
        answer.res().assert_status(200).json()["token"]
            .as_str()
            .expect("a token")
            .to_owned()
    };
    let alices = token_of(stack.app.sign_in(&alice.email, TEST_PASSWORD, CLIENT).await);
    let mallorys = token_of(
        stack
            .app
            .sign_in(&mallory.email, TEST_PASSWORD, CLIENT)
            .await,
    );
    let parts: Vec<&str> = alices.split('.').collect();
    let payload: Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(parts[1])
            .expect("base64url claims"),
    )
    .expect("JSON claims");
    let claims = Claims::for_user(payload["sub"].as_str().expect("a subject"));
    let theirs: Vec<&str> = mallorys.split('.').collect();

    let attacks = [
        forge_token("another-key-of-the-same-length-0123456789abcdefg", &claims),
        alg_none_token(&claims),
        format!("{}.{}.{}", theirs[0], parts[1], theirs[2]),
        format!("{}.{}.", parts[0], parts[1]),
        format!("{}.{}", parts[0], parts[1]),
    ];
    for attack in &attacks {
        let answer = stack.app.root_with_token(attack).await;
        let res = answer.res().assert_status(302);
        assert_eq!(
            res.header("WWW-Authenticate"),
            Some(r#"Bearer error="invalid_token""#),
            "{attack}"
        );
    }
    assert_eq!(stack.app.profile(&alices).await["id"], alice.id.as_str());
}
