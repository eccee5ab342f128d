//! A stand-in for the App Service / Azure Functions managed identity endpoint, the one stand-in
//! issue 17 allows (Azure's endpoint cannot run here). On 127.0.0.1 it checks each request
//! against the documented REST form (`resource`, `api-version=2019-08-01`, `client_id`, the
//! `X-IDENTITY-HEADER` header) and issues JWT-shaped tokens with an `oid` that live a set time.
//! <https://learn.microsoft.com/en-us/azure/app-service/overview-managed-identity#rest-endpoint-reference>

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;

/// The resource the handler must ask for (the Redis scope without `/.default`).
pub const REDIS_RESOURCE: &str = "https://redis.azure.com";
/// The documented API version of the App Service endpoint.
pub const API_VERSION: &str = "2019-08-01";

/// Who the endpoint issues tokens for, and how long they live.
#[derive(Clone, Debug)]
pub struct TokenEndpointConfig {
    /// The identity's object id: the `oid` claim, and so the Redis user.
    pub oid: String,
    /// The user-assigned identity's client id, which requests must name.
    pub client_id: String,
    /// What `X-IDENTITY-HEADER` must carry (the platform's `IDENTITY_HEADER`).
    pub identity_header: String,
    /// How long each token lives (`expires_on` is this after issue, in whole seconds).
    pub lifetime: Duration,
}

/// One token the endpoint handed out.
#[derive(Clone, Debug)]
pub struct IssuedToken {
    /// The JWT-shaped token, as the handler uses it for a password.
    pub token: String,
    /// When it was handed out, so a test can time an outage against the renewal.
    pub issued_at: SystemTime,
    /// `expires_on`, whole seconds as Azure gives it.
    pub expires_at: SystemTime,
}

/// How the endpoint answers right now: an outage is either a 500 or a connection closed
/// without an answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Tokens for requests in the documented form, 400 for others.
    Serving,
    /// 500 to every request.
    Failing,
    /// Every connection closed without an answer.
    Refusing,
}

/// A running endpoint, stopped when dropped.
pub struct TokenEndpoint {
    port: u16,
    shared: Arc<Shared>,
}

type OnIssue = Box<dyn Fn(&IssuedToken) + Send + Sync>;

struct Shared {
    config: TokenEndpointConfig,
    mode: Mutex<Mode>,
    issued: Mutex<Vec<IssuedToken>>,
    rejected: Mutex<Vec<String>>,
    failed: AtomicUsize,
    /// Called with each token before it is sent, so the test can make Redis accept it first,
    /// as Azure does.
    on_issue: OnIssue,
    stop: AtomicBool,
}

impl TokenEndpoint {
    /// Starts serving on a free loopback port; `on_issue` sees each token before the client.
    pub fn start(
        config: TokenEndpointConfig,
        on_issue: impl Fn(&IssuedToken) + Send + Sync + 'static,
    ) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the token endpoint");
        let port = listener
            .local_addr()
            .expect("token endpoint address")
            .port();
        let shared = Arc::new(Shared {
            config,
            mode: Mutex::new(Mode::Serving),
            issued: Mutex::new(Vec::new()),
            rejected: Mutex::new(Vec::new()),
            failed: AtomicUsize::new(0),
            on_issue: Box::new(on_issue),
            stop: AtomicBool::new(false),
        });
        let serving = Arc::clone(&shared);
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                if serving.stop.load(Ordering::SeqCst) {
                    return;
                }
                if let Ok(stream) = stream {
                    serving.answer(stream);
                }
            }
        });
        Self { port, shared }
    }

    /// What `IDENTITY_ENDPOINT` is set to.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/msi/token", self.port)
    }

    /// Starts or ends an outage.
    pub fn set_mode(&self, mode: Mode) {
        *lock(&self.shared.mode) = mode;
    }

    /// Every token issued so far, oldest first.
    pub fn issued(&self) -> Vec<IssuedToken> {
        lock(&self.shared.issued).clone()
    }

    /// Why each request that did not follow the documented form was refused (400).
    pub fn rejected(&self) -> Vec<String> {
        lock(&self.shared.rejected).clone()
    }

    /// Requests that met an outage (answered 500 or dropped).
    pub fn failed_requests(&self) -> usize {
        self.shared.failed.load(Ordering::SeqCst)
    }
}

