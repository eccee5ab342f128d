//! The ways an invocation fails, shared by the client, the lifecycle, the HTTP output and the
//! invoker: each failure's text is what the logs and `/_dev/queues` show.

use std::time::Duration;

use serde_json::Value;
use warp::http::HeaderName;

use super::queue::QueueError;

/// Why an invocation failed, as the host would see it.
#[derive(Debug, thiserror::Error)]
pub(crate) enum InvokeError {
    #[error("the handler did not answer GET / within {0:?}")]
    NotReady(Duration),
    #[error("the invocation timed out after {0:?} (host.json functionTimeout)")]
    Timeout(Duration),
    #[error("cannot reach the handler: {0}")]
    Transport(String),
    #[error("the handler answered {status}")]
    Failed { status: u16, body_preview: String },
    #[error("the handler's answer is not an invocation result: {0}")]
    BadAnswer(String),
    /// A 2xx answer the host cannot read as JSON (`HttpContent.ReadAsAsync` picks a formatter
    /// by content type).
    #[error("the handler answered 2xx with content type {0:?}, not JSON: the host cannot read it")]
    NotJson(String),
    /// An empty 2xx body or `null`: on Azure the invocation never completes.
    #[error(
        "the handler answered 2xx with {0}: on Azure the invocation is never completed; it hangs \
         until functionTimeout, then the host kills and restarts the handler"
    )]
    NeverCompleted(&'static str),
    #[error(transparent)]
    Unavailable(#[from] Unavailable),
    /// `Outputs.res` cannot be read: the host fails the invocation before binding any output.
    #[error("the HTTP output cannot be read ({0}); no output was bound")]
    BadHttpOutput(HttpOutputError),
    /// An output binding's send failed after the handler answered (its work is done).
    #[error("the handler answered, but an output binding failed: {0}")]
    SendFailed(#[from] QueueError),
}

impl InvokeError {
    /// Whether the host treats this failure as a function timeout: the handler is killed and
    /// restarted, with every invocation in flight on it.
    pub(crate) fn kills_the_handler(&self) -> bool {
        matches!(self, Self::Timeout(_) | Self::NeverCompleted(_))
    }
}

/// Why an invocation could not be sent to the handler.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Unavailable {
    #[error("the handler was not ready within {0:?} (the host stops the app at this point)")]
    HoldExpired(Duration),
    #[error("the handler has been stopped")]
    Stopped,
}

/// Why `Outputs.res` cannot be read.
#[derive(Debug, thiserror::Error)]
pub(crate) enum HttpOutputError {
    #[error("the HTTP output is a string that is not a JSON object")]
    StringNotAnObject,
    #[error("the HTTP output is not an object: {0}")]
    NotAnObject(Value),
    #[error("statusCode {0} is not a status")]
    NotAStatus(serde_json::Number),
    #[error("statusCode {0} is not an HTTP status")]
    NotAnHttpStatus(u64),
    #[error("headers is not an object")]
    HeadersNotAnObject,
    #[error("{0:?} is not a valid header name")]
    InvalidHeaderName(String),
    #[error("the value of header {0} is not valid")]
    InvalidHeaderValue(HeaderName),
}
