//! The host-to-handler protocol itself: chunked bodies, big envelopes, header casing, absent
//! bodies and Metadata, unknown functions, and the shape of the answer.

use std::time::Duration;

use bytes::Bytes;
use serde_json::{Value, json};

use crate::helpers::{
    MIB, TEST_PASSWORD, http_invocation, new_user_body, post_chunked_over_raw_tcp, spawn_app,
};

/// A hand-written chunked request without Content-Length (the host's framing) is read whole.
#[tokio::test]
async fn an_invocation_sent_chunked_over_raw_tcp_is_answered() {
    let stack = spawn_app().await;
    let body = new_user_body().to_string();
    let envelope = http_invocation(
        "POST",
        "https://app.example.net/createUser",
        &[("Content-Type", "application/json")],
        Some(&body),
    )
    .to_string();
    let (first, rest) = envelope.split_at(envelope.len() / 3);
    let (second, third) = rest.split_at(rest.len() / 2);

    let answer =
        post_chunked_over_raw_tcp(stack.app.port, "/createUser", &[first, second, third]).await;

    answer.res().assert_status(201);
}

/// A 3 MiB envelope (the host copies body fields into Metadata) is accepted: an oversized
/// client body gets `res` 413, not a failed invocation.
#[tokio::test]
async fn an_envelope_of_3_mib_gets_a_413_in_res_rather_than_a_host_error() {
    let stack = spawn_app().await;
    let mut body = new_user_body();
    body["padding"] = json!("x".repeat(MIB * 8 / 5));
    let envelope = http_invocation(
        "POST",
        "https://app.example.net/createUser",
        &[("Content-Type", "application/json")],
        Some(&body.to_string()),
    );
    let bytes = serde_json::to_vec(&envelope).unwrap();
    assert!(
        (3 * MIB..4 * MIB).contains(&bytes.len()),
        "the envelope is {} bytes",
        bytes.len()
    );

    let answer = stack
        .app
        .invoke_bytes("createUser", Bytes::from(bytes))
        .await;

    answer.res().assert_problem(413);
}

/// Header names are matched case-insensitively (`content-type`, `AUTHORIZATION`).
#[tokio::test]
async fn header_names_are_matched_in_any_casing() {
    let stack = spawn_app().await;
    let envelope = http_invocation(
        "POST",
        "https://app.example.net/createUser",
        &[("content-type", "application/json")],
        Some(&new_user_body().to_string()),
    );

    let created = stack.app.invoke("createUser", &envelope).await;

    let created = created.res().assert_status(201).json();
    let authorization = format!("Bearer {}", created["token"].as_str().unwrap());
    let profile = stack
        .app
        .root(&[("AUTHORIZATION", &authorization)])
        .await
        .res()
        .assert_status(200)
        .json();
    assert_eq!(profile["id"], created["id"]);
}

/// A GET arrives without a `Body` key at all, and is answered.
#[tokio::test]
async fn a_get_invocation_without_a_body_key_is_answered() {
    let stack = spawn_app().await;
    let envelope = http_invocation("GET", "https://app.example.net/createUser", &[], None);
    assert!(envelope["Data"]["req"].get("Body").is_none());

    let answer = stack.app.invoke("createUser", &envelope).await;

    answer.res().assert_status(200);
}

/// Metadata is informational: an envelope without it works.
#[tokio::test]
async fn an_invocation_without_metadata_is_answered() {
    let stack = spawn_app().await;
    let mut envelope = http_invocation(
        "POST",
        "https://app.example.net/createUser",
        &[("Content-Type", "application/json")],
        Some(&new_user_body().to_string()),
    );
    envelope.as_object_mut().unwrap().remove("Metadata");

    let answer = stack.app.invoke("createUser", &envelope).await;

    answer.res().assert_status(201);
}

/// An unknown function name fails the invocation with 404, and stderr says so.
#[tokio::test]
async fn an_unknown_function_fails_the_invocation_with_404() {
    let stack = spawn_app().await;
    let envelope = http_invocation("GET", "https://app.example.net/nope", &[], None);
    let mark = stack.app.stderr().len();

    let answer = stack.app.invoke("noSuchFunction", &envelope).await;

    assert_eq!(answer.host_status, 404, "answer: {}", answer.raw_body);
    let said = stack
        .app
        .new_stderr_since(mark, Duration::from_secs(5))
        .await;
    assert!(
        said.contains("noSuchFunction"),
        "stderr should name the unknown function: {said}"
    );
}

/// The answer is `application/json` `{"Outputs": {"res": {...}}, "Logs": [...],
/// "ReturnValue": null}` with a numeric statusCode and string header values.
#[tokio::test]
async fn the_answer_to_the_host_is_a_json_envelope_with_a_numeric_status_code() {
    let stack = spawn_app().await;

    let answer = stack.app.health().await;

    answer.assert_host_ok();
    let envelope: Value = serde_json::from_str(&answer.raw_body).unwrap();
    let res = &envelope["Outputs"]["res"];
    assert!(res["statusCode"].is_number(), "res: {res}");
    assert!(res["body"].is_string(), "res: {res}");
    assert!(
        res["headers"]
            .as_object()
            .is_some_and(|h| h.values().all(Value::is_string)),
        "res: {res}"
    );
}

/// The readiness ping is a plain `GET /` that answers 200, again and again, with no backend asked.
#[tokio::test]
async fn the_readiness_ping_answers_every_time() {
    let stack = spawn_app().await;

    for _ in 0..20 {
        let status = stack.app.ping().await;
        assert_eq!(status, 200, "the ping answers 200 every time");
    }
}

/// Information goes to stdout and into the invocation's Logs, not to stderr (which the host
/// records as errors); no password either way.
#[tokio::test]
async fn information_is_logged_to_stdout_and_the_invocation_logs() {
    let stack = spawn_app().await;

    let answer = stack.app.create_user_json(&new_user_body()).await;

    answer.res().assert_status(201);
    assert!(!answer.logs.is_empty(), "createUser's Logs are empty");
    assert!(answer.logs.iter().all(|l| !l.contains(TEST_PASSWORD)));
    assert!(!stack.app.stdout().trim().is_empty(), "nothing on stdout");
    assert!(
        !stack.app.stderr().contains("INFO"),
        "information went to stderr:\n{}",
        stack.app.stderr()
    );
}
