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

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
use redis::{Cmd, Pipeline, RedisFuture, RedisResult, TlsCertificates, Value};
use secrecy::{ExposeSecret, SecretString};

use super::entra::ManagedIdentityCredentials;
use super::names_watch::NamesWatch;
use super::node_names::{NodeNames, advertised_nodes};
use crate::config::RedisCa;

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
/// reached, and a Redis that is down at start is simply asked again by the next request. A TLS
/// cluster whose nodes are named after the seed ([`NodeNames`]) has its link rebuilt when its
/// nodes change ([`NamesWatch`]).
pub(super) struct Connector {
    url: SecretString,
    /// The host of a `rediss://` URL: the name every node's certificate is checked against.
    tls_host: Option<String>,
    client: redis::Client,
    operation_timeout: Duration,
    credentials: Option<ManagedIdentityCredentials>,
    ca: Option<RedisCa>,
    current: RwLock<Option<Link>>,
    opening: tokio::sync::Mutex<()>,
    watch: NamesWatch,
}

impl Connector {
    /// Checks the URL without connecting.
    pub(super) fn new(
        url: &SecretString,
        operation_timeout: Duration,
        credentials: Option<ManagedIdentityCredentials>,
        ca: Option<RedisCa>,
    ) -> RedisResult<Self> {
        let client = match &ca {
            Some(ca) => redis::Client::build_with_tls(url.expose_secret(), certificates(ca))?,
            None => redis::Client::open(url.expose_secret())?,
        };
        let tls_host = url::Url::parse(url.expose_secret())
            .ok()
            .filter(|parsed| parsed.scheme() == "rediss")
            .and_then(|parsed| parsed.host_str().map(str::to_owned));
        Ok(Self {
            url: url.clone(),
            tls_host,
            client,
            operation_timeout,
            credentials,
            ca,
            current: RwLock::new(None),
            opening: tokio::sync::Mutex::new(()),
            watch: NamesWatch::default(),
        })
    }

    /// The link, made on the first call that reaches the server. A check of the cluster's
    /// nodes starts in the background when one is due.
    pub(super) async fn link(self: &Arc<Self>) -> RedisResult<Link> {
        if let Some(link) = self.current() {
            self.check_names_if_due(&link);
            return Ok(link);
        }
        let _opening = self.opening.lock().await;
        if let Some(link) = self.current() {
            return Ok(link);
        }
        let link = self.open().await?;
        self.replace(link.clone());
        Ok(link)
    }

    /// Told by the store that an operation failed: a node the name table lacks may be why.
    pub(super) fn suspect(&self) {
        self.watch.hurry(Instant::now());
    }

    fn current(&self) -> Option<Link> {
        self.current
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    fn replace(&self, link: Link) {
        *self
            .current
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(link);
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
        if !is_cluster_enabled(&info) {
            return self.open_single().map(Link::Single);
        }
        tracing::info!("Redis runs in cluster mode: using a cluster connection");
        let names = match &self.tls_host {
            Some(host) => {
                let slots = redis::cmd("CLUSTER")
                    .arg("SLOTS")
                    .query_async(&mut probe)
                    .await?;
                NodeNames::plan(host, &advertised_nodes(&slots))
            }
            None => None,
        };
        let link = self.open_cluster(names.as_ref()).await?;
        if let Some(names) = names {
            tracing::info!(
                nodes = names.len(),
                "cluster nodes advertised by IP are verified against the TLS host name of REDIS_URL"
            );
            self.watch.set(names);
        }
        Ok(link)
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
    /// `MOVED`; retries are few because each store operation is bounded to 2 s anyway. With
    /// `names`, nodes advertised by IP are reached under the seed's host name.
    async fn open_cluster(&self, names: Option<&NodeNames>) -> RedisResult<Link> {
        let mut builder = ClusterClient::builder([self.url.expose_secret()])
            .connection_timeout(CONNECT_TIMEOUT)
            .response_timeout(self.operation_timeout)
            .retries(4)
            .min_retry_wait(50)
            .max_retry_wait(400);
        if let Some(ca) = &self.ca {
            builder = builder.certs(certificates(ca));
        }
        if let Some(names) = names {
            builder = builder
                .node_address_map(names.address_map())
                .async_dns_resolver(names.resolver());
        }
        // Every node's connection, including one opened after a failover or a `MOVED` to a new
        // node, signs in with the current token.
        if let Some(credentials) = &self.credentials {
            builder = builder.set_credentials_provider(credentials.clone());
        }
        let client = builder.build()?;
        Ok(Link::Cluster(client.get_async_connection().await?))
    }

    /// Starts a background check of the cluster's nodes when one is due (see [`NamesWatch`]).
    fn check_names_if_due(self: &Arc<Self>, link: &Link) {
        if link.mode() != Mode::Cluster || !self.watch.start_if_due(Instant::now()) {
            return;
        }
        let connector = Arc::clone(self);
        let mut link = link.clone();
        tokio::spawn(async move {
            connector.recheck_names(&mut link).await;
            connector.watch.finished(Instant::now());
        });
    }

    /// Reads the nodes through the current link; when some are not named, builds a new link
    /// with a new table and puts it in place (requests already under way finish on the old one).
    async fn recheck_names(&self, link: &mut Link) {
        let Some(host) = &self.tls_host else {
            return;
        };
        let slots = match link.query_any(redis::cmd("CLUSTER").arg("SLOTS")).await {
            Ok(slots) => slots,
            Err(e) => {
                tracing::debug!(error = %e, "could not read the cluster's nodes");
                return;
            }
        };
        let advertised = advertised_nodes(&slots);
        if advertised.is_empty() || self.watch.covers(&advertised) {
            return;
        }
        let Some(names) = NodeNames::plan(host, &advertised) else {
            return;
        };
        match tokio::time::timeout(self.operation_timeout * 2, self.open_cluster(Some(&names)))
            .await
        {
            Ok(Ok(new_link)) => {
                tracing::info!(
                    nodes = names.len(),
                    "the cluster's nodes changed: reconnected with their new TLS names"
                );
                self.replace(new_link);
                self.watch.set(names);
            }
            Ok(Err(e)) => tracing::warn!(error = %e, "could not reconnect to the changed cluster"),
            Err(_) => tracing::warn!("reconnecting to the changed cluster timed out"),
        }
    }
}

/// The private CA of `REDIS_CA_CERT`, as the redis client takes it (it replaces the public roots).
fn certificates(ca: &RedisCa) -> TlsCertificates {
    TlsCertificates {
        client_tls: None,
        root_cert: Some(ca.pem().to_vec()),
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
