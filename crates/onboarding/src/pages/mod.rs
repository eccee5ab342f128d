//! The browser side: server-rendered pages with no script and no external asset. Every piece of
//! user text goes through [`escape`], and every page carries a strict Content-Security-Policy.

mod sign_in;
mod sign_up;
mod verify_email;
mod welcome;

use std::sync::LazyLock;

use base64::Engine as _;
use sha2::{Digest, Sha256};

use crate::protocol::{HttpRequest, HttpResponse};

pub use sign_in::{SignInForm, sign_in_page};
pub use sign_up::{SignUpForm, sign_up_page};
pub use verify_email::{VerifyPage, verify_page};
pub use welcome::{WelcomeForms, welcome_page};

/// The one stylesheet, inlined in every page and allowed by its hash (no `unsafe-inline`).
pub const STYLESHEET: &str = "\
:root{color-scheme:light;--ink:#1d2330;--muted:#5b6473;--accent:#2457d6;--bad:#b42318;--line:#d0d5dd}\
*{box-sizing:border-box}\
body{margin:0;padding:24px 16px;background:#f4f5f7;color:var(--ink);font:16px/1.5 system-ui,-apple-system,'Segoe UI',Roboto,sans-serif}\
main{max-width:440px;margin:0 auto;background:#fff;border-radius:10px;padding:28px 24px;box-shadow:0 1px 3px rgba(16,24,40,.1)}\
h1{font-size:24px;margin:0 0 8px}\
p.lead{color:var(--muted);margin:0 0 20px}\
label{display:block;font-weight:600;margin:16px 0 4px}\
input{width:100%;font:inherit;padding:10px 12px;border:1px solid var(--line);border-radius:6px}\
input:focus{outline:2px solid var(--accent);outline-offset:1px}\
input[aria-invalid=true]{border-color:var(--bad)}\
.hint{color:var(--muted);font-size:14px;margin:4px 0 0}\
.error{color:var(--bad);font-size:14px;margin:4px 0 0}\
.banner{border:1px solid var(--bad);color:var(--bad);background:#fef3f2;border-radius:6px;padding:10px 12px;margin:0 0 8px}\
a{color:var(--accent)}\
.hint a{font-weight:600}\
form.sign-out button{background:#fff;color:var(--accent);border:1px solid var(--line)}\
button{margin-top:24px;width:100%;font:inherit;font-weight:600;color:#fff;background:var(--accent);border:0;border-radius:6px;padding:12px}\
dl{display:grid;grid-template-columns:max-content 1fr;gap:8px 16px;margin:20px 0 0}\
dt{color:var(--muted)}dd{margin:0;overflow-wrap:anywhere}\
.status{display:inline-block;border-radius:999px;padding:0 10px;font-size:14px;font-weight:600}\
.status.pending{background:#fff4e5;color:#93370d}.status.sent{background:#ecfdf3;color:#05603a}.status.undeliverable{background:#fef3f2;color:var(--bad)}\
.status.verified{background:#ecfdf3;color:#05603a}.status.unverified{background:#fff4e5;color:#93370d}\
";

static CONTENT_SECURITY_POLICY: LazyLock<String> = LazyLock::new(|| {
    let hash = base64::engine::general_purpose::STANDARD.encode(Sha256::digest(STYLESHEET));
    format!(
        "default-src 'none'; style-src 'sha256-{hash}'; form-action 'self'; \
         base-uri 'none'; frame-ancestors 'none'"
    )
});

/// Escapes text for HTML element content and double-quoted attributes.
pub fn escape(text: &str) -> String {
    html_escape::encode_double_quoted_attribute(text).into_owned()
}

/// A whole page with the shared head, stylesheet and security headers.
pub fn page(status: u16, title: &str, body: &str) -> HttpResponse {
    let html = format!(
        "<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>{title}</title>\n<style>{STYLESHEET}</style>\n</head>\n<body>\n<main>\n{body}</main>\n</body>\n</html>\n",
        title = escape(title),
    );
    HttpResponse::new(status, html)
        .header("Content-Type", "text/html; charset=utf-8")
        .header("Content-Security-Policy", CONTENT_SECURITY_POLICY.as_str())
        .header("X-Content-Type-Options", "nosniff")
        .header("X-Frame-Options", "DENY")
        .header("Referrer-Policy", "no-referrer")
        .header("Cache-Control", "no-store")
}

/// True when the client ranks `text/html` above `application/json` in `Accept` (browsers do;
/// curl and API clients send `*/*` or ask for JSON, and get JSON).
pub fn prefers_html(request: &HttpRequest) -> bool {
    let accept: Vec<&str> = request.headers.get_all("accept").collect();
    let quality = |wanted: &str| -> f32 {
        accept
            .iter()
            .flat_map(|value| value.split(','))
            .filter_map(|range| {
                let mut parts = range.split(';');
                let media = parts.next()?.trim().to_ascii_lowercase();
                if media != wanted {
                    return None;
                }
                let q = parts
                    .filter_map(|p| p.trim().strip_prefix("q="))
                    .find_map(|q| q.trim().parse::<f32>().ok())
                    .unwrap_or(1.0);
                Some(q)
            })
            .fold(0.0, f32::max)
    };
    let html = quality("text/html");
    html > 0.0 && html > quality("application/json")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::Headers;

    fn accept(value: &str) -> HttpRequest {
        HttpRequest {
            headers: Headers::from_pairs([("Accept", value)]),
            ..HttpRequest::default()
        }
    }

    #[test]
    fn a_browser_prefers_html() {
        assert!(prefers_html(&accept(
            "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
        )));
    }

    #[test]
    fn curl_and_json_clients_do_not() {
        assert!(!prefers_html(&accept("*/*")));
        assert!(!prefers_html(&accept("application/json")));
        assert!(!prefers_html(&accept("application/json, text/html;q=0.5")));
        assert!(!prefers_html(&HttpRequest::default()));
    }

    #[test]
    fn pages_carry_a_strict_policy_that_allows_only_their_own_stylesheet() {
        let res = page(200, "t", "<p>x</p>");
        let csp = &res.headers["Content-Security-Policy"];
        assert!(csp.starts_with("default-src 'none'; style-src 'sha256-"));
        assert!(csp.contains("frame-ancestors 'none'"));
        assert_eq!(res.headers["X-Content-Type-Options"], "nosniff");
    }

    #[test]
    fn markup_and_quotes_are_escaped() {
        assert_eq!(escape("<b a=\"1\">&"), "&lt;b a=&quot;1&quot;&gt;&amp;");
    }
}
