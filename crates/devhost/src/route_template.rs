//! Route templates as the Functions host (ASP.NET Core routing) reads them: literals, `{name}`,
//! `{name?}`, `{name=default}`, `{name:constraint}` and `{*rest}`, matched case-insensitively
//! against a request path's decoded segments. A template we cannot honour is an error at start,
//! never a silent miss.

use super::lookup;
pub(crate) use super::route_constraint::{Constraint, ParameterError};

/// Why a route template cannot be served; reported at start with the function's name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum RouteError {
    #[error("route {template:?}: {problem}")]
    Unsupported { template: String, problem: String },
    #[error("route {template:?}: {problem}")]
    Invalid { template: String, problem: String },
    #[error(
        "functions {first} and {second} both serve {template:?} for {method}: the host refuses such a conflict"
    )]
    Conflict {
        first: String,
        second: String,
        template: String,
        method: String,
    },
}

/// A parameter segment: `{name}`, `{name?}`, `{name=default}`, with constraints.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Parameter {
    /// The route value's name (a key of `Params`).
    pub name: String,
    /// `{name?}`, or a catch-all: the segment may be absent (its value is then null).
    pub optional: bool,
    /// `{name=value}`: the value used when the segment is absent.
    pub default: Option<String>,
    /// Every one must accept the value for the route to match.
    pub constraints: Vec<Constraint>,
}

/// One `/`-separated piece of a template.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Segment {
    /// Matched case-insensitively against the decoded request segment.
    Literal(String),
    Parameter(Parameter),
    /// `{*rest}` or `{**rest}`: the rest of the path, possibly empty; always last.
    CatchAll(Parameter),
}

/// A parsed route template, with the route prefix already in front.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct RouteTemplate {
    text: String,
    segments: Vec<Segment>,
}

/// Route values of a match, in template order; `None` for an optional value that was absent
/// (sent to the handler as `null`, as the host does: `{"ignored": null}`).
pub(crate) type RouteValues = Vec<(String, Option<String>)>;

impl RouteTemplate {
    /// Parses `prefix` (literal segments only) followed by a function's `route` template.
    pub(crate) fn parse(prefix: &str, route: &str) -> Result<Self, RouteError> {
        let route = route
            .trim()
            .trim_start_matches("~/")
            .trim_start_matches('/');
        let prefix = prefix.trim().trim_matches('/');
        let text = match (prefix.is_empty(), route.is_empty()) {
            (true, _) => route.to_owned(),
            (false, true) => prefix.to_owned(),
            (false, false) => format!("{prefix}/{route}"),
        };
        let invalid = |problem: String| RouteError::Invalid {
            template: text.clone(),
            problem,
        };
        let unsupported = |problem: String| RouteError::Unsupported {
            template: text.clone(),
            problem,
        };
        if prefix.contains(['{', '}']) {
            return Err(unsupported(
                "the host's routePrefix must be literal segments".to_owned(),
            ));
        }
        if text.contains('?') && !text.contains('{') {
            return Err(invalid(
                "a route may not contain '?' outside a parameter".to_owned(),
            ));
        }
        let mut segments = Vec::new();
        let pieces: Vec<&str> = if text.is_empty() {
            Vec::new()
        } else {
            text.split('/').collect()
        };
        for (index, &piece) in pieces.iter().enumerate() {
            if piece.is_empty() {
                return Err(invalid(
                    "a route may not contain an empty segment (//)".to_owned(),
                ));
            }
            let segment = if let Some(inner) =
                piece.strip_prefix('{').and_then(|p| p.strip_suffix('}'))
            {
                if inner.contains(['{', '}']) {
                    return Err(unsupported(format!(
                        "segment {piece:?} mixes several parameters; only whole-segment parameters are supported"
                    )));
                }
                parse_parameter(inner).map_err(|p| invalid(format!("{piece}: {p}")))?
            } else if piece.contains(['{', '}']) {
                return Err(unsupported(format!(
                    "segment {piece:?} mixes literal text and parameters (complex segments are not supported by handler dev)"
                )));
            } else {
                Segment::Literal(piece.to_owned())
            };
            if matches!(segment, Segment::CatchAll(_)) && index + 1 != pieces.len() {
                return Err(invalid(
                    "a catch-all parameter must be the last segment".to_owned(),
                ));
            }
            segments.push(segment);
        }
        check_segments(&text, &segments)?;
        Ok(Self { text, segments })
    }

