//! The handler's HTTP surface for the host: the readiness ping (`GET /`) and one invocation
//! endpoint (`POST /<function>`). Bodies arrive chunked without Content-Length, so the size limit
//! is enforced while reading, not from a header.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use futures_util::{Stream, StreamExt};
use tracing::Instrument;
use warp::Filter;
use warp::http::StatusCode;
use warp::reply::{Reply, Response};

use crate::app::App;
use crate::functions;
use crate::protocol::{INVOCATION_ID_HEADER, Invocation, InvocationResponse};

/// Largest invocation envelope read. The host copies body fields into Metadata, so an envelope
/// is larger than the client's body; this must comfortably exceed 4 MiB for an oversized sign-up
/// to reach the function and get its 413.
pub const MAX_ENVELOPE_BYTES: usize = 8 * 1024 * 1024;
/// How long in-flight invocations may run on after a shutdown signal.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Why the handler's server stopped without being asked to. The handler must then exit
/// non-zero: the host restarts a worker that exits with any code but 0, and leaves one that
/// exits 0 down for good (azure-functions-host `WorkerProcess.OnProcessExited`).
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("the listener failed and cannot accept connections any more: {0}")]
    Accept(#[source] std::io::Error),
}

/// Serves the handler on `listener` until `shutdown` resolves, then lets in-flight invocations
/// finish for at most [`SHUTDOWN_GRACE`]. Returns `Ok` only after `shutdown`.
///
/// Connections are served by tasks this future owns (not detached with `tokio::spawn`, as
/// warp's own `run` does): dropping or aborting it drops every open connection at once, which
/// is how `handler dev` kills an in-process handler after a function timeout.
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: Arc<App>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let filter = routes(app);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut connections = tokio::task::JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((io, _)) => {
                    let service = hyper_util::service::TowerToHyperService::new(
                        warp::service(filter.clone()),
                    );
                    let connection = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(io), service);
                    let connection = graceful.watch(connection);
                    connections.spawn(async move {
                        if let Err(e) = connection.await {
                            tracing::debug!("connection from the host ended: {e}");
                        }
                    });
                }
                Err(e) if is_transient(&e) => {
                    // Out of file descriptors, or a connection reset before it was accepted:
                    // wait a moment and go on, as hyper's servers do.
                    tracing::warn!("cannot accept a connection: {e}");
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                }
                Err(e) => return Err(ServeError::Accept(e)),
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    drop(listener);
    tracing::info!("shutting down: no new connections, finishing in-flight invocations");
    if tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            "in-flight invocations still running after {SHUTDOWN_GRACE:?}; stopping anyway"
        );
    }
    Ok(())
}

/// Pause after an accept error that may heal.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(50);

/// Accept errors that say nothing about the listener itself.
fn is_transient(e: &std::io::Error) -> bool {
    use std::io::ErrorKind as K;
    matches!(
        e.kind(),
        K::ConnectionAborted | K::ConnectionReset | K::Interrupted | K::WouldBlock
    ) || matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}

/// Resolves on SIGTERM (what the host sends before it stops a process) or Ctrl-C; the
/// shutdown signal of both `handler` and `handler dev`.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}

/// All routes: the readiness ping and the invocation endpoint.
pub fn routes(
    app: Arc<App>,
) -> impl Filter<Extract = (Response,), Error = std::convert::Infallible> + Clone {
    readiness()
        .or(invocation(app))
        .unify()
        .recover(|_rejection: warp::Rejection| async {
            Ok::<_, std::convert::Infallible>(StatusCode::NOT_FOUND.into_response())
        })
        .unify()
}

/// `GET /`: the host's readiness ping and keep-alive. Touches no backend.
fn readiness() -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone {
    warp::get()
        .and(warp::path::end())
        .map(|| warp::reply::with_status("ok", StatusCode::OK).into_response())
}

/// `POST /<function>`: one invocation.
fn invocation(
    app: Arc<App>,
) -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone {
    warp::post()
        .and(warp::path::param::<String>())
        .and(warp::path::end())
        .and(warp::header::optional::<String>(INVOCATION_ID_HEADER))
        .and(warp::body::stream())
        .then(
            move |function: String, invocation_id: Option<String>, body| {
                let app = app.clone();
                let span = tracing::info_span!(
                    "invocation",
                    function = %function,
                    invocation_id = invocation_id.as_deref().unwrap_or("-"),
                );
                async move { handle(&app, &function, invocation_id, body).await }.instrument(span)
            },
        )
}

async fn handle<S, B>(app: &App, function: &str, invocation_id: Option<String>, body: S) -> Response
where
    S: Stream<Item = Result<B, warp::Error>> + Unpin,
    B: Buf,
{
    let bytes = match read_limited(body, MAX_ENVELOPE_BYTES).await {
        Ok(bytes) => bytes,
        Err(ReadError::TooLarge(rest)) => return oversized(function, rest).await,
        Err(ReadError::Transport(e)) => {
            tracing::error!(error = %e, "could not read the invocation body");
            return plain(
                StatusCode::BAD_REQUEST,
                "could not read the invocation body",
            );
        }
    };
    let invocation = match Invocation::from_slice(&bytes, invocation_id) {
        Ok(invocation) => invocation,
        Err(e) => {
            tracing::error!(error = %e, "unreadable invocation envelope");
            return plain(StatusCode::BAD_REQUEST, &e.to_string());
        }
    };
    let (result, logs) =
        crate::telemetry::capture_logs(functions::invoke(app, function, &invocation)).await;
    match result {
        None => {
            tracing::error!("no function named {function:?}");
            plain(StatusCode::NOT_FOUND, "no such function")
        }
        Some(Ok(outputs)) => answer(&outputs, &logs),
        Some(Err(error)) => {
            // The host drops the body of a non-2xx answer, Logs included: stderr is where this
            // reason survives (error level goes there).
            tracing::error!("invocation failed: {error}");
            // A binding the function cannot read is a bad envelope, like an unreadable one; a
            // failure of the function's own (retry, poison) is a server error.
            let status = match error {
                functions::InvocationError::Envelope(_) => StatusCode::BAD_REQUEST,
                _ => StatusCode::INTERNAL_SERVER_ERROR,
            };
            plain(status, &error.to_string())
        }
    }
}

