//! Peak memory under many concurrent sign-ups (`--signup-connections`, 200 by default).

use crate::fixtures::sign_up_template;
use crate::measure::{self, kib_to_mib};
use crate::procs;
use crate::report::Report;
use crate::session::{Server, Session};

/// The handler's peak RSS while the sign-ups ran.
pub struct MemoryResult {
    pub connections: u32,
    pub peak_rss_mib: f64,
}

impl MemoryResult {
    pub fn check(&self, r: &mut Report) {
        r.at_most(
            &format!("peak RSS, {} concurrent sign-ups", self.connections),
            self.peak_rss_mib,
            150.0,
            "MiB",
        );
    }
}

pub async fn run(s: &mut Session, handler: &Server) -> anyhow::Result<MemoryResult> {
    let n = s.options.signup_connections;
    let spec = s.envelope_spec(handler.port, "createUser", sign_up_template("m"), n, s.long);
    let mut measured = measure::load(
        s,
        "createUser-200-handler",
        &spec,
        Some(handler.child.pid()),
    )
    .await?;
    let peak = measured.peak_rss_mib.unwrap_or(f64::NAN);
    measured.peak_rss_mib = Some(peak);
    let after = procs::rss(handler.child.pid())?;
    s.report.row(measured.row(
        "memory",
        format!("createUser, {n} concurrent sign-ups"),
        format!("RSS after: {:.1} MiB", kib_to_mib(after.current_kib)),
    ));
    Ok(MemoryResult {
        connections: n,
        peak_rss_mib: peak,
    })
}
