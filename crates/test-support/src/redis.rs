//! A throwaway `redis-server` on its own loopback port and data directory: with persistence off
//! for most tests and the benchmark, or durable (append-only file, fsync on every write) for the
//! fault tests that kill it and expect what it acknowledged to be there after a restart.

use std::fs::OpenOptions;
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use tempfile::TempDir;

use crate::port::free_port;

/// How long `redis-server` may take to answer its first PING (a durable one replays its
/// append-only file first).
const STARTUP_TIMEOUT: Duration = Duration::from_secs(10);
/// How often startup and shutdown are polled.
const POLL: Duration = Duration::from_millis(10);

/// How a [`RedisServer`] keeps its data.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Persistence {
    /// Nothing on disk unless [`RedisServer::stop`] saves it (`SHUTDOWN SAVE`).
    #[default]
    Off,
    /// `appendonly yes`, `appendfsync always`: whatever was acknowledged survives a SIGKILL,
    /// as with a managed Redis coming back after a crash.
    Durable,
}

/// A running `redis-server`, killed when dropped.
pub struct RedisServer {
    port: u16,
    persistence: Persistence,
    dir: TempDir,
    log: PathBuf,
    child: Option<Child>,
}

impl RedisServer {
    /// Starts `redis-server` on a free port with persistence off and waits until it answers
    /// PING.
    ///
    /// Panics when `redis-server` is not installed: the tests never skip silently.
    pub fn start() -> Self {
        Self::start_with(Persistence::Off)
    }

    /// Like [`RedisServer::start`], keeping data as `persistence` says.
    pub fn start_with(persistence: Persistence) -> Self {
        Self::try_start(persistence, None).unwrap_or_else(|e| panic!("{e:#}"))
    }

    /// Starts it as [`RedisServer::start_with`] does, returning what went wrong instead of
    /// panicking (for the benchmark), with its log at `log` when given (else in its data
    /// directory).
    pub fn try_start(persistence: Persistence, log: Option<PathBuf>) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir().context("create a data directory for redis-server")?;
        let log = log.unwrap_or_else(|| dir.path().join("redis.log"));
        let mut server = Self {
            port: free_port(),
            persistence,
            dir,
            log,
            child: None,
        };
        server.launch()?;
        Ok(server)
    }

    /// The loopback port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Stops the server cleanly (an outage): `SHUTDOWN SAVE` writes the data to its directory,
    /// so [`RedisServer::restart`] brings it back on the same port with the same data, as a
    /// managed Redis comes back after maintenance. Returns once the port refuses connections.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            if let Ok(mut stream) = TcpStream::connect(("127.0.0.1", self.port)) {
                let _ = stream.write_all(b"SHUTDOWN SAVE\r\n");
            }
            let deadline = Instant::now() + STARTUP_TIMEOUT;
            while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(POLL);
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        self.wait_until_closed("being stopped");
    }

    /// SIGKILL: a crash, not a clean shutdown. Returns once the port refuses connections.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.wait_until_closed("SIGKILL");
    }

    /// Starts it again on the same port and directory (stopping it first if it runs); returns
    /// once it answers PING, that is once a durable one has loaded its append-only file.
    pub fn restart(&mut self) {
        self.stop();
        self.launch().unwrap_or_else(|e| panic!("{e:#}"));
    }

    /// The port must really be closed before a test goes on.
    fn wait_until_closed(&self, after: &str) {
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        while TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
            assert!(
                Instant::now() < deadline,
                "redis-server still accepts connections on port {} after {after}",
                self.port
            );
            std::thread::sleep(POLL);
        }
    }

    fn launch(&mut self) -> anyhow::Result<()> {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .with_context(|| format!("open the redis-server log {}", self.log.display()))?;
        let mut command = Command::new("redis-server");
        command
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--protected-mode", "no", "--daemonize", "no", "--save", ""]);
        match self.persistence {
            Persistence::Off => command.args(["--appendonly", "no"]),
            Persistence::Durable => {
                command.args(["--appendonly", "yes", "--appendfsync", "always"])
            }
        };
        let spawned = command
            .arg("--dir")
            .arg(self.dir.path())
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log))
            .spawn();
        self.child = Some(match spawned {
            Ok(child) => child,
            Err(e) if e.kind() == ErrorKind::NotFound => bail!(
                "redis-server not found: install it with `apt-get install -y redis-server` \
                 (scripts/test and scripts/bench do this)"
            ),
            Err(e) => bail!("could not start redis-server: {e}"),
        });
        self.wait_until_ready()
    }

    fn wait_until_ready(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        while !answers_ping(self.port) {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                let log = std::fs::read_to_string(&self.log).unwrap_or_default();
                bail!("redis-server exited with {status} before answering PING:\n{log}");
            }
            if Instant::now() >= deadline {
                bail!(
                    "redis-server did not answer PING on port {} within {STARTUP_TIMEOUT:?}",
                    self.port
                );
            }
            std::thread::sleep(POLL);
        }
        Ok(())
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// An inline `PING` answered `+PONG` (not `-LOADING` while an append-only file is replayed).
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
