//! The queue messages that ask for an email: what createUser (the welcome email) and verifyEmail
//! (a new verification link) emit, and sendOnboarding consumes.

use serde::{Deserialize, Serialize};

use super::{User, UserEmail, UserId, UserName};

/// The message asking for a new user's welcome email.
pub const MESSAGE_TYPE: &str = "user.created";
/// The message asking for one more verification email; it carries its own `requestId`, which
/// names the email's send claim, so each request sends once however often it is delivered.
pub const VERIFICATION_MESSAGE_TYPE: &str = "email.verification";
/// The message schema version; a consumer refuses versions it does not know.
pub const MESSAGE_VERSION: u32 = 1;

/// Why a message body cannot be acted on; such a message can never succeed and belongs in the
/// dead-letter queue.
#[derive(Debug, thiserror::Error)]
pub enum MessageError {
    #[error("message is not a JSON object of the expected shape: {0}")]
    Shape(#[from] serde_json::Error),
    #[error("message type {0:?} is neither {MESSAGE_TYPE:?} nor {VERIFICATION_MESSAGE_TYPE:?}")]
    Type(String),
    #[error("message version {0} is not supported (expected {MESSAGE_VERSION})")]
    Version(u32),
    #[error("message field {field} is invalid: {why}")]
    Field { field: &'static str, why: String },
}

/// `{"type":"user.created","version":1,"userId","email","name","createdAt"}`, or the same with
/// `"type":"email.verification"` and a `requestId`: sent as a JSON object, because the host
/// base64-decodes output strings that happen to look like base64.
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
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}

/// A message whose fields have been checked, ready for the sender.
#[derive(Debug, Clone)]
pub struct ValidMessage {
    pub user_id: UserId,
    pub email: UserEmail,
    pub name: UserName,
    /// `None` for the welcome email; the request's id for a verification email.
    pub verification_request: Option<uuid::Uuid>,
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
            request_id: None,
        }
    }

    /// The message asking for one more verification email, under a fresh request id.
    pub fn verification_for(user: &User) -> Self {
        Self {
            kind: VERIFICATION_MESSAGE_TYPE.to_owned(),
            request_id: Some(uuid::Uuid::new_v4().to_string()),
            ..Self::for_user(user)
        }
    }

    /// Parses and checks a message body (the JSON text of the Service Bus message).
    pub fn parse(body: &serde_json::Value) -> Result<ValidMessage, MessageError> {
        let message = Self::deserialize(body)?;
        if message.version != MESSAGE_VERSION {
            return Err(MessageError::Version(message.version));
        }
        let field = |field, why: String| MessageError::Field { field, why };
        let verification_request = match message.kind.as_str() {
            MESSAGE_TYPE => None,
            VERIFICATION_MESSAGE_TYPE => Some(
                message
                    .request_id
                    .as_deref()
                    .ok_or_else(|| field("requestId", "missing".to_owned()))?
                    .parse()
                    .map_err(|e: uuid::Error| field("requestId", e.to_string()))?,
            ),
            _ => return Err(MessageError::Type(message.kind)),
        };
        Ok(ValidMessage {
            verification_request,
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
    fn a_verification_message_carries_its_request_id() {
        let mut body = body();
        body["type"] = json!("email.verification");
        assert!(matches!(
            OnboardingMessage::parse(&body),
            Err(MessageError::Field {
                field: "requestId",
                ..
            })
        ));
        body["requestId"] = json!("7d0e6f4c-9a43-4a8e-8f57-2b1f3f1d2c3b");
        let message = OnboardingMessage::parse(&body).unwrap();
        assert_eq!(
            message.verification_request.unwrap().to_string(),
            "7d0e6f4c-9a43-4a8e-8f57-2b1f3f1d2c3b"
        );
    }

    #[test]
    fn a_bare_string_is_refused() {
        assert!(matches!(
            OnboardingMessage::parse(&json!("hello")),
            Err(MessageError::Shape(_))
        ));
    }
}
