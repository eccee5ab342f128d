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
        let mut problems = Vec::new();
        // Empty values count as unset: portals and .env files often leave blanks.
        let get = |name: &str, problems: &mut Vec<String>| -> Option<String> {
            let value = lookup(name).filter(|v| !v.trim().is_empty())?;
            if value.trim_start().starts_with(KEY_VAULT_REFERENCE) {
                problems.push(format!(
                    "{name} is an unresolved Key Vault reference: check that the app's \
                     keyVaultReferenceIdentity has the Key Vault Secrets User role on the vault \
                     and that the reference names an existing secret"
                ));
                return None;
            }
            // `<…>` is how local.settings.json.example marks a value to fill in; a placeholder
            // used as a key would sign tokens with text anyone can read.
            let trimmed = value.trim();
            if trimmed.starts_with('<') && trimmed.ends_with('>') {
                problems.push(format!(
                    "{name} still holds the placeholder from local.settings.json.example: set a \
                     real value or remove the line"
                ));
                return None;
            }
            Some(value)
        };
        let required = mode == Mode::Serve;
        let missing = |name: &str, problems: &mut Vec<String>, why: &str| {
            if required {
                problems.push(format!("{name} is not set: {why}"));
            }
        };

        let listen_port = match get("FUNCTIONS_CUSTOMHANDLER_PORT", &mut problems) {
            Some(raw) => match raw.trim().parse::<u16>() {
                Ok(port) if port != 0 => Some(port),
                _ => {
                    problems.push(format!(
                        "FUNCTIONS_CUSTOMHANDLER_PORT must be a port number from 1 to 65535, got {raw:?}"
                    ));
                    None
                }
            },
            None => {
                missing(
                    "FUNCTIONS_CUSTOMHANDLER_PORT",
                    &mut problems,
                    "the Functions host sets it; to run without the host, use `handler dev`",
                );
                None
            }
        };

        let redis = match get("REDIS_URL", &mut problems) {
            Some(raw) => match parse_redis_url(&raw) {
                Ok(settings) => Some(settings),
                Err(why) => {
                    problems.push(format!("REDIS_URL {why}"));
                    None
                }
            },
            None => {
                missing(
                    "REDIS_URL",
                    &mut problems,
                    "e.g. redis://127.0.0.1:6379 or rediss://:KEY@name.region.redis.azure.net:10000",
                );
                None
            }
        };

        let smtp_timeout = match get("SMTP_TIMEOUT_SECONDS", &mut problems) {
            Some(raw) => match raw.trim().parse::<u64>() {
                Ok(secs) if (1..=600).contains(&secs) => Duration::from_secs(secs),
                _ => {
                    problems.push(format!(
                        "SMTP_TIMEOUT_SECONDS must be a whole number of seconds from 1 to 600, got {raw:?}"
                    ));
                    DEFAULT_SMTP_TIMEOUT
                }
            },
            None => DEFAULT_SMTP_TIMEOUT,
        };
        let send_window = get("SMTP_SEND_WINDOW_SECONDS", &mut problems)
            .map(|raw| parse_send_window(&raw))
            .transpose()
            .unwrap_or_else(|why| {
                problems.push(why);
                None
            })
            .unwrap_or(DEFAULT_SEND_WINDOW);
        let max_per_minute = get("SMTP_MAX_PER_MINUTE", &mut problems)
            .map(|raw| parse_max_per_minute(&raw))
            .transpose()
            .unwrap_or_else(|why| {
                problems.push(why);
                None
            });
        let smtp = match get("SMTP_URL", &mut problems) {
            Some(raw) => match parse_smtp_url(&raw, smtp_timeout) {
                Ok(settings) => Some(settings),
                Err(why) => {
                    problems.push(format!("SMTP_URL {why}"));
                    None
                }
            },
            None => {
                missing(
                    "SMTP_URL",
                    &mut problems,
                    "e.g. smtp://user:pass@smtp.example.com:587?tls=required",
                );
                None
            }
        };

        let secret = match get("JWT_SECRET", &mut problems) {
            Some(raw) if raw.len() >= MIN_JWT_SECRET_BYTES => {
                Some((SecretString::from(raw), false))
            }
            Some(raw) => {
                problems.push(format!(
                    "JWT_SECRET must be at least {MIN_JWT_SECRET_BYTES} bytes, it has {}",
                    raw.len()
                ));
                None
            }
            None if mode == Mode::Dev => Some((random_secret(), true)),
            None => {
                missing(
                    "JWT_SECRET",
                    &mut problems,
                    "a random key of at least 32 bytes, e.g. from `openssl rand -base64 48`",
                );
                None
            }
        };
        let previous_secret = match get("JWT_SECRET_PREVIOUS", &mut problems) {
            Some(raw) if raw.len() >= MIN_JWT_SECRET_BYTES => Some(SecretString::from(raw)),
            Some(raw) => {
                problems.push(format!(
                    "JWT_SECRET_PREVIOUS must be at least {MIN_JWT_SECRET_BYTES} bytes, it has {}",
                    raw.len()
                ));
                None
            }
            None => None,
        };
        let ttl = match get("JWT_TTL_SECONDS", &mut problems) {
            Some(raw) => match raw.trim().parse::<u64>() {
                Ok(secs) if (60..=30 * 24 * 3600).contains(&secs) => Duration::from_secs(secs),
                _ => {
                    problems.push(format!(
                        "JWT_TTL_SECONDS must be a whole number of seconds from 60 to 2592000, got {raw:?}"
                    ));
                    DEFAULT_JWT_TTL
                }
            },
            None => DEFAULT_JWT_TTL,
        };

        let mail_from = match get("MAIL_FROM", &mut problems) {
            Some(raw) => match raw.trim().parse::<Mailbox>() {
                Ok(mailbox) => Some(mailbox),
                Err(e) => {
                    problems.push(format!(
                        "MAIL_FROM must be a mailbox such as `Onboarding <no-reply@example.com>`: {e}"
                    ));
                    None
                }
            },
            None if mode == Mode::Dev => LOCAL_MAIL_FROM.parse::<Mailbox>().ok(),
            None => {
                missing(
                    "MAIL_FROM",
                    &mut problems,
                    "the sender, e.g. `Onboarding <no-reply@example.com>`",
                );
                None
            }
        };

        let public_url = match get("PUBLIC_URL", &mut problems) {
            Some(raw) => match Url::parse(raw.trim()) {
                Ok(url) if matches!(url.scheme(), "http" | "https") && url.has_host() => Some(url),
                _ => {
                    problems.push(format!(
                        "PUBLIC_URL must be an absolute http(s) URL such as https://app.example.com, got {raw:?}"
                    ));
                    None
                }
            },
            None => None,
        };

        let key_prefix = get("REDIS_KEY_PREFIX", &mut problems)
            .map(|p| p.trim().to_owned())
            .unwrap_or_else(|| DEFAULT_KEY_PREFIX.to_owned());
        if key_prefix.contains(['{', '}']) || key_prefix.chars().any(char::is_whitespace) {
            problems.push(
                "REDIS_KEY_PREFIX must not contain braces or whitespace (braces would change \
                 which cluster slot a key lives in)"
                    .to_owned(),
            );
        }

        match (secret, mail_from) {
            (Some((secret, generated)), Some(mail_from)) if problems.is_empty() => Ok(Self {
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
            _ => Err(ConfigError { problems }),
        }
    }
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
