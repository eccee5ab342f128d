//! Building HTTP answers for the `res` output: JSON, RFC 9457 problem details, redirects, and
//! reading what the client sent.

use serde::Serialize;
use serde_json::{Value, json};

use crate::protocol::{HttpRequest, HttpResponse};

/// The media type of problem details (RFC 9457).
pub const PROBLEM_JSON: &str = "application/problem+json";

/// A JSON answer that no cache keeps (answers carry tokens and profiles).
pub fn json(status: u16, body: &impl Serialize) -> HttpResponse {
    HttpResponse::new(status, serde_json::to_string(body).unwrap_or_default())
        .header("Content-Type", "application/json; charset=utf-8")
        .header("Cache-Control", "no-store")
}

/// A problem details answer (`type`, `title`, `status`, `detail`, plus any extension members).
pub fn problem(
    status: u16,
    kind: &str,
    title: &str,
    detail: &str,
    extra: Option<Value>,
) -> HttpResponse {
    let mut body = json!({"type": kind, "title": title, "status": status, "detail": detail});
    if let (Some(Value::Object(extra)), Value::Object(map)) = (extra, &mut body) {
        map.extend(extra);
    }
    HttpResponse::new(status, body.to_string())
        .header("Content-Type", PROBLEM_JSON)
        .header("Cache-Control", "no-store")
}

/// Largest client body a function reads (a sign-up is well under 1 KiB).
pub const MAX_BODY_BYTES: usize = 16 * 1024;

/// 413 for a client body past what a function reads ([`MAX_BODY_BYTES`]).
pub fn content_too_large() -> HttpResponse {
    problem(
        413,
        "about:blank",
        "Content Too Large",
        &format!("The body must be at most {MAX_BODY_BYTES} bytes."),
        None,
    )
}

/// 503 for a backend that is down; the client may retry shortly.
pub fn unavailable(detail: &str) -> HttpResponse {
    problem(503, "about:blank", "Service Unavailable", detail, None).header("Retry-After", "5")
}

/// 500 for a fault of ours that a retry will not fix; details stay in the logs.
pub fn internal_error() -> HttpResponse {
    problem(
        500,
        "about:blank",
        "Internal Server Error",
        "Something went wrong on our side. It has been logged.",
        None,
    )
}

/// A redirect that browsers follow with GET.
pub fn redirect(status: u16, location: &str) -> HttpResponse {
    HttpResponse::new(status, "")
        .header("Location", location)
        .header("Cache-Control", "no-store")
}

/// The media type of the request body, lower-cased, without parameters.
pub fn media_type(request: &HttpRequest) -> Option<String> {
    request
        .headers
        .get("content-type")
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().to_ascii_lowercase())
        .filter(|v| !v.is_empty())
}

/// True for `application/json` and any `application/*+json`.
pub fn is_json(media_type: &str) -> bool {
    media_type == "application/json"
        || (media_type.starts_with("application/") && media_type.ends_with("+json"))
}

/// The token from `Authorization: Bearer <token>` (scheme matched case-insensitively).
pub fn bearer_token(request: &HttpRequest) -> Option<&str> {
    let value = request.headers.get("authorization")?.trim();
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::Headers;

    fn request(headers: &[(&str, &str)]) -> HttpRequest {
        HttpRequest {
            headers: Headers::from_pairs(headers.iter().copied()),
            ..HttpRequest::default()
        }
    }

    #[test]
    fn the_bearer_scheme_is_case_insensitive() {
        assert_eq!(
            bearer_token(&request(&[("AUTHORIZATION", "bearer abc")])),
            Some("abc")
        );
    }

    #[test]
    fn another_scheme_is_no_bearer_token() {
        assert_eq!(
            bearer_token(&request(&[("Authorization", "Basic abc")])),
            None
        );
    }

    #[test]
    fn media_type_parameters_are_ignored() {
        let req = request(&[("content-type", "Application/JSON; charset=utf-8")]);
        assert_eq!(media_type(&req).as_deref(), Some("application/json"));
        assert!(is_json("application/merge-patch+json"));
        assert!(!is_json("text/plain"));
    }

    #[test]
    fn problem_bodies_have_the_rfc_9457_members() {
        let res = problem(
            409,
            "about:blank",
            "Conflict",
            "taken",
            Some(json!({"field": "email"})),
        );
        let body: Value = serde_json::from_str(&res.body).unwrap();
        assert_eq!(body["status"], 409);
        assert_eq!(body["field"], "email");
        assert_eq!(res.headers["Content-Type"], PROBLEM_JSON);
    }
}
