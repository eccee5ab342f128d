//! End-to-end tests of `handler dev` through the real binary: a copy of the repository's
//! host.json and function folders as the app root, sign-up over HTTP, the in-process queue,
//! and the email, with the embedded defaults and with a real Redis and a real SMTP server.

use std::io::Read;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tempfile::TempDir;
use test_support::{DevHost, RedisServer, SilentServer, SmtpSink, app_root, free_port};

/// How long the dev host may take to print its address.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long an email may take to go out once a user signed up.
const MAIL_TIMEOUT: Duration = Duration::from_secs(30);
/// Rewrites a copied function.json.
fn edit_function(root: &Path, function: &str, edit: impl FnOnce(&mut Value)) {
    let path = root.join(function).join("function.json");
    let mut doc: Value =
        serde_json::from_str(&std::fs::read_to_string(&path).expect("read function.json"))
            .expect("function.json is JSON");
    edit(&mut doc);
    std::fs::write(&path, doc.to_string()).expect("write function.json");
}

/// How long one request to the dev host may take.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(30);

/// `handler dev` from this package's `handler` binary, serving `root` with these settings and
/// arguments.
fn start_dev(root: TempDir, env: &[(&str, String)], args: &[&str]) -> DevHost {
    DevHost::builder(env!("CARGO_BIN_EXE_handler"))
        .root(root)
        .envs(env)
        .args(args)
        .start()
}

fn client() -> reqwest::Client {
    test_support::http_client(CLIENT_TIMEOUT)
}

fn unique_email(tag: &str) -> String {
    format!("{tag}-{}@example.com", uuid::Uuid::new_v4().simple())
}

/// Waits for an `.eml` file in the dev host's outbox that mentions `recipient`; returns its text.
async fn wait_for_eml(dev: &DevHost, recipient: &str) -> String {
    dev.wait_for_email(MAIL_TIMEOUT, |text| text.contains(recipient))
        .await
        .1
}

/// What these tests ask of a dev host beyond test-support's launcher.
trait DevHostExt {
    /// Polls `/_dev/queues` until `done` holds; panics with the last state after `timeout`.
    async fn wait_for_queues(&self, timeout: Duration, done: impl Fn(&Value) -> bool) -> Value;
    /// POST /createUser with JSON; returns the status and the body.
    async fn sign_up(&self, email: &str) -> (u16, Value);
    /// Sends `body` to the onboarding queue.
    async fn enqueue(&self, body: Value);
    /// Polls `/_dev/handler` until `done` holds.
    async fn wait_for_handler(&self, done: impl Fn(&Value) -> bool) -> Value;
    /// The handler's URL as `/_dev/handler` shows it.
    async fn handler_url(&self) -> Value;
}

impl DevHostExt for DevHost {
    async fn wait_for_queues(&self, timeout: Duration, done: impl Fn(&Value) -> bool) -> Value {
        self.wait_for("queues", timeout, done).await
    }

    async fn sign_up(&self, email: &str) -> (u16, Value) {
        let response = client()
            .post(self.url("/createUser"))
            .json(&json!({"name": "Ada Lovelace", "email": email, "password": "correct horse battery"}))
            .send()
            .await
            .expect("POST /createUser");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    async fn enqueue(&self, body: Value) {
        let sent = client()
            .post(self.url("/_dev/queues/onboarding/messages"))
            .json(&body)
            .send()
            .await
            .expect("enqueue");
        assert_eq!(sent.status(), 201);
    }

    async fn wait_for_handler(&self, done: impl Fn(&Value) -> bool) -> Value {
        self.wait_for("handler", Duration::from_secs(30), done)
            .await
    }

    async fn handler_url(&self) -> Value {
        self.dev("handler").await["url"].clone()
    }
}

/// Checks the profile answers of `GET /` with and without the token.
async fn assert_profile_and_redirect(dev: &DevHost, token: &str, email: &str) {
    let profile = client()
        .get(dev.url("/"))
        .bearer_auth(token)
        .header("Accept", "application/json")
        .send()
        .await
        .expect("GET / with a token");
    assert_eq!(profile.status(), 200);
    let profile: Value = profile.json().await.expect("the profile is JSON");
    assert_eq!(profile["email"], email);

    let anonymous = client().get(dev.url("/")).send().await.expect("GET /");
    assert_eq!(anonymous.status(), 302);
    assert_eq!(anonymous.headers()["location"], "/createUser");
}

/// With no setting at all: in-memory store, outbox files, a generated key; sign-up answers 201,
/// the token opens `GET /`, and the email lands in `<app root>/outbox` through the queue.
#[tokio::test]
async fn sign_up_profile_and_email_work_with_the_embedded_defaults() {
    let dev = start_dev(app_root(), &[], &[]);
    let banner = dev.output();
    for expected in [
        "[embedded]",
        "outbox",
        "tokens end with the run",
        "/createUser",
        "/_dev/queues",
    ] {
        assert!(
            banner.contains(expected),
            "the banner lacks {expected:?}:\n{banner}"
        );
    }
    let email = unique_email("ada");

    let (status, body) = dev.sign_up(&email).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["tokenType"], "Bearer");
    let token = body["token"].as_str().expect("a token");
    assert_profile_and_redirect(&dev, token, &email).await;

