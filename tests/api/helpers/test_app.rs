//! The real `handler` binary, started as the Functions host starts it, and one method per
//! function to invoke it as the host does.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::Value;
use tempfile::TempDir;

use super::{RedisServer, TEST_JWT_SECRET};
use test_support::InvocationAnswer;
use test_support::envelope::{self, http_invocation, service_bus_invocation};

/// The host gives up after 30 s; the handler should be far quicker than that.
const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// The host polls `GET /` this often while waiting for the handler.
const READY_POLL: Duration = Duration::from_millis(25);
/// No invocation in these tests may take longer (argon2 in a debug build is slow).
const INVOCATION_TIMEOUT: Duration = Duration::from_secs(120);
/// Envelopes go out in chunks of this size, like the host's request stream.
const CHUNK: usize = 64 * 1024;
/// Where the tests pretend the public site lives.
pub const PUBLIC_ORIGIN: &str = "https://app.example.net";

/// Settings for one handler process; start it with [`TestAppBuilder::spawn`].
pub struct TestAppBuilder {
    env: BTreeMap<String, Option<String>>,
}

impl TestAppBuilder {
    /// Sets (or overrides) an environment variable.
    pub fn env(mut self, name: &str, value: &str) -> Self {
        self.env.insert(name.to_owned(), Some(value.to_owned()));
        self
    }

    /// Leaves an environment variable out.
    pub fn without(mut self, name: &str) -> Self {
        self.env.insert(name.to_owned(), None);
        self
    }

    fn launch(&self) -> (Child, TempDir, u16) {
        let dir = tempfile::tempdir().expect("create a temporary directory for the handler");
        let port: u16 = self
            .env
            .get("FUNCTIONS_CUSTOMHANDLER_PORT")
            .cloned()
            .flatten()
            .and_then(|p| p.parse().ok())
            .unwrap_or(0);
        let stdout = std::fs::File::create(dir.path().join("stdout.log")).expect("stdout file");
        let stderr = std::fs::File::create(dir.path().join("stderr.log")).expect("stderr file");
        let mut command = Command::new(env!("CARGO_BIN_EXE_handler"));
        // Only what we set, plus what a process needs to run (and coverage tooling).
        command.env_clear();
        for inherited in [
            "PATH",
            "HOME",
            "TMPDIR",
            "RUST_BACKTRACE",
            "LLVM_PROFILE_FILE",
        ] {
            if let Ok(value) = std::env::var(inherited) {
                command.env(inherited, value);
            }
        }
        for (name, value) in &self.env {
            if let Some(value) = value {
                command.env(name, value);
            }
        }
        let child = command
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::from(stdout))
            .stderr(Stdio::from(stderr))
            .spawn()
            .expect("start the handler binary");
        (child, dir, port)
    }

    /// Starts the handler and waits for it exactly as the host does: `GET /` every 25 ms until
    /// any HTTP response; panics after 10 s or if the process exits first.
    pub async fn spawn(mut self) -> TestApp {
        let client = reqwest::Client::builder()
            .no_proxy()
            .timeout(INVOCATION_TIMEOUT)
            .build()
            .expect("build the HTTP client");
        let mut attempt = 1;
        loop {
            let (child, dir, port) = self.launch();
            let mut app = TestApp {
                port,
                child,
                dir,
                client: client.clone(),
            };
            match app.wait_until_ready().await {
                Ok(()) => return app,
                // Another test may have taken the free port between our pick and the bind.
                Err(stderr) if attempt < 3 && stderr.to_lowercase().contains("in use") => {
                    attempt += 1;
                    self = self.env(
                        "FUNCTIONS_CUSTOMHANDLER_PORT",
                        &super::free_port().to_string(),
                    );
                }
                Err(stderr) => {
                    panic!("the handler exited before answering GET /; stderr:\n{stderr}")
                }
            }
        }
    }

    /// Starts the handler expecting it to exit by itself within `timeout` (bad settings);
    /// panics (after killing it) if it is still running then.
    pub async fn run_until_exit(self, timeout: Duration) -> Exited {
        let started = Instant::now();
        let (mut child, dir, _) = self.launch();
        loop {
            if let Some(status) = child.try_wait().expect("poll the handler process") {
                return Exited {
                    status,
                    elapsed: started.elapsed(),
                    stdout: read_lossy(dir.path().join("stdout.log")),
                    stderr: read_lossy(dir.path().join("stderr.log")),
                };
            }
            if started.elapsed() > timeout {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "the handler was still running after {timeout:?}; stderr:\n{}",
                    read_lossy(dir.path().join("stderr.log"))
                );
            }
            tokio::time::sleep(READY_POLL).await;
        }
    }
}

