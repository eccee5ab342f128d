//! Where users and onboarding markers live. One interface, two homes: Redis for real runs and an
//! in-memory map for `handler dev` without Redis.

mod connection;
mod entra;
pub mod limit;
mod mail_key;
mod marker;
mod memory;
mod names_watch;
mod node_names;
mod record;
mod redis;
mod redis_health;
mod replication;
mod send_rate;
mod topology;

use std::num::NonZeroU32;
use std::time::Duration;

use async_trait::async_trait;

use crate::domain::{Account, OnboardingStatus, Refusal, User, UserEmail, UserId};

pub use self::mail_key::{Mail, VERIFICATION_MARKER_TTL};

pub use self::entra::{ManagedIdentityCredentials, TokenError, credentials_provider};
pub use self::limit::{Allowance, LimitKey, RateRule};
pub use self::memory::MemoryStore;
pub use self::redis::RedisStore;
pub use self::send_rate::SendSlot;

/// How long an email claim lives before the user record is written and the claim made permanent
/// (three commands, each bounded to 2 s): a crash in between frees the address after this, so
/// nobody is locked out, and a retry meanwhile is told to come back shortly.
pub const EMAIL_CLAIM_LEASE: Duration = Duration::from_secs(10);

/// A store failure: the backend is down, slow or answered something unexpected. Callers turn it
/// into a 503 or a redelivery, never into a client error.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("the store did not answer within {0:?}")]
    Timeout(Duration),
    #[error("the store failed: {0}")]
    Backend(String),
    #[error("a stored record is corrupt: {0}")]
    Corrupt(String),
    /// The write is on the primary, but no replica confirmed it within the bound: a failover
    /// now could lose it, so it is not acknowledged. Repeating the request is safe.
    #[error("no replica confirmed the write within {0:?}")]
    NotReplicated(Duration),
}

/// The store's shape, as `/health` reports it (Redis only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreHealth {
    /// True for a Redis cluster (the client follows the slot map itself).
    pub cluster: bool,
    /// Primaries serving slots (1 for a single server).
    pub primaries: u32,
    /// Live replicas in all, as last read (kept a few seconds).
    pub replicas: u32,
    /// Hash slots whose primary is reachable (clusters only; 16384 when all are).
    pub slots_ok: Option<u32>,
}

/// The result of trying to register a user.
#[derive(Debug)]
pub enum Insert {
    /// The user was stored and the email is now theirs.
    Created,
    /// The email belongs to someone already; `None` while that sign-up is still being written.
    EmailTaken(Option<User>),
}

/// The result of trying to claim the right to send a user's onboarding email.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// This delivery holds the claim and must send, then confirm or release.
    Claimed,
    /// The email went out already: nothing to do.
    AlreadySent,
    /// The email was refused for good (recorded as undeliverable): nothing to do either.
    Undeliverable,
    /// Another delivery holds the claim right now: try again later.
    InProgress,
}

/// The user store. Every Redis command behind it touches a single key, and every pipeline stays
/// in one hash slot, so a clustered Redis works.
#[async_trait]
pub trait UserStore: Send + Sync {
    /// Says where the data lives, for the banner and health output.
    fn describe(&self) -> String;

    /// The name of this backend in health checks: `redis` or `memory`.
    fn check_name(&self) -> &'static str;

    /// Checks the backend answers.
    async fn ping(&self) -> Result<(), StoreError>;

    /// Checks the backend answers and, for Redis, says what shape it has (for `/health`); a
    /// cluster that does not serve every slot is an error.
    async fn health(&self) -> Result<Option<StoreHealth>, StoreError> {
        self.ping().await.map(|()| None)
    }

    /// Makes sure an existing user's record and email claim are on a replica before a repeated
    /// sign-up is acknowledged (the first one may have been answered 503 unconfirmed). A store
    /// without replicas has nothing to do.
    async fn confirm_replicated(&self, _user: &User) -> Result<(), StoreError> {
        Ok(())
    }

    /// Registers a user unless the email (case-insensitively) is already registered.
    async fn insert_user(&self, user: &User) -> Result<Insert, StoreError>;

    /// Finds a user by id with everything a signed-in request checks, in one round trip: the
    /// record, where their onboarding email stands, whether their address is verified, and
    /// since when their tokens are accepted.
    async fn find_user(&self, id: UserId) -> Result<Option<Account>, StoreError>;

