//! Reading the `.eml` files the outbox mailer writes.

use std::path::Path;

use mailparse::{MailHeaderMap as _, ParsedMail};

/// A parsed onboarding email: its subject and its decoded parts.
pub struct Email {
    pub subject: String,
    pub html: String,
    pub text: String,
}

/// Parses an `.eml` file and decodes its `text/html` and `text/plain` parts (transfer encoding
/// and charset undone).
pub fn read(path: &Path) -> Email {
    let raw = std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let mail = mailparse::parse_mail(&raw)
        .unwrap_or_else(|e| panic!("{} is not a MIME message: {e}", path.display()));
    let part = |mime: &str| {
        find_part(&mail, mime)
            .unwrap_or_else(|| {
                panic!(
                    "{} has no {mime} part:\n{}",
                    path.display(),
                    String::from_utf8_lossy(&raw)
                )
            })
            .get_body()
            .unwrap_or_else(|e| panic!("decode the {mime} part of {}: {e}", path.display()))
    };
    Email {
        subject: mail.headers.get_first_value("Subject").unwrap_or_default(),
        html: part("text/html"),
        text: part("text/plain"),
    }
}

/// The first leaf part with the given media type, depth first.
fn find_part<'a>(mail: &'a ParsedMail<'a>, mime: &str) -> Option<&'a ParsedMail<'a>> {
    if mail.subparts.is_empty() {
        return mail
            .ctype
            .mimetype
            .eq_ignore_ascii_case(mime)
            .then_some(mail);
    }
    mail.subparts.iter().find_map(|sub| find_part(sub, mime))
}
