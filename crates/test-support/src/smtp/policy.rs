//! How the sink answers each session (mailin's callbacks), and what it keeps: the provider
//! modes a test sets, the counts of what they refused, and the messages accepted.

use std::collections::{BTreeSet, VecDeque};
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mailin_embedded::{Handler, Response, response};

use super::mail::ReceivedMail;

/// The rate limit's window: at most R messages in any span this long.
const RATE_WINDOW: Duration = Duration::from_secs(1);

/// How the sink answers, like a strict provider (see the `smtp` module doc). The default
/// accepts everything.
#[derive(Clone, Debug, Default)]
pub struct Modes {
    /// At most this many messages in any 1 s; `None` for no limit (`Some(0)` refuses all).
    pub rate_per_second: Option<u32>,
    /// Recipients refused permanently at `RCPT TO` (compared without case).
    pub refused_mailboxes: Vec<String>,
    /// Whether new sessions get a server that refuses every login (a restartable sink only).
    pub refuse_auth: bool,
}

/// What the sink keeps of each accepted message.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Record {
    /// Every message, whole ([`ReceivedMail`]).
    #[default]
    Messages,
    /// Only the count: for the benchmark's ceilings, which send tens of thousands a second.
    Count,
}

/// The modes as they are now, what they refused, and what was accepted; shared by every
/// session.
pub(super) struct Policy {
    rate: Mutex<Rate>,
    refused_mailboxes: Mutex<BTreeSet<String>>,
    pub(super) refuse_auth: AtomicBool,
    pub(super) throttled: AtomicUsize,
    pub(super) mailbox_refusals: AtomicUsize,
    pub(super) accepted: AtomicU64,
    record: Record,
    pub(super) received: Mutex<Vec<ReceivedMail>>,
    pub(super) capture: AtomicBool,
    pub(super) captured: Mutex<Option<Vec<u8>>>,
}

impl Policy {
    pub(super) fn new(modes: &Modes, record: Record) -> Self {
        let policy = Self {
            rate: Mutex::default(),
            refused_mailboxes: Mutex::default(),
            refuse_auth: AtomicBool::new(modes.refuse_auth),
            throttled: AtomicUsize::new(0),
            mailbox_refusals: AtomicUsize::new(0),
            accepted: AtomicU64::new(0),
            record,
            received: Mutex::default(),
            capture: AtomicBool::new(false),
            captured: Mutex::default(),
        };
        policy.set_rate_limit(modes.rate_per_second);
        policy.set_refused_mailboxes(modes.refused_mailboxes.iter().map(String::as_str));
        policy
    }

    pub(super) fn set_rate_limit(&self, per_second: Option<u32>) {
        let mut rate = self.rate.lock().expect("rate lock");
        if rate.per_second != per_second {
            // A new limit counts from now.
            *rate = Rate {
                per_second,
                admitted: VecDeque::new(),
            };
        }
    }

    pub(super) fn add_refused_mailbox(&self, address: &str) {
        let mut refused = self.refused_mailboxes.lock().expect("mailboxes lock");
        refused.insert(mailbox(address));
    }

    pub(super) fn set_refused_mailboxes<'a>(&self, mailboxes: impl IntoIterator<Item = &'a str>) {
        *self.refused_mailboxes.lock().expect("mailboxes lock") =
            mailboxes.into_iter().map(mailbox).collect();
    }
}

/// The rate limit: the messages admitted within the last [`RATE_WINDOW`] (a sliding window,
/// stricter than a token bucket or fixed 1 s windows, which both let 2R through across a
/// boundary).
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

/// An envelope address as compared and recorded: no angle brackets, no surrounding space.
fn bare(address: &str) -> &str {
    address.trim().trim_start_matches('<').trim_end_matches('>')
}

/// An address as the refused list holds it: bare, lower case.
fn mailbox(address: &str) -> String {
    bare(address).to_ascii_lowercase()
}

/// mailin's callbacks: it clones this for each connection, so the message under way is per
/// connection while the policy is shared.
#[derive(Clone)]
pub(super) struct Recorder {
    pub(super) policy: Arc<Policy>,
    current: Option<ReceivedMail>,
    /// The whole message, when it is the one [`super::SmtpSink::capture_next`] asked for.
    capturing: Option<Vec<u8>>,
    /// Whether the message under way has been charged to the rate limit.
    charged: bool,
}

impl Recorder {
    pub(super) fn new(policy: Arc<Policy>) -> Self {
        Self {
            policy,
            current: None,
            capturing: None,
            charged: false,
        }
    }
}

impl Handler for Recorder {
    fn mail(&mut self, _ip: std::net::IpAddr, _domain: &str, _from: &str) -> Response {
        self.charged = false;
        response::OK
    }

    /// A refused mailbox is checked first and costs no rate; a message is charged to the rate
    /// at its first accepted `RCPT TO`, and refused there (451) past the limit, before any body
    /// is accepted.
    fn rcpt(&mut self, to: &str) -> Response {
        let policy = &self.policy;
        let refused = policy
            .refused_mailboxes
            .lock()
            .expect("mailboxes lock")
            .contains(&mailbox(to));
        if refused {
            policy.mailbox_refusals.fetch_add(1, Ordering::SeqCst);
            return Response::custom(
                550,
                format!(
                    "5.1.1 <{}>: mailbox unavailable (Recipient address rejected)",
                    bare(to)
                ),
            );
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

    fn data_start(&mut self, _domain: &str, from: &str, _is8bit: bool, to: &[String]) -> Response {
        if self.policy.record == Record::Messages {
            self.current = Some(ReceivedMail {
                from: bare(from).to_owned(),
                to: to.iter().map(|r| bare(r).to_owned()).collect(),
                data: String::new(),
                received_at: Instant::now(),
            });
        }
        if self.policy.capture.swap(false, Ordering::SeqCst) {
            self.capturing = Some(Vec::with_capacity(8192));
        }
        response::OK
    }

    fn data(&mut self, buf: &[u8]) -> io::Result<()> {
        if let Some(mail) = self.current.as_mut() {
            mail.data.push_str(&String::from_utf8_lossy(buf));
        }
        if let Some(data) = self.capturing.as_mut() {
            data.extend_from_slice(buf);
        }
        Ok(())
    }

    fn data_end(&mut self) -> Response {
        if let Some(data) = self.capturing.take() {
            *self.policy.captured.lock().expect("capture lock") = Some(data);
        }
        if let Some(mut mail) = self.current.take() {
            mail.received_at = Instant::now();
            self.policy
                .received
                .lock()
                .expect("mailbox lock")
                .push(mail);
        }
        self.policy.accepted.fetch_add(1, Ordering::SeqCst);
        response::OK
    }
}
