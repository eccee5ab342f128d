//! Settings from the environment (Azure app settings), validated together at start so one run
//! reports every problem at once.

use std::fmt;
use std::num::NonZeroU32;
use std::time::Duration;

use lettre::message::Mailbox;
use secrecy::{ExposeSecret, SecretString};
use url::Url;

/// Prefix of an app setting that Azure could not resolve from Key Vault: the value reaches the
/// process verbatim, and using it as a password or key would fail in confusing ways later.
const KEY_VAULT_REFERENCE: &str = "@Microsoft.KeyVault(";
/// Shortest HS256 key accepted: the key must be as strong as the hash.
pub const MIN_JWT_SECRET_BYTES: usize = 32;
/// Token lifetime when `JWT_TTL_SECONDS` is not set.
pub const DEFAULT_JWT_TTL: Duration = Duration::from_secs(3600);
/// Overall bound on one email send when `SMTP_TIMEOUT_SECONDS` is not set.
pub const DEFAULT_SMTP_TIMEOUT: Duration = Duration::from_secs(30);
/// How long one sendOnboarding invocation rides out failures that may heal before it answers
/// non-2xx, when `SMTP_SEND_WINDOW_SECONDS` is not set. Service Bus redelivers a failed message
/// at once, with no backoff (Azure/azure-service-bus#454, Azure/azure-webjobs-sdk#2955), so the
/// waiting has to happen inside the invocation; 240 s stays clear of the host's lock renewal
/// limit (`maxAutoLockRenewalDuration`, 5 min by default) and of our 5 min `functionTimeout`.
pub const DEFAULT_SEND_WINDOW: Duration = Duration::from_secs(240);
/// Accepted `SMTP_SEND_WINDOW_SECONDS` values.
pub const SEND_WINDOW_SECONDS: std::ops::RangeInclusive<u64> = 1..=3600;
/// Accepted `SMTP_MAX_PER_MINUTE` values (Azure Communication Services allows 30 a minute by
/// default with a custom domain, 5 with an Azure-managed one).
pub const MAX_PER_MINUTE: std::ops::RangeInclusive<u32> = 1..=60_000;
/// Store key prefix when `REDIS_KEY_PREFIX` is not set.
pub const DEFAULT_KEY_PREFIX: &str = "onboarding:";
/// Sender used by `handler dev` when `MAIL_FROM` is not set.
pub const LOCAL_MAIL_FROM: &str = "Onboarding <onboarding@localhost>";

/// Which command is starting: the handler under the real host needs every backend configured;
/// the local dev host fills in embedded ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Serve,
    Dev,
}

/// Every setting problem found, reported as one error.
#[derive(Debug, thiserror::Error)]
pub struct ConfigError {
    pub problems: Vec<String>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} setting problem(s):", self.problems.len())?;
        for problem in &self.problems {
            write!(f, "\n  - {problem}")?;
        }
        Ok(())
    }
}

/// Where Redis is and how to reach it; the URL carries the password, so it stays secret.
#[derive(Debug, Clone)]
pub struct RedisSettings {
    /// A `redis://` or `rediss://` URL (the Azure portal form is converted to one).
    pub url: SecretString,
    /// The host and port only, for the start-up banner and logs.
    pub display: String,
}

/// How to reach the SMTP server: a lettre URL whose credentials stay secret.
#[derive(Debug, Clone)]
pub struct SmtpSettings {
    pub url: SecretString,
    /// Scheme, host and port only, for the banner and logs.
    pub display: String,
    /// Overall bound on one send, connection included.
    pub timeout: Duration,
}

/// Keys and lifetime of session tokens.
#[derive(Debug, Clone)]
pub struct JwtSettings {
    pub secret: SecretString,
    /// The previous key during a rotation: still verifies, never signs.
    pub previous_secret: Option<SecretString>,
    pub ttl: Duration,
    /// True when `handler dev` made the key up for this run (tokens end with the run).
    pub generated: bool,
}

