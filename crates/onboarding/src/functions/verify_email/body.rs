//! What a `POST /verifyEmail` carries: the link's `token` (confirm), or nothing but, from the
//! welcome page's form, the anti-forgery `csrf` field (ask for a new link). JSON or a form.

use serde_json::Value;

use crate::functions::body::{FORM, FORM_TOKEN_FIELD};
use crate::functions::http;
use crate::protocol::HttpRequest;

/// Why the body cannot be read; each is a 4xx.
#[derive(Debug, thiserror::Error)]
pub(super) enum BodyError {
    #[error("the request body is too large")]
    TooLarge,
    #[error("unsupported media type {0:?}")]
    UnsupportedMediaType(Option<String>),
    #[error("malformed body: {0}")]
    Malformed(String),
}

/// The fields a `POST /verifyEmail` may carry.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct VerifyBody {
    /// The link's token: confirm the address.
    pub token: Option<String>,
    /// The anti-forgery token of the welcome page's "send the link again" form.
    pub form_token: Option<String>,
}

impl VerifyBody {
    /// Reads a JSON object or a form; an empty body carries nothing (a bearer client asking for
    /// a new link).
    pub(super) fn read(request: &HttpRequest) -> Result<Self, BodyError> {
        let body = request.body.as_deref().unwrap_or("");
        if body.len() > http::MAX_BODY_BYTES {
            return Err(BodyError::TooLarge);
        }
        if body.trim().is_empty() {
            return Ok(Self::default());
        }
        match http::media_type(request) {
            Some(media) if http::is_json(&media) => Self::from_json(body),
            Some(media) if media == FORM => Ok(Self::from_form(body)),
            other => Err(BodyError::UnsupportedMediaType(other)),
        }
    }

    fn from_json(body: &str) -> Result<Self, BodyError> {
        let value: Value =
            serde_json::from_str(body).map_err(|e| BodyError::Malformed(e.to_string()))?;
        let Value::Object(fields) = value else {
            return Err(BodyError::Malformed("not a JSON object".to_owned()));
        };
        let text = |name: &str| match fields.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone()).filter(|s| !s.is_empty())),
            Some(_) => Err(BodyError::Malformed(format!("{name} is not a string"))),
        };
        Ok(Self {
            token: text("token")?,
            form_token: text(FORM_TOKEN_FIELD)?,
        })
    }

    fn from_form(body: &str) -> Self {
        let mut read = Self::default();
        for (name, value) in url::form_urlencoded::parse(body.as_bytes()) {
            let slot = match name.as_ref() {
                "token" => &mut read.token,
                FORM_TOKEN_FIELD => &mut read.form_token,
                _ => continue,
            };
            if slot.is_none() && !value.is_empty() {
                *slot = Some(value.into_owned());
            }
        }
        read
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::Headers;

    fn post(content_type: &str, body: &str) -> HttpRequest {
        HttpRequest {
            method: "POST".to_owned(),
            headers: Headers::from_pairs([("Content-Type", content_type)]),
            body: Some(body.to_owned()),
            ..HttpRequest::default()
        }
    }

    #[test]
    fn a_form_carries_the_token_and_the_first_of_repeated_fields_wins() {
        let read = VerifyBody::read(&post(FORM, "token=a.b&token=c&csrf=x")).unwrap();
        assert_eq!(read.token.as_deref(), Some("a.b"));
        assert_eq!(read.form_token.as_deref(), Some("x"));
    }

    #[test]
    fn an_empty_body_asks_for_a_new_link() {
        let read = VerifyBody::read(&post("application/json", "")).unwrap();
        assert_eq!(read, VerifyBody::default());
        assert_eq!(
            VerifyBody::read(&post("application/json", "{}")).unwrap(),
            VerifyBody::default()
        );
    }

    #[test]
    fn a_token_that_is_not_a_string_is_malformed() {
        assert!(matches!(
            VerifyBody::read(&post("application/json", r#"{"token":5}"#)),
            Err(BodyError::Malformed(_))
        ));
        assert!(matches!(
            VerifyBody::read(&post("application/json", "[]")),
            Err(BodyError::Malformed(_))
        ));
    }

    #[test]
    fn text_is_an_unsupported_media_type() {
        assert!(matches!(
            VerifyBody::read(&post("text/plain", "token=x")),
            Err(BodyError::UnsupportedMediaType(_))
        ));
    }
}
