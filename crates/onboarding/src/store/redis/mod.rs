//! The Redis store, on a single server or a cluster (see `connection.rs`); every command touches
//! one key, and every pipeline stays within one hash slot (it is sent to one node).
//!
//! Keys (after the configured prefix):
//! - `email:<lower-cased email>` → user id: the uniqueness claim, taken with `SET NX` under a lease
//!   and made permanent once the record exists, so a crash in between frees the address.
//! - `user:{<id>}` → the user record as JSON.
//! - `user:{<id>}:tokens-valid-after` → seconds since the epoch: tokens issued before it are
//!   refused (a sign-out everywhere; see `session.rs`).
//! - `user:{<id>}:onboarding` → `sending:<token>` (a leased claim), `sent:<time>` or
//!   `undeliverable:<JSON>` (see `marker.rs`).
//! - `user:{<id>}:verified` → when the address was verified (`SET NX`, so once).
//! - `user:{<id>}:verify-mail:<request id>` → the marker of one verification email, as above,
//!   expiring once settled (`VERIFICATION_MARKER_TTL`).
//! - `send-rate` → the shared send rate's state (see `send_rate.rs`), when a limit is set;
//!   `user:{<id>}:send-slot` → a slot kept for that user's email (a ticket).
//! - `limit:{<limit>:<subject>}` → one limit's state (see `limit.rs`): sign-ups and failed
//!   sign-ins per client address, mailbox or account, hashed where they are personal data.
//!
//! The braces are a hash tag: a user's keys share a cluster slot, so they can be read in one
//! pipeline. The pipelines, each checked for its slot: `find_user` (record, welcome marker,
//! verified key and sign-out time, one tag; see `session.rs`), `find_user_and_claim_onboarding`
//! (record and marker), `claim_onboarding` (the marker twice) and the durable writes of
//! `replication.rs` (one key, then `WAIT`, which has none).
//! The email key and the user's keys hash apart, so they are never in one pipeline.

mod claim_attempt;
mod keys;
mod limit;
mod send_slot;
mod session;
mod verification;

use std::future::Future;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use time::OffsetDateTime;

use super::connection::{Connector, Link};
use super::entra::credentials_provider;
use super::limit::{Allowance, RateRule};
use super::marker;
use super::record::{StoredUser, parse_user};
use super::replication::{self, Replication};
use super::send_rate::SendSlot;
use super::{Claim, EMAIL_CLAIM_LEASE, Insert, Mail, StoreError, StoreHealth, UserStore};
use crate::config::RedisSettings;
use crate::domain::{Account, OnboardingStatus, Refusal, User, UserEmail, UserId};
use claim_attempt::ClaimAttempt;

/// Bound on one store operation, reconnection included: a request answers 503 rather than hang.
const OPERATION_TIMEOUT: Duration = Duration::from_secs(2);

/// The user store on Redis.
#[derive(Clone)]
pub struct RedisStore {
    connector: Arc<Connector>,
    pub(super) replication: Arc<Replication>,
    pub(super) prefix: String,
    display: String,
    compare_and_delete: redis::Script,
    renew_claim: redis::Script,
    send_rate: send_slot::Scripts,
    limits: limit::Scripts,
}

impl RedisStore {
    /// Prepares the connection without opening it: the handler must answer the host's readiness
    /// ping before Redis is reached, and keep answering while Redis is down.
    pub fn new(settings: &RedisSettings, prefix: &str) -> anyhow::Result<Self> {
        use anyhow::Context as _;
        // Entra ID tokens, when configured, sign in every connection of either kind, the probe
        // included, and re-authenticate each one with every new token.
        let credentials =
            credentials_provider(settings).context("preparing Entra ID authentication")?;
        let connector = Connector::new(
            &settings.url,
            OPERATION_TIMEOUT,
            credentials,
            settings.ca.clone(),
        )
        .with_context(|| format!("REDIS_URL for {} is not usable", settings.display))?;
        Ok(Self {
            connector: Arc::new(connector),
            replication: Arc::default(),
            prefix: prefix.to_owned(),
            display: settings.describe(),
            compare_and_delete: redis::Script::new(marker::COMPARE_AND_DELETE),
            renew_claim: redis::Script::new(marker::RENEW_CLAIM),
            send_rate: send_slot::Scripts::new(),
            limits: limit::Scripts::new(),
        })
    }

    /// Bounds one round trip in time, reconnection included, and maps its error.
    pub(super) async fn bounded<T>(
        &self,
        round_trip: impl Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, StoreError> {
        match tokio::time::timeout(OPERATION_TIMEOUT, round_trip).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => {
                self.connector.suspect();
                Err(StoreError::Backend(describe_redis_error(&e)))
            }
            Err(_) => {
                self.connector.suspect();
                Err(StoreError::Timeout(OPERATION_TIMEOUT))
            }
        }
    }

