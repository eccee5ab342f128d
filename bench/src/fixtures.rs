//! What the run's requests carry and where the store keeps a user: the secrets and key prefix
//! the handler is started with, the store's key layout, and the envelopes the phases send.

use std::path::Path;

use anyhow::Context as _;
use serde_json::Value;

use crate::envelope;
use crate::wrk::{self, Body, Key};

/// The HS256 key of the run (≥ 32 bytes).
pub const JWT_SECRET: &str = "bench-only-secret-0123456789abcdef0123456789";
/// Keys of the run live under this prefix.
pub const KEY_PREFIX: &str = "bench:";
/// The placeholder a keyed body carries.
pub const PLACEHOLDER: &str = "BENCHKEY";

/// The store's key for a user record (crates/onboarding/src/store/redis/mod.rs: `<prefix>user:{<id>}`).
pub fn user_key(id: &str) -> String {
    format!("{KEY_PREFIX}user:{{{id}}}")
}

/// The store's key for a user's onboarding marker (crates/onboarding/src/store/redis/mod.rs: `<user key>:onboarding`).
pub fn marker_key(id: &str) -> String {
    format!("{}:onboarding", user_key(id))
}

pub fn health_envelope() -> Value {
    envelope::http("GET", "/health", &[("Accept", "application/json")], None)
}

pub fn root_envelope(token: &str) -> Value {
    let bearer = format!("Bearer {token}");
    envelope::http(
        "GET",
        "/",
        &[("Accept", "application/json"), ("Authorization", &bearer)],
        None,
    )
}

/// A createUser envelope whose email is unique per request.
pub fn sign_up_template(tag: &str) -> Body {
    let body = envelope::sign_up_body(&format!("{PLACEHOLDER}@bench.example"));
    let template = envelope::http(
        "POST",
        "/createUser",
        &[("Content-Type", "application/json")],
        Some(&body),
    )
    .to_string();
    Body::Keyed {
        template,
        placeholder: PLACEHOLDER,
        key: Key::Text {
            nonce: format!("{tag}{}", std::process::id()),
        },
    }
}

/// A createUser envelope from one client, its address in `Client-IP` as App Service's front end
/// writes it (`a.b.c.d:port`; see crates/onboarding/src/functions/client_ip.rs).
pub fn sign_up_envelope(email: &str, client_ip: &str) -> Value {
    let body = envelope::sign_up_body(email);
    envelope::http(
        "POST",
        "/createUser",
        &[
            ("Content-Type", "application/json"),
            ("Client-IP", client_ip),
        ],
        Some(&body),
    )
}

/// A JSON signIn envelope from one client (its address in `Client-IP`, as for sign-ups).
pub fn sign_in_envelope(email: &str, password: &str, client_ip: &str) -> Value {
    let body = envelope::sign_in_body(email, password);
    envelope::http(
        "POST",
        "/signIn",
        &[
            ("Content-Type", "application/json"),
            ("Client-IP", client_ip),
        ],
        Some(&body),
    )
}

/// The email of a user [`sign_in_template`] signs in: the `m`-th (1-based) of wrk thread `t`.
pub fn cycled_email(nonce: &str, t: u32, m: u64) -> String {
    format!("{}@bench.example", wrk::cycled_key(nonce, t, m))
}

/// signIn envelopes with the right password, each wrk thread cycling through its own
/// `per_thread` users ([`cycled_email`]), which must exist beforehand.
pub fn sign_in_template(nonce: &str, per_thread: u64, client_ip: &str) -> Body {
    let template = sign_in_envelope(
        &format!("{PLACEHOLDER}@bench.example"),
        envelope::PASSWORD,
        client_ip,
    )
    .to_string();
    Body::Keyed {
        template,
        placeholder: PLACEHOLDER,
        key: Key::Cycle {
            nonce: nonce.to_owned(),
            per_thread,
        },
    }
}

/// Copies host.json and every `*/function.json` folder: an app root with no local.settings.json
/// and no outbox, so only the run's settings apply.
pub fn copy_app(from: &Path, to: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(to)?;
    std::fs::copy(from.join("host.json"), to.join("host.json"))
        .with_context(|| format!("no host.json in {}", from.display()))?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let function_json = entry.path().join("function.json");
        if function_json.is_file() {
            let dir = to.join(entry.file_name());
            std::fs::create_dir_all(&dir)?;
            std::fs::copy(&function_json, dir.join("function.json"))?;
        }
    }
    Ok(())
}
