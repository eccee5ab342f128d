//! sendOnboarding: the queue consumer that sends each new user one welcome email, exactly once
//! under redelivery and concurrent deliveries.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::anyhow;
use tokio::time::Instant;

use super::declaration::QUEUE_MESSAGE;
use super::{InvocationError, Outputs};
use crate::app::App;
use crate::domain::OnboardingMessage;
use crate::mail::{OnboardingEmail, compose};
use crate::protocol::Invocation;
use crate::store::Claim;

/// First pause between two looks at a claim someone else holds, or two tries at recording a
/// sent email; it doubles up to [`MAX_PAUSE`].
const FIRST_PAUSE: Duration = Duration::from_millis(50);
const MAX_PAUSE: Duration = Duration::from_secs(1);

/// A claim token unique to one delivery across every handler process: a random prefix drawn
/// once per process, then a counter. Cheaper than a fresh UUID per message, which costs a
/// `getrandom` system call each.
fn claim_token() -> String {
    static PREFIX: OnceLock<String> = OnceLock::new();
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let prefix = PREFIX.get_or_init(|| uuid::Uuid::new_v4().simple().to_string());
    format!("{prefix}.{}", NEXT.fetch_add(1, Ordering::Relaxed))
}

/// Sends the email. Answers non-2xx (so Service Bus redelivers) when Redis or SMTP fails; fails a
/// malformed message toward the dead-letter queue; acknowledges a message for a user who no longer
/// exists. A delivery that finds another one sending waits for its outcome instead of failing at
/// once: Service Bus redelivers without delay, so ten quick failures while a crashed delivery's
/// claim runs out would dead-letter an email that was never sent.
pub async fn run(app: &App, invocation: &Invocation) -> Result<Outputs, InvocationError> {
    let delivery = invocation
        .metadata_text("DeliveryCount")
        .unwrap_or_else(|| "?".to_owned());
    let body = invocation.service_bus_body(QUEUE_MESSAGE)?;
    let message = OnboardingMessage::parse(&body).map_err(|e| InvocationError::Poison(e.into()))?;
    let user_id = message.user_id;
    // One info line per message (the outcome, below) keeps logging off the hot path's cost;
    // this one is for debugging.
    tracing::debug!(%user_id, delivery = %delivery, "onboarding message received");

    // The claim token is unique to this delivery, so only we can release our own claim.
    let token = claim_token();
    let claimed_at = Instant::now();
    let give_up_waiting = claimed_at + app.claim_lease;
    // The lookup and the first claim attempt share one store round trip.
    let (user, mut claim) = match app
        .store
        .find_user_and_claim_onboarding(user_id, &token, app.claim_lease)
        .await
    {
        Ok(Some(found)) => found,
        Ok(None) => {
            tracing::warn!(%user_id, delivery = %delivery, "user no longer exists; message acknowledged without an email");
            return Ok(Outputs::default());
        }
        Err(e) => {
            return Err(InvocationError::Retry(
                anyhow!(e).context("looking up the user and claiming the send"),
            ));
        }
    };
    let mut pause = FIRST_PAUSE;
    loop {
        match claim {
            Claim::Claimed => break,
            Claim::AlreadySent => {
                tracing::info!(%user_id, delivery = %delivery, "email already sent; delivery acknowledged");
                return Ok(Outputs::default());
            }
            // The other delivery confirms, releases, or crashes and lets its lease run out:
            // each of these ends the wait within one lease.
            Claim::InProgress if Instant::now() < give_up_waiting => {
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(MAX_PAUSE);
            }
            Claim::InProgress => {
                return Err(InvocationError::Retry(anyhow!(
                    "another delivery is still sending this email after {:?}",
                    app.claim_lease
                )));
            }
        }
        claim = app
            .store
            .claim_onboarding(user_id, &token, app.claim_lease)
            .await
            .map_err(|e| InvocationError::Retry(anyhow!(e).context("claiming the send")))?;
    }
    let claimed_at = Instant::now();

    // The stored user is the authority on where the email goes, not the message.
    let email = compose(&OnboardingEmail {
        from: &app.mail_from,
        name: &user.name,
        email: &user.email,
        link: app.public_url.as_ref(),
    });
    let sent = match email {
        Ok(email) => app.mailer.send(&email).await,
        Err(e) => Err(e),
    };
    if let Err(e) = sent {
        if let Err(release) = app.store.release_onboarding(user_id, &token).await {
            // The claim then simply expires after its lease.
            tracing::warn!(%user_id, error = %release, "could not release the send claim");
        }
        return Err(InvocationError::Retry(
            anyhow!(e).context("sending the onboarding email"),
        ));
    }

    // The email is out. Recording it may fail while Redis is down; keep trying while our claim
    // still stands (after that, a redelivery could send again anyway).
    let record_by = claimed_at + app.claim_lease.saturating_sub(Duration::from_secs(1));
    let mut pause = FIRST_PAUSE;
    loop {
        match app.store.confirm_onboarding(user_id).await {
            Ok(()) => break,
            Err(e) if Instant::now() + pause < record_by => {
                tracing::warn!(%user_id, error = %e, "recording the sent email failed; retrying");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(MAX_PAUSE);
            }
            Err(e) => {
                // Acknowledging avoids a second email now; the claim lapses, so the profile shows
                // `pending`, and a repeated sign-up may queue the email again.
                tracing::error!(%user_id, error = %e, "email sent but not recorded");
                break;
            }
        }
    }
    tracing::info!(%user_id, delivery = %delivery, "onboarding email sent");
    Ok(Outputs::default())
}
