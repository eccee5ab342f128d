//! What the dev host takes from `host.json`: the route prefix, Service Bus concurrency and lock
//! renewal, `functionTimeout`, the `functions` list, with `AzureFunctionsJobHost__…` overrides.

use std::path::Path;
use std::time::Duration;

use serde_json::{Map, Value};

use super::app_error::AppDirError;
use super::app_settings::AppSettings;
use super::jsonc::{get_path, parse_json};
use super::lookup;

/// Route prefix the host uses when host.json does not set `extensions.http.routePrefix`.
pub(crate) const DEFAULT_ROUTE_PREFIX: &str = "api";
/// Service Bus trigger concurrency when host.json does not set `maxConcurrentCalls`.
pub(crate) const DEFAULT_MAX_CONCURRENT_CALLS: usize = 16;
/// Invocation time limit when host.json has no `functionTimeout` (the Consumption plan's).
pub(crate) const DEFAULT_FUNCTION_TIMEOUT: Duration = Duration::from_secs(5 * 60);
/// How long the Service Bus extension renews a delivery's lock when host.json does not set
/// `extensions.serviceBus.maxAutoLockRenewalDuration` (the extension's default, 5 minutes).
pub(crate) const DEFAULT_MAX_AUTO_LOCK_RENEWAL: Duration = Duration::from_secs(5 * 60);

/// What the dev host takes from host.json.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct HostConfig {
    /// `extensions.http.routePrefix` ("api" when absent, as the real host).
    pub route_prefix: String,
    /// Service Bus trigger deliveries in flight at once, per function.
    pub max_concurrent_calls: usize,
    /// `functionTimeout`; `None` when set to -1 (no limit).
    pub function_timeout: Option<Duration>,
    /// `extensions.serviceBus.maxAutoLockRenewalDuration`: an invocation running longer loses
    /// its message's lock.
    pub max_auto_lock_renewal: Duration,
    /// `functions`: when present, only these functions are loaded.
    pub only_functions: Option<Vec<String>>,
    /// `customHandler.enableForwardingHttpRequest`: not emulated, so warned about.
    pub forwarding: bool,
}

impl HostConfig {
    /// Reads `host.json` under `app_root`, applying `AzureFunctionsJobHost__…` overrides.
    pub(crate) fn load(app_root: &Path, settings: &AppSettings) -> Result<Self, AppDirError> {
        let path = app_root.join("host.json");
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(AppDirError::NoHostJson(app_root.to_owned()));
            }
            Err(source) => return Err(AppDirError::Read { path, source }),
        };
        let mut root = parse_json(&path, &text)?;
        for (keys, value) in settings.host_overrides() {
            set_path(&mut root, &keys, value);
        }
        Self::from_value(&root)
    }

    /// Interprets a host.json document.
    pub(crate) fn from_value(root: &Value) -> Result<Self, AppDirError> {
        if !root.is_object() {
            return Err(problem("must be a JSON object".to_owned()));
        }
        check_version(root)?;
        let service_bus = get_path(root, &["extensions", "serviceBus"]);
        Ok(Self {
            route_prefix: route_prefix(root)?,
            max_concurrent_calls: max_concurrent_calls(service_bus)?,
            function_timeout: function_timeout(root)?,
            max_auto_lock_renewal: max_auto_lock_renewal(service_bus)?,
            only_functions: only_functions(root)?,
            forwarding: get_path(root, &["customHandler", "enableForwardingHttpRequest"])
                .is_some_and(|v| v.as_bool() == Some(true) || v.as_str() == Some("true")),
        })
    }
}

fn problem(what: String) -> AppDirError {
    AppDirError::HostJson(what)
}

/// `version`: only "2.0" (Functions runtime 4) is run.
fn check_version(root: &Value) -> Result<(), AppDirError> {
    match get_path(root, &["version"]) {
        Some(Value::String(v)) if v.trim() == "2.0" => Ok(()),
        other => Err(problem(format!(
            "version must be \"2.0\" (Functions runtime 4), found {}",
            other.map_or("nothing".to_owned(), Value::to_string)
        ))),
    }
}

