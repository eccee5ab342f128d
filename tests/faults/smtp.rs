//! A real SMTP server (mailin-embedded) that can be stopped and started again on the same port,
//! counting messages per recipient.
//!
//! mailin-embedded serves forever and cannot close its listener, so it runs on a hidden port
//! behind a small TCP front on the public port. Stopping the front is what a server's graceful
//! shutdown looks like to clients: new connections are refused, and every open session (lettre
//! keeps a pool) is closed at a command boundary: when the server has answered the client's
//! last bytes, never between the end of DATA and its `250`. Cutting there would lose an
//! acknowledgment the server had already committed to (SMTP's own duplicate window, RFC 1047),
//! which is not the product's doing. Starting it binds the same port again.

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use mailin_embedded::{Handler, Response, Server, response};

/// Longest wait for the server's answer at stop. mailin answers within microseconds, so a
/// session still waiting after this is one whose client was mid-message (DATA not finished):
/// cutting it loses nothing the server accepted.
const ANSWER_WAIT: Duration = Duration::from_millis(200);

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
    current: Option<Vec<String>>,
}

impl Handler for Recorder {
    fn data_start(&mut self, _domain: &str, _from: &str, _is8bit: bool, to: &[String]) -> Response {
        self.current = Some(
            to.iter()
                .map(|r| {
                    r.trim()
                        .trim_start_matches('<')
                        .trim_end_matches('>')
                        .to_owned()
                })
                .collect(),
        );
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

/// The sink: mailin on a hidden port, reachable through the front on `port` while it is up.
pub struct SmtpSink {
    port: u16,
    backend_port: u16,
    received: Mailbox,
    front: Option<Front>,
}

impl SmtpSink {
    /// Starts mailin and the front on a free port.
    pub fn start() -> Self {
        let received = Mailbox::default();
        let backend = TcpListener::bind("127.0.0.1:0").expect("bind the SMTP backend");
        let backend_port = backend.local_addr().expect("backend address").port();
        let mut server = Server::new(Recorder {
            received: received.clone(),
            current: None,
        });
        server
            .with_name("sink.example.test")
            // One thread per open session: lettre pools up to 8 per handler process.
            .with_num_threads(64)
            .with_tcp_listener(backend);
        std::thread::spawn(move || {
            if let Err(e) = server.serve() {
                eprintln!("SMTP sink stopped: {e}");
            }
        });
        let mut sink = Self {
            port: super::free_port(),
            backend_port,
            received,
            front: None,
        };
        sink.up();
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
        let stopping = Arc::new(AtomicBool::new(false));
        let sessions: Arc<Mutex<Vec<Arc<Session>>>> = Arc::default();
        let acceptor = {
            let (stopping, sessions, backend_port) =
                (stopping.clone(), sessions.clone(), self.backend_port);
            std::thread::spawn(move || accept(&listener, &stopping, &sessions, backend_port))
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
    backend_port: u16,
) {
    for client in listener.incoming() {
        if stopping.load(Ordering::SeqCst) {
            return;
        }
        let Ok(client) = client else { continue };
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
