//! The store ceiling: redis-benchmark at the phases' concurrency, with values the size of the
//! preflight user's record.

use crate::ceilings;
use crate::preflight::Preflight;
use crate::session::{Services, Session};
use crate::table::Row;

/// The PING_MBULK and GET rows (a ceiling only: no target of its own).
pub async fn run(s: &mut Session, services: &Services, pre: &Preflight) -> anyhow::Result<()> {
    let requests = if s.options.smoke { 20_000 } else { 200_000 };
    let size = pre.user_record.to_string().len();
    let connections = s.options.connections;
    for result in
        ceilings::redis_benchmark(services.redis_port, connections, requests, size).await?
    {
        if !matches!(result.test.as_str(), "PING_MBULK" | "GET") {
            continue;
        }
        s.report.row(Row {
            group: "store",
            name: format!(
                "redis-benchmark {} (-c {connections}, -d {size})",
                result.test
            ),
            rate: Some(result.rps),
            unit: "req/s",
            p50_ms: Some(result.p50_ms),
            p99_ms: Some(result.p99_ms),
            peak_rss_mib: None,
            note: "ceiling".into(),
        });
    }
    Ok(())
}
