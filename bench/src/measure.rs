//! How the phases measure: a wrk load with the server's CPU time and peak memory beside it,
//! rounds and their medians, the fixed-rate probe, and the rows these make.

use std::time::Duration;

use crate::mail;
use crate::probe::ProbeRun;
use crate::procs::{self, RssWatch};
use crate::session::Session;
use crate::table::Row;
use crate::wrk::{self, Spec};

/// Health probe interval while sign-ups saturate the hashing.
pub const PROBE_EVERY: Duration = Duration::from_millis(10);

pub const MIB: f64 = 1024.0 * 1024.0;

pub fn kib_to_mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// A rate and its unit (requests per second, or emails the sink accepted per second).
#[derive(Clone, Copy)]
pub struct Rate {
    pub per_second: f64,
    pub unit: &'static str,
}

/// One wrk phase: wrk's summary (with the server's CPU per request) and the server's peak RSS.
#[derive(Clone)]
pub struct Measured {
    pub summary: wrk::Summary,
    pub peak_rss_mib: Option<f64>,
}

/// The round with the median rate, its peak RSS the largest of all rounds', and every round's
/// rate as a note (empty for a single round).
pub struct MedianRound {
    pub measured: Measured,
    pub rounds_note: String,
}

/// How many rounds a paired comparison takes.
pub fn rounds(s: &Session) -> usize {
    if s.options.smoke { 1 } else { 5 }
}

/// A round's length: 3/5 of a phase (at least 1 s), so rounds of several sides fit in a few
/// phases' time.
pub fn round_length(s: &Session) -> Duration {
    Duration::from_secs((s.short.as_secs() * 3 / 5).max(1))
}

/// Runs one wrk phase, watching `pid`'s memory and CPU time.
pub async fn load(
    s: &Session,
    name: &str,
    spec: &Spec,
    pid: Option<u32>,
) -> anyhow::Result<Measured> {
    let watch = pid.map(RssWatch::start);
    let cpu_before = pid.and_then(|pid| procs::cpu_time(pid).ok());
    let mut summary = wrk::run(name, spec, &s.dir).await?;
    let cpu_after = pid.and_then(|pid| procs::cpu_time(pid).ok());
    if let (Some(before), Some(after)) = (cpu_before, cpu_after)
        && summary.requests > 0
    {
        summary.cpu_us_per_request =
            Some((after - before).as_secs_f64() * 1e6 / summary.requests as f64);
    }
    let peak_rss_mib = watch.map(|w| kib_to_mib(w.finish()));
    Ok(Measured {
        summary,
        peak_rss_mib,
    })
}

/// The round with the median rate (see [`MedianRound`]).
pub fn median_round(mut rounds: Vec<Measured>) -> MedianRound {
    let peak = rounds
        .iter()
        .filter_map(|r| r.peak_rss_mib)
        .reduce(f64::max);
    let rounds_note = if rounds.len() > 1 {
        let rates: Vec<String> = rounds
            .iter()
            .map(|r| format!("{:.0}", r.summary.rps()))
            .collect();
        format!("rounds: {} req/s", rates.join(", "))
    } else {
        String::new()
    };
    rounds.sort_by(|a, b| a.summary.rps().total_cmp(&b.summary.rps()));
    let mut measured = rounds.swap_remove(rounds.len() / 2);
    measured.peak_rss_mib = peak;
    MedianRound {
        measured,
        rounds_note,
    }
}

impl Measured {
    /// The row of a phase at its request rate.
    pub fn row(&self, group: &'static str, name: String, note: String) -> Row {
        let rate = Rate {
            per_second: self.summary.rps(),
            unit: "req/s",
        };
        self.row_at(group, name, rate, note)
    }

    /// The row of a phase at `rate`, with the phase's latencies and peak RSS, and the server's
    /// CPU per request and any errors beside the note.
    pub fn row_at(&self, group: &'static str, name: String, rate: Rate, note: String) -> Row {
        let summary = &self.summary;
        let errors = summary.describe_errors();
        let note = match summary.cpu_us_per_request {
            Some(cpu) if note.is_empty() => format!("CPU {cpu:.1} µs/req"),
            Some(cpu) => format!("CPU {cpu:.1} µs/req; {note}"),
            None => note,
        };
        let note = match (note.is_empty(), errors.is_empty()) {
            (_, true) => note,
            (true, false) => format!("errors: {errors}"),
            (false, false) => format!("{note}; errors: {errors}"),
        };
        Row {
            group,
            name,
            rate: Some(rate.per_second),
            unit: rate.unit,
            p50_ms: Some(summary.p50_us as f64 / 1000.0),
            p99_ms: Some(summary.p99_us as f64 / 1000.0),
            peak_rss_mib: self.peak_rss_mib,
            note,
        }
    }
}

/// Records the row of a fixed-rate probe run beside a load of `s.long`; returns its p99 in ms.
pub fn record_probe(s: &mut Session, group: &'static str, name: String, probe: &ProbeRun) -> f64 {
    let p99 = mail::percentile_ms(&probe.latencies_us, 99.0);
    s.report.row(Row {
        group,
        name,
        rate: Some(probe.latencies_us.len() as f64 / s.long.as_secs_f64()),
        unit: "req/s",
        p50_ms: Some(mail::percentile_ms(&probe.latencies_us, 50.0)),
        p99_ms: Some(p99),
        peak_rss_mib: None,
        note: probe_note(probe),
    });
    p99
}

fn probe_note(probe: &ProbeRun) -> String {
    let max = probe.latencies_us.iter().copied().max().unwrap_or(0) as f64 / 1000.0;
    let mut note = format!("{} probes, max {max:.2} ms", probe.latencies_us.len());
    if probe.failures > 0 {
        note.push_str(&format!(", {} failed", probe.failures));
    }
    note
}
