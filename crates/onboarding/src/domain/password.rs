//! A password as typed at sign-up; it is hashed at once and never stored or logged.

use secrecy::{ExposeSecret, SecretString};

/// Shortest password accepted, in characters.
pub const MIN_PASSWORD_CHARS: usize = 8;
/// Longest password accepted, in characters: long passphrases are welcome, megabytes are not
/// (the hash cost grows with the input).
pub const MAX_PASSWORD_CHARS: usize = 128;

/// Why a password was refused; the text never repeats the password.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PasswordError {
    #[error("must be at least {MIN_PASSWORD_CHARS} characters")]
    TooShort,
    #[error("must be at most {MAX_PASSWORD_CHARS} characters")]
    TooLong,
}

/// A password of 8 to 128 characters whose `Debug` output is redacted.
#[derive(Debug)]
pub struct Password(SecretString);

impl Password {
    /// Checks the length rules; the input is kept exactly as typed (spaces count).
    pub fn parse(input: &str) -> Result<Self, PasswordError> {
        let chars = input.chars().count();
        if chars < MIN_PASSWORD_CHARS {
            return Err(PasswordError::TooShort);
        }
        if chars > MAX_PASSWORD_CHARS {
            return Err(PasswordError::TooLong);
        }
        Ok(Self(SecretString::from(input)))
    }

    /// The password's bytes, for the hasher only.
    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eight_characters_are_accepted() {
        assert!(Password::parse("12345678").is_ok());
    }

    #[test]
    fn seven_characters_are_rejected() {
        assert_eq!(
            Password::parse("1234567").unwrap_err(),
            PasswordError::TooShort
        );
    }

    #[test]
    fn characters_not_bytes_are_counted() {
        assert!(Password::parse("éééééééé").is_ok());
    }

    #[test]
    fn one_hundred_twenty_eight_characters_are_accepted() {
        assert!(Password::parse(&"p".repeat(128)).is_ok());
    }

    #[test]
    fn one_hundred_twenty_nine_characters_are_rejected() {
        assert_eq!(
            Password::parse(&"p".repeat(129)).unwrap_err(),
            PasswordError::TooLong
        );
    }

    #[test]
    fn debug_output_hides_the_password() {
        let password = Password::parse("correct horse battery").unwrap();
        assert!(!format!("{password:?}").contains("horse"));
    }
}