    /// The template as written, prefix included.
    pub(crate) fn text(&self) -> &str {
        &self.text
    }

    /// A path to show in the banner: literals and `{name}`, stopping before optional parts, so the
    /// root function shows as `/`.
    pub(crate) fn display_path(&self) -> String {
        let mut parts = Vec::new();
        for segment in &self.segments {
            match segment {
                Segment::Literal(l) => parts.push(l.clone()),
                Segment::Parameter(p) if !p.optional && p.default.is_none() => {
                    parts.push(format!("{{{}}}", p.name));
                }
                _ => break,
            }
        }
        format!("/{}", parts.join("/"))
    }

    /// Matches decoded request path segments; returns the route values on success.
    pub(crate) fn matches(&self, path: &[String]) -> Option<RouteValues> {
        let mut values = Vec::new();
        let mut rest = path;
        for segment in &self.segments {
            match segment {
                Segment::Literal(literal) => {
                    let (first, tail) = rest.split_first()?;
                    if !eq_ignore_case(first, literal) {
                        return None;
                    }
                    rest = tail;
                }
                Segment::Parameter(param) => match rest.split_first() {
                    Some((first, tail)) if !first.is_empty() => {
                        if !param.constraints.iter().all(|c| c.accepts(first)) {
                            return None;
                        }
                        values.push((param.name.clone(), Some(first.clone())));
                        rest = tail;
                    }
                    Some(_) => return None,
                    None if param.optional || param.default.is_some() => {
                        values.push((param.name.clone(), param.default.clone()));
                    }
                    None => return None,
                },
                Segment::CatchAll(param) => {
                    let value = rest.join("/");
                    rest = &[];
                    if value.is_empty() {
                        values.push((param.name.clone(), param.default.clone()));
                    } else if param.constraints.iter().all(|c| c.accepts(&value)) {
                        values.push((param.name.clone(), Some(value)));
                    } else {
                        return None;
                    }
                }
            }
        }
        rest.is_empty().then_some(values)
    }

    /// ASP.NET Core's inbound precedence: per segment, literal 1, constrained parameter 3,
    /// parameter 4, constrained catch-all 5, catch-all 6; lower sorts (and wins) first.
    pub(super) fn precedence(&self) -> Vec<u8> {
        self.segments
            .iter()
            .map(|segment| match segment {
                Segment::Literal(_) => 1,
                Segment::Parameter(p) if !p.constraints.is_empty() => 3,
                Segment::Parameter(_) => 4,
                Segment::CatchAll(p) if !p.constraints.is_empty() => 5,
                Segment::CatchAll(_) => 6,
            })
            .collect()
    }
}

/// The rules that span segments: only optional segments after an optional one, and each
/// parameter name once (ignoring case).
fn check_segments(text: &str, segments: &[Segment]) -> Result<(), RouteError> {
    // After an optional segment only optional ones may follow: `{a?}/b` cannot match `/b`
    // the way its author hopes, and the host's matcher treats it inconsistently.
    let mut seen_optional = false;
    for segment in segments {
        let optional = match segment {
            Segment::Literal(_) => false,
            Segment::Parameter(p) => p.optional || p.default.is_some(),
            Segment::CatchAll(_) => true,
        };
        if seen_optional && !optional {
            return Err(RouteError::Unsupported {
                template: text.to_owned(),
                problem: "an optional parameter must be followed only by optional parameters"
                    .to_owned(),
            });
        }
        seen_optional |= optional;
    }
    let mut names: Vec<String> = Vec::new();
    for segment in segments {
        if let Segment::Parameter(p) | Segment::CatchAll(p) = segment {
            if lookup::contains(&names, &p.name) {
                return Err(RouteError::Invalid {
                    template: text.to_owned(),
                    problem: format!("parameter {:?} appears twice", p.name),
                });
            }
            names.push(p.name.clone());
        }
    }
    Ok(())
}

