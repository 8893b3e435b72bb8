//! Password hashes of the `user.user_passwd` column: the only place that knows the schemes
//! (design.md "Schema", spec/mail.md §6).
//!
//! * New hashes are Argon2id PHC strings, `$argon2id$v=19$m=65536,t=3,p=1$<salt>$<hash>`,
//!   with a 16-byte random salt (RFC 9106 parameters as the spec chooses them).
//! * mmmail's legacy form, 32 lowercase hex digits of the unsalted MD5 of the password
//!   (the value MySQL's `MD5('…')` gives), still verifies; callers should then replace it
//!   by a fresh Argon2id hash ([`Verified::NeedsRehash`]).
//! * Anything else never matches.
//!
//! Argon2 with these parameters costs about 64 MiB and tens of milliseconds per call: run
//! [`verify`] and [`hash`] off the async runtime (`spawn_blocking`) in daemons.
//!
//! The 64 MiB work area of a call is not allocated afresh each time: a fresh one costs
//! the kernel 16,384 page faults and their zeroing, about a quarter of the call (issue 16;
//! `cargo bench -p common --bench password` shows both). Areas are kept for
//! [`ARENA_IDLE`] after their last use and then given back, so a daemon that logs nobody
//! in holds none.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use argon2::password_hash::{Output, ParamsString, PasswordHash, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use md5::{Digest, Md5};
use subtle::ConstantTimeEq;

/// Argon2 memory cost in KiB (64 MiB).
pub const ARGON2_MEMORY_KIB: u32 = 65_536;
/// Argon2 iterations.
pub const ARGON2_ITERATIONS: u32 = 3;
/// Argon2 lanes.
pub const ARGON2_LANES: u32 = 1;

/// Outcome of [`verify`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verified {
    /// The password matches a current (Argon2) hash.
    Yes,
    /// The password matches a legacy MD5 hash; store [`hash`] of it in its place.
    NeedsRehash,
    /// No match (or the stored value is of no known form).
    No,
}

impl Verified {
    /// Whether the password matched, in either form.
    pub fn ok(self) -> bool {
        self != Self::No
    }
}

/// Hashing failed (only possible if the RNG fails).
#[derive(Debug, thiserror::Error)]
#[error("password hashing failed: {0}")]
pub struct HashError(String);

/// How long an unused Argon2 work area is kept for the next call before it is given
/// back to the system.
pub const ARENA_IDLE: Duration = Duration::from_secs(10);

/// Blocks (1 KiB each) in a kept work area: enough for the parameters [`hash`] uses and
/// any stored hash with less memory. A stored hash asking for more gets a work area of
/// its own, never kept.
const ARENA_BLOCKS: usize = ARGON2_MEMORY_KIB as usize;

/// Work areas not in use, each with the moment it was last given back.
static ARENAS: Mutex<Vec<(Vec<Block>, Instant)>> = Mutex::new(Vec::new());
/// Whether the thread that gives idle work areas back is running.
static REAPER: AtomicBool = AtomicBool::new(false);

fn arenas() -> std::sync::MutexGuard<'static, Vec<(Vec<Block>, Instant)>> {
    // A panic while the lock was held cannot leave the list inconsistent.
    ARENAS.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Runs `argon2` over `password` and `salt` into `out`, in a kept work area when its
/// memory cost fits one.
fn run(argon2: &Argon2<'_>, password: &[u8], salt: &[u8], out: &mut [u8]) -> Result<(), argon2::Error> {
    if argon2.params().block_count() > ARENA_BLOCKS {
        return argon2.hash_password_into(password, salt, out);
    }
    let mut arena = arenas().pop().map(|(a, _)| a).unwrap_or_else(|| vec![Block::default(); ARENA_BLOCKS]);
    // Every block is written before it is read, so what the last call left is harmless.
    let r = argon2.hash_password_into_with_memory(password, salt, out, &mut arena[..]);
    give_back(arena);
    r
}

/// Keeps `arena` for the next call and makes sure it is given back after [`ARENA_IDLE`].
fn give_back(arena: Vec<Block>) {
    let mut idle = arenas();
    idle.push((arena, Instant::now()));
    if REAPER.swap(true, Ordering::AcqRel) {
        return;
    }
    let spawned = std::thread::Builder::new().name("argon2-arenas".into()).spawn(|| {
        loop {
            std::thread::sleep(ARENA_IDLE);
            let mut idle = arenas();
            idle.retain(|(_, used)| used.elapsed() < ARENA_IDLE);
            if idle.is_empty() {
                REAPER.store(false, Ordering::Release);
                return;
            }
        }
    });
    if spawned.is_err() {
        // No thread to give them back later: keep nothing.
        idle.clear();
        REAPER.store(false, Ordering::Release);
    }
}

