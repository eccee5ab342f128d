//! Reading a function app folder the way the Functions host does: `host.json`, every
//! `*/function.json` and `local.settings.json`, with app settings (real environment variables
//! first) resolving `%NAME%` in binding properties and `AzureFunctionsJobHost__…` overrides.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Map, Value};

/// Route prefix the host uses when host.json does not set `extensions.http.routePrefix`.
pub const DEFAULT_ROUTE_PREFIX: &str = "api";
/// Service Bus trigger concurrency when host.json does not set `maxConcurrentCalls`.
pub const DEFAULT_MAX_CONCURRENT_CALLS: usize = 16;
/// Invocation time limit when host.json has no `functionTimeout` (the Consumption plan's).
pub const DEFAULT_FUNCTION_TIMEOUT: Duration = Duration::from_secs(5 * 60);
/// How long the Service Bus extension renews a delivery's lock when host.json does not set
/// `extensions.serviceBus.maxAutoLockRenewalDuration` (the extension's default, 5 minutes).
pub const DEFAULT_MAX_AUTO_LOCK_RENEWAL: Duration = Duration::from_secs(5 * 60);
/// App settings with this prefix override host.json paths (`__` separates levels), as on Azure.
const HOST_OVERRIDE_PREFIX: &str = "AzureFunctionsJobHost__";

/// Why the app folder cannot be run; every message names the file and what to fix.
#[derive(Debug, thiserror::Error)]
pub enum AppDirError {
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
    Functions(Vec<String>),
}

fn bullet_list(items: &[String]) -> String {
    items.iter().map(|p| format!("\n  - {p}")).collect()
}

/// Looks up one environment variable (the real environment, or a test's).
type EnvLookup = Box<dyn Fn(&str) -> Option<String> + Send + Sync>;

/// App settings as the host sees them: real environment variables win over
/// `local.settings.json`'s `Values`.
pub struct AppSettings {
    env: EnvLookup,
    /// Names of environment variables that override host.json (`AzureFunctionsJobHost__…`).
    env_host_overrides: Vec<String>,
    local: BTreeMap<String, String>,
    local_file: Option<PathBuf>,
}

impl std::fmt::Debug for AppSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Values may be secrets: only the names are shown.
        f.debug_struct("AppSettings")
            .field("local_names", &self.local.keys().collect::<Vec<_>>())
            .field("local_file", &self.local_file)
            .finish()
    }
}

impl AppSettings {
    /// Reads `local.settings.json` under `app_root` when present, over the process environment.
    pub fn load(app_root: &Path) -> Result<Self, AppDirError> {
        let mut settings = Self::load_with_env(app_root, |name| std::env::var(name).ok())?;
        settings.env_host_overrides = std::env::vars()
            .map(|(name, _)| name)
            .filter(|name| is_host_override(name))
            .collect();
        Ok(settings)
    }

    /// Like [`AppSettings::load`] with another environment (tests).
    pub fn load_with_env(
        app_root: &Path,
        env: impl Fn(&str) -> Option<String> + Send + Sync + 'static,
    ) -> Result<Self, AppDirError> {
        let path = app_root.join("local.settings.json");
        let (local, local_file) = match std::fs::read_to_string(&path) {
            Ok(text) => (parse_local_settings(&path, &text)?, Some(path)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => (BTreeMap::new(), None),
            Err(source) => return Err(AppDirError::Read { path, source }),
        };
        Ok(Self {
            env: Box::new(env),
            env_host_overrides: Vec::new(),
            local,
            local_file,
        })
    }

    /// Builds settings from explicit parts (tests).
    pub fn from_parts(
        env: impl Fn(&str) -> Option<String> + Send + Sync + 'static,
        local: BTreeMap<String, String>,
    ) -> Self {
        Self {
            env: Box::new(env),
            env_host_overrides: Vec::new(),
            local,
            local_file: None,
        }
    }

    /// One setting: the environment variable if set, else `Values` (whose names the host
    /// matches case-insensitively).
    pub fn get(&self, name: &str) -> Option<String> {
        (self.env)(name).or_else(|| {
            self.local.get(name).cloned().or_else(|| {
                self.local
                    .iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case(name))
                    .map(|(_, v)| v.clone())
            })
        })
    }

