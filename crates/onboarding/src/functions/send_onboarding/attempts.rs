//! Send attempts within one invocation's window: wait for the breaker and for a send slot
//! (the shared `SMTP_MAX_PER_MINUTE` limit, or the adaptive pacer), make sure the claim covers
//! the attempt, send, and read what a failure means.

use std::time::Duration;

use tokio::time::Instant;

use super::claim::HeldClaim;
use super::{Window, without_address};
use crate::app::App;
use crate::domain::{Refusal, UserId};
use crate::mail::pacing::Turn;
use crate::mail::{Backoff, MailError, Pass, Setting, Verdict};
use crate::store::{Claim, SendSlot};

/// No attempt starts with less of the window left than this: it could not finish.
const MIN_ATTEMPT: Duration = Duration::from_millis(250);
/// The shortest sleep while waiting for a send slot to come within reach.
const MIN_SLOT_PAUSE: Duration = Duration::from_millis(10);

/// How the attempts ended.
pub(super) enum Delivery {
    Sent,
    /// Refused for good.
    Refused(Refusal),
    /// Another delivery took over when our claim lapsed, and settled the email.
    Settled(Claim),
    /// The window ran out; the last failure, for the error.
    Spent(String),
}

/// What one attempt came to.
enum Step {
    Done(Delivery),
    /// The window has no room for the attempt.
    Spent,
    /// Try again; the failure, for the log and the final error. After a throttle the shared
    /// schedule (the pacer, or `SMTP_MAX_PER_MINUTE`'s slots) already spaces the retry, so no
    /// backoff of this invocation's own is added: both together left the provider idle.
    Again {
        failure: String,
        throttled: bool,
    },
}

impl Step {
    /// A failure that is not a throttle: this invocation backs off before the next try.
    fn again(failure: String) -> Self {
        Self::Again {
            failure,
            throttled: false,
        }
    }
}

/// Tries until the email is sent or refused for good, or the window runs out.
pub(super) async fn deliver(
    app: &App,
    email: &lettre::Message,
    held: &mut HeldClaim<'_>,
    window: &Window,
) -> Delivery {
    let recipient = email
        .envelope()
        .to()
        .first()
        .map(ToString::to_string)
        .unwrap_or_default();
    let mut backoff = Backoff::new();
    let mut failures = 0_u32;
    let mut last = "the SMTP server stayed unavailable (held back by the breaker)".to_owned();
    let mut operator_told = false;
    loop {
        let step = attempt(app, email, held, window, &mut operator_told).await;
        match step {
            Step::Done(delivery) => return delivery,
            Step::Spent => return Delivery::Spent(last),
            Step::Again { failure, throttled } => {
                // Servers echo the recipient in their replies; logs and errors get none of it.
                let failure = without_address(&failure, &recipient);
                failures += 1;
                // One warning per invocation; the rest at debug, so an outage does not flood.
                if failures == 1 {
                    tracing::warn!(user_id = %held.user_id(), error = %failure, "sending failed; retrying within the send window");
                } else {
                    tracing::debug!(user_id = %held.user_id(), error = %failure, attempt = failures, "sending failed again");
                }
                last = failure;
                if throttled {
                    continue;
                }
            }
        }
        if !window.pause(backoff.next_pause()).await {
            return Delivery::Spent(last);
        }
    }
}

/// One attempt: breaker, slot, claim, send.
async fn attempt(
    app: &App,
    email: &lettre::Message,
    held: &mut HeldClaim<'_>,
    window: &Window,
    operator_told: &mut bool,
) -> Step {
    let Some(pass) = app.breaker.admit(window.end).await else {
        return Step::Spent;
    };
    let reserved_at = match wait_for_slot(app, held.user_id(), window).await {
        Ok(at) => at,
        Err(SlotError::Spent) => return Step::Spent,
        Err(SlotError::Store(e)) => return Step::again(e),
    };
    let started = Instant::now();
    let attempt_end = (started + app.send_deadline).min(window.end);
    if attempt_end < started + MIN_ATTEMPT {
        return Step::Spent;
    }
    match held.cover(app, attempt_end).await {
        Ok(Claim::Claimed) => {}
        Ok(Claim::InProgress) => {
            return Step::again("our claim lapsed and another delivery holds it".to_owned());
        }
        Ok(settled) => return Step::Done(Delivery::Settled(settled)),
        Err(e) => return Step::again(format!("renewing the send claim: {e}")),
    }
    let sent = match tokio::time::timeout_at(attempt_end, app.mailer.send(email)).await {
        Ok(sent) => sent,
        Err(_) => Err(MailError::Timeout(attempt_end - started)),
    };
    match sent {
        Ok(()) => {
            pass.healthy();
            app.pacer.succeeded();
            Step::Done(Delivery::Sent)
        }
        Err(e) => judge(app, pass, &e, reserved_at, operator_told),
    }
}

