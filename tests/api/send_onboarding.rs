//! `sendOnboarding`: one email per user under redelivery and concurrency; failures that may
//! heal are retried by Service Bus, malformed messages fail.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::helpers::{
    InvocationAnswer, RedisServer, SilentServer, SmtpSink, TestApp, free_port, new_user_body,
    spawn_app, spawn_app_with, unique_email,
};

/// How long an email may take to show up in the sink.
const MAIL_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the handler may take to report a failure on stderr.
const STDERR_TIMEOUT: Duration = Duration::from_secs(5);

/// Asserts the invocation failed (non-2xx) and the handler said why on stderr (the host
/// discards the Logs of a failed invocation); returns what it said.
async fn assert_failed_and_reported(
    app: &TestApp,
    stderr_mark: usize,
    answer: &InvocationAnswer,
) -> String {
    answer.assert_host_failed();
    let said = app.new_stderr_since(stderr_mark, STDERR_TIMEOUT).await;
    assert!(!said.trim().is_empty(), "the reason must be on stderr");
    said
}

/// A well-formed message for a user id that was never created.
fn message_for_unknown_user() -> Value {
    json!({
        "type": "user.created",
        "version": 1,
        "userId": uuid::Uuid::new_v4().to_string(),
        "email": unique_email(),
        "name": "Nobody",
        "createdAt": "2024-10-24T17:00:01Z",
    })
}

/// The message is delivered as one multipart (text and HTML) email to the user.
#[tokio::test]
async fn send_onboarding_sends_one_multipart_email_to_the_user() {
    let stack = spawn_app().await;
    let user = stack.app.sign_up(&new_user_body()).await;

    let answer = stack.app.send_onboarding(&user.message, 1).await;

    answer.assert_host_ok();
    let mails = stack.smtp.wait_for(1, MAIL_TIMEOUT).await;
    assert_eq!(mails.len(), 1);
    let mail = &mails[0];
    assert_eq!(mail.to, vec![user.email.clone()], "envelope recipients");
    assert_eq!(mail.from, "no-reply@example.com", "envelope sender");
    assert!(
        mail.header("From")
            .is_some_and(|from| from.contains("no-reply@example.com")),
        "From comes from MAIL_FROM: {:?}",
        mail.header("From")
    );
    assert!(
        mail.header("To").is_some_and(|to| to.contains(&user.email)),
        "To: {:?}",
        mail.header("To")
    );
    assert!(mail.header("Subject").is_some(), "a subject");
    assert!(
        mail.header("Content-Type")
            .is_some_and(|ct| ct.to_ascii_lowercase().starts_with("multipart/")),
        "a multipart message: {:?}",
        mail.header("Content-Type")
    );
    let text = mail.part("text/plain").expect("a text/plain part");
    let html = mail.part("text/html").expect("a text/html part");
    assert!(text.contains("Alice Example"), "text part: {text}");
    assert!(html.contains("Alice Example"), "HTML part: {html}");
    assert_eq!(mail.parts().len(), 2, "exactly text and HTML");
}

/// The user's name is escaped in the HTML part.
#[tokio::test]
async fn send_onboarding_escapes_the_user_name_in_the_html_part() {
    let stack = spawn_app().await;
    let mut body = new_user_body();
    body["name"] = json!("Eve <b>x</b>");
    let user = stack.app.sign_up(&body).await;

    stack
        .app
        .send_onboarding(&user.message, 1)
        .await
        .assert_host_ok();

    let mails = stack.smtp.wait_for(1, MAIL_TIMEOUT).await;
    let html = mails[0].part("text/html").expect("a text/html part");
    assert!(
        html.contains("&lt;b&gt;"),
        "the name must be escaped: {html}"
    );
    assert!(
        !html.contains("<b>x</b>"),
        "the name must not be raw HTML: {html}"
    );
}

/// After the email went out, the profile says `onboarding: "sent"`.
#[tokio::test]
async fn root_shows_onboarding_sent_after_the_email_went_out() {
    let stack = spawn_app().await;
    let user = stack.app.sign_up(&new_user_body()).await;

    stack
        .app
        .send_onboarding(&user.message, 1)
        .await
        .assert_host_ok();

    let profile = stack.app.profile(&user.token).await;
    assert_eq!(profile["onboarding"], "sent");
}

