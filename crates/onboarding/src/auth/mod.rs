//! Who a caller is: passwords hashed with argon2id, session tokens (HS256 JWTs), email
//! verification tokens (the same keys, another audience) and the anti-forgery token of forms.

mod email_token;
mod form_token;
mod password;
mod token;

pub use email_token::{EmailClaim, EmailTokens, VERIFY_EMAIL_AUDIENCE, VERIFY_EMAIL_TTL};
pub use form_token::FormTokens;
pub use password::{DUMMY_HASH, HashError, PasswordHasher};
pub use token::{InvalidToken, IssuedToken, Session, TokenError, TokenKeys};