    let eml = wait_for_eml(&dev, &email).await;
    assert!(
        eml.contains("onboarding@localhost"),
        "the local sender is used:\n{eml}"
    );
    dev.wait_for_queues(Duration::from_secs(10), |q| {
        q["onboarding"]["active"] == 0
            && q["onboarding"]["completed"] == 1
            && q["onboarding"]["deadLetter"] == json!([])
    })
    .await;
}

/// The host's routing rules at the public port: unknown paths 404, a method the function does
/// not list 405 with `Allow`, case-insensitive routes, and health.
#[tokio::test]
async fn routes_follow_the_function_json_files() {
    let dev = start_dev(app_root(), &[], &[]);

    let health = client()
        .get(dev.url("/HEALTH"))
        .send()
        .await
        .expect("GET /HEALTH");
    assert_eq!(health.status(), 200);
    let missing = client()
        .get(dev.url("/no/such/page"))
        .send()
        .await
        .expect("GET");
    assert_eq!(missing.status(), 404);
    let refused = client()
        .delete(dev.url("/createUser"))
        .send()
        .await
        .expect("DELETE");
    assert_eq!(refused.status(), 405);
    assert_eq!(refused.headers()["allow"], "GET, POST");
    let page = client()
        .get(dev.url("/createUser"))
        .send()
        .await
        .expect("GET /createUser");
    assert_eq!(page.status(), 200);
}

/// With REDIS_URL and SMTP_URL set, the real servers are used and the email is received by SMTP.
#[tokio::test]
async fn with_redis_and_smtp_set_the_real_servers_are_used() {
    let redis = RedisServer::start();
    let smtp = SmtpSink::start();
    let dev = start_dev(
        app_root(),
        &[("REDIS_URL", redis.url()), ("SMTP_URL", smtp.url())],
        &[],
    );
    let banner = dev.output();
    assert!(banner.contains("[real]"), "{banner}");
    assert!(
        banner.contains(&format!("127.0.0.1:{}", redis.port())),
        "{banner}"
    );
    let email = unique_email("grace");

    let (status, body) = dev.sign_up(&email).await;
    assert_eq!(status, 201, "{body}");
    assert_profile_and_redirect(&dev, body["token"].as_str().expect("a token"), &email).await;

    let mail = smtp
        .wait_for_mail(MAIL_TIMEOUT, |m| m.to.iter().any(|t| t == &email))
        .await;
    assert!(mail.data.contains("Subject:"), "{}", mail.data);
    assert!(!dev.outbox().exists(), "no outbox with real SMTP");
    let health = client()
        .get(dev.url("/health"))
        .send()
        .await
        .expect("GET /health");
    assert_eq!(health.status(), 200);
}

