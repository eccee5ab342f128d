//! Everything a function needs, built once at start: the store, the mailer, the hasher, the keys.

use std::num::NonZeroU32;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use lettre::message::Mailbox;
use url::Url;

use crate::auth::{EmailTokens, FormTokens, PasswordHasher, TokenKeys};
use crate::config::{Limits, Settings};
use crate::mail::{Breaker, Mailer, OutboxMailer, Pacer, SmtpMailer};
use crate::store::{MemoryStore, RedisStore, UserStore};

/// Extra time an onboarding claim outlives the send deadline (the send itself is cut at the
/// deadline), so a send that succeeds at the last moment is still recorded before anyone else
/// may claim. Kept short: a crashed delivery's claim blocks the next one for the whole lease.
const CLAIM_MARGIN: Duration = Duration::from_secs(5);

/// The shared state of the handler.
pub struct App {
    pub store: Arc<dyn UserStore>,
    pub mailer: Arc<dyn Mailer>,
    pub hasher: PasswordHasher,
    pub tokens: TokenKeys,
    /// Signs the links that confirm an address (same keys, their own audience).
    pub email_tokens: EmailTokens,
    /// Signs the anti-forgery fields of state-changing forms.
    pub form_tokens: FormTokens,
    pub mail_from: Mailbox,
    pub public_url: Option<Url>,
    /// How long a delivery holds the right to send one user's email.
    pub claim_lease: Duration,
    /// The bound on one send attempt (`SMTP_TIMEOUT_SECONDS`).
    pub send_deadline: Duration,
    /// How long one delivery rides out failures that may heal (`SMTP_SEND_WINDOW_SECONDS`).
    pub send_window: Duration,
    /// The provider's limit shared through the store (`SMTP_MAX_PER_MINUTE`), if set.
    pub max_per_minute: Option<NonZeroU32>,
    /// The limits against abuse (`LIMIT_*`), counted in the store.
    pub limits: Limits,
    /// Holds sends back while the SMTP server is down (one per process).
    pub breaker: Breaker,
    /// Spaces sends out after throttle replies when no limit is set (one per process).
    pub pacer: Pacer,
}

impl App {
    /// Builds the app from settings: Redis or the in-memory store, SMTP or the outbox. Nothing
    /// connects yet, so the host's readiness ping is answered even while a backend is down.
    pub async fn build(settings: &Settings, outbox_dir: &Path) -> anyhow::Result<Self> {
        // rustls needs one process-wide crypto provider; a second install is harmless.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let store: Arc<dyn UserStore> = match &settings.redis {
            Some(redis) => Arc::new(
                RedisStore::new(redis, &settings.key_prefix)
                    .context("preparing the Redis store")?,
            ),
            None => Arc::new(MemoryStore::new()),
        };
        let (mailer, send_deadline): (Arc<dyn Mailer>, Duration) = match &settings.smtp {
            Some(smtp) => (
                Arc::new(SmtpMailer::new(smtp).context("preparing the SMTP mailer")?),
                smtp.timeout,
            ),
            None => (
                Arc::new(OutboxMailer::new(outbox_dir)),
                crate::config::DEFAULT_SMTP_TIMEOUT,
            ),
        };
        Ok(Self::new(settings, store, mailer, send_deadline))
    }

    /// Builds the app around a given store and mailer.
    pub fn new(
        settings: &Settings,
        store: Arc<dyn UserStore>,
        mailer: Arc<dyn Mailer>,
        send_deadline: Duration,
    ) -> Self {
        Self {
            store,
            mailer,
            hasher: PasswordHasher::for_this_machine(),
            tokens: TokenKeys::new(&settings.jwt),
            email_tokens: EmailTokens::new(&settings.jwt),
            form_tokens: FormTokens::new(&settings.jwt),
            mail_from: settings.mail_from.clone(),
            public_url: settings.public_url.clone(),
            claim_lease: send_deadline + CLAIM_MARGIN,
            send_deadline,
            send_window: settings.send_window,
            max_per_minute: settings.max_per_minute,
            limits: settings.limits,
            breaker: Breaker::new(),
            pacer: Pacer::new(),
        }
    }

    /// Where users and mail go, for the start-up banner (no credentials).
    pub fn describe_backends(&self) -> Vec<(&'static str, String)> {
        vec![
            ("store", self.store.describe()),
            ("mail", self.mailer.describe()),
        ]
    }
}