    /// Finds the user registered under an email (case-insensitively), for a sign-in. A Redis
    /// store takes two round trips whether or not the address is registered, so the answer's
    /// timing does not tell.
    async fn find_user_by_email(&self, email: &UserEmail) -> Result<Option<Account>, StoreError>;

    /// Refuses from now on every token issued to user `id` before `valid_after` (seconds since
    /// the epoch): a sign-out everywhere. One write, confirmed by a replica where there is one,
    /// so a failover cannot bring the old tokens back.
    async fn sign_out_everywhere(&self, id: UserId, valid_after: i64) -> Result<(), StoreError>;

    /// Records that the user proved they read mail at their address; `true` when this call
    /// verified it, `false` when it was verified already (one `SET NX`, so of two concurrent
    /// confirmations exactly one is first).
    async fn mark_email_verified(&self, id: UserId) -> Result<bool, StoreError>;

    /// Looks a user up and, if they exist, makes the first attempt at claiming the sending of
    /// their onboarding email, as [`claim_onboarding`](Self::claim_onboarding) does. Both in one
    /// round trip, because this runs once per queue message and the round trips are most of its
    /// cost. `None` when the user does not exist; a claim taken for a missing user (or one whose
    /// record is corrupt) is given back before this returns, and it is leased anyway, so it could
    /// only linger until the lease ends.
    async fn find_user_and_claim_onboarding(
        &self,
        mail: Mail,
        token: &str,
        lease: Duration,
    ) -> Result<Option<(User, Claim)>, StoreError>;

    /// The onboarding status of a user.
    async fn onboarding_status(&self, id: UserId) -> Result<OnboardingStatus, StoreError>;

    /// Claims the sending of a user's onboarding email for `lease`, under a token unique to
    /// this delivery. The lease outlives the send deadline, so an expired claim means a crash.
    async fn claim_onboarding(
        &self,
        mail: Mail,
        token: &str,
        lease: Duration,
    ) -> Result<Claim, StoreError>;

    /// Extends this delivery's claim to `lease` from now, or takes the claim again if it lapsed
    /// and nobody else took it. A delivery that waited (backoff, a rate slot) renews before it
    /// sends, so it never sends on a claim that may have run out; it also never holds a claim
    /// longer than one send needs, so a crashed delivery blocks others for one lease at most.
    async fn renew_onboarding(
        &self,
        mail: Mail,
        token: &str,
        lease: Duration,
    ) -> Result<Claim, StoreError>;

    /// Records that the email went out; permanent.
    async fn confirm_onboarding(&self, mail: Mail) -> Result<(), StoreError>;

    /// Records that the receiving server refused the email for good; permanent, like a sent
    /// email: redeliveries are acknowledged and a repeated sign-up queues nothing.
    async fn mark_undeliverable(&self, mail: Mail, refusal: &Refusal) -> Result<(), StoreError>;

    /// Gives user `id`'s email a send slot under a limit of `per_minute` emails shared by every
    /// handler instance that uses this store. A slot reserved earlier and not used (a ticket:
    /// its delivery ran out of window before the slot came) is handed back first, so a message
    /// keeps its place in line across deliveries; otherwise the next free slot is reserved, and
    /// kept as the user's ticket when it lies more than `max_wait` ahead.
    async fn reserve_send_slot(
        &self,
        id: UserId,
        per_minute: NonZeroU32,
        max_wait: Duration,
    ) -> Result<SendSlot, StoreError>;

    /// Counts one event under the limit `rule` on `key` (a [`LimitKey`], rendered), shared by
    /// every instance that uses this store: charged when allowed; nothing is written when it is
    /// refused, so a client knocking past the limit does not push its own wait further out.
    async fn admit(&self, key: &str, rule: RateRule) -> Result<Allowance, StoreError>;

    /// Takes back one event charged by [`admit`](Self::admit) (a sign-in that was charged as a
    /// failure before the password could be checked, and then succeeded).
    async fn refund(&self, key: &str, rule: RateRule) -> Result<(), StoreError>;

    /// Gives a claim up after a failed send, if this delivery still holds it.
    async fn release_onboarding(&self, mail: Mail, token: &str) -> Result<(), StoreError>;

    /// Removes a user and their email claim (account deletion, and tests).
    async fn delete_user(&self, id: UserId, email: &UserEmail) -> Result<(), StoreError>;
}
