//! The one declaration of every function: name, trigger, methods, route and outputs. The
//! `function.json` files the host reads are generated from it (`handler function-json`), and a
//! test fails when a committed file drifts.

use std::path::{Path, PathBuf};

use serde_json::{Value, json};

/// The HTTP trigger's binding name in every HTTP function.
pub const HTTP_REQUEST: &str = "req";
/// The HTTP output's binding name: `Outputs.res`.
pub const HTTP_RESPONSE: &str = "res";
/// The Service Bus output of createUser: `Outputs.onboardingMessage`.
pub const ONBOARDING_MESSAGE: &str = "onboardingMessage";
/// The Service Bus output of verifyEmail (a new link): `Outputs.verificationMessage`.
pub const VERIFICATION_MESSAGE: &str = "verificationMessage";
/// The Service Bus trigger's binding name in sendOnboarding: `Data.message`.
pub const QUEUE_MESSAGE: &str = "message";
/// The queue between createUser and sendOnboarding.
pub const ONBOARDING_QUEUE: &str = "onboarding";
/// The app setting (prefix) holding the Service Bus connection.
pub const SERVICE_BUS_CONNECTION: &str = "ServiceBusConnection";

/// What starts a function.
#[derive(Debug, Clone, Copy)]
pub enum Trigger {
    /// An anonymous HTTP trigger bound as `req`.
    Http {
        methods: &'static [&'static str],
        route: &'static str,
    },
    /// A Service Bus queue trigger bound as `message`.
    ServiceBusQueue { queue: &'static str },
}

/// Where a function's results go.
#[derive(Debug, Clone, Copy)]
pub enum Output {
    /// The HTTP answer, bound as `res`.
    Http,
    /// A Service Bus queue message under the given binding name.
    ServiceBusQueue {
        name: &'static str,
        queue: &'static str,
    },
}

/// One function as the host sees it.
#[derive(Debug, Clone, Copy)]
pub struct FunctionDeclaration {
    /// The folder name, and the path the host POSTs to.
    pub name: &'static str,
    pub trigger: Trigger,
    pub outputs: &'static [Output],
}

/// `GET /`: the profile, or a redirect to sign-up. The optional, zero-length parameter is what
/// makes the host serve the site root (`route: ""` falls back to the function name).
pub const ROOT: FunctionDeclaration = FunctionDeclaration {
    name: "root",
    trigger: Trigger::Http {
        methods: &["get"],
        route: "{ignored:maxlength(0)?}",
    },
    outputs: &[Output::Http],
};

/// `GET /health`.
pub const HEALTH: FunctionDeclaration = FunctionDeclaration {
    name: "health",
    trigger: Trigger::Http {
        methods: &["get"],
        route: "health",
    },
    outputs: &[Output::Http],
};

/// `GET|POST /createUser`, queueing the onboarding message.
pub const CREATE_USER: FunctionDeclaration = FunctionDeclaration {
    name: "createUser",
    trigger: Trigger::Http {
        methods: &["get", "post"],
        route: "createUser",
    },
    outputs: &[
        Output::Http,
        Output::ServiceBusQueue {
            name: ONBOARDING_MESSAGE,
            queue: ONBOARDING_QUEUE,
        },
    ],
};

/// `GET|POST /signIn`: the sign-in form, and a token or a session for an email and password.
pub const SIGN_IN: FunctionDeclaration = FunctionDeclaration {
    name: "signIn",
    trigger: Trigger::Http {
        methods: &["get", "post"],
        route: "signIn",
    },
    outputs: &[Output::Http],
};

/// `POST /signOut`: every token issued to the user so far is refused from now on.
pub const SIGN_OUT: FunctionDeclaration = FunctionDeclaration {
    name: "signOut",
    trigger: Trigger::Http {
        methods: &["post"],
        route: "signOut",
    },
    outputs: &[Output::Http],
};

/// The queue consumer that sends the email.
pub const SEND_ONBOARDING: FunctionDeclaration = FunctionDeclaration {
    name: "sendOnboarding",
    trigger: Trigger::ServiceBusQueue {
        queue: ONBOARDING_QUEUE,
    },
    outputs: &[],
};

