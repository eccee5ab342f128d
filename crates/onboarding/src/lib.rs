//! onboarding: a sign-up service that runs as an Azure Functions custom handler.
//!
//! # Layout
//!
//! A request flows one way: client → host (or [`devhost`]) → [`protocol`] → [`functions`] →
//! [`domain`] → [`store`] / [`mail`], and back out as one invocation envelope.
//!
//! - [`config`]: settings from the environment, validated together at start.
//! - [`protocol`]: the host's invocation envelope, decoded leniently, and the answer it expects.
//! - [`server`]: the handler's HTTP surface (readiness ping, `POST /<function>`), on warp.
//! - [`functions`]: one module per function, and the single declaration of all four.
//! - [`domain`]: types that can only hold valid values (name, email, password, user, message).
//! - [`auth`]: password hashing (argon2id, bounded) and session tokens (JWT).
//! - [`store`]: where users and onboarding markers live: Redis, or memory for local runs.
//! - [`mail`]: the onboarding email and the ways to send it: SMTP, or `.eml` files for local runs.
//! - [`pages`]: the browser's pages (sign-up form, welcome), escaped and under a strict CSP.
//! - [`devhost`]: `handler dev`, a local stand-in for the Functions host. It uses the product
//!   (the app, its settings, the server) exactly as the host would; nothing in the product uses
//!   it, so dependencies run one way: domain ← store, mail, auth ← functions ← server ← devhost.
//! - [`telemetry`]: logs to stdout, and each invocation's own lines for the host's `Logs`.

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