/// Parses the inside of `{…}`.
fn parse_parameter(inner: &str) -> Result<Segment, ParameterError> {
    let (catch_all, inner) = if let Some(rest) = inner.strip_prefix("**") {
        (true, rest)
    } else if let Some(rest) = inner.strip_prefix('*') {
        (true, rest)
    } else {
        (false, inner)
    };
    // Optional marker and default come last: `{name:constraint(…)?}`, `{name=value}`.
    let (inner, optional) = match inner.strip_suffix('?') {
        Some(rest) => (rest, true),
        None => (inner, false),
    };
    // The name ends at the first ':' or '='; a default follows the last '=' outside parentheses.
    let name_end = inner.find([':', '=']).unwrap_or(inner.len());
    let name = &inner[..name_end];
    if name.is_empty() {
        return Err(ParameterError::NoName);
    }
    if name.contains(['/', '?', '*', '(', ')', ' ']) {
        return Err(ParameterError::InvalidName(name.to_owned()));
    }
    let mut rest = &inner[name_end..];
    let mut default = None;
    if let Some(eq) = last_top_level(rest, '=') {
        default = Some(rest[eq + 1..].to_owned());
        rest = &rest[..eq];
    }
    if optional && default.is_some() {
        return Err(ParameterError::OptionalWithDefault);
    }
    let mut constraints = Vec::new();
    if let Some(list) = rest.strip_prefix(':') {
        for text in split_top_level(list, ':') {
            if text.is_empty() {
                return Err(ParameterError::EmptyConstraint);
            }
            constraints.push(Constraint::parse(text)?);
        }
    } else if !rest.is_empty() {
        return Err(ParameterError::Unexpected(rest.to_owned()));
    }
    let param = Parameter {
        name: name.to_owned(),
        optional: optional || catch_all,
        default,
        constraints,
    };
    Ok(if catch_all {
        Segment::CatchAll(param)
    } else {
        Segment::Parameter(param)
    })
}

/// Splits on `sep` outside parentheses, so `range(1,2)` stays whole.
fn split_top_level(text: &str, sep: char) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0usize, 0usize);
    for (i, c) in text.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth = depth.saturating_sub(1),
            c if c == sep && depth == 0 => {
                parts.push(&text[start..i]);
                start = i + c.len_utf8();
            }
            _ => {}
        }
    }
    parts.push(&text[start..]);
    parts
}

fn last_top_level(text: &str, wanted: char) -> Option<usize> {
    let mut depth = 0usize;
    let mut found = None;
    for (i, c) in text.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth = depth.saturating_sub(1),
            c if c == wanted && depth == 0 => found = Some(i),
            _ => {}
        }
    }
    found
}

pub(super) fn eq_ignore_case(a: &str, b: &str) -> bool {
    a.eq_ignore_ascii_case(b) || a.to_lowercase() == b.to_lowercase()
}

/// Splits a raw request path into percent-decoded segments; one trailing slash is ignored, as
/// ASP.NET Core does, so `/createUser/` matches `createUser`.
pub(crate) fn path_segments(raw_path: &str) -> Vec<String> {
    let trimmed = raw_path.strip_prefix('/').unwrap_or(raw_path);
    let trimmed = trimmed.strip_suffix('/').unwrap_or(trimmed);
    if trimmed.is_empty() {
        return Vec::new();
    }
    trimmed.split('/').map(percent_decode).collect()
}

