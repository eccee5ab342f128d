//! Calling the handler as the Functions host does: the readiness ping, then `POST /<function>`
//! with the host's headers and a chunked JSON body, and reading the answer (only a 2xx counts).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::{Map, Value};
use uuid::Uuid;

use super::error::InvokeError;
use super::lookup;

/// The host version we claim in `X-Azure-Functions-HostVersion` and `User-Agent`.
pub const HOST_VERSION: &str = "4.1036.1.23224";
/// How often the host pings `GET /` while waiting for the handler to listen.
pub(crate) const READINESS_POLL: Duration = Duration::from_millis(25);
/// How long the host waits for the first answer before giving up on the handler.
pub(crate) const READINESS_TIMEOUT: Duration = Duration::from_secs(30);
/// Most of a handler's failing answer quoted in our log (the host discards it).
const ERROR_PREVIEW_CHARS: usize = 300;
/// How much longer than `functionTimeout` the host's HTTP client waits for the handler
/// (`DefaultHttpWorkerService.cs`), so the function timeout always fires first.
pub(crate) const CLIENT_TIMEOUT_MARGIN: Duration = Duration::from_secs(60);

/// A 2xx answer: `{"Outputs": {...}, "Logs": [...], "ReturnValue": ...}`.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Answer {
    pub outputs: Map<String, Value>,
    pub logs: Vec<String>,
    pub return_value: Value,
}

impl Answer {
    /// Reads an answer body; field names are matched case-insensitively (Newtonsoft does).
    pub(crate) fn from_slice(bytes: &[u8]) -> Result<Self, InvokeError> {
        let value: Value =
            serde_json::from_slice(bytes).map_err(|e| InvokeError::BadAnswer(e.to_string()))?;
        let Value::Object(root) = value else {
            return Err(InvokeError::BadAnswer("not a JSON object".to_owned()));
        };
        let field = |name: &str| lookup::get(&root, name).cloned();
        let outputs = match field("Outputs") {
            None | Some(Value::Null) => Map::new(),
            Some(Value::Object(map)) => map,
            Some(_) => {
                return Err(InvokeError::BadAnswer(
                    "Outputs is not an object".to_owned(),
                ));
            }
        };
        let logs = match field("Logs") {
            Some(Value::Array(lines)) => lines
                .into_iter()
                .map(|l| match l {
                    Value::String(s) => s,
                    other => other.to_string(),
                })
                .collect(),
            _ => Vec::new(),
        };
        Ok(Self {
            outputs,
            logs,
            return_value: field("ReturnValue").unwrap_or(Value::Null),
        })
    }

    /// An output binding's value: `Outputs.<name>` (exact name, as the host), or `ReturnValue`
    /// for `$return`.
    pub(crate) fn output(&self, name: &str) -> Option<&Value> {
        if name == "$return" {
            return Some(&self.return_value).filter(|v| !v.is_null());
        }
        self.outputs.get(name)
    }
}

/// An HTTP client for the handler on 127.0.0.1.
#[derive(Debug, Clone)]
pub(crate) struct HandlerClient {
    client: reqwest::Client,
    base: String,
    timeout: Option<Duration>,
}

impl HandlerClient {
    /// A client for the handler at `addr`; `timeout` bounds each invocation (`None`: no limit).
    pub(crate) fn new(addr: SocketAddr, timeout: Option<Duration>) -> Result<Self, InvokeError> {
        let client = reqwest::Client::builder()
            // The handler is on loopback: a proxy from the environment must not get in between.
            .no_proxy()
            .build()
            .map_err(|e| InvokeError::Transport(e.to_string()))?;
        Ok(Self {
            client,
            base: format!("http://{addr}"),
            timeout,
        })
    }

    /// The host's readiness check: `GET /` every `poll` until any HTTP answer, for at most `give_up`.
    pub(crate) async fn wait_until_ready(
        &self,
        poll: Duration,
        give_up: Duration,
    ) -> Result<(), InvokeError> {
        let started = Instant::now();
        loop {
            let attempt = self
                .client
                .get(format!("{}/", self.base))
                .timeout(poll.max(Duration::from_secs(1)))
                .send()
                .await;
            if attempt.is_ok() {
                return Ok(());
            }
            if started.elapsed() >= give_up {
                return Err(InvokeError::NotReady(give_up));
            }
            tokio::time::sleep(poll).await;
        }
    }

