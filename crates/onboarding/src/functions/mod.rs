//! The functions, one module each, and the dispatch from a function name to its code.
//! Functions see the protocol's types only, never warp.

mod body;
mod client_ip;
mod create_user;
pub mod declaration;
mod health;
mod http;
mod limits;
mod root;
mod send_onboarding;
mod session;
mod sign_in;
mod sign_out;
mod signed_in;
mod verify_email;

use serde_json::Value;

use crate::app::App;
use crate::protocol::{EnvelopeError, HttpResponse, Invocation, OutputBindings};
use declaration::HTTP_RESPONSE;

/// How long a sendOnboarding invocation may run past its send window (recording the outcome
/// while Redis is down, then one more store call), for checks that the window fits inside the
/// host's limits.
pub const SEND_WINDOW_OVERRUN: std::time::Duration =
    send_onboarding::RECORD_GRACE.saturating_add(std::time::Duration::from_secs(2));

/// Why an invocation must fail at the host (a non-2xx answer, which discards Logs): either the
/// envelope is unreadable, or a queue message should be redelivered or dead-lettered.
#[derive(Debug, thiserror::Error)]
pub enum InvocationError {
    /// The host sent something we cannot read.
    #[error(transparent)]
    Envelope(#[from] EnvelopeError),
    /// A failure that may heal (SMTP or Redis down): Service Bus redelivers.
    #[error("{0:#} (Service Bus will redeliver)")]
    Retry(anyhow::Error),
    /// A message that can never succeed: it ends in the dead-letter queue.
    #[error("the message can never be processed: {0:#} (it will end in the dead-letter queue)")]
    Poison(anyhow::Error),
}

/// The output bindings of one invocation: the HTTP answer and queue messages, kept typed until
/// the answer to the host is written.
#[derive(Debug, Default)]
pub struct Outputs(OutputBindings);

impl Outputs {
    /// Outputs holding just the HTTP answer.
    pub fn http(response: HttpResponse) -> Self {
        Self(OutputBindings {
            http: Some((HTTP_RESPONSE, response)),
            messages: Vec::new(),
        })
    }

    /// Adds a queue message; it must serialize to a JSON object (the host mangles strings).
    pub fn with_message(mut self, binding: &str, message: Value) -> Self {
        debug_assert!(message.is_object());
        debug_assert!(self.0.messages.iter().all(|(name, _)| name != binding));
        self.0.messages.push((binding.to_owned(), message));
        self
    }

    /// The bindings, for the answer to the host.
    pub fn bindings(&self) -> &OutputBindings {
        &self.0
    }
}

/// What the host gets when an invocation's envelope is past what the handler reads: for an HTTP
/// function, a normal answer whose `res` is the client's 413 (a non-2xx would reach the client
/// as an empty 500); `None` for a queue message or an unknown function, which must fail.
pub fn answer_to_an_oversized_envelope(function: &str) -> Option<Outputs> {
    declaration::ALL
        .iter()
        .find(|f| f.name == function)
        .filter(|f| matches!(f.trigger, declaration::Trigger::Http { .. }))
        .map(|_| Outputs::http(http::content_too_large()))
}

/// Runs the named function, or returns `None` when no function has that name.
pub async fn invoke(
    app: &App,
    function: &str,
    invocation: &Invocation,
) -> Option<Result<Outputs, InvocationError>> {
    use declaration::{
        CREATE_USER, HEALTH, ROOT, SEND_ONBOARDING, SIGN_IN, SIGN_OUT, VERIFY_EMAIL,
    };
    let result = match function {
        f if f == ROOT.name => root::run(app, invocation).await,
        f if f == HEALTH.name => health::run(app, invocation).await,
        f if f == CREATE_USER.name => create_user::run(app, invocation).await,
        f if f == SEND_ONBOARDING.name => send_onboarding::run(app, invocation).await,
        f if f == SIGN_IN.name => sign_in::run(app, invocation).await,
        f if f == SIGN_OUT.name => sign_out::run(app, invocation).await,
        f if f == VERIFY_EMAIL.name => verify_email::run(app, invocation).await,
        _ => return None,
    };
    Some(result)
}
