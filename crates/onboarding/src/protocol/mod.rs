//! The custom-handler wire protocol: the invocation envelope the host POSTs to `/<function>`,
//! decoded leniently (the host's shapes vary by trigger and version), and the answer it expects.

mod wire;

use std::collections::BTreeMap;

use serde::Serialize;
use serde::ser::SerializeMap;
use serde_json::Value;
use serde_json::value::RawValue;

use wire::{Envelope, Informational, RawObject, WireRequest};

/// Header carrying the host's id for one invocation; it ties our log lines to the host's.
pub const INVOCATION_ID_HEADER: &str = "x-azure-functions-invocationid";

/// Why an envelope cannot be read at all; the host sent something we do not understand, so the
/// invocation fails rather than guessing.
#[derive(Debug, thiserror::Error)]
pub enum EnvelopeError {
    /// Not JSON, or JSON of the wrong shape (`Data` not an object, nesting past serde_json's
    /// depth limit).
    #[error("invocation envelope is unreadable: {0}")]
    NotJson(#[source] serde_json::Error),
    #[error("invocation body is not a JSON object")]
    NotAnObject,
    #[error("invocation has no Data.{0} binding")]
    MissingBinding(String),
    #[error("Data.{binding} is not an HTTP request: {why}")]
    NotAnHttpRequest { binding: String, why: &'static str },
    #[error("Data.{binding} is not a message body: {why}")]
    NotAMessage { binding: String, why: String },
}

/// One invocation as the host sends it: `{"Data": {...}, "Metadata": {...}}`. Bindings and
/// Metadata stay raw JSON until a function asks for them, each decoded straight into its type.
#[derive(Debug, Default)]
pub struct Invocation {
    /// The host's invocation id, from the request header (absent outside the host).
    pub id: Option<String>,
    /// Trigger and input bindings by name.
    data: RawObject,
    /// Informational extras whose shapes vary; never required, read only when asked for.
    metadata: Option<Box<RawValue>>,
}

impl Invocation {
    /// Decodes an envelope. `Data` and `Metadata` may be missing or null (both are treated as empty)
    /// and keys are matched case-insensitively, as the host's JSON serializer is not consistent.
    /// `Data` of another shape is refused; `Metadata` of another shape is ignored.
    pub fn from_slice(bytes: &[u8], id: Option<String>) -> Result<Self, EnvelopeError> {
        let starts_as_object = bytes
            .iter()
            .find(|b| !b.is_ascii_whitespace())
            .is_some_and(|&b| b == b'{');
        if !starts_as_object {
            // Tell "not JSON" from "JSON, but not an object".
            return Err(
                match serde_json::from_slice::<serde::de::IgnoredAny>(bytes) {
                    Ok(_) => EnvelopeError::NotAnObject,
                    Err(e) => EnvelopeError::NotJson(e),
                },
            );
        }
        let Envelope { data, metadata } =
            serde_json::from_slice(bytes).map_err(EnvelopeError::NotJson)?;
        Ok(Self { id, data, metadata })
    }

    /// A trigger or input binding's raw JSON by name (exact first, then case-insensitive).
    fn binding(&self, name: &str) -> Result<&str, EnvelopeError> {
        self.data
            .get(name)
            .map(RawValue::get)
            .ok_or_else(|| EnvelopeError::MissingBinding(name.to_owned()))
    }

    /// The HTTP request of an HTTP-triggered invocation.
    pub fn http_request(&self, binding: &str) -> Result<HttpRequest, EnvelopeError> {
        let WireRequest(request) =
            serde_json::from_str(self.binding(binding)?).map_err(EnvelopeError::NotJson)?;
        request.map_err(|why| EnvelopeError::NotAnHttpRequest {
            binding: binding.to_owned(),
            why,
        })
    }

    /// The body of a Service Bus message, decoded from the host's extra JSON encoding.
    pub fn service_bus_body(&self, binding: &str) -> Result<Value, EnvelopeError> {
        let value: Value =
            serde_json::from_str(self.binding(binding)?).map_err(EnvelopeError::NotJson)?;
        decode_message_body(value).map_err(|why| EnvelopeError::NotAMessage {
            binding: binding.to_owned(),
            why,
        })
    }

    /// A Metadata scalar as text; Metadata is parsed on each call (one call per invocation
    /// today). The host JSON-encodes scalars once more (`"\"9c0d…\""`, `"1"`),
    /// so a string holding a JSON string literal is unwrapped; anything else is taken as it is.
    pub fn metadata_text(&self, key: &str) -> Option<String> {
        let Informational(metadata) = serde_json::from_str(self.metadata.as_deref()?.get()).ok()?;
        let raw = metadata.get(key)?;
        match serde_json::from_str::<Value>(raw.get()).ok()? {
            Value::String(s) => match serde_json::from_str::<Value>(&s) {
                Ok(Value::String(inner)) => Some(inner),
                _ => Some(s),
            },
            Value::Null => None,
            other => Some(other.to_string()),
        }
    }
}

/// Decodes a Service Bus message body: normally a JSON string whose text is a JSON string literal
/// whose text is the body; also accepted, for robustness, an object as it is or a string holding
/// the object directly.
pub fn decode_message_body(value: Value) -> Result<Value, String> {
    let mut current = value;
    // At most two layers of string encoding are peeled: the host's and the binding's.
    for _ in 0..3 {
        match current {
            Value::String(text) => {
                current = serde_json::from_str(&text).map_err(|e| {
                    format!(
                        "the message text is not JSON ({e}), starting {:?}",
                        preview(&text)
                    )
                })?;
            }
            other => return Ok(other),
        }
    }
    Err("the message is encoded as a string too many times".to_owned())
}

fn preview(text: &str) -> String {
    text.chars().take(40).collect()
}

/// Request headers with case-insensitive lookup: one (name, value) pair per value, in the order
/// the host sent them (it sends each header's values as an array).
#[derive(Debug, Clone, Default)]
pub struct Headers(Vec<(String, String)>);

impl Headers {
    /// The first value of a header, whatever the casing of its name.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.get_all(name).next()
    }

    /// Every value of a header (repeated headers, or one comma-joined value), in order.
    pub fn get_all(&self, name: &str) -> impl Iterator<Item = &str> {
        self.0
            .iter()
            .filter(move |(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }

    /// Builds headers from name/value pairs (tests and the dev host).
    pub fn from_pairs<I, K, V>(pairs: I) -> Self
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        Self(
            pairs
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        )
    }
}

/// The `Data.req` of an HTTP trigger.
#[derive(Debug, Clone, Default)]
pub struct HttpRequest {
    pub method: String,
    /// The original URL as the client used it (scheme and host included).
    pub url: String,
    pub query: BTreeMap<String, String>,
    pub headers: Headers,
    pub params: BTreeMap<String, String>,
    /// The body text; `None` when the request had no body (the host then omits the key).
    pub body: Option<String>,
}

/// The HTTP output binding (`Outputs.res`): the status, headers and exact body the client gets.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct HttpResponse {
    pub status_code: u16,
    pub headers: BTreeMap<String, String>,
    pub body: String,
}

impl HttpResponse {
    /// A response with no headers yet.
    pub fn new(status_code: u16, body: impl Into<String>) -> Self {
        Self {
            status_code,
            headers: BTreeMap::new(),
            body: body.into(),
        }
    }

