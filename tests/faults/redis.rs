//! A durable `redis-server` (append-only file, fsync on every write) that can be killed and
//! started again on the same port with the same data directory, as a managed Redis comes back
//! after a crash: whatever it acknowledged is still there.

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// How long `redis-server` may take to answer its first PING (the AOF is replayed first).
const STARTUP_TIMEOUT: Duration = Duration::from_secs(10);

/// A running `redis-server` with `appendonly yes`, `appendfsync always`, no RDB snapshots.
pub struct DurableRedis {
    port: u16,
    dir: TempDir,
    child: Option<Child>,
}

impl DurableRedis {
    /// Starts it on a free loopback port and waits for PING.
    ///
    /// Panics when `redis-server` is not installed: these tests never skip silently.
    pub fn start() -> Self {
        let mut redis = Self {
            port: super::free_port(),
            dir: tempfile::tempdir().expect("a data directory for redis-server"),
            child: None,
        };
        redis.launch();
        redis
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// A client for checking what is stored.
    pub fn client(&self) -> redis::Client {
        redis::Client::open(self.url()).expect("a Redis client")
    }

    /// SIGKILL: a crash, not a clean shutdown. Returns once the port refuses connections.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        while TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
            assert!(
                Instant::now() < deadline,
                "redis-server still accepts connections on port {} after SIGKILL",
                self.port
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Starts it again on the same port and directory (after [`DurableRedis::kill`]); returns
    /// once it answers PING, that is once the append-only file is loaded.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "restart only after kill");
        self.launch();
    }

    fn launch(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("redis.log"))
            .expect("open the redis-server log");
        let spawned = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args([
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--save",
                "",
            ])
            .args(["--daemonize", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone().expect("clone the log handle")))
            .stderr(Stdio::from(log))
            .spawn();
        let child = match spawned {
            Ok(child) => child,
            Err(e) if e.kind() == ErrorKind::NotFound => panic!(
                "redis-server not found: install it with `apt-get install -y redis-server` \
                 (scripts/test does this)"
            ),
            Err(e) => panic!("could not start redis-server: {e}"),
        };
        self.child = Some(child);
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        while !answers_ping(self.port) {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                let log =
                    std::fs::read_to_string(self.dir.path().join("redis.log")).unwrap_or_default();
                panic!("redis-server exited with {status} before answering PING:\n{log}");
            }
            assert!(
                Instant::now() < deadline,
                "redis-server did not answer PING on port {} within {STARTUP_TIMEOUT:?}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for DurableRedis {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// An inline `PING` answered `+PONG` (not `-LOADING` while the AOF is replayed).
fn answers_ping(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let timeout = Some(Duration::from_millis(500));
    if stream.set_read_timeout(timeout).is_err() || stream.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut reply = [0u8; 7];
    stream.read_exact(&mut reply).is_ok() && &reply == b"+PONG\r\n"
}
