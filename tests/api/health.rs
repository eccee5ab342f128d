//! `health`: Redis checked with a short timeout, never hanging.

use std::time::{Duration, Instant};

use crate::helpers::{SilentServer, SmtpSink, TestApp, spawn_app};

/// With Redis up, health answers 200 with `status: ok` and its checks.
#[tokio::test]
async fn health_returns_200_with_status_ok_when_redis_answers() {
    let stack = spawn_app().await;

    let answer = stack.app.health().await;

    let body = answer.res().assert_status(200).json();
    assert_eq!(body["status"], "ok", "body: {body}");
    assert!(
        body["checks"].is_object(),
        "checks must be an object: {body}"
    );
}

/// With Redis stopped, health answers 503 naming redis, within 5 seconds.
#[tokio::test]
async fn health_returns_503_naming_redis_within_5_seconds_when_redis_is_stopped() {
    let mut stack = spawn_app().await;
    stack.app.health().await.res().assert_status(200);
    stack.redis.stop();

    let started = Instant::now();
    let answer = stack.app.health().await;
    let elapsed = started.elapsed();

    let res = answer.res();
    res.assert_status(503);
    assert!(
        res.body.to_ascii_lowercase().contains("redis"),
        "the body must name the failing check: {}",
        res.body
    );
    assert!(elapsed < Duration::from_secs(5), "health took {elapsed:?}");
}

/// Once Redis is back, health returns to 200 without restarting the handler.
#[tokio::test]
async fn health_returns_to_200_when_redis_comes_back() {
    let mut stack = spawn_app().await;
    stack.redis.stop();
    stack.app.health().await.res().assert_status(503);

    stack.redis.restart();

    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let answer = stack.app.health().await;
        if answer.res().status_code == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "health still answers {:?} 15 s after Redis came back",
            answer.res()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A Redis that accepts connections but never replies gets 503 naming redis within 5 seconds:
/// health checks with a short timeout and never hangs.
#[tokio::test]
async fn health_returns_503_within_5_seconds_when_redis_never_answers() {
    let silent = SilentServer::start();
    let smtp = SmtpSink::start();
    let redis_url = format!("redis://127.0.0.1:{}", silent.port);
    let app = TestApp::builder(&redis_url, &smtp.url()).spawn().await;

    let started = Instant::now();
    let answer = app.health().await;
    let elapsed = started.elapsed();

    let res = answer.res();
    res.assert_status(503);
    assert!(
        res.body.to_ascii_lowercase().contains("redis"),
        "the body must name the failing check: {}",
        res.body
    );
    assert!(elapsed < Duration::from_secs(5), "health took {elapsed:?}");
}