/// SMTP down for longer than ten send windows (1 s each here): each delivery rides the outage
/// out for its window, then answers non-2xx; the message comes back at once with a growing
/// DeliveryCount and is dead-lettered after 10 deliveries (visible in /_dev/queues); once SMTP is
/// back, the next user's email goes out.
#[tokio::test]
async fn a_failing_mail_server_leads_to_redelivery_then_dead_letter_then_recovery() {
    let smtp_port = free_port();
    let dev = start_dev(
        app_root(),
        &[
            ("SMTP_URL", format!("smtp://127.0.0.1:{smtp_port}")),
            ("SMTP_SEND_WINDOW_SECONDS", "1".to_owned()),
        ],
        &[],
    );
    let first = unique_email("first");
    let (status, body) = dev.sign_up(&first).await;
    assert_eq!(status, 201, "{body}");

    let queues = dev
        .wait_for_queues(Duration::from_secs(60), |q| {
            q["onboarding"]["deadLetter"]
                .as_array()
                .is_some_and(|d| d.len() == 1)
        })
        .await;
    let dead = &queues["onboarding"]["deadLetter"][0];
    assert_eq!(dead["deliveryCount"], 10);
    assert_eq!(dead["reason"], "MaxDeliveryCountExceeded");
    assert!(
        dead["body"].as_str().is_some_and(|b| b.contains(&first)),
        "{dead}"
    );
    let id = dead["messageId"].as_str().expect("a message id");
    let output = dev.output();
    for delivery in 1..=9 {
        assert!(
            output.contains(&format!("delivery {delivery} of message {id}")),
            "delivery {delivery} not logged:\n{output}"
        );
    }
    assert!(output.contains("dead-lettered"), "{output}");

    let smtp = SmtpSink::start_on(smtp_port);
    let second = unique_email("second");
    let (status, body) = dev.sign_up(&second).await;
    assert_eq!(status, 201, "{body}");
    smtp.wait_for_mail(MAIL_TIMEOUT, |m| m.to.iter().any(|t| t == &second))
        .await;
    assert!(
        !smtp
            .messages()
            .iter()
            .any(|m| m.to.iter().any(|t| t == &first)),
        "the dead-lettered message must not be retried"
    );
}

/// Settings come from local.settings.json, environment variables win, and `%NAME%` in a
/// binding resolves: the queue is named by a setting on both sides.
#[tokio::test]
async fn local_settings_resolve_binding_names_and_the_environment_wins() {
    let root = app_root();
    edit_function(root.path(), "createUser", |doc| {
        doc["bindings"][2]["queueName"] = json!("%ONBOARDING_QUEUE%");
    });
    edit_function(root.path(), "sendOnboarding", |doc| {
        doc["bindings"][0]["queueName"] = json!("%ONBOARDING_QUEUE%");
    });
    std::fs::write(
        root.path().join("local.settings.json"),
        json!({"IsEncrypted": false, "Values": {
            "ONBOARDING_QUEUE": "from-file",
            "MAIL_FROM": "Local File <file-sender@example.com>"
        }})
        .to_string(),
    )
    .expect("write local.settings.json");
    let dev = start_dev(root, &[("ONBOARDING_QUEUE", "from-env".to_owned())], &[]);

    let queues = dev.queues().await;
    assert!(queues.get("from-env").is_some(), "{queues}");
    assert!(queues.get("from-file").is_none(), "{queues}");
    let email = unique_email("lin");
    let (status, _) = dev.sign_up(&email).await;
    assert_eq!(status, 201);
    let eml = wait_for_eml(&dev, &email).await;
    assert!(eml.contains("file-sender@example.com"), "{eml}");
}

/// SIGTERM stops the dev host: exit 0, and the messages still waiting are counted.
#[tokio::test]
async fn sigterm_stops_and_reports_the_pending_messages() {
    let dev_smtp_down = [("SMTP_URL", format!("smtp://127.0.0.1:{}", free_port()))];
    // Failing deliveries come back at once; 2000 of them outlast the test.
    let mut dev = start_dev(
        app_root(),
        &dev_smtp_down,
        &["--max-delivery-count", "2000"],
    );
    let (status, _) = dev.sign_up(&unique_email("late")).await;
    assert_eq!(status, 201);
    dev.wait_for_queues(Duration::from_secs(30), |q| q["onboarding"]["active"] == 1)
        .await;

    let status = dev.terminate(Duration::from_secs(40));

    assert!(status.success(), "exit status {status}:\n{}", dev.output());
    let output = dev.output();
    assert!(
        output.contains("queue onboarding: 1 message(s) still pending"),
        "{output}"
    );
}

