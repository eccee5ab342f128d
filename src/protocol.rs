//! The custom-handler wire protocol: the invocation envelope the host POSTs to `/<function>`,
//! decoded leniently (the host's shapes vary by trigger and version), and the answer it expects.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::{Map, Value};

/// Header carrying the host's id for one invocation; it ties our log lines to the host's.
pub const INVOCATION_ID_HEADER: &str = "x-azure-functions-invocationid";

/// Why an envelope cannot be read at all; the host sent something we do not understand, so the
/// invocation fails rather than guessing.
#[derive(Debug, thiserror::Error)]
pub enum EnvelopeError {
    #[error("invocation body is not JSON: {0}")]
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

/// One invocation as the host sends it: `{"Data": {...}, "Metadata": {...}}`.
#[derive(Debug, Clone, Default)]
pub struct Invocation {
    /// The host's invocation id, from the request header (absent outside the host).
    pub id: Option<String>,
    /// Trigger and input bindings by name.
    pub data: Map<String, Value>,
    /// Informational extras whose shapes vary; never required.
    pub metadata: Map<String, Value>,
}

impl Invocation {
    /// Decodes an envelope. `Data` and `Metadata` may be missing or null (both are treated as empty)
    /// and keys are matched case-insensitively, as the host's JSON serializer is not consistent.
    pub fn from_slice(bytes: &[u8], id: Option<String>) -> Result<Self, EnvelopeError> {
        let value: Value = serde_json::from_slice(bytes).map_err(EnvelopeError::NotJson)?;
        let Value::Object(mut root) = value else {
            return Err(EnvelopeError::NotAnObject);
        };
        let mut take = |name: &str| {
            let key = root.keys().find(|k| k.eq_ignore_ascii_case(name)).cloned();
            match key.and_then(|k| root.remove(&k)) {
                Some(Value::Object(map)) => map,
                _ => Map::new(),
            }
        };
        let data = take("Data");
        let metadata = take("Metadata");
        Ok(Self { id, data, metadata })
    }

    /// A trigger or input binding by name (exact first, then case-insensitive).
    pub fn binding(&self, name: &str) -> Result<&Value, EnvelopeError> {
        self.data
            .get(name)
            .or_else(|| {
                self.data
                    .iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case(name))
                    .map(|(_, v)| v)
            })
            .ok_or_else(|| EnvelopeError::MissingBinding(name.to_owned()))
    }

    /// The HTTP request of an HTTP-triggered invocation.
    pub fn http_request(&self, binding: &str) -> Result<HttpRequest, EnvelopeError> {
        HttpRequest::from_binding(binding, self.binding(binding)?)
    }

    /// The body of a Service Bus message, decoded from the host's extra JSON encoding.
    pub fn service_bus_body(&self, binding: &str) -> Result<Value, EnvelopeError> {
        decode_message_body(self.binding(binding)?).map_err(|why| EnvelopeError::NotAMessage {
            binding: binding.to_owned(),
            why,
        })
    }

    /// A Metadata scalar as text. The host JSON-encodes scalars once more (`"\"9c0d…\""`, `"1"`),
    /// so a string holding a JSON string literal is unwrapped; anything else is taken as it is.
    pub fn metadata_text(&self, key: &str) -> Option<String> {
        let value = self
            .metadata
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v)?;
        match value {
            Value::String(s) => match serde_json::from_str::<Value>(s) {
                Ok(Value::String(inner)) => Some(inner),
                _ => Some(s.clone()),
            },
            Value::Null => None,
            other => Some(other.to_string()),
        }
    }
}

