//! Why a function app folder cannot be run: one error for host.json, local.settings.json and
//! the function.json files, each message naming the file and what to fix.

use std::path::PathBuf;

use super::function_json::FunctionProblem;

/// Why the app folder cannot be run; every message names the file and what to fix.
#[derive(Debug, thiserror::Error)]
pub(crate) enum AppDirError {
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} is not valid JSON: {source}", path.display())]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error(
        "no host.json in {}: run from the function app's root or pass --app-root",
        .0.display()
    )]
    NoHostJson(PathBuf),
    #[error("host.json: {0}")]
    HostJson(String),
    #[error("local.settings.json: {0}")]
    LocalSettings(String),
    #[error("{} problem(s) in the function.json files:{}", .0.len(), bullet_list(.0))]
    Functions(Vec<FunctionProblem>),
}

fn bullet_list(items: &[FunctionProblem]) -> String {
    items.iter().map(|p| format!("\n  - {p}")).collect()
}