/// A redelivered message is acknowledged again without a second email.
#[tokio::test]
async fn send_onboarding_sends_only_one_email_when_the_message_is_redelivered() {
    let stack = spawn_app().await;
    let user = stack.app.sign_up(&new_user_body()).await;
    stack
        .app
        .send_onboarding(&user.message, 1)
        .await
        .assert_host_ok();
    stack.smtp.wait_for(1, MAIL_TIMEOUT).await;

    let answer = stack.app.send_onboarding(&user.message, 2).await;

    answer.assert_host_ok();
    assert_eq!(stack.smtp.messages().len(), 1, "still exactly one email");
}

/// Five concurrent deliveries of the same message send exactly one email, and a later
/// redelivery is acknowledged.
#[tokio::test]
async fn send_onboarding_sends_only_one_email_for_five_concurrent_deliveries() {
    let stack = spawn_app().await;
    let user = stack.app.sign_up(&new_user_body()).await;

    let answers = futures_util::future::join_all(
        (1..=5).map(|_| stack.app.send_onboarding(&user.message, 1)),
    )
    .await;

    assert!(
        answers.iter().any(InvocationAnswer::host_ok),
        "at least one delivery succeeds: {:?}",
        answers.iter().map(|a| a.host_status).collect::<Vec<_>>()
    );
    assert_eq!(stack.smtp.messages().len(), 1, "exactly one email");
    stack
        .app
        .send_onboarding(&user.message, 2)
        .await
        .assert_host_ok();
    assert_eq!(stack.smtp.messages().len(), 1, "still exactly one email");
}

/// With SMTP down for longer than the send window the invocation fails (so Service Bus
/// redelivers) and stderr says why; once SMTP is back, the redelivery sends exactly one email.
#[tokio::test]
async fn send_onboarding_fails_while_smtp_is_down_and_sends_once_it_is_back() {
    let redis = RedisServer::start();
    let smtp_port = free_port();
    let app = TestApp::builder(&redis.url(), &format!("smtp://127.0.0.1:{smtp_port}"))
        .env("SMTP_SEND_WINDOW_SECONDS", "2")
        .spawn()
        .await;
    let user = app.sign_up(&new_user_body()).await;
    let mark = app.stderr().len();

    let failed = app.send_onboarding(&user.message, 1).await;

    let said = assert_failed_and_reported(&app, mark, &failed)
        .await
        .to_lowercase();
    assert!(
        ["smtp", "mail", "connect"].iter().any(|w| said.contains(w)),
        "stderr should say the email could not be sent: {said}"
    );
    let smtp = SmtpSink::start_on(smtp_port);
    // The process's circuit breaker may still hold sends back for its pause (longer than this
    // test's 2 s window): Service Bus keeps redelivering, and one redelivery gets through.
    let mut delivery = 2;
    while !app.send_onboarding(&user.message, delivery).await.host_ok() {
        assert!(delivery < 10, "still failing after {delivery} deliveries");
        delivery += 1;
    }
    let mails = smtp.wait_for(1, MAIL_TIMEOUT).await;
    assert_eq!(mails.len(), 1, "exactly one email");
    assert_eq!(mails[0].to, vec![user.email.clone()]);
}

