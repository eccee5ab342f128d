//! The provider-limit phase (see [`crate::provider`]): paced (SMTP_MAX_PER_MINUTE = R × 60),
//! then adaptive (no setting), each on its own limited sink and its own `handler dev`.

use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;

use crate::fixtures::copy_app;
use crate::provider::{self, Outcome};
use crate::report::Report;
use crate::session::{Services, Session};
use crate::table::{ProviderSetup, Row};

/// Both modes' outcomes and the parameters they ran with.
pub struct ProviderResult {
    pub paced: Outcome,
    pub adaptive: Outcome,
    pub setup: ProviderSetup,
}

impl ProviderResult {
    pub fn check(&self, r: &mut Report) {
        r.provider(&self.paced, &self.setup, 0.95);
        r.provider(&self.adaptive, &self.setup, 0.7);
    }
}

/// The app root both modes run on, and its maxConcurrentCalls (for the rows).
struct App {
    root: PathBuf,
    concurrent_calls: Value,
}

pub async fn run(s: &mut Session, services: &Services) -> anyhow::Result<ProviderResult> {
    let app = prepare_app(s)?;
    let setup = ProviderSetup {
        per_second: s.options.provider_rate,
        messages: s
            .options
            .provider_messages
            .unwrap_or(if s.options.smoke { 30 } else { 150 }),
    };
    let paced = mode(s, services, &app, &setup, Some(setup.per_second * 60)).await?;
    let adaptive = mode(s, services, &app, &setup, None).await?;
    Ok(ProviderResult {
        paced,
        adaptive,
        setup,
    })
}

/// A copy of the app root, with `--provider-concurrent-calls` written into its host.json.
fn prepare_app(s: &Session) -> anyhow::Result<App> {
    let app = s.dir.join("app-provider");
    copy_app(&s.options.app_root, &app)?;
    let root = std::fs::canonicalize(&app)?;
    let host_json = root.join("host.json");
    let mut host: Value = serde_json::from_slice(&std::fs::read(&host_json)?)?;
    if let Some(calls) = s.options.provider_concurrent_calls {
        host["extensions"]["serviceBus"]["maxConcurrentCalls"] = calls.into();
        std::fs::write(&host_json, serde_json::to_vec_pretty(&host)?)?;
    }
    let concurrent_calls = host["extensions"]["serviceBus"]["maxConcurrentCalls"].clone();
    Ok(App {
        root,
        concurrent_calls,
    })
}

/// One mode on a fresh limited sink: paced when `max_per_minute` is set, else adaptive.
async fn mode(
    s: &mut Session,
    services: &Services,
    app: &App,
    setup: &ProviderSetup,
    max_per_minute: Option<u32>,
) -> anyhow::Result<Outcome> {
    let per_second = setup.per_second;
    let logs = s.logs();
    let scenario = provider::Setup {
        messages: setup.messages,
        app: &app.root,
        logs: &logs,
    };
    let sink = crate::sink::limited(per_second)?;
    let mut command = Command::new(&services.handler_bin);
    s.handler_env(&mut command, &services.redis_url, sink.port());
    let outcome = provider::measure(&scenario, &sink, command, max_per_minute, &s.http).await?;
    let name = match max_per_minute {
        Some(m) => format!(
            "sendOnboarding via handler dev, sink limited to {per_second}/s, SMTP_MAX_PER_MINUTE={m}"
        ),
        None => format!(
            "sendOnboarding via handler dev, sink limited to {per_second}/s, no SMTP_MAX_PER_MINUTE"
        ),
    };
    s.report.row(Row {
        group: "provider",
        name,
        rate: Some(outcome.steady_rate),
        unit: "msg/s",
        p50_ms: None,
        p99_ms: None,
        peak_rss_mib: Some(outcome.peak_rss_mib),
        note: format!(
            "{:.2} × R; maxConcurrentCalls {}; {}",
            outcome.steady_rate / f64::from(per_second),
            app.concurrent_calls,
            outcome.describe(setup.messages)
        ),
    });
    Ok(outcome)
}
