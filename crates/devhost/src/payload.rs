//! The invocation payloads exactly as the Functions host builds them (see docs/PROTOCOL.md): `Data.req`
//! and its `Metadata` for HTTP triggers, the doubly encoded body and JSON-encoded scalars for
//! Service Bus triggers, and the host's reading of Service Bus output values.

use serde_json::{Map, Value, json};
use time::OffsetDateTime;
use uuid::Uuid;

use super::lookup;
use super::queue::{Message, NewMessage};
use super::routes::RouteValues;
pub(crate) use super::timestamps::{dotnet_utc, to_the_second};

/// Content type the Service Bus output binding gives a message made from a JSON object: the
/// object is written as indented text, and sent as such.
pub(crate) const OBJECT_CONTENT_TYPE: &str = "text/plain";
/// What a Service Bus output string that happens to be valid base64 turns into (docs/PROTOCOL.md).
pub(crate) const BYTE_ARRAY_TEXT: &str = "System.Byte[]";

/// The `sys` entry of Metadata: which function, when, and a random id.
#[derive(Debug, Clone)]
pub(crate) struct Sys {
    pub method_name: String,
    pub utc_now: OffsetDateTime,
    pub rand_guid: Uuid,
}

impl Sys {
    /// `sys` for an invocation of `function` starting now.
    pub(crate) fn now(function: &str) -> Self {
        Self {
            method_name: function.to_owned(),
            utc_now: OffsetDateTime::now_utc(),
            rand_guid: Uuid::new_v4(),
        }
    }

    fn to_value(&self) -> Value {
        json!({
            "MethodName": self.method_name,
            "UtcNow": dotnet_utc(self.utc_now),
            "RandGuid": self.rand_guid.to_string(),
        })
    }
}

/// A client's HTTP request as the public side received it.
#[derive(Debug, Clone)]
pub(crate) struct IncomingRequest {
    pub method: String,
    /// The full original URL: scheme, `Host`, path and query.
    pub url: String,
    /// The query string without `?` (may be empty).
    pub raw_query: String,
    /// Header name/value pairs in arrival order; repeated names repeat.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl IncomingRequest {
    fn content_type(&self) -> Option<&str> {
        lookup::get_pair(&self.headers, "content-type").map(String::as_str)
    }

    /// The query as the host gives it: string → string, repeated keys comma-joined, names
    /// compared case-insensitively (first spelling kept).
    pub(crate) fn query(&self) -> Vec<(String, String)> {
        let mut query: Vec<(String, Vec<String>)> = Vec::new();
        for (key, value) in url::form_urlencoded::parse(self.raw_query.as_bytes()) {
            if key.is_empty() {
                continue;
            }
            match lookup::get_pair_mut(&mut query, &key) {
                Some(values) => values.push(value.into_owned()),
                None => query.push((key.into_owned(), vec![value.into_owned()])),
            }
        }
        query
            .into_iter()
            .map(|(k, values)| (k, values.join(",")))
            .collect()
    }

    /// Headers grouped by name (in Kestrel's canonical casing), values in order.
    pub(crate) fn grouped_headers(&self) -> Vec<(String, Vec<String>)> {
        let mut headers: Vec<(String, Vec<String>)> = Vec::new();
        for (name, value) in &self.headers {
            match lookup::get_pair_mut(&mut headers, name) {
                Some(values) => values.push(value.clone()),
                None => headers.push((canonical_header_name(name), vec![value.clone()])),
            }
        }
        headers
    }

    /// The request's `Content-Length`, when it declared one.
    fn content_length(&self) -> Option<u64> {
        lookup::get_pair(&self.headers, "content-length").and_then(|v| v.trim().parse().ok())
    }

    /// `Body` as the host sends it: present only when the request declared a `Content-Length`
    /// above 0 (a chunked request gets none, whatever it carried), base64 for octet-stream and
    /// multipart bodies (and, here, any body that is not UTF-8), else the text itself.
    pub(crate) fn body_value(&self) -> Option<Value> {
        if self.body.is_empty() || self.content_length().is_none_or(|n| n == 0) {
            return None;
        }
        let binary_type = self.content_type().is_some_and(|ct| {
            let media = ct.split(';').next().unwrap_or_default().trim();
            media.eq_ignore_ascii_case("application/octet-stream")
                || media.to_ascii_lowercase().contains("multipart/")
        });
        match std::str::from_utf8(&self.body) {
            Ok(text) if !binary_type => Some(Value::String(text.to_owned())),
            _ => Some(Value::String(base64_encode(&self.body))),
        }
    }
}

