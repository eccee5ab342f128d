//! The figures a run records and the targets it checks them against: what the phases write and
//! [`report`](crate::report) prints, kept apart so neither imports the other.

use serde::Serialize;

/// One measurement.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub group: &'static str,
    pub name: String,
    /// Rate (per second) in `unit`.
    pub rate: Option<f64>,
    pub unit: &'static str,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub peak_rss_mib: Option<f64>,
    pub note: String,
}

/// One target.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub name: String,
    /// What was measured, as text (e.g. "0.82 = 9120 / 11130 req/s").
    pub measured: String,
    pub target: String,
    pub pass: bool,
}

/// The handler against its ceiling: each one's median rate, and their ratio round by round.
pub struct Paired {
    pub product: f64,
    pub ceiling: f64,
    pub ratios: Vec<f64>,
}

/// The provider-limit phase's parameters, for its checks.
pub struct ProviderSetup {
    pub per_second: u32,
    pub messages: usize,
}
