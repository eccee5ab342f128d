//! A throwaway Redis cluster on loopback: 3 primaries and 3 replicas, `redis-server
//! --cluster-enabled yes` joined by `redis-cli --cluster create … --cluster-replicas 1`, with
//! a short node timeout so a killed primary's replica takes over within about two seconds.
//! Stopped when dropped.
//!
//! Recipe: <https://redis.io/docs/latest/operate/oss_and_stack/management/scaling/#create-a-redis-cluster>.
//! Each node also listens on its port + 10000 (the cluster bus), so ports stay below 55536.
//!
//! [`RedisCluster::start_tls`] starts the same cluster speaking TLS only (clients, bus and
//! replication), its certificate naming `localhost` while the nodes announce `127.0.0.1`: the
//! shape of Azure Managed Redis with the OSS clustering policy (see `redis_tls.rs`).

use std::ffi::OsString;
use std::io::ErrorKind;
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::redis_tls::{TLS_HOST, TlsFiles};

/// Nodes in all: 3 primaries, each with 1 replica.
const NODES: usize = 6;
/// How long a node may be unreachable before the others fail it over. Short, for tests; Azure
/// and Redis's default is 15 s.
const NODE_TIMEOUT_MS: u32 = 1000;
/// Bound on forming the cluster (and on a node answering at start).
const FORM_TIMEOUT: Duration = Duration::from_secs(30);

/// The address the first six nodes bind to and announce.
const LOOPBACK: &str = "127.0.0.1";

/// One `redis-server` of the cluster.
struct Node {
    host: String,
    port: u16,
    child: Option<Child>,
}

/// A running cluster; every node is killed when it drops.
pub struct RedisCluster {
    nodes: Vec<Node>,
    /// Set when the nodes speak TLS only.
    tls: Option<TlsFiles>,
    dir: TempDir,
}

impl RedisCluster {
    /// Starts six nodes, forms the cluster, and waits until every slot is served and every
    /// replica has synchronised with its primary.
    ///
    /// Panics when `redis-server` or `redis-cli` is missing: these tests never skip silently.
    pub fn start() -> Self {
        Self::start_with(false)
    }

    /// As [`start`](Self::start), over TLS only: reach it as [`url`](Self::url)
    /// (`rediss://localhost:…`), trusting [`ca_path`](Self::ca_path).
    pub fn start_tls() -> Self {
        Self::start_with(true)
    }

    fn start_with(tls: bool) -> Self {
        let dir = tempfile::tempdir().expect("create a temporary directory for the cluster");
        let mut cluster = Self {
            nodes: free_cluster_ports()
                .into_iter()
                .map(|port| Node {
                    host: LOOPBACK.to_owned(),
                    port,
                    child: None,
                })
                .collect(),
            tls: tls.then(|| TlsFiles::localhost(dir.path())),
            dir,
        };
        for node in &mut cluster.nodes {
            let tls_args = cluster.tls.as_ref().map(|tls| tls.server_args(node.port));
            node.child = Some(launch(LOOPBACK, node.port, cluster.dir.path(), tls_args));
        }
        for node in &cluster.nodes {
            wait_for(FORM_TIMEOUT, || {
                cluster.cli(node.port, &["PING"]).as_deref() == Some("PONG")
            })
            .unwrap_or_else(|| panic!("cluster node {} never answered PING", node.port));
        }
        cluster.create();
        cluster.wait_until_ok();
        cluster.wait_until_replicas_synced();
        cluster
    }

    /// `redis://127.0.0.1:<port of the first node>`: one node is enough, the client finds the
    /// rest. With TLS, `rediss://localhost:<port>`: the name the certificate holds.
    pub fn url(&self) -> String {
        match self.tls {
            Some(_) => format!("rediss://{TLS_HOST}:{}", self.nodes[0].port),
            None => format!("redis://127.0.0.1:{}", self.nodes[0].port),
        }
    }

    /// The CA to trust for a TLS cluster (`REDIS_CA_CERT`); `None` without TLS.
    pub fn ca_path(&self) -> Option<&Path> {
        self.tls.as_ref().map(TlsFiles::ca_path)
    }

    /// `redis://127.0.0.1:<port>` of every node, primaries and replicas: where a test changes
    /// something each node must know (an ACL user, say). Plain clusters only.
    pub fn node_urls(&self) -> Vec<String> {
        assert!(self.tls.is_none(), "node_urls is for the plain cluster");
        self.nodes
            .iter()
            .map(|node| format!("redis://127.0.0.1:{}", node.port))
            .collect()
    }

    /// The ports of the nodes now serving slots as primaries (live ones only).
    pub fn primary_ports(&self) -> Vec<u16> {
        let nodes = self.cluster_nodes();
        nodes
            .lines()
            .filter(|l| l.contains("master") && !l.contains("fail"))
            .filter(|l| l.split_whitespace().count() > 8)
            .filter_map(|l| port_of(l.split_whitespace().nth(1)?))
            .collect()
    }

