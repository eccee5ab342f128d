//! Invocation envelopes and headers shaped as the Functions host builds them (docs/PROTOCOL.md),
//! so that tests and the benchmark speak to the handler as the host does.

use serde_json::{Map, Value, json};

use crate::HOST_VERSION;

/// The headers the host puts on every invocation request (besides Transfer-Encoding).
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

/// An HTTP-trigger envelope for a client request, shaped as the host builds it: `Data.req` with
/// `Headers` as arrays, `Query` as an object, `Body` a string and absent when there is none;
/// `Metadata` with headers as plain strings, top-level JSON body fields as JSON-encoded strings,
/// and `sys`.
pub fn http_invocation(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> Value {
    let parsed = url::Url::parse(url).expect("an absolute client URL");
    let mut query = Map::new();
    for (key, value) in parsed.query_pairs() {
        // The host comma-joins repeated keys.
        match query.get_mut(key.as_ref()) {
            Some(Value::String(existing)) => {
                existing.push(',');
                existing.push_str(&value);
            }
            _ => {
                query.insert(key.into_owned(), Value::String(value.into_owned()));
            }
        }
    }
    let host = parsed
        .host_str()
        .expect("a host in the client URL")
        .to_owned();
    let mut req_headers = Map::new();
    let mut meta_headers = Map::new();
    for (name, value) in headers
        .iter()
        .copied()
        .chain(std::iter::once(("Host", host.as_str())))
    {
        req_headers.insert(name.to_owned(), json!([value]));
        meta_headers.insert(name.to_owned(), json!(value));
    }
    let mut req = json!({
        "Url": url,
        "Method": method,
        "Query": query,
        "Headers": req_headers,
        "Params": {},
        "Identities": [
            {"AuthenticationType": null, "IsAuthenticated": false, "Claims": [], "Name": null}
        ],
    });
    if let Some(body) = body {
        req["Body"] = json!(body);
    }

    let function = parsed
        .path_segments()
        .and_then(|mut s| s.next())
        .filter(|s| !s.is_empty())
        .unwrap_or("root")
        .to_owned();
    let mut metadata = json!({
        "Query": query,
        "Headers": meta_headers,
        "sys": sys(&function),
    });
    if let Some(Ok(Value::Object(fields))) = body.map(serde_json::from_str::<Value>) {
        merge_fields(&mut metadata, &fields);
    }
    json!({"Data": {"req": req}, "Metadata": metadata})
}

/// A Service Bus trigger envelope for a queue message whose body is `body`: `Data.message` is the
/// body's JSON text JSON-encoded once more, `Metadata` scalars are JSON-encoded strings, and the
/// body's top-level fields are merged into `Metadata` (possibly over system keys).
pub fn service_bus_invocation(body: &Value, delivery_count: u32) -> Value {
    let body_text = serde_json::to_string(body).expect("serialize the message body");
    service_bus_invocation_of_text(&body_text, delivery_count)
}

/// Like [`service_bus_invocation`] for a body that is arbitrary text (possibly not JSON).
pub fn service_bus_invocation_of_text(body_text: &str, delivery_count: u32) -> Value {
    let message = serde_json::to_string(&Value::String(body_text.to_owned()))
        .expect("encode the message once more");
    // A redelivered message keeps its id: derive it from the body.
    let message_id = stable_id(body_text);
    let mut metadata = json!({
        "DeliveryCount": delivery_count.to_string(),
        "LockToken": json_string(&uuid::Uuid::new_v4().to_string()),
        "ExpiresAtUtc": "2024-10-24T17:05:01",
        "ExpiresAtUtcDateTimeOffset": "2024-10-24T17:05:01+00:00",
        "EnqueuedTimeUtc": "2024-10-24T17:00:01",
        "EnqueuedTimeUtcDateTimeOffset": "2024-10-24T17:00:01+00:00",
        "MessageId": json_string(&message_id),
        "ContentType": json_string("application/json"),
        "SequenceNumber": "42",
        "ApplicationProperties": "{}",
        "UserProperties": "{}",
        "sys": sys("sendOnboarding"),
    });
    if let Ok(Value::Object(fields)) = serde_json::from_str::<Value>(body_text) {
        merge_fields(&mut metadata, &fields);
    }
    json!({"Data": {"message": message}, "Metadata": metadata})
}

/// The `sys` object the host adds to every invocation's Metadata.
fn sys(function: &str) -> Value {
    json!({
        "MethodName": function,
        "UtcNow": "2024-10-24T17:00:02.1234567Z",
        "RandGuid": uuid::Uuid::new_v4().to_string(),
    })
}

/// Merges a JSON body's top-level fields into Metadata as JSON-encoded strings.
fn merge_fields(metadata: &mut Value, fields: &Map<String, Value>) {
    for (key, value) in fields {
        if value.is_null() {
            continue;
        }
        metadata[key.as_str()] = Value::String(value.to_string());
    }
}

fn json_string(text: &str) -> String {
    Value::String(text.to_owned()).to_string()
}

/// A deterministic UUID-shaped id (FNV-1a over the text, twice).
fn stable_id(text: &str) -> String {
    let fnv = |seed: u64| {
        text.bytes().fold(seed, |hash, b| {
            (hash ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3)
        })
    };
    let (a, b) = (fnv(0xcbf2_9ce4_8422_2325), fnv(0x8422_2325_cbf2_9ce4));
    uuid::Uuid::from_u64_pair(a, b).to_string()
}
