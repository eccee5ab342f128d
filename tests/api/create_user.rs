//! `createUser`: sign-up (JSON or form), its validation, its answers, and the queue message.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::helpers::{
    InvocationAnswer, KIB, PUBLIC_ORIGIN, SilentServer, TEST_JWT_SECRET, TEST_PASSWORD,
    http_invocation, new_user_body, post_chunked_over_raw_tcp, spawn_app, spawn_app_with,
    unique_email,
};

/// Asserts a problem answer with this status that names `field` somewhere in its body, and no
/// queue message.
fn assert_rejected_naming(answer: &InvocationAnswer, status: u16, field: &str) {
    let res = answer.res();
    res.assert_problem(status);
    assert!(
        res.body.contains(field),
        "the {status} body must name the bad field `{field}`: {}",
        res.body
    );
    assert!(
        !answer.has_output("onboardingMessage"),
        "a rejected sign-up must not queue a message: {:?}",
        answer.outputs
    );
}

/// A new sign-up gets 201 with the profile and a bearer token, and queues the onboarding
/// message as a JSON object.
#[tokio::test]
async fn create_user_returns_201_with_a_token_and_the_onboarding_message() {
    let stack = spawn_app().await;
    let body = new_user_body();

    let answer = stack.app.create_user_json(&body).await;

    let res = answer.res();
    res.assert_status(201);
    assert!(
        res.header("Content-Type")
            .is_some_and(|ct| ct.starts_with("application/json")),
        "res: {res:#?}"
    );
    let created = res.json();
    let id = created["id"].as_str().expect("an id");
    assert!(uuid::Uuid::parse_str(id).is_ok(), "id is a UUID: {id}");
    assert_eq!(created["name"], body["name"]);
    assert_eq!(created["email"], body["email"]);
    assert!(created["createdAt"].is_string(), "created: {created}");
    assert!(created["token"].as_str().is_some_and(|t| !t.is_empty()));
    assert_eq!(created["tokenType"], "Bearer");
    assert!(
        created["expiresIn"].as_u64().is_some_and(|s| s > 0),
        "expiresIn is a number of seconds: {created}"
    );

    let message = &answer.outputs["onboardingMessage"];
    assert!(
        message.is_object(),
        "the queue message must be an object: {message}"
    );
    assert_eq!(message["type"], "user.created");
    assert_eq!(message["version"], 1);
    assert_eq!(message["userId"], id);
    assert_eq!(message["email"], body["email"]);
    assert_eq!(message["name"], body["name"]);
    assert_eq!(message["createdAt"], created["createdAt"]);
}

/// Signing up again with the same email (in another case) and password is a safe retry: 200,
/// the same user, a working token, and the message again while the email has not gone out.
#[tokio::test]
async fn create_user_returns_200_with_a_fresh_token_for_the_same_email_in_any_case_and_password() {
    let stack = spawn_app().await;
    let body = new_user_body();
    let first = stack.app.sign_up(&body).await;
    let mut retry = body.clone();
    retry["email"] = json!(body["email"].as_str().unwrap().to_uppercase());

    let answer = stack.app.create_user_json(&retry).await;

    let again = answer.res().assert_status(200).json();
    assert_eq!(again["id"], first.id.as_str());
    let token = again["token"].as_str().expect("a fresh token");
    assert_eq!(again["tokenType"], "Bearer");
    let profile = stack.app.profile(token).await;
    assert_eq!(profile["id"], first.id.as_str());
    let message = &answer.outputs["onboardingMessage"];
    assert_eq!(message["userId"], first.id.as_str(), "message: {message}");
    assert_eq!(message["type"], "user.created");
}

/// Once the onboarding email went out, a retried sign-up no longer queues the message.
#[tokio::test]
async fn create_user_does_not_queue_the_message_again_once_the_email_was_sent() {
    let stack = spawn_app().await;
    let body = new_user_body();
    let user = stack.app.sign_up(&body).await;
    stack
        .app
        .send_onboarding(&user.message, 1)
        .await
        .assert_host_ok();
    stack.smtp.wait_for(1, Duration::from_secs(10)).await;

    let answer = stack.app.create_user_json(&body).await;

    answer.res().assert_status(200);
    assert!(
        !answer.has_output("onboardingMessage"),
        "the email already went out: {:?}",
        answer.outputs
    );
}

