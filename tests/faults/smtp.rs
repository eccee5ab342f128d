//! A real SMTP server (mailin-embedded) that can be stopped and started again on the same port,
//! counting messages per recipient, and that can be made to behave like a strict provider.
//!
//! mailin-embedded serves forever and cannot close its listener, so it runs on a hidden port
//! behind a small TCP front on the public port. Stopping the front is what a server's graceful
//! shutdown looks like to clients: new connections are refused, and every open session (lettre
//! keeps a pool) is closed at a command boundary: when the server has answered the client's
//! last bytes, never between the end of DATA and its `250`. Cutting there would lose an
//! acknowledgment the server had already committed to (SMTP's own duplicate window, RFC 1047),
//! which is not the product's doing. Starting it binds the same port again.
//!
//! Provider modes ([`Modes`], set at start with [`SmtpSink::start_with`] and changed while it
//! runs with the `set_*` methods, from any thread), each answered before any message body is
//! accepted, and each counted:
//!
//! - **rate limit**: at most R messages in any 1 s (a sliding window, stricter than a token
//!   bucket or fixed 1 s windows, both of which let 2R through across a boundary). A message is
//!   charged at its first accepted `RCPT TO`; past the limit that `RCPT TO` is answered
//!   `451 4.7.0 Too many messages, at most R per second: try again later`
//!   ([`SmtpSink::throttled`]). A refused message costs nothing, so a client retrying at the
//!   limit's pace gets through.
//! - **refused mailboxes**: `RCPT TO` a listed address (compared without case) is answered
//!   `550 5.1.1 <address>: mailbox unavailable` ([`SmtpSink::mailbox_refusals`]). This check
//!   comes first: a refused mailbox is not charged to the rate limit.
//! - **authentication refused**: new sessions go to a responder that advertises
//!   `AUTH PLAIN LOGIN` over plain TCP, answers every `AUTH` with
//!   `535 5.7.8 Authentication credentials invalid` ([`SmtpSink::auth_attempts`]), and `MAIL`,
//!   `RCPT` and `DATA` with `530 5.7.0 Authentication required`. mailin-embedded 0.8 cannot
//!   offer AUTH without TLS (mailin's plaintext switch is not exposed), hence the responder.
//!   Sessions open at the switch keep their server, as a provider revoking a key does not end
//!   sessions already authenticated; `down()`, switch, `up()` makes every client log in again.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use mailin_embedded::{Handler, Response, Server, response};

/// Longest wait for the server's answer at stop. mailin answers within microseconds, so a
/// session still waiting after this is one whose client was mid-message (DATA not finished):
/// cutting it loses nothing the server accepted.
const ANSWER_WAIT: Duration = Duration::from_millis(200);

/// The rate limit's window: at most R messages in any span this long.
const RATE_WINDOW: Duration = Duration::from_secs(1);

/// The server's name in greetings.
const NAME: &str = "sink.example.test";

/// How the sink answers, like a strict provider (see the module doc). The default accepts
/// everything.
#[derive(Clone, Debug, Default)]
pub struct Modes {
    /// At most this many messages in any 1 s; `None` for no limit (`Some(0)` refuses all).
    pub rate_per_second: Option<u32>,
    /// Recipients refused permanently at `RCPT TO`.
    pub refused_mailboxes: Vec<String>,
    /// Whether new sessions get a server that refuses every login.
    pub refuse_auth: bool,
}

/// The modes as they are now, and what they refused; shared by every session.
#[derive(Default)]
struct Policy {
    rate: Mutex<Rate>,
    refused_mailboxes: Mutex<BTreeSet<String>>,
    refuse_auth: AtomicBool,
    throttled: AtomicUsize,
    mailbox_refusals: AtomicUsize,
    auth_attempts: AtomicUsize,
}

/// The rate limit: the messages admitted within the last [`RATE_WINDOW`].
#[derive(Default)]
struct Rate {
    per_second: Option<u32>,
    admitted: VecDeque<Instant>,
}

