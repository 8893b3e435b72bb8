//! mmmail's shared infrastructure (design.md, style.md "Recommended layout"): config,
//! logging, shutdown, the SQL store and migrations, TLS and line I/O, passwords, RFC 5321
//! addresses and `*`/`?` patterns. Nothing protocol-specific lives here.

#![forbid(unsafe_code)]

pub mod address;
pub mod bans;
pub mod config;
pub mod daemon;
pub mod error;
pub mod guard;
pub mod logging;
pub mod net;
pub mod password;
pub mod pattern;
pub mod privileges;
pub mod shutdown;
pub mod stats;
pub mod store;
#[cfg(feature = "test-util")]
pub mod testdns;
#[cfg(feature = "test-util")]
pub mod testing;

pub use error::{ConfigError, StoreError};
pub use store::Store;

/// `bytes` random bytes from the operating system as lowercase hex (ids, UIDLs, names).
/// Should the OS source ever fail, the clock is mixed in instead, so ids still differ;
/// uniqueness where it matters is also enforced by the database.
pub fn random_hex(bytes: usize) -> String {
    let mut b = vec![0u8; bytes];
    if getrandom::fill(&mut b).is_err() {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        for (i, x) in b.iter_mut().enumerate() {
            *x = (nanos >> ((i % 16) * 8)) as u8;
        }
    }
    b.iter().map(|x| format!("{x:02x}")).collect()
}
