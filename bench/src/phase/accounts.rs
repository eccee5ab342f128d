//! Accounts (issue 18): signIn against raw argon2id at the product's parallelism, as createUser
//! is, and what a request refused by a limit costs the handler in CPU against a `/health`
//! invocation measured the same way, on a second handler whose limits are set low.

use anyhow::bail;
use serde_json::Value;

use crate::envelope;
use crate::fixtures::{
    cycled_email, health_envelope, sign_in_envelope, sign_in_template, sign_up_envelope,
};
use crate::handler::{self, HttpAnswer};
use crate::measure::{self, Measured};
use crate::phase::create::RawHashing;
use crate::probe;
use crate::report::Report;
use crate::session::{Server, Services, Session};
use crate::wrk::Body;

/// signIn's rate against raw argon2id's, and the CPU of refused requests against /health's.
pub struct AccountsResult {
    pub raw_hash_rate: f64,
    pub sign_in_rate: f64,
    /// CPU per refused createUser ÷ CPU per /health: the median of the round-by-round ratios.
    pub refused_sign_up_cpu: f64,
    /// The same for a signIn refused by the per-account limit.
    pub refused_sign_in_cpu: f64,
}

impl AccountsResult {
    pub fn check(&self, r: &mut Report) {
        r.ratio(
            "signIn ≥ 0.85 × raw argon2id (same parallelism)",
            self.sign_in_rate,
            self.raw_hash_rate,
            0.85,
            "/s",
        );
        r.at_most(
            "createUser refused by a limit (429): handler CPU per request ÷ /health's",
            self.refused_sign_up_cpu,
            2.0,
            "× health",
        );
        r.at_most(
            "signIn refused by a limit (429): handler CPU per request ÷ /health's",
            self.refused_sign_in_cpu,
            2.0,
            "× health",
        );
    }
}

/// Users each wrk thread signs in, in turn (created beforehand).
const USERS_PER_THREAD: u64 = 8;

// Client addresses (RFC 5737 documentation ranges), in `Client-IP` as App Service's front end
// writes it: one for the sign-ins, one for each refused stream, so no limit is shared.
const SIGN_IN_CLIENT: &str = "198.51.100.10:50000";
const REFUSED_SIGN_UP_CLIENT: &str = "203.0.113.20:50000";
const REFUSED_SIGN_IN_CLIENT: &str = "203.0.113.21:50000";

/// The second handler's limits, over the run's lifted ones: one sign-up per client address and
/// one failed sign-in per account a day, so every request of the refused streams after the
/// first is refused, and stays refused (a refused request charges nothing).
const LOW_LIMITS: [(&str, &str); 2] = [
    ("LIMIT_SIGN_UPS_PER_ADDRESS", "1/24h"),
    ("LIMIT_FAILED_SIGN_INS_PER_ACCOUNT", "1/24h"),
];

/// A wrong password, valid by the rules (8–128 characters), so the limit is what refuses it.
const WRONG_PASSWORD: &str = "not the password";

pub async fn run(
    s: &mut Session,
    handler: &Server,
    services: &Services,
) -> anyhow::Result<AccountsResult> {
    let (raw_hash_rate, sign_in_rate) = sign_in(s, handler).await?;
    let (refused_sign_up_cpu, refused_sign_in_cpu) = refused(s, services).await?;
    Ok(AccountsResult {
        raw_hash_rate,
        sign_in_rate,
        refused_sign_up_cpu,
        refused_sign_in_cpu,
    })
}

