//! Microsoft Entra ID for Redis, without a Redis secret: tokens from the app's user-assigned
//! managed identity, used as the Redis password with the identity's object id as the user, and
//! renewed on every connection before they expire.
//! <https://learn.microsoft.com/en-us/azure/redis/entra-for-authentication>
//!
//! Our own provider rather than redis-rs's `entra-id` feature: that one needs `azure_identity`
//! with OpenSSL (we build with rustls only), renews only 4 minutes before expiry, and stops
//! renewing for good after three failed fetches.

mod provider;
mod schedule;
mod token;

pub use provider::ManagedIdentityCredentials;
pub use token::TokenError;

use crate::config::{RedisCredential, RedisSettings};

/// The credentials provider `settings` ask for: `Some` with `REDIS_CREDENTIAL=managedidentity`,
/// `None` when `REDIS_URL` carries the credential itself. Hand it to
/// `ConnectionManagerConfig::set_credentials_provider` (single node) or
/// `ClusterClientBuilder::set_credentials_provider` (cluster): every connection, including one
/// opened after a reconnect, a failover or a `MOVED`, then authenticates with a current token.
///
/// Starts fetching the first token at once, so it must be called inside a Tokio runtime.
pub fn credentials_provider(
    settings: &RedisSettings,
) -> Result<Option<ManagedIdentityCredentials>, TokenError> {
    let RedisCredential::ManagedIdentity(identity) = &settings.credential else {
        return Ok(None);
    };
    if !settings.is_tls() {
        tracing::warn!(
            "Redis: Entra ID over plain redis:// to {}: Azure accepts Entra ID tokens over TLS \
             only (rediss://), so this works only against a local or test server",
            settings.display
        );
    }
    let source = token::TokenSource::new(identity.clone())?;
    Ok(Some(ManagedIdentityCredentials::start(source)))
}
