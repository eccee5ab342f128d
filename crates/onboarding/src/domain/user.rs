//! A user as stored: who they are, when they joined, and whether their email went out.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

use super::{UserEmail, UserName};

/// A user's opaque, random identifier: the token subject and the store key, never the email,
/// so a token reveals nothing about the person.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct UserId(Uuid);

impl UserId {
    /// A fresh random id (UUID v4).
    pub fn new() -> Self {
        Self(Uuid::new_v4())
    }
}

impl Default for UserId {
    fn default() -> Self {
        Self::new()
    }
}

impl FromStr for UserId {
    type Err = uuid::Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Uuid::parse_str(s).map(Self)
    }
}

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.hyphenated().fmt(f)
    }
}

/// A registered user. The password hash is an argon2id PHC string; the password itself is never
/// kept.
#[derive(Debug, Clone)]
pub struct User {
    pub id: UserId,
    pub name: UserName,
    pub email: UserEmail,
    pub created_at: OffsetDateTime,
    pub password_hash: String,
}

impl User {
    /// The creation time as the API writes it: RFC 3339 in UTC, to the second.
    pub fn created_at_rfc3339(&self) -> String {
        rfc3339(self.created_at)
    }
}

/// Formats a time as RFC 3339 in UTC with whole seconds, e.g. `2026-11-24T13:02:00Z`.
pub fn rfc3339(at: OffsetDateTime) -> String {
    let at = at
        .to_offset(time::UtcOffset::UTC)
        .replace_nanosecond(0)
        .unwrap_or(at);
    at.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| at.unix_timestamp().to_string())
}
