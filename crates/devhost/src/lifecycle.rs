//! The handler's lifecycle, as the Functions host (v4) runs its custom-handler worker, for both
//! ways `handler dev` runs it (a child process, or a server task in this process). Sources, in
//! azure-functions-host: `Workers/ProcessManagement/WorkerProcess.cs` (exit codes),
//! `Workers/Http/HttpFunctionInvocationDispatcher.cs` (restarts and when to give up),
//! `Workers/Http/DefaultHttpWorkerService.cs` (the readiness ping),
//! `WebScriptHostExceptionHandler.cs` (a function timeout restarts the worker) and
//! `Description/Workers/WorkerFunctionInvoker.cs` (invocations held while the worker starts).
//!
//! - Exit code 0: not restarted; later invocations fail until the app is recycled.
//! - Exit code 200: restarted, not counted. Any other exit, or no answer to `GET /` within 30 s:
//!   restarted at once and counted; the third failure, each within 30 minutes of the previous
//!   one, stops the host.
//! - A function timeout kills the worker (no grace: the host never sets one) and restarts it,
//!   uncounted; every invocation in flight on it fails.
//! - Invocations arriving while the worker starts are held: polled every 25 ms, up to 2 minutes.
//! - The host never sends SIGTERM: a worker is killed (SIGKILL), at shutdown too.

use std::net::SocketAddr;
use std::process::{Child, ExitStatus};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::client::{HandlerClient, READINESS_POLL, READINESS_TIMEOUT};
pub(crate) use super::error::Unavailable;
use super::process::{ChildSpec, exited, spawn};
use onboarding::app::App;
use onboarding::server::ServeError;

/// Failures (counted exits, readiness timeouts) that stop the host: `ErrorEventsThreshold` in
/// `HttpFunctionInvocationDispatcher.cs`.
pub(crate) const MAX_FAILURES: usize = 3;
/// A failure more than this after the previous one starts the count afresh
/// (`WorkerConstants.WorkerRestartErrorIntervalThresholdInMinutes`).
pub(crate) const FAILURE_INTERVAL: Duration = Duration::from_secs(30 * 60);
/// The exit code that asks for a restart without counting as a failure
/// (`WorkerConstants.IntentionalRestartExitCode`).
pub(crate) const INTENTIONAL_RESTART_EXIT_CODE: i32 = 200;
/// How often a held invocation looks whether the handler is ready
/// (`WorkerConstants.WorkerReadyCheckPollingIntervalMilliseconds`).
pub(crate) const HOLD_POLL: Duration = Duration::from_millis(25);
/// How long an invocation is held before it fails: `(ErrorEventsThreshold + 1) ×
/// HttpWorkerOptions.InitializationTimeout` = 4 × 30 s (`WorkerFunctionInvoker.cs`).
pub(crate) const HOLD_LIMIT: Duration = Duration::from_secs(120);

/// Where the handler is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HandlerState {
    /// Started (or restarting), not yet answering `GET /`: invocations are held.
    Starting,
    Ready,
    /// It exited with code 0 and is not restarted: every invocation fails.
    Exited,
    /// The dev host stopped it, or gave up on it.
    Stopped,
}

impl HandlerState {
    /// The name `/_dev/handler` shows.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Starting => "starting",
            Self::Ready => "ready",
            Self::Exited => "exited",
            Self::Stopped => "stopped",
        }
    }
}

/// The handler as `/_dev/handler` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct HandlerStatus {
    /// The running handler's process id (the dev host's own in-process); `None` while down.
    pub pid: Option<u32>,
    /// Starts after the first one.
    pub restarts: u32,
    pub state: HandlerState,
    /// Which start this is (1 for the first); a timeout kills only the generation it ran on.
    pub generation: u64,
}

impl Default for HandlerStatus {
    fn default() -> Self {
        Self {
            pid: None,
            restarts: 0,
            state: HandlerState::Starting,
            generation: 0,
        }
    }
}

