//! A "server" that accepts TCP connections and then never says a word: no SMTP greeting, no
//! Redis reply, no HTTP answer, so clients must give up on their own timeouts.

use std::net::TcpListener;

/// The silent server; its connections are held open, silent, until the process ends.
pub struct SilentServer {
    /// The loopback port it accepts on.
    pub port: u16,
}

impl SilentServer {
    /// Starts accepting on a free loopback port.
    pub fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the silent server");
        let port = listener.local_addr().expect("silent server address").port();
        std::thread::spawn(move || {
            // Keeping the streams keeps the connections open.
            let mut held = Vec::new();
            for stream in listener.incoming().flatten() {
                held.push(stream);
            }
        });
        Self { port }
    }
}
