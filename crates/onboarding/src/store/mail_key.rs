//! Which email a send claim is for.

use std::time::Duration;

use uuid::Uuid;

use crate::domain::UserId;

/// How long the marker of a verification email is kept once it is settled: longer than a queue
/// message could still be redelivered (it is dead-lettered after 10 deliveries of at most
/// minutes each), and as long as the link in it works, so a stale redelivery never sends twice.
pub const VERIFICATION_MARKER_TTL: Duration = Duration::from_secs(14 * 24 * 3600);

/// An email that is sent exactly once: each has its own marker (claim, then sent or
/// undeliverable), so redeliveries and concurrent deliveries of its queue message send it once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mail {
    /// The user's welcome email; its marker is the profile's `onboarding` status, kept forever.
    Welcome(UserId),
    /// One verification email the user asked for, named by the request's own id (the queue
    /// message carries it); its marker expires after [`VERIFICATION_MARKER_TTL`].
    Verification { user: UserId, request: Uuid },
}

impl Mail {
    /// Whose email it is.
    pub fn user(&self) -> UserId {
        match *self {
            Self::Welcome(user) | Self::Verification { user, .. } => user,
        }
    }

    /// How long a settled marker is kept: `None` for forever.
    pub fn settled_ttl(&self) -> Option<Duration> {
        match self {
            Self::Welcome(_) => None,
            Self::Verification { .. } => Some(VERIFICATION_MARKER_TTL),
        }
    }
}
