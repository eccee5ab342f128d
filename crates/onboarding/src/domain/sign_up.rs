//! A sign-up request turned into valid parts, or every reason it is not.

use super::{Password, UserEmail, UserName};

/// What is wrong with one field; `Missing` and `WrongType` make the request malformed (400),
/// `Invalid` makes it well-formed but unacceptable (422).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FieldProblem {
    Missing,
    WrongType,
    Invalid(String),
}

/// One field and what is wrong with it, as reported back to the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub field: &'static str,
    pub problem: FieldProblem,
}

impl FieldError {
    /// A sentence for the person, e.g. "email is not a valid email address".
    pub fn detail(&self) -> String {
        match &self.problem {
            FieldProblem::Missing => format!("{} is required", self.field),
            FieldProblem::WrongType => format!("{} must be a string", self.field),
            FieldProblem::Invalid(why) => format!("{} {why}", self.field),
        }
    }
}

/// Every field that stopped the sign-up, in form order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignUpRejection {
    pub errors: Vec<FieldError>,
}

impl SignUpRejection {
    /// True when a field is absent or not text: the request itself is malformed.
    pub fn is_malformed(&self) -> bool {
        self.errors
            .iter()
            .any(|e| matches!(e.problem, FieldProblem::Missing | FieldProblem::WrongType))
    }
}

/// A field as the client sent it, before any rule is applied.
#[derive(Debug, Clone, Copy)]
pub enum RawField<'a> {
    Missing,
    WrongType,
    Text(&'a str),
}

/// A sign-up whose every field is valid.
#[derive(Debug)]
pub struct SignUp {
    pub name: UserName,
    pub email: UserEmail,
    pub password: Password,
}

impl SignUp {
    /// Applies every rule to every field and reports all failures together, so a form can show
    /// each message beside its field in one round trip.
    pub fn parse(
        name: RawField<'_>,
        email: RawField<'_>,
        password: RawField<'_>,
    ) -> Result<Self, SignUpRejection> {
        let mut errors = Vec::new();
        let name = check(&mut errors, "name", name, |s| {
            UserName::parse(s).map_err(|e| e.to_string())
        });
        let email = check(&mut errors, "email", email, |s| {
            UserEmail::parse(s).map_err(|e| e.to_string())
        });
        let password = check(&mut errors, "password", password, |s| {
            Password::parse(s).map_err(|e| e.to_string())
        });
        match (name, email, password) {
            (Some(name), Some(email), Some(password)) if errors.is_empty() => Ok(Self {
                name,
                email,
                password,
            }),
            _ => Err(SignUpRejection { errors }),
        }
    }
}

/// A sign-in whose fields are well-formed (an address, a password within the length rules; a
/// password outside them cannot match, so saying so reveals nothing about any account).
#[derive(Debug)]
pub struct SignIn {
    pub email: UserEmail,
    pub password: Password,
}

impl SignIn {
    /// Applies the sign-up rules for email and password, reporting both together.
    pub fn parse(email: RawField<'_>, password: RawField<'_>) -> Result<Self, SignUpRejection> {
        let mut errors = Vec::new();
        let email = check(&mut errors, "email", email, |s| {
            UserEmail::parse(s).map_err(|e| e.to_string())
        });
        let password = check(&mut errors, "password", password, |s| {
            Password::parse(s).map_err(|e| e.to_string())
        });
        match (email, password) {
            (Some(email), Some(password)) if errors.is_empty() => Ok(Self { email, password }),
            _ => Err(SignUpRejection { errors }),
        }
    }
}

fn check<T>(
    errors: &mut Vec<FieldError>,
    field: &'static str,
    raw: RawField<'_>,
    parse: impl FnOnce(&str) -> Result<T, String>,
) -> Option<T> {
    let problem = match raw {
        RawField::Missing => FieldProblem::Missing,
        RawField::WrongType => FieldProblem::WrongType,
        RawField::Text(text) => match parse(text) {
            Ok(value) => return Some(value),
            Err(why) => FieldProblem::Invalid(why),
        },
    };
    errors.push(FieldError { field, problem });
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_fields_make_a_sign_up() {
        let sign_up = SignUp::parse(
            RawField::Text("Ada"),
            RawField::Text("ada@example.com"),
            RawField::Text("correct horse"),
        )
        .unwrap();
        assert_eq!(sign_up.name.as_str(), "Ada");
    }

    #[test]
    fn every_bad_field_is_reported_at_once() {
        let rejection = SignUp::parse(
            RawField::Text(""),
            RawField::Text("nope"),
            RawField::Text("short"),
        )
        .unwrap_err();
        let fields: Vec<_> = rejection.errors.iter().map(|e| e.field).collect();
        assert_eq!(fields, ["name", "email", "password"]);
        assert!(!rejection.is_malformed());
    }

    #[test]
    fn a_missing_field_makes_the_request_malformed() {
        let rejection = SignUp::parse(
            RawField::Text("Ada"),
            RawField::Missing,
            RawField::Text("correct horse"),
        )
        .unwrap_err();
        assert!(rejection.is_malformed());
        assert_eq!(rejection.errors[0].detail(), "email is required");
    }

    #[test]
    fn a_number_where_text_belongs_makes_the_request_malformed() {
        let rejection = SignUp::parse(
            RawField::WrongType,
            RawField::Text("ada@example.com"),
            RawField::Text("correct horse"),
        )
        .unwrap_err();
        assert!(rejection.is_malformed());
    }
}