impl Drop for TokenEndpoint {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        // Wakes the accept loop so it sees the flag.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

impl Shared {
    fn answer(&self, mut stream: TcpStream) {
        let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
        let Some((target, header)) = read_request(&stream) else {
            return;
        };
        match *lock(&self.mode) {
            Mode::Refusing => {
                self.failed.fetch_add(1, Ordering::SeqCst);
                return; // dropping the stream closes it unanswered
            }
            Mode::Failing => {
                self.failed.fetch_add(1, Ordering::SeqCst);
                let body = r#"{"statusCode":500,"message":"test outage"}"#;
                return respond(&mut stream, "500 Internal Server Error", body);
            }
            Mode::Serving => {}
        }
        if let Err(why) = self.check(&target, header.as_deref()) {
            lock(&self.rejected).push(why.clone());
            let body = serde_json::json!({"statusCode": 400, "message": why}).to_string();
            return respond(&mut stream, "400 Bad Request", &body);
        }
        let issued = self.issue();
        (self.on_issue)(&issued);
        let expires_on = unix(issued.expires_at);
        lock(&self.issued).push(issued.clone());
        let body = serde_json::json!({
            "access_token": issued.token,
            "expires_on": expires_on.to_string(),
            "resource": REDIS_RESOURCE,
            "token_type": "Bearer",
            "client_id": self.config.client_id,
        });
        respond(&mut stream, "200 OK", &body.to_string());
    }

    /// The documented form: path, query parameters and the header.
    fn check(&self, target: &str, header: Option<&str>) -> Result<(), String> {
        let url = url::Url::parse(&format!("http://endpoint{target}"))
            .map_err(|e| format!("unparsable request target {target:?}: {e}"))?;
        if url.path() != "/msi/token" {
            return Err(format!("unexpected path {}", url.path()));
        }
        let query = |name: &str| {
            url.query_pairs()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.into_owned())
        };
        let expected = [
            ("resource", REDIS_RESOURCE),
            ("api-version", API_VERSION),
            ("client_id", self.config.client_id.as_str()),
        ];
        for (name, value) in expected {
            if query(name).as_deref() != Some(value) {
                return Err(format!("{name} is {:?}, expected {value:?}", query(name)));
            }
        }
        if header != Some(self.config.identity_header.as_str()) {
            return Err("X-IDENTITY-HEADER is missing or wrong".to_owned());
        }
        Ok(())
    }

    /// A JWT-shaped token (unsigned: nothing here verifies it, Redis only compares it).
    fn issue(&self) -> IssuedToken {
        let issued_at = SystemTime::now();
        let expires_at = UNIX_EPOCH + Duration::from_secs(unix(issued_at)) + self.config.lifetime;
        let serial = lock(&self.issued).len();
        let encode = |v: serde_json::Value| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
        };
        let header = encode(serde_json::json!({"typ": "JWT", "alg": "RS256", "kid": "test"}));
        let claims = encode(serde_json::json!({
            "aud": REDIS_RESOURCE,
            "iss": "https://sts.windows.net/00000000-0000-0000-0000-000000000000/",
            "iat": unix(issued_at),
            "nbf": unix(issued_at),
            "exp": unix(expires_at),
            "oid": self.config.oid,
            "sub": self.config.oid,
            "appid": self.config.client_id,
            "uti": format!("{serial}-{}", issued_at.duration_since(UNIX_EPOCH).unwrap_or_default().as_nanos()),
        }));
        let signature = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(format!("test-signature-{serial}"));
        IssuedToken {
            token: format!("{header}.{claims}.{signature}"),
            issued_at,
            expires_at,
        }
    }
}

/// The request target and the `X-IDENTITY-HEADER` value of a GET (no body).
fn read_request(stream: &TcpStream) -> Option<(String, Option<String>)> {
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let target = line.split_whitespace().nth(1)?.to_owned();
    let mut identity_header = None;
    loop {
        line.clear();
        if reader.read_line(&mut line).ok()? == 0 || line.trim().is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':')
            && name.trim().eq_ignore_ascii_case("x-identity-header")
        {
            identity_header = Some(value.trim().to_owned());
        }
    }
    Some((target, identity_header))
}

fn respond(stream: &mut TcpStream, status: &str, body: &str) {
    let _ = write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    );
}

fn unix(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
