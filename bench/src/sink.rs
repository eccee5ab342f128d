//! The SMTP sink: a real SMTP server (mailin-embedded: blocking IO, one pooled thread per
//! connection) on loopback that accepts every message, counts it, and keeps a copy of the first
//! one it is asked to capture (so the ceilings send the product's very email).

use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use mailin_embedded::{Handler, Response, Server, response};

/// Connections served at once; each holds a thread. The handler's pool, dev's, and the
/// ceilings' clients all stay connected, so this is generous.
const THREADS: u32 = 256;

#[derive(Default)]
struct Shared {
    accepted: AtomicU64,
    capture: AtomicBool,
    captured: Mutex<Option<Vec<u8>>>,
}

/// A running sink; it lives until the process exits.
#[derive(Clone)]
pub struct Sink {
    pub port: u16,
    shared: Arc<Shared>,
}

impl Sink {
    pub fn start() -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let port = listener.local_addr()?.port();
        let shared = Arc::new(Shared::default());
        let mut server = Server::new(Counter {
            shared: shared.clone(),
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
        Ok(Self { port, shared })
    }

    /// Messages accepted (250 after the end of DATA) so far.
    pub fn accepted(&self) -> u64 {
        self.shared.accepted.load(Ordering::Relaxed)
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
    data: Option<Vec<u8>>,
}

impl Handler for Counter {
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
        self.shared.accepted.fetch_add(1, Ordering::Relaxed);
        response::OK
    }
}