/// Raw argon2id (half before, half after), then signIn with the right password for users
/// created beforehand; returns (raw hashes per second, sign-ins per second).
async fn sign_in(s: &mut Session, handler: &Server) -> anyhow::Result<(f64, f64)> {
    let nonce = format!("si{}", std::process::id());
    // wrk numbers its threads 1..=min(threads, connections) (see wrk::run).
    let threads = s.options.threads.min(s.options.connections);
    create_users(s, handler, &nonce, threads).await?;
    let raw = RawHashing::before(s).await?;
    let spec = s.envelope_spec(
        handler.port,
        "signIn",
        sign_in_template(&nonce, USERS_PER_THREAD, SIGN_IN_CLIENT),
        s.options.connections,
        s.long,
    );
    let measured = measure::load(s, "signIn-handler", &spec, Some(handler.child.pid())).await?;
    let raw = raw.after(s, "signIn").await?;
    let rate = measured.summary.rps();
    s.report.row(measured.row(
        "handler",
        format!(
            "signIn (POST /signIn, right password, {} users)",
            u64::from(threads) * USERS_PER_THREAD
        ),
        format!("{:.2} × raw argon2id", rate / raw),
    ));
    Ok((raw, rate))
}

/// Signs up every user the sign-in load cycles through, and checks that the first and last
/// sign in with the benchmark's password (200 with a token).
async fn create_users(
    s: &Session,
    handler: &Server,
    nonce: &str,
    threads: u32,
) -> anyhow::Result<()> {
    for t in 1..=threads {
        for m in 1..=USERS_PER_THREAD {
            let email = cycled_email(nonce, t, m);
            let sign_up = sign_up_envelope(&email, SIGN_IN_CLIENT);
            expect(s, handler, "createUser", &sign_up, 201).await?;
        }
    }
    for (t, m) in [(1, 1), (threads, USERS_PER_THREAD)] {
        let email = cycled_email(nonce, t, m);
        let sign_in = sign_in_envelope(&email, envelope::PASSWORD, SIGN_IN_CLIENT);
        let answer = expect(s, handler, "signIn", &sign_in, 200).await?;
        let body: Value = serde_json::from_str(&answer.body)?;
        if body["token"].as_str().is_none_or(str::is_empty) {
            bail!("signIn answered 200 without a token: {}", answer.body);
        }
    }
    Ok(())
}

/// A stream the limited handler is loaded with, and its tag.
struct Stream {
    function: &'static str,
    tag: &'static str,
    envelope: Value,
}

/// On a handler with [`LOW_LIMITS`]: rounds of (/health, a refused createUser, a refused
/// signIn), each a round's length, with the handler's CPU per request; returns each refused
/// kind's median round-by-round ratio to /health.
async fn refused(s: &mut Session, services: &Services) -> anyhow::Result<(f64, f64)> {
    let limited = handler::start_with(s, services, "handler-limited", &LOW_LIMITS)?;
    let streams = [
        Stream {
            function: "health",
            tag: "health",
            envelope: health_envelope(),
        },
        Stream {
            function: "createUser",
            tag: "createUser-refused",
            envelope: sign_up_envelope("refused@bench.example", REFUSED_SIGN_UP_CLIENT),
        },
        Stream {
            function: "signIn",
            tag: "signIn-refused",
            envelope: sign_in_envelope(
                "nobody@bench.example",
                WRONG_PASSWORD,
                REFUSED_SIGN_IN_CLIENT,
            ),
        },
    ];
    // The first sign-up from the address passes and the first failed sign-in is charged;
    // from then on both are refused.
    expect(s, &limited, "createUser", &streams[1].envelope, 201).await?;
    expect(s, &limited, "signIn", &streams[2].envelope, 401).await?;
    expect_refused(s, &limited, &streams[1..]).await?;
    let results = rounds(s, &limited, &streams).await?;
    // Still refused after the load: every request in between was.
    expect_refused(s, &limited, &streams[1..]).await?;
    let [health, sign_up, sign_in]: [Vec<Measured>; 3] = results
        .try_into()
        .map_err(|_| anyhow::anyhow!("three streams"))?;
    let sign_up_ratios = cpu_ratios(&sign_up, &health)?;
    let sign_in_ratios = cpu_ratios(&sign_in, &health)?;
    let health = measure::median_round(health);
    s.report.row(health.measured.row(
        "limits",
        "health (POST /health), on the handler with low limits".into(),
        health.rounds_note,
    ));
    let sign_up = refused_row(
        s,
        "createUser",
        "one address past LIMIT_SIGN_UPS_PER_ADDRESS",
        sign_up,
        &sign_up_ratios,
    );
    let sign_in = refused_row(
        s,
        "signIn",
        "a wrong password past LIMIT_FAILED_SIGN_INS_PER_ACCOUNT",
        sign_in,
        &sign_in_ratios,
    );
    Ok((sign_up, sign_in))
}

