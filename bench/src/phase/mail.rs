//! The mail ceilings, sendOnboarding end to end, then (a diagnostic) rounds of sendOnboarding
//! against the like-for-like ceiling: warp with sendOnboarding's Redis round trips and the
//! product's own SMTP client, under the same load on the same users.

use std::path::Path;

use anyhow::bail;
use serde_json::Value;

use crate::envelope;
use crate::fixtures::{KEY_PREFIX, PLACEHOLDER, marker_key, user_key};
use crate::handler;
use crate::mail::{self, MailRun};
use crate::measure::{self, Measured, Rate};
use crate::preflight::Preflight;
use crate::probe;
use crate::report::Report;
use crate::session::{Server, Services, Session};
use crate::table::{Paired, Row};
use crate::wrk::{self, Body, Key};

/// sendOnboarding's rate and the ceilings it is held to.
pub struct MailResult {
    pub product: f64,
    pub lettre_pooled: f64,
    pub nodelay_pool: f64,
    /// sendOnboarding against the like-for-like diagnostic, round by round.
    pub like_for_like: Paired,
}

impl MailResult {
    pub fn check(&self, r: &mut Report) {
        r.ratio(
            "sendOnboarding ≥ 0.7 × pooled lettre (as configured: Nagle on)",
            self.product,
            self.lettre_pooled,
            0.7,
            "msg/s",
        );
        r.ratio(
            "sendOnboarding ≥ 0.7 × lettre pool over TCP_NODELAY (stall removed)",
            self.product,
            self.nodelay_pool,
            0.7,
            "msg/s",
        );
        r.paired_ratio(
            "sendOnboarding ≥ 0.75 × like-for-like diagnostic (warp + its Redis round trips + the product's SMTP client)",
            &self.like_for_like,
            0.75,
            "msg/s",
        );
    }
}

/// The lettre ceilings sendOnboarding's targets use (messages per second).
struct Ceilings {
    pooled: f64,
    nodelay_pool: f64,
}

/// A sendOnboarding load and the emails the sink accepted during it.
struct Sent {
    measured: Measured,
    emails: u64,
    rate: f64,
}

/// The like-for-like rounds: the ceiling's median round, every round's rate, and the ratios.
struct LikeForLike {
    median: Sent,
    round_rates: Vec<String>,
    ratios: Vec<f64>,
}

/// A seeded user: wrk's thread `t` (1-based) and that thread's request number `n`.
#[derive(Clone, Copy)]
struct Seeded {
    t: u32,
    n: u64,
}

impl Seeded {
    fn id(self) -> String {
        wrk::seeded_user_id(self.t, self.n)
    }
}

/// The user the end-to-end check sends to.
const CHECK_USER: Seeded = Seeded { t: 0xff, n: 1 };

pub async fn run(
    s: &mut Session,
    handler: &Server,
    services: &Services,
    pre: &Preflight,
) -> anyhow::Result<MailResult> {
    let ceilings = ceilings(s, services.sink.port(), &pre.sample).await?;
    // Users for sendOnboarding, each message for a different one.
    let per_thread = if s.options.smoke { 10_000 } else { 100_000 };
    seed_users(s, &services.redis_url, pre, per_thread).await?;
    let answer = check_seeded_user(s, handler, services).await?;
    let body = seeded_body();
    let sent = send_onboarding(s, handler, services, &body).await?;
    check_seeded_users_sufficed(s, "sendOnboarding", &sent.measured.summary, per_thread);
    let answer_path = s.dir.join("sendOnboarding-answer.json");
    std::fs::write(&answer_path, &answer)?;
    let like = like_for_like(s, handler, services, &body, per_thread, &answer_path).await?;
    rows(s, &sent, &like, &ceilings);
    Ok(MailResult {
        product: sent.rate,
        lettre_pooled: ceilings.pooled,
        nodelay_pool: ceilings.nodelay_pool,
        like_for_like: Paired {
            product: sent.rate,
            ceiling: like.median.rate,
            ratios: like.ratios,
        },
    })
}

/// The sink's capacity and lettre's, one connection and pooled, Nagle on and off.
async fn ceilings(s: &mut Session, port: u16, sample: &mail::Sample) -> anyhow::Result<Ceilings> {
    let (n, short, pool) = (s.options.connections, s.short, mail::PRODUCT_POOL_SIZE);
    let raw = mail::raw_client(port, n, short, sample).await?;
    mail_row(
        s,
        format!("ceiling: sink capacity (raw client, message in one write, {n} connections)"),
        &raw,
        String::new(),
    );
    let one_nagle = mail::lettre_single(port, false, short, sample).await?;
    mail_row(
        s,
        "ceiling: lettre, 1 connection, Nagle on (lettre's own socket)".into(),
        &one_nagle,
        String::new(),
    );
    let one_nodelay = mail::lettre_single(port, true, short, sample).await?;
    mail_row(
        s,
        "ceiling: lettre, 1 connection, TCP_NODELAY (connect_with_transport)".into(),
        &one_nodelay,
        format!("{:.1} × Nagle on", one_nodelay.rate() / one_nagle.rate()),
    );
    let pooled = mail::lettre_pooled(port, n, short, sample).await?;
    mail_row(
        s,
        format!("ceiling: lettre pooled transport as in the product (pool {pool}, {n} senders)"),
        &pooled,
        String::new(),
    );
    let nodelay_pool = mail::lettre_nodelay_pool(port, pool, n, short, sample).await?;
    mail_row(
        s,
        format!(
            "ceiling: lettre's pool semantics over TCP_NODELAY connections (≤ {pool} idle, {n} senders)"
        ),
        &nodelay_pool,
        format!(
            "{:.1} × pooled transport",
            nodelay_pool.rate() / pooled.rate()
        ),
    );
    Ok(Ceilings {
        pooled: pooled.rate(),
        nodelay_pool: nodelay_pool.rate(),
    })
}

