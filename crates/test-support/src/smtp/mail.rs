//! One message as the sink accepted it, and what a test reads of it (headers, MIME parts).

use std::time::Instant;

use super::mime::{self, MimePart};

/// One message as the sink accepted it.
#[derive(Clone, Debug)]
pub struct ReceivedMail {
    /// The envelope sender (`MAIL FROM`), without angle brackets.
    pub from: String,
    /// The envelope recipients (`RCPT TO`), without angle brackets.
    pub to: Vec<String>,
    /// The message as sent after `DATA` (headers and body), dot-unstuffed.
    pub data: String,
    /// When the sink accepted it (before its `250` went out).
    pub received_at: Instant,
}

impl ReceivedMail {
    /// A top-level header of the message, matched case-insensitively.
    pub fn header(&self, name: &str) -> Option<String> {
        mime::parse(&self.data).header(name).map(str::to_owned)
    }

    /// The message's leaf parts (text/plain, text/html, ...), bodies decoded.
    pub fn parts(&self) -> Vec<MimePart> {
        mime::parse(&self.data).leaves()
    }

    /// The decoded body of the first leaf part with this media type (e.g. `text/html`).
    pub fn part(&self, media_type: &str) -> Option<String> {
        self.parts()
            .into_iter()
            .find(|part| part.media_type() == media_type)
            .map(|part| part.body)
    }
}
