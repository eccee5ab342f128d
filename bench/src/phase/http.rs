//! health and root against their warp ceilings, round by round: warp alone, warp with one Redis
//! command per request, the handler, and for root a diagnostic with root's own pipeline. The
//! same comparison runs against the single server and (phase/cluster.rs) against a cluster.

use crate::ceiling_redis::CeilingRedis;
use crate::fixtures::{health_envelope, marker_key, root_envelope, user_key};
use crate::measure::{self, Measured, MedianRound};
use crate::preflight::Preflight;
use crate::probe;
use crate::report::Report;
use crate::session::{Server, Services, Session};
use crate::table::Paired;
use crate::wrk::Body;

/// health and root, each against warp with its Redis command.
pub struct HttpResult {
    pub health: Paired,
    pub root: Paired,
    /// The backend's row label ("" for the single server).
    label: &'static str,
    health_command: &'static str,
}

impl HttpResult {
    pub fn check(&self, r: &mut Report) {
        let (label, command) = (self.label, self.health_command);
        let health = format!("{label}health ≥ 0.7 × warp + {command}");
        r.paired_ratio(&health, &self.health, 0.7, "req/s");
        let root = format!("{label}root ≥ 0.7 × warp + GET");
        r.paired_ratio(&root, &self.root, 0.7, "req/s");
    }
}

/// The Redis a comparison runs against, the handler's and its ceilings' alike.
pub struct Backend<'a> {
    pub redis_url: &'a str,
    /// A cluster: the ceilings use the cluster client, and health's command is CLUSTER INFO.
    pub cluster: bool,
    /// Prefix of the rows' names and the targets' ("" for the single server).
    pub label: &'static str,
    /// Prefix of the wrk phases' names and of the handler's answers the ceilings replay
    /// (`<prefix>health-answer.json`).
    pub prefix: &'static str,
}

/// The user whose record root reads.
pub struct RootUser<'a> {
    pub id: &'a str,
    pub token: &'a str,
}

/// The warp ceiling servers.
struct Ceilings {
    plain: Server,
    /// One Redis command per request (PING for health, GET for root).
    with_redis: Server,
    /// GET user + GET marker in one pipeline, as root does (diagnostic).
    with_pipeline: Server,
}

/// A server a round loads, and the tag of its wrk phases.
struct Target {
    port: u16,
    pid: u32,
    tag: &'static str,
}

/// One function's comparison: what it is sent, and the Redis command of its ceiling.
struct Trio {
    function: &'static str,
    body: Body,
    command: &'static str,
}

pub async fn run(
    s: &mut Session,
    handler: &Server,
    services: &Services,
    pre: &Preflight,
) -> anyhow::Result<HttpResult> {
    let single = Backend {
        redis_url: &services.redis_url,
        cluster: false,
        label: "",
        prefix: "",
    };
    let user = RootUser {
        id: &pre.user_id,
        token: &pre.token,
    };
    run_against(s, handler, &single, &user).await
}

/// health and root of `handler` against ceilings on `backend`.
pub async fn run_against(
    s: &mut Session,
    handler: &Server,
    backend: &Backend<'_>,
    user: &RootUser<'_>,
) -> anyhow::Result<HttpResult> {
    let ceilings = start_ceilings(s, backend, user.id)?;
    let health_command = CeilingRedis::health_command(backend.cluster);
    let health = Trio {
        function: "health",
        body: Body::Fixed(health_envelope().to_string()),
        command: health_command,
    };
    let health = trio(s, backend, &health, handler, &ceilings).await?;
    let root = Trio {
        function: "root",
        body: Body::Fixed(root_envelope(user.token).to_string()),
        command: "GET",
    };
    let root = trio(s, backend, &root, handler, &ceilings).await?;
    Ok(HttpResult {
        health,
        root,
        label: backend.label,
        health_command,
    })
}

/// The warp ceiling servers: plain, with one Redis command per request, and with root's
/// pipeline.
fn start_ceilings(s: &Session, backend: &Backend<'_>, user_id: &str) -> anyhow::Result<Ceilings> {
    let exe = std::env::current_exe()?;
    let start = |name: &str, redis: bool, second: bool| -> anyhow::Result<Server> {
        let port = test_support::free_port();
        let mut command = s.ceiling_command_answering(&exe, port, backend.prefix);
        if redis {
            command
                .arg("--redis")
                .arg(backend.redis_url)
                .arg("--root-key")
                .arg(user_key(user_id));
            if backend.cluster {
                command.arg("--cluster");
            }
            if second {
                command.arg("--root-second-key").arg(marker_key(user_id));
            }
        }
        s.start_server(&format!("{}{name}", backend.prefix), command, port)
    };
    Ok(Ceilings {
        plain: start("warp-plain", false, false)?,
        with_redis: start("warp-redis", true, false)?,
        with_pipeline: start("warp-redis-pipeline", true, true)?,
    })
}

