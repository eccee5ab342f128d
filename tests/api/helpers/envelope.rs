//! The Functions host's side of the protocol (docs/PROTOCOL.md): invocation envelopes as the host
//! builds them, and the handler's answer as the host reads it.

use std::time::Duration;

use serde_json::{Map, Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The host version the requests claim to come from: the dev host's own, so they never drift.
pub use devhost::client::HOST_VERSION;

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

/// The handler's answer to one invocation, as the host reads it.
#[derive(Clone, Debug)]
pub struct InvocationAnswer {
    /// The HTTP status the handler answered the host with.
    pub host_status: u16,
    /// The `Content-Type` of that answer.
    pub host_content_type: Option<String>,
    /// The raw answer body.
    pub raw_body: String,
    /// `Outputs` (`Value::Null` when the answer was not a JSON envelope).
    pub outputs: Value,
    /// `Logs`.
    pub logs: Vec<String>,
    /// `Outputs.res`, when present.
    pub res: Option<Res>,
}

impl InvocationAnswer {
    /// Reads the answer; panics when `Outputs.res` breaks the protocol (see [`Res::from_output`]).
    pub fn from_parts(
        host_status: u16,
        host_content_type: Option<String>,
        raw_body: String,
    ) -> Self {
        let envelope: Value = serde_json::from_str(&raw_body).unwrap_or(Value::Null);
        let outputs = envelope.get("Outputs").cloned().unwrap_or(Value::Null);
        let logs = envelope
            .get("Logs")
            .and_then(Value::as_array)
            .map(|lines| {
                lines
                    .iter()
                    .map(|l| l.as_str().map_or_else(|| l.to_string(), str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        let res = outputs.get("res").map(Res::from_output);
        Self {
            host_status,
            host_content_type,
            raw_body,
            outputs,
            logs,
            res,
        }
    }

    /// Whether the host would count the invocation as a success (2xx).
    pub fn host_ok(&self) -> bool {
        (200..300).contains(&self.host_status)
    }

    /// Asserts the answer is what the host needs: 2xx, `application/json`, and
    /// `{"Outputs": {...}, "Logs": [...], "ReturnValue": null}`.
    pub fn assert_host_ok(&self) -> &Self {
        assert!(
            self.host_ok(),
            "expected a 2xx answer to the host, got {}: {}",
            self.host_status,
            self.raw_body
        );
        let content_type = self.host_content_type.as_deref().unwrap_or("");
        assert!(
            content_type
                .to_ascii_lowercase()
                .starts_with("application/json"),
            "the answer to the host must be application/json, got {content_type:?}"
        );
        let envelope: Value = serde_json::from_str(&self.raw_body)
            .unwrap_or_else(|e| panic!("the answer is not JSON ({e}): {}", self.raw_body));
        assert!(
            envelope["Outputs"].is_object(),
            "Outputs must be an object: {envelope}"
        );
        assert!(
            envelope["Logs"].is_array(),
            "Logs must be an array: {envelope}"
        );
        assert!(
            envelope.get("ReturnValue").is_some_and(Value::is_null),
            "ReturnValue must be present and null: {envelope}"
        );
        self
    }

    /// Asserts the host would fail the invocation (non-2xx).
    pub fn assert_host_failed(&self) -> &Self {
        assert!(
            !self.host_ok(),
            "expected a non-2xx answer to the host, got {}: {}",
            self.host_status,
            self.raw_body
        );
        self
    }

    /// Asserts a 2xx envelope and returns `Outputs.res`.
    pub fn res(&self) -> &Res {
        self.assert_host_ok();
        self.res
            .as_ref()
            .unwrap_or_else(|| panic!("no Outputs.res in the answer: {}", self.raw_body))
    }

    /// Whether `Outputs` has this key at all.
    pub fn has_output(&self, name: &str) -> bool {
        self.outputs.get(name).is_some()
    }
}

/// `Outputs.res`: the HTTP response the host sends to the client.
#[derive(Clone, Debug)]
pub struct Res {
    pub status_code: u16,
    headers: Vec<(String, String)>,
    pub body: String,
}

impl Res {
    /// Reads `Outputs.res`, holding the handler to the contract: `statusCode` a number, header
    /// values strings, `body` a string.
    fn from_output(res: &Value) -> Self {
        let status_code = res
            .get("statusCode")
            .and_then(Value::as_u64)
            .and_then(|s| u16::try_from(s).ok())
            .unwrap_or_else(|| panic!("Outputs.res.statusCode must be a number: {res}"));
        let headers = match res.get("headers") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Object(map)) => map
                .iter()
                .map(|(name, value)| {
                    let value = value.as_str().unwrap_or_else(|| {
                        panic!("Outputs.res.headers.{name} must be a string: {res}")
                    });
                    (name.clone(), value.to_owned())
                })
                .collect(),
            Some(other) => panic!("Outputs.res.headers must be an object, got {other}"),
        };
        let body = match res.get("body") {
            None | Some(Value::Null) => String::new(),
            Some(Value::String(body)) => body.clone(),
            Some(other) => panic!("Outputs.res.body must be a string, got {other}"),
        };
        Self {
            status_code,
            headers,
            body,
        }
    }

    /// A header's value, name matched case-insensitively.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body parsed as JSON; panics with the body when it is not JSON.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("res.body is not JSON ({e}): {}", self.body))
    }

    /// Asserts the status code, showing the whole response when it differs.
    pub fn assert_status(&self, expected: u16) -> &Self {
        assert_eq!(
            self.status_code, expected,
            "unexpected res.statusCode; res: {self:#?}"
        );
        self
    }

    /// Asserts an RFC 9457 problem: `application/problem+json` with `type`, `title`, `status`
    /// (equal to the status code) and `detail`; returns the body.
    pub fn assert_problem(&self, status: u16) -> Value {
        self.assert_status(status);
        let content_type = self.header("Content-Type").unwrap_or("");
        assert!(
            content_type
                .to_ascii_lowercase()
                .starts_with("application/problem+json"),
            "errors must be application/problem+json, got {content_type:?}"
        );
        let problem = self.json();
        for field in ["type", "title", "detail"] {
            assert!(
                problem[field].is_string(),
                "problem details need a string `{field}`: {problem}"
            );
        }
        assert_eq!(problem["status"], status, "problem `status`: {problem}");
        problem
    }
}

/// Sends a hand-written HTTP/1.1 request over raw TCP with the body in `chunks`, chunked and
/// without Content-Length, as the host does, and reads the answer.
pub async fn post_chunked_over_raw_tcp(port: u16, path: &str, chunks: &[&str]) -> InvocationAnswer {
    let exchange = async {
        let mut stream = TcpStream::connect(("127.0.0.1", port))
            .await
            .expect("connect to the handler");
        let mut request = format!("POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n");
        for (name, value) in host_headers() {
            request.push_str(&format!("{name}: {value}\r\n"));
        }
        request.push_str("Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n");
        stream
            .write_all(request.as_bytes())
            .await
            .expect("write head");
        for chunk in chunks {
            let framed = format!("{:x}\r\n{chunk}\r\n", chunk.len());
            stream
                .write_all(framed.as_bytes())
                .await
                .expect("write chunk");
            stream.flush().await.expect("flush chunk");
        }
        stream
            .write_all(b"0\r\n\r\n")
            .await
            .expect("write last chunk");
        let mut response = Vec::new();
        stream
            .read_to_end(&mut response)
            .await
            .expect("read the response");
        response
    };
    let response = tokio::time::timeout(Duration::from_secs(30), exchange)
        .await
        .expect("the raw chunked request was not answered within 30 s");
    parse_raw_response(&response)
}

fn parse_raw_response(response: &[u8]) -> InvocationAnswer {
    let split = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| {
            panic!(
                "no end of headers in the response: {}",
                String::from_utf8_lossy(response)
            )
        });
    let head = String::from_utf8_lossy(&response[..split]);
    let body = &response[split + 4..];
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in the response: {head}"));
    let header = |wanted: &str| {
        head.lines().skip(1).find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.trim()
                .eq_ignore_ascii_case(wanted)
                .then(|| value.trim().to_owned())
        })
    };
    let chunked =
        header("Transfer-Encoding").is_some_and(|te| te.to_ascii_lowercase().contains("chunked"));
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_vec()
    };
    InvocationAnswer::from_parts(
        status,
        header("Content-Type"),
        String::from_utf8_lossy(&body).into_owned(),
    )
}

fn dechunk(mut rest: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    loop {
        let line_end = rest
            .windows(2)
            .position(|w| w == b"\r\n")
            .expect("a chunk size line");
        let size_line = String::from_utf8_lossy(&rest[..line_end]);
        let size = usize::from_str_radix(size_line.split(';').next().unwrap_or("").trim(), 16)
            .expect("a hex chunk size");
        if size == 0 {
            return body;
        }
        let data = &rest[line_end + 2..];
        body.extend_from_slice(&data[..size]);
        rest = &data[size + 2..];
    }
}