/// Every round of every stream: one list per stream, one entry per round.
async fn rounds(
    s: &Session,
    limited: &Server,
    streams: &[Stream],
) -> anyhow::Result<Vec<Vec<Measured>>> {
    let each = measure::round_length(s);
    let mut results: Vec<Vec<Measured>> = vec![Vec::new(); streams.len()];
    for round in 0..measure::rounds(s) {
        for (i, stream) in streams.iter().enumerate() {
            let body = Body::Fixed(stream.envelope.to_string());
            let spec = s.envelope_spec(
                limited.port,
                stream.function,
                body,
                s.options.connections,
                each,
            );
            let name = format!("{}-limited-{}", stream.tag, round + 1);
            let pid = limited.child.pid();
            results[i].push(measure::load(s, &name, &spec, Some(pid)).await?);
        }
    }
    Ok(results)
}

/// CPU per refused request over CPU per /health, round by round.
fn cpu_ratios(refused: &[Measured], health: &[Measured]) -> anyhow::Result<Vec<f64>> {
    refused
        .iter()
        .zip(health)
        .map(|(refused, health)| {
            match (
                refused.summary.cpu_us_per_request,
                health.summary.cpu_us_per_request,
            ) {
                (Some(refused), Some(health)) => Ok(refused / health),
                _ => bail!("the handler's CPU time could not be read"),
            }
        })
        .collect()
}

/// A refused stream's row (the round with the median rate); returns the median CPU ratio.
fn refused_row(
    s: &mut Session,
    function: &str,
    how: &str,
    rounds: Vec<Measured>,
    ratios: &[f64],
) -> f64 {
    let ratio = probe::median(ratios);
    let median = measure::median_round(rounds);
    let listed: Vec<String> = ratios.iter().map(|r| format!("{r:.2}")).collect();
    let mut note = format!(
        "{ratio:.2} × health's CPU (round by round: {})",
        listed.join(", ")
    );
    if !median.rounds_note.is_empty() {
        note.push_str(&format!("; {}", median.rounds_note));
    }
    s.report.row(median.measured.row(
        "limits",
        format!("{function} refused with 429 ({how})"),
        note,
    ));
    ratio
}

/// Each refused stream's envelope answers 429 with a `Retry-After`.
async fn expect_refused(s: &Session, limited: &Server, streams: &[Stream]) -> anyhow::Result<()> {
    for stream in streams {
        let answer = expect(s, limited, stream.function, &stream.envelope, 429).await?;
        let raw: Value = serde_json::from_slice(&answer.raw)?;
        let headers = &raw["Outputs"]["res"]["headers"];
        let retry_after = headers.as_object().and_then(|h| {
            h.iter()
                .find(|(k, _)| k.eq_ignore_ascii_case("retry-after"))
        });
        if retry_after.is_none() {
            bail!(
                "{}: a 429 without Retry-After: {}",
                stream.function,
                answer.body
            );
        }
    }
    Ok(())
}

/// Invokes `function` and fails unless it answered `want`.
async fn expect(
    s: &Session,
    server: &Server,
    function: &str,
    envelope: &Value,
    want: u64,
) -> anyhow::Result<HttpAnswer> {
    let answer = handler::invoke_http(s, server.port, function, envelope).await?;
    if answer.status != want {
        bail!(
            "{function} answered {} where {want} was expected: {}",
            answer.status,
            answer.body
        );
    }
    Ok(answer)
}