    /// Every name in `Values` with its effective value (the environment's when it sets it too):
    /// with the process environment, what a handler process gets as its environment.
    pub fn local_values(&self) -> Vec<(String, String)> {
        self.local
            .keys()
            .filter_map(|name| Some((name.clone(), self.get(name)?)))
            .collect()
    }

    /// Where `Values` came from, if a file was read, and how many there were.
    pub fn local_file(&self) -> Option<(&Path, usize)> {
        self.local_file
            .as_deref()
            .map(|path| (path, self.local.len()))
    }

    /// `AzureFunctionsJobHost__…` settings from both sources (environment wins), for host.json.
    fn host_overrides(&self) -> Vec<(Vec<String>, String)> {
        let mut names: Vec<String> = self
            .env_host_overrides
            .iter()
            .chain(self.local.keys())
            .filter(|k| is_host_override(k))
            .cloned()
            .collect();
        names.sort();
        names.dedup();
        names
            .into_iter()
            .filter_map(|name| {
                let value = self.get(&name)?;
                let path = name[HOST_OVERRIDE_PREFIX.len()..]
                    .split("__")
                    .map(str::to_owned)
                    .collect();
                Some((path, value))
            })
            .collect()
    }

    /// Replaces every `%NAME%` in `text` with its setting; `%%` stays a literal `%`.
    pub fn resolve(&self, text: &str) -> Result<String, String> {
        let mut out = String::with_capacity(text.len());
        let mut rest = text;
        while let Some(start) = rest.find('%') {
            out.push_str(&rest[..start]);
            let after = &rest[start + 1..];
            let Some(end) = after.find('%') else {
                // A lone '%' is literal text, as in the host.
                out.push_str(&rest[start..]);
                return Ok(out);
            };
            let name = &after[..end];
            if name.is_empty() {
                out.push('%');
            } else {
                let value = self.get(name).ok_or_else(|| {
                    format!(
                        "%{name}% names an app setting that is not set (add it to \
                         local.settings.json's Values or to the environment)"
                    )
                })?;
                out.push_str(&value);
            }
            rest = &after[end + 1..];
        }
        out.push_str(rest);
        Ok(out)
    }
}

fn is_host_override(name: &str) -> bool {
    name.len() > HOST_OVERRIDE_PREFIX.len()
        && name.is_char_boundary(HOST_OVERRIDE_PREFIX.len())
        && name[..HOST_OVERRIDE_PREFIX.len()].eq_ignore_ascii_case(HOST_OVERRIDE_PREFIX)
}

fn parse_local_settings(path: &Path, text: &str) -> Result<BTreeMap<String, String>, AppDirError> {
    let root = parse_json(path, text)?;
    let problem = |p: String| AppDirError::LocalSettings(p);
    let Value::Object(root) = root else {
        return Err(problem("must be a JSON object".to_owned()));
    };
    if get_ci(&root, "IsEncrypted").and_then(Value::as_bool) == Some(true) {
        return Err(problem(
            "IsEncrypted is true: decrypt it first (`func settings decrypt`)".to_owned(),
        ));
    }
    let mut values = BTreeMap::new();
    match get_ci(&root, "Values") {
        None | Some(Value::Null) => {}
        Some(Value::Object(map)) => {
            for (name, value) in map {
                let text = match value {
                    Value::String(s) => s.clone(),
                    Value::Number(n) => n.to_string(),
                    Value::Bool(b) => b.to_string(),
                    Value::Null => continue,
                    _ => {
                        return Err(problem(format!(
                            "Values.{name} must be a string, number or boolean"
                        )));
                    }
                };
                values.insert(name.clone(), text);
            }
        }
        Some(_) => return Err(problem("Values must be an object".to_owned())),
    }
    Ok(values)
}

/// Parses JSON the host's lenient way: `//` and `/* */` comments are allowed.
fn parse_json(path: &Path, text: &str) -> Result<Value, AppDirError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    serde_json::from_str(&strip_comments(text)).map_err(|source| AppDirError::Json {
        path: path.to_owned(),
        source,
    })
}