/// The same email with another password is a conflict, without a queue message.
#[tokio::test]
async fn create_user_returns_409_for_the_same_email_with_another_password() {
    let stack = spawn_app().await;
    let body = new_user_body();
    stack.app.sign_up(&body).await;
    let mut other = body.clone();
    other["email"] = json!(body["email"].as_str().unwrap().to_uppercase());
    other["password"] = json!("another-password-entirely");

    let answer = stack.app.create_user_json(&other).await;

    answer.res().assert_problem(409);
    assert!(
        !answer.has_output("onboardingMessage"),
        "outputs: {:?}",
        answer.outputs
    );
}

/// A body missing one field gets 400 naming that field.
#[tokio::test]
async fn create_user_returns_400_naming_a_missing_field() {
    let stack = spawn_app().await;
    for field in ["name", "email", "password"] {
        let mut body = new_user_body();
        body.as_object_mut().unwrap().remove(field);

        let answer = stack.app.create_user_json(&body).await;

        assert_rejected_naming(&answer, 400, field);
    }
}

/// A body missing every field gets 400 naming each of them.
#[tokio::test]
async fn create_user_returns_400_naming_every_missing_field() {
    let stack = spawn_app().await;

    let answer = stack.app.create_user_json(&json!({})).await;

    for field in ["name", "email", "password"] {
        assert_rejected_naming(&answer, 400, field);
    }
}

/// A field of the wrong JSON type gets 400 naming that field.
#[tokio::test]
async fn create_user_returns_400_for_a_field_of_the_wrong_json_type() {
    let stack = spawn_app().await;
    let cases = [
        ("name", json!(42)),
        ("email", json!(["alice@example.com"])),
        ("password", json!({"value": TEST_PASSWORD})),
    ];
    for (field, value) in cases {
        let mut body = new_user_body();
        body[field] = value;

        let answer = stack.app.create_user_json(&body).await;

        assert_rejected_naming(&answer, 400, field);
    }
}

/// A body with every value invalid gets one 422 naming all three fields.
#[tokio::test]
async fn create_user_returns_422_naming_each_invalid_field() {
    let stack = spawn_app().await;
    let body = json!({"name": "  ", "email": "not-an-email", "password": "short"});

    let answer = stack.app.create_user_json(&body).await;

    for field in ["name", "email", "password"] {
        assert_rejected_naming(&answer, 422, field);
    }
}

/// Each value outside the rules gets 422 naming its field.
#[tokio::test]
async fn create_user_returns_422_for_each_value_outside_the_rules() {
    let stack = spawn_app().await;
    let too_long_email = format!(
        "{}@{}.{}.{}",
        "a".repeat(64),
        "b".repeat(63),
        "c".repeat(63),
        "d".repeat(62)
    );
    assert_eq!(too_long_email.len(), 255);
    let cases = [
        ("name", json!("")),
        ("name", json!("   ")),
        ("name", json!("a".repeat(101))),
        ("name", json!("Bell\u{7}Ringer")),
        ("name", json!("Line\nBreak")),
        ("email", json!("not-an-email")),
        ("email", json!("alice@")),
        ("email", json!(too_long_email)),
        ("password", json!("seven77")),
        ("password", json!("p".repeat(129))),
    ];
    for (field, value) in cases {
        let mut body = new_user_body();
        body[field] = value.clone();

        let answer = stack.app.create_user_json(&body).await;

        let res = answer.res();
        assert_eq!(
            res.status_code, 422,
            "{field} = {value} must be rejected with 422: {res:#?}"
        );
        assert_rejected_naming(&answer, 422, field);
    }
}

