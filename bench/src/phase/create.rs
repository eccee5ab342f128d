//! createUser against raw argon2id at the product's parallelism, with the health probe beside
//! it: sign-ups must not starve the cheap requests.

use std::time::Duration;

use crate::ceilings::{self, HashRun};
use crate::envelope;
use crate::fixtures::{health_envelope, sign_up_template};
use crate::measure::{self, PROBE_EVERY};
use crate::probe::{self, ProbeRequest};
use crate::report::Report;
use crate::session::{Server, Session};
use crate::table::Row;

/// Raw hashes per second, createUser per second, and the probe's p99 beside createUser.
pub struct CreateResult {
    pub raw_hash_rate: f64,
    pub create_rate: f64,
    pub probe_p99_ms: f64,
}

impl CreateResult {
    pub fn check(&self, r: &mut Report) {
        r.ratio(
            "createUser ≥ 0.85 × raw argon2id (same parallelism)",
            self.create_rate,
            self.raw_hash_rate,
            0.85,
            "/s",
        );
        r.at_most(
            "health p99 while sign-ups saturate hashing (handler)",
            self.probe_p99_ms,
            5.0,
            "ms",
        );
    }
}

/// Raw argon2id (half before, half after), then createUser with the health probe beside it.
pub async fn run(s: &mut Session, handler: &Server) -> anyhow::Result<CreateResult> {
    let raw = RawHashing::before(s).await?;
    let (threads, half) = (raw.threads, raw.half);
    let spec = s.envelope_spec(
        handler.port,
        "createUser",
        sign_up_template("h"),
        s.options.connections,
        s.long,
    );
    let probe = tokio::spawn(probe::fixed_rate(
        health_probe(handler),
        PROBE_EVERY,
        s.long,
    ));
    let measured = measure::load(s, "createUser-handler", &spec, Some(handler.child.pid())).await?;
    let probe = probe.await??;
    let raw = raw.after(s, "createUser").await?;
    let rate = measured.summary.rps();
    let mut note = format!("{:.2} × raw argon2id", rate / raw);
    // What the whole machine could hash, when the product leaves cores out.
    if threads < s.cores {
        let all = all_cores_row(s, half).await?;
        note.push_str(&format!(", {:.2} × all cores", rate / all));
    }
    s.report.row(measured.row(
        "handler",
        "createUser (POST /createUser, unique emails)".into(),
        note,
    ));
    let probe_p99_ms = measure::record_probe(
        s,
        "handler",
        format!(
            "health probe every {} ms during createUser",
            PROBE_EVERY.as_millis()
        ),
        &probe,
    );
    Ok(CreateResult {
        raw_hash_rate: raw,
        create_rate: rate,
        probe_p99_ms,
    })
}

async fn hash(threads: usize, duration: Duration) -> anyhow::Result<HashRun> {
    tokio::task::spawn_blocking(move || ceilings::argon2_rate(threads, duration)).await?
}

/// `POST /health` with the host's envelope, as the probe beside createUser sends it.
fn health_probe(handler: &Server) -> ProbeRequest {
    ProbeRequest {
        method: reqwest::Method::POST,
        url: format!("http://127.0.0.1:{}/health", handler.port),
        headers: envelope::host_headers()
            .into_iter()
            .map(|(n, v)| (n.to_owned(), v))
            .collect(),
        body: Some(health_envelope().to_string()),
    }
}

/// Raw argon2id at the product's parallelism, timed half before and half after a product phase
/// of `s.long`, so a machine that gets busier or quieter in between moves both sides alike; the
/// sign-up and sign-in targets both take it as their ceiling.
pub struct RawHashing {
    /// The product's parallelism (--hash-threads; by default the product's rule in
    /// PasswordHasher::for_this_machine: one per core).
    pub threads: usize,
    pub half: Duration,
    before: HashRun,
}

impl RawHashing {
    /// The first half, before the product's phase.
    pub async fn before(s: &Session) -> anyhow::Result<Self> {
        let threads = s.hash_threads();
        let half = Duration::from_secs((s.long.as_secs() / 2).max(1));
        let before = hash(threads, half).await?;
        Ok(Self {
            threads,
            half,
            before,
        })
    }

    /// The second half, after the phase named `beside`, and the ceiling's row from both;
    /// returns its rate (hashes per second).
    pub async fn after(self, s: &mut Session, beside: &str) -> anyhow::Result<f64> {
        let after = hash(self.threads, self.half).await?;
        let (threads, before) = (self.threads, &self.before);
        let (hashes, secs) = (before.hashes + after.hashes, before.seconds + after.seconds);
        let raw = hashes as f64 / secs;
        s.report.row(Row {
            group: "crypto",
            name: format!("ceiling: raw argon2id m=19456 t=2 p=1, {threads} threads ({beside})"),
            rate: Some(raw),
            unit: "hash/s",
            // Hashes are timed in bulk: a mean per hash, not a percentile.
            p50_ms: None,
            p99_ms: None,
            peak_rss_mib: None,
            note: format!(
                "{hashes} hashes in {secs:.1} s, {:.2} ms each on average ({:.1}/s before {beside}, {:.1}/s after)",
                secs * 1000.0 * threads as f64 / hashes as f64,
                before.rate(),
                after.rate()
            ),
        });
        Ok(raw)
    }
}

/// Raw argon2id on every core (not a target's ceiling); returns its rate.
async fn all_cores_row(s: &mut Session, duration: Duration) -> anyhow::Result<f64> {
    let cores = s.cores;
    let run = hash(cores, duration).await?;
    let all = run.rate();
    s.report.row(Row {
        group: "crypto",
        name: format!("raw argon2id on all {cores} cores (not a target's ceiling)"),
        rate: Some(all),
        unit: "hash/s",
        p50_ms: None,
        p99_ms: None,
        peak_rss_mib: None,
        note: format!(
            "{} hashes in {:.1} s, {:.2} ms each on average",
            run.hashes,
            run.seconds,
            run.seconds * 1000.0 * cores as f64 / run.hashes as f64
        ),
    });
    Ok(all)
}