/// Removes JSON comments outside strings (blanking them keeps error positions right).
fn strip_comments(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    let mut in_string = false;
    while let Some(c) = chars.next() {
        if in_string {
            out.push(c);
            if c == '\\' {
                if let Some(next) = chars.next() {
                    out.push(next);
                }
            } else if c == '"' {
                in_string = false;
            }
            continue;
        }
        match (c, chars.peek()) {
            ('"', _) => {
                in_string = true;
                out.push(c);
            }
            ('/', Some('/')) => {
                for c in chars.by_ref() {
                    if c == '\n' {
                        out.push('\n');
                        break;
                    }
                    out.push(' ');
                }
            }
            ('/', Some('*')) => {
                chars.next();
                out.push_str("  ");
                let mut prev = ' ';
                for c in chars.by_ref() {
                    out.push(if c == '\n' { '\n' } else { ' ' });
                    if prev == '*' && c == '/' {
                        break;
                    }
                    prev = c;
                }
            }
            _ => out.push(c),
        }
    }
    out
}

/// A key of a JSON object, matched case-insensitively as .NET configuration does.
fn get_ci<'a>(map: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    map.get(key).or_else(|| {
        map.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v)
    })
}

fn get_path<'a>(root: &'a Value, path: &[&str]) -> Option<&'a Value> {
    path.iter().try_fold(root, |value, key| match value {
        Value::Object(map) => get_ci(map, key),
        _ => None,
    })
}