/// With Redis down for longer than the send window the invocation fails and stderr says why;
/// once Redis is back, a redelivery sends exactly one email.
#[tokio::test]
async fn send_onboarding_fails_while_redis_is_down_and_sends_once_it_is_back() {
    let mut stack = spawn_app_with(|app| app.env("SMTP_SEND_WINDOW_SECONDS", "2")).await;
    let user = stack.app.sign_up(&new_user_body()).await;
    stack.redis.stop();
    let mark = stack.app.stderr().len();

    let failed = stack.app.send_onboarding(&user.message, 1).await;

    assert_failed_and_reported(&stack.app, mark, &failed).await;
    assert!(
        stack.smtp.messages().is_empty(),
        "no email without the marker"
    );
    stack.redis.restart();
    // Service Bus keeps redelivering; the handler may need a moment to reconnect.
    let mut delivery = 2;
    loop {
        let answer = stack.app.send_onboarding(&user.message, delivery).await;
        if answer.host_ok() {
            break;
        }
        assert!(
            delivery < 10,
            "still failing after {delivery} deliveries (the message would be dead-lettered)"
        );
        delivery += 1;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let mails = stack.smtp.wait_for(1, MAIL_TIMEOUT).await;
    assert_eq!(mails.len(), 1, "exactly one email");
}

/// An SMTP server that accepts the connection and never answers makes the invocation fail
/// within the send window plus a margin, not hang: each attempt is cut at SMTP_TIMEOUT_SECONDS
/// or the window's end, whichever comes first.
#[tokio::test]
async fn send_onboarding_fails_in_time_when_the_smtp_server_never_answers() {
    let silent = SilentServer::start();
    let stack = spawn_app_with(|app| {
        app.env("SMTP_URL", &format!("smtp://127.0.0.1:{}", silent.port))
            .env("SMTP_TIMEOUT_SECONDS", "2")
            .env("SMTP_SEND_WINDOW_SECONDS", "2")
    })
    .await;
    let user = stack.app.sign_up(&new_user_body()).await;
    let mark = stack.app.stderr().len();

    let started = Instant::now();
    let answer = stack.app.send_onboarding(&user.message, 1).await;
    let elapsed = started.elapsed();

    assert_failed_and_reported(&stack.app, mark, &answer).await;
    assert!(
        elapsed < Duration::from_secs(5),
        "the invocation took {elapsed:?} with a 2 s SMTP timeout"
    );
}

/// A message for a user that does not exist is acknowledged (2xx), sends nothing, and leaves
/// nothing in Redis: the send claim that the lookup takes in the same round trip is given back.
#[tokio::test]
async fn send_onboarding_acknowledges_a_message_for_a_user_that_does_not_exist() {
    let stack = spawn_app().await;

    let answer = stack
        .app
        .send_onboarding(&message_for_unknown_user(), 1)
        .await;

    answer.assert_host_ok();
    assert!(
        stack.smtp.messages().is_empty(),
        "no email for a missing user"
    );
    let client = redis::Client::open(stack.redis.url()).expect("a Redis client");
    let mut redis = client
        .get_multiplexed_async_connection()
        .await
        .expect("connect to the test Redis");
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("*")
        .query_async(&mut redis)
        .await
        .expect("list the keys");
    assert!(keys.is_empty(), "keys left behind: {keys:?}");
}

/// A message body that is not JSON fails the invocation (it will be dead-lettered).
#[tokio::test]
async fn send_onboarding_fails_for_a_message_that_is_not_json() {
    let stack = spawn_app().await;
    let mark = stack.app.stderr().len();
    let envelope = crate::helpers::service_bus_invocation_of_text("this is not JSON {", 1);

    let answer = stack.app.invoke("sendOnboarding", &envelope).await;

    assert_failed_and_reported(&stack.app, mark, &answer).await;
    assert!(stack.smtp.messages().is_empty());
}

/// A message of another type fails the invocation and sends nothing.
#[tokio::test]
async fn send_onboarding_fails_for_a_message_of_another_type() {
    let stack = spawn_app().await;
    let user = stack.app.sign_up(&new_user_body()).await;
    let mut message = user.message.clone();
    message["type"] = json!("user.deleted");
    let mark = stack.app.stderr().len();

    let answer = stack.app.send_onboarding(&message, 1).await;

    assert_failed_and_reported(&stack.app, mark, &answer).await;
    assert!(stack.smtp.messages().is_empty());
}

/// A message without a userId fails the invocation and sends nothing.
#[tokio::test]
async fn send_onboarding_fails_for_a_message_without_a_user_id() {
    let stack = spawn_app().await;
    let user = stack.app.sign_up(&new_user_body()).await;
    let mut message = user.message.clone();
    message.as_object_mut().unwrap().remove("userId");
    let mark = stack.app.stderr().len();

    let answer = stack.app.send_onboarding(&message, 1).await;

    assert_failed_and_reported(&stack.app, mark, &answer).await;
    assert!(stack.smtp.messages().is_empty());
}

/// Leniency (docs/PROTOCOL.md): `Data.message` already an object, or a string holding the body
/// directly, is accepted too.
#[tokio::test]
async fn send_onboarding_accepts_a_message_that_is_not_double_encoded() {
    let stack = spawn_app().await;
    let as_object = stack.app.sign_up(&new_user_body()).await;
    let as_plain_string = stack.app.sign_up(&new_user_body()).await;
    let envelopes = [
        json!({"Data": {"message": as_object.message}, "Metadata": {"DeliveryCount": "1"}}),
        json!({
            "Data": {"message": as_plain_string.message.to_string()},
            "Metadata": {"DeliveryCount": "1"},
        }),
    ];

    for envelope in &envelopes {
        stack
            .app
            .invoke("sendOnboarding", envelope)
            .await
            .assert_host_ok();
    }

    let mails = stack.smtp.wait_for(2, MAIL_TIMEOUT).await;
    let mut recipients: Vec<String> = mails.iter().flat_map(|m| m.to.clone()).collect();
    recipients.sort();
    let mut expected = vec![as_object.email, as_plain_string.email];
    expected.sort();
    assert_eq!(recipients, expected);
}
