//! The in-memory store for `handler dev` without Redis: the same rules, gone when the process ends.

use std::collections::{HashMap, HashSet};
use std::num::NonZeroU32;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use tokio::time::Instant;

use super::limit::{self, Allowance, RateRule};
use super::send_rate::{self, SendSlot};
use super::{Claim, Insert, Mail, StoreError, UserStore};
use crate::domain::{Account, Onboarding, OnboardingStatus, Refusal, User, UserEmail, UserId};

#[derive(Debug)]
enum Marker {
    Sending { token: String, until: Instant },
    Sent,
    Undeliverable(Refusal),
}

#[derive(Debug, Default)]
struct State {
    users: HashMap<UserId, User>,
    by_email: HashMap<String, UserId>,
    markers: HashMap<Mail, Marker>,
    /// Users whose address is verified.
    verified: HashSet<UserId>,
    /// The shared send rate's next free slot (GCRA), for `SMTP_MAX_PER_MINUTE`.
    send_rate: Option<Instant>,
    /// Slots reserved for a user's email and not used yet (see `send_rate::SendSlot::TooFar`).
    send_tickets: HashMap<UserId, Instant>,
    /// Each user's sign-out time: tokens issued before it are refused.
    tokens_valid_after: HashMap<UserId, i64>,
    /// Each limit's theoretical arrival time (GCRA, see `limit.rs`), by key.
    limits: HashMap<String, Instant>,
}

/// Past this many limit keys, the ones that count nothing any more are dropped (a map that
/// only grows would let anyone fill the dev host's memory, one client address at a time).
const LIMIT_KEYS_BEFORE_PRUNING: usize = 4096;

/// Users in a map behind a std mutex: every operation is short and never awaits while holding it.
#[derive(Debug, Default)]
pub struct MemoryStore {
    state: Mutex<State>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave a half-written entry (each write is one
        // insert), so the data is still consistent: carry on.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Claims an email's send under the caller's lock, unless it was sent or another unexpired
/// claim holds it. (Settled verification markers are kept for the process's life here.)
fn claim(state: &mut State, mail: Mail, token: &str, lease: Duration) -> Claim {
    let now = Instant::now();
    match state.markers.get(&mail) {
        Some(Marker::Sent) => return Claim::AlreadySent,
        Some(Marker::Undeliverable(_)) => return Claim::Undeliverable,
        Some(Marker::Sending { token: held, until }) if *until > now && held != token => {
            return Claim::InProgress;
        }
        _ => {}
    }
    state.markers.insert(
        mail,
        Marker::Sending {
            token: token.to_owned(),
            until: now + lease,
        },
    );
    Claim::Claimed
}

/// User `id` with their welcome email's state, their address's and their sign-out time, under
/// the caller's lock.
fn account(state: &State, id: UserId) -> Option<Account> {
    state.users.get(&id).map(|user| Account {
        user: user.clone(),
        onboarding: onboarding_of(state.markers.get(&Mail::Welcome(id))),
        email_verified: state.verified.contains(&id),
        tokens_valid_after: state.tokens_valid_after.get(&id).copied(),
    })
}

fn onboarding_of(marker: Option<&Marker>) -> Onboarding {
    match marker {
        Some(Marker::Sent) => Onboarding::Sent,
        Some(Marker::Undeliverable(refusal)) => Onboarding::Undeliverable(refusal.clone()),
        _ => Onboarding::Pending,
    }
}

#[async_trait]
impl UserStore for MemoryStore {
    fn describe(&self) -> String {
        "in memory (lost when the process ends)".to_owned()
    }

    fn check_name(&self) -> &'static str {
        "memory"
    }

    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }

    async fn insert_user(&self, user: &User) -> Result<Insert, StoreError> {
        let mut state = self.lock();
        let key = user.email.unique_key();
        if let Some(existing) = state.by_email.get(&key) {
            return Ok(Insert::EmailTaken(state.users.get(existing).cloned()));
        }
        state.by_email.insert(key, user.id);
        state.users.insert(user.id, user.clone());
        Ok(Insert::Created)
    }

    async fn find_user(&self, id: UserId) -> Result<Option<Account>, StoreError> {
        Ok(account(&self.lock(), id))
    }

    async fn find_user_by_email(&self, email: &UserEmail) -> Result<Option<Account>, StoreError> {
        let state = self.lock();
        Ok(state
            .by_email
            .get(&email.unique_key())
            .and_then(|id| account(&state, *id)))
    }

    async fn sign_out_everywhere(&self, id: UserId, valid_after: i64) -> Result<(), StoreError> {
        self.lock().tokens_valid_after.insert(id, valid_after);
        Ok(())
    }

    async fn mark_email_verified(&self, id: UserId) -> Result<bool, StoreError> {
        Ok(self.lock().verified.insert(id))
    }

    async fn find_user_and_claim_onboarding(
        &self,
        mail: Mail,
        token: &str,
        lease: Duration,
    ) -> Result<Option<(User, Claim)>, StoreError> {
        // One lock for both, so no claim is ever taken for a missing user.
        let mut state = self.lock();
        let Some(user) = state.users.get(&mail.user()).cloned() else {
            return Ok(None);
        };
        let claim = claim(&mut state, mail, token, lease);
        Ok(Some((user, claim)))
    }

