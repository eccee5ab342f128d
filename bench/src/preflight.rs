//! Before any phase: one user signed up, the handler's answers to health and root captured
//! (the ceilings replay them), that user's email sent and the copy the sink received kept.

use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use serde_json::Value;

use crate::envelope;
use crate::fixtures::{health_envelope, root_envelope, user_key};
use crate::handler::{self, HttpAnswer};
use crate::mail::Sample;
use crate::session::{Server, Services, Session};
use test_support::SmtpSink;

/// What the preflight learned: the user, their token, their record in the store, and their
/// email as the sink received it.
pub struct Preflight {
    pub user_id: String,
    pub token: String,
    pub user_record: Value,
    pub sample: Sample,
}

/// The preflight user, as createUser answered.
pub struct SignedUp {
    pub user_id: String,
    pub token: String,
    /// The createUser envelope, for the size note.
    pub envelope_len: usize,
}

/// The preflight's email and the envelope that sent it.
struct Sent {
    sample: Sample,
    envelope_len: usize,
}

pub async fn run(
    s: &mut Session,
    handler: &Server,
    services: &Services,
) -> anyhow::Result<Preflight> {
    let user = sign_up(s, handler).await?;
    let health = expect_200(s, handler, "health", &health_envelope()).await?;
    let root = expect_200(s, handler, "root", &root_envelope(&user.token)).await?;
    let sent = send_email(s, handler, &services.sink, &user.user_id).await?;
    let user_record = read_record(&services.redis_url, &user.user_id).await?;
    std::fs::write(s.dir.join("health-answer.json"), &health.raw)?;
    std::fs::write(s.dir.join("root-answer.json"), &root.raw)?;
    std::fs::write(s.dir.join("email.eml"), sent.sample.data.as_slice())?;
    s.report.notes.push(format!(
        "Invocation envelopes: health {} B, root {} B, createUser {} B, sendOnboarding {} B; answers: health {} B, root {} B; the email {} B.",
        health_envelope().to_string().len(),
        root_envelope(&user.token).to_string().len(),
        user.envelope_len,
        sent.envelope_len,
        health.raw.len(),
        root.raw.len(),
        sent.sample.data.len()
    ));
    Ok(Preflight {
        user_id: user.user_id,
        token: user.token,
        user_record,
        sample: sent.sample,
    })
}

/// Signs the run's first user up through `handler` (201 expected).
pub async fn sign_up(s: &Session, handler: &Server) -> anyhow::Result<SignedUp> {
    let body = envelope::sign_up_body("first@bench.example");
    let sign_up = envelope::http(
        "POST",
        "/createUser",
        &[("Content-Type", "application/json")],
        Some(&body),
    );
    let answer = handler::invoke_http(s, handler.port, "createUser", &sign_up).await?;
    if answer.status != 201 {
        bail!(
            "preflight sign-up answered {}: {}",
            answer.status,
            answer.body
        );
    }
    let created: Value = serde_json::from_str(&answer.body)?;
    Ok(SignedUp {
        user_id: created["id"].as_str().context("no id")?.to_owned(),
        token: created["token"].as_str().context("no token")?.to_owned(),
        envelope_len: sign_up.to_string().len(),
    })
}

/// Invokes an HTTP function; its answer must be 200.
pub async fn expect_200(
    s: &Session,
    handler: &Server,
    function: &str,
    envelope: &Value,
) -> anyhow::Result<HttpAnswer> {
    let answer = handler::invoke_http(s, handler.port, function, envelope).await?;
    if answer.status != 200 {
        bail!(
            "preflight {function} answered {}: {}",
            answer.status,
            answer.body
        );
    }
    Ok(answer)
}

/// Sends the user's email through sendOnboarding and waits (5 s at most) for the sink's copy.
async fn send_email(
    s: &Session,
    handler: &Server,
    sink: &SmtpSink,
    user_id: &str,
) -> anyhow::Result<Sent> {
    sink.capture_next();
    let message = envelope::service_bus(&envelope::onboarding_message(
        user_id,
        "first@bench.example",
    ));
    let answer = handler::invoke(s, handler.port, "sendOnboarding", &message).await?;
    if answer.status != 200 {
        bail!(
            "preflight sendOnboarding answered {}: {}",
            answer.status,
            String::from_utf8_lossy(&answer.raw)
        );
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    let data = loop {
        if let Some(data) = sink.captured() {
            break data;
        }
        if Instant::now() > deadline {
            bail!("the sink received no email from the preflight sendOnboarding");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    Ok(Sent {
        sample: Sample::new(data)?,
        envelope_len: message.to_string().len(),
    })
}

async fn read_record(redis_url: &str, user_id: &str) -> anyhow::Result<Value> {
    let mut redis = redis::Client::open(redis_url)?
        .get_multiplexed_async_connection()
        .await?;
    let record: String = redis::cmd("GET")
        .arg(user_key(user_id))
        .query_async(&mut redis)
        .await
        .context("the preflight user's record is not where the bench expects it")?;
    Ok(serde_json::from_str(&record)?)
}