    /// Adds or replaces a header.
    pub fn header(mut self, name: &str, value: impl Into<String>) -> Self {
        self.headers.insert(name.to_owned(), value.into());
        self
    }
}

/// The answer to the host: `{"Outputs": {...}, "Logs": [...], "ReturnValue": null}`, written
/// straight from the typed outputs.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct InvocationResponse<'a> {
    pub outputs: &'a OutputBindings,
    pub logs: &'a [String],
    /// Always null: none of our functions binds `$return`.
    pub return_value: (),
}

/// The output bindings of one invocation: the HTTP answer (if the function has one) and queue
/// messages, each under its binding name.
#[derive(Debug, Default)]
pub struct OutputBindings {
    /// The `res` binding's name and value.
    pub http: Option<(&'static str, HttpResponse)>,
    /// Queue messages by binding name; each is a JSON object (the host mangles strings).
    pub messages: Vec<(String, Value)>,
}

impl Serialize for OutputBindings {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        if let Some((binding, response)) = &self.http {
            map.serialize_entry(binding, response)?;
        }
        for (binding, message) in &self.messages {
            map.serialize_entry(binding, message)?;
        }
        map.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn http_envelope() -> Vec<u8> {
        json!({
            "Data": {"req": {
                "Url": "https://app.example.net/createUser?src=web", "Method": "POST",
                "Query": {"src": "web"},
                "Headers": {"content-type": ["application/json"], "Authorization": ["Bearer abc"]},
                "Params": {"ignored": null}, "Identities": [],
                "Body": "{\"name\":\"Ada\"}"
            }},
            "Metadata": {"sys": {"MethodName": "createUser"}}
        })
        .to_string()
        .into_bytes()
    }

