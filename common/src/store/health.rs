//! Failing fast while the database server is down (issue 17).
//!
//! sqlx's pool answers a refused connection by trying again until `acquire_timeout`
//! (10 s by default), so while a server is down every session waited that long for its
//! temporary error, and an SMTP peer that could have tried the next MX, or a POP3 client
//! another host, waited with it. Here, an operation that failed on the connection
//! itself (I/O, TLS, protocol, pool timeout, a commit without an answer), or an idle
//! connection that fails its ping as the pool hands it out ([`ping`]), marks its server
//! suspect; while it is, each operation first asks whether a fresh connection can be
//! opened: one probe per server at a time, at most one a second, within
//! [`PROBE_TIMEOUT`], shared by every operation waiting. A refused or unanswered probe
//! fails the operation at once with [`StoreError::Unreachable`]; an accepted one, or any
//! operation that succeeds, clears the mark. SQLite files are never suspect.
//!
//! The state is per server (`host:port`), not per pool: a server that is down is down
//! for every pool of the process.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};

use sqlx::Connection;

use super::Store;
use crate::error::StoreError;

/// How long a probe connection may take before the server counts as unreachable.
pub(crate) const PROBE_TIMEOUT: Duration = Duration::from_secs(1);
/// How long one probe's answer stands for every operation that asks.
const PROBE_EVERY: Duration = Duration::from_secs(1);

/// What is known of one server while it is suspect.
#[derive(Default)]
struct Suspect {
    /// When the last probe finished, and its failure (`None`: it connected).
    probed: Option<(Instant, Option<String>)>,
}

/// Servers marked suspect, by `host:port`. The counter lets the common case (nothing
/// suspect) skip the map.
static SUSPECTS: LazyLock<Mutex<HashMap<String, Arc<tokio::sync::Mutex<Suspect>>>>> = LazyLock::new(Default::default);
static SUSPECT_COUNT: AtomicUsize = AtomicUsize::new(0);

/// Errors that say the connection to the server failed, not a statement.
pub(crate) trait ConnectionFailure {
    /// Whether this error came from the connection rather than from SQL.
    fn connection_failed(&self) -> bool;
}

impl ConnectionFailure for sqlx::Error {
    fn connection_failed(&self) -> bool {
        matches!(self, sqlx::Error::Io(_) | sqlx::Error::Tls(_) | sqlx::Error::Protocol(_) | sqlx::Error::PoolTimedOut)
    }
}

impl ConnectionFailure for StoreError {
    fn connection_failed(&self) -> bool {
        match self {
            StoreError::Db(e) | StoreError::CommitUnknown(e) => e.connection_failed(),
            StoreError::Unreachable { .. } => true,
            _ => false,
        }
    }
}

impl ConnectionFailure for super::DeliverError {
    fn connection_failed(&self) -> bool {
        matches!(self, super::DeliverError::Store(e) if e.connection_failed())
    }
}

/// How a server is named here: `host:port`.
pub(crate) fn server_key(host: &str, port: u16) -> String {
    format!("{host}:{port}")
}

/// Marks `server` (`host:port`) suspect.
fn mark(server: String) {
    if let std::collections::hash_map::Entry::Vacant(v) = lock_map().entry(server) {
        tracing::warn!(server = %v.key(), "database connection failed; until a new one opens, operations fail at once");
        v.insert(Arc::default());
        SUSPECT_COUNT.fetch_add(1, Ordering::AcqRel);
    }
}

/// The pools' check of an idle connection before handing it out (in place of sqlx's
/// own ping): a connection that fails its ping marks `server` suspect at once, so that
/// the next operations ask the probe instead of each waiting for the pool to give up on
/// a server that is gone. False: the pool drops this connection.
pub(crate) async fn ping<C: Connection>(conn: &mut C, server: &str) -> bool {
    match conn.ping().await {
        Ok(()) => true,
        Err(e) => {
            if e.connection_failed() {
                mark(server.to_owned());
            }
            false
        }
    }
}

fn lock_map() -> std::sync::MutexGuard<'static, HashMap<String, Arc<tokio::sync::Mutex<Suspect>>>> {
    SUSPECTS.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Store {
    /// `host:port` of a server; `None` for SQLite.
    fn server(&self) -> Option<String> {
        match self {
            Store::Postgres(p) => {
                let o = p.connect_options();
                Some(server_key(o.get_host(), o.get_port()))
            }
            Store::MySql(p) => {
                let o = p.connect_options();
                Some(server_key(o.get_host(), o.get_port()))
            }
            Store::Sqlite(_) => None,
        }
    }

    /// Before an operation: `Ok` unless this store's server is suspect and a probe (this
    /// one or one less than a second old) could not connect.
    ///
    /// # Errors
    /// [`StoreError::Unreachable`] naming the server and the probe's failure.
    pub(crate) async fn gate(&self) -> Result<(), StoreError> {
        if SUSPECT_COUNT.load(Ordering::Acquire) == 0 {
            return Ok(());
        }
        let Some(server) = self.server() else { return Ok(()) };
        let Some(entry) = lock_map().get(&server).cloned() else { return Ok(()) };
        let mut suspect = entry.lock().await;
        if let Some((at, result)) = &suspect.probed
            && at.elapsed() < PROBE_EVERY
        {
            return match result {
                None => Ok(()),
                Some(cause) => Err(StoreError::Unreachable { place: server, cause: cause.clone() }),
            };
        }
        let failure = self.probe().await.err();
        suspect.probed = Some((Instant::now(), failure.clone()));
        drop(suspect);
        match failure {
            None => {
                tracing::info!(server = %server, "database server answers again");
                self.clear(&server);
                Ok(())
            }
            Some(cause) => Err(StoreError::Unreachable { place: server, cause }),
        }
    }

    /// One connection opened and closed, within [`PROBE_TIMEOUT`].
    async fn probe(&self) -> Result<(), String> {
        async fn try_one<C: Connection>(opts: &C::Options) -> Result<(), String> {
            match tokio::time::timeout(PROBE_TIMEOUT, C::connect_with(opts)).await {
                Ok(Ok(conn)) => {
                    let _ = conn.close().await;
                    Ok(())
                }
                Ok(Err(e)) => Err(super::connect_cause(&e)),
                Err(_) => Err(format!("no answer within {} s", PROBE_TIMEOUT.as_secs())),
            }
        }
        match self {
            Store::Postgres(p) => try_one::<sqlx::PgConnection>(&p.connect_options()).await,
            Store::MySql(p) => try_one::<sqlx::MySqlConnection>(&p.connect_options()).await,
            Store::Sqlite(_) => Ok(()),
        }
    }

    /// After an operation: a failure of the connection marks the server suspect; a
    /// success while it is suspect clears the mark.
    pub(crate) fn observe<T, E: ConnectionFailure>(&self, result: &Result<T, E>) {
        match result {
            Err(e) if e.connection_failed() => {
                if let Some(server) = self.server() {
                    mark(server);
                }
            }
            Ok(_) if SUSPECT_COUNT.load(Ordering::Acquire) > 0 => {
                if let Some(server) = self.server() {
                    self.clear(&server);
                }
            }
            _ => {}
        }
    }

    fn clear(&self, server: &str) {
        if lock_map().remove(server).is_some() {
            SUSPECT_COUNT.fetch_sub(1, Ordering::AcqRel);
        }
    }
}