/// The validated settings of one run.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `FUNCTIONS_CUSTOMHANDLER_PORT`, required when serving under the host.
    pub listen_port: Option<u16>,
    /// `None` in dev mode without `REDIS_URL`: the in-memory store is used.
    pub redis: Option<RedisSettings>,
    /// `None` in dev mode without `SMTP_URL`: emails are written to `outbox/`.
    pub smtp: Option<SmtpSettings>,
    pub jwt: JwtSettings,
    pub mail_from: Mailbox,
    pub public_url: Option<Url>,
    pub key_prefix: String,
    /// `SMTP_SEND_WINDOW_SECONDS`: how long one delivery rides out failures that may heal.
    pub send_window: Duration,
    /// `SMTP_MAX_PER_MINUTE`: the provider's limit, shared by every instance through the store;
    /// `None` paces adaptively on the provider's throttle replies instead.
    pub max_per_minute: Option<NonZeroU32>,
}

impl Settings {
    /// Reads the process environment.
    pub fn from_env(mode: Mode) -> Result<Self, ConfigError> {
        Self::from_lookup(mode, |name| std::env::var(name).ok())
    }

    /// Reads settings through `lookup` (the environment, or the dev host's merged view) and
    /// checks all of them before answering.
    pub fn from_lookup(
        mode: Mode,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let mut read = Reader {
            lookup: &lookup,
            serving: mode == Mode::Serve,
            problems: Vec::new(),
        };
        let dev = mode == Mode::Dev;

        let listen_port = read.required(
            "FUNCTIONS_CUSTOMHANDLER_PORT",
            "the Functions host sets it; to run without the host, use `handler dev`",
            parse_port,
        );
        let redis = read.required(
            "REDIS_URL",
            "e.g. redis://127.0.0.1:6379 or rediss://:KEY@name.region.redis.azure.net:10000",
            |raw| parse_redis_url(raw).map_err(|why| format!("REDIS_URL {why}")),
        );
        let smtp_timeout = read
            .optional("SMTP_TIMEOUT_SECONDS", |raw| {
                parse_seconds("SMTP_TIMEOUT_SECONDS", raw, 1..=600)
            })
            .unwrap_or(DEFAULT_SMTP_TIMEOUT);
        let send_window = read
            .optional("SMTP_SEND_WINDOW_SECONDS", parse_send_window)
            .unwrap_or(DEFAULT_SEND_WINDOW);
        let max_per_minute = read.optional("SMTP_MAX_PER_MINUTE", parse_max_per_minute);
        let smtp = read.required(
            "SMTP_URL",
            "e.g. smtp://user:pass@smtp.example.com:587?tls=required",
            |raw| parse_smtp_url(raw, smtp_timeout).map_err(|why| format!("SMTP_URL {why}")),
        );

        // Dev runs make up a key for the run (tokens end with it) and use a local sender.
        let secret = match read.value("JWT_SECRET") {
            Value::Missing if dev => Some((random_secret(), true)),
            value => read
                .require(
                    "JWT_SECRET",
                    "a random key of at least 32 bytes, e.g. from `openssl rand -base64 48`",
                    value,
                    |raw| parse_jwt_secret("JWT_SECRET", raw),
                )
                .map(|secret| (secret, false)),
        };
        let previous_secret = read.optional("JWT_SECRET_PREVIOUS", |raw| {
            parse_jwt_secret("JWT_SECRET_PREVIOUS", raw)
        });
        let ttl = read
            .optional("JWT_TTL_SECONDS", |raw| {
                parse_seconds("JWT_TTL_SECONDS", raw, 60..=30 * 24 * 3600)
            })
            .unwrap_or(DEFAULT_JWT_TTL);
        let mail_from = match read.value("MAIL_FROM") {
            Value::Missing if dev => LOCAL_MAIL_FROM.parse::<Mailbox>().ok(),
            value => read.require(
                "MAIL_FROM",
                "the sender, e.g. `Onboarding <no-reply@example.com>`",
                value,
                parse_mail_from,
            ),
        };
        let public_url = read.optional("PUBLIC_URL", parse_public_url);
        let key_prefix = read
            .optional("REDIS_KEY_PREFIX", parse_key_prefix)
            .unwrap_or_else(|| DEFAULT_KEY_PREFIX.to_owned());

        match (secret, mail_from) {
            (Some((secret, generated)), Some(mail_from)) if read.problems.is_empty() => Ok(Self {
                listen_port,
                redis,
                smtp,
                jwt: JwtSettings {
                    secret,
                    previous_secret,
                    ttl,
                    generated,
                },
                mail_from,
                public_url,
                key_prefix,
                send_window,
                max_per_minute,
            }),
            _ => Err(ConfigError {
                problems: read.problems,
            }),
        }
    }
}

