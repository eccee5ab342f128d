//! The SMTP mailer: lettre's pooled async transport over rustls, every send bounded by an overall
//! deadline (lettre's own timeout is per read or write, so a server that accepts the connection and
//! then says nothing would otherwise hold the invocation until the host kills the process).

use std::time::Duration;

use async_trait::async_trait;
use lettre::transport::smtp::PoolConfig;
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};

use super::{MailError, Mailer};
use crate::config::{SmtpSettings, expose};

/// Connections kept open to the SMTP server between sends.
const POOL_MAX_SIZE: u32 = 8;
/// How long an unused pooled connection is kept.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Sends through one SMTP server with a small connection pool.
#[derive(Clone)]
pub struct SmtpMailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    display: String,
    deadline: Duration,
}

impl SmtpMailer {
    /// Prepares the transport without connecting.
    pub fn new(settings: &SmtpSettings) -> Result<Self, MailError> {
        let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(expose(&settings.url))
            .map_err(|e| MailError::Build(format!("SMTP_URL is not usable: {e}")))?
            .timeout(Some(settings.timeout))
            .pool_config(
                PoolConfig::new()
                    .max_size(POOL_MAX_SIZE)
                    .idle_timeout(POOL_IDLE_TIMEOUT),
            )
            .build();
        Ok(Self {
            transport,
            display: settings.display.clone(),
            deadline: settings.timeout,
        })
    }
}

#[async_trait]
impl Mailer for SmtpMailer {
    fn describe(&self) -> String {
        format!("SMTP at {}", self.display)
    }

    async fn send(&self, message: &lettre::Message) -> Result<(), MailError> {
        match tokio::time::timeout(self.deadline, self.transport.send(message.clone())).await {
            Ok(Ok(_response)) => Ok(()),
            // lettre's errors name the server and the SMTP reply, never the credentials.
            Ok(Err(e)) => Err(MailError::Smtp(e.to_string())),
            Err(_) => Err(MailError::Timeout(self.deadline)),
        }
    }
}