impl Rate {
    /// Charges one message now, if the limit allows it.
    fn admit(&mut self) -> bool {
        let Some(limit) = self.per_second else {
            return true;
        };
        let now = Instant::now();
        while self
            .admitted
            .front()
            .is_some_and(|t| now.duration_since(*t) >= RATE_WINDOW)
        {
            self.admitted.pop_front();
        }
        if self.admitted.len() < limit as usize {
            self.admitted.push_back(now);
            true
        } else {
            false
        }
    }
}

impl Policy {
    fn set(&self, modes: &Modes) {
        self.set_rate_limit(modes.rate_per_second);
        self.set_refused_mailboxes(modes.refused_mailboxes.iter().map(String::as_str));
        self.refuse_auth.store(modes.refuse_auth, Ordering::SeqCst);
    }

    fn set_rate_limit(&self, per_second: Option<u32>) {
        let mut rate = self.rate.lock().expect("rate lock");
        if rate.per_second != per_second {
            // A new limit counts from now.
            *rate = Rate {
                per_second,
                admitted: VecDeque::new(),
            };
        }
    }

    fn set_refused_mailboxes<'a>(&self, mailboxes: impl IntoIterator<Item = &'a str>) {
        *self.refused_mailboxes.lock().expect("mailboxes lock") =
            mailboxes.into_iter().map(mailbox).collect();
    }
}

/// An envelope address as compared and recorded: no angle brackets, no surrounding space.
fn bare(address: &str) -> &str {
    address.trim().trim_start_matches('<').trim_end_matches('>')
}

/// An address as the refused list holds it: bare, lower case.
fn mailbox(address: &str) -> String {
    bare(address).to_ascii_lowercase()
}

/// One message as the server accepted it.
#[derive(Clone, Debug)]
pub struct Mail {
    /// Envelope recipients, without angle brackets.
    pub to: Vec<String>,
    /// When the server accepted it (before its `250` went out).
    pub at: Instant,
}

type Mailbox = Arc<Mutex<Vec<Mail>>>;

/// mailin's callbacks, cloned per connection.
#[derive(Clone)]
struct Recorder {
    received: Mailbox,
    policy: Arc<Policy>,
    current: Option<Vec<String>>,
    /// Whether the message under way has been charged to the rate limit.
    charged: bool,
}

impl Handler for Recorder {
    fn mail(&mut self, _ip: std::net::IpAddr, _domain: &str, _from: &str) -> Response {
        self.charged = false;
        response::OK
    }

    fn rcpt(&mut self, to: &str) -> Response {
        let policy = &self.policy;
        let refused = policy
            .refused_mailboxes
            .lock()
            .expect("mailboxes lock")
            .contains(&mailbox(to));
        if refused {
            policy.mailbox_refusals.fetch_add(1, Ordering::SeqCst);
            return Response::custom(550, format!("5.1.1 <{}>: mailbox unavailable", bare(to)));
        }
        if self.charged {
            return response::OK;
        }
        let mut rate = policy.rate.lock().expect("rate lock");
        if rate.admit() {
            self.charged = true;
            return response::OK;
        }
        let limit = rate.per_second.unwrap_or(0);
        drop(rate);
        policy.throttled.fetch_add(1, Ordering::SeqCst);
        Response::custom(
            451,
            format!("4.7.0 Too many messages, at most {limit} per second: try again later"),
        )
    }

    fn data_start(&mut self, _domain: &str, _from: &str, _is8bit: bool, to: &[String]) -> Response {
        self.current = Some(to.iter().map(|r| bare(r).to_owned()).collect());
        response::OK
    }

    fn data(&mut self, _buf: &[u8]) -> io::Result<()> {
        Ok(())
    }

    fn data_end(&mut self) -> Response {
        if let Some(to) = self.current.take() {
            self.received.lock().expect("mailbox lock").push(Mail {
                to,
                at: Instant::now(),
            });
        }
        response::OK
    }
}

/// Whose turn it is in one proxied session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Turn {
    /// The server owes an answer (greeting, or a reply to bytes the client sent).
    Server,
    /// The server has answered; the client may speak.
    Client,
}

/// One proxied session.
struct Session {
    client: TcpStream,
    upstream: TcpStream,
    /// Whose turn it is, and whether the session is closing (no more client bytes pass).
    state: Mutex<(Turn, bool)>,
}

impl Session {
    fn cut(&self) {
        let _ = self.client.shutdown(Shutdown::Both);
        let _ = self.upstream.shutdown(Shutdown::Both);
    }
}