    /// `POST /<function>` with the envelope, as the host sends it.
    pub(crate) async fn invoke(
        &self,
        function: &str,
        invocation_id: Uuid,
        envelope: &Value,
    ) -> Result<Answer, InvokeError> {
        let bytes = Bytes::from(serde_json::to_vec(envelope).unwrap_or_default());
        // A stream body goes out chunked, without Content-Length: exactly like the host.
        let body =
            reqwest::Body::wrap_stream(futures_util::stream::iter([Ok::<_, std::io::Error>(
                bytes,
            )]));
        let mut request = self
            .client
            .post(format!("{}/{function}", self.base))
            .header("Content-Type", "application/json; charset=utf-8")
            .header("X-Azure-Functions-InvocationId", invocation_id.to_string())
            .header("X-Azure-Functions-HostVersion", HOST_VERSION)
            .header("User-Agent", format!("Azure-Functions-Host/{HOST_VERSION}"))
            .body(body);
        if let Some(timeout) = self.timeout {
            request = request.timeout(timeout);
        }
        let timeout = self.timeout.unwrap_or_default();
        let transport = |e: reqwest::Error| {
            if e.is_timeout() {
                InvokeError::Timeout(timeout)
            } else {
                InvokeError::Transport(error_chain(&e))
            }
        };
        let response = request.send().await.map_err(transport)?;
        let status = response.status();
        let content_type = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
        let body = response.bytes().await.map_err(transport)?;
        if !status.is_success() {
            return Err(InvokeError::Failed {
                status: status.as_u16(),
                body_preview: String::from_utf8_lossy(&body)
                    .chars()
                    .take(ERROR_PREVIEW_CHARS)
                    .collect(),
            });
        }
        let text = String::from_utf8_lossy(&body);
        if text.trim().is_empty() {
            return Err(InvokeError::NeverCompleted("an empty body"));
        }
        if !is_json(content_type.as_deref()) {
            return Err(InvokeError::NotJson(
                content_type.unwrap_or_else(|| "(none)".to_owned()),
            ));
        }
        if text.trim() == "null" {
            return Err(InvokeError::NeverCompleted("null"));
        }
        Answer::from_slice(&body)
    }
}

