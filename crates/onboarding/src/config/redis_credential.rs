//! `REDIS_CREDENTIAL`: how the handler proves who it is to Redis. Either whatever `REDIS_URL`
//! carries (an access key as its password, or nothing), or Microsoft Entra ID tokens from the
//! app's user-assigned managed identity, which leaves no Redis secret anywhere.

use secrecy::SecretString;
use url::Url;

use super::RedisSettings;
use super::reader::{Reader, Value};

/// The one `REDIS_CREDENTIAL` value understood besides unset. It mirrors the Functions host's
/// own identity-based connections (`<connection>__credential = managedidentity`, with
/// `<connection>__clientId`), which the Bicep uses for storage and Service Bus.
pub const MANAGED_IDENTITY: &str = "managedidentity";

/// How the handler authenticates to Redis.
#[derive(Debug, Clone)]
pub enum RedisCredential {
    /// Whatever `REDIS_URL` carries: an access key as its password, or nothing at all.
    Url,
    /// Entra ID tokens from the managed identity endpoint (`REDIS_CREDENTIAL=managedidentity`):
    /// the token is the password, and its `oid` claim the Redis user.
    ManagedIdentity(ManagedIdentity),
}

/// Where and as whom to ask for Entra ID tokens: App Service's local token service, which
/// Azure Functions sets up for every app with a managed identity.
/// <https://learn.microsoft.com/en-us/azure/app-service/overview-managed-identity#rest-endpoint-reference>
#[derive(Debug, Clone)]
pub struct ManagedIdentity {
    /// `IDENTITY_ENDPOINT`, set by the platform (a local `http://` URL on App Service).
    pub endpoint: Url,
    /// `IDENTITY_HEADER`, set by the platform and sent as `X-IDENTITY-HEADER`: it guards the
    /// endpoint against server-side request forgery, so it is treated as a secret.
    pub header: SecretString,
    /// `REDIS_CLIENT_ID`: the client id of the user-assigned identity that holds the Redis
    /// access policy. An app may have several user-assigned identities, and the endpoint
    /// requires one to be named.
    pub client_id: String,
}

impl RedisSettings {
    /// Where Redis is and how the handler signs in, for the banner and logs (no credentials).
    pub fn describe(&self) -> String {
        match &self.credential {
            RedisCredential::Url => self.display.clone(),
            RedisCredential::ManagedIdentity(identity) => format!(
                "{} (Entra ID: managed identity {})",
                self.display, identity.client_id
            ),
        }
    }
}

impl RedisCredential {
    /// True when the handler authenticates with Entra ID tokens.
    pub fn is_managed_identity(&self) -> bool {
        matches!(self, Self::ManagedIdentity(_))
    }
}

