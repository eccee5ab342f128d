//! The processes a run starts (the handler, `handler dev`, the ceiling servers; redis-server is
//! test-support's), and their memory as the kernel reports it. Every child is stopped when its
//! guard drops, so a run that fails half-way leaves nothing behind.

use std::fs::File;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

/// A child process, stopped (SIGTERM, then SIGKILL after 3 s) when dropped.
pub struct Child {
    pub name: String,
    pub child: std::process::Child,
}

impl Child {
    /// Starts `command` with stdout and stderr into `<logs>/<name>.log`.
    pub fn spawn(name: &str, mut command: Command, logs: &Path) -> anyhow::Result<Self> {
        let log = File::create(logs.join(format!("{name}.log")))?;
        command
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        let child = command
            .spawn()
            .with_context(|| format!("cannot start {name}: {command:?}"))?;
        Ok(Self {
            name: name.to_owned(),
            child,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Fails if the process has already exited.
    pub fn check_alive(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!("{} exited early: {status}", self.name);
        }
        Ok(())
    }

    /// SIGTERM, wait up to 3 s, then SIGKILL.
    pub fn stop(&mut self) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        // SAFETY: kill(2) on our own child's pid.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Sends `GET <path>` and returns the status code, if anything answered within `timeout`.
pub fn http_get_status(port: u16, path: &str, timeout: Duration) -> Option<u16> {
    let mut stream = TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), timeout).ok()?;
    stream.set_read_timeout(Some(timeout)).ok()?;
    stream.set_write_timeout(Some(timeout)).ok()?;
    let request =
        format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).ok()?;
    let mut buf = [0u8; 32];
    let mut got = 0;
    while got < 12 {
        match stream.read(&mut buf[got..]) {
            Ok(0) | Err(_) => break,
            Ok(n) => got += n,
        }
    }
    std::str::from_utf8(&buf[..got])
        .ok()?
        .split(' ')
        .nth(1)?
        .parse()
        .ok()
}

/// Waits until `GET <path>` on `port` answers `want`, or fails after `timeout`.
pub fn wait_http(
    child: &mut Child,
    port: u16,
    path: &str,
    want: u16,
    timeout: Duration,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        child.check_alive()?;
        if http_get_status(port, path, Duration::from_millis(500)) == Some(want) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "{} did not answer GET {path} with {want} within {timeout:?}",
                child.name
            );
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// CPU time (user + system) a process has used so far, from /proc/<pid>/stat.
pub fn cpu_time(pid: u32) -> anyhow::Result<Duration> {
    // SAFETY: sysconf only reads a configuration value.
    let ticks_per_second = match unsafe { libc::sysconf(libc::_SC_CLK_TCK) } {
        n if n > 0 => n as u64,
        // USER_HZ, what /proc counts in on every mainstream Linux.
        _ => 100,
    };
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which may hold spaces), from field 3 on.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .ok_or_else(|| anyhow::anyhow!("unreadable /proc/{pid}/stat"))?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| -> anyhow::Result<u64> {
        Ok(fields
            .get(i)
            .ok_or_else(|| anyhow::anyhow!("short /proc/{pid}/stat"))?
            .parse()?)
    };
    // utime and stime are fields 14 and 15, i.e. 11 and 12 after the name.
    let total = ticks(11)? + ticks(12)?;
    Ok(Duration::from_millis(total * 1000 / ticks_per_second))
}

/// Resident memory of a process, in KiB: now, and the peak since start or the last reset.
#[derive(Debug, Clone, Copy, Default)]
pub struct Rss {
    pub current_kib: u64,
    pub peak_kib: u64,
}

/// Reads VmRSS and VmHWM from /proc/<pid>/status.
pub fn rss(pid: u32) -> anyhow::Result<Rss> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| {
                rest.trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse::<u64>()
                    .ok()
            })
            .unwrap_or(0)
    };
    Ok(Rss {
        current_kib: field("VmRSS:"),
        peak_kib: field("VmHWM:"),
    })
}

/// Resets the peak (VmHWM) to the current RSS: `echo 5 > /proc/<pid>/clear_refs` (Linux ≥ 4.0;
/// needs to own the process or be root). Returns whether it worked.
pub fn reset_peak(pid: u32) -> bool {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").is_ok()
}

/// Samples a process's RSS every 10 ms on a thread, keeping the largest; a fallback for kernels
/// that refuse `clear_refs`, and a cross-check of VmHWM.
pub struct RssWatch {
    pid: u32,
    max_kib: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
    reset: bool,
}

impl RssWatch {
    pub fn start(pid: u32) -> Self {
        let reset = reset_peak(pid);
        let max_kib = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (max_kib, stop) = (max_kib.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    if let Ok(r) = rss(pid) {
                        max_kib.fetch_max(r.current_kib, Ordering::Relaxed);
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
            })
        };
        Self {
            pid,
            max_kib,
            stop,
            thread: Some(thread),
            reset,
        }
    }

    /// The peak RSS over the watched interval, in KiB.
    pub fn finish(mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        let sampled = self.max_kib.load(Ordering::Relaxed);
        match rss(self.pid) {
            Ok(r) if self.reset => r.peak_kib.max(sampled),
            _ => sampled,
        }
    }
}

/// Size of a file in bytes.
pub fn file_size(path: &Path) -> anyhow::Result<u64> {
    Ok(std::fs::metadata(path)
        .with_context(|| format!("{} not found", path.display()))?
        .len())
}
