//! The SMTP sink: a real SMTP server (mailin-embedded: blocking IO, a pooled thread per
//! connection) on loopback that accepts mail and keeps it (or only counts it), for the tests
//! and the benchmark alike.
//!
//! It can behave like a strict provider ([`Modes`], set at start and changed while it runs with
//! the `set_*` methods, from any thread), each answered before any message body is accepted,
//! and each counted:
//!
//! - **rate limit**: at most R messages in any 1 s (a sliding window). A message is charged at
//!   its first accepted `RCPT TO`; past the limit that `RCPT TO` is answered
//!   `451 4.7.0 Too many messages, at most R per second: try again later`
//!   ([`SmtpSink::throttled`]). A refused message costs nothing, so a client retrying at the
//!   limit's pace gets through.
//! - **refused mailboxes**: `RCPT TO` a listed address (compared without case) is answered
//!   `550 5.1.1 <address>: mailbox unavailable (Recipient address rejected)`
//!   ([`SmtpSink::mailbox_refusals`]). This check comes first: a refused mailbox is not charged
//!   to the rate limit.
//! - **authentication refused** (a restartable sink): new sessions go to an
//!   [`AuthRefusingSmtp`] ([`SmtpSink::auth_attempts`]). Sessions open at the switch keep their
//!   server, as a provider revoking a key does not end sessions already authenticated;
//!   `down()`, switch, `up()` makes every client log in again.
//!
//! A restartable sink ([`SmtpSink::start_with`]) serves behind a front (see `front`) that
//! [`SmtpSink::down`] and [`SmtpSink::up`] stop and start on the same port; the others serve
//! mailin's own listener, with nothing in between to measure.

mod front;
mod mail;
mod mime;
mod policy;
mod refuse_logins;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use mailin_embedded::Server;

use front::{Backends, Front};
pub use mail::ReceivedMail;
pub use mime::MimePart;
pub use policy::{Modes, Record};
use policy::{Policy, Recorder};
pub use refuse_logins::AuthRefusingSmtp;
use refuse_logins::NAME;

/// How often the `wait_for` methods look.
const POLL: Duration = Duration::from_millis(25);

/// How a sink is set up; [`SmtpSink::start`] and [`SmtpSink::start_with`] cover the usual
/// cases, [`SmtpSink::try_start`] takes it whole.
#[derive(Clone, Debug)]
pub struct SinkOptions {
    /// How it answers.
    pub modes: Modes,
    /// The port, picked earlier (say with [`crate::free_port`]) so that a handler can be
    /// pointed at SMTP before it is up; `None` for a free one.
    pub port: Option<u16>,
    /// Whether it serves behind the front that [`SmtpSink::down`] and [`SmtpSink::up`] stop
    /// and start (needed for [`Modes::refuse_auth`]).
    pub restartable: bool,
    /// What it keeps of each message.
    pub record: Record,
    /// Sessions served at once; each holds a thread, and a client pool stays connected.
    pub threads: u32,
}

impl Default for SinkOptions {
    fn default() -> Self {
        Self {
            modes: Modes::default(),
            port: None,
            restartable: false,
            record: Record::Messages,
            threads: 64,
        }
    }
}

/// A running SMTP sink (see the module doc). mailin serves on a std thread until the process
/// ends (nextest runs each test in a process of its own); a restartable sink's front stops
/// when the sink drops.
pub struct SmtpSink {
    port: u16,
    backends: Option<Backends>,
    policy: Arc<Policy>,
    front: Option<Front>,
    login_refuser: Option<AuthRefusingSmtp>,
}

impl SmtpSink {
    /// A sink on a free port that accepts and keeps every message.
    pub fn start() -> Self {
        Self::start_options(SinkOptions::default())
    }

    /// A sink on `port` (picked earlier: SMTP was "down" until now) that keeps every message.
    pub fn start_on(port: u16) -> Self {
        Self::start_options(SinkOptions {
            port: Some(port),
            ..SinkOptions::default()
        })
    }

    /// A restartable sink on a free port, answering as `modes` says.
    pub fn start_with(modes: &Modes) -> Self {
        Self::start_options(SinkOptions {
            modes: modes.clone(),
            restartable: true,
            ..SinkOptions::default()
        })
    }

    fn start_options(options: SinkOptions) -> Self {
        Self::try_start(options).unwrap_or_else(|e| panic!("{e:#}"))
    }

