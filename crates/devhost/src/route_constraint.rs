//! Route constraints as ASP.NET Core routing reads and checks them (`{id:int}`,
//! `{name:maxlength(8)}`, `{n:range(1,9)}`); those handler dev cannot honour are refused at start.

/// Why one `{…}` parameter of a template cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ParameterError {
    #[error("a parameter needs a name")]
    NoName,
    #[error("{0:?} is not a valid parameter name")]
    InvalidName(String),
    #[error("a parameter cannot be both optional and have a default value")]
    OptionalWithDefault,
    #[error("empty constraint")]
    EmptyConstraint,
    #[error("unexpected {0:?}")]
    Unexpected(String),
    #[error("constraint {0:?} lacks its closing parenthesis")]
    Unclosed(String),
    #[error("constraint {name} needs {count} argument(s)")]
    ArgumentCount { name: String, count: usize },
    #[error("constraint {0:?} needs whole numbers")]
    NotWholeNumbers(String),
    #[error("constraint {0:?} needs a length >= 0")]
    NegativeLength(String),
    #[error("constraint {0} takes no argument")]
    TakesNoArgument(String),
    #[error(
        "the {0} constraint is not supported by handler dev (supported: int, long, bool, \
         alpha, guid, decimal, double, float, required, minlength, maxlength, length, min, \
         max, range)"
    )]
    UnsupportedConstraint(String),
    #[error("unknown route constraint {0:?}")]
    UnknownConstraint(String),
}

/// A check on a route value (`{id:int}`); a value that fails it makes the route not match.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Constraint {
    Int,
    Long,
    Bool,
    Alpha,
    Guid,
    Number,
    Required,
    MinLength(usize),
    MaxLength(usize),
    Length(usize),
    LengthBetween(usize, usize),
    Min(i64),
    Max(i64),
    Range(i64, i64),
}

impl Constraint {
    /// Parses one constraint such as `maxlength(0)` or `range(1,9)`.
    pub(super) fn parse(text: &str) -> Result<Self, ParameterError> {
        let (name, args) = match text.split_once('(') {
            Some((name, rest)) => {
                let args = rest
                    .strip_suffix(')')
                    .ok_or_else(|| ParameterError::Unclosed(text.to_owned()))?;
                (name, Some(args))
            }
            None => (text, None),
        };
        let name = name.to_ascii_lowercase();
        let argument_count = |count: usize| ParameterError::ArgumentCount {
            name: name.clone(),
            count,
        };
        let numbers = |count: usize| -> Result<Vec<i64>, ParameterError> {
            let args = args.ok_or_else(|| argument_count(count))?;
            let values = args
                .split(',')
                .map(|a| a.trim().parse::<i64>())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|_| ParameterError::NotWholeNumbers(text.to_owned()))?;
            if values.len() == count {
                Ok(values)
            } else {
                Err(argument_count(count))
            }
        };
        let length = |value: i64| {
            usize::try_from(value).map_err(|_| ParameterError::NegativeLength(text.to_owned()))
        };
        let no_args = |constraint: Constraint| match args {
            None => Ok(constraint),
            Some(_) => Err(ParameterError::TakesNoArgument(name.clone())),
        };
        match name.as_str() {
            "int" => no_args(Constraint::Int),
            "long" => no_args(Constraint::Long),
            "bool" => no_args(Constraint::Bool),
            "alpha" => no_args(Constraint::Alpha),
            "guid" => no_args(Constraint::Guid),
            "decimal" | "double" | "float" => no_args(Constraint::Number),
            "required" => no_args(Constraint::Required),
            "minlength" => Ok(Constraint::MinLength(length(numbers(1)?[0])?)),
            "maxlength" => Ok(Constraint::MaxLength(length(numbers(1)?[0])?)),
            "length" => match args.map(|a| a.contains(',')) {
                Some(true) => {
                    let v = numbers(2)?;
                    Ok(Constraint::LengthBetween(length(v[0])?, length(v[1])?))
                }
                _ => Ok(Constraint::Length(length(numbers(1)?[0])?)),
            },
            "min" => Ok(Constraint::Min(numbers(1)?[0])),
            "max" => Ok(Constraint::Max(numbers(1)?[0])),
            "range" => {
                let v = numbers(2)?;
                Ok(Constraint::Range(v[0], v[1]))
            }
            "regex" | "datetime" | "file" | "nonfile" => {
                Err(ParameterError::UnsupportedConstraint(name.clone()))
            }
            other => Err(ParameterError::UnknownConstraint(other.to_owned())),
        }
    }

    /// Whether a route value passes, with .NET's invariant-culture parsing rules.
    pub(super) fn accepts(&self, value: &str) -> bool {
        let trimmed = value.trim();
        let as_long = || trimmed.parse::<i64>().ok();
        let chars = value.chars().count();
        match self {
            Constraint::Int => trimmed.parse::<i32>().is_ok(),
            Constraint::Long => as_long().is_some(),
            Constraint::Bool => {
                trimmed.eq_ignore_ascii_case("true") || trimmed.eq_ignore_ascii_case("false")
            }
            Constraint::Alpha => value.chars().all(|c| c.is_ascii_alphabetic()),
            Constraint::Guid => is_guid(trimmed),
            Constraint::Number => trimmed.parse::<f64>().is_ok_and(f64::is_finite),
            Constraint::Required => !value.is_empty(),
            Constraint::MinLength(n) => chars >= *n,
            Constraint::MaxLength(n) => chars <= *n,
            Constraint::Length(n) => chars == *n,
            Constraint::LengthBetween(lo, hi) => (*lo..=*hi).contains(&chars),
            Constraint::Min(n) => as_long().is_some_and(|v| v >= *n),
            Constraint::Max(n) => as_long().is_some_and(|v| v <= *n),
            Constraint::Range(lo, hi) => as_long().is_some_and(|v| (*lo..=*hi).contains(&v)),
        }
    }
}

/// .NET's `Guid.TryParse` formats: `N`, `D`, `B` (braces) and `P` (parentheses).
fn is_guid(value: &str) -> bool {
    let inner = value
        .strip_prefix('(')
        .and_then(|v| v.strip_suffix(')'))
        .unwrap_or(value);
    uuid::Uuid::parse_str(inner).is_ok() && !inner.starts_with("urn:")
}
