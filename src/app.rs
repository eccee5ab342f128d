//! Everything a function needs, built once at start: the store, the mailer, the hasher, the keys.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use lettre::message::Mailbox;
use url::Url;

use crate::auth::{PasswordHasher, TokenKeys};
use crate::config::Settings;
use crate::mail::{Mailer, OutboxMailer, SmtpMailer};
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
    pub mail_from: Mailbox,
    pub public_url: Option<Url>,
    /// How long a delivery holds the right to send one user's email.
    pub claim_lease: Duration,
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
            mail_from: settings.mail_from.clone(),
            public_url: settings.public_url.clone(),
            claim_lease: send_deadline + CLAIM_MARGIN,
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