/// The front: its accept thread and the sessions it opened.
struct Front {
    stopping: Arc<AtomicBool>,
    acceptor: JoinHandle<()>,
    sessions: Arc<Mutex<Vec<Arc<Session>>>>,
}

/// Where the front sends a new session.
#[derive(Clone, Copy)]
struct Backends {
    /// mailin.
    mail: u16,
    /// The responder that refuses every login ([`refuse_logins`]).
    no_login: u16,
}

/// The sink: mailin on a hidden port, reachable through the front on `port` while it is up.
pub struct SmtpSink {
    port: u16,
    backends: Backends,
    received: Mailbox,
    policy: Arc<Policy>,
    front: Option<Front>,
}

impl SmtpSink {
    /// Starts mailin and the front on a free port, accepting everything.
    pub fn start() -> Self {
        Self::start_with(&Modes::default())
    }

    /// Starts mailin and the front on a free port, answering as `modes` says.
    pub fn start_with(modes: &Modes) -> Self {
        let received = Mailbox::default();
        let policy = Arc::new(Policy::default());
        policy.set(modes);
        let backend = TcpListener::bind("127.0.0.1:0").expect("bind the SMTP backend");
        let backend_port = backend.local_addr().expect("backend address").port();
        let mut server = Server::new(Recorder {
            received: received.clone(),
            policy: policy.clone(),
            current: None,
            charged: false,
        });
        server
            .with_name(NAME)
            // One thread per open session: lettre pools up to 8 per handler process.
            .with_num_threads(64)
            .with_tcp_listener(backend);
        std::thread::spawn(move || {
            if let Err(e) = server.serve() {
                eprintln!("SMTP sink stopped: {e}");
            }
        });
        let no_login = TcpListener::bind("127.0.0.1:0").expect("bind the login refuser");
        let no_login_port = no_login.local_addr().expect("login refuser address").port();
        {
            let policy = policy.clone();
            std::thread::spawn(move || {
                for stream in no_login.incoming().flatten() {
                    let policy = policy.clone();
                    std::thread::spawn(move || refuse_logins(&stream, &policy));
                }
            });
        }
        let front = TcpListener::bind("127.0.0.1:0").expect("bind the SMTP front");
        let mut sink = Self {
            port: front.local_addr().expect("front address").port(),
            backends: Backends {
                mail: backend_port,
                no_login: no_login_port,
            },
            received,
            policy,
            front: None,
        };
        sink.open(front);
        sink
    }

