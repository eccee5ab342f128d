//! health and root against a Redis cluster: 3 primaries and 3 replicas on loopback
//! (test-support's `RedisCluster`), a handler whose `REDIS_URL` names one node (it finds the
//! cluster by itself), and the same ceilings as the single-server row (warp, warp + the same
//! Redis command) measured against the same cluster through the redis crate's cluster client.
//! health's command there is `CLUSTER INFO` to one random node, as the handler sends it.

use std::time::Duration;

use anyhow::anyhow;

use crate::fixtures::{health_envelope, root_envelope};
use crate::phase::http::{self, Backend, HttpResult, RootUser};
use crate::preflight;
use crate::procs::{self, Child};
use crate::session::{Server, Services, Session};
use test_support::RedisCluster;

pub async fn run(s: &mut Session, services: &Services) -> anyhow::Result<HttpResult> {
    let cluster = std::panic::catch_unwind(RedisCluster::start)
        .map_err(|_| anyhow!("the Redis cluster did not start (its error is above)"))?;
    let url = cluster.url();
    eprintln!("bench: Redis cluster (3 primaries, 3 replicas) at {url}");
    let port = test_support::free_port();
    let command = s.handler_command(&services.handler_bin, port, &url, services.sink.port());
    let mut child = Child::spawn("cluster-handler", command, &s.logs())?;
    procs::wait_http(&mut child, port, "/", 200, Duration::from_secs(30))?;
    let mut handler = Server { child, port };

    let user = preflight::sign_up(s, &handler).await?;
    let health = preflight::expect_200(s, &handler, "health", &health_envelope()).await?;
    if !health.body.contains("\"mode\":\"cluster\"") {
        anyhow::bail!("the handler did not find the cluster: {}", health.body);
    }
    let root = root_envelope(&user.token);
    let root = preflight::expect_200(s, &handler, "root", &root).await?;
    let backend = Backend {
        redis_url: &url,
        cluster: true,
        label: "cluster (3+3): ",
        prefix: "cluster-",
    };
    std::fs::write(s.dir.join("cluster-health-answer.json"), &health.raw)?;
    std::fs::write(s.dir.join("cluster-root-answer.json"), &root.raw)?;
    let user = RootUser {
        id: &user.user_id,
        token: &user.token,
    };
    let result = http::run_against(s, &handler, &backend, &user).await;
    handler.child.stop();
    drop(cluster);
    result
}
