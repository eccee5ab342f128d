//! Faults under load, through `handler dev` with a durable Redis (`appendonly yes`,
//! `appendfsync always`) and a real SMTP server, all on loopback: Redis killed and restarted,
//! SMTP stopped and started, the handler process SIGKILLed mid-stream, and two consumers racing
//! on the same message. Each scenario asserts what the product promises (nothing acknowledged is
//! lost, one email per user except inside the at-least-once window of a kill), and publishes its
//! figures: a table on stdout, `target/fault-report/<scenario>.json` (see faults/report.rs).
//!
//! The load phases take a lock, so one scenario's password hashing does not skew another's
//! figures; the long, mostly idle waits (a crashed send's claim expiring) overlap.
//!
//! The dev host's queue is Service Bus's as Azure runs it: a failed delivery comes back at once
//! (no backoff), and the 10th failed delivery dead-letters the message. So every scenario here
//! holds only because sendOnboarding rides faults out inside its send window (faults/mail.rs
//! has the scenarios aimed at that window).

#[path = "faults/load.rs"]
mod load;
#[path = "faults/mail.rs"]
mod mail;
#[path = "faults/report.rs"]
mod report;

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use load::{Acknowledged, Answer, Load};
use report::Figures;
use test_support::envelope::{host_headers, http_invocation, service_bus_invocation_of_text};
use test_support::{
    DevHost, InvocationAnswer, Persistence, RedisServer, SilentServer, SmtpSink, Supervised,
    free_port, smtp,
};

/// The key every handler here signs tokens with (48 bytes).
const JWT_SECRET: &str = "fault-tests-jwt-secret-0123456789abcdefghijklmnop";
const MAIL_FROM: &str = "Onboarding <no-reply@example.com>";
/// Concurrent sign-up clients. Each sign-up costs an argon2 hash (tens of ms of CPU): on two
/// cores, 8 clients keep the handler busy without drowning it.
const CLIENTS: usize = 8;
/// Most requests one client sends in a scenario (a bound; the phases end sooner).
const PER_CLIENT: usize = 2000;
/// Least time between the start of the load and the first kill, and between kills.
const KILL_SPACING: Duration = Duration::from_secs(2);
/// host.json's `extensions.serviceBus.maxConcurrentCalls`: deliveries in flight at most.
const MAX_CONCURRENT_CALLS: usize = 2;
/// No scenario may run longer, whatever hangs.
const TEST_TIMEOUT: Duration = Duration::from_secs(150);
/// Longest wait, after the load, for every acknowledged user's email and every message to be
/// settled: a send cut by a crash holds its claim for the lease (32 s) before a redelivery may
/// send again.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(45);

/// Held while a scenario generates load.
static LOAD: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// An HTTP client for checks: loopback, no proxy, no redirects, 5 s per request.
fn http() -> reqwest::Client {
    test_support::http_client(load::REQUEST_TIMEOUT)
}

/// A durable Redis (`appendonly yes`, `appendfsync always`) that a scenario kills and starts
/// again: whatever it acknowledged is still there.
fn durable_redis() -> RedisServer {
    RedisServer::start_with(Persistence::Durable)
}

/// `handler dev --port 0` from this package's `handler` binary, on a copy of the repository's
/// function app that `edit` may change first, with these settings and arguments.
fn start_dev(env: &[(&str, String)], args: &[&str], edit: impl FnOnce(&Path)) -> DevHost {
    let root = test_support::app_root();
    edit(root.path());
    DevHost::builder(env!("CARGO_BIN_EXE_handler"))
        .root(root)
        .envs(env)
        .args(args)
        .start()
}

/// Runs a scenario under the overall time limit.
async fn within(test: impl Future<Output = ()>) {
    if tokio::time::timeout(TEST_TIMEOUT, test).await.is_err() {
        panic!("the scenario did not finish within {TEST_TIMEOUT:?}");
    }
}

/// The settings every handler here gets.
fn settings(redis: &RedisServer, smtp: &SmtpSink) -> Vec<(&'static str, String)> {
    vec![
        ("REDIS_URL", redis.url()),
        ("SMTP_URL", smtp.url()),
        ("JWT_SECRET", JWT_SECRET.to_owned()),
        ("MAIL_FROM", MAIL_FROM.to_owned()),
        ("SMTP_TIMEOUT_SECONDS", "2".to_owned()),
    ]
    .into_iter()
    .chain(
        test_support::LIMITS_LIFTED
            .iter()
            .map(|(name, value)| (*name, (*value).to_owned())),
    )
    .collect()
}

/// Redis, SMTP and `handler dev` wired together; the dev host stops first.
struct Rig {
    dev: DevHost,
    smtp: SmtpSink,
    redis: RedisServer,
}

/// How a scenario wants its rig: the SMTP server's behaviour, settings on top of
/// [`settings`], `handler dev` arguments, and credentials for the SMTP URL.
#[derive(Default)]
struct RigOptions {
    modes: smtp::Modes,
    env: Vec<(&'static str, String)>,
    args: Vec<&'static str>,
    smtp_credentials: Option<(&'static str, &'static str)>,
    /// host.json's `extensions.serviceBus.maxConcurrentCalls`, when not the repository's.
    max_concurrent_calls: Option<u32>,
}

impl Rig {
    fn start(extra_args: &[&str]) -> Self {
        let redis = durable_redis();
        let smtp = SmtpSink::start_with(&smtp::Modes::default());
        let dev = start_dev(&settings(&redis, &smtp), extra_args, |_| {});
        Self { dev, smtp, redis }
    }

