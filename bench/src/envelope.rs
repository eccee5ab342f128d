//! Invocation envelopes shaped as the Functions host sends them (see docs/PROTOCOL.md and
//! tests/api/helpers/envelope.rs): `Data.req` for HTTP triggers, a twice-encoded `Data.message`
//! for Service Bus, and Metadata with its JSON-encoded scalars.

use serde_json::{Map, Value, json};

/// The host version the requests claim to come from: the dev host's own, so they never drift.
pub use test_support::HOST_VERSION;

/// The headers the host puts on every invocation (wrk adds Host and Content-Length).
pub fn host_headers() -> Vec<(&'static str, String)> {
    vec![
        ("Content-Type", "application/json; charset=utf-8".to_owned()),
        (
            "X-Azure-Functions-InvocationId",
            uuid::Uuid::new_v4().to_string(),
        ),
        ("X-Azure-Functions-HostVersion", HOST_VERSION.to_owned()),
        ("User-Agent", format!("Azure-Functions-Host/{HOST_VERSION}")),
    ]
}

/// An HTTP-trigger envelope for a client request to `path` on the public site.
pub fn http(method: &str, path: &str, headers: &[(&str, &str)], body: Option<&str>) -> Value {
    let url = format!("https://bench.example.net{path}");
    let mut req_headers = Map::new();
    let mut meta_headers = Map::new();
    for (name, value) in headers
        .iter()
        .copied()
        .chain(std::iter::once(("Host", "bench.example.net")))
    {
        req_headers.insert(name.to_owned(), json!([value]));
        meta_headers.insert(name.to_owned(), json!(value));
    }
    let function = path
        .trim_start_matches('/')
        .split(['/', '?'])
        .next()
        .filter(|s| !s.is_empty())
        .unwrap_or("root");
    let mut req = json!({
        "Url": url,
        "Method": method,
        "Query": {},
        "Headers": req_headers,
        "Params": if function == "root" { json!({"ignored": null}) } else { json!({}) },
        "Identities": [
            {"AuthenticationType": null, "IsAuthenticated": false, "Claims": [], "Name": null}
        ],
    });
    if let Some(body) = body {
        req["Body"] = json!(body);
    }
    let mut metadata = json!({"Query": {}, "Headers": meta_headers, "sys": sys(function)});
    if let Some(Ok(Value::Object(fields))) = body.map(serde_json::from_str::<Value>) {
        for (key, value) in fields {
            metadata[key.as_str()] = Value::String(value.to_string());
        }
    }
    json!({"Data": {"req": req}, "Metadata": metadata})
}

/// A Service Bus trigger envelope carrying `body` (a JSON object) as the host delivers it.
pub fn service_bus(body: &Value) -> Value {
    let text = body.to_string();
    let message = Value::String(text.clone()).to_string();
    let mut metadata = json!({
        "DeliveryCount": "1",
        "LockToken": Value::String(uuid::Uuid::new_v4().to_string()).to_string(),
        "EnqueuedTimeUtc": "2024-10-24T17:00:01",
        "MessageId": Value::String(uuid::Uuid::new_v4().simple().to_string()).to_string(),
        "ContentType": "\"application/json\"",
        "SequenceNumber": "42",
        "ApplicationProperties": "{}",
        "UserProperties": "{}",
        "sys": sys("sendOnboarding"),
    });
    if let Value::Object(fields) = body {
        for (key, value) in fields {
            metadata[key.as_str()] = Value::String(value.to_string());
        }
    }
    json!({"Data": {"message": message}, "Metadata": metadata})
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

/// The password every benchmark user has.
pub const PASSWORD: &str = "correct horse battery staple";

fn sys(function: &str) -> Value {
    json!({
        "MethodName": function,
        "UtcNow": "2024-10-24T17:00:02.1234567Z",
        "RandGuid": uuid::Uuid::new_v4().to_string(),
    })
}