/// Reads a failed send: tells the breaker and the pacer, and says what comes next.
fn judge(
    app: &App,
    pass: Pass<'_>,
    e: &MailError,
    reserved_at: Instant,
    operator_told: &mut bool,
) -> Step {
    let verdict = e.verdict();
    let throttled = verdict == Verdict::MayHeal { throttled: true };
    match verdict {
        Verdict::Undeliverable(refusal) => {
            pass.healthy();
            return Step::Done(Delivery::Refused(refusal));
        }
        Verdict::MayHeal { throttled: true } => {
            pass.healthy();
            // With a shared limit configured the slots already pace every instance; a throttle
            // then means the limit is set above the provider's, which the log line shows.
            if app.max_per_minute.is_none() {
                app.pacer.throttled(reserved_at);
            }
        }
        Verdict::MayHeal { throttled: false } => pass.down(),
        Verdict::Misconfigured(setting) => {
            pass.down();
            if !*operator_told {
                *operator_told = true;
                tell_operator(setting, e);
            }
        }
    }
    Step::Again {
        failure: e.to_string(),
        throttled,
    }
}

/// An ERROR (stderr, so the host files it as an error) naming the setting to fix, never its
/// value: the failure text is the server's reply, which carries no credentials.
fn tell_operator(setting: Setting, e: &MailError) {
    let name = setting.name();
    let what = match setting {
        Setting::SmtpUrl => "the SMTP server refuses our connection or credentials",
        Setting::MailFrom => "the SMTP server refuses our sender address",
    };
    tracing::error!(
        setting = name,
        error = %e,
        "{what}: check the {name} setting (the email is retried, and the user is not blamed)"
    );
}

enum SlotError {
    Spent,
    Store(String),
}

/// Waits for this attempt's send slot: from the store's shared limit when
/// `SMTP_MAX_PER_MINUTE` is set, else from the process's pacer. A shared slot beyond the window
/// stays reserved for this user (the store's ticket): the delivery waits for it while the window
/// lasts, and when the window runs out first, the message's next delivery picks the same slot
/// up instead of queuing again behind every delivery that asked meanwhile. So under a tight
/// limit each message spends about (its wait ÷ the window) deliveries, in order, never more by
/// bad luck. Returns when the slot is due.
async fn wait_for_slot(app: &App, user: UserId, window: &Window) -> Result<Instant, SlotError> {
    loop {
        let max_wait = window.remaining().saturating_sub(MIN_ATTEMPT);
        let reserved_at = Instant::now();
        let turn = match app.max_per_minute {
            Some(limit) => match app.store.reserve_send_slot(user, limit, max_wait).await {
                Ok(SendSlot::Reserved { wait }) => Turn::After(wait),
                Ok(SendSlot::TooFar { wait }) => Turn::TooFar(wait.saturating_sub(max_wait)),
                Err(e) => return Err(SlotError::Store(format!("reserving a send slot: {e}"))),
            },
            None => app.pacer.reserve(max_wait),
        };
        match turn {
            Turn::After(wait) => {
                // Not even a zero sleep: tokio's timer rounds it up to its next 1 ms tick, which
                // cost every unpaced send about a millisecond of waiting.
                if !wait.is_zero() {
                    tokio::time::sleep(wait).await;
                }
                return Ok(reserved_at);
            }
            Turn::TooFar(excess) => {
                if !window.pause(excess.max(MIN_SLOT_PAUSE)).await {
                    return Err(SlotError::Spent);
                }
            }
        }
    }
}
