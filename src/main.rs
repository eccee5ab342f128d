//! `handler`: the Azure Functions custom handler (the default), the local dev host (`dev`), and
//! the generator of the `function.json` files (`function-json`).

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use onboarding::app::App;
use onboarding::config::{Mode, Settings};
use onboarding::functions::declaration;
use onboarding::{server, telemetry};

/// mimalloc rather than the C library's allocator: every request makes dozens of small
/// allocations, and musl's allocator (the static Linux build) is slow at exactly that.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Sign-up service on Azure Functions: with no command, serves the Functions host on
/// 127.0.0.1:$FUNCTIONS_CUSTOMHANDLER_PORT.
#[derive(Parser)]
#[command(name = "handler", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the whole product locally: a stand-in for `func start`, with an in-process queue.
    Dev(devhost::DevOptions),
    /// Write each function's function.json from the declaration in the code.
    FunctionJson {
        /// Only check that the files are up to date; exit 1 if not.
        #[arg(long)]
        check: bool,
        /// The function app's root folder (where host.json is).
        #[arg(long, default_value = ".")]
        app_root: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        None => run_async(serve()),
        Some(Command::Dev(options)) => run_async(devhost::run(options)),
        Some(Command::FunctionJson { check, app_root }) => function_json(check, &app_root),
    }
}

fn run_async(work: impl std::future::Future<Output = anyhow::Result<()>>) -> ExitCode {
    telemetry::init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("handler: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(work) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("handler: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Serves the Functions host: settings first (all problems at once), then the port, then lazy
/// backends, so the readiness ping is answered before Redis or SMTP is reached. Returns `Ok`
/// (exit code 0) only after SIGTERM or Ctrl-C: the host never restarts a worker that exits 0
/// (azure-functions-host `WorkerProcess.OnProcessExited`), so ending any other way is an error.
async fn serve() -> anyhow::Result<()> {
    let settings = Settings::from_env(Mode::Serve)?;
    let port = settings
        .listen_port
        .context("FUNCTIONS_CUSTOMHANDLER_PORT is not set")?;
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .with_context(|| format!("cannot listen on 127.0.0.1:{port}"))?;
    let app = App::build(&settings, std::path::Path::new("outbox")).await?;
    for (part, backend) in app.describe_backends() {
        tracing::info!("{part}: {backend}");
    }
    tracing::info!(port, "handler listening on 127.0.0.1");
    server::serve(listener, Arc::new(app), server::shutdown_signal())
        .await
        .context("the handler stopped serving without being asked to")
}

fn function_json(check: bool, app_root: &std::path::Path) -> ExitCode {
    if check {
        let stale = declaration::stale_files(app_root);
        if stale.is_empty() {
            println!("function.json files are up to date");
            return ExitCode::SUCCESS;
        }
        for path in stale {
            eprintln!("out of date: {}", path.display());
        }
        eprintln!("run `handler function-json` to rewrite them");
        return ExitCode::FAILURE;
    }
    match declaration::write_all(app_root) {
        Ok(paths) => {
            for path in paths {
                println!("wrote {}", path.display());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("handler: cannot write function.json files: {e}");
            ExitCode::FAILURE
        }
    }
}
