//! mmmail's shared infrastructure (design.md, style.md "Recommended layout"): config,
//! logging, shutdown, the SQL store and migrations, TLS and line I/O, passwords, RFC 5321
//! addresses and `*`/`?` patterns. Nothing protocol-specific lives here.

#![forbid(unsafe_code)]

pub mod address;
pub mod config;
pub mod error;
pub mod logging;
pub mod net;
pub mod password;
pub mod pattern;
pub mod shutdown;
pub mod store;
#[cfg(feature = "test-util")]
pub mod testing;

pub use error::{ConfigError, StoreError};
pub use store::Store;