fn mail_row(s: &mut Session, name: String, run: &MailRun, note: String) {
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
    s.report.row(Row {
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

/// One check that a seeded user works end to end; returns the handler's answer.
async fn check_seeded_user(
    s: &Session,
    handler: &Server,
    services: &Services,
) -> anyhow::Result<Vec<u8>> {
    let sink = &services.sink;
    let before = sink.accepted();
    let check = envelope::service_bus(&envelope::onboarding_message(
        &CHECK_USER.id(),
        "check@bench.example",
    ));
    let answer = handler::invoke(s, handler.port, "sendOnboarding", &check).await?;
    if answer.status != 200 {
        bail!(
            "sendOnboarding for a seeded user answered {}: {}",
            answer.status,
            String::from_utf8_lossy(&answer.raw)
        );
    }
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    if sink.accepted() <= before {
        bail!("sendOnboarding for a seeded user sent no email");
    }
    Ok(answer.raw)
}

/// A Service Bus message to a different seeded user each time.
fn seeded_body() -> Body {
    let template = envelope::service_bus(&envelope::onboarding_message(
        PLACEHOLDER,
        "seeded@bench.example",
    ))
    .to_string();
    Body::Keyed {
        template,
        placeholder: PLACEHOLDER,
        key: Key::Uuid,
    }
}

/// sendOnboarding under load for a phase; its rate is the emails the sink accepted.
async fn send_onboarding(
    s: &Session,
    handler: &Server,
    services: &Services,
    body: &Body,
) -> anyhow::Result<Sent> {
    let n = s.options.connections;
    let spec = s.envelope_spec(handler.port, "sendOnboarding", body.clone(), n, s.short);
    let before = services.sink.accepted();
    let measured = measure::load(
        s,
        "sendOnboarding-handler",
        &spec,
        Some(handler.child.pid()),
    )
    .await?;
    let emails = services.sink.accepted() - before;
    let rate = emails as f64 / measured.summary.seconds();
    Ok(Sent {
        measured,
        emails,
        rate,
    })
}

/// The like-for-like diagnostic: rounds of the handler and then the ceiling, back to back,
/// each phase on the same seeded users with their markers cleared first (so each is owed its
/// email again); the ratio is taken round by round, like the HTTP targets'.
async fn like_for_like(
    s: &mut Session,
    handler: &Server,
    services: &Services,
    body: &Body,
    per_thread: u64,
    answer: &Path,
) -> anyhow::Result<LikeForLike> {
    let mut ceiling = start_onboarding_ceiling(s, services, answer)?;
    let mut rounds = Vec::new();
    let mut ratios = Vec::new();
    for round in 1..=measure::rounds(s) {
        let product = like_round(s, handler, "handler", services, body, per_thread, round).await?;
        let like = like_round(
            s,
            &ceiling,
            "warp-redis-smtp",
            services,
            body,
            per_thread,
            round,
        )
        .await?;
        check_seeded_users_sufficed(
            s,
            "the like-for-like mail ceiling",
            &like.measured.summary,
            per_thread,
        );
        ratios.push(product.rate / like.rate);
        rounds.push(like);
    }
    ceiling.child.stop();
    let round_rates = rounds.iter().map(|r| format!("{:.0}", r.rate)).collect();
    rounds.sort_by(|a, b| a.rate.total_cmp(&b.rate));
    let median = rounds.swap_remove(rounds.len() / 2);
    Ok(LikeForLike {
        median,
        round_rates,
        ratios,
    })
}

/// One side of a like-for-like round (`tag`: the handler or the ceiling), on freshly owed
/// users.
async fn like_round(
    s: &Session,
    server: &Server,
    tag: &str,
    services: &Services,
    body: &Body,
    per_thread: u64,
    round: usize,
) -> anyhow::Result<Sent> {
    reset_onboarding_markers(s, &services.redis_url, per_thread).await?;
    let n = s.options.connections;
    let each = measure::round_length(s);
    let spec = s.envelope_spec(server.port, "sendOnboarding", body.clone(), n, each);
    let before = services.sink.accepted();
    let name = format!("sendOnboarding-{tag}-{round}");
    let measured = measure::load(s, &name, &spec, Some(server.child.pid())).await?;
    let emails = services.sink.accepted() - before;
    let rate = emails as f64 / measured.summary.seconds();
    Ok(Sent {
        measured,
        emails,
        rate,
    })
}

/// The like-for-like diagnostic's row, then sendOnboarding's.
fn rows(s: &mut Session, sent: &Sent, like: &LikeForLike, ceilings: &Ceilings) {
    let like_rate = like.median.rate;
    let like_ratio = probe::median(&like.ratios);
    let like_ratios: Vec<String> = like.ratios.iter().map(|r| format!("{r:.2}")).collect();
    let msg = |per_second| Rate {
        per_second,
        unit: "msg/s",
    };
    s.report.row(like.median.measured.row_at(
        "mail",
        "diagnostic: warp + sendOnboarding's Redis round trips + the product's SMTP client (emails accepted by the sink)".into(),
        msg(like_rate),
        format!(
            "{} invocations; per message: GET record + SET NX PX + GET marker in one pipeline, the email, SET sent; {:.2} × nodelay pool; the median of rounds: {} msg/s",
            like.median.measured.summary.requests,
            like_rate / ceilings.nodelay_pool,
            like.round_rates.join(", "),
        ),
    ));
    s.report.row(sent.measured.row_at(
        "handler",
        "sendOnboarding (POST /sendOnboarding, emails accepted by the sink)".into(),
        msg(sent.rate),
        format!(
            "{} emails, {} invocations; {:.2} × pooled lettre, {:.2} × nodelay pool; {like_ratio:.2} × like-for-like (round by round: {})",
            sent.emails,
            sent.measured.summary.requests,
            sent.rate / ceilings.pooled,
            sent.rate / ceilings.nodelay_pool,
            like_ratios.join(", "),
        ),
    ));
}

/// Every seeded user the load can reach.
fn seeded_users(s: &Session, per_thread: u64) -> Vec<Seeded> {
    (1..=s.options.threads.min(s.options.connections))
        .flat_map(|t| (1..=per_thread).map(move |n| Seeded { t, n }))
        .collect()
}

/// Notes when a sendOnboarding load ran out of seeded users (later messages sent nothing).
fn check_seeded_users_sufficed(
    s: &mut Session,
    what: &str,
    summary: &wrk::Summary,
    per_thread: u64,
) {
    let threads = s.options.threads.min(s.options.connections);
    if summary.requests.div_ceil(u64::from(threads)) > per_thread {
        s.report.notes.push(format!(
            "{what} ran past the {per_thread} seeded users per wrk thread: later messages found no user (no email)."
        ));
    }
}

/// Writes `per_thread` users for each wrk thread (and one for the check), copies of the
/// preflight user's record with their own id and email, in the store's own layout.
async fn seed_users(
    s: &Session,
    redis_url: &str,
    pre: &Preflight,
    per_thread: u64,
) -> anyhow::Result<()> {
    let mut redis = redis::Client::open(redis_url)?
        .get_multiplexed_async_connection()
        .await?;
    let mut users = vec![CHECK_USER];
    users.extend(seeded_users(s, per_thread));
    for batch in users.chunks(2000) {
        let mut pipe = redis::pipe();
        for user in batch {
            let id = user.id();
            let mut record = pre.user_record.clone();
            record["id"] = Value::String(id.clone());
            record["email"] = Value::String(format!("s{}-{}@bench.example", user.t, user.n));
            pipe.cmd("SET")
                .arg(user_key(&id))
                .arg(record.to_string())
                .ignore();
        }
        let () = pipe.query_async(&mut redis).await?;
    }
    Ok(())
}

/// Deletes the onboarding markers of the seeded users the load can reach, so each of them is
/// owed its email again, as right after [`seed_users`].
async fn reset_onboarding_markers(
    s: &Session,
    redis_url: &str,
    per_thread: u64,
) -> anyhow::Result<()> {
    let mut redis = redis::Client::open(redis_url)?
        .get_multiplexed_async_connection()
        .await?;
    for batch in seeded_users(s, per_thread).chunks(2000) {
        let mut pipe = redis::pipe();
        for user in batch {
            pipe.cmd("DEL").arg(marker_key(&user.id())).ignore();
        }
        let () = pipe.query_async(&mut redis).await?;
    }
    Ok(())
}

/// The warp ceiling server with `POST /sendOnboarding` (Redis and the product's SMTP client),
/// answering `answer` (the handler's answer to a seeded user's message).
fn start_onboarding_ceiling(
    s: &Session,
    services: &Services,
    answer: &Path,
) -> anyhow::Result<Server> {
    let port = test_support::free_port();
    let mut command = s.ceiling_command(&std::env::current_exe()?, port);
    command
        .arg("--redis")
        .arg(&services.redis_url)
        .arg("--key-prefix")
        .arg(KEY_PREFIX)
        .arg("--smtp-port")
        .arg(services.sink.port().to_string())
        .arg("--onboarding-answer")
        .arg(answer);
    s.start_server("warp-redis-smtp", command, port)
}
