//! An email address a message can be sent to, and the key that makes it unique.

use std::fmt;
use std::str::FromStr;

/// Longest address accepted, in bytes (the SMTP path limit less the angle brackets).
pub const MAX_EMAIL_LEN: usize = 254;

/// Why an address was refused; safe to show to the person who typed it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EmailError {
    #[error("must not be empty")]
    Empty,
    #[error("must be at most {MAX_EMAIL_LEN} characters")]
    TooLong,
    #[error("is not a valid email address")]
    Invalid,
}

/// A syntactically valid address of at most 254 bytes, in the plain `local@domain` form (no
/// display name, no comments), so it is safe as an SMTP recipient and as part of a store key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserEmail(String);

impl UserEmail {
    /// Trims the input and checks it with an RFC 5322 parser.
    pub fn parse(input: &str) -> Result<Self, EmailError> {
        let trimmed = input.trim();
        if trimmed.is_empty() {
            return Err(EmailError::Empty);
        }
        if trimmed.len() > MAX_EMAIL_LEN {
            return Err(EmailError::TooLong);
        }
        let parsed =
            email_address::EmailAddress::from_str(trimmed).map_err(|_| EmailError::Invalid)?;
        // The parser also accepts "Name <a@b>" and quoted or bracketed forms; a sign-up wants the
        // bare address, with a dotted domain that mail can actually be routed to.
        let domain = parsed.domain();
        let plain = parsed.email() == trimmed
            && !trimmed.contains(['<', '>', '"', '(', ')', '[', ']', ' ', '\\'])
            && domain.contains('.')
            && !domain.starts_with('.')
            && !domain.ends_with('.');
        if !plain {
            return Err(EmailError::Invalid);
        }
        Ok(Self(trimmed.to_owned()))
    }

    /// The address as the person typed it (trimmed).
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The form under which uniqueness is decided: the whole address lower-cased, since
    /// providers treat local parts case-insensitively in practice and people mistype case.
    pub fn unique_key(&self) -> String {
        self.0.to_lowercase()
    }

    /// The mailbox that receives the mail, as far as sign-up limits count it: lower-cased, with
    /// a `+tag` dropped from the local part (Gmail, Outlook and Fastmail deliver `ada+x@` to
    /// `ada@`), so that `ada+1@`, `ada+2@`, … share one limit and cannot be used to flood one
    /// inbox with welcome emails. Only limits use it: `ada+1@` stays an account of its own.
    pub fn mailbox_key(&self) -> String {
        let lower = self.unique_key();
        match lower.rsplit_once('@') {
            Some((local, domain)) => match local.split_once('+') {
                Some((base, _tag)) if !base.is_empty() => format!("{base}@{domain}"),
                _ => lower,
            },
            None => lower,
        }
    }
}

impl AsRef<str> for UserEmail {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for UserEmail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plain_address_is_accepted() {
        assert_eq!(
            UserEmail::parse(" ada@example.com ").unwrap().as_str(),
            "ada@example.com"
        );
    }

    #[test]
    fn an_address_of_254_bytes_is_accepted() {
        let local = "a".repeat(64);
        let domain = format!(
            "{}.{}.{}.com",
            "b".repeat(63),
            "c".repeat(63),
            "d".repeat(57)
        );
        let address = format!("{local}@{domain}");
        assert_eq!(address.len(), 254);
        assert!(UserEmail::parse(&address).is_ok());
    }

    #[test]
    fn an_address_of_255_bytes_is_rejected() {
        let address = format!("{}@{}.com", "a".repeat(64), "b".repeat(186));
        assert_eq!(address.len(), 255);
        assert_eq!(UserEmail::parse(&address), Err(EmailError::TooLong));
    }

    #[test]
    fn a_missing_at_sign_is_rejected() {
        assert_eq!(
            UserEmail::parse("ada.example.com"),
            Err(EmailError::Invalid)
        );
    }

    #[test]
    fn a_display_name_form_is_rejected() {
        assert_eq!(
            UserEmail::parse("Ada <ada@example.com>"),
            Err(EmailError::Invalid)
        );
    }

    #[test]
    fn a_line_break_is_rejected() {
        assert_eq!(
            UserEmail::parse("ada@example.com\r\nBcc: x@example.com"),
            Err(EmailError::Invalid)
        );
    }

    #[test]
    fn a_domain_without_a_dot_is_rejected() {
        assert_eq!(UserEmail::parse("ada@localhost"), Err(EmailError::Invalid));
    }

    #[test]
    fn uniqueness_ignores_case() {
        let a = UserEmail::parse("Ada@Example.COM").unwrap();
        let b = UserEmail::parse("ada@example.com").unwrap();
        assert_eq!(a.unique_key(), b.unique_key());
    }

    #[test]
    fn the_mailbox_drops_a_plus_tag_and_case() {
        let tagged = UserEmail::parse("Ada+News+2@Example.com").unwrap();
        assert_eq!(tagged.mailbox_key(), "ada@example.com");
        assert_ne!(
            tagged.unique_key(),
            "ada@example.com",
            "still an account of its own"
        );
    }

    #[test]
    fn a_local_part_that_is_only_a_tag_is_kept_whole() {
        let odd = UserEmail::parse("+x@example.com").unwrap();
        assert_eq!(odd.mailbox_key(), "+x@example.com");
    }
}
