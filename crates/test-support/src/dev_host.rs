//! `handler dev` as a child process on a copy of the repository's function app, with its output
//! in a log file (shown when a test fails), and its dev endpoints (`/_dev/...`).

use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::time::{Duration, Instant};

use serde_json::Value;
use tempfile::TempDir;

use crate::process::Supervised;

/// How long the dev host may take to print its address.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How often the dev host's output, endpoints and outbox are polled.
const POLL: Duration = Duration::from_millis(25);
/// How long one request to the dev host may take.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(30);
/// How many lines of output a failure message shows.
const TAIL: usize = 60;
/// Settings a developer's environment must not leak into a test; a test sets what it needs.
const SETTINGS: &[&str] = &[
    "REDIS_URL",
    "REDIS_KEY_PREFIX",
    "SMTP_URL",
    "SMTP_TIMEOUT_SECONDS",
    "SMTP_SEND_WINDOW_SECONDS",
    "SMTP_MAX_PER_MINUTE",
    "JWT_SECRET",
    "JWT_SECRET_PREVIOUS",
    "JWT_TTL_SECONDS",
    "MAIL_FROM",
    "PUBLIC_URL",
    "FUNCTIONS_CUSTOMHANDLER_PORT",
    "ONBOARDING_QUEUE",
    "LIMIT_SIGN_UPS_PER_ADDRESS",
    "LIMIT_SIGN_UPS_PER_MAILBOX",
    "LIMIT_FAILED_SIGN_INS_PER_ADDRESS",
    "LIMIT_FAILED_SIGN_INS_PER_ACCOUNT",
    "LIMIT_VERIFY_RESENDS_PER_USER",
];

/// The repository's root, where host.json and the function folders are.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A temporary app root holding the repository's host.json and every `<function>/function.json`,
/// so a test can change them without touching the repository.
pub fn app_root() -> TempDir {
    let repo = repo_root();
    let dir = tempfile::tempdir().expect("create the app root");
    std::fs::copy(repo.join("host.json"), dir.path().join("host.json"))
        .expect("the repository has a host.json");
    let mut copied = 0;
    for entry in std::fs::read_dir(&repo).expect("read the repository root") {
        let folder = entry.expect("a directory entry").path();
        let function_json = folder.join("function.json");
        if function_json.is_file() {
            let name = folder.file_name().expect("a folder name");
            std::fs::create_dir(dir.path().join(name)).expect("create a function folder");
            std::fs::copy(&function_json, dir.path().join(name).join("function.json"))
                .expect("copy function.json");
            copied += 1;
        }
    }
    assert!(
        copied >= 4,
        "expected the function folders at the repository root"
    );
    dir
}

/// How to start a [`DevHost`]: the `handler` binary (a test passes
/// `env!("CARGO_BIN_EXE_handler")`), the app root, settings, arguments and port.
pub struct DevHostBuilder {
    handler: PathBuf,
    root: TempDir,
    work_dir: TempDir,
    env: Vec<(String, String)>,
    args: Vec<String>,
    port: u16,
}

impl DevHostBuilder {
    /// Serves this app root (by default a fresh [`app_root`]).
    pub fn root(mut self, root: TempDir) -> Self {
        self.root = root;
        self
    }

    /// Sets these settings (after the developer's own were removed).
    pub fn envs<K: AsRef<str>, V: AsRef<str>>(mut self, env: &[(K, V)]) -> Self {
        self.env.extend(
            env.iter()
                .map(|(k, v)| (k.as_ref().to_owned(), v.as_ref().to_owned())),
        );
        self
    }

    /// Adds these `handler dev` arguments.
    pub fn args<S: AsRef<str>>(mut self, args: &[S]) -> Self {
        self.args.extend(args.iter().map(|a| a.as_ref().to_owned()));
        self
    }

    /// Listens on this port (picked earlier, say for PUBLIC_URL) instead of a free one.
    pub fn port(mut self, port: u16) -> Self {
        self.port = port;
        self
    }

    /// The command [`DevHostBuilder::start`] runs, for a test that runs it its own way (one
    /// that expects it to fail at start). The builder must outlive the process.
    pub fn command(&self) -> Command {
        let mut command = Command::new(&self.handler);
        command
            .args(["dev", "--port", &self.port.to_string(), "--app-root"])
            .arg(self.root.path())
            .args(&self.args)
            // Kept apart from the app root, so `--app-root` alone decides where things are.
            .current_dir(self.work_dir.path())
            .env("RUST_LOG", "info");
        for name in SETTINGS {
            command.env_remove(name);
        }
        for (name, _) in std::env::vars() {
            if name
                .to_ascii_lowercase()
                .starts_with("azurefunctionsjobhost__")
            {
                command.env_remove(name);
            }
        }
        // Limits lifted unless the test sets its own (a test's settings come last and win).
        command
            .envs(crate::LIMITS_LIFTED)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(std::process::Stdio::null());
        command
    }

