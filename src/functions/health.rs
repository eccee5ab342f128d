//! `GET /health`: whether the handler and its store answer, within a short bound.

use std::time::{Duration, Instant};

use serde_json::json;

use super::declaration::HTTP_REQUEST;
use super::{InvocationError, Outputs, http};
use crate::app::App;
use crate::protocol::Invocation;

/// The store must answer within this for the service to count as healthy.
const STORE_CHECK_TIMEOUT: Duration = Duration::from_secs(1);

/// Answers 200 with each check, or 503 naming the one that failed.
pub async fn run(app: &App, invocation: &Invocation) -> Result<Outputs, InvocationError> {
    invocation.http_request(HTTP_REQUEST)?;
    let name = app.store.check_name();
    let started = Instant::now();
    let check = match tokio::time::timeout(STORE_CHECK_TIMEOUT, app.store.ping()).await {
        Ok(Ok(())) => Ok(started.elapsed()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no answer within {STORE_CHECK_TIMEOUT:?}")),
    };
    let response = match check {
        Ok(elapsed) => http::json(
            200,
            &json!({
                "status": "ok",
                "checks": {name: {"status": "ok", "latencyMs": (elapsed.as_secs_f64() * 100_000.0).round() / 100.0}},
            }),
        ),
        Err(error) => {
            tracing::warn!(check = name, %error, "health check failed");
            http::json(
                503,
                &json!({
                    "status": "unavailable",
                    "checks": {name: {"status": "unavailable", "error": error}},
                }),
            )
            .header("Retry-After", "5")
        }
    };
    Ok(Outputs::http(response))
}
