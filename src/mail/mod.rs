//! The onboarding email and the ways it leaves: SMTP for real runs, `.eml` files for local ones.

mod content;
mod outbox;
mod smtp;

use async_trait::async_trait;

pub use content::{OnboardingEmail, compose, html_body, text_body};
pub use outbox::OutboxMailer;
pub use smtp::SmtpMailer;

/// A send that did not reach the server; all of these may heal, so the message is retried.
#[derive(Debug, thiserror::Error)]
pub enum MailError {
    #[error("the email could not be built: {0}")]
    Build(String),
    #[error("the SMTP server did not finish within {0:?}")]
    Timeout(std::time::Duration),
    #[error("the SMTP send failed: {0}")]
    Smtp(String),
    #[error("the email could not be written: {0}")]
    Io(#[from] std::io::Error),
}

/// Sends a finished message. Implementations know nothing about users or queues.
#[async_trait]
pub trait Mailer: Send + Sync {
    /// Says where mail goes, for the banner and logs (no credentials).
    fn describe(&self) -> String;

    /// Hands one message to the server (or the outbox) and returns once it is accepted.
    async fn send(&self, message: &lettre::Message) -> Result<(), MailError>;
}
