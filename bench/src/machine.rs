//! The machine the run is on, for the table's header: CPU, memory, OS, tool versions, the
//! concurrency, and the load average at the start and the end.

use std::process::Command;

use crate::session::Session;

impl Session {
    /// Adds the machine's description (the first time) and the load average as `load_label`.
    pub fn describe_machine(&mut self, load_label: &str) {
        if self.report.machine.is_empty() {
            let mut machine = vec![
                (
                    "cpu".into(),
                    format!("{}, {} cores available", cpu(), self.cores),
                ),
                ("memory".into(), memory()),
                ("os".into(), os()),
            ];
            for (name, args) in [
                ("wrk", vec!["-v"]),
                ("redis-server", vec!["--version"]),
                ("rustc", vec!["--version"]),
            ] {
                machine.push((name.into(), version(name, &args)));
            }
            machine.push((
                "concurrency".into(),
                format!(
                    "{} connections ({} wrk threads) for every HTTP, store and mail phase; {} for the memory phase",
                    self.options.connections, self.options.threads, self.options.signup_connections
                ),
            ));
            self.report.machine = machine;
        }
        let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
        let load: Vec<&str> = load.split_whitespace().take(3).collect();
        self.report
            .machine
            .push((load_label.into(), load.join(" ")));
    }
}

fn cpu() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|m| m.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_else(|| "?".into())
}

fn memory() -> String {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .next()
                .map(|l| l.split_whitespace().nth(1).unwrap_or("0").to_owned())
        })
        .and_then(|k| k.parse::<f64>().ok())
        .map(|k| format!("{:.1} GiB", k / 1024.0 / 1024.0))
        .unwrap_or_default()
}

fn os() -> String {
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let debian = std::fs::read_to_string("/etc/debian_version").unwrap_or_default();
    format!("Linux {}, Debian {}", kernel.trim(), debian.trim())
}

/// The first line `name args` prints (on stdout or stderr), or "not found".
fn version(name: &str, args: &[&str]) -> String {
    Command::new(name)
        .args(args)
        .output()
        .map(|o| {
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            );
            text.lines().next().unwrap_or("").trim().to_owned()
        })
        .unwrap_or_else(|_| "not found".into())
}
