//! What the tests and the benchmark share, so that each thing exists once.

/// The host version the tests and the benchmark claim in their envelopes: the dev host's own.
pub use devhost::client::HOST_VERSION;

mod redis_cluster;
mod redis_replica;

pub use redis_cluster::RedisCluster;
pub use redis_replica::RedisReplica;
pub mod token_endpoint;