    async fn onboarding_status(&self, id: UserId) -> Result<OnboardingStatus, StoreError> {
        Ok(onboarding_of(self.lock().markers.get(&Mail::Welcome(id))).status())
    }

    async fn claim_onboarding(
        &self,
        mail: Mail,
        token: &str,
        lease: Duration,
    ) -> Result<Claim, StoreError> {
        Ok(claim(&mut self.lock(), mail, token, lease))
    }

    async fn renew_onboarding(
        &self,
        mail: Mail,
        token: &str,
        lease: Duration,
    ) -> Result<Claim, StoreError> {
        // `claim` extends a claim the same token holds, as Redis's renewal script does.
        Ok(claim(&mut self.lock(), mail, token, lease))
    }

    async fn confirm_onboarding(&self, mail: Mail) -> Result<(), StoreError> {
        self.lock().markers.insert(mail, Marker::Sent);
        Ok(())
    }

    async fn mark_undeliverable(&self, mail: Mail, refusal: &Refusal) -> Result<(), StoreError> {
        self.lock()
            .markers
            .insert(mail, Marker::Undeliverable(refusal.clone()));
        Ok(())
    }

    async fn reserve_send_slot(
        &self,
        id: UserId,
        per_minute: NonZeroU32,
        max_wait: Duration,
    ) -> Result<SendSlot, StoreError> {
        let mut state = self.lock();
        let state = &mut *state;
        let mut ticket = state.send_tickets.remove(&id);
        let slot = send_rate::reserve(
            &mut state.send_rate,
            &mut ticket,
            Instant::now(),
            send_rate::interval(per_minute),
            max_wait,
        );
        if let Some(kept) = ticket {
            state.send_tickets.insert(id, kept);
        }
        Ok(slot)
    }

    async fn admit(&self, key: &str, rule: RateRule) -> Result<Allowance, StoreError> {
        let now = Instant::now();
        let mut state = self.lock();
        if state.limits.len() >= LIMIT_KEYS_BEFORE_PRUNING {
            state.limits.retain(|_, tat| *tat > now);
        }
        let mut tat = state.limits.get(key).copied();
        let allowance = limit::admit(&mut tat, now, rule);
        if let Some(tat) = tat {
            state.limits.insert(key.to_owned(), tat);
        }
        Ok(allowance)
    }

    async fn refund(&self, key: &str, rule: RateRule) -> Result<(), StoreError> {
        let now = Instant::now();
        let mut state = self.lock();
        let mut tat = state.limits.get(key).copied();
        limit::refund(&mut tat, now, rule);
        match tat {
            Some(tat) => state.limits.insert(key.to_owned(), tat),
            None => state.limits.remove(key),
        };
        Ok(())
    }

    async fn release_onboarding(&self, mail: Mail, token: &str) -> Result<(), StoreError> {
        let mut state = self.lock();
        if matches!(state.markers.get(&mail), Some(Marker::Sending { token: held, .. }) if held == token)
        {
            state.markers.remove(&mail);
        }
        Ok(())
    }

