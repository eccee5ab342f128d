//! argon2id hashing with OWASP's parameters, off the async workers, a few at a time: each hash
//! takes 19 MiB and tens of milliseconds of CPU, so unbounded parallel sign-ups would take the
//! machine's memory and starve every other request. The 19 MiB working areas are allocated once
//! per permit and reused: freed and reallocated each time, glibc keeps them per thread arena and
//! the process grows far past what is in use.

use std::sync::{Arc, Mutex};

use argon2::password_hash::{Output, ParamsString, PasswordHash, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use tokio::sync::Semaphore;
use tracing::Instrument as _;

use crate::domain::Password;

/// OWASP's first argon2id configuration: 19 MiB, 2 iterations, 1 lane.
pub const MEMORY_KIB: u32 = 19 * 1024;
pub const ITERATIONS: u32 = 2;
pub const LANES: u32 = 1;

/// Hashing failed: the task was lost or a stored hash is unreadable. Never the caller's fault.
#[derive(Debug, thiserror::Error)]
pub enum HashError {
    #[error("password hashing failed: {0}")]
    Hash(String),
    #[error("the hashing task did not finish: {0}")]
    Task(#[from] tokio::task::JoinError),
    #[error("the hashing pool is closed")]
    Closed,
}

/// Length of the stored hash, in bytes.
const OUTPUT_LEN: usize = 32;

/// Hashes and verifies passwords on the blocking pool, at most `parallelism` at a time.
#[derive(Clone)]
pub struct PasswordHasher {
    permits: Arc<Semaphore>,
    parallelism: usize,
    /// One working area per permit, handed to whichever blocking thread runs the hash.
    memory: Arc<Mutex<Vec<Vec<Block>>>>,
}

impl PasswordHasher {
    /// One hash at a time per core: more would only queue inside the CPU while holding memory.
    pub fn new(parallelism: usize) -> Self {
        let parallelism = parallelism.max(1);
        Self {
            permits: Arc::new(Semaphore::new(parallelism)),
            parallelism,
            memory: Arc::new(Mutex::new(Vec::with_capacity(parallelism))),
        }
    }

    /// One concurrent hash per core but one: the core left over keeps the async workers (the
    /// readiness ping, `/health`, `/`) answering in milliseconds while sign-ups saturate the
    /// hashing; with every core hashing, their p99 rose to tens of milliseconds.
    pub fn for_this_machine() -> Self {
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        Self::new(cores.saturating_sub(1).max(1))
    }

    /// How many hashes may run at once.
    pub fn parallelism(&self) -> usize {
        self.parallelism
    }

    fn params() -> Result<Params, HashError> {
        Params::new(MEMORY_KIB, ITERATIONS, LANES, Some(OUTPUT_LEN)).map_err(hash_error)
    }

    /// Hashes a password into a PHC string with a fresh random salt.
    pub async fn hash(&self, password: &Password) -> Result<String, HashError> {
        let password = password.expose().to_owned();
        self.run(move |memory| {
            let params = Self::params()?;
            let salt = SaltString::generate(&mut argon2::password_hash::rand_core::OsRng);
            let mut salt_buffer = [0u8; 64];
            let salt_bytes = salt
                .as_salt()
                .decode_b64(&mut salt_buffer)
                .map_err(hash_error)?;
            let mut out = [0u8; OUTPUT_LEN];
            Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone())
                .hash_password_into_with_memory(password.as_bytes(), salt_bytes, &mut out, memory)
                .map_err(hash_error)?;
            let phc = PasswordHash {
                algorithm: Algorithm::Argon2id.ident(),
                version: Some(Version::V0x13.into()),
                params: ParamsString::try_from(&params).map_err(hash_error)?,
                salt: Some(salt.as_salt()),
                hash: Some(Output::new(&out).map_err(hash_error)?),
            };
            Ok(phc.to_string())
        })
        .await
    }

    /// Checks a password against a stored PHC string, with the parameters recorded in it (so
    /// hashes made under older parameters still verify).
    pub async fn verify(&self, password: &Password, phc: &str) -> Result<bool, HashError> {
        let password = password.expose().to_owned();
        let phc = phc.to_owned();
        self.run(move |memory| {
            let parsed = PasswordHash::new(&phc).map_err(hash_error)?;
            let expected = parsed
                .hash
                .ok_or_else(|| HashError::Hash("no hash in the PHC string".into()))?;
            let salt = parsed
                .salt
                .ok_or_else(|| HashError::Hash("no salt in the PHC string".into()))?;
            let algorithm = Algorithm::try_from(parsed.algorithm).map_err(hash_error)?;
            let version = parsed
                .version
                .map(Version::try_from)
                .transpose()
                .map_err(hash_error)?
                .unwrap_or_default();
            let params = Params::try_from(&parsed).map_err(hash_error)?;
            let mut salt_buffer = [0u8; 64];
            let salt_bytes = salt.decode_b64(&mut salt_buffer).map_err(hash_error)?;
            let mut out = vec![0u8; expected.len()];
            let argon2 = Argon2::new(algorithm, version, params.clone());
            if params.block_count() <= memory.len() {
                argon2.hash_password_into_with_memory(
                    password.as_bytes(),
                    salt_bytes,
                    &mut out,
                    memory,
                )
            } else {
                argon2.hash_password_into(password.as_bytes(), salt_bytes, &mut out)
            }
            .map_err(hash_error)?;
            // Output's equality is constant-time.
            Ok(Output::new(&out).map_err(hash_error)? == expected)
        })
        .await
    }

    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut [Block]) -> Result<T, HashError> + Send + 'static,
    ) -> Result<T, HashError> {
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| HashError::Closed)?;
        let pool = self.memory.clone();
        let span = tracing::Span::current();
        tokio::task::spawn_blocking(move || {
            let _entered = span.enter();
            let mut memory = lock(&pool).pop().unwrap_or_else(|| {
                vec![Block::default(); (MEMORY_KIB as usize).max(8 * LANES as usize)]
            });
            let result = work(&mut memory);
            lock(&pool).push(memory);
            result
        })
        .instrument(tracing::debug_span!("argon2id"))
        .await?
    }
}

