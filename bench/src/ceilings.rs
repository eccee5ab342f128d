//! The HTTP, store and crypto ceilings: what the same work costs without the product around it.
//!
//! - HTTP: a minimal warp server (same warp, same tokio runtime shape) that reads the invocation
//!   body and answers the very JSON the handler answered, optionally after the same single Redis
//!   command (PING for health, GET of the user's record for root) on a multiplexed connection.
//! - Mail, like for like (a diagnostic): the same server's `POST /sendOnboarding` makes
//!   sendOnboarding's own Redis round trips for the user the envelope names (GET record + claim
//!   `SET NX PX` + GET marker in one pipeline, then the `sent:` SET) around sending the
//!   product's email, composed once, through the product's own SMTP client
//!   (`onboarding::mail::SmtpMailer`: its pool, its TCP_NODELAY connections, its held writes).
//! - Store: `redis-benchmark` at the same concurrency.
//! - Crypto: argon2id with the product's parameters on as many threads as the product hashes at
//!   once, each reusing its memory.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use bytes::Bytes;
use warp::Filter;
use warp::Reply as _;

use crate::ceiling_redis::CeilingRedis;
use onboarding::config::SmtpSettings;
use onboarding::domain::{UserEmail, UserName};
use onboarding::mail::{Mailer as _, OnboardingEmail, SmtpMailer, compose};

/// The product's argon2id parameters (crates/onboarding/src/auth/password.rs): OWASP's 19 MiB, t = 2, p = 1, a
/// 32-byte output.
pub const ARGON2_MEMORY_KIB: u32 = 19 * 1024;
pub const ARGON2_ITERATIONS: u32 = 2;
pub const ARGON2_LANES: u32 = 1;
pub const ARGON2_OUTPUT: usize = 32;

/// Two GET answers of one pipeline.
type TwoValues = (Option<Vec<u8>>, Option<Vec<u8>>);

/// Options of the internal `serve-ceiling` command.
#[derive(Debug, Clone, clap::Args)]
pub struct CeilingOptions {
    /// Loopback port to listen on.
    #[arg(long)]
    pub port: u16,
    /// Run one Redis command per request on this server (PING for /health, GET for /root).
    #[arg(long)]
    pub redis: Option<String>,
    /// --redis is a cluster: the cluster client, and CLUSTER INFO for /health, as the handler.
    #[arg(long, requires = "redis")]
    pub cluster: bool,
    /// The key /root GETs.
    #[arg(long, default_value = "bench:none")]
    pub root_key: String,
    /// Also GET this key in the same pipeline on /root (the product's root reads the user's
    /// record and onboarding marker in one round trip): a diagnostic, not a target's ceiling.
    #[arg(long)]
    pub root_second_key: Option<String>,
    /// File holding the handler's answer to a health invocation.
    #[arg(long)]
    pub health_answer: PathBuf,
    /// File holding the handler's answer to a root invocation.
    #[arg(long)]
    pub root_answer: PathBuf,
    /// Serve `POST /sendOnboarding`, sending with the product's SMTP client to this port (needs
    /// --redis and --onboarding-answer).
    #[arg(long, requires_all = ["redis", "onboarding_answer"])]
    pub smtp_port: Option<u16>,
    /// File holding the handler's answer to a sendOnboarding invocation.
    #[arg(long)]
    pub onboarding_answer: Option<PathBuf>,
    /// The product's key prefix (REDIS_KEY_PREFIX), for the keys /sendOnboarding touches.
    #[arg(long, default_value = "bench:")]
    pub key_prefix: String,
}

/// The product's claim lease on a send: its default SMTP timeout (crates/onboarding/src/config.rs) plus its claim
/// margin (crates/onboarding/src/app.rs), in milliseconds, for `PX`.
const ONBOARDING_CLAIM_LEASE_MS: u64 = 35_000;

/// What `POST /sendOnboarding` needs.
struct OnboardingCeiling {
    redis: CeilingRedis,
    mailer: SmtpMailer,
    email: lettre::Message,
    answer: Bytes,
    key_prefix: String,
    /// Claim tokens are `<token_prefix>.<counter>`, as the product makes them.
    token_prefix: String,
    next_token: AtomicU64,
}

