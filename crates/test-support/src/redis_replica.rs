//! A `redis-server` replicating a given primary on loopback, which a test can pause (SIGSTOP)
//! so that the primary's `WAIT` gets no acknowledgement, and resume. Killed when dropped.

use std::io::ErrorKind;
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// Bound on the replica's first full synchronisation.
const SYNC_TIMEOUT: Duration = Duration::from_secs(15);

/// A running replica of one primary.
pub struct RedisReplica {
    child: Child,
    port: u16,
    _dir: TempDir,
}

impl RedisReplica {
    /// Starts a replica of the primary on `primary_port` and waits until its link is up and the
    /// primary counts it. Panics when `redis-server` is missing: tests never skip silently.
    pub fn start(primary_port: u16) -> Self {
        let dir = tempfile::tempdir().expect("create a temporary directory for the replica");
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("pick a free port")
            .port();
        let spawned = Command::new("redis-server")
            .args(["--port", &port.to_string()])
            .args(["--bind", "127.0.0.1"])
            .args(["--replicaof", "127.0.0.1", &primary_port.to_string()])
            .args(["--save", ""])
            .args(["--appendonly", "no"])
            .args(["--repl-diskless-load", "on-empty-db"])
            .arg("--dir")
            .arg(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let child = match spawned {
            Ok(child) => child,
            Err(e) if e.kind() == ErrorKind::NotFound => {
                panic!("redis-server not found: install it with `apt-get install -y redis-server`")
            }
            Err(e) => panic!("could not start redis-server: {e}"),
        };
        let replica = Self {
            child,
            port,
            _dir: dir,
        };
        let deadline = Instant::now() + SYNC_TIMEOUT;
        while !(info(port).contains("master_link_status:up")
            && info(primary_port).contains("connected_slaves:1"))
        {
            assert!(
                Instant::now() < deadline,
                "the replica did not synchronise within {SYNC_TIMEOUT:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        replica
    }

    /// Freezes the replica (SIGSTOP): its primary still counts it, but nothing is acknowledged.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// Lets a paused replica run again (SIGCONT); it catches up on its own.
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    /// The replica's port.
    pub fn port(&self) -> u16 {
        self.port
    }

    fn signal(&self, which: &str) {
        let status = Command::new("kill")
            .args([which, &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill {which} failed");
    }
}

impl Drop for RedisReplica {
    fn drop(&mut self) {
        self.resume();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `INFO replication` of the server on `port`, empty when it does not answer.
fn info(port: u16) -> String {
    Command::new("redis-cli")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "INFO",
            "replication",
        ])
        .stdin(Stdio::null())
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}
