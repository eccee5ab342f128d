//! Load with wrk: a Lua script per phase (method, headers, a fixed body, or a body with a key
//! that is unique per request), and the summary read back as one JSON line from `done()`.
//! wrk sends `Content-Length` bodies, where the Functions host sends chunked ones; the handler
//! reads both the same way (a streamed body with a size cap), so throughput is unaffected.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context as _, bail};
use serde::Deserialize;

/// What each request's body is.
#[derive(Clone, Debug)]
pub enum Body {
    None,
    /// The same bytes every time.
    Fixed(String),
    /// `template` with every `placeholder` replaced by a key unique to the request.
    Keyed {
        template: String,
        placeholder: &'static str,
        key: Key,
    },
}

/// The unique key of a request: wrk's thread number `t` (1-based) and that thread's request
/// number `n` (1-based).
#[derive(Clone, Debug)]
pub enum Key {
    /// `<nonce>-<t>-<n>` (for unique sign-up emails).
    Text { nonce: String },
    /// The UUID `tttttttt-0000-4000-8000-nnnnnnnnnnnn` (hex), which [`seeded_user_id`] also
    /// builds: for users created beforehand.
    Uuid,
    /// `<nonce>-<t>-<m>` with `m` cycling through 1..=`per_thread`, which [`cycled_key`] also
    /// builds: the same few users created beforehand, again and again (for sign-ins).
    Cycle { nonce: String, per_thread: u64 },
}

/// The key a [`Key::Cycle`] request carries as the `m`-th (1-based) of wrk thread `t`'s cycle.
pub fn cycled_key(nonce: &str, t: u32, m: u64) -> String {
    format!("{nonce}-{t}-{m}")
}

/// The user id a [`Key::Uuid`] request number `n` of wrk thread `t` carries.
pub fn seeded_user_id(t: u32, n: u64) -> String {
    format!("{t:08x}-0000-4000-8000-{n:012x}")
}

/// One load phase.
#[derive(Clone, Debug)]
pub struct Spec {
    pub url: String,
    pub method: &'static str,
    pub headers: Vec<(String, String)>,
    pub body: Body,
    pub connections: u32,
    pub threads: u32,
    pub duration: Duration,
    /// A request slower than this counts as a timeout error (whole seconds, as wrk takes them;
    /// so is `duration`).
    pub timeout: Duration,
}

/// wrk's summary of a phase.
#[derive(Clone, Debug, Deserialize)]
pub struct Summary {
    pub requests: u64,
    pub duration_us: u64,
    pub p50_us: u64,
    pub p99_us: u64,
    #[allow(dead_code)] // parsed from wrk's summary, for reading in a debugger; not reported
    pub max_us: u64,
    pub connect: u64,
    pub read: u64,
    pub write: u64,
    /// Responses with a status of 400 or more.
    pub status: u64,
    pub timeout: u64,
    /// CPU time (user + system) the server process spent per request during the phase, in µs;
    /// steadier than the rate on a shared machine, since it does not count time others ran.
    #[serde(skip)]
    pub cpu_us_per_request: Option<f64>,
}

impl Summary {
    pub fn seconds(&self) -> f64 {
        self.duration_us as f64 / 1e6
    }

    pub fn rps(&self) -> f64 {
        self.requests as f64 / self.seconds()
    }

    /// Errors as text, empty when none.
    pub fn describe_errors(&self) -> String {
        let mut text = String::new();
        for (name, n) in [
            ("connect", self.connect),
            ("read", self.read),
            ("write", self.write),
            ("status>=400", self.status),
            ("timeout", self.timeout),
        ] {
            if n > 0 {
                let _ = write!(
                    text,
                    "{}{name} {n}",
                    if text.is_empty() { "" } else { ", " }
                );
            }
        }
        text
    }
}

/// A Lua long string holding `text` verbatim.
fn lua_string(text: &str) -> String {
    let mut level = 1;
    while text.contains(&format!("]{}]", "=".repeat(level))) {
        level += 1;
    }
    let eq = "=".repeat(level);
    format!("[{eq}[{text}]{eq}]")
}

/// The script for a phase.
pub fn script(spec: &Spec) -> String {
    let mut lua = String::new();
    let _ = writeln!(lua, "wrk.method = {}", lua_string(spec.method));
    for (name, value) in &spec.headers {
        let _ = writeln!(
            lua,
            "wrk.headers[ {} ] = {}",
            lua_string(name),
            lua_string(value)
        );
    }
    match &spec.body {
        Body::None => {}
        Body::Fixed(body) => {
            let _ = writeln!(lua, "wrk.body = {}", lua_string(body));
        }
        Body::Keyed {
            template,
            placeholder,
            key,
        } => {
            let parts: Vec<String> = template.split(placeholder).map(lua_string).collect();
            let key_expr = match key {
                Key::Text { nonce } => format!(
                    "string.format(\"%s-%d-%d\", {}, tid, counter)",
                    lua_string(nonce)
                ),
                Key::Uuid => {
                    "string.format(\"%08x-0000-4000-8000-%012x\", tid, counter)".to_owned()
                }
                Key::Cycle { nonce, per_thread } => format!(
                    "string.format(\"%s-%d-%d\", {}, tid, (counter - 1) % {per_thread} + 1)",
                    lua_string(nonce)
                ),
            };
            let _ = write!(
                lua,
                r#"
local parts = {{ {parts} }}
local counter = 0
local threads_started = 0
setup = function(thread)
  threads_started = threads_started + 1
  thread:set("tid", threads_started)
end
request = function()
  counter = counter + 1
  return wrk.format(nil, nil, nil, table.concat(parts, {key_expr}))
end
"#,
                parts = parts.join(", "),
            );
        }
    }
    lua.push_str(
        r#"
done = function(summary, latency, requests)
  local e = summary.errors
  local f = math.floor
  io.write(string.format(
    '\nBENCH_JSON {"requests":%d,"duration_us":%d,"p50_us":%d,"p99_us":%d,"max_us":%d,' ..
    '"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d}\n',
    summary.requests, summary.duration, f(latency:percentile(50)), f(latency:percentile(99)),
    f(latency.max), e.connect, e.read, e.write, e.status, e.timeout))
end
"#,
    );
    lua
}

/// Runs wrk for one phase; the script is written to `dir/<name>.lua`.
pub async fn run(name: &str, spec: &Spec, dir: &Path) -> anyhow::Result<Summary> {
    let path = dir.join(format!("{name}.lua"));
    std::fs::write(&path, script(spec))?;
    let output = tokio::process::Command::new("wrk")
        .arg("-t")
        .arg(spec.threads.min(spec.connections).to_string())
        .arg("-c")
        .arg(spec.connections.to_string())
        .arg("-d")
        .arg(format!("{}s", spec.duration.as_secs().max(1)))
        .arg("--timeout")
        .arg(format!("{}s", spec.timeout.as_secs().max(1)))
        .arg("-s")
        .arg(&path)
        .arg(&spec.url)
        .kill_on_drop(true)
        .output()
        .await
        .context("cannot run wrk (apt-get install wrk)")?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let Some(line) = stdout.lines().find_map(|l| l.strip_prefix("BENCH_JSON ")) else {
        bail!(
            "wrk gave no summary for {name} ({}):\n{stdout}\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    };
    std::fs::write(dir.join(format!("{name}.wrk.txt")), stdout.as_bytes())?;
    serde_json::from_str(line).with_context(|| format!("wrk's summary for {name}: {line}"))
}