impl OnboardingCeiling {
    /// sendOnboarding's store and mail work for one message: the lookup and claim in one
    /// pipeline, the email, then the confirmation. A missing user, or a marker already there
    /// (sent, or another delivery's claim), sends nothing (the product acknowledges the first two
    /// and waits on the third; none happens with the bench's fresh users). Answers the handler's
    /// JSON, or 500 on a failure.
    async fn handle(&self, body: &[u8]) -> warp::reply::Response {
        match self.send(body).await {
            Ok(()) => json_reply(self.answer.clone()),
            Err(e) => {
                eprintln!("serve-ceiling: sendOnboarding: {e:#}");
                warp::reply::with_status("failed", warp::http::StatusCode::INTERNAL_SERVER_ERROR)
                    .into_response()
            }
        }
    }

    async fn send(&self, body: &[u8]) -> anyhow::Result<()> {
        let user_id = onboarding_user_id(body).context("no userId in the envelope")?;
        let prefix = &self.key_prefix;
        // crates/onboarding/src/store/redis/mod.rs: user_key, marker_key.
        let user_key = format!("{prefix}user:{{{user_id}}}");
        let marker_key = format!("{prefix}user:{{{user_id}}}:onboarding");
        let token = self.next_token.fetch_add(1, Ordering::Relaxed);
        let claim = format!("sending:{}.{token}", self.token_prefix);
        let mut redis = self.redis.clone();
        let (record, claimed, _marker): (Option<Vec<u8>>, Option<String>, Option<Vec<u8>>) =
            redis::pipe()
                .get(&user_key)
                .cmd("SET")
                .arg(&marker_key)
                .arg(&claim)
                .arg("NX")
                .arg("PX")
                .arg(ONBOARDING_CLAIM_LEASE_MS)
                .get(&marker_key)
                .query_async(&mut redis)
                .await
                .context("lookup and claim")?;
        if record.is_none() || claimed.is_none() {
            return Ok(());
        }
        self.mailer.send(&self.email).await?;
        let () = redis::cmd("SET")
            .arg(&marker_key)
            .arg(format!("sent:{}", rfc3339_now()))
            .query_async(&mut redis)
            .await
            .context("confirm")?;
        Ok(())
    }
}

/// The user id of a sendOnboarding envelope, found without parsing it: the 36 characters after
/// the first `userId` key, past its quotes, backslashes and colon (in the twice-encoded
/// `Data.message`, or in `Metadata`, whichever comes first; both carry the same id).
fn onboarding_user_id(body: &[u8]) -> Option<&str> {
    const KEY: &[u8] = b"userId";
    let at = body.windows(KEY.len()).position(|w| w == KEY)? + KEY.len();
    let rest = &body[at..];
    let start = rest.iter().position(|b| !b"\\\": ".contains(b))?;
    let id = rest[start..].get(..36)?;
    id.iter()
        .all(|b| b.is_ascii_hexdigit() || *b == b'-')
        .then(|| std::str::from_utf8(id).ok())
        .flatten()
}

/// The product's SMTP client, set up as the handler sets it up for `SMTP_URL=smtp://127.0.0.1:<port>`.
fn product_mailer(port: u16) -> anyhow::Result<SmtpMailer> {
    let settings = SmtpSettings {
        url: format!("smtp://127.0.0.1:{port}").into(),
        display: format!("smtp://127.0.0.1:{port}"),
        timeout: Duration::from_secs(30),
    };
    SmtpMailer::new(&settings).context("the product's SMTP client")
}

/// The product's onboarding email, composed by the product's code with the bench's settings.
fn product_email() -> anyhow::Result<lettre::Message> {
    let from = "Onboarding <onboarding@bench.example>".parse()?;
    let link = url::Url::parse("https://bench.example.net/")?;
    // As long as a real confirmation link: a JWT of about 380 characters.
    let confirm = url::Url::parse(&format!(
        "https://bench.example.net/verifyEmail?token={}",
        "x".repeat(380)
    ))?;
    let email = OnboardingEmail {
        from: &from,
        name: &UserName::parse("Bench Ceiling")?,
        email: &UserEmail::parse("ceiling@bench.example")?,
        link: Some(&link),
        confirm: Some(&confirm),
    };
    compose(&email).context("composing the onboarding email")
}

/// Now as the product writes it in the `sent:` marker.
fn rfc3339_now() -> String {
    onboarding::domain::rfc3339(time::OffsetDateTime::now_utc())
}

