//! The SMTP sink: a real SMTP server (mailin-embedded: blocking IO, one pooled thread per
//! connection) on loopback that accepts every message, counts it, and keeps a copy of the first
//! one it is asked to capture (so the ceilings send the product's very email).
//!
//! [`Sink::start_limited`] makes it a throttling provider: at most R messages in any 1 s (a
//! sliding window, stricter than a token bucket or fixed 1 s windows, which both let 2R through
//! across a boundary). A message is charged at its first accepted `RCPT TO`; past the limit that
//! `RCPT TO` is answered `451 4.7.0 Too many messages, at most R per second: try again later`
//! (so no body is accepted and then refused), and counted ([`Sink::throttled`]). The unlimited
//! sink of [`Sink::start`] has no limiter: its `RCPT TO` is a branch on `None`. The limited sink
//! also notes when it accepted each message ([`Sink::accepted_times`]), for the rate over the
//! steady part of a phase; the unlimited one keeps no times (its ceilings run at 20 000/s).

use std::collections::VecDeque;
use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mailin_embedded::{Handler, Response, Server, response};

/// Connections served at once; each holds a thread. The handler's pool, dev's, and the
/// ceilings' clients all stay connected, so this is generous.
const THREADS: u32 = 256;

/// The rate limit's window: at most R messages in any span this long.
const RATE_WINDOW: Duration = Duration::from_secs(1);

#[derive(Default)]
struct Shared {
    accepted: AtomicU64,
    capture: AtomicBool,
    captured: Mutex<Option<Vec<u8>>>,
    /// `RCPT TO`s refused by the rate limit.
    throttled: AtomicU64,
}

/// A provider's rate limit: the messages admitted within the last [`RATE_WINDOW`].
struct Limiter {
    per_second: u32,
    admitted: Mutex<VecDeque<Instant>>,
    /// When each message was accepted (250 after the end of DATA).
    accepted_at: Mutex<Vec<Instant>>,
}

impl Limiter {
    /// Charges one message now, if the limit allows it.
    fn admit(&self) -> bool {
        let now = Instant::now();
        let mut admitted = self.admitted.lock().unwrap();
        while admitted
            .front()
            .is_some_and(|t| now.duration_since(*t) >= RATE_WINDOW)
        {
            admitted.pop_front();
        }
        if admitted.len() < self.per_second as usize {
            admitted.push_back(now);
            true
        } else {
            false
        }
    }
}

/// A running sink; it lives until the process exits.
#[derive(Clone)]
pub struct Sink {
    pub port: u16,
    shared: Arc<Shared>,
    limiter: Option<Arc<Limiter>>,
}

impl Sink {
    /// A sink that accepts every message.
    pub fn start() -> anyhow::Result<Self> {
        Self::serve(None)
    }

    /// A sink that accepts at most `per_second` messages in any 1 s and answers `451 4.7.0`
    /// at `RCPT TO` past it (see the module doc).
    pub fn start_limited(per_second: u32) -> anyhow::Result<Self> {
        Self::serve(Some(Arc::new(Limiter {
            per_second,
            admitted: Mutex::new(VecDeque::with_capacity(per_second as usize)),
            accepted_at: Mutex::new(Vec::new()),
        })))
    }

    fn serve(limiter: Option<Arc<Limiter>>) -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let port = listener.local_addr()?.port();
        let shared = Arc::new(Shared::default());
        let limiter_view = limiter.clone();
        let mut server = Server::new(Counter {
            shared: shared.clone(),
            limiter,
            charged: false,
            data: None,
        });
        server
            .with_name("bench-sink")
            .with_num_threads(THREADS)
            .with_tcp_listener(listener);
        std::thread::Builder::new()
            .name("smtp-sink".into())
            .spawn(move || {
                if let Err(e) = server.serve() {
                    eprintln!("bench: the SMTP sink stopped: {e}");
                }
            })?;
        Ok(Self {
            port,
            shared,
            limiter: limiter_view,
        })
    }

    /// Messages accepted (250 after the end of DATA) so far.
    pub fn accepted(&self) -> u64 {
        self.shared.accepted.load(Ordering::Relaxed)
    }

    /// `RCPT TO`s refused with `451 4.7.0` by the rate limit so far (0 when unlimited).
    pub fn throttled(&self) -> u64 {
        self.shared.throttled.load(Ordering::Relaxed)
    }

    /// When each message was accepted, in order (the limited sink only; empty otherwise).
    pub fn accepted_times(&self) -> Vec<Instant> {
        self.limiter
            .as_ref()
            .map(|l| l.accepted_at.lock().unwrap().clone())
            .unwrap_or_default()
    }

    /// Keeps the next message received, whole.
    pub fn capture_next(&self) {
        *self.shared.captured.lock().unwrap() = None;
        self.shared.capture.store(true, Ordering::SeqCst);
    }

    /// The captured message (as received after DATA, dot-unstuffed, lines ending in CRLF).
    pub fn captured(&self) -> Option<Vec<u8>> {
        self.shared.captured.lock().unwrap().clone()
    }
}