/// The work areas kept now (for tests and benchmarks).
pub fn kept_arenas() -> usize {
    arenas().len()
}

fn hasher() -> Argon2<'static> {
    // These constants are valid Argon2 parameters, so `Params::new` cannot fail here;
    // fall back to the library default rather than panic if that ever changed.
    let params = Params::new(ARGON2_MEMORY_KIB, ARGON2_ITERATIONS, ARGON2_LANES, None).unwrap_or_default();
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// Makes an Argon2id PHC string for `password` with a fresh random salt.
///
/// # Errors
/// [`HashError`] if the operating system's random source fails.
pub fn hash(password: &[u8]) -> Result<String, HashError> {
    let err = |e: &dyn std::fmt::Display| HashError(e.to_string());
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt).map_err(|e| err(&e))?;
    let argon2 = hasher();
    let mut out = [0u8; Params::DEFAULT_OUTPUT_LEN];
    run(&argon2, password, &salt, &mut out).map_err(|e| err(&e))?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| err(&e))?;
    let phc = PasswordHash {
        algorithm: Algorithm::Argon2id.ident(),
        version: Some(Version::V0x13.into()),
        params: ParamsString::try_from(argon2.params()).map_err(|e| err(&e))?,
        salt: Some(salt.as_salt()),
        hash: Some(Output::new(&out).map_err(|e| err(&e))?),
    };
    Ok(phc.to_string())
}

/// mmmail's legacy digest: MD5 of the password bytes as 32 lowercase hex digits.
///
/// ```
/// assert_eq!(common::password::legacy_md5(b"test"), "098f6bcd4621d373cade4e832627b4f6");
/// ```
pub fn legacy_md5(password: &[u8]) -> String {
    Md5::digest(password).iter().map(|b| format!("{b:02x}")).collect()
}

