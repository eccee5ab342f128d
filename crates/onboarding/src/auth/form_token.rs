//! The anti-forgery token of a state-changing form (OWASP's synchronizer token, keyed rather than
//! stored): HMAC-SHA256 under the JWT key over the form's purpose and the session token. It goes
//! in a hidden field of a page only the session's owner gets, so another site's form cannot know
//! it, and it needs no cookie of its own (the host sends at most one `Set-Cookie` per answer).
//! SameSite=Lax alone is not enough for a cross-site POST:
//! https://cheatsheetseries.owasp.org/cheatsheets/Cross-Site_Request_Forgery_Prevention_Cheat_Sheet.html

use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::config::{JwtSettings, expose};

type HmacSha256 = Hmac<Sha256>;

/// Signs and checks form tokens; the previous JWT key still checks during a rotation.
pub struct FormTokens {
    keys: Vec<Vec<u8>>,
}

impl FormTokens {
    /// Keys from the JWT settings.
    pub fn new(settings: &JwtSettings) -> Self {
        let mut keys = vec![expose(&settings.secret).as_bytes().to_vec()];
        if let Some(previous) = &settings.previous_secret {
            keys.push(expose(previous).as_bytes().to_vec());
        }
        Self { keys }
    }

    fn mac(key: &[u8], purpose: &str, session: &str) -> HmacSha256 {
        // Any key length is valid for HMAC; this cannot fail.
        let mut mac = match HmacSha256::new_from_slice(key) {
            Ok(mac) => mac,
            Err(_) => unreachable!("HMAC takes keys of any length"),
        };
        mac.update(b"form-token\x00");
        mac.update(purpose.as_bytes());
        mac.update(b"\x00");
        mac.update(session.as_bytes());
        mac
    }

    /// The hidden field's value for a form with this `purpose` shown to this session.
    pub fn issue(&self, purpose: &str, session: &str) -> String {
        let tag = Self::mac(&self.keys[0], purpose, session).finalize();
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(tag.into_bytes())
    }

    /// True when `given` is this session's token for `purpose` (compared in constant time).
    pub fn check(&self, purpose: &str, session: &str, given: &str) -> bool {
        let Ok(given) = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(given.trim())
        else {
            return false;
        };
        self.keys.iter().any(|key| {
            Self::mac(key, purpose, session)
                .verify_slice(&given)
                .is_ok()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::SecretString;
    use std::time::Duration;

    fn tokens(secret: &str) -> FormTokens {
        rotated(secret, None)
    }

    fn rotated(secret: &str, previous: Option<&str>) -> FormTokens {
        FormTokens::new(&JwtSettings {
            secret: SecretString::from(secret),
            previous_secret: previous.map(SecretString::from),
            ttl: Duration::from_secs(60),
            generated: false,
        })
    }

    const KEY: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";

    #[test]
    fn a_token_checks_for_its_session_and_purpose_only() {
        let tokens = tokens(KEY);
        let token = tokens.issue("resend", "session-1");
        assert!(tokens.check("resend", "session-1", &token));
        assert!(!tokens.check("resend", "session-2", &token));
        assert!(!tokens.check("sign-out", "session-1", &token));
    }

    #[test]
    fn a_token_from_another_key_or_garbage_does_not_check() {
        let other = tokens("bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb").issue("resend", "s");
        assert!(!tokens(KEY).check("resend", "s", &other));
        assert!(!tokens(KEY).check("resend", "s", "not base64!"));
        assert!(!tokens(KEY).check("resend", "s", ""));
    }

    #[test]
    fn the_previous_key_still_checks_during_a_rotation() {
        let old = tokens("bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb").issue("sign-out", "s");
        assert!(
            rotated(KEY, Some("bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"))
                .check("sign-out", "s", &old)
        );
    }
}
