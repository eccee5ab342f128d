//! `handler dev` as a child process on a copy of the repository's function app, with its output
//! in a log file (shown when a test fails), and its dev endpoints.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use tempfile::TempDir;

/// How long the dev host may take to print its address.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// Settings a developer's environment must not leak into a test.
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
];

/// A temporary app root holding the repository's host.json and every `<function>/function.json`.
pub fn app_root() -> TempDir {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = tempfile::tempdir().expect("create the app root");
    std::fs::copy(repo.join("host.json"), dir.path().join("host.json"))
        .expect("the repository has a host.json");
    let mut copied = 0;
    for entry in std::fs::read_dir(repo).expect("read the repository root") {
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
    assert!(copied >= 4, "expected the four function folders");
    dir
}

/// A running `handler dev`, killed (by its pid) when dropped; a handler process it started
/// ends with it (the dev host has Linux signal it when the dev host dies).
pub struct DevHost {
    child: Child,
    base: String,
    log: PathBuf,
    _root: TempDir,
}

impl DevHost {
    /// Starts `handler dev --port 0 --app-root <copy>` with these settings and arguments, and
    /// waits for the address it prints.
    pub fn start(env: &[(&str, String)], args: &[&str]) -> Self {
        Self::start_with(env, args, |_| {})
    }

    /// Like [`DevHost::start`], after `edit` changed the copied app root.
    pub fn start_with(env: &[(&str, String)], args: &[&str], edit: impl FnOnce(&Path)) -> Self {
        let root = app_root();
        edit(root.path());
        let log = root.path().join("dev.log");
        let out = std::fs::File::create(&log).expect("create the dev host log");
        let mut command = Command::new(env!("CARGO_BIN_EXE_handler"));
        command
            .args(["dev", "--port", "0", "--app-root"])
            .arg(root.path())
            .args(args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::from(out.try_clone().expect("clone the log handle")))
            .stderr(Stdio::from(out));
        for name in SETTINGS {
            command.env_remove(name);
        }
        for (name, value) in env {
            command.env(name, value);
        }
        let mut child = command.spawn().expect("start the handler binary");
        let deadline = Instant::now() + START_TIMEOUT;
        let base = loop {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            if let Some(base) = text
                .lines()
                .find_map(|l| l.strip_prefix("Listening on "))
                .map(|b| b.trim().to_owned())
            {
                break base;
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!("handler dev exited with {status} before listening:\n{text}");
            }
            assert!(
                Instant::now() < deadline,
                "handler dev did not print its address within {START_TIMEOUT:?}:\n{text}"
            );
            std::thread::sleep(Duration::from_millis(25));
        };
        Self {
            child,
            base,
            log,
            _root: root,
        }
    }

    /// `http://127.0.0.1:<port><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// SIGKILL, as an out-of-memory killer or a closed terminal would.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Everything it printed so far (the handler process's output included).
    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The last `n` lines of its output, for failure messages.
    pub fn tail(&self, n: usize) -> String {
        let text = self.output();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// Its exit status, once it has exited.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// `GET /_dev/<what>` as JSON.
    pub async fn dev(&self, what: &str) -> Value {
        let response = super::http()
            .get(self.url(&format!("/_dev/{what}")))
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET /_dev/{what}: {e}"));
        assert_eq!(response.status(), 200, "GET /_dev/{what}");
        response.json().await.expect("a JSON dev endpoint")
    }

    /// The onboarding queue's counts and dead letters.
    pub async fn onboarding_queue(&self) -> Value {
        self.dev("queues").await["onboarding"].clone()
    }

    /// Polls `/_dev/<what>` every 25 ms until `done` holds; panics with the last value after
    /// `timeout`.
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
                self.tail(60)
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

impl Drop for DevHost {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
