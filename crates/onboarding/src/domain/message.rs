//! The queue message that asks for an onboarding email: what createUser emits and
//! sendOnboarding consumes.

use serde::{Deserialize, Serialize};

use super::{User, UserEmail, UserId, UserName};

/// The only message type this queue carries today.
pub const MESSAGE_TYPE: &str = "user.created";
/// The message schema version; a consumer refuses versions it does not know.
pub const MESSAGE_VERSION: u32 = 1;

/// Why a message body cannot be acted on; such a message can never succeed and belongs in the
/// dead-letter queue.
#[derive(Debug, thiserror::Error)]
pub enum MessageError {
    #[error("message is not a JSON object of the expected shape: {0}")]
    Shape(#[from] serde_json::Error),
    #[error("message type {0:?} is not {MESSAGE_TYPE:?}")]
    Type(String),
    #[error("message version {0} is not supported (expected {MESSAGE_VERSION})")]
    Version(u32),
    #[error("message field {field} is invalid: {why}")]
    Field { field: &'static str, why: String },
}

/// `{"type":"user.created","version":1,"userId","email","name","createdAt"}`: sent as a JSON
/// object, because the host base64-decodes output strings that happen to look like base64.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OnboardingMessage {
    #[serde(rename = "type")]
    pub kind: String,
    pub version: u32,
    pub user_id: String,
    pub email: String,
    pub name: String,
    pub created_at: String,
}

/// A message whose fields have been checked, ready for the sender.
#[derive(Debug, Clone)]
pub struct ValidMessage {
    pub user_id: UserId,
    pub email: UserEmail,
    pub name: UserName,
}

impl OnboardingMessage {
    /// The message announcing a new user.
    pub fn for_user(user: &User) -> Self {
        Self {
            kind: MESSAGE_TYPE.to_owned(),
            version: MESSAGE_VERSION,
            user_id: user.id.to_string(),
            email: user.email.as_str().to_owned(),
            name: user.name.as_str().to_owned(),
            created_at: user.created_at_rfc3339(),
        }
    }

    /// Parses and checks a message body (the JSON text of the Service Bus message).
    pub fn parse(body: &serde_json::Value) -> Result<ValidMessage, MessageError> {
        let message = Self::deserialize(body)?;
        if message.kind != MESSAGE_TYPE {
            return Err(MessageError::Type(message.kind));
        }
        if message.version != MESSAGE_VERSION {
            return Err(MessageError::Version(message.version));
        }
        let field = |field, why: String| MessageError::Field { field, why };
        Ok(ValidMessage {
            user_id: message
                .user_id
                .parse()
                .map_err(|e: uuid::Error| field("userId", e.to_string()))?,
            email: UserEmail::parse(&message.email).map_err(|e| field("email", e.to_string()))?,
            name: UserName::parse(&message.name).map_err(|e| field("name", e.to_string()))?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn body() -> serde_json::Value {
        json!({"type": "user.created", "version": 1,
               "userId": "2f1c7a8e-3b1a-4a59-9b0e-6c0f3f5b9d11",
               "email": "ada@example.com", "name": "Ada", "createdAt": "2026-11-24T13:02:00Z"})
    }

    #[test]
    fn a_well_formed_message_is_accepted() {
        let message = OnboardingMessage::parse(&body()).unwrap();
        assert_eq!(message.email.as_str(), "ada@example.com");
    }

    #[test]
    fn an_unknown_version_is_refused() {
        let mut body = body();
        body["version"] = json!(2);
        assert!(matches!(
            OnboardingMessage::parse(&body),
            Err(MessageError::Version(2))
        ));
    }

    #[test]
    fn a_name_with_a_line_break_is_refused() {
        let mut body = body();
        body["name"] = json!("Ada\r\nBcc: eve@example.com");
        assert!(matches!(
            OnboardingMessage::parse(&body),
            Err(MessageError::Field { field: "name", .. })
        ));
    }

    #[test]
    fn a_bare_string_is_refused() {
        assert!(matches!(
            OnboardingMessage::parse(&json!("hello")),
            Err(MessageError::Shape(_))
        ));
    }
}
