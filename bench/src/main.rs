//! `bench`: measures the onboarding handler on this machine and, in the same run, the ceilings it
//! is held to (see docs/BENCHMARKS.md). `scripts/bench` builds both and calls `bench run`.
//!
//! Layout: [`run`] is the run's short sequence: it starts the shared servers ([`session`]), the
//! handler ([`handler`]) and the [`preflight`], calls each phase in [`phase`] (store, http,
//! create, accounts, mail, memory, dev, readiness, provider: one module each, returning a named
//! result whose `check` adds its targets) and checks them. [`options`] holds the flags and the
//! [`options::Phase`] `--only` takes; [`measure`] the shared measuring (wrk loads with CPU and
//! memory, rounds, medians, the probe's row); [`fixtures`] the run's keys and envelopes;
//! [`machine`] the table's header. [`wrk`] drives HTTP load; [`envelope`] builds the host's
//! invocation payloads; [`ceilings`] holds the warp (among them the like-for-like sendOnboarding
//! one: warp, Redis and the product's SMTP client), Redis and argon2id ceilings; [`mail`] the
//! SMTP ones; [`sink`] is the SMTP server; [`probe`] times single requests and process starts;
//! [`procs`] starts and watches processes; [`provider`] runs sendOnboarding through `handler dev`
//! against a rate-limited sink; [`table`] holds the rows and targets, which [`report`] prints.

mod ceiling_redis;
mod ceilings;
mod envelope;
mod fixtures;
mod handler;
mod machine;
mod mail;
mod measure;
mod options;
mod phase;
mod preflight;
mod probe;
mod procs;
mod provider;
mod report;
mod run;
mod session;
mod sink;
mod table;
mod wrk;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    about = "Benchmark of the onboarding handler, with its ceilings measured in the same run"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run every phase and print the table (exit 1 when a target is missed, with --strict).
    Run {
        #[command(flatten)]
        options: options::Options,
        /// Exit with 1 when a target is missed.
        #[arg(long)]
        strict: bool,
    },
    /// Internal: the warp ceiling server.
    #[command(hide = true)]
    ServeCeiling(ceilings::CeilingOptions),
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::ServeCeiling(options) => match ceilings::serve_ceiling(options) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("serve-ceiling: {e:#}");
                ExitCode::FAILURE
            }
        },
        Command::Run { options, strict } => {
            let runtime = match tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
            {
                Ok(runtime) => runtime,
                Err(e) => {
                    eprintln!("bench: {e}");
                    return ExitCode::FAILURE;
                }
            };
            let out = options.out.clone();
            match runtime.block_on(run::run(options)) {
                Ok(report) => {
                    println!("{}", report.markdown());
                    eprintln!(
                        "bench: logs, wrk scripts and results.{{md,json}} in {}",
                        out.display()
                    );
                    if strict && report.checks.iter().any(|c| !c.pass) {
                        ExitCode::FAILURE
                    } else {
                        ExitCode::SUCCESS
                    }
                }
                Err(e) => {
                    eprintln!("bench: {e:#}");
                    eprintln!("bench: logs in {}", out.join("logs").display());
                    ExitCode::FAILURE
                }
            }
        }
    }
}
