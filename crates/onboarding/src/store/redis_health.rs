//! What `/health` says about Redis: reachable, single server or cluster, slots served, replicas.

use super::connection::Mode;
use super::redis::RedisStore;
use super::{StoreError, StoreHealth, UserStore, topology};

impl RedisStore {
    /// Whether the server answers, and its shape: single server or cluster (whose own view of
    /// slot coverage must be `ok`), primaries and live replicas. One round trip, as a `PING`,
    /// plus the replica counts (kept for a few seconds).
    pub(super) async fn shape(&self) -> Result<StoreHealth, StoreError> {
        let mut link = self.link().await?;
        let cluster = match link.mode() {
            // One round trip, as PING: a random node's view of the whole cluster.
            Mode::Cluster => {
                let info = self
                    .bounded(link.query_any(redis::cmd("CLUSTER").arg("INFO")))
                    .await?;
                let info: String = redis::from_redis_value(info)
                    .map_err(|e| StoreError::Backend(e.to_string()))?;
                Some(topology::parse_cluster_info(&info))
            }
            Mode::Single => {
                self.ping().await?;
                None
            }
        };
        let known = self.bounded(self.replication.topology(&mut link)).await?;
        let (primaries, replicas) = known.counts();
        if let Some(state) = &cluster
            && state.state != "ok"
        {
            return Err(StoreError::Backend(format!(
                "the cluster is {}: {} of 16384 slots served",
                state.state, state.slots_ok
            )));
        }
        Ok(StoreHealth {
            cluster: cluster.is_some(),
            primaries,
            replicas,
            slots_ok: cluster.map(|c| c.slots_ok),
        })
    }
}
