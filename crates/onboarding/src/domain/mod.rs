//! Types that can only hold valid values: what the rest of the code may take for granted.

mod account;
mod client_address;
mod message;
mod onboarding;
mod password;
mod rate_rule;
mod sign_up;
mod user;
mod user_email;
mod user_name;

pub use account::Account;
pub use client_address::ClientAddress;
pub use message::{MessageError, OnboardingMessage, ValidMessage};
pub use onboarding::{Onboarding, OnboardingStatus, Refusal};
pub use password::{MAX_PASSWORD_CHARS, MIN_PASSWORD_CHARS, Password, PasswordError};
pub use rate_rule::RateRule;
pub use sign_up::{FieldError, FieldProblem, RawField, SignIn, SignUp, SignUpRejection};
pub use user::{User, UserId, rfc3339};
pub use user_email::{EmailError, MAX_EMAIL_LEN, UserEmail};
pub use user_name::{MAX_NAME_CHARS, NameError, UserName};