    /// `smtp://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.port)
    }

    /// Opens the public port again (after [`SmtpSink::down`]).
    pub fn up(&mut self) {
        assert!(self.front.is_none(), "the SMTP sink is already up");
        let listener = TcpListener::bind(("127.0.0.1", self.port))
            .unwrap_or_else(|e| panic!("bind the SMTP front to 127.0.0.1:{}: {e}", self.port));
        self.open(listener);
    }

    /// Serves the front on `listener`.
    fn open(&mut self, listener: TcpListener) {
        let stopping = Arc::new(AtomicBool::new(false));
        let sessions: Arc<Mutex<Vec<Arc<Session>>>> = Arc::default();
        let acceptor = {
            let (stopping, sessions, backends, policy) = (
                stopping.clone(),
                sessions.clone(),
                self.backends,
                self.policy.clone(),
            );
            std::thread::spawn(move || accept(&listener, &stopping, &sessions, backends, &policy))
        };
        self.front = Some(Front {
            stopping,
            acceptor,
            sessions,
        });
    }

    /// Stops the server: the port refuses connections, and open sessions are closed at a
    /// command boundary (at once when the client has the floor, else right after the server's
    /// answer). Returns how many sessions were cut mid-message (no answer after
    /// [`ANSWER_WAIT`]: the client had not finished its DATA, so nothing was accepted). When it
    /// returns, no session is open.
    pub fn down(&mut self) -> usize {
        let front = self.front.take().expect("the SMTP sink is up");
        front.stopping.store(true, Ordering::SeqCst);
        // Wake the accept call so the listener is dropped now.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        front
            .acceptor
            .join()
            .expect("the SMTP front's accept thread");
        let sessions = std::mem::take(&mut *front.sessions.lock().expect("sessions lock"));
        // From here no session forwards another client byte.
        let mut owing = Vec::new();
        for session in sessions {
            let mut state = session.state.lock().expect("session lock");
            state.1 = true;
            if state.0 == Turn::Client {
                session.cut();
            } else {
                drop(state);
                owing.push(session);
            }
        }
        let deadline = Instant::now() + ANSWER_WAIT;
        let mut forced = 0;
        for session in owing {
            loop {
                let state = session.state.lock().expect("session lock");
                if state.0 == Turn::Client || Instant::now() >= deadline {
                    forced += usize::from(state.0 == Turn::Server);
                    session.cut();
                    break;
                }
                drop(state);
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        forced
    }

    /// Every message accepted so far.
    pub fn messages(&self) -> Vec<Mail> {
        self.received.lock().expect("mailbox lock").clone()
    }

    /// Messages per recipient.
    pub fn per_recipient(&self) -> BTreeMap<String, usize> {
        let mut counts = BTreeMap::new();
        for mail in self.messages() {
            for to in mail.to {
                *counts.entry(to).or_insert(0) += 1;
            }
        }
        counts
    }
}

/// The provider modes. tests/faults.rs does not use them (tests/smtp_sink_modes.rs does), and
/// each test binary compiles this file on its own.
#[allow(dead_code)]
impl SmtpSink {
    /// At most `per_second` messages in any 1 s from now on (`None`: no limit). A changed limit
    /// starts with an empty window.
    pub fn set_rate_limit(&self, per_second: Option<u32>) {
        self.policy.set_rate_limit(per_second);
    }

    /// Replaces the recipients refused with `550 5.1.1` (compared without case).
    pub fn set_refused_mailboxes<'a>(&self, mailboxes: impl IntoIterator<Item = &'a str>) {
        self.policy.set_refused_mailboxes(mailboxes);
    }

    /// Whether sessions opened from now on get the server that refuses every login.
    pub fn set_auth_refused(&self, refused: bool) {
        self.policy.refuse_auth.store(refused, Ordering::SeqCst);
    }

    /// `RCPT TO`s answered `451 4.7.0` by the rate limit.
    pub fn throttled(&self) -> usize {
        self.policy.throttled.load(Ordering::SeqCst)
    }

    /// `RCPT TO`s answered `550 5.1.1` (a refused mailbox).
    pub fn mailbox_refusals(&self) -> usize {
        self.policy.mailbox_refusals.load(Ordering::SeqCst)
    }

    /// `AUTH` commands received while logins were refused (every one answered `535 5.7.8`, or
    /// `501`/`504` when cancelled or for an unknown mechanism).
    pub fn auth_attempts(&self) -> usize {
        self.policy.auth_attempts.load(Ordering::SeqCst)
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        if self.front.is_some() {
            self.down();
        }
    }
}

fn accept(
    listener: &TcpListener,
    stopping: &AtomicBool,
    sessions: &Mutex<Vec<Arc<Session>>>,
    backends: Backends,
    policy: &Policy,
) {
    for client in listener.incoming() {
        if stopping.load(Ordering::SeqCst) {
            return;
        }
        let Ok(client) = client else { continue };
        let backend_port = if policy.refuse_auth.load(Ordering::SeqCst) {
            backends.no_login
        } else {
            backends.mail
        };
        let Ok(upstream) = TcpStream::connect(("127.0.0.1", backend_port)) else {
            continue;
        };
        let _ = client.set_nodelay(true);
        let _ = upstream.set_nodelay(true);
        let session = Arc::new(Session {
            client,
            upstream,
            state: Mutex::new((Turn::Server, false)),
        });
        let mut open = sessions.lock().expect("sessions lock");
        open.retain(|s| !s.state.lock().expect("session lock").1);
        open.push(session.clone());
        drop(open);
        let to_server = session.clone();
        std::thread::spawn(move || pump(&to_server, Turn::Server));
        std::thread::spawn(move || pump(&session, Turn::Client));
    }
}

