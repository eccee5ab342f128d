//! The limits against abuse through host-shaped envelopes against a real Redis: 429 with
//! `Retry-After` and a problem body (a sentence on the forms), per client address as App
//! Service's `Client-IP` gives it (a forged `X-Forwarded-For` changes nothing), per normalised
//! mailbox and per account; and no password hash for a request past a limit.

use std::sync::Arc;
use std::time::Duration;

use onboarding::app::App;
use onboarding::config::{Mode, Settings};
use onboarding::mail::OutboxMailer;
use onboarding::protocol::Invocation;
use serde_json::json;

use crate::helpers::{
    InvocationAnswer, RedisServer, TEST_PASSWORD, http_invocation, new_user_body, redis_store,
    spawn_app_with, unique_email,
};

const BROWSER: &str = "text/html,application/xhtml+xml,*/*;q=0.8";

/// A 429 problem whose `Retry-After` lies within `expected` seconds.
fn assert_limited(answer: &InvocationAnswer, expected: std::ops::RangeInclusive<u64>) {
    let res = answer.res();
    let body = res.assert_problem(429);
    assert_eq!(body["type"], "urn:onboarding:problem:too-many-requests");
    let retry: u64 = res
        .header("Retry-After")
        .and_then(|v| v.parse().ok())
        .expect("a Retry-After in seconds");
    assert!(expected.contains(&retry), "Retry-After {retry}");
    assert_eq!(body["retryAfter"], retry);
}

/// A JSON sign-up for `email` from `client_ip`, with more headers.
async fn sign_up_from(
    app: &crate::helpers::TestApp,
    email: &str,
    client_ip: &str,
    extra: &[(&str, &str)],
) -> InvocationAnswer {
    let mut body = new_user_body();
    body["email"] = json!(email);
    let mut headers = vec![
        ("Content-Type", "application/json"),
        ("Client-IP", client_ip),
    ];
    headers.extend_from_slice(extra);
    app.http("createUser", "POST", &headers, Some(&body.to_string()))
        .await
}

/// Three sign-ups from one address pass, the fourth gets 429 (a third of the period to wait);
/// a forged `X-Forwarded-For` does not dodge it, another address is not affected.
#[tokio::test]
async fn sign_ups_are_limited_per_client_address_whatever_x_forwarded_for_says() {
    let stack = spawn_app_with(|app| app.env("LIMIT_SIGN_UPS_PER_ADDRESS", "3/15m")).await;
    let ip = "203.0.113.5:1234";
    for _ in 0..3 {
        let answer = sign_up_from(&stack.app, &unique_email(), ip, &[]).await;
        answer.res().assert_status(201);
    }
    let limited = sign_up_from(&stack.app, &unique_email(), ip, &[]).await;
    assert_limited(&limited, 299..=300);
    assert!(!limited.has_output("onboardingMessage"));

    for forged in ["6.6.6.6", "6.6.6.6, 198.51.100.77", "198.51.100.77:1"] {
        let answer = sign_up_from(
            &stack.app,
            &unique_email(),
            "203.0.113.5:4321",
            &[("X-Forwarded-For", forged)],
        )
        .await;
        assert_limited(&answer, 1..=300);
    }
    let elsewhere = sign_up_from(&stack.app, &unique_email(), "203.0.113.6:1234", &[]).await;
    elsewhere.res().assert_status(201);
}

/// Plus-addressing does not multiply a mailbox's sign-ups: `victim+1@`, `victim+2@` pass,
/// `Victim+3@` is refused, from any address; the browser form says so in a sentence.
#[tokio::test]
async fn sign_ups_are_limited_per_normalised_mailbox() {
    let stack = spawn_app_with(|app| app.env("LIMIT_SIGN_UPS_PER_MAILBOX", "2/1h")).await;
    let mailbox = uuid::Uuid::new_v4().simple().to_string();
    for (i, ip) in ["192.0.2.1:1", "192.0.2.2:1"].iter().enumerate() {
        let email = format!("{mailbox}+{i}@example.com");
        sign_up_from(&stack.app, &email, ip, &[])
            .await
            .res()
            .assert_status(201);
    }
    let third = format!("{}+3@Example.com", mailbox.to_uppercase());
    let limited = sign_up_from(&stack.app, &third, "192.0.2.3:1", &[]).await;
    assert_limited(&limited, 1799..=1800);

    let form = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("name", "Ada")
        .append_pair("email", &format!("{mailbox}@example.com"))
        .append_pair("password", TEST_PASSWORD)
        .finish();
    let headers = [
        ("Content-Type", "application/x-www-form-urlencoded"),
        ("Accept", BROWSER),
        ("Client-IP", "192.0.2.4:1"),
    ];
    let page = stack
        .app
        .http("createUser", "POST", &headers, Some(&form))
        .await;
    let res = page.res().assert_status(429);
    assert!(res.header("Retry-After").is_some());
    assert!(
        res.body.contains("Please try again in 30 minutes."),
        "{}",
        res.body
    );
}

