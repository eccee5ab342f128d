//! The Redis store's onboarding markers and shared send rate, against a real `redis-server`:
//! the renewal script, the undeliverable marker, and the GCRA script timed by Redis's clock.

use std::num::NonZeroU32;
use std::time::Duration;

use onboarding::domain::{Onboarding, Refusal, User, UserEmail, UserId, UserName};
use onboarding::store::{Claim, Mail, RedisStore, SendSlot, UserStore};

use crate::helpers::{RedisServer, redis_store, unique_email};

const LEASE: Duration = Duration::from_secs(10);

fn store(redis: &RedisServer) -> RedisStore {
    let prefix = format!("markers-{}:", uuid::Uuid::new_v4().simple());
    redis_store(redis, &prefix)
}

async fn stored_user(store: &RedisStore) -> User {
    let user = User {
        id: UserId::new(),
        name: UserName::parse("Ada").expect("a name"),
        email: UserEmail::parse(&unique_email()).expect("an email"),
        created_at: time::OffsetDateTime::now_utc(),
        password_hash: String::new(),
    };
    store.insert_user(&user).await.expect("insert the user");
    user
}

/// A claim the store already holds under our own token (an earlier try whose reply was lost)
/// is ours, not "in progress": waiting for it to lapse would spend the delivery on nothing.
#[tokio::test]
async fn a_claim_under_our_own_token_is_ours() {
    let redis = RedisServer::start();
    let store = store(&redis);
    let user = stored_user(&store).await;
    let welcome = Mail::Welcome(user.id);
    let first = store.claim_onboarding(welcome, "t1", LEASE).await.unwrap();
    assert_eq!(first, Claim::Claimed);
    let again = store.claim_onboarding(welcome, "t1", LEASE).await.unwrap();
    assert_eq!(again, Claim::Claimed);
    let other = store.claim_onboarding(welcome, "t2", LEASE).await.unwrap();
    assert_eq!(other, Claim::InProgress);
}

/// A renewal keeps our claim ours and never takes another delivery's; once the email is
/// refused for good, every later claim or renewal says so and the profile carries the reply.
#[tokio::test]
async fn renewals_respect_other_claims_and_an_undeliverable_marker_settles_the_email() {
    let redis = RedisServer::start();
    let store = store(&redis);
    let user = stored_user(&store).await;
    let welcome = Mail::Welcome(user.id);
    let claim = |token: &'static str| store.claim_onboarding(welcome, token, LEASE);

    assert_eq!(claim("a").await.unwrap(), Claim::Claimed);
    let renew = |token: &'static str| store.renew_onboarding(welcome, token, LEASE);
    assert_eq!(renew("a").await.unwrap(), Claim::Claimed);
    assert_eq!(renew("b").await.unwrap(), Claim::InProgress);
    store.release_onboarding(welcome, "a").await.unwrap();
    assert_eq!(
        renew("b").await.unwrap(),
        Claim::Claimed,
        "a free claim is taken"
    );

    let refusal = Refusal::new(Some(550), "5.1.1 unknown");
    store.mark_undeliverable(welcome, &refusal).await.unwrap();
    assert_eq!(renew("b").await.unwrap(), Claim::Undeliverable);
    assert_eq!(claim("c").await.unwrap(), Claim::Undeliverable);
    let account = store.find_user(user.id).await.unwrap().expect("the user");
    assert_eq!(account.onboarding, Onboarding::Undeliverable(refusal));
}

