//! The benchmark's invocations: test-support's host-shaped envelopes (see docs/PROTOCOL.md) for
//! the benchmark's site, and the sign-up and onboarding message it sends.

use serde_json::{Value, json};
use test_support::envelope::{http_invocation, service_bus_invocation};

/// The headers the host puts on every invocation (wrk adds Host and Content-Length).
pub use test_support::envelope::host_headers;

/// The public site the benchmark's clients are on.
const SITE: &str = "https://bench.example.net";

/// An HTTP-trigger envelope for a client request to `path` on the public site.
pub fn http(method: &str, path: &str, headers: &[(&str, &str)], body: Option<&str>) -> Value {
    http_invocation(method, &format!("{SITE}{path}"), headers, body)
}

/// A Service Bus trigger envelope carrying `body` (a JSON object) as the host first delivers
/// it.
pub fn service_bus(body: &Value) -> Value {
    service_bus_invocation(body, 1)
}

/// The onboarding message createUser emits, for a user id and email.
pub fn onboarding_message(user_id: &str, email: &str) -> Value {
    json!({
        "type": "user.created",
        "version": 1,
        "userId": user_id,
        "email": email,
        "name": "Bench User",
        "createdAt": "2026-01-01T00:00:00Z",
    })
}

/// A sign-up body.
pub fn sign_up_body(email: &str) -> String {
    json!({"name": "Bench User", "email": email, "password": PASSWORD}).to_string()
}

/// A sign-in body.
pub fn sign_in_body(email: &str, password: &str) -> String {
    json!({"email": email, "password": password}).to_string()
}

/// The password every benchmark user has.
pub const PASSWORD: &str = "correct horse battery staple";