    /// Starts `handler dev` and waits for the address it prints; panics with its output if it
    /// exits first or takes longer than a minute.
    pub fn start(self) -> DevHost {
        let log = self.work_dir.path().join("handler-dev.log");
        let mut process = Supervised::spawn("handler dev", self.command(), &log);
        let deadline = Instant::now() + START_TIMEOUT;
        let base = loop {
            let text = process.log();
            if let Some(base) = text
                .lines()
                .find_map(|l| l.strip_prefix("Listening on "))
                .map(|b| b.trim().to_owned())
            {
                break base;
            }
            if let Some(status) = process.exit_status() {
                panic!("handler dev exited with {status} before listening:\n{text}");
            }
            assert!(
                Instant::now() < deadline,
                "handler dev did not print its address within {START_TIMEOUT:?}:\n{text}"
            );
            std::thread::sleep(POLL);
        };
        DevHost {
            process,
            base,
            client: http_client(CLIENT_TIMEOUT),
            root: self.root,
            _work_dir: self.work_dir,
        }
    }
}

/// A running `handler dev`; it and everything it started are killed when it drops.
pub struct DevHost {
    process: Supervised,
    base: String,
    client: reqwest::Client,
    root: TempDir,
    _work_dir: TempDir,
}

impl DevHost {
    /// A builder for `handler dev` run from the `handler` binary at `handler`.
    pub fn builder(handler: impl AsRef<Path>) -> DevHostBuilder {
        DevHostBuilder {
            handler: handler.as_ref().to_owned(),
            root: app_root(),
            work_dir: tempfile::tempdir().expect("create a working directory"),
            env: Vec::new(),
            args: Vec::new(),
            port: 0,
        }
    }

    /// `http://127.0.0.1:<port><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// The app root it serves.
    pub fn root(&self) -> &Path {
        self.root.path()
    }

    /// Where the outbox mailer writes (under the app root).
    pub fn outbox(&self) -> PathBuf {
        self.root().join("outbox")
    }

    /// Everything it printed so far (the handler process's output included).
    pub fn output(&self) -> String {
        self.process.log()
    }

    /// The last `n` lines of its output, for failure messages.
    pub fn tail(&self, n: usize) -> String {
        self.process.log_tail(n)
    }

    /// SIGKILL to the dev host alone, as an out-of-memory killer would; a handler process it
    /// started must end on its own account (the dev host has Linux signal it).
    pub fn kill(&mut self) {
        self.process.kill();
    }

    /// Sends SIGTERM and waits (bounded) for the exit; the output is complete afterwards.
    pub fn terminate(&mut self, timeout: Duration) -> ExitStatus {
        self.process.signal(libc::SIGTERM);
        self.process.wait(timeout)
    }

    /// Its exit status, once it has exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.process.exit_status()
    }

    /// `GET /_dev/<what>` as JSON (asserting a 200).
    pub async fn dev(&self, what: &str) -> Value {
        let response = self
            .client
            .get(self.url(&format!("/_dev/{what}")))
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET /_dev/{what}: {e}"));
        assert_eq!(response.status(), 200, "GET /_dev/{what}");
        response.json().await.expect("a JSON dev endpoint")
    }

    /// `GET /_dev/queues`: every queue's counts and dead letters.
    pub async fn queues(&self) -> Value {
        self.dev("queues").await
    }

    /// One queue's counts and dead letters, from `/_dev/queues`.
    pub async fn queue(&self, name: &str) -> Value {
        self.queues().await[name].clone()
    }

    /// Polls `/_dev/<what>` until `done` holds; panics with the last value after `timeout`.
    pub async fn wait_for(
        &self,
        what: &str,
        timeout: Duration,
        done: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let value = self.dev(what).await;
            if done(&value) {
                return value;
            }
            assert!(
                Instant::now() < deadline,
                "/_dev/{what} not as expected within {timeout:?}: {value:#}\n{}",
                self.tail(TAIL)
            );
            tokio::time::sleep(POLL).await;
        }
    }

    /// Waits for a finished `.eml` file in the outbox whose text `wanted` accepts; returns its
    /// path and text, or panics with the output after `timeout`.
    pub async fn wait_for_email(
        &self,
        timeout: Duration,
        wanted: impl Fn(&str) -> bool,
    ) -> (PathBuf, String) {
        let deadline = Instant::now() + timeout;
        loop {
            for path in eml_files(&self.outbox()) {
                if let Ok(text) = std::fs::read_to_string(&path)
                    && wanted(&text)
                {
                    return (path, text);
                }
            }
            assert!(
                Instant::now() < deadline,
                "no such .eml file in {} within {timeout:?}; the dev host's output:\n{}",
                self.outbox().display(),
                self.tail(TAIL)
            );
            tokio::time::sleep(POLL).await;
        }
    }
}

/// Finished `.eml` files in `dir`, in name order (the outbox writes `.<name>.partial` first,
/// then renames).
fn eml_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|entry| entry.path())
        .filter(|path| {
            path.extension().is_some_and(|ext| ext == "eml")
                && !path
                    .file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with('.'))
        })
        .collect();
    files.sort();
    files
}

/// An HTTP client for checks against a local server: loopback, no proxy (a developer's proxy
/// settings must not catch 127.0.0.1), no redirects (a test asserts them), and `timeout` per
/// request.
pub fn http_client(timeout: Duration) -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(timeout)
        .build()
        .expect("an HTTP client")
}
