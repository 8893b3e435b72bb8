//! The stored hashes of node secrets that were right, kept in memory so that a node
//! logging in again is not hashed again.
//!
//! A stored node hash (spec/tmtp.md §10.2) is 22389 rounds of SHA-256 over the secret,
//! about 1 ms of CPU here, paid by every login (the node is found by its hash). The hash is
//! a function of the secret alone, so keeping it changes no answer: a login still finds
//! its node by that hash in the database, and a node removed since cannot log in.
//!
//! What is kept is the stored hash under SHA-256 of a random salt of this process and
//! the secret: never the secret itself. Only secrets that were right go in (a login that
//! found its node, a node this instance made), so a wrong guess always pays the whole
//! hash. Node secrets are 200 random bits, which no search of the salted digest can
//! reach; the rounds are there for the stored hashes, which outlive the process.

use std::collections::HashMap;
use std::sync::Mutex;

use sha2::{Digest, Sha256};

use crate::session::{CredentialError, node_hash};

/// Most hashes kept: about 100 bytes each. When full, all are forgotten at once and the
/// next logins hash again.
pub const NODE_HASHES_KEPT: usize = 4096;

/// The stored hashes of recent right node secrets (see the module docs).
pub struct NodeHashes {
    /// The salt of the keys; `None` (nothing kept) if the random source failed.
    salt: Option<[u8; 32]>,
    kept: Mutex<HashMap<[u8; 32], String>>,
}

impl Default for NodeHashes {
    fn default() -> Self {
        let mut salt = [0u8; 32];
        let salt = getrandom::fill(&mut salt).ok().map(|()| salt);
        NodeHashes { salt, kept: Mutex::default() }
    }
}

impl NodeHashes {
    fn key(&self, raw: &[u8]) -> Option<[u8; 32]> {
        Some(Sha256::new().chain_update(self.salt?).chain_update(raw).finalize().into())
    }

    fn kept(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], String>> {
        // A panic while the lock was held cannot leave the map inconsistent.
        self.kept.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The stored hash of the raw node secret `raw` (25 bytes): kept, or computed off the
    /// runtime ([`node_hash`]).
    ///
    /// # Errors
    /// [`CredentialError::Hash`] when it had to be computed and that failed.
    pub async fn hash(&self, raw: Vec<u8>) -> Result<String, CredentialError> {
        if let Some(hash) = self.key(&raw).and_then(|k| self.kept().get(&k).cloned()) {
            return Ok(hash);
        }
        node_hash(raw).await
    }

    /// Keeps `hash` as the stored hash of `raw`. Only for a secret known to be right: its
    /// node was found by `hash`, or was just made with it.
    pub fn keep(&self, raw: &[u8], hash: &str) {
        let Some(key) = self.key(raw) else { return };
        let mut kept = self.kept();
        if kept.len() >= NODE_HASHES_KEPT && !kept.contains_key(&key) {
            kept.clear();
        }
        kept.insert(key, hash.to_owned());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::base32;

    /// Nothing is kept until told; what is kept comes back under a salted key (the
    /// secret nowhere); another secret is hashed in full; the bound holds.
    #[tokio::test]
    async fn keeps_the_right_hash_under_a_salted_key() {
        let hashes = NodeHashes::default();
        let (raw, other) = ([7u8; 25], [8u8; 25]);
        let hash = hashes.hash(raw.to_vec()).await.unwrap();
        assert_eq!(hash, base32::node_hash(&raw));
        assert!(hashes.kept().is_empty(), "nothing kept before it was known to be right");
        hashes.keep(&raw, &hash);
        assert_eq!(hashes.kept().len(), 1);
        let key = hashes.key(&raw).unwrap();
        assert_ne!(&key[..25], &raw[..], "the key is not the secret");
        assert_eq!(hashes.kept().get(&key), Some(&hash));
        assert_eq!(hashes.hash(raw.to_vec()).await.unwrap(), hash);
        // Served from memory: what was kept is what comes back.
        hashes.keep(&raw, "kept");
        assert_eq!(hashes.hash(raw.to_vec()).await.unwrap(), "kept");
        assert_eq!(hashes.hash(other.to_vec()).await.unwrap(), base32::node_hash(&other));
        // Two processes key the same secret differently.
        assert_ne!(NodeHashes::default().key(&raw), Some(key));
        for i in 0..NODE_HASHES_KEPT + 10 {
            hashes.keep(&i.to_le_bytes(), "h");
        }
        assert!(hashes.kept().len() <= NODE_HASHES_KEPT);
    }
}
