//! The dev host's start-up banner: what is real, what is embedded, and where to go.

use std::net::SocketAddr;
use std::path::Path;

use super::app_settings::AppSettings;
use super::function_json::Trigger;
use super::functions_dir;
use super::functions_dir::queue_names;
use super::host_json::HostConfig;
use super::lookup;
use super::options::DevOptions;
use super::public::{self, HandlerView};
use super::routes::Router;
use onboarding::config::Settings;

/// The start-up text: what is real, what is embedded, and where to go.
pub(super) struct Banner<'a> {
    pub app_root: &'a Path,
    pub app_settings: &'a AppSettings,
    pub settings: &'a Settings,
    pub backends: &'a [(&'static str, String)],
    pub host: &'a HostConfig,
    pub functions: &'a functions_dir::FunctionSet,
    pub router: &'a Router,
    pub options: &'a DevOptions,
    pub handler: &'a HandlerView,
    pub public_addr: SocketAddr,
}

impl Banner<'_> {
    /// The banner text, one line per part.
    pub(crate) fn render(&self) -> String {
        let mut lines = Vec::new();
        self.settings_lines(&mut lines);
        self.queue_line(&mut lines);
        self.handler_line(&mut lines);
        self.function_lines(&mut lines);
        self.address_lines(&mut lines);
        lines.iter().map(|l| format!("{l}\n")).collect()
    }

    fn base(&self) -> String {
        format!("http://{}", self.public_addr)
    }

    fn is_set(&self, name: &str) -> bool {
        self.app_settings
            .get(name)
            .is_some_and(|v| !v.trim().is_empty())
    }

    /// The app root, where settings come from, and which backends are real.
    fn settings_lines(&self, lines: &mut Vec<String>) {
        let mut line = |text: String| lines.push(text);
        line("handler dev: the Functions host, locally (a stand-in for `func start`)".to_owned());
        line(format!("  app root   {}", self.app_root.display()));
        line(match self.app_settings.local_file() {
            Some((path, n)) => format!(
                "  settings   {} ({n} value(s); environment variables win)",
                path.display()
            ),
            None => "  settings   environment only (no local.settings.json)".to_owned(),
        });
        for (part, description) in self.backends {
            let real = match *part {
                "store" => self.settings.redis.is_some(),
                "mail" => self.settings.smtp.is_some(),
                _ => true,
            };
            line(format!("  {part:<10} {} {description}", tag(real)));
        }
        line(if self.settings.jwt.generated {
            format!(
                "  tokens     {} a random key made for this run: tokens end with the run (set JWT_SECRET to keep them)",
                tag(false)
            )
        } else {
            format!("  tokens     {} signed with JWT_SECRET", tag(true))
        });
        line(if self.is_set("MAIL_FROM") {
            format!("  sender     {} {}", tag(true), self.settings.mail_from)
        } else {
            format!(
                "  sender     {} {} (a local sender; set MAIL_FROM for yours)",
                tag(false),
                self.settings.mail_from
            )
        });
    }

    /// The in-process queues, each name once.
    fn queue_line(&self, lines: &mut Vec<String>) {
        let queues = queue_names(&self.functions.functions);
        if !queues.is_empty() {
            let mut unique: Vec<String> = Vec::new();
            for q in queues {
                if !lookup::contains(&unique, &q) {
                    unique.push(q);
                }
            }
            lines.push(format!(
                "  queues     {} in-process Service Bus: {} (a failed delivery comes back at once; \
                 dead-letter after {} deliveries; locks renewed for {} s){}",
                tag(false),
                unique.join(", "),
                self.options.max_delivery_count,
                self.host.max_auto_lock_renewal.as_secs_f64(),
                if self.options.fail_queue_sends {
                    "; output sends FAIL (--fail-queue-sends)"
                } else {
                    ""
                }
            ));
        }
    }

    /// Where the handler runs.
    fn handler_line(&self, lines: &mut Vec<String>) {
        let status = *self.handler.status.borrow();
        lines.push(if self.handler.in_process {
            format!(
                "  handler    in this process at http://{} (POST /<function>, as from the host)",
                self.handler.addr
            )
        } else {
            format!(
                "  handler    process pid {} at http://{} (POST /<function>, as from the host); \
                 restarted as the host restarts its worker",
                status.pid.map_or_else(|| "-".to_owned(), |p| p.to_string()),
                self.handler.addr
            )
        });
    }

    /// Each function with its route or queue, then the skipped ones and why.
    fn function_lines(&self, lines: &mut Vec<String>) {
        let base = self.base();
        let mut line = |text: String| lines.push(text);
        line("  functions".to_owned());
        let width = self
            .functions
            .functions
            .iter()
            .map(|f| f.name.len())
            .max()
            .unwrap_or(0);
        for function in &self.functions.functions {
            let text = match &function.trigger {
                Trigger::Http { methods, .. } => {
                    let path = self
                        .router
                        .routes()
                        .iter()
                        .find(|r| r.function == function.name)
                        .map(|r| r.template.display_path())
                        .unwrap_or_default();
                    let methods = methods
                        .as_ref()
                        .map_or_else(|| "ANY".to_owned(), |m| m.join(","));
                    format!("{methods:<10} {base}{path}")
                }
                Trigger::ServiceBus { queue, .. } => format!(
                    "serviceBusTrigger on queue {queue} ({} at a time)",
                    self.host.max_concurrent_calls
                ),
            };
            line(format!("    {:<width$}  {text}", function.name));
        }
        for (name, why) in &self.functions.skipped {
            line(format!("    {name:<width$}  skipped: {why}"));
        }
    }

    /// Where to go: the public address, sign-up, and the dev endpoints.
    fn address_lines(&self, lines: &mut Vec<String>) {
        let base = self.base();
        let mut line = |text: String| lines.push(text);
        line(String::new());
        line(format!("Listening on {base}"));
        let sign_up = self.functions.functions.iter().find_map(|f| {
            if !lookup::same(&f.name, "createUser") {
                return None;
            }
            self.router
                .routes()
                .iter()
                .find(|r| r.function == f.name)
                .map(|r| r.template.display_path())
        });
        if let Some(path) = sign_up {
            line(format!("  sign up    {base}{path}"));
        }
        line(format!("  queues     {base}{}queues", public::DEV_PATH));
        line(format!("  handler    {base}{}handler", public::DEV_PATH));
        line("Press Ctrl-C to stop.".to_owned());
    }
}

/// Marks a part as the real service or the dev host's embedded stand-in.
fn tag(real: bool) -> &'static str {
    if real { "[real]    " } else { "[embedded]" }
}
