//! mnm's base32 (spec/tmtp.md §10.1): RFC 4648 bit packing over the alphabet
//! `%+123456789BCDFGHJKLMNPQRSTVWXYZ` with `=` padding; CR and LF are ignored when
//! decoding. Used for uids, node secrets and stored node hashes.

use std::sync::LazyLock;

use data_encoding::{Encoding, Specification};
use sha2::{Digest, Sha256};

/// The alphabet, index 0 first.
pub const ALPHABET: &str = "%+123456789BCDFGHJKLMNPQRSTVWXYZ";
/// SHA-256 rounds of a stored node hash (spec/tmtp.md §10.2).
pub const NODE_HASH_ROUNDS: usize = 22389;

static ENCODING: LazyLock<Option<Encoding>> = LazyLock::new(|| {
    let mut spec = Specification::new();
    spec.symbols.push_str(ALPHABET);
    spec.padding = Some('=');
    spec.ignore.push_str("\r\n");
    spec.encoding().ok()
});

/// Encodes with padding.
pub fn encode(bytes: &[u8]) -> String {
    ENCODING.as_ref().map(|e| e.encode(bytes)).unwrap_or_default()
}

/// Text that is not mnm base32.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Corrupt;

/// Decodes (padding required, CR/LF ignored).
///
/// # Errors
/// [`Corrupt`] for anything else than padded base32 of this alphabet (the quit
/// `"corrupt base32 value"`).
pub fn decode(text: &str) -> Result<Vec<u8>, Corrupt> {
    ENCODING.as_ref().ok_or(Corrupt)?.decode(text.as_bytes()).map_err(|_| Corrupt)
}

/// The stored form of a node secret: SHA-256 of the raw secret, hashed again 22388
/// times, base32 without padding (52 characters).
pub fn node_hash(raw: &[u8]) -> String {
    let mut h: [u8; 32] = Sha256::digest(raw).into();
    for _ in 1..NODE_HASH_ROUNDS {
        h = Sha256::digest(h).into();
    }
    encode(&h).trim_end_matches('=').to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_the_test_suites_bad_values() {
        for raw in [&b""[..], b"f", b"fo", b"foo", b"foob", b"fooba", b"foobar", &[0xff; 25]] {
            assert_eq!(decode(&encode(raw)).unwrap(), raw);
        }
        assert_eq!(encode(&[0u8; 5]), "%%%%%%%%");
        assert_eq!(encode(&[0xffu8; 25]).len(), 40, "a node secret is 40 characters");
        assert!(decode("none").is_err(), "test.json entry 23");
        assert_eq!(decode("LB27ML46").unwrap().len(), 5, "test.json entry 25 decodes");
        assert_eq!(decode("LB27\r\nML46").unwrap().len(), 5);
        assert!(decode("LB27ML4").is_err());
        assert!(decode("lb27ml46").is_err());
        let h = node_hash(&[7u8; 25]);
        assert_eq!(h.len(), 52);
        assert!(h.chars().all(|c| ALPHABET.contains(c)));
        assert_eq!(h, node_hash(&[7u8; 25]));
    }
}
