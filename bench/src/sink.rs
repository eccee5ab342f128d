//! The benchmark's SMTP sinks: test-support's sink, set up for measuring. The ceilings' sink
//! only counts (they send tens of thousands of messages a second); the provider phase's sink
//! keeps its few messages, for when each was accepted (the rate over the steady part).

use std::time::Instant;

use test_support::smtp::{Modes, Record, SinkOptions, SmtpSink};

/// Connections served at once; each holds a thread. The handler's pool, dev's, and the
/// ceilings' clients all stay connected, so this is generous.
const THREADS: u32 = 256;

/// A sink that accepts every message, counting them.
pub fn unlimited() -> anyhow::Result<SmtpSink> {
    SmtpSink::try_start(SinkOptions {
        record: Record::Count,
        threads: THREADS,
        ..SinkOptions::default()
    })
}

/// A sink that accepts at most `per_second` messages in any 1 s and answers `451 4.7.0` at
/// `RCPT TO` past it, as a provider's throttle does.
pub fn limited(per_second: u32) -> anyhow::Result<SmtpSink> {
    SmtpSink::try_start(SinkOptions {
        modes: Modes {
            rate_per_second: Some(per_second),
            ..Modes::default()
        },
        record: Record::Messages,
        threads: THREADS,
        ..SinkOptions::default()
    })
}

/// When each message was accepted, in order (a [`limited`] sink's; empty for [`unlimited`]).
pub fn accepted_times(sink: &SmtpSink) -> Vec<Instant> {
    sink.messages().iter().map(|m| m.received_at).collect()
}