/// `extensions.http.routePrefix`, without surrounding slashes.
fn route_prefix(root: &Value) -> Result<String, AppDirError> {
    match get_path(root, &["extensions", "http", "routePrefix"]) {
        None | Some(Value::Null) => Ok(DEFAULT_ROUTE_PREFIX.to_owned()),
        Some(Value::String(prefix)) => Ok(prefix.trim().trim_matches('/').to_owned()),
        Some(other) => Err(problem(format!(
            "extensions.http.routePrefix must be a string, found {other}"
        ))),
    }
}

/// `extensions.serviceBus.maxConcurrentCalls` (or the older `messageHandlerOptions` one).
fn max_concurrent_calls(service_bus: Option<&Value>) -> Result<usize, AppDirError> {
    let calls = service_bus.and_then(|sb| {
        get_path(sb, &["maxConcurrentCalls"])
            .or_else(|| get_path(sb, &["messageHandlerOptions", "maxConcurrentCalls"]))
    });
    match calls {
        None | Some(Value::Null) => Ok(DEFAULT_MAX_CONCURRENT_CALLS),
        Some(value) => match as_u64(value) {
            Some(n) if n >= 1 => Ok(usize::try_from(n).unwrap_or(usize::MAX)),
            _ => Err(problem(format!(
                "extensions.serviceBus.maxConcurrentCalls must be a whole number >= 1, found {value}"
            ))),
        },
    }
}

/// `functionTimeout`; `None` for "-1" (no limit).
fn function_timeout(root: &Value) -> Result<Option<Duration>, AppDirError> {
    match get_path(root, &["functionTimeout"]) {
        None | Some(Value::Null) => Ok(Some(DEFAULT_FUNCTION_TIMEOUT)),
        Some(Value::String(text)) => parse_timespan(text).ok_or_else(|| {
            problem(format!(
                "functionTimeout {text:?} is not a time span such as \"00:05:00\" or \"-1\""
            ))
        }),
        Some(other) => Err(problem(format!(
            "functionTimeout must be a string such as \"00:05:00\", found {other}"
        ))),
    }
}

/// `extensions.serviceBus.maxAutoLockRenewalDuration` (or the older `maxAutoRenewDuration`).
fn max_auto_lock_renewal(service_bus: Option<&Value>) -> Result<Duration, AppDirError> {
    let renewal = service_bus.and_then(|sb| {
        get_path(sb, &["maxAutoLockRenewalDuration"])
            .or_else(|| get_path(sb, &["messageHandlerOptions", "maxAutoRenewDuration"]))
    });
    match renewal {
        None | Some(Value::Null) => Ok(DEFAULT_MAX_AUTO_LOCK_RENEWAL),
        Some(Value::String(text)) => match parse_timespan(text) {
            Some(Some(limit)) => Ok(limit),
            _ => Err(problem(format!(
                "extensions.serviceBus.maxAutoLockRenewalDuration {text:?} is not a time \
                 span such as \"00:05:00\""
            ))),
        },
        Some(other) => Err(problem(format!(
            "extensions.serviceBus.maxAutoLockRenewalDuration must be a string such as \
             \"00:05:00\", found {other}"
        ))),
    }
}

/// `functions`: when present, the only functions loaded.
fn only_functions(root: &Value) -> Result<Option<Vec<String>>, AppDirError> {
    match get_path(root, &["functions"]) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Array(items)) => items
            .iter()
            .map(|i| {
                i.as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| problem("functions must list names".to_owned()))
            })
            .collect::<Result<_, _>>()
            .map(Some),
        Some(_) => Err(problem("functions must be an array of names".to_owned())),
    }
}

