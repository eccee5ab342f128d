//! The user record as Redis stores it: JSON, its text borrowed from the reply where it can be.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::StoreError;
use crate::domain::{User, UserEmail, UserId, UserName};

/// The user record as stored in Redis. Its text fields borrow from the reply (or, when writing,
/// from the user) unless the JSON escaped them.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct StoredUser<'a> {
    id: UserId,
    #[serde(borrow)]
    name: Cow<'a, str>,
    #[serde(borrow)]
    email: Cow<'a, str>,
    #[serde(with = "time::serde::rfc3339")]
    created_at: OffsetDateTime,
    #[serde(borrow)]
    password_hash: Cow<'a, str>,
}

impl<'a> StoredUser<'a> {
    pub(super) fn from_user(user: &'a User) -> Self {
        Self {
            id: user.id,
            name: Cow::Borrowed(user.name.as_str()),
            email: Cow::Borrowed(user.email.as_str()),
            created_at: user.created_at,
            password_hash: Cow::Borrowed(&user.password_hash),
        }
    }

    pub(super) fn into_user(self) -> Result<User, StoreError> {
        let corrupt =
            |what: &str| StoreError::Corrupt(format!("user {} has an invalid {what}", self.id));
        Ok(User {
            id: self.id,
            name: UserName::parse(&self.name).map_err(|_| corrupt("name"))?,
            email: UserEmail::parse(&self.email).map_err(|_| corrupt("email"))?,
            created_at: self.created_at,
            password_hash: self.password_hash.into_owned(),
        })
    }
}

/// Reads a stored user record.
pub(super) fn parse_user(json: &str) -> Result<User, StoreError> {
    serde_json::from_str::<StoredUser>(json)
        .map_err(|e| StoreError::Corrupt(format!("a user record is not valid JSON: {e}")))?
        .into_user()
}