/// Values exactly at the limits are accepted: a 100-character name (characters, not bytes),
/// a 254-character email, 8- and 128-character passwords.
#[tokio::test]
async fn create_user_accepts_values_at_the_limits() {
    let stack = spawn_app().await;
    let longest_email = format!(
        "{}@{}.{}.{}",
        "a".repeat(64),
        "b".repeat(63),
        "c".repeat(63),
        "d".repeat(61)
    );
    assert_eq!(longest_email.len(), 254);
    let cases = [
        json!({"name": "n".repeat(100), "email": unique_email(), "password": TEST_PASSWORD}),
        json!({"name": "é".repeat(100), "email": unique_email(), "password": TEST_PASSWORD}),
        json!({"name": "Z", "email": longest_email, "password": TEST_PASSWORD}),
        json!({"name": "Eight", "email": unique_email(), "password": "8charsOK"}),
        json!({"name": "Long", "email": unique_email(), "password": "p".repeat(128)}),
    ];
    for body in cases {
        let answer = stack.app.create_user_json(&body).await;

        assert_eq!(
            answer.res().status_code,
            201,
            "{body} must be accepted: {:#?}",
            answer.res()
        );
    }
}

/// Malformed JSON gets 400.
#[tokio::test]
async fn create_user_returns_400_for_malformed_json() {
    let stack = spawn_app().await;

    let answer = stack
        .app
        .create_user_raw(Some("application/json"), r#"{"name": "Alice", "email": "#)
        .await;

    answer.res().assert_problem(400);
    assert!(!answer.has_output("onboardingMessage"));
}

/// A body that is not JSON (nor a form) gets 415.
#[tokio::test]
async fn create_user_returns_415_for_a_text_plain_body() {
    let stack = spawn_app().await;
    let body = new_user_body().to_string();

    let answer = stack.app.create_user_raw(Some("text/plain"), &body).await;

    answer.res().assert_problem(415);
    assert!(!answer.has_output("onboardingMessage"));
}

/// A body over 16 KiB gets 413, even when it is valid JSON.
#[tokio::test]
async fn create_user_returns_413_for_a_body_over_16_kib() {
    let stack = spawn_app().await;
    let mut body = new_user_body();
    body["bio"] = json!("x".repeat(17 * KIB));

    let answer = stack.app.create_user_json(&body).await;

    answer.res().assert_problem(413);
    assert!(!answer.has_output("onboardingMessage"));
}

/// With Redis down, sign-up answers 503 promptly and queues nothing.
#[tokio::test]
async fn create_user_returns_503_and_no_message_when_redis_is_down() {
    let mut stack = spawn_app().await;
    stack.app.sign_up(&new_user_body()).await;
    stack.redis.stop();

    let started = Instant::now();
    let answer = stack.app.create_user_json(&new_user_body()).await;

    answer.res().assert_problem(503);
    assert!(
        !answer.has_output("onboardingMessage"),
        "no message without a stored user: {:?}",
        answer.outputs
    );
    assert!(started.elapsed() < Duration::from_secs(10));
}

/// With a Redis that accepts connections but never replies, sign-up still answers 503
/// promptly and queues nothing.
#[tokio::test]
async fn create_user_returns_503_promptly_when_redis_never_answers() {
    let silent = SilentServer::start();
    let redis_url = format!("redis://127.0.0.1:{}", silent.port);
    let stack = spawn_app_with(|app| app.env("REDIS_URL", &redis_url)).await;

    let started = Instant::now();
    let answer = stack.app.create_user_json(&new_user_body()).await;

    answer.res().assert_problem(503);
    assert!(!answer.has_output("onboardingMessage"));
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "createUser took {:?}",
        started.elapsed()
    );
}

/// `GET /createUser` serves the sign-up page.
#[tokio::test]
async fn create_user_page_answers_200_for_get() {
    let stack = spawn_app().await;

    let answer = stack.app.create_user_page().await;

    answer.res().assert_status(200);
}