fn plain(status: StatusCode, text: &str) -> Response {
    warp::reply::with_status(text.to_owned(), status).into_response()
}

enum ReadError<S> {
    /// Past the limit; the stream holds the rest, not read yet.
    TooLarge(S),
    Transport(warp::Error),
}

/// The host's answer: 2xx with `{"Outputs", "Logs", "ReturnValue"}` as JSON.
fn answer(outputs: &functions::Outputs, logs: &[String]) -> Response {
    let answer = InvocationResponse {
        outputs: outputs.bindings(),
        logs,
        return_value: (),
    };
    // Presized: most answers fit, so the buffer is rarely regrown.
    let mut body = Vec::with_capacity(512);
    match serde_json::to_writer(&mut body, &answer) {
        Ok(()) => {
            let mut response = Response::new(body.into());
            response.headers_mut().insert(
                warp::http::header::CONTENT_TYPE,
                warp::http::HeaderValue::from_static("application/json"),
            );
            response
        }
        Err(e) => {
            tracing::error!(error = %e, "the answer could not be written as JSON");
            plain(StatusCode::INTERNAL_SERVER_ERROR, "unserializable answer")
        }
    }
}

/// An envelope past [`MAX_ENVELOPE_BYTES`]: its rest is read and dropped piece by piece (memory
/// stays flat; the host is still sending, and a connection closed under it would turn any
/// answer into an empty 500), then an HTTP function answers its client 413 in `res`, as it does
/// for any body over its limit, and a queue message fails (toward the dead-letter queue).
async fn oversized<S, B>(function: &str, mut rest: S) -> Response
where
    S: Stream<Item = Result<B, warp::Error>> + Unpin,
    B: Buf,
{
    let mut dropped = 0usize;
    while let Some(Ok(chunk)) = rest.next().await {
        dropped = dropped.saturating_add(chunk.remaining());
    }
    match functions::answer_to_an_oversized_envelope(function) {
        Some(outputs) => {
            tracing::warn!(
                limit = MAX_ENVELOPE_BYTES,
                dropped,
                "invocation envelope too large; the client gets 413"
            );
            answer(&outputs, &[])
        }
        None => {
            tracing::error!(
                limit = MAX_ENVELOPE_BYTES,
                dropped,
                "invocation envelope too large; refused"
            );
            plain(
                StatusCode::PAYLOAD_TOO_LARGE,
                "invocation envelope too large",
            )
        }
    }
}

/// Reads a body stream into memory, stopping as soon as it passes `limit`. A body that arrives
/// in one piece (the usual case) is kept as the connection read it, without a copy.
async fn read_limited<S, B>(mut body: S, limit: usize) -> Result<Bytes, ReadError<S>>
where
    S: Stream<Item = Result<B, warp::Error>> + Unpin,
    B: Buf,
{
    let mut first = Bytes::new();
    // Only a body that comes in several pieces is copied into one buffer.
    let mut joined: Option<BytesMut> = None;
    let mut total = 0usize;
    while let Some(chunk) = body.next().await {
        let mut chunk = chunk.map_err(ReadError::Transport)?;
        total += chunk.remaining();
        if total > limit {
            return Err(ReadError::TooLarge(body));
        }
        let piece = chunk.copy_to_bytes(chunk.remaining());
        if first.is_empty() && joined.is_none() {
            first = piece;
        } else {
            joined
                .get_or_insert_with(|| BytesMut::from(&first[..]))
                .extend_from_slice(&piece);
        }
    }
    Ok(joined.map_or(first, BytesMut::freeze))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Mode, Settings};

    async fn app() -> Arc<App> {
        let settings = Settings::from_lookup(Mode::Dev, |_| None).unwrap();
        let outbox = std::env::temp_dir().join("server-tests-outbox");
        Arc::new(App::build(&settings, &outbox).await.unwrap())
    }

    #[tokio::test]
    async fn serving_ends_well_only_when_asked_to() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve(listener, app().await, async {
            let _ = rx.await;
        }));
        tx.send(()).unwrap();
        assert!(server.await.unwrap().is_ok());
    }

    /// A listener that stops accepting ends the server with an error (so `handler` exits
    /// non-zero and the host restarts it), never with a quiet success.
    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn a_dead_listener_is_an_error_not_a_clean_exit() {
        use std::os::fd::AsRawFd as _;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        // SAFETY: shutdown(2) on a socket this test owns; on Linux, accept then fails (EINVAL).
        let rc = unsafe { libc::shutdown(listener.as_raw_fd(), libc::SHUT_RDWR) };
        assert_eq!(rc, 0);
        let ended = tokio::time::timeout(
            Duration::from_secs(5),
            serve(listener, app().await, std::future::pending()),
        )
        .await
        .expect("serve returned");
        assert!(matches!(ended, Err(ServeError::Accept(_))), "{ended:?}");
    }
}