/// Rounds of (warp, warp + Redis, handler[, warp + pipeline]), each a round's length: the
/// target takes the median of the round-by-round ratios, each row the round with the median
/// rate, so one disturbed round does not decide.
async fn trio(
    s: &mut Session,
    backend: &Backend<'_>,
    trio: &Trio,
    handler: &Server,
    c: &Ceilings,
) -> anyhow::Result<Paired> {
    let results = measure_rounds(s, backend.prefix, trio, &targets(trio, handler, c)).await?;
    // Each round runs the ceiling and the handler back to back, so their ratio within a round
    // is the steadiest figure on a machine whose speed drifts; the target takes the median.
    let paired = round_ratios(&results[1], &results[2]);
    let pipeline_ratios = results
        .get(3)
        .map(|pipeline| round_ratios(pipeline, &results[2]));
    let mut medians = results.into_iter().map(measure::median_round);
    let plain = medians.next().expect("plain");
    let with_redis = medians.next().expect("redis");
    let product = medians.next().expect("handler");
    let pipeline = medians.next();
    let (function, command, label) = (trio.function, trio.command, backend.label);
    ceiling_row(
        s,
        format!("{label}ceiling: warp, same JSON ({function})"),
        &plain,
    );
    ceiling_row(
        s,
        format!("{label}ceiling: warp + Redis {command} ({function})"),
        &with_redis,
    );
    if let Some(pipeline) = &pipeline {
        ceiling_row(
            s,
            format!("{label}diagnostic: warp + root's own pipeline (GET record, GET marker)"),
            pipeline,
        );
    }
    let note = product_note(
        command,
        &paired,
        pipeline_ratios.as_deref(),
        &product.rounds_note,
    );
    s.report.row(product.measured.row(
        "handler",
        format!("{label}{function} (POST /{function}, host envelope)"),
        note,
    ));
    Ok(Paired {
        product: product.measured.summary.rps(),
        ceiling: with_redis.measured.summary.rps(),
        ratios: paired,
    })
}

/// The servers a round loads, in order: warp, warp + Redis, the handler, and for root the
/// pipeline diagnostic.
fn targets(trio: &Trio, handler: &Server, c: &Ceilings) -> Vec<Target> {
    let target = |server: &Server, tag| Target {
        port: server.port,
        pid: server.child.pid(),
        tag,
    };
    let mut targets = vec![
        target(&c.plain, "warp"),
        target(&c.with_redis, "warp-redis"),
        target(handler, "handler"),
    ];
    if trio.function == "root" {
        targets.push(target(&c.with_pipeline, "warp-redis-pipeline"));
    }
    targets
}

/// Every round of every target: one list per target, one entry per round.
async fn measure_rounds(
    s: &Session,
    prefix: &str,
    trio: &Trio,
    targets: &[Target],
) -> anyhow::Result<Vec<Vec<Measured>>> {
    let n = s.options.connections;
    let each = measure::round_length(s);
    let mut results: Vec<Vec<Measured>> = vec![Vec::new(); targets.len()];
    for round in 0..measure::rounds(s) {
        for (i, target) in targets.iter().enumerate() {
            let spec = s.envelope_spec(target.port, trio.function, trio.body.clone(), n, each);
            let name = format!("{prefix}{}-{}-{}", trio.function, target.tag, round + 1);
            results[i].push(measure::load(s, &name, &spec, Some(target.pid)).await?);
        }
    }
    Ok(results)
}

/// The handler's rate over the ceiling's, round by round.
fn round_ratios(ceiling: &[Measured], product: &[Measured]) -> Vec<f64> {
    ceiling
        .iter()
        .zip(product)
        .map(|(ceiling, product)| product.summary.rps() / ceiling.summary.rps())
        .collect()
}

fn ceiling_row(s: &mut Session, name: String, median: &MedianRound) {
    s.report.row(
        median
            .measured
            .row("http", name, median.rounds_note.clone()),
    );
}

/// The handler row's note: its ratio to warp + Redis (and to the pipeline diagnostic), and
/// its rounds.
fn product_note(
    command: &str,
    paired: &[f64],
    pipeline_ratios: Option<&[f64]>,
    rounds_note: &str,
) -> String {
    let mut note = format!(
        "{:.2} × warp + {command} (round by round: {})",
        probe::median(paired),
        paired
            .iter()
            .map(|r| format!("{r:.2}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    if let Some(ratios) = pipeline_ratios {
        note.push_str(&format!("; {:.2} × warp + pipeline", probe::median(ratios)));
    }
    if !rounds_note.is_empty() {
        note.push_str(&format!("; {rounds_note}"));
    }
    note
}