/// What the dev host takes from host.json.
#[derive(Debug, Clone, PartialEq)]
pub struct HostConfig {
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
    pub fn load(app_root: &Path, settings: &AppSettings) -> Result<Self, AppDirError> {
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
    pub fn from_value(root: &Value) -> Result<Self, AppDirError> {
        let problem = |p: String| AppDirError::HostJson(p);
        if !root.is_object() {
            return Err(problem("must be a JSON object".to_owned()));
        }
        match get_path(root, &["version"]) {
            Some(Value::String(v)) if v.trim() == "2.0" => {}
            other => {
                return Err(problem(format!(
                    "version must be \"2.0\" (Functions runtime 4), found {}",
                    other.map_or("nothing".to_owned(), Value::to_string)
                )));
            }
        }
        let route_prefix = match get_path(root, &["extensions", "http", "routePrefix"]) {
            None | Some(Value::Null) => DEFAULT_ROUTE_PREFIX.to_owned(),
            Some(Value::String(prefix)) => prefix.trim().trim_matches('/').to_owned(),
            Some(other) => {
                return Err(problem(format!(
                    "extensions.http.routePrefix must be a string, found {other}"
                )));
            }
        };
        let service_bus = get_path(root, &["extensions", "serviceBus"]);
        let calls = service_bus.and_then(|sb| {
            get_path(sb, &["maxConcurrentCalls"])
                .or_else(|| get_path(sb, &["messageHandlerOptions", "maxConcurrentCalls"]))
        });
        let max_concurrent_calls = match calls {
            None | Some(Value::Null) => DEFAULT_MAX_CONCURRENT_CALLS,
            Some(value) => match as_u64(value) {
                Some(n) if n >= 1 => usize::try_from(n).unwrap_or(usize::MAX),
                _ => {
                    return Err(problem(format!(
                        "extensions.serviceBus.maxConcurrentCalls must be a whole number >= 1, found {value}"
                    )));
                }
            },
        };
        let function_timeout = match get_path(root, &["functionTimeout"]) {
            None | Some(Value::Null) => Some(DEFAULT_FUNCTION_TIMEOUT),
            Some(Value::String(text)) => parse_timespan(text).ok_or_else(|| {
                problem(format!(
                    "functionTimeout {text:?} is not a time span such as \"00:05:00\" or \"-1\""
                ))
            })?,
            Some(other) => {
                return Err(problem(format!(
                    "functionTimeout must be a string such as \"00:05:00\", found {other}"
                )));
            }
        };
        let renewal = service_bus.and_then(|sb| {
            get_path(sb, &["maxAutoLockRenewalDuration"])
                .or_else(|| get_path(sb, &["messageHandlerOptions", "maxAutoRenewDuration"]))
        });
        let max_auto_lock_renewal = match renewal {
            None | Some(Value::Null) => DEFAULT_MAX_AUTO_LOCK_RENEWAL,
            Some(Value::String(text)) => match parse_timespan(text) {
                Some(Some(limit)) => limit,
                _ => {
                    return Err(problem(format!(
                        "extensions.serviceBus.maxAutoLockRenewalDuration {text:?} is not a time \
                         span such as \"00:05:00\""
                    )));
                }
            },
            Some(other) => {
                return Err(problem(format!(
                    "extensions.serviceBus.maxAutoLockRenewalDuration must be a string such as \
                     \"00:05:00\", found {other}"
                )));
            }
        };
        let only_functions = match get_path(root, &["functions"]) {
            None | Some(Value::Null) => None,
            Some(Value::Array(items)) => Some(
                items
                    .iter()
                    .map(|i| {
                        i.as_str()
                            .map(str::to_owned)
                            .ok_or_else(|| problem("functions must list names".to_owned()))
                    })
                    .collect::<Result<_, _>>()?,
            ),
            Some(_) => return Err(problem("functions must be an array of names".to_owned())),
        };
        let forwarding = get_path(root, &["customHandler", "enableForwardingHttpRequest"])
            .is_some_and(|v| v.as_bool() == Some(true) || v.as_str() == Some("true"));
        Ok(Self {
            route_prefix,
            max_concurrent_calls,
            function_timeout,
            max_auto_lock_renewal,
            only_functions,
            forwarding,
        })
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
        let existing = map.keys().find(|k| k.eq_ignore_ascii_case(key)).cloned();
        let key = existing.unwrap_or_else(|| key.clone());
        let entry = map.entry(key).or_insert_with(|| Value::Object(Map::new()));
        if !entry.is_object() {
            *entry = Value::Object(Map::new());
        }
        current = entry;
    }
    if let Value::Object(map) = current {
        let existing = map.keys().find(|k| k.eq_ignore_ascii_case(last)).cloned();
        map.insert(
            existing.unwrap_or_else(|| last.clone()),
            Value::String(value),
        );
    }
}

/// What starts a function.
#[derive(Debug, Clone, PartialEq)]
pub enum Trigger {
    /// `httpTrigger`: served on the public port.
    Http {
        /// The trigger's binding name: `Data.<binding>`.
        binding: String,
        /// Upper-case; `None` accepts every method.
        methods: Option<Vec<String>>,
        /// The route template (the function's name when function.json has none).
        route: String,
    },
    /// `serviceBusTrigger` on a queue.
    ServiceBus { binding: String, queue: String },
}

/// Where an output binding's value goes.
#[derive(Debug, Clone, PartialEq)]
pub enum OutputKind {
    /// `http`: the answer to the HTTP caller.
    Http,
    /// `serviceBus`: messages to a queue of the in-process bus.
    ServiceBus { queue: String },
    /// A binding type the dev host does not emulate: its value is dropped with a warning.
    Unsupported(String),
}

/// One output binding.
#[derive(Debug, Clone, PartialEq)]
pub struct OutputBinding {
    /// The key in `Outputs` (or `$return` for `ReturnValue`).
    pub name: String,
    pub kind: OutputKind,
}

/// One function as read from `<name>/function.json`.
#[derive(Debug, Clone, PartialEq)]
pub struct FunctionDef {
    /// The folder name: the path the host POSTs to.
    pub name: String,
    pub trigger: Trigger,
    pub outputs: Vec<OutputBinding>,
}

/// Every loadable function, plus the ones skipped and why (for the banner).
#[derive(Debug, Clone, Default)]
pub struct FunctionSet {
    pub functions: Vec<FunctionDef>,
    pub skipped: Vec<(String, String)>,
}

/// Reads every `*/function.json` under `app_root`; reports all problems at once.
pub fn load_functions(
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
            && !only.iter().any(|f| f.eq_ignore_ascii_case(&name))
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
            Err(e) => {
                problems.push(format!("{}: {e}", path.display()));
                continue;
            }
        };
        let value = match parse_json(&path, &text) {
            Ok(value) => value,
            Err(e) => {
                problems.push(e.to_string());
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

/// The outcome of reading one function.json.
#[derive(Debug, Clone, PartialEq)]
pub enum Parsed {
    Function(FunctionDef),
    /// Disabled, or a trigger the dev host does not run; the reason is shown at start.
    Skipped(String),
}

/// Interprets one function.json; every problem is returned, each prefixed with the function name.
pub fn parse_function(
    name: &str,
    doc: &Value,
    settings: &AppSettings,
) -> Result<Parsed, Vec<String>> {
    let mut problems = Vec::new();
    if !is_valid_function_name(name) {
        problems.push(format!(
            "{name}: a function name must start with a letter and hold only letters, digits, '_' and '-' (at most 128)"
        ));
    }
    let Some(doc) = doc.as_object() else {
        return Err(vec![format!("{name}/function.json must be a JSON object")]);
    };
    if get_ci(doc, "disabled").is_some_and(|v| v.as_bool() == Some(true)) {
        return Ok(Parsed::Skipped("disabled in function.json".to_owned()));
    }
    let bindings = match get_ci(doc, "bindings") {
        Some(Value::Array(b)) => b,
        _ => return Err(vec![format!("{name}/function.json has no bindings array")]),
    };
    let mut trigger = None;
    let mut skip_reason = None;
    let mut outputs = Vec::new();
    let mut output_names: Vec<String> = Vec::new();
    for (index, binding) in bindings.iter().enumerate() {
        let fail = |what: String| format!("{name}: binding #{} {what}", index + 1);
        let Some(binding) = binding.as_object() else {
            problems.push(fail("must be an object".to_owned()));
            continue;
        };
        // `%NAME%` may appear in any string property; resolve them all up front.
        let mut resolved = Map::new();
        for (key, value) in binding {
            match value {
                Value::String(text) => match settings.resolve(text) {
                    Ok(text) => {
                        resolved.insert(key.clone(), Value::String(text));
                    }
                    Err(why) => problems.push(fail(format!("property {key}: {why}"))),
                },
                other => {
                    resolved.insert(key.clone(), other.clone());
                }
            }
        }
        let text = |key: &str| {
            get_ci(&resolved, key)
                .and_then(Value::as_str)
                .map(str::trim)
        };
        let kind = text("type").unwrap_or_default().to_owned();
        let direction = text("direction").unwrap_or_default().to_ascii_lowercase();
        let Some(binding_name) = text("name").filter(|n| !n.is_empty()).map(str::to_owned) else {
            problems.push(fail(format!("({kind}) has no name")));
            continue;
        };
        let fail = |what: String| format!("{name}: binding {binding_name:?} {what}");
        if kind.is_empty() {
            problems.push(fail("has no type".to_owned()));
            continue;
        }
        let is_trigger = kind.to_ascii_lowercase().ends_with("trigger");
        if is_trigger {
            if trigger.is_some() || skip_reason.is_some() {
                problems.push(fail(
                    "is a second trigger: a function has exactly one".to_owned(),
                ));
                continue;
            }
            match kind.to_ascii_lowercase().as_str() {
                "httptrigger" => {
                    let methods = match get_ci(&resolved, "methods") {
                        None | Some(Value::Null) => None,
                        Some(Value::Array(items)) if items.is_empty() => None,
                        Some(Value::Array(items)) => {
                            let mut methods = Vec::new();
                            for item in items {
                                match item.as_str().map(str::trim) {
                                    Some(m)
                                        if !m.is_empty()
                                            && m.chars().all(|c| c.is_ascii_alphabetic()) =>
                                    {
                                        methods.push(m.to_ascii_uppercase());
                                    }
                                    _ => {
                                        problems.push(fail(format!("has an invalid method {item}")))
                                    }
                                }
                            }
                            Some(methods)
                        }
                        Some(other) => {
                            problems.push(fail(format!("methods must be an array, found {other}")));
                            None
                        }
                    };
                    // The host falls back to the function name for a missing or empty route.
                    let route = text("route")
                        .filter(|r| !r.is_empty())
                        .unwrap_or(name)
                        .to_owned();
                    trigger = Some(Trigger::Http {
                        binding: binding_name.clone(),
                        methods,
                        route,
                    });
                }
                "servicebustrigger" => {
                    if text("topicName").is_some() || text("subscriptionName").is_some() {
                        problems.push(fail(
                            "uses a topic subscription: handler dev emulates queues only"
                                .to_owned(),
                        ));
                        continue;
                    }
                    if get_ci(&resolved, "isSessionsEnabled").and_then(Value::as_bool) == Some(true)
                    {
                        problems.push(fail(
                            "enables sessions: handler dev does not emulate sessions".to_owned(),
                        ));
                        continue;
                    }
                    match text("queueName").filter(|q| !q.is_empty()) {
                        Some(queue) => {
                            trigger = Some(Trigger::ServiceBus {
                                binding: binding_name.clone(),
                                queue: queue.to_owned(),
                            });
                        }
                        None => problems.push(fail("has no queueName".to_owned())),
                    }
                }
                other => {
                    skip_reason = Some(format!("its {other} is not emulated by handler dev"));
                }
            }
        } else if direction == "out" || direction == "inout" {
            if output_names.iter().any(|n| n == &binding_name) {
                problems.push(fail("is declared twice".to_owned()));
                continue;
            }
            output_names.push(binding_name.clone());
            let kind = match kind.to_ascii_lowercase().as_str() {
                "http" => OutputKind::Http,
                "servicebus" => {
                    if text("topicName").is_some() {
                        problems.push(fail(
                            "sends to a topic: handler dev emulates queues only".to_owned(),
                        ));
                        continue;
                    }
                    match text("queueName").filter(|q| !q.is_empty()) {
                        Some(queue) => OutputKind::ServiceBus {
                            queue: queue.to_owned(),
                        },
                        None => {
                            problems.push(fail("has no queueName".to_owned()));
                            continue;
                        }
                    }
                }
                _ => OutputKind::Unsupported(kind.clone()),
            };
            outputs.push(OutputBinding {
                name: binding_name,
                kind,
            });
        } else if direction != "in" {
            problems.push(fail(format!(
                "has direction {direction:?}: expected \"in\" or \"out\""
            )));
        }
        // Input bindings other than the trigger are not emulated; the handler gets no Data for them.
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    if let Some(reason) = skip_reason {
        return Ok(Parsed::Skipped(reason));
    }
    match trigger {
        Some(trigger) => Ok(Parsed::Function(FunctionDef {
            name: name.to_owned(),
            trigger,
            outputs,
        })),
        None => Err(vec![format!(
            "{name}: function.json has no trigger binding"
        )]),
    }
}

/// The host's rule for function names (they become URL paths).
fn is_valid_function_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        && name.len() <= 128
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn settings(env: &[(&str, &str)], local: &[(&str, &str)]) -> AppSettings {
        let env: BTreeMap<String, String> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        AppSettings::from_parts(
            move |name| env.get(name).cloned(),
            local
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    #[test]
    fn an_environment_variable_wins_over_local_settings() {
        let s = settings(
            &[("REDIS_URL", "redis://env")],
            &[("REDIS_URL", "redis://file"), ("MAIL_FROM", "a@b.c")],
        );
        assert_eq!(s.get("REDIS_URL").as_deref(), Some("redis://env"));
        assert_eq!(s.get("MAIL_FROM").as_deref(), Some("a@b.c"));
        assert_eq!(s.get("mail_from").as_deref(), Some("a@b.c"));
        assert_eq!(s.get("NOPE"), None);
    }

    #[test]
    fn percent_names_are_resolved_from_settings() {
        let s = settings(&[("QUEUE", "from-env")], &[("OTHER", "x")]);
        assert_eq!(s.resolve("%QUEUE%").unwrap(), "from-env");
        assert_eq!(s.resolve("a-%OTHER%-%QUEUE%").unwrap(), "a-x-from-env");
        assert_eq!(s.resolve("100%% sure").unwrap(), "100% sure");
        assert_eq!(s.resolve("50% off").unwrap(), "50% off");
        let err = s.resolve("%MISSING%").unwrap_err();
        assert!(err.contains("MISSING"), "{err}");
    }

    #[test]
    fn local_settings_values_are_read_and_comments_tolerated() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("local.settings.json"),
            r#"{ // comment
                "IsEncrypted": false,
                "Values": { "QUEUE": "q1", "N": 3, "URL": "http://x//y" /* trailing */ }
            }"#,
        )
        .unwrap();
        let s =
            AppSettings::load_with_env(dir.path(), |name| (name == "N").then(|| "9".to_owned()))
                .unwrap();
        assert_eq!(s.get("QUEUE").as_deref(), Some("q1"));
        assert_eq!(s.get("URL").as_deref(), Some("http://x//y"));
        assert_eq!(s.get("N").as_deref(), Some("9"));
        assert_eq!(s.local_file().map(|(_, n)| n), Some(3));
    }

    #[test]
    fn encrypted_local_settings_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("local.settings.json"),
            r#"{"IsEncrypted": true, "Values": {}}"#,
        )
        .unwrap();
        assert!(matches!(
            AppSettings::load_with_env(dir.path(), |_| None),
            Err(AppDirError::LocalSettings(_))
        ));
    }

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

