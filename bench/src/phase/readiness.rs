//! Readiness: how long from exec to the first answer to `GET /`, for the handler with Redis up,
//! with Redis down, and for a bare warp server.

use crate::probe;
use crate::report::Report;
use crate::session::{Services, Session};
use crate::table::Row;

/// The handler's median readiness (ms) with Redis up and down.
pub struct Readiness {
    pub redis_up_ms: f64,
    pub redis_down_ms: f64,
}

impl Readiness {
    pub fn check(&self, r: &mut Report) {
        r.at_most("readiness median, Redis up", self.redis_up_ms, 10.0, "ms");
        r.at_most(
            "readiness median, Redis down",
            self.redis_down_ms,
            10.0,
            "ms",
        );
    }
}

pub fn run(s: &mut Session, services: &Services) -> anyhow::Result<Readiness> {
    let runs = s
        .options
        .starts
        .unwrap_or(if s.options.smoke { 5 } else { 20 });
    let (bin, smtp_port) = (&services.handler_bin, services.sink.port());
    let closed = test_support::free_port();
    let down_url = format!("redis://127.0.0.1:{closed}/");
    let up = probe::readiness(runs, |port| {
        s.handler_command(bin, port, &services.redis_url, smtp_port)
    })?;
    let down = probe::readiness(runs, |port| {
        s.handler_command(bin, port, &down_url, smtp_port)
    })?;
    let exe = std::env::current_exe()?;
    let bare = probe::readiness(runs, |port| s.ceiling_command(&exe, port))?;
    for (name, times) in [
        ("handler, Redis up", &up),
        ("handler, Redis down (closed port)", &down),
        ("ceiling: bare warp server", &bare),
    ] {
        s.report.row(row(name, times, runs));
    }
    Ok(Readiness {
        redis_up_ms: probe::median(&up),
        redis_down_ms: probe::median(&down),
    })
}

/// A case's row: the median of its starts, with the fastest and slowest.
fn row(name: &str, times: &[f64], runs: usize) -> Row {
    let min = times.iter().copied().fold(f64::INFINITY, f64::min);
    let max = times.iter().copied().fold(0.0, f64::max);
    Row {
        group: "readiness",
        name: format!("{name}: exec → first answer to GET /"),
        rate: None,
        unit: "",
        p50_ms: Some(probe::median(times)),
        p99_ms: None,
        peak_rss_mib: None,
        note: format!("median of {runs} starts; min {min:.2} ms, max {max:.2} ms"),
    }
}
