//! Test support: real servers (Redis, an SMTP sink, the `handler` binary) and the Functions
//! host's side of the wire protocol, so every test speaks to the handler as the host does.

mod raw_tcp;
mod test_app;
mod tokens;

pub use raw_tcp::post_chunked_over_raw_tcp;
pub use test_app::{PUBLIC_ORIGIN, TestApp, TestAppBuilder};
pub use test_support::envelope::{http_invocation, service_bus_invocation_of_text};
pub use test_support::{
    AuthRefusingSmtp, InvocationAnswer, RedisServer, SilentServer, SmtpSink, free_port,
};
pub use tokens::{Claims, LinkClaims, alg_none_token, forge_token};

/// The JWT key every test app is started with (48 bytes, well above the 32-byte minimum).
pub const TEST_JWT_SECRET: &str = "integration-tests-jwt-secret-0123456789abcdefghi";
const _: () = assert!(TEST_JWT_SECRET.len() == 48);

/// A password that passes the rules, distinctive enough to grep for in logs.
pub const TEST_PASSWORD: &str = "Tr0ub4dor&3-horse-battery";

/// One KiB and one MiB, for size limits.
pub const KIB: usize = 1024;
pub const MIB: usize = 1024 * KIB;

/// The anti-forgery token in the hidden `csrf` field of the page's form posting to `action`
/// (the welcome page has two forms, each with a token for its own purpose).
pub fn form_token(page: &str, action: &str) -> String {
    let form = page
        .find(&format!("action=\"{action}\""))
        .unwrap_or_else(|| panic!("no form posting to {action} in:\n{page}"));
    let marker = r#"name="csrf" value=""#;
    let start = page[form..]
        .find(marker)
        .unwrap_or_else(|| panic!("no csrf field in the form posting to {action}"))
        + form
        + marker.len();
    page[start..]
        .split('"')
        .next()
        .unwrap_or_default()
        .to_owned()
}

/// A fresh, unique email address (the test apps share nothing, but unique data reads better).
pub fn unique_email() -> String {
    format!("user-{}@example.com", uuid::Uuid::new_v4().simple())
}

/// A valid sign-up body for a fresh user.
pub fn new_user_body() -> serde_json::Value {
    serde_json::json!({
        "name": "Alice Example",
        "email": unique_email(),
        "password": TEST_PASSWORD,
    })
}

/// Everything one test needs: Redis, an SMTP sink and the handler wired to both.
/// Fields drop in order, so the handler stops before its backends do.
pub struct Stack {
    pub app: TestApp,
    pub smtp: SmtpSink,
    pub redis: RedisServer,
}

/// Starts Redis, the SMTP sink and the handler with the default test settings
/// (zero2prod's `spawn_app`).
pub async fn spawn_app() -> Stack {
    spawn_app_with(|builder| builder).await
}

/// Like [`spawn_app`], with a chance to change the handler's settings first.
pub async fn spawn_app_with(configure: impl FnOnce(TestAppBuilder) -> TestAppBuilder) -> Stack {
    let redis = RedisServer::start();
    let smtp = SmtpSink::start();
    let app = configure(TestApp::builder(&redis.url(), &smtp.url()))
        .spawn()
        .await;
    Stack { app, smtp, redis }
}

/// A Redis store on `redis` under its own key prefix, configured as the handler would be from a
/// plain `REDIS_URL` (no Entra ID, no private CA): for tests that drive the store directly.
pub fn redis_store(redis: &RedisServer, prefix: &str) -> onboarding::store::RedisStore {
    let settings = onboarding::config::RedisSettings {
        url: redis.url().into(),
        display: redis.url(),
        credential: onboarding::config::RedisCredential::Url,
        ca: None,
    };
    onboarding::store::RedisStore::new(&settings, prefix).expect("a Redis store")
}
