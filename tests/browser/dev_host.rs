//! `handler dev` on a free port, serving a copy of this repository's function app (host.json and
//! the function folders) with the embedded store and the outbox mailer, ready once
//! `GET /health` answers 200.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use test_support::free_port;

/// How long the dev host may take to answer `GET /health` with 200.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How often readiness is polled.
const POLL: Duration = Duration::from_millis(100);

/// A running `handler dev`, stopped on drop.
pub struct DevHost {
    host: test_support::DevHost,
}

impl DevHost {
    /// Starts `handler dev` on a copy of the function app with no `REDIS_URL`, `SMTP_URL` or
    /// `PUBLIC_URL` (test-support's launcher removes them: the dev host points the email's links
    /// at itself), and waits (bounded) until `GET /health` answers 200.
    pub async fn start() -> Self {
        let host = test_support::DevHost::builder(env!("CARGO_BIN_EXE_handler"))
            .port(free_port())
            .start();
        let host = Self { host };
        host.wait_until_healthy().await;
        host
    }

    async fn wait_until_healthy(&self) {
        let client = test_support::http_client(Duration::from_secs(2));
        let url = self.url("/health");
        let started = Instant::now();
        loop {
            let last = match client.get(&url).send().await {
                Ok(res) if res.status() == 200 => return,
                Ok(res) => format!("status {}", res.status()),
                Err(e) => e.to_string(),
            };
            assert!(
                started.elapsed() < READY_TIMEOUT,
                "`handler dev` did not answer GET {url} with 200 within {READY_TIMEOUT:?} \
                 (last: {last}); its output:\n{}",
                self.host.tail(40)
            );
            tokio::time::sleep(POLL).await;
        }
    }

    /// A URL on the dev host.
    pub fn url(&self, path: &str) -> String {
        self.host.url(path)
    }

    /// Waits (bounded) for the first `.eml` file in the outbox; panics with the dev host's log
    /// if none appears in time.
    pub async fn wait_for_email(&self, timeout: Duration) -> PathBuf {
        self.host.wait_for_email(timeout, |_| true).await.0
    }
}