    #[test]
    fn headers_are_found_whatever_their_casing() {
        let inv = Invocation::from_slice(&http_envelope(), None).unwrap();
        let req = inv.http_request("req").unwrap();
        assert_eq!(req.headers.get("Content-Type"), Some("application/json"));
        assert_eq!(req.headers.get("authorization"), Some("Bearer abc"));
    }

    #[test]
    fn the_body_stays_text_and_null_params_are_dropped() {
        let inv = Invocation::from_slice(&http_envelope(), None).unwrap();
        let req = inv.http_request("req").unwrap();
        assert_eq!(req.body.as_deref(), Some("{\"name\":\"Ada\"}"));
        assert!(req.params.is_empty());
        assert_eq!(req.query["src"], "web");
    }

    #[test]
    fn an_absent_body_is_none() {
        let envelope =
            json!({"Data": {"req": {"Method": "GET", "Url": "http://x/", "Headers": {}}}});
        let inv = Invocation::from_slice(envelope.to_string().as_bytes(), None).unwrap();
        assert_eq!(inv.http_request("req").unwrap().body, None);
    }

    #[test]
    fn a_query_string_from_an_older_host_is_parsed() {
        let envelope = json!({"Data": {"req": {"Method": "GET", "Query": "?a=1&b=two"}}});
        let inv = Invocation::from_slice(envelope.to_string().as_bytes(), None).unwrap();
        assert_eq!(inv.http_request("req").unwrap().query["b"], "two");
    }

    #[test]
    fn a_double_encoded_message_is_decoded() {
        let body = json!({"userId": "u1"}).to_string();
        let once = serde_json::to_string(&body).unwrap();
        let envelope = json!({"Data": {"message": once}, "Metadata": {"DeliveryCount": "2", "MessageId": "\"9c0d\""}});
        let inv = Invocation::from_slice(envelope.to_string().as_bytes(), None).unwrap();
        assert_eq!(
            inv.service_bus_body("message").unwrap(),
            json!({"userId": "u1"})
        );
        assert_eq!(inv.metadata_text("deliverycount").as_deref(), Some("2"));
        assert_eq!(inv.metadata_text("MessageId").as_deref(), Some("9c0d"));
    }

    #[test]
    fn a_message_as_a_plain_object_or_single_string_is_accepted() {
        assert_eq!(
            decode_message_body(json!({"a": 1})).unwrap(),
            json!({"a": 1})
        );
        assert_eq!(
            decode_message_body(json!("{\"a\":1}")).unwrap(),
            json!({"a": 1})
        );
    }

    #[test]
    fn a_message_that_is_not_json_is_an_error() {
        assert!(decode_message_body(json!("hello")).is_err());
    }

    #[test]
    fn a_missing_data_section_is_an_empty_map() {
        let inv = Invocation::from_slice(b"{}", None).unwrap();
        assert!(matches!(
            inv.http_request("req"),
            Err(EnvelopeError::MissingBinding(_))
        ));
    }