/// Copies one direction: `Turn::Server` carries client bytes to the server (then the server
/// owes an answer), `Turn::Client` carries the server's bytes back (then the client may speak).
fn pump(session: &Session, direction: Turn) {
    let (mut from, mut to) = match direction {
        Turn::Server => (&session.client, &session.upstream),
        Turn::Client => (&session.upstream, &session.client),
    };
    let mut buf = [0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if direction == Turn::Server {
            // Decided under the lock, so a stop either sees these bytes owed an answer, or
            // closed the session before they were forwarded.
            let mut state = session.state.lock().expect("session lock");
            if state.1 {
                break;
            }
            state.0 = Turn::Server;
            drop(state);
            if to.write_all(&buf[..n]).is_err() {
                break;
            }
        } else {
            if to.write_all(&buf[..n]).is_err() {
                break;
            }
            let mut state = session.state.lock().expect("session lock");
            state.0 = Turn::Client;
            if state.1 {
                // Stopping: the answer is through, the session ends here.
                break;
            }
        }
    }
    let mut state = session.state.lock().expect("session lock");
    state.1 = true;
    session.cut();
}

/// One session with a server that requires a login and refuses every one, as a provider does
/// with revoked credentials: `AUTH PLAIN` and `AUTH LOGIN` (with or without an initial
/// response) run their challenges and end in `535 5.7.8`; nothing can be sent.
fn refuse_logins(stream: &TcpStream, policy: &Policy) {
    let Ok(read) = stream.try_clone() else { return };
    let mut lines = BufReader::new(read);
    let mut out = stream;
    let mut line = Vec::new();
    // The next line from the client, without its line end; `None` at its end.
    let mut next = |line: &mut Vec<u8>| {
        line.clear();
        match lines.read_until(b'\n', line) {
            Ok(0) | Err(_) => None,
            Ok(_) => Some(String::from_utf8_lossy(line).trim_end().to_owned()),
        }
    };
    if out
        .write_all(format!("220 {NAME} ESMTP\r\n").as_bytes())
        .is_err()
    {
        return;
    }
    while let Some(command) = next(&mut line) {
        let mut words = command.split_whitespace();
        let verb = words.next().unwrap_or_default().to_ascii_uppercase();
        let answer = match verb.as_str() {
            "EHLO" => format!("250-{NAME}\r\n250-8BITMIME\r\n250 AUTH PLAIN LOGIN\r\n"),
            "HELO" => format!("250 {NAME}\r\n"),
            "AUTH" => {
                policy.auth_attempts.fetch_add(1, Ordering::SeqCst);
                let mechanism = words.next().unwrap_or_default().to_ascii_uppercase();
                let initial = words.next().is_some();
                // The challenges still owed before the client has sent its credentials.
                let challenges: &[&str] = match (mechanism.as_str(), initial) {
                    ("PLAIN", true) => &[],
                    ("PLAIN", false) => &["334 \r\n"],
                    // "Password:" and "Username:", base64.
                    ("LOGIN", true) => &["334 UGFzc3dvcmQ6\r\n"],
                    ("LOGIN", false) => &["334 VXNlcm5hbWU6\r\n", "334 UGFzc3dvcmQ6\r\n"],
                    _ => &[],
                };
                let mut answer = if matches!(mechanism.as_str(), "PLAIN" | "LOGIN") {
                    "535 5.7.8 Authentication credentials invalid\r\n"
                } else {
                    "504 5.5.4 Unrecognized authentication type\r\n"
                };
                for challenge in challenges {
                    if out.write_all(challenge.as_bytes()).is_err() {
                        return;
                    }
                    match next(&mut line) {
                        None => return,
                        Some(reply) if reply == "*" => {
                            answer = "501 5.7.0 Authentication cancelled\r\n";
                            break;
                        }
                        Some(_) => {}
                    }
                }
                answer.to_owned()
            }
            "MAIL" | "RCPT" | "DATA" => "530 5.7.0 Authentication required\r\n".to_owned(),
            "RSET" | "NOOP" => "250 2.0.0 OK\r\n".to_owned(),
            "QUIT" => {
                let _ = out.write_all(b"221 2.0.0 Bye\r\n");
                return;
            }
            _ => "502 5.5.2 Command not recognized\r\n".to_owned(),
        };
        if out.write_all(answer.as_bytes()).is_err() {
            return;
        }
    }
}