    fn start_with(options: RigOptions) -> Self {
        let redis = durable_redis();
        let smtp = SmtpSink::start_with(&options.modes);
        let mut env = settings(&redis, &smtp);
        if let Some((user, password)) = options.smtp_credentials {
            let url = smtp
                .url()
                .replacen("smtp://", &format!("smtp://{user}:{password}@"), 1);
            env.retain(|(name, _)| *name != "SMTP_URL");
            env.push(("SMTP_URL", url));
        }
        for (name, value) in options.env {
            env.retain(|(n, _)| *n != name);
            env.push((name, value));
        }
        let dev = start_dev(&env, &options.args, |root| {
            if let Some(calls) = options.max_concurrent_calls {
                let path = root.join("host.json");
                let text = std::fs::read_to_string(&path).expect("read host.json");
                let mut host: Value = serde_json::from_str(&text).expect("host.json is JSON");
                host["extensions"]["serviceBus"]["maxConcurrentCalls"] = json!(calls);
                std::fs::write(&path, host.to_string()).expect("write host.json");
            }
        });
        Self { dev, smtp, redis }
    }
}

/// What the checks after a scenario found.
#[derive(Debug, Default)]
struct Outcome {
    /// Acknowledged users whose token does not open their profile (or whose profile is wrong).
    missing_users: Vec<String>,
    /// Profiles showing `"onboarding": "sent"`.
    profiles_sent: usize,
    /// Acknowledged emails whose Redis claim is missing, leased (would expire), or names
    /// another user.
    bad_claims: Vec<String>,
    /// Emails per recipient.
    per_recipient: BTreeMap<String, usize>,
    /// Acknowledged users without an email.
    without_email: Vec<String>,
    /// Recipients that were never acknowledged.
    unexpected: Vec<String>,
    /// The queue when the checks ran.
    queue: Value,
    /// Handler log lines saying an email went out but its marker could not be written.
    sent_not_recorded: usize,
}

impl Outcome {
    fn duplicates(&self) -> Vec<(&String, &usize)> {
        self.per_recipient.iter().filter(|(_, n)| **n > 1).collect()
    }

