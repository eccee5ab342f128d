//! The onboarding and verification emails and the ways they leave: SMTP for real runs, `.eml` files for local ones;
//! and how sends are spaced and held back while the server is down or throttling.

mod breaker;
mod content;
mod outbox;
mod outcome;
pub mod pacing;
mod smtp;
mod verification;

use async_trait::async_trait;

pub use breaker::{Breaker, Pass};
pub use content::{OnboardingEmail, compose, html_body, text_body};
pub use outbox::OutboxMailer;
pub use outcome::{FailureKind, Setting, SmtpFailure, Stage, Verdict};
pub use pacing::{Backoff, Pacer};
pub use smtp::SmtpMailer;
pub use verification::{VerificationEmail, compose_verification};

use crate::domain::Refusal;

/// A send that did not succeed; [`MailError::verdict`] says whether it may heal.
#[derive(Debug, thiserror::Error)]
pub enum MailError {
    /// The email could not be built for this recipient (an address lettre cannot write).
    #[error("the email could not be built: {0}")]
    Build(String),
    #[error("the SMTP server did not finish within {0:?}")]
    Timeout(std::time::Duration),
    #[error(transparent)]
    Smtp(#[from] SmtpFailure),
    #[error("the email could not be written: {0}")]
    Io(#[from] std::io::Error),
}

impl MailError {
    /// What this failure means for the message (see `outcome.rs`).
    pub fn verdict(&self) -> Verdict {
        match self {
            // The address passed our validation but not lettre's: it never will.
            Self::Build(why) => Verdict::Undeliverable(Refusal::new(None, why)),
            Self::Timeout(_) | Self::Io(_) => Verdict::MayHeal { throttled: false },
            Self::Smtp(failure) => failure.verdict(),
        }
    }
}

/// Sends a finished message. Implementations know nothing about users or queues.
#[async_trait]
pub trait Mailer: Send + Sync {
    /// Says where mail goes, for the banner and logs (no credentials).
    fn describe(&self) -> String;

    /// Hands one message to the server (or the outbox) and returns once it is accepted.
    async fn send(&self, message: &lettre::Message) -> Result<(), MailError>;
}