/// Numbers or numeric strings (configuration overrides arrive as strings).
fn as_u64(value: &Value) -> Option<u64> {
    match value {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// .NET `TimeSpan` text: `[d.]hh:mm:ss[.fff]`; `-1` means no limit (`Some(None)`).
fn parse_timespan(text: &str) -> Option<Option<Duration>> {
    let text = text.trim();
    if text == "-1" {
        return Some(None);
    }
    let (days, clock) = match text.split_once('.') {
        Some((d, rest)) if !d.contains(':') => (d.parse::<u64>().ok()?, rest),
        _ => (0, text),
    };
    let mut parts = clock.split(':');
    let hours: u64 = parts.next()?.parse().ok()?;
    let minutes: u64 = parts.next()?.parse().ok()?;
    let seconds: f64 = parts.next()?.parse().ok()?;
    if parts.next().is_some() || minutes >= 60 || !(0.0..60.0).contains(&seconds) {
        return None;
    }
    let total = (days * 24 + hours) as f64 * 3600.0 + minutes as f64 * 60.0 + seconds;
    Some(Some(Duration::from_secs_f64(total)))
}

/// Sets `root.a.b.c = value`, matching existing keys case-insensitively and creating objects.
fn set_path(root: &mut Value, keys: &[String], value: String) {
    let Some((last, parents)) = keys.split_last() else {
        return;
    };
    let mut current = root;
    for key in parents {
        let Value::Object(map) = current else {
            return;
        };
        let existing = lookup::existing_key(map.keys(), key).cloned();
        let key = existing.unwrap_or_else(|| key.clone());
        let entry = map.entry(key).or_insert_with(|| Value::Object(Map::new()));
        if !entry.is_object() {
            *entry = Value::Object(Map::new());
        }
        current = entry;
    }
    if let Value::Object(map) = current {
        let existing = lookup::existing_key(map.keys(), last).cloned();
        map.insert(
            existing.unwrap_or_else(|| last.clone()),
            Value::String(value),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::app_settings::tests::settings;
    use serde_json::json;

    #[test]
    fn host_json_defaults_follow_the_real_host() {
        let host = HostConfig::from_value(&json!({"version": "2.0"})).unwrap();
        assert_eq!(host.route_prefix, "api");
        assert_eq!(host.max_concurrent_calls, 16);
        assert_eq!(host.function_timeout, Some(DEFAULT_FUNCTION_TIMEOUT));
        assert_eq!(host.max_auto_lock_renewal, DEFAULT_MAX_AUTO_LOCK_RENEWAL);
    }

    #[test]
    fn host_json_route_prefix_and_concurrency_are_read() {
        let host = HostConfig::from_value(&json!({
            "version": "2.0",
            "functionTimeout": "00:00:30",
            "extensions": {"http": {"routePrefix": ""}, "serviceBus": {"maxConcurrentCalls": 4, "maxAutoLockRenewalDuration": "00:00:02"}}
        }))
        .unwrap();
        assert_eq!(host.route_prefix, "");
        assert_eq!(host.max_concurrent_calls, 4);
        assert_eq!(host.function_timeout, Some(Duration::from_secs(30)));
        assert_eq!(host.max_auto_lock_renewal, Duration::from_secs(2));
        let old = HostConfig::from_value(&json!({
            "version": "2.0",
            "extensions": {"serviceBus": {"messageHandlerOptions": {"maxConcurrentCalls": 2}}}
        }))
        .unwrap();
        assert_eq!(old.max_concurrent_calls, 2);
    }

    #[test]
    fn host_json_without_version_2_is_refused() {
        assert!(HostConfig::from_value(&json!({})).is_err());
        assert!(HostConfig::from_value(&json!({"version": "1.0"})).is_err());
    }

    #[test]
    fn host_overrides_from_settings_apply_to_host_json() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("host.json"),
            r#"{"version": "2.0", "extensions": {"http": {"routePrefix": "api"}}}"#,
        )
        .unwrap();
        let s = settings(
            &[],
            &[
                ("AzureFunctionsJobHost__extensions__http__routePrefix", "v1"),
                (
                    "AzureFunctionsJobHost__extensions__serviceBus__maxConcurrentCalls",
                    "3",
                ),
            ],
        );
        let host = HostConfig::load(dir.path(), &s).unwrap();
        assert_eq!(host.route_prefix, "v1");
        assert_eq!(host.max_concurrent_calls, 3);
    }

    #[test]
    fn timespans_parse_like_dotnet() {
        assert_eq!(
            parse_timespan("00:05:00"),
            Some(Some(Duration::from_secs(300)))
        );
        assert_eq!(
            parse_timespan("1.00:00:01"),
            Some(Some(Duration::from_secs(86401)))
        );
        assert_eq!(parse_timespan("-1"), Some(None));
        assert_eq!(parse_timespan("five"), None);
    }
}