/// The ceiling server: `GET /` (readiness), `POST /health`, `POST /root`, and with --smtp-port
/// `POST /sendOnboarding` (404 without).
pub fn serve_ceiling(options: CeilingOptions) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", options.port)).await?;
        let health = Bytes::from(std::fs::read(&options.health_answer)?);
        let root = Bytes::from(std::fs::read(&options.root_answer)?);
        let redis = match &options.redis {
            Some(url) => Some(
                CeilingRedis::open(url, options.cluster)
                    .await
                    .context("redis")?,
            ),
            None => None,
        };
        let onboarding = onboarding_ceiling(&options, redis.as_ref())?;
        let ready = warp::get()
            .and(warp::path::end())
            .map(|| warp::reply::with_status("ok", warp::http::StatusCode::OK));
        let routes = ready
            .map(warp::reply::Reply::into_response)
            .or(health_route(redis.clone(), health))
            .unify()
            .or(root_route(
                redis,
                root,
                options.root_key,
                options.root_second_key,
            ))
            .unify()
            .or(onboarding_route(onboarding))
            .unify();
        warp::serve(routes).incoming(listener).run().await;
        Ok(())
    })
}

/// The `POST /sendOnboarding` server's state, when --smtp-port (and so --redis) is given.
fn onboarding_ceiling(
    options: &CeilingOptions,
    redis: Option<&CeilingRedis>,
) -> anyhow::Result<Option<Arc<OnboardingCeiling>>> {
    let (Some(redis), Some(smtp_port)) = (redis, options.smtp_port) else {
        return Ok(None);
    };
    let read = |path: &Option<PathBuf>, what: &str| {
        let path = path
            .as_ref()
            .with_context(|| format!("--{what} is needed"))?;
        std::fs::read(path).with_context(|| format!("reading {}", path.display()))
    };
    Ok(Some(Arc::new(OnboardingCeiling {
        redis: redis.clone(),
        mailer: product_mailer(smtp_port)?,
        email: product_email()?,
        answer: Bytes::from(read(&options.onboarding_answer, "onboarding-answer")?),
        key_prefix: options.key_prefix.clone(),
        token_prefix: uuid::Uuid::new_v4().simple().to_string(),
        next_token: AtomicU64::new(0),
    })))
}

/// `POST /health`: a PING (on a cluster CLUSTER INFO) when the server has Redis, then the
/// handler's own answer.
fn health_route(
    redis: Option<CeilingRedis>,
    answer: Bytes,
) -> impl Filter<Extract = (warp::reply::Response,), Error = warp::Rejection> + Clone {
    warp::post()
        .and(warp::path("health"))
        .and(warp::path::end())
        .and(warp::body::bytes())
        .then(move |_body: Bytes| {
            let (redis, answer) = (redis.clone(), answer.clone());
            async move {
                if let Some(mut redis) = redis {
                    let _ = redis.health().await;
                }
                json_reply(answer)
            }
        })
}

/// `POST /root`: a GET of `key` (and of `second` in the same pipeline) when the server has
/// Redis, then the handler's own answer.
fn root_route(
    redis: Option<CeilingRedis>,
    answer: Bytes,
    key: String,
    second: Option<String>,
) -> impl Filter<Extract = (warp::reply::Response,), Error = warp::Rejection> + Clone {
    let (key, second) = (Arc::new(key), Arc::new(second));
    warp::post()
        .and(warp::path("root"))
        .and(warp::path::end())
        .and(warp::body::bytes())
        .then(move |_body: Bytes| {
            let (redis, answer, key) = (redis.clone(), answer.clone(), key.clone());
            let second = second.clone();
            async move {
                match (redis, second.as_deref()) {
                    (Some(mut redis), None) => {
                        let _: redis::RedisResult<Option<Vec<u8>>> = redis::cmd("GET")
                            .arg(key.as_str())
                            .query_async(&mut redis)
                            .await;
                    }
                    (Some(mut redis), Some(second)) => {
                        let _: redis::RedisResult<TwoValues> = redis::pipe()
                            .get(key.as_str())
                            .get(second)
                            .query_async(&mut redis)
                            .await;
                    }
                    (None, _) => {}
                }
                json_reply(answer)
            }
        })
}

/// `POST /sendOnboarding`, or 404 when the server has no SMTP port.
fn onboarding_route(
    onboarding: Option<Arc<OnboardingCeiling>>,
) -> impl Filter<Extract = (warp::reply::Response,), Error = warp::Rejection> + Clone {
    warp::post()
        .and(warp::path("sendOnboarding"))
        .and(warp::path::end())
        .and(warp::body::bytes())
        .then(move |body: Bytes| {
            let onboarding = onboarding.clone();
            async move {
                match onboarding {
                    Some(onboarding) => onboarding.handle(&body).await,
                    None => warp::reply::with_status("", warp::http::StatusCode::NOT_FOUND)
                        .into_response(),
                }
            }
        })
}

fn json_reply(body: Bytes) -> warp::reply::Response {
    let mut response = warp::reply::Response::new(body.into());
    response.headers_mut().insert(
        warp::http::header::CONTENT_TYPE,
        warp::http::HeaderValue::from_static("application/json"),
    );
    response
}

