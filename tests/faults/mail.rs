//! Mail faults under the faithful queue: Service Bus redelivers a failed message at once and
//! dead-letters it after the 10th delivery, so every fault below must be ridden out inside the
//! invocation (a send window) or settled for good (`undeliverable`), never answered non-2xx
//! again and again. Each scenario publishes its figures like the others (see faults/report.rs).

use std::time::{Duration, Instant};

use serde_json::Value;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::load::{self, Load};
use super::{Rig, RigOptions, check, figures, http, ms, within};
use test_support::smtp::Modes;

/// The password in the SMTP URL of the refused-login scenario: it must appear in no log line.
const SMTP_PASSWORD: &str = "smtp-Pa55word-never-logged";

/// Each `DeliveryCount=N` of sendOnboarding as the dev host logs it, in order, with the time
/// stamp of its log line.
struct DeliveryLog {
    seen: Vec<(u32, OffsetDateTime)>,
    read: usize,
}

impl DeliveryLog {
    fn new() -> Self {
        Self {
            seen: Vec::new(),
            read: 0,
        }
    }

    /// Reads the new lines of the dev host's output.
    fn poll(&mut self, output: &str) {
        let lines: Vec<&str> = output.lines().collect();
        for line in &lines[self.read.min(lines.len())..] {
            if !line.contains("Executing 'Functions.sendOnboarding'") {
                continue;
            }
            let at = line
                .split_whitespace()
                .next()
                .and_then(|stamp| OffsetDateTime::parse(stamp, &Rfc3339).ok());
            let count = line
                .split("DeliveryCount=")
                .nth(1)
                .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
                .and_then(|n| n.parse().ok());
            if let (Some(count), Some(at)) = (count, at) {
                self.seen.push((count, at));
            }
        }
        self.read = lines.len();
    }

    fn counts(&self) -> Vec<u32> {
        self.seen.iter().map(|(n, _)| *n).collect()
    }
}

/// `GET /` with `token`, as JSON.
async fn profile(rig: &Rig, token: &str) -> Value {
    http()
        .get(rig.dev.url("/"))
        .bearer_auth(token)
        .header("Accept", "application/json")
        .send()
        .await
        .expect("GET /")
        .json()
        .await
        .expect("a JSON profile")
}

/// Signs `emails` up, one request each, concurrently.
async fn sign_up_all(rig: &Rig, emails: &[String]) -> Vec<load::Acknowledged> {
    let mut requests = tokio::task::JoinSet::new();
    for email in emails.iter().cloned() {
        let url = rig.dev.url("/createUser");
        requests.spawn(async move {
            let answer: Value = http()
                .post(url)
                .json(&serde_json::json!({
                    "name": "Fault Test",
                    "email": email,
                    "password": load::PASSWORD,
                }))
                .send()
                .await
                .expect("POST /createUser")
                .json()
                .await
                .expect("a JSON answer");
            let text = |field: &str| {
                answer[field]
                    .as_str()
                    .unwrap_or_else(|| panic!("no {field} in {answer}"))
                    .to_owned()
            };
            load::Acknowledged {
                token: text("token"),
                user_id: text("id"),
                email,
            }
        });
    }
    let mut users = Vec::new();
    while let Some(done) = requests.join_next().await {
        users.push(done.expect("a sign-up"));
    }
    users
}

