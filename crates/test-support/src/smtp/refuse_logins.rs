//! A raw-TCP SMTP server that requires a login and refuses every one, as a provider does when
//! SMTP_URL carries a wrong or revoked password. mailin-embedded 0.8 cannot offer AUTH without
//! TLS (its plaintext switch is not exposed), hence this small responder: it advertises
//! `AUTH PLAIN LOGIN` over plain TCP, answers every `AUTH` with
//! `535 5.7.8 Authentication credentials invalid`, and `MAIL`, `RCPT` and `DATA` with
//! `530 5.7.0 Authentication required`.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// The server's name in greetings (the sink's mailin says the same).
pub(super) const NAME: &str = "sink.example.test";

/// The server; it serves on std threads until the process ends.
pub struct AuthRefusingSmtp {
    port: u16,
    attempts: Arc<AtomicUsize>,
}

impl AuthRefusingSmtp {
    /// Starts on a free loopback port.
    pub fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the login refuser");
        let port = listener.local_addr().expect("login refuser address").port();
        let attempts = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&attempts);
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let counter = Arc::clone(&counter);
                std::thread::spawn(move || refuse_logins(&stream, &counter));
            }
        });
        Self { port, attempts }
    }

    /// The loopback port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `AUTH` commands received (every one answered `535 5.7.8`, or `501`/`504` when cancelled
    /// or for an unknown mechanism).
    pub fn auth_attempts(&self) -> usize {
        self.attempts.load(Ordering::SeqCst)
    }
}

/// One session with a server that requires a login and refuses every one, as a provider does
/// with revoked credentials: `AUTH PLAIN` and `AUTH LOGIN` (with or without an initial
/// response) run their challenges and end in `535 5.7.8`; nothing can be sent.
fn refuse_logins(stream: &TcpStream, attempts: &AtomicUsize) {
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
                attempts.fetch_add(1, Ordering::SeqCst);
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