/// `%XX` escapes decoded, read as UTF-8 (invalid sequences replaced); `+` is not a space in a
/// path.
fn percent_decode(segment: &str) -> String {
    percent_encoding::percent_decode_str(segment)
        .decode_utf8_lossy()
        .into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matches(template: &str, path: &str) -> Option<RouteValues> {
        RouteTemplate::parse("", template)
            .unwrap()
            .matches(&path_segments(path))
    }

    fn value(template: &str, path: &str) -> Option<String> {
        matches(template, path).and_then(|v| v.into_iter().next().and_then(|(_, v)| v))
    }
    #[test]
    fn the_route_prefix_comes_first() {
        let template = RouteTemplate::parse("api", "createUser").unwrap();
        assert!(
            template
                .matches(&path_segments("/api/createUser"))
                .is_some()
        );
        assert!(template.matches(&path_segments("/createUser")).is_none());
        let root = RouteTemplate::parse("/api/", "").unwrap();
        assert!(root.matches(&path_segments("/api")).is_some());
    }

    #[test]
    fn path_segments_are_percent_decoded() {
        assert_eq!(
            path_segments("/a%2Fb/c+d/%E2%82%AC/%zz"),
            vec!["a/b", "c+d", "€", "%zz"]
        );
        assert!(path_segments("/").is_empty());
    }

    #[test]
    fn a_parameter_takes_one_decoded_segment() {
        assert_eq!(value("users/{id}", "/users/a%20b"), Some("a b".to_owned()));
        assert_eq!(matches("users/{id}", "/users"), None);
        assert_eq!(matches("users/{id}", "/users/a/b"), None);
    }

    #[test]
    fn an_optional_parameter_may_be_absent_and_is_then_null() {
        assert_eq!(
            matches("users/{id?}", "/users"),
            Some(vec![("id".to_owned(), None)])
        );
        assert_eq!(value("users/{id?}", "/users/7"), Some("7".to_owned()));
    }

    #[test]
    fn a_default_value_fills_an_absent_parameter() {
        assert_eq!(value("page/{n=1}", "/page"), Some("1".to_owned()));
        assert_eq!(value("page/{n=1}", "/page/3"), Some("3".to_owned()));
    }

    #[test]
    fn a_catch_all_takes_the_rest_of_the_path() {
        assert_eq!(
            value("files/{*rest}", "/files/a/b/c"),
            Some("a/b/c".to_owned())
        );
        assert_eq!(
            matches("files/{*rest}", "/files"),
            Some(vec![("rest".to_owned(), None)])
        );
        assert_eq!(value("files/{**rest}", "/files/x"), Some("x".to_owned()));
    }

    #[test]
    fn length_constraints_count_characters() {
        assert!(matches("{c:maxlength(3)}", "/abc").is_some());
        assert!(matches("{c:maxlength(3)}", "/abcd").is_none());
        assert!(matches("{c:minlength(2)}", "/a").is_none());
        assert!(matches("{c:length(2)}", "/ab").is_some());
        assert!(matches("{c:length(2)}", "/abc").is_none());
        assert!(matches("{c:length(1,2)}", "/abc").is_none());
        assert!(matches("{c:length(1,3)}", "/abc").is_some());
    }

    #[test]
    fn numeric_constraints_parse_like_dotnet() {
        assert!(matches("{n:int}", "/-42").is_some());
        assert!(matches("{n:int}", "/4x").is_none());
        assert!(matches("{n:int}", "/3000000000").is_none());
        assert!(matches("{n:long}", "/3000000000").is_some());
        assert!(matches("{n:min(10)}", "/9").is_none());
        assert!(matches("{n:max(10)}", "/10").is_some());
        assert!(matches("{n:range(1,5)}", "/5").is_some());
        assert!(matches("{n:range(1,5)}", "/6").is_none());
        assert!(matches("{n:range(1,5)}", "/x").is_none());
        assert!(matches("{n:double}", "/1.5").is_some());
    }

    #[test]
    fn alpha_bool_and_guid_constraints() {
        assert!(matches("{a:alpha}", "/AbC").is_some());
        assert!(matches("{a:alpha}", "/ab1").is_none());
        assert!(matches("{b:bool}", "/TRUE").is_some());
        assert!(matches("{b:bool}", "/yes").is_none());
        assert!(matches("{g:guid}", "/9c0d2a3e-1b7f-4a51-8d0e-2f1a3c4b5d6e").is_some());
        assert!(matches("{g:guid}", "/9c0d2a3e1b7f4a518d0e2f1a3c4b5d6e").is_some());
        assert!(matches("{g:guid}", "/not-a-guid").is_none());
    }

    #[test]
    fn several_constraints_all_apply() {
        assert!(matches("{n:int:min(3)}", "/4").is_some());
        assert!(matches("{n:int:min(3)}", "/2").is_none());
    }

    #[test]
    fn unsupported_templates_are_errors_at_start() {
        for template in [
            "{id:regex(^a$)}",
            "{when:datetime}",
            "file.{ext}",
            "{a}-{b}",
            "{x:nonsense}",
        ] {
            assert!(
                RouteTemplate::parse("", template).is_err(),
                "{template} should be refused"
            );
        }
    }

    #[test]
    fn malformed_templates_are_errors() {
        for template in [
            "a//b",
            "{*rest}/more",
            "{}",
            "{a}/{A}",
            "{a?}/b",
            "{a=1?}",
            "{n:range(1)}",
        ] {
            assert!(
                RouteTemplate::parse("", template).is_err(),
                "{template} should be refused"
            );
        }
    }

    #[test]
    fn the_banner_path_of_the_root_function_is_slash() {
        let root = RouteTemplate::parse("", "{ignored:maxlength(0)?}").unwrap();
        assert_eq!(root.display_path(), "/");
        let user = RouteTemplate::parse("api", "users/{id:int}/{tab?}").unwrap();
        assert_eq!(user.display_path(), "/api/users/{id}");
    }
}