/// The media types the host's JSON formatter reads (`application/json`, `text/json`); without a
/// content type it finds no formatter at all.
fn is_json(content_type: Option<&str>) -> bool {
    content_type.is_some_and(|ct| {
        let media = ct.split(';').next().unwrap_or_default().trim();
        media.eq_ignore_ascii_case("application/json") || media.eq_ignore_ascii_case("text/json")
    })
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn an_answer_is_read_whatever_the_casing_of_its_fields() {
        let answer = Answer::from_slice(
            br#"{"outputs": {"res": {"statusCode": 200}}, "logs": ["a"], "returnValue": null}"#,
        )
        .unwrap();
        assert_eq!(answer.outputs["res"], json!({"statusCode": 200}));
        assert_eq!(answer.logs, vec!["a"]);
        assert_eq!(answer.output("$return"), None);
    }

    #[test]
    fn a_missing_outputs_section_is_empty_and_junk_is_refused() {
        assert!(Answer::from_slice(b"{}").unwrap().outputs.is_empty());
        assert!(matches!(
            Answer::from_slice(b"nope"),
            Err(InvokeError::BadAnswer(_))
        ));
        assert!(matches!(
            Answer::from_slice(b"[1]"),
            Err(InvokeError::BadAnswer(_))
        ));
    }

    /// Accepts one connection, returns the raw request text, and answers with `reply`.
    async fn raw_server(reply: &'static str) -> (SocketAddr, tokio::task::JoinHandle<String>) {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut request = Vec::new();
            let mut buf = [0u8; 4096];
            // A chunked body ends with the zero-length chunk.
            while !request.ends_with(b"0\r\n\r\n") {
                let n = socket.read(&mut buf).await.unwrap();
                assert!(
                    n > 0,
                    "the request ended early: {}",
                    String::from_utf8_lossy(&request)
                );
                request.extend_from_slice(&buf[..n]);
            }
            socket.write_all(reply.as_bytes()).await.unwrap();
            String::from_utf8(request).unwrap()
        });
        (addr, task)
    }

    #[tokio::test]
    async fn an_invocation_is_posted_chunked_with_the_hosts_headers() {
        let body = r#"{"Outputs":{"res":{"statusCode":204}},"Logs":[],"ReturnValue":null}"#;
        let reply: &'static str = Box::leak(
            format!("HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}", body.len())
                .into_boxed_str(),
        );
        let (addr, server) = raw_server(reply).await;
        let client = HandlerClient::new(addr, Some(Duration::from_secs(10))).unwrap();
        let id = Uuid::new_v4();

        let answer = client
            .invoke("createUser", id, &json!({"Data": {}, "Metadata": {}}))
            .await
            .unwrap();

        assert_eq!(answer.outputs["res"]["statusCode"], 204);
        let request = server.await.unwrap();
        let lower = request.to_ascii_lowercase();
        assert!(
            request.starts_with("POST /createUser HTTP/1.1\r\n"),
            "{request}"
        );
        assert!(lower.contains("transfer-encoding: chunked"), "{request}");
        assert!(!lower.contains("content-length"), "{request}");
        assert!(
            lower.contains("content-type: application/json; charset=utf-8"),
            "{request}"
        );
        assert!(
            lower.contains(&format!("x-azure-functions-invocationid: {id}")),
            "{request}"
        );
        assert!(lower.contains(
            &format!("x-azure-functions-hostversion: {HOST_VERSION}").to_ascii_lowercase()
        ));
        assert!(
            lower.contains("user-agent: azure-functions-host/"),
            "{request}"
        );
        assert!(
            request.contains(r#"{"Data":{},"Metadata":{}}"#),
            "{request}"
        );
    }

    #[tokio::test]
    async fn a_non_2xx_answer_fails_the_invocation() {
        let (addr, _server) =
            raw_server("HTTP/1.1 503 Service Unavailable\r\ncontent-length: 4\r\n\r\nbusy").await;
        let client = HandlerClient::new(addr, None).unwrap();
        let error = client
            .invoke("sendOnboarding", Uuid::new_v4(), &json!({}))
            .await
            .unwrap_err();
        assert!(
            matches!(error, InvokeError::Failed { status: 503, ref body_preview } if body_preview == "busy"),
            "{error:?}"
        );
    }

    #[tokio::test]
    async fn a_2xx_answer_must_be_json_and_an_empty_or_null_one_never_completes() {
        for (reply, expected) in [
            (
                "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 2\r\n\r\n{}",
                "NotJson",
            ),
            ("HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}", "NotJson"),
            (
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 0\r\n\r\n",
                "NeverCompleted",
            ),
            (
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 4\r\n\r\nnull",
                "NeverCompleted",
            ),
        ] {
            let (addr, _server) = raw_server(reply).await;
            let client = HandlerClient::new(addr, None).unwrap();
            let error = client
                .invoke("createUser", Uuid::new_v4(), &json!({}))
                .await
                .unwrap_err();
            assert!(
                format!("{error:?}").starts_with(expected),
                "{reply}: {error:?}"
            );
            assert_eq!(
                error.kills_the_handler(),
                expected == "NeverCompleted",
                "{reply}"
            );
        }
    }

    #[tokio::test]
    async fn readiness_waits_for_a_listener_and_gives_up_in_time() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let client = HandlerClient::new(addr, None).unwrap();
        let nobody = client
            .wait_until_ready(Duration::from_millis(25), Duration::from_millis(200))
            .await;
        assert!(matches!(nobody, Err(InvokeError::NotReady(_))));

        // Any answer counts, even a 404, and the listener may come up while we wait.
        let late = tokio::spawn(async move {
            use tokio::io::AsyncWriteExt as _;
            tokio::time::sleep(Duration::from_millis(100)).await;
            let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 1024];
            let _ = tokio::io::AsyncReadExt::read(&mut socket, &mut buf).await;
            socket
                .write_all(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n")
                .await
                .unwrap();
        });
        client
            .wait_until_ready(Duration::from_millis(25), Duration::from_secs(10))
            .await
            .unwrap();
        late.await.unwrap();
    }

    #[test]
    fn output_names_are_exact() {
        let answer = Answer::from_slice(br#"{"Outputs": {"onboardingmessage": {}}}"#).unwrap();
        assert!(answer.output("onboardingMessage").is_none());
    }
}
