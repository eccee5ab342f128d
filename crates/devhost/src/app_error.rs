//! Why a function app folder cannot be run: one error for host.json, local.settings.json and
//! the function.json files, each message naming the file and what to fix. The errors live here,
//! apart from the readers that raise them, so every reader can use them and none imports
//! another's.

use std::path::PathBuf;

use serde_json::Value;

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

/// A `%NAME%` reference to an app setting that is not set.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "%{0}% names an app setting that is not set (add it to local.settings.json's Values or to \
     the environment)"
)]
pub(crate) struct UnsetSetting(pub String);

/// One thing wrong in a function.json; it names the function (and the binding) or the file.
#[derive(Debug, thiserror::Error)]
pub(crate) enum FunctionProblem {
    #[error("{}: {source}", path.display())]
    Unreadable {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} is not valid JSON: {source}", path.display())]
    InvalidJson {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error(
        "{0}: a function name must start with a letter and hold only letters, digits, '_' and \
         '-' (at most 128)"
    )]
    InvalidName(String),
    #[error("{0}/function.json must be a JSON object")]
    NotAnObject(String),
    #[error("{0}/function.json has no bindings array")]
    NoBindings(String),
    /// A binding without a usable name, known by its position (from 1).
    #[error("{function}: binding #{number} {problem}")]
    UnnamedBinding {
        function: String,
        number: usize,
        problem: BindingProblem,
    },
    #[error("{function}: binding {binding:?} {problem}")]
    Binding {
        function: String,
        binding: String,
        problem: BindingProblem,
    },
    #[error("{0}: function.json has no trigger binding")]
    NoTrigger(String),
}

/// What is wrong with one binding.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum BindingProblem {
    #[error("must be an object")]
    NotAnObject,
    #[error("property {key}: {unset}")]
    Unresolved { key: String, unset: UnsetSetting },
    #[error("({0}) has no name")]
    NoName(String),
    #[error("has no type")]
    NoType,
    #[error("has direction {0:?}: expected \"in\" or \"out\"")]
    Direction(String),
    #[error("is a second trigger: a function has exactly one")]
    SecondTrigger,
    #[error("has an invalid method {0}")]
    InvalidMethod(Value),
    #[error("methods must be an array, found {0}")]
    MethodsNotAnArray(Value),
    #[error("uses a topic subscription: handler dev emulates queues only")]
    TopicTrigger,
    #[error("enables sessions: handler dev does not emulate sessions")]
    Sessions,
    #[error("has no queueName")]
    NoQueueName,
    #[error("sends to a topic: handler dev emulates queues only")]
    TopicOutput,
    #[error("is declared twice")]
    DeclaredTwice,
}
