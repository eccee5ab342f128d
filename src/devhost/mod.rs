//! `handler dev`: a local stand-in for `func start`. It reads the function app as the host does,
//! runs the handler (in this process, or with `--handler-process` as a supervised child process),
//! and drives it through the host's protocol: public HTTP routes, and an in-process Service Bus
//! queue between the functions.
//!
//! It is never gentler than Azure (docs/PROTOCOL.md, "Service Bus settlement" and "Worker
//! lifecycle"): a failed delivery comes back at once with `DeliveryCount` + 1 and is
//! dead-lettered after the max delivery count; an invocation past host.json's
//! `maxAutoLockRenewalDuration` loses its message's lock; one past `functionTimeout` gets the
//! handler killed and restarted (in both modes), failing every invocation in flight;
//! invocations are held while the handler (re)starts; a handler that exits 0 stays down.
//!
//! Dev-only endpoints on the public port: `GET /_dev/queues` shows every queue as
//! `{"<queue>": {"active", "inFlight", "completed", "locksLost", "deadLetter": [{"messageId",
//! "sequenceNumber", "deliveryCount", "reason", "errorDescription", "enqueuedTimeUtc",
//! "deadLetteredTimeUtc", "body"}]}}` ("active" counts ready plus locked messages, as Service
//! Bus does; "locksLost" counts deliveries whose lock was lost while their invocation ran),
//! `POST /_dev/queues/<queue>/messages` sends its body as a message, `GET /_dev/handler`
//! shows the handler as `{"mode": "process"|"in-process", "pid", "restarts", "ready", "state":
//! "starting"|"ready"|"exited"|"stopped", "url"}` (`pid` is null while a handler process is
//! down), and `GET /_dev/faults` shows `{"queueSends": "ok"|"fail"}`, which `PUT /_dev/faults`
//! with that body changes: with "fail", every Service Bus output-binding send fails (after the
//! handler answered, as a missing permission or queue would on Azure), so HTTP callers get an
//! empty 500 and triggered messages are abandoned. Unlike the real host, a method a function
//! does not accept gets 405 with `Allow` (the host answers 404).

pub mod app_error;
pub mod app_settings;
mod banner;
pub mod consumer;
pub mod function_json;
pub mod functions_dir;
pub mod host_json;
pub mod http_output;
pub mod invoke;
mod jsonc;
pub mod lifecycle;
pub mod lookup;
pub mod payload;
pub mod process;
pub mod public;
pub mod queue;
pub mod routes;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::app::App;
use crate::config::{Mode, Settings, expose};
use app_settings::AppSettings;
use consumer::TriggerDelivery;
use function_json::{FunctionDef, OutputKind, Trigger};
use functions_dir::FunctionSet;
use host_json::HostConfig;
use invoke::{CLIENT_TIMEOUT_MARGIN, HandlerClient, Invoker};
use lifecycle::{HandlerControl, HandlerState, Launch, RestartPolicy, Supervisor};
use process::ChildSpec;
use public::HandlerView;
use queue::{Bus, QueueOptions};
use routes::{Route, RouteTemplate, Router};

/// The port `func start` uses by default.
pub const DEFAULT_PORT: u16 = 7071;
/// How long, at exit, requests and queue deliveries in flight may take to finish.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the handler gets to be killed once everything else has stopped.
const HANDLER_STOP_TIMEOUT: Duration = Duration::from_secs(5);
/// The setting the host gives the handler; the dev host picks the handler's port itself.
const HANDLER_PORT_SETTING: &str = "FUNCTIONS_CUSTOMHANDLER_PORT";