/// What the invoker needs from the lifecycle: holding, and killing after a timeout.
#[derive(Debug, Clone)]
pub(crate) struct HandlerControl {
    status: watch::Receiver<HandlerStatus>,
    kill_tx: mpsc::UnboundedSender<u64>,
}

impl HandlerControl {
    /// The handler's status, updated as it changes.
    pub(crate) fn status(&self) -> watch::Receiver<HandlerStatus> {
        self.status.clone()
    }

    /// Holds an invocation while the handler starts, as `WorkerFunctionInvoker` does: polls
    /// every `poll` for up to `limit`. Returns the generation to send to. A handler that
    /// exited with 0 is not waited for: the invocation goes out and fails, as on Azure.
    pub(crate) async fn wait_until_available(
        &self,
        poll: Duration,
        limit: Duration,
    ) -> Result<u64, Unavailable> {
        let started = Instant::now();
        loop {
            let status = *self.status.borrow();
            match status.state {
                HandlerState::Ready | HandlerState::Exited => return Ok(status.generation),
                HandlerState::Stopped => return Err(Unavailable::Stopped),
                HandlerState::Starting if started.elapsed() >= limit => {
                    return Err(Unavailable::HoldExpired(limit));
                }
                HandlerState::Starting => tokio::time::sleep(poll).await,
            }
        }
    }

    /// After a call to `generation` could not reach the handler, waits (at most `within`) for the
    /// supervisor to notice that this run ended. The host learns of a worker's exit from the
    /// process-exit event at once (`WorkerProcess.OnProcessExited`), before Service Bus could
    /// hand the failed message back; the supervisor here looks every 25 ms. Without this wait an
    /// in-process redelivery, which takes microseconds, would meet the dead port ten times and be
    /// dead-lettered, where Azure holds it for the restarted handler.
    pub(crate) async fn notice_lost(&self, generation: u64, within: Duration) {
        let mut status = self.status.clone();
        let _ = tokio::time::timeout(
            within,
            status.wait_for(|s| s.generation != generation || s.state != HandlerState::Ready),
        )
        .await;
    }

    /// Kills and restarts the handler after a function timeout, unless `generation` is gone
    /// already (another timed-out invocation had it killed).
    pub(crate) fn restart_after_timeout(&self, generation: u64) {
        let _ = self.kill_tx.send(generation);
    }
}

/// What to run as the handler.
pub(crate) enum Launch {
    /// A child process (`--handler-process`).
    Process(ChildSpec),
    /// `onboarding::server::serve` on `addr` in this process, with the dev host's `App` (its
    /// in-memory store outlives restarts, being the dev host's).
    InProcess { addr: SocketAddr, app: Arc<App> },
}

/// One run of the handler.
enum Instance {
    Child(Child),
    Task(JoinHandle<Result<(), ServeError>>),
}

impl Instance {
    /// Resolves when this run ends on its own; says how.
    async fn ended(&mut self) -> Exit {
        match self {
            Self::Child(child) => Exit::Process(exited(child).await),
            Self::Task(task) => Exit::Task(match task.await {
                Ok(Ok(())) => "its server returned".to_owned(),
                Ok(Err(e)) => e.to_string(),
                Err(e) => e.to_string(),
            }),
        }
    }

    /// SIGKILL, or aborting the server task (which drops its connections), and waiting for it.
    async fn kill(&mut self) {
        match self {
            Self::Child(child) => {
                let _ = child.kill();
                exited(child).await;
            }
            Self::Task(task) => {
                task.abort();
                let _ = task.await;
            }
        }
    }
}

/// How a run ended by itself.
enum Exit {
    Process(ExitStatus),
    Task(String),
}

/// How a run of the handler ended, as the supervisor treats it.
enum Ended {
    /// Exit code 0: left down.
    Clean,
    /// Exit code 200: restarted, not counted.
    IntentionalRestart,
    /// Killed after a function timeout: restarted, not counted.
    TimedOut,
    /// Anything else: restarted and counted.
    Failed(String),
    /// The dev host is stopping.
    Stopping,
}