/// SMTP down for 45 s while sign-ups flow: Service Bus would redeliver each failed delivery at
/// once, so a handler that answered non-2xx per failed send would dead-letter every message in
/// flight within seconds. Here each delivery rides the outage out inside its send window: none
/// is dead-lettered, and each user gets exactly one email once the server is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_45_second_smtp_outage_under_sign_up_load_dead_letters_nothing() {
    within(async {
        const OUTAGE: Duration = Duration::from_secs(45);
        let mut rig = Rig::start_with(RigOptions::default());
        let load = Load::start(&rig.dev.url(""), "outage45", 4, 40);
        let deadline = Instant::now() + Duration::from_secs(30);
        while rig.smtp.messages().len() < 10 {
            assert!(
                Instant::now() < deadline,
                "no emails flowing before the outage"
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        let down_at = load.now();
        rig.smtp.down();
        tokio::time::sleep(OUTAGE).await;
        let queue_before_up = rig.dev.queue("onboarding").await;
        rig.smtp.up();
        let up_at = load.now();
        let answers = load.stop().await;
        let users = load::acknowledged(&answers);
        let outcome = check(&rig, &users).await;

        let mut f = figures("smtp-outage-45s", &answers, &users, &outcome);
        f.detail("outage", format!("{} ms", ms(up_at - down_at)));
        f.detail(
            "messages waiting when SMTP came back (active)",
            queue_before_up["active"].as_u64().unwrap_or(0),
        );
        f.publish();

        super::assert_nothing_lost(&outcome, &rig.dev);
        assert!(
            outcome.duplicates().is_empty(),
            "emails sent more than once: {:?}",
            outcome.duplicates()
        );
    })
    .await;
}

/// A provider that takes 2 messages a second and answers `451 4.7.0` past that, and a burst of
/// 30 sign-ups. Without `SMTP_MAX_PER_MINUTE` the throttle replies slow the whole process down;
/// with it (set to the provider's rate) the sends are paced through Redis and the provider never
/// refuses one. Either way nothing is dead-lettered and each user gets one email.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_limit_of_2_per_second_absorbs_a_burst_of_30_with_and_without_the_setting() {
    within(async {
        for limit in [None, Some(120u32)] {
            let mut options = RigOptions {
                modes: Modes {
                    rate_per_second: Some(2),
                    ..Modes::default()
                },
                ..RigOptions::default()
            };
            if let Some(per_minute) = limit {
                options
                    .env
                    .push(("SMTP_MAX_PER_MINUTE", per_minute.to_string()));
            }
            let rig = Rig::start_with(options);
            let tag = if limit.is_some() { "paced" } else { "adaptive" };
            let started = Instant::now();
            let load = Load::start(&rig.dev.url(""), tag, 6, 5);
            let answers = load.finish().await;
            let users = load::acknowledged(&answers);
            assert_eq!(users.len(), 30, "every sign-up of the burst answered");
            let outcome = check(&rig, &users).await;
            let last = rig.smtp.messages().iter().map(|m| m.received_at).max();
            let mut f = figures(
                &format!("provider-limit-2-per-second-{tag}"),
                &answers,
                &users,
                &outcome,
            );
            f.detail("throttle replies (451)", rig.smtp.throttled());
            let mut accepted: Vec<Instant> =
                rig.smtp.messages().iter().map(|m| m.received_at).collect();
            accepted.sort();
            let gaps: Vec<u64> = accepted.windows(2).map(|w| ms(w[1] - w[0])).collect();
            f.detail("gaps between accepted emails (ms)", format!("{gaps:?}"));
            f.detail(
                "burst delivered within",
                last.map_or("-".to_owned(), |t| format!("{} ms", ms(t - started))),
            );
            f.publish();

            super::assert_nothing_lost(&outcome, &rig.dev);
            assert!(
                outcome.duplicates().is_empty(),
                "{:?}",
                outcome.duplicates()
            );
            if limit.is_some() {
                assert_eq!(
                    rig.smtp.throttled(),
                    0,
                    "with SMTP_MAX_PER_MINUTE matching the provider, no send may be refused"
                );
            }
        }
    })
    .await;
}

/// A mailbox the server refuses for good (`550 5.1.1`): the message is settled within two
/// deliveries, no email goes out, and the profile says `undeliverable`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_mailbox_is_settled_as_undeliverable_within_two_deliveries() {
    within(async {
        let email = "no-such-mailbox@example.com".to_owned();
        let rig = Rig::start_with(RigOptions {
            modes: Modes {
                refused_mailboxes: vec![email.clone()],
                ..Modes::default()
            },
            ..RigOptions::default()
        });
        let mut deliveries = DeliveryLog::new();
        let users = sign_up_all(&rig, std::slice::from_ref(&email)).await;
        let deadline = Instant::now() + Duration::from_secs(20);
        let queue = loop {
            deliveries.poll(&rig.dev.output());
            let queue = rig.dev.queue("onboarding").await;
            if queue["completed"] == 1 || Instant::now() >= deadline {
                break queue;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        };
        let profile = profile(&rig, &users[0].token).await;
        assert_eq!(
            queue["completed"], 1,
            "the message was not settled: {queue:#}"
        );
        assert!(
            deliveries.counts().len() <= 2,
            "settled only after deliveries {:?}",
            deliveries.counts()
        );
        assert_eq!(rig.smtp.messages().len(), 0, "no email may be accepted");
        assert_eq!(rig.smtp.mailbox_refusals(), deliveries.counts().len());
        assert_eq!(profile["onboarding"], "undeliverable", "{profile:#}");
        assert_eq!(queue["deadLetter"].as_array().map_or(0, Vec::len), 0);
    })
    .await;
}