/// How a handler process ended.
#[derive(Debug)]
pub struct Exited {
    pub status: ExitStatus,
    pub elapsed: Duration,
    pub stdout: String,
    pub stderr: String,
}

/// A user created through `createUser` (201).
#[derive(Clone, Debug)]
pub struct SignedUp {
    pub id: String,
    pub email: String,
    pub token: String,
    /// `Outputs.onboardingMessage`: the queue message for sendOnboarding.
    pub message: Value,
}

/// A running handler process, killed when dropped.
pub struct TestApp {
    pub port: u16,
    child: Child,
    dir: TempDir,
    client: reqwest::Client,
}

impl TestApp {
    /// Settings for a handler wired to this Redis and SMTP server, with a fresh key prefix.
    pub fn builder(redis_url: &str, smtp_url: &str) -> TestAppBuilder {
        // Limits lifted: many tests sign many users up from one (unknown) address; the limit
        // tests set their own.
        let env = test_support::LIMITS_LIFTED
            .iter()
            .map(|(name, value)| ((*name).to_owned(), Some((*value).to_owned())))
            .collect();
        let builder = TestAppBuilder { env };
        builder
            .env(
                "FUNCTIONS_CUSTOMHANDLER_PORT",
                &super::free_port().to_string(),
            )
            .env("REDIS_URL", redis_url)
            .env(
                "REDIS_KEY_PREFIX",
                &format!("test-{}:", uuid::Uuid::new_v4().simple()),
            )
            .env("JWT_SECRET", TEST_JWT_SECRET)
            .env("SMTP_URL", smtp_url)
            .env("MAIL_FROM", "Onboarding <no-reply@example.com>")
            .env("SMTP_TIMEOUT_SECONDS", "5")
            .env("RUST_LOG", "info")
    }

    /// Starts a handler wired to `redis` and `smtp_url` with the default test settings.
    pub async fn spawn(redis: &RedisServer, smtp_url: &str) -> Self {
        Self::builder(&redis.url(), smtp_url).spawn().await
    }

