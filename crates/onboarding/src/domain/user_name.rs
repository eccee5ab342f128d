//! A person's display name, as shown on pages and in the email greeting.

use std::fmt;

/// Longest name accepted, in characters (not bytes), after trimming.
pub const MAX_NAME_CHARS: usize = 100;

/// Why a name was refused; the text is safe to show to the person who typed it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("must not be empty")]
    Empty,
    #[error("must be at most {MAX_NAME_CHARS} characters")]
    TooLong,
    #[error("must not contain control characters such as line breaks")]
    ControlCharacter,
}

/// A trimmed name of 1 to 100 characters without control characters, so it can go into a mail
/// header or a log line without smuggling in a line break.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserName(String);

impl UserName {
    /// Trims the input and checks every rule.
    pub fn parse(input: &str) -> Result<Self, NameError> {
        let trimmed = input.trim();
        if trimmed.is_empty() {
            return Err(NameError::Empty);
        }
        if trimmed.chars().count() > MAX_NAME_CHARS {
            return Err(NameError::TooLong);
        }
        // Unicode line and paragraph separators break lines in some mail clients too.
        if trimmed
            .chars()
            .any(|c| c.is_control() || c == '\u{2028}' || c == '\u{2029}')
        {
            return Err(NameError::ControlCharacter);
        }
        Ok(Self(trimmed.to_owned()))
    }

    /// The name as stored and displayed.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for UserName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for UserName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_of_100_characters_is_accepted() {
        assert!(UserName::parse(&"é".repeat(100)).is_ok());
    }

    #[test]
    fn a_name_of_101_characters_is_rejected() {
        assert_eq!(UserName::parse(&"a".repeat(101)), Err(NameError::TooLong));
    }

    #[test]
    fn surrounding_whitespace_is_trimmed() {
        assert_eq!(UserName::parse("  Ada  ").unwrap().as_str(), "Ada");
    }

    #[test]
    fn a_blank_name_is_rejected() {
        assert_eq!(UserName::parse("   "), Err(NameError::Empty));
    }

    #[test]
    fn a_line_break_is_rejected() {
        assert_eq!(
            UserName::parse("Ada\r\nBcc: x@example.com"),
            Err(NameError::ControlCharacter)
        );
    }

    #[test]
    fn a_unicode_line_separator_is_rejected() {
        assert_eq!(
            UserName::parse("Ada\u{2028}Lovelace"),
            Err(NameError::ControlCharacter)
        );
    }

    #[test]
    fn html_is_kept_as_text_for_the_renderers_to_escape() {
        assert_eq!(
            UserName::parse("<b>Ada</b>").unwrap().as_str(),
            "<b>Ada</b>"
        );
    }
}