    /// Kills (SIGKILL) the node on `port`, without warning, as a crashed VM would.
    pub fn kill(&mut self, port: u16) {
        let node = self
            .nodes
            .iter_mut()
            .find(|n| n.port == port)
            .unwrap_or_else(|| panic!("no cluster node on port {port}"));
        if let Some(mut child) = node.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Waits until a live node says `cluster_state:ok` (every slot served); panics after 30 s.
    pub fn wait_until_ok(&self) {
        wait_for(FORM_TIMEOUT, || {
            self.live_ports().into_iter().all(|port| {
                self.cli(port, &["CLUSTER", "INFO"])
                    .is_some_and(|info| info.contains("cluster_state:ok"))
            })
        })
        .unwrap_or_else(|| {
            panic!(
                "the cluster did not reach cluster_state:ok:\n{}",
                self.cluster_nodes()
            )
        });
    }

    /// `CLUSTER NODES` as a live node sees it (for diagnostics and [`primary_ports`]).
    pub fn cluster_nodes(&self) -> String {
        self.live_ports()
            .into_iter()
            .find_map(|port| self.cli(port, &["CLUSTER", "NODES"]))
            .unwrap_or_default()
    }

    fn live_ports(&self) -> Vec<u16> {
        self.nodes
            .iter()
            .filter(|n| n.child.is_some())
            .map(|n| n.port)
            .collect()
    }

    fn create(&self) {
        let mut command = Command::new("redis-cli");
        command.args(self.tls.iter().flat_map(TlsFiles::cli_args));
        command.arg("--cluster").arg("create");
        for node in &self.nodes {
            command.arg(format!("127.0.0.1:{}", node.port));
        }
        let output = command
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("could not run redis-cli --cluster create: {e}"));
        assert!(
            output.status.success(),
            "redis-cli --cluster create failed:\n{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }

    fn wait_until_replicas_synced(&self) {
        wait_for(FORM_TIMEOUT, || {
            let mut replicas = 0;
            for port in self.live_ports() {
                let Some(info) = self.cli(port, &["INFO", "replication"]) else {
                    return false;
                };
                if info.contains("role:slave") {
                    if !info.contains("master_link_status:up") {
                        return false;
                    }
                    replicas += 1;
                }
            }
            replicas == NODES / 2
        })
        .unwrap_or_else(|| {
            panic!(
                "the replicas did not synchronise:\n{}",
                self.cluster_nodes()
            )
        });
    }

    /// Starts a seventh node bound to and announcing `host` (another loopback address, such as
    /// `127.0.0.2`), joins it as a primary and moves a quarter of the slots, keys included, to
    /// it: a topology change with a new address. Returns its port.
    pub fn add_primary_on(&mut self, host: &str) -> u16 {
        let port = free_ports_on(host, 1)[0];
        let mut args = self.tls.as_ref().map(|tls| tls.server_args(port));
        if let Some(args) = &mut args {
            args.extend(["--cluster-announce-ip".into(), host.into()]);
        }
        let child = launch(host, port, self.dir.path(), args);
        self.nodes.push(Node {
            host: host.to_owned(),
            port,
            child: Some(child),
        });
        wait_for(FORM_TIMEOUT, || {
            self.cli(port, &["PING"]).as_deref() == Some("PONG")
        })
        .unwrap_or_else(|| panic!("the new node {host}:{port} never answered PING"));
        let first = format!("{LOOPBACK}:{}", self.nodes[0].port);
        let new = format!("{host}:{port}");
        self.cluster_tool(&["add-node", &new, &first]);
        wait_for(FORM_TIMEOUT, || {
            self.live_ports().into_iter().all(|p| {
                self.cli(p, &["CLUSTER", "NODES"])
                    .is_some_and(|nodes| nodes.contains(&new) && !nodes.contains("handshake"))
            })
        })
        .unwrap_or_else(|| panic!("the new node did not join:\n{}", self.cluster_nodes()));
        // A primary that has just started keeps its cluster state at `fail` for a while (Redis's
        // writable delay, about 2 s), and MIGRATE into it answers CLUSTERDOWN until then.
        self.wait_until_ok();
        let id = self
            .cli(port, &["CLUSTER", "MYID"])
            .expect("the new node's id");
        let slots = (16384 / 4).to_string();
        self.cluster_tool(&[
            "reshard",
            &first,
            "--cluster-from",
            "all",
            "--cluster-to",
            &id,
            "--cluster-slots",
            &slots,
            "--cluster-yes",
        ]);
        self.wait_until_ok();
        port
    }

    /// The number of keys the node on `port` holds (`DBSIZE`).
    pub fn key_count(&self, port: u16) -> u64 {
        self.cli(port, &["DBSIZE"])
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("DBSIZE on node {port} failed"))
    }

    /// Runs `redis-cli --cluster <args>`, over TLS when the cluster speaks it; panics on failure.
    fn cluster_tool(&self, args: &[&str]) {
        let output = Command::new("redis-cli")
            .args(self.tls.iter().flat_map(TlsFiles::cli_args))
            .arg("--cluster")
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("could not run redis-cli --cluster: {e}"));
        assert!(
            output.status.success(),
            "redis-cli --cluster {args:?} failed:\n{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// `redis-cli` against one node, over TLS when the cluster speaks it.
    fn cli(&self, port: u16, args: &[&str]) -> Option<String> {
        let host = self
            .nodes
            .iter()
            .find(|n| n.port == port)
            .map_or(LOOPBACK, |n| n.host.as_str());
        let tls = self
            .tls
            .as_ref()
            .map(TlsFiles::cli_args)
            .unwrap_or_default();
        cli(host, port, &tls, args)
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            if let Some(mut child) = node.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

/// Starts one cluster node, persistence off, its files in its own directory; `tls` replaces
/// the plain port with a TLS one.
fn launch(host: &str, port: u16, root: &Path, tls: Option<Vec<OsString>>) -> Child {
    let dir = root.join(port.to_string());
    std::fs::create_dir_all(&dir).expect("create a cluster node's directory");
    let log = std::fs::File::create(dir.join("redis.log")).expect("create a node's log file");
    let listen = tls.unwrap_or_else(|| vec!["--port".into(), port.to_string().into()]);
    let spawned = Command::new("redis-server")
        .args(listen)
        .args(["--bind", host])
        .args(["--cluster-enabled", "yes"])
        .args(["--cluster-config-file", "nodes.conf"])
        .args(["--cluster-node-timeout", &NODE_TIMEOUT_MS.to_string()])
        // A replica may take over however long it was cut off: in a test, always.
        .args(["--cluster-replica-validity-factor", "0"])
        .args(["--save", ""])
        .args(["--appendonly", "no"])
        .args(["--repl-diskless-sync", "yes"])
        .args(["--repl-diskless-sync-delay", "0"])
        .args(["--daemonize", "no"])
        .arg("--dir")
        .arg(&dir)
        .current_dir(&dir)
        .stdin(Stdio::null())
        .stdout(Stdio::from(log.try_clone().expect("clone the log file")))
        .stderr(Stdio::from(log))
        .spawn();
    match spawned {
        Ok(child) => child,
        Err(e) if e.kind() == ErrorKind::NotFound => panic!(
            "redis-server not found: install it with `apt-get install -y redis-server` \
             (scripts/test does this)"
        ),
        Err(e) => panic!("could not start redis-server: {e}"),
    }
}

/// Runs `redis-cli -p <port> <tls> <args>` and returns its output, trimmed; `None` when it fails.
fn cli(host: &str, port: u16, tls: &[OsString], args: &[&str]) -> Option<String> {
    let output = Command::new("redis-cli")
        .args(["-h", host, "-p", &port.to_string()])
        .args(tls)
        .args(args)
        .stdin(Stdio::null())
        .output();
    match output {
        Ok(output) if output.status.success() => {
            let text = String::from_utf8_lossy(&output.stdout).trim().to_owned();
            (!text.starts_with("Could not connect") && !text.starts_with("ERR")).then_some(text)
        }
        Ok(_) => None,
        Err(e) if e.kind() == ErrorKind::NotFound => {
            panic!("redis-cli not found: install it with `apt-get install -y redis-server`")
        }
        Err(_) => None,
    }
}

/// `127.0.0.1:30001@40001` → 30001.
fn port_of(address: &str) -> Option<u16> {
    address.split('@').next()?.rsplit(':').next()?.parse().ok()
}

/// Polls `done` every 50 ms until it holds (`Some`) or `timeout` passes (`None`).
fn wait_for(timeout: Duration, mut done: impl FnMut() -> bool) -> Option<()> {
    let deadline = Instant::now() + timeout;
    loop {
        if done() {
            return Some(());
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Six ports on loopback, each free along with its cluster-bus port (+10000).
fn free_cluster_ports() -> Vec<u16> {
    free_ports_on(LOOPBACK, NODES)
}

/// `count` ports on `host`, each free along with its cluster-bus port (+10000), all below
/// 55536. Candidates are spread by process id and time so parallel test binaries rarely try
/// the same ones.
fn free_ports_on(host: &str, count: usize) -> Vec<u16> {
    let seed = std::process::id() as u64
        ^ Instant::now().elapsed().as_nanos() as u64
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos() as u64);
    let mut candidate = 20_000 + (seed % 25_000) as u16;
    let mut ports = Vec::with_capacity(count);
    for _ in 0..10_000 {
        if ports.len() == count {
            break;
        }
        candidate = if candidate >= 45_000 {
            20_000
        } else {
            candidate + 1
        };
        let both_free = TcpListener::bind((host, candidate)).is_ok()
            && TcpListener::bind((host, candidate + 10_000)).is_ok();
        if both_free {
            ports.push(candidate);
        }
    }
    assert_eq!(ports.len(), count, "no free ports for a Redis cluster");
    ports
}
