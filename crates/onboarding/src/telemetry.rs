//! Logging: information to stdout and errors to stderr (the host files stderr as error logs), and
//! each invocation's own lines collected for the `Logs` of its answer.

use std::fmt::Write as _;
use std::future::Future;
use std::sync::{Arc, Mutex};

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::Layer;
use tracing_subscriber::fmt::writer::MakeWriterExt as _;
use tracing_subscriber::layer::{Context, SubscriberExt as _};
use tracing_subscriber::util::SubscriberInitExt as _;

/// Most lines one invocation returns in `Logs`; the rest still reach stdout.
const MAX_INVOCATION_LOG_LINES: usize = 200;

tokio::task_local! {
    static INVOCATION_LOGS: Arc<Mutex<Vec<String>>>;
}

/// Installs the global subscriber: `RUST_LOG` filters (default `info`), errors go to stderr and
/// everything else to stdout. Safe to call more than once (later calls do nothing).
pub fn init() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let writer = std::io::stderr
        .with_max_level(Level::ERROR)
        .or_else(std::io::stdout);
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(writer)
                .with_ansi(false)
                .with_target(false),
        )
        .with(InvocationLogLayer)
        .try_init();
}

/// Runs one invocation and returns, beside its result, the log lines it produced.
pub async fn capture_logs<F: Future>(work: F) -> (F::Output, Vec<String>) {
    let lines = Arc::new(Mutex::new(Vec::new()));
    let output = INVOCATION_LOGS.scope(lines.clone(), work).await;
    let lines = std::mem::take(&mut *lines.lock().unwrap_or_else(|p| p.into_inner()));
    (output, lines)
}

/// Copies each event of the current invocation's task into its log buffer.
struct InvocationLogLayer;

impl<S: Subscriber> Layer<S> for InvocationLogLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let _ = INVOCATION_LOGS.try_with(|lines| {
            let mut lines = lines.lock().unwrap_or_else(|p| p.into_inner());
            if lines.len() >= MAX_INVOCATION_LOG_LINES {
                return;
            }
            let mut line = LineVisitor(format!("{} ", event.metadata().level()));
            event.record(&mut line);
            lines.push(line.0);
        });
    }
}

/// Formats an event as `LEVEL message key=value …`.
struct LineVisitor(String);

impl Visit for LineVisitor {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.0.push_str(value);
        } else {
            let _ = write!(self.0, " {}={value}", field.name());
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.0, "{value:?}");
        } else {
            let _ = write!(self.0, " {}={value:?}", field.name());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_invocations_lines_are_captured_and_no_one_elses() {
        init();
        let (value, lines) = capture_logs(async {
            tracing::info!(user_id = 7, "created");
            42
        })
        .await;
        tracing::info!("outside");
        assert_eq!(value, 42);
        assert_eq!(lines, vec!["INFO created user_id=7".to_owned()]);
    }
}