/// Two stores sharing one Redis (two instances) get slots spaced by the limit, in Redis's time;
/// a slot further ahead than the caller may wait is not reserved.
#[tokio::test]
async fn two_stores_share_one_send_rate() {
    let redis = RedisServer::start();
    let prefix = format!("rate-{}:", uuid::Uuid::new_v4().simple());
    let (a, b) = (redis_store(&redis, &prefix), redis_store(&redis, &prefix));
    let limit = NonZeroU32::new(60).unwrap();
    // 60 a minute: one a second, spaced 3 % wider (crates/onboarding/src/store/send_rate.rs).
    let every = Duration::from_millis(1030);
    let far = Duration::from_secs(60);
    let mut waits = Vec::new();
    for store in [&a, &b, &a, &b] {
        match store
            .reserve_send_slot(UserId::new(), limit, far)
            .await
            .unwrap()
        {
            SendSlot::Reserved { wait } => waits.push(wait),
            other => panic!("expected a slot, got {other:?}"),
        }
    }
    for (i, wait) in waits.iter().enumerate() {
        let off = wait.abs_diff(every * i as u32);
        assert!(off < Duration::from_millis(100), "slot {i}: {waits:?}");
    }

    // A slot beyond the caller's reach is kept for that user, on either instance: asked again,
    // it comes back (not a later one), and the others queue behind it.
    let patient = UserId::new();
    let too_far = b
        .reserve_send_slot(patient, limit, Duration::from_secs(1))
        .await
        .unwrap();
    let SendSlot::TooFar { wait: first } = too_far else {
        panic!("expected a slot too far ahead, got {too_far:?}");
    };
    assert!(
        first.abs_diff(every * 4) < Duration::from_millis(100),
        "{first:?}"
    );
    let again = a.reserve_send_slot(patient, limit, far).await.unwrap();
    let SendSlot::Reserved { wait: kept } = again else {
        panic!("expected the kept slot, got {again:?}");
    };
    assert!(
        kept <= first && first - kept < Duration::from_millis(100),
        "{kept:?}"
    );
    let next = a
        .reserve_send_slot(UserId::new(), limit, far)
        .await
        .unwrap();
    let SendSlot::Reserved { wait: after } = next else {
        panic!("expected a slot, got {next:?}");
    };
    assert!(
        after.abs_diff(every * 5) < Duration::from_millis(100),
        "{after:?}"
    );
}

/// An address is verified once (`SET NX`), and `find_user` reads it in the same round trip; a
/// verification email has its own claim, whose settled marker expires.
#[tokio::test]
async fn an_address_is_verified_once_and_a_verification_email_has_its_own_expiring_marker() {
    let redis = RedisServer::start();
    let store = store(&redis);
    let user = stored_user(&store).await;
    assert!(
        !store
            .find_user(user.id)
            .await
            .unwrap()
            .unwrap()
            .email_verified
    );
    assert!(store.mark_email_verified(user.id).await.unwrap());
    assert!(!store.mark_email_verified(user.id).await.unwrap());
    assert!(
        store
            .find_user(user.id)
            .await
            .unwrap()
            .unwrap()
            .email_verified
    );

    let request = uuid::Uuid::new_v4();
    let resend = Mail::Verification {
        user: user.id,
        request,
    };
    assert_eq!(
        store.claim_onboarding(resend, "t", LEASE).await.unwrap(),
        Claim::Claimed
    );
    store.confirm_onboarding(resend).await.unwrap();
    assert_eq!(
        store.claim_onboarding(resend, "u", LEASE).await.unwrap(),
        Claim::AlreadySent
    );
    let welcome = store
        .claim_onboarding(Mail::Welcome(user.id), "w", LEASE)
        .await
        .unwrap();
    assert_eq!(
        welcome,
        Claim::Claimed,
        "the welcome email's claim is apart"
    );
    let mut connection = redis::Client::open(redis.url())
        .and_then(|client| client.get_connection())
        .expect("a connection to the test Redis");
    let pattern = format!("*user:{{{}}}:verify-mail:{}", user.id, request.simple());
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(&pattern)
        .query(&mut connection)
        .unwrap();
    assert_eq!(keys.len(), 1, "{keys:?}");
    let ttl: i64 = redis::cmd("TTL")
        .arg(&keys[0])
        .query(&mut connection)
        .unwrap();
    assert!(
        ttl > 13 * 24 * 3600,
        "the settled marker expires: TTL {ttl}"
    );
}
