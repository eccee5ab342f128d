//! The client's response from a function's HTTP output (`Outputs.res`), read as the host reads
//! it (azure-functions-host `Workers/Http/HttpScriptInvocationResultExtensions.cs`, then the HTTP
//! binding): `statusCode` a number or numeric string (anything else: 200; `status` ignored), one
//! value per header name, the body's exact bytes, text/plain without a Content-Type.

use bytes::Bytes;
use serde_json::Value;
use warp::http::{HeaderName, HeaderValue, Response, StatusCode};

use super::client::Answer;
pub(crate) use super::error::HttpOutputError;
use super::function_json::{FunctionDef, OutputKind};
use super::lookup;

/// Content type of a response body the handler gave without one, as the host sends it.
pub(crate) const DEFAULT_CONTENT_TYPE: &str = "text/plain; charset=utf-8";

/// The response for the function's HTTP output: `Ok(None)` when the function has none;
/// `Err(why)` when the output cannot be read (the host then fails the invocation before any
/// output is bound). An HTTP output left unset is an empty 200.
pub(crate) fn response(
    function: &FunctionDef,
    answer: &Answer,
) -> Result<Option<Response<Bytes>>, HttpOutputError> {
    let Some(binding) = function.outputs.iter().find(|o| o.kind == OutputKind::Http) else {
        return Ok(None);
    };
    let res = match answer.output(&binding.name) {
        None | Some(Value::Null) => return Ok(Some(empty(StatusCode::OK))),
        Some(Value::Object(map)) => map.clone(),
        // The host parses the output's text: a string holding a JSON object works too.
        Some(Value::String(text)) => match serde_json::from_str::<Value>(text) {
            Ok(Value::Object(map)) => map,
            _ => return Err(HttpOutputError::StringNotAnObject),
        },
        Some(other) => return Err(HttpOutputError::NotAnObject(other.clone())),
    };
    let field = |name: &str| lookup::get(&res, name).filter(|v| !v.is_null());
    let status = status(function, field("statusCode"))?;
    let body = match field("body") {
        None => Bytes::new(),
        Some(Value::String(s)) => Bytes::from(s.clone()),
        // Newtonsoft writes a JObject body indented; the content type stays text/plain.
        Some(other @ (Value::Object(_) | Value::Array(_))) => {
            Bytes::from(serde_json::to_string_pretty(other).unwrap_or_default())
        }
        Some(other) => Bytes::from(other.to_string()),
    };
    let mut response = Response::new(body);
    *response.status_mut() = status;
    if let Some(headers) = field("headers") {
        set_headers(function, &mut response, headers)?;
    }
    if !response
        .headers()
        .contains_key(warp::http::header::CONTENT_TYPE)
        && !response.body().is_empty()
    {
        response.headers_mut().insert(
            warp::http::header::CONTENT_TYPE,
            HeaderValue::from_static(DEFAULT_CONTENT_TYPE),
        );
    }
    Ok(Some(response))
}

/// `statusCode`: a number or numeric string; anything else is 200, as the host reads it.
fn status(
    function: &FunctionDef,
    status_code: Option<&Value>,
) -> Result<StatusCode, HttpOutputError> {
    let status = match status_code {
        Some(Value::Number(n)) => n
            .as_u64()
            .ok_or_else(|| HttpOutputError::NotAStatus(n.clone()))?,
        Some(Value::String(s)) => match s.trim().parse::<u64>() {
            Ok(n) => n,
            Err(_) => {
                tracing::warn!(
                    "{}: statusCode {s:?} is not a number: the host answers 200",
                    function.name
                );
                200
            }
        },
        None => 200,
        Some(other) => {
            tracing::warn!(
                "{}: statusCode {other} is not a number: the host answers 200",
                function.name
            );
            200
        }
    };
    u16::try_from(status)
        .ok()
        .and_then(|s| StatusCode::from_u16(s).ok())
        .ok_or(HttpOutputError::NotAnHttpStatus(status))
}