/// Failed sign-ins per account: after three, the fourth is refused, and so is the right
/// password (checking it would cost the hash the limit saves); a success gives its charge back.
#[tokio::test]
async fn failed_sign_ins_are_limited_per_account_and_a_success_is_not_counted() {
    let stack = spawn_app_with(|app| app.env("LIMIT_FAILED_SIGN_INS_PER_ACCOUNT", "3/1h")).await;
    let user = stack.app.sign_up(&new_user_body()).await;
    let ip = |n: u8| format!("198.51.100.{n}:1");
    stack
        .app
        .sign_in(&user.email, "wrong-password-1", &ip(1))
        .await
        .res()
        .assert_status(401);
    stack
        .app
        .sign_in(&user.email, TEST_PASSWORD, &ip(2))
        .await
        .res()
        .assert_status(200);
    stack
        .app
        .sign_in(&user.email, "wrong-password-2", &ip(3))
        .await
        .res()
        .assert_status(401);
    stack
        .app
        .sign_in(&user.email, "wrong-password-3", &ip(4))
        .await
        .res()
        .assert_status(401);

    let limited = stack.app.sign_in(&user.email, TEST_PASSWORD, &ip(5)).await;
    assert_limited(&limited, 1199..=1200);
    let other = stack.app.sign_up(&new_user_body()).await;
    stack
        .app
        .sign_in(&other.email, TEST_PASSWORD, &ip(5))
        .await
        .res()
        .assert_status(200);
}

/// Failed sign-ins per address, across accounts (registered or not): the form shows a
/// sentence and `Retry-After`.
#[tokio::test]
async fn failed_sign_ins_are_limited_per_client_address() {
    let stack = spawn_app_with(|app| app.env("LIMIT_FAILED_SIGN_INS_PER_ADDRESS", "2/15m")).await;
    let ip = "[2001:db8:5:6::1]:443";
    for _ in 0..2 {
        let answer = stack.app.sign_in(&unique_email(), TEST_PASSWORD, ip).await;
        answer.res().assert_status(401);
    }
    // Another address in the same IPv6 /64 is the same client.
    let limited = stack
        .app
        .sign_in(&unique_email(), TEST_PASSWORD, "[2001:db8:5:6::2]:443")
        .await;
    assert_limited(&limited, 449..=450);

    let form = format!("email={}&password=whatever-it-is", unique_email());
    let headers = [
        ("Content-Type", "application/x-www-form-urlencoded"),
        ("Accept", BROWSER),
        ("Client-IP", ip),
    ];
    let page = stack
        .app
        .http("signIn", "POST", &headers, Some(&form))
        .await;
    let res = page.res().assert_status(429);
    assert!(res.header("Retry-After").is_some());
    assert!(
        res.body.contains("Too many failed sign-ins"),
        "{}",
        res.body
    );
}

/// The handler's own code in-process, on a real Redis, so the hasher's counter can be read: a
/// wrong password and an unknown email cost one hash each; a sign-up or sign-in past its limit
/// costs none.
#[tokio::test]
async fn a_request_past_a_limit_costs_no_hash_and_an_unknown_email_costs_one() {
    let redis = RedisServer::start();
    let settings = Settings::from_lookup(Mode::Dev, |name| match name {
        "LIMIT_SIGN_UPS_PER_ADDRESS" | "LIMIT_FAILED_SIGN_INS_PER_ADDRESS" => {
            Some("1/15m".to_owned())
        }
        _ => None,
    })
    .expect("dev settings");
    let store = redis_store(&redis, &format!("cost-{}:", uuid::Uuid::new_v4().simple()));
    let outbox = tempfile::tempdir().expect("an outbox");
    let app = App::new(
        &settings,
        Arc::new(store),
        Arc::new(OutboxMailer::new(outbox.path())),
        Duration::from_secs(5),
    );
    let invoke = |function: &'static str, body: serde_json::Value| {
        let app = &app;
        async move {
            let url = format!("https://app.example.net/{function}");
            let headers = [
                ("Content-Type", "application/json"),
                ("Client-IP", "192.0.2.9:1"),
            ];
            let envelope = http_invocation("POST", &url, &headers, Some(&body.to_string()));
            let invocation =
                Invocation::from_slice(envelope.to_string().as_bytes(), None).expect("envelope");
            onboarding::functions::invoke(app, function, &invocation)
                .await
                .expect("a function")
                .expect("an answer")
        }
    };
    let hashes = || app.hasher.hashes_computed();

    let sign_in = json!({"email": unique_email(), "password": TEST_PASSWORD});
    invoke("signIn", sign_in.clone()).await;
    assert_eq!(
        hashes(),
        1,
        "an unknown email costs one hash, as a wrong password does"
    );
    for _ in 0..5 {
        let outputs = invoke("signIn", sign_in.clone()).await;
        let res = outputs.bindings().http.as_ref().expect("res");
        assert_eq!(res.1.status_code, 429);
    }
    assert_eq!(hashes(), 1, "refused sign-ins computed no hash");

    invoke("createUser", new_user_body()).await;
    assert_eq!(hashes(), 2, "a sign-up hashes once");
    for _ in 0..5 {
        let outputs = invoke("createUser", new_user_body()).await;
        let res = outputs.bindings().http.as_ref().expect("res");
        assert_eq!(res.1.status_code, 429);
    }
    assert_eq!(hashes(), 2, "refused sign-ups computed no hash");
}
