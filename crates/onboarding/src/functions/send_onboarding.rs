//! sendOnboarding: the queue consumer that sends each new user one welcome email, and each
//! request for a new verification link one verification email, exactly once under redelivery and
//! concurrent deliveries (each email has its own claim; see `store::Mail`).
//!
//! Service Bus redelivers a failed message at once, with no backoff, and dead-letters it after
//! 10 deliveries (Azure/azure-service-bus#454, Azure/azure-webjobs-sdk#2955): answering non-2xx
//! on the first failure would dead-letter every email in flight during a 45 s SMTP outage. So
//! each invocation rides out what may heal (SMTP or Redis down, a provider's 4xx throttle) for up
//! to `SMTP_SEND_WINDOW_SECONDS`, and only then answers non-2xx; a recipient refused for good is
//! recorded as `undeliverable` and acknowledged.

mod attempts;
mod claim;

pub use claim::RECORD_GRACE;

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::anyhow;
use tokio::time::Instant;

use super::declaration::QUEUE_MESSAGE;
use super::{InvocationError, Outputs};
use crate::app::App;
use crate::domain::{OnboardingMessage, Refusal, User};
use crate::mail::{OnboardingEmail, Verdict, VerificationEmail, compose, compose_verification};
use crate::protocol::Invocation;
use crate::store::Mail;
use attempts::Delivery;
use claim::{Record, Turn};

/// A claim token unique to one delivery across every handler process: a random prefix drawn
/// once per process, then a counter. Cheaper than a fresh UUID per message, which costs a
/// `getrandom` system call each.
fn claim_token() -> String {
    static PREFIX: OnceLock<String> = OnceLock::new();
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let prefix = PREFIX.get_or_init(|| uuid::Uuid::new_v4().simple().to_string());
    format!("{prefix}.{}", NEXT.fetch_add(1, Ordering::Relaxed))
}

/// The time one invocation may spend riding out failures, from its start.
#[derive(Debug, Clone, Copy)]
struct Window {
    length: Duration,
    end: Instant,
}

impl Window {
    fn starting_now(length: Duration) -> Self {
        Self {
            length,
            end: Instant::now() + length,
        }
    }

    fn remaining(&self) -> Duration {
        self.end.saturating_duration_since(Instant::now())
    }

    /// Sleeps `pause` and returns true; when the window would be over by then, sleeps until it
    /// ends and returns false. Never gives up early: Service Bus redelivers at once, so an
    /// invocation that answered before its window ran out would spend the message's deliveries
    /// in quick succession (a send slot 10 s away, with 2 s windows, dead-lettered a message in
    /// 100 ms that way).
    async fn pause(&self, pause: Duration) -> bool {
        if Instant::now() + pause >= self.end {
            tokio::time::sleep_until(self.end).await;
            return false;
        }
        tokio::time::sleep(pause).await;
        true
    }

    /// The error that ends an invocation whose window ran out.
    fn spent(&self, last_failure: &str) -> InvocationError {
        InvocationError::Retry(anyhow!(
            "the onboarding email could not be sent within the {} s send window \
             (SMTP_SEND_WINDOW_SECONDS); last failure: {last_failure}",
            self.length.as_secs()
        ))
    }
}