    #[test]
    fn keys_in_any_case_and_scalar_shapes_are_accepted() {
        let envelope = json!({"data": {"REQ": {
            "method": "get", "url": "http://x/?a=1",
            "query": {"n": 5, "flag": true, "empty": null},
            "headers": {"X-One": "single", "X-Num": 42, "X-Many": ["a", "b"]},
            "params": {"id": 7, "rest": null},
            "body": {"already": "parsed"},
            "Identities": [{"AuthenticationType": null}]
        }}, "metadata": null});
        let inv = Invocation::from_slice(envelope.to_string().as_bytes(), None).unwrap();
        let req = inv.http_request("req").unwrap();
        assert_eq!(req.method, "GET");
        assert_eq!(req.url, "http://x/?a=1");
        assert_eq!(
            (&req.query["n"], &req.query["flag"], &req.query["empty"]),
            (&"5".to_owned(), &"true".to_owned(), &String::new())
        );
        assert_eq!(req.headers.get("x-one"), Some("single"));
        assert_eq!(req.headers.get("x-num"), Some("42"));
        assert_eq!(
            req.headers.get_all("x-many").collect::<Vec<_>>(),
            ["a", "b"]
        );
        assert_eq!(req.params.len(), 1);
        assert_eq!(req.params["id"], "7");
        assert_eq!(req.body.as_deref(), Some(r#"{"already":"parsed"}"#));
        assert_eq!(inv.metadata_text("anything"), None);
    }

    #[test]
    fn a_request_that_is_not_an_object_or_has_no_method_is_named() {
        for req in [
            json!("text"),
            json!([1, 2]),
            json!(null),
            json!({"Url": "http://x/"}),
        ] {
            let envelope = json!({"Data": {"req": req}});
            let inv = Invocation::from_slice(envelope.to_string().as_bytes(), None).unwrap();
            assert!(
                matches!(
                    inv.http_request("req"),
                    Err(EnvelopeError::NotAnHttpRequest { .. })
                ),
                "{envelope}"
            );
        }
    }

    #[test]
    fn an_envelope_must_be_a_json_object() {
        assert!(matches!(
            Invocation::from_slice(b" [1, 2]", None),
            Err(EnvelopeError::NotAnObject)
        ));
        assert!(matches!(
            Invocation::from_slice(b"{\"Data\": ", None),
            Err(EnvelopeError::NotJson(_))
        ));
        assert!(matches!(
            Invocation::from_slice(b"not json", None),
            Err(EnvelopeError::NotJson(_))
        ));
    }

    #[test]
    fn null_sections_read_as_empty_and_other_metadata_is_ignored() {
        let inv = Invocation::from_slice(br#"{"Data": null, "Metadata": [1], "Other": {}}"#, None)
            .unwrap();
        assert!(matches!(
            inv.http_request("req"),
            Err(EnvelopeError::MissingBinding(_))
        ));
        assert_eq!(inv.metadata_text("DeliveryCount"), None);
    }

    #[test]
    fn data_that_is_not_an_object_is_refused() {
        for data in ["[1]", "\"req\"", "7"] {
            let envelope = format!(r#"{{"Data": {data}}}"#);
            assert!(
                matches!(
                    Invocation::from_slice(envelope.as_bytes(), None),
                    Err(EnvelopeError::NotJson(_))
                ),
                "{envelope}"
            );
        }
    }

    #[test]
    fn the_answer_uses_the_hosts_field_names() {
        let outputs = OutputBindings::default();
        let answer = InvocationResponse {
            outputs: &outputs,
            logs: &[],
            return_value: (),
        };
        assert_eq!(
            serde_json::to_value(&answer).unwrap(),
            json!({"Outputs": {}, "Logs": [], "ReturnValue": null})
        );
    }

    #[test]
    fn outputs_hold_the_http_answer_and_messages_by_binding() {
        let outputs = OutputBindings {
            http: Some(("res", HttpResponse::new(201, "{}"))),
            messages: vec![("msg".to_owned(), json!({"userId": "u1"}))],
        };
        let answer = InvocationResponse {
            outputs: &outputs,
            logs: &["a line".to_owned()],
            return_value: (),
        };
        assert_eq!(
            serde_json::to_value(&answer).unwrap(),
            json!({
                "Outputs": {
                    "res": {"statusCode": 201, "headers": {}, "body": "{}"},
                    "msg": {"userId": "u1"},
                },
                "Logs": ["a line"],
                "ReturnValue": null,
            })
        );
    }

    #[test]
    fn the_http_output_has_a_numeric_status_code() {
        let res = HttpResponse::new(302, "").header("Location", "/createUser");
        assert_eq!(
            serde_json::to_value(&res).unwrap(),
            json!({"statusCode": 302, "headers": {"Location": "/createUser"}, "body": ""})
        );
    }
}
