//! Running an invocation as the host's function executor does: held while the handler starts,
//! cut at `functionTimeout`, and the answer's `Outputs` routed to the bindings (the HTTP
//! response, Service Bus messages to the in-process bus). The call itself is `client.rs`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::Value;
use uuid::Uuid;

use super::client::{Answer, HandlerClient};
pub(crate) use super::error::InvokeError;
use super::function_json::{FunctionDef, OutputKind};
use super::http_output;
use super::lifecycle::{HOLD_LIMIT, HOLD_POLL, HandlerControl};
use super::lookup;
use super::payload;
use super::queue::{Bus, QueueError};

/// Longest wait, after a call could not reach the handler, for the supervisor to notice the
/// handler is gone (it looks every 25 ms): see `HandlerControl::notice_lost`.
const LOSS_NOTICE: Duration = Duration::from_millis(200);

/// A completed invocation: the client's response, when the function has an HTTP output.
#[derive(Debug)]
pub(crate) struct Invocation {
    pub http: Option<warp::http::Response<Bytes>>,
}

/// Runs invocations and binds their outputs, as the host's function executor does.
#[derive(Debug)]
pub(crate) struct Invoker {
    client: HandlerClient,
    bus: Arc<Bus>,
    handler: HandlerControl,
    /// host.json `functionTimeout`; `None`: no limit.
    function_timeout: Option<Duration>,
}

impl Invoker {
    /// An invoker sending to `client`, holding invocations and restarting the handler through
    /// `handler`, and delivering Service Bus outputs to `bus`.
    pub(crate) fn new(
        client: HandlerClient,
        bus: Arc<Bus>,
        handler: HandlerControl,
        function_timeout: Option<Duration>,
    ) -> Self {
        Self {
            client,
            bus,
            handler,
            function_timeout,
        }
    }

    /// Invokes `function` and logs the outcome like the host: held while the handler starts,
    /// cut at `functionTimeout` (the handler is then killed and restarted), the HTTP output read
    /// before anything is bound, then the Service Bus outputs sent (after the answer: a failed
    /// send fails the invocation though the handler did its work).
    pub(crate) async fn invoke(
        &self,
        function: &FunctionDef,
        envelope: &Value,
        reason: &str,
    ) -> Result<Invocation, InvokeError> {
        let id = Uuid::new_v4();
        let started = Instant::now();
        tracing::info!(
            "Executing 'Functions.{}' (Reason='{reason}', Id={id})",
            function.name
        );
        let result = self.run(function, id, envelope).await;
        let ms = started.elapsed().as_millis();
        match &result {
            Ok(_) => tracing::info!(
                "Executed 'Functions.{}' (Succeeded, Id={id}, Duration={ms}ms)",
                function.name
            ),
            Err(error) => {
                let preview = match error {
                    InvokeError::Failed { body_preview, .. } if !body_preview.is_empty() => {
                        format!(" (the host discards the body, which began: {body_preview:?})")
                    }
                    _ => String::new(),
                };
                tracing::error!(
                    "Executed 'Functions.{}' (Failed, Id={id}, Duration={ms}ms): {error}{preview}",
                    function.name
                );
            }
        }
        result
    }

    async fn run(
        &self,
        function: &FunctionDef,
        id: Uuid,
        envelope: &Value,
    ) -> Result<Invocation, InvokeError> {
        // The function's clock starts with the invocation, before any hold: time spent waiting
        // for a restarting handler counts toward functionTimeout, as on the host.
        let deadline = self
            .function_timeout
            .map(|limit| (limit, tokio::time::Instant::now() + limit));
        let hold = self.handler.wait_until_available(HOLD_POLL, HOLD_LIMIT);
        let generation = match deadline {
            Some((limit, at)) => tokio::time::timeout_at(at, hold)
                .await
                .map_err(|_| InvokeError::Timeout(limit))??,
            None => hold.await?,
        };
        let call = self.client.invoke(&function.name, id, envelope);
        let answered = match deadline {
            Some((limit, at)) => tokio::time::timeout_at(at, call)
                .await
                .unwrap_or(Err(InvokeError::Timeout(limit))),
            None => call.await,
        };
        let answer = match answered {
            Ok(answer) => answer,
            Err(error) => {
                if error.kills_the_handler() {
                    if matches!(error, InvokeError::NeverCompleted(_)) {
                        tracing::error!(
                            "{}: {error}. handler dev does not wait: it fails the invocation now \
                             and restarts the handler as a timeout would",
                            function.name
                        );
                    }
                    self.handler.restart_after_timeout(generation);
                }
                if matches!(error, InvokeError::Transport(_)) {
                    self.handler.notice_lost(generation, LOSS_NOTICE).await;
                }
                return Err(error);
            }
        };
        for line in &answer.logs {
            tracing::debug!(target: "devhost::handler_logs", "{line}");
        }
        warn_unbound_outputs(function, &answer);
        let http = http_output::response(function, &answer).map_err(InvokeError::BadHttpOutput)?;
        self.send_outputs(function, &answer)?;
        Ok(Invocation { http })
    }

    /// Sends each Service Bus output's messages; the first failed send fails the invocation.
    fn send_outputs(&self, function: &FunctionDef, answer: &Answer) -> Result<(), QueueError> {
        for output in &function.outputs {
            let Some(value) = answer.output(&output.name) else {
                continue;
            };
            match &output.kind {
                OutputKind::Http => {}
                OutputKind::ServiceBus { queue } => {
                    for message in payload::messages_from_output(&output.name, value) {
                        let sent = self.bus.send(queue, message)?;
                        tracing::info!(
                            queue = queue.as_str(),
                            "{} sent message {} (sequence {}) through {}",
                            function.name,
                            sent.message_id,
                            sent.sequence_number,
                            output.name
                        );
                    }
                }
                OutputKind::Unsupported(kind) if !value.is_null() => tracing::warn!(
                    "{}: output {} of type {kind} is not emulated by handler dev; its value is dropped",
                    function.name,
                    output.name
                ),
                OutputKind::Unsupported(_) => {}
            }
        }
        Ok(())
    }
}

/// Warns about `Outputs` keys the host ignores (no binding of that exact name).
fn warn_unbound_outputs(function: &FunctionDef, answer: &Answer) {
    for key in answer.outputs.keys() {
        if function.outputs.iter().any(|o| &o.name == key) {
            continue;
        }
        let hint = function
            .outputs
            .iter()
            .find(|o| lookup::same(&o.name, key))
            .map(|o| format!(" (names are case-sensitive: did you mean {:?}?)", o.name))
            .unwrap_or_default();
        tracing::warn!(
            "Outputs.{key} of {} matches no output binding in its function.json: the host ignores it{hint}",
            function.name
        );
    }
}
