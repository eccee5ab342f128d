//! The flags of `bench run`, and the phases `--only` may name.

use std::path::PathBuf;

/// A phase of the run, in the order the run takes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Phase {
    Store,
    Http,
    Create,
    /// signIn against raw argon2id, and the CPU of requests refused by a limit.
    Accounts,
    Mail,
    Memory,
    Cluster,
    Dev,
    Readiness,
    Provider,
}

/// One `--handler-env NAME=VALUE`.
#[derive(Debug, Clone)]
pub struct EnvVar {
    pub name: String,
    pub value: String,
}

/// Options of `bench run`.
#[derive(Debug, Clone, clap::Args)]
pub struct Options {
    /// A short run (1 s per phase, fewer starts): checks the benchmark works, not the numbers.
    #[arg(long)]
    pub smoke: bool,
    /// The release handler binary.
    #[arg(long, default_value = "target/release/handler")]
    pub handler: PathBuf,
    /// The function app's root (host.json and the function folders), for `handler dev`.
    #[arg(long, default_value = ".")]
    pub app_root: PathBuf,
    /// Where logs, wrk scripts, results.json and results.md go (emptied first).
    #[arg(long, default_value = "target/bench/last-run")]
    pub out: PathBuf,
    /// Connections of every HTTP, store and mail phase (the fixed concurrency).
    #[arg(long, default_value_t = 16)]
    pub connections: u32,
    /// Connections of the memory phase (concurrent sign-ups).
    #[arg(long, default_value_t = 200)]
    pub signup_connections: u32,
    /// wrk threads.
    #[arg(long, default_value_t = 2)]
    pub threads: u32,
    /// Seconds per phase (default 5, smoke 1); hashing and memory phases take twice as long.
    #[arg(long)]
    pub seconds: Option<u64>,
    /// Starts per readiness case (default 20, smoke 5).
    #[arg(long)]
    pub starts: Option<usize>,
    /// How many argon2id hashes the handler runs at once, for the raw ceiling at the same
    /// parallelism (default: the product's rule, one per core).
    #[arg(long)]
    pub hash_threads: Option<usize>,
    /// Only these phases (comma-separated).
    #[arg(long, value_enum, value_delimiter = ',')]
    pub only: Vec<Phase>,
    /// The provider-limit phase's sink limit, messages per second.
    #[arg(long, default_value_t = 10)]
    pub provider_rate: u32,
    /// Users signed up (one email each) per run of the provider-limit phase (default 150, smoke 30).
    #[arg(long)]
    pub provider_messages: Option<usize>,
    /// The provider-limit phase's maxConcurrentCalls, written into its copy of host.json
    /// (default: host.json's own).
    #[arg(long)]
    pub provider_concurrent_calls: Option<u64>,
    /// Extra environment for the handler and `handler dev` (NAME=VALUE; repeatable), e.g. RUST_LOG.
    #[arg(long = "handler-env", value_parser = parse_env)]
    pub handler_env: Vec<EnvVar>,
}

impl Options {
    /// Whether `phase` runs: every phase when `--only` is not given.
    pub fn wants(&self, phase: Phase) -> bool {
        self.only.is_empty() || self.only.contains(&phase)
    }
}

fn parse_env(text: &str) -> Result<EnvVar, String> {
    text.split_once('=')
        .map(|(name, value)| EnvVar {
            name: name.to_owned(),
            value: value.to_owned(),
        })
        .ok_or_else(|| format!("expected NAME=VALUE, got {text:?}"))
}