/// `GET|POST /verifyEmail`: the link's Confirm page, confirming, and asking for a new link
/// (queued to sendOnboarding, like the welcome email).
pub const VERIFY_EMAIL: FunctionDeclaration = FunctionDeclaration {
    name: "verifyEmail",
    trigger: Trigger::Http {
        methods: &["get", "post"],
        route: "verifyEmail",
    },
    outputs: &[
        Output::Http,
        Output::ServiceBusQueue {
            name: VERIFICATION_MESSAGE,
            queue: ONBOARDING_QUEUE,
        },
    ],
};

/// All functions, in the order the host lists them.
pub const ALL: [FunctionDeclaration; 7] = [
    ROOT,
    HEALTH,
    CREATE_USER,
    SIGN_IN,
    SIGN_OUT,
    SEND_ONBOARDING,
    VERIFY_EMAIL,
];

impl FunctionDeclaration {
    /// The `function.json` document for this function.
    pub fn function_json(&self) -> Value {
        let trigger = match self.trigger {
            Trigger::Http { methods, route } => json!({
                "type": "httpTrigger",
                "direction": "in",
                "name": HTTP_REQUEST,
                "authLevel": "anonymous",
                "methods": methods,
                "route": route,
            }),
            Trigger::ServiceBusQueue { queue } => json!({
                "type": "serviceBusTrigger",
                "direction": "in",
                "name": QUEUE_MESSAGE,
                "queueName": queue,
                "connection": SERVICE_BUS_CONNECTION,
            }),
        };
        let mut bindings = vec![trigger];
        bindings.extend(self.outputs.iter().map(|output| match *output {
            Output::Http => json!({"type": "http", "direction": "out", "name": HTTP_RESPONSE}),
            Output::ServiceBusQueue { name, queue } => json!({
                "type": "serviceBus",
                "direction": "out",
                "name": name,
                "queueName": queue,
                "connection": SERVICE_BUS_CONNECTION,
            }),
        }));
        json!({ "bindings": bindings })
    }

    /// The file's text exactly as committed: pretty JSON with a final newline.
    pub fn function_json_text(&self) -> String {
        let mut text = serde_json::to_string_pretty(&self.function_json())
            .unwrap_or_else(|_| String::from("{}"));
        text.push('\n');
        text
    }

    /// Where the file lives under an app root.
    pub fn function_json_path(&self, app_root: &Path) -> PathBuf {
        app_root.join(self.name).join("function.json")
    }
}

/// Writes every `function.json` under `app_root`.
pub fn write_all(app_root: &Path) -> std::io::Result<Vec<PathBuf>> {
    ALL.iter()
        .map(|function| {
            let path = function.function_json_path(app_root);
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            std::fs::write(&path, function.function_json_text())?;
            Ok(path)
        })
        .collect()
}

/// The files under `app_root` that differ from the declaration (missing ones included).
pub fn stale_files(app_root: &Path) -> Vec<PathBuf> {
    ALL.iter()
        .map(|function| {
            (
                function.function_json_path(app_root),
                function.function_json_text(),
            )
        })
        .filter(|(path, expected)| std::fs::read_to_string(path).ok().as_deref() != Some(expected))
        .map(|(path, _)| path)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_committed_function_json_files_match_the_declaration() {
        // The function app's root is the workspace's: two levels above this crate.
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let stale = stale_files(&root);
        assert!(
            stale.is_empty(),
            "{stale:?} differ from crates/onboarding/src/functions/declaration.rs: run `cargo run -- function-json`"
        );
    }

    #[test]
    fn the_root_function_serves_the_site_root() {
        let json = ROOT.function_json();
        assert_eq!(json["bindings"][0]["route"], "{ignored:maxlength(0)?}");
    }

    #[test]
    fn create_user_declares_the_queue_output_by_its_binding_name() {
        let json = CREATE_USER.function_json();
        assert_eq!(json["bindings"][2]["name"], ONBOARDING_MESSAGE);
        assert_eq!(json["bindings"][2]["queueName"], ONBOARDING_QUEUE);
    }
}
