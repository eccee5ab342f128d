//! The command-line options of `handler dev`.

use std::path::PathBuf;

use super::queue;

/// The port `func start` uses by default.
pub(crate) const DEFAULT_PORT: u16 = 7071;
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
