//! The handler against a real Redis cluster (3 primaries, 3 replicas on loopback), found by
//! itself from an ordinary `REDIS_URL`: the main paths, and a primary killed under sign-up load.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use test_support::RedisCluster;

use crate::helpers::{InvocationAnswer, SmtpSink, TestApp, new_user_body};

/// How long an email may take to show up in the sink.
const MAIL_TIMEOUT: Duration = Duration::from_secs(10);

/// Sign-up, profile, the onboarding email sent once under redelivery, a repeated sign-up and
/// health, all against a cluster whose keys spread over its three primaries.
#[tokio::test]
async fn the_main_paths_work_against_a_redis_cluster() {
    let cluster = RedisCluster::start();
    let smtp = SmtpSink::start();
    let app = TestApp::builder(&cluster.url(), &smtp.url()).spawn().await;

    let health = app.health().await.res().assert_status(200).json();
    let redis = &health["checks"]["redis"];
    assert_eq!(redis["mode"], "cluster", "health: {health}");
    assert_eq!(redis["primaries"], 3, "health: {health}");
    assert_eq!(redis["replicas"], 3, "health: {health}");
    assert_eq!(redis["slotsOk"], 16384, "health: {health}");

    // Eight users: their record, marker and email keys land on all three primaries.
    let mut users = Vec::new();
    for _ in 0..8 {
        let body = new_user_body();
        let user = app.sign_up(&body).await;
        let profile = app.profile(&user.token).await;
        assert_eq!(profile["id"], user.id.as_str());
        assert_eq!(profile["onboarding"], "pending");
        let again = app.create_user_json(&body).await;
        assert_eq!(
            again.res().assert_status(200).json()["id"],
            user.id.as_str()
        );
        users.push(user);
    }
    for user in &users {
        app.send_onboarding(&user.message, 1).await.assert_host_ok();
        app.send_onboarding(&user.message, 2).await.assert_host_ok();
    }

    let mails = smtp.wait_for(users.len(), MAIL_TIMEOUT).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(smtp.messages().len(), users.len(), "one email per user");
    for user in &users {
        assert_eq!(
            mails
                .iter()
                .filter(|m| m.to == vec![user.email.clone()])
                .count(),
            1,
            "exactly one email to {}",
            user.email
        );
        assert_eq!(app.profile(&user.token).await["onboarding"], "sent");
    }
}

/// What the sign-up load saw.
#[derive(Default)]
struct Tally {
    /// Users answered 201 (or 200 on a retry): their id and token.
    acknowledged: Vec<(String, String)>,
    /// 503 answers (each retried until acknowledged or the load ends).
    unavailable: usize,
    /// Any other answer that is not 200 or 201: there must be none.
    unexpected: Vec<String>,
    /// When the last 503 came, if any.
    last_unavailable: Option<Instant>,
    /// When the last 503 other than "sign-up in progress" came: fresh sign-ups failing.
    last_fresh_unavailable: Option<Instant>,
    /// Sign-ups still not acknowledged when their retries had to stop.
    unfinished: usize,
}

/// How long a sign-up started before the load ends may go on retrying: a sign-up cut off by
/// the kill between its email claim and its record is told "in progress" until the claim's
/// 10 s lease ends (onboarding::store::EMAIL_CLAIM_LEASE), then succeeds.
const FINISH_GRACE: Duration = Duration::from_secs(15);