impl From<Exit> for Ended {
    fn from(exit: Exit) -> Self {
        match exit {
            Exit::Process(status) => match status.code() {
                Some(0) => Self::Clean,
                Some(INTENTIONAL_RESTART_EXIT_CODE) => Self::IntentionalRestart,
                _ => Self::Failed(format!("exited with {status}")),
            },
            Exit::Task(why) => Self::Failed(format!("stopped: {why}")),
        }
    }
}

/// Recent failures, to decide when to give up: a failure more than `interval` after the
/// previous one clears the count (`HttpFunctionInvocationDispatcher.AddOrUpdateErrorBucket`).
#[derive(Debug)]
pub(crate) struct Failures {
    limit: usize,
    interval: Duration,
    times: Vec<Instant>,
}

impl Failures {
    /// No failure yet.
    pub(crate) fn new(limit: usize, interval: Duration) -> Self {
        Self {
            limit,
            interval,
            times: Vec::new(),
        }
    }

    /// Records a failure at `now`; true when it is the `limit`-th in a row, each within
    /// `interval` of the previous one.
    pub(crate) fn record(&mut self, now: Instant) -> bool {
        if self
            .times
            .last()
            .is_some_and(|last| now.duration_since(*last) > self.interval)
        {
            self.times.clear();
        }
        self.times.push(now);
        self.times.len() >= self.limit
    }
}

/// How patient the supervisor is (the host's numbers by default; tests shrink them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RestartPolicy {
    pub max_failures: usize,
    pub failure_interval: Duration,
    pub readiness_poll: Duration,
    pub readiness_timeout: Duration,
}

impl Default for RestartPolicy {
    fn default() -> Self {
        Self {
            max_failures: MAX_FAILURES,
            failure_interval: FAILURE_INTERVAL,
            readiness_poll: READINESS_POLL,
            readiness_timeout: READINESS_TIMEOUT,
        }
    }
}

/// Starts the handler and keeps it running as the host does.
pub(crate) struct Supervisor {
    launch: Launch,
    client: HandlerClient,
    policy: RestartPolicy,
    status: watch::Sender<HandlerStatus>,
    kill_tx: mpsc::UnboundedSender<u64>,
    kill_rx: mpsc::UnboundedReceiver<u64>,
}

impl Supervisor {
    /// A supervisor for `launch`, pinging it through `client` (which must point at the
    /// handler's port).
    pub(crate) fn new(launch: Launch, client: HandlerClient, policy: RestartPolicy) -> Self {
        let (kill_tx, kill_rx) = mpsc::unbounded_channel();
        Self {
            launch,
            client,
            policy,
            status: watch::Sender::new(HandlerStatus::default()),
            kill_tx,
            kill_rx,
        }
    }

    /// The handle the invoker holds.
    pub(crate) fn control(&self) -> HandlerControl {
        HandlerControl {
            status: self.status.subscribe(),
            kill_tx: self.kill_tx.clone(),
        }
    }

    async fn start(&self) -> anyhow::Result<Instance> {
        match &self.launch {
            Launch::Process(spec) => spawn(spec).map(Instance::Child).with_context(|| {
                format!(
                    "cannot start the handler process {}",
                    spec.program.display()
                )
            }),
            Launch::InProcess { addr, app } => {
                let listener = tokio::net::TcpListener::bind(*addr)
                    .await
                    .with_context(|| format!("cannot listen on {addr} for the handler"))?;
                Ok(Instance::Task(tokio::spawn(onboarding::server::serve(
                    listener,
                    app.clone(),
                    std::future::pending(),
                ))))
            }
        }
    }

    fn pid(&self, instance: &Instance) -> u32 {
        match instance {
            Instance::Child(child) => child.id(),
            Instance::Task(_) => std::process::id(),
        }
    }