    /// The shared connection, made on first use (which asks the server whether it is a cluster).
    pub(super) async fn link(&self) -> Result<Link, StoreError> {
        self.bounded(self.connector.link()).await
    }

    /// Runs one command on the shared connection.
    pub(super) async fn query<T: redis::FromRedisValue>(
        &self,
        cmd: &redis::Cmd,
    ) -> Result<T, StoreError> {
        let mut connection = self.link().await?;
        self.bounded(cmd.query_async(&mut connection)).await
    }

    /// Runs a pipeline (one round trip) on the shared connection.
    pub(super) async fn query_pipeline<T: redis::FromRedisValue>(
        &self,
        pipe: &redis::Pipeline,
    ) -> Result<T, StoreError> {
        let mut connection = self.link().await?;
        self.bounded(pipe.query_async(&mut connection)).await
    }

    /// Runs a write on `key` and, when that key's primary has replicas, waits (bounded) until
    /// one of them has it: a write that ends unconfirmed is [`StoreError::NotReplicated`].
    pub(super) async fn write_replicated<T: redis::FromRedisValue>(
        &self,
        key: &str,
        cmd: &redis::Cmd,
    ) -> Result<T, StoreError> {
        let mut connection = self.link().await?;
        let known = self
            .bounded(self.replication.topology(&mut connection))
            .await?;
        let replicas = known.replicas_for(key);
        let pipe = replication::with_wait(cmd, replicas);
        let mut replies: Vec<redis::Value> =
            self.bounded(pipe.query_async(&mut connection)).await?;
        if replicas > 0 {
            let acked: i64 = replies
                .pop()
                .and_then(|v| redis::from_redis_value(v).ok())
                .unwrap_or(0);
            if acked < 1 {
                self.replication.forget();
                return Err(StoreError::NotReplicated(replication::WAIT_TIMEOUT));
            }
        }
        let reply = replies
            .pop()
            .ok_or_else(|| StoreError::Backend("an empty pipeline reply".to_owned()))?;
        redis::from_redis_value(reply).map_err(|e| StoreError::Backend(e.to_string()))
    }

    /// Deletes `key` if it still holds `value`.
    pub(super) async fn delete_if(&self, key: &str, value: &str) -> Result<(), StoreError> {
        let mut connection = self.link().await?;
        let mut invocation = self.compare_and_delete.key(key);
        invocation.arg(value);
        self.bounded(invocation.invoke_async::<i64>(&mut connection))
            .await
            .map(drop)
    }

    /// The rest of a sign-up once its email claim is taken: the record, then the claim made
    /// permanent, each confirmed by a replica where there is one.
    async fn complete_insert(
        &self,
        user: &User,
        email_key: &str,
        id: &str,
    ) -> Result<Insert, StoreError> {
        let record = serde_json::to_string(&StoredUser::from_user(user))
            .map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let user_key = self.user_key(user.id);
        let written = self
            .write_replicated::<()>(&user_key, redis::cmd("SET").arg(&user_key).arg(&record))
            .await;
        if let Err(e) = written {
            // Give the address back (best effort: the lease frees it anyway), so that the
            // client's retry, after our 503, takes it again at once instead of being told for
            // the rest of the lease that a sign-up is in progress. The record, if it was
            // written, is an orphan no token was ever issued for.
            if let Err(release) = self.delete_if(email_key, id).await {
                tracing::warn!(error = %release, "could not give an email claim back");
            }
            return Err(e);
        }
        // The record exists: the claim becomes permanent. Until here, a crash leaves a claim
        // that expires and an orphan record no token was ever issued for. Its WAIT also covers
        // the claim's SET NX, sent earlier on the same connection.
        let persisted: i64 = self
            .write_replicated(email_key, redis::cmd("PERSIST").arg(email_key))
            .await?;
        if persisted == 0 && self.get(email_key).await?.as_deref() != Some(id) {
            // Our lease ran out before we finished and someone else took the address.
            self.query::<()>(redis::cmd("DEL").arg(&user_key)).await?;
            return Ok(Insert::EmailTaken(None));
        }
        Ok(Insert::Created)
    }

    pub(super) async fn get(&self, key: &str) -> Result<Option<String>, StoreError> {
        self.query(redis::cmd("GET").arg(key)).await
    }

    async fn read_user(&self, id: UserId) -> Result<Option<User>, StoreError> {
        self.get(&self.user_key(id))
            .await?
            .map(|json| parse_user(&json))
            .transpose()
    }
}

/// A Redis error without anything that could carry a secret (URLs are never in redis-rs errors,
/// but the server's own text is kept short).
pub(super) fn describe_redis_error(e: &redis::RedisError) -> String {
    let mut text = e.to_string();
    text.truncate(200);
    text
}

