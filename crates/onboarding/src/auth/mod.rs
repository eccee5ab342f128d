//! Who a caller is: passwords hashed with argon2id, and session tokens (HS256 JWTs).

mod password;
mod token;

pub use password::{HashError, PasswordHasher};
pub use token::{InvalidToken, IssuedToken, TokenError, TokenKeys};
