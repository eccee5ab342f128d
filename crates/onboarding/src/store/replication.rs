//! Acknowledged means replicated, where the server has replicas: a sign-up's writes are sent in
//! one pipeline with `WAIT 1 <ms>`, on the same connection, to the primary that took them.
//!
//! Redis replicates asynchronously, so a primary that fails over can lose its last writes;
//! `WAIT` blocks until that many replicas acknowledged every earlier write *of this
//! connection*, or the timeout ends. Hence the pipeline: a separate `WAIT` could go out on a
//! fresh connection (after a reconnect or a `MOVED`), which has written nothing and would be
//! acknowledged at once. <https://redis.io/docs/latest/commands/wait/> The cluster connection
//! sends a pipeline to the primary of its first keyed command's slot (`WAIT` has no key), so
//! the `WAIT` reaches exactly the primary that took the write.
//!
//! Which primaries have replicas is read from the server (`CLUSTER NODES` in a cluster,
//! `INFO replication` otherwise) and kept for [`REFRESH_EVERY`]; a `WAIT` that comes back short
//! forgets it at once, so a replica that left (its primary failed over, it is being
//! restarted) stops costing the wait within one request, and one that appears is used within
//! [`REFRESH_EVERY`]. A primary without replicas (a local `redis-server`) is written without
//! `WAIT`: there is nothing to wait for.
//!
//! Redis Software (what Azure Managed Redis runs) supports `WAIT` too,
//! <https://redis.io/docs/latest/operate/rs/clusters/optimize/wait/>; whether its `CLUSTER NODES`
//! lists the replica shards (which decides here whether `WAIT` is sent) is not verified.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use redis::RedisResult;

use super::connection::{Link, Mode};
use super::topology::{self, Topology};

/// How long a sign-up waits for a replica's acknowledgement before answering 503. A healthy
/// replica acknowledges within milliseconds (it is in the same region, and on Azure in another
/// zone at most, a round trip of ~2 ms); one that has not after a second is disconnected or
/// resyncing, and a client is better told to retry than held. It stays below the store's 2 s
/// operation bound, so the pipeline's own timeout never fires first.
pub(super) const WAIT_TIMEOUT: Duration = Duration::from_millis(1000);

/// How long the replica counts are trusted before they are read again.
const REFRESH_EVERY: Duration = Duration::from_secs(5);

/// The replica counts, read from the server and kept for a while.
#[derive(Default)]
pub(super) struct Replication {
    known: Mutex<Option<Known>>,
    /// One refresh at a time; the others use what is known meanwhile.
    refreshing: tokio::sync::Mutex<()>,
}

struct Known {
    topology: Arc<Topology>,
    read_at: Instant,
}

impl Replication {
    /// The replica counts: the kept ones while fresh; otherwise read again (waiting only when
    /// nothing is known yet, since a write must not go unconfirmed on a guess).
    pub(super) async fn topology(&self, link: &mut Link) -> RedisResult<Arc<Topology>> {
        if let Some(fresh) = self.kept(true) {
            return Ok(fresh);
        }
        let _refresh = match self.refreshing.try_lock() {
            Ok(guard) => guard,
            Err(_) => match self.kept(false) {
                Some(stale) => return Ok(stale),
                None => self.refreshing.lock().await,
            },
        };
        // Someone else may have refreshed while we waited for the lock.
        if let Some(fresh) = self.kept(true) {
            return Ok(fresh);
        }
        let topology = Arc::new(read_topology(link).await?);
        *self.known.lock().unwrap_or_else(PoisonError::into_inner) = Some(Known {
            topology: Arc::clone(&topology),
            read_at: Instant::now(),
        });
        Ok(topology)
    }

    /// Drops the kept counts: a `WAIT` came back short, so the next write reads them again.
    pub(super) fn forget(&self) {
        *self.known.lock().unwrap_or_else(PoisonError::into_inner) = None;
    }

    fn kept(&self, fresh_only: bool) -> Option<Arc<Topology>> {
        let known = self.known.lock().unwrap_or_else(PoisonError::into_inner);
        known
            .as_ref()
            .filter(|k| !fresh_only || k.read_at.elapsed() < REFRESH_EVERY)
            .map(|k| Arc::clone(&k.topology))
    }
}

/// Asks the server: `CLUSTER NODES` (any node's view) or `INFO replication`.
async fn read_topology(link: &mut Link) -> RedisResult<Topology> {
    match link.mode() {
        Mode::Cluster => {
            let text: String =
                redis::from_redis_value(link.query_any(redis::cmd("CLUSTER").arg("NODES")).await?)?;
            Ok(topology::parse_cluster_nodes(&text))
        }
        Mode::Single => {
            let text: String = redis::from_redis_value(
                link.query_any(redis::cmd("INFO").arg("replication"))
                    .await?,
            )?;
            Ok(Topology::Single {
                replicas: topology::parse_connected_replicas(&text),
            })
        }
    }
}

/// `cmd`, followed by `WAIT 1 <WAIT_TIMEOUT>` when the primary has replicas, as one pipeline.
pub(super) fn with_wait(cmd: &redis::Cmd, replicas: u32) -> redis::Pipeline {
    let mut pipe = redis::pipe();
    pipe.add_command(cmd.clone());
    if replicas > 0 {
        pipe.cmd("WAIT").arg(1).arg(WAIT_TIMEOUT.as_millis() as u64);
    }
    pipe
}
