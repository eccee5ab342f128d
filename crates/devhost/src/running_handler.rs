//! The handler under its supervisor: started the way the options ask (in this process, or as a
//! child process), waited for until ready, and killed at the end.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::client::{CLIENT_TIMEOUT_MARGIN, HandlerClient};
use super::lifecycle::{HandlerControl, HandlerState, Launch, RestartPolicy, Supervisor};
use super::loaded_app::{LoadedApp, child_environment};
use super::options::DevOptions;
use super::process::ChildSpec;
use super::public::HandlerView;
use onboarding::app::App;

/// How long the handler gets to be killed once everything else has stopped.
const HANDLER_STOP_TIMEOUT: Duration = Duration::from_secs(5);
/// The handler under its supervisor.
pub(super) struct RunningHandler {
    /// The supervisor: it ends when the handler is given up on, or when told to stop.
    pub task: JoinHandle<anyhow::Result<()>>,
    stop_tx: watch::Sender<bool>,
}

/// A handler that became ready, and what the rest of the dev host uses to reach it.
pub(super) struct StartedHandler {
    pub handler: RunningHandler,
    pub client: HandlerClient,
    pub control: HandlerControl,
    pub view: HandlerView,
}

impl RunningHandler {
    /// Starts the handler the way `options` asks (in this process, or as a child process) on
    /// a loopback port picked once and kept across restarts, and waits until it is ready.
    pub(crate) async fn start(
        options: &DevOptions,
        loaded: &LoadedApp,
        app: App,
    ) -> anyhow::Result<StartedHandler> {
        let handler_addr = {
            let probe = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
                .context("cannot find a free loopback port for the handler")?;
            probe.local_addr()?
        };
        let client = HandlerClient::new(
            handler_addr,
            loaded
                .host
                .function_timeout
                .map(|t| t + CLIENT_TIMEOUT_MARGIN),
        )?;
        let launch = launch(options, loaded, app, handler_addr)?;
        let supervisor = Supervisor::new(launch, client.clone(), RestartPolicy::default());
        let control = supervisor.control();
        let mut status = control.status();
        let (stop_tx, stop_rx) = watch::channel(false);
        let mut task = tokio::spawn(supervisor.run(stop_rx));
        tokio::select! {
            ready = status.wait_for(|s| s.state != HandlerState::Starting) => { ready.ok(); }
            ended = &mut task => bail!("the handler never became ready: {}", task_outcome(ended)),
        }
        let view = HandlerView {
            in_process: !options.handler_process,
            addr: handler_addr,
            status,
        };
        Ok(StartedHandler {
            handler: Self { task, stop_tx },
            client,
            control,
            view,
        })
    }

    /// Like the host, no SIGTERM and no grace: the handler is killed.
    pub(crate) async fn stop(mut self, already_ended: bool) {
        let _ = self.stop_tx.send(true);
        if !already_ended
            && tokio::time::timeout(HANDLER_STOP_TIMEOUT, &mut self.task)
                .await
                .is_err()
        {
            self.task.abort();
        }
    }
}

/// How the handler runs: this executable (or `--handler-executable`) as a child process, or
/// the app served from this process.
fn launch(
    options: &DevOptions,
    loaded: &LoadedApp,
    app: App,
    addr: SocketAddr,
) -> anyhow::Result<Launch> {
    if !options.handler_process {
        return Ok(Launch::InProcess {
            addr,
            app: Arc::new(app),
        });
    }
    let program = match &options.handler_executable {
        Some(program) => program.clone(),
        None => std::env::current_exe()
            .context("cannot find this executable to start the handler process")?,
    };
    Ok(Launch::Process(ChildSpec {
        program,
        args: Vec::new(),
        env: child_environment(&loaded.app_settings, &loaded.settings, addr.port()),
        dir: loaded.root.clone(),
    }))
}

/// How a task ended, for the logs.
pub(super) fn task_outcome(ended: Result<anyhow::Result<()>, tokio::task::JoinError>) -> String {
    match ended {
        Ok(Ok(())) => "it returned".to_owned(),
        Ok(Err(e)) => format!("{e:#}"),
        Err(e) => e.to_string(),
    }
}
