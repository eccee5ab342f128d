//! What the tests and the benchmark share, so that each thing exists once.

/// The host version the tests and the benchmark claim in their envelopes: the dev host's own.
pub use devhost::client::HOST_VERSION;

pub mod token_endpoint;
