//! One benchmark run: start the servers, measure the ceilings and the product side by side, and
//! check the targets. Phases that are compared run next to each other, so a machine that gets
//! busier during the run skews a ratio as little as possible.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use serde_json::Value;

use crate::ceilings;
use crate::envelope;
use crate::mail::{self, MailRun, Sample};
use crate::probe::{self, ProbeRequest};
use crate::procs::{self, Child, RssWatch};
use crate::provider;
use crate::report::{Report, Row};
use crate::sink::Sink;
use crate::wrk::{self, Body, Key, Spec};

/// The HS256 key of the run (≥ 32 bytes).
const JWT_SECRET: &str = "bench-only-secret-0123456789abcdef0123456789";
/// Keys of the run live under this prefix.
const KEY_PREFIX: &str = "bench:";
/// The placeholder a keyed body carries.
const PLACEHOLDER: &str = "BENCHKEY";
/// Health probe interval while sign-ups saturate the hashing.
const PROBE_EVERY: Duration = Duration::from_millis(10);

/// Options of `bench run`.
#[derive(Debug, Clone, clap::Args)]
pub struct Options {
    /// A short run (1 s per phase, fewer starts): checks the benchmark works, not the numbers.
    #[arg(long)]
    pub smoke: bool,
    /// The release handler binary.
    #[arg(long, default_value = "target/release/handler")]
    pub handler: PathBuf,
    /// The function app's root (host.json and the function folders), for `handler dev`.
    #[arg(long, default_value = ".")]
    pub app_root: PathBuf,
    /// Where logs, wrk scripts, results.json and results.md go (emptied first).
    #[arg(long, default_value = "target/bench/last-run")]
    pub out: PathBuf,
    /// Connections of every HTTP, store and mail phase (the fixed concurrency).
    #[arg(long, default_value_t = 16)]
    pub connections: u32,
    /// Connections of the memory phase (concurrent sign-ups).
    #[arg(long, default_value_t = 200)]
    pub signup_connections: u32,
    /// wrk threads.
    #[arg(long, default_value_t = 2)]
    pub threads: u32,
    /// Seconds per phase (default 5, smoke 1); hashing and memory phases take twice as long.
    #[arg(long)]
    pub seconds: Option<u64>,
    /// Starts per readiness case (default 20, smoke 5).
    #[arg(long)]
    pub starts: Option<usize>,
    /// How many argon2id hashes the handler runs at once, for the raw ceiling at the same
    /// parallelism (default: the product's rule, one per core).
    #[arg(long)]
    pub hash_threads: Option<usize>,
    /// Only these phases (comma-separated): store, http, create, mail, memory, dev, readiness,
    /// provider.
    #[arg(long, value_delimiter = ',')]
    pub only: Vec<String>,
    /// The provider-limit phase's sink limit, messages per second.
    #[arg(long, default_value_t = 10)]
    pub provider_rate: u32,
    /// Users signed up (one email each) per run of the provider-limit phase (default 150, smoke 30).
    #[arg(long)]
    pub provider_messages: Option<usize>,
    /// The provider-limit phase's maxConcurrentCalls, written into its copy of host.json
    /// (default: host.json's own).
    #[arg(long)]
    pub provider_concurrent_calls: Option<u64>,
    /// Extra environment for the handler and `handler dev` (NAME=VALUE; repeatable), e.g. RUST_LOG.
    #[arg(long = "handler-env", value_parser = parse_env)]
    pub handler_env: Vec<(String, String)>,
}

fn parse_env(text: &str) -> Result<(String, String), String> {
    text.split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("expected NAME=VALUE, got {text:?}"))
}

struct Run {
    options: Options,
    dir: PathBuf,
    short: Duration,
    long: Duration,
    http: reqwest::Client,
    report: Report,
    cores: usize,
}

/// The handler under test, as the host would start it.
struct Handler {
    child: Child,
    port: u16,
}

/// What the preflight learned: the user and their token (the handler's answers, which the
/// ceilings replay, it wrote to the run's directory).
struct Preflight {
    user_id: String,
    token: String,
    user_record: Value,
    sample: Sample,
}

/// The phases `--only` may name.
const PHASES: [&str; 8] = [
    "store",
    "http",
    "create",
    "mail",
    "memory",
    "dev",
    "readiness",
    "provider",
];

