//! The handler against a TLS-only Redis cluster shaped like Azure Managed Redis with the OSS
//! clustering policy: the nodes announce IP addresses (`127.0.0.1`) while the certificate names
//! only a host name (`localhost`), which the handler reaches as `rediss://localhost:<port>`.
//! Every node's certificate must be verified against that host name (the CA comes from
//! `REDIS_CA_CERT`), never skipped.

use std::time::{Duration, Instant};

use test_support::RedisCluster;

use crate::helpers::{SmtpSink, TestApp, TestAppBuilder, new_user_body};

fn app_for(cluster: &RedisCluster, smtp: &SmtpSink) -> TestAppBuilder {
    let ca = cluster.ca_path().expect("a TLS cluster has a CA");
    TestApp::builder(&cluster.url(), &smtp.url())
        .env("REDIS_CA_CERT", ca.to_str().expect("a UTF-8 path"))
}

/// Sign-up, profile, a repeated sign-up and health over TLS, with keys on all three primaries.
#[tokio::test]
async fn the_main_paths_work_against_a_tls_cluster_advertising_ips() {
    let cluster = RedisCluster::start_tls();
    assert!(cluster.url().starts_with("rediss://localhost:"));
    let smtp = SmtpSink::start();
    let app = app_for(&cluster, &smtp).spawn().await;

    let health = app.health().await.res().json();
    let redis = &health["checks"]["redis"];
    assert_eq!(
        redis["mode"],
        "cluster",
        "health: {health}\n{}",
        app.stdout()
    );
    assert_eq!(redis["primaries"], 3, "health: {health}");
    assert_eq!(redis["replicas"], 3, "health: {health}");
    assert_eq!(redis["slotsOk"], 16384, "health: {health}");

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
    }
    let log = format!("{}{}", app.stdout(), app.stderr());
    assert!(
        log.contains("verified against the TLS host name of REDIS_URL"),
        "the nodes must be named after the seed: {log}"
    );
}

/// A node that joins on a new IP (`127.0.0.2`) and takes a primary's slots: the handler reads
/// the nodes again, names the new one, and sign-ups whose keys land there succeed again within
/// the bound.
#[tokio::test]
async fn a_node_joining_on_a_new_ip_is_named_and_reached() {
    /// One failed operation brings the check forward (at most 1 s apart), then a reconnect.
    const BOUND: Duration = Duration::from_secs(8);

    let mut cluster = RedisCluster::start_tls();
    let smtp = SmtpSink::start();
    let app = app_for(&cluster, &smtp).spawn().await;
    app.sign_up(&new_user_body()).await;

    let new_port = cluster.add_primary_on("127.0.0.2");
    let moved_at = Instant::now();
    let mut last_failure = None;
    let mut signed_up = 0;
    while moved_at.elapsed() < BOUND + Duration::from_secs(4) {
        let answer = app.create_user_json(&new_user_body()).await;
        match answer.res().status_code {
            201 => signed_up += 1,
            503 => last_failure = Some(moved_at.elapsed()),
            other => panic!("unexpected {other}: {}", answer.res().body),
        }
    }
    let keys_on_new_node = cluster.key_count(new_port);
    println!(
        "new node 127.0.0.2:{new_port}: {signed_up} sign-ups, {keys_on_new_node} keys on it, \
         last failure {last_failure:?} after the move (bound {BOUND:?})"
    );
    assert!(keys_on_new_node > 0, "no key reached the new node");
    assert!(
        last_failure.is_none_or(|at| at < BOUND),
        "sign-ups still failed {last_failure:?} after the new node took its slots\n{}",
        app.stderr()
    );
}
