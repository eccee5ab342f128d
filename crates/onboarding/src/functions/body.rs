//! Reading a form's fields from a request body: a JSON object, or an HTML form post.

use serde_json::{Map, Value};

use super::http;
use crate::protocol::{HttpRequest, HttpResponse};

/// The media type of an HTML form post.
pub const FORM: &str = "application/x-www-form-urlencoded";

/// The hidden field of a signed-in page's forms that holds the anti-forgery token (its value is
/// [`FormTokens::issue`](crate::auth::FormTokens::issue) for the form's purpose).
pub const FORM_TOKEN_FIELD: &str = "csrf";

/// Why a body could not be read as fields; each is the client's fault.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("the request body is too large")]
    TooLarge,
    #[error("unsupported media type {0:?}")]
    UnsupportedMediaType(Option<String>),
    #[error("the body is not valid JSON: {0}")]
    MalformedJson(String),
    #[error("a JSON body was sent as a form")]
    JsonSentAsForm,
}

impl BodyError {
    /// The answer, naming what was sent (`the sign-up`) and the fields it needs.
    pub fn into_response(self, what: &str, fields: &str) -> HttpResponse {
        match self {
            Self::TooLarge => http::content_too_large(),
            Self::UnsupportedMediaType(got) => unsupported_media_type(&format!(
                "Send {what} as application/json or {FORM} (got {}).",
                got.as_deref().unwrap_or("no Content-Type")
            )),
            // `curl -d '{…}'` sends exactly this: say the one thing to change.
            Self::JsonSentAsForm => unsupported_media_type(&format!(
                "The body is JSON but was sent as {FORM}: send it with the header \
                 Content-Type: application/json."
            )),
            Self::MalformedJson(why) => http::problem(
                400,
                "urn:onboarding:problem:malformed-body",
                "Malformed request body",
                &format!("The body must be a JSON object with {fields}: {why}."),
                None,
            ),
        }
    }
}

/// Reads the body into named fields: a JSON object as it is, a form as text fields (the first of
/// repeated names wins).
pub fn read_fields(request: &HttpRequest) -> Result<Map<String, Value>, BodyError> {
    let body = request.body.as_deref().unwrap_or("");
    if body.len() > http::MAX_BODY_BYTES {
        return Err(BodyError::TooLarge);
    }
    match http::media_type(request) {
        Some(media) if media == FORM => {
            if looks_like_json_object(body) {
                return Err(BodyError::JsonSentAsForm);
            }
            let mut fields = Map::new();
            for (name, value) in url::form_urlencoded::parse(body.as_bytes()) {
                fields
                    .entry(name.into_owned())
                    .or_insert(Value::String(value.into_owned()));
            }
            Ok(fields)
        }
        Some(media) if http::is_json(&media) => match serde_json::from_str::<Value>(body) {
            Ok(Value::Object(fields)) => Ok(fields),
            Ok(_) => Err(BodyError::MalformedJson("it is not an object".to_owned())),
            Err(e) => Err(BodyError::MalformedJson(e.to_string())),
        },
        other => Err(BodyError::UnsupportedMediaType(other)),
    }
}

/// A body that is plainly a JSON object, whatever its declared type.
fn looks_like_json_object(body: &str) -> bool {
    body.trim_start().starts_with('{') && serde_json::from_str::<Map<String, Value>>(body).is_ok()
}

/// 415 with the media types a form may use (`Accept-Post`, RFC 9110 § 15.5.16).
fn unsupported_media_type(detail: &str) -> HttpResponse {
    http::problem(415, "about:blank", "Unsupported Media Type", detail, None)
        .header("Accept-Post", format!("application/json, {FORM}"))
}