/// Reads `REDIS_CREDENTIAL` and what it needs, adding it to `redis` (the parsed `REDIS_URL`,
/// if any; `url_given` when it was set at all, even if refused). Every problem is recorded, so
/// one run names all of them.
pub(super) fn read_credential(
    read: &mut Reader<'_>,
    redis: Option<RedisSettings>,
    url_given: bool,
) -> Option<RedisSettings> {
    let wanted = read.optional("REDIS_CREDENTIAL", parse_kind);
    let client_id = read.value("REDIS_CLIENT_ID");
    let Some(Kind::ManagedIdentity) = wanted else {
        if !matches!(client_id, Value::Missing) {
            read.problems.push(format!(
                "REDIS_CLIENT_ID is set but REDIS_CREDENTIAL is not `{MANAGED_IDENTITY}`: set \
                 REDIS_CREDENTIAL={MANAGED_IDENTITY} to use the identity, or remove \
                 REDIS_CLIENT_ID"
            ));
        }
        return redis;
    };
    let client_id = needed(
        read,
        "REDIS_CLIENT_ID",
        client_id,
        "the client id of the user-assigned identity that has an access policy on the Redis \
         database",
        parse_client_id,
    );
    // Both are set by the platform once the app has a managed identity; nothing can stand in
    // for them, so they are needed in dev runs too.
    let platform = "the managed identity endpoint, which App Service and Azure Functions provide \
                    (IDENTITY_ENDPOINT, IDENTITY_HEADER) once the app has a managed identity";
    let value = read.value("IDENTITY_ENDPOINT");
    let endpoint = needed(read, "IDENTITY_ENDPOINT", value, platform, parse_endpoint);
    let value = read.value("IDENTITY_HEADER");
    let header = needed(read, "IDENTITY_HEADER", value, platform, |raw| {
        Ok(SecretString::from(raw.trim().to_owned()))
    });
    if let Some(settings) = &redis {
        if settings.has_credentials_in_url() {
            read.problems.push(format!(
                "REDIS_URL carries a user name or password, but REDIS_CREDENTIAL is \
                 `{MANAGED_IDENTITY}`: the Entra ID token is the password and its object id the \
                 user, so remove them from REDIS_URL (e.g. rediss://name.region.redis.azure.net:10000)"
            ));
        }
    } else if !url_given && !read.serving {
        // Under the host a missing REDIS_URL is already reported; `handler dev` would silently
        // fall back to the in-memory store and ignore the credential.
        read.problems.push(format!(
            "REDIS_CREDENTIAL is `{MANAGED_IDENTITY}` but REDIS_URL is not set: set REDIS_URL, \
             or remove REDIS_CREDENTIAL to use the in-memory store"
        ));
    }
    let identity = ManagedIdentity {
        endpoint: endpoint?,
        header: header?,
        client_id: client_id?,
    };
    let mut settings = redis?;
    settings.credential = RedisCredential::ManagedIdentity(identity);
    Some(settings)
}

/// What `REDIS_CREDENTIAL` asks for.
enum Kind {
    ManagedIdentity,
}

fn parse_kind(raw: &str) -> Result<Kind, String> {
    if raw.trim().eq_ignore_ascii_case(MANAGED_IDENTITY) {
        Ok(Kind::ManagedIdentity)
    } else {
        Err(format!(
            "REDIS_CREDENTIAL must be `{MANAGED_IDENTITY}` (Entra ID with the app's \
             user-assigned identity) or unset (the password in REDIS_URL, if any), got {raw:?}"
        ))
    }
}

/// A client id is a GUID; anything else would only fail later, at the token endpoint.
fn parse_client_id(raw: &str) -> Result<String, String> {
    uuid::Uuid::parse_str(raw.trim())
        .map(|id| id.hyphenated().to_string())
        .map_err(|_| {
            format!(
                "REDIS_CLIENT_ID must be the client id (a GUID) of the user-assigned managed \
                 identity, got {raw:?}"
            )
        })
}

fn parse_endpoint(raw: &str) -> Result<Url, String> {
    match Url::parse(raw.trim()) {
        Ok(url) if matches!(url.scheme(), "http" | "https") && url.has_host() => Ok(url),
        _ => Err(format!(
            "IDENTITY_ENDPOINT must be the http(s) URL of the managed identity endpoint, got {raw:?}"
        )),
    }
}

