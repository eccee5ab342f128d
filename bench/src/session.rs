//! What every phase shares: the run's options, its directory and phase lengths, the report it
//! fills, the servers started once for the whole run, and how the handler and the ceiling
//! servers are started.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::Context as _;

use crate::envelope;
use crate::fixtures::{JWT_SECRET, KEY_PREFIX};
use crate::options::{Options, Phase};
use crate::procs::{self, Child};
use crate::report::Report;
use crate::wrk::{Body, Spec};
use test_support::{Persistence, RedisServer, SmtpSink};

/// One run: its options, where it writes, how long a phase lasts, and the report so far.
pub struct Session {
    pub options: Options,
    /// Absolute: children run in other folders.
    pub dir: PathBuf,
    /// A phase's length.
    pub short: Duration,
    /// The hashing and memory phases' length.
    pub long: Duration,
    pub http: reqwest::Client,
    pub report: Report,
    pub cores: usize,
}

/// The servers the whole run shares: redis-server, the SMTP sink, and the handler binary.
pub struct Services {
    pub handler_bin: PathBuf,
    pub redis_port: u16,
    pub redis_url: String,
    pub sink: SmtpSink,
    _redis: RedisServer,
}

/// A server the run started, listening on `port`.
pub struct Server {
    pub child: Child,
    pub port: u16,
}

impl Session {
    /// Empties the output directory and sets the phase lengths.
    pub fn new(options: Options) -> anyhow::Result<Self> {
        let dir = options.out.clone();
        if dir.exists() {
            std::fs::remove_dir_all(&dir)
                .with_context(|| format!("cannot empty {}", dir.display()))?;
        }
        std::fs::create_dir_all(dir.join("logs"))?;
        // Children run in other folders: every path they get must be absolute.
        let dir = std::fs::canonicalize(&dir)?;
        let secs = options.seconds.unwrap_or(if options.smoke { 1 } else { 5 });
        Ok(Self {
            short: Duration::from_secs(secs),
            long: Duration::from_secs(if options.smoke { secs } else { secs * 2 }),
            options,
            dir,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()?,
            report: Report::default(),
            cores: std::thread::available_parallelism().map_or(1, usize::from),
        })
    }

    pub fn logs(&self) -> PathBuf {
        self.dir.join("logs")
    }

    pub fn wants(&self, phase: Phase) -> bool {
        self.options.wants(phase)
    }

    /// How many hashes the product runs at once.
    pub fn hash_threads(&self) -> usize {
        self.options.hash_threads.unwrap_or(self.cores)
    }

    /// The handler's environment: the run's Redis, SMTP sink and secrets, and `--handler-env`.
    pub fn handler_env(&self, command: &mut Command, redis_url: &str, smtp_port: u16) {
        command
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("REDIS_URL", redis_url)
            .env("REDIS_KEY_PREFIX", KEY_PREFIX)
            .env("JWT_SECRET", JWT_SECRET)
            .env("SMTP_URL", format!("smtp://127.0.0.1:{smtp_port}"))
            .env("MAIL_FROM", "Onboarding <onboarding@bench.example>")
            .env("PUBLIC_URL", "https://bench.example.net/")
            .envs(test_support::LIMITS_LIFTED)
            .envs(self.options.handler_env.iter().map(|e| (&e.name, &e.value)));
    }

    /// The handler as the host starts it, on `port`.
    pub fn handler_command(
        &self,
        bin: &Path,
        port: u16,
        redis_url: &str,
        smtp_port: u16,
    ) -> Command {
        let mut command = Command::new(bin);
        self.handler_env(&mut command, redis_url, smtp_port);
        command
            .env("FUNCTIONS_CUSTOMHANDLER_PORT", port.to_string())
            .current_dir(&self.dir);
        command
    }

    /// `bench serve-ceiling` (this program, `exe`) on `port`, answering the handler's own health
    /// and root answers (the preflight wrote them); callers add the Redis and mail options.
    pub fn ceiling_command(&self, exe: &Path, port: u16) -> Command {
        self.ceiling_command_answering(exe, port, "")
    }

    /// [`ceiling_command`](Self::ceiling_command) answering `<prefix>health-answer.json` and
    /// `<prefix>root-answer.json`: another handler's answers (the cluster phase's).
    pub fn ceiling_command_answering(&self, exe: &Path, port: u16, prefix: &str) -> Command {
        let mut command = Command::new(exe);
        command
            .arg("serve-ceiling")
            .arg("--port")
            .arg(port.to_string())
            .arg("--health-answer")
            .arg(self.dir.join(format!("{prefix}health-answer.json")))
            .arg("--root-answer")
            .arg(self.dir.join(format!("{prefix}root-answer.json")));
        command
    }

    /// Starts `command` (a server on `port`) and waits until `GET /` answers 200.
    pub fn start_server(&self, name: &str, command: Command, port: u16) -> anyhow::Result<Server> {
        let mut child = Child::spawn(name, command, &self.logs())?;
        procs::wait_http(&mut child, port, "/", 200, Duration::from_secs(10))?;
        Ok(Server { child, port })
    }

    /// A wrk phase POSTing host envelopes to `function` on `port`.
    pub fn envelope_spec(
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
}

impl Services {
    /// Finds the handler binary, starts redis-server and the SMTP sink.
    pub fn start(s: &Session) -> anyhow::Result<Self> {
        let handler_bin = std::fs::canonicalize(&s.options.handler).with_context(|| {
            format!(
                "{} not found: build it first (cargo build --release)",
                s.options.handler.display()
            )
        })?;
        let redis =
            RedisServer::try_start(Persistence::Off, Some(s.logs().join("redis-server.log")))?;
        let redis_port = redis.port();
        let sink = crate::sink::unlimited()?;
        eprintln!(
            "bench: redis-server on {redis_port}, SMTP sink on {}, {} connections, {} s phases",
            sink.port(),
            s.options.connections,
            s.short.as_secs()
        );
        Ok(Self {
            handler_bin,
            redis_port,
            redis_url: format!("redis://127.0.0.1:{redis_port}/"),
            sink,
            _redis: redis,
        })
    }
}
