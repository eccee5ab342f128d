//! `sendOnboarding` against what may heal and what will not: a recipient refused for good, an
//! operator's wrong credentials, an SMTP outage shorter than the send window, a provider that
//! throttles, and a shared send rate across two handler processes. Real Redis, real SMTP over
//! TCP, the real handler binary.

use std::time::{Duration, Instant};

use crate::helpers::{
    AuthRefusingSmtp, RedisServer, SmtpSink, TestApp, free_port, new_user_body, spawn_app,
    unique_email,
};

/// How long an email may take to show up in the sink.
const MAIL_TIMEOUT: Duration = Duration::from_secs(10);

/// A 550 at RCPT is refused for good: the first delivery is acknowledged, no email goes out,
/// the profile says `undeliverable` with the code and text (JSON) and a sentence (HTML), a
/// redelivery sends nothing, and a repeated sign-up queues nothing.
#[tokio::test]
async fn a_mailbox_refused_with_550_is_recorded_undeliverable_and_acknowledged() {
    let stack = spawn_app().await;
    let mut body = new_user_body();
    let email = format!("bounce-{}", unique_email());
    body["email"] = email.clone().into();
    stack.smtp.refuse_mailbox(&email);
    let user = stack.app.sign_up(&body).await;

    let started = Instant::now();
    stack
        .app
        .send_onboarding(&user.message, 1)
        .await
        .assert_host_ok();

    assert!(
        started.elapsed() < Duration::from_secs(5),
        "no retrying: {:?}",
        started.elapsed()
    );
    assert!(stack.smtp.messages().is_empty(), "no email");
    let profile = stack.app.profile(&user.token).await;
    assert_eq!(profile["onboarding"], "undeliverable");
    assert_eq!(profile["onboardingDetail"]["code"], 550);
    let reply = profile["onboardingDetail"]["reply"]
        .as_str()
        .expect("the reply text");
    assert!(
        reply.contains("5.1.1") && reply.contains("Recipient address rejected"),
        "{reply}"
    );
    assert!(
        !reply.contains(&email),
        "the address is not echoed back: {reply}"
    );
    let authorization = format!("Bearer {}", user.token);
    let page = stack
        .app
        .root(&[("Authorization", &authorization), ("Accept", "text/html")])
        .await;
    let html = &page.res().assert_status(200).body;
    assert!(
        html.contains("We could not deliver your welcome email"),
        "{html}"
    );
    assert!(html.contains("550"), "{html}");

    stack
        .app
        .send_onboarding(&user.message, 2)
        .await
        .assert_host_ok();
    let again = stack.app.create_user_json(&body).await;
    again.res().assert_status(200);
    assert!(
        !again.has_output("onboardingMessage"),
        "{:?}",
        again.outputs
    );
    assert!(stack.smtp.messages().is_empty(), "still no email");
    assert!(
        stack.app.stdout().contains("undeliverable"),
        "a warning says so"
    );
}

/// Refused credentials are the operator's fault: the invocation rides the window out and then
/// fails (non-2xx), the user stays `pending`, and the ERROR line names SMTP_URL, not the
/// password.
#[tokio::test]
async fn refused_credentials_fail_after_the_window_and_name_smtp_url_not_the_password() {
    const PASSWORD: &str = "S3cret-smtp-Pa55word";
    let redis = RedisServer::start();
    let smtp = AuthRefusingSmtp::start();
    let app = TestApp::builder(
        &redis.url(),
        &format!("smtp://mailer:{PASSWORD}@127.0.0.1:{}", smtp.port()),
    )
    .env("SMTP_SEND_WINDOW_SECONDS", "2")
    .spawn()
    .await;
    let user = app.sign_up(&new_user_body()).await;

    let started = Instant::now();
    let answer = app.send_onboarding(&user.message, 1).await;

    answer.assert_host_failed();
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(1500) && took < Duration::from_secs(5),
        "{took:?}"
    );
    assert!(smtp.auth_attempts() >= 2, "retried within the window");
    let profile = app.profile(&user.token).await;
    assert_eq!(profile["onboarding"], "pending");
    let stderr = app.stderr();
    assert!(
        stderr.contains("SMTP_URL"),
        "the setting to fix is named: {stderr}"
    );
    assert!(
        stderr.contains("535"),
        "the server's reply is shown: {stderr}"
    );
    let logs = format!("{stderr}{}", app.stdout());
    assert!(!logs.contains(PASSWORD), "the password leaked: {logs}");
}

