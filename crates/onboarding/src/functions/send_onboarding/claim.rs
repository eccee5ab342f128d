//! The right to send one email (the store's leased claim), as one delivery holds it.
//!
//! The lease covers one send attempt (`SMTP_TIMEOUT_SECONDS` plus a margin), not the whole send
//! window: a delivery that crashes blocks the others for one lease at most. A delivery that waited
//! (backoff, the breaker, a rate slot) renews its claim before the next attempt, so it never sends
//! on a claim that may have lapsed, and two deliveries never send at once.

use std::time::Duration;

use tokio::time::Instant;

use super::Window;
use crate::app::App;
use crate::domain::{Refusal, User, UserId};
use crate::functions::InvocationError;
use crate::mail::Backoff;
use crate::store::Mail;
use crate::store::{Claim, StoreError};

/// First pause between two looks at a claim someone else holds; it doubles up to
/// [`MAX_LOOK_PAUSE`].
const FIRST_LOOK_PAUSE: Duration = Duration::from_millis(50);
const MAX_LOOK_PAUSE: Duration = Duration::from_secs(1);
/// How long after the window's end a sent (or refused) email may still be recorded while Redis
/// is down: the invocation then ends at most this much (plus one store call) past its window,
/// well inside the lock renewal limit and functionTimeout when the window is sized as
/// documented (4 min of 5).
pub const RECORD_GRACE: Duration = Duration::from_secs(10);
/// A claim is renewed unless it outlasts the attempt's end by this much: room for recording the
/// outcome afterwards (each store call is bounded to 2 s) before anyone else could claim. Below
/// the lease's 5 s margin over the send deadline, so a fresh claim needs no renewal.
const RENEW_SLACK: Duration = Duration::from_secs(4);

/// Whether this delivery sends.
pub(super) enum Turn<'a> {
    Ours(HeldClaim<'a>),
    /// Sent or refused for good already: nothing to do.
    Settled(Claim),
}

/// What to record once the attempts are over.
pub(super) enum Record<'a> {
    Sent,
    Undeliverable(&'a Refusal),
}

/// A claim this delivery holds, and until when it surely holds it.
pub(super) struct HeldClaim<'a> {
    mail: Mail,
    token: &'a str,
    /// Measured from before the store was asked, so never later than the store's own expiry.
    valid_until: Instant,
}

/// Looks the user up and makes the first claim attempt in one round trip, riding out a store
/// that does not answer. `None` when the user does not exist.
pub(super) async fn look_up(
    app: &App,
    mail: Mail,
    token: &str,
    window: &Window,
) -> Result<Option<(User, (Claim, Instant))>, InvocationError> {
    let mut backoff = Backoff::new();
    loop {
        let asked_at = Instant::now();
        let found = app
            .store
            .find_user_and_claim_onboarding(mail, token, app.claim_lease)
            .await;
        match found {
            Ok(found) => return Ok(found.map(|(user, claim)| (user, (claim, asked_at)))),
            Err(e) => {
                let user_id = mail.user();
                store_trouble(&e, user_id, "looking up the user", &mut backoff, window).await?
            }
        }
    }
}

/// Waits (within the window) until this delivery holds the claim, or the email is settled.
/// Another delivery holding it confirms, releases, or crashes and lets its lease run out: each
/// of these ends the wait within one lease.
pub(super) async fn wait_for_turn<'a>(
    app: &App,
    mail: Mail,
    token: &'a str,
    (mut claim, mut asked_at): (Claim, Instant),
    window: &Window,
) -> Result<Turn<'a>, InvocationError> {
    let mut pause = FIRST_LOOK_PAUSE;
    let mut backoff = Backoff::new();
    loop {
        match claim {
            Claim::Claimed => {
                return Ok(Turn::Ours(HeldClaim {
                    mail,
                    token,
                    valid_until: asked_at + app.claim_lease,
                }));
            }
            Claim::AlreadySent | Claim::Undeliverable => return Ok(Turn::Settled(claim)),
            Claim::InProgress => {
                if !window.pause(pause).await {
                    return Err(window.spent("another delivery is still sending this email"));
                }
                pause = (pause * 2).min(MAX_LOOK_PAUSE);
            }
        }
        loop {
            asked_at = Instant::now();
            match app
                .store
                .claim_onboarding(mail, token, app.claim_lease)
                .await
            {
                Ok(next) => {
                    claim = next;
                    break;
                }
                Err(e) => {
                    let user_id = mail.user();
                    store_trouble(&e, user_id, "claiming the send", &mut backoff, window).await?
                }
            }
        }
    }
}

