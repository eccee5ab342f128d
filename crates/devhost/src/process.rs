//! `handler dev --handler-process`: starting the handler as a child process the way the
//! Functions host starts its worker (the app settings as its environment plus
//! `FUNCTIONS_CUSTOMHANDLER_PORT`, its output passed through), and waiting for it to exit. What
//! happens around a run (restarts, kills, giving up) is `lifecycle.rs`.

use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

/// How often a running child is checked for exit.
const EXIT_POLL: Duration = Duration::from_millis(25);

/// What to start: the program, its arguments, environment (added to the inherited one) and
/// working directory.
#[derive(Debug, Clone)]
pub(crate) struct ChildSpec {
    pub program: PathBuf,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub dir: PathBuf,
}

/// Starts the child: inherited stdout and stderr (its logs pass through), its own process group
/// (Ctrl-C reaches the dev host only, which kills the child after draining), and on Linux a
/// SIGKILL when the dev host dies, so a killed dev host leaves no handler behind.
///
/// Call it on the async workers, never on a blocking thread: on Linux the child is signalled
/// when the thread that started it ends, and the workers live as long as the runtime.
pub(crate) fn spawn(spec: &ChildSpec) -> std::io::Result<Child> {
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
pub(crate) async fn exited(child: &mut Child) -> ExitStatus {
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

/// Asking Linux to kill the child when its parent dies (through the `nix` crate's wrappers).
#[cfg(target_os = "linux")]
mod sys {
    use nix::sys::signal::Signal;
    use std::process::Command;

    /// Makes the child receive SIGKILL when the thread that started it ends (the dev host died).
    pub(super) fn exit_with_parent(command: &mut Command) {
        use std::os::unix::process::CommandExt as _;
        let parent = std::process::id();
        // SAFETY: between fork and exec only async-signal-safe functions may run; prctl(2) and
        // getppid(2) are plain system calls, and the errors are built without allocating.
        unsafe {
            command.pre_exec(move || {
                nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)?;
                // The parent may have died before prctl took effect.
                if u32::try_from(nix::unistd::getppid().as_raw()).ok() != Some(parent) {
                    return Err(std::io::Error::from(nix::errno::Errno::ESRCH));
                }
                Ok(())
            });
        }
    }
}