/// A browser's form post gets a 303 to `/` with a secure session cookie that `root` accepts.
#[tokio::test]
async fn create_user_form_post_sets_a_session_cookie_and_redirects_to_root() {
    let stack = spawn_app().await;
    let email = unique_email();
    let form = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("name", "Form Filler")
        .append_pair("email", &email)
        .append_pair("password", TEST_PASSWORD)
        .finish();

    let answer = stack.app.create_user_from_browser(&form).await;

    let res = answer.res();
    res.assert_status(303);
    assert_eq!(res.header("Location"), Some("/"), "res: {res:#?}");
    let cookie = res.header("Set-Cookie").expect("a session cookie");
    for attribute in ["HttpOnly", "SameSite=Lax", "Secure"] {
        assert!(
            cookie
                .to_ascii_lowercase()
                .contains(&attribute.to_ascii_lowercase()),
            "the cookie needs {attribute}: {cookie}"
        );
    }
    assert!(answer.outputs["onboardingMessage"].is_object());
    let name_value = cookie.split(';').next().unwrap().trim();
    let profile = stack
        .app
        .root(&[("Cookie", name_value)])
        .await
        .res()
        .assert_status(200)
        .json();
    assert_eq!(profile["email"], email.as_str());
}

/// The password never shows up in a response, the invocation Logs, stdout or stderr; nor
/// does the JWT key.
#[tokio::test]
async fn create_user_never_reveals_the_password() {
    let stack = spawn_app().await;
    let body = new_user_body();
    let rejected_password = format!("{TEST_PASSWORD}{}", "!".repeat(120));
    let mut too_long = new_user_body();
    too_long["password"] = json!(rejected_password);
    let mut conflicting = body.clone();
    conflicting["password"] = json!(format!("{TEST_PASSWORD}-other"));
    let mut answers = vec![
        stack.app.create_user_json(&body).await,
        stack.app.create_user_json(&body).await,
        stack.app.create_user_json(&conflicting).await,
        stack.app.create_user_json(&too_long).await,
    ];
    let statuses: Vec<u16> = answers.iter().map(|a| a.res().status_code).collect();
    assert_eq!(statuses, [201, 200, 409, 422]);
    let user = answers[0].res().json();
    answers.push(
        stack
            .app
            .send_onboarding(&answers[0].outputs["onboardingMessage"], 1)
            .await,
    );
    answers.push(
        stack
            .app
            .root_with_token(user["token"].as_str().unwrap())
            .await,
    );

    for answer in &answers {
        assert!(
            !answer.raw_body.contains(TEST_PASSWORD),
            "the password is in an answer: {}",
            answer.raw_body
        );
        assert!(!answer.raw_body.contains(TEST_JWT_SECRET));
    }
    for (stream, text) in [
        ("stdout", stack.app.stdout()),
        ("stderr", stack.app.stderr()),
    ] {
        assert!(
            !text.contains(TEST_PASSWORD),
            "the password is on {stream}:\n{text}"
        );
        assert!(
            !text.contains(TEST_JWT_SECRET),
            "the JWT key is on {stream}:\n{text}"
        );
    }
}

/// Twenty concurrent identical sign-ups make exactly one user: one 201, the rest 200 (or 503
/// "sign-up in progress" for one that lands between the first's claim and record), and every
/// token handed out belongs to that one user.
#[tokio::test]
async fn create_user_makes_exactly_one_user_for_20_concurrent_identical_sign_ups() {
    let stack = spawn_app().await;
    let body = new_user_body();

    let answers =
        futures_util::future::join_all((0..20).map(|_| stack.app.create_user_json(&body))).await;

    let statuses: Vec<u16> = answers.iter().map(|a| a.res().status_code).collect();
    assert_eq!(
        statuses.iter().filter(|&&s| s == 201).count(),
        1,
        "exactly one 201: {statuses:?}"
    );
    assert!(
        statuses.iter().all(|s| [200, 201, 503].contains(s)),
        "only 201, 200 or 503: {statuses:?}"
    );
    let mut ids: Vec<String> = Vec::new();
    for answer in answers.iter().filter(|a| a.res().status_code < 300) {
        let created = answer.res().json();
        let token = created["token"].as_str().expect("a token");
        let profile = stack.app.profile(token).await;
        assert_eq!(profile["id"], created["id"]);
        ids.push(profile["id"].as_str().unwrap().to_owned());
    }
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 1, "every token resolves to one user: {ids:?}");
}

