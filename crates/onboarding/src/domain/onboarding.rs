//! Where a user's onboarding email stands: on its way, handed to the SMTP server, or refused for
//! good by the receiving side (with that server's own words, so a person can act on them).

use serde::{Deserialize, Serialize};

/// The longest reply text kept from a refusing server: enough for the enhanced status code and
/// the reason, short enough that a chatty server cannot bloat the marker or the profile.
pub const MAX_REFUSAL_TEXT: usize = 300;

/// The status word of the profile's `onboarding` member (docs/openapi.json, `Profile`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnboardingStatus {
    Pending,
    Sent,
    Undeliverable,
}

/// Why the email can never reach this user: the SMTP reply that refused it for good. `code` is
/// absent when the refusal came from our side before any server spoke (an address the email
/// library cannot write into a message).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refusal {
    pub code: Option<u16>,
    /// The server's reply text (its enhanced status code and reason), trimmed to
    /// `MAX_REFUSAL_TEXT` characters when built with [`Refusal::new`], as everything stored is;
    /// the mail layer hands it over whole, so the recipient's address can be taken out first.
    pub reply: String,
}

impl Refusal {
    /// A refusal with its reply text cut to a bounded length on a character boundary.
    pub fn new(code: Option<u16>, reply: &str) -> Self {
        let reply = reply.trim();
        let reply = match reply.char_indices().nth(MAX_REFUSAL_TEXT) {
            Some((cut, _)) => &reply[..cut],
            None => reply,
        };
        Self {
            code,
            reply: reply.to_owned(),
        }
    }
}

/// The onboarding state with what each state carries: the store's answer about one user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Onboarding {
    Pending,
    Sent,
    Undeliverable(Refusal),
}

impl Onboarding {
    /// The status word alone.
    pub fn status(&self) -> OnboardingStatus {
        match self {
            Self::Pending => OnboardingStatus::Pending,
            Self::Sent => OnboardingStatus::Sent,
            Self::Undeliverable(_) => OnboardingStatus::Undeliverable,
        }
    }

    /// The refusal, when the email can never be delivered.
    pub fn refusal(&self) -> Option<&Refusal> {
        match self {
            Self::Undeliverable(refusal) => Some(refusal),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_reply_is_cut_on_a_character_boundary() {
        let long = "é".repeat(MAX_REFUSAL_TEXT + 10);
        let refusal = Refusal::new(Some(550), &long);
        assert_eq!(refusal.reply.chars().count(), MAX_REFUSAL_TEXT);
    }

    #[test]
    fn the_status_word_of_an_undeliverable_email_is_undeliverable() {
        let state = Onboarding::Undeliverable(Refusal::new(Some(550), "5.1.1 unknown"));
        assert_eq!(state.status(), OnboardingStatus::Undeliverable);
        assert_eq!(
            serde_json::to_value(state.status()).unwrap(),
            serde_json::json!("undeliverable")
        );
    }
}