/// Sends the email. Acknowledges a message for a user who no longer exists, an email already
/// sent or already refused for good, and a recipient refused now (recorded as undeliverable);
/// fails a malformed message toward the dead-letter queue; answers non-2xx (so Service Bus
/// redelivers) only when what may heal did not heal within the send window.
pub async fn run(app: &App, invocation: &Invocation) -> Result<Outputs, InvocationError> {
    let delivery = invocation
        .metadata_text("DeliveryCount")
        .unwrap_or_else(|| "?".to_owned());
    let body = invocation.service_bus_body(QUEUE_MESSAGE)?;
    let message = OnboardingMessage::parse(&body).map_err(|e| InvocationError::Poison(e.into()))?;
    let user_id = message.user_id;
    let mail = match message.verification_request {
        None => Mail::Welcome(user_id),
        Some(request) => Mail::Verification {
            user: user_id,
            request,
        },
    };
    // One info line per message (the outcome, below) keeps logging off the hot path's cost;
    // this one is for debugging.
    tracing::debug!(%user_id, delivery = %delivery, "onboarding message received");

    let window = Window::starting_now(app.send_window);
    // The claim token is unique to this delivery, so only we can release our own claim.
    let token = claim_token();
    let Some((user, first_claim)) = claim::look_up(app, mail, &token, &window).await? else {
        tracing::warn!(%user_id, delivery = %delivery, "user no longer exists; message acknowledged without an email");
        return Ok(Outputs::default());
    };
    let mut held = match claim::wait_for_turn(app, mail, &token, first_claim, &window).await? {
        Turn::Ours(held) => held,
        Turn::Settled(claim) => {
            tracing::info!(%user_id, delivery = %delivery, outcome = ?claim, "onboarding already settled; delivery acknowledged");
            return Ok(Outputs::default());
        }
    };

    let outcome = match compose_for(app, &user, mail) {
        Ok(email) => attempts::deliver(app, &email, &mut held, &window).await,
        Err(refusal) => Delivery::Refused(refusal),
    };
    match outcome {
        Delivery::Sent => {
            held.record(app, Record::Sent, &window).await;
            match mail {
                Mail::Welcome(_) => {
                    tracing::info!(%user_id, delivery = %delivery, "onboarding email sent")
                }
                Mail::Verification { .. } => {
                    tracing::info!(%user_id, delivery = %delivery, "verification email sent")
                }
            }
        }
        Delivery::Refused(refusal) => {
            let refusal = Refusal::new(
                refusal.code,
                &without_address(&refusal.reply, user.email.as_str()),
            );
            tracing::warn!(%user_id, delivery = %delivery, code = ?refusal.code, reply = %refusal.reply,
                "the recipient's mail server refused the onboarding email for good; recorded as undeliverable, not retried");
            held.record(app, Record::Undeliverable(&refusal), &window)
                .await;
        }
        Delivery::Settled(claim) => {
            tracing::info!(%user_id, delivery = %delivery, outcome = ?claim, "another delivery settled the email meanwhile; acknowledged");
        }
        Delivery::Spent(last_failure) => {
            held.release(app).await;
            return Err(window.spent(&last_failure));
        }
    }
    Ok(Outputs::default())
}

/// The email for this user (the stored user is the authority on where it goes, not the
/// message), or why it can never be written. Each carries a fresh confirmation link (7 days from
/// the send, not from the request).
fn compose_for(app: &App, user: &User, mail: Mail) -> Result<lettre::Message, Refusal> {
    let confirm = super::verify_email::confirm_link(app, user);
    let composed = match (mail, &confirm) {
        (Mail::Welcome(_), _) => compose(&OnboardingEmail {
            from: &app.mail_from,
            name: &user.name,
            email: &user.email,
            link: app.public_url.as_ref(),
            confirm: confirm.as_ref(),
        }),
        (Mail::Verification { .. }, Some(confirm)) => compose_verification(&VerificationEmail {
            from: &app.mail_from,
            name: &user.name,
            email: &user.email,
            confirm,
        }),
        (Mail::Verification { .. }, None) => {
            // verifyEmail refuses to queue this without PUBLIC_URL; a message from before a
            // settings change can still get here.
            return Err(Refusal::new(
                None,
                "no PUBLIC_URL: the link cannot be written",
            ));
        }
    };
    composed.map_err(|e| match e.verdict() {
        Verdict::Undeliverable(refusal) => refusal,
        _ => Refusal::new(None, &e.to_string()),
    })
}

/// The reply text with the user's address replaced (servers often echo it), so the warning
/// logs no email address (STYLE: no emails in log fields).
fn without_address(reply: &str, address: &str) -> String {
    let address = address.to_ascii_lowercase();
    if address.is_empty() {
        return reply.to_owned();
    }
    let lower = reply.to_ascii_lowercase();
    let mut out = String::with_capacity(reply.len());
    let mut rest = 0;
    while let Some(found) = lower[rest..].find(&address) {
        out.push_str(&reply[rest..rest + found]);
        out.push_str("the recipient");
        rest += found + address.len();
    }
    out.push_str(&reply[rest..]);
    out
}

#[cfg(test)]
mod tests {
    use time::OffsetDateTime;

    use super::*;
    use crate::domain::{UserEmail, UserId, UserName};

    #[test]
    fn the_users_address_is_taken_out_of_a_reply_whatever_its_case() {
        let user = User {
            id: UserId::new(),
            name: UserName::parse("Bo").unwrap(),
            email: UserEmail::parse("Bo@Example.com").unwrap(),
            created_at: OffsetDateTime::now_utc(),
            password_hash: String::new(),
        };
        assert_eq!(
            without_address(
                "5.1.1 <bo@example.com>: unknown; BO@EXAMPLE.COM",
                user.email.as_str()
            ),
            "5.1.1 <the recipient>: unknown; the recipient"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_pause_that_would_outlast_the_window_waits_it_out_and_says_so() {
        let window = Window::starting_now(Duration::from_secs(2));
        assert!(window.pause(Duration::from_secs(1)).await);
        assert!(!window.pause(Duration::from_secs(5)).await);
        assert_eq!(window.remaining(), Duration::ZERO, "not a moment early");
    }
}