    /// The handler's peak resident memory so far (`VmHWM`), in KiB.
    pub fn peak_rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .expect("the handler's /proc status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmHWM in /proc status")
    }

    fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Polls `GET /` like the host; `Err(stderr)` when the process exited first.
    async fn wait_until_ready(&mut self) -> Result<(), String> {
        let started = Instant::now();
        loop {
            let ping = self
                .client
                .get(format!("{}/", self.base_url()))
                .timeout(Duration::from_secs(1))
                .send()
                .await;
            if ping.is_ok() {
                return Ok(());
            }
            if let Some(status) = self.child.try_wait().expect("poll the handler process") {
                return Err(format!("(exit status {status})\n{}", self.stderr()));
            }
            assert!(
                started.elapsed() < READY_TIMEOUT,
                "the handler did not answer GET / within {READY_TIMEOUT:?}; stderr:\n{}",
                self.stderr()
            );
            tokio::time::sleep(READY_POLL).await;
        }
    }

    /// The readiness ping: a plain `GET /` (not an invocation); returns the HTTP status.
    pub async fn ping(&self) -> u16 {
        self.client
            .get(format!("{}/", self.base_url()))
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .expect("the readiness ping got no HTTP answer")
            .status()
            .as_u16()
    }

    /// POSTs an envelope to `/<function>` as the host does: its headers, and the body sent
    /// chunked, without Content-Length.
    pub async fn invoke(&self, function: &str, envelope: &Value) -> InvocationAnswer {
        let body = Bytes::from(serde_json::to_vec(envelope).expect("serialize the envelope"));
        self.invoke_bytes(function, body).await
    }

    /// Like [`TestApp::invoke`] for an envelope already serialized.
    pub async fn invoke_bytes(&self, function: &str, body: Bytes) -> InvocationAnswer {
        let chunks: Vec<Result<Bytes, std::io::Error>> = (0..body.len())
            .step_by(CHUNK)
            .map(|start| Ok(body.slice(start..body.len().min(start + CHUNK))))
            .collect();
        let mut request = self
            .client
            .post(format!("{}/{function}", self.base_url()))
            .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
                chunks,
            )));
        for (name, value) in envelope::host_headers() {
            request = request.header(name, value);
        }
        let response = request
            .send()
            .await
            .unwrap_or_else(|e| panic!("POST /{function} got no HTTP answer: {e}"));
        InvocationAnswer::from_response(response)
            .await
            .unwrap_or_else(|e| panic!("reading the answer to POST /{function}: {e}"))
    }

    /// `root`: a client's `GET /` with these headers.
    pub async fn root(&self, headers: &[(&str, &str)]) -> InvocationAnswer {
        let url = format!("{PUBLIC_ORIGIN}/");
        self.invoke("root", &http_invocation("GET", &url, headers, None))
            .await
    }

    /// `root` with `Authorization: Bearer <token>`.
    pub async fn root_with_token(&self, token: &str) -> InvocationAnswer {
        let authorization = format!("Bearer {token}");
        self.root(&[("Authorization", &authorization)]).await
    }

    /// `GET /` with `token`, which must answer 200: the user's profile as JSON.
    pub async fn profile(&self, token: &str) -> Value {
        self.root_with_token(token)
            .await
            .res()
            .assert_status(200)
            .json()
    }

    /// `health`: a client's `GET /health`.
    pub async fn health(&self) -> InvocationAnswer {
        let url = format!("{PUBLIC_ORIGIN}/health");
        self.invoke("health", &http_invocation("GET", &url, &[], None))
            .await
    }

    /// `createUser`: a client's `POST /createUser` with a JSON body.
    pub async fn create_user_json(&self, body: &Value) -> InvocationAnswer {
        self.create_user_raw(Some("application/json"), &body.to_string())
            .await
    }

    /// `createUser`: a client's `POST /createUser` with any body and Content-Type.
    pub async fn create_user_raw(
        &self,
        content_type: Option<&str>,
        body: &str,
    ) -> InvocationAnswer {
        let url = format!("{PUBLIC_ORIGIN}/createUser");
        let headers: Vec<(&str, &str)> = content_type
            .map(|ct| vec![("Content-Type", ct)])
            .unwrap_or_default();
        self.invoke(
            "createUser",
            &http_invocation("POST", &url, &headers, Some(body)),
        )
        .await
    }

    /// `createUser`: a browser's form post (it asks for `text/html` first, as browsers do).
    pub async fn create_user_from_browser(&self, form: &str) -> InvocationAnswer {
        let url = format!("{PUBLIC_ORIGIN}/createUser");
        let headers = [
            ("Content-Type", "application/x-www-form-urlencoded"),
            ("Accept", "text/html,application/xhtml+xml,*/*;q=0.8"),
        ];
        self.invoke(
            "createUser",
            &http_invocation("POST", &url, &headers, Some(form)),
        )
        .await
    }

    /// `createUser`: a client's `GET /createUser` (the sign-up page).
    pub async fn create_user_page(&self) -> InvocationAnswer {
        let url = format!("{PUBLIC_ORIGIN}/createUser");
        let headers = [("Accept", "text/html")];
        self.invoke("createUser", &http_invocation("GET", &url, &headers, None))
            .await
    }

    /// Any HTTP function: a client's `method` request to `/<function>` with these headers and body.
    pub async fn http(
        &self,
        function: &str,
        method: &str,
        headers: &[(&str, &str)],
        body: Option<&str>,
    ) -> InvocationAnswer {
        let url = format!("{PUBLIC_ORIGIN}/{function}");
        self.invoke(function, &http_invocation(method, &url, headers, body))
            .await
    }

    /// `signIn` with a JSON body `{email, password}`, from client address `client_ip`.
    pub async fn sign_in(&self, email: &str, password: &str, client_ip: &str) -> InvocationAnswer {
        let body = serde_json::json!({"email": email, "password": password}).to_string();
        let headers = [
            ("Content-Type", "application/json"),
            ("Client-IP", client_ip),
        ];
        self.http("signIn", "POST", &headers, Some(&body)).await
    }

    /// `verifyEmail`: a client's request with this query string (`token=…` or empty), headers
    /// and body.
    pub async fn verify_email(
        &self,
        method: &str,
        query: &str,
        headers: &[(&str, &str)],
        body: Option<&str>,
    ) -> InvocationAnswer {
        let url = if query.is_empty() {
            format!("{PUBLIC_ORIGIN}/verifyEmail")
        } else {
            format!("{PUBLIC_ORIGIN}/verifyEmail?{query}")
        };
        self.invoke("verifyEmail", &http_invocation(method, &url, headers, body))
            .await
    }

    /// Signs up through `createUser`, asserting a 201 with a token and a queue message.
    pub async fn sign_up(&self, body: &Value) -> SignedUp {
        let answer = self.create_user_json(body).await;
        let res = answer.res();
        res.assert_status(201);
        let json = res.json();
        SignedUp {
            id: json["id"].as_str().expect("an id").to_owned(),
            email: json["email"].as_str().expect("an email").to_owned(),
            token: json["token"].as_str().expect("a token").to_owned(),
            message: answer.outputs["onboardingMessage"].clone(),
        }
    }

    /// `sendOnboarding`: the Service Bus trigger delivering `message` (attempt `delivery_count`).
    pub async fn send_onboarding(&self, message: &Value, delivery_count: u32) -> InvocationAnswer {
        self.invoke(
            "sendOnboarding",
            &service_bus_invocation(message, delivery_count),
        )
        .await
    }

    /// Everything the handler wrote to stdout so far.
    pub fn stdout(&self) -> String {
        read_lossy(self.dir.path().join("stdout.log"))
    }

    /// Everything the handler wrote to stderr so far.
    pub fn stderr(&self) -> String {
        read_lossy(self.dir.path().join("stderr.log"))
    }

    /// Waits (up to `timeout`) for stderr to grow past `since` bytes; returns the new text.
    pub async fn new_stderr_since(&self, since: usize, timeout: Duration) -> String {
        let started = Instant::now();
        loop {
            let stderr = self.stderr();
            if stderr.len() > since {
                return stderr[since..].to_owned();
            }
            assert!(
                started.elapsed() < timeout,
                "nothing new on the handler's stderr within {timeout:?}"
            );
            tokio::time::sleep(READY_POLL).await;
        }
    }

    /// Sends SIGTERM and waits up to `timeout` for the process to exit.
    pub async fn terminate(&mut self, timeout: Duration) -> ExitStatus {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("run kill");
        assert!(sent.success(), "kill -TERM {pid} failed");
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("poll the handler process") {
                return status;
            }
            assert!(
                started.elapsed() < timeout,
                "the handler did not exit within {timeout:?} of SIGTERM"
            );
            tokio::time::sleep(READY_POLL).await;
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn read_lossy(path: PathBuf) -> String {
    std::fs::read(path)
        .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
        .unwrap_or_default()
}
