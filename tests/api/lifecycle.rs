//! The process as the host runs it: readiness before backends, graceful stop, and refusing
//! to start with bad settings.

use std::time::{Duration, Instant};

use crate::helpers::{SmtpSink, TestApp, free_port};

/// The handler opens its port before Redis answers: with nothing listening at REDIS_URL it
/// still answers the ping at once, and `health` says 503.
#[tokio::test]
async fn the_readiness_ping_answers_at_once_even_when_redis_is_unreachable() {
    let smtp = SmtpSink::start();
    let nowhere = format!("redis://127.0.0.1:{}", free_port());
    let app = TestApp::builder(&nowhere, &smtp.url()).spawn().await;

    let started = Instant::now();
    app.ping().await;
    let ping_took = started.elapsed();
    let started = Instant::now();
    let health = app.health().await;
    let health_took = started.elapsed();

    assert!(
        ping_took < Duration::from_secs(1),
        "the ping took {ping_took:?}"
    );
    health.res().assert_status(503);
    assert!(
        health_took < Duration::from_secs(5),
        "health took {health_took:?}"
    );
}

/// SIGTERM stops the handler cleanly: exit code 0 within 10 seconds.
#[tokio::test]
async fn the_handler_exits_with_0_within_10_seconds_of_sigterm() {
    let smtp = SmtpSink::start();
    let redis = crate::helpers::RedisServer::start();
    let mut app = TestApp::spawn(&redis, &smtp.url()).await;
    app.health().await.res().assert_status(200);

    let status = app.terminate(Duration::from_secs(10)).await;

    assert_eq!(status.code(), Some(0), "exit status {status}");
}

/// With several bad settings the handler exits non-zero at once, naming every problem on
/// stderr, without printing any secret value.
#[tokio::test]
async fn the_handler_refuses_to_start_and_names_every_bad_setting_at_once() {
    const SHORT_PREVIOUS: &str = "short-previous-key";
    const SMTP_PASSWORD: &str = "smtp-password-never-printed";
    let smtp_url = format!("smtp://mailer:{SMTP_PASSWORD}@127.0.0.1:{}", free_port());
    let builder = TestApp::builder("unused", &smtp_url)
        .without("REDIS_URL")
        .without("JWT_SECRET")
        .env("JWT_SECRET_PREVIOUS", SHORT_PREVIOUS);

    let exited = builder.run_until_exit(Duration::from_secs(10)).await;

    assert!(
        exited.status.code().is_some_and(|code| code != 0),
        "exit status {}",
        exited.status
    );
    assert!(
        exited.elapsed < Duration::from_secs(5),
        "took {:?}",
        exited.elapsed
    );
    for setting in ["REDIS_URL", "JWT_SECRET", "JWT_SECRET_PREVIOUS"] {
        assert!(
            exited.stderr.contains(setting),
            "stderr must name {setting}:\n{}",
            exited.stderr
        );
    }
    for secret in [SHORT_PREVIOUS, SMTP_PASSWORD] {
        let output = format!("{}{}", exited.stdout, exited.stderr);
        assert!(!output.contains(secret), "a secret was printed:\n{output}");
    }
}

/// A setting still holding `@Microsoft.KeyVault(...)` is reported as an unresolved Key Vault
/// reference, and the handler does not start.
#[tokio::test]
async fn the_handler_reports_an_unresolved_key_vault_reference() {
    let smtp = SmtpSink::start();
    let redis_url = format!("redis://127.0.0.1:{}", free_port());
    let builder = TestApp::builder(&redis_url, &smtp.url()).env(
        "JWT_SECRET",
        "@Microsoft.KeyVault(SecretUri=https://kv-onboarding.vault.azure.net/secrets/jwt/)",
    );

    let exited = builder.run_until_exit(Duration::from_secs(10)).await;

    assert!(
        exited.status.code().is_some_and(|code| code != 0),
        "exit status {}",
        exited.status
    );
    let stderr = exited.stderr.to_lowercase();
    assert!(
        stderr.contains("jwt_secret") && stderr.contains("key vault"),
        "stderr must call JWT_SECRET an unresolved Key Vault reference:\n{}",
        exited.stderr
    );
}
