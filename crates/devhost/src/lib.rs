//! `handler dev`: a local stand-in for `func start`. It reads the function app as the host does,
//! runs the handler (in this process, or with `--handler-process` as a supervised child process),
//! and drives it through the host's protocol: public HTTP routes, and an in-process Service Bus
//! queue between the functions.
//!
//! A crate of its own, so its edges show: it depends on the product (`onboarding`: the settings,
//! the app, the server) exactly as the Functions host would, the product never depends on it,
//! and the `handler` binary ties the two together. Outside this crate only [`DevOptions`],
//! [`run`] and [`HOST_VERSION`] are seen; the modules below are private, grouped by job: the app
//! folder (`app_settings`, `jsonc`, `host_json`, `function_json`, `functions_dir`, errors in
//! `app_error`), routes (`route_template`, `route_constraint`, `routes`), the host's side of the
//! protocol (`client`, `payload`, `invoke`, `http_output`), the queue (`queue`, `consumer`), the
//! handler's lifecycle (`lifecycle`, `process`, `running_handler`), and the start (`loaded_app`,
//! `reachability`, `banner`).
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

#![warn(unreachable_pub)]

mod app_error;
mod app_settings;
mod banner;
mod client;
mod consumer;
mod error;
mod front_end;
mod function_json;
mod functions_dir;
mod host_json;
mod http_output;
mod invoke;
mod jsonc;
mod lifecycle;
mod loaded_app;
mod lookup;
mod options;
mod payload;
mod process;
mod public;
mod queue;
mod reachability;
mod route_constraint;
mod route_template;
mod routes;
mod running_handler;
mod timestamps;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use consumer::TriggerDelivery;
use function_json::Trigger;
use functions_dir::queue_names;
use host_json::HostConfig;
use invoke::Invoker;
use loaded_app::LoadedApp;
use onboarding::app::App;
use onboarding::config::Settings;
pub use options::DevOptions;
use public::HandlerView;
use queue::{Bus, QueueOptions};
use running_handler::{RunningHandler, StartedHandler, task_outcome};

/// The Functions host version the dev host claims, as the real host does, in every invocation
/// (`X-Azure-Functions-HostVersion`, `User-Agent`); tests and the benchmark claim the same one.
pub use client::HOST_VERSION;

/// How long, at exit, requests and queue deliveries in flight may take to finish.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
/// Runs the dev host until Ctrl-C or SIGTERM: reads the app folder and settings, starts the
/// handler (in this process, or as a supervised child process) on a loopback port, waits for its
/// readiness, then serves the public routes and consumes the queues.
pub async fn run(options: DevOptions) -> anyhow::Result<()> {
    let mut loaded = LoadedApp::load(&options)?;
    // Bound first, so that links in emails can name the port (`--port 0` picks one).
    let public_listener = bind_public(options.port).await?;
    let public_addr = public_listener.local_addr()?;
    loaded.point_links_at(public_addr);
    let outbox = loaded.root.join("outbox");
    let app = App::build(&loaded.settings, &outbox)
        .await
        .context("cannot prepare the handler")?;
    let backends = reachability::annotate(&app, &loaded.settings, app.describe_backends()).await;
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
        () = onboarding::server::shutdown_signal() => {}
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

/// The send window must end before the invocation is killed (`functionTimeout`) and before
/// its message's lock is lost (`maxAutoLockRenewalDuration`); otherwise a long outage turns into
/// a killed handler or a second delivery sending alongside the first. The handler cannot see
/// host.json, so the dev host, which reads both, says so at start.
fn warn_about_the_send_window(settings: &Settings, host: &HostConfig) {
    // After its window an invocation may still spend a little time recording the outcome.
    let window = settings.send_window + onboarding::functions::SEND_WINDOW_OVERRUN;
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
                onboarding::functions::SEND_WINDOW_OVERRUN.as_secs(),
                limit.as_secs()
            );
        }
    }
}

/// Resolves when the watched flag turns true (or its sender is gone).
async fn stopped(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|stop| *stop).await;
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
