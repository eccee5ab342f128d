//! The function app as `handler dev` loads it before anything runs: the folder read as the
//! host reads it, the app settings checked, the HTTP routes built, and the environment a
//! handler process gets.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context as _, bail};

use super::app_settings::AppSettings;
use super::function_json::{FunctionDef, Trigger};
use super::functions_dir::{self, FunctionSet};
use super::host_json::HostConfig;
use super::options::DevOptions;
use super::routes::{Route, RouteTemplate, Router};
use onboarding::config::{Mode, Settings, expose};

/// The setting the host gives the handler; the dev host picks the handler's port itself.
const HANDLER_PORT_SETTING: &str = "FUNCTIONS_CUSTOMHANDLER_PORT";

/// The function app as read from its folder, and the settings the handler runs with.
pub(super) struct LoadedApp {
    pub root: PathBuf,
    pub app_settings: AppSettings,
    pub host: HostConfig,
    pub functions: FunctionSet,
    pub router: Router,
    pub settings: Settings,
}

impl LoadedApp {
    /// Reads host.json, the function.json files and the app settings; refuses an app with no
    /// function to run, and a handler process without the shared backends it needs.
    pub(crate) fn load(options: &DevOptions) -> anyhow::Result<Self> {
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

    /// Without a `PUBLIC_URL` of the developer's, the links in emails (the verification link
    /// above all) point at this dev host, under the host's route prefix, so the local flow
    /// works end to end from the `.eml` files in `outbox/`.
    pub(crate) fn point_links_at(&mut self, public: SocketAddr) {
        if self.settings.public_url.is_none() {
            self.settings.public_url = local_public_url(public, &self.host.route_prefix);
        }
    }
}

/// `http://<addr>/<prefix>/`: the base the function routes hang from.
fn local_public_url(public: SocketAddr, route_prefix: &str) -> Option<url::Url> {
    let prefix = route_prefix.trim_matches('/');
    let text = if prefix.is_empty() {
        format!("http://{public}/")
    } else {
        format!("http://{public}/{prefix}/")
    };
    url::Url::parse(&text).ok()
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

/// The handler process's environment on top of the dev host's own: local.settings.json's
/// `Values`, what the dev host filled in (a generated JWT key, the local sender), and the port.
pub(super) fn child_environment(
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
    if let Some(url) = settings.public_url.as_ref().filter(|_| {
        app_settings
            .get("PUBLIC_URL")
            .is_none_or(|v| v.trim().is_empty())
    }) {
        env.push(("PUBLIC_URL".to_owned(), url.to_string()));
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

/// Every HTTP function's route under the host's prefix; all bad templates reported at once.
pub(crate) fn build_router(host: &HostConfig, functions: &[FunctionDef]) -> anyhow::Result<Router> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routes;
    use serde_json::json;
    use std::collections::BTreeMap;

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
    fn links_point_at_the_dev_host_under_the_route_prefix() {
        let at: SocketAddr = "127.0.0.1:7071".parse().unwrap();
        assert_eq!(
            local_public_url(at, "").unwrap().as_str(),
            "http://127.0.0.1:7071/"
        );
        assert_eq!(
            local_public_url(at, "api").unwrap().as_str(),
            "http://127.0.0.1:7071/api/"
        );
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