/// Options of `handler dev`.
#[derive(Debug, Clone, clap::Args)]
pub struct DevOptions {
    /// Port of the public HTTP side on 127.0.0.1; 0 picks a free one (the address is printed).
    #[arg(long, default_value_t = DEFAULT_PORT)]
    pub port: u16,
    /// The function app's root: host.json, the function folders and local.settings.json.
    #[arg(long, default_value = ".")]
    pub app_root: PathBuf,
    /// Deliveries before a message is dead-lettered (the queue's MaxDeliveryCount).
    #[arg(long, default_value_t = queue::DEFAULT_MAX_DELIVERY_COUNT,
          value_parser = clap::value_parser!(u32).range(1..=2000))]
    pub max_delivery_count: u32,
    /// Run the handler as a separate process, as the Functions host does, instead of in this
    /// process: this executable with no command (or --handler-executable), the app settings as
    /// its environment plus FUNCTIONS_CUSTOMHANDLER_PORT, its output passed through. As on
    /// Azure: exit code 0 leaves it down (every later invocation fails); any other exit restarts
    /// it at once, and the third such failure, each within 30 minutes of the previous one, stops
    /// the dev host; a function timeout kills and restarts it (in-process too). Invocations are
    /// held while it starts. It is SIGKILLed at exit, never sent SIGTERM. Its pid is in the
    /// banner and in GET /_dev/handler. Needs REDIS_URL and SMTP_URL (a separate process cannot
    /// share the in-memory store).
    #[arg(long)]
    pub handler_process: bool,
    /// The program --handler-process starts instead of this executable (as host.json's
    /// customHandler.description.defaultExecutablePath names it on Azure): to try another
    /// handler build, or a fake one in tests.
    #[arg(long, requires = "handler_process")]
    pub handler_executable: Option<PathBuf>,
    /// Make every Service Bus output-binding send fail from the start (switch it at run time
    /// with PUT /_dev/faults {"queueSends": "ok"|"fail"}).
    #[arg(long)]
    pub fail_queue_sends: bool,
}

impl Default for DevOptions {
    fn default() -> Self {
        Self {
            port: DEFAULT_PORT,
            app_root: PathBuf::from("."),
            max_delivery_count: queue::DEFAULT_MAX_DELIVERY_COUNT,
            handler_process: false,
            handler_executable: None,
            fail_queue_sends: false,
        }
    }
}

/// Runs the dev host until Ctrl-C or SIGTERM: reads the app folder and settings, starts the
/// handler (in this process, or as a supervised child process) on a loopback port, waits for its
/// readiness, then serves the public routes and consumes the queues.
pub async fn run(options: DevOptions) -> anyhow::Result<()> {
    let loaded = LoadedApp::load(&options)?;
    let outbox = loaded.root.join("outbox");
    let app = App::build(&loaded.settings, &outbox)
        .await
        .context("cannot prepare the handler")?;
    let backends = app.describe_backends();
    let bus = Arc::new(Bus::new(
        queue_names(&loaded.functions.functions),
        QueueOptions {
            max_delivery_count: options.max_delivery_count,
            max_lock_renewal: loaded.host.max_auto_lock_renewal,
        },
    ));
    bus.set_sends_fail(options.fail_queue_sends);

    let StartedHandler {
        mut handler,
        client,
        control,
        view,
    } = RunningHandler::start(&options, &loaded, app).await?;
    let invoker = Arc::new(Invoker::new(
        client,
        bus.clone(),
        control,
        loaded.host.function_timeout,
    ));
    let public_listener = bind_public(options.port).await?;
    let public_addr = public_listener.local_addr()?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let consumers = start_consumers(&loaded, &bus, &invoker, &stop_rx)?;
    announce(&options, &loaded, &backends, &view, public_addr);

    let state = Arc::new(public::PublicState {
        router: loaded.router,
        functions: loaded
            .functions
            .functions
            .iter()
            .map(|f| (f.name.clone(), f.clone()))
            .collect::<BTreeMap<_, _>>(),
        invoker,
        bus: bus.clone(),
        local_addr: public_addr,
        handler: view,
    });
    let mut public_task = tokio::spawn(
        warp::serve(public::filter(state))
            .incoming(public_listener)
            .graceful(stopped(stop_rx.clone()))
            .run(),
    );

    let ending = wait_for_the_end(&mut handler.task, &mut public_task).await;
    println!(
        "handler dev: stopping: no new requests or deliveries; waiting up to {} s for those in flight",
        DRAIN_TIMEOUT.as_secs()
    );
    let _ = stop_tx.send(true);
    drain(public_task, ending.public_done, consumers).await;
    handler.stop(ending.handler_done).await;
    print!("{}", pending_report(&bus));
    match ending.handler_failure {
        Some(why) => bail!("{why}"),
        None => Ok(()),
    }
}

/// The function app as read from its folder, and the settings the handler runs with.
struct LoadedApp {
    root: PathBuf,
    app_settings: AppSettings,
    host: HostConfig,
    functions: FunctionSet,
    router: Router,
    settings: Settings,
}

