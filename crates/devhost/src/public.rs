//! The public HTTP side of the dev host: one catch-all warp filter that routes by the functions'
//! templates, turns each request into the host's invocation, and maps the handler's answer back
//! as the host does. Also `/_dev/queues`, to look into the in-process bus, `/_dev/handler`,
//! to see which handler is serving, and `/_dev/faults`, to make output-binding sends fail.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use futures_util::{Stream, StreamExt as _};
use serde_json::{Value, json};
use warp::Filter;
use warp::http::{HeaderMap, HeaderValue, Method, Response, StatusCode};

use super::front_end;
use super::function_json::{FunctionDef, Trigger};
use super::http_output::empty;
use super::invoke::Invoker;
use super::lifecycle::HandlerStatus;
use super::payload::{self, IncomingRequest, Sys};
use super::queue::{Bus, NewMessage};
use super::routes::{RouteMatch, Router};

/// Largest request body accepted: the Functions host's default `maxRequestBodySize` (100 MB).
pub(crate) const MAX_REQUEST_BODY: usize = 104_857_600;
/// Path under which the dev host serves its own endpoints, before any function route.
pub(crate) const DEV_PATH: &str = "/_dev/";

/// Everything the public side needs to answer a request.
pub(crate) struct PublicState {
    pub router: Router,
    pub functions: BTreeMap<String, FunctionDef>,
    pub invoker: Arc<Invoker>,
    pub bus: Arc<Bus>,
    /// The public listener's address, for URLs when a request has no `Host`.
    pub local_addr: SocketAddr,
    pub handler: HandlerView,
}

/// Where the handler runs, as `GET /_dev/handler` shows it.
pub(crate) struct HandlerView {
    /// True when the handler runs inside the dev host (then `pid` is the dev host's own).
    pub in_process: bool,
    pub addr: SocketAddr,
    pub status: tokio::sync::watch::Receiver<HandlerStatus>,
}

impl HandlerView {
    /// `{"mode", "pid", "restarts", "ready", "state", "url"}`.
    pub(crate) fn snapshot(&self) -> Value {
        let status = *self.status.borrow();
        json!({
            "mode": if self.in_process { "in-process" } else { "process" },
            "pid": status.pid,
            "restarts": status.restarts,
            "ready": status.state == super::lifecycle::HandlerState::Ready,
            "state": status.state.as_str(),
            "url": format!("http://{}", self.addr),
        })
    }
}

/// Any method, any path: the whole public surface as one filter.
pub(crate) fn filter(
    state: Arc<PublicState>,
) -> impl Filter<Extract = (Response<Bytes>,), Error = warp::Rejection> + Clone + Send + Sync + 'static
{
    let query = warp::query::raw().or(warp::any().map(String::new)).unify();
    warp::any()
        .and(warp::method())
        .and(warp::path::full())
        .and(query)
        .and(warp::header::headers_cloned())
        .and(warp::addr::remote())
        .and(warp::body::stream())
        .then(
            move |method: Method,
                  path: warp::path::FullPath,
                  query: String,
                  headers: HeaderMap,
                  peer: Option<SocketAddr>,
                  body| {
                let state = state.clone();
                async move {
                    let body = read_body(body, MAX_REQUEST_BODY).await;
                    let client = Client {
                        headers: &headers,
                        peer,
                    };
                    handle(&state, method, path.as_str(), &query, client, body).await
                }
            },
        )
}

/// Why a request body was not read.
enum BodyError {
    TooLarge,
    Broken(String),
}

/// Collects a body of at most `limit` bytes, whether or not the client sent Content-Length.
async fn read_body<S, B>(body: S, limit: usize) -> Result<Bytes, BodyError>
where
    S: Stream<Item = Result<B, warp::Error>>,
    B: bytes::Buf,
{
    let mut body = std::pin::pin!(body);
    let mut collected = BytesMut::new();
    while let Some(chunk) = body.next().await {
        let mut chunk = chunk.map_err(|e| BodyError::Broken(e.to_string()))?;
        if collected.len() + chunk.remaining() > limit {
            return Err(BodyError::TooLarge);
        }
        while chunk.has_remaining() {
            let part = chunk.chunk();
            let n = part.len();
            collected.extend_from_slice(part);
            chunk.advance(n);
        }
    }
    Ok(collected.freeze())
}