    async fn delete_user(&self, id: UserId, email: &UserEmail) -> Result<(), StoreError> {
        let mut state = self.lock();
        state.users.remove(&id);
        state.markers.retain(|mail, _| mail.user() != id);
        state.verified.remove(&id);
        state.tokens_valid_after.remove(&id);
        let key = email.unique_key();
        if state.by_email.get(&key) == Some(&id) {
            state.by_email.remove(&key);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use time::OffsetDateTime;

    use super::*;
    use crate::domain::UserName;

    const LEASE: Duration = Duration::from_secs(10);

    fn user() -> User {
        User {
            id: UserId::new(),
            name: UserName::parse("Ada").unwrap(),
            email: UserEmail::parse("ada@example.com").unwrap(),
            created_at: OffsetDateTime::now_utc(),
            password_hash: String::new(),
        }
    }

    #[tokio::test]
    async fn the_lookup_claims_the_send_for_an_existing_user() {
        let store = MemoryStore::new();
        let user = user();
        store.insert_user(&user).await.unwrap();
        let found = store
            .find_user_and_claim_onboarding(Mail::Welcome(user.id), "a", LEASE)
            .await
            .unwrap();
        assert!(matches!(found, Some((ref u, Claim::Claimed)) if u.id == user.id));
        let second = store
            .claim_onboarding(Mail::Welcome(user.id), "b", LEASE)
            .await
            .unwrap();
        assert_eq!(second, Claim::InProgress);
    }

    #[tokio::test]
    async fn the_lookup_claims_nothing_for_a_missing_user() {
        let store = MemoryStore::new();
        let id = UserId::new();
        let found = store
            .find_user_and_claim_onboarding(Mail::Welcome(id), "a", LEASE)
            .await
            .unwrap();
        assert!(found.is_none());
        assert!(store.lock().markers.is_empty());
    }

    #[tokio::test]
    async fn the_lookup_says_when_the_email_was_sent_already() {
        let store = MemoryStore::new();
        let user = user();
        store.insert_user(&user).await.unwrap();
        store
            .confirm_onboarding(Mail::Welcome(user.id))
            .await
            .unwrap();
        let found = store
            .find_user_and_claim_onboarding(Mail::Welcome(user.id), "a", LEASE)
            .await
            .unwrap();
        assert!(matches!(found, Some((_, Claim::AlreadySent))));
    }

    #[tokio::test(start_paused = true)]
    async fn a_renewal_extends_our_claim_and_takes_back_a_lapsed_one_nobody_took() {
        let store = MemoryStore::new();
        let user = user();
        store.insert_user(&user).await.unwrap();
        assert_eq!(
            store
                .claim_onboarding(Mail::Welcome(user.id), "a", LEASE)
                .await
                .unwrap(),
            Claim::Claimed
        );
        tokio::time::advance(LEASE - Duration::from_secs(1)).await;
        assert_eq!(
            store
                .renew_onboarding(Mail::Welcome(user.id), "a", LEASE)
                .await
                .unwrap(),
            Claim::Claimed
        );
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(
            store
                .claim_onboarding(Mail::Welcome(user.id), "b", LEASE)
                .await
                .unwrap(),
            Claim::InProgress,
            "the renewed claim still stands"
        );
        tokio::time::advance(LEASE).await;
        assert_eq!(
            store
                .renew_onboarding(Mail::Welcome(user.id), "a", LEASE)
                .await
                .unwrap(),
            Claim::Claimed
        );
    }

    #[tokio::test]
    async fn an_undeliverable_email_is_settled_for_every_later_delivery() {
        let store = MemoryStore::new();
        let user = user();
        store.insert_user(&user).await.unwrap();
        let refusal = Refusal::new(Some(550), "5.1.1 unknown");
        store
            .mark_undeliverable(Mail::Welcome(user.id), &refusal)
            .await
            .unwrap();
        assert_eq!(
            store
                .claim_onboarding(Mail::Welcome(user.id), "a", LEASE)
                .await
                .unwrap(),
            Claim::Undeliverable
        );
        assert_eq!(
            store.onboarding_status(user.id).await.unwrap(),
            OnboardingStatus::Undeliverable
        );
        let account = store.find_user(user.id).await.unwrap().unwrap();
        assert_eq!(account.onboarding, Onboarding::Undeliverable(refusal));
        assert!(!account.email_verified);
    }

    #[tokio::test]
    async fn an_address_is_verified_once() {
        let store = MemoryStore::new();
        let user = user();
        store.insert_user(&user).await.unwrap();
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
    }

    #[tokio::test]
    async fn a_verification_email_has_its_own_claim_beside_the_welcome_email() {
        let store = MemoryStore::new();
        let user = user();
        store.insert_user(&user).await.unwrap();
        store
            .confirm_onboarding(Mail::Welcome(user.id))
            .await
            .unwrap();
        let resend = Mail::Verification {
            user: user.id,
            request: uuid::Uuid::new_v4(),
        };
        assert_eq!(
            store.claim_onboarding(resend, "a", LEASE).await.unwrap(),
            Claim::Claimed
        );
        store.confirm_onboarding(resend).await.unwrap();
        assert_eq!(
            store.claim_onboarding(resend, "b", LEASE).await.unwrap(),
            Claim::AlreadySent
        );
    }

    #[tokio::test(start_paused = true)]
    async fn send_slots_are_spaced_by_the_limit() {
        let store = MemoryStore::new();
        let limit = NonZeroU32::new(120).unwrap();
        let far = Duration::from_secs(60);
        let waits: Vec<_> = futures_util::future::join_all(
            (0..3).map(|_| store.reserve_send_slot(UserId::new(), limit, far)),
        )
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
        let after = |n| SendSlot::Reserved {
            wait: send_rate::interval(limit) * n,
        };
        assert_eq!(waits, vec![after(0), after(1), after(2)]);
        assert_eq!(send_rate::interval(limit), Duration::from_millis(515));
    }

    #[tokio::test(start_paused = true)]
    async fn limits_are_kept_per_key_and_refunds_give_one_back() {
        let store = MemoryStore::new();
        let rule = RateRule {
            count: NonZeroU32::new(2).unwrap(),
            period: Duration::from_secs(60),
        };
        for _ in 0..2 {
            assert_eq!(store.admit("a", rule).await.unwrap(), Allowance::Allowed);
        }
        assert_eq!(
            store.admit("a", rule).await.unwrap(),
            Allowance::Limited {
                retry_after: Duration::from_secs(30)
            }
        );
        assert_eq!(store.admit("b", rule).await.unwrap(), Allowance::Allowed);
        store.refund("a", rule).await.unwrap();
        assert_eq!(store.admit("a", rule).await.unwrap(), Allowance::Allowed);
        tokio::time::advance(Duration::from_secs(30)).await;
        assert_eq!(store.admit("a", rule).await.unwrap(), Allowance::Allowed);
    }
}
