//! The Redis store's limits against a real `redis-server`: shared by instances, timed by Redis's
//! clock, nothing written on a refusal, one hash-tagged key per limit with no personal data.

use std::num::NonZeroU32;
use std::time::Duration;

use onboarding::domain::{ClientAddress, UserEmail};
use onboarding::store::{Allowance, LimitKey, RateRule, RedisStore, UserStore};

use crate::helpers::{RedisServer, redis_store};

fn store(redis: &RedisServer, prefix: &str) -> RedisStore {
    redis_store(redis, prefix)
}

fn three_a_minute() -> RateRule {
    RateRule {
        count: NonZeroU32::new(3).expect("non-zero"),
        period: Duration::from_secs(60),
    }
}

async fn raw(redis: &RedisServer) -> redis::aio::MultiplexedConnection {
    redis::Client::open(redis.url())
        .expect("a Redis URL")
        .get_multiplexed_async_connection()
        .await
        .expect("a connection to the test Redis")
}

/// Two instances share one limit: three events pass between them, the fourth is refused with the
/// interval (20 s) as its `Retry-After`, and the refusal writes nothing.
#[tokio::test]
async fn instances_share_a_limit_and_a_refusal_writes_nothing() {
    let redis = RedisServer::start();
    let prefix = format!("limits-{}:", uuid::Uuid::new_v4().simple());
    let (a, b) = (store(&redis, &prefix), store(&redis, &prefix));
    let email = UserEmail::parse("Ada+1@Example.com").expect("an email");
    let key = LimitKey::SignUpsPerMailbox(&email).to_string();
    for store in [&a, &b, &a] {
        let allowance = store.admit(&key, three_a_minute()).await.expect("admit");
        assert_eq!(allowance, Allowance::Allowed);
    }
    let redis_key = format!("{prefix}limit:{{{key}}}");
    let mut conn = raw(&redis).await;
    let before: String = redis::cmd("GET")
        .arg(&redis_key)
        .query_async(&mut conn)
        .await
        .expect("the limit's key holds its state");
    for store in [&b, &a] {
        let Allowance::Limited { retry_after } =
            store.admit(&key, three_a_minute()).await.expect("admit")
        else {
            panic!("the fourth event must be refused");
        };
        assert!(
            retry_after <= Duration::from_secs(20) && retry_after > Duration::from_secs(19),
            "{retry_after:?}"
        );
    }
    let after: String = redis::cmd("GET")
        .arg(&redis_key)
        .query_async(&mut conn)
        .await
        .expect("still there");
    assert_eq!(before, after, "a refusal charges nothing");
    let ttl_ms: i64 = redis::cmd("PTTL")
        .arg(&redis_key)
        .query_async(&mut conn)
        .await
        .expect("PTTL");
    assert!(
        ttl_ms > 55_000 && ttl_ms <= 60_000,
        "the key lives as long as it counts: {ttl_ms}"
    );
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}*"))
        .query_async(&mut conn)
        .await
        .expect("KEYS");
    assert_eq!(keys, vec![redis_key]);
    assert!(!keys[0].to_lowercase().contains("ada"), "{keys:?}");
}

/// A refund gives one event back (the next is allowed again), and refunding a limit that
/// counts nothing leaves no key behind.
#[tokio::test]
async fn a_refund_gives_one_event_back_and_nothing_more() {
    let redis = RedisServer::start();
    let prefix = format!("limits-{}:", uuid::Uuid::new_v4().simple());
    let store = store(&redis, &prefix);
    let client = ClientAddress::from_header_values(&["198.51.100.7:443"]);
    let key = LimitKey::FailedSignInsPerAddress(&client).to_string();
    for _ in 0..3 {
        store.admit(&key, three_a_minute()).await.expect("admit");
    }
    store.refund(&key, three_a_minute()).await.expect("refund");
    assert_eq!(
        store.admit(&key, three_a_minute()).await.expect("admit"),
        Allowance::Allowed
    );
    assert!(matches!(
        store.admit(&key, three_a_minute()).await.expect("admit"),
        Allowance::Limited { .. }
    ));

    let other = LimitKey::FailedSignInsPerAddress(&ClientAddress::Unknown).to_string();
    store.admit(&other, three_a_minute()).await.expect("admit");
    for _ in 0..3 {
        store
            .refund(&other, three_a_minute())
            .await
            .expect("refund");
    }
    let mut conn = raw(&redis).await;
    let exists: i64 = redis::cmd("EXISTS")
        .arg(format!("{prefix}limit:{{{other}}}"))
        .query_async(&mut conn)
        .await
        .expect("EXISTS");
    assert_eq!(exists, 0);
}
