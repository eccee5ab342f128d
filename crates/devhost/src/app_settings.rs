//! App settings as the host sees them: the real environment first, then local.settings.json's
//! `Values`; `%NAME%` references resolved from them, and the `AzureFunctionsJobHost__…`
//! settings that override host.json paths.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::app_error::{AppDirError, UnsetSetting};
use super::jsonc::parse_json;
use super::lookup;

/// App settings with this prefix override host.json paths (`__` separates levels), as on Azure.
const HOST_OVERRIDE_PREFIX: &str = "AzureFunctionsJobHost__";

/// Looks up one environment variable (the real environment, or a test's).
type EnvLookup = Box<dyn Fn(&str) -> Option<String> + Send + Sync>;

/// App settings as the host sees them: real environment variables win over
/// `local.settings.json`'s `Values`.
pub(crate) struct AppSettings {
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
    pub(crate) fn load(app_root: &Path) -> Result<Self, AppDirError> {
        let mut settings = Self::load_with_env(app_root, |name| std::env::var(name).ok())?;
        settings.env_host_overrides = std::env::vars()
            .map(|(name, _)| name)
            .filter(|name| is_host_override(name))
            .collect();
        Ok(settings)
    }

    /// Like [`AppSettings::load`] with another environment (tests).
    pub(crate) fn load_with_env(
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
    #[cfg(test)]
    pub(crate) fn from_parts(
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
    pub(crate) fn get(&self, name: &str) -> Option<String> {
        (self.env)(name).or_else(|| {
            self.local
                .get(name)
                .or_else(|| lookup::get(&self.local, name))
                .cloned()
        })
    }

    /// Every name in `Values` with its effective value (the environment's when it sets it too):
    /// with the process environment, what a handler process gets as its environment.
    pub(crate) fn local_values(&self) -> Vec<(String, String)> {
        self.local
            .keys()
            .filter_map(|name| Some((name.clone(), self.get(name)?)))
            .collect()
    }

    /// Where `Values` came from, if a file was read, and how many there were.
    pub(crate) fn local_file(&self) -> Option<(&Path, usize)> {
        self.local_file
            .as_deref()
            .map(|path| (path, self.local.len()))
    }

    /// `AzureFunctionsJobHost__…` settings from both sources (environment wins), for host.json.
    pub(super) fn host_overrides(&self) -> Vec<(Vec<String>, String)> {
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
    pub(crate) fn resolve(&self, text: &str) -> Result<String, UnsetSetting> {
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
                let value = self
                    .get(name)
                    .ok_or_else(|| UnsetSetting(name.to_owned()))?;
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
        && lookup::same(&name[..HOST_OVERRIDE_PREFIX.len()], HOST_OVERRIDE_PREFIX)
}

fn parse_local_settings(path: &Path, text: &str) -> Result<BTreeMap<String, String>, AppDirError> {
    let root = parse_json(path, text)?;
    let problem = |p: String| AppDirError::LocalSettings(p);
    let Value::Object(root) = root else {
        return Err(problem("must be a JSON object".to_owned()));
    };
    if lookup::json_field(&root, "IsEncrypted").and_then(Value::as_bool) == Some(true) {
        return Err(problem(
            "IsEncrypted is true: decrypt it first (`func settings decrypt`)".to_owned(),
        ));
    }
    let mut values = BTreeMap::new();
    match lookup::json_field(&root, "Values") {
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

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Settings from an environment and `Values` given as pairs.
    pub(crate) fn settings(env: &[(&str, &str)], local: &[(&str, &str)]) -> AppSettings {
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
        let err = s.resolve("%MISSING%").unwrap_err().to_string();
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
}
