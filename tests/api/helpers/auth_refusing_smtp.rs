//! A raw-TCP SMTP server that offers AUTH and refuses every login with `535 5.7.8`, as a provider
//! does when SMTP_URL carries a wrong or revoked password. (mailin only offers AUTH over TLS.)

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// The server; it serves on std threads until the test process ends.
pub struct AuthRefusingSmtp {
    pub port: u16,
    attempts: Arc<AtomicUsize>,
}

impl AuthRefusingSmtp {
    /// Starts on a free loopback port.
    pub fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the AUTH-refusing server");
        let port = listener.local_addr().expect("its address").port();
        let attempts = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&attempts);
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let counter = Arc::clone(&counter);
                std::thread::spawn(move || {
                    let _ = serve(stream, &counter);
                });
            }
        });
        Self { port, attempts }
    }

    /// How many AUTH commands it refused.
    pub fn auth_attempts(&self) -> usize {
        self.attempts.load(Ordering::SeqCst)
    }
}

fn serve(stream: TcpStream, attempts: &AtomicUsize) -> std::io::Result<()> {
    let mut out = stream.try_clone()?;
    out.write_all(b"220 auth-refusing.test ESMTP\r\n")?;
    for line in BufReader::new(stream).lines() {
        let line = line?;
        let verb = line
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .to_ascii_uppercase();
        let reply: &[u8] = match verb.as_str() {
            "EHLO" => b"250-auth-refusing.test\r\n250-AUTH PLAIN LOGIN\r\n250 OK\r\n",
            "AUTH" => {
                attempts.fetch_add(1, Ordering::SeqCst);
                b"535 5.7.8 Authentication credentials invalid\r\n"
            }
            "QUIT" => {
                out.write_all(b"221 Bye\r\n")?;
                return Ok(());
            }
            _ => b"530 5.7.0 Authentication required\r\n",
        };
        out.write_all(reply)?;
    }
    Ok(())
}