/// A route template the dev host cannot honour stops it at start with a clear message.
#[tokio::test]
async fn an_unsupported_route_template_is_an_error_at_start() {
    let root = app_root();
    edit_function(root.path(), "health", |doc| {
        doc["bindings"][0]["route"] = json!("health/{id:regex(^[a-z]+$)}");
    });
    let dev = DevHost::builder(env!("CARGO_BIN_EXE_handler")).root(root);
    let mut child = dev
        .command()
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the handler binary");
    let deadline = Instant::now() + START_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("handler dev kept running with an unsupported route");
        }
        std::thread::sleep(Duration::from_millis(25));
    };
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut stderr)
        .expect("read stderr");
    assert!(!status.success());
    assert!(
        stderr.contains("health") && stderr.contains("regex"),
        "{stderr}"
    );
}

// ---------------------------------------------------------------------------------------------
// The worker lifecycle and Service Bus settlement, as on Azure (docs/PROTOCOL.md), with the host.json
// limits scaled down. A fake handler (python3's http.server, started by `--handler-process
// --handler-executable`) misbehaves on demand: each function's mode is read from a file at each
// invocation, and each invocation is logged as a JSON line.
// ---------------------------------------------------------------------------------------------

/// The fake handler. Modes (file `<modes>/<function>`): `ok` (default), `fail` (500),
/// `slowfirst:<s>` (the first invocation sleeps, later ones answer at once), `exit<code>once`
/// (the first invocation makes the process exit with that code). With FAKE_RESTART_DELAY set,
/// every start but the first waits that many seconds before listening.
const FAKE_HANDLER: &str = r#"#!/usr/bin/env python3
import http.server, json, os, sys, time
port = int(os.environ["FUNCTIONS_CUSTOMHANDLER_PORT"])
log, modes = os.environ["FAKE_LOG"], os.environ["FAKE_MODES"]
started = os.path.join(modes, ".started")
if os.path.exists(started):
    time.sleep(float(os.environ.get("FAKE_RESTART_DELAY", "0")))
open(started, "a").close()

def once(name):
    marker = os.path.join(modes, ".once-" + name)
    if os.path.exists(marker):
        return False
    open(marker, "a").close()
    return True

class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *args):
        pass
    def reply(self, status, body, content_type):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def do_GET(self):
        self.reply(200, b"ok", "text/plain")
    def do_POST(self):
        body = b""
        while True:
            size = int(self.rfile.readline().strip(), 16)
            chunk = self.rfile.read(size + 2)[:size]
            if size == 0:
                break
            body += chunk
        envelope = json.loads(body)
        function = self.path.strip("/")
        count = envelope.get("Metadata", {}).get("DeliveryCount")
        with open(log, "a") as f:
            f.write(json.dumps({"function": function, "t": time.time(), "pid": os.getpid(),
                                "deliveryCount": int(count) if count else None}) + "\n")
        path = os.path.join(modes, function)
        mode = open(path).read().strip() if os.path.exists(path) else "ok"
        if mode == "fail":
            return self.reply(500, b"failing on purpose", "text/plain")
        if mode.startswith("slowfirst:") and once(function):
            time.sleep(float(mode.split(":")[1]))
        if mode.startswith("exit") and mode.endswith("once") and once(function):
            os._exit(int(mode[4:-4]))
        answer = {"Outputs": {"res": {"statusCode": 200, "body": "done"}}, "Logs": [], "ReturnValue": None}
        self.reply(200, json.dumps(answer).encode(), "application/json")

http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()
"#;

/// A fake handler's files: the script, its mode folder and its invocation log.
struct Fake {
    dir: TempDir,
}