impl LoadedApp {
    /// Reads host.json, the function.json files and the app settings; refuses an app with no
    /// function to run, and a handler process without the shared backends it needs.
    fn load(options: &DevOptions) -> anyhow::Result<Self> {
        let root = std::fs::canonicalize(&options.app_root).with_context(|| {
            format!(
                "the app root {} cannot be opened",
                options.app_root.display()
            )
        })?;
        let app_settings = AppSettings::load(&root)?;
        let host = HostConfig::load(&root, &app_settings)?;
        let functions = functions_dir::load_functions(&root, &host, &app_settings)?;
        if functions.functions.is_empty() {
            bail!(
                "no function to run: {} has no */function.json with an HTTP or Service Bus trigger",
                root.display()
            );
        }
        let router = build_router(&host, &functions.functions)?;
        let settings = Settings::from_lookup(Mode::Dev, |name| {
            (name != HANDLER_PORT_SETTING)
                .then(|| app_settings.get(name))
                .flatten()
        })
        .context("the app settings (environment, then local.settings.json Values) are not valid")?;
        if options.handler_process && options.handler_executable.is_none() {
            require_shared_backends(&settings)?;
        }
        Ok(Self {
            root,
            app_settings,
            host,
            functions,
            router,
            settings,
        })
    }
}

/// A handler process cannot use the in-memory store: it needs REDIS_URL and SMTP_URL.
fn require_shared_backends(settings: &Settings) -> anyhow::Result<()> {
    let missing: Vec<&str> = [
        ("REDIS_URL", settings.redis.is_none()),
        ("SMTP_URL", settings.smtp.is_none()),
    ]
    .into_iter()
    .filter_map(|(name, missing)| missing.then_some(name))
    .collect();
    if !missing.is_empty() {
        bail!(
            "--handler-process needs {}: the handler runs as its own process, restarted at \
             will, so it cannot use the in-memory store or share it with the dev host",
            missing.join(" and ")
        );
    }
    Ok(())
}

/// The handler under its supervisor.
struct RunningHandler {
    /// The supervisor: it ends when the handler is given up on, or when told to stop.
    task: JoinHandle<anyhow::Result<()>>,
    stop_tx: watch::Sender<bool>,
}

/// A handler that became ready, and what the rest of the dev host uses to reach it.
struct StartedHandler {
    handler: RunningHandler,
    client: HandlerClient,
    control: HandlerControl,
    view: HandlerView,
}

