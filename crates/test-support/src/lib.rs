//! What the tests and the benchmark share, so that each thing exists once: the real servers
//! they start on loopback ([`RedisServer`], [`RedisCluster`] (plain or TLS), [`SmtpSink`], a stand-in managed
//! identity endpoint in [`token_endpoint`]), the `handler dev` launcher
//! ([`DevHost`]), child processes that never outlive a test ([`Supervised`]), invocation
//! envelopes shaped as the Functions host builds them ([`envelope`]) and the handler's answer as
//! the host reads it ([`InvocationAnswer`]), and the one host version.
//!
//! It panics where a test should fail loudly (a missing `redis-server` is never a silent skip);
//! the `try_` starts return errors instead, for the benchmark. Nothing here depends on a test
//! binary: a launcher is handed the `handler` binary's path.

pub mod answer;
pub mod dev_host;
pub mod envelope;
mod port;
pub mod process;
pub mod redis;
mod redis_cluster;
mod redis_replica;
pub mod redis_tls;
mod silent;
pub mod smtp;
pub mod token_endpoint;

pub use answer::{InvocationAnswer, Res};
pub use dev_host::{DevHost, DevHostBuilder, app_root, http_client};
pub use port::free_port;
pub use process::Supervised;
pub use redis::{Persistence, RedisServer};
pub use redis_cluster::RedisCluster;
pub use redis_replica::RedisReplica;
pub use silent::SilentServer;
pub use smtp::{AuthRefusingSmtp, Modes, ReceivedMail, SinkOptions, SmtpSink};

/// The limits against abuse, lifted out of the way (a million a second): tests and the benchmark
/// sign many users up from one address; the tests of the limits set their own.
pub const LIMITS_LIFTED: [(&str, &str); 4] = [
    ("LIMIT_SIGN_UPS_PER_ADDRESS", "1000000/1s"),
    ("LIMIT_SIGN_UPS_PER_MAILBOX", "1000000/1s"),
    ("LIMIT_FAILED_SIGN_INS_PER_ADDRESS", "1000000/1s"),
    ("LIMIT_FAILED_SIGN_INS_PER_ACCOUNT", "1000000/1s"),
];

/// The host version the tests and the benchmark claim in their envelopes: the dev host's own,
/// so the copies cannot drift.
pub use devhost::HOST_VERSION;
