//! The phases of a run, one module each, in the order [`run`](crate::run) takes them. Each
//! records its rows and returns its figures as a struct whose `check` adds its targets.

pub mod accounts;
pub mod cluster;
pub mod create;
pub mod dev;
pub mod http;
pub mod mail;
pub mod memory;
pub mod provider;
pub mod readiness;
pub mod store;
