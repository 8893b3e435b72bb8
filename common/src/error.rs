//! Error types of the shared layers (style.md P8). Protocol failures are replies, not
//! errors: these only reach a session as "answer with a temporary failure".

use std::path::PathBuf;

/// A configuration file could not be used. Every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Read {
        /// The config file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML for this program (syntax, unknown key, wrong type).
    #[error("{path}: {message}")]
    Parse {
        /// The config file.
        path: PathBuf,
        /// The parser's message, with line, column and key.
        message: String,
    },
    /// The file parsed but some values are unusable; all problems are listed.
    #[error("{path}: {} problem(s):\n  {}", problems.len(), problems.join("\n  "))]
    Invalid {
        /// The config file.
        path: PathBuf,
        /// One `section.key: what is wrong` line per problem.
        problems: Vec<String>,
    },
}

/// A database operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The row that the operation needs does not exist.
    #[error("not found")]
    NotFound,
    /// The database URL is not one of `postgres://`, `mysql://`, `sqlite:`.
    #[error("unsupported database url (want postgres://, mysql:// or sqlite:)")]
    UnsupportedUrl,
    /// `migrate = false` and the schema lacks migrations this program needs.
    #[error("database schema is behind this program (missing migration {0}); run with migrate = true once")]
    SchemaBehind(i64),
    /// The database could not be opened at start: `place` is `host:port/database` or the
    /// SQLite file, `cause` the reason in the driver's words (said once, not repeated as
    /// a source).
    #[error("cannot open the database at {place}: {cause}")]
    Open {
        /// Where: `host:port/database`, or the SQLite file's path.
        place: String,
        /// Why, as the driver or the system said it.
        cause: String,
    },
    /// The database server is down: a connection to it failed, and a fresh one could
    /// not be opened just now either (store/health.rs); `place` is `host:port`.
    #[error("database at {place} unreachable: {cause}")]
    Unreachable {
        /// `host:port`.
        place: String,
        /// Why the last connection attempt failed, as the driver or the system said it.
        cause: String,
    },
    /// The database reported an error or could not be reached.
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    /// A `COMMIT` got no answer (the connection broke): the transaction may or may not
    /// have committed, and nobody could find out which in time.
    #[error("database: outcome of the commit unknown: {0}")]
    CommitUnknown(#[source] sqlx::Error),
    /// Another process held the migration lock for too long.
    #[error("could not get the migration lock (another daemon migrating for over 10 minutes?)")]
    MigrationLock,
    /// A migration failed.
    #[error("migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

impl StoreError {
    /// Whether retrying the same transaction may succeed (deadlock, serialization
    /// failure, SQLite busy/locked).
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Db(e) if retryable(e))
    }

    /// Whether the database refused a row whose key exists already.
    pub fn is_duplicate(&self) -> bool {
        matches!(self, Self::Db(sqlx::Error::Database(e)) if e.is_unique_violation())
    }
}

/// Whether a driver error says "the same transaction can succeed if tried again":
/// SQLSTATE 40001 (serialization failure; MySQL/MariaDB deadlock 1213, which is also how
/// Galera reports a lost certification, maps to it), 40P01 (PostgreSQL deadlock); SQLite
/// primary codes 5 BUSY, 6 LOCKED and the extended BUSY_SNAPSHOT (517) and
/// LOCKED_SHAREDCACHE (262).
pub(crate) fn retryable(e: &sqlx::Error) -> bool {
    let sqlx::Error::Database(e) = e else { return false };
    matches!(e.code().as_deref(), Some("40001" | "40P01" | "5" | "6" | "517" | "262"))
}