    /// Starts a sink as `options` say, returning what went wrong instead of panicking (for
    /// the benchmark).
    pub fn try_start(options: SinkOptions) -> anyhow::Result<Self> {
        anyhow::ensure!(
            options.restartable || !options.modes.refuse_auth,
            "refusing logins needs a restartable SMTP sink"
        );
        let public = TcpListener::bind(("127.0.0.1", options.port.unwrap_or(0)))
            .with_context(|| format!("bind the SMTP sink to 127.0.0.1:{:?}", options.port))?;
        let port = public.local_addr()?.port();
        let policy = Arc::new(Policy::new(&options.modes, options.record));
        // A restartable sink's mailin hides behind the front, which takes the public port.
        let (mail, front_listener) = if options.restartable {
            let hidden = TcpListener::bind("127.0.0.1:0").context("bind the SMTP backend")?;
            (hidden, Some(public))
        } else {
            (public, None)
        };
        let mail_port = mail.local_addr()?.port();
        let mut server = Server::new(Recorder::new(policy.clone()));
        server
            .with_name(NAME)
            .with_num_threads(options.threads)
            .with_tcp_listener(mail);
        std::thread::Builder::new()
            .name("smtp-sink".into())
            .spawn(move || {
                if let Err(e) = server.serve() {
                    eprintln!("SMTP sink stopped: {e}");
                }
            })?;
        let mut sink = Self {
            port,
            backends: None,
            policy,
            front: None,
            login_refuser: None,
        };
        if let Some(public) = front_listener {
            let refuser = AuthRefusingSmtp::start();
            let backends = Backends {
                mail: mail_port,
                no_login: refuser.port(),
            };
            sink.front = Some(Front::open(public, backends, sink.policy.clone()));
            sink.backends = Some(backends);
            sink.login_refuser = Some(refuser);
        }
        Ok(sink)
    }

    /// The loopback port clients connect to.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `smtp://127.0.0.1:<port>` (plain SMTP, no TLS, no auth).
    pub fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.port)
    }

    /// Stops a restartable sink: the port refuses connections, and open sessions are closed at
    /// a command boundary. Returns how many sessions were cut mid-message (the client had not
    /// finished its DATA, so nothing was accepted). When it returns, no session is open.
    pub fn down(&mut self) -> usize {
        self.front.take().expect("the SMTP sink is up").close()
    }

    /// Opens the public port again (after [`SmtpSink::down`]).
    pub fn up(&mut self) {
        assert!(self.front.is_none(), "the SMTP sink is already up");
        let backends = self.backends.expect("a restartable SMTP sink");
        let listener = TcpListener::bind(("127.0.0.1", self.port))
            .unwrap_or_else(|e| panic!("bind the SMTP front to 127.0.0.1:{}: {e}", self.port));
        self.front = Some(Front::open(listener, backends, self.policy.clone()));
    }

    /// Every message accepted so far (none kept with [`Record::Count`]).
    pub fn messages(&self) -> Vec<ReceivedMail> {
        self.policy.received.lock().expect("mailbox lock").clone()
    }

    /// Messages accepted so far (250 after the end of DATA), whatever is kept.
    pub fn accepted(&self) -> u64 {
        self.policy.accepted.load(Ordering::SeqCst)
    }

    /// Messages per recipient, to see who got none and who got two.
    pub fn per_recipient(&self) -> BTreeMap<String, usize> {
        let mut counts = BTreeMap::new();
        for mail in self.messages() {
            for to in mail.to {
                *counts.entry(to).or_insert(0) += 1;
            }
        }
        counts
    }

    /// Keeps the next message received, whole, even when the sink only counts (so the
    /// benchmark can send the product's very email again).
    pub fn capture_next(&self) {
        *self.policy.captured.lock().expect("capture lock") = None;
        self.policy.capture.store(true, Ordering::SeqCst);
    }

    /// The captured message (as received after DATA, dot-unstuffed, lines ending in CRLF).
    pub fn captured(&self) -> Option<Vec<u8>> {
        self.policy.captured.lock().expect("capture lock").clone()
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
            tokio::time::sleep(POLL).await;
        }
    }

    /// Waits for a message matching `wanted`; panics after `timeout`, naming who got mail.
    pub async fn wait_for_mail(
        &self,
        timeout: Duration,
        wanted: impl Fn(&ReceivedMail) -> bool,
    ) -> ReceivedMail {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(mail) = self.messages().into_iter().find(|m| wanted(m)) {
                return mail;
            }
            assert!(
                Instant::now() < deadline,
                "the expected email did not arrive within {timeout:?}; got {:?}",
                self.messages().iter().map(|m| &m.to).collect::<Vec<_>>()
            );
            tokio::time::sleep(POLL).await;
        }
    }
}

/// The provider modes, changed while the sink runs.
impl SmtpSink {
    /// At most `per_second` messages in any 1 s from now on (`None`: no limit). A changed limit
    /// starts with an empty window.
    pub fn set_rate_limit(&self, per_second: Option<u32>) {
        self.policy.set_rate_limit(per_second);
    }

    /// Refuses this recipient for good from now on, with `550 5.1.1` at RCPT (the others
    /// refused so far stay refused).
    pub fn refuse_mailbox(&self, address: &str) {
        self.policy.add_refused_mailbox(address);
    }

    /// Replaces the recipients refused with `550 5.1.1` (compared without case).
    pub fn set_refused_mailboxes<'a>(&self, mailboxes: impl IntoIterator<Item = &'a str>) {
        self.policy.set_refused_mailboxes(mailboxes);
    }

    /// Whether sessions opened from now on get the server that refuses every login.
    pub fn set_auth_refused(&self, refused: bool) {
        assert!(
            self.login_refuser.is_some(),
            "refusing logins needs a restartable SMTP sink"
        );
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
        self.login_refuser
            .as_ref()
            .map_or(0, AuthRefusingSmtp::auth_attempts)
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        if let Some(front) = self.front.take() {
            front.close();
        }
    }
}
