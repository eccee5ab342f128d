//! `handler dev --handler-process`: the handler as a child process, supervised as the Functions
//! host supervises its worker: started with the app settings as its environment plus
//! `FUNCTIONS_CUSTOMHANDLER_PORT`, waited for with the readiness ping, killed on a function
//! timeout, restarted whenever it exits or dies, and given up on after repeated failures.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use anyhow::{Context as _, bail};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::invoke::{HandlerClient, READINESS_POLL, READINESS_TIMEOUT};

/// Failures (exits, deaths, readiness timeouts) tolerated within [`FAILURE_WINDOW`]; the next
/// one stops the dev host. The host counts 3 failures per 30 minutes; a shorter window keeps a
/// long dev session alive through the odd crash while still stopping a crash loop at once.
pub const MAX_FAILURES: usize = 3;
/// See [`MAX_FAILURES`].
pub const FAILURE_WINDOW: Duration = Duration::from_secs(30);
/// Pause before starting the handler again after a failure.
pub const RESTART_DELAY: Duration = Duration::from_millis(250);
/// How often a running child is checked for exit.
const EXIT_POLL: Duration = Duration::from_millis(25);
/// How long the child gets to stop after SIGTERM before it is killed.
pub const STOP_GRACE: Duration = Duration::from_secs(5);

/// What to start: the program, its arguments, environment (added to the inherited one) and
/// working directory.
#[derive(Debug, Clone)]
pub struct ChildSpec {
    pub program: PathBuf,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub dir: PathBuf,
}

/// How the supervisor treats its child.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RestartPolicy {
    pub max_failures: usize,
    pub window: Duration,
    pub restart_delay: Duration,
    pub readiness_poll: Duration,
    pub readiness_timeout: Duration,
    pub stop_grace: Duration,
}

impl Default for RestartPolicy {
    fn default() -> Self {
        Self {
            max_failures: MAX_FAILURES,
            window: FAILURE_WINDOW,
            restart_delay: RESTART_DELAY,
            readiness_poll: READINESS_POLL,
            readiness_timeout: READINESS_TIMEOUT,
            stop_grace: STOP_GRACE,
        }
    }
}

/// The child as `/_dev/handler` shows it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProcessStatus {
    /// The running child's process id; `None` between a death and the next start.
    pub pid: Option<u32>,
    /// Starts after the first one.
    pub restarts: u32,
    /// True once the running child answered the readiness ping.
    pub ready: bool,
}

/// Lets others (the invoker, on a function timeout) have the running child killed.
#[derive(Debug, Clone)]
pub struct ProcessControl {
    kill_tx: mpsc::UnboundedSender<std::time::Instant>,
}

impl ProcessControl {
    /// Kills the running child, as the host does when a function times out, unless the child
    /// was started after `invocation_started` (another timed-out invocation already had the
    /// old one killed). The supervisor starts a new one.
    pub fn kill_after_timeout(&self, invocation_started: std::time::Instant) {
        let _ = self.kill_tx.send(invocation_started);
    }
}

/// Recent failures, to decide when to give up.
#[derive(Debug)]
pub struct Failures {
    limit: usize,
    window: Duration,
    times: VecDeque<Instant>,
}

impl Failures {
    /// No failure yet.
    pub fn new(limit: usize, window: Duration) -> Self {
        Self {
            limit,
            window,
            times: VecDeque::new(),
        }
    }

    /// Records a failure at `now`; true when that makes `limit` failures within the window.
    pub fn record(&mut self, now: Instant) -> bool {
        while self
            .times
            .front()
            .is_some_and(|t| now.duration_since(*t) >= self.window)
        {
            self.times.pop_front();
        }
        self.times.push_back(now);
        self.times.len() >= self.limit
    }
}

