//! The embedded mailer for `handler dev` without SMTP: each message becomes an `.eml` file that
//! any mail client opens.

use std::path::PathBuf;

use async_trait::async_trait;
use time::OffsetDateTime;

use super::{MailError, Mailer};

/// Writes messages to a folder, one file each.
#[derive(Debug, Clone)]
pub struct OutboxMailer {
    dir: PathBuf,
}

impl OutboxMailer {
    /// Mail goes to `dir`, created on the first send.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }
}

#[async_trait]
impl Mailer for OutboxMailer {
    fn describe(&self) -> String {
        format!(".eml files in {}", self.dir.display())
    }

    async fn send(&self, message: &lettre::Message) -> Result<(), MailError> {
        tokio::fs::create_dir_all(&self.dir).await?;
        let stamp = OffsetDateTime::now_utc().unix_timestamp_nanos();
        let name = format!("{stamp}-{}.eml", uuid::Uuid::new_v4().simple());
        // Write then rename, so a reader never sees half a message.
        let partial = self.dir.join(format!(".{name}.partial"));
        tokio::fs::write(&partial, message.formatted()).await?;
        tokio::fs::rename(&partial, self.dir.join(&name)).await?;
        Ok(())
    }
}