fn is_legacy_md5(stored: &str) -> bool {
    stored.len() == 32 && stored.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Checks `password` against a stored `user_passwd` value.
///
/// Legacy MD5 values are compared in constant time. Values of no known form never match.
pub fn verify(password: &[u8], stored: &str) -> Verified {
    if is_legacy_md5(stored) {
        return if legacy_md5(password).as_bytes().ct_eq(stored.as_bytes()).into() {
            Verified::NeedsRehash
        } else {
            Verified::No
        };
    }
    if !stored.starts_with("$argon2") {
        return Verified::No;
    }
    if verify_argon2(password, stored).unwrap_or(false) { Verified::Yes } else { Verified::No }
}

/// Recomputes the Argon2 PHC string `stored` for `password`: whether it matches, or
/// `None` if `stored` is malformed. The outputs are compared in constant time.
fn verify_argon2(password: &[u8], stored: &str) -> Option<bool> {
    let parsed = PasswordHash::new(stored).ok()?;
    let (salt, expected) = (parsed.salt?, parsed.hash?);
    let algorithm = Algorithm::try_from(parsed.algorithm).ok()?;
    let version = match parsed.version {
        Some(v) => Version::try_from(v).ok()?,
        None => Version::default(),
    };
    let params = Params::try_from(&parsed).ok()?;
    let mut salt_buf = [0u8; 64];
    let salt = salt.decode_b64(&mut salt_buf).ok()?;
    let mut out = vec![0u8; expected.len()];
    run(&Argon2::new(algorithm, version, params), password, salt, &mut out).ok()?;
    // `Output`'s equality is constant-time.
    Some(Output::new(&out).ok()? == expected)
}

/// Spends the time of one Argon2 verification and returns [`Verified::No`], so a login
/// for an unknown name takes as long as one for a known name (no user enumeration): the
/// same parameters, and a kept work area just as a real verification gets.
pub fn dummy_verify(password: &[u8]) -> Verified {
    let mut out = [0u8; Params::DEFAULT_OUTPUT_LEN];
    let _ = run(&hasher(), password, &[0u8; 16], &mut out);
    Verified::No
}

/// Reads a new password the way mmmail's tools do (never from argv): one line of
/// standard input when `stdin` is set or standard input is not a terminal (a trailing
/// CR LF or LF removed), else from the terminal without echo, asked twice.
///
/// # Errors
/// I/O errors; `InvalidInput` when the two entries differ or the password is empty.
pub fn read_new(stdin: bool) -> std::io::Result<String> {
    use std::io::{BufRead, IsTerminal};
    let password = if stdin || !std::io::stdin().is_terminal() {
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line)?;
        if let Some(l) = line.strip_suffix('\n') {
            line.truncate(l.strip_suffix('\r').unwrap_or(l).len());
        }
        line
    } else {
        let first = rpassword::prompt_password("Password: ")?;
        let second = rpassword::prompt_password("Again: ")?;
        if first != second {
            return Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, "the passwords differ"));
        }
        first
    };
    if password.is_empty() {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, "empty password"));
    }
    Ok(password)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn legacy_vectors() {
        assert_eq!(legacy_md5(b"someuserpassword"), "5ed6dfd210b419415eb054a9bee92e57");
        assert_eq!(legacy_md5(b""), "d41d8cd98f00b204e9800998ecf8427e");
        assert_eq!(verify(b"someuserpassword", "5ed6dfd210b419415eb054a9bee92e57"), Verified::NeedsRehash);
        assert_eq!(verify(b"someuserpassworD", "5ed6dfd210b419415eb054a9bee92e57"), Verified::No);
        // Upper-case hex is not what mmpasswd printed: not a legacy value.
        assert_eq!(verify(b"someuserpassword", "5ED6DFD210B419415EB054A9BEE92E57"), Verified::No);
    }

    #[test]
    fn argon2_round_trip() {
        let h = hash(b"hunter2").unwrap();
        assert!(h.starts_with("$argon2id$v=19$m=65536,t=3,p=1$"), "{h}");
        assert_eq!(verify(b"hunter2", &h), Verified::Yes);
        assert_eq!(verify(b"hunter3", &h), Verified::No);
        let h2 = hash(b"hunter2").unwrap();
        assert_ne!(h, h2, "salts must differ");
    }

    /// The library's own hashing and verifying agree with ours, for the parameters we
    /// use, for other variants and versions, for less memory than a kept work area and
    /// for more.
    #[test]
    fn same_answers_as_the_library() {
        use argon2::password_hash::{PasswordHasher, PasswordVerifier};
        let salt = SaltString::encode_b64(b"sixteen byte sal").unwrap();
        for (alg, ver, m, t) in [
            (Algorithm::Argon2id, Version::V0x13, 65_536, 3),
            (Algorithm::Argon2id, Version::V0x13, 19_456, 2),
            (Algorithm::Argon2i, Version::V0x10, 4_096, 3),
            (Algorithm::Argon2d, Version::V0x13, 8, 1),
            (Algorithm::Argon2id, Version::V0x13, 70_000, 1),
        ] {
            let params = Params::new(m, t, 1, Some(24)).unwrap();
            let stored = Argon2::new(alg, ver, params).hash_password(b"pw", &salt).unwrap().to_string();
            assert_eq!(verify(b"pw", &stored), Verified::Yes, "{stored}");
            assert_eq!(verify(b"pX", &stored), Verified::No, "{stored}");
        }
        let ours = hash(b"pw").unwrap();
        let parsed = PasswordHash::new(&ours).unwrap();
        assert!(Argon2::default().verify_password(b"pw", &parsed).is_ok(), "{ours}");
        assert!(Argon2::default().verify_password(b"pX", &parsed).is_err(), "{ours}");
    }

    #[test]
    fn unknown_forms_never_match() {
        for stored in [
            "",
            "*",
            "!",
            "$argon2id$garbage",
            "$1$abc$def",
            "hunter2",
            "$argon2id$v=19$m=65536,t=3,p=1$c2l4dGVlbiBieXRlIHNhbA",
            "$argon2id$v=19$m=65536,t=3,p=1$c2l4dGVlbiBieXRlIHNhbA$",
            "$argon2x$v=19$m=65536,t=3,p=1$c2l4dGVlbiBieXRlIHNhbA$c2l4dGVlbiBieXRlIHNhbA",
            "$argon2id$v=18$m=65536,t=3,p=1$c2l4dGVlbiBieXRlIHNhbA$c2l4dGVlbiBieXRlIHNhbA",
            "$argon2id$v=19$m=1,t=3,p=1$c2l4dGVlbiBieXRlIHNhbA$c2l4dGVlbiBieXRlIHNhbA",
        ] {
            assert_eq!(verify(b"hunter2", stored), Verified::No, "{stored}");
            assert_eq!(verify(b"", stored), Verified::No, "{stored}");
        }
        assert_eq!(dummy_verify(b"x"), Verified::No);
    }
}
