//! The anti-forgery token of a signed-in page's forms (sign-out): an HMAC of the session token
//! under the JWT key, put in the form as a hidden field (OWASP's synchronizer token pattern).
//! Another site can make a browser post the form with its cookie (SameSite=Lax allows top-level
//! navigations, and covers the whole site, not one origin), but cannot read the page, so it
//! cannot know the token. It needs no second cookie (an answer can set only one) and no state:
//! <https://cheatsheetseries.owasp.org/cheatsheets/Cross-Site_Request_Forgery_Prevention_Cheat_Sheet.html>.

use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::config::{JwtSettings, expose};

/// What the MAC covers before the session token: a JWT's signing input is base64url, which has
/// no `|`, so no form token can ever equal a JWT signature made with the same key.
const LABEL: &[u8] = b"form|";

/// Makes and checks form tokens; the current key makes them, and the previous one (during a
/// rotation) still checks them.
pub struct FormTokens {
    keys: Vec<Hmac<Sha256>>,
}

impl FormTokens {
    /// Keys from the JWT settings.
    pub fn new(settings: &JwtSettings) -> Self {
        let secrets = std::iter::once(&settings.secret).chain(&settings.previous_secret);
        let keys = secrets
            .filter_map(|secret| Hmac::<Sha256>::new_from_slice(expose(secret).as_bytes()).ok())
            .collect();
        Self { keys }
    }

    /// The token for forms shown to the holder of `session`.
    pub fn for_session(&self, session: &str) -> String {
        self.keys
            .first()
            .map(|key| {
                let tag = Self::mac(key, session).finalize().into_bytes();
                base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(tag)
            })
            .unwrap_or_default()
    }

    /// True when `given` is the token of `session` under any key (compared in constant time).
    pub fn check(&self, session: &str, given: &str) -> bool {
        let Ok(tag) = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(given.trim()) else {
            return false;
        };
        self.keys
            .iter()
            .any(|key| Self::mac(key, session).verify_slice(&tag).is_ok())
    }

    fn mac(key: &Hmac<Sha256>, session: &str) -> Hmac<Sha256> {
        let mut mac = key.clone();
        mac.update(LABEL);
        mac.update(session.as_bytes());
        mac
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use secrecy::SecretString;

    use super::*;

    fn tokens(secret: &str, previous: Option<&str>) -> FormTokens {
        FormTokens::new(&JwtSettings {
            secret: SecretString::from(secret),
            previous_secret: previous.map(SecretString::from),
            ttl: Duration::from_secs(3600),
            generated: false,
        })
    }

    const A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const B: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

    #[test]
    fn a_sessions_own_token_is_accepted() {
        let keys = tokens(A, None);
        let token = keys.for_session("session-1");
        assert!(keys.check("session-1", &token));
    }

    #[test]
    fn another_sessions_token_is_refused() {
        let keys = tokens(A, None);
        assert!(!keys.check("session-2", &keys.for_session("session-1")));
    }

    #[test]
    fn an_empty_or_garbled_token_is_refused() {
        let keys = tokens(A, None);
        assert!(!keys.check("session-1", ""));
        assert!(!keys.check("session-1", "not base64 !"));
        let mut token = keys.for_session("session-1");
        token.replace_range(..1, if token.starts_with('A') { "B" } else { "A" });
        assert!(!keys.check("session-1", &token));
    }

    #[test]
    fn a_token_made_with_another_key_is_refused_and_the_previous_key_still_checks() {
        let old = tokens(B, None).for_session("s");
        assert!(!tokens(A, None).check("s", &old));
        assert!(tokens(A, Some(B)).check("s", &old));
    }
}