#[async_trait]
impl UserStore for RedisStore {
    fn describe(&self) -> String {
        format!("Redis at {}", self.display)
    }

    fn check_name(&self) -> &'static str {
        "redis"
    }

    async fn ping(&self) -> Result<(), StoreError> {
        let mut link = self.link().await?;
        // One node, in a cluster a random one: the cluster connection would otherwise ask all.
        let pong = self.bounded(link.query_any(&redis::cmd("PING"))).await?;
        match redis::from_redis_value::<String>(pong) {
            Ok(pong) if pong == "PONG" => Ok(()),
            other => Err(StoreError::Backend(format!("PING answered {other:?}"))),
        }
    }

    async fn health(&self) -> Result<Option<StoreHealth>, StoreError> {
        self.shape().await.map(Some)
    }

    #[tracing::instrument(skip_all, fields(user_id = %user.id))]
    async fn confirm_replicated(&self, user: &User) -> Result<(), StoreError> {
        let email_key = self.email_key(&user.email);
        let user_key = self.user_key(user.id);
        // Both keys are written again, so that this connection has something for WAIT to
        // confirm: the first sign-up's writes may have gone out on another connection (or
        // another instance) and been answered 503 unconfirmed. The record only if it still
        // exists, the claim only if it is still this user's (a script: compare, then set).
        let record = serde_json::to_string(&StoredUser::from_user(user))
            .map_err(|e| StoreError::Corrupt(e.to_string()))?;
        self.write_replicated::<Option<String>>(
            &user_key,
            redis::cmd("SET").arg(&user_key).arg(&record).arg("XX"),
        )
        .await?;
        self.write_replicated::<i64>(
            &email_key,
            redis::cmd("EVAL")
                .arg(marker::REWRITE_IF_EQUAL)
                .arg(1)
                .arg(&email_key)
                .arg(user.id.to_string()),
        )
        .await?;
        Ok(())
    }

    #[tracing::instrument(skip_all, fields(user_id = %user.id))]
    async fn insert_user(&self, user: &User) -> Result<Insert, StoreError> {
        let email_key = self.email_key(&user.email);
        let id = user.id.to_string();
        let lease_ms = EMAIL_CLAIM_LEASE.as_millis() as u64;
        // Two tries: an older claim can expire between our SET NX and our GET.
        for _ in 0..2 {
            let claimed: Option<String> = self
                .query(
                    redis::cmd("SET")
                        .arg(&email_key)
                        .arg(&id)
                        .arg("NX")
                        .arg("PX")
                        .arg(lease_ms),
                )
                .await?;
            if claimed.is_some() {
                return self.complete_insert(user, &email_key, &id).await;
            }
            let Some(owner) = self.get(&email_key).await? else {
                continue;
            };
            let owner: UserId = owner
                .parse()
                .map_err(|_| StoreError::Corrupt(format!("{email_key} does not hold a user id")))?;
            let existing = self.read_user(owner).await?;
            if existing.is_some() {
                // The owner's record exists, so its claim must outlive its lease even if the
                // sign-up that took it died before making it permanent: the caller may now
                // acknowledge this user (a repeated sign-up), and an expiring claim would free
                // the address for a second account. PERSIST is a no-op on a permanent key.
                self.query::<i64>(redis::cmd("PERSIST").arg(&email_key))
                    .await?;
            }
            return Ok(Insert::EmailTaken(existing));
        }
        Err(StoreError::Backend(
            "the email claim kept changing hands".to_owned(),
        ))
    }

    async fn find_user(&self, id: UserId) -> Result<Option<Account>, StoreError> {
        self.account(id).await
    }

    async fn find_user_by_email(&self, email: &UserEmail) -> Result<Option<Account>, StoreError> {
        self.account_by_email(email).await
    }

    #[tracing::instrument(skip_all, fields(user_id = %id))]
    async fn sign_out_everywhere(&self, id: UserId, valid_after: i64) -> Result<(), StoreError> {
        self.sign_out(id, valid_after).await
    }

    async fn mark_email_verified(&self, id: UserId) -> Result<bool, StoreError> {
        self.mark_verified(id).await
    }

    async fn onboarding_status(&self, id: UserId) -> Result<OnboardingStatus, StoreError> {
        let marker = self.get(&self.marker_key(Mail::Welcome(id))).await?;
        Ok(marker::onboarding_of(marker.as_deref()).status())
    }

    async fn find_user_and_claim_onboarding(
        &self,
        mail: Mail,
        token: &str,
        lease: Duration,
    ) -> Result<Option<(User, Claim)>, StoreError> {
        let id = mail.user();
        let user_key = self.user_key(id);
        let attempt = ClaimAttempt::new(self, mail, token, lease);
        // Same hash tag, same slot: one round trip, still one key per command. The claim is
        // attempted before we know the user exists; for a missing user it is given back below.
        let mut pipe = redis::pipe();
        pipe.get(&user_key);
        attempt.add_to(&mut pipe);
        let (record, set, marker): (Option<String>, Option<String>, Option<String>) =
            self.query_pipeline(&pipe).await?;
        let claim = attempt.outcome(set, marker);
        let user = record.map(|json| parse_user(&json)).transpose();
        if !matches!(user, Ok(Some(_))) && claim == Some(Claim::Claimed) {
            // No user (deleted, as ids are never reused) or an unreadable one: hold no claim
            // for it. If this fails the claim still ends with its lease, and nothing waits on
            // it: no delivery for this user will ever send.
            if let Err(e) = attempt.release(self).await {
                tracing::warn!(%id, error = %e, "could not release a claim for a missing user");
            }
        }
        let Some(user) = user? else {
            return Ok(None);
        };
        let claim = match claim {
            Some(claim) => claim,
            // The other claim expired between our SET and GET: try once more on its own.
            None => self.claim_onboarding(mail, token, lease).await?,
        };
        Ok(Some((user, claim)))
    }

    // The onboarding markers' spans are debug: they open for every queue message (measurably, in
    // a profile of sendOnboarding), and sendOnboarding's own log lines already name the user.
    #[tracing::instrument(level = "debug", skip_all, fields(user_id = %mail.user()))]
    async fn claim_onboarding(
        &self,
        mail: Mail,
        token: &str,
        lease: Duration,
    ) -> Result<Claim, StoreError> {
        let attempt = ClaimAttempt::new(self, mail, token, lease);
        for _ in 0..2 {
            let mut pipe = redis::pipe();
            attempt.add_to(&mut pipe);
            let (set, marker): (Option<String>, Option<String>) =
                self.query_pipeline(&pipe).await?;
            if let Some(claim) = attempt.outcome(set, marker) {
                return Ok(claim);
            }
        }
        Ok(Claim::InProgress)
    }

    #[tracing::instrument(level = "debug", skip_all, fields(user_id = %mail.user()))]
    async fn renew_onboarding(
        &self,
        mail: Mail,
        token: &str,
        lease: Duration,
    ) -> Result<Claim, StoreError> {
        let mut connection = self.link().await?;
        let mut invocation = self.renew_claim.key(self.marker_key(mail));
        invocation
            .arg(marker::sending(token))
            .arg(lease.as_millis().max(1) as u64);
        let held: redis::Value = self
            .bounded(invocation.invoke_async(&mut connection))
            .await?;
        Ok(match held {
            redis::Value::Int(1) => Claim::Claimed,
            other => match redis::from_redis_value::<String>(other) {
                Ok(marker) => marker::claim_of_other(&marker),
                Err(_) => Claim::InProgress,
            },
        })
    }

    #[tracing::instrument(level = "debug", skip_all, fields(user_id = %mail.user()))]
    async fn confirm_onboarding(&self, mail: Mail) -> Result<(), StoreError> {
        self.settle(mail, marker::sent(OffsetDateTime::now_utc()))
            .await
    }

    #[tracing::instrument(level = "debug", skip_all, fields(user_id = %mail.user()))]
    async fn mark_undeliverable(&self, mail: Mail, refusal: &Refusal) -> Result<(), StoreError> {
        self.settle(
            mail,
            marker::undeliverable(refusal, OffsetDateTime::now_utc()),
        )
        .await
    }

    async fn reserve_send_slot(
        &self,
        id: UserId,
        per_minute: NonZeroU32,
        max_wait: Duration,
    ) -> Result<SendSlot, StoreError> {
        self.send_slot(id, per_minute, max_wait).await
    }

    async fn admit(&self, key: &str, rule: RateRule) -> Result<Allowance, StoreError> {
        self.admit_event(key, rule).await
    }

    async fn refund(&self, key: &str, rule: RateRule) -> Result<(), StoreError> {
        self.refund_event(key, rule).await
    }

    #[tracing::instrument(level = "debug", skip_all, fields(user_id = %mail.user()))]
    async fn release_onboarding(&self, mail: Mail, token: &str) -> Result<(), StoreError> {
        self.delete_if(&self.marker_key(mail), &marker::sending(token))
            .await
    }

    async fn delete_user(&self, id: UserId, email: &UserEmail) -> Result<(), StoreError> {
        let welcome = self.marker_key(Mail::Welcome(id));
        let (valid_after, verified) = (self.tokens_valid_after_key(id), self.verified_key(id));
        for key in [self.user_key(id), welcome, verified, valid_after] {
            self.query::<()>(redis::cmd("DEL").arg(&key)).await?;
        }
        self.delete_if(&self.email_key(email), &id.to_string())
            .await
    }
}
