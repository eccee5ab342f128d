//! argon2id hashing with OWASP's parameters on dedicated threads, one per core, at a lower CPU
//! priority than everything else in the process.
//!
//! Each hash takes 19 MiB and tens of milliseconds of CPU. Why dedicated threads rather than
//! tokio's blocking pool: a hash handed to whichever blocking thread wakes next often started on
//! the core where another hash ran while the other core idled, and at equal priority a tokio
//! worker woken by a request waited for a hashing time slice. A fixed set of threads that take
//! the next job from one queue keeps every core hashing while there is work; the lower priority
//! (nice 10, Linux) lets the readiness ping, `/health` and `/` preempt them. The queue bounds
//! concurrency to one hash per core, and each thread owns its 19 MiB working area for its whole
//! life: freed and reallocated per hash, glibc kept the blocks per thread arena and the process
//! grew far past what was in use. Threads start with the first hash, so readiness and idle
//! memory are untouched, and stop when the last handle to the hasher is dropped.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use argon2::password_hash::{Output, ParamsString, PasswordHash, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use tokio::sync::oneshot;

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
    #[error("a hashing thread could not be started: {0}")]
    Spawn(String),
    #[error("the hashing thread stopped before answering")]
    Lost,
}

/// A hash of a random password nobody knows (made once, with the parameters above), checked
/// when a sign-in names no account: the answer then takes one hash, as for a wrong password,
/// so its timing does not tell whether the address is registered. A test keeps its parameters
/// equal to those of a stored hash.
pub const DUMMY_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$CXLQWTcNjFat7HAdry4ETA$YxiTuUsRsXaHQ2ggIeo1nw9McWGTUlps801DZ84KhBY";

/// Length of the stored hash, in bytes.
const OUTPUT_LEN: usize = 32;

/// How much less CPU the hashing threads ask for than the rest of the process (`nice` 10: under
/// contention they get about a tenth of what a request-serving thread gets).
const HASHING_NICENESS: i32 = 10;

/// One unit of hashing work, run on a hashing thread with that thread's working area.
type Job = Box<dyn FnOnce(&mut [Block]) + Send>;

/// Hashes and verifies passwords on `parallelism` dedicated threads. Cloning shares the threads.
#[derive(Clone)]
pub struct PasswordHasher {
    parallelism: usize,
    /// The job queue, once the threads run; dropping the last sender stops them.
    queue: Arc<Mutex<Option<mpsc::Sender<Job>>>>,
    /// Hashes computed so far (made or checked): what proves that a request refused by a limit
    /// cost none.
    computed: Arc<AtomicU64>,
}

impl PasswordHasher {
    /// At most `parallelism` hashes at once (at least one): more would only queue inside the
    /// CPU while holding memory.
    pub fn new(parallelism: usize) -> Self {
        Self {
            parallelism: parallelism.max(1),
            queue: Arc::new(Mutex::new(None)),
            computed: Arc::new(AtomicU64::new(0)),
        }
    }

    /// How many hashes this hasher (and its clones) computed, made or checked.
    pub fn hashes_computed(&self) -> u64 {
        self.computed.load(Ordering::Relaxed)
    }

    /// One hashing thread per core. Their lower priority, not a core held back, is what keeps the
    /// async workers answering in milliseconds while sign-ups saturate the hashing.
    pub fn for_this_machine() -> Self {
        Self::new(std::thread::available_parallelism().map_or(1, usize::from))
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
        let (answer, answered) = oneshot::channel();
        let span = tracing::debug_span!("argon2id");
        let computed = self.computed.clone();
        let job: Job = Box::new(move |memory| {
            // A caller that went away while its job queued (a client that hung up, a shutdown)
            // wants no answer: skip the tens of milliseconds of CPU.
            if answer.is_closed() {
                return;
            }
            let _entered = span.enter();
            computed.fetch_add(1, Ordering::Relaxed);
            let _ = answer.send(work(memory));
        });
        self.submit(job)?;
        answered.await.map_err(|_| HashError::Lost)?
    }

    /// Queues a job, starting the threads on first use.
    fn submit(&self, job: Job) -> Result<(), HashError> {
        let mut queue = self
            .queue
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if queue.is_none() {
            *queue = Some(start_threads(self.parallelism)?);
        }
        match queue.as_ref().map(|sender| sender.send(job)) {
            Some(Ok(())) => Ok(()),
            // Every thread is gone (only a panic in the hashing code could do that): start
            // afresh on the next hash rather than failing every sign-up from now on.
            _ => {
                *queue = None;
                Err(HashError::Lost)
            }
        }
    }
}