    #[test]
    fn an_http_function_is_read_with_its_outputs() {
        let doc = json!({"bindings": [
            {"type": "httpTrigger", "direction": "in", "name": "req", "methods": ["get", "post"], "authLevel": "anonymous", "route": "createUser"},
            {"type": "http", "direction": "out", "name": "res"},
            {"type": "serviceBus", "direction": "out", "name": "onboardingMessage", "queueName": "%QUEUE%", "connection": "ServiceBusConnection"}
        ]});
        let s = settings(&[("QUEUE", "onboarding")], &[]);
        let Parsed::Function(def) = parse_function("createUser", &doc, &s).unwrap() else {
            panic!("skipped")
        };
        assert_eq!(
            def.trigger,
            Trigger::Http {
                binding: "req".into(),
                methods: Some(vec!["GET".into(), "POST".into()]),
                route: "createUser".into()
            }
        );
        assert_eq!(
            def.outputs[1].kind,
            OutputKind::ServiceBus {
                queue: "onboarding".into()
            }
        );
    }

    #[test]
    fn a_missing_route_falls_back_to_the_function_name() {
        let doc = json!({"bindings": [{"type": "httpTrigger", "direction": "in", "name": "req", "route": ""}]});
        let Parsed::Function(def) = parse_function("health", &doc, &settings(&[], &[])).unwrap()
        else {
            panic!()
        };
        assert!(
            matches!(def.trigger, Trigger::Http { ref route, methods: None, .. } if route == "health")
        );
    }