/// mailin clones this per connection.
#[derive(Clone)]
struct Counter {
    shared: Arc<Shared>,
    /// `None` for the unlimited sink.
    limiter: Option<Arc<Limiter>>,
    /// Whether the message under way has been charged to the rate limit.
    charged: bool,
    data: Option<Vec<u8>>,
}

impl Handler for Counter {
    fn mail(&mut self, _ip: std::net::IpAddr, _domain: &str, _from: &str) -> Response {
        self.charged = false;
        response::OK
    }

    fn rcpt(&mut self, _to: &str) -> Response {
        let Some(limiter) = &self.limiter else {
            return response::OK;
        };
        if self.charged || limiter.admit() {
            self.charged = true;
            return response::OK;
        }
        self.shared.throttled.fetch_add(1, Ordering::Relaxed);
        Response::custom(
            451,
            format!(
                "4.7.0 Too many messages, at most {} per second: try again later",
                limiter.per_second
            ),
        )
    }

    fn data_start(
        &mut self,
        _domain: &str,
        _from: &str,
        _is8bit: bool,
        _to: &[String],
    ) -> Response {
        if self.shared.capture.swap(false, Ordering::SeqCst) {
            self.data = Some(Vec::with_capacity(8192));
        }
        response::OK
    }

    fn data(&mut self, buf: &[u8]) -> std::io::Result<()> {
        if let Some(data) = self.data.as_mut() {
            data.extend_from_slice(buf);
        }
        Ok(())
    }

    fn data_end(&mut self) -> Response {
        if let Some(data) = self.data.take() {
            *self.shared.captured.lock().unwrap() = Some(data);
        }
        if let Some(limiter) = &self.limiter {
            limiter.accepted_at.lock().unwrap().push(Instant::now());
        }
        self.shared.accepted.fetch_add(1, Ordering::Relaxed);
        response::OK
    }
}

#[cfg(test)]
mod tests {
    use std::io::{BufRead, BufReader, Write};
    use std::net::TcpStream;

    use super::Sink;

    /// One raw SMTP session: sends each command, returns each reply's last line.
    fn session(sink: &Sink, commands: &[&str]) -> Vec<String> {
        let stream = TcpStream::connect(("127.0.0.1", sink.port)).unwrap();
        let mut replies = BufReader::new(stream.try_clone().unwrap());
        let mut out = &stream;
        let mut reply = || {
            let mut line = String::new();
            loop {
                line.clear();
                replies.read_line(&mut line).unwrap();
                if line.as_bytes().get(3) != Some(&b'-') {
                    return line.trim_end().to_owned();
                }
            }
        };
        reply();
        commands
            .iter()
            .map(|c| {
                out.write_all(format!("{c}\r\n").as_bytes()).unwrap();
                reply()
            })
            .collect()
    }

    const MESSAGE: &[&str] = &[
        "MAIL FROM:<a@example.com>",
        "RCPT TO:<b@example.com>",
        "RCPT TO:<c@example.com>",
        "DATA",
        "Subject: hi\r\n\r\nhello\r\n.",
    ];

    fn codes(replies: &[String]) -> Vec<&str> {
        replies.iter().map(|r| &r[..3]).collect()
    }

    #[test]
    fn the_limited_sink_refuses_past_its_rate_at_rcpt_to() {
        let sink = Sink::start_limited(1).unwrap();
        let mut commands = vec!["EHLO client"];
        commands.extend(MESSAGE);
        commands.extend(&MESSAGE[..2]);
        let replies = session(&sink, &commands);
        // One message with two recipients is charged once; the next is refused at RCPT TO.
        assert_eq!(
            codes(&replies),
            ["250", "250", "250", "250", "354", "250", "250", "451"]
        );
        assert!(
            replies[7].starts_with("451 4.7.0 Too many messages, at most 1 per second"),
            "{}",
            replies[7]
        );
        assert_eq!((sink.accepted(), sink.throttled()), (1, 1));
        assert_eq!(sink.accepted_times().len(), 1);
    }

    #[test]
    fn the_unlimited_sink_accepts_everything() {
        let sink = Sink::start().unwrap();
        let mut commands = vec!["EHLO client"];
        for _ in 0..3 {
            commands.extend(MESSAGE);
        }
        let replies = session(&sink, &commands);
        assert!(codes(&replies).iter().all(|c| *c == "250" || *c == "354"));
        assert_eq!((sink.accepted(), sink.throttled()), (3, 0));
    }
}