/// `curl -d 'name=…&email=…'` posts a form too, but asks for `*/*`: an API client gets the JSON
/// answer with its token, not a cookie and a redirect meant for a browser.
#[tokio::test]
async fn a_form_post_from_an_api_client_gets_json_with_a_token() {
    let stack = spawn_app().await;
    let form = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("name", "Curl User")
        .append_pair("email", &unique_email())
        .append_pair("password", TEST_PASSWORD)
        .finish();

    let answer = stack
        .app
        .create_user_raw(Some("application/x-www-form-urlencoded"), &form)
        .await;

    let res = answer.res();
    res.assert_status(201);
    assert!(res.json()["token"].is_string(), "res: {res:#?}");
    assert!(res.header("Set-Cookie").is_none());
}

/// An API client's refused form post gets problem JSON, not the sign-up page.
#[tokio::test]
async fn a_refused_form_post_from_an_api_client_gets_problem_json() {
    let stack = spawn_app().await;

    let answer = stack
        .app
        .create_user_raw(
            Some("application/x-www-form-urlencoded"),
            "name=&email=x&password=short",
        )
        .await;

    let problem = answer.res().assert_problem(422);
    assert!(problem["errors"].is_array(), "{problem}");
}

/// `curl -d '{"name":…}'` without `-H 'Content-Type: application/json'` declares a form: the
/// problem says which header to send.
#[tokio::test]
async fn a_json_body_sent_as_a_form_is_told_to_send_the_json_content_type() {
    let stack = spawn_app().await;
    let body = json!({"name": "Ada", "email": unique_email(), "password": TEST_PASSWORD});

    let answer = stack
        .app
        .create_user_raw(Some("application/x-www-form-urlencoded"), &body.to_string())
        .await;

    let problem = answer.res().assert_problem(415);
    let detail = problem["detail"].as_str().unwrap_or_default();
    assert!(
        detail.contains("Content-Type: application/json"),
        "{problem}"
    );
}

/// A client body far past the 8 MiB the handler reads of an envelope (which carries the body
/// about twice: `Body`, and its fields again in Metadata), sent as the host sends it (chunked):
/// the client still gets the 413 problem in `res`, never the host's empty 500, and the handler
/// reads and drops the rest as it comes, so its memory stays flat whatever the size.
#[tokio::test]
async fn an_oversized_body_gets_413_in_res_and_memory_stays_flat() {
    let stack = spawn_app().await;
    stack.app.health().await.assert_host_ok();
    let before = stack.app.peak_rss_kib();
    let mut peaks = Vec::new();
    for mib in [4usize, 16, 64] {
        let body = json!({"name": "x".repeat(mib << 20), "email": unique_email(), "password": TEST_PASSWORD})
            .to_string();
        let envelope = http_invocation(
            "POST",
            &format!("{PUBLIC_ORIGIN}/createUser"),
            &[("Content-Type", "application/json")],
            Some(&body),
        )
        .to_string();
        drop(body);
        let chunks: Vec<&str> = envelope
            .as_bytes()
            .chunks(64 * 1024)
            .map(|c| std::str::from_utf8(c).expect("an ASCII envelope"))
            .collect();
        let answer = post_chunked_over_raw_tcp(stack.app.port, "/createUser", &chunks).await;
        answer.assert_host_ok();
        let problem = answer.res().assert_problem(413);
        assert!(
            problem["detail"]
                .as_str()
                .unwrap_or_default()
                .contains("16384"),
            "{mib} MiB: {problem}"
        );
        let peak = stack.app.peak_rss_kib();
        println!(
            "{mib} MiB body, {} MiB envelope: handler peak RSS {} MiB (before: {} MiB)",
            envelope.len() >> 20,
            peak >> 10,
            before >> 10
        );
        // What the handler holds is the envelope limit (8 MiB, in a buffer that doubles up to
        // it) and one chunk, plus the allocator's slack; never the body.
        assert!(
            peak < before + 48 * 1024,
            "{mib} MiB: peak RSS {peak} KiB, {before} KiB before"
        );
        peaks.push(peak);
    }
    // Flat: sixteen times the body costs next to nothing more.
    assert!(
        peaks[2].saturating_sub(peaks[0]) < 16 * 1024,
        "peak RSS grew with the body: {peaks:?} KiB"
    );
}