/// Starts the handler and keeps it running.
pub struct Supervisor {
    spec: ChildSpec,
    client: HandlerClient,
    policy: RestartPolicy,
    status: watch::Sender<ProcessStatus>,
    control: ProcessControl,
    kill_rx: mpsc::UnboundedReceiver<std::time::Instant>,
}

/// How one run of the child ended.
enum Ended {
    /// It exited or was killed; the text says how.
    Failed(String),
    /// The dev host is stopping.
    Stopping,
}

impl Supervisor {
    /// A supervisor for `spec`, pinging it through `client` (which must point at the port the
    /// spec's environment gives the child).
    pub fn new(spec: ChildSpec, client: HandlerClient, policy: RestartPolicy) -> Self {
        let (kill_tx, kill_rx) = mpsc::unbounded_channel();
        Self {
            spec,
            client,
            policy,
            status: watch::Sender::new(ProcessStatus::default()),
            control: ProcessControl { kill_tx },
            kill_rx,
        }
    }

    /// The child's status, updated as it changes.
    pub fn status(&self) -> watch::Receiver<ProcessStatus> {
        self.status.subscribe()
    }

    /// A handle to kill the running child.
    pub fn control(&self) -> ProcessControl {
        self.control.clone()
    }

    /// Starts the child and restarts it after each exit, until `stop` turns true (the child is
    /// then sent SIGTERM, and killed after the grace time). Fails when the child cannot be
    /// started at all, or fails `max_failures` times within the window.
    ///
    /// Runs on the async workers, never on a blocking thread: on Linux the child is told to
    /// exit when the thread that started it ends, and the workers live as long as the runtime.
    pub async fn run(mut self, mut stop: watch::Receiver<bool>) -> anyhow::Result<()> {
        let mut failures = Failures::new(self.policy.max_failures, self.policy.window);
        let mut restarts = 0;
        loop {
            if *stop.borrow() {
                return Ok(());
            }
            let mut child = spawn(&self.spec).with_context(|| {
                format!(
                    "cannot start the handler process {}",
                    self.spec.program.display()
                )
            })?;
            let pid = child.id();
            self.status.send_replace(ProcessStatus {
                pid: Some(pid),
                restarts,
                ready: false,
            });
            tracing::info!("handler process started (pid {pid}); waiting for it to answer GET /");
            let why = match self.watch(&mut child, pid, restarts, &mut stop).await {
                Ended::Stopping => {
                    stop_child(&mut child, self.policy.stop_grace).await;
                    self.status.send_replace(ProcessStatus {
                        pid: None,
                        restarts,
                        ready: false,
                    });
                    return Ok(());
                }
                Ended::Failed(why) => why,
            };
            self.status.send_replace(ProcessStatus {
                pid: None,
                restarts,
                ready: false,
            });
            if failures.record(Instant::now()) {
                bail!(
                    "the handler process failed {} times within {} s (last: pid {pid} {why}); \
                     giving up, as the Functions host does",
                    self.policy.max_failures,
                    self.policy.window.as_secs()
                );
            }
            tracing::error!(
                "handler process (pid {pid}) {why}; starting it again in {} ms, as the host \
                 restarts its worker (invocations fail until it answers)",
                self.policy.restart_delay.as_millis()
            );
            tokio::select! {
                () = tokio::time::sleep(self.policy.restart_delay) => {}
                _ = stop.wait_for(|s| *s) => return Ok(()),
            }
            restarts += 1;
        }
    }

