//! The handler's answer to one invocation, read as the Functions host reads it, with the
//! protocol's rules checked so a test fails where the host would.

use serde_json::Value;

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

    /// Reads the handler's HTTP response as the host does: status, `Content-Type`, body.
    pub async fn from_response(response: reqwest::Response) -> reqwest::Result<Self> {
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let text = response.text().await?;
        Ok(Self::from_parts(status, content_type, text))
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
    /// `statusCode`: what the client is answered.
    pub status_code: u16,
    headers: Vec<(String, String)>,
    /// `body`, as the client gets it (empty when absent).
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