impl Fake {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("a folder for the fake handler");
        let script = dir.path().join("fake_handler.py");
        std::fs::write(&script, FAKE_HANDLER).expect("write the fake handler");
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755))
            .expect("make the fake handler executable");
        std::fs::create_dir(dir.path().join("modes")).expect("the modes folder");
        Self { dir }
    }

    fn set(&self, function: &str, mode: &str) {
        std::fs::write(self.dir.path().join("modes").join(function), mode).expect("write a mode");
    }

    fn env(&self, extra: &[(&'static str, String)]) -> Vec<(&'static str, String)> {
        let mut env = vec![
            ("FAKE_LOG", self.log_path()),
            (
                "FAKE_MODES",
                self.dir.path().join("modes").display().to_string(),
            ),
        ];
        env.extend_from_slice(extra);
        env
    }

    fn args(&self) -> Vec<String> {
        vec![
            "--handler-process".to_owned(),
            "--handler-executable".to_owned(),
            self.dir
                .path()
                .join("fake_handler.py")
                .display()
                .to_string(),
        ]
    }

    fn log_path(&self) -> String {
        self.dir
            .path()
            .join("invocations.log")
            .display()
            .to_string()
    }

    /// Every invocation so far, in order.
    fn invocations(&self, function: &str) -> Vec<Value> {
        std::fs::read_to_string(self.log_path())
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|v| v["function"] == function)
            .collect()
    }
}

/// An app root whose host.json has the test's own limits.
fn app_root_with_host(edit: impl FnOnce(&mut Value)) -> TempDir {
    let root = app_root();
    let path = root.path().join("host.json");
    let mut host: Value =
        serde_json::from_str(&std::fs::read_to_string(&path).expect("read host.json"))
            .expect("host.json is JSON");
    edit(&mut host);
    std::fs::write(&path, host.to_string()).expect("write host.json");
    root
}

/// A failing delivery comes back at once with DeliveryCount + 1 (no backoff) and the tenth is
/// dead-lettered with MaxDeliveryCountExceeded and the last error in /_dev/queues.
#[tokio::test]
async fn failed_deliveries_come_back_at_once_and_the_tenth_is_dead_lettered() {
    let fake = Fake::new();
    fake.set("sendOnboarding", "fail");
    let args = fake.args();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let dev = start_dev(app_root(), &fake.env(&[]), &args);
    dev.enqueue(json!({"userId": "u1"})).await;

    let queues = dev
        .wait_for_queues(Duration::from_secs(30), |q| {
            q["onboarding"]["deadLetter"]
                .as_array()
                .is_some_and(|d| !d.is_empty())
        })
        .await;
    let dead = &queues["onboarding"]["deadLetter"][0];
    assert_eq!(dead["reason"], "MaxDeliveryCountExceeded");
    assert_eq!(dead["deliveryCount"], 10);
    let description = dead["errorDescription"].as_str().unwrap_or_default();
    assert!(description.contains("500"), "{description}");
    assert_eq!(queues["onboarding"]["active"], 0);

    let seen = fake.invocations("sendOnboarding");
    let counts: Vec<u64> = seen
        .iter()
        .filter_map(|v| v["deliveryCount"].as_u64())
        .collect();
    assert_eq!(counts, (1..=10).collect::<Vec<_>>());
    // The old dev host waited at least a second before each redelivery; Service Bus does not.
    let times: Vec<f64> = seen.iter().filter_map(|v| v["t"].as_f64()).collect();
    for pair in times.windows(2) {
        assert!(pair[1] - pair[0] < 1.0, "a redelivery waited: {times:?}");
    }
}

