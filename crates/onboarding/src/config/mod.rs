//! Settings from the environment (Azure app settings), validated together at start so one run
//! reports every problem at once.

use std::fmt;
use std::num::NonZeroU32;
use std::time::Duration;

use lettre::message::Mailbox;
use secrecy::{ExposeSecret, SecretString};
use url::Url;

pub use limits::{
    FAILED_SIGN_INS_PER_ACCOUNT, FAILED_SIGN_INS_PER_ADDRESS, LimitSetting, Limits,
    SIGN_UPS_PER_ADDRESS, SIGN_UPS_PER_MAILBOX, VERIFY_RESENDS_PER_USER,
};
use parse::{
    parse_jwt_secret, parse_key_prefix, parse_mail_from, parse_max_per_minute, parse_port,
    parse_public_url, parse_redis_url, parse_seconds, parse_send_window, parse_smtp_url,
};
use reader::{Reader, Value};
pub use redis_ca::RedisCa;
pub use redis_credential::{MANAGED_IDENTITY, ManagedIdentity, RedisCredential};

mod limits;
mod parse;
mod reader;
mod redis_ca;
mod redis_credential;

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
    /// How the handler authenticates: the URL's own password, or Entra ID tokens.
    pub credential: RedisCredential,
    /// `REDIS_CA_CERT`: the CA to verify the server against instead of the public roots (a
    /// private CA); `None` trusts the public roots, as Azure Managed Redis needs.
    pub ca: Option<RedisCa>,
}

impl RedisSettings {
    /// True when `url` names a user or a password, which Entra ID replaces with its own.
    pub fn has_credentials_in_url(&self) -> bool {
        Url::parse(expose(&self.url))
            .map(|url| !url.username().is_empty() || url.password().is_some())
            .unwrap_or(false)
    }

    /// True when the connection is TLS (`rediss://`); Azure accepts Entra ID tokens over TLS only.
    pub fn is_tls(&self) -> bool {
        self.display.starts_with("rediss://")
    }
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
    /// The limits against abuse (`LIMIT_*`), shared by every instance through the store.
    pub limits: Limits,
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
        let url = read.value("REDIS_URL");
        let url_given = !matches!(url, Value::Missing);
        let redis = read.require(
            "REDIS_URL",
            "e.g. redis://127.0.0.1:6379 or rediss://:KEY@name.region.redis.azure.net:10000",
            url,
            |raw| parse_redis_url(raw).map_err(|why| format!("REDIS_URL {why}")),
        );
        let redis = redis_credential::read_credential(&mut read, redis, url_given);
        let redis = redis_ca::read_ca(&mut read, redis);
        let send_window = read
            .optional("SMTP_SEND_WINDOW_SECONDS", parse_send_window)
            .unwrap_or(DEFAULT_SEND_WINDOW);
        let max_per_minute = read.optional("SMTP_MAX_PER_MINUTE", parse_max_per_minute);
        let smtp = read_smtp(&mut read);
        let limits = limits::read_limits(&mut read);
        // Dev runs make up a key for the run (tokens end with it) and use a local sender.
        let jwt = read_jwt(&mut read, dev);
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

        match (jwt, mail_from) {
            (Some(jwt), Some(mail_from)) if read.problems.is_empty() => Ok(Self {
                listen_port,
                redis,
                smtp,
                jwt,
                mail_from,
                public_url,
                key_prefix,
                send_window,
                max_per_minute,
                limits,
            }),
            _ => Err(ConfigError {
                problems: read.problems,
            }),
        }
    }
}

/// `SMTP_URL` with its timeout (`SMTP_TIMEOUT_SECONDS`), which lettre needs when the transport is
/// built.
fn read_smtp(read: &mut Reader<'_>) -> Option<SmtpSettings> {
    let timeout = read
        .optional("SMTP_TIMEOUT_SECONDS", |raw| {
            parse_seconds("SMTP_TIMEOUT_SECONDS", raw, 1..=600)
        })
        .unwrap_or(DEFAULT_SMTP_TIMEOUT);
    read.required(
        "SMTP_URL",
        "e.g. smtp://user:pass@smtp.example.com:587?tls=required",
        |raw| parse_smtp_url(raw, timeout).map_err(|why| format!("SMTP_URL {why}")),
    )
}

/// The session-token keys and lifetime. Every setting is read, so a missing key does not hide a
/// problem with the others; `handler dev` makes a key up for the run when none is set.
fn read_jwt(read: &mut Reader<'_>, dev: bool) -> Option<JwtSettings> {
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
    let (secret, generated) = secret?;
    Some(JwtSettings {
        secret,
        previous_secret,
        ttl,
        generated,
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
    fn bad_limits_are_reported_together_with_the_other_problems() {
        let mut pairs = complete();
        pairs.retain(|(k, _)| *k != "MAIL_FROM");
        pairs.push(("LIMIT_SIGN_UPS_PER_ADDRESS", "lots"));
        pairs.push(("LIMIT_FAILED_SIGN_INS_PER_ACCOUNT", "0/1h"));
        let err = Settings::from_lookup(Mode::Serve, lookup(&pairs)).unwrap_err();
        assert_eq!(err.problems.len(), 3, "{err}");
        let text = err.to_string();
        for name in [
            "MAIL_FROM",
            "LIMIT_SIGN_UPS_PER_ADDRESS",
            "LIMIT_FAILED_SIGN_INS_PER_ACCOUNT",
        ] {
            assert!(text.contains(name), "{name} missing from {text}");
        }
        let mut pairs = complete();
        pairs.push(("LIMIT_SIGN_UPS_PER_MAILBOX", "2/10m"));
        let settings = Settings::from_lookup(Mode::Serve, lookup(&pairs)).unwrap();
        assert_eq!(settings.limits.sign_ups_per_mailbox.count.get(), 2);
        assert_eq!(
            settings.limits.sign_ups_per_mailbox.period,
            Duration::from_secs(600)
        );
        assert_eq!(
            settings.limits.sign_ups_per_address,
            Limits::default().sign_ups_per_address
        );
    }

    #[test]
    fn a_short_ttl_is_refused() {
        let mut pairs = complete();
        pairs.push(("JWT_TTL_SECONDS", "5"));
        let err = Settings::from_lookup(Mode::Serve, lookup(&pairs)).unwrap_err();
        assert!(err.to_string().contains("JWT_TTL_SECONDS"));
    }
}