fn json_response(status: StatusCode, value: &Value) -> Response<Bytes> {
    let mut text = serde_json::to_string_pretty(value).unwrap_or_default();
    text.push('\n');
    let mut response = Response::new(Bytes::from(text));
    *response.status_mut() = status;
    response.headers_mut().insert(
        warp::http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    response
}

/// Who sent a request and the headers they sent.
struct Client<'a> {
    headers: &'a HeaderMap,
    peer: Option<SocketAddr>,
}

async fn handle(
    state: &PublicState,
    method: Method,
    path: &str,
    query: &str,
    client: Client<'_>,
    body: Result<Bytes, BodyError>,
) -> Response<Bytes> {
    let headers = client.headers;
    if path.starts_with(DEV_PATH) {
        return dev_endpoint(state, &method, path, headers, body);
    }
    let (route, values) = match state.router.find(method.as_str(), path) {
        RouteMatch::Found { route, values } => (route, values),
        RouteMatch::NotFound => {
            tracing::info!("{method} {path}: no function serves this path (404)");
            return empty(StatusCode::NOT_FOUND);
        }
        RouteMatch::MethodNotAllowed { allow } => {
            // The real host answers 404 here; 405 with Allow tells the developer more.
            tracing::info!("{method} {path}: method not in the function's methods (405)");
            let mut response = empty(StatusCode::METHOD_NOT_ALLOWED);
            if let Ok(value) = HeaderValue::from_str(&allow.join(", ")) {
                response
                    .headers_mut()
                    .insert(warp::http::header::ALLOW, value);
            }
            return response;
        }
    };
    let Some(function) = state.functions.get(&route.function) else {
        return empty(StatusCode::NOT_FOUND);
    };
    let Trigger::Http { binding, .. } = &function.trigger else {
        return empty(StatusCode::NOT_FOUND);
    };
    let body = match body {
        Ok(body) => body,
        Err(BodyError::TooLarge) => return empty(StatusCode::PAYLOAD_TOO_LARGE),
        Err(BodyError::Broken(why)) => {
            tracing::warn!("{method} {path}: the request body could not be read: {why}");
            return empty(StatusCode::BAD_REQUEST);
        }
    };
    let request = IncomingRequest {
        method: method.as_str().to_owned(),
        url: original_url(headers, state.local_addr, path, query),
        raw_query: query.to_owned(),
        headers: front_end::add_front_end_headers(
            headers
                .iter()
                .map(|(name, value)| {
                    (
                        name.as_str().to_owned(),
                        String::from_utf8_lossy(value.as_bytes()).into_owned(),
                    )
                })
                .collect(),
            client.peer,
        ),
        body: body.to_vec(),
    };
    let envelope = payload::http_envelope(binding, &request, &values, &Sys::now(&function.name));
    let reason =
        format!("This function was programmatically called via the host APIs ({method} {path})");
    match state.invoker.invoke(function, &envelope, &reason).await {
        Ok(invocation) => invocation.http.unwrap_or_else(|| empty(StatusCode::OK)),
        // Any failed invocation is an empty 500 for the client: the host discards the body.
        Err(_) => empty(StatusCode::INTERNAL_SERVER_ERROR),
    }
}

/// `http://<Host><path>?<query>` as the client addressed us.
fn original_url(headers: &HeaderMap, local: SocketAddr, path: &str, query: &str) -> String {
    let host = headers
        .get(warp::http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| !h.is_empty())
        .map_or_else(|| local.to_string(), str::to_owned);
    if query.is_empty() {
        format!("http://{host}{path}")
    } else {
        format!("http://{host}{path}?{query}")
    }
}