/// Decodes a Service Bus message body: normally a JSON string whose text is a JSON string literal
/// whose text is the body; also accepted, for robustness, an object as it is or a string holding
/// the object directly.
pub fn decode_message_body(value: &Value) -> Result<Value, String> {
    let mut current = value.clone();
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

/// Request headers with case-insensitive lookup; the host sends each value as an array.
#[derive(Debug, Clone, Default)]
pub struct Headers(Vec<(String, Vec<String>)>);

impl Headers {
    /// The first value of a header, whatever the casing of its name.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .and_then(|(_, values)| values.first())
            .map(String::as_str)
    }

    /// Every value of a header (repeated headers, or one comma-joined value), in order.
    pub fn get_all(&self, name: &str) -> impl Iterator<Item = &str> {
        self.0
            .iter()
            .filter(move |(k, _)| k.eq_ignore_ascii_case(name))
            .flat_map(|(_, values)| values.iter().map(String::as_str))
    }

    /// How many distinct header names the request carried.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when the request had no headers.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Builds headers from name/value pairs (tests and the dev host).
    pub fn from_pairs<I, K, V>(pairs: I) -> Self
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        let mut headers: Vec<(String, Vec<String>)> = Vec::new();
        for (k, v) in pairs {
            let k = k.into();
            match headers.iter_mut().find(|(n, _)| n.eq_ignore_ascii_case(&k)) {
                Some((_, values)) => values.push(v.into()),
                None => headers.push((k, vec![v.into()])),
            }
        }
        Self(headers)
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

impl HttpRequest {
    fn from_binding(binding: &str, value: &Value) -> Result<Self, EnvelopeError> {
        let fail = |why| EnvelopeError::NotAnHttpRequest {
            binding: binding.to_owned(),
            why,
        };
        let Value::Object(req) = value else {
            return Err(fail("it is not an object"));
        };
        let field = |name: &str| {
            req.iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v)
        };
        let method = match field("Method") {
            Some(Value::String(m)) => m.to_ascii_uppercase(),
            _ => return Err(fail("it has no Method")),
        };
        let url = match field("Url") {
            Some(Value::String(u)) => u.clone(),
            _ => String::new(),
        };
        let query = match field("Query") {
            Some(Value::Object(map)) => map
                .iter()
                .map(|(k, v)| (k.clone(), scalar_text(v)))
                .collect(),
            // Older hosts sent the query as a string.
            Some(Value::String(q)) => {
                url::form_urlencoded::parse(q.trim_start_matches('?').as_bytes())
                    .map(|(k, v)| (k.into_owned(), v.into_owned()))
                    .collect()
            }
            _ => BTreeMap::new(),
        };
        let headers = match field("Headers") {
            Some(Value::Object(map)) => Headers(
                map.iter()
                    .map(|(k, v)| {
                        let values = match v {
                            Value::Array(items) => items.iter().map(scalar_text).collect(),
                            other => vec![scalar_text(other)],
                        };
                        (k.clone(), values)
                    })
                    .collect(),
            ),
            _ => Headers::default(),
        };
        let params = match field("Params") {
            Some(Value::Object(map)) => map
                .iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k.clone(), scalar_text(v)))
                .collect(),
            _ => BTreeMap::new(),
        };
        let body = match field("Body") {
            None | Some(Value::Null) => None,
            Some(Value::String(text)) => Some(text.clone()),
            // Some host versions hand over a JSON body already parsed.
            Some(other) => Some(other.to_string()),
        };
        Ok(Self {
            method,
            url,
            query,
            headers,
            params,
            body,
        })
    }
}

/// A JSON scalar as text: strings as they are, arrays comma-joined, others as JSON.
fn scalar_text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        Value::Array(items) => items.iter().map(scalar_text).collect::<Vec<_>>().join(","),
        other => other.to_string(),
    }
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

/// The answer to the host: `{"Outputs": {...}, "Logs": [...], "ReturnValue": null}`.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct InvocationResponse {
    pub outputs: Map<String, Value>,
    pub logs: Vec<String>,
    /// Always null: none of our functions binds `$return`.
    pub return_value: Option<Value>,
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
            decode_message_body(&json!({"a": 1})).unwrap(),
            json!({"a": 1})
        );
        assert_eq!(
            decode_message_body(&json!("{\"a\":1}")).unwrap(),
            json!({"a": 1})
        );
    }

    #[test]
    fn a_message_that_is_not_json_is_an_error() {
        assert!(decode_message_body(&json!("hello")).is_err());
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
    fn the_answer_uses_the_hosts_field_names() {
        let answer = InvocationResponse::default();
        assert_eq!(
            serde_json::to_value(&answer).unwrap(),
            json!({"Outputs": {}, "Logs": [], "ReturnValue": null})
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
