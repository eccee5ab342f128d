//! A real SMTP server that keeps every message it receives, and can behave like a provider
//! that refuses some mailboxes for good (550 at RCPT) or throttles past a rate (451 4.7.0).

use std::collections::VecDeque;
use std::io;
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mailin_embedded::{Handler, Response, Server, response};

use super::mime::{self, MimePart};

/// One message as the SMTP server saw it.
#[derive(Clone, Debug)]
pub struct ReceivedMail {
    /// The envelope sender (`MAIL FROM`).
    pub from: String,
    /// The envelope recipients (`RCPT TO`), without angle brackets.
    pub to: Vec<String>,
    /// The message as sent after `DATA` (headers and body), dot-unstuffed.
    pub data: String,
    /// When the sink accepted the message.
    pub received_at: Instant,
}

impl ReceivedMail {
    /// A top-level header of the message, matched case-insensitively.
    pub fn header(&self, name: &str) -> Option<String> {
        mime::parse(&self.data).header(name).map(str::to_owned)
    }

    /// The message's leaf parts (text/plain, text/html, ...), bodies decoded.
    pub fn parts(&self) -> Vec<MimePart> {
        mime::parse(&self.data).leaves()
    }

    /// The decoded body of the first leaf part with this media type (e.g. `text/html`).
    pub fn part(&self, media_type: &str) -> Option<String> {
        self.parts()
            .into_iter()
            .find(|part| part.media_type() == media_type)
            .map(|part| part.body)
    }
}

type Mailbox = Arc<Mutex<Vec<ReceivedMail>>>;

/// How the sink answers, shared by every connection.
#[derive(Default)]
struct Rules {
    /// Recipients (lower case) refused with `550 5.1.1` at RCPT.
    refused: Vec<String>,
    /// At most this many recipients accepted in any `per` window; past it, `451 4.7.0`.
    rate: Option<(usize, Duration)>,
    /// When recipients were accepted, oldest first (for the rate).
    accepted: VecDeque<Instant>,
    /// How many RCPTs were answered 451 for the rate.
    throttled: usize,
}

/// mailin's per-connection callbacks: it clones this for each connection, so `current` is
/// per connection while `received` is shared.
#[derive(Clone)]
struct Recorder {
    received: Mailbox,
    rules: Arc<Mutex<Rules>>,
    current: Option<ReceivedMail>,
}

impl Handler for Recorder {
    fn rcpt(&mut self, to: &str) -> Response {
        let to = strip_angle_brackets(to).to_ascii_lowercase();
        let mut rules = self.rules.lock().expect("rules lock");
        if rules.refused.contains(&to) {
            return Response::custom(550, format!("5.1.1 <{to}>: Recipient address rejected"));
        }
        if let Some((limit, per)) = rules.rate {
            let now = Instant::now();
            while rules.accepted.front().is_some_and(|t| now - *t >= per) {
                rules.accepted.pop_front();
            }
            if rules.accepted.len() >= limit {
                rules.throttled += 1;
                return Response::custom(451, "4.7.0 Too many messages, slow down".to_owned());
            }
            rules.accepted.push_back(now);
        }
        response::OK
    }

    fn data_start(&mut self, _domain: &str, from: &str, _is8bit: bool, to: &[String]) -> Response {
        self.current = Some(ReceivedMail {
            from: strip_angle_brackets(from),
            to: to.iter().map(|r| strip_angle_brackets(r)).collect(),
            data: String::new(),
            received_at: Instant::now(),
        });
        response::OK
    }

    fn data(&mut self, buf: &[u8]) -> io::Result<()> {
        if let Some(mail) = self.current.as_mut() {
            mail.data.push_str(&String::from_utf8_lossy(buf));
        }
        Ok(())
    }

    fn data_end(&mut self) -> Response {
        if let Some(mut mail) = self.current.take() {
            mail.received_at = Instant::now();
            self.received.lock().expect("mailbox lock").push(mail);
        }
        response::OK
    }
}

fn strip_angle_brackets(address: &str) -> String {
    address
        .trim()
        .trim_start_matches('<')
        .trim_end_matches('>')
        .to_owned()
}

/// An SMTP server (mailin-embedded) on a loopback port that records what it receives.
///
/// It serves on a std thread forever: nextest runs each test in its own process.
pub struct SmtpSink {
    port: u16,
    received: Mailbox,
    rules: Arc<Mutex<Rules>>,
}

impl SmtpSink {
    /// Starts a sink on a free port.
    pub fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the SMTP sink");
        Self::serve(listener)
    }

    /// A free port with nothing listening on it: SMTP "down" until [`SmtpSink::start_on`].
    pub fn reserve_port() -> u16 {
        super::free_port()
    }

    /// Starts a sink on a port picked earlier with [`SmtpSink::reserve_port`].
    pub fn start_on(port: u16) -> Self {
        let listener = TcpListener::bind(("127.0.0.1", port))
            .unwrap_or_else(|e| panic!("bind the SMTP sink to 127.0.0.1:{port}: {e}"));
        Self::serve(listener)
    }

    fn serve(listener: TcpListener) -> Self {
        let port = listener.local_addr().expect("SMTP sink address").port();
        let received = Mailbox::default();
        let rules = Arc::new(Mutex::new(Rules::default()));
        let recorder = Recorder {
            received: Arc::clone(&received),
            rules: Arc::clone(&rules),
            current: None,
        };
        let mut server = Server::new(recorder);
        server
            .with_name("sink.example.test")
            .with_num_threads(8)
            .with_tcp_listener(listener);
        std::thread::spawn(move || {
            if let Err(e) = server.serve() {
                eprintln!("SMTP sink stopped: {e}");
            }
        });
        Self {
            port,
            received,
            rules,
        }
    }

    /// Refuses this recipient for good from now on: `550 5.1.1` at RCPT.
    pub fn refuse_mailbox(&self, address: &str) {
        let mut rules = self.rules.lock().expect("rules lock");
        rules.refused.push(address.to_ascii_lowercase());
    }

    /// Accepts at most `limit` recipients in any `per` window, answering `451 4.7.0` past it,
    /// as a provider's throttle does.
    pub fn throttle_past(&self, limit: usize, per: Duration) {
        self.rules.lock().expect("rules lock").rate = Some((limit, per));
    }

    /// How many recipients were refused with 451 for the rate so far.
    pub fn throttled(&self) -> usize {
        self.rules.lock().expect("rules lock").throttled
    }

    /// `smtp://127.0.0.1:<port>` (plain SMTP, no TLS, no auth).
    pub fn url(&self) -> String {
        smtp_url(self.port)
    }

    /// Every message received so far.
    pub fn messages(&self) -> Vec<ReceivedMail> {
        self.received.lock().expect("mailbox lock").clone()
    }

    /// Waits until at least `n` messages arrived; panics after `timeout`.
    pub async fn wait_for(&self, n: usize, timeout: Duration) -> Vec<ReceivedMail> {
        let deadline = Instant::now() + timeout;
        loop {
            let messages = self.messages();
            if messages.len() >= n {
                return messages;
            }
            assert!(
                Instant::now() < deadline,
                "expected {n} message(s) in the SMTP sink within {timeout:?}, got {}",
                messages.len()
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

/// `smtp://127.0.0.1:<port>`.
fn smtp_url(port: u16) -> String {
    format!("smtp://127.0.0.1:{port}")
}