/// Signs up fresh users in a loop until `until`, retrying each after a 503 as a client would.
async fn sign_up_load(app: Arc<TestApp>, tally: Arc<Mutex<Tally>>, until: Instant) {
    while Instant::now() < until {
        let body = new_user_body();
        loop {
            let answer = app.create_user_json(&body).await;
            let done = {
                let mut tally = tally.lock().expect("tally");
                record(&mut tally, &answer)
            };
            if done {
                break;
            }
            if Instant::now() >= until + FINISH_GRACE {
                tally.lock().expect("tally").unfinished += 1;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Counts one answer; true when the sign-up is finished (acknowledged, or failed for good).
fn record(tally: &mut Tally, answer: &InvocationAnswer) -> bool {
    let res = answer.res();
    match res.status_code {
        200 | 201 => {
            let json: Value = res.json();
            tally.acknowledged.push((
                json["id"].as_str().unwrap_or_default().to_owned(),
                json["token"].as_str().unwrap_or_default().to_owned(),
            ));
            true
        }
        503 => {
            assert!(
                res.header("Retry-After").is_some(),
                "503 without Retry-After"
            );
            tally.unavailable += 1;
            tally.last_unavailable = Some(Instant::now());
            if res.json()["type"] != "urn:onboarding:problem:sign-up-in-progress" {
                tally.last_fresh_unavailable = Some(Instant::now());
            }
            false
        }
        other => {
            tally.unexpected.push(format!("{other}: {}", res.body));
            true
        }
    }
}

/// The acknowledged users whose token no longer finds them (`GET /` is not 200).
async fn lost_users(app: &TestApp, acknowledged: &[(String, String)]) -> Vec<String> {
    let mut lost = Vec::new();
    for (id, token) in acknowledged {
        if app.root_with_token(token).await.res().status_code != 200 {
            lost.push(id.clone());
        }
    }
    lost
}

/// A primary is killed (SIGKILL) under sign-up load; its replica takes over. No acknowledged
/// user is lost, nothing but 503 is answered meanwhile, and answers are back to normal within
/// the bound.
#[tokio::test]
async fn a_primary_killed_under_sign_up_load_loses_no_acknowledged_user() {
    const WORKERS: usize = 4;
    const BEFORE_KILL: Duration = Duration::from_secs(3);
    const AFTER_KILL: Duration = Duration::from_secs(12);
    /// Failover (1 s node timeout, then the election), the client's slot refresh, and the
    /// replica counts read again: fresh sign-ups succeed again well within this.
    const RECOVERY_BOUND: Duration = Duration::from_secs(8);
    /// A sign-up cut off between its email claim and its record succeeds once the claim's
    /// lease (10 s) ends: its retries are done within this.
    const RETRIES_BOUND: Duration = Duration::from_secs(14);

    let mut cluster = RedisCluster::start();
    let smtp = SmtpSink::start();
    let app = Arc::new(TestApp::builder(&cluster.url(), &smtp.url()).spawn().await);
    let tally = Arc::new(Mutex::new(Tally::default()));
    let started = Instant::now();
    let until = started + BEFORE_KILL + AFTER_KILL;
    let workers: Vec<_> = (0..WORKERS)
        .map(|_| tokio::spawn(sign_up_load(app.clone(), tally.clone(), until)))
        .collect();

    tokio::time::sleep(BEFORE_KILL).await;
    let victim = cluster.primary_ports()[0];
    let before = tally.lock().expect("tally").acknowledged.len();
    let killed_at = Instant::now();
    cluster.kill(victim);
    for worker in workers {
        worker.await.expect("a load worker panicked");
    }
    cluster.wait_until_ok();

    let tally = Arc::try_unwrap(tally)
        .ok()
        .expect("the workers are done")
        .into_inner()
        .expect("tally");
    let lost = lost_users(&app, &tally.acknowledged).await;
    let since_kill = |t: Option<Instant>| {
        t.filter(|&t| t > killed_at)
            .map_or(Duration::ZERO, |t| t - killed_at)
    };
    let recovery = since_kill(tally.last_fresh_unavailable);
    let retries_done = since_kill(tally.last_unavailable);
    println!(
        "failover under load: {} acknowledged ({before} before the kill), {} lost, {} answered \
         503, {} other errors, {} unfinished; fresh sign-ups back to normal {:.1} s after the \
         kill (bound {RECOVERY_BOUND:?}), the last retry of a sign-up cut off mid-write \
         answered {:.1} s after it (bound {RETRIES_BOUND:?})",
        tally.acknowledged.len(),
        lost.len(),
        tally.unavailable,
        tally.unexpected.len(),
        tally.unfinished,
        recovery.as_secs_f64(),
        retries_done.as_secs_f64(),
    );
    assert!(
        tally.unexpected.is_empty(),
        "not 200/201/503: {:?}",
        tally.unexpected
    );
    assert!(lost.is_empty(), "acknowledged users lost: {lost:?}");
    assert!(
        recovery < RECOVERY_BOUND,
        "503s went on for {recovery:?} after the kill"
    );
    assert!(
        retries_done < RETRIES_BOUND && tally.unfinished == 0,
        "retried sign-ups were refused for {retries_done:?}, {} never acknowledged",
        tally.unfinished
    );
    assert!(
        tally.acknowledged.len() > before,
        "sign-ups must succeed again after the failover"
    );
}