/// `GET /_dev/queues`: every queue's counts and dead letters. `POST /_dev/queues/<queue>/messages`:
/// sends the request body as a message (to try a consumer with a hand-made message).
/// `GET /_dev/handler`: the handler's mode, process id, restarts and readiness.
/// `GET /_dev/faults`: `{"queueSends": "ok"|"fail"}`; `PUT /_dev/faults` with that body
/// switches output-binding sends to failing (or back).
fn dev_endpoint(
    state: &PublicState,
    method: &Method,
    path: &str,
    headers: &HeaderMap,
    body: Result<Bytes, BodyError>,
) -> Response<Bytes> {
    let rest: Vec<&str> = path[DEV_PATH.len()..]
        .trim_end_matches('/')
        .split('/')
        .collect();
    match (method.as_str(), rest.as_slice()) {
        ("GET", ["queues"]) => json_response(StatusCode::OK, &state.bus.snapshot()),
        ("GET", ["handler"]) => json_response(StatusCode::OK, &state.handler.snapshot()),
        ("GET", ["faults"]) => json_response(StatusCode::OK, &faults(&state.bus)),
        ("PUT", ["faults"]) => {
            let wanted = body
                .ok()
                .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
                .and_then(|v| {
                    v.get("queueSends")
                        .and_then(Value::as_str)
                        .map(str::to_owned)
                });
            match wanted.as_deref() {
                Some(mode @ ("ok" | "fail")) => {
                    state.bus.set_sends_fail(mode == "fail");
                    tracing::warn!("{DEV_PATH}faults: output-binding queue sends now {mode}");
                    json_response(StatusCode::OK, &faults(&state.bus))
                }
                _ => json_response(
                    StatusCode::BAD_REQUEST,
                    &json!({"error": "expected {\"queueSends\": \"ok\" | \"fail\"}"}),
                ),
            }
        }
        ("POST", ["queues", queue, "messages"]) => {
            let Ok(queue) = state.bus.queue(queue) else {
                return json_response(
                    StatusCode::NOT_FOUND,
                    &json!({"error": format!("no queue named {queue:?}")}),
                );
            };
            let body = match body {
                Ok(body) => body,
                Err(BodyError::TooLarge) => return empty(StatusCode::PAYLOAD_TOO_LARGE),
                Err(BodyError::Broken(_)) => return empty(StatusCode::BAD_REQUEST),
            };
            let Ok(text) = String::from_utf8(body.to_vec()) else {
                return json_response(
                    StatusCode::BAD_REQUEST,
                    &json!({"error": "the message must be UTF-8 text"}),
                );
            };
            let content_type = headers
                .get(warp::http::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            let sent = queue.send(NewMessage {
                body: text,
                content_type,
            });
            tracing::info!(
                queue = queue.name(),
                "message {} sent through {DEV_PATH}",
                sent.message_id
            );
            json_response(
                StatusCode::CREATED,
                &json!({"messageId": sent.message_id, "sequenceNumber": sent.sequence_number}),
            )
        }
        (_, ["queues" | "handler" | "faults"]) | (_, ["queues", _, "messages"]) => {
            empty(StatusCode::METHOD_NOT_ALLOWED)
        }
        _ => empty(StatusCode::NOT_FOUND),
    }
}

/// `{"queueSends": "ok"|"fail"}`.
fn faults(bus: &Bus) -> Value {
    json!({"queueSends": if bus.sends_fail() { "fail" } else { "ok" }})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_handler_view_shows_mode_pid_restarts_and_readiness() {
        let (_tx, status) = tokio::sync::watch::channel(HandlerStatus {
            pid: None,
            restarts: 2,
            state: crate::lifecycle::HandlerState::Starting,
            generation: 3,
        });
        let view = HandlerView {
            in_process: false,
            addr: ([127, 0, 0, 1], 4321).into(),
            status,
        };
        assert_eq!(
            view.snapshot(),
            json!({"mode": "process", "pid": null, "restarts": 2, "ready": false,
                   "state": "starting", "url": "http://127.0.0.1:4321"})
        );
    }

    #[test]
    fn the_original_url_uses_the_host_header() {
        let mut headers = HeaderMap::new();
        let local: SocketAddr = "127.0.0.1:7071".parse().unwrap();
        assert_eq!(
            original_url(&headers, local, "/createUser", ""),
            "http://127.0.0.1:7071/createUser"
        );
        headers.insert("host", HeaderValue::from_static("localhost:7071"));
        assert_eq!(
            original_url(&headers, local, "/a", "x=1"),
            "http://localhost:7071/a?x=1"
        );
    }

    #[tokio::test]
    async fn a_body_over_the_limit_is_refused() {
        let chunks = futures_util::stream::iter(vec![
            Ok::<_, warp::Error>(Bytes::from_static(b"abc")),
            Ok(Bytes::from_static(b"def")),
        ]);
        assert!(matches!(
            read_body(chunks, 5).await,
            Err(BodyError::TooLarge)
        ));
        let chunks =
            futures_util::stream::iter(vec![Ok::<_, warp::Error>(Bytes::from_static(b"abc"))]);
        assert_eq!(
            read_body(chunks, 5).await.ok().unwrap(),
            Bytes::from_static(b"abc")
        );
    }
}