/// A raw argon2id run: hashes done, and the seconds from the start to the last one done.
pub struct HashRun {
    pub hashes: u64,
    pub seconds: f64,
}

impl HashRun {
    /// Hashes per second.
    pub fn rate(&self) -> f64 {
        self.hashes as f64 / self.seconds
    }
}

/// Raw argon2id: `threads` threads hashing in a loop for `duration`, each with its own reused
/// memory.
pub fn argon2_rate(threads: usize, duration: Duration) -> anyhow::Result<HashRun> {
    let params = Params::new(
        ARGON2_MEMORY_KIB,
        ARGON2_ITERATIONS,
        ARGON2_LANES,
        Some(ARGON2_OUTPUT),
    )
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    let count = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let last_done = Arc::new(std::sync::Mutex::new(started));
    let workers: Vec<_> = (0..threads)
        .map(|i| {
            let (params, count, stop, last_done) = (
                params.clone(),
                count.clone(),
                stop.clone(),
                last_done.clone(),
            );
            std::thread::spawn(move || -> anyhow::Result<()> {
                let argon2 = Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone());
                let mut memory = vec![Block::default(); params.block_count()];
                let mut out = [0u8; ARGON2_OUTPUT];
                let mut salt = *b"bench-salt-0000!";
                let mut n: u32 = 0;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    salt[11..15].copy_from_slice(&n.to_le_bytes());
                    salt[0] = i as u8;
                    argon2
                        .hash_password_into_with_memory(
                            crate::envelope::PASSWORD.as_bytes(),
                            &salt,
                            &mut out,
                            &mut memory,
                        )
                        .map_err(|e| anyhow::anyhow!("{e}"))?;
                    if !stop.load(Ordering::Relaxed) {
                        count.fetch_add(1, Ordering::Relaxed);
                        *last_done.lock().unwrap() = Instant::now();
                    }
                }
                Ok(())
            })
        })
        .collect();
    std::thread::sleep(duration);
    stop.store(true, Ordering::Relaxed);
    let ended = *last_done.lock().unwrap();
    for worker in workers {
        worker.join().expect("argon2 thread")?;
    }
    Ok(HashRun {
        hashes: count.load(Ordering::Relaxed),
        seconds: ended.duration_since(started).as_secs_f64(),
    })
}

/// One test of `redis-benchmark`: requests per second and latency percentiles (ms).
#[derive(Clone, Debug)]
pub struct RedisBench {
    pub test: String,
    pub rps: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

/// `redis-benchmark -c <connections> -n <requests> -t ping,set,get -d <size> --csv`.
pub async fn redis_benchmark(
    port: u16,
    connections: u32,
    requests: u64,
    value_size: usize,
) -> anyhow::Result<Vec<RedisBench>> {
    let output = tokio::process::Command::new("redis-benchmark")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(["-c", &connections.to_string(), "-n", &requests.to_string()])
        .args(["-t", "ping,set,get", "-d", &value_size.to_string(), "--csv"])
        .kill_on_drop(true)
        .output()
        .await
        .context("cannot run redis-benchmark (apt-get install redis-tools)")?;
    if !output.status.success() {
        bail!(
            "redis-benchmark failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    // "test","rps","avg_latency_ms","min_latency_ms","p50_latency_ms","p95_latency_ms","p99_latency_ms","max_latency_ms"
    let text = String::from_utf8_lossy(&output.stdout);
    let mut results = Vec::new();
    for line in text.lines().skip_while(|l| l.starts_with("\"test\"")) {
        let fields: Vec<&str> = line.split(',').map(|f| f.trim_matches('"')).collect();
        if fields.len() < 7 {
            continue;
        }
        let num = |i: usize| fields[i].parse::<f64>().unwrap_or(f64::NAN);
        results.push(RedisBench {
            test: fields[0].to_owned(),
            rps: num(1),
            p50_ms: num(4),
            p99_ms: num(6),
        });
    }
    if results.is_empty() {
        bail!("redis-benchmark printed no results:\n{text}");
    }
    Ok(results)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_user_id_in_a_service_bus_envelope() {
        let id = crate::wrk::seeded_user_id(2, 77);
        let envelope = crate::envelope::service_bus(&crate::envelope::onboarding_message(
            &id,
            "a@bench.example",
        ));
        assert_eq!(
            onboarding_user_id(envelope.to_string().as_bytes()),
            Some(id.as_str())
        );
        assert_eq!(onboarding_user_id(b"{\"userId\":\"short\"}"), None);
    }
}
