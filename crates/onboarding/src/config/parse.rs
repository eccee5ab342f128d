//! Parsers for each setting's text: `Ok` with the typed value, or `Err` with a sentence naming
//! the setting and what is wrong, never its value when that is a secret.

use std::num::NonZeroU32;
use std::time::Duration;

use lettre::message::Mailbox;
use secrecy::SecretString;
use url::Url;

use super::{
    MAX_PER_MINUTE, MIN_JWT_SECRET_BYTES, RedisCredential, RedisSettings, SEND_WINDOW_SECONDS,
    SmtpSettings,
};

/// `FUNCTIONS_CUSTOMHANDLER_PORT`: a port number the host chose.
pub(super) fn parse_port(raw: &str) -> Result<u16, String> {
    match raw.trim().parse::<u16>() {
        Ok(port) if port != 0 => Ok(port),
        _ => Err(format!(
            "FUNCTIONS_CUSTOMHANDLER_PORT must be a port number from 1 to 65535, got {raw:?}"
        )),
    }
}

/// A whole number of seconds within `range`.
pub(super) fn parse_seconds(
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
pub(super) fn parse_jwt_secret(name: &str, raw: &str) -> Result<SecretString, String> {
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
pub(super) fn parse_mail_from(raw: &str) -> Result<Mailbox, String> {
    raw.trim().parse::<Mailbox>().map_err(|e| {
        format!("MAIL_FROM must be a mailbox such as `Onboarding <no-reply@example.com>`: {e}")
    })
}

/// `PUBLIC_URL`: an absolute http(s) URL with a host.
pub(super) fn parse_public_url(raw: &str) -> Result<Url, String> {
    match Url::parse(raw.trim()) {
        Ok(url) if matches!(url.scheme(), "http" | "https") && url.has_host() => Ok(url),
        _ => Err(format!(
            "PUBLIC_URL must be an absolute http(s) URL such as https://app.example.com, got {raw:?}"
        )),
    }
}

/// `REDIS_KEY_PREFIX`: no braces (they would move keys between cluster slots), no whitespace.
pub(super) fn parse_key_prefix(raw: &str) -> Result<String, String> {
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
pub(super) fn parse_send_window(raw: &str) -> Result<Duration, String> {
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
pub(super) fn parse_max_per_minute(raw: &str) -> Result<NonZeroU32, String> {
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
pub(super) fn parse_redis_url(raw: &str) -> Result<RedisSettings, String> {
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
        credential: RedisCredential::Url,
        ca: None,
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
pub(super) fn parse_smtp_url(raw: &str, timeout: Duration) -> Result<SmtpSettings, String> {
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
