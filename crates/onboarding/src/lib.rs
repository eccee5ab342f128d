//! onboarding: a sign-up service that runs as an Azure Functions custom handler.
//!
//! # Layout
//!
//! This crate is the product: everything the Functions host runs. The workspace around it adds
//! the dev host (`crates/devhost`, which uses this crate as the Functions host would and is never
//! used by it), the `handler` binary that ties the two together, and what tests share.
//!
//! A request flows one way: client → host (or the dev host) → [`protocol`] → [`functions`] →
//! [`domain`] → [`store`] / [`mail`], and back out as one invocation envelope.
//!
//! - [`config`]: settings from the environment, validated together at start.
//! - [`protocol`]: the host's invocation envelope, decoded leniently, and the answer it expects.
//! - [`server`]: the handler's HTTP surface (readiness ping, `POST /<function>`), on warp.
//! - [`functions`]: one module per function, and the single declaration of all of them.
//! - [`domain`]: types that can only hold valid values (name, email, password, user, message).
//! - [`auth`]: password hashing (argon2id, bounded) and session tokens (JWT).
//! - [`store`]: where users and onboarding markers live: Redis, or memory for local runs.
//! - [`mail`]: the onboarding email and the ways to send it: SMTP, or `.eml` files for local runs.
//! - [`pages`]: the browser's pages (sign-up form, welcome), escaped and under a strict CSP.
//! - [`telemetry`]: logs to stdout, and each invocation's own lines for the host's `Logs`.
//!
//! Dependencies inside it run one way: domain ← store, mail, auth ← functions ← server.

pub mod app;
pub mod auth;
pub mod config;
pub mod domain;
pub mod functions;
pub mod mail;
pub mod pages;
pub mod protocol;
pub mod server;
pub mod store;
pub mod telemetry;
