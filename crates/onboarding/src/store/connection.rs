//! The one place Redis connections are made. The server is asked once, on first use, whether it
//! runs in cluster mode (`INFO cluster` → `cluster_enabled:1`, as an Azure Managed Redis with the
//! default OSS clustering policy does); the store then talks through a [`Link`]: one
//! self-reconnecting connection to a single server, or a cluster connection that follows
//! `MOVED`, failovers and resharding. Credentials come from the URL, or from Entra ID tokens
//! ([`ManagedIdentityCredentials`]), which sign in every connection of both kinds, the probe
//! included, and re-authenticate each with every new token.
//!
//! Azure Managed Redis's OSS clustering policy (its default) implements the Redis Cluster API:
//! the client finds the shards and follows redirections itself,
//! <https://learn.microsoft.com/azure/redis/choose-clustering-policy>.

use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
use redis::{Cmd, Pipeline, RedisFuture, RedisResult, Value};
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::OnceCell;

use super::entra::ManagedIdentityCredentials;

/// Bound on opening a connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// Whether the server is one node or a cluster, as it said itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Mode {
    /// One server (or a proxy in front of a cluster, like Azure's Enterprise policy).
    Single,
    /// Cluster mode: the client follows the slot map itself.
    Cluster,
}

/// A usable connection of either kind; cheap to clone (both are handles to one multiplexed
/// connection per node).
#[derive(Clone)]
pub(super) enum Link {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl Link {
    /// Which kind this is.
    pub(super) fn mode(&self) -> Mode {
        match self {
            Self::Single(_) => Mode::Single,
            Self::Cluster(_) => Mode::Cluster,
        }
    }

    /// Sends a command without a key (`CLUSTER NODES`, `INFO`) to some node: in a cluster, a
    /// random one, whose own view is the answer.
    pub(super) async fn query_any(&mut self, cmd: &Cmd) -> RedisResult<Value> {
        match self {
            Self::Single(connection) => cmd.query_async(connection).await,
            Self::Cluster(connection) => {
                let routing = RoutingInfo::SingleNode(SingleNodeRoutingInfo::Random);
                connection.route_command(cmd.clone(), routing).await
            }
        }
    }
}

impl ConnectionLike for Link {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Single(connection) => connection.req_packed_command(cmd),
            Self::Cluster(connection) => connection.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Single(connection) => connection.req_packed_commands(pipeline, offset, count),
            Self::Cluster(connection) => connection.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Single(connection) => connection.get_db(),
            Self::Cluster(connection) => connection.get_db(),
        }
    }
}

/// Makes the [`Link`] on first use and keeps it: the handler opens its port before Redis is
/// reached, and a Redis that is down at start is simply asked again by the next request.
pub(super) struct Connector {
    url: SecretString,
    client: redis::Client,
    operation_timeout: Duration,
    credentials: Option<ManagedIdentityCredentials>,
    link: OnceCell<Link>,
}

impl Connector {
    /// Checks the URL without connecting.
    pub(super) fn new(
        url: &SecretString,
        operation_timeout: Duration,
        credentials: Option<ManagedIdentityCredentials>,
    ) -> RedisResult<Self> {
        Ok(Self {
            url: url.clone(),
            client: redis::Client::open(url.expose_secret())?,
            operation_timeout,
            credentials,
            link: OnceCell::new(),
        })
    }

    /// The link, made on the first call that reaches the server.
    pub(super) async fn link(&self) -> RedisResult<Link> {
        self.link.get_or_try_init(|| self.open()).await.cloned()
    }

    /// Asks the server which kind it is, then builds the matching connection.
    async fn open(&self) -> RedisResult<Link> {
        let mut config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(self.operation_timeout));
        if let Some(credentials) = &self.credentials {
            config = config.set_credentials_provider(credentials.clone());
        }
        let mut probe = self
            .client
            .get_multiplexed_async_connection_with_config(&config)
            .await?;
        let info: String = redis::cmd("INFO")
            .arg("cluster")
            .query_async(&mut probe)
            .await?;
        if is_cluster_enabled(&info) {
            tracing::info!("Redis runs in cluster mode: using a cluster connection");
            self.open_cluster().await
        } else {
            self.open_single().map(Link::Single)
        }
    }

    fn open_single(&self) -> RedisResult<ConnectionManager> {
        let mut config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(self.operation_timeout))
            .set_number_of_retries(1)
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_millis(500));
        // The same config, provider included, serves every reconnect: a new connection opens
        // with the current token.
        if let Some(credentials) = &self.credentials {
            config = config.set_credentials_provider(credentials.clone());
        }
        ConnectionManager::new_lazy_with_config(self.client.clone(), config)
    }

    /// The cluster connection: TLS and the password come from the URL (the builder takes them
    /// from the first node). A failed node's slots are looked up again on the next error or
    /// `MOVED`; retries are few because each store operation is bounded to 2 s anyway.
    async fn open_cluster(&self) -> RedisResult<Link> {
        let mut builder = ClusterClient::builder([self.url.expose_secret()])
            .connection_timeout(CONNECT_TIMEOUT)
            .response_timeout(self.operation_timeout)
            .retries(4)
            .min_retry_wait(50)
            .max_retry_wait(400);
        // Every node's connection, including one opened after a failover or a `MOVED` to a new
        // node, signs in with the current token.
        if let Some(credentials) = &self.credentials {
            builder = builder.set_credentials_provider(credentials.clone());
        }
        let client = builder.build()?;
        Ok(Link::Cluster(client.get_async_connection().await?))
    }
}

/// Reads `cluster_enabled:1` out of `INFO cluster`.
fn is_cluster_enabled(info: &str) -> bool {
    info.lines().any(|line| line.trim() == "cluster_enabled:1")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_mode_is_read_from_info_cluster() {
        assert!(is_cluster_enabled("# Cluster\r\ncluster_enabled:1\r\n"));
        assert!(!is_cluster_enabled("# Cluster\r\ncluster_enabled:0\r\n"));
        assert!(!is_cluster_enabled(""));
    }
}
