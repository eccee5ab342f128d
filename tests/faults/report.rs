//! The figures each scenario reports: a table on stdout (`cargo test --test faults --
//! --nocapture` shows it) and `target/fault-report/<scenario>.json` for the README.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Serialize;
use serde_json::Value;

/// What one scenario measured.
#[derive(Debug, Clone, Serialize, Default)]
pub struct Figures {
    pub scenario: String,
    /// HTTP requests the load sent (retries included).
    pub requests_sent: usize,
    /// Answers by status; "no answer" counts timeouts and broken connections.
    pub answers: BTreeMap<String, usize>,
    /// Distinct users that got a 201 or 200.
    pub acknowledged: usize,
    /// Acknowledged users whose token opens their profile afterwards.
    pub users_present: usize,
    /// Messages the SMTP server accepted.
    pub emails_sent: usize,
    /// Acknowledged users with no email.
    pub emails_missing: usize,
    /// Recipients with more than one email.
    pub duplicates: usize,
    /// Emails beyond the first, over all recipients.
    pub extra_emails: usize,
    /// Time from the fault's end (restart) to the first success after it, in ms.
    pub recovery_ms: Option<u64>,
    /// Sign-up latencies (none for scenarios without sign-up load).
    pub latency_p50_ms: Option<u64>,
    pub latency_p99_ms: Option<u64>,
    pub latency_max_ms: Option<u64>,
    pub dead_lettered: usize,
    /// Scenario-specific figures.
    pub details: BTreeMap<String, Value>,
}

impl Figures {
    /// A scenario-specific figure.
    pub fn detail(&mut self, name: &str, value: impl Into<Value>) {
        self.details.insert(name.to_owned(), value.into());
    }

    /// Prints the table and writes the JSON file; returns the file's path.
    pub fn publish(&self) -> PathBuf {
        let mut rows: Vec<(String, String)> = vec![
            ("requests sent".into(), self.requests_sent.to_string()),
            (
                "answers".into(),
                self.answers
                    .iter()
                    .map(|(k, v)| format!("{k}: {v}"))
                    .collect::<Vec<_>>()
                    .join(", "),
            ),
            (
                "acknowledged (201/200)".into(),
                self.acknowledged.to_string(),
            ),
            ("users present".into(), self.users_present.to_string()),
            ("emails sent".into(), self.emails_sent.to_string()),
            ("emails missing".into(), self.emails_missing.to_string()),
            (
                "duplicates (recipients)".into(),
                self.duplicates.to_string(),
            ),
            ("extra emails".into(), self.extra_emails.to_string()),
            (
                "recovery".into(),
                self.recovery_ms
                    .map_or_else(|| "-".to_owned(), |ms| format!("{ms} ms")),
            ),
            (
                "latency p50 / p99 / max".into(),
                match (
                    self.latency_p50_ms,
                    self.latency_p99_ms,
                    self.latency_max_ms,
                ) {
                    (Some(p50), Some(p99), Some(max)) => format!("{p50} / {p99} / {max} ms"),
                    _ => "-".to_owned(),
                },
            ),
            ("dead-lettered".into(), self.dead_lettered.to_string()),
        ];
        for (name, value) in &self.details {
            let text = match value {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            rows.push((name.clone(), text));
        }
        let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
        let mut table = format!("\n== fault scenario: {} ==\n", self.scenario);
        for (name, value) in rows {
            table.push_str(&format!("  {name:<width$}  {value}\n"));
        }
        println!("{table}");

        let dir = target_dir().join("fault-report");
        std::fs::create_dir_all(&dir).expect("create target/fault-report");
        let path = dir.join(format!("{}.json", self.scenario));
        let mut json = serde_json::to_string_pretty(self).expect("figures as JSON");
        json.push('\n');
        std::fs::write(&path, json).expect("write the fault report");
        println!("  written to {}", path.display());
        path
    }
}

/// Cargo's target directory: `CARGO_TARGET_DIR` when set, else `<repository>/target`.
fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target"))
}