    fn dead_lettered(&self) -> usize {
        self.queue["deadLetter"].as_array().map_or(0, Vec::len)
    }
}

/// After the load: waits (bounded) until every acknowledged user has an email and every message
/// is settled (a delivery cut by a crash is retried only once its claim's lease ran out), then
/// checks each user's profile and Redis claim. Never panics: the caller publishes the figures
/// first, then asserts.
async fn check(rig: &Rig, users: &[Acknowledged]) -> Outcome {
    let wanted: BTreeSet<&str> = users.iter().map(|u| u.email.as_str()).collect();
    let deadline = Instant::now() + SETTLE_TIMEOUT;
    let queue = loop {
        let queue = rig.dev.queue("onboarding").await;
        let idle = queue["active"] == 0;
        let counts = rig.smtp.per_recipient();
        let mailed = wanted.iter().all(|e| counts.contains_key(*e));
        if (idle && mailed) || Instant::now() >= deadline {
            break queue;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    };

    let (missing_users, profiles_sent) = check_profiles(&rig.dev, users).await;
    let pairs: Vec<(String, String)> = users
        .iter()
        .map(|u| (u.email.clone(), u.user_id.clone()))
        .collect();
    let bad_claims = check_claims(&rig.redis, &pairs).await;
    let per_recipient = rig.smtp.per_recipient();
    let without_email = users
        .iter()
        .filter(|u| !per_recipient.contains_key(&u.email))
        .map(|u| u.email.clone())
        .collect();
    let unexpected = per_recipient
        .keys()
        .filter(|r| !wanted.contains(r.as_str()))
        .cloned()
        .collect();
    Outcome {
        missing_users,
        profiles_sent,
        bad_claims,
        per_recipient,
        without_email,
        unexpected,
        queue,
        sent_not_recorded: rig
            .dev
            .output()
            .matches("onboarding outcome not recorded")
            .count(),
    }
}

/// `GET /` with each user's token, 8 at a time: the profile must be theirs.
async fn check_profiles(dev: &DevHost, users: &[Acknowledged]) -> (Vec<String>, usize) {
    let permits = Arc::new(Semaphore::new(8));
    let mut checks = JoinSet::new();
    for user in users.iter().cloned() {
        let (url, permits) = (dev.url("/"), permits.clone());
        checks.spawn(async move {
            let _permit = permits.acquire_owned().await.expect("a permit");
            let answer = http()
                .get(url)
                .bearer_auth(&user.token)
                .header("Accept", "application/json")
                .send()
                .await;
            let profile = match answer {
                Ok(r) if r.status() == 200 => r.json::<Value>().await.unwrap_or(Value::Null),
                Ok(r) => json!({"status": r.status().as_u16()}),
                Err(e) => json!({"error": e.to_string()}),
            };
            let present =
                profile["email"] == user.email.as_str() && profile["id"] == user.user_id.as_str();
            (
                user.email,
                present,
                profile["onboarding"] == "sent",
                profile,
            )
        });
    }
    let (mut missing, mut sent) = (Vec::new(), 0);
    while let Some(done) = checks.join_next().await {
        let (email, present, is_sent, profile) = done.expect("a profile check");
        if !present {
            missing.push(format!("{email}: {profile}"));
        }
        sent += usize::from(is_sent);
    }
    (missing, sent)
}

/// Each `(email, user id)`'s claim in Redis: present, permanent, naming the user.
async fn check_claims(redis: &RedisServer, users: &[(String, String)]) -> Vec<String> {
    let mut connection = match redis::Client::open(redis.url())
        .expect("a Redis client")
        .get_multiplexed_async_connection()
        .await
    {
        Ok(c) => c,
        Err(e) => return vec![format!("cannot reach Redis to check the claims: {e}")],
    };
    let mut bad = Vec::new();
    for (email, user_id) in users {
        let key = format!("onboarding:email:{}", email.to_lowercase());
        let owner: Option<String> = redis::cmd("GET")
            .arg(&key)
            .query_async(&mut connection)
            .await
            .unwrap_or(None);
        let ttl: i64 = redis::cmd("PTTL")
            .arg(&key)
            .query_async(&mut connection)
            .await
            .unwrap_or(-3);
        if owner.as_deref() != Some(user_id.as_str()) || ttl != -1 {
            bad.push(format!(
                "{email}: owner {owner:?} (user {user_id}), ttl {ttl} ms"
            ));
        }
    }
    bad
}

/// The figures every load scenario shares.
fn figures(
    scenario: &str,
    answers: &[Answer],
    users: &[Acknowledged],
    outcome: &Outcome,
) -> Figures {
    let duplicates = outcome.duplicates();
    let mut f = Figures {
        scenario: scenario.to_owned(),
        requests_sent: answers.len(),
        answers: load::by_status(answers),
        acknowledged: users.len(),
        users_present: users.len() - outcome.missing_users.len(),
        emails_sent: outcome.per_recipient.values().sum(),
        emails_missing: outcome.without_email.len(),
        duplicates: duplicates.len(),
        extra_emails: duplicates.iter().map(|(_, n)| **n - 1).sum(),
        recovery_ms: None,
        latency_p50_ms: Some(load::latency_ms(answers, 0.5)),
        latency_p99_ms: Some(load::latency_ms(answers, 0.99)),
        latency_max_ms: Some(load::latency_ms(answers, 1.0)),
        dead_lettered: outcome.dead_lettered(),
        details: BTreeMap::new(),
    };
    f.detail("profiles showing onboarding sent", outcome.profiles_sent);
    f.detail(
        "sends logged as \"onboarding outcome not recorded\"",
        outcome.sent_not_recorded,
    );
    f.detail("email claims not permanent", outcome.bad_claims.len());
    f.detail(
        "emails to unacknowledged addresses",
        outcome.unexpected.len(),
    );
    f
}

/// The checks every load scenario makes once its figures are out.
fn assert_nothing_lost(outcome: &Outcome, dev: &DevHost) {
    assert!(
        outcome.missing_users.is_empty(),
        "acknowledged users missing: {:#?}\n{}",
        outcome.missing_users,
        dev.tail(80)
    );
    assert!(
        outcome.bad_claims.is_empty(),
        "acknowledged users whose email claim is not permanent: {:#?}",
        outcome.bad_claims
    );
    assert!(
        outcome.without_email.is_empty(),
        "acknowledged users without an email after {SETTLE_TIMEOUT:?}: {:#?}\nqueue: {:#}\n{}",
        outcome.without_email,
        outcome.queue,
        dev.tail(80)
    );
    assert!(
        outcome.unexpected.is_empty(),
        "emails to users who were never acknowledged: {:?}",
        outcome.unexpected
    );
    assert_eq!(
        outcome.dead_lettered(),
        0,
        "nothing may be dead-lettered: {:#}",
        outcome.queue
    );
    assert!(
        outcome.queue["active"] == 0,
        "messages still unsettled after {SETTLE_TIMEOUT:?}: {:#}\n{}",
        outcome.queue,
        dev.tail(80)
    );
}

/// The answers that `keep` selects, cloned.
fn answers_where(answers: &[Answer], keep: impl Fn(&Answer) -> bool) -> Vec<Answer> {
    answers.iter().filter(|a| keep(a)).cloned().collect()
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Redis killed and restarted under a steady stream of sign-ups: 503 during the outage (never a
/// 500, never a hang), service back within seconds, every acknowledged user present with exactly
/// one email.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_outage_under_load_answers_503_and_loses_no_user_nor_doubles_an_email() {
    within(async {
        const OUTAGE: Duration = Duration::from_secs(3);
        let mut rig = Rig::start(&[]);
        let lock = LOAD.lock().await;
        let load = Load::start(&rig.dev.url(""), "redis", CLIENTS, PER_CLIENT);
        load.wait_until("20 acknowledgments", Duration::from_secs(30), |a| {
            a.iter().filter(|x| x.acknowledged()).count() >= 20
        })
        .await;

        let killing = load.now();
        rig.redis.kill();
        // Redis is gone for sure from here (kill returns once the port refuses connections).
        let outage_start = load.now();
        tokio::time::sleep(OUTAGE).await;
        // Redis may answer before restart() returns (it waits for readiness): only answers given
        // before the restart began are certain to have met a dead Redis.
        let restarting = load.now();
        rig.redis.restart();
        let restarted = load.now();
        load.wait_until(
            "a success after Redis came back",
            Duration::from_secs(15),
            |a| a.iter().any(|x| x.acknowledged() && x.sent >= restarted),
        )
        .await;
        // Keep the stream going a little after recovery.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let answers = load.stop().await;
        drop(lock);

        let users = load::acknowledged(&answers);
        let outcome = check(&rig, &users).await;
        let first_success = answers
            .iter()
            .filter(|a| a.acknowledged() && a.answered >= restarted && a.sent >= outage_start)
            .map(|a| a.answered)
            .min();
        let unavailable = answers_where(&answers, |a| a.status == Some(503));
        let last_503 = unavailable.iter().map(|a| a.answered).max();
        let mut f = figures("redis-outage", &answers, &users, &outcome);
        f.recovery_ms = first_success.map(|t| ms(t.saturating_sub(restarted)));
        f.detail(
            "outage (Redis killed, then restarted)",
            format!("{} ms", ms(restarted - killing)),
        );
        f.detail(
            "last 503 after the restart",
            match last_503 {
                Some(t) if t > restarted => format!("{} ms", ms(t - restarted)),
                _ => "none".to_owned(),
            },
        );
        f.detail(
            "503 latency p50 / max",
            format!(
                "{} / {} ms",
                load::latency_ms(&unavailable, 0.5),
                load::latency_ms(&unavailable, 1.0)
            ),
        );
        f.publish();

        let hung = answers_where(&answers, |a| a.status.is_none());
        assert!(
            hung.is_empty(),
            "requests without an answer (a hang): {hung:#?}"
        );
        let wrong = answers_where(&answers, |a| !matches!(a.status, Some(200 | 201 | 503)));
        assert!(
            wrong.is_empty(),
            "only 201, 200 and 503 are acceptable (a 500 means a panic or a failed invocation): \
             {wrong:#?}\n{}",
            rig.dev.tail(80)
        );
        assert!(
            !unavailable.is_empty(),
            "the outage produced no 503: {}",
            load::summary(&answers)
        );
        let during = answers_where(&answers, |a| {
            a.sent > outage_start && a.answered < restarting
        });
        assert!(
            during.iter().all(|a| a.status == Some(503)),
            "while Redis was down every answer must be 503: {:#?}",
            during
                .iter()
                .filter(|a| a.status != Some(503))
                .collect::<Vec<_>>()
        );
        let stray = answers_where(&unavailable, |a| {
            a.answered < killing || a.sent > restarted + Duration::from_secs(5)
        });
        assert!(stray.is_empty(), "503s outside the outage: {stray:#?}");
        let recovery = f.recovery_ms.expect("a success after the restart");
        assert!(
            recovery <= 5000,
            "service came back {recovery} ms after Redis (over 5 s)"
        );
        assert_nothing_lost(&outcome, &rig.dev);
        let duplicates = outcome.duplicates();
        assert!(
            duplicates.is_empty(),
            "emails sent more than once: {duplicates:?}"
        );
    })
    .await;
}

/// SMTP stopped for a few seconds while sign-ups and emails flow, then back: sign-ups are not
/// affected, and every pending email is delivered exactly once (none lost, none doubled, none
/// dead-lettered).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_smtp_outage_under_load_delays_emails_but_delivers_each_exactly_once() {
    within(async {
        const OUTAGE: Duration = Duration::from_secs(4);
        let mut rig = Rig::start(&[]);
        let lock = LOAD.lock().await;
        let load = Load::start(&rig.dev.url(""), "smtp", CLIENTS, PER_CLIENT);
        let load_started = load.started();
        load.wait_until("20 acknowledgments", Duration::from_secs(30), |a| {
            a.iter().filter(|x| x.acknowledged()).count() >= 20
        })
        .await;
        let deadline = Instant::now() + Duration::from_secs(15);
        while rig.smtp.messages().len() < 10 {
            assert!(
                Instant::now() < deadline,
                "no emails flowing before the outage"
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }

        let stopping = load.now();
        let forced_cuts = rig.smtp.down();
        // Sends whose data was already through finished during `down`; from here, none.
        let stopped = load.now();
        tokio::time::sleep(OUTAGE).await;
        let queue_at_restart = rig.dev.queue("onboarding").await;
        // The sink may accept mail before up() returns: only mail before it began counts as
        // accepted while down.
        let restarting = load.now();
        rig.smtp.up();
        let restarted = load.now();
        let restarted_at = load.started() + restarted;
        let deadline = Instant::now() + Duration::from_secs(15);
        while !rig
            .smtp
            .messages()
            .iter()
            .any(|m| m.received_at >= restarted_at)
        {
            assert!(Instant::now() < deadline, "no email after SMTP came back");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        let answers = load.stop().await;
        drop(lock);

        let users = load::acknowledged(&answers);
        let outcome = check(&rig, &users).await;
        let mails = rig.smtp.messages();
        let offset = |at: Instant| at.saturating_duration_since(load_started);
        let first_after = mails
            .iter()
            .map(|m| offset(m.received_at))
            .filter(|t| *t >= restarted)
            .min();
        let during = mails
            .iter()
            .filter(|m| (stopped..restarting).contains(&offset(m.received_at)))
            .count();
        // Users acknowledged before the restart: when did the last of their emails go out?
        let before: BTreeSet<&str> = answers
            .iter()
            .filter(|a| a.acknowledged() && a.answered < restarted)
            .map(|a| a.email.as_str())
            .collect();
        let backlog_done = mails
            .iter()
            .filter(|m| m.to.iter().any(|t| before.contains(t.as_str())))
            .map(|m| offset(m.received_at))
            .max();
        let mut f = figures("smtp-outage", &answers, &users, &outcome);
        f.recovery_ms = first_after.map(|t| ms(t - restarted));
        f.detail(
            "outage (SMTP refusing connections)",
            format!("{} ms", ms(restarted - stopped)),
        );
        f.detail(
            "messages waiting at the restart (active)",
            queue_at_restart["active"].as_u64().unwrap_or(0),
        );
        f.detail(
            "backlog delivered after the restart within",
            backlog_done.map_or("-".to_owned(), |t| {
                format!("{} ms", ms(t.saturating_sub(restarted)))
            }),
        );
        f.detail("emails accepted during the outage", during);
        f.detail("sessions cut mid-message (DATA unfinished)", forced_cuts);
        f.detail(
            "graceful stop took",
            format!("{} ms", ms(stopped - stopping)),
        );
        f.publish();

        assert_eq!(during, 0, "the SMTP server accepted mail while down");
        let not_created = answers_where(&answers, |a| a.status != Some(201));
        assert!(
            not_created.is_empty(),
            "sign-ups must not notice an SMTP outage: {not_created:#?}"
        );
        assert_nothing_lost(&outcome, &rig.dev);
        let duplicates = outcome.duplicates();
        assert!(
            duplicates.is_empty(),
            "emails sent more than once: {duplicates:?}"
        );
    })
    .await;
}

/// The handler process SIGKILLed twice mid-stream (`--handler-process`), as the host does on a
/// timeout, and restarted by the dev host: no acknowledged user lost, every user's email sent,
/// 500s only for requests in flight or arriving while it was down, duplicates bounded by the
/// deliveries in flight at the kills (the at-least-once window).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_handler_mid_stream_loses_no_user_and_doubles_only_emails_in_flight() {
    within(async {
        let rig = Rig::start(&["--handler-process"]);
        let lock = LOAD.lock().await;
        let load = Load::start(&rig.dev.url(""), "kill", CLIENTS, PER_CLIENT);
        let load_started = load.started();
        load.wait_until("20 acknowledgments", Duration::from_secs(30), |a| {
            a.iter().filter(|x| x.acknowledged()).count() >= 20
        })
        .await;
        let mut last_kill = Duration::ZERO;

        let mut kills = Vec::new();
        for round in 1..=2u64 {
            // Spaced: at least KILL_SPACING into the stream, and after the previous kill.
            let next = last_kill + KILL_SPACING;
            if load.now() < next {
                tokio::time::sleep(next - load.now()).await;
            }
            let pid = rig.dev.dev("handler").await["pid"]
                .as_u64()
                .expect("a running handler process");
            let queue = rig.dev.queue("onboarding").await;
            let killed = load.now();
            last_kill = killed;
            let status = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status()
                .expect("run kill");
            assert!(status.success(), "kill -KILL {pid}");
            let handler = rig
                .dev
                .wait_for("handler", Duration::from_secs(35), |h| {
                    h["restarts"] == round && h["ready"] == true
                })
                .await;
            let back = load.now();
            assert_ne!(handler["pid"], pid, "a new process serves after the kill");
            kills.push((killed, back, pid, queue["inFlight"].as_u64().unwrap_or(0)));
            // Let the stream run on the new process before the next kill (or the end).
            load.wait_until(
                "15 acknowledgments after the restart",
                Duration::from_secs(20),
                |a| {
                    a.iter()
                        .filter(|x| x.acknowledged() && x.sent >= back)
                        .count()
                        >= 15
                },
            )
            .await;
        }
        let answers = load.stop().await;
        drop(lock);

        let users = load::acknowledged(&answers);
        let outcome = check(&rig, &users).await;
        let failed = answers_where(&answers, |a| a.status == Some(500));
        let slack = Duration::from_millis(250);
        let outside: Vec<&Answer> = failed
            .iter()
            .filter(|a| {
                !kills.iter().any(|(killed, back, _, _)| {
                    a.answered + slack >= *killed && a.sent <= *back + slack
                })
            })
            .collect();
        let recovery = kills
            .iter()
            .filter_map(|(killed, _, _, _)| {
                answers
                    .iter()
                    .filter(|a| a.acknowledged() && a.sent >= *killed)
                    .map(|a| a.answered - *killed)
                    .min()
            })
            .max();
        let in_flight: u64 = kills.iter().map(|k| k.3).sum();
        let mut f = figures("handler-kill", &answers, &users, &outcome);
        f.recovery_ms = recovery.map(ms);
        f.detail("kills (SIGKILL of the handler process)", kills.len());
        f.detail(
            "down time per kill (kill to ready)",
            kills
                .iter()
                .map(|(k, b, _, _)| format!("{} ms", ms(*b - *k)))
                .collect::<Vec<_>>()
                .join(", "),
        );
        f.detail("deliveries in flight just before the kills", in_flight);
        f.detail(
            "duplicate bound (kills x maxConcurrentCalls)",
            kills.len() * MAX_CONCURRENT_CALLS,
        );
        f.detail(
            "500s (in flight at a kill, or sent while down)",
            failed.len(),
        );
        f.detail("500s outside the kill windows", outside.len());
        f.detail(
            "503s (a retried sign-up whose first try died between the claim and the record)",
            answers.iter().filter(|a| a.status == Some(503)).count(),
        );
        let conflicted: BTreeSet<&str> = answers
            .iter()
            .filter(|a| a.status == Some(503))
            .map(|a| a.email.as_str())
            .collect();
        for email in conflicted {
            let history: Vec<String> = answers
                .iter()
                .filter(|a| a.email == email)
                .map(|a| {
                    format!(
                        "{} at {} ms{}",
                        a.status.map_or("no answer".to_owned(), |s| s.to_string()),
                        ms(a.sent),
                        if a.status == Some(503) {
                            format!(" {}", a.detail)
                        } else {
                            String::new()
                        }
                    )
                })
                .collect();
            f.detail(&format!("answers to {email}"), history);
        }
        f.detail(
            "recovery measured from",
            "the kill (the dev host restarts the process itself)",
        );
        f.publish();

        let hung = answers_where(&answers, |a| a.status.is_none());
        assert!(
            hung.is_empty(),
            "requests without an answer (a hang): {hung:#?}"
        );
        // A retry that reaches a sign-up cut off between its email claim and its record is told
        // to come back shortly (503, sign-up in progress), never "taken" (409).
        let wrong = answers_where(&answers, |a| match a.status {
            Some(200 | 201 | 500) => false,
            Some(503) => !a.detail.contains("sign-up-in-progress"),
            _ => true,
        });
        assert!(
            wrong.is_empty(),
            "unexpected answers: {wrong:#?}\n{}",
            rig.dev.tail(80)
        );
        assert!(
            outside.is_empty(),
            "500s away from any kill: {outside:#?}\n{}",
            rig.dev.tail(80)
        );
        assert!(
            failed.iter().all(|a| a.detail.is_empty()),
            "a 500 while the handler is down is the host's empty 500: {failed:#?}"
        );
        assert_nothing_lost(&outcome, &rig.dev);
        assert!(
            f.extra_emails <= kills.len() * MAX_CONCURRENT_CALLS,
            "{} extra emails: more than the deliveries that can be in flight at {} kills",
            f.extra_emails,
            kills.len()
        );
        // A second email is legitimate only when a kill fell between the two sends.
        let started = load_started;
        for (recipient, _) in outcome.duplicates() {
            let mut times: Vec<Duration> = rig
                .smtp
                .messages()
                .iter()
                .filter(|m| m.to.contains(recipient))
                .map(|m| m.received_at.saturating_duration_since(started))
                .collect();
            times.sort();
            for pair in times.windows(2) {
                assert!(
                    kills
                        .iter()
                        .any(|(killed, _, _, _)| pair[0] <= *killed + slack && *killed <= pair[1]),
                    "{recipient} got a second email with no kill between the two ({pair:?}, \
                     kills at {:?})",
                    kills.iter().map(|k| k.0).collect::<Vec<_>>()
                );
            }
        }
        for (_, _, pid, _) in &kills {
            assert!(
                !process_runs(*pid),
                "the killed handler process {pid} is still there"
            );
        }
    })
    .await;
}

/// Two instances of the Function App (two `handler` processes sharing Redis and SMTP) receive
/// the same message at the same moment, for 50 users: exactly one email per user; the loser of
/// each race is acknowledged or redelivered, never sends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_consumers_racing_on_the_same_message_send_one_email() {
    within(async {
        const USERS: usize = 50;
        const RACES_AT_ONCE: usize = 10;
        let redis = durable_redis();
        let smtp = SmtpSink::start_with(&smtp::Modes::default());
        let first = HandlerProcess::start(&settings(&redis, &smtp)).await;
        let second = HandlerProcess::start(&settings(&redis, &smtp)).await;
        let lock = LOAD.lock().await;

        // Sign the users up through the first instance; keep each onboarding message.
        let permits = Arc::new(Semaphore::new(4));
        let mut sign_ups = JoinSet::new();
        for n in 0..USERS {
            let (client, permits) = (first.client.clone(), permits.clone());
            sign_ups.spawn(async move {
                let _permit = permits.acquire_owned().await.expect("a permit");
                sign_up(
                    &client,
                    &format!("race-{n}-{}@example.com", uuid::Uuid::new_v4().simple()),
                )
                .await
            });
        }
        let mut messages = Vec::new();
        while let Some(done) = sign_ups.join_next().await {
            messages.push(done.expect("a sign-up task"));
        }

        // The races: the same message to both instances at once (as after a lock expiry).
        let permits = Arc::new(Semaphore::new(RACES_AT_ONCE));
        let mut races = JoinSet::new();
        let started = Instant::now();
        for (email, message) in messages.iter().cloned() {
            let (a, b, permits) = (first.client.clone(), second.client.clone(), permits.clone());
            races.spawn(async move {
                let _permit = permits.acquire_owned().await.expect("a permit");
                race(&a, &b, message).await.map(|r| (email, r))
            });
        }
        let mut results = Vec::new();
        while let Some(done) = races.join_next().await {
            results.push(done.expect("a race task"));
        }
        let race_time = started.elapsed();
        drop(lock);

        let per_recipient = smtp.per_recipient();
        let settled: Vec<&(String, RaceResult)> =
            results.iter().filter_map(|r| r.as_ref().ok()).collect();
        let unsettled: Vec<&String> = results.iter().filter_map(|r| r.as_ref().err()).collect();
        let users: Vec<(String, String)> = messages
            .iter()
            .map(|(email, m)| {
                let body: Value = serde_json::from_str(m).expect("a JSON message");
                (
                    email.clone(),
                    body["userId"].as_str().unwrap_or("").to_owned(),
                )
            })
            .collect();
        let bad_claims = check_claims(&redis, &users).await;
        let wanted: BTreeSet<&str> = messages.iter().map(|(e, _)| e.as_str()).collect();
        let without: Vec<&&str> = wanted
            .iter()
            .filter(|e| !per_recipient.contains_key(**e))
            .collect();
        let duplicates: Vec<(&String, &usize)> =
            per_recipient.iter().filter(|(_, n)| **n > 1).collect();
        let deliveries: Vec<&String> = settled.iter().flat_map(|(_, r)| &r.outcomes).collect();
        let mut f = Figures {
            scenario: "two-consumers".to_owned(),
            requests_sent: deliveries.len(),
            acknowledged: USERS,
            users_present: USERS - bad_claims.len(),
            emails_sent: per_recipient.values().sum(),
            emails_missing: without.len(),
            duplicates: duplicates.len(),
            extra_emails: duplicates.iter().map(|(_, n)| **n - 1).sum(),
            ..Figures::default()
        };
        for outcome in deliveries {
            *f.answers.entry(outcome.clone()).or_insert(0) += 1;
        }
        f.detail(
            "races (same message, two instances, same moment)",
            results.len(),
        );
        f.detail(
            "races where both first deliveries answered 2xx",
            settled.iter().filter(|(_, r)| r.both_ok_at_once).count(),
        );
        f.detail(
            "redeliveries until both instances acknowledged",
            settled.iter().map(|(_, r)| r.redeliveries).sum::<usize>(),
        );
        f.detail("races never settled", unsettled.len());
        f.detail("race phase", format!("{} ms", ms(race_time)));
        f.publish();

        assert!(bad_claims.is_empty(), "users not stored: {bad_claims:#?}");
        assert!(
            unsettled.is_empty(),
            "races that never settled: {unsettled:#?}"
        );
        assert!(
            without.is_empty(),
            "users without an email: {without:?}\n{}",
            first.tail(40)
        );
        assert!(
            duplicates.is_empty(),
            "users with more than one email: {duplicates:?}"
        );
        assert_eq!(f.emails_sent, USERS);
    })
    .await;
}

/// `handler dev --handler-process`: the child's pid is in the banner and `/_dev/handler`; a
/// SIGKILLed child is restarted on the same port, and a third failure, each within 30 minutes of
/// the previous one, stops the dev host with an error, leaving no handler process behind.
#[tokio::test]
async fn the_dev_host_restarts_a_killed_handler_process_and_gives_up_after_three_failures() {
    within(async {
        // Nothing listens at these: the handler connects lazily, so it starts and answers 503.
        let env = [
            ("REDIS_URL", format!("redis://127.0.0.1:{}", free_port())),
            ("SMTP_URL", format!("smtp://127.0.0.1:{}", free_port())),
        ];
        let mut dev = start_dev(&env, &["--handler-process"], |_| {});
        let handler = dev.dev("handler").await;
        assert_eq!(handler["mode"], "process");
        assert_eq!(
            (handler["restarts"].clone(), handler["ready"].clone()),
            (json!(0), json!(true))
        );
        let mut pid = handler["pid"].as_u64().expect("a pid");
        assert!(
            dev.output().contains(&format!(
                "process pid {pid} at {}",
                handler["url"].as_str().unwrap()
            )),
            "{}",
            dev.output()
        );
        let health = http()
            .get(dev.url("/health"))
            .send()
            .await
            .expect("GET /health");
        assert_eq!(
            health.status(),
            503,
            "the handler process answers (Redis is down)"
        );

        for round in 1..=3u64 {
            let status = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status()
                .expect("run kill");
            assert!(status.success());
            if round == 3 {
                break;
            }
            let handler = dev
                .wait_for("handler", Duration::from_secs(35), |h| {
                    h["restarts"] == round && h["ready"] == true
                })
                .await;
            assert!(!process_runs(pid), "the killed process {pid} was reaped");
            assert_eq!(handler["url"], dev.dev("handler").await["url"], "same port");
            let health = http()
                .get(dev.url("/health"))
                .send()
                .await
                .expect("GET /health");
            assert_eq!(health.status(), 503, "the restarted process answers");
            pid = handler["pid"].as_u64().expect("a pid");
        }

        let deadline = Instant::now() + Duration::from_secs(20);
        let status = loop {
            if let Some(status) = dev.exited() {
                break status;
            }
            assert!(
                Instant::now() < deadline,
                "the dev host kept running after 3 failures:\n{}",
                dev.tail(40)
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        };
        assert!(
            !status.success(),
            "a dev host that gave up exits with an error"
        );
        let output = dev.output();
        assert!(
            output.contains("3 failures, each within 30 minutes"),
            "{output}"
        );
        assert!(
            output.contains("exited with signal: 9 (SIGKILL)"),
            "{output}"
        );
        assert!(!process_runs(pid), "no handler process is left behind");
    })
    .await;
}

/// With `--handler-process`, a function that outlives host.json's functionTimeout gets the
/// handler process killed and restarted, as the host does; a dev host killed outright takes its
/// handler process with it.
#[tokio::test]
async fn a_function_timeout_kills_the_handler_process_and_a_dead_dev_host_leaves_none_behind() {
    within(async {
        // Redis accepts connections and never answers: sendOnboarding's user lookup waits
        // longer (2 s) than the 1 s function timeout.
        let silent = SilentServer::start();
        let env = [
            ("REDIS_URL", format!("redis://127.0.0.1:{}", silent.port)),
            ("SMTP_URL", format!("smtp://127.0.0.1:{}", free_port())),
        ];
        let mut dev = start_dev(&env, &["--handler-process"], |root| {
            let path = root.join("host.json");
            let mut host: Value =
                serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
            host["functionTimeout"] = json!("00:00:01");
            std::fs::write(&path, host.to_string()).unwrap();
        });
        let first = dev.dev("handler").await["pid"].as_u64().expect("a pid");
        let sent = http()
            .post(dev.url("/_dev/queues/onboarding/messages"))
            .json(&json!({"type": "user.created", "version": 1,
                "userId": uuid::Uuid::new_v4(), "email": "late@example.com",
                "name": "Late", "createdAt": "2024-10-24T17:00:01Z"}))
            .send()
            .await
            .expect("enqueue a message");
        assert_eq!(sent.status(), 201);
        let handler = dev
            .wait_for("handler", Duration::from_secs(20), |h| {
                h["restarts"].as_u64() >= Some(1) && h["ready"] == true
            })
            .await;
        assert!(
            dev.output().contains("a function timed out: the handler"),
            "{}",
            dev.tail(40)
        );
        assert!(!process_runs(first));

        let second = handler["pid"].as_u64().expect("a pid");
        dev.kill();
        let deadline = Instant::now() + Duration::from_secs(15);
        while process_runs(second) {
            assert!(
                Instant::now() < deadline,
                "the handler process {second} outlived its dev host"
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    })
    .await;
}

/// True while `pid` is a live process (not gone, not a zombie).
fn process_runs(pid: u64) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the command name in parentheses: "Z" is a zombie, "X" dead.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

/// A `handler` process started as the host starts it (no command, FUNCTIONS_CUSTOMHANDLER_PORT),
/// killed when dropped.
struct HandlerProcess {
    process: Supervised,
    client: Instance,
    _dir: tempfile::TempDir,
}

impl HandlerProcess {
    async fn start(env: &[(&str, String)]) -> Self {
        let dir = tempfile::tempdir().expect("a directory for the handler");
        let port = free_port();
        let mut command = Command::new(env!("CARGO_BIN_EXE_handler"));
        command
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .env("FUNCTIONS_CUSTOMHANDLER_PORT", port.to_string())
            .env("RUST_LOG", "info")
            .env_remove("REDIS_KEY_PREFIX")
            .env_remove("PUBLIC_URL")
            .env_remove("JWT_SECRET_PREVIOUS")
            .current_dir(dir.path());
        let process = Supervised::spawn("handler", command, &dir.path().join("handler.log"));
        let client = Instance {
            http: test_support::http_client(Duration::from_secs(30)),
            port,
        };
        let process = Self {
            process,
            client,
            _dir: dir,
        };
        process.wait_until_ready().await;
        process
    }

    /// Until `GET /` gets any HTTP answer, as the host waits for a handler to listen.
    async fn wait_until_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        let url = format!("http://127.0.0.1:{}/", self.client.port);
        while self.client.http.get(&url).send().await.is_err() {
            assert!(
                Instant::now() < deadline,
                "the handler did not get ready within 30 s\n{}",
                self.tail(40)
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    fn tail(&self, n: usize) -> String {
        self.process.log_tail(n)
    }
}

/// One handler process as the race's host sees it: its port, and a client to post to it.
#[derive(Clone)]
struct Instance {
    http: reqwest::Client,
    port: u16,
}

impl Instance {
    /// POSTs `envelope` to `/<function>` with the host's headers; `Ok` when the host would
    /// count the invocation a success (a 2xx invocation result), else what went wrong as the
    /// host would say it ("the handler answered 500").
    async fn invoke(&self, function: &str, envelope: &Value) -> Result<InvocationAnswer, String> {
        let body = serde_json::to_vec(envelope).expect("serialize the envelope");
        let mut request = self
            .http
            .post(format!("http://127.0.0.1:{}/{function}", self.port))
            .body(body);
        for (name, value) in host_headers() {
            request = request.header(name, value);
        }
        let unreachable = |e: reqwest::Error| format!("cannot reach the handler: {e}");
        let response = request.send().await.map_err(unreachable)?;
        let answer = InvocationAnswer::from_response(response)
            .await
            .map_err(unreachable)?;
        if !answer.host_ok() {
            return Err(format!("the handler answered {}", answer.host_status));
        }
        if !answer.outputs.is_object() {
            return Err(format!(
                "the handler's answer is not an invocation result: {}",
                answer.raw_body
            ));
        }
        Ok(answer)
    }
}

/// `POST /createUser` through the host protocol; returns the email and the body of the
/// onboarding message the output binding would have sent.
async fn sign_up(client: &Instance, email: &str) -> (String, String) {
    let body =
        json!({"name": "Race Runner", "email": email, "password": load::PASSWORD}).to_string();
    // The host passes `Body` on only when the client sent a Content-Length above 0.
    let length = body.len().to_string();
    let envelope = http_invocation(
        "POST",
        "https://app.example.net/createUser",
        &[
            ("Content-Type", "application/json"),
            ("Content-Length", &length),
        ],
        Some(&body),
    );
    let answer = client
        .invoke("createUser", &envelope)
        .await
        .expect("createUser answers");
    assert_eq!(
        answer.outputs["res"]["statusCode"], 201,
        "{:?}",
        answer.outputs
    );
    // The host sends an object as one message of indented JSON, a string as it is.
    let message = match &answer.outputs["onboardingMessage"] {
        Value::String(text) => text.clone(),
        object @ Value::Object(_) => serde_json::to_string_pretty(object).expect("JSON"),
        other => panic!("one message per sign-up, not {other}"),
    };
    (email.to_owned(), message)
}

/// How one race went.
#[derive(Debug)]
struct RaceResult {
    /// Both deliveries answered 2xx the first time (one sent, the other saw it sent).
    both_ok_at_once: bool,
    /// Deliveries repeated (DeliveryCount + 1) until each side had a 2xx.
    redeliveries: usize,
    /// Each delivery's outcome: "2xx", or the failure as the host saw it.
    outcomes: Vec<String>,
}

/// "2xx", or the failure as the host saw it ("the handler answered 500").
fn outcome<T>(result: &Result<T, String>) -> String {
    match result {
        Ok(_) => "2xx".to_owned(),
        Err(e) => e.clone(),
    }
}

/// Delivers `message` to both instances at the same moment, then redelivers to a side that
/// failed (as Service Bus would) until both have acknowledged it. `Err` after 20 tries.
async fn race(a: &Instance, b: &Instance, message: String) -> Result<RaceResult, String> {
    // Each delivery has a lock token of its own; the message id stays (it is the message's).
    let delivery = |count: u32| service_bus_invocation_of_text(&message, count);
    let (first_a, first_b) = (delivery(1), delivery(2));
    let (ra, rb) = tokio::join!(
        a.invoke("sendOnboarding", &first_a),
        b.invoke("sendOnboarding", &first_b),
    );
    let mut outcomes = vec![outcome(&ra), outcome(&rb)];
    let both_ok_at_once = ra.is_ok() && rb.is_ok();
    let mut redeliveries = 0;
    for (client, mut ok, mut count) in [(a, ra.is_ok(), 1u32), (b, rb.is_ok(), 2u32)] {
        while !ok {
            if redeliveries >= 20 {
                return Err(format!("message {message} never settled"));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            count += 2;
            redeliveries += 1;
            let result = client.invoke("sendOnboarding", &delivery(count)).await;
            outcomes.push(outcome(&result));
            ok = result.is_ok();
        }
    }
    Ok(RaceResult {
        both_ok_at_once,
        redeliveries,
        outcomes,
    })
}
