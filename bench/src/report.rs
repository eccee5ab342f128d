//! The table a run prints: one row per measurement, then each target as a ratio (or a bound)
//! with its verdict. Also written as Markdown and JSON beside the run's logs.

use std::fmt::Write as _;

use serde::Serialize;

use crate::probe;
use crate::provider::Outcome;
use crate::table::{Check, Paired, ProviderSetup, Row};

/// Everything a run found.
#[derive(Debug, Default, Serialize)]
pub struct Report {
    pub machine: Vec<(String, String)>,
    pub rows: Vec<Row>,
    pub checks: Vec<Check>,
    pub notes: Vec<String>,
}

impl Report {
    pub fn row(&mut self, row: Row) {
        eprintln!("bench:   {}", one_line(&row));
        self.rows.push(row);
    }

    /// A ratio target: `value / ceiling >= min`.
    pub fn ratio(&mut self, name: &str, value: f64, ceiling: f64, min: f64, unit: &str) {
        let ratio = value / ceiling;
        self.checks.push(Check {
            name: name.to_owned(),
            measured: format!("{ratio:.2} = {value:.1} / {ceiling:.1} {unit}"),
            target: format!("≥ {min}"),
            pass: ratio.is_finite() && ratio >= min,
        });
    }

    /// A ratio taken round by round (see `Paired`); the median decides.
    pub fn paired_ratio(&mut self, name: &str, paired: &Paired, min: f64, unit: &str) {
        let ratio = probe::median(&paired.ratios);
        let rounds: Vec<String> = paired.ratios.iter().map(|r| format!("{r:.2}")).collect();
        self.checks.push(Check {
            name: name.to_owned(),
            measured: format!(
                "{ratio:.2}, the median of {} round{} ({}); median rates {:.0} / {:.0} {unit}",
                rounds.len(),
                if rounds.len() == 1 { "" } else { "s" },
                rounds.join(", "),
                paired.product,
                paired.ceiling
            ),
            target: format!("≥ {min}"),
            pass: ratio.is_finite() && ratio >= min,
        });
    }

    /// A provider-limit mode (see provider.rs): paced (`SMTP_MAX_PER_MINUTE` set) must reach
    /// `min` × R with no refusal, adaptive `min` × R with no dead letter; either way every user
    /// gets exactly one email and the queue empties.
    pub fn provider(&mut self, outcome: &Outcome, setup: &ProviderSetup, min: f64) {
        let r = f64::from(setup.per_second);
        let ratio = outcome.steady_rate / r;
        let delivered = outcome.all_delivered(setup.messages);
        let (name, zero, count) = match outcome.max_per_minute {
            Some(m) => (
                format!(
                    "provider limit R = {r}/s, SMTP_MAX_PER_MINUTE = {m}: ≥ {min} × R, 0 refusals"
                ),
                "refusals",
                outcome.refused,
            ),
            None => (
                format!(
                    "provider limit R = {r}/s, no SMTP_MAX_PER_MINUTE: ≥ {min} × R, 0 dead letters"
                ),
                "dead letters",
                outcome.dead_letters as u64,
            ),
        };
        self.checks.push(Check {
            name,
            measured: format!(
                "{ratio:.2} × R = {:.2} msg/s first to last accepted; {count} {zero}; {}/{} emails{}",
                outcome.steady_rate,
                outcome.accepted,
                setup.messages,
                if outcome.drained { "" } else { ", queue not empty" },
            ),
            target: format!("≥ {min} × R, 0 {zero}, every user one email"),
            pass: ratio.is_finite() && ratio >= min && count == 0 && delivered,
        });
    }

    /// An upper bound: `value <= max`.
    pub fn at_most(&mut self, name: &str, value: f64, max: f64, unit: &str) {
        self.checks.push(Check {
            name: name.to_owned(),
            measured: format!("{value:.2} {unit}"),
            target: format!("≤ {max} {unit}"),
            pass: value.is_finite() && value <= max,
        });
    }

    /// The report as Markdown: machine, measurements, targets, notes.
    pub fn markdown(&self) -> String {
        let mut md = String::new();
        for (key, value) in &self.machine {
            let _ = writeln!(md, "- {key}: {value}");
        }
        md.push_str("\n| group | measurement | rate | p50 ms | p99 ms | peak RSS MiB | notes |\n");
        md.push_str("|---|---|---:|---:|---:|---:|---|\n");
        for row in &self.rows {
            let [rate, p50, p99, rss] = figures(row);
            let _ = writeln!(
                md,
                "| {} | {} | {rate} | {p50} | {p99} | {rss} | {} |",
                row.group, row.name, row.note
            );
        }
        md.push_str("\n| target | measured | wanted | |\n|---|---|---|---|\n");
        for check in &self.checks {
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} |",
                check.name,
                check.measured,
                check.target,
                if check.pass { "pass" } else { "**MISS**" }
            );
        }
        if !self.notes.is_empty() {
            md.push('\n');
            for note in &self.notes {
                let _ = writeln!(md, "- {note}");
            }
        }
        md
    }
}

fn one_line(row: &Row) -> String {
    let [rate, p50, p99, rss] = figures(row);
    format!(
        "{:<9} {:<52} {rate:>14} p50 {p50:>8} p99 {p99:>8} rss {rss:>6} {}",
        row.group, row.name, row.note
    )
}

/// A row's rate (with its unit), p50, p99 and peak RSS as text; empty where not measured.
fn figures(row: &Row) -> [String; 4] {
    [
        row.rate
            .map(|r| format!("{} {}", fmt_rate(r), row.unit))
            .unwrap_or_default(),
        fmt_opt(row.p50_ms),
        fmt_opt(row.p99_ms),
        row.peak_rss_mib
            .map(|m| format!("{m:.1}"))
            .unwrap_or_default(),
    ]
}

fn fmt_rate(rate: f64) -> String {
    if rate >= 100.0 {
        format!("{rate:.0}")
    } else {
        format!("{rate:.1}")
    }
}

fn fmt_opt(ms: Option<f64>) -> String {
    match ms {
        Some(v) if v.is_finite() && v >= 100.0 => format!("{v:.0}"),
        Some(v) if v.is_finite() => format!("{v:.2}"),
        _ => String::new(),
    }
}
