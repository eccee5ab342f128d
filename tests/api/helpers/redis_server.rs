//! A throwaway `redis-server` per test, on its own loopback port, with persistence off.

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// How long `redis-server` may take to answer its first PING.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(10);

/// A running `redis-server`, killed when dropped.
pub struct RedisServer {
    port: u16,
    dir: TempDir,
    child: Option<Child>,
}

impl RedisServer {
    /// Starts `redis-server` on a free port and waits until it answers PING.
    ///
    /// Panics when `redis-server` is not installed: these tests never skip silently.
    pub fn start() -> Self {
        let dir = tempfile::tempdir().expect("create a temporary directory for redis-server");
        let mut server = Self {
            port: super::free_port(),
            dir,
            child: None,
        };
        server.launch();
        server
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Stops the server (an outage); [`RedisServer::restart`] brings it back on the same port
    /// with the same data, as a managed Redis comes back after maintenance.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SHUTDOWN SAVE writes the data to `dir` (the server never saves on its own here);
            // the restarted server loads it from there.
            if let Ok(mut stream) = TcpStream::connect(("127.0.0.1", self.port)) {
                let _ = stream.write_all(b"SHUTDOWN SAVE\r\n");
            }
            let deadline = Instant::now() + STARTUP_TIMEOUT;
            while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(25));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        // The port must really be closed before the test goes on.
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        while TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
            assert!(
                Instant::now() < deadline,
                "redis-server still accepts connections on port {} after being killed",
                self.port
            );
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// Starts the server again on the same port (after [`RedisServer::stop`]); the data is gone.
    pub fn restart(&mut self) {
        self.stop();
        self.launch();
    }

    fn launch(&mut self) {
        let log = std::fs::File::create(self.dir.path().join("redis.log"))
            .expect("create the redis-server log file");
        let spawned = Command::new("redis-server")
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1"])
            .args(["--save", ""])
            .args(["--appendonly", "no"])
            .args(["--daemonize", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone().expect("clone the log file")))
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
        self.wait_until_ready();
    }

    fn wait_until_ready(&mut self) {
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        loop {
            if answers_ping(self.port) {
                return;
            }
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
            std::thread::sleep(Duration::from_millis(25));
        }
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

/// Sends an inline `PING` and expects `+PONG`.
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
