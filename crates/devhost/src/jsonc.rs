//! The host's lenient JSON: `//` and `/* */` comments and a byte-order mark are allowed, and
//! object keys are matched case-insensitively as .NET configuration does.

use std::path::Path;

use serde_json::Value;

use super::app_error::AppDirError;
use super::lookup;

/// Parses JSON the host's lenient way: `//` and `/* */` comments are allowed.
pub(crate) fn parse_json(path: &Path, text: &str) -> Result<Value, AppDirError> {
    parse(text).map_err(|source| AppDirError::Json {
        path: path.to_owned(),
        source,
    })
}

/// Parses JSON with comments and an optional byte-order mark.
pub(crate) fn parse(text: &str) -> Result<Value, serde_json::Error> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    serde_json::from_str(&strip_comments(text))
}

/// Removes JSON comments outside strings (blanking them keeps error positions right).
fn strip_comments(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    let mut in_string = false;
    while let Some(c) = chars.next() {
        if in_string {
            out.push(c);
            if c == '\\' {
                if let Some(next) = chars.next() {
                    out.push(next);
                }
            } else if c == '"' {
                in_string = false;
            }
            continue;
        }
        match (c, chars.peek()) {
            ('"', _) => {
                in_string = true;
                out.push(c);
            }
            ('/', Some('/')) => {
                for c in chars.by_ref() {
                    if c == '\n' {
                        out.push('\n');
                        break;
                    }
                    out.push(' ');
                }
            }
            ('/', Some('*')) => {
                chars.next();
                out.push_str("  ");
                let mut prev = ' ';
                for c in chars.by_ref() {
                    out.push(if c == '\n' { '\n' } else { ' ' });
                    if prev == '*' && c == '/' {
                        break;
                    }
                    prev = c;
                }
            }
            _ => out.push(c),
        }
    }
    out
}

pub(crate) fn get_path<'a>(root: &'a Value, path: &[&str]) -> Option<&'a Value> {
    path.iter().try_fold(root, |value, key| match value {
        Value::Object(map) => lookup::json_field(map, key),
        _ => None,
    })
}
