//! `GET /health`: whether the handler and its store answer, within a short bound, and for Redis
//! its shape: single server or cluster, primaries, live replicas, slots served.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::declaration::HTTP_REQUEST;
use super::{InvocationError, Outputs, http};
use crate::app::App;
use crate::protocol::Invocation;
use crate::store::StoreHealth;

/// The store must answer within this for the service to count as healthy.
const STORE_CHECK_TIMEOUT: Duration = Duration::from_secs(1);

/// Answers 200 with each check, or 503 naming the one that failed.
pub async fn run(app: &App, invocation: &Invocation) -> Result<Outputs, InvocationError> {
    invocation.http_request(HTTP_REQUEST)?;
    let name = app.store.check_name();
    let started = Instant::now();
    let check = match tokio::time::timeout(STORE_CHECK_TIMEOUT, app.store.health()).await {
        Ok(Ok(shape)) => Ok((started.elapsed(), shape)),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no answer within {STORE_CHECK_TIMEOUT:?}")),
    };
    let response = match check {
        Ok((elapsed, shape)) => http::json(
            200,
            &Report {
                status: OK,
                checks: BTreeMap::from([(
                    name,
                    Check {
                        status: OK,
                        latency_ms: Some((elapsed.as_secs_f64() * 100_000.0).round() / 100.0),
                        error: None,
                        shape: shape.map(Shape::from),
                    },
                )]),
            },
        ),
        Err(error) => {
            tracing::warn!(check = name, %error, "health check failed");
            http::json(
                503,
                &Report {
                    status: UNAVAILABLE,
                    checks: BTreeMap::from([(
                        name,
                        Check {
                            status: UNAVAILABLE,
                            latency_ms: None,
                            error: Some(&error),
                            shape: None,
                        },
                    )]),
                },
            )
            .header("Retry-After", "5")
        }
    };
    Ok(Outputs::http(response))
}

const OK: &str = "ok";
const UNAVAILABLE: &str = "unavailable";

/// The answer: overall status and each check by name (docs/openapi.json, `Health`).
#[derive(Serialize)]
struct Report<'a> {
    status: &'static str,
    checks: BTreeMap<&'static str, Check<'a>>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Check<'a> {
    status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    latency_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a str>,
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    shape: Option<Shape>,
}

/// Redis's shape in a check (docs/openapi.json, `Health`): `mode` is `single` or `cluster`.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Shape {
    mode: &'static str,
    primaries: u32,
    replicas: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    slots_ok: Option<u32>,
}

impl From<StoreHealth> for Shape {
    fn from(health: StoreHealth) -> Self {
        Self {
            mode: if health.cluster { "cluster" } else { "single" },
            primaries: health.primaries,
            replicas: health.replicas,
            slots_ok: health.slots_ok,
        }
    }
}
