//! The load driver: N clients posting unique sign-ups back to back, each answer recorded with
//! its timing. A client that gets a 5xx (or no answer) retries the same sign-up, as a careful
//! client does, so "acknowledged" means 201 or 200 for that email, whatever came before.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::sync::watch;
use tokio::task::JoinSet;

/// Every request's own deadline: an answer later than this is a hang, and fails the test.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Pause before a client retries a sign-up that failed.
const RETRY_PAUSE: Duration = Duration::from_millis(50);
/// The password every load user signs up with.
pub const PASSWORD: &str = "Tr0ub4dor&3-horse-battery";

/// One request and what came back.
#[derive(Debug, Clone)]
pub struct Answer {
    pub email: String,
    /// `None` when no HTTP answer came (timeout or connection error).
    pub status: Option<u16>,
    /// Why there was no answer, or the body of a 5xx.
    pub detail: String,
    /// Sent, relative to the start of the load.
    pub sent: Duration,
    /// Answered (or given up), relative to the start of the load.
    pub answered: Duration,
    /// From a 201 or 200.
    pub token: Option<String>,
    pub user_id: Option<String>,
}

impl Answer {
    pub fn acknowledged(&self) -> bool {
        matches!(self.status, Some(200 | 201))
    }

    pub fn latency(&self) -> Duration {
        self.answered.saturating_sub(self.sent)
    }
}

/// A user that got a 201 or 200.
#[derive(Debug, Clone)]
pub struct Acknowledged {
    pub email: String,
    pub token: String,
    pub user_id: String,
}

/// A running load; [`Load::stop`] ends it and returns every answer.
pub struct Load {
    started: Instant,
    answers: Arc<Mutex<Vec<Answer>>>,
    stop_tx: watch::Sender<bool>,
    clients: JoinSet<()>,
}

impl Load {
    /// Starts `clients` clients against `base`, each sending at most `per_client` requests.
    pub fn start(base: &str, tag: &str, clients: usize, per_client: usize) -> Self {
        let started = Instant::now();
        let answers: Arc<Mutex<Vec<Answer>>> = Arc::default();
        let (stop_tx, stop_rx) = watch::channel(false);
        let http = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(REQUEST_TIMEOUT)
            .build()
            .expect("an HTTP client");
        let mut set = JoinSet::new();
        for client in 0..clients {
            let url = format!("{base}/createUser");
            let (http, answers, stop_rx) = (http.clone(), answers.clone(), stop_rx.clone());
            let tag = format!("{tag}-{client}");
            set.spawn(async move {
                run_client(&http, &url, &tag, per_client, started, &answers, stop_rx).await;
            });
        }
        Self {
            started,
            answers,
            stop_tx,
            clients: set,
        }
    }

    /// When the load started: every [`Answer`] time is relative to it.
    pub fn started(&self) -> Instant {
        self.started
    }

    /// Time since the start.
    pub fn now(&self) -> Duration {
        self.started.elapsed()
    }

    /// The answers so far.
    pub fn answers(&self) -> Vec<Answer> {
        self.answers.lock().expect("answers lock").clone()
    }

    /// Waits until `done` holds for the answers so far; panics after `timeout`.
    pub async fn wait_until(
        &self,
        what: &str,
        timeout: Duration,
        done: impl Fn(&[Answer]) -> bool,
    ) {
        let deadline = Instant::now() + timeout;
        loop {
            if done(&self.answers()) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the load did not reach {what} within {timeout:?}: {}",
                summary(&self.answers())
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Waits until every client has sent all its requests.
    pub async fn finish(mut self) -> Vec<Answer> {
        while let Some(done) = self.clients.join_next().await {
            done.expect("a load client panicked");
        }
        self.answers()
    }

    /// Stops sending and waits for the requests in flight (each bounded by its timeout).
    pub async fn stop(mut self) -> Vec<Answer> {
        let _ = self.stop_tx.send(true);
        while let Some(done) = self.clients.join_next().await {
            done.expect("a load client panicked");
        }
        self.answers()
    }
}

async fn run_client(
    http: &reqwest::Client,
    url: &str,
    tag: &str,
    per_client: usize,
    started: Instant,
    answers: &Mutex<Vec<Answer>>,
    stop_rx: watch::Receiver<bool>,
) {
    let mut retry: Option<String> = None;
    let mut serial = 0;
    for _ in 0..per_client {
        if *stop_rx.borrow() {
            return;
        }
        let email = retry.take().unwrap_or_else(|| {
            serial += 1;
            format!(
                "{tag}-{serial}-{}@example.com",
                &uuid::Uuid::new_v4().simple().to_string()[..8]
            )
        });
        let sent = started.elapsed();
        let result = http
            .post(url)
            .header("Accept", "application/json")
            .json(&json!({"name": "Load Tester", "email": email, "password": PASSWORD}))
            .send()
            .await;
        let mut answer = Answer {
            email: email.clone(),
            status: None,
            detail: String::new(),
            sent,
            answered: sent,
            token: None,
            user_id: None,
        };
        match result {
            Ok(response) => {
                answer.status = Some(response.status().as_u16());
                match response.text().await {
                    Ok(body) => {
                        if answer.acknowledged() {
                            let body: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
                            answer.token = body["token"].as_str().map(str::to_owned);
                            answer.user_id = body["id"].as_str().map(str::to_owned);
                        } else {
                            answer.detail = body.chars().take(300).collect();
                        }
                    }
                    Err(e) => {
                        answer.status = None;
                        answer.detail = format!("the body did not arrive: {e}");
                    }
                }
            }
            Err(e) => {
                answer.detail = if e.is_timeout() {
                    format!("no answer within {REQUEST_TIMEOUT:?}")
                } else {
                    format!("{e}")
                };
            }
        }
        answer.answered = started.elapsed();
        let failed = !matches!(answer.status, Some(s) if s < 500);
        answers.lock().expect("answers lock").push(answer);
        if failed {
            retry = Some(email);
            tokio::time::sleep(RETRY_PAUSE).await;
        }
    }
}

/// The users that got a 201 or 200 (the last acknowledgment's token for each email).
pub fn acknowledged(answers: &[Answer]) -> Vec<Acknowledged> {
    let mut users = BTreeMap::new();
    for answer in answers.iter().filter(|a| a.acknowledged()) {
        users.insert(
            answer.email.clone(),
            Acknowledged {
                email: answer.email.clone(),
                token: answer
                    .token
                    .clone()
                    .expect("an acknowledgment carries a token"),
                user_id: answer
                    .user_id
                    .clone()
                    .expect("an acknowledgment carries an id"),
            },
        );
    }
    users.into_values().collect()
}

/// Answers by status ("201", "503", …; "no answer" when none came).
pub fn by_status(answers: &[Answer]) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for answer in answers {
        let key = answer
            .status
            .map_or_else(|| "no answer".to_owned(), |s| s.to_string());
        *counts.entry(key).or_insert(0) += 1;
    }
    counts
}

/// `"n answers: {201: a, 503: b}"`.
pub fn summary(answers: &[Answer]) -> String {
    format!("{} answers: {:?}", answers.len(), by_status(answers))
}

/// The `q`-quantile of the latencies, in milliseconds.
pub fn latency_ms(answers: &[Answer], q: f64) -> u64 {
    let mut ms: Vec<u64> = answers
        .iter()
        .map(|a| u64::try_from(a.latency().as_millis()).unwrap_or(u64::MAX))
        .collect();
    if ms.is_empty() {
        return 0;
    }
    ms.sort_unstable();
    let index = ((ms.len() - 1) as f64 * q).round() as usize;
    ms[index.min(ms.len() - 1)]
}
