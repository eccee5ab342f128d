//! Child processes that never outlive a test: each runs in its own process group, which is
//! killed when the guard drops, and its output goes to a log file that is printed if the test
//! fails.

use std::fs::File;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// How many lines of a process's output a failing test shows.
const TAIL_ON_FAILURE: usize = 60;

/// A running child process (and everything it started), killed on drop.
pub struct Supervised {
    name: &'static str,
    child: Child,
    log: PathBuf,
}

impl Supervised {
    /// Starts `command` in a new process group, with stdin closed and stdout and stderr both
    /// written to `log`; panics when it cannot start.
    pub fn spawn(name: &'static str, mut command: Command, log: &Path) -> Self {
        let out = File::create(log).unwrap_or_else(|e| panic!("create {}: {e}", log.display()));
        let err = out.try_clone().expect("clone the log file handle");
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("start {name} ({command:?}): {e}"));
        Self {
            name,
            child,
            log: log.to_owned(),
        }
    }

    /// Its process id (also its process group's).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Its exit status, once it has exited.
    pub fn exit_status(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// `Some(description)` once the process has exited.
    pub fn exited(&mut self) -> Option<String> {
        match self.child.try_wait() {
            Ok(Some(status)) => Some(status.to_string()),
            Ok(None) => None,
            Err(e) => Some(format!("unknown state ({e})")),
        }
    }

    /// Everything the process has written so far.
    pub fn log(&self) -> String {
        std::fs::read(&self.log)
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
            .unwrap_or_else(|e| format!("(cannot read {}: {e})", self.log.display()))
    }

    /// The last `lines` lines of the log, for failure messages.
    pub fn log_tail(&self, lines: usize) -> String {
        let log = self.log();
        let all: Vec<&str> = log.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Sends `signal` to the process alone (not its group), as an operator or the kernel
    /// would; a process it started must end on its own account.
    pub fn signal(&self, signal: libc::c_int) {
        let pid = libc::pid_t::try_from(self.child.id()).expect("a pid fits pid_t");
        // SAFETY: kill(2) on our own child's pid, which we have not reaped yet.
        let sent = unsafe { libc::kill(pid, signal) };
        assert_eq!(sent, 0, "kill({pid}, {signal}) failed");
    }

    /// SIGKILL to the process alone, then reaps it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Waits (bounded) for the exit; panics with the output's tail after `timeout`.
    pub fn wait(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait for the child") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "{} still running after {timeout:?}:\n{}",
                self.name,
                self.log_tail(TAIL_ON_FAILURE)
            );
            std::thread::sleep(Duration::from_millis(25));
        }
    }
}

impl Drop for Supervised {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // A process that stopped early (or was stopped by someone else) explains a lot.
            let state = self.exited().map_or_else(
                || "still running".to_owned(),
                |s| format!("had exited: {s}"),
            );
            eprintln!(
                "---- {} ({state}) output, last {TAIL_ON_FAILURE} lines ----\n{}\n---- end of {} \
                 output ----",
                self.name,
                self.log_tail(TAIL_ON_FAILURE),
                self.name
            );
        }
        // The group id is the child's pid (process_group(0)); a negative id names the group,
        // so helpers the child started (Chromium's renderers, a dev host's handler) go too.
        if let Ok(group) = libc::pid_t::try_from(self.child.id()) {
            // SAFETY: kill(2) on the process group we created; at worst it is already gone.
            unsafe {
                libc::kill(-group, libc::SIGKILL);
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
