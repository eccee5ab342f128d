//! Who a caller is: passwords hashed with argon2id, and session tokens (HS256 JWTs).

mod form_token;
mod password;
mod token;

pub use form_token::FormTokens;
pub use password::{DUMMY_HASH, HashError, PasswordHasher};
pub use token::{InvalidToken, IssuedToken, Session, TokenError, TokenKeys};
