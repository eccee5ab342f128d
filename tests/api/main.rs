//! Black-box tests of the `handler` binary: a real Redis, a real SMTP server, and requests
//! shaped exactly as the Functions host sends them (see `docs/PROTOCOL.md`).

mod cluster;
mod cluster_tls;
mod create_user;
mod health;
mod helpers;
mod lifecycle;
mod limits;
mod protocol;
mod redis_entra;
mod redis_limits;
mod redis_markers;
mod replication;
mod root;
mod send_onboarding;
mod send_onboarding_faults;
mod sign_in;
mod sign_out;
mod verify_email;
mod verify_email_resend;
