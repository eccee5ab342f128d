//! Reading a function app folder the way the Functions host does: every `*/function.json`
//! (through `function_json`), skipping those host.json or an `AzureWebJobs.<name>.Disabled`
//! setting turn off, and reporting every problem at once.

use std::path::{Path, PathBuf};

use super::app_error::{AppDirError, FunctionProblem};
use super::app_settings::AppSettings;
use super::function_json::{FunctionDef, OutputKind, Parsed, Trigger, parse_function};
use super::host_json::HostConfig;
use super::jsonc;
use super::lookup;

/// Every loadable function, plus the ones skipped and why (for the banner).
#[derive(Debug, Clone, Default)]
pub(crate) struct FunctionSet {
    pub functions: Vec<FunctionDef>,
    pub skipped: Vec<(String, String)>,
}

/// Reads every `*/function.json` under `app_root`; reports all problems at once.
pub(crate) fn load_functions(
    app_root: &Path,
    host: &HostConfig,
    settings: &AppSettings,
) -> Result<FunctionSet, AppDirError> {
    let entries = std::fs::read_dir(app_root).map_err(|source| AppDirError::Read {
        path: app_root.to_owned(),
        source,
    })?;
    let mut folders: Vec<(String, PathBuf)> = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|source| AppDirError::Read {
            path: app_root.to_owned(),
            source,
        })?;
        let path = entry.path().join("function.json");
        if path.is_file() {
            folders.push((entry.file_name().to_string_lossy().into_owned(), path));
        }
    }
    folders.sort();
    let mut set = FunctionSet::default();
    let mut problems = Vec::new();
    for (name, path) in folders {
        if let Some(only) = &host.only_functions
            && !lookup::contains(only, &name)
        {
            set.skipped
                .push((name, "not listed in host.json's functions".to_owned()));
            continue;
        }
        let disabled_setting = format!("AzureWebJobs.{name}.Disabled");
        if settings
            .get(&disabled_setting)
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("true") || v.trim() == "1")
        {
            set.skipped
                .push((name, format!("disabled by the {disabled_setting} setting")));
            continue;
        }
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(source) => {
                problems.push(FunctionProblem::Unreadable { path, source });
                continue;
            }
        };
        let value = match jsonc::parse(&text) {
            Ok(value) => value,
            Err(source) => {
                problems.push(FunctionProblem::InvalidJson { path, source });
                continue;
            }
        };
        match parse_function(&name, &value, settings) {
            Ok(Parsed::Function(def)) => set.functions.push(def),
            Ok(Parsed::Skipped(why)) => set.skipped.push((name, why)),
            Err(mut errors) => problems.append(&mut errors),
        }
    }
    if problems.is_empty() {
        Ok(set)
    } else {
        Err(AppDirError::Functions(problems))
    }
}

/// Queues named by triggers and outputs.
pub(crate) fn queue_names(functions: &[FunctionDef]) -> Vec<String> {
    let mut names = Vec::new();
    for function in functions {
        if let Trigger::ServiceBus { queue, .. } = &function.trigger {
            names.push(queue.clone());
        }
        for output in &function.outputs {
            if let OutputKind::ServiceBus { queue } = &output.kind {
                names.push(queue.clone());
            }
        }
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::app_settings::tests::settings;
    use serde_json::json;

    #[test]
    fn functions_are_loaded_from_the_folders_and_disabled_ones_skipped() {
        let dir = tempfile::tempdir().unwrap();
        for (name, doc) in [
            (
                "health",
                json!({"bindings": [{"type": "httpTrigger", "direction": "in", "name": "req"}]}),
            ),
            (
                "off",
                json!({"disabled": true, "bindings": [{"type": "httpTrigger", "direction": "in", "name": "req"}]}),
            ),
        ] {
            std::fs::create_dir(dir.path().join(name)).unwrap();
            std::fs::write(dir.path().join(name).join("function.json"), doc.to_string()).unwrap();
        }
        std::fs::create_dir(dir.path().join("not-a-function")).unwrap();
        let host = HostConfig::from_value(&json!({"version": "2.0"})).unwrap();
        let set = load_functions(dir.path(), &host, &settings(&[], &[])).unwrap();
        assert_eq!(set.functions.len(), 1);
        assert_eq!(set.functions[0].name, "health");
        assert_eq!(set.skipped[0].0, "off");
    }
}