/// Kestrel keeps known header names in their canonical casing (`Content-Type`); hyper gives us
/// lower case, so each dash-separated word is capitalised.
fn canonical_header_name(name: &str) -> String {
    name.split('-')
        .map(|word| {
            let mut chars = word.chars();
            match chars.next() {
                Some(first) => {
                    first.to_ascii_uppercase().to_string() + &chars.as_str().to_ascii_lowercase()
                }
                None => String::new(),
            }
        })
        .collect::<Vec<_>>()
        .join("-")
}

/// The host's binding data: a dictionary whose keys compare case-insensitively.
#[derive(Debug, Default)]
struct BindingData(Vec<(String, Value)>);

impl BindingData {
    /// Sets a key, replacing any value under another spelling (the first spelling stays).
    fn set(&mut self, key: &str, value: Value) {
        match lookup::get_pair_mut(&mut self.0, key) {
            Some(v) => *v = value,
            None => self.0.push((key.to_owned(), value)),
        }
    }

    fn contains(&self, key: &str) -> bool {
        lookup::get_pair(&self.0, key).is_some()
    }

    /// Top-level fields of a JSON-object body, as the host's `ApplyBindingData` takes them:
    /// scalars JSON-encoded, objects as they are; arrays and nulls left out.
    fn apply_body(&mut self, text: &str) {
        let Ok(Value::Object(fields)) = serde_json::from_str::<Value>(text.trim()) else {
            return;
        };
        for (key, value) in fields {
            match value {
                Value::Null | Value::Array(_) => {}
                Value::Object(_) => self.set(&key, value),
                scalar => self.set(&key, Value::String(scalar.to_string())),
            }
        }
    }

    /// Metadata as sent: null values and keys ending in "trigger" are left out, `sys` added.
    fn into_metadata(self, sys: &Sys) -> Map<String, Value> {
        let mut metadata: Map<String, Value> = self
            .0
            .into_iter()
            .filter(|(k, v)| !v.is_null() && !k.to_ascii_lowercase().ends_with("trigger"))
            .collect();
        metadata.insert("sys".to_owned(), sys.to_value());
        metadata
    }
}

/// The JSON encoding the host gives scalar Metadata values (`"u1"` → `"\"u1\""`, 1 → `"1"`).
fn encoded(value: impl serde::Serialize) -> Value {
    Value::String(serde_json::to_string(&value).unwrap_or_default())
}

/// The envelope for an HTTP-triggered invocation: `{"Data": {trigger: req}, "Metadata": …}`.
pub(crate) fn http_envelope(
    trigger: &str,
    request: &IncomingRequest,
    params: &RouteValues,
    sys: &Sys,
) -> Value {
    let query = request.query();
    let headers = request.grouped_headers();
    let query_object: Map<String, Value> = query
        .iter()
        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
        .collect();
    let mut req = Map::new();
    req.insert("Url".into(), Value::String(request.url.clone()));
    req.insert("Method".into(), Value::String(request.method.clone()));
    req.insert("Query".into(), Value::Object(query_object.clone()));
    req.insert(
        "Headers".into(),
        Value::Object(headers.iter().map(|(k, v)| (k.clone(), json!(v))).collect()),
    );
    req.insert(
        "Params".into(),
        Value::Object(
            params
                .iter()
                .map(|(k, v)| (k.clone(), v.clone().map_or(Value::Null, Value::String)))
                .collect(),
        ),
    );
    req.insert(
        "Identities".into(),
        json!([{"AuthenticationType": null, "IsAuthenticated": false, "Claims": [], "Name": null}]),
    );
    if let Some(body) = request.body_value() {
        req.insert("Body".into(), body);
    }

    // The HTTP trigger's binding data, in the host's order: body fields, query values (but
    // `code`), route values, then the Query and Headers dictionaries unless a field took the name.
    let mut data = BindingData::default();
    if let Ok(text) = std::str::from_utf8(&request.body) {
        data.apply_body(text);
    }
    for (key, value) in &query {
        if !lookup::same(key, "code") {
            data.set(key, encoded(value));
        }
    }
    for (key, value) in params {
        data.set(key, value.as_ref().map_or(Value::Null, encoded));
    }
    if !data.contains("Query") {
        data.set("Query", Value::Object(query_object));
    }
    if !data.contains("Headers") {
        let plain: Map<String, Value> = headers
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(v.join(","))))
            .collect();
        data.set("Headers", Value::Object(plain));
    }
    let mut envelope_data = Map::new();
    envelope_data.insert(trigger.to_owned(), Value::Object(req));
    json!({"Data": envelope_data, "Metadata": data.into_metadata(sys)})
}

