//! The provider-limit phase: sendOnboarding through `handler dev` (so Service Bus semantics
//! apply: a failed delivery is redelivered at once and dead-lettered after the 10th) against a
//! sink that accepts at most R messages in any 1 s and answers `451 4.7.0` at `RCPT TO` past it
//! ([`crate::sink::limited`]).
//!
//! It runs twice, each time with a fresh limited sink and a fresh `handler dev` on the run's
//! redis-server: *paced*, with `SMTP_MAX_PER_MINUTE` = R × 60 (the sends reserve evenly spaced
//! slots through Redis), and *adaptive*, without it (the process-wide pacer learns the rate from
//! the throttles). Each time N users sign up through the dev host's `POST /createUser` (16 at a
//! time), which enqueues one onboarding message per user, exactly as in production; the phase
//! then waits until the queue is empty (nothing active, nothing in flight) and reads:
//!
//! - the accepted-mail rate over the steady part: (accepted − 1) / (last accepted − first
//!   accepted), timed by the sink;
//! - the sink's refusals (`451` at `RCPT TO`);
//! - the queue as `GET /_dev/queues` shows it: completed, dead letters, locks lost.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use serde_json::Value;

use crate::envelope;
use crate::procs::{self, Child, RssWatch};
use test_support::SmtpSink;

/// Sign-ups sent at once.
const SIGN_UP_CONCURRENCY: usize = 16;
/// The longest a mode may take to empty its queue (the send window is 240 s; a healthy mode
/// takes N / R, 15 s at the defaults).
const DRAIN_LIMIT: Duration = Duration::from_secs(120);

/// The phase's parameters.
pub struct Setup<'a> {
    /// Users signed up (one message each) per mode.
    pub messages: usize,
    /// The app root `handler dev` runs on (a copy with only host.json and the function folders).
    pub app: &'a Path,
    pub logs: &'a Path,
}

/// One mode's figures.
pub struct Outcome {
    /// `Some(per minute)` when `SMTP_MAX_PER_MINUTE` was set.
    pub max_per_minute: Option<u32>,
    /// Messages the sink accepted.
    pub accepted: u64,
    /// `RCPT TO`s the sink refused with `451 4.7.0`.
    pub refused: u64,
    /// Accepted messages per second from the first to the last accepted one.
    pub steady_rate: f64,
    /// From the first to the last accepted message.
    pub steady: Duration,
    /// From the first sign-up sent to the last sign-up answered.
    pub sign_ups: Duration,
    /// From the first sign-up sent until the queue was empty (or [`DRAIN_LIMIT`]).
    pub total: Duration,
    /// Whether the queue emptied within [`DRAIN_LIMIT`].
    pub drained: bool,
    pub completed: u64,
    pub dead_letters: usize,
    pub locks_lost: u64,
    pub peak_rss_mib: f64,
}

impl Outcome {
    /// The queue's and the sink's counts, for a note.
    pub fn describe(&self, messages: usize) -> String {
        format!(
            "{} sign-ups in {:.1} s; {} accepted, first to last in {:.1} s; {} refused (451); queue: {} completed, {} dead-lettered, {} locks lost; {}{:.1} s from the first sign-up",
            messages,
            self.sign_ups.as_secs_f64(),
            self.accepted,
            self.steady.as_secs_f64(),
            self.refused,
            self.completed,
            self.dead_letters,
            self.locks_lost,
            if self.drained {
                "queue empty "
            } else {
                "queue NOT empty after "
            },
            self.total.as_secs_f64(),
        )
    }

    /// Every user got exactly one email and the queue emptied.
    pub fn all_delivered(&self, messages: usize) -> bool {
        self.drained && self.accepted == messages as u64
    }
}

/// Runs one mode: `command` is `handler dev`'s program with the run's environment (Redis, JWT,
/// and SMTP_URL pointing at `sink`); this adds the rate setting, the port and the app root.
pub async fn measure(
    setup: &Setup<'_>,
    sink: &SmtpSink,
    mut command: Command,
    max_per_minute: Option<u32>,
    http: &reqwest::Client,
) -> anyhow::Result<Outcome> {
    let tag = if max_per_minute.is_some() {
        "paced"
    } else {
        "adaptive"
    };
    if let Some(per_minute) = max_per_minute {
        command.env("SMTP_MAX_PER_MINUTE", per_minute.to_string());
    }
    let port = test_support::free_port();
    command
        .arg("dev")
        .arg("--port")
        .arg(port.to_string())
        .arg("--app-root")
        .arg(setup.app)
        .current_dir(setup.app);
    let mut dev = Child::spawn(&format!("handler-dev-provider-{tag}"), command, setup.logs)?;
    procs::wait_http(&mut dev, port, "/health", 200, Duration::from_secs(30))?;
    let watch = RssWatch::start(dev.pid());

    let started = Instant::now();
    let nonce = format!("{tag}{}", std::process::id());
    sign_up(http, port, &nonce, setup.messages).await?;
    let sign_ups = started.elapsed();

    let queues = format!("http://127.0.0.1:{port}/_dev/queues");
    let (queue, drained) = loop {
        let queue: Value = http.get(&queues).send().await?.json().await?;
        let queue = queue
            .get("onboarding")
            .cloned()
            .context("GET /_dev/queues has no onboarding queue")?;
        let count = |field: &str| queue[field].as_u64().unwrap_or(0);
        if count("active") == 0 && count("inFlight") == 0 {
            break (queue, true);
        }
        if started.elapsed() > DRAIN_LIMIT {
            break (queue, false);
        }
        dev.check_alive()?;
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let total = started.elapsed();
    let peak_rss_mib = watch.finish() as f64 / 1024.0;
    dev.stop();

    let times = crate::sink::accepted_times(sink);
    let steady = match (times.first(), times.last()) {
        (Some(first), Some(last)) => *last - *first,
        _ => Duration::ZERO,
    };
    let steady_rate = if times.len() > 1 && !steady.is_zero() {
        (times.len() - 1) as f64 / steady.as_secs_f64()
    } else {
        0.0
    };
    let count = |field: &str| queue[field].as_u64().unwrap_or(0);
    Ok(Outcome {
        max_per_minute,
        accepted: sink.accepted(),
        refused: sink.throttled() as u64,
        steady_rate,
        steady,
        sign_ups,
        total,
        drained,
        completed: count("completed"),
        dead_letters: queue["deadLetter"].as_array().map_or(0, Vec::len),
        locks_lost: count("locksLost"),
        peak_rss_mib,
    })
}

/// Signs `n` users up through the dev host, [`SIGN_UP_CONCURRENCY`] at a time; each must be
/// answered 201.
async fn sign_up(http: &reqwest::Client, port: u16, nonce: &str, n: usize) -> anyhow::Result<()> {
    let next = Arc::new(AtomicUsize::new(0));
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..SIGN_UP_CONCURRENCY.min(n) {
        let (http, next, nonce) = (http.clone(), next.clone(), nonce.to_owned());
        workers.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    return anyhow::Ok(());
                }
                let body = envelope::sign_up_body(&format!("p{nonce}-{i}@bench.example"));
                let response = http
                    .post(format!("http://127.0.0.1:{port}/createUser"))
                    .header("Content-Type", "application/json")
                    .body(body)
                    .send()
                    .await?;
                let status = response.status();
                if status.as_u16() != 201 {
                    bail!(
                        "provider phase: POST /createUser answered {status}: {}",
                        response.text().await.unwrap_or_default()
                    );
                }
            }
        });
    }
    while let Some(done) = workers.join_next().await {
        done??;
    }
    Ok(())
}