    fn set(&self, pid: Option<u32>, restarts: u32, state: HandlerState, generation: u64) {
        self.status.send_replace(HandlerStatus {
            pid,
            restarts,
            state,
            generation,
        });
    }

    /// Starts the handler and restarts it by the host's rules until `stop` turns true (then
    /// kills it). Fails when it cannot be started at all, or fails `max_failures` times in a
    /// row within the interval.
    pub(crate) async fn run(mut self, mut stop: watch::Receiver<bool>) -> anyhow::Result<()> {
        let mut failures = Failures::new(self.policy.max_failures, self.policy.failure_interval);
        let mut restarts = 0;
        let mut generation = 0;
        loop {
            let stop_now = *stop.borrow();
            if stop_now {
                self.set(None, restarts, HandlerState::Stopped, generation);
                return Ok(());
            }
            generation += 1;
            let mut instance = match self.start().await {
                Ok(instance) => instance,
                Err(e) => {
                    self.set(None, restarts, HandlerState::Stopped, generation);
                    return Err(e);
                }
            };
            let pid = self.pid(&instance);
            self.set(Some(pid), restarts, HandlerState::Starting, generation);
            tracing::info!("handler started (pid {pid}); waiting for it to answer GET /");
            match self
                .watch(&mut instance, pid, restarts, generation, &mut stop)
                .await
            {
                Ended::Stopping => {
                    instance.kill().await;
                    self.set(None, restarts, HandlerState::Stopped, generation);
                    return Ok(());
                }
                Ended::Clean => {
                    self.set(None, restarts, HandlerState::Exited, generation);
                    tracing::error!(
                        "the handler (pid {pid}) exited with code 0: the Functions host does NOT \
                         restart a worker that exits 0, and on Azure the app stays broken until it \
                         is recycled; every invocation fails from now on (the handler must never \
                         exit 0 unless the host stops it)"
                    );
                    stopping(&mut stop).await;
                    self.set(None, restarts, HandlerState::Stopped, generation);
                    return Ok(());
                }
                Ended::IntentionalRestart => tracing::warn!(
                    "the handler (pid {pid}) exited with code {INTENTIONAL_RESTART_EXIT_CODE}: \
                     restarting it (not counted as a failure)"
                ),
                Ended::TimedOut => tracing::error!(
                    "a function timed out: the handler (pid {pid}) was killed, as the host does, \
                     and every invocation in flight on it failed; restarting it"
                ),
                Ended::Failed(why) => {
                    if failures.record(Instant::now()) {
                        self.set(None, restarts, HandlerState::Stopped, generation);
                        bail!(
                            "the handler (pid {pid}) {why}; that is {} failures, each within {} \
                             minutes of the previous one: giving up, as the Functions host does",
                            self.policy.max_failures,
                            self.policy.failure_interval.as_secs() / 60
                        );
                    }
                    tracing::error!(
                        "the handler (pid {pid}) {why}; restarting it at once, as the host does \
                         (invocations are held until it answers GET /)"
                    );
                }
            }
            self.set(None, restarts, HandlerState::Starting, generation);
            restarts += 1;
        }
    }