/// The envelope for one Service Bus delivery: the body JSON-encoded once more under the trigger's
/// name, and the message's properties as JSON-encoded scalars, body fields merged over them.
pub(crate) fn service_bus_envelope(trigger: &str, message: &Message, sys: &Sys) -> Value {
    let mut data = BindingData::default();
    data.set("DeliveryCount", encoded(message.delivery_count));
    data.set("LockToken", encoded(message.lock_token.to_string()));
    data.set(
        "ExpiresAtUtc",
        Value::String(to_the_second(message.expires_at)),
    );
    data.set(
        "EnqueuedTimeUtc",
        Value::String(to_the_second(message.enqueued_at)),
    );
    data.set("MessageId", encoded(&message.message_id));
    data.set(
        "ContentType",
        message.content_type.as_ref().map_or(Value::Null, encoded),
    );
    data.set("SequenceNumber", encoded(message.sequence_number));
    data.set("ApplicationProperties", json!({}));
    data.set("UserProperties", json!({}));
    data.apply_body(&message.body);

    let mut envelope_data = Map::new();
    // Once by the binding (a string value is JSON-encoded), once more by the envelope itself.
    envelope_data.insert(trigger.to_owned(), encoded(&message.body));
    json!({"Data": envelope_data, "Metadata": data.into_metadata(sys)})
}

/// The messages a Service Bus output value becomes, as the host reads it: an object is one
/// message (indented JSON, content type text/plain), an array one per element, a string that
/// holds a JSON array one per element too, a string that is valid base64 is decoded to bytes
/// (and so arrives as the text `System.Byte[]`), any other string is sent as it is.
pub(crate) fn messages_from_output(binding: &str, value: &Value) -> Vec<NewMessage> {
    match value {
        Value::Null => Vec::new(),
        Value::Array(items) => items.iter().filter_map(element_message).collect(),
        Value::String(text) if text.trim_start().starts_with('[') => {
            match serde_json::from_str::<Vec<Value>>(text) {
                Ok(items) => items.iter().filter_map(element_message).collect(),
                Err(_) => vec![NewMessage::text(text)],
            }
        }
        Value::String(text) if is_dotnet_base64(text) => {
            tracing::warn!(
                binding,
                "output {binding} is a string that is valid base64: the host decodes it to bytes \
                 and the message arrives as the text {BYTE_ARRAY_TEXT:?}; send a JSON object instead"
            );
            vec![NewMessage::text(BYTE_ARRAY_TEXT)]
        }
        other => element_message(other).into_iter().collect(),
    }
}

fn element_message(value: &Value) -> Option<NewMessage> {
    match value {
        Value::Null => None,
        Value::String(text) => Some(NewMessage::text(text)),
        Value::Object(_) | Value::Array(_) => Some(NewMessage {
            body: serde_json::to_string_pretty(value).unwrap_or_default(),
            content_type: Some(OBJECT_CONTENT_TYPE.to_owned()),
        }),
        scalar => Some(NewMessage::text(scalar.to_string())),
    }
}