impl RunningHandler {
    /// Starts the handler the way `options` asks (in this process, or as a child process) on
    /// a loopback port picked once and kept across restarts, and waits until it is ready.
    async fn start(
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
    async fn stop(mut self, already_ended: bool) {
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

/// The public port on 127.0.0.1.
async fn bind_public(port: u16) -> anyhow::Result<TcpListener> {
    TcpListener::bind((Ipv4Addr::LOCALHOST, port))
        .await
        .with_context(|| {
            format!(
                "cannot listen on 127.0.0.1:{port} (is `func start` or another `handler dev` \
                 running? choose another --port, or 0 for a free one)"
            )
        })
}

/// One consumer per Service Bus-triggered function; each returns how many deliveries it cut.
fn start_consumers(
    loaded: &LoadedApp,
    bus: &Bus,
    invoker: &Arc<Invoker>,
    stop_rx: &watch::Receiver<bool>,
) -> anyhow::Result<Vec<JoinHandle<usize>>> {
    let mut consumers = Vec::new();
    for function in &loaded.functions.functions {
        if let Trigger::ServiceBus { queue, .. } = &function.trigger {
            consumers.push(tokio::spawn(consumer::consume(
                bus.queue(queue)?,
                function.name.clone(),
                Arc::new(TriggerDelivery::new(invoker.clone(), function.clone())),
                loaded.host.max_concurrent_calls,
                stop_rx.clone(),
                DRAIN_TIMEOUT,
            )));
        }
    }
    Ok(consumers)
}

/// The banner, then the warnings about host.json settings.
fn announce(
    options: &DevOptions,
    loaded: &LoadedApp,
    backends: &[(&'static str, String)],
    handler: &HandlerView,
    public_addr: SocketAddr,
) {
    let banner = banner::Banner {
        app_root: &loaded.root,
        app_settings: &loaded.app_settings,
        settings: &loaded.settings,
        backends,
        host: &loaded.host,
        functions: &loaded.functions,
        router: &loaded.router,
        options,
        handler,
        public_addr,
    };
    print!("{}", banner.render());
    warn_about_the_send_window(&loaded.settings, &loaded.host);
    if loaded.host.forwarding {
        tracing::warn!(
            "host.json enables customHandler.enableForwardingHttpRequest: handler dev does not \
             emulate forwarding and sends every function the invocation envelope"
        );
    }
}

/// Why the dev host is stopping.
struct Ending {
    /// The handler's supervisor has ended (so it needs no stopping).
    handler_done: bool,
    /// Why the handler was given up on, when that is why the dev host stops.
    handler_failure: Option<String>,
    /// The public server has ended (so it needs no draining).
    public_done: bool,
}

/// Runs until a signal, or until the handler or the public server ends on its own.
async fn wait_for_the_end(
    handler_task: &mut JoinHandle<anyhow::Result<()>>,
    public_task: &mut JoinHandle<()>,
) -> Ending {
    let mut ending = Ending {
        handler_done: false,
        handler_failure: None,
        public_done: false,
    };
    tokio::select! {
        () = crate::server::shutdown_signal() => {}
        ended = handler_task => {
            ending.handler_done = true;
            let outcome = task_outcome(ended);
            tracing::error!("{outcome}");
            ending.handler_failure = Some(outcome);
        }
        ended = public_task => {
            ending.public_done = true;
            if let Err(e) = ended {
                tracing::error!("the public HTTP server stopped: {e}");
            }
        }
    }
    ending
}

/// Waits up to `DRAIN_TIMEOUT` for the HTTP requests, then for the queue deliveries, in flight
/// (stop has been signalled); what is still running then is cut.
async fn drain(
    mut public_task: JoinHandle<()>,
    public_done: bool,
    consumers: Vec<JoinHandle<usize>>,
) {
    if !public_done
        && tokio::time::timeout(DRAIN_TIMEOUT, &mut public_task)
            .await
            .is_err()
    {
        public_task.abort();
        tracing::warn!(
            "HTTP requests still open after {} s were cut",
            DRAIN_TIMEOUT.as_secs()
        );
    }
    let mut cut = 0;
    for consumer in consumers {
        cut += consumer.await.unwrap_or(0);
    }
    if cut > 0 {
        tracing::warn!(
            "{cut} queue deliveries still running after {} s were cut",
            DRAIN_TIMEOUT.as_secs()
        );
    }
}

/// The handler process's environment on top of the dev host's own: local.settings.json's
/// `Values`, what the dev host filled in (a generated JWT key, the local sender), and the port.
fn child_environment(
    app_settings: &AppSettings,
    settings: &Settings,
    port: u16,
) -> Vec<(String, String)> {
    let mut env = app_settings.local_values();
    if settings.jwt.generated {
        env.push((
            "JWT_SECRET".to_owned(),
            expose(&settings.jwt.secret).to_owned(),
        ));
    }
    if app_settings
        .get("MAIL_FROM")
        .is_none_or(|v| v.trim().is_empty())
    {
        env.push(("MAIL_FROM".to_owned(), settings.mail_from.to_string()));
    }
    env.push((HANDLER_PORT_SETTING.to_owned(), port.to_string()));
    env
}

/// The send window must end before the invocation is killed (`functionTimeout`) and before
/// its message's lock is lost (`maxAutoLockRenewalDuration`); otherwise a long outage turns into
/// a killed handler or a second delivery sending alongside the first. The handler cannot see
/// host.json, so the dev host, which reads both, says so at start.
fn warn_about_the_send_window(settings: &Settings, host: &HostConfig) {
    // After its window an invocation may still spend a little time recording the outcome.
    let window = settings.send_window + crate::functions::SEND_WINDOW_OVERRUN;
    let limits = [
        ("functionTimeout", host.function_timeout),
        (
            "extensions.serviceBus.maxAutoLockRenewalDuration",
            Some(host.max_auto_lock_renewal),
        ),
    ];
    for (name, limit) in limits {
        if let Some(limit) = limit.filter(|limit| window >= *limit) {
            tracing::warn!(
                "SMTP_SEND_WINDOW_SECONDS ({} s, and up to {} s more to record the outcome) is \
                 not below host.json {name} ({} s): a long outage would outlast the invocation; \
                 keep the window well inside it",
                settings.send_window.as_secs(),
                crate::functions::SEND_WINDOW_OVERRUN.as_secs(),
                limit.as_secs()
            );
        }
    }
}

/// Resolves when the watched flag turns true (or its sender is gone).
async fn stopped(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|stop| *stop).await;
}

fn task_outcome(ended: Result<anyhow::Result<()>, tokio::task::JoinError>) -> String {
    match ended {
        Ok(Ok(())) => "it returned".to_owned(),
        Ok(Err(e)) => format!("{e:#}"),
        Err(e) => e.to_string(),
    }
}

/// Every HTTP function's route under the host's prefix; all bad templates reported at once.
pub fn build_router(host: &HostConfig, functions: &[FunctionDef]) -> anyhow::Result<Router> {
    let mut routes = Vec::new();
    let mut problems = Vec::new();
    for function in functions {
        if let Trigger::Http { methods, route, .. } = &function.trigger {
            match RouteTemplate::parse(&host.route_prefix, route) {
                Ok(template) => routes.push(Route {
                    function: function.name.clone(),
                    methods: methods.clone(),
                    template,
                }),
                Err(e) => problems.push(format!("{}: {e}", function.name)),
            }
        }
    }
    if problems.is_empty() {
        match Router::new(routes) {
            Ok(router) => return Ok(router),
            Err(conflicts) => problems.extend(conflicts.iter().map(ToString::to_string)),
        }
    }
    bail!(
        "{} problem(s) with the HTTP routes:{}",
        problems.len(),
        problems
            .iter()
            .map(|p| format!("\n  - {p}"))
            .collect::<String>()
    )
}

/// Queues named by triggers and outputs.
fn queue_names(functions: &[FunctionDef]) -> Vec<String> {
    let mut names = Vec::new();
    for function in functions {
        if let Trigger::ServiceBus { queue, .. } = &function.trigger {
            names.push(queue.clone());
        }
        for output in &function.outputs {
            if let OutputKind::ServiceBus { queue } = &output.kind {
                names.push(queue.clone());
            }
        }
    }
    names
}

/// What is left in each queue at exit (messages live in memory and end with the run).
fn pending_report(bus: &Bus) -> String {
    let mut out = String::from("handler dev stopped.\n");
    for queue in bus.queues() {
        let c = queue.counts();
        let _ = writeln!(
            out,
            "  queue {}: {} message(s) still pending ({} ready, {} in delivery), {} dead-lettered; \
             they lived in memory and end with this run",
            queue.name(),
            c.pending(),
            c.ready,
            c.in_flight,
            c.dead_lettered
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn an_unsupported_template_is_an_error_naming_the_function() {
        let host = HostConfig::from_value(&json!({"version": "2.0"})).unwrap();
        let functions = vec![FunctionDef {
            name: "when".into(),
            trigger: Trigger::Http {
                binding: "req".into(),
                methods: None,
                route: "at/{t:datetime}".into(),
            },
            outputs: vec![],
        }];
        let error = build_router(&host, &functions).unwrap_err().to_string();
        assert!(
            error.contains("when") && error.contains("datetime"),
            "{error}"
        );
    }

    #[test]
    fn a_handler_process_gets_local_values_the_filled_in_settings_and_its_port() {
        let local = BTreeMap::from([
            ("REDIS_URL".to_owned(), "redis://127.0.0.1:6379".to_owned()),
            ("SMTP_URL".to_owned(), "smtp://127.0.0.1:25".to_owned()),
            ("PUBLIC_URL".to_owned(), "http://file.example".to_owned()),
        ]);
        let app_settings = AppSettings::from_parts(
            |name| (name == "PUBLIC_URL").then(|| "http://env.example".to_owned()),
            local,
        );
        let settings = Settings::from_lookup(Mode::Dev, |n| app_settings.get(n)).unwrap();

        let env: BTreeMap<String, String> = child_environment(&app_settings, &settings, 4321)
            .into_iter()
            .collect();

        assert_eq!(env["REDIS_URL"], "redis://127.0.0.1:6379");
        assert_eq!(
            env["PUBLIC_URL"], "http://env.example",
            "the environment wins"
        );
        assert_eq!(env["FUNCTIONS_CUSTOMHANDLER_PORT"], "4321");
        assert_eq!(env["JWT_SECRET"], expose(&settings.jwt.secret));
        assert_eq!(env["MAIL_FROM"], settings.mail_from.to_string());
        let child = Settings::from_lookup(Mode::Serve, |n| env.get(n).cloned()).unwrap();
        assert_eq!(child.listen_port, Some(4321));
    }

    #[test]
    fn the_router_uses_the_hosts_prefix() {
        let host = HostConfig::from_value(&json!({"version": "2.0"})).unwrap();
        let functions = vec![FunctionDef {
            name: "health".into(),
            trigger: Trigger::Http {
                binding: "req".into(),
                methods: Some(vec!["GET".into()]),
                route: "health".into(),
            },
            outputs: vec![],
        }];
        let router = build_router(&host, &functions).unwrap();
        assert!(matches!(
            router.find("GET", "/api/health"),
            routes::RouteMatch::Found { .. }
        ));
    }
}
