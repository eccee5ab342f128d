//! Test support: real servers (Redis, an SMTP sink, the `handler` binary) and the Functions
//! host's side of the wire protocol, so every test speaks to the handler as the host does.

mod auth_refusing_smtp;
mod envelope;
mod mime;
mod redis_server;
mod smtp_sink;
mod test_app;
mod tokens;

use std::net::TcpListener;

pub use auth_refusing_smtp::AuthRefusingSmtp;
pub use envelope::{
    InvocationAnswer, http_invocation, post_chunked_over_raw_tcp, service_bus_invocation_of_text,
};
pub use redis_server::RedisServer;
pub use smtp_sink::SmtpSink;
pub use test_app::{PUBLIC_ORIGIN, TestApp, TestAppBuilder};
pub use tokens::{Claims, alg_none_token, forge_token};

/// The JWT key every test app is started with (48 bytes, well above the 32-byte minimum).
pub const TEST_JWT_SECRET: &str = "integration-tests-jwt-secret-0123456789abcdefghi";
const _: () = assert!(TEST_JWT_SECRET.len() == 48);

/// A password that passes the rules, distinctive enough to grep for in logs.
pub const TEST_PASSWORD: &str = "Tr0ub4dor&3-horse-battery";

/// One KiB and one MiB, for size limits.
pub const KIB: usize = 1024;
pub const MIB: usize = 1024 * KIB;

/// A loopback port that was free a moment ago: bind port 0, read the port, release it.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0 to pick a free port");
    listener.local_addr().expect("local address").port()
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

/// A "server" that accepts TCP connections and then never says a word: no SMTP greeting, no
/// Redis reply. Clients must give up on their own timeouts.
pub struct SilentServer {
    pub port: u16,
}

impl SilentServer {
    /// Starts accepting on a free port; the connections are held open, silent, forever.
    pub fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the silent server");
        let port = listener.local_addr().expect("silent server address").port();
        std::thread::spawn(move || {
            // Keeping the streams keeps the connections open.
            let mut held = Vec::new();
            for stream in listener.incoming().flatten() {
                held.push(stream);
            }
        });
        Self { port }
    }
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