/// An SMTP outage shorter than the send window is ridden out inside the invocation: one
/// email, and a 2xx on the first delivery.
#[tokio::test]
async fn an_smtp_outage_inside_the_window_is_ridden_out_in_one_delivery() {
    let redis = RedisServer::start();
    let smtp_port = free_port();
    let app = TestApp::builder(&redis.url(), &format!("smtp://127.0.0.1:{smtp_port}"))
        .env("SMTP_SEND_WINDOW_SECONDS", "15")
        .spawn()
        .await;
    let user = app.sign_up(&new_user_body()).await;

    let (answer, smtp) = tokio::join!(app.send_onboarding(&user.message, 1), async {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        SmtpSink::start_on(smtp_port)
    });

    answer.assert_host_ok();
    let mails = smtp.wait_for(1, MAIL_TIMEOUT).await;
    assert_eq!(mails.len(), 1, "exactly one email");
    let profile = app.profile(&user.token).await;
    assert_eq!(profile["onboarding"], "sent");
}

/// A provider throttling past 5 messages a second (451 4.7.0): a burst of 12 deliveries is
/// paced down and every one succeeds within its window, one email each.
#[tokio::test]
async fn a_throttling_provider_slows_the_process_down_and_nothing_fails() {
    let stack = spawn_app().await;
    stack.smtp.set_rate_limit(Some(5));
    let mut users = Vec::new();
    for _ in 0..12 {
        users.push(stack.app.sign_up(&new_user_body()).await);
    }

    let answers = futures_util::future::join_all(
        users
            .iter()
            .map(|user| stack.app.send_onboarding(&user.message, 1)),
    )
    .await;

    for answer in &answers {
        answer.assert_host_ok();
    }
    let mails = stack.smtp.wait_for(12, MAIL_TIMEOUT).await;
    assert_eq!(mails.len(), 12, "one email each");
    assert!(stack.smtp.throttled() > 0, "the provider did throttle");
}

/// SMTP_MAX_PER_MINUTE is one limit across instances: two handler processes sharing Redis send
/// their emails in slots spaced 60 s / limit apart, and a provider whose limit matches never
/// throttles.
#[tokio::test]
async fn the_send_rate_is_shared_by_two_handler_processes_through_redis() {
    let redis = RedisServer::start();
    let smtp = SmtpSink::start();
    smtp.set_rate_limit(Some(6));
    let prefix = format!("shared-{}:", uuid::Uuid::new_v4().simple());
    let spawn = || {
        TestApp::builder(&redis.url(), &smtp.url())
            .env("REDIS_KEY_PREFIX", &prefix)
            .env("SMTP_MAX_PER_MINUTE", "300")
            .spawn()
    };
    let (first, second) = tokio::join!(spawn(), spawn());
    let mut users = Vec::new();
    for _ in 0..8 {
        users.push(first.sign_up(&new_user_body()).await);
    }

    let answers = futures_util::future::join_all(users.iter().enumerate().map(|(i, user)| {
        let app = if i % 2 == 0 { &first } else { &second };
        app.send_onboarding(&user.message, 1)
    }))
    .await;

    answers.iter().for_each(|answer| {
        answer.assert_host_ok();
    });
    let mut arrivals: Vec<Instant> = smtp
        .wait_for(8, MAIL_TIMEOUT)
        .await
        .iter()
        .map(|m| m.received_at)
        .collect();
    arrivals.sort();
    let gaps: Vec<Duration> = arrivals.windows(2).map(|w| w[1] - w[0]).collect();
    assert!(
        gaps.iter().all(|gap| *gap >= Duration::from_millis(150)),
        "200 ms slots: {gaps:?}"
    );
    assert_eq!(smtp.throttled(), 0, "no send refused for rate");
}