    #[test]
    fn a_service_bus_trigger_resolves_its_queue_name() {
        let doc = json!({"bindings": [{"type": "serviceBusTrigger", "direction": "in", "name": "message", "queueName": "%Q%", "connection": "C"}]});
        let Parsed::Function(def) =
            parse_function("send", &doc, &settings(&[], &[("Q", "jobs")])).unwrap()
        else {
            panic!()
        };
        assert_eq!(
            def.trigger,
            Trigger::ServiceBus {
                binding: "message".into(),
                queue: "jobs".into()
            }
        );
    }

    #[test]
    fn every_problem_of_a_function_is_reported() {
        let doc = json!({"bindings": [
            {"type": "serviceBusTrigger", "direction": "in", "name": "m", "queueName": "%NOPE%"},
            {"type": "serviceBus", "direction": "out", "name": "o"}
        ]});
        let problems = parse_function("f", &doc, &settings(&[], &[])).unwrap_err();
        assert_eq!(problems.len(), 3, "{problems:?}");
        assert!(problems[0].contains("NOPE"));
    }

    #[test]
    fn an_unsupported_trigger_is_skipped_with_a_reason() {
        let doc = json!({"bindings": [{"type": "timerTrigger", "direction": "in", "name": "t", "schedule": "0 * * * * *"}]});
        assert!(matches!(
            parse_function("tick", &doc, &settings(&[], &[])),
            Ok(Parsed::Skipped(_))
        ));
    }

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
