//! Loopback ports for the servers a test or the benchmark starts.

use std::net::TcpListener;

/// A loopback port that was free a moment ago: bind port 0, read the port, release it. Servers
/// that must be reachable at a known address before they run (a handler's SMTP_URL pointing at
/// a sink started later) take their port from here.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0 to pick a free port");
    listener.local_addr().expect("local address").port()
}