/// One setting's value as read: absent (or blank, as portals and `.env` files often leave
/// them), unusable as it stands (already reported), or there.
enum Value {
    Missing,
    Reported,
    Present(String),
}

/// Reads settings one by one and collects every problem, so one run reports all of them.
struct Reader<'a> {
    lookup: &'a dyn Fn(&str) -> Option<String>,
    /// Under the host every required setting must be there; `handler dev` fills them in.
    serving: bool,
    problems: Vec<String>,
}

impl Reader<'_> {
    /// A setting's value, refusing the two kinds of text that only look like values: an
    /// unresolved Key Vault reference and the example file's `<placeholder>`.
    fn value(&mut self, name: &str) -> Value {
        let Some(value) = (self.lookup)(name).filter(|v| !v.trim().is_empty()) else {
            return Value::Missing;
        };
        let trimmed = value.trim();
        if trimmed.starts_with(KEY_VAULT_REFERENCE) {
            self.problems.push(format!(
                "{name} is an unresolved Key Vault reference: check that the app's \
                 keyVaultReferenceIdentity has the Key Vault Secrets User role on the vault \
                 and that the reference names an existing secret"
            ));
            return Value::Reported;
        }
        // `<…>` is how local.settings.json.example marks a value to fill in; a placeholder used
        // as a key would sign tokens with text anyone can read.
        if trimmed.starts_with('<') && trimmed.ends_with('>') {
            self.problems.push(format!(
                "{name} still holds the placeholder from local.settings.json.example: set a \
                 real value or remove the line"
            ));
            return Value::Reported;
        }
        Value::Present(value)
    }

    /// A setting that may be left out: its parsed value, or `None` when absent or refused (the
    /// refusal, whose text `parse` writes, is recorded).
    fn optional<T>(
        &mut self,
        name: &str,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Option<T> {
        match self.value(name) {
            Value::Present(raw) => self.parsed(parse(&raw)),
            Value::Missing | Value::Reported => None,
        }
    }

    /// A setting the host must be given: as [`optional`](Self::optional), and when serving, a
    /// missing one is a problem too, with `example` saying what to set.
    fn required<T>(
        &mut self,
        name: &str,
        example: &str,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Option<T> {
        let value = self.value(name);
        self.require(name, example, value, parse)
    }

    /// [`required`](Self::required) for a value already read. A value refused as it stood
    /// (a Key Vault reference, a placeholder) is reported once, not also as missing.
    fn require<T>(
        &mut self,
        name: &str,
        example: &str,
        value: Value,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Option<T> {
        match value {
            Value::Present(raw) => self.parsed(parse(&raw)),
            Value::Reported => None,
            Value::Missing => {
                if self.serving {
                    self.problems.push(format!("{name} is not set: {example}"));
                }
                None
            }
        }
    }

    fn parsed<T>(&mut self, parsed: Result<T, String>) -> Option<T> {
        parsed.map_err(|why| self.problems.push(why)).ok()
    }
}

/// `FUNCTIONS_CUSTOMHANDLER_PORT`: a port number the host chose.
fn parse_port(raw: &str) -> Result<u16, String> {
    match raw.trim().parse::<u16>() {
        Ok(port) if port != 0 => Ok(port),
        _ => Err(format!(
            "FUNCTIONS_CUSTOMHANDLER_PORT must be a port number from 1 to 65535, got {raw:?}"
        )),
    }
}

/// A whole number of seconds within `range`.
fn parse_seconds(
    name: &str,
    raw: &str,
    range: std::ops::RangeInclusive<u64>,
) -> Result<Duration, String> {
    match raw.trim().parse::<u64>() {
        Ok(secs) if range.contains(&secs) => Ok(Duration::from_secs(secs)),
        _ => Err(format!(
            "{name} must be a whole number of seconds from {} to {}, got {raw:?}",
            range.start(),
            range.end()
        )),
    }
}

/// An HS256 key: its bytes as written, at least [`MIN_JWT_SECRET_BYTES`] of them.
fn parse_jwt_secret(name: &str, raw: &str) -> Result<SecretString, String> {
    if raw.len() >= MIN_JWT_SECRET_BYTES {
        Ok(SecretString::from(raw.to_owned()))
    } else {
        Err(format!(
            "{name} must be at least {MIN_JWT_SECRET_BYTES} bytes, it has {}",
            raw.len()
        ))
    }
}

/// `MAIL_FROM`: a mailbox, display name optional.
fn parse_mail_from(raw: &str) -> Result<Mailbox, String> {
    raw.trim().parse::<Mailbox>().map_err(|e| {
        format!("MAIL_FROM must be a mailbox such as `Onboarding <no-reply@example.com>`: {e}")
    })
}

/// `PUBLIC_URL`: an absolute http(s) URL with a host.
fn parse_public_url(raw: &str) -> Result<Url, String> {
    match Url::parse(raw.trim()) {
        Ok(url) if matches!(url.scheme(), "http" | "https") && url.has_host() => Ok(url),
        _ => Err(format!(
            "PUBLIC_URL must be an absolute http(s) URL such as https://app.example.com, got {raw:?}"
        )),
    }
}

/// `REDIS_KEY_PREFIX`: no braces (they would move keys between cluster slots), no whitespace.
fn parse_key_prefix(raw: &str) -> Result<String, String> {
    let prefix = raw.trim();
    if prefix.contains(['{', '}']) || prefix.chars().any(char::is_whitespace) {
        return Err(
            "REDIS_KEY_PREFIX must not contain braces or whitespace (braces would change \
                    which cluster slot a key lives in)"
                .to_owned(),
        );
    }
    Ok(prefix.to_owned())
}

/// `SMTP_SEND_WINDOW_SECONDS`: whole seconds within [`SEND_WINDOW_SECONDS`].
fn parse_send_window(raw: &str) -> Result<Duration, String> {
    match raw.trim().parse::<u64>() {
        Ok(secs) if SEND_WINDOW_SECONDS.contains(&secs) => Ok(Duration::from_secs(secs)),
        _ => Err(format!(
            "SMTP_SEND_WINDOW_SECONDS must be a whole number of seconds from {} to {} (keep it \
             below the Service Bus lock renewal limit and functionTimeout, 5 minutes by \
             default), got {raw:?}",
            SEND_WINDOW_SECONDS.start(),
            SEND_WINDOW_SECONDS.end()
        )),
    }
}

/// `SMTP_MAX_PER_MINUTE`: a whole number within [`MAX_PER_MINUTE`].
fn parse_max_per_minute(raw: &str) -> Result<NonZeroU32, String> {
    raw.trim()
        .parse::<u32>()
        .ok()
        .filter(|n| MAX_PER_MINUTE.contains(n))
        .and_then(NonZeroU32::new)
        .ok_or_else(|| {
            format!(
                "SMTP_MAX_PER_MINUTE must be a whole number from {} to {} (emails a minute \
                 across all instances), got {raw:?}",
                MAX_PER_MINUTE.start(),
                MAX_PER_MINUTE.end()
            )
        })
}

/// Accepts `redis://`, `rediss://` and the Azure portal's connection string
/// (`host:6380,password=…,ssl=True,abortConnect=False`), and returns a URL for the client.
fn parse_redis_url(raw: &str) -> Result<RedisSettings, String> {
    let raw = raw.trim();
    let url = if raw.starts_with("redis://") || raw.starts_with("rediss://") {
        Url::parse(raw).map_err(|e| format!("is not a valid URL: {e}"))?
    } else if raw.contains("://") {
        return Err("must use the redis:// or rediss:// scheme".to_owned());
    } else {
        azure_connection_string_to_url(raw)?
    };
    let host = url
        .host_str()
        .filter(|h| !h.is_empty())
        .ok_or("has no host")?;
    let port = url.port().unwrap_or(6379);
    let display = format!("{}://{host}:{port}", url.scheme());
    Ok(RedisSettings {
        url: SecretString::from(url.to_string()),
        display,
    })
}

/// Converts the Azure portal form (StackExchange.Redis syntax) to a `redis(s)://` URL.
fn azure_connection_string_to_url(raw: &str) -> Result<Url, String> {
    let mut parts = raw.split(',').map(str::trim);
    let endpoint = parts.next().filter(|e| !e.is_empty()).ok_or("is empty")?;
    let (mut password, mut user, mut tls) = (None, None, false);
    for part in parts.filter(|p| !p.is_empty()) {
        let (key, value) = part.split_once('=').ok_or_else(|| {
            "is neither a redis:// URL nor a connection string of the form host:port,password=…,ssl=True".to_owned()
        })?;
        match key.trim().to_ascii_lowercase().as_str() {
            "password" => password = Some(value.to_owned()),
            "user" => user = Some(value.to_owned()),
            "ssl" => tls = value.trim().eq_ignore_ascii_case("true"),
            // abortConnect, connectTimeout and friends tune the .NET client only.
            _ => {}
        }
    }
    let (host, port) = match endpoint.rsplit_once(':') {
        Some((host, port)) => (
            host,
            port.parse::<u16>()
                .map_err(|_| format!("has an invalid port in {endpoint:?}"))?,
        ),
        None => (endpoint, if tls { 6380 } else { 6379 }),
    };
    let scheme = if tls { "rediss" } else { "redis" };
    let mut url = Url::parse(&format!("{scheme}://{host}:{port}"))
        .map_err(|_| format!("has an invalid host {host:?}"))?;
    if let Some(password) = password {
        url.set_password(Some(&password))
            .map_err(|_| "has a password that cannot be used".to_owned())?;
    }
    if let Some(user) = user {
        url.set_username(&user)
            .map_err(|_| "has a user name that cannot be used".to_owned())?;
    }
    Ok(url)
}

/// Checks an SMTP URL the way lettre will read it, without connecting.
fn parse_smtp_url(raw: &str, timeout: Duration) -> Result<SmtpSettings, String> {
    let raw = raw.trim();
    let url = Url::parse(raw).map_err(|e| format!("is not a valid URL: {e}"))?;
    if !matches!(url.scheme(), "smtp" | "smtps") {
        return Err("must use the smtp:// or smtps:// scheme".to_owned());
    }
    lettre::AsyncSmtpTransport::<lettre::Tokio1Executor>::from_url(raw)
        .map_err(|e| format!("is not usable: {e}"))?;
    let host = url.host_str().unwrap_or_default();
    let port = url.port().map(|p| format!(":{p}")).unwrap_or_default();
    Ok(SmtpSettings {
        url: SecretString::from(raw.to_owned()),
        display: format!("{}://{host}{port}", url.scheme()),
        timeout,
    })
}

/// A random 48-byte key, hex-encoded, for dev runs without `JWT_SECRET`.
fn random_secret() -> SecretString {
    let bytes: [u8; 48] = rand::random();
    SecretString::from(bytes.iter().map(|b| format!("{b:02x}")).collect::<String>())
}

/// Exposes a secret setting to the one place that needs it.
pub fn expose(secret: &SecretString) -> &str {
    secret.expose_secret()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    const SECRET: &str = "0123456789abcdef0123456789abcdef-very-secret";

    fn lookup(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |name| map.get(name).cloned()
    }

    fn complete() -> Vec<(&'static str, &'static str)> {
        vec![
            ("FUNCTIONS_CUSTOMHANDLER_PORT", "7000"),
            ("REDIS_URL", "redis://:hunter2-redis@127.0.0.1:6379"),
            ("JWT_SECRET", SECRET),
            ("SMTP_URL", "smtp://mailer:hunter2-smtp@127.0.0.1:2525"),
            ("MAIL_FROM", "Onboarding <no-reply@example.com>"),
        ]
    }

    #[test]
    fn complete_settings_are_accepted() {
        let settings = Settings::from_lookup(Mode::Serve, lookup(&complete())).unwrap();
        assert_eq!(settings.listen_port, Some(7000));
        assert_eq!(settings.key_prefix, DEFAULT_KEY_PREFIX);
        assert_eq!(settings.jwt.ttl, DEFAULT_JWT_TTL);
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let err =
            Settings::from_lookup(Mode::Serve, lookup(&[("JWT_SECRET", "short")])).unwrap_err();
        let text = err.to_string();
        for name in [
            "FUNCTIONS_CUSTOMHANDLER_PORT",
            "REDIS_URL",
            "SMTP_URL",
            "MAIL_FROM",
            "JWT_SECRET",
        ] {
            assert!(text.contains(name), "{name} missing from {text}");
        }
        assert_eq!(err.problems.len(), 5);
    }

    #[test]
    fn an_unresolved_key_vault_reference_is_named() {
        let mut pairs = complete();
        pairs.push((
            "JWT_SECRET",
            "@Microsoft.KeyVault(SecretUri=https://kv.vault.azure.net/secrets/jwt/)",
        ));
        let pairs: Vec<_> = pairs.into_iter().rev().collect();
        let map_first = |pairs: &[(&str, &str)]| {
            let mut seen = HashMap::new();
            for (k, v) in pairs {
                seen.entry((*k).to_owned()).or_insert((*v).to_owned());
            }
            move |name: &str| seen.get(name).cloned()
        };
        let err = Settings::from_lookup(Mode::Serve, map_first(&pairs)).unwrap_err();
        assert!(
            err.to_string()
                .contains("JWT_SECRET is an unresolved Key Vault reference")
        );
    }

    #[test]
    fn an_unresolved_key_vault_reference_is_one_problem_not_also_a_missing_setting() {
        for name in ["REDIS_URL", "SMTP_URL", "JWT_SECRET", "MAIL_FROM"] {
            let mut pairs: Vec<(&str, &str)> =
                complete().into_iter().filter(|(k, _)| *k != name).collect();
            pairs.push((
                name,
                "@Microsoft.KeyVault(SecretUri=https://kv.vault.azure.net/secrets/x/)",
            ));
            let err = Settings::from_lookup(Mode::Serve, lookup(&pairs)).unwrap_err();
            assert_eq!(err.problems.len(), 1, "{name}: {err}");
            assert!(
                err.problems[0].starts_with(&format!("{name} is an unresolved")),
                "{err}"
            );
        }
    }

    #[test]
    fn a_placeholder_from_the_example_file_is_refused() {
        let mut pairs = complete();
        pairs.retain(|(k, _)| *k != "JWT_SECRET");
        pairs.push((
            "JWT_SECRET",
            "<at least 32 random bytes, e.g. from: openssl rand -base64 48>",
        ));
        let err = Settings::from_lookup(Mode::Dev, lookup(&pairs)).unwrap_err();
        assert!(
            err.to_string()
                .contains("JWT_SECRET still holds the placeholder")
        );
    }

    #[test]
    fn secrets_never_appear_in_errors_or_debug_output() {
        let mut pairs = complete();
        pairs.retain(|(k, _)| *k != "MAIL_FROM");
        let err = Settings::from_lookup(Mode::Serve, lookup(&pairs)).unwrap_err();
        assert!(!err.to_string().contains("hunter2"));
        let settings = Settings::from_lookup(Mode::Serve, lookup(&complete())).unwrap();
        let debug = format!("{settings:?}");
        assert!(!debug.contains("hunter2"), "{debug}");
        assert!(!debug.contains(SECRET), "{debug}");
    }

    #[test]
    fn the_azure_portal_redis_form_becomes_a_tls_url() {
        let settings = parse_redis_url(
            "cache.redis.cache.windows.net:6380,password=abc/+=,ssl=True,abortConnect=False",
        )
        .unwrap();
        assert_eq!(
            settings.display,
            "rediss://cache.redis.cache.windows.net:6380"
        );
        let url = Url::parse(expose(&settings.url)).unwrap();
        assert_eq!(url.scheme(), "rediss");
        assert_eq!(
            percent_encoding::percent_decode_str(url.password().unwrap())
                .decode_utf8()
                .unwrap(),
            "abc/+="
        );
    }

    #[test]
    fn a_rediss_url_is_accepted() {
        let settings =
            parse_redis_url("rediss://:key@name.westeurope.redis.azure.net:10000").unwrap();
        assert_eq!(
            settings.display,
            "rediss://name.westeurope.redis.azure.net:10000"
        );
    }

    #[test]
    fn an_http_redis_url_is_refused() {
        assert!(parse_redis_url("http://localhost:6379").is_err());
    }

    #[test]
    fn dev_mode_needs_no_setting_at_all() {
        let settings = Settings::from_lookup(Mode::Dev, lookup(&[])).unwrap();
        assert!(settings.redis.is_none() && settings.smtp.is_none());
        assert!(settings.jwt.generated);
        assert_eq!(settings.mail_from.email.domain(), "localhost");
    }

    #[test]
    fn the_send_settings_default_to_a_240_s_window_and_adaptive_pacing() {
        let settings = Settings::from_lookup(Mode::Serve, lookup(&complete())).unwrap();
        assert_eq!(settings.send_window, Duration::from_secs(240));
        assert_eq!(settings.max_per_minute, None);
        let mut pairs = complete();
        pairs.push(("SMTP_SEND_WINDOW_SECONDS", "30"));
        pairs.push(("SMTP_MAX_PER_MINUTE", "30"));
        let settings = Settings::from_lookup(Mode::Serve, lookup(&pairs)).unwrap();
        assert_eq!(settings.send_window, Duration::from_secs(30));
        assert_eq!(settings.max_per_minute, NonZeroU32::new(30));
    }

    #[test]
    fn bad_send_settings_are_reported_together() {
        let mut pairs = complete();
        pairs.push(("SMTP_SEND_WINDOW_SECONDS", "0"));
        pairs.push(("SMTP_MAX_PER_MINUTE", "1.5"));
        let err = Settings::from_lookup(Mode::Serve, lookup(&pairs)).unwrap_err();
        assert_eq!(err.problems.len(), 2, "{err}");
        let text = err.to_string();
        assert!(text.contains("SMTP_SEND_WINDOW_SECONDS") && text.contains("SMTP_MAX_PER_MINUTE"));
        for too_big in [
            ("SMTP_SEND_WINDOW_SECONDS", "3601"),
            ("SMTP_MAX_PER_MINUTE", "0"),
        ] {
            let mut pairs = complete();
            pairs.push(too_big);
            assert!(Settings::from_lookup(Mode::Serve, lookup(&pairs)).is_err());
        }
    }

    #[test]
    fn a_short_ttl_is_refused() {
        let mut pairs = complete();
        pairs.push(("JWT_TTL_SECONDS", "5"));
        let err = Settings::from_lookup(Mode::Serve, lookup(&pairs)).unwrap_err();
        assert!(err.to_string().contains("JWT_TTL_SECONDS"));
    }
}