/// Redis down for 20 s while messages are being delivered: each delivery waits inside its
/// window, nothing is dead-lettered, and every user gets one email once Redis is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_20_second_redis_outage_during_delivery_dead_letters_nothing() {
    within(async {
        let mut rig = Rig::start_with(RigOptions::default());
        // Messages pile up behind a stopped SMTP server, then meet a stopped Redis.
        rig.smtp.down();
        let emails: Vec<String> = (0..20)
            .map(|i| format!("redis-outage-{i}@example.com"))
            .collect();
        let users = sign_up_all(&rig, &emails).await;
        rig.redis.kill();
        rig.smtp.up();
        let redis_down = Instant::now();
        tokio::time::sleep(Duration::from_secs(20)).await;
        rig.redis.restart();
        let redis_up = Instant::now();
        let outcome = check(&rig, &users).await;
        let mut f = figures("redis-outage-20s-during-delivery", &[], &users, &outcome);
        f.detail("Redis down", format!("{} ms", ms(redis_up - redis_down)));
        f.publish();
        super::assert_nothing_lost(&outcome, &rig.dev);
        assert_eq!(
            outcome.profiles_sent,
            users.len(),
            "every sent email must be recorded once Redis is back"
        );
        assert!(
            outcome.duplicates().is_empty(),
            "{:?}",
            outcome.duplicates()
        );
    })
    .await;
}

/// The provider refuses our login (`535`): that is the operator's fault, not the user's. The
/// messages are kept: never acknowledged as `undeliverable`, they come back after each spent
/// window (3 s here) like any fault that may heal, and an error names the setting to fix
/// without its value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_login_keeps_the_messages_and_logs_an_error_without_the_password() {
    within(async {
        let rig = Rig::start_with(RigOptions {
            modes: Modes {
                refuse_auth: true,
                ..Modes::default()
            },
            env: vec![("SMTP_SEND_WINDOW_SECONDS", "3".to_owned())],
            smtp_credentials: Some(("mailer", SMTP_PASSWORD)),
            ..RigOptions::default()
        });
        let emails: Vec<String> = (0..3).map(|i| format!("login-{i}@example.com")).collect();
        let mut deliveries = DeliveryLog::new();
        let users = sign_up_all(&rig, &emails).await;
        let until = Instant::now() + Duration::from_secs(5);
        while Instant::now() < until {
            deliveries.poll(&rig.dev.output());
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        for user in &users {
            let profile = profile(&rig, &user.token).await;
            assert_eq!(
                profile["onboarding"], "pending",
                "{}: {profile:#}",
                user.email
            );
        }
        let queue = rig.dev.queue("onboarding").await;
        assert_eq!(queue["active"], 3, "the messages must be kept: {queue:#}");
        assert_eq!(queue["completed"], 0, "{queue:#}");
        assert_eq!(queue["deadLetter"].as_array().map_or(0, Vec::len), 0);
        assert!(
            deliveries.counts().contains(&2),
            "a spent window gives the message back for another delivery: {:?}",
            deliveries.counts()
        );
        assert!(rig.smtp.auth_attempts() >= 3);
        assert!(rig.smtp.messages().is_empty());
        let output = rig.dev.output();
        assert!(
            output
                .lines()
                .any(|l| l.contains("ERROR") && l.contains("SMTP_URL")),
            "an error must name SMTP_URL:\n{}",
            rig.dev.tail(40)
        );
        assert!(
            !output.contains(SMTP_PASSWORD),
            "the SMTP password reached the log"
        );
    })
    .await;
}

