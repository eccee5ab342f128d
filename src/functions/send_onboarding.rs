//! sendOnboarding: the queue consumer that sends each new user one welcome email, exactly once
//! under redelivery and concurrent deliveries.

use std::time::Duration;

use anyhow::anyhow;

use super::declaration::QUEUE_MESSAGE;
use super::{InvocationError, Outputs};
use crate::app::App;
use crate::domain::OnboardingMessage;
use crate::mail::{OnboardingEmail, compose};
use crate::protocol::Invocation;
use crate::store::Claim;

/// Attempts at recording a sent email before giving up on the record (not on the email).
const CONFIRM_ATTEMPTS: u32 = 3;

/// Sends the email. Answers non-2xx (so Service Bus redelivers) when Redis or SMTP fails, or
/// another delivery holds the claim; fails a malformed message toward the dead-letter queue;
/// acknowledges a message for a user who no longer exists.
pub async fn run(app: &App, invocation: &Invocation) -> Result<Outputs, InvocationError> {
    let delivery = invocation
        .metadata_text("DeliveryCount")
        .unwrap_or_else(|| "?".to_owned());
    let body = invocation.service_bus_body(QUEUE_MESSAGE)?;
    let message = OnboardingMessage::parse(&body).map_err(|e| InvocationError::Poison(e.into()))?;
    let user_id = message.user_id;
    tracing::info!(%user_id, delivery = %delivery, "onboarding message received");

    let user = match app.store.find_user(user_id).await {
        Ok(Some((user, _))) => user,
        Ok(None) => {
            tracing::warn!(%user_id, "user no longer exists; message acknowledged without an email");
            return Ok(Outputs::default());
        }
        Err(e) => {
            return Err(InvocationError::Retry(
                anyhow!(e).context("looking up the user"),
            ));
        }
    };

    // The claim token is unique to this delivery, so only we can release our own claim.
    let token = uuid::Uuid::new_v4().simple().to_string();
    match app
        .store
        .claim_onboarding(user_id, &token, app.claim_lease)
        .await
    {
        Ok(Claim::Claimed) => {}
        Ok(Claim::AlreadySent) => {
            tracing::info!(%user_id, "email already sent; redelivery acknowledged");
            return Ok(Outputs::default());
        }
        Ok(Claim::InProgress) => {
            return Err(InvocationError::Retry(anyhow!(
                "another delivery is sending this email right now"
            )));
        }
        Err(e) => {
            return Err(InvocationError::Retry(
                anyhow!(e).context("claiming the send"),
            ));
        }
    }

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

    let mut attempt = 0;
    loop {
        attempt += 1;
        match app.store.confirm_onboarding(user_id).await {
            Ok(()) => break,
            Err(e) if attempt < CONFIRM_ATTEMPTS => {
                tracing::warn!(%user_id, error = %e, attempt, "recording the sent email failed; retrying");
                tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt))).await;
            }
            Err(e) => {
                // The email is out: acknowledging avoids a second one. The claim expires, so the
                // profile shows `pending` and a repeated sign-up may queue the email again.
                tracing::error!(%user_id, error = %e, "email sent but not recorded");
                break;
            }
        }
    }
    tracing::info!(%user_id, "onboarding email sent");
    Ok(Outputs::default())
}