    /// Waits for readiness, then for the end of this run of the child.
    async fn watch(
        &mut self,
        child: &mut Child,
        pid: u32,
        restarts: u32,
        stop: &mut watch::Receiver<bool>,
    ) -> Ended {
        let ready = tokio::select! {
            ready = self.client.wait_until_ready(self.policy.readiness_poll, self.policy.readiness_timeout) => ready,
            status = exited(child) => return Ended::Failed(format!("exited with {status} before answering GET /")),
            _ = stop.wait_for(|s| *s) => return Ended::Stopping,
        };
        if ready.is_err() {
            let _ = child.kill();
            let status = exited(child).await;
            return Ended::Failed(format!(
                "did not answer GET / within {} s and was killed ({status})",
                self.policy.readiness_timeout.as_secs()
            ));
        }
        self.status.send_replace(ProcessStatus {
            pid: Some(pid),
            restarts,
            ready: true,
        });
        tracing::info!("handler process (pid {pid}) is ready");
        let ready_at = std::time::Instant::now();
        loop {
            let timed_out = tokio::select! {
                status = exited(child) => return Ended::Failed(format!("exited with {status}")),
                Some(started) = self.kill_rx.recv() => started,
                _ = stop.wait_for(|s| *s) => return Ended::Stopping,
            };
            if timed_out >= ready_at {
                let _ = child.kill();
                let status = exited(child).await;
                return Ended::Failed(format!(
                    "was killed because a function timed out ({status})"
                ));
            }
        }
    }
}

/// Starts the child: inherited stdout and stderr (its logs pass through), its own process group
/// (Ctrl-C reaches the dev host only, which stops the child after draining), and on Linux a
/// SIGTERM when the dev host dies, so a killed dev host leaves no handler behind.
fn spawn(spec: &ChildSpec) -> std::io::Result<Child> {
    let mut command = Command::new(&spec.program);
    command
        .args(&spec.args)
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .current_dir(&spec.dir)
        .stdin(Stdio::null())
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit());
    #[cfg(unix)]
    {
        use std::os::unix::process::CommandExt as _;
        command.process_group(0);
    }
    #[cfg(target_os = "linux")]
    sys::exit_with_parent(&mut command);
    command.spawn()
}

/// Resolves when the child has exited (and reaps it).
async fn exited(child: &mut Child) -> ExitStatus {
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return status,
            Ok(None) => {}
            Err(e) => {
                tracing::warn!("cannot check the handler process: {e}");
            }
        }
        tokio::time::sleep(EXIT_POLL).await;
    }
}

/// SIGTERM, then SIGKILL after `grace`.
async fn stop_child(child: &mut Child, grace: Duration) {
    #[cfg(unix)]
    sys::terminate(child);
    #[cfg(not(unix))]
    let _ = child.kill();
    if tokio::time::timeout(grace, exited(child)).await.is_err() {
        tracing::warn!(
            "handler process (pid {}) still running {} s after SIGTERM; killing it",
            child.id(),
            grace.as_secs()
        );
        let _ = child.kill();
        exited(child).await;
    }
}

/// The two process controls std does not offer: sending SIGTERM, and asking Linux to signal the
/// child when its parent dies (through the `nix` crate's wrappers).
#[cfg(unix)]
mod sys {
    use nix::sys::signal::{Signal, kill};
    use nix::unistd::Pid;
    use std::process::{Child, Command};

    /// Sends SIGTERM to a child that has not been reaped yet (so its pid cannot have been reused).
    pub fn terminate(child: &mut Child) {
        if matches!(child.try_wait(), Ok(None))
            && let Ok(pid) = i32::try_from(child.id())
        {
            let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
        }
    }

    /// Makes the child receive SIGTERM when the thread that started it ends (the dev host died).
    #[cfg(target_os = "linux")]
    pub fn exit_with_parent(command: &mut Command) {
        use std::os::unix::process::CommandExt as _;
        let parent = std::process::id();
        // SAFETY: between fork and exec only async-signal-safe functions may run; prctl(2) and
        // getppid(2) are plain system calls, and the errors are built without allocating.
        unsafe {
            command.pre_exec(move || {
                nix::sys::prctl::set_pdeathsig(Signal::SIGTERM)?;
                // The parent may have died before prctl took effect.
                if u32::try_from(nix::unistd::getppid().as_raw()).ok() != Some(parent) {
                    return Err(std::io::Error::from(nix::errno::Errno::ESRCH));
                }
                Ok(())
            });
        }
    }
}