/// Logs a store failure and waits before the next try, or ends the invocation when the window
/// has no room for one.
async fn store_trouble(
    e: &StoreError,
    user_id: UserId,
    doing: &str,
    backoff: &mut Backoff,
    window: &Window,
) -> Result<(), InvocationError> {
    tracing::warn!(%user_id, error = %e, "{doing} failed; retrying within the send window");
    if window.pause(backoff.next_pause()).await {
        Ok(())
    } else {
        Err(window.spent(&format!("{doing}: {e}")))
    }
}

impl HeldClaim<'_> {
    /// The user whose email this claim is for.
    pub(super) fn user_id(&self) -> UserId {
        self.mail.user()
    }

    /// Makes sure the claim covers an attempt ending at `attempt_end`, renewing it if needed.
    /// `Claimed` when it does; otherwise what stands in the way (the claim lapsed and another
    /// delivery took it, or settled the email).
    pub(super) async fn cover(
        &mut self,
        app: &App,
        attempt_end: Instant,
    ) -> Result<Claim, StoreError> {
        if self.valid_until >= attempt_end + RENEW_SLACK {
            return Ok(Claim::Claimed);
        }
        let asked_at = Instant::now();
        let claim = app
            .store
            .renew_onboarding(self.mail, self.token, app.claim_lease)
            .await?;
        if claim == Claim::Claimed {
            self.valid_until = asked_at + app.claim_lease;
        }
        Ok(claim)
    }

    /// Gives the claim up so a redelivery can take it at once; if this fails, the claim simply
    /// expires after its lease.
    pub(super) async fn release(&self, app: &App) {
        if let Err(e) = app.store.release_onboarding(self.mail, self.token).await {
            tracing::warn!(user_id = %self.user_id(), error = %e, "could not release the send claim");
        }
    }

    /// Records the outcome. Recording fails only while Redis is unreachable, and then nobody can
    /// take the claim either; meanwhile Service Bus holds this message locked for us. So keep
    /// trying until the send window ends, not just while the claim's lease lasts: giving up
    /// early would leave a sent email's profile `pending` after any Redis outage longer than the
    /// lease (the fault scenario with Redis down for 20 s showed 2 of 20).
    pub(super) async fn record(&self, app: &App, what: Record<'_>, window: &Window) {
        let record_by = window.end + RECORD_GRACE;
        let mut pause = FIRST_LOOK_PAUSE;
        loop {
            let recorded = match what {
                Record::Sent => app.store.confirm_onboarding(self.mail).await,
                Record::Undeliverable(refusal) => {
                    app.store.mark_undeliverable(self.mail, refusal).await
                }
            };
            match recorded {
                Ok(()) => return,
                Err(e) if Instant::now() + pause < record_by => {
                    tracing::warn!(user_id = %self.user_id(), error = %e, "recording the outcome failed; retrying");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(MAX_LOOK_PAUSE);
                }
                Err(e) => {
                    // Acknowledging avoids a second email now; the claim lapses, so the profile
                    // shows `pending`, and a repeated sign-up may queue the email again.
                    tracing::error!(user_id = %self.user_id(), error = %e, "onboarding outcome not recorded");
                    return;
                }
            }
        }
    }
}
