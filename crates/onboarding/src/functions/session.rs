//! The browser session: the same JWT an API client gets, carried in a cookie that scripts cannot
//! read (HttpOnly), that other sites' forms do not send (SameSite=Lax), and that only travels over
//! https when the app is reached over https.

use std::time::Duration;

use crate::protocol::HttpRequest;

/// The cookie's name.
pub const COOKIE_NAME: &str = "session";

/// The session token from the `Cookie` header(s), if any.
pub fn cookie_token(request: &HttpRequest) -> Option<&str> {
    request
        .headers
        .get_all("cookie")
        .flat_map(|header| header.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE_NAME)
        .map(|(_, value)| value.trim().trim_matches('"'))
        .filter(|value| !value.is_empty())
}

/// True when the client reached the app over https (the host passes the original URL).
pub fn is_https(request: &HttpRequest) -> bool {
    request
        .url
        .get(..8)
        .is_some_and(|s| s.eq_ignore_ascii_case("https://"))
        || request
            .headers
            .get("x-forwarded-proto")
            .is_some_and(|p| p.eq_ignore_ascii_case("https"))
}

/// `Set-Cookie` for a new session lasting as long as its token.
pub fn set_cookie(token: &str, lifetime: Duration, secure: bool) -> String {
    format!(
        "{COOKIE_NAME}={token}; Max-Age={}; Path=/; HttpOnly; SameSite=Lax{}",
        lifetime.as_secs(),
        if secure { "; Secure" } else { "" }
    )
}

/// `Set-Cookie` that removes a session the server refused.
pub fn clear_cookie(secure: bool) -> String {
    format!(
        "{COOKIE_NAME}=; Max-Age=0; Path=/; HttpOnly; SameSite=Lax{}",
        if secure { "; Secure" } else { "" }
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::Headers;

    fn request(url: &str, cookie: &str) -> HttpRequest {
        HttpRequest {
            url: url.to_owned(),
            headers: Headers::from_pairs([("Cookie", cookie)]),
            ..HttpRequest::default()
        }
    }

    #[test]
    fn the_session_cookie_is_found_among_others() {
        let req = request("http://x/", "theme=dark; session=abc.def.ghi; lang=en");
        assert_eq!(cookie_token(&req), Some("abc.def.ghi"));
    }

    #[test]
    fn a_cookie_with_a_similar_name_is_not_the_session() {
        assert_eq!(cookie_token(&request("http://x/", "xsession=abc")), None);
    }

    #[test]
    fn the_cookie_is_secure_only_over_https() {
        assert!(is_https(&request("https://app.example.net/", "")));
        assert!(!is_https(&request("http://127.0.0.1:7071/", "")));
        let cookie = set_cookie("t", Duration::from_secs(3600), true);
        assert_eq!(
            cookie,
            "session=t; Max-Age=3600; Path=/; HttpOnly; SameSite=Lax; Secure"
        );
    }
}
