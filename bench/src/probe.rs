//! Timed requests outside wrk: the light fixed-rate health probe that runs beside a saturating
//! load, and the readiness timing of freshly started processes.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::bail;

use crate::procs;

/// A request the probe repeats.
#[derive(Clone)]
pub struct ProbeRequest {
    pub method: reqwest::Method,
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: Option<String>,
}

/// Latencies of a probe, in microseconds, and how many answers were not 2xx (or failed).
#[derive(Debug, Default, Clone)]
pub struct ProbeRun {
    pub latencies_us: Vec<u64>,
    pub failures: u64,
}

/// Sends `request` every `every` (one at a time, on one kept-alive connection) until `duration`
/// has passed. Open-loop enough at this rate: the probe adds ~nothing to the load it measures.
pub async fn fixed_rate(
    request: ProbeRequest,
    every: Duration,
    duration: Duration,
) -> anyhow::Result<ProbeRun> {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(1)
        .timeout(Duration::from_secs(10))
        .build()?;
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let deadline = Instant::now() + duration;
    let mut run = ProbeRun::default();
    while Instant::now() < deadline {
        ticks.tick().await;
        let mut builder = client.request(request.method.clone(), &request.url);
        for (name, value) in &request.headers {
            builder = builder.header(name, value);
        }
        if let Some(body) = &request.body {
            builder = builder.body(body.clone());
        }
        let started = Instant::now();
        let result = match builder.send().await {
            Ok(response) => {
                let ok = response.status().is_success();
                response.bytes().await.ok().filter(|_| ok)
            }
            Err(_) => None,
        };
        let elapsed = started.elapsed().as_micros() as u64;
        match result {
            Some(_) => run.latencies_us.push(elapsed),
            None => run.failures += 1,
        }
    }
    Ok(run)
}

/// Starts the command made by `make(port)` `runs` times; each time, measures from just before
/// exec until `GET /` on the port gets any HTTP answer, polling every millisecond; then stops it.
/// Returns the times in milliseconds.
pub fn readiness(runs: usize, make: impl Fn(u16) -> Command) -> anyhow::Result<Vec<f64>> {
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs {
        let port = test_support::free_port();
        let mut command = make(port);
        command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let started = Instant::now();
        let child = command.spawn()?;
        let mut child = procs::Child {
            name: "readiness".into(),
            child,
        };
        let elapsed = loop {
            if procs::http_get_status(port, "/", Duration::from_secs(2)).is_some() {
                break started.elapsed();
            }
            if started.elapsed() > Duration::from_secs(10) {
                bail!("no answer to GET / within 10 s of exec");
            }
            child.check_alive()?;
            std::thread::sleep(Duration::from_millis(1));
        };
        times.push(elapsed.as_secs_f64() * 1000.0);
        child.stop();
    }
    Ok(times)
}

/// The median of a list of numbers.
pub fn median(values: &[f64]) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let mid = sorted.len() / 2;
    if sorted.len().is_multiple_of(2) {
        (sorted[mid - 1] + sorted[mid]) / 2.0
    } else {
        sorted[mid]
    }
}