pub async fn run(options: Options) -> anyhow::Result<Report> {
    let started = Instant::now();
    if let Some(unknown) = options.only.iter().find(|p| !PHASES.contains(&p.as_str())) {
        bail!(
            "--only: no phase {unknown:?} (the phases: {})",
            PHASES.join(", ")
        );
    }
    let dir = options.out.clone();
    if dir.exists() {
        std::fs::remove_dir_all(&dir).with_context(|| format!("cannot empty {}", dir.display()))?;
    }
    std::fs::create_dir_all(dir.join("logs"))?;
    // Children run in other folders: every path they get must be absolute.
    let dir = std::fs::canonicalize(&dir)?;
    let secs = options.seconds.unwrap_or(if options.smoke { 1 } else { 5 });
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let mut run = Run {
        short: Duration::from_secs(secs),
        long: Duration::from_secs(if options.smoke { secs } else { secs * 2 }),
        options,
        dir,
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()?,
        report: Report::default(),
        cores,
    };
    run.describe_machine("load average at start");
    let handler_bin = std::fs::canonicalize(&run.options.handler).with_context(|| {
        format!(
            "{} not found: build it first (cargo build --release)",
            run.options.handler.display()
        )
    })?;

    let logs = run.dir.join("logs");
    let redis_port = procs::free_port()?;
    let _redis = procs::start_redis(redis_port, &logs)?;
    let redis_url = format!("redis://127.0.0.1:{redis_port}/");
    let sink = Sink::start()?;
    eprintln!(
        "bench: redis-server on {redis_port}, SMTP sink on {}, {} connections, {} s phases",
        sink.port, run.options.connections, secs
    );

    let mut handler = run.start_handler(&handler_bin, &redis_url, sink.port)?;
    let idle = run.idle_rss(&handler)?;
    let pre = run.preflight(&handler, &sink, &redis_url).await?;

    let want =
        |phase: &str| run.options.only.is_empty() || run.options.only.iter().any(|p| p == phase);
    let want_provider = want("provider");
    let (want_store, want_http, want_create, want_mail, want_memory, want_dev, want_ready) = (
        want("store"),
        want("http"),
        want("create"),
        want("mail"),
        want("memory"),
        want("dev"),
        want("readiness"),
    );
    if want_store {
        run.store(redis_port, &pre).await?;
    }
    let (health, root) = if want_http {
        let ceilings = run.start_ceilings(&pre, &redis_url)?;
        let health = run.health(&handler, &ceilings).await?;
        let root = run.root(&handler, &ceilings, &pre).await?;
        (Some(health), Some(root))
    } else {
        (None, None)
    };
    let create = if want_create {
        Some(run.create_user(&handler).await?)
    } else {
        None
    };
    let mail = if want_mail {
        Some(run.mail(&handler, &sink, &redis_url, &pre).await?)
    } else {
        None
    };
    let signup_peak = if want_memory {
        Some(run.signups_memory(&handler).await?)
    } else {
        None
    };
    handler.child.stop();
    let dev_probe_p99 = if want_dev {
        Some(run.dev(&handler_bin, &redis_url, sink.port, &pre).await?)
    } else {
        None
    };
    let readiness = if want_ready {
        Some(run.readiness(&handler_bin, &redis_url, sink.port)?)
    } else {
        None
    };
    let provider = if want_provider {
        Some(run.provider(&handler_bin, &redis_url).await?)
    } else {
        None
    };
    let binary_mib = procs::file_size(&handler_bin)? as f64 / MIB;
    run.report.row(Row {
        group: "binary",
        name: format!("{} (stripped release)", run.options.handler.display()),
        rate: None,
        unit: "",
        p50_ms: None,
        p99_ms: None,
        peak_rss_mib: None,
        note: format!("{binary_mib:.2} MiB"),
    });

    // Targets.
    let r = &mut run.report;
    if let (Some(health), Some(root)) = (health, root) {
        r.paired_ratio("health ≥ 0.7 × warp + PING", &health, 0.7, "req/s");
        r.paired_ratio("root ≥ 0.7 × warp + GET", &root, 0.7, "req/s");
    }
    if let Some((argon2_rate, create_rate, probe_p99)) = create {
        r.ratio(
            "createUser ≥ 0.85 × raw argon2id (same parallelism)",
            create_rate,
            argon2_rate,
            0.85,
            "/s",
        );
        r.at_most(
            "health p99 while sign-ups saturate hashing (handler)",
            probe_p99,
            5.0,
            "ms",
        );
    }
    if let Some(p99) = dev_probe_p99 {
        r.at_most(
            "GET /health p99 while sign-ups saturate hashing (dev)",
            p99,
            5.0,
            "ms",
        );
    }
    if let Some(mail) = mail {
        r.ratio(
            "sendOnboarding ≥ 0.7 × pooled lettre (as configured: Nagle on)",
            mail.product,
            mail.lettre_pooled,
            0.7,
            "msg/s",
        );
        r.ratio(
            "sendOnboarding ≥ 0.7 × lettre pool over TCP_NODELAY (stall removed)",
            mail.product,
            mail.nodelay_pool,
            0.7,
            "msg/s",
        );
        r.paired_ratio(
            "sendOnboarding ≥ 0.75 × like-for-like diagnostic (warp + its Redis round trips + the product's SMTP client)",
            &mail.like_for_like,
            0.75,
            "msg/s",
        );
    }
    if let Some((paced, adaptive, setup)) = &provider {
        r.provider(paced, setup, 0.95);
        r.provider(adaptive, setup, 0.7);
    }
    if let Some(readiness) = readiness {
        r.at_most("readiness median, Redis up", readiness.0, 10.0, "ms");
        r.at_most("readiness median, Redis down", readiness.1, 10.0, "ms");
    }
    r.at_most("idle RSS after readiness", idle, 12.0, "MiB");
    if let Some(peak) = signup_peak {
        r.at_most(
            &format!(
                "peak RSS, {} concurrent sign-ups",
                run.options.signup_connections
            ),
            peak,
            150.0,
            "MiB",
        );
    }
    r.at_most("stripped release binary", binary_mib, 10.0, "MiB");

    run.describe_machine("load average at end");
    run.report.machine.push((
        "run time".into(),
        format!("{:.0} s", started.elapsed().as_secs_f64()),
    ));
    std::fs::write(run.dir.join("results.md"), run.report.markdown())?;
    std::fs::write(
        run.dir.join("results.json"),
        serde_json::to_string_pretty(&run.report)?,
    )?;
    Ok(run.report)
}

const MIB: f64 = 1024.0 * 1024.0;

fn kib_to_mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

impl Run {
    fn describe_machine(&mut self, load_label: &str) {
        let machine = &mut self.report.machine;
        if machine.is_empty() {
            let cpu = std::fs::read_to_string("/proc/cpuinfo")
                .ok()
                .and_then(|c| {
                    c.lines()
                        .find_map(|l| l.strip_prefix("model name"))
                        .map(|m| m.trim_start_matches([' ', '\t', ':']).to_owned())
                })
                .unwrap_or_else(|| "?".into());
            machine.push((
                "cpu".into(),
                format!("{cpu}, {} cores available", self.cores),
            ));
            let mem = std::fs::read_to_string("/proc/meminfo")
                .ok()
                .and_then(|m| {
                    m.lines()
                        .next()
                        .map(|l| l.split_whitespace().nth(1).unwrap_or("0").to_owned())
                })
                .and_then(|k| k.parse::<f64>().ok())
                .map(|k| format!("{:.1} GiB", k / 1024.0 / 1024.0))
                .unwrap_or_default();
            machine.push(("memory".into(), mem));
            let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
            let debian = std::fs::read_to_string("/etc/debian_version").unwrap_or_default();
            machine.push((
                "os".into(),
                format!("Linux {}, Debian {}", kernel.trim(), debian.trim()),
            ));
            for (name, args) in [
                ("wrk", vec!["-v"]),
                ("redis-server", vec!["--version"]),
                ("rustc", vec!["--version"]),
            ] {
                let version = Command::new(name)
                    .args(&args)
                    .output()
                    .map(|o| {
                        let text = format!(
                            "{}{}",
                            String::from_utf8_lossy(&o.stdout),
                            String::from_utf8_lossy(&o.stderr)
                        );
                        text.lines().next().unwrap_or("").trim().to_owned()
                    })
                    .unwrap_or_else(|_| "not found".into());
                machine.push((name.into(), version));
            }
            machine.push((
                "concurrency".into(),
                format!(
                    "{} connections ({} wrk threads) for every HTTP, store and mail phase; {} for the memory phase",
                    self.options.connections, self.options.threads, self.options.signup_connections
                ),
            ));
        }
        let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
        let load: Vec<&str> = load.split_whitespace().take(3).collect();
        machine.push((load_label.into(), load.join(" ")));
    }

    fn handler_env(&self, command: &mut Command, redis_url: &str, smtp_port: u16) {
        command
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("REDIS_URL", redis_url)
            .env("REDIS_KEY_PREFIX", KEY_PREFIX)
            .env("JWT_SECRET", JWT_SECRET)
            .env("SMTP_URL", format!("smtp://127.0.0.1:{smtp_port}"))
            .env("MAIL_FROM", "Onboarding <onboarding@bench.example>")
            .env("PUBLIC_URL", "https://bench.example.net/")
            .envs(self.options.handler_env.iter().map(|(k, v)| (k, v)));
    }

    fn handler_command(&self, bin: &Path, port: u16, redis_url: &str, smtp_port: u16) -> Command {
        let mut command = Command::new(bin);
        self.handler_env(&mut command, redis_url, smtp_port);
        command
            .env("FUNCTIONS_CUSTOMHANDLER_PORT", port.to_string())
            .current_dir(&self.dir);
        command
    }