    /// Waits for readiness, then for the end of this run.
    async fn watch(
        &mut self,
        instance: &mut Instance,
        pid: u32,
        restarts: u32,
        generation: u64,
        stop: &mut watch::Receiver<bool>,
    ) -> Ended {
        let ready = tokio::select! {
            ready = self.client.wait_until_ready(self.policy.readiness_poll, self.policy.readiness_timeout) => ready,
            exit = instance.ended() => return match Ended::from(exit) {
                Ended::Failed(why) => Ended::Failed(format!("{why} before answering GET /")),
                other => other,
            },
            () = stopping(stop) => return Ended::Stopping,
        };
        if ready.is_err() {
            instance.kill().await;
            return Ended::Failed(format!(
                "did not answer GET / within {} s and was killed",
                self.policy.readiness_timeout.as_secs()
            ));
        }
        self.set(Some(pid), restarts, HandlerState::Ready, generation);
        tracing::info!("handler (pid {pid}) is ready");
        loop {
            tokio::select! {
                exit = instance.ended() => return Ended::from(exit),
                Some(timed_out) = self.kill_rx.recv() => {
                    if timed_out == generation {
                        // No grace before the kill. The WebJobs SDK waits
                        // `JobHostFunctionTimeoutOptions.GracePeriod` for the timed-out task; the
                        // Functions host never sets it (`JobHostFunctionTimeoutOptionsSetup.cs`),
                        // so it is `TimeSpan.Zero`, and `WebScriptHostExceptionHandler
                        // .OnTimeoutExceptionAsync` restarts the worker at once. (The 2 s in the
                        // SDK's `TimeoutAttribute` constructor is overwritten by
                        // `JobHostFunctionTimeoutOptions.ToAttribute`.)
                        instance.kill().await;
                        return Ended::TimedOut;
                    }
                }
                () = stopping(stop) => return Ended::Stopping,
            }
        }
    }
}

/// Resolves when `stop` turns true (or its sender is gone), holding no borrow of it.
async fn stopping(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_third_failure_in_a_row_within_the_interval_gives_up() {
        let mut failures = Failures::new(3, Duration::from_secs(1800));
        let t0 = Instant::now();
        assert!(!failures.record(t0));
        assert!(!failures.record(t0 + Duration::from_secs(1700)));
        // Within 30 min of the previous one, though 56 min after the first.
        assert!(failures.record(t0 + Duration::from_secs(3400)));
    }

    #[test]
    fn a_failure_long_after_the_previous_one_starts_the_count_afresh() {
        let mut failures = Failures::new(3, Duration::from_secs(1800));
        let t0 = Instant::now();
        assert!(!failures.record(t0));
        assert!(!failures.record(t0 + Duration::from_secs(60)));
        assert!(!failures.record(t0 + Duration::from_secs(60 + 1801)));
        assert!(!failures.record(t0 + Duration::from_secs(60 + 1802)));
        assert!(failures.record(t0 + Duration::from_secs(60 + 1803)));
    }

    #[tokio::test(start_paused = true)]
    async fn invocations_are_held_while_the_handler_starts_then_sent() {
        let (status_tx, status) = watch::channel(HandlerStatus::default());
        let (kill_tx, _kill_rx) = mpsc::unbounded_channel();
        let control = HandlerControl { status, kill_tx };
        let started = Instant::now();
        let ready_later = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(1000)).await;
            status_tx.send_replace(HandlerStatus {
                pid: Some(1),
                restarts: 1,
                state: HandlerState::Ready,
                generation: 2,
            });
            status_tx
        });
        let generation = control
            .wait_until_available(HOLD_POLL, HOLD_LIMIT)
            .await
            .unwrap();
        assert_eq!(generation, 2);
        // Seen at the first 25 ms poll after it turned ready, not failed meanwhile.
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_millis(1000) && waited <= Duration::from_millis(1025),
            "{waited:?}"
        );
        let status_tx = ready_later.await.unwrap();

        status_tx.send_modify(|s| s.state = HandlerState::Starting);
        let started = Instant::now();
        assert_eq!(
            control.wait_until_available(HOLD_POLL, HOLD_LIMIT).await,
            Err(Unavailable::HoldExpired(HOLD_LIMIT))
        );
        assert!(started.elapsed() >= HOLD_LIMIT);
        assert!(started.elapsed() < HOLD_LIMIT + Duration::from_millis(30));

        status_tx.send_modify(|s| s.state = HandlerState::Exited);
        assert_eq!(
            control.wait_until_available(HOLD_POLL, HOLD_LIMIT).await,
            Ok(2),
            "a handler that exited 0 is not waited for: the invocation goes out and fails"
        );
    }
}