/// A setting `REDIS_CREDENTIAL=managedidentity` cannot do without, in dev runs too: its parsed
/// value, or `None` with the problem recorded (`what` says what it is for when it is missing).
fn needed<T>(
    read: &mut Reader<'_>,
    name: &str,
    value: Value,
    what: &str,
    parse: impl FnOnce(&str) -> Result<T, String>,
) -> Option<T> {
    match value {
        Value::Present(raw) => read.parsed(parse(&raw)),
        Value::Reported => None,
        Value::Missing => {
            read.problems.push(format!(
                "{name} is not set: REDIS_CREDENTIAL={MANAGED_IDENTITY} needs {what}"
            ));
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::super::{Mode, Settings, expose};
    use super::*;

    const CLIENT_ID: &str = "5e29463d-7c2f-4e9b-9a57-3f3e8f2b6c01";
    const HEADER: &str = "identity-header-hunter2";

    fn base() -> Vec<(&'static str, &'static str)> {
        vec![
            ("FUNCTIONS_CUSTOMHANDLER_PORT", "7000"),
            (
                "REDIS_URL",
                "rediss://cache.westeurope.redis.azure.net:10000",
            ),
            ("JWT_SECRET", "0123456789abcdef0123456789abcdef-very-secret"),
            ("SMTP_URL", "smtp://127.0.0.1:2525"),
            ("MAIL_FROM", "Onboarding <no-reply@example.com>"),
        ]
    }

    fn managed_identity() -> Vec<(&'static str, &'static str)> {
        let mut pairs = base();
        pairs.extend([
            ("REDIS_CREDENTIAL", "managedidentity"),
            ("REDIS_CLIENT_ID", CLIENT_ID),
            ("IDENTITY_ENDPOINT", "http://127.0.0.1:41741/msi/token/"),
            ("IDENTITY_HEADER", HEADER),
        ]);
        pairs
    }

    /// Later pairs win, so a test can override one setting by pushing it again.
    fn settings(mode: Mode, pairs: &[(&str, &str)]) -> Result<Settings, super::super::ConfigError> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Settings::from_lookup(mode, move |name| map.get(name).cloned())
    }

    fn without(
        mut pairs: Vec<(&'static str, &'static str)>,
        names: &[&str],
    ) -> Vec<(&'static str, &'static str)> {
        pairs.retain(|(k, _)| !names.contains(k));
        pairs
    }

    #[test]
    fn without_redis_credential_the_url_is_the_credential() {
        let settings = settings(Mode::Serve, &base()).unwrap();
        assert!(matches!(
            settings.redis.unwrap().credential,
            RedisCredential::Url
        ));
    }

    #[test]
    fn managed_identity_settings_are_accepted() {
        let settings = settings(Mode::Serve, &managed_identity()).unwrap();
        let redis = settings.redis.unwrap();
        assert!(redis.is_tls());
        let RedisCredential::ManagedIdentity(identity) = redis.credential else {
            panic!("expected a managed identity credential");
        };
        assert_eq!(identity.client_id, CLIENT_ID);
        assert_eq!(
            identity.endpoint.as_str(),
            "http://127.0.0.1:41741/msi/token/"
        );
        assert_eq!(expose(&identity.header), HEADER);
    }

    #[test]
    fn the_credential_name_is_case_insensitive_as_the_hosts_is() {
        let mut pairs = managed_identity();
        pairs.push(("REDIS_CREDENTIAL", "ManagedIdentity"));
        let redis = settings(Mode::Serve, &pairs).unwrap().redis.unwrap();
        assert!(redis.credential.is_managed_identity());
    }

    #[test]
    fn managed_identity_without_the_endpoint_header_or_client_id_names_all_three() {
        let pairs = without(
            managed_identity(),
            &["IDENTITY_ENDPOINT", "IDENTITY_HEADER", "REDIS_CLIENT_ID"],
        );
        let err = settings(Mode::Serve, &pairs).unwrap_err();
        assert_eq!(err.problems.len(), 3, "{err}");
        for name in ["IDENTITY_ENDPOINT", "IDENTITY_HEADER", "REDIS_CLIENT_ID"] {
            assert!(
                err.problems
                    .iter()
                    .any(|p| p.starts_with(&format!("{name} is not set"))),
                "{name} not named: {err}"
            );
        }
    }

    #[test]
    fn managed_identity_is_checked_together_with_every_other_setting() {
        let pairs = without(managed_identity(), &["IDENTITY_HEADER", "MAIL_FROM"]);
        let err = settings(Mode::Serve, &pairs).unwrap_err();
        assert_eq!(err.problems.len(), 2, "{err}");
    }

    #[test]
    fn a_password_in_the_url_together_with_managed_identity_is_refused_without_showing_it() {
        let mut pairs = managed_identity();
        pairs.push((
            "REDIS_URL",
            "rediss://:access-key-hunter2@cache.westeurope.redis.azure.net:10000",
        ));
        let err = settings(Mode::Serve, &pairs).unwrap_err();
        assert_eq!(err.problems.len(), 1, "{err}");
        assert!(err.problems[0].starts_with("REDIS_URL carries a user name or password"));
        assert!(!err.to_string().contains("hunter2"), "{err}");
    }

    #[test]
    fn the_portal_form_with_a_password_is_refused_too() {
        let mut pairs = managed_identity();
        pairs.push((
            "REDIS_URL",
            "cache.redis.cache.windows.net:6380,password=hunter2,ssl=True",
        ));
        let err = settings(Mode::Serve, &pairs).unwrap_err();
        assert!(err.problems[0].starts_with("REDIS_URL carries"), "{err}");
    }

    #[test]
    fn an_unknown_credential_is_named() {
        let mut pairs = base();
        pairs.push(("REDIS_CREDENTIAL", "accesskey"));
        let err = settings(Mode::Serve, &pairs).unwrap_err();
        assert_eq!(err.problems.len(), 1, "{err}");
        assert!(err.problems[0].starts_with("REDIS_CREDENTIAL must be `managedidentity`"));
    }

    #[test]
    fn a_client_id_without_the_credential_is_a_mistake_worth_naming() {
        let mut pairs = base();
        pairs.push(("REDIS_CLIENT_ID", CLIENT_ID));
        let err = settings(Mode::Serve, &pairs).unwrap_err();
        assert!(
            err.problems[0].starts_with("REDIS_CLIENT_ID is set but"),
            "{err}"
        );
    }

    #[test]
    fn a_client_id_that_is_not_a_guid_and_a_bad_endpoint_are_both_named() {
        let mut pairs = managed_identity();
        pairs.push(("REDIS_CLIENT_ID", "my-identity"));
        pairs.push(("IDENTITY_ENDPOINT", "localhost:41741"));
        let err = settings(Mode::Serve, &pairs).unwrap_err();
        assert_eq!(err.problems.len(), 2, "{err}");
        assert!(
            err.to_string()
                .contains("REDIS_CLIENT_ID must be the client id")
        );
        assert!(err.to_string().contains("IDENTITY_ENDPOINT must be"));
    }

    #[test]
    fn the_identity_header_never_appears_in_debug_output() {
        let settings = settings(Mode::Serve, &managed_identity()).unwrap();
        let debug = format!("{settings:?}");
        assert!(!debug.contains(HEADER), "{debug}");
        assert!(debug.contains(CLIENT_ID), "{debug}");
    }

    #[test]
    fn dev_runs_need_a_redis_url_for_managed_identity() {
        let pairs = without(managed_identity(), &["REDIS_URL"]);
        let err = settings(Mode::Dev, &pairs).unwrap_err();
        assert_eq!(err.problems.len(), 1, "{err}");
        assert!(err.problems[0].contains("REDIS_URL is not set"), "{err}");
    }

    #[test]
    fn an_unusable_url_is_named_once_not_also_as_missing() {
        let mut pairs = managed_identity();
        pairs.push(("REDIS_URL", "http://cache:6379"));
        for mode in [Mode::Serve, Mode::Dev] {
            let err = settings(mode, &pairs).unwrap_err();
            assert_eq!(err.problems.len(), 1, "{err}");
            assert!(err.problems[0].starts_with("REDIS_URL must use"), "{err}");
        }
    }

    #[test]
    fn plain_redis_is_accepted_with_managed_identity_for_loopback_tests() {
        let mut pairs = managed_identity();
        pairs.push(("REDIS_URL", "redis://127.0.0.1:6379"));
        let redis = settings(Mode::Serve, &pairs).unwrap().redis.unwrap();
        assert!(redis.credential.is_managed_identity() && !redis.is_tls());
    }
}
