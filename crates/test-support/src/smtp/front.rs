//! The sink's public port, for a sink that can be stopped and started again on the same port.
//!
//! mailin-embedded serves forever and cannot close its listener, so it runs on a hidden port
//! behind this small TCP front. Stopping the front is what a server's graceful shutdown looks
//! like to clients: new connections are refused, and every open session (lettre keeps a pool)
//! is closed at a command boundary: when the server has answered the client's last bytes, never
//! between the end of DATA and its `250`. Cutting there would lose an acknowledgment the server
//! had already committed to (SMTP's own duplicate window, RFC 1047), which is not the product's
//! doing.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::policy::Policy;

/// Longest wait for the server's answer at stop. mailin answers within microseconds, so a
/// session still waiting after this is one whose client was mid-message (DATA not finished):
/// cutting it loses nothing the server accepted.
const ANSWER_WAIT: Duration = Duration::from_millis(200);

/// Where the front sends a new session.
#[derive(Clone, Copy)]
pub(super) struct Backends {
    /// mailin.
    pub(super) mail: u16,
    /// The responder that refuses every login (`AuthRefusingSmtp`).
    pub(super) no_login: u16,
}

/// The front while it is up: its accept thread and the sessions it opened.
pub(super) struct Front {
    port: u16,
    stopping: Arc<AtomicBool>,
    acceptor: JoinHandle<()>,
    sessions: Arc<Mutex<Vec<Arc<Session>>>>,
}

impl Front {
    /// Serves the front on `listener`, sending each new session to mailin, or to the login
    /// refuser while the policy says so.
    pub(super) fn open(listener: TcpListener, backends: Backends, policy: Arc<Policy>) -> Self {
        let port = listener.local_addr().expect("front address").port();
        let stopping = Arc::new(AtomicBool::new(false));
        let sessions: Arc<Mutex<Vec<Arc<Session>>>> = Arc::default();
        let acceptor = {
            let (stopping, sessions) = (stopping.clone(), sessions.clone());
            std::thread::spawn(move || accept(&listener, &stopping, &sessions, backends, &policy))
        };
        Self {
            port,
            stopping,
            acceptor,
            sessions,
        }
    }

    /// Stops the front: the port refuses connections, and open sessions are closed at a
    /// command boundary (at once when the client has the floor, else right after the server's
    /// answer). Returns how many sessions were cut mid-message (no answer after
    /// [`ANSWER_WAIT`]). When it returns, no session is open.
    pub(super) fn close(self) -> usize {
        let front = self;
        front.stopping.store(true, Ordering::SeqCst);
        // Wake the accept call so the listener is dropped now.
        let _ = TcpStream::connect(("127.0.0.1", front.port));
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
