//! The ceiling server's Redis connection: one multiplexed connection to a single server, or the
//! redis crate's cluster connection (one per node, routed by slot), the same kinds the product
//! uses, so the cluster row's ceiling pays what the handler pays for routing.

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
use redis::{Cmd, Pipeline, RedisFuture, RedisResult, Value};

/// A connection of either kind; cheap to clone.
#[derive(Clone)]
pub enum CeilingRedis {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl CeilingRedis {
    /// Connects to `url`: as a cluster client (which reads the slot map from it) when `cluster`.
    pub async fn open(url: &str, cluster: bool) -> anyhow::Result<Self> {
        if cluster {
            let client = ClusterClient::builder([url]).build()?;
            Ok(Self::Cluster(client.get_async_connection().await?))
        } else {
            Ok(Self::Single(ConnectionManager::new_lazy_with_config(
                redis::Client::open(url)?,
                ConnectionManagerConfig::new(),
            )?))
        }
    }

    /// `/health`'s round trip, as the handler makes it: `PING` on a single server; on a cluster
    /// `CLUSTER INFO` to one random node (crates/onboarding/src/store/redis_health.rs).
    pub async fn health(&mut self) -> RedisResult<Value> {
        match self {
            Self::Single(connection) => redis::cmd("PING").query_async(connection).await,
            Self::Cluster(connection) => {
                let routing = RoutingInfo::SingleNode(SingleNodeRoutingInfo::Random);
                let command = redis::cmd("CLUSTER").arg("INFO").clone();
                connection.route_command(command, routing).await
            }
        }
    }

    /// What `/health` sends, for row names.
    pub fn health_command(cluster: bool) -> &'static str {
        if cluster { "CLUSTER INFO" } else { "PING" }
    }
}

impl ConnectionLike for CeilingRedis {
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