/// `Convert.FromBase64String` would accept it: whitespace ignored, length a multiple of 4, the
/// standard alphabet, at most two `=` at the end. (The empty string is valid base64 too.)
pub(crate) fn is_dotnet_base64(text: &str) -> bool {
    let compact: Vec<u8> = text
        .bytes()
        .filter(|b| !matches!(b, b' ' | b'\t' | b'\r' | b'\n'))
        .collect();
    if !compact.len().is_multiple_of(4) {
        return false;
    }
    let padding = compact.iter().rev().take_while(|&&b| b == b'=').count();
    padding <= 2
        && compact[..compact.len() - padding]
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b'+' || *b == b'/')
}

/// Standard base64 with padding, as .NET's `Convert.ToBase64String`.
pub(crate) fn base64_encode(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    fn sys() -> Sys {
        Sys {
            method_name: "createUser".into(),
            utc_now: datetime!(2024-10-24 17:00:01.1234567 UTC),
            rand_guid: Uuid::nil(),
        }
    }

    fn request(method: &str, query: &str, headers: &[(&str, &str)], body: &str) -> IncomingRequest {
        IncomingRequest {
            method: method.into(),
            url: format!(
                "http://127.0.0.1:7071/createUser{}",
                if query.is_empty() {
                    String::new()
                } else {
                    format!("?{query}")
                }
            ),
            raw_query: query.into(),
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .chain(
                    (!body.is_empty()).then(|| ("content-length".into(), body.len().to_string())),
                )
                .collect(),
            body: body.as_bytes().to_vec(),
        }
    }

    #[test]
    fn a_chunked_request_gets_no_body_and_a_declared_one_does() {
        let mut r = request("POST", "", &[("transfer-encoding", "chunked")], "");
        r.body = b"{\"a\":1}".to_vec();
        let envelope = http_envelope("req", &r, &vec![], &sys());
        assert!(envelope["Data"]["req"].get("Body").is_none());
        r.headers.push(("Content-Length".into(), "7".into()));
        let envelope = http_envelope("req", &r, &vec![], &sys());
        assert_eq!(envelope["Data"]["req"]["Body"], json!("{\"a\":1}"));
        r.headers.pop();
        r.headers.push(("content-length".into(), "0".into()));
        assert!(
            http_envelope("req", &r, &vec![], &sys())["Data"]["req"]
                .get("Body")
                .is_none()
        );
    }

    #[test]
    fn a_request_without_body_has_no_body_key() {
        let envelope = http_envelope(
            "req",
            &request("GET", "", &[("host", "127.0.0.1:7071")], ""),
            &vec![],
            &sys(),
        );
        let req = &envelope["Data"]["req"];
        assert!(req.get("Body").is_none(), "{req}");
        assert_eq!(req["Method"], "GET");
        assert_eq!(req["Url"], "http://127.0.0.1:7071/createUser");
        assert_eq!(req["Params"], json!({}));
        assert_eq!(
            req["Identities"],
            json!([{"AuthenticationType": null, "IsAuthenticated": false, "Claims": [], "Name": null}])
        );
    }

    #[test]
    fn headers_are_arrays_under_canonical_names() {
        let r = request(
            "POST",
            "",
            &[
                ("content-type", "application/json"),
                ("x-thing", "a"),
                ("X-Thing", "b"),
            ],
            "{}",
        );
        let envelope = http_envelope("req", &r, &vec![], &sys());
        assert_eq!(
            envelope["Data"]["req"]["Headers"]["Content-Type"],
            json!(["application/json"])
        );
        assert_eq!(
            envelope["Data"]["req"]["Headers"]["X-Thing"],
            json!(["a", "b"])
        );
        assert_eq!(envelope["Metadata"]["Headers"]["X-Thing"], json!("a,b"));
    }

    #[test]
    fn the_body_is_a_string_never_parsed_json() {
        let body = r#"{"name":"Ada","age":36,"tags":["x"],"address":{"city":"L"},"none":null}"#;
        let envelope = http_envelope(
            "req",
            &request("POST", "", &[("content-type", "application/json")], body),
            &vec![],
            &sys(),
        );
        assert_eq!(envelope["Data"]["req"]["Body"], json!(body));
        // Metadata: scalars JSON-encoded, objects kept, arrays and nulls left out.
        let metadata = &envelope["Metadata"];
        assert_eq!(metadata["name"], json!("\"Ada\""));
        assert_eq!(metadata["age"], json!("36"));
        assert_eq!(metadata["address"], json!({"city": "L"}));
        assert!(metadata.get("tags").is_none());
        assert!(metadata.get("none").is_none());
    }

    #[test]
    fn a_binary_body_is_base64() {
        let mut r = request(
            "POST",
            "",
            &[("content-type", "application/octet-stream")],
            "",
        );
        r.body = vec![0, 1, 2, 255];
        r.headers.push(("content-length".into(), "4".into()));
        let envelope = http_envelope("req", &r, &vec![], &sys());
        assert_eq!(envelope["Data"]["req"]["Body"], json!("AAEC/w=="));
        let mut r = request("POST", "", &[("content-type", "text/plain")], "");
        r.body = vec![0xff, 0xfe];
        r.headers.push(("content-length".into(), "2".into()));
        assert_eq!(
            http_envelope("req", &r, &vec![], &sys())["Data"]["req"]["Body"],
            json!("//4=")
        );
    }

    #[test]
    fn repeated_query_keys_are_comma_joined() {
        let envelope = http_envelope(
            "req",
            &request("GET", "src=web&a=1&A=2&code=k", &[], ""),
            &vec![],
            &sys(),
        );
        assert_eq!(
            envelope["Data"]["req"]["Query"],
            json!({"src": "web", "a": "1,2", "code": "k"})
        );
        let metadata = &envelope["Metadata"];
        assert_eq!(
            metadata["Query"],
            json!({"src": "web", "a": "1,2", "code": "k"})
        );
        assert_eq!(metadata["src"], json!("\"web\""));
        assert!(metadata.get("code").is_none());
    }

    #[test]
    fn optional_route_values_are_null_in_params_and_absent_from_metadata() {
        let params = vec![
            ("ignored".to_owned(), None),
            ("id".to_owned(), Some("7".to_owned())),
        ];
        let envelope = http_envelope("req", &request("GET", "", &[], ""), &params, &sys());
        assert_eq!(
            envelope["Data"]["req"]["Params"],
            json!({"ignored": null, "id": "7"})
        );
        assert!(envelope["Metadata"].get("ignored").is_none());
        assert_eq!(envelope["Metadata"]["id"], json!("\"7\""));
    }

    #[test]
    fn metadata_carries_sys() {
        let envelope = http_envelope("req", &request("GET", "", &[], ""), &vec![], &sys());
        assert_eq!(
            envelope["Metadata"]["sys"],
            json!({"MethodName": "createUser", "UtcNow": "2024-10-24T17:00:01.1234567Z", "RandGuid": Uuid::nil().to_string()})
        );
    }

    fn message(body: &str) -> Message {
        Message {
            message_id: "9c0d2a3e1b7f4a518d0e2f1a3c4b5d6e".into(),
            sequence_number: 42,
            body: body.into(),
            content_type: Some("application/json".into()),
            enqueued_at: datetime!(2024-10-24 17:00:01.5 UTC),
            expires_at: datetime!(2024-11-07 17:00:01.5 UTC),
            delivery_count: 1,
            lock_token: Uuid::nil(),
        }
    }

    #[test]
    fn the_message_body_is_json_encoded_once_more() {
        let envelope = service_bus_envelope("message", &message(r#"{"userId":"u1"}"#), &sys());
        // After parsing the envelope: a string whose text is a JSON string literal of the body.
        let once: String = serde_json::from_value(envelope["Data"]["message"].clone()).unwrap();
        assert_eq!(once, r#""{\"userId\":\"u1\"}""#);
        let body: String = serde_json::from_str(&once).unwrap();
        assert_eq!(body, r#"{"userId":"u1"}"#);
        // And as the wire text docs/PROTOCOL.md shows.
        let wire = serde_json::to_string(&envelope["Data"]).unwrap();
        assert_eq!(wire, r#"{"message":"\"{\\\"userId\\\":\\\"u1\\\"}\""}"#);
    }

    #[test]
    fn message_metadata_scalars_are_json_encoded_strings() {
        let envelope = service_bus_envelope("message", &message(r#"{"userId":"u1"}"#), &sys());
        let m = &envelope["Metadata"];
        assert_eq!(m["DeliveryCount"], json!("1"));
        assert_eq!(
            m["MessageId"],
            json!("\"9c0d2a3e1b7f4a518d0e2f1a3c4b5d6e\"")
        );
        assert_eq!(m["SequenceNumber"], json!("42"));
        assert_eq!(m["EnqueuedTimeUtc"], json!("2024-10-24T17:00:01"));
        assert_eq!(m["ExpiresAtUtc"], json!("2024-11-07T17:00:01"));
        assert_eq!(m["ContentType"], json!("\"application/json\""));
        assert_eq!(m["UserProperties"], json!({}));
        assert_eq!(m["userId"], json!("\"u1\""));
        assert_eq!(m["sys"]["MethodName"], json!("createUser"));
    }

    #[test]
    fn null_metadata_is_left_out_and_body_fields_overwrite() {
        let mut msg = message(r#"{"MessageId":"mine","deliveryCount":7}"#);
        msg.content_type = None;
        let m = &service_bus_envelope("message", &msg, &sys())["Metadata"];
        assert!(m.get("ContentType").is_none());
        assert_eq!(m["MessageId"], json!("\"mine\""));
        assert_eq!(m["DeliveryCount"], json!("7"));
        assert!(
            m.get("deliveryCount").is_none(),
            "keys compare case-insensitively"
        );
    }

    #[test]
    fn an_object_output_is_one_indented_json_message_as_text_plain() {
        let messages = messages_from_output("o", &json!({"type": "user.created", "version": 1}));
        assert_eq!(messages.len(), 1);
        assert_eq!(
            messages[0].body,
            "{\n  \"type\": \"user.created\",\n  \"version\": 1\n}"
        );
        assert_eq!(
            messages[0].content_type.as_deref(),
            Some(OBJECT_CONTENT_TYPE)
        );
    }

    #[test]
    fn an_array_output_is_one_message_per_element() {
        let messages = messages_from_output("o", &json!([{"a": 1}, "plain text", 3, null]));
        let bodies: Vec<&str> = messages.iter().map(|m| m.body.as_str()).collect();
        assert_eq!(bodies, vec!["{\n  \"a\": 1\n}", "plain text", "3"]);
    }

    #[test]
    fn a_json_array_string_output_is_one_message_per_element() {
        let messages = messages_from_output("o", &json!(r#"[{"a":1},"two"]"#));
        let bodies: Vec<&str> = messages.iter().map(|m| m.body.as_str()).collect();
        assert_eq!(bodies, vec!["{\n  \"a\": 1\n}", "two"]);
        assert_eq!(
            messages_from_output("o", &json!("[not json"))[0].body,
            "[not json"
        );
    }

    #[test]
    fn a_base64_looking_string_becomes_bytes_as_the_host_does() {
        assert_eq!(
            messages_from_output("o", &json!("dGVzdA=="))[0].body,
            BYTE_ARRAY_TEXT
        );
        assert_eq!(
            messages_from_output("o", &json!("test"))[0].body,
            BYTE_ARRAY_TEXT
        );
        assert_eq!(
            messages_from_output("o", &json!("hello world"))[0].body,
            "hello world"
        );
        assert!(messages_from_output("o", &Value::Null).is_empty());
    }

    #[test]
    fn base64_follows_dotnet() {
        assert!(is_dotnet_base64(""));
        assert!(is_dotnet_base64("dGVz dA=="));
        assert!(!is_dotnet_base64("dGVzdA="));
        assert!(!is_dotnet_base64("dG=zdA=="));
        assert!(!is_dotnet_base64("{\"a\":1}"));
        assert_eq!(base64_encode(b""), "");
        assert_eq!(base64_encode(b"f"), "Zg==");
        assert_eq!(base64_encode(b"fo"), "Zm8=");
        assert_eq!(base64_encode(b"foo"), "Zm9v");
        assert_eq!(base64_encode(b"foobar"), "Zm9vYmFy");
    }
}