/// An invocation past maxAutoLockRenewalDuration loses its lock: the message is delivered again
/// (DeliveryCount 2) while the first still runs, and the first's later success is ignored.
#[tokio::test]
async fn an_invocation_past_the_lock_renewal_limit_loses_its_message() {
    let fake = Fake::new();
    fake.set("sendOnboarding", "slowfirst:4");
    let args = fake.args();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let root = app_root_with_host(|h| {
        h["functionTimeout"] = json!("00:00:10");
        h["extensions"]["serviceBus"]["maxAutoLockRenewalDuration"] = json!("00:00:02");
    });
    let dev = start_dev(root, &fake.env(&[]), &args);
    dev.enqueue(json!({"userId": "u1"})).await;

    dev.wait_for_queues(Duration::from_secs(30), |q| {
        q["onboarding"]["completed"] == 1 && q["onboarding"]["locksLost"] == 1
    })
    .await;
    let seen = fake.invocations("sendOnboarding");
    let counts: Vec<u64> = seen
        .iter()
        .filter_map(|v| v["deliveryCount"].as_u64())
        .collect();
    assert_eq!(counts, vec![1, 2]);
    let gap = seen[1]["t"].as_f64().unwrap() - seen[0]["t"].as_f64().unwrap();
    assert!(gap >= 1.9, "redelivered only at the renewal limit: {gap}");
    // The first invocation ends later (4 s) and its success completes nothing.
    let deadline = Instant::now() + Duration::from_secs(15);
    while !dev.output().contains("its success is ignored") {
        assert!(Instant::now() < deadline, "{}", dev.output());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(dev.output().contains("MessageLockLost"));
    let q = dev.queues().await;
    assert_eq!(
        (
            q["onboarding"]["completed"].clone(),
            q["onboarding"]["active"].clone()
        ),
        (json!(1), json!(0))
    );
}

/// In-process mode too: at functionTimeout the caller gets an empty 500, the handler is killed
/// and restarted (same port, same in-memory App), and the other invocation in flight fails
/// with it, before its own timeout.
#[tokio::test]
async fn a_function_timeout_restarts_the_in_process_handler_and_fails_the_other_invocation() {
    let root = app_root_with_host(|h| h["functionTimeout"] = json!("00:00:01"));
    let dev = start_dev(
        root,
        &[(
            "REDIS_URL",
            format!("redis://127.0.0.1:{}", SilentServer::start().port),
        )],
        &[],
    );
    let url = dev.handler_url().await;
    let first = tokio::spawn(sign_up_at(dev.url("/createUser"), unique_email("a")));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let second = tokio::spawn(sign_up_at(dev.url("/createUser"), unique_email("b")));
    let (first, second) = (first.await.unwrap(), second.await.unwrap());
    assert_eq!(first, (500, String::new()));
    assert_eq!(second, (500, String::new()));
    let handler = dev
        .wait_for_handler(|h| h["restarts"] == 1 && h["state"] == "ready")
        .await;
    assert_eq!(handler["mode"], "in-process");
    assert_eq!(handler["url"], url, "restarted on the same port");
    let output = dev.output();
    assert!(output.contains("timed out after 1s"), "{output}");
    assert!(
        output.contains("cannot reach the handler"),
        "the second was cut: {output}"
    );
}

async fn sign_up_at(url: String, email: String) -> (u16, String) {
    let response = client()
        .post(url)
        .json(&json!({"name": "Ada Lovelace", "email": email, "password": "correct horse battery"}))
        .send()
        .await
        .expect("POST /createUser");
    let status = response.status().as_u16();
    (status, response.text().await.unwrap_or_default())
}

/// An invocation arriving while the handler restarts (after a counted crash, exit code 3) is
/// held until it answers, not failed.
#[tokio::test]
async fn invocations_arriving_during_a_restart_are_held_not_failed() {
    let fake = Fake::new();
    fake.set("createUser", "exit3once");
    let args = fake.args();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let dev = start_dev(
        app_root(),
        &fake.env(&[("FAKE_RESTART_DELAY", "1.5".to_owned())]),
        &args,
    );
    let first_pid = dev.dev("handler").await["pid"].clone();
    let crashed = sign_up_at(dev.url("/createUser"), unique_email("a")).await;
    assert_eq!(
        crashed,
        (500, String::new()),
        "the crash fails the invocation in flight"
    );
    // The crash is seen within the supervisor's 25 ms exit poll; the restart takes 1.5 s.
    dev.wait_for_handler(|h| h["state"] == "starting").await;
    let held = sign_up_at(dev.url("/createUser"), unique_email("b")).await;
    assert_eq!(held, (200, "done".to_owned()));
    let handler = dev.dev("handler").await;
    assert_eq!(handler["restarts"], 1);
    assert_ne!(handler["pid"], first_pid);
    let seen = fake.invocations("createUser");
    assert_eq!(seen.len(), 2);
    assert!(
        dev.output().contains("exited with exit status: 3"),
        "{}",
        dev.output()
    );
}

/// A handler that exits with code 0 is not restarted: every later invocation fails.
#[tokio::test]
async fn a_handler_that_exits_0_is_not_restarted() {
    let fake = Fake::new();
    fake.set("createUser", "exit0once");
    let args = fake.args();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let dev = start_dev(app_root(), &fake.env(&[]), &args);
    assert_eq!(
        sign_up_at(dev.url("/createUser"), unique_email("a"))
            .await
            .0,
        500
    );
    let handler = dev.wait_for_handler(|h| h["state"] == "exited").await;
    assert_eq!(
        (handler["pid"].clone(), handler["restarts"].clone()),
        (Value::Null, json!(0))
    );
    assert_eq!(
        sign_up_at(dev.url("/createUser"), unique_email("b"))
            .await
            .0,
        500
    );
    assert_eq!(
        fake.invocations("createUser").len(),
        1,
        "the second never reached a handler"
    );
    assert!(
        dev.output().contains("exited with code 0"),
        "{}",
        dev.output()
    );
}

/// Queue sends happen after the handler answered: when they fail the caller gets an empty 500
/// though the user was saved; once sends work, the same sign-up again queues the email.
#[tokio::test]
async fn a_failed_queue_send_is_an_empty_500_after_the_user_was_saved() {
    let dev = start_dev(app_root(), &[], &["--fail-queue-sends"]);
    assert_eq!(dev.dev("faults").await, json!({"queueSends": "fail"}));
    let email = unique_email("send");
    let failed = sign_up_at(dev.url("/createUser"), email.clone()).await;
    assert_eq!(failed, (500, String::new()));
    assert_eq!(dev.queues().await["onboarding"]["active"], 0);

    let switched = client()
        .put(dev.url("/_dev/faults"))
        .json(&json!({"queueSends": "ok"}))
        .send()
        .await
        .expect("PUT /_dev/faults");
    assert_eq!(switched.status(), 200);
    assert_eq!(dev.dev("faults").await, json!({"queueSends": "ok"}));
    let (status, body) = dev.sign_up(&email).await;
    assert_eq!(status, 200, "a repeated sign-up of a saved user: {body}");
    wait_for_eml(&dev, &email).await;
}

/// Client bodies of 4, 16 and 64 MiB through `handler dev`: the envelope carries each about
/// twice (past the handler's 8 MiB), yet the client gets the 413 problem, never the empty 500
/// a failed invocation would give.
#[tokio::test]
async fn an_oversized_client_body_gets_the_413_problem_through_the_dev_host() {
    let dev = start_dev(app_root(), &[], &[]);
    for mib in [4usize, 16, 64] {
        let body = json!({"name": "x".repeat(mib << 20), "email": unique_email("big"), "password": "long enough"})
            .to_string();
        let response = client()
            .post(dev.url("/createUser"))
            .header("Content-Type", "application/json")
            .header("Accept", "application/json")
            .body(body)
            .send()
            .await
            .expect("POST /createUser");
        assert_eq!(response.status(), 413, "{mib} MiB");
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        assert!(
            content_type.starts_with("application/problem+json"),
            "{content_type}"
        );
        let problem: Value = response.json().await.expect("a problem body");
        assert_eq!(problem["status"], 413, "{problem}");
    }
}

/// `handler dev` sets `Client-IP` from the real peer as App Service's front end does,
/// overwriting the client's: neither a forged `Client-IP` nor a forged `X-Forwarded-For` gets a
/// client past the per-address sign-up limit.
#[tokio::test]
async fn forged_client_ip_and_forwarded_for_headers_do_not_dodge_the_address_limit() {
    let dev = start_dev(
        app_root(),
        &[("LIMIT_SIGN_UPS_PER_ADDRESS", "2/15m".to_owned())],
        &[],
    );
    let sign_up = |forged: u8| {
        let body = json!({"name": "Ada", "email": unique_email("ip"), "password": "long enough"});
        client()
            .post(dev.url("/createUser"))
            .header("Content-Type", "application/json")
            .header("Accept", "application/json")
            .header("X-Forwarded-For", format!("6.6.6.{forged}"))
            .header("Client-IP", format!("7.7.7.{forged}:1"))
            .body(body.to_string())
            .send()
    };
    for forged in 1..=2 {
        let response = sign_up(forged).await.expect("POST /createUser");
        assert_eq!(response.status(), 201);
    }
    let response = sign_up(3).await.expect("POST /createUser");
    assert_eq!(response.status(), 429);
    assert!(response.headers().contains_key("retry-after"));
}
