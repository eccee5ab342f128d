//! The Entra ID credentials provider redis-rs asks for: one refresh task per process keeps the
//! current token in a watch channel, and every Redis connection subscribes to it. A connection
//! takes the current token when it opens (the handshake's `AUTH`) and re-`AUTH`s with each new
//! one (redis-rs `MultiplexedConnection`, feature `token-based-authentication`).

use std::pin::Pin;
use std::time::Duration;

use futures_util::Stream;
use redis::{BasicAuth, RedisResult, StreamingCredentialsProvider};
use tokio::sync::watch;
use tokio::time::Instant;

use super::schedule::{refresh_after, retry_after};
use super::token::{AccessToken, TokenSource};
use crate::config::expose;

/// Entra ID credentials for Redis connections: the managed identity's object id and a token
/// that is always current. Cloning is cheap and every clone follows the same refresh task, so
/// one value can be handed to a `ConnectionManagerConfig` and a `ClusterClientBuilder` alike.
#[derive(Clone)]
pub struct ManagedIdentityCredentials {
    current: watch::Receiver<Option<BasicAuth>>,
}

impl ManagedIdentityCredentials {
    /// Starts fetching tokens at once, in a task on the current Tokio runtime, which ends when
    /// the last clone (and the last connection's subscription) is gone.
    pub(super) fn start(source: TokenSource) -> Self {
        let (sender, current) = watch::channel(None);
        tokio::spawn(keep_current(source, sender));
        Self { current }
    }
}

impl std::fmt::Debug for ManagedIdentityCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ManagedIdentityCredentials")
            .finish_non_exhaustive()
    }
}

impl StreamingCredentialsProvider for ManagedIdentityCredentials {
    /// The current token first (waiting for the first one if none has come yet), then each new
    /// one as it arrives. Never an error: while the endpoint fails the last good token stays
    /// current, because an `Err` would fail a connection being opened and end a live
    /// connection's re-authentication for good.
    fn subscribe(&self) -> Pin<Box<dyn Stream<Item = RedisResult<BasicAuth>> + Send + 'static>> {
        let current = self.current.clone();
        Box::pin(futures_util::stream::unfold(
            (current, true),
            |(mut current, first)| async move {
                if !first {
                    current.changed().await.ok()?;
                }
                loop {
                    let latest = current.borrow_and_update().clone();
                    if let Some(credentials) = latest {
                        return Some((Ok(credentials), (current, false)));
                    }
                    current.changed().await.ok()?;
                }
            },
        ))
    }
}

/// The refresh task: fetch, publish, sleep until the schedule says, again; on failure keep the
/// last good token and retry with backoff.
async fn keep_current(source: TokenSource, sender: watch::Sender<Option<BasicAuth>>) {
    let mut expires_at: Option<Instant> = None;
    loop {
        let Some(token) = fetch_until_success(&source, &sender, expires_at).await else {
            return;
        };
        let wait = refresh_after(token.life, rand::random());
        expires_at = Some(Instant::now() + token.life);
        tracing::info!(
            redis_user = %token.user,
            valid_for_s = token.life.as_secs(),
            next_refresh_in_s = wait.as_secs(),
            "Redis: new Entra ID token from the managed identity endpoint"
        );
        let credentials = BasicAuth::new(token.user, expose(&token.secret).to_owned());
        sender.send_replace(Some(credentials));
        if !sleep_unless_unused(&sender, wait).await {
            return;
        }
    }
}

/// Tries until a token comes; `None` once nobody listens any more. Failures are logged
/// without the token or the header: a warning while the current token is valid (connections
/// are unaffected), an error once it has expired.
async fn fetch_until_success(
    source: &TokenSource,
    sender: &watch::Sender<Option<BasicAuth>>,
    expires_at: Option<Instant>,
) -> Option<AccessToken> {
    let mut failures = 0;
    loop {
        match source.fetch().await {
            Ok(token) => {
                if failures > 0 {
                    tracing::info!(
                        failures,
                        "Redis: the managed identity endpoint answers again"
                    );
                }
                return Some(token);
            }
            Err(e) => {
                let left = expires_at.map(|at| at.saturating_duration_since(Instant::now()));
                let wait = retry_after(failures, left, rand::random());
                failures += 1;
                match left {
                    Some(left) if !left.is_zero() => tracing::warn!(
                        failures,
                        retry_in_ms = wait.as_millis() as u64,
                        current_token_valid_for_s = left.as_secs(),
                        "Redis: no new Entra ID token ({e}); keeping the current one"
                    ),
                    _ => tracing::error!(
                        failures,
                        retry_in_ms = wait.as_millis() as u64,
                        "Redis: no valid Entra ID token ({e}); new Redis connections will be \
                         refused until the managed identity endpoint answers"
                    ),
                }
                if !sleep_unless_unused(sender, wait).await {
                    return None;
                }
            }
        }
    }
}

/// Sleeps for `wait`; false if every receiver was dropped meanwhile (the task should end).
async fn sleep_unless_unused(sender: &watch::Sender<Option<BasicAuth>>, wait: Duration) -> bool {
    tokio::select! {
        () = tokio::time::sleep(wait) => true,
        () = sender.closed() => false,
    }
}

#[cfg(test)]
mod tests {
    use futures_util::StreamExt as _;

    use super::*;

    fn credentials(password: &str) -> Option<BasicAuth> {
        Some(BasicAuth::new("oid".to_owned(), password.to_owned()))
    }

    #[tokio::test]
    async fn a_subscription_starts_with_the_current_token_then_follows_each_new_one() {
        let (sender, current) = watch::channel(credentials("first"));
        let provider = ManagedIdentityCredentials { current };
        let mut stream = provider.subscribe();
        let first = stream.next().await.unwrap().unwrap();
        assert_eq!((first.username(), first.password()), ("oid", "first"));
        sender.send_replace(credentials("second"));
        assert_eq!(stream.next().await.unwrap().unwrap().password(), "second");
        // A later subscriber (a new connection) starts with the newest.
        let mut late = provider.subscribe();
        assert_eq!(late.next().await.unwrap().unwrap().password(), "second");
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_opened_before_the_first_token_waits_for_it() {
        let (sender, current) = watch::channel(None);
        let provider = ManagedIdentityCredentials { current };
        let mut stream = provider.subscribe();
        let waiting = tokio::time::timeout(Duration::from_secs(1), stream.next()).await;
        assert!(waiting.is_err(), "no token yet, so nothing to yield");
        sender.send_replace(credentials("first"));
        assert_eq!(stream.next().await.unwrap().unwrap().password(), "first");
    }

    #[tokio::test]
    async fn the_stream_ends_when_the_refresh_task_is_gone() {
        let (sender, current) = watch::channel(credentials("only"));
        let provider = ManagedIdentityCredentials { current };
        let mut stream = provider.subscribe();
        assert!(stream.next().await.is_some());
        drop(sender);
        assert!(stream.next().await.is_none());
    }

    #[test]
    fn debug_output_shows_no_token() {
        let (_sender, current) = watch::channel(credentials("hunter2-token"));
        let debug = format!("{:?}", ManagedIdentityCredentials { current });
        assert!(!debug.contains("hunter2"), "{debug}");
    }
}
