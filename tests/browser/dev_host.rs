//! `handler dev` on a free port, serving a copy of this repository's function app (host.json and
//! the four function folders) with the embedded store and the outbox mailer.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use super::process::{Supervised, free_port};

/// How long the dev host may take to answer `GET /health` with 200.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How often readiness and the outbox are polled.
const POLL: Duration = Duration::from_millis(100);
/// What the dev host reads from the app root, as `func start` would.
const APP_FILES: [&str; 5] = [
    "host.json",
    "root/function.json",
    "health/function.json",
    "createUser/function.json",
    "sendOnboarding/function.json",
];

/// A running `handler dev`, stopped on drop.
pub struct DevHost {
    pub base_url: String,
    process: Supervised,
    app_root: TempDir,
    /// The process's working directory, kept apart from the app root so that `--app-root`
    /// alone decides where things are read and written.
    _work_dir: TempDir,
}

impl DevHost {
    /// Copies the function app to a temporary root, starts `handler dev` there with no
    /// `REDIS_URL` or `SMTP_URL`, and waits (bounded) until `GET /health` answers 200.
    pub async fn start() -> Self {
        let app_root = tempfile::tempdir().expect("create the app root");
        let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
        for file in APP_FILES {
            let to = app_root.path().join(file);
            std::fs::create_dir_all(to.parent().expect("a parent folder"))
                .expect("create a function folder");
            std::fs::copy(repo.join(file), &to)
                .unwrap_or_else(|e| panic!("copy {file} into the app root: {e}"));
        }
        let work_dir = tempfile::tempdir().expect("create the working directory");
        let port = free_port();
        let mut command = Command::new(env!("CARGO_BIN_EXE_handler"));
        command
            .arg("dev")
            .arg("--port")
            .arg(port.to_string())
            .arg("--app-root")
            .arg(app_root.path())
            .current_dir(work_dir.path())
            // The embedded store and the outbox, whatever the machine has set.
            .env_remove("REDIS_URL")
            .env_remove("SMTP_URL")
            // The email's "Open your account" button points back at this dev host.
            .env("PUBLIC_URL", format!("http://127.0.0.1:{port}/"))
            .env("RUST_LOG", "info");
        let process = Supervised::spawn(
            "handler dev",
            command,
            &work_dir.path().join("handler-dev.log"),
        );
        let mut host = Self {
            base_url: format!("http://127.0.0.1:{port}"),
            process,
            app_root,
            _work_dir: work_dir,
        };
        host.wait_until_healthy().await;
        host
    }

    async fn wait_until_healthy(&mut self) {
        let client = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(2))
            .build()
            .expect("build an HTTP client");
        let url = format!("{}/health", self.base_url);
        let started = Instant::now();
        loop {
            if let Some(status) = self.process.exited() {
                panic!(
                    "`handler dev` exited ({status}) before answering {url}; its output:\n{}",
                    self.process.log()
                );
            }
            let last = match client.get(&url).send().await {
                Ok(res) if res.status() == 200 => return,
                Ok(res) => format!("status {}", res.status()),
                Err(e) => e.to_string(),
            };
            assert!(
                started.elapsed() < READY_TIMEOUT,
                "`handler dev` did not answer GET {url} with 200 within {READY_TIMEOUT:?} \
                 (last: {last}); its output:\n{}",
                self.process.log_tail(40)
            );
            tokio::time::sleep(POLL).await;
        }
    }

    /// A URL on the dev host.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url)
    }

    /// Where the outbox mailer writes (under the app root).
    pub fn outbox(&self) -> PathBuf {
        self.app_root.path().join("outbox")
    }

    /// Waits (bounded) for the first `.eml` file in the outbox; panics with the dev host's log
    /// if none appears in time.
    pub async fn wait_for_email(&self, timeout: Duration) -> PathBuf {
        let started = Instant::now();
        loop {
            if let Some(found) = eml_files(&self.outbox()).into_iter().next() {
                return found;
            }
            assert!(
                started.elapsed() < timeout,
                "no .eml file appeared in {} within {timeout:?}; the dev host's output:\n{}",
                self.outbox().display(),
                self.process.log_tail(40)
            );
            tokio::time::sleep(POLL).await;
        }
    }
}

/// Finished `.eml` files in `dir` (the outbox writes `.<name>.partial` first, then renames).
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