/// `headers`: one value per name (names compared ignoring case, the first kept).
fn set_headers(
    function: &FunctionDef,
    response: &mut Response<Bytes>,
    headers: &Value,
) -> Result<(), HttpOutputError> {
    let Value::Object(headers) = headers else {
        return Err(HttpOutputError::HeadersNotAnObject);
    };
    for (name, value) in headers {
        let text = match value {
            Value::Null => continue,
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        let name = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| HttpOutputError::InvalidHeaderName(name.clone()))?;
        let value = HeaderValue::from_str(&text)
            .map_err(|_| HttpOutputError::InvalidHeaderValue(name.clone()))?;
        // One value per name: the host's header dictionary ignores case, so a second
        // spelling of a name is dropped (and with it any second Set-Cookie).
        if response.headers().contains_key(&name) {
            tracing::warn!(
                "{}: Outputs.res.headers sets {name} twice (names differ only in case): the \
                 host keeps one value per header name, so this one is dropped",
                function.name
            );
            continue;
        }
        response.headers_mut().insert(name, value);
    }
    Ok(())
}

/// A response with a status and nothing else.
pub(crate) fn empty(status: StatusCode) -> Response<Bytes> {
    let mut response = Response::new(Bytes::new());
    *response.status_mut() = status;
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::function_json::{OutputBinding, Trigger};
    use serde_json::json;

    fn function() -> FunctionDef {
        FunctionDef {
            name: "createUser".into(),
            trigger: Trigger::Http {
                binding: "req".into(),
                methods: None,
                route: "createUser".into(),
            },
            outputs: vec![OutputBinding {
                name: "res".into(),
                kind: OutputKind::Http,
            }],
        }
    }

    fn answer(res: Value) -> Answer {
        Answer::from_slice(json!({"Outputs": {"res": res}}).to_string().as_bytes()).unwrap()
    }

    fn map(res: Value) -> Response<Bytes> {
        response(&function(), &answer(res)).unwrap().unwrap()
    }

    #[test]
    fn status_headers_and_exact_body_are_mapped() {
        let r = map(
            json!({"statusCode": 302, "headers": {"Location": "/createUser"}, "body": "moved"}),
        );
        assert_eq!(r.status(), 302);
        assert_eq!(r.headers()["location"], "/createUser");
        assert_eq!(r.headers()["content-type"], DEFAULT_CONTENT_TYPE);
        assert_eq!(r.body().as_ref(), b"moved");
    }

    #[test]
    fn a_numeric_string_status_works_and_status_is_ignored() {
        let r = map(
            json!({"statusCode": "201", "status": 500, "body": "{}", "headers": {"Content-Type": "application/json"}}),
        );
        assert_eq!(r.status(), 201);
        assert_eq!(r.headers()["content-type"], "application/json");
    }

    #[test]
    fn a_non_numeric_status_is_200() {
        assert_eq!(map(json!({"statusCode": "abc"})).status(), 200);
        assert_eq!(map(json!({"statusCode": true})).status(), 200);
    }

    #[test]
    fn one_value_per_header_name_so_one_set_cookie() {
        let r = map(json!({"headers": {"Set-Cookie": "a=1", "set-cookie": "b=2", "X-A": "1"}}));
        let cookies: Vec<_> = r.headers().get_all("set-cookie").iter().collect();
        assert_eq!(cookies, vec!["a=1"]);
        assert_eq!(r.headers()["x-a"], "1");
    }

    #[test]
    fn an_object_body_is_indented_json_as_text_plain() {
        let r = map(json!({"body": {"a": 1, "b": [true]}}));
        assert_eq!(r.headers()["content-type"], DEFAULT_CONTENT_TYPE);
        assert_eq!(
            std::str::from_utf8(r.body()).unwrap(),
            "{\n  \"a\": 1,\n  \"b\": [\n    true\n  ]\n}"
        );
    }

    #[test]
    fn no_http_output_is_an_empty_200() {
        let none = Answer::from_slice(br#"{"Outputs": {}}"#).unwrap();
        let r = response(&function(), &none).unwrap().unwrap();
        assert_eq!(r.status(), 200);
        assert!(r.body().is_empty());
        assert!(r.headers().get("content-type").is_none());
    }

    #[test]
    fn a_broken_http_output_is_an_error() {
        assert!(response(&function(), &answer(json!({"statusCode": 99999}))).is_err());
        assert!(response(&function(), &answer(json!({"headers": {"Bad Name": "x"}}))).is_err());
        assert!(response(&function(), &answer(json!("not json"))).is_err());
        assert!(response(&function(), &answer(json!([1]))).is_err());
    }
}
