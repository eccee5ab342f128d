//! Acknowledged means replicated: with a replica, a sign-up is answered only once the replica
//! has it (`WAIT`); a replica that does not confirm in time gets a 503 whose retry succeeds.

use std::time::{Duration, Instant};

use test_support::RedisReplica;

use crate::helpers::{Stack, new_user_body, spawn_app};

/// The primary's port, from its `redis://127.0.0.1:<port>` URL.
fn port_of(stack: &Stack) -> u16 {
    let url = stack.redis.url();
    url.rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("a port in the Redis URL")
}

/// A replica that stops acknowledging (frozen) turns a sign-up into a 503 with Retry-After and
/// a problem body, within the bound; the same sign-up sent again once it is back succeeds for
/// the same user, and the user is there.
#[tokio::test]
async fn a_sign_up_no_replica_confirms_answers_503_and_its_retry_succeeds() {
    let stack = spawn_app().await;
    let replica = RedisReplica::start(port_of(&stack));
    let health = stack.app.health().await.res().assert_status(200).json();
    assert_eq!(health["checks"]["redis"]["replicas"], 1, "health: {health}");
    stack.app.sign_up(&new_user_body()).await;

    replica.pause();
    let body = new_user_body();
    let started = Instant::now();
    let answer = stack.app.create_user_json(&body).await;
    let waited = started.elapsed();
    let problem = answer.res().assert_problem(503);
    assert_eq!(problem["type"], "urn:onboarding:problem:not-replicated");
    assert!(answer.res().header("Retry-After").is_some());
    assert!(!answer.has_output("onboardingMessage"), "no queue message");
    assert!(
        waited < Duration::from_secs(5),
        "the wait is bounded: {waited:?}"
    );

    replica.resume();
    let retry = stack.app.create_user_json(&body).await;
    let status = retry.res().status_code;
    assert!(
        status == 200 || status == 201,
        "the retry: {:?}",
        retry.res()
    );
    assert!(retry.has_output("onboardingMessage"), "the email is queued");
    let token = retry.res().json()["token"]
        .as_str()
        .expect("a token")
        .to_owned();
    assert_eq!(stack.app.profile(&token).await["email"], body["email"]);
}

/// Sign-up latency with and without a replica to wait for, printed for the README: the cost
/// of `WAIT` on loopback is a replication round trip, small beside password hashing.
#[tokio::test]
async fn sign_up_latency_with_and_without_a_replica() {
    const SIGN_UPS: usize = 40;
    async fn measure(stack: &Stack) -> (Duration, Duration) {
        let mut times = Vec::with_capacity(SIGN_UPS);
        for _ in 0..SIGN_UPS {
            let started = Instant::now();
            stack.app.sign_up(&new_user_body()).await;
            times.push(started.elapsed());
        }
        times.sort();
        (times[SIGN_UPS / 2], times[SIGN_UPS * 99 / 100])
    }
    let alone = spawn_app().await;
    let replicated = spawn_app().await;
    let _replica = RedisReplica::start(port_of(&replicated));

    let (alone_p50, alone_p99) = measure(&alone).await;
    let (with_p50, with_p99) = measure(&replicated).await;

    println!(
        "sign-up latency over {SIGN_UPS} sign-ups: without a replica p50 {alone_p50:.1?} p99 \
         {alone_p99:.1?}; with one (WAIT) p50 {with_p50:.1?} p99 {with_p99:.1?}"
    );
    assert!(
        with_p50 < alone_p50 + Duration::from_millis(100),
        "WAIT costs a replication round trip, not a timeout"
    );
}