fn lock(pool: &Mutex<Vec<Vec<Block>>>) -> std::sync::MutexGuard<'_, Vec<Vec<Block>>> {
    // The pool only holds buffers; a panic elsewhere cannot leave it inconsistent.
    pool.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn hash_error(e: impl std::fmt::Display) -> HashError {
    HashError::Hash(e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_hash_verifies_its_password_and_no_other() {
        let hasher = PasswordHasher::new(1);
        let password = Password::parse("correct horse battery").unwrap();
        let phc = hasher.hash(&password).await.unwrap();
        assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
        assert!(hasher.verify(&password, &phc).await.unwrap());
        let other = Password::parse("incorrect horse").unwrap();
        assert!(!hasher.verify(&other, &phc).await.unwrap());
    }

    #[tokio::test]
    async fn two_hashes_of_one_password_differ() {
        let hasher = PasswordHasher::new(2);
        let password = Password::parse("correct horse battery").unwrap();
        assert_ne!(
            hasher.hash(&password).await.unwrap(),
            hasher.hash(&password).await.unwrap()
        );
    }
}

#[cfg(test)]
mod compatibility {
    use super::*;
    use argon2::password_hash::PasswordHasher as _;

    #[tokio::test]
    async fn a_hash_made_by_the_reference_api_with_other_parameters_verifies() {
        let params = Params::new(8 * 1024, 1, 1, None).unwrap();
        let salt = SaltString::generate(&mut argon2::password_hash::rand_core::OsRng);
        let phc = Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
            .hash_password(b"correct horse battery", &salt)
            .unwrap()
            .to_string();
        let password = Password::parse("correct horse battery").unwrap();
        assert!(
            PasswordHasher::new(1)
                .verify(&password, &phc)
                .await
                .unwrap()
        );
    }
}