/// Starts `count` hashing threads sharing one job queue.
fn start_threads(count: usize) -> Result<mpsc::Sender<Job>, HashError> {
    let (sender, receiver) = mpsc::channel::<Job>();
    let receiver = Arc::new(Mutex::new(receiver));
    for index in 0..count {
        let receiver = receiver.clone();
        std::thread::Builder::new()
            .name(format!("argon2id-{index}"))
            .spawn(move || hashing_thread(&receiver))
            .map_err(|e| HashError::Spawn(e.to_string()))?;
    }
    Ok(sender)
}

/// A hashing thread: lowers its own priority, then runs jobs until the queue closes.
fn hashing_thread(receiver: &Mutex<mpsc::Receiver<Job>>) {
    lower_priority();
    let mut memory: Vec<Block> = Vec::new();
    loop {
        // The lock is held only while waiting for the next job, never while hashing.
        let next = receiver
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .recv();
        let Ok(job) = next else { return };
        if memory.is_empty() {
            memory = vec![Block::default(); (MEMORY_KIB as usize).max(8 * LANES as usize)];
        }
        // A panic in the hashing code fails that one hash (its caller sees the answer channel
        // drop: `HashError::Lost`), not the thread: the pool keeps its size.
        let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| job(&mut memory)));
        if ran.is_err() {
            tracing::error!("a password hash panicked; that sign-up fails, hashing goes on");
        }
    }
}

/// Raises this thread's niceness by [`HASHING_NICENESS`] (at most to 19, the lowest priority).
/// Linux schedules threads individually, so the process's other threads keep theirs. Elsewhere,
/// or if refused, hashing runs at normal priority.
fn lower_priority() {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: gettid, getpriority and setpriority only read their arguments and read or
        // change this thread's scheduling; no memory is shared with them.
        let refused = unsafe {
            let tid = libc::gettid() as libc::id_t;
            let current = libc::getpriority(libc::PRIO_PROCESS, tid);
            libc::setpriority(
                libc::PRIO_PROCESS,
                tid,
                (current + HASHING_NICENESS).min(19),
            )
        } != 0;
        if refused {
            tracing::debug!("hashing threads keep normal priority: setpriority was refused");
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = HASHING_NICENESS;
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

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn hashing_threads_run_at_lower_priority_than_the_caller() {
        fn own_niceness() -> i32 {
            // SAFETY: reads this thread's scheduling priority only.
            unsafe { libc::getpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t) }
        }
        let hasher = PasswordHasher::new(1);
        let inside = hasher.run(|_memory| Ok(own_niceness())).await.unwrap();
        let outside = own_niceness();
        assert_eq!(inside - outside, HASHING_NICENESS.min(19 - outside));
    }

    #[tokio::test]
    async fn each_thread_keeps_one_working_area_across_hashes() {
        // A mark left by one job is still there for the next: the same area, not a fresh
        // allocation that happens to land at the same address.
        const MARK: u64 = 0x5eed_cafe_f00d_d00d;
        let hasher = PasswordHasher::new(1);
        let left = hasher
            .run(|memory| {
                let last = memory.last_mut().ok_or(HashError::Lost)?;
                last.as_mut()[0] = MARK;
                Ok(())
            })
            .await;
        left.unwrap();
        let found = hasher
            .run(|memory| Ok(memory.last().map(|b| b.as_ref()[0])))
            .await;
        assert_eq!(found.unwrap(), Some(MARK));
    }

    #[tokio::test]
    async fn a_panicking_hash_fails_alone_and_the_thread_goes_on() {
        let hasher = PasswordHasher::new(1);
        let failed = hasher
            .run(|_memory| -> Result<(), HashError> { panic!("boom") })
            .await;
        assert!(matches!(failed, Err(HashError::Lost)));
        assert_eq!(hasher.run(|_memory| Ok(7)).await.unwrap(), 7);
    }

    #[tokio::test]
    async fn the_dummy_hash_costs_what_a_stored_one_costs_and_matches_nothing() {
        let dummy = PasswordHash::new(DUMMY_HASH).unwrap();
        let params = Params::try_from(&dummy).unwrap();
        assert_eq!(
            (params.m_cost(), params.t_cost(), params.p_cost()),
            (MEMORY_KIB, ITERATIONS, LANES)
        );
        assert_eq!(dummy.hash.unwrap().len(), OUTPUT_LEN);
        let hasher = PasswordHasher::new(1);
        let guess = Password::parse("correct horse battery").unwrap();
        assert!(!hasher.verify(&guess, DUMMY_HASH).await.unwrap());
        assert_eq!(hasher.hashes_computed(), 1);
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
