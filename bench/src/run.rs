//! One benchmark run: start the servers, measure the ceilings and the product side by side, and
//! check the targets. Phases that are compared run next to each other, so a machine that gets
//! busier during the run skews a ratio as little as possible.

use std::time::Instant;

use crate::handler;
use crate::measure::MIB;
use crate::options::{Options, Phase};
use crate::phase::accounts::{self, AccountsResult};
use crate::phase::cluster;
use crate::phase::create::{self, CreateResult};
use crate::phase::dev::{self, DevResult};
use crate::phase::http::{self, HttpResult};
use crate::phase::mail::{self, MailResult};
use crate::phase::memory::{self, MemoryResult};
use crate::phase::provider::{self, ProviderResult};
use crate::phase::readiness::{self, Readiness};
use crate::phase::store;
use crate::preflight;
use crate::procs;
use crate::report::Report;
use crate::session::{Services, Session};
use crate::table::Row;

/// What the phases found, for the targets (`None`: the phase did not run).
struct Findings {
    idle_rss_mib: f64,
    http: Option<HttpResult>,
    create: Option<CreateResult>,
    accounts: Option<AccountsResult>,
    mail: Option<MailResult>,
    memory: Option<MemoryResult>,
    /// health and root against the 3+3 cluster.
    cluster: Option<HttpResult>,
    dev: Option<DevResult>,
    readiness: Option<Readiness>,
    provider: Option<ProviderResult>,
    binary_mib: f64,
}

pub async fn run(options: Options) -> anyhow::Result<Report> {
    let started = Instant::now();
    let mut s = Session::new(options)?;
    s.describe_machine("load average at start");
    let services = Services::start(&s)?;
    let findings = measure(&mut s, &services).await?;
    check_targets(&mut s.report, &findings);
    s.describe_machine("load average at end");
    s.report.machine.push((
        "run time".into(),
        format!("{:.0} s", started.elapsed().as_secs_f64()),
    ));
    std::fs::write(s.dir.join("results.md"), s.report.markdown())?;
    std::fs::write(
        s.dir.join("results.json"),
        serde_json::to_string_pretty(&s.report)?,
    )?;
    Ok(s.report)
}

/// Every phase `--only` asks for, in order: those against the handler the host would start,
/// then `handler dev`, readiness and the provider limit, which start their own.
async fn measure(s: &mut Session, services: &Services) -> anyhow::Result<Findings> {
    let mut handler = handler::start(s, services)?;
    let idle_rss_mib = handler::idle_rss(s, &handler)?;
    let pre = preflight::run(s, &handler, services).await?;
    if s.wants(Phase::Store) {
        store::run(s, services, &pre).await?;
    }
    let http = if s.wants(Phase::Http) {
        Some(http::run(s, &handler, services, &pre).await?)
    } else {
        None
    };
    let create = if s.wants(Phase::Create) {
        Some(create::run(s, &handler).await?)
    } else {
        None
    };
    let accounts = if s.wants(Phase::Accounts) {
        Some(accounts::run(s, &handler, services).await?)
    } else {
        None
    };
    let mail = if s.wants(Phase::Mail) {
        Some(mail::run(s, &handler, services, &pre).await?)
    } else {
        None
    };
    let memory = if s.wants(Phase::Memory) {
        Some(memory::run(s, &handler).await?)
    } else {
        None
    };
    handler.child.stop();
    let cluster = if s.wants(Phase::Cluster) {
        Some(cluster::run(s, services).await?)
    } else {
        None
    };
    let dev = if s.wants(Phase::Dev) {
        Some(dev::run(s, services, &pre).await?)
    } else {
        None
    };
    let readiness = if s.wants(Phase::Readiness) {
        Some(readiness::run(s, services)?)
    } else {
        None
    };
    let provider = if s.wants(Phase::Provider) {
        Some(provider::run(s, services).await?)
    } else {
        None
    };
    Ok(Findings {
        idle_rss_mib,
        http,
        create,
        accounts,
        mail,
        memory,
        cluster,
        dev,
        readiness,
        provider,
        binary_mib: binary_row(s, services)?,
    })
}

/// The stripped release binary's size (MiB), as a row.
fn binary_row(s: &mut Session, services: &Services) -> anyhow::Result<f64> {
    let binary_mib = procs::file_size(&services.handler_bin)? as f64 / MIB;
    s.report.row(Row {
        group: "binary",
        name: format!("{} (stripped release)", s.options.handler.display()),
        rate: None,
        unit: "",
        p50_ms: None,
        p99_ms: None,
        peak_rss_mib: None,
        note: format!("{binary_mib:.2} MiB"),
    });
    Ok(binary_mib)
}

/// Every target, in the table's order.
fn check_targets(r: &mut Report, f: &Findings) {
    if let Some(http) = &f.http {
        http.check(r);
    }
    if let Some(cluster) = &f.cluster {
        cluster.check(r);
    }
    if let Some(create) = &f.create {
        create.check(r);
    }
    if let Some(accounts) = &f.accounts {
        accounts.check(r);
    }
    if let Some(dev) = &f.dev {
        dev.check(r);
    }
    if let Some(mail) = &f.mail {
        mail.check(r);
    }
    if let Some(provider) = &f.provider {
        provider.check(r);
    }
    if let Some(readiness) = &f.readiness {
        readiness.check(r);
    }
    r.at_most("idle RSS after readiness", f.idle_rss_mib, 12.0, "MiB");
    if let Some(memory) = &f.memory {
        memory.check(r);
    }
    r.at_most("stripped release binary", f.binary_mib, 10.0, "MiB");
}
