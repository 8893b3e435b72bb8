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

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
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
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt).map_err(|e| HashError(e.to_string()))?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| HashError(e.to_string()))?;
    hasher().hash_password(password, &salt).map(|h| h.to_string()).map_err(|e| HashError(e.to_string()))
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
    match PasswordHash::new(stored) {
        Ok(parsed) if Argon2::default().verify_password(password, &parsed).is_ok() => Verified::Yes,
        _ => Verified::No,
    }
}

/// Spends the time of one Argon2 verification and returns [`Verified::No`], so a login
/// for an unknown name takes as long as one for a known name (no user enumeration).
pub fn dummy_verify(password: &[u8]) -> Verified {
    // encode_b64 of 16 bytes cannot fail; if it ever did, the timing guard is lost, not safety.
    if let Ok(salt) = SaltString::encode_b64(&[0u8; 16]) {
        let _ = hasher().hash_password(password, &salt);
    }
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

    #[test]
    fn unknown_forms_never_match() {
        for stored in ["", "*", "!", "$argon2id$garbage", "$1$abc$def", "hunter2"] {
            assert_eq!(verify(b"hunter2", stored), Verified::No, "{stored}");
            assert_eq!(verify(b"", stored), Verified::No, "{stored}");
        }
        assert_eq!(dummy_verify(b"x"), Verified::No);
    }
}
