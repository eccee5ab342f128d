//! `handler dev`, the local host: GET /health, GET / with a token, and POST /createUser with
//! the health probe beside it.

use std::time::Duration;

use crate::envelope;
use crate::fixtures::{PLACEHOLDER, copy_app};
use crate::measure::{self, PROBE_EVERY};
use crate::preflight::Preflight;
use crate::probe::{self, ProbeRequest};
use crate::procs::{self, Child};
use crate::report::Report;
use crate::session::{Server, Services, Session};
use crate::wrk::{Body, Key, Spec};

/// The health probe's p99 beside the sign-ups.
pub struct DevResult {
    pub probe_p99_ms: f64,
}

impl DevResult {
    pub fn check(&self, r: &mut Report) {
        r.at_most(
            "GET /health p99 while sign-ups saturate hashing (dev)",
            self.probe_p99_ms,
            5.0,
            "ms",
        );
    }
}

pub async fn run(
    s: &mut Session,
    services: &Services,
    pre: &Preflight,
) -> anyhow::Result<DevResult> {
    let mut dev = start(s, services)?;
    let (pid, port) = (dev.child.pid(), dev.port);
    let spec = get(s, port, "/health", vec![]);
    let measured = measure::load(s, "dev-health", &spec, Some(pid)).await?;
    s.report
        .row(measured.row("dev", "GET /health".into(), String::new()));
    let auth = vec![("Authorization".to_owned(), format!("Bearer {}", pre.token))];
    let spec = get(s, port, "/", auth);
    let measured = measure::load(s, "dev-root", &spec, Some(pid)).await?;
    s.report
        .row(measured.row("dev", "GET / with a token".into(), String::new()));

    let probe = ProbeRequest {
        method: reqwest::Method::GET,
        url: format!("http://127.0.0.1:{port}/health"),
        headers: vec![],
        body: None,
    };
    let probe = tokio::spawn(probe::fixed_rate(probe, PROBE_EVERY, s.long));
    let measured = measure::load(s, "dev-createUser", &sign_ups(s, port), Some(pid)).await?;
    let probe = probe.await??;
    s.report.row(measured.row(
        "dev",
        "POST /createUser (unique emails; emails queued and sent)".into(),
        String::new(),
    ));
    let probe_p99_ms = measure::record_probe(
        s,
        "dev",
        format!(
            "GET /health every {} ms during POST /createUser",
            PROBE_EVERY.as_millis()
        ),
        &probe,
    );
    dev.child.stop();
    Ok(DevResult { probe_p99_ms })
}

/// `handler dev` on a copy of the app root; returns it and its port once `/health` answers.
fn start(s: &Session, services: &Services) -> anyhow::Result<Server> {
    let app = s.dir.join("app");
    copy_app(&s.options.app_root, &app)?;
    let app = std::fs::canonicalize(&app)?;
    let port = test_support::free_port();
    let mut command = std::process::Command::new(&services.handler_bin);
    s.handler_env(&mut command, &services.redis_url, services.sink.port());
    command
        .arg("dev")
        .arg("--port")
        .arg(port.to_string())
        .arg("--app-root")
        .arg(&app)
        .current_dir(&app);
    let mut dev = Child::spawn("handler-dev", command, &s.logs())?;
    procs::wait_http(&mut dev, port, "/health", 200, Duration::from_secs(30))?;
    Ok(Server { child: dev, port })
}

/// A phase of GETs to `path`.
fn get(s: &Session, port: u16, path: &str, headers: Vec<(String, String)>) -> Spec {
    Spec {
        url: format!("http://127.0.0.1:{port}{path}"),
        method: "GET",
        headers,
        body: Body::None,
        connections: s.options.connections,
        threads: s.options.threads,
        duration: s.short,
        timeout: Duration::from_secs(30),
    }
}

/// Sign-ups with unique emails, as a browser posts them (no envelope).
fn sign_ups(s: &Session, port: u16) -> Spec {
    Spec {
        url: format!("http://127.0.0.1:{port}/createUser"),
        method: "POST",
        headers: vec![("Content-Type".into(), "application/json".into())],
        body: Body::Keyed {
            template: envelope::sign_up_body(&format!("{PLACEHOLDER}@bench.example")),
            placeholder: PLACEHOLDER,
            key: Key::Text {
                nonce: format!("d{}", std::process::id()),
            },
        },
        connections: s.options.connections,
        threads: s.options.threads,
        duration: s.long,
        timeout: Duration::from_secs(30),
    }
}
