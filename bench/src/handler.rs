//! The handler under test, started as the host starts it, and single invocations of it.

use std::time::Duration;

use anyhow::bail;
use serde_json::Value;

use crate::envelope;
use crate::measure::kib_to_mib;
use crate::procs::{self, Child};
use crate::session::{Server, Services, Session};
use crate::table::Row;

/// The handler's answer to the host: its HTTP status and the raw body.
pub struct Answer {
    pub status: u16,
    pub raw: Vec<u8>,
}

/// An HTTP function's `Outputs.res` (status and body) and the handler's raw answer.
pub struct HttpAnswer {
    pub status: u64,
    pub body: String,
    pub raw: Vec<u8>,
}

/// Starts the handler on a free port and waits until it answers `GET /`.
pub fn start(s: &Session, services: &Services) -> anyhow::Result<Server> {
    start_with(s, services, "handler", &[])
}

/// Starts a second handler, logging to `<name>.log`, with `env` over the run's environment
/// (e.g. a limit set low, where the run lifts them all), and waits until it answers `GET /`.
pub fn start_with(
    s: &Session,
    services: &Services,
    name: &str,
    env: &[(&str, &str)],
) -> anyhow::Result<Server> {
    let port = test_support::free_port();
    let mut command = s.handler_command(
        &services.handler_bin,
        port,
        &services.redis_url,
        services.sink.port(),
    );
    command.envs(env.iter().copied());
    let mut child = Child::spawn(name, command, &s.logs())?;
    procs::wait_http(&mut child, port, "/", 200, Duration::from_secs(30))?;
    Ok(Server { child, port })
}

/// RSS right after readiness and one second later; the larger is reported (MiB).
pub fn idle_rss(s: &mut Session, handler: &Server) -> anyhow::Result<f64> {
    let at_ready = procs::rss(handler.child.pid())?;
    std::thread::sleep(Duration::from_secs(1));
    let settled = procs::rss(handler.child.pid())?;
    let mib = kib_to_mib(at_ready.current_kib.max(settled.current_kib));
    s.report.row(Row {
        group: "memory",
        name: "handler idle RSS (after readiness, +1 s)".into(),
        rate: None,
        unit: "",
        p50_ms: None,
        p99_ms: None,
        peak_rss_mib: Some(mib),
        note: format!(
            "{:.1} MiB at readiness, {:.1} MiB 1 s later",
            kib_to_mib(at_ready.current_kib),
            kib_to_mib(settled.current_kib)
        ),
    });
    Ok(mib)
}

/// POSTs an envelope to the handler.
pub async fn invoke(
    s: &Session,
    port: u16,
    function: &str,
    envelope: &Value,
) -> anyhow::Result<Answer> {
    let mut request = s
        .http
        .post(format!("http://127.0.0.1:{port}/{function}"))
        .body(envelope.to_string());
    for (name, value) in envelope::host_headers() {
        request = request.header(name, value);
    }
    let response = request.send().await?;
    let status = response.status().as_u16();
    Ok(Answer {
        status,
        raw: response.bytes().await?.to_vec(),
    })
}

/// Invokes an HTTP function; the handler must answer the host 200.
pub async fn invoke_http(
    s: &Session,
    port: u16,
    function: &str,
    envelope: &Value,
) -> anyhow::Result<HttpAnswer> {
    let Answer { status, raw } = invoke(s, port, function, envelope).await?;
    if status != 200 {
        bail!(
            "{function}: the handler answered the host {status}: {}",
            String::from_utf8_lossy(&raw)
        );
    }
    let answer: Value = serde_json::from_slice(&raw)?;
    let res = &answer["Outputs"]["res"];
    Ok(HttpAnswer {
        status: res["statusCode"].as_u64().unwrap_or(0),
        body: res["body"].as_str().unwrap_or("").to_owned(),
        raw,
    })
}