    fn start_handler(
        &self,
        bin: &Path,
        redis_url: &str,
        smtp_port: u16,
    ) -> anyhow::Result<Handler> {
        let port = procs::free_port()?;
        let command = self.handler_command(bin, port, redis_url, smtp_port);
        let mut child = Child::spawn("handler", command, &self.dir.join("logs"))?;
        procs::wait_http(&mut child, port, "/", 200, Duration::from_secs(30))?;
        Ok(Handler { child, port })
    }

    /// RSS right after readiness and one second later; the larger is reported.
    fn idle_rss(&mut self, handler: &Handler) -> anyhow::Result<f64> {
        let at_ready = procs::rss(handler.child.pid())?;
        std::thread::sleep(Duration::from_secs(1));
        let settled = procs::rss(handler.child.pid())?;
        let mib = kib_to_mib(at_ready.current_kib.max(settled.current_kib));
        self.report.row(Row {
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

    /// POSTs an envelope to the handler; returns the HTTP status and the raw answer.
    async fn invoke(
        &self,
        port: u16,
        function: &str,
        envelope: &Value,
    ) -> anyhow::Result<(u16, Vec<u8>)> {
        let mut request = self
            .http
            .post(format!("http://127.0.0.1:{port}/{function}"))
            .body(envelope.to_string());
        for (name, value) in envelope::host_headers() {
            request = request.header(name, value);
        }
        let response = request.send().await?;
        let status = response.status().as_u16();
        Ok((status, response.bytes().await?.to_vec()))
    }

    /// Invokes an HTTP function and returns `Outputs.res` (status, body) and the raw answer.
    async fn invoke_http(
        &self,
        port: u16,
        function: &str,
        envelope: &Value,
    ) -> anyhow::Result<(u64, String, Vec<u8>)> {
        let (status, raw) = self.invoke(port, function, envelope).await?;
        if status != 200 {
            bail!(
                "{function}: the handler answered the host {status}: {}",
                String::from_utf8_lossy(&raw)
            );
        }
        let answer: Value = serde_json::from_slice(&raw)?;
        let res = &answer["Outputs"]["res"];
        Ok((
            res["statusCode"].as_u64().unwrap_or(0),
            res["body"].as_str().unwrap_or("").to_owned(),
            raw,
        ))
    }

    /// Signs one user up, captures the handler's answers to health and root, sends that user's
    /// email and keeps the copy the sink received.
    async fn preflight(
        &mut self,
        handler: &Handler,
        sink: &Sink,
        redis_url: &str,
    ) -> anyhow::Result<Preflight> {
        let body = envelope::sign_up_body("first@bench.example");
        let sign_up = envelope::http(
            "POST",
            "/createUser",
            &[("Content-Type", "application/json")],
            Some(&body),
        );
        let (status, body, _) = self
            .invoke_http(handler.port, "createUser", &sign_up)
            .await?;
        if status != 201 {
            bail!("preflight sign-up answered {status}: {body}");
        }
        let created: Value = serde_json::from_str(&body)?;
        let user_id = created["id"].as_str().context("no id")?.to_owned();
        let token = created["token"].as_str().context("no token")?.to_owned();

        let (status, body, health_answer) = self
            .invoke_http(handler.port, "health", &health_envelope())
            .await?;
        if status != 200 {
            bail!("preflight health answered {status}: {body}");
        }
        let (status, body, root_answer) = self
            .invoke_http(handler.port, "root", &root_envelope(&token))
            .await?;
        if status != 200 {
            bail!("preflight root answered {status}: {body}");
        }

        sink.capture_next();
        let message = envelope::service_bus(&envelope::onboarding_message(
            &user_id,
            "first@bench.example",
        ));
        let (status, raw) = self
            .invoke(handler.port, "sendOnboarding", &message)
            .await?;
        if status != 200 {
            bail!(
                "preflight sendOnboarding answered {status}: {}",
                String::from_utf8_lossy(&raw)
            );
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        let data = loop {
            if let Some(data) = sink.captured() {
                break data;
            }
            if Instant::now() > deadline {
                bail!("the sink received no email from the preflight sendOnboarding");
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        let sample = Sample::new(data)?;

        let mut redis = redis::Client::open(redis_url)?
            .get_multiplexed_async_connection()
            .await?;
        let record: String = redis::cmd("GET")
            .arg(user_key(&user_id))
            .query_async(&mut redis)
            .await
            .context("the preflight user's record is not where the bench expects it")?;
        let user_record: Value = serde_json::from_str(&record)?;
        std::fs::write(self.dir.join("health-answer.json"), &health_answer)?;
        std::fs::write(self.dir.join("root-answer.json"), &root_answer)?;
        std::fs::write(self.dir.join("email.eml"), sample.data.as_slice())?;
        self.report.notes.push(format!(
            "Invocation envelopes: health {} B, root {} B, createUser {} B, sendOnboarding {} B; answers: health {} B, root {} B; the email {} B.",
            health_envelope().to_string().len(),
            root_envelope(&token).to_string().len(),
            sign_up.to_string().len(),
            message.to_string().len(),
            health_answer.len(),
            root_answer.len(),
            sample.data.len()
        ));
        Ok(Preflight {
            user_id,
            token,
            user_record,
            sample,
        })
    }

    fn envelope_spec(
        &self,
        port: u16,
        function: &str,
        body: Body,
        connections: u32,
        duration: Duration,
    ) -> Spec {
        Spec {
            url: format!("http://127.0.0.1:{port}/{function}"),
            method: "POST",
            headers: envelope::host_headers()
                .into_iter()
                .map(|(n, v)| (n.to_owned(), v))
                .collect(),
            body,
            connections,
            threads: self.options.threads,
            duration,
            timeout: Duration::from_secs(30),
        }
    }

    /// Runs one wrk phase, watching `pid`'s memory; returns the summary and the peak RSS (MiB).
    async fn load(
        &self,
        name: &str,
        spec: &Spec,
        pid: Option<u32>,
    ) -> anyhow::Result<(wrk::Summary, Option<f64>)> {
        let watch = pid.map(RssWatch::start);
        let cpu_before = pid.and_then(|pid| procs::cpu_time(pid).ok());
        let mut summary = wrk::run(name, spec, &self.dir).await?;
        let cpu_after = pid.and_then(|pid| procs::cpu_time(pid).ok());
        if let (Some(before), Some(after)) = (cpu_before, cpu_after)
            && summary.requests > 0
        {
            summary.cpu_us_per_request =
                Some((after - before).as_secs_f64() * 1e6 / summary.requests as f64);
        }
        let peak = watch.map(|w| kib_to_mib(w.finish()));
        Ok((summary, peak))
    }

    /// The row of a fixed-rate probe run beside a load; returns its p99 in ms.
    fn probe_row(&mut self, group: &'static str, name: String, probe: &probe::ProbeRun) -> f64 {
        let p99 = mail::percentile_ms(&probe.latencies_us, 99.0);
        self.report.row(Row {
            group,
            name,
            rate: Some(probe.latencies_us.len() as f64 / self.long.as_secs_f64()),
            unit: "req/s",
            p50_ms: Some(mail::percentile_ms(&probe.latencies_us, 50.0)),
            p99_ms: Some(p99),
            peak_rss_mib: None,
            note: probe_note(probe),
        });
        p99
    }

    fn wrk_row(
        &mut self,
        group: &'static str,
        name: String,
        summary: &wrk::Summary,
        peak: Option<f64>,
        note: String,
    ) {
        self.load_row(group, name, summary, peak, (summary.rps(), "req/s"), note);
    }

    /// A row for a wrk phase at `rate` (requests per second, or for mail the emails the sink
    /// accepted per second), with the phase's latencies and peak RSS, and the server's CPU per
    /// request and any errors beside the note.
    fn load_row(
        &mut self,
        group: &'static str,
        name: String,
        summary: &wrk::Summary,
        peak: Option<f64>,
        (rate, unit): (f64, &'static str),
        note: String,
    ) {
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
        self.report.row(Row {
            group,
            name,
            rate: Some(rate),
            unit,
            p50_ms: Some(summary.p50_us as f64 / 1000.0),
            p99_ms: Some(summary.p99_us as f64 / 1000.0),
            peak_rss_mib: peak,
            note,
        });
    }

    /// The store ceiling: redis-benchmark at the same concurrency.
    async fn store(&mut self, redis_port: u16, pre: &Preflight) -> anyhow::Result<()> {
        let requests = if self.options.smoke { 20_000 } else { 200_000 };
        let size = pre.user_record.to_string().len();
        for result in
            ceilings::redis_benchmark(redis_port, self.options.connections, requests, size).await?
        {
            if !matches!(result.test.as_str(), "PING_MBULK" | "GET") {
                continue;
            }
            self.report.row(Row {
                group: "store",
                name: format!(
                    "redis-benchmark {} (-c {}, -d {size})",
                    result.test, self.options.connections
                ),
                rate: Some(result.rps),
                unit: "req/s",
                p50_ms: Some(result.p50_ms),
                p99_ms: Some(result.p99_ms),
                peak_rss_mib: None,
                note: "ceiling".into(),
            });
        }
        Ok(())
    }

    /// `bench serve-ceiling` (this program, `exe`) on `port`, answering the handler's own health
    /// and root answers (the preflight wrote them); callers add the Redis and mail options.
    fn ceiling_command(&self, exe: &Path, port: u16) -> Command {
        let mut command = Command::new(exe);
        command
            .arg("serve-ceiling")
            .arg("--port")
            .arg(port.to_string())
            .arg("--health-answer")
            .arg(self.dir.join("health-answer.json"))
            .arg("--root-answer")
            .arg(self.dir.join("root-answer.json"));
        command
    }

    /// The two warp ceiling servers: plain, and with one Redis command per request.
    fn start_ceilings(&self, pre: &Preflight, redis_url: &str) -> anyhow::Result<Ceilings> {
        let exe = std::env::current_exe()?;
        let start =
            |name: &str, redis: Option<&str>, second: bool| -> anyhow::Result<(Child, u16)> {
                let port = procs::free_port()?;
                let mut command = self.ceiling_command(&exe, port);
                if let Some(url) = redis {
                    command
                        .arg("--redis")
                        .arg(url)
                        .arg("--root-key")
                        .arg(user_key(&pre.user_id));
                    if second {
                        command
                            .arg("--root-second-key")
                            .arg(marker_key(&pre.user_id));
                    }
                }
                let mut child = Child::spawn(name, command, &self.dir.join("logs"))?;
                procs::wait_http(&mut child, port, "/", 200, Duration::from_secs(10))?;
                Ok((child, port))
            };
        let (plain, plain_port) = start("warp-plain", None, false)?;
        let (with_redis, redis_port) = start("warp-redis", Some(redis_url), false)?;
        let (with_pipeline, pipeline_port) = start("warp-redis-pipeline", Some(redis_url), true)?;
        Ok(Ceilings {
            plain,
            plain_port,
            with_redis,
            redis_port,
            with_pipeline,
            pipeline_port,
        })
    }

    /// health: warp, warp + PING, the handler, round by round.
    async fn health(&mut self, handler: &Handler, c: &Ceilings) -> anyhow::Result<Paired> {
        let body = Body::Fixed(health_envelope().to_string());
        self.http_trio("health", body, handler, c, "PING").await
    }

    /// root: warp, warp + GET, the handler, round by round.
    async fn root(
        &mut self,
        handler: &Handler,
        c: &Ceilings,
        pre: &Preflight,
    ) -> anyhow::Result<Paired> {
        let body = Body::Fixed(root_envelope(&pre.token).to_string());
        self.http_trio("root", body, handler, c, "GET").await
    }

    /// Rounds of (warp, warp + Redis, handler), each 3/5 of a phase long (at least 1 s): the
    /// targets take the median of the round-by-round ratios, each row the round with the median
    /// rate, so one disturbed round does not decide.
    async fn http_trio(
        &mut self,
        function: &str,
        body: Body,
        handler: &Handler,
        c: &Ceilings,
        command: &str,
    ) -> anyhow::Result<Paired> {
        let n = self.options.connections;
        let rounds = self.rounds();
        let each = Duration::from_secs((self.short.as_secs() * 3 / 5).max(1));
        let mut targets = vec![
            (c.plain_port, c.plain.pid(), "warp"),
            (c.redis_port, c.with_redis.pid(), "warp-redis"),
            (handler.port, handler.child.pid(), "handler"),
        ];
        if function == "root" {
            targets.push((
                c.pipeline_port,
                c.with_pipeline.pid(),
                "warp-redis-pipeline",
            ));
        }
        let mut results: Vec<Vec<(wrk::Summary, Option<f64>)>> = vec![Vec::new(); targets.len()];
        for round in 0..rounds {
            for (i, (port, pid, tag)) in targets.iter().enumerate() {
                let spec = self.envelope_spec(*port, function, body.clone(), n, each);
                let name = format!("{function}-{tag}-{}", round + 1);
                results[i].push(self.load(&name, &spec, Some(*pid)).await?);
            }
        }
        // Each round runs the ceiling and the handler back to back, so their ratio within a round
        // is the steadiest figure on a machine whose speed drifts; the target takes the median.
        let round_ratios = |ceiling: &[(wrk::Summary, Option<f64>)]| -> Vec<f64> {
            ceiling
                .iter()
                .zip(&results[2])
                .map(|((ceiling, _), (product, _))| product.rps() / ceiling.rps())
                .collect()
        };
        let paired = round_ratios(&results[1]);
        let pipeline_ratios = results.get(3).map(|pipeline| round_ratios(pipeline));
        let mut results = results.into_iter().map(median_round);
        let (plain, with_redis, product) = (
            results.next().expect("plain"),
            results.next().expect("redis"),
            results.next().expect("handler"),
        );
        let pipeline = results.next();
        let rates = |r: &(wrk::Summary, Option<f64>, String)| r.2.clone();
        self.wrk_row(
            "http",
            format!("ceiling: warp, same JSON ({function})"),
            &plain.0,
            plain.1,
            rates(&plain),
        );
        self.wrk_row(
            "http",
            format!("ceiling: warp + Redis {command} ({function})"),
            &with_redis.0,
            with_redis.1,
            rates(&with_redis),
        );
        if let Some(pipeline) = &pipeline {
            self.wrk_row(
                "http",
                "diagnostic: warp + root's own pipeline (GET record, GET marker)".into(),
                &pipeline.0,
                pipeline.1,
                rates(pipeline),
            );
        }
        let mut note = format!(
            "{:.2} × warp + {command} (round by round: {})",
            probe::median(&paired),
            paired
                .iter()
                .map(|r| format!("{r:.2}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        if let Some(ratios) = &pipeline_ratios {
            note.push_str(&format!("; {:.2} × warp + pipeline", probe::median(ratios)));
        }
        if !product.2.is_empty() {
            note.push_str(&format!("; {}", product.2));
        }
        self.wrk_row(
            "handler",
            format!("{function} (POST /{function}, host envelope)"),
            &product.0,
            product.1,
            note,
        );
        Ok(Paired {
            product: product.0.rps(),
            ceiling: with_redis.0.rps(),
            ratios: paired,
        })
    }

    /// How many hashes the product runs at once.
    fn hash_threads(&self) -> usize {
        self.options.hash_threads.unwrap_or(self.cores)
    }

    fn rounds(&self) -> usize {
        if self.options.smoke { 1 } else { 5 }
    }

    /// Raw argon2id, then createUser with the health probe beside it.
    /// Returns (raw hashes/s, createUser/s, probe p99 ms).
    async fn create_user(&mut self, handler: &Handler) -> anyhow::Result<(f64, f64, f64)> {
        // The raw rate is measured half before and half after the product's phase, so a machine
        // that gets busier or quieter in between moves both sides alike.
        // The raw ceiling runs at the product's parallelism (--hash-threads; by default the
        // product's rule in PasswordHasher::for_this_machine: one per core).
        let threads = self.hash_threads();
        let half = Duration::from_secs((self.long.as_secs() / 2).max(1));
        let (h1, s1) =
            tokio::task::spawn_blocking(move || ceilings::argon2_rate(threads, half)).await??;
        let spec = self.envelope_spec(
            handler.port,
            "createUser",
            sign_up_template("h"),
            self.options.connections,
            self.long,
        );
        let probe = ProbeRequest {
            method: reqwest::Method::POST,
            url: format!("http://127.0.0.1:{}/health", handler.port),
            headers: envelope::host_headers()
                .into_iter()
                .map(|(n, v)| (n.to_owned(), v))
                .collect(),
            body: Some(health_envelope().to_string()),
        };
        let probe = tokio::spawn(probe::fixed_rate(probe, PROBE_EVERY, self.long));
        let (summary, peak) = self
            .load("createUser-handler", &spec, Some(handler.child.pid()))
            .await?;
        let probe = probe.await??;
        let (h2, s2) =
            tokio::task::spawn_blocking(move || ceilings::argon2_rate(threads, half)).await??;
        let (hashes, secs) = (h1 + h2, s1 + s2);
        let raw = hashes as f64 / secs;
        self.report.row(Row {
            group: "crypto",
            name: format!("ceiling: raw argon2id m=19456 t=2 p=1, {threads} threads"),
            rate: Some(raw),
            unit: "hash/s",
            // Hashes are timed in bulk: a mean per hash, not a percentile.
            p50_ms: None,
            p99_ms: None,
            peak_rss_mib: None,
            note: format!(
                "{hashes} hashes in {secs:.1} s, {:.2} ms each on average ({:.1}/s before createUser, {:.1}/s after)",
                secs * 1000.0 * threads as f64 / hashes as f64,
                h1 as f64 / s1,
                h2 as f64 / s2
            ),
        });
        let rate = summary.rps();
        let mut note = format!("{:.2} × raw argon2id", rate / raw);
        // What the whole machine could hash, when the product leaves cores out.
        let cores = self.cores;
        if threads < cores {
            let (hashes, secs) =
                tokio::task::spawn_blocking(move || ceilings::argon2_rate(cores, half)).await??;
            let all = hashes as f64 / secs;
            self.report.row(Row {
                group: "crypto",
                name: format!("raw argon2id on all {cores} cores (not a target's ceiling)"),
                rate: Some(all),
                unit: "hash/s",
                p50_ms: None,
                p99_ms: None,
                peak_rss_mib: None,
                note: format!(
                    "{hashes} hashes in {secs:.1} s, {:.2} ms each on average",
                    secs * 1000.0 * cores as f64 / hashes as f64
                ),
            });
            note.push_str(&format!(", {:.2} × all cores", rate / all));
        }
        self.wrk_row(
            "handler",
            "createUser (POST /createUser, unique emails)".into(),
            &summary,
            peak,
            note,
        );
        let p99 = self.probe_row(
            "handler",
            format!(
                "health probe every {} ms during createUser",
                PROBE_EVERY.as_millis()
            ),
            &probe,
        );
        Ok((raw, rate, p99))
    }

    /// The mail ceilings, sendOnboarding end to end, then (a diagnostic) rounds of
    /// sendOnboarding against the like-for-like ceiling: warp with sendOnboarding's Redis round
    /// trips and the product's own SMTP client, under the same load on the same users.
    async fn mail(
        &mut self,
        handler: &Handler,
        sink: &Sink,
        redis_url: &str,
        pre: &Preflight,
    ) -> anyhow::Result<MailResult> {
        let n = self.options.connections;
        let sample = &pre.sample;
        let port = sink.port;
        let raw = mail::raw_client(port, n, self.short, sample).await?;
        self.mail_row(
            format!("ceiling: sink capacity (raw client, message in one write, {n} connections)"),
            &raw,
            String::new(),
        );
        let one_nagle = mail::lettre_single(port, false, self.short, sample).await?;
        self.mail_row(
            "ceiling: lettre, 1 connection, Nagle on (lettre's own socket)".into(),
            &one_nagle,
            String::new(),
        );
        let one_nodelay = mail::lettre_single(port, true, self.short, sample).await?;
        self.mail_row(
            "ceiling: lettre, 1 connection, TCP_NODELAY (connect_with_transport)".into(),
            &one_nodelay,
            format!("{:.1} × Nagle on", one_nodelay.rate() / one_nagle.rate()),
        );
        let pooled = mail::lettre_pooled(port, n, self.short, sample).await?;
        self.mail_row(
            format!(
                "ceiling: lettre pooled transport as in the product (pool {}, {n} senders)",
                mail::PRODUCT_POOL_SIZE
            ),
            &pooled,
            String::new(),
        );
        let nodelay_pool =
            mail::lettre_nodelay_pool(port, mail::PRODUCT_POOL_SIZE, n, self.short, sample).await?;
        self.mail_row(
            format!("ceiling: lettre's pool semantics over TCP_NODELAY connections (≤ {} idle, {n} senders)", mail::PRODUCT_POOL_SIZE),
            &nodelay_pool,
            format!("{:.1} × pooled transport", nodelay_pool.rate() / pooled.rate()),
        );

        // Users for sendOnboarding, each message for a different one.
        let per_thread = if self.options.smoke { 10_000 } else { 100_000 };
        self.seed_users(redis_url, pre, per_thread).await?;
        // One check that a seeded user works end to end.
        let before = sink.accepted();
        let check_id = wrk::seeded_user_id(0xff, 1);
        let check = envelope::service_bus(&envelope::onboarding_message(
            &check_id,
            "check@bench.example",
        ));
        let (status, raw_answer) = self.invoke(handler.port, "sendOnboarding", &check).await?;
        if status != 200 {
            bail!(
                "sendOnboarding for a seeded user answered {status}: {}",
                String::from_utf8_lossy(&raw_answer)
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        if sink.accepted() <= before {
            bail!("sendOnboarding for a seeded user sent no email");
        }

        let template = envelope::service_bus(&envelope::onboarding_message(
            PLACEHOLDER,
            "seeded@bench.example",
        ))
        .to_string();
        let body = Body::Keyed {
            template,
            placeholder: PLACEHOLDER,
            key: Key::Uuid,
        };
        let spec = self.envelope_spec(handler.port, "sendOnboarding", body.clone(), n, self.short);
        let before = sink.accepted();
        let (summary, peak) = self
            .load("sendOnboarding-handler", &spec, Some(handler.child.pid()))
            .await?;
        let sent = sink.accepted() - before;
        let rate = sent as f64 / summary.seconds();
        self.check_seeded_users_sufficed("sendOnboarding", &summary, per_thread);

        // The like-for-like diagnostic: rounds of the handler and then the ceiling, back to
        // back, each phase on the same seeded users with their markers cleared first (so each is
        // owed its email again); the ratio is taken round by round, like the HTTP targets'.
        let answer = self.dir.join("sendOnboarding-answer.json");
        std::fs::write(&answer, &raw_answer)?;
        let mut ceiling = self.start_onboarding_ceiling(redis_url, port, &answer)?;
        let each = Duration::from_secs((self.short.as_secs() * 3 / 5).max(1));
        let mut like_rounds = Vec::new();
        let mut like_ratios = Vec::new();
        for round in 1..=self.rounds() {
            let mut rates = [0.0; 2];
            let sides = [
                (handler.port, handler.child.pid(), "handler"),
                (ceiling.port, ceiling.child.pid(), "warp-redis-smtp"),
            ];
            for (i, (side_port, pid, tag)) in sides.into_iter().enumerate() {
                self.reset_onboarding_markers(redis_url, per_thread).await?;
                let spec = self.envelope_spec(side_port, "sendOnboarding", body.clone(), n, each);
                let before = sink.accepted();
                let name = format!("sendOnboarding-{tag}-{round}");
                let (summary, peak) = self.load(&name, &spec, Some(pid)).await?;
                rates[i] = (sink.accepted() - before) as f64 / summary.seconds();
                if i == 1 {
                    self.check_seeded_users_sufficed(
                        "the like-for-like mail ceiling",
                        &summary,
                        per_thread,
                    );
                    like_rounds.push((summary, peak, rates[1]));
                }
            }
            like_ratios.push(rates[0] / rates[1]);
        }
        ceiling.child.stop();
        let round_rates: Vec<String> = like_rounds.iter().map(|r| format!("{:.0}", r.2)).collect();
        like_rounds.sort_by(|a, b| a.2.total_cmp(&b.2));
        let (like, like_peak, like_rate) = like_rounds.swap_remove(like_rounds.len() / 2);
        let like_for_like = Paired {
            product: rate,
            ceiling: like_rate,
            ratios: like_ratios.clone(),
        };
        let like_ratio = probe::median(&like_ratios);
        let like_ratios: Vec<String> = like_ratios.iter().map(|r| format!("{r:.2}")).collect();
        self.load_row(
            "mail",
            "diagnostic: warp + sendOnboarding's Redis round trips + the product's SMTP client (emails accepted by the sink)".into(),
            &like,
            like_peak,
            (like_rate, "msg/s"),
            format!(
                "{} invocations; per message: GET record + SET NX PX + GET marker in one pipeline, the email, SET sent; {:.2} × nodelay pool; the median of rounds: {} msg/s",
                like.requests,
                like_rate / nodelay_pool.rate(),
                round_rates.join(", "),
            ),
        );
        self.load_row(
            "handler",
            "sendOnboarding (POST /sendOnboarding, emails accepted by the sink)".into(),
            &summary,
            peak,
            (rate, "msg/s"),
            format!(
                "{sent} emails, {} invocations; {:.2} × pooled lettre, {:.2} × nodelay pool; {like_ratio:.2} × like-for-like (round by round: {})",
                summary.requests,
                rate / pooled.rate(),
                rate / nodelay_pool.rate(),
                like_ratios.join(", "),
            ),
        );
        Ok(MailResult {
            product: rate,
            lettre_pooled: pooled.rate(),
            nodelay_pool: nodelay_pool.rate(),
            like_for_like,
        })
    }

    fn mail_row(&mut self, name: String, run: &MailRun, note: String) {
        let errors = if run.errors > 0 {
            format!("errors {}", run.errors)
        } else {
            String::new()
        };
        let note = [note, errors]
            .into_iter()
            .filter(|s| !s.is_empty())
            .collect::<Vec<_>>()
            .join("; ");
        self.report.row(Row {
            group: "mail",
            name,
            rate: Some(run.rate()),
            unit: "msg/s",
            p50_ms: Some(run.percentile_ms(50.0)),
            p99_ms: Some(run.percentile_ms(99.0)),
            peak_rss_mib: None,
            note,
        });
    }

    /// The (wrk thread, request number) of every seeded user the load can reach.
    fn seeded_ids(&self, per_thread: u64) -> Vec<(u32, u64)> {
        (1..=self.options.threads.min(self.options.connections))
            .flat_map(|t| (1..=per_thread).map(move |n| (t, n)))
            .collect()
    }

    /// Notes when a sendOnboarding load ran out of seeded users (later messages sent nothing).
    fn check_seeded_users_sufficed(&mut self, what: &str, summary: &wrk::Summary, per_thread: u64) {
        let threads = self.options.threads.min(self.options.connections);
        if summary.requests.div_ceil(u64::from(threads)) > per_thread {
            self.report.notes.push(format!(
                "{what} ran past the {per_thread} seeded users per wrk thread: later messages found no user (no email)."
            ));
        }
    }

    /// Writes `per_thread` users for each wrk thread (and one for the check), copies of the
    /// preflight user's record with their own id and email, in the store's own layout.
    async fn seed_users(
        &self,
        redis_url: &str,
        pre: &Preflight,
        per_thread: u64,
    ) -> anyhow::Result<()> {
        let mut redis = redis::Client::open(redis_url)?
            .get_multiplexed_async_connection()
            .await?;
        let mut ids: Vec<(u32, u64)> = vec![(0xff, 1)];
        ids.extend(self.seeded_ids(per_thread));
        for batch in ids.chunks(2000) {
            let mut pipe = redis::pipe();
            for &(t, n) in batch {
                let id = wrk::seeded_user_id(t, n);
                let mut record = pre.user_record.clone();
                record["id"] = Value::String(id.clone());
                record["email"] = Value::String(format!("s{t}-{n}@bench.example"));
                pipe.cmd("SET")
                    .arg(user_key(&id))
                    .arg(record.to_string())
                    .ignore();
            }
            let () = pipe.query_async(&mut redis).await?;
        }
        Ok(())
    }

    /// Deletes the onboarding markers of the seeded users the load can reach, so each of them
    /// is owed its email again, as right after [`seed_users`](Self::seed_users).
    async fn reset_onboarding_markers(
        &self,
        redis_url: &str,
        per_thread: u64,
    ) -> anyhow::Result<()> {
        let mut redis = redis::Client::open(redis_url)?
            .get_multiplexed_async_connection()
            .await?;
        for batch in self.seeded_ids(per_thread).chunks(2000) {
            let mut pipe = redis::pipe();
            for &(t, n) in batch {
                pipe.cmd("DEL")
                    .arg(marker_key(&wrk::seeded_user_id(t, n)))
                    .ignore();
            }
            let () = pipe.query_async(&mut redis).await?;
        }
        Ok(())
    }

    /// The warp ceiling server with `POST /sendOnboarding` (Redis and the product's SMTP client),
    /// answering `answer` (the handler's answer to a seeded user's message).
    fn start_onboarding_ceiling(
        &self,
        redis_url: &str,
        smtp_port: u16,
        answer: &Path,
    ) -> anyhow::Result<OnboardingCeiling> {
        let port = procs::free_port()?;
        let mut command = self.ceiling_command(&std::env::current_exe()?, port);
        command
            .arg("--redis")
            .arg(redis_url)
            .arg("--key-prefix")
            .arg(KEY_PREFIX)
            .arg("--smtp-port")
            .arg(smtp_port.to_string())
            .arg("--onboarding-answer")
            .arg(answer);
        let mut child = Child::spawn("warp-redis-smtp", command, &self.dir.join("logs"))?;
        procs::wait_http(&mut child, port, "/", 200, Duration::from_secs(10))?;
        Ok(OnboardingCeiling { child, port })
    }

    /// Peak RSS under many concurrent sign-ups.
    async fn signups_memory(&mut self, handler: &Handler) -> anyhow::Result<f64> {
        let n = self.options.signup_connections;
        let spec = self.envelope_spec(
            handler.port,
            "createUser",
            sign_up_template("m"),
            n,
            self.long,
        );
        let (summary, peak) = self
            .load("createUser-200-handler", &spec, Some(handler.child.pid()))
            .await?;
        let peak = peak.unwrap_or(f64::NAN);
        let after = procs::rss(handler.child.pid())?;
        self.wrk_row(
            "memory",
            format!("createUser, {n} concurrent sign-ups"),
            &summary,
            Some(peak),
            format!("RSS after: {:.1} MiB", kib_to_mib(after.current_kib)),
        );
        Ok(peak)
    }

    /// `handler dev`: GET /health, GET / with a token, POST /createUser (with the health probe).
    /// Returns the probe's p99.
    async fn dev(
        &mut self,
        bin: &Path,
        redis_url: &str,
        smtp_port: u16,
        pre: &Preflight,
    ) -> anyhow::Result<f64> {
        let app = self.dir.join("app");
        copy_app(&self.options.app_root, &app)?;
        let app = std::fs::canonicalize(&app)?;
        let port = procs::free_port()?;
        let mut command = Command::new(bin);
        self.handler_env(&mut command, redis_url, smtp_port);
        command
            .arg("dev")
            .arg("--port")
            .arg(port.to_string())
            .arg("--app-root")
            .arg(&app)
            .current_dir(&app);
        let mut dev = Child::spawn("handler-dev", command, &self.dir.join("logs"))?;
        procs::wait_http(&mut dev, port, "/health", 200, Duration::from_secs(30))?;
        let pid = dev.pid();
        let n = self.options.connections;
        let threads = self.options.threads;
        let get = |path: &str, headers: Vec<(String, String)>, duration: Duration| Spec {
            url: format!("http://127.0.0.1:{port}{path}"),
            method: "GET",
            headers,
            body: Body::None,
            connections: n,
            threads,
            duration,
            timeout: Duration::from_secs(30),
        };
        let spec = get("/health", vec![], self.short);
        let (summary, peak) = self.load("dev-health", &spec, Some(pid)).await?;
        self.wrk_row("dev", "GET /health".into(), &summary, peak, String::new());
        let auth = vec![("Authorization".to_owned(), format!("Bearer {}", pre.token))];
        let spec = get("/", auth, self.short);
        let (summary, peak) = self.load("dev-root", &spec, Some(pid)).await?;
        self.wrk_row(
            "dev",
            "GET / with a token".into(),
            &summary,
            peak,
            String::new(),
        );

        let spec = Spec {
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
            connections: n,
            threads: self.options.threads,
            duration: self.long,
            timeout: Duration::from_secs(30),
        };
        let probe = ProbeRequest {
            method: reqwest::Method::GET,
            url: format!("http://127.0.0.1:{port}/health"),
            headers: vec![],
            body: None,
        };
        let probe = tokio::spawn(probe::fixed_rate(probe, PROBE_EVERY, self.long));
        let (summary, peak) = self.load("dev-createUser", &spec, Some(pid)).await?;
        let probe = probe.await??;
        self.wrk_row(
            "dev",
            "POST /createUser (unique emails; emails queued and sent)".into(),
            &summary,
            peak,
            String::new(),
        );
        let p99 = self.probe_row(
            "dev",
            format!(
                "GET /health every {} ms during POST /createUser",
                PROBE_EVERY.as_millis()
            ),
            &probe,
        );
        dev.stop();
        Ok(p99)
    }

    /// The provider-limit phase (see provider.rs): paced (SMTP_MAX_PER_MINUTE = R × 60), then
    /// adaptive (no setting), each on its own limited sink and its own `handler dev`.
    async fn provider(
        &mut self,
        bin: &Path,
        redis_url: &str,
    ) -> anyhow::Result<(provider::Outcome, provider::Outcome, ProviderSetup)> {
        let app = self.dir.join("app-provider");
        copy_app(&self.options.app_root, &app)?;
        let app = std::fs::canonicalize(&app)?;
        let host_json = app.join("host.json");
        let mut host: Value = serde_json::from_slice(&std::fs::read(&host_json)?)?;
        if let Some(calls) = self.options.provider_concurrent_calls {
            host["extensions"]["serviceBus"]["maxConcurrentCalls"] = calls.into();
            std::fs::write(&host_json, serde_json::to_vec_pretty(&host)?)?;
        }
        let calls = host["extensions"]["serviceBus"]["maxConcurrentCalls"].clone();
        let logs = self.dir.join("logs");
        let per_second = self.options.provider_rate;
        let messages = self
            .options
            .provider_messages
            .unwrap_or(if self.options.smoke { 30 } else { 150 });
        let setup = provider::Setup {
            messages,
            app: &app,
            logs: &logs,
        };
        let mut outcomes = Vec::new();
        for max_per_minute in [Some(per_second * 60), None] {
            let sink = Sink::start_limited(per_second)?;
            let mut command = Command::new(bin);
            self.handler_env(&mut command, redis_url, sink.port);
            let outcome =
                provider::measure(&setup, &sink, command, max_per_minute, &self.http).await?;
            let name = match max_per_minute {
                Some(m) => format!(
                    "sendOnboarding via handler dev, sink limited to {per_second}/s, SMTP_MAX_PER_MINUTE={m}"
                ),
                None => format!(
                    "sendOnboarding via handler dev, sink limited to {per_second}/s, no SMTP_MAX_PER_MINUTE"
                ),
            };
            self.report.row(Row {
                group: "provider",
                name,
                rate: Some(outcome.steady_rate),
                unit: "msg/s",
                p50_ms: None,
                p99_ms: None,
                peak_rss_mib: Some(outcome.peak_rss_mib),
                note: format!(
                    "{:.2} × R; maxConcurrentCalls {calls}; {}",
                    outcome.steady_rate / f64::from(per_second),
                    outcome.describe(messages)
                ),
            });
            outcomes.push(outcome);
        }
        let adaptive = outcomes.pop().expect("adaptive");
        let paced = outcomes.pop().expect("paced");
        Ok((
            paced,
            adaptive,
            ProviderSetup {
                per_second,
                messages,
            },
        ))
    }

    /// Readiness medians: the handler with Redis up, with Redis down, and a bare warp server.
    fn readiness(
        &mut self,
        bin: &Path,
        redis_url: &str,
        smtp_port: u16,
    ) -> anyhow::Result<(f64, f64)> {
        let runs = self
            .options
            .starts
            .unwrap_or(if self.options.smoke { 5 } else { 20 });
        let closed = procs::free_port()?;
        let down_url = format!("redis://127.0.0.1:{closed}/");
        let up = probe::readiness(runs, |port| {
            self.handler_command(bin, port, redis_url, smtp_port)
        })?;
        let down = probe::readiness(runs, |port| {
            self.handler_command(bin, port, &down_url, smtp_port)
        })?;
        let exe = std::env::current_exe()?;
        let bare = probe::readiness(runs, |port| self.ceiling_command(&exe, port))?;
        for (name, times) in [
            ("handler, Redis up", &up),
            ("handler, Redis down (closed port)", &down),
            ("ceiling: bare warp server", &bare),
        ] {
            let min = times.iter().copied().fold(f64::INFINITY, f64::min);
            let max = times.iter().copied().fold(0.0, f64::max);
            self.report.row(Row {
                group: "readiness",
                name: format!("{name}: exec → first answer to GET /"),
                rate: None,
                unit: "",
                p50_ms: Some(probe::median(times)),
                p99_ms: None,
                peak_rss_mib: None,
                note: format!("median of {runs} starts; min {min:.2} ms, max {max:.2} ms"),
            });
        }
        Ok((probe::median(&up), probe::median(&down)))
    }
}

/// The handler against its ceiling: each one's median rate, and their ratio round by round.
pub struct Paired {
    pub product: f64,
    pub ceiling: f64,
    pub ratios: Vec<f64>,
}

/// The round with the median rate, its peak RSS the largest of all rounds, and every round's
/// rate as a note.
fn median_round(
    mut rounds: Vec<(wrk::Summary, Option<f64>)>,
) -> (wrk::Summary, Option<f64>, String) {
    let peak = rounds.iter().filter_map(|r| r.1).reduce(f64::max);
    let note = if rounds.len() > 1 {
        let rates: Vec<String> = rounds.iter().map(|r| format!("{:.0}", r.0.rps())).collect();
        format!("rounds: {} req/s", rates.join(", "))
    } else {
        String::new()
    };
    rounds.sort_by(|a, b| a.0.rps().total_cmp(&b.0.rps()));
    let median = rounds.swap_remove(rounds.len() / 2);
    (median.0, peak, note)
}

struct Ceilings {
    plain: Child,
    plain_port: u16,
    with_redis: Child,
    redis_port: u16,
    /// GET user + GET marker in one pipeline, as root does (diagnostic).
    with_pipeline: Child,
    pipeline_port: u16,
}

/// The provider-limit phase's parameters, for its checks.
pub struct ProviderSetup {
    pub per_second: u32,
    pub messages: usize,
}

/// The warp server with sendOnboarding's Redis round trips and the product's SMTP client.
struct OnboardingCeiling {
    child: Child,
    port: u16,
}

struct MailResult {
    product: f64,
    lettre_pooled: f64,
    nodelay_pool: f64,
    /// sendOnboarding against the like-for-like diagnostic, round by round.
    like_for_like: Paired,
}

fn probe_note(probe: &probe::ProbeRun) -> String {
    let max = probe.latencies_us.iter().copied().max().unwrap_or(0) as f64 / 1000.0;
    let mut note = format!("{} probes, max {max:.2} ms", probe.latencies_us.len());
    if probe.failures > 0 {
        note.push_str(&format!(", {} failed", probe.failures));
    }
    note
}

/// The store's key for a user record (src/store/redis.rs: `<prefix>user:{<id>}`).
fn user_key(id: &str) -> String {
    format!("{KEY_PREFIX}user:{{{id}}}")
}

/// The store's key for a user's onboarding marker (src/store/redis.rs: `<user key>:onboarding`).
fn marker_key(id: &str) -> String {
    format!("{}:onboarding", user_key(id))
}

fn health_envelope() -> Value {
    envelope::http("GET", "/health", &[("Accept", "application/json")], None)
}

fn root_envelope(token: &str) -> Value {
    let bearer = format!("Bearer {token}");
    envelope::http(
        "GET",
        "/",
        &[("Accept", "application/json"), ("Authorization", &bearer)],
        None,
    )
}

/// A createUser envelope whose email is unique per request.
fn sign_up_template(tag: &str) -> Body {
    let body = envelope::sign_up_body(&format!("{PLACEHOLDER}@bench.example"));
    let template = envelope::http(
        "POST",
        "/createUser",
        &[("Content-Type", "application/json")],
        Some(&body),
    )
    .to_string();
    Body::Keyed {
        template,
        placeholder: PLACEHOLDER,
        key: Key::Text {
            nonce: format!("{tag}{}", std::process::id()),
        },
    }
}

/// Copies host.json and every `*/function.json` folder: an app root with no local.settings.json
/// and no outbox, so only the run's settings apply.
fn copy_app(from: &Path, to: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(to)?;
    std::fs::copy(from.join("host.json"), to.join("host.json"))
        .with_context(|| format!("no host.json in {}", from.display()))?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let function_json = entry.path().join("function.json");
        if function_json.is_file() {
            let dir = to.join(entry.file_name());
            std::fs::create_dir_all(&dir)?;
            std::fs::copy(&function_json, dir.join("function.json"))?;
        }
    }
    Ok(())
}