/// An outage longer than the send window: the delivery gives up when its window is spent, the
/// message comes straight back with `DeliveryCount` + 1 (once per window, not in a burst of ten),
/// and it is delivered once the server returns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_longer_than_the_window_costs_one_delivery_per_window() {
    within(async {
        const WINDOW: Duration = Duration::from_secs(3);
        let mut rig = Rig::start_with(RigOptions {
            env: vec![("SMTP_SEND_WINDOW_SECONDS", WINDOW.as_secs().to_string())],
            ..RigOptions::default()
        });
        rig.smtp.down();
        let email = "long-outage@example.com".to_owned();
        let mut deliveries = DeliveryLog::new();
        sign_up_all(&rig, std::slice::from_ref(&email)).await;
        let until = Instant::now() + WINDOW * 3 + Duration::from_millis(1500);
        while Instant::now() < until {
            deliveries.poll(&rig.dev.output());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        rig.smtp.up();
        let deadline = Instant::now() + Duration::from_secs(20);
        while rig.smtp.messages().is_empty() {
            assert!(
                Instant::now() < deadline,
                "no email after the server came back"
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        deliveries.poll(&rig.dev.output());
        let counts = deliveries.counts();
        assert!(
            counts.len() >= 4 && counts.iter().zip(1..).all(|(n, want)| *n == want),
            "deliveries should count 1, 2, 3, 4…: {counts:?}"
        );
        for pair in deliveries.seen.windows(2).take(3) {
            let gap: Duration = (pair[1].1 - pair[0].1).try_into().unwrap_or_default();
            assert!(
                gap >= WINDOW - Duration::from_millis(300)
                    && gap <= WINDOW + Duration::from_secs(1),
                "a redelivery should follow a spent window ({WINDOW:?}), came after {gap:?}"
            );
        }
        assert_eq!(rig.smtp.per_recipient().get(&email), Some(&1));
        let queue = rig
            .dev
            .wait_for("queues", Duration::from_secs(10), |q| {
                q["onboarding"]["completed"] == 1
            })
            .await;
        assert_eq!(
            queue["onboarding"]["deadLetter"]
                .as_array()
                .map_or(0, Vec::len),
            0
        );
    })
    .await;
}

/// A limit far below the deliveries in flight (16 at once, one send every 3.09 s, a 4 s window):
/// most deliveries' slots lie beyond their window. Each such slot stays reserved for its message,
/// so the next delivery waits for the same slot instead of queuing again: the messages go out in
/// slot order, one per interval, each spending about (its wait ÷ the window) deliveries, and
/// none is dead-lettered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_a_tight_limit_a_message_keeps_its_send_slot_across_deliveries() {
    within(async {
        const WINDOW: Duration = Duration::from_secs(4);
        const MESSAGES: usize = 8;
        let rig = Rig::start_with(RigOptions {
            env: vec![
                ("SMTP_SEND_WINDOW_SECONDS", WINDOW.as_secs().to_string()),
                ("SMTP_MAX_PER_MINUTE", "20".to_owned()),
            ],
            max_concurrent_calls: Some(16),
            ..RigOptions::default()
        });
        let emails: Vec<String> = (0..MESSAGES)
            .map(|i| format!("slot-{i}@example.com"))
            .collect();
        let mut deliveries = DeliveryLog::new();
        let users = sign_up_all(&rig, &emails).await;
        let deadline = Instant::now() + Duration::from_secs(60);
        while rig.smtp.messages().len() < MESSAGES {
            assert!(
                Instant::now() < deadline,
                "not every email went out: {:?}\n{}",
                rig.smtp.per_recipient(),
                rig.dev.tail(40)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        deliveries.poll(&rig.dev.output());
        let outcome = check(&rig, &users).await;
        super::assert_nothing_lost(&outcome, &rig.dev);
        assert!(
            outcome.duplicates().is_empty(),
            "{:?}",
            outcome.duplicates()
        );

        let mut sent: Vec<Instant> = rig.smtp.messages().iter().map(|m| m.received_at).collect();
        sent.sort();
        let gaps: Vec<u64> = sent.windows(2).map(|w| ms(w[1] - w[0])).collect();
        assert!(
            gaps.iter().all(|gap| *gap >= 3_000),
            "sends must keep the 3.09 s spacing: {gaps:?} ms"
        );
        // The last message waits about 7 × 3.09 s = 21.6 s: 6 windows of 4 s.
        let most = deliveries.counts().into_iter().max().unwrap_or(0);
        let mut f = figures("tight-limit-send-slots", &[], &users, &outcome);
        f.detail("gaps between sends (ms)", format!("{gaps:?}"));
        f.detail("most deliveries of one message", most);
        f.publish();
        assert!(
            most <= 7,
            "a message kept its slot, so it spends at most ceil(21.6 s / 4 s) + 1 deliveries: {:?}",
            deliveries.counts()
        );
    })
    .await;
}
